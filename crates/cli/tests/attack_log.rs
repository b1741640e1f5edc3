//! Issue 8 A–D as an attacker would do them: a log edited on the vault
//! host (with and without the vault key), a client's claimed time, a vault
//! started on a directory repository, two vaults on one state, and a
//! damaged snapshot file. Each must be refused or detected (exit 4, alert),
//! with nothing deleted.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use holdfast_core::vaultlog::{Entry, Event, frame, split_log};

fn now_ns() -> i64 {
    holdfast_repo::now_ns()
}

/// Appends `entries` to the vault's log and, holding the vault key, signs a
/// checkpoint over the whole log: what root on the vault host can do.
fn append_signed(w: &World, new: &[Entry]) {
    let log = w.path("repo/vault/log");
    let mut raw = std::fs::read(&log).unwrap();
    for e in new {
        frame(&e.encode(), &mut raw);
    }
    std::fs::write(&log, &raw).unwrap();
    let entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    sign_log(w, &entries);
}

fn code(o: &std::process::Output) -> Option<i32> {
    o.status.code()
}

fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn pull(w: &World, url: &str, into: &Path) -> std::process::Output {
    w.run(&[
        "replica",
        "pull",
        "--from",
        url,
        "--key",
        &w.key("replica"),
        "--into",
        into.to_str().unwrap(),
        "--json",
    ])
}

fn snap_id(hex: &str) -> holdfast_core::ObjectId {
    holdfast_core::ObjectId::from_hex(hex).unwrap()
}

/// A.1/A.2: root on the vault host, holding the vault key, appends a
/// `Reclaimed` entry dated in the future and a second `SnapshotAdded` with a
/// lock in the past, re-signs and restarts. Nothing is deleted, and the
/// vault, clients, verify, audit and the replica all report it.
#[test]
fn forged_log_entries_delete_nothing_and_are_reported_everywhere() {
    let w = World::new();
    w.init_with(&["--keep-within-secs", "86400", "--grace-secs", "0"]);
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 81);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 1);
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    let rdir = w.path("replica");
    assert_eq!(code(&pull(&w, &url, &rdir)), Some(0));
    vault.stop();

    let client = load_key(&w.key("client")).identity().unwrap().public();
    let future = now_ns() + 40 * 86_400 * 1_000_000_000;
    append_signed(
        &w,
        &[
            Entry {
                time_ns: now_ns() + 1_000_000,
                event: Event::SnapshotAdded {
                    snapshot: snap_id(&s1),
                    client,
                    lock_until_ns: 0,
                },
            },
            Entry {
                time_ns: future,
                event: Event::Reclaimed {
                    snapshots: vec![snap_id(&s1), snap_id(&s2)],
                    packs: vec![],
                },
            },
        ],
    );
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let url = vault.url.clone();
    std::thread::sleep(Duration::from_secs(3));
    let vault_err = vault.stderr();
    assert!(vault_err.contains("TAMPERING"), "{vault_err}");
    // Nothing deleted.
    for s in [&s1, &s2] {
        assert!(w.path("repo/snapshots").join(s).exists(), "{s} deleted");
    }
    // Every reader reports it, exit 4.
    let mut tried = 0;
    for args in [
        vec!["snapshots", "--repo", &url, "--key", &w.key("client")],
        vec!["verify", "--repo", &url, "--key", &w.key("restore")],
        vec!["audit", "--repo", &url, "--key", &w.key("auditor")],
    ] {
        tried += 1;
        let o = w.run(&args);
        assert_eq!(code(&o), Some(4), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("TAMPERING"), "{args:?}: {}", err(&o));
    }
    let o = pull(&w, &url, &rdir);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    assert!(rdir.join("snapshots").join(&s1).exists());
    assert!(rdir.join("snapshots").join(&s2).exists());
    // The forged entry is dated 40 days after the vault's clock, beyond
    // what it believes: it takes no writes (dating new entries before the
    // forgery or 40 days ahead would both be wrong) and says why; reads go
    // on and the data is safe.
    assert!(vault_err.contains("takes no writes"), "{vault_err}");
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
    assert!(err(&o).contains("takes no writes"), "{}", err(&o));
    vault.stop();
    eprintln!("forged-log attempts: {} readers, all detected", tried + 1);
}

/// Root on the vault host flags the newest, healthy snapshot (a shrink, a
/// burst, a client finding it never made) so that `latest` would skip it
/// and restore an older one: the host would choose what is restored. Every
/// reader recomputes the flags, reports them (exit 4) and ignores them;
/// `latest` is still the newest snapshot.
#[test]
fn forged_flags_cannot_choose_what_latest_restores() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 84);
    let _s1 = backup_via(&w, &url, &w.key("client"), &src);
    std::fs::write(src.join("newest.txt"), b"written after the first backup").unwrap();
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    vault.stop();
    let t = now_ns();
    let flag = |i: i64, signal: u8, count: u64| Entry {
        time_ns: t + i * 1_000_000,
        event: Event::Flagged {
            snapshot: snap_id(&s2),
            signal,
            count,
        },
    };
    append_signed(&w, &[flag(1, 64, 10), flag(2, 65, 40), flag(3, 66, 1)]);
    let out = w.path("restored");
    let o = w.run(&[
        "restore",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("restore"),
        "latest",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    let e = err(&o);
    assert!(e.contains("TAMPERING"), "{e}");
    for what in ["as a shrink", "as a burst", "signed findings are empty"] {
        assert!(e.contains(what), "{what}: {e}");
    }
    assert!(!e.contains("skipped"), "latest skipped the newest: {e}");
    let back = std::fs::read(out.join("mail/newest.txt")).unwrap();
    assert_eq!(back, b"written after the first backup");
    // The listing shows it unflagged, and says why.
    let o = w.run(&[
        "snapshots",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        "--json",
    ]);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let last = list.iter().find(|s| s["id"] == s2.as_str()).unwrap();
    assert_eq!(
        last["anomalies"].as_array().map(Vec::len),
        Some(0),
        "{last}"
    );
}

/// Root on the vault host hides the newest snapshot (its file gone from
/// what is served) so that `latest` would be an older one: the log says it
/// is live, so `latest` refuses (exit 4) instead of choosing; and a log
/// rewritten with false stored bytes (to fake or hide a shrink) is caught
/// by a replica holding the real packs.
#[test]
fn a_hidden_snapshot_or_false_stored_bytes_are_caught() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 85);
    let _s1 = backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 3);
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    vault.stop();
    // Hidden: moved out of the served directory.
    let snap = w.path("repo/snapshots").join(&s2);
    let aside = w.path("s2-aside");
    std::fs::rename(&snap, &aside).unwrap();
    let out = w.path("restored");
    let o = w.run(&[
        "restore",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("restore"),
        "latest",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    assert!(err(&o).contains("not served"), "{}", err(&o));
    assert!(
        !out.join("mail").exists(),
        "latest restored an older snapshot"
    );
    std::fs::rename(&aside, &snap).unwrap();

    // False stored bytes: the log rewritten and re-signed with the vault key.
    let logp = w.path("repo/vault/log");
    let raw = std::fs::read(&logp).unwrap();
    let mut entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    let mut changed = 0;
    for e in entries.iter_mut() {
        let mut d = Entry::decode(e).unwrap();
        if let Event::Stored { snapshot, bytes } = &mut d.event
            && snapshot.to_hex() == s2
        {
            *bytes *= 3;
            *e = d.encode();
            changed += 1;
        }
    }
    assert_eq!(changed, 1, "no stored-bytes entry for the snapshot");
    let mut buf = Vec::new();
    for e in &entries {
        frame(e, &mut buf);
    }
    std::fs::write(&logp, &buf).unwrap();
    sign_log(&w, &entries);
    let vault = w.start_vault(&[]);
    let rdir = w.path("replica");
    let o = pull(&w, &vault.url, &rdir);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    let all = format!("{}{}", err(&o), String::from_utf8_lossy(&o.stdout));
    assert!(all.contains("stored bytes here"), "{all}");
}

/// A.3: complete entries appended to the log file without a checkpoint the
/// vault signed: the vault refuses to start rather than adopt them.
#[test]
fn entries_appended_without_the_key_stop_the_vault() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 1, 5, 82);
    let s1 = backup_via(&w, &vault.url, &w.key("client"), &src);
    vault.stop();
    let log = w.path("repo/vault/log");
    let mut raw = std::fs::read(&log).unwrap();
    frame(
        &Entry {
            time_ns: now_ns(),
            event: Event::Reclaimed {
                snapshots: vec![snap_id(&s1)],
                packs: vec![],
            },
        }
        .encode(),
        &mut raw,
    );
    std::fs::write(&log, &raw).unwrap();
    let o = serve_once(&w);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    assert!(
        err(&o).contains("after the last signed checkpoint"),
        "{}",
        err(&o)
    );
    assert!(w.path("repo/snapshots").join(&s1).exists());
}

/// B: a stolen client key posts a snapshot dated 2100. The vault refuses it;
/// `latest` is chosen by the vault's time and per client.
#[test]
fn a_client_cannot_choose_latest_with_its_clock() {
    let w = World::new();
    w.init_with(&[]);
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 5, 83);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    // Forge: a valid snapshot signed by the client key, dated 2100.
    let client = load_key(&w.key("client"));
    let v = raw(&w, &url, &w.key("client"));
    let body = std::fs::read(w.path("repo/snapshots").join(&s1)).unwrap();
    let mut snap = holdfast_core::format::Snapshot::decode(&body).unwrap();
    snap.header.time_ns = 4_102_444_800 * 1_000_000_000; // 2100-01-01
    let forged = snap.resign(client.identity().unwrap());
    let id = holdfast_core::ObjectId::of(&forged);
    let path = format!("/v1/objects/snapshots/{}", id.to_hex());
    let auth =
        holdfast_core::request::Auth::sign(v.identity(), "PUT", &path, now_ns(), &forged).unwrap();
    let (st, msg) = v.send("PUT", &path, &forged, &auth).unwrap();
    assert_eq!(st, 400, "{}", String::from_utf8_lossy(&msg));
    // latest is the genuine one.
    let out = w.ok(&[
        "snapshots",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "--json",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], s1);
}

/// D: a user backs up to a directory, then starts a vault on it (the
/// README's order). The vault adopts the snapshots, logged and alerted,
/// and never deletes them.
#[test]
fn a_vault_adopts_a_directory_repository_and_deletes_nothing() {
    let w = World::new();
    w.init_with(&["--keep-within-secs", "1", "--grace-secs", "0"]);
    let src = w.path("mail");
    make_maildir(&src, 2, 8, 84);
    let mut ids = Vec::new();
    for day in 0..5 {
        mail_day(&src, day);
        let j = w.backup(&[&src]);
        ids.push(j["snapshot"].as_str().unwrap().to_string());
    }
    let packs_before = files(&w.path("repo/packs")).len();
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    std::thread::sleep(Duration::from_secs(4));
    let e = vault.stderr();
    assert!(e.contains("adopted 5 snapshot"), "{e}");
    assert!(!e.contains("TAMPERING"), "{e}");
    let out = w.ok(&[
        "snapshots",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        "--json",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    // The last 3 at least are kept whatever their locks say; the older
    // two may be reclaimed as expired, their logged adoption explains it.
    assert!(list.len() >= 3, "{out}");
    for id in &ids[2..] {
        assert!(w.path("repo/snapshots").join(id).exists());
    }
    let out = w.path("out");
    restore_via(&w, &vault.url, &ids[4][..12], &out);
    assert_eq!(digest(&out.join("mail")), digest(&src));
    assert!(files(&w.path("repo/packs")).len() <= packs_before);
    vault.stop();
}

/// D: two vaults on one repository would fork its log: the second refuses.
#[test]
fn a_second_vault_on_the_same_state_refuses_to_start() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let o = serve_once(&w);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("another vault"), "{}", err(&o));
    vault.stop();
}

/// D: one flipped bit in a live snapshot file, then a restart with reclaims
/// running: its packs are not reclaimed, and the damage is alerted.
#[test]
fn a_damaged_snapshot_stops_pack_reclaim() {
    let w = World::new();
    w.init_with(&["--keep-within-secs", "86400", "--grace-secs", "0"]);
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 85);
    let s1 = backup_via(&w, &vault.url, &w.key("client"), &src);
    vault.stop();
    let p = w.path("repo/snapshots").join(&s1);
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len() / 2;
    b[n] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let packs_before = files(&w.path("repo/packs"));
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(files(&w.path("repo/packs")), packs_before, "packs deleted");
    let e = vault.stderr();
    assert!(
        e.contains("DAMAGE") || e.contains("not reclaiming packs"),
        "{e}"
    );
    vault.stop();
}

/// T5: the vault's state disk fills mid-backup. The append fails cleanly
/// (no torn record left for the next one to follow), and once there is room
/// the next backup commits; after a restart the log is whole and the audit
/// clean.
#[test]
fn a_full_state_disk_fails_appends_cleanly_and_loses_nothing() {
    let w = World::new();
    w.init_with(&[]);
    let mnt = w.path("state-disk");
    let Some(_guard) = small_tmpfs(&mnt, "256k") else {
        eprintln!("cannot mount a small tmpfs here (not root?): test skipped");
        return;
    };
    let state = mnt.join("state");
    let state_arg = state.to_str().unwrap().to_string();
    let mut vault = w.start_vault(&["--state", &state_arg]);
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 86);
    let s1 = backup_via(&w, &vault.url, &w.key("client"), &src);
    // Fill the state disk to the last byte.
    let fill = mnt.join("fill");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&fill).unwrap();
        while f.write_all(&[0u8; 512]).is_ok() {}
        let _ = f.sync_all();
    }
    mail_day(&src, 1);
    let o = w.run(&[
        "backup",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    assert_ne!(code(&o), Some(0), "a backup committed on a full state disk");
    std::fs::remove_file(&fill).unwrap();
    let s2 = backup_via(&w, &vault.url, &w.key("client"), &src);
    vault.stop();
    let vault = w.start_vault(&["--state", &state_arg]);
    let out = w.ok(&[
        "snapshots",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        "--json",
    ]);
    for s in [&s1, &s2] {
        assert!(out.contains(s.as_str()), "{s} lost: {out}");
    }
    let o = w.run(&["audit", "--repo", &vault.url, "--key", &w.key("auditor")]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    let restored = w.path("out");
    restore_via(&w, &vault.url, &s2[..12], &restored);
    assert_eq!(digest(&restored.join("mail")), digest(&src));
}

/// F: one missing pack at the vault stops only the snapshot that needs it:
/// the pull copies the rest, exits 4 naming it, and copies it once it is
/// back.
#[test]
fn a_missing_pack_stops_one_snapshot_not_the_replica() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 87);
    let s1 = backup_via(&w, &url, &w.key("client"), &src);
    std::fs::write(src.join("big"), Rng(9).bytes(300_000)).unwrap();
    let s2 = backup_via(&w, &url, &w.key("client"), &src);
    let packs_of = |s: &str| {
        let b = std::fs::read(w.path("repo/snapshots").join(s)).unwrap();
        holdfast_core::format::Snapshot::decode(&b)
            .unwrap()
            .header
            .packs
    };
    let only_s2 = packs_of(&s2)
        .into_iter()
        .find(|p| !packs_of(&s1).contains(p))
        .expect("s2 has a pack of its own");
    let pack_path = files(&w.path("repo/packs"))
        .into_iter()
        .find(|p| p.file_name().unwrap() == only_s2.to_hex().as_str())
        .unwrap();
    let aside = w.path("aside");
    std::fs::rename(&pack_path, &aside).unwrap();
    let rdir = w.path("replica");
    let o = pull(&w, &url, &rdir);
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains(&s2[..8]), "{out}");
    assert!(rdir.join("snapshots").join(&s1).exists());
    assert!(!rdir.join("snapshots").join(&s2).exists());
    std::fs::rename(&aside, &pack_path).unwrap();
    let o = pull(&w, &url, &rdir);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(rdir.join("snapshots").join(&s2).exists());
    vault.stop();
}

/// B: `latest` is per client. With two servers backing up, a bare `latest`
/// is refused (a newcomer once restored the wrong server's data with it);
/// `--client` chooses, by the vault's time.
#[test]
fn latest_is_per_client() {
    let w = World::new();
    w.init_with(&[]);
    let mut vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let mx2 = w.path("keys/mx2.key").display().to_string();
    w.ok(&[
        "key",
        "new",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "--admin-key",
        &w.key("admin-1"),
        "--out",
        &mx2,
        "client",
        "mx2",
    ]);
    let (a, b) = (w.path("a"), w.path("b"));
    make_maildir(&a, 1, 5, 88);
    make_maildir(&b, 1, 5, 89);
    backup_via(&w, &url, &w.key("client"), &a);
    backup_via(&w, &url, &mx2, &b);
    let o = w.run(&[
        "restore",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "latest",
        w.path("o1").to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("--client"), "{}", err(&o));
    // The first client's latest is its own, though mx2 backed up later.
    let out = w.path("o2");
    w.ok(&[
        "restore",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--client",
        "client",
        "latest",
        out.to_str().unwrap(),
    ]);
    assert_eq!(digest(&out.join("a")), digest(&a));
    let ls = w.ok(&[
        "ls",
        "--repo",
        &url,
        "--key",
        &w.key("restore"),
        "--client",
        "mx2",
        "latest",
    ]);
    assert!(ls.contains("b/"), "{ls}");
    vault.stop();
}

/// F: split views. The vault host keeps two states of one repository and
/// shows the replica one history and the clients another. Each alone looks
/// consistent; `holdfast status` with the replica as witness catches it.
#[test]
fn status_catches_a_vault_showing_two_histories() {
    let w = World::new();
    w.init_with(&[]);
    let src = w.path("mail");
    make_maildir(&src, 1, 6, 90);
    let mut vault = w.start_vault(&[]);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    vault.stop();
    // The host copies the state aside: the second history starts here.
    let fork = w.path("fork-state");
    std::fs::create_dir_all(&fork).unwrap();
    for f in ["log", "checkpoint", "owners"] {
        std::fs::copy(w.path("repo/vault").join(f), fork.join(f)).unwrap();
    }
    let mut vault = w.start_vault(&[]);
    mail_day(&src, 1);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let rdir = w.path("replica");
    assert_eq!(code(&pull(&w, &vault.url, &rdir)), Some(0));
    // Honest so far: the replica is the witness, same history, nothing
    // missing from it.
    let o = w.run(&[
        "status",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        "--witness",
        rdir.to_str().unwrap(),
    ]);
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("same history"));
    vault.stop();
    // Now clients are served the other history (on the same storage).
    let fork_arg = fork.to_str().unwrap().to_string();
    let forked = w.start_vault(&["--state", &fork_arg]);
    // A reader that never held the first history's checkpoint sees nothing
    // wrong on its own...
    let fresh = w.path("fresh-cache");
    let mut c = w.cmd(&[
        "snapshots",
        "--repo",
        &forked.url,
        "--key",
        &w.key("auditor"),
    ]);
    let o = c.env("HOLDFAST_CACHE_DIR", &fresh).output().unwrap();
    assert_eq!(code(&o), Some(0), "{}", err(&o));
    mail_day(&src, 2);
    let mut c = w.cmd(&[
        "backup",
        "--repo",
        &forked.url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    let _ = c.env("HOLDFAST_CACHE_DIR", &fresh).output().unwrap();
    // ...but compared with the replica, the two histories show.
    let mut c = w.cmd(&[
        "status",
        "--repo",
        &forked.url,
        "--key",
        &w.key("auditor"),
        "--witness",
        rdir.to_str().unwrap(),
        "--json",
    ]);
    let o = c.env("HOLDFAST_CACHE_DIR", &fresh).output().unwrap();
    assert_eq!(code(&o), Some(4), "{}", err(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["witnesses"][0]["consistent"], false, "{j}");
    drop(forked);
}

/// F: a right key with the wrong vault URL is a wrong argument (exit 1, a
/// line saying so), not tampering (exit 4 pages someone).
#[test]
fn a_key_for_another_vault_is_a_usage_error() {
    let (w, other) = (World::new(), World::new());
    w.init_with(&[]);
    other.init_with(&[]);
    let mut vault = other.start_vault(&[]);
    let o = w.run(&["snapshots", "--repo", &vault.url, "--key", &w.key("client")]);
    assert_eq!(code(&o), Some(1), "{}", err(&o));
    assert!(err(&o).contains("another repository"), "{}", err(&o));
    assert!(!err(&o).contains("TAMPERING"), "{}", err(&o));
    vault.stop();
}
