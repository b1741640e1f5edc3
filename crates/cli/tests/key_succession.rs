//! Issue 13, keys: a client key's successor (`key rotate client`), and
//! snapshots that name the restore key epoch they were sealed to. The real
//! binary and a real vault on 127.0.0.1.

mod common;

use common::*;
use holdfast_core::crypto::{Identity, seal_session};
use holdfast_core::format::{
    Checked, IdentityRecord, Judgement, Snapshot, SnapshotBody, SnapshotHeader,
};
use holdfast_core::request::Auth;
use holdfast_core::vaultlog::{Entry, Event, frame, split_log};
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::{Backend, Kind, VaultBackend};

/// A signed request as the holder of `v`'s key: (status, body).
fn send(v: &VaultBackend, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    let auth = Auth::sign(v.identity(), method, path, holdfast_repo::now_ns(), body).unwrap();
    let (code, b) = v.send(method, path, body, &auth).unwrap();
    (code, String::from_utf8_lossy(&b).into_owned())
}

fn put_identity(v: &VaultBackend, rec: &IdentityRecord) -> (u16, String) {
    send(v, "POST", "/v1/identities", &rec.encode())
}

fn snapshots_json(w: &World, url: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let restore = w.key("restore");
    let mut args = vec!["snapshots", "--repo", url, "--key", &restore, "--json"];
    args.extend_from_slice(extra);
    serde_json::from_str(&w.ok(&args)).unwrap()
}

/// A client's key is replaced through the vault: the old key is refused
/// from then on, the new one is the same client (history, detection
/// baseline, namespace, cache: an unchanged tree stores next to nothing),
/// the audit says which key replaced which, and forged successions are
/// refused.
#[test]
fn a_client_key_succession_keeps_the_client_and_revokes_the_old_key() {
    let w = World::new();
    w.init();
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 12, 131);
    let old = w.key("client");
    let s1 = backup_via(&w, &url, &old, &src);
    mail_day(&src, 5);
    let s2 = backup_via(&w, &url, &old, &src);
    let new = w.path("client-2.key").display().to_string();
    let out = w.ok(&[
        "key",
        "rotate",
        "client",
        "--repo",
        &url,
        "--key",
        &old,
        "--admin-key",
        &w.key("admin-1"),
        "--out",
        &new,
    ]);
    assert!(out.contains("new key"), "{out}");
    // The new key holds the old one's checkpoint: no first contact.
    let new_pub = load_key(&new).identity().unwrap().public();
    let held = std::fs::read_dir(w.path("cache/checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect::<Vec<_>>();
    let tag = format!("{}.checkpoint", holdfast_core::id::hex(&new_pub[..8]));
    assert!(held.iter().any(|n| n.ends_with(&tag)), "{held:?}");

    // The old key's next request is refused.
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &old,
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("revoked"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");

    // The new key: the same client, compared with its predecessor's last
    // snapshot; the unchanged tree deduplicates against the old key's packs.
    let j = backup_json(&w, &url, &new, &src);
    println!(
        "first backup of an unchanged tree after the succession: new_bytes {} stored_bytes {} \
         packs_written {}",
        j["new_bytes"], j["stored_bytes"], j["packs_written"]
    );
    assert_eq!(j["checked"], "compared", "{j}");
    assert!(j["new_bytes"].as_u64().unwrap() < 64 << 10, "{j}");
    let s3 = j["snapshot"].as_str().unwrap().to_string();

    // Its history under one name: both keys' snapshots.
    let listed = snapshots_json(&w, &url, &["--client", "client"]);
    let ids: Vec<&str> = listed.iter().map(|s| s["id"].as_str().unwrap()).collect();
    for s in [&s1, &s2, &s3] {
        assert!(ids.contains(&s.as_str()), "{s} missing from {ids:?}");
    }
    assert!(listed.iter().all(|s| s["client"] == "client"));
    // The new key's first snapshot follows the old key's last.
    let s3_row = listed.iter().find(|s| s["id"] == s3.as_str()).unwrap();
    assert_eq!(s3_row["parent"], s2.as_str(), "{s3_row}");
    // Old snapshots still verify and restore.
    w.ok(&[
        "verify",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    let t = w.path("out-1");
    restore_via(&w, &url, &s1[..12], &t);

    // The audit shows the succession, and no problem.
    let audit = w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(audit.contains("replaced by key"), "{audit}");
    assert!(audit.contains("0 problem(s)"), "{audit}");

    // Forged successions, sent by an admin: each refused, nothing logged.
    let admin = load_key(&w.key("admin-1"));
    let admin_id = admin.identity().unwrap();
    let cid = admin.config_id;
    let old_key = load_key(&old);
    let new_key = load_key(&new);
    let av = raw(&w, &url, &w.key("admin-1"));
    let now = holdfast_repo::now_ns();
    // 1. A bad predecessor signature: a thief names the live key.
    let thief = Identity::generate().unwrap();
    let fresh = Identity::generate().unwrap();
    let mut forged =
        IdentityRecord::successor(cid, "client", fresh.public(), &thief, admin_id, now);
    forged.predecessor.as_mut().unwrap().public = new_key.identity().unwrap().public();
    let (code, msg) = put_identity(&av, &forged);
    assert_eq!(code, 400, "{msg}");
    // 2. The predecessor is revoked (already succeeded).
    let again = IdentityRecord::successor(
        cid,
        "client",
        fresh.public(),
        old_key.identity().unwrap(),
        admin_id,
        now,
    );
    let (code, msg) = put_identity(&av, &again);
    assert_eq!(code, 409, "{msg}");
    assert!(msg.contains("not an active client"), "{msg}");
    // 3. The successor key is reused: the old key, or an admin's.
    for reused in [old_key.identity().unwrap().public(), admin_id.public()] {
        let rec = IdentityRecord::successor(
            cid,
            "client",
            reused,
            new_key.identity().unwrap(),
            admin_id,
            now,
        );
        let (code, msg) = put_identity(&av, &rec);
        assert_eq!(code, 409, "{msg}");
        assert!(msg.contains("not new"), "{msg}");
    }
    // 4. A client key cannot sign a succession alone (no admin).
    let cv = raw(&w, &url, &new);
    let rec = IdentityRecord::successor(
        cid,
        "client",
        fresh.public(),
        new_key.identity().unwrap(),
        new_key.identity().unwrap(),
        now,
    );
    // Sent by the client: its role may not add identities (403, before
    // the record is read); sent by an admin, the record is not that
    // admin's (403). The record's own admin check (IdentityRecord::verify)
    // is reached where records are read from disk: see
    // a_hidden_or_renamed_succession_record_is_tampering.
    let (code, msg) = put_identity(&cv, &rec);
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("may not"), "{msg}");
    let (code, msg) = put_identity(&av, &rec);
    assert_eq!(code, 403, "{msg}");
    assert!(msg.contains("signed by the admin sending it"), "{msg}");
    // A replica folds the succession as the vault did: no problem, both
    // keys' snapshots copied, and its own audit is clean.
    let rep = w.path("replica");
    let o = w.run(&[
        "replica",
        "pull",
        "--from",
        &url,
        "--key",
        &w.key("replica"),
        "--into",
        rep.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("TAMPERING"), "{e}");
    let rep_audit = w.ok(&[
        "audit",
        "--repo",
        rep.to_str().unwrap(),
        "--key",
        &w.key("auditor"),
    ]);
    assert!(rep_audit.contains("0 problem(s)"), "{rep_audit}");
    assert!(rep_audit.contains("replaced by key"), "{rep_audit}");
    // A damaged record in the replica (one flipped bit) is set aside, never
    // deleted, and fetched again from the vault: the next pull is clean.
    let pull = || {
        w.run(&[
            "replica",
            "pull",
            "--from",
            &url,
            "--key",
            &w.key("replica"),
            "--into",
            rep.to_str().unwrap(),
        ])
    };
    let held = files(&rep.join("identities"));
    assert!(!held.is_empty());
    for p in &held {
        let mut b = std::fs::read(p).unwrap();
        b[40] ^= 1;
        std::fs::write(p, b).unwrap();
    }
    let o = pull();
    let e = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(e.contains("set aside"), "{e}");
    let o = pull();
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{e}");
    assert!(!e.contains("TAMPERING"), "{e}");
    for p in &held {
        let name = p.file_name().unwrap();
        assert_eq!(
            std::fs::read(p).unwrap(),
            std::fs::read(w.path("repo/identities").join(name)).unwrap()
        );
        assert!(p.with_extension("damaged").exists());
    }
    // Nothing of that joined: the new key still works, the audit is clean.
    mail_day(&src, 6);
    backup_via(&w, &url, &new, &src);
    let audit = w.ok(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(audit.contains("0 problem(s)"), "{audit}");
    // A restarted vault replays the succession from its log and records.
    vault.stop();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    mail_day(&src, 7);
    let j = backup_json(&w, &url, &new, &src);
    assert_eq!(j["checked"], "compared", "{j}");
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &old,
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(!vault.stderr().contains("TAMPERING"), "{}", vault.stderr());
    // Revoking the client by name revokes its live key.
    w.ok(&[
        "key",
        "revoke",
        "client",
        "client",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
    ]);
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &new,
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

/// After a restore key rotation ran, the vault refuses a snapshot sealed
/// to the old epoch (a client that did not follow, or a stolen client key
/// sealing to a leaked key), and one that names no epoch; every snapshot
/// names its epoch in `snapshots --json`; one that lies about its epoch
/// (sealed to the old key, naming the new) is caught by the restore key.
#[test]
fn after_a_restore_key_rotation_the_vault_refuses_the_old_epoch() {
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &w.repo(), "--keys", &keys, "--delay-secs", "1"]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 6, 77);
    let before = backup_via(&w, &url, &w.key("client"), &src);
    let new_restore = w.path("restore-2.key").display().to_string();
    w.ok(&[
        "key",
        "rotate",
        "restore",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        "--restore-key",
        &w.key("restore"),
        "--out",
        &new_restore,
    ]);
    let props: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "proposals",
        "--repo",
        &url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]))
    .unwrap();
    let pid = props[0]["id"].as_str().unwrap().to_string();
    w.ok(&[
        "approve",
        "--repo",
        &url,
        "--key",
        &w.key("admin-2"),
        &pid[..12],
    ]);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let after = backup_via(&w, &url, &w.key("client"), &src);

    // Each snapshot names its epoch.
    let restore = new_restore.clone();
    let listed: Vec<serde_json::Value> =
        serde_json::from_str(&w.ok(&["snapshots", "--repo", &url, "--key", &restore, "--json"]))
            .unwrap();
    let epoch_of =
        |id: &str| listed.iter().find(|s| s["id"] == id).unwrap()["restore_epoch"].clone();
    assert_eq!(epoch_of(&before), 0);
    assert_eq!(epoch_of(&after), 1);

    // A client key forced to seal to the old epoch.
    let client = load_key(&w.key("client"));
    let me = client.identity().unwrap();
    let cv = raw(&w, &url, &w.key("client"));
    let prior = Snapshot::decode(&cv.get(Kind::Snapshot, &after).unwrap()).unwrap();
    let old_pub = load_key(&w.key("restore")).repo_secret().unwrap().public();
    let new_pub = load_key(&new_restore).repo_secret().unwrap().public();
    assert_ne!(old_pub, new_pub);
    let make = |sealed_to: &[u8; 32], names: Option<&[u8; 32]>| {
        let (epk, session) = seal_session(sealed_to).unwrap();
        let header = SnapshotHeader {
            config_id: client.config_id,
            client: me.public(),
            time_ns: holdfast_repo::now_ns(),
            parent: Some(ObjectId::from_hex(&after).unwrap()),
            packs: prior.header.packs.clone(),
            epk,
        };
        let body = SnapshotBody {
            root: BlobId([0; 32]),
            hostname: "forced".into(),
            ..Default::default()
        };
        let j = Judgement {
            checked: Checked::NoBaseline,
            runs: 0,
            thresholds: vec![],
        };
        match names {
            Some(e) => Snapshot::create_sealed_to(header, &[], &j, e, &body, &session, me).unwrap(),
            None => Snapshot::create_judged(header, &[], &j, &body, &session, me).unwrap(),
        }
    };
    let put = |(id, bytes): (ObjectId, Vec<u8>)| {
        send(
            &cv,
            "PUT",
            &format!("/v1/objects/snapshots/{}", id.to_hex()),
            &bytes,
        )
    };
    let (code, msg) = put(make(&old_pub, Some(&old_pub)));
    assert_eq!(code, 400, "{msg}");
    assert!(
        msg.contains("epoch 0") && msg.contains("current epoch 1"),
        "{msg}"
    );
    assert_eq!(msg.trim().lines().count(), 1, "{msg}");
    let (code, msg) = put(make(&old_pub, None));
    assert_eq!(code, 400, "{msg}");
    assert!(msg.contains("no restore key epoch"), "{msg}");
    // Sealed to the old key but naming the new one: the vault cannot tell
    // (it has no key), every restore key holder can.
    let (lie, lie_bytes) = make(&old_pub, Some(&new_pub));
    let (code, msg) = put((lie, lie_bytes));
    assert!(code < 300, "{code} {msg}");
    // (The old key's view of such a record: the unit test
    // format::tests::snapshot_epoch_v4.)
    let o = w.run(&[
        "verify",
        "--repo",
        &url,
        "--key",
        &new_restore,
        "--read-data",
    ]);
    let e = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(e.contains("another restore key epoch"), "{e}");

    // The vault host (root, holding the vault key) slips one in: sealed to
    // the old epoch and naming it, stored and logged behind the vault's
    // back. Every reader's audit catches it.
    vault.stop();
    let (sid, sbytes) = make(&old_pub, Some(&old_pub));
    std::fs::write(w.path("repo/snapshots").join(sid.to_hex()), &sbytes).unwrap();
    let log = w.path("repo/vault/log");
    let mut raw = std::fs::read(&log).unwrap();
    let entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    let last = Entry::decode(entries.last().unwrap()).unwrap().time_ns;
    let t = last.max(holdfast_repo::now_ns() - 1_000_000_000) + 1;
    let forged = Entry {
        time_ns: t,
        event: Event::SnapshotAdded {
            snapshot: sid,
            client: me.public(),
            lock_until_ns: t + 400 * 86_400 * 1_000_000_000,
        },
    };
    frame(&forged.encode(), &mut raw);
    std::fs::write(&log, &raw).unwrap();
    let entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    sign_log(&w, &entries);
    let o = w.run(&["audit", "--repo", &w.repo(), "--key", &w.key("auditor")]);
    let e = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(4), "{e}");
    assert!(
        e.contains("restore key epoch 1 was current but names epoch 0"),
        "{e}"
    );
}

/// On a plain directory (no vault, no log) the successor record is simply
/// written: the new key is the same client (cache, baseline, history);
/// without a log nothing orders the old key's later snapshots, so a
/// directory has no revocation (format.md §4.3).
#[test]
fn a_client_key_succession_on_a_directory() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 1, 8, 17);
    let s1 = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let new = w.path("client-2.key").display().to_string();
    w.ok(&[
        "key",
        "rotate",
        "client",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        "--admin-key",
        &w.key("admin-1"),
        "--out",
        &new,
    ]);
    // Refused: the same --out again, and no admin key.
    let o = w.run(&[
        "key",
        "rotate",
        "client",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        "--out",
        &new,
    ]);
    assert_eq!(o.status.code(), Some(1));
    let j = backup_json(&w, &w.repo(), &new, &src);
    assert_eq!(j["checked"], "compared", "{j}");
    assert_eq!(j["new_bytes"], 0, "{j}");
    let listed = snapshots_json(&w, &w.repo(), &["--client", "client"]);
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["parent"], s1.as_str());
}

/// `key rotate client` from `key` to a new key file `out`.
fn rotate(w: &World, url: &str, key: &str, out: &str) {
    w.ok(&[
        "key",
        "rotate",
        "client",
        "--repo",
        url,
        "--key",
        key,
        "--admin-key",
        &w.key("admin-1"),
        "--out",
        out,
    ]);
}

/// Starts `vault serve` expecting it to refuse to start: its exit status
/// and stderr (killed after 30 s if it serves after all).
fn vault_refuses(w: &World) -> (Option<i32>, String) {
    let err = w.path("refused-vault.err");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_holdfast"))
        .args([
            "vault",
            "serve",
            "--repo",
            &w.repo(),
            "--key",
            &w.key("vault"),
        ])
        .args(["--listen", "127.0.0.1:0"])
        .env("HOLDFAST_PASSPHRASE", PASS)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if std::time::Instant::now() > until {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    (status, std::fs::read_to_string(&err).unwrap_or_default())
}

fn audit(w: &World, repo: &str) -> (Option<i32>, String) {
    let o = w.run(&["audit", "--repo", repo, "--key", &w.key("auditor")]);
    let e = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.code(), e)
}

/// A repository with a vault on 127.0.0.1 and one backup by the client key
/// of a mailbox of `msgs` messages (`seed`): the world, the vault, its URL
/// and the mailbox.
fn vault_with_a_backup(msgs: usize, seed: u64) -> (World, VaultProc, String, std::path::PathBuf) {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, msgs, seed);
    backup_via(&w, &url, &w.key("client"), &src);
    (w, vault, url, src)
}

/// Review findings 1 and 4: two rotations in a row (a chain of three
/// keys) hold across a vault restart: the newest key backs up as the same
/// client, the first and second are refused. A stale succession record of
/// the first key, found on disk at start, is not logged, and its key may
/// not act while it is pending.
#[test]
fn two_rotations_hold_across_a_restart_and_a_stale_record_is_not_logged() {
    let (w, mut vault, url, src) = vault_with_a_backup(8, 41);
    let k1 = w.key("client");
    let k2 = w.path("client-2.key").display().to_string();
    rotate(&w, &url, &k1, &k2);
    mail_day(&src, 3);
    backup_via(&w, &url, &k2, &src);
    let k3 = w.path("client-3.key").display().to_string();
    rotate(&w, &url, &k2, &k3);
    mail_day(&src, 4);
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &k3,
        src.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success() && !e.contains("TAMPERING"), "{e}");
    let (code, out) = audit(&w, &url);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("0 problem(s)"), "{out}");

    // Stale successions of the first key (signed by it and an admin), put
    // on disk while the vault is down: the vault logs none of them.
    vault.stop();
    let admin = load_key(&w.key("admin-1"));
    let first = load_key(&k1);
    let stale_keys: Vec<Identity> = (0..5).map(|_| Identity::generate().unwrap()).collect();
    for k in &stale_keys {
        let stale = IdentityRecord::successor(
            admin.config_id,
            "client",
            k.public(),
            first.identity().unwrap(),
            admin.identity().unwrap(),
            holdfast_repo::now_ns(),
        );
        let bytes = stale.encode();
        std::fs::write(
            w.path("repo/identities")
                .join(ObjectId::of(&bytes).to_hex()),
            &bytes,
        )
        .unwrap();
    }
    let stale_key = stale_keys[0].clone();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    assert!(
        vault.stderr().contains("may not join now"),
        "{}",
        vault.stderr()
    );
    mail_day(&src, 5);
    let j = backup_json(&w, &url, &k3, &src);
    assert_eq!(j["checked"], "compared", "{j}");
    for old in [&k1, &k2] {
        let o = w.run(&[
            "backup",
            "--repo",
            &url,
            "--key",
            old,
            src.to_str().unwrap(),
        ]);
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{old}: {e}");
        assert!(e.contains("revoked"), "{e}");
    }
    // The pending key of the stale record may not act.
    let msg = match VaultBackend::connect(
        &url,
        stale_key.clone(),
        admin.config_id,
        &w.path("raw-state/stale"),
    ) {
        Err(e) => e.to_string(),
        Ok(sv) => {
            let (code, msg) = send(&sv, "GET", "/v1/identities", b"");
            assert_eq!(code, 403, "{msg}");
            msg
        }
    };
    assert!(msg.contains("not in the log yet"), "{msg}");
    // The log never added it: the fold has no succession problem (the
    // audit reports the unlogged file, nothing else).
    let (_, out) = audit(&w, &url);
    assert!(!out.contains("adds the succession"), "{out}");
    assert!(out.contains("5 problem(s)"), "{out}");
    assert!(
        out.contains("present but the log does not explain it"),
        "{out}"
    );
    // Finding 5: `propose remove client` names the live key (the third),
    // never one of the pending ones.
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &w.key("admin-1"),
        "remove-identity",
        "client",
    ]);
    let av = raw(&w, &url, &w.key("admin-1"));
    let (code, listed) = send(&av, "GET", "/v1/proposals", b"");
    assert_eq!(code, 200, "{listed}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let bytes = holdfast_core::id::parse_hex(listed[0]["proposal"].as_str().unwrap()).unwrap();
    let prop = holdfast_core::governance::Proposal::decode(&bytes).unwrap();
    let live = load_key(&k3).identity().unwrap().public();
    assert!(
        matches!(prop.action, holdfast_core::governance::Action::RemoveIdentity(k) if k == live),
        "{:?}",
        prop.action
    );
}

/// Review finding 2: a logged identity record that is moved away, renamed
/// or replaced by one that does not verify is never silently dropped: the
/// vault does not start, and every reader's audit exits 4.
#[test]
fn a_hidden_or_renamed_succession_record_is_tampering() {
    let (w, mut vault, url, src) = vault_with_a_backup(6, 43);
    let k1 = w.key("client");
    let k2 = w.path("client-2.key").display().to_string();
    rotate(&w, &url, &k1, &k2);
    vault.stop();
    let dir = w.path("repo/identities");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let away = w.path("identities-away");
    std::fs::create_dir_all(&away).unwrap();
    for n in &names {
        std::fs::rename(dir.join(n), away.join(n)).unwrap();
    }
    // Missing.
    let (code, e) = vault_refuses(&w);
    assert_eq!(code, Some(4), "{e}");
    assert!(
        e.contains("TAMPERING") && e.contains("does not hold"),
        "{e}"
    );
    let (code, out) = audit(&w, &w.repo());
    assert_eq!(code, Some(4), "{out}");
    assert!(out.contains("does not hold"), "{out}");
    // Renamed (the vault used to log it again under the new name).
    for n in &names {
        let mut other = n.clone();
        other.replace_range(..2, if n.starts_with("00") { "11" } else { "00" });
        std::fs::copy(away.join(n), dir.join(other)).unwrap();
    }
    let (code, e) = vault_refuses(&w);
    assert_eq!(code, Some(4), "{e}");
    assert!(
        e.contains("not its content id") || e.contains("content does not match its id"),
        "{e}"
    );
    let (code, out) = audit(&w, &w.repo());
    assert_eq!(code, Some(4), "{out}");
    for e in std::fs::read_dir(&dir).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    // Put back: the vault starts, the old key is refused, all clean.
    for n in &names {
        std::fs::copy(away.join(n), dir.join(n)).unwrap();
    }
    // Plus a record that names a client key as its admin (the admin
    // check of the record's verification): the vault does not start.
    let client = load_key(&k2);
    let fresh = Identity::generate().unwrap();
    let forged = IdentityRecord::successor(
        client.config_id,
        "client",
        fresh.public(),
        client.identity().unwrap(),
        client.identity().unwrap(),
        holdfast_repo::now_ns(),
    );
    let fb = forged.encode();
    let fpath = dir.join(ObjectId::of(&fb).to_hex());
    std::fs::write(&fpath, &fb).unwrap();
    let (code, e) = vault_refuses(&w);
    assert_eq!(code, Some(4), "{e}");
    assert!(e.contains("not signed by an admin"), "{e}");
    std::fs::remove_file(&fpath).unwrap();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &k1,
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    let (code, out) = audit(&w, &url);
    assert_eq!(code, Some(0), "{out}");
}

/// Review finding 6: a rotation the vault refuses leaves no key file
/// behind. Four rotations of the same key at once: each passes the
/// client's own check (the key is active in its view of the log), the
/// vault accepts one and refuses the others (409, the predecessor was
/// succeeded meanwhile); only the accepted one's key file remains.
#[test]
fn a_rotation_the_vault_refuses_leaves_no_key_file() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let admin = w.key("admin-1");
    let mut live = w.key("client");
    let src = w.path("mail");
    make_maildir(&src, 1, 4, 45);
    // Rounds until the vault itself refused at least one (a round where
    // the client checks refused all the losers proves nothing).
    let mut by_vault = 0;
    for round in 0..8 {
        let outs: Vec<std::path::PathBuf> = (0..6)
            .map(|i| w.path(&format!("client-race-{round}-{i}.key")))
            .collect();
        let runs: Vec<_> = outs
            .iter()
            .map(|out| {
                w.cmd(&[
                    "key",
                    "rotate",
                    "client",
                    "--repo",
                    &url,
                    "--key",
                    &live,
                    "--admin-key",
                    &admin,
                    "--out",
                    out.to_str().unwrap(),
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
            })
            .collect();
        let results: Vec<_> = runs
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let ok = results.iter().filter(|o| o.status.success()).count();
        let errs: Vec<String> = results
            .iter()
            .filter(|o| !o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .collect();
        assert_eq!(ok, 1, "{errs:?}");
        let left: Vec<_> = outs.iter().filter(|o| o.exists()).collect();
        assert_eq!(
            left.len(),
            1,
            "refused rotations left key files: {left:?} {errs:?}"
        );
        // The one left is the client's live key.
        live = left[0].display().to_string();
        backup_via(&w, &url, &live, &src);
        by_vault += errs
            .iter()
            .filter(|e| e.contains("removed (the new key never joined)"))
            .count();
        if by_vault > 0 {
            break;
        }
    }
    assert!(by_vault > 0, "no rotation reached the vault's refusal");
}

/// Review finding 7: the vault's quota counts a client across its keys
/// (`usage_of` groups by the first key of the chain): the successor does
/// not get a fresh quota of its own.
#[test]
fn the_quota_counts_a_client_across_its_keys() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&["--quota-mib", "2"]);
    let url = vault.url.clone();
    let src = w.path("data");
    std::fs::create_dir_all(&src).unwrap();
    let rand = |n: usize| {
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            v.extend_from_slice(&holdfast_core::crypto::random_bytes::<32>().unwrap());
        }
        v
    };
    std::fs::write(src.join("a"), rand(1_200_000)).unwrap();
    let k1 = w.key("client");
    backup_via(&w, &url, &k1, &src);
    let k2 = w.path("client-2.key").display().to_string();
    rotate(&w, &url, &k1, &k2);
    std::fs::write(src.join("b"), rand(1_200_000)).unwrap();
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &k2,
        src.to_str().unwrap(),
    ]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success(),
        "the successor got a quota of its own: {e}"
    );
    assert!(e.contains("quota"), "{e}");
    assert!(
        vault.stderr().contains("hit its storage quota"),
        "{}",
        vault.stderr()
    );
}
