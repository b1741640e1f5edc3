//! End-to-end tests of the local loop, with the real binary and real files.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;

fn awkward_tree(root: &Path) {
    let mut r = Rng(7);
    std::fs::create_dir_all(root.join("dir/empty-dir")).unwrap();
    std::fs::create_dir_all(root.join("dir/deep/deeper/deepest")).unwrap();
    std::fs::write(root.join("dir/empty-file"), b"").unwrap();
    std::fs::write(root.join("dir/text.txt"), r.text(10_000)).unwrap();
    std::fs::write(
        root.join("dir/deep/deeper/deepest/random.bin"),
        r.bytes(3 << 20),
    )
    .unwrap();
    std::fs::write(root.join(name(b"dir/non-utf8-\xff\xfe")), b"odd name").unwrap();
    std::fs::write(root.join("dir/new\nline"), b"newline name").unwrap();
    std::fs::write(root.join("dir/setuid"), b"#!/bin/sh\n").unwrap();
    std::fs::set_permissions(
        root.join("dir/setuid"),
        std::fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    std::fs::write(root.join("dir/private"), b"secret-ish").unwrap();
    std::fs::set_permissions(
        root.join("dir/private"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::os::unix::fs::symlink("text.txt", root.join("dir/link")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/target", root.join("dir/dangling")).unwrap();
    // A 64 MiB sparse file with data at both ends.
    let mut f = std::fs::File::create(root.join("dir/sparse")).unwrap();
    f.write_all(b"start").unwrap();
    f.seek(SeekFrom::Start(64 << 20)).unwrap();
    f.write_all(b"end").unwrap();
    drop(f);
    // Odd mtimes, to the nanosecond, on files, dirs and links.
    let t = filetime::FileTime::from_unix_time(1_234_567_890, 123_456_789);
    filetime::set_file_mtime(root.join("dir/text.txt"), t).unwrap();
    filetime::set_symlink_file_times(root.join("dir/link"), t, t).unwrap();
    filetime::set_file_mtime(root.join("dir/empty-dir"), t).unwrap();
    std::fs::set_permissions(
        root.join("dir/empty-dir"),
        std::fs::Permissions::from_mode(0o705),
    )
    .unwrap();
}

#[test]
fn awkward_tree_round_trips_byte_for_byte() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    awkward_tree(&src);
    w.backup(&[&src.join("dir")]);
    let out = w.path("out");
    w.restore("latest", &out);
    assert_eq!(digest(&src), digest(&out));
    let sparse = std::fs::metadata(out.join("dir/sparse")).unwrap();
    assert_eq!(sparse.len(), (64 << 20) + 3);
    assert!(
        sparse.blocks() * 512 < 4 << 20,
        "sparse file restored dense: {} blocks",
        sparse.blocks()
    );
    // --path restores one subtree only.
    let part = w.path("part");
    let (repo, key) = (w.repo(), w.key("restore"));
    w.ok(&[
        "restore",
        "--repo",
        &repo,
        "--key",
        &key,
        "latest",
        part.to_str().unwrap(),
        "--path",
        "dir/deep",
    ]);
    assert!(part.join("dir/deep/deeper/deepest/random.bin").is_file());
    assert!(!part.join("dir/text.txt").exists());
    // A restore never writes into a non-empty directory.
    let o = w.run(&[
        "restore",
        "--repo",
        &repo,
        "--key",
        &key,
        "latest",
        out.to_str().unwrap(),
    ]);
    assert!(!o.status.success());
}

#[test]
fn maildir_over_three_days_every_snapshot_restores() {
    let w = World::new();
    w.init();
    let mail = w.path("mail");
    make_maildir(&mail, 8, 40, 1);
    let mut digests = Vec::new();
    let mut ids = Vec::new();
    for day in 0..3 {
        if day > 0 {
            mail_day(&mail, day);
        }
        let r = w.backup(&[&mail]);
        if day > 0 {
            // Incremental: only new or changed files are read.
            assert!(r["files_read"].as_u64().unwrap() < 40, "{r}");
        }
        ids.push(r["snapshot"].as_str().unwrap().to_string());
        digests.push(digest(&mail));
    }
    for (id, d) in ids.iter().zip(&digests) {
        let out = w.path(&format!("out-{}", &id[..8]));
        w.restore(&id[..12], &out);
        assert_eq!(&digest(&out.join("mail")), d, "snapshot {id}");
    }
    // diff and ls see the day's changes.
    let (repo, key) = (w.repo(), w.key("restore"));
    let d = w.ok(&[
        "diff",
        "--repo",
        &repo,
        "--key",
        &key,
        &ids[0][..12],
        &ids[1][..12],
        "--json",
    ]);
    let d: Vec<serde_json::Value> = serde_json::from_str(&d).unwrap();
    assert!(d.iter().any(|c| c["change"] == "added"));
    assert!(d.iter().any(|c| c["change"] == "removed"));
    let ls = w.ok(&["ls", "--repo", &repo, "--key", &key, "latest", "--json"]);
    let ls: Vec<serde_json::Value> = serde_json::from_str(&ls).unwrap();
    assert!(
        ls.iter()
            .any(|e| e["path"] == "mail/user000/cur" && e["type"] == "dir")
    );
    // snapshots --json with the client key shows only what is public.
    let client = w.key("client");
    let s = w.ok(&["snapshots", "--repo", &repo, "--key", &client, "--json"]);
    let s: Vec<serde_json::Value> = serde_json::from_str(&s).unwrap();
    assert_eq!(s.len(), 3);
    assert!(s[0].get("hostname").is_none());
    assert_eq!(w.snapshots()[0]["files"].as_u64().unwrap(), 320);
}

#[test]
fn lost_cache_rereads_but_dedups() {
    let w = World::new();
    w.init();
    let mail = w.path("mail");
    make_maildir(&mail, 4, 30, 2);
    w.backup(&[&mail]);
    std::fs::remove_dir_all(w.path("cache")).unwrap();
    let r = w.backup(&[&mail]);
    assert_eq!(r["files_read"].as_u64().unwrap(), 120, "{r}");
    // Only the tree blobs of the root (whose mtimes did not change either)
    // could be new; the data must all be deduplicated.
    assert_eq!(r["new_bytes"].as_u64().unwrap(), 0, "{r}");
    assert_eq!(r["packs_written"].as_u64().unwrap(), 0, "{r}");
}

/// An incremental backup where the few files to read sit far apart among
/// many unchanged ones (more than the pipeline's window of 512 walk items
/// between them): each one's batch must reach the readers before the tree
/// stage waits for it (it failed with "internal: no batch to read").
#[test]
fn few_changed_files_far_apart_back_up_and_restore() {
    let w = World::new();
    w.init();
    let tree = w.path("tree");
    for d in 0..3 {
        let dir = tree.join(format!("d{d}"));
        std::fs::create_dir_all(&dir).unwrap();
        for f in 0..1000 {
            std::fs::write(dir.join(format!("f{f:04}")), format!("file {d}/{f}\n")).unwrap();
        }
    }
    w.backup(&[&tree]);
    for (d, f) in [(0, 0), (1, 500), (2, 999)] {
        std::fs::write(tree.join(format!("d{d}/f{f:04}")), b"changed since\n").unwrap();
    }
    let r = w.backup(&[&tree]);
    assert_eq!(r["files_read"].as_u64().unwrap(), 3, "{r}");
    let out = w.path("out");
    w.restore(r["id"].as_str().unwrap(), &out);
    assert_eq!(digest(&out.join("tree")), digest(&tree));
}

#[test]
fn client_key_cannot_decrypt_and_repository_holds_no_plaintext() {
    let w = World::new();
    w.init();
    let src = w.path("secretdata");
    std::fs::create_dir_all(&src).unwrap();
    let marker = b"TOP-SECRET-MARKER-4711 the merger with Initech closes friday";
    let mut text = Vec::new();
    for _ in 0..50 {
        text.extend_from_slice(marker);
    }
    std::fs::write(src.join("plans-for-initech.txt"), &text).unwrap();
    let random = Rng(99).bytes(50_000);
    std::fs::write(src.join("random.bin"), &random).unwrap();
    let (repo, client) = (w.repo(), w.key("client"));
    w.ok(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &client,
        "--host",
        "mx-secret-host",
        src.to_str().unwrap(),
    ]);
    for cmd in ["restore", "ls"] {
        let out = w.path("o").display().to_string();
        let args: Vec<&str> = if cmd == "restore" {
            vec![cmd, "--repo", &repo, "--key", &client, "latest", &out]
        } else {
            vec![cmd, "--repo", &repo, "--key", &client, "latest"]
        };
        let o = w.run(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("restore.key"), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    let needles: [&[u8]; 5] = [
        b"TOP-SECRET-MARKER",
        b"plans-for-initech",
        b"mx-secret-host",
        b"secretdata",
        &random[1000..1032],
    ];
    for f in files(&w.path("repo")) {
        let data = std::fs::read(&f).unwrap();
        for n in needles {
            assert!(
                !data.windows(n.len()).any(|x| x == n),
                "{} contains plaintext {:?}",
                f.display(),
                String::from_utf8_lossy(&n[..8])
            );
        }
    }
}

#[test]
fn every_flipped_byte_is_found_and_named() {
    let w = World::new();
    w.init();
    let mail = w.path("mail");
    make_maildir(&mail, 3, 20, 3);
    w.backup(&[&mail]);
    let (repo, key) = (w.repo(), w.key("restore"));
    for f in files(&w.path("repo")) {
        let orig = std::fs::read(&f).unwrap();
        if orig.is_empty() {
            continue; // the directory's lock file holds no bytes to flip
        }
        let name = f.file_name().unwrap().to_str().unwrap().to_string();
        for pos in [0, orig.len() / 3, orig.len() / 2, orig.len() - 1] {
            let mut bad = orig.clone();
            bad[pos] ^= 0x01;
            std::fs::write(&f, &bad).unwrap();
            let o = w.run(&["verify", "--repo", &repo, "--key", &key, "--read-data"]);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            );
            assert!(
                !o.status.success(),
                "flip in {name} at {pos} not found:\n{all}"
            );
            let short = if name == "config" {
                "config".to_string()
            } else {
                name[..8].to_string()
            };
            assert!(
                all.contains(&short),
                "flip in {name} at {pos} not named:\n{all}"
            );
        }
        std::fs::write(&f, &orig).unwrap();
    }
    w.ok(&["verify", "--repo", &repo, "--key", &key, "--read-data"]);
}

#[test]
fn client_key_verify_finds_missing_and_damaged_packs() {
    let w = World::new();
    w.init();
    let mail = w.path("mail");
    make_maildir(&mail, 3, 20, 4);
    w.backup(&[&mail]);
    let (repo, key) = (w.repo(), w.key("client"));
    w.ok(&["verify", "--repo", &repo, "--key", &key, "--read-data"]);
    let packs: Vec<_> = files(&w.path("repo/packs"));
    let victim = &packs[0];
    let data = std::fs::read(victim).unwrap();
    std::fs::write(victim, &data[..data.len() - 100]).unwrap();
    let o = w.run(&["verify", "--repo", &repo, "--key", &key]);
    assert_eq!(o.status.code(), Some(4));
    std::fs::remove_file(victim).unwrap();
    let o = w.run(&["verify", "--repo", &repo, "--key", &key]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("missing"), "{out}");
    assert_eq!(o.status.code(), Some(4));
}

#[test]
fn tampered_config_is_refused_by_every_key() {
    let w = World::new();
    w.init();
    let cfg = w.path("repo/config");
    let mut b = std::fs::read(&cfg).unwrap();
    let n = b.len();
    b[n - 1] ^= 1;
    std::fs::write(&cfg, &b).unwrap();
    for role in ["client", "restore", "auditor", "replica"] {
        let o = w.run(&["snapshots", "--repo", &w.repo(), "--key", &w.key(role)]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(4), "{role}: {err}");
        assert!(err.contains("TAMPERING"), "{err}");
    }
}

#[test]
fn bad_input_gets_one_clear_line() {
    let w = World::new();
    w.init();
    let (repo, key) = (w.repo(), w.key("restore"));
    for args in [
        vec!["snapshots", "--repo", "/nonexistent", "--key", key.as_str()],
        vec![
            "restore",
            "--repo",
            repo.as_str(),
            "--key",
            key.as_str(),
            "nosuch",
            "/tmp/x",
        ],
        vec![
            "snapshots",
            "--repo",
            repo.as_str(),
            "--key",
            "/etc/hostname",
        ],
    ] {
        let o = w.run(&args);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("holdfast: "), "{err}");
    }
    // Wrong passphrase for the restore key.
    let o = w
        .cmd(&["snapshots", "--repo", &repo, "--key", &key])
        .env("HOLDFAST_PASSPHRASE", "wrong passphrase")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("passphrase"));
    // Existing keys are never overwritten.
    let keys = w.path("keys").display().to_string();
    let o = w.run(&[
        "init",
        &w.path("repo2").display().to_string(),
        "--keys",
        &keys,
    ]);
    assert!(!o.status.success());
}

#[test]
fn excludes_and_added_clients() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(src.join("tmp")).unwrap();
    std::fs::write(src.join("keep.txt"), b"keep").unwrap();
    std::fs::write(src.join("skip.log"), b"skip").unwrap();
    std::fs::write(src.join("tmp/x"), b"skip").unwrap();
    let (repo, client) = (w.repo(), w.key("client"));
    let new_key = w.path("keys/client-mx2.key").display().to_string();
    w.ok(&[
        "key",
        "new",
        "client",
        "mx2",
        "--repo",
        &repo,
        "--key",
        &client,
        "--admin-key",
        &w.key("admin-1"),
        "--out",
        &new_key,
    ]);
    w.ok(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &new_key,
        "--exclude",
        "*.log",
        "--exclude",
        "**/src/tmp",
        "--one-file-system",
        src.to_str().unwrap(),
    ]);
    let out = w.path("out");
    w.restore("latest", &out);
    assert!(out.join("src/keep.txt").exists());
    assert!(!out.join("src/skip.log").exists());
    assert!(!out.join("src/tmp").exists());
    assert_eq!(w.snapshots()[0]["client"], "mx2");
}

/// Running as an unprivileged user, an unreadable file gives a snapshot of
/// everything else, the file named, and exit status 3.
#[test]
fn unreadable_files_give_partial_snapshot_and_exit_3() {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("ok.txt"), b"fine").unwrap();
    std::fs::write(src.join("locked.txt"), b"no").unwrap();
    std::fs::set_permissions(
        src.join("locked.txt"),
        std::fs::Permissions::from_mode(0o000),
    )
    .unwrap();
    let is_root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let o = if is_root {
        // Root reads everything; drop to nobody for this run.
        for p in [w.dir.path().to_path_buf(), w.path("repo"), w.path("keys")] {
            let _ = std::process::Command::new("chmod")
                .args(["-R", "a+rwX"])
                .arg(&p)
                .status();
        }
        std::fs::set_permissions(
            src.join("locked.txt"),
            std::fs::Permissions::from_mode(0o000),
        )
        .unwrap();
        let setpriv = std::process::Command::new("setpriv")
            .arg("--version")
            .output();
        if setpriv.is_err() {
            eprintln!("setpriv missing: cannot test unreadable files as root");
            return;
        }
        std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(bin())
            .args([
                "backup",
                "--repo",
                &w.repo(),
                "--key",
                &w.key("client"),
                src.to_str().unwrap(),
            ])
            .env("HOLDFAST_CACHE_DIR", w.path("cache-nobody"))
            .output()
            .unwrap()
    } else {
        w.run(&[
            "backup",
            "--repo",
            &w.repo(),
            "--key",
            &w.key("client"),
            src.to_str().unwrap(),
        ])
    };
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("locked.txt"), "{err}");
    let out = w.path("out");
    w.restore("latest", &out);
    assert!(out.join("src/ok.txt").exists());
    assert!(!out.join("src/locked.txt").exists());
}

/// kill -9 at random points during backups, many times: the repository
/// always verifies and accepts the next backup, which restores exactly.
#[test]
fn kill_9_during_backup_never_damages_the_repository() {
    let w = World::new();
    w.init();
    let mail = w.path("mail");
    make_maildir(&mail, 12, 60, 5);
    let big = mail.join("big");
    std::fs::create_dir_all(&big).unwrap();
    let mut r = Rng(11);
    for i in 0..6 {
        std::fs::write(big.join(format!("f{i}")), r.bytes(6 << 20)).unwrap();
    }
    let (repo, client, restore) = (w.repo(), w.key("client"), w.key("restore"));
    let mut landed = 0;
    for round in 0..12u64 {
        // Change something each round so each backup has new data to write.
        std::fs::write(big.join(format!("round{round}")), r.bytes(3 << 20)).unwrap();
        if round % 3 == 0 {
            let _ = std::fs::remove_dir_all(w.path("cache"));
        }
        let mut child = w
            .cmd(&[
                "backup",
                "--repo",
                &repo,
                "--key",
                &client,
                mail.to_str().unwrap(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(20 + r.below(400)));
        let _ = child.kill();
        let status = child.wait().unwrap();
        if status.success() {
            landed += 1;
        }
        w.ok(&["verify", "--repo", &repo, "--key", &restore, "--read-data"]);
    }
    eprintln!("{landed} of 12 backups finished before the kill");
    // Stray temp files are only cleaned when an hour old; they are harmless.
    let final_snap = w.backup(&[&mail]);
    let out = w.path("out");
    w.restore(final_snap["snapshot"].as_str().unwrap(), &out);
    assert_eq!(digest(&out.join("mail")), digest(&mail));
    w.ok(&["verify", "--repo", &repo, "--key", &restore, "--read-data"]);
}

/// Unmounts on drop, so a failing test leaves no mount behind.
/// A full disk: the backup fails with a clear error and writes no snapshot;
/// the repository still verifies, and once there is room the next backup
/// works and restores exactly.
#[test]
fn full_disk_fails_cleanly_and_leaves_a_valid_repository() {
    let w = World::new();
    let mnt = w.path("small");
    let Some(_guard) = small_tmpfs(&mnt, "3m") else {
        eprintln!("cannot mount a small tmpfs here (not root?): full-disk test skipped");
        return;
    };
    let repo = mnt.join("repo").display().to_string();
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &repo, "--keys", &keys]);
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("random"), Rng(77).bytes(8 << 20)).unwrap();
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("storage full"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        files(&mnt.join("repo/snapshots")).is_empty(),
        "a snapshot was written"
    );
    assert!(
        files(&mnt.join("repo/tmp")).is_empty(),
        "temp files left behind"
    );
    w.ok(&[
        "verify",
        "--repo",
        &repo,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
    // Room again.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    w.ok(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    let out = w.path("out");
    w.ok(&[
        "restore",
        "--repo",
        &repo,
        "--key",
        &w.key("restore"),
        "latest",
        out.to_str().unwrap(),
    ]);
    assert_eq!(digest(&out.join("src")), digest(&src));
    w.ok(&[
        "verify",
        "--repo",
        &repo,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
}
