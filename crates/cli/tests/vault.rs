//! The vault, end to end: the real binary on 127.0.0.1, attacked with stolen
//! client and admin keys, tampered with on disk, loaded by 20 clients.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use holdfast_core::crypto::seal_session;
use holdfast_core::format::{Snapshot, SnapshotBody, SnapshotHeader};
use holdfast_core::request::Auth;
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::{Backend, Kind, VaultBackend};

fn now_ns() -> i64 {
    holdfast_repo::now_ns()
}

struct Tally {
    tried: u32,
    refused: u32,
}

impl Tally {
    /// Sends a crafted request; it must be refused with one of `codes`.
    fn expect_refused(
        &mut self,
        what: &str,
        r: holdfast_store::Result<(u16, Vec<u8>)>,
        codes: &[u16],
    ) {
        self.tried += 1;
        let (status, body) = r.unwrap_or_else(|e| panic!("{what}: transport error {e}"));
        assert!(
            codes.contains(&status),
            "{what}: expected {codes:?}, got {status} {}",
            String::from_utf8_lossy(&body)
        );
        self.refused += 1;
    }
}

fn signed(v: &VaultBackend, method: &str, path: &str, body: &[u8]) -> Auth {
    Auth::sign(v.identity(), method, path, now_ns(), body).unwrap()
}

fn send(
    v: &VaultBackend,
    method: &str,
    path: &str,
    body: &[u8],
) -> holdfast_store::Result<(u16, Vec<u8>)> {
    v.send(method, path, body, &signed(v, method, path, body))
}

#[test]
fn stolen_client_key_cannot_destroy_read_or_forge() {
    let w = World::new();
    w.init_with(&["--client", "mx1", "--client", "mx2"]);
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let (a, b) = (w.path("mail-a"), w.path("mail-b"));
    make_maildir(&a, 3, 15, 21);
    make_maildir(&b, 3, 15, 22);
    let key_a = w.key("client");
    let key_b = w.path("keys/client-mx2.key").display().to_string();
    let snap_a = backup_via(&w, &url, &key_a, &a);
    let snap_b = backup_via(&w, &url, &key_b, &b);

    // The attacker holds mx1's key.
    let atk = raw(&w, &url, &key_a);
    let victim = raw(&w, &url, &key_b);
    let packs_b = victim.list(Kind::Pack).unwrap();
    let packs_a = atk.list(Kind::Pack).unwrap();
    assert!(
        !packs_b.iter().any(|p| packs_a.contains(p)),
        "namespaces overlap"
    );
    let (pb, pa) = (&packs_b[0].0, &packs_a[0].0);
    let mut t = Tally {
        tried: 0,
        refused: 0,
    };

    // Delete and overwrite.
    for path in [
        format!("/v1/objects/snapshots/{snap_a}"),
        format!("/v1/objects/snapshots/{snap_b}"),
        format!("/v1/objects/packs/{pa}"),
        format!("/v1/objects/packs/{pb}"),
        "/v1/config".to_string(),
    ] {
        t.expect_refused(
            &format!("DELETE {path}"),
            send(&atk, "DELETE", &path, b""),
            &[405],
        );
    }
    t.expect_refused(
        "overwrite snapshot",
        send(
            &atk,
            "PUT",
            &format!("/v1/objects/snapshots/{snap_b}"),
            b"ransom",
        ),
        &[400],
    );
    t.expect_refused(
        "overwrite pack",
        send(&atk, "PUT", &format!("/v1/objects/packs/{pb}"), b"ransom"),
        &[400],
    );
    let garbage = b"not a pack at all".to_vec();
    let gid = ObjectId::of(&garbage).to_hex();
    t.expect_refused(
        "garbage pack",
        send(&atk, "PUT", &format!("/v1/objects/packs/{gid}"), &garbage),
        &[400],
    );
    let gsnap = b"HFSNAP01 garbage".to_vec();
    let gsid = ObjectId::of(&gsnap).to_hex();
    t.expect_refused(
        "garbage snapshot",
        send(
            &atk,
            "PUT",
            &format!("/v1/objects/snapshots/{gsid}"),
            &gsnap,
        ),
        &[400],
    );
    t.expect_refused(
        "write config",
        send(&atk, "PUT", "/v1/config", b"x"),
        &[404],
    );

    // Read another client's data.
    t.expect_refused(
        "read other snapshot",
        send(&atk, "GET", &format!("/v1/objects/snapshots/{snap_b}"), b""),
        &[404],
    );
    t.expect_refused(
        "read other pack",
        send(&atk, "GET", &format!("/v1/objects/packs/{pb}"), b""),
        &[404],
    );
    t.expect_refused(
        "stat other pack",
        send(&atk, "GET", &format!("/v1/stat/packs/{pb}"), b""),
        &[404],
    );
    let listed = atk.list(Kind::Snapshot).unwrap();
    assert_eq!(listed.len(), 1, "a client sees only its own snapshots");
    t.tried += 1;
    t.refused += 1;

    // Write into another client's namespace: a snapshot of ours naming mx2's pack.
    let k = load_key(&key_a);
    let client = k.identity().unwrap();
    let cfg = Arc::new(holdfast_store::LocalDir::open(w.repo()).unwrap());
    let config =
        holdfast_core::format::Config::decode(&cfg.get(Kind::Config, "config").unwrap()).unwrap();
    let (epk, sk) = seal_session(&config.repo_public).unwrap();
    let mk = |packs: Vec<ObjectId>, who: &holdfast_core::crypto::Identity, time: i64| {
        let mut packs = packs;
        packs.sort();
        Snapshot::create(
            SnapshotHeader {
                config_id: k.config_id,
                client: who.public(),
                time_ns: time,
                parent: None,
                packs,
                epk,
            },
            &SnapshotBody {
                root: BlobId([0; 32]),
                ..Default::default()
            },
            &sk,
            who,
        )
        .unwrap()
    };
    let (sid, sbytes) = mk(vec![ObjectId::from_hex(pb).unwrap()], client, now_ns());
    t.expect_refused(
        "reference other's pack",
        send(
            &atk,
            "PUT",
            &format!("/v1/objects/snapshots/{sid}"),
            &sbytes,
        ),
        &[409],
    );
    // A snapshot claiming to be mx2's, signed with mx1's key.
    let (_, mut forged) = mk(vec![], client, now_ns());
    let mx2_pub = load_key(&key_b).identity().unwrap().public();
    forged[8 + 4 + 32..8 + 4 + 64].copy_from_slice(&mx2_pub);
    let fid = ObjectId::of(&forged).to_hex();
    t.expect_refused(
        "snapshot as mx2",
        send(
            &atk,
            "PUT",
            &format!("/v1/objects/snapshots/{fid}"),
            &forged,
        ),
        &[400, 403],
    );

    // Roles it does not have.
    t.expect_refused(
        "extend lock",
        send(
            &atk,
            "POST",
            "/v1/locks",
            br#"{"snapshot":"00","until_ns":0}"#,
        ),
        &[403],
    );
    t.expect_refused("propose", send(&atk, "POST", "/v1/proposals", b"x"), &[403]);
    t.expect_refused("vote", send(&atk, "POST", "/v1/votes", b"x"), &[403]);
    // Reading the log is allowed (every party folds it; it holds ids,
    // keys, times and locks, no content).
    t.tried += 1;
    let (st, _) = send(&atk, "GET", "/v1/log/entries?start=0", b"").unwrap();
    assert_eq!(st, 200, "a client reads the log");
    t.refused += 1;
    t.expect_refused(
        "list proposals",
        send(&atk, "GET", "/v1/proposals", b""),
        &[403],
    );

    // Forged, replayed, expired, future, unknown-key requests.
    let path = "/v1/objects/snapshots";
    let mut bad = signed(&atk, "GET", path, b"");
    bad.signature[0] ^= 1;
    t.expect_refused("forged signature", atk.send("GET", path, b"", &bad), &[401]);
    let good = signed(&atk, "GET", path, b"");
    assert_eq!(atk.send("GET", path, b"", &good).unwrap().0, 200);
    t.expect_refused(
        "replayed request",
        atk.send("GET", path, b"", &good),
        &[401],
    );
    let old = Auth::sign(client, "GET", path, now_ns() - 3600 * 1_000_000_000, b"").unwrap();
    t.expect_refused("expired request", atk.send("GET", path, b"", &old), &[401]);
    let future = Auth::sign(client, "GET", path, now_ns() + 3600 * 1_000_000_000, b"").unwrap();
    t.expect_refused(
        "future request",
        atk.send("GET", path, b"", &future),
        &[401],
    );
    let stranger = holdfast_core::crypto::Identity::generate().unwrap();
    let un = Auth::sign(&stranger, "GET", path, now_ns(), b"").unwrap();
    t.expect_refused("unknown key", atk.send("GET", path, b"", &un), &[401]);
    let moved = signed(&atk, "GET", path, b"");
    t.expect_refused(
        "signature moved to another path",
        atk.send("GET", "/v1/objects/packs", b"", &moved),
        &[401],
    );

    // Oversized and malformed bodies, path tricks.
    let huge = vec![0u8; 100 << 20];
    let hid = ObjectId::of(&huge).to_hex();
    // Refused from its headers, before the body is read: the vault answers
    // 413 and closes, so the sender may see the answer or a reset.
    t.tried += 1;
    match send(&atk, "PUT", &format!("/v1/objects/packs/{hid}"), &huge) {
        Ok((st, _)) => assert_eq!(st, 413, "100 MiB body"),
        Err(e) => eprintln!("100 MiB body: connection closed by the vault ({e})"),
    }
    t.refused += 1;
    drop(huge);
    for p in [
        "/v1/objects/snapshots/..%2Fconfig",
        "/v1/objects/packs/../../config",
        "/v1/identities/..%2F..%2Fetc%2Fpasswd",
        "/v1/objects/snapshots/ABCDEF",
        "/v1/objects/keys/x",
    ] {
        // 401 where the HTTP client normalised `..` away, so the signed path
        // and the sent path differ: refused either way.
        t.expect_refused(
            &format!("path trick {p}"),
            send(&atk, "GET", p, b""),
            &[400, 401, 404],
        );
    }

    // Backdating (2001) and future-dating (2100) are refused: a client's
    // clock never steers retention or `latest`.
    for t_ns in [978_307_200_000_000_000, 4_102_444_800_000_000_000] {
        let (fid, fbytes) = mk(vec![], client, t_ns);
        t.expect_refused(
            "snapshot dated far from the vault's clock",
            send(
                &atk,
                "PUT",
                &format!("/v1/objects/snapshots/{fid}"),
                &fbytes,
            ),
            &[400],
        );
    }
    // A fake (empty) snapshot of its own, dated now: accepted, stamped with
    // the vault's clock and locked from it.
    let (bid, bbytes) = mk(vec![], client, now_ns());
    let (status, resp) = send(
        &atk,
        "PUT",
        &format!("/v1/objects/snapshots/{bid}"),
        &bbytes,
    )
    .unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let meta: serde_json::Value = serde_json::from_slice(&resp).unwrap();
    let stamped = meta["time_ns"].as_i64().unwrap();
    assert!(
        (stamped - now_ns()).abs() < 60 * 1_000_000_000,
        "vault did not stamp its own time"
    );
    assert!(meta["lock_until_ns"].as_i64().unwrap() >= stamped + 14 * 86_400 * 1_000_000_000);

    eprintln!(
        "client-key attacks: {} tried, {} refused",
        t.tried, t.refused
    );
    assert_eq!(t.tried, t.refused);
    assert!(t.tried >= 25);

    // Everything still restores byte for byte; verify and audit are clean.
    for (snap, src, n) in [(&snap_a, &a, "a"), (&snap_b, &b, "b")] {
        let out = w.path(&format!("out-{n}"));
        restore_via(&w, &url, &snap[..12], &out);
        assert_eq!(digest(&out.join(src.file_name().unwrap())), digest(src));
    }
    // verify with the restore key flags exactly one thing: the attacker's
    // own fake snapshot, whose tree does not exist (a lying client only
    // damages its own snapshots).
    let o = w.run(&[
        "verify",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{out}");
    assert_eq!(out.matches("PROBLEM").count(), 1, "{out}");
    assert!(out.contains(&bid.to_hex()), "{out}");
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    w.ok(&["audit", "--repo", &w.repo(), "--key", &w.key("auditor")]);
}

/// The attacker on the vault host cuts the last `n` entries off the log.
/// Returns the entries left.
fn cut_log(w: &World, n: usize) -> Vec<Vec<u8>> {
    let log = w.path("repo/vault/log");
    let raw = std::fs::read(&log).unwrap();
    let (entries, _) = holdfast_core::vaultlog::split_log(&raw);
    let kept: Vec<Vec<u8>> = entries[..entries.len() - n]
        .iter()
        .map(|e| e.to_vec())
        .collect();
    let len: usize = kept.iter().map(|e| 4 + e.len()).sum();
    std::fs::write(&log, &raw[..len]).unwrap();
    kept
}

/// Cuts the log back to just before its last `SnapshotAdded` (that entry
/// and what the vault logged after it, such as its stored bytes).
fn cut_last_snapshot(w: &World) -> Vec<Vec<u8>> {
    let raw = std::fs::read(w.path("repo/vault/log")).unwrap();
    let (entries, _) = holdfast_core::vaultlog::split_log(&raw);
    let last = entries
        .iter()
        .rposition(|e| {
            matches!(
                holdfast_core::vaultlog::Entry::decode(e).map(|e| e.event),
                Ok(holdfast_core::vaultlog::Event::SnapshotAdded { .. })
            )
        })
        .unwrap();
    cut_log(w, entries.len() - last)
}

/// …and, holding the vault key, signs a checkpoint for what is left.
fn resign_log(w: &World, kept: &[Vec<u8>]) {
    sign_log(w, kept);
}

fn snapshot_ids(w: &World, url: &str) -> Vec<String> {
    let s: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "snapshots",
        "--repo",
        url,
        "--key",
        &w.key("restore"),
        "--json",
    ]))
    .unwrap();
    s.iter()
        .map(|x| x["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn one_admin_key_alone_cannot_destroy_quorum_delay_and_veto_work() {
    let w = World::new();
    w.init_with(&["--delay-secs", "2"]);
    let alerts = w.path("alerts.txt");
    let cmd = format!("echo \"$HOLDFAST_ALERT\" >> {}", alerts.display());
    let vault = w.start_vault(&["--alert-cmd", &cmd]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 31);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 1);
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    let (a1, a2, a3) = (w.key("admin-1"), w.key("admin-2"), w.key("admin-3"));

    // The stolen admin-1 key: propose, approve itself twice, try to shorten.
    w.ok(&["propose", "--repo", &url, "--key", &a1, "delete", &s1[..12]]);
    let p = w.proposals(&url);
    let pid = p[0]["id"].as_str().unwrap().to_string();
    // Approving its own proposal again is refused, and counts for nothing.
    for _ in 0..2 {
        let o = w.run(&["approve", "--repo", &url, "--key", &a1, &pid[..12]]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already approved"));
    }
    let o = w.run(&[
        "lock",
        "--repo",
        &url,
        "--key",
        &a1,
        &s1[..12],
        "--days",
        "0",
    ]);
    assert!(!o.status.success(), "a lock was shortened");
    assert!(String::from_utf8_lossy(&o.stderr).contains("never shortened"));
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "retention",
        "--keep-within-days",
        "0",
    ]);
    let o = w.run(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "delete",
        &s1[..12],
    ]);
    assert!(!o.status.success(), "a client key proposed");
    std::thread::sleep(Duration::from_secs(3));
    let p = w.proposals(&url);
    assert!(
        p.iter()
            .all(|x| x["status"].as_str().unwrap().starts_with("Pending")),
        "{p:?}"
    );
    assert_eq!(snapshot_ids(&w, &url).len(), 2);

    // Quorum, then a veto inside the window stops it.
    w.ok(&["approve", "--repo", &url, "--key", &a2, &pid[..12]]);
    w.ok(&["veto", "--repo", &url, "--key", &a3, &pid[..12]]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(snapshot_ids(&w, &url).len(), 2, "a vetoed proposal ran");
    let p = w.proposals(&url);
    assert!(p.iter().any(|x| x["id"] == pid.as_str() && x["status"].as_str().unwrap().starts_with("Vetoed")));

    // A new proposal with quorum and no veto runs after the delay, and
    // deletes exactly what it named.
    w.ok(&["propose", "--repo", &url, "--key", &a1, "delete", &s1[..12]]);
    let p = w.proposals(&url);
    let pid2 = p
        .iter()
        .find(|x| {
            x["status"].as_str().unwrap().starts_with("Pending")
                && x["action"].as_str().unwrap().contains("deletion")
        })
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    w.ok(&["approve", "--repo", &url, "--key", &a2, &pid2[..12]]);
    let left = snapshot_ids(&w, &url);
    assert_eq!(left.len(), 2, "ran before the delay");
    std::thread::sleep(Duration::from_secs(4));
    let left = snapshot_ids(&w, &url);
    assert_eq!(left, vec![s2.clone()]);
    let out = w.path("out");
    restore_via(&w, &url, &s2[..12], &out);
    assert_eq!(digest(&out.join("mail")), digest(&src));
    // The audit accepts the deletion: it had quorum, delay and no veto.
    let audit = w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(audit.contains("1 deleted by quorum"), "{audit}");
    // Every step was alerted.
    let alerts = std::fs::read_to_string(&alerts).unwrap();
    for needle in ["proposed", "approved", "VETOED", "EXECUTED"] {
        assert!(alerts.contains(needle), "no {needle} alert in {alerts}");
    }
    // An admin may extend a lock.
    w.ok(&[
        "lock",
        "--repo",
        &url,
        "--key",
        &a2,
        &s2[..12],
        "--days",
        "400",
    ]);
    // Every key holder sees the vault's time and the extended lock.
    let s: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "snapshots",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "--json",
    ]))
    .unwrap();
    let locked = s[0]["locked_until_ns"].as_i64().unwrap();
    let stamped = s[0]["vault_time_ns"].as_i64().unwrap();
    assert!(locked - stamped > 399 * 86_400 * 1_000_000_000, "{s:?}");
}

#[test]
fn tampering_with_the_vaults_files_is_detected() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 41);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 1);
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    // The auditor has seen the current checkpoint.

    // A snapshot file deleted on disk.
    let victim = w.path("repo/snapshots").join(&s1);
    let saved = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    for repo in [url.as_str(), w.repo().as_str()] {
        let o = w.run(&["audit", "--repo", repo, "--key", &w.key("auditor")]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(4), "{out}");
        assert!(out.contains(&s1) && out.contains("missing"), "{out}");
    }
    std::fs::write(&victim, &saved).unwrap();

    // SIGTERM stops it cleanly; it restarts with the same state.
    assert!(vault.stop().success());
    let mut vault = w.start_vault(&[]);
    assert_eq!(snapshot_ids(&w, &vault.url).len(), 2);
    vault.stop();

    // The log cut back by one entry: the vault refuses to start.
    let kept = cut_last_snapshot(&w);
    let o = w.run(&[
        "vault",
        "serve",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("vault"),
        "--listen",
        "127.0.0.1:0",
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("TAMPERING"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The attacker owns the vault host, so it re-signs a checkpoint for the
    // shortened log with the vault key, leaving the snapshot file. The vault
    // starts and re-adopts the still valid snapshot with new entries (its
    // stored bytes logged again, at a new time): the history differs, and
    // every client and auditor that saw the old log refuses it; the snapshot
    // itself is not lost.
    resign_log(&w, &kept);
    let mut vault = w.start_vault(&[]);
    for key in ["client", "auditor", "restore"] {
        let o = w.run(&["snapshots", "--repo", &vault.url, "--key", &w.key(key)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{key}: {err}");
        assert!(
            err.contains("TAMPERING") && (err.contains("rewritten") || err.contains("rolled back")),
            "{key}: {err}"
        );
    }
    let out = w.path("out-readopted");
    w.ok(&[
        "restore",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("restore"),
        &s2[..12],
        out.to_str().unwrap(),
    ]);
    assert_eq!(digest(&out.join("mail")), digest(&src));
    vault.stop();

    // The attacker destroys the snapshot: its file deleted, its entry cut,
    // the checkpoint re-signed. Everyone who saw the longer log reports a
    // rollback.
    std::fs::remove_file(w.path("repo/snapshots").join(&s2)).unwrap();
    let kept = cut_last_snapshot(&w);
    resign_log(&w, &kept);
    let vault = w.start_vault(&[]);
    for key in ["client", "auditor", "restore"] {
        let o = w.run(&["snapshots", "--repo", &vault.url, "--key", &w.key(key)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{key}: {err}");
        assert!(
            err.contains("TAMPERING") && err.contains("rolled back"),
            "{key}: {err}"
        );
    }
}

#[test]
fn quota_stops_one_client_not_the_others() {
    let w = World::new();
    w.init_with(&["--client", "mx1", "--client", "mx2"]);
    let vault = w.start_vault(&["--quota-mib", "2"]);
    let big = w.path("big");
    std::fs::create_dir_all(&big).unwrap();
    std::fs::write(big.join("random"), Rng(5).bytes(6 << 20)).unwrap();
    let o = w.run(&[
        "backup",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        big.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("quota"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let small = w.path("small");
    make_maildir(&small, 1, 5, 51);
    let key_b = w.path("keys/client-mx2.key").display().to_string();
    let s = backup_via(&w, &vault.url, &key_b, &small);
    let out = w.path("out");
    restore_via(&w, &vault.url, &s[..12], &out);
    assert_eq!(digest(&out.join("small")), digest(&small));
    assert!(vault.stderr().contains("quota"));
}

#[test]
fn expired_snapshots_are_reclaimed_locked_ones_kept() {
    let w = World::new();
    w.init_with(&short_retention("3"));
    let vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 61);
    let keep = backup_via(&w, &url, &w.key("client"), &src);
    w.ok(&[
        "lock",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &keep[..12],
        "--days",
        "1",
    ]);
    std::fs::write(src.join("extra"), Rng(6).bytes(200_000)).unwrap();
    let gone = backup_via(&w, &url, &w.key("client"), &src);
    // A client's last 3 snapshots are kept whatever their age.
    let mut last = Vec::new();
    for i in 0..3u64 {
        std::fs::write(src.join("more"), Rng(20 + i).bytes(1000)).unwrap();
        last.push(backup_via(&w, &url, &w.key("client"), &src));
    }
    std::thread::sleep(Duration::from_secs(6));
    let mut left = snapshot_ids(&w, &url);
    left.sort();
    let mut want = vec![keep.clone()];
    want.extend(last.iter().cloned());
    want.sort();
    assert_eq!(
        left, want,
        "expected the locked snapshot and the client's last 3 to remain"
    );
    assert!(!left.contains(&gone));
    let audit = w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(audit.contains("1 reclaimed"), "{audit}");
    // The kept snapshot still restores (its packs survived the reclaim).
    let out = w.path("out");
    restore_via(&w, &url, &keep[..12], &out);
    // And the client's next backup works after the reclaim.
    let next = backup_via(&w, &url, &w.key("client"), &src);
    let out2 = w.path("out2");
    restore_via(&w, &url, &next[..12], &out2);
    assert_eq!(digest(&out2.join("mail")), digest(&src));
}

#[test]
fn rate_limit_refuses_bursts() {
    let w = World::new();
    w.init_with(&[]);
    let vault = w.start_vault(&["--rate", "1", "--burst", "5"]);
    let c = raw(&w, &vault.url, &w.key("client"));
    let codes: Vec<u16> = (0..20)
        .map(|_| send(&c, "GET", "/v1/objects/snapshots", b"").unwrap().0)
        .collect();
    assert!(codes.contains(&429), "{codes:?}");
    assert!(codes.contains(&200), "{codes:?}");
}

/// 20 clients back up concurrently through one vault, with zero errors;
/// then the whole repository verifies and audits clean.
#[test]
fn load_twenty_concurrent_clients() {
    let w = World::new();
    let names: Vec<String> = (0..20).map(|i| format!("c{i:02}")).collect();
    let mut args: Vec<&str> = Vec::new();
    for n in &names {
        args.push("--client");
        args.push(n);
    }
    w.init_with(&args);
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let start = std::time::Instant::now();
    let handles: Vec<_> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let key = if i == 0 {
                w.key("client")
            } else {
                w.path(&format!("keys/client-{n}.key"))
                    .display()
                    .to_string()
            };
            let src = w.path(&format!("src-{n}"));
            make_maildir(&src, 2, 8, 100 + i as u64);
            let url = url.clone();
            let cache = w.path(&format!("cache-{n}"));
            std::thread::spawn(move || {
                let mut errors = 0;
                for round in 0..2 {
                    if round == 1 {
                        mail_day(&src, 1);
                    }
                    let o = std::process::Command::new(bin())
                        .args([
                            "backup",
                            "--repo",
                            &url,
                            "--key",
                            &key,
                            src.to_str().unwrap(),
                        ])
                        .env("HOLDFAST_CACHE_DIR", &cache)
                        .output()
                        .unwrap();
                    if !o.status.success() {
                        eprintln!("{}", String::from_utf8_lossy(&o.stderr));
                        errors += 1;
                    }
                }
                errors
            })
        })
        .collect();
    let errors: i32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!(
        "20 clients × 2 backups in {:?}, {errors} errors",
        start.elapsed()
    );
    assert_eq!(errors, 0);
    assert_eq!(snapshot_ids(&w, &url).len(), 40);
    w.ok(&[
        "verify",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
}

fn pull(w: &World, url: &str, into: &Path) -> serde_json::Value {
    let out = w.ok(&[
        "replica",
        "pull",
        "--from",
        url,
        "--key",
        &w.key("replica"),
        "--into",
        into.to_str().unwrap(),
        "--json",
    ]);
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

/// A pull replica copies and verifies, applies only quorum deletions, keeps
/// what the vault reclaimed, and refuses to follow a rolled-back vault.
#[test]
fn replica_follows_the_log_and_refuses_a_rolled_back_vault() {
    let w = World::new();
    w.init_with(&[
        "--delay-secs",
        "1",
        "--keep-within-secs",
        "4",
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
        "--keep-yearly",
        "0",
        "--grace-secs",
        "0",
    ]);
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 71);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    // s1 must outlive the reclaims in this test; s2 must not.
    w.ok(&[
        "lock",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        &s1[..12],
        "--days",
        "1",
    ]);
    let d1 = digest(&src);
    let rdir = w.path("replica");
    let r = pull(&w, &url, &rdir);
    assert_eq!(r["snapshots_copied"], 1, "{r}");
    assert!(r["packs_copied"].as_u64().unwrap() >= 1);
    // The replica directory is a repository: verify, restore, audit work on it.
    let rrepo = rdir.display().to_string();
    w.ok(&[
        "verify",
        "--repo",
        &rrepo,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    let out = w.path("out1");
    w.ok(&[
        "restore",
        "--repo",
        &rrepo,
        "--key",
        &w.key("restore"),
        &s1[..12],
        out.to_str().unwrap(),
    ]);
    assert_eq!(digest(&out.join("mail")), d1);
    w.ok(&["audit", "--repo", &rrepo, "--key", &w.key("auditor")]);

    // Incremental: one more snapshot, then it expires and the vault reclaims
    // it; the replica copied it first and keeps it.
    mail_day(&src, 1);
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    let d2 = digest(&src);
    // Three newer ones, so that s2 is not among the client's last 3.
    for day in 2..5 {
        mail_day(&src, day);
        backup_via(&w, &url, &w.key("client"), &src);
    }
    let r = pull(&w, &url, &rdir);
    assert_eq!(r["snapshots_copied"], 4, "{r}");
    std::thread::sleep(Duration::from_secs(6));
    assert!(
        !snapshot_ids(&w, &url).contains(&s2),
        "vault did not reclaim s2"
    );
    let r = pull(&w, &url, &rdir);
    assert_eq!(r["reclaims_kept"], 1, "{r}");
    let out = w.path("out2");
    w.ok(&[
        "restore",
        "--repo",
        &rrepo,
        "--key",
        &w.key("restore"),
        &s2[..12],
        out.to_str().unwrap(),
    ]);
    assert_eq!(digest(&out.join("mail")), d2);
    w.ok(&["audit", "--repo", &rrepo, "--key", &w.key("auditor")]);

    // A deletion by quorum is applied on the next pull.
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        "delete",
        &s1[..12],
    ]);
    let pid = w.proposals(&url)[0]["id"].as_str().unwrap().to_string();
    w.ok(&[
        "approve",
        "--repo",
        &url,
        "--key",
        &w.key("admin-2"),
        &pid[..12],
    ]);
    std::thread::sleep(Duration::from_secs(3));
    assert!(!snapshot_ids(&w, &url).contains(&s1));
    // The replica counts the delay from when it first saw the quorum, on
    // its own clock: this pull only notes the erasure...
    let r = pull(&w, &url, &rdir);
    assert_eq!(r["deletions_applied"], 0, "{r}");
    assert_eq!(r["deletions_pending"], 1, "{r}");
    assert!(rdir.join("snapshots").join(&s1).exists());
    // ...and the next one, after the delay, applies it.
    std::thread::sleep(Duration::from_millis(1500));
    let r = pull(&w, &url, &rdir);
    assert_eq!(r["deletions_applied"], 1, "{r}");
    assert!(!rdir.join("snapshots").join(&s1).exists());
    assert!(rdir.join("snapshots").join(&s2).exists());

    // The vault host is taken: the log is cut back and re-signed with the
    // vault key. The replica refuses to follow and keeps what it has.
    vault.stop();
    let kept = cut_log(&w, 3);
    resign_log(&w, &kept);
    let before = files(&rdir);
    let vault = w.start_vault(&[]);
    let o = w.run(&[
        "replica",
        "pull",
        "--from",
        &vault.url,
        "--key",
        &w.key("replica"),
        "--into",
        &rrepo,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(err.contains("TAMPERING"), "{err}");
    assert_eq!(files(&rdir), before, "the replica changed after a rollback");
    w.ok(&[
        "verify",
        "--repo",
        &rrepo,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
}

/// Offline bundles: full then incremental, verified and restored with the
/// vault gone; a missing object or an altered log in a bundle is reported.
#[test]
fn bundles_restore_alone_and_report_damage() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 12, 81);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    let d1 = digest(&src);
    let (b1, b2) = (w.path("bundle-1"), w.path("bundle-2"));
    w.ok(&[
        "export",
        "--repo",
        &url,
        "--key",
        &w.key("replica"),
        "--to",
        b1.to_str().unwrap(),
    ]);
    mail_day(&src, 1);
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    let d2 = digest(&src);
    let out = w.ok(&[
        "export",
        "--repo",
        &url,
        "--key",
        &w.key("replica"),
        "--to",
        b2.to_str().unwrap(),
        "--since",
        b1.to_str().unwrap(),
    ]);
    assert!(out.contains("1 snapshots"), "{out}");
    // The vault is gone.
    vault.stop();
    drop(vault);
    let series = format!("bundle:{},{}", b1.display(), b2.display());
    w.ok(&[
        "verify",
        "--repo",
        &series,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    for (s, d, n) in [(&s1, &d1, "1"), (&s2, &d2, "2")] {
        let out = w.path(&format!("out{n}"));
        w.ok(&[
            "restore",
            "--repo",
            &series,
            "--key",
            &w.key("restore"),
            &s[..12],
            out.to_str().unwrap(),
        ]);
        assert_eq!(&digest(&out.join("mail")), d);
    }
    let one = format!("bundle:{}", b1.display());
    let out = w.path("out-b1");
    w.ok(&[
        "restore",
        "--repo",
        &one,
        "--key",
        &w.key("restore"),
        &s1[..12],
        out.to_str().unwrap(),
    ]);
    assert_eq!(digest(&out.join("mail")), d1);
    w.ok(&["audit", "--repo", &series, "--key", &w.key("auditor")]);
    // Bundles are read-only.
    let o = w.run(&[
        "backup",
        "--repo",
        &series,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());

    // A pack lost from the second bundle.
    let victim = files(&b2.join("packs"))[0].clone();
    let saved = std::fs::read(&victim).unwrap();
    std::fs::remove_file(&victim).unwrap();
    let o = w.run(&["verify", "--repo", &series, "--key", &w.key("restore")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{text}");
    assert!(text.contains("in the manifest but missing"), "{text}");
    std::fs::write(&victim, saved).unwrap();

    // The second bundle's log rewritten: its checkpoint no longer matches,
    // and it no longer extends the first bundle's log.
    let log = b2.join("vault/log");
    let mut raw = std::fs::read(&log).unwrap();
    let n = raw.len();
    raw[n - 1] ^= 1;
    std::fs::write(&log, raw).unwrap();
    let o = w.run(&["verify", "--repo", &series, "--key", &w.key("restore")]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(4), "{text}");
    assert!(
        text.contains("does not match its signed checkpoint"),
        "{text}"
    );
}

/// Identities are added through the vault by an admin, logged, and usable
/// at once; a client key cannot add one, and no record can create an admin.
#[test]
fn admins_add_clients_through_the_vault_and_it_is_logged() {
    let w = World::new();
    w.init_with(&[]);
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let new_key = w.path("keys/client-mx9.key").display().to_string();
    let o = w.run(&[
        "key",
        "new",
        "client",
        "mx9",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "--admin-key",
        &w.key("client"),
        "--out",
        &new_key,
    ]);
    assert!(!o.status.success(), "a client key added an identity");
    w.ok(&[
        "key",
        "new",
        "client",
        "mx9",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "--admin-key",
        &w.key("admin-1"),
        "--out",
        &new_key,
    ]);
    let src = w.path("mail");
    make_maildir(&src, 1, 5, 91);
    let s = backup_via(&w, &url, &new_key, &src);
    let listed: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "snapshots",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(listed[0]["client"], "mx9");
    assert_eq!(listed[0]["id"], s.as_str());
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(
        vault.stderr().contains("added client identity \"mx9\""),
        "{}",
        vault.stderr()
    );

    // A record that tries to create an admin with one admin's signature is refused.
    let rec = rogue_admin_record(&w.key("admin-1"), "admin-4");
    let a = raw(&w, &url, &w.key("admin-1"));
    let (status, _) = send(&a, "POST", "/v1/identities", &rec.encode()).unwrap();
    assert_eq!(status, 400);
    // Written straight into the directory instead, it is not admitted
    // either: the vault refuses to start on a record it must not accept.
    let bytes = rec.encode();
    std::fs::write(
        w.path("repo/identities")
            .join(ObjectId::of(&bytes).to_hex()),
        &bytes,
    )
    .unwrap();
    let o = w.run(&["audit", "--repo", &w.repo(), "--key", &w.key("auditor")]);
    assert!(!o.status.success());
}

/// kill -9 of the vault at random points while clients back up, many
/// times: after each restart the log matches its checkpoint, no snapshot is
/// left unexplained (one written but not logged is committed at start), the
/// repository verifies, and the next backup restores exactly.
#[test]
fn kill_9_of_the_vault_during_backups_loses_nothing() {
    let w = World::new();
    w.init_with(&[]);
    let src = w.path("mail");
    make_maildir(&src, 3, 20, 111);
    let big = src.join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut r = Rng(112);
    let mut answered = 0;
    for round in 0..10u64 {
        std::fs::write(big.join(format!("r{round}")), r.bytes(3 << 20)).unwrap();
        let mut vault = w.start_vault(&[]);
        let mut client = w
            .cmd(&[
                "backup",
                "--repo",
                &vault.url,
                "--key",
                &w.key("client"),
                src.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Alternate early kills (mid-upload) with late ones (around the
        // snapshot commit, or after it).
        let wait = if round % 2 == 0 {
            50 + r.below(1000)
        } else {
            1000 + r.below(1500)
        };
        std::thread::sleep(Duration::from_millis(wait));
        if client.try_wait().unwrap().is_some_and(|s| s.success()) {
            answered += 1;
        }
        let _ = vault.child.kill(); // SIGKILL
        let _ = vault.child.wait();
        // The client's fate does not matter; it would only retry.
        let _ = client.kill();
        let _ = client.wait();
    }
    eprintln!("{answered} of 10 backups were answered before the vault was killed");
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    // Clients saw only what the vault had made durable: no rollback.
    w.ok(&["snapshots", "--repo", &url, "--key", &w.key("client")]);
    w.ok(&[
        "verify",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    w.ok(&["audit", "--repo", &w.repo(), "--key", &w.key("auditor")]);
    let s = backup_via(&w, &url, &w.key("client"), &src);
    let out = w.path("out");
    restore_via(&w, &url, &s[..12], &out);
    assert_eq!(digest(&out.join("mail")), digest(&src));
}
