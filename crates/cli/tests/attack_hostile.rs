//! Hostile repository directories and honest answers (issue 8, F): a
//! received bundle or replica is untrusted input, and every error keeps its
//! kind to the exit status (0 ok, 1 error, 3 partial, 4 damage or
//! tampering). The real binary on real directories; every child runs under
//! a timeout, so a hang fails the test instead of blocking it.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `c` to completion or kills it after `secs` and fails the test.
fn run_within(mut c: Command, secs: u64) -> (Output, Duration) {
    let t = Instant::now();
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out, &mut v);
        v
    });
    let e = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err, &mut v);
        v
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(secs) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{c:?} still running after {secs} s: killed");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let out = Output {
        status,
        stdout: o.join().unwrap(),
        stderr: e.join().unwrap(),
    };
    (out, t.elapsed())
}

/// Attempts made and how each ended, for the report at the end of a test.
#[derive(Default)]
struct Tally {
    tried: u32,
    refused: u32,
}

impl Tally {
    /// Runs `holdfast ARGS` within `secs`; it must exit with `code` and
    /// say `says` (on stdout or stderr, in any case).
    fn expect(&mut self, w: &World, args: &[&str], code: i32, says: &str, secs: u64) -> Output {
        self.tried += 1;
        let (o, took) = run_within(w.cmd(args), secs);
        let (out, err) = (
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr),
        );
        assert_eq!(
            o.status.code(),
            Some(code),
            "holdfast {args:?} after {took:?}: expected exit {code}\nstdout: {out}\nstderr: {err}"
        );
        let said = format!("{out}\n{err}").to_lowercase();
        assert!(
            said.contains(&says.to_lowercase()),
            "holdfast {args:?}: does not say {says:?}: {out}\n{err}"
        );
        self.refused += 1;
        o
    }
    fn report(&self, what: &str) {
        eprintln!(
            "{what}: {} attempts, {} refused or detected",
            self.tried, self.refused
        );
        assert_eq!(self.tried, self.refused);
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A world with a repository, keys and one snapshot of a small tree.
fn world_with_snapshot() -> (World, PathBuf, String) {
    let w = World::new();
    w.init();
    let src = w.path("src");
    std::fs::create_dir_all(src.join("d")).unwrap();
    std::fs::write(src.join("a.txt"), b"hello holdfast\n").unwrap();
    std::fs::write(src.join("d/big.bin"), Rng(7).bytes(600_000)).unwrap();
    let snap = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    (w, src, snap)
}

fn set_old(p: &Path) {
    let two_hours_ago =
        filetime::FileTime::from_unix_time(holdfast_repo::now_ns() / 1_000_000_000 - 7200, 0);
    filetime::set_symlink_file_times(p, two_hours_ago, two_hours_ago).unwrap();
}

#[test]
fn tmp_symlink_never_deletes_outside_the_repository() {
    let (w, _src, snap) = world_with_snapshot();
    let mut t = Tally::default();
    // Files an hour old and more, outside, some named as temp files are.
    let outside = w.path("precious");
    std::fs::create_dir(&outside).unwrap();
    let names = [
        "0123456789abcdef01234567.tmp",
        "report.pdf",
        "aaaaaaaaaaaaaaaaaaaaaaaa.tmp",
    ];
    for n in names {
        std::fs::write(outside.join(n), n).unwrap();
        set_old(&outside.join(n));
    }
    let tmp = w.path("repo/tmp");
    std::fs::remove_dir_all(&tmp).unwrap();
    std::os::unix::fs::symlink(&outside, &tmp).unwrap();
    let survives = || {
        for n in names {
            assert_eq!(std::fs::read_to_string(outside.join(n)).unwrap(), n);
        }
    };

    let (repo, rk) = (w.repo(), w.key("restore"));
    for args in [
        vec!["snapshots", "--repo", &repo, "--key", &rk],
        vec!["verify", "--repo", &repo, "--key", &rk, "--read-data"],
        vec!["ls", "--repo", &repo, "--key", &rk, &snap],
    ] {
        t.tried += 1;
        let (o, _) = run_within(w.cmd(&args), 60);
        assert!(o.status.success(), "{args:?}: {o:?}");
        survives();
        t.refused += 1;
    }
    let target = w.path("out").display().to_string();
    t.tried += 1;
    let (o, _) = run_within(
        w.cmd(&["restore", "--repo", &repo, "--key", &rk, &snap, &target]),
        60,
    );
    assert!(o.status.success(), "{o:?}");
    survives();
    t.refused += 1;

    // A write refuses to go through the symlink (and deletes nothing).
    let more = w.path("more");
    std::fs::create_dir(&more).unwrap();
    std::fs::write(more.join("new.txt"), Rng(3).bytes(5000)).unwrap();
    let (ck, m) = (w.key("client"), more.display().to_string());
    t.expect(
        &w,
        &["backup", "--repo", &repo, "--key", &ck, &m],
        1,
        "refusing to write or delete through it",
        60,
    );
    survives();

    // The vault on this directory cleans its tmp at start: not through a
    // symlink either.
    {
        t.tried += 1;
        let mut v = w.start_vault(&[]);
        std::thread::sleep(Duration::from_millis(300));
        v.stop();
        survives();
        t.refused += 1;
    }
    t.report("tmp symlink");
}

#[test]
fn special_files_in_place_of_objects_are_damage_not_hangs() {
    let (w, _src, _snap) = world_with_snapshot();
    let mut t = Tally::default();
    let (repo, rk) = (w.repo(), w.key("restore"));
    let snaps = w.path("repo/snapshots");
    let fake = "ab".repeat(32);

    // A snapshot symlinked to /dev/zero: would read until memory runs out.
    std::os::unix::fs::symlink("/dev/zero", snaps.join(&fake)).unwrap();
    for args in [
        vec!["snapshots", "--repo", &repo, "--key", &rk],
        vec!["verify", "--repo", &repo, "--key", &rk],
    ] {
        t.expect(&w, &args, 4, "not a regular file", 20);
    }
    std::fs::remove_file(snaps.join(&fake)).unwrap();

    // A FIFO: would block for ever.
    let ok = Command::new("mkfifo")
        .arg(snaps.join(&fake))
        .status()
        .unwrap();
    assert!(ok.success());
    for args in [
        vec!["snapshots", "--repo", &repo, "--key", &rk],
        vec!["verify", "--repo", &repo, "--key", &rk, "--read-data"],
    ] {
        t.expect(&w, &args, 4, "a FIFO", 20);
    }
    std::fs::remove_file(snaps.join(&fake)).unwrap();

    // The same in a bundle directory someone handed over.
    let bundle = w.path("bundle");
    let (ek, b) = (w.key("replica"), bundle.display().to_string());
    let o = w.run(&["export", "--repo", &repo, "--key", &ek, "--to", &b]);
    if o.status.success() {
        let bsnaps = bundle.join("snapshots");
        std::os::unix::fs::symlink("/dev/zero", bsnaps.join(&fake)).unwrap();
        let spec = format!("bundle:{b}");
        t.expect(
            &w,
            &["snapshots", "--repo", &spec, "--key", &rk],
            4,
            "not a regular file",
            20,
        );
        std::fs::remove_file(bsnaps.join(&fake)).unwrap();
        // Its vault log, symlinked to /dev/zero.
        std::fs::create_dir_all(bundle.join("vault")).unwrap();
        let _ = std::fs::remove_file(bundle.join("vault/log"));
        if !bundle.join("vault/checkpoint").exists() {
            std::fs::write(bundle.join("vault/checkpoint"), b"x").unwrap();
        }
        std::os::unix::fs::symlink("/dev/zero", bundle.join("vault/log")).unwrap();
        t.expect(
            &w,
            &["audit", "--repo", &spec, "--key", &w.key("auditor")],
            4,
            "not a regular file",
            20,
        );
    } else {
        panic!(
            "export from a directory: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    // A pack of 5 GiB (sparse): past what u32 offsets address. Refused at
    // once, by size, with and without --read-data; never a panic.
    let name = "cd".repeat(32);
    let p = w.path("repo/packs/cd").join(&name);
    std::fs::File::create(&p).unwrap().set_len(5 << 30).unwrap();
    for args in [
        vec!["verify", "--repo", &repo, "--key", &rk],
        vec!["verify", "--repo", &repo, "--key", &rk, "--read-data"],
    ] {
        let o = t.expect(&w, &args, 4, "found", 30);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("too large"), "{out}");
        assert!(!String::from_utf8_lossy(&o.stderr).contains("panicked"));
    }
    t.report("special files");
}

/// A key file whose Argon2 parameters ask for 4 GiB and 64 passes.
#[test]
fn key_file_with_huge_argon2_parameters_is_refused_fast() {
    let w = World::new();
    w.init();
    let mut t = Tally::default();
    let good = std::fs::read(w.key("restore")).unwrap();
    let kf = holdfast_core::keyfile::KeyFile::decode(&good).unwrap();
    let holdfast_core::keyfile::Protection::Passphrase { sealed, .. } = &kf.protection else {
        panic!("restore key is passphrase-protected");
    };
    // m, t, p sit before the salt (16) and the sealed payload (u32 + bytes).
    let at = good.len() - (12 + 16 + 4 + sealed.len());
    for (m, passes, lanes) in [
        (4u32 * 1024 * 1024, 1u32, 1u32),
        (1024 * 1024, 64, 1),
        (47_104, 2, 16),
    ] {
        let mut bad = good.clone();
        bad[at..at + 4].copy_from_slice(&m.to_le_bytes());
        bad[at + 4..at + 8].copy_from_slice(&passes.to_le_bytes());
        bad[at + 8..at + 12].copy_from_slice(&lanes.to_le_bytes());
        let path = w.path("costly.key");
        std::fs::write(&path, &bad).unwrap();
        let (repo, k) = (w.repo(), path.display().to_string());
        let t0 = Instant::now();
        t.expect(
            &w,
            &["snapshots", "--repo", &repo, "--key", &k],
            1,
            "more Argon2 work than holdfast allows",
            20,
        );
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    }
    t.report("argon2 parameters");
}

#[test]
fn damaged_blob_during_restore_exits_4_and_claims_nothing() {
    let (w, _src, snap) = world_with_snapshot();
    let mut t = Tally::default();
    // Flip one byte early in the blob area of the largest pack: the data of
    // big.bin (trees are written last and are small).
    let mut packs = files(&w.path("repo/packs"));
    packs.sort_by_key(|p| std::fs::metadata(p).unwrap().len());
    let p = packs.last().unwrap();
    let mut b = std::fs::read(p).unwrap();
    b[200] ^= 0x40;
    std::fs::write(p, &b).unwrap();
    let (repo, rk) = (w.repo(), w.key("restore"));
    let target = w.path("out").display().to_string();
    let o = t.expect(
        &w,
        &["restore", "--repo", &repo, "--key", &rk, &snap, &target],
        4,
        "damage",
        60,
    );
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(!out.contains("verified"), "{out}");
    t.report("damaged blob");
}

#[test]
fn local_write_failure_during_restore_is_not_damage() {
    let (w, _src, snap) = world_with_snapshot();
    let mut t = Tally::default();
    let (repo, rk) = (w.repo(), w.key("restore"));
    let target = w.path("out").display().to_string();
    // Files may not grow past 100 KiB here, as on a full disk (EFBIG
    // rather than ENOSPC; SIGXFSZ ignored so the write fails instead).
    let mut sh = Command::new("sh");
    sh.arg("-c")
        .arg("trap '' XFSZ; ulimit -f 200; exec \"$@\"")
        .arg("sh")
        .arg(bin())
        .args(["restore", "--repo", &repo, "--key", &rk, &snap, &target])
        .env("HOLDFAST_PASSPHRASE", PASS)
        .env("HOLDFAST_CACHE_DIR", w.path("cache"));
    t.tried += 1;
    let (o, _) = run_within(sh, 60);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert_eq!(o.status.code(), Some(3), "{out}\n{err}");
    assert!(
        err.contains("failed: ") && err.contains("d/big.bin"),
        "{err}"
    );
    assert!(
        !err.contains("damaged:") && !err.contains("DAMAGE") && !err.contains("repository damaged"),
        "{err}"
    );
    assert!(!out.contains("verified"), "{out}");
    t.refused += 1;
    t.report("local write failure");
}

#[test]
fn wrong_repo_is_a_usage_error_and_a_changed_config_is_tampering() {
    let (w, _src, _snap) = world_with_snapshot();
    let mut t = Tally::default();
    let other = World::new();
    other.init();
    let rk = w.key("restore");
    for key in [w.key("restore"), w.key("client"), w.key("auditor")] {
        let o = t.expect(
            &w,
            &["snapshots", "--repo", &other.repo(), "--key", &key],
            1,
            "this key belongs to another repository",
            20,
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!err.contains("TAMPERING"), "{err}");
        assert!(err.contains(&other.repo()), "{err}");
    }
    let target = w.path("out").display().to_string();
    t.expect(
        &w,
        &[
            "restore",
            "--repo",
            &other.repo(),
            "--key",
            &rk,
            "latest",
            &target,
        ],
        1,
        "this key belongs to another repository",
        20,
    );
    // The config in place altered: that is not a wrong argument.
    let cfg = w.path("repo/config");
    let mut b = std::fs::read(&cfg).unwrap();
    let n = b.len();
    b[n - 3] ^= 1;
    std::fs::write(&cfg, &b).unwrap();
    t.expect(
        &w,
        &["snapshots", "--repo", &w.repo(), "--key", &rk],
        4,
        "TAMPERING",
        20,
    );
    t.report("wrong repository");
}

#[test]
fn cache_files_are_private() {
    let (w, _src, _snap) = world_with_snapshot();
    let cache = w.path("cache");
    assert_eq!(mode(&cache), 0o700, "cache dir");
    let caches: Vec<_> = files(&cache);
    assert!(!caches.is_empty());
    for f in caches {
        assert_eq!(mode(&f), 0o600, "{}", f.display());
    }
}

#[test]
fn held_checkpoint_is_private_and_never_silently_replaced() {
    let w = World::new();
    w.init();
    let mut t = Tally::default();
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("m"), b"mail").unwrap();
    let mut v = w.start_vault(&[]);
    let ck = w.key("client");
    backup_via(&w, &v.url, &ck, &src);
    let dir = w.path("cache/checkpoints");
    assert_eq!(mode(&dir), 0o700);
    let held: Vec<_> = files(&dir);
    assert_eq!(held.len(), 1, "{held:?}");
    let cp = &held[0];
    assert_eq!(mode(cp), 0o600);

    // An unreadable checkpoint is an error with the way out, exit 1, not a
    // first contact.
    let good = std::fs::read(cp).unwrap();
    std::fs::write(cp, &good[..good.len() / 2]).unwrap();
    let s = src.display().to_string();
    t.expect(
        &w,
        &["backup", "--repo", &v.url, "--key", &ck, &s],
        1,
        "holdfast checkpoint forget",
        60,
    );
    assert_eq!(std::fs::read(cp).unwrap(), &good[..good.len() / 2]);
    // Not a file at all.
    std::fs::remove_file(cp).unwrap();
    std::fs::create_dir(cp).unwrap();
    t.expect(
        &w,
        &["snapshots", "--repo", &v.url, "--key", &ck],
        1,
        "holdfast checkpoint forget",
        60,
    );
    std::fs::remove_dir(cp).unwrap();
    std::fs::write(cp, &good[..good.len() - 1]).unwrap();

    // The explicit way out: kept aside, then a first contact.
    let out = w.ok(&["checkpoint", "forget", "--key", &ck]);
    assert!(out.contains("kept as"), "{out}");
    assert!(!cp.exists());
    assert_eq!(files(&dir).len(), 1);
    backup_via(&w, &v.url, &ck, &src);
    assert_eq!(mode(cp), 0o600);
    let shown = w.ok(&["checkpoint", "show", "--key", &ck]);
    assert!(shown.contains("size "), "{shown}");
    v.stop();
    t.report("held checkpoint");
}

/// A directory that had a vault, whose log lost its last entries (a
/// damaged replica handed over): `export` refuses it as damage (exit 4)
/// instead of slicing the log past its end.
#[test]
fn export_of_a_log_shorter_than_its_checkpoint_is_damage_not_a_panic() {
    let w = World::new();
    w.init();
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 1, 5, 3);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    vault.stop();
    let log = w.path("repo/vault/log");
    let raw = std::fs::read(&log).unwrap();
    let first = 4 + u32::from_le_bytes(raw[..4].try_into().unwrap()) as usize;
    std::fs::write(&log, &raw[..first]).unwrap();
    let to = w.path("bundle").display().to_string();
    let o = w.run(&[
        "export",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("replica"),
        "--to",
        &to,
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(4), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.contains("fewer than its checkpoint"), "{err}");
}
