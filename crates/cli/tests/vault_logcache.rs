//! Issue 10: the client's verified copy of the vault's log. A command
//! fetches only the entries added since the last one; a damaged copy is
//! set aside and the log fetched again (never an error); a vault that
//! rewrites history is still tampering with a warm copy; `audit` and
//! `export` still see every entry.
//!
//! What was fetched is observed through the line `HOLDFAST_DEBUG_LOGCACHE`
//! makes the client print: "log cache: C entries cached, F fetched".

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use holdfast_core::vaultlog::{Entry, Event, frame, split_log};

fn with_debug(w: &World, args: &[&str]) -> Output {
    w.cmd(args)
        .env("HOLDFAST_DEBUG_LOGCACHE", "1")
        .output()
        .unwrap()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Every "(cached, fetched)" the client reported, in order.
fn fetches(o: &Output) -> Vec<(u64, u64)> {
    err(o)
        .lines()
        .filter_map(|l| l.strip_prefix("holdfast: log cache: "))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let c = w.next()?.parse().ok()?;
            let f = w.nth(2)?.parse().ok()?;
            Some((c, f))
        })
        .collect()
}

/// Entries in the vault's own log file.
fn vault_log_len(w: &World) -> u64 {
    let raw = std::fs::read(w.path("repo/vault/log")).unwrap();
    split_log(&raw).0.len() as u64
}

/// The client's copy of the log for `key`'s holder (the one directory
/// whose name ends with the key's public prefix).
fn cache_of(w: &World, key: &str) -> PathBuf {
    let public = load_key(key).identity().unwrap().public();
    let tail = holdfast_core::id::hex(&public[..8]);
    std::fs::read_dir(w.path("cache/vault-log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(&tail))
        .expect("a log cache for this key")
}

fn snapshots_json(w: &World, url: &str) -> (Output, Vec<serde_json::Value>) {
    let o = with_debug(
        w,
        &[
            "snapshots",
            "--repo",
            url,
            "--key",
            &w.key("client"),
            "--json",
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    let v = serde_json::from_slice(&o.stdout).unwrap();
    (o, v)
}

fn backup_debug(w: &World, url: &str, src: &Path) -> Output {
    let o = with_debug(
        w,
        &[
            "backup",
            "--repo",
            url,
            "--key",
            &w.key("client"),
            src.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", err(&o));
    o
}

#[test]
fn a_second_command_fetches_only_new_entries() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 5);
    // Cold (an empty log), then after the snapshot only what it added.
    let o = backup_debug(&w, &url, &src);
    let f = fetches(&o);
    let after_first = vault_log_len(&w);
    assert!(after_first >= 1);
    assert_eq!(f, vec![(0, 0), (0, after_first)], "{}", err(&o));
    // Warm: nothing new, nothing fetched.
    let (o, list) = snapshots_json(&w, &url);
    assert_eq!(fetches(&o), vec![(after_first, 0)], "{}", err(&o));
    assert_eq!(list.len(), 1);
    // A second backup: only the entries it added.
    mail_day(&src, 2);
    let o = backup_debug(&w, &url, &src);
    let f = fetches(&o);
    let now = vault_log_len(&w);
    assert_eq!(f[0], (after_first, 0), "{f:?}");
    assert_eq!(f[1], (after_first, now - after_first), "{f:?}");
    let (o, list) = snapshots_json(&w, &url);
    assert_eq!(fetches(&o), vec![(now, 0)], "{}", err(&o));
    assert_eq!(list.len(), 2);
    // While another command with this key holds the copy, a command reads
    // the whole log as without one (and does not wait).
    let lock = std::fs::File::open(cache_of(&w, &w.key("client")).join("lock")).unwrap();
    lock.lock().unwrap();
    let (o, busy) = snapshots_json(&w, &url);
    assert_eq!(fetches(&o), vec![(0, now)], "{}", err(&o));
    assert_eq!(busy, list);
    drop(lock);
    let (o, _) = snapshots_json(&w, &url);
    assert_eq!(fetches(&o), vec![(now, 0)], "{}", err(&o));
}

#[test]
fn a_damaged_copy_is_set_aside_and_the_log_fetched_again() {
    // Another repository's copy, to put in place of this one's.
    let other = World::new();
    other.init();
    let ov = other.start_vault(&[]);
    let osrc = other.path("mail");
    make_maildir(&osrc, 1, 3, 9);
    backup_via(&other, &ov.url, &other.key("client"), &osrc);
    let other_cache = cache_of(&other, &other.key("client"));

    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 7);
    backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 3);
    backup_via(&w, &url, &w.key("client"), &src);
    let (_, want) = snapshots_json(&w, &url);
    let n = vault_log_len(&w);
    let dir = cache_of(&w, &w.key("client"));
    let log = dir.join("log");

    type Damage = Box<dyn Fn(&Path)>;
    let damages: Vec<(&str, Damage)> = vec![
        (
            "a flipped byte",
            Box::new(|log: &Path| {
                let mut b = std::fs::read(log).unwrap();
                let i = b.len() / 2;
                b[i] ^= 0x40;
                std::fs::write(log, b).unwrap();
            }),
        ),
        (
            "cut mid-entry",
            Box::new(|log: &Path| {
                let b = std::fs::read(log).unwrap();
                std::fs::write(log, &b[..b.len() - 3]).unwrap();
            }),
        ),
        (
            "another repository's copy",
            Box::new(move |log: &Path| {
                let d = log.parent().unwrap();
                std::fs::copy(other_cache.join("log"), log).unwrap();
                std::fs::copy(other_cache.join("verified"), d.join("verified")).unwrap();
            }),
        ),
        (
            "the record gone",
            Box::new(|log: &Path| {
                std::fs::remove_file(log.parent().unwrap().join("verified")).unwrap();
            }),
        ),
    ];
    for (what, damage) in damages {
        damage(&log);
        let (o, got) = snapshots_json(&w, &url);
        assert_eq!(got, want, "{what}: {}", err(&o));
        assert!(!err(&o).contains("TAMPERING"), "{what}: {}", err(&o));
        assert!(err(&o).contains("set aside"), "{what}: {}", err(&o));
        // Everything fetched again (another repository's prefix is read
        // first, its tail fetched, then found not to be this log's).
        let f = fetches(&o);
        assert!(f.last().is_some_and(|x| x.1 >= n), "{what}: {f:?}");
        assert!(dir.join("log.damaged").exists(), "{what}");
        // And the new copy serves the next command.
        let (o, got) = snapshots_json(&w, &url);
        assert_eq!(got, want, "{what}");
        assert_eq!(fetches(&o), vec![(n, 0)], "{what}: {}", err(&o));
    }
}

#[test]
fn a_vault_that_rewrites_history_is_tampering_with_a_warm_copy() {
    let w = World::new();
    w.init();
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 11);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    mail_day(&src, 4);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let (o, _) = snapshots_json(&w, &vault.url);
    assert_eq!(fetches(&o).last().map(|x| x.1), Some(0), "{}", err(&o));
    vault.stop();
    // Root on the vault host, holding the vault key: the first snapshot's
    // entry is re-dated, the log re-signed.
    let path = w.path("repo/vault/log");
    let raw = std::fs::read(&path).unwrap();
    let mut entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    let i = entries
        .iter()
        .position(|e| matches!(Entry::decode(e).unwrap().event, Event::SnapshotAdded { .. }))
        .unwrap();
    let mut e = Entry::decode(&entries[i]).unwrap();
    e.time_ns -= 1_000_000_000;
    entries[i] = e.encode();
    let mut out = Vec::new();
    for e in &entries {
        frame(e, &mut out);
    }
    std::fs::write(&path, out).unwrap();
    let _ = std::fs::remove_file(w.path("repo/vault/log.nodes"));
    sign_log(&w, &entries);
    let vault = w.start_vault(&[]);
    for args in [
        vec!["snapshots", "--repo", &vault.url, "--key", &w.key("client")],
        vec![
            "backup",
            "--repo",
            &vault.url,
            "--key",
            &w.key("client"),
            src.to_str().unwrap(),
        ],
    ] {
        let o = with_debug(&w, &args);
        assert_eq!(o.status.code(), Some(4), "{args:?}: {}", err(&o));
        assert!(err(&o).contains("TAMPERING"), "{args:?}: {}", err(&o));
    }
}

#[test]
fn audit_and_export_see_every_entry() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 2, 10, 13);
    backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 5);
    backup_via(&w, &url, &w.key("client"), &src);
    let n = vault_log_len(&w);
    for round in ["cold", "warm"] {
        let o = with_debug(
            &w,
            &[
                "audit",
                "--repo",
                &url,
                "--key",
                &w.key("auditor"),
                "--json",
            ],
        );
        assert!(o.status.success(), "{round}: {}", err(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let v = &v[0];
        assert_eq!(v["entries"].as_u64(), Some(n), "{round}: {v}");
        assert_eq!(v["snapshots_logged"].as_u64(), Some(2), "{round}: {v}");
        let f = fetches(&o);
        let want = if round == "cold" { (0, n) } else { (n, 0) };
        assert_eq!(f, vec![want], "{round}");
    }
    for round in ["cold", "warm"] {
        let to = w.path(&format!("bundle-{round}"));
        let o = with_debug(
            &w,
            &[
                "export",
                "--repo",
                &url,
                "--key",
                &w.key("replica"),
                "--to",
                to.to_str().unwrap(),
            ],
        );
        assert!(o.status.success(), "{round}: {}", err(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(
            out.contains(&format!("log of {n} entries")),
            "{round}: {out}"
        );
        let raw = std::fs::read(to.join("vault/log")).unwrap();
        assert_eq!(
            std::fs::read(w.path("repo/vault/log")).unwrap(),
            raw,
            "{round}"
        );
    }
}

/// A fetch cut short (bytes appended after the verified prefix, no new
/// record) is not damage: the tail is dropped and the copy kept.
#[test]
fn a_fetch_cut_short_leaves_the_verified_prefix_in_use() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 1, 4, 17);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let n = vault_log_len(&w);
    let log = cache_of(&w, &w.key("client")).join("log");
    let mut b = std::fs::read(&log).unwrap();
    b.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3]);
    std::fs::write(&log, b).unwrap();
    let (o, list) = snapshots_json(&w, &vault.url);
    assert_eq!(list.len(), 1);
    assert!(!err(&o).contains("set aside"), "{}", err(&o));
    assert_eq!(fetches(&o), vec![(n, 0)], "{}", err(&o));
    let raw = std::fs::read(w.path("repo/vault/log")).unwrap();
    assert_eq!(std::fs::read(&log).unwrap(), raw);
}
