//! The read side at scale (issue 10): restore, `ls --json`, `diff` and
//! `verify --read-data` of a 200,000-file snapshot keep their peak memory
//! bounded, measured as the child's own peak RSS (wait4's rusage).
//! Time is not asserted.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::*;

/// The bound every command must stay under here; the target is 96 MiB at
/// a million files (release build), and nothing here grows with the file
/// count.
const BOUND_KIB: u64 = 96 * 1024;
/// What restoring or listing all 200,000 files may add over doing so for
/// one mailbox (the target allows 16 MiB from 100,000 to 1,000,000 files).
const GROWTH_KIB: u64 = 16 * 1024;

const MAILBOXES: usize = 400;
const PER_BOX: usize = 500;

fn ok(what: &str, o: &Output, kib: u64) {
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    eprintln!("{what}: peak RSS {:.1} MiB", kib as f64 / 1024.0);
    assert!(
        kib < BOUND_KIB,
        "{what}: peak RSS {kib} KiB over {BOUND_KIB} KiB"
    );
}

/// Mailboxes of small text messages with set mtimes and modes, a few
/// symlinks and one larger file of several chunks with a hole-worthy run
/// of zeros.
fn make_spool(root: &Path) {
    let mut r = Rng(0x5eed_1234);
    for b in 0..MAILBOXES {
        let cur = root.join(format!("u{b:03}")).join("cur");
        std::fs::create_dir_all(&cur).unwrap();
        std::fs::create_dir_all(root.join(format!("u{b:03}")).join("new")).unwrap();
        for m in 0..PER_BOX {
            let n = 100 + r.below(1000) as usize;
            let mut msg =
                format!("From: a{}@example.org\nSubject: {b}/{m}\n\n", r.below(999)).into_bytes();
            msg.extend(r.text(n));
            let p = cur.join(format!("{}.M{m}P{b}.mx1:2,S", 1_600_000_000 + m));
            std::fs::write(&p, &msg).unwrap();
            let t = filetime::FileTime::from_unix_time(1_600_000_000 + r.below(1 << 26) as i64, 7);
            filetime::set_file_mtime(&p, t).unwrap();
        }
    }
    std::os::unix::fs::symlink("u000/cur", root.join("link-to-cur")).unwrap();
    let mut big = r.bytes(3 << 20);
    big[1 << 20..(2 << 20)].fill(0);
    std::fs::write(root.join("big.bin"), &big).unwrap();
    std::fs::set_permissions(root.join("big.bin"), std::fs::Permissions::from_mode(0o640)).unwrap();
}

/// Changes for a second snapshot: (added, removed, modified) file counts.
fn change_spool(root: &Path) -> (usize, usize, usize) {
    let mut r = Rng(77);
    for i in 0..100 {
        let p = root.join("u001/new").join(format!("new-{i}"));
        let mut msg = format!("From: b@example.org\nSubject: new {i}\n\n").into_bytes();
        msg.extend(r.text(300));
        std::fs::write(&p, msg).unwrap();
    }
    let mut removed = 0;
    let mut modified = 0;
    let mut cur: Vec<_> = std::fs::read_dir(root.join("u002/cur"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cur.sort();
    for p in cur.iter().take(50) {
        std::fs::remove_file(p).unwrap();
        removed += 1;
    }
    for p in cur.iter().skip(50).take(30) {
        std::fs::write(p, r.text(200)).unwrap();
        modified += 1;
    }
    (100, removed, modified)
}

#[test]
fn restore_ls_diff_verify_of_200k_files_stay_bounded() {
    let w = World::new();
    w.init();
    let src = w.path("spool");
    make_spool(&src);
    let first = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let (added, removed, modified) = change_spool(&src);
    // Rewriting delivered mail in place is an anomaly (exit 5): the
    // snapshot is written all the same.
    let (repo, client) = (w.repo(), w.key("client"));
    let s = src.display().to_string();
    let o = w.run(&["backup", "--repo", &repo, "--key", &client, "--json", &s]);
    assert!(matches!(o.status.code(), Some(0 | 5)), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let second = v[0]["snapshot"].as_str().unwrap().to_string();
    let (repo, key) = (w.repo(), w.key("restore"));
    let files = MAILBOXES * PER_BOX + added - removed + 1;

    // Restore: every byte, mode, mtime and link as backed up.
    let out = w.path("out");
    let t = out.display().to_string();
    let (o, restore_kib) = measured(
        &w,
        &["restore", "--repo", &repo, "--key", &key, &second, &t],
    );
    ok("restore", &o, restore_kib);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains(&format!("{files} files")), "{stdout}");
    assert!(stdout.contains("every byte verified"), "{stdout}");
    let inside = out.join("spool");
    assert!(digest(&inside) == digest(&src), "restored tree differs");
    std::fs::remove_dir_all(&out).unwrap();

    // One mailbox: the baseline the whole restore is compared with.
    let one = w.path("one").display().to_string();
    let sub = "spool/u007".to_string();
    let (o, one_kib) = measured(
        &w,
        &[
            "restore", "--repo", &repo, "--key", &key, &second, &one, "--path", &sub,
        ],
    );
    ok("restore --path (one mailbox)", &o, one_kib);
    assert!(
        restore_kib < one_kib + GROWTH_KIB,
        "restore of all files {restore_kib} KiB vs one mailbox {one_kib} KiB"
    );

    // ls --json: every entry, streamed.
    let (o, ls_kib) = measured(
        &w,
        &["ls", "--repo", &repo, "--key", &key, &second, "--json"],
    );
    ok("ls --json", &o, ls_kib);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v.iter().filter(|e| e["type"] == "file").count(),
        files,
        "ls file count"
    );
    assert!(v.iter().any(|e| e["type"] == "symlink"));
    let (o, ls_one_kib) = measured(
        &w,
        &[
            "ls", "--repo", &repo, "--key", &key, &second, "--json", "--path", &sub,
        ],
    );
    ok("ls --json --path (one mailbox)", &o, ls_one_kib);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v.iter().filter(|e| e["type"] == "file").count(), PER_BOX);
    assert!(
        ls_kib < ls_one_kib + GROWTH_KIB,
        "ls of all files {ls_kib} KiB vs one mailbox {ls_one_kib} KiB"
    );

    // diff: exactly the changes made.
    let (o, diff_kib) = measured(
        &w,
        &[
            "diff", "--repo", &repo, "--key", &key, &first, &second, "--json",
        ],
    );
    ok("diff --json", &o, diff_kib);
    let v: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let count = |c: &str| {
        v.iter()
            .filter(|e| e["change"] == c && !e["path"].as_str().unwrap().ends_with("/cur"))
            .filter(|e| !e["path"].as_str().unwrap().ends_with("/new"))
            .count()
    };
    assert_eq!(
        (count("added"), count("removed"), count("modified")),
        (added, removed, modified),
        "{v:?}"
    );

    // verify --read-data with the restore key: every blob decrypted.
    let (o, verify_kib) = measured(
        &w,
        &["verify", "--repo", &repo, "--key", &key, "--read-data"],
    );
    ok("verify --read-data", &o, verify_kib);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("decrypted") && stdout.contains(": 0 problem(s)"),
        "{stdout}"
    );
}

/// The `damaged:` lines of a restore that must exit 4, sorted, with the
/// target's own prefix cut off.
fn damaged(w: &World, repo: &str, snap: &str, out: &Path) -> Vec<String> {
    let t = out.display().to_string();
    let o = w.run(&[
        "restore",
        "--repo",
        repo,
        "--key",
        &w.key("restore"),
        snap,
        &t,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(!String::from_utf8_lossy(&o.stdout).contains("verified"));
    let mut v: Vec<String> = err
        .lines()
        .filter_map(|l| l.strip_prefix("damaged: "))
        .map(|l| l.split(':').next().unwrap().replace(&t, ""))
        .collect();
    v.sort();
    v
}

#[test]
fn a_damaged_blob_fails_the_same_files_through_a_vault_as_from_the_directory() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(src.join("box")).unwrap();
    let mut r = Rng(9);
    for i in 0..60 {
        std::fs::write(src.join("box").join(format!("m{i:02}")), r.bytes(5000)).unwrap();
    }
    std::fs::write(src.join("big.bin"), r.bytes(3 << 20)).unwrap();
    let snap = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    // One flipped byte inside the first blob of every pack (trees are
    // written last).
    let packs = files(&w.path("repo/packs"));
    for p in &packs {
        let mut b = std::fs::read(p).unwrap();
        b[100] ^= 0x08;
        std::fs::write(p, &b).unwrap();
    }
    let local = damaged(&w, &w.repo(), &snap, &w.path("out-dir"));
    assert!(!local.is_empty() && local.len() <= packs.len(), "{local:?}");
    let mut v = w.start_vault(&[]);
    let remote = damaged(&w, &v.url, &snap, &w.path("out-vault"));
    v.stop();
    assert_eq!(local, remote);
    // Every other file came back whole through the vault.
    let got = digest(&w.path("out-vault/src"));
    let want = digest(&src);
    for (path, item) in &want {
        let name = format!("/src/{}", String::from_utf8_lossy(path));
        if !local.contains(&name) {
            assert!(got.get(path) == Some(item), "{name}");
        }
    }
}
