//! The short chaos run (issue "Chaos and soak"): every fault kind of
//! `bench/chaos.py` for a few rounds and a one-minute soak, against the
//! binary under test. After each round verify --read-data, audit and a
//! replica pull must be clean; at the end every snapshot must restore.
//! The full run (`python3 bench/chaos.py`, release build) writes
//! bench/results/chaos.md.

mod common;

use std::process::Command;

#[test]
fn chaos_quick() {
    if Command::new("python3").arg("--version").output().is_err() {
        panic!("python3 is needed for the chaos run");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../bench/chaos.py");
    let out = Command::new("python3")
        .args([
            script,
            "--quick",
            "--bin",
            common::bin().to_str().unwrap(),
            "--soak-secs",
            "60",
            "--soak-clients",
            "6",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{text}\n{err}");
    let _ = std::fs::create_dir_all(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/tmp"));
    let _ = std::fs::write(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../target/tmp/chaos-report.md"
        ),
        text.as_bytes(),
    );
    assert!(out.status.success(), "chaos run failed:\n{text}\n{err}");
    assert!(text.contains("| soak |"), "{text}");
}

/// The vault's log, decoded.
fn log_events(w: &common::World) -> Vec<holdfast_core::vaultlog::Event> {
    let raw = std::fs::read(w.path("repo/vault/log")).unwrap();
    let (entries, _) = holdfast_core::vaultlog::split_log(&raw);
    entries
        .iter()
        .map(|e| holdfast_core::vaultlog::Entry::decode(e).unwrap().event)
        .collect()
}

/// The stored bytes the log records for `snap` (kind 11 entries).
fn stored_entries(events: &[holdfast_core::vaultlog::Event], snap: &str) -> Vec<u64> {
    events
        .iter()
        .filter_map(|e| match e {
            holdfast_core::vaultlog::Event::Stored { snapshot, bytes }
                if snapshot.to_hex() == snap =>
            {
                Some(*bytes)
            }
            _ => None,
        })
        .collect()
}

/// What `snap` references in stored bytes: the sizes of the pack files its
/// header lists, as they lie in the directory.
fn pack_bytes(w: &common::World, snap: &str) -> u64 {
    let body = std::fs::read(w.path("repo/snapshots").join(snap)).unwrap();
    let s = holdfast_core::format::Snapshot::decode(&body).unwrap();
    s.header
        .packs
        .iter()
        .map(|p| {
            let h = p.to_hex();
            std::fs::metadata(w.path("repo/packs").join(&h[..2]).join(&h))
                .unwrap()
                .len()
        })
        .sum()
}

/// A backup through `url` that the vault does not answer (it dies at the
/// crash point): the client fails, and the vault process is gone.
fn backup_into_crash(w: &common::World, vault: &mut common::VaultProc, src: &std::path::Path) {
    let o = w.run(&[
        "backup",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        "--json",
        src.to_str().unwrap(),
    ]);
    assert!(
        !o.status.success(),
        "the backup went through a vault that should have died:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let st = vault.child.wait().unwrap();
    assert!(
        !st.success(),
        "the vault did not die at the crash point: {st}"
    );
}

/// Every reader of the vault is clean (exit 0, nothing reported) and
/// `snap` restores to `src` exactly; no reader reports the vault flagging
/// a snapshot (a shrink judged from a missing or wrong stored size).
fn readers_clean(w: &common::World, url: &str, snap: &str, src: &std::path::Path) {
    for key in ["client", "auditor", "restore"] {
        let o = w.run(&["snapshots", "--repo", url, "--key", &w.key(key), "--json"]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(
            o.status.code(),
            Some(0),
            "snapshots with the {key} key: {err}"
        );
        assert!(!err.contains("TAMPERING"), "{key}: {err}");
        if key == "auditor" {
            let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
            let me = list.iter().find(|s| s["id"] == snap).expect("listed");
            assert_eq!(me["anomalies"], serde_json::json!([]), "{me}");
        }
    }
    w.ok(&["audit", "--repo", url, "--key", &w.key("auditor")]);
    w.ok(&[
        "verify",
        "--repo",
        url,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    let out = w.path(&format!("restored-{}", &snap[..12]));
    w.ok(&[
        "restore",
        "--repo",
        url,
        "--key",
        &w.key("restore"),
        &snap[..16],
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        common::digest(&out.join(src.file_name().unwrap())),
        common::digest(src)
    );
}

/// kill -9 of the vault between a snapshot's `SnapshotAdded` entry and its
/// `Stored` one (the debug build's crash point): the log ends at the
/// snapshot, every reader of the directory takes its size as unknown (no
/// tampering, no shrink); the restarted vault logs the missing size from
/// its own pack records and alerts; readers are clean and it restores.
#[test]
fn vault_killed_between_a_snapshot_and_its_stored_bytes() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the vault's crash points exist in debug builds only");
        return;
    }
    use holdfast_core::vaultlog::Event;
    let w = common::World::new();
    w.init();
    let src = w.path("mail");
    common::make_maildir(&src, 3, 25, 11);
    let mut v = w.start_vault(&[]);
    let s1 = common::backup_via(&w, &v.url, &w.key("client"), &src);
    v.stop();
    common::mail_day(&src, 1);

    let mut v = w.start_vault_env(
        &w.repo(),
        &[],
        &[("HOLDFAST_VAULT_CRASH_AT", "before-stored")],
    );
    backup_into_crash(&w, &mut v, &src);
    let events = log_events(&w);
    let Some(Event::SnapshotAdded { snapshot, .. }) = events.last() else {
        panic!("the log does not end at the snapshot: {:?}", events.last());
    };
    let s2 = snapshot.to_hex();
    assert_ne!(s2, s1);
    assert!(stored_entries(&events, &s2).is_empty());
    assert_eq!(stored_entries(&events, &s1).len(), 1);
    // Read from the directory while the vault is down: the size is unknown,
    // which is neither tampering nor a shrink.
    let o = w.run(&[
        "snapshots",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("auditor"),
        "--json",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let me = list
        .iter()
        .find(|s| s["id"] == s2.as_str())
        .expect("listed");
    assert_eq!(me["anomalies"], serde_json::json!([]), "{me}");

    // The restart logs the missing size (the packs' stored bytes), once.
    let mut v = w.start_vault(&[]);
    let events = log_events(&w);
    assert_eq!(stored_entries(&events, &s2), vec![pack_bytes(&w, &s2)]);
    assert_eq!(stored_entries(&events, &s1).len(), 1);
    assert!(
        v.stderr().contains("not in the log") && v.stderr().contains(&s2[..8]),
        "{}",
        v.stderr()
    );
    readers_clean(&w, &v.url, &s2, &src);
    // A later restart logs nothing more; the next backup is judged as usual.
    v.stop();
    let mut v = w.start_vault(&[]);
    assert_eq!(log_events(&w).len(), events.len());
    common::mail_day(&src, 2);
    let s3 = common::backup_via(&w, &v.url, &w.key("client"), &src);
    assert_eq!(stored_entries(&log_events(&w), &s3).len(), 1);
    readers_clean(&w, &v.url, &s3, &src);
    v.stop();
}

/// kill -9 of the vault after it wrote a snapshot's file and before it
/// logged it: the restarted vault commits it (as a PUT would be) and logs
/// its stored bytes too; likewise snapshots a vault adopts on its first
/// start over a directory repository. Readers are clean, every snapshot
/// restores.
#[test]
fn recovered_and_adopted_snapshots_get_their_stored_bytes_logged() {
    if !cfg!(debug_assertions) {
        eprintln!("skipped: the vault's crash points exist in debug builds only");
        return;
    }
    use holdfast_core::vaultlog::Event;
    let w = common::World::new();
    w.init();
    let src = w.path("mail");
    common::make_maildir(&src, 2, 20, 12);
    // Backups straight into the directory, before any vault ran.
    let a1 = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    common::mail_day(&src, 1);
    let a2 = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let mut v = w.start_vault(&[]);
    assert!(
        v.stderr().contains("adopted 2 snapshot(s)"),
        "{}",
        v.stderr()
    );
    let events = log_events(&w);
    for s in [&a1, &a2] {
        assert_eq!(stored_entries(&events, s), vec![pack_bytes(&w, s)], "{s}");
    }
    readers_clean(&w, &v.url, &a2, &src);
    v.stop();

    // The crash between the snapshot file and its log entry.
    common::mail_day(&src, 2);
    let mut v = w.start_vault_env(
        &w.repo(),
        &[],
        &[("HOLDFAST_VAULT_CRASH_AT", "before-snapshot-added")],
    );
    let before = log_events(&w).len();
    backup_into_crash(&w, &mut v, &src);
    assert_eq!(
        log_events(&w).len(),
        before,
        "logged before the crash point"
    );
    let v = w.start_vault(&[]);
    assert!(
        v.stderr().contains("written before a crash but not logged"),
        "{}",
        v.stderr()
    );
    let events = log_events(&w);
    let added: Vec<String> = events[before..]
        .iter()
        .filter_map(|e| match e {
            Event::SnapshotAdded { snapshot, .. } => Some(snapshot.to_hex()),
            _ => None,
        })
        .collect();
    assert_eq!(added.len(), 1, "{added:?}");
    let s = &added[0];
    assert_eq!(stored_entries(&events, s), vec![pack_bytes(&w, s)]);
    readers_clean(&w, &v.url, s, &src);
}
