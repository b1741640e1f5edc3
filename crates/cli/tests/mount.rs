//! `holdfast mount` with the real binary and the real kernel FUSE: every
//! path, mode, mtime, link and byte as backed up; writes refused with
//! EROFS; a flipped byte in a pack is EIO, never other bytes; unmount by
//! SIGTERM (also while a reader holds a file open) and by `fusermount -u`;
//! through a vault as through a directory; and a real Dovecot serving the
//! mount as an `Archive/` namespace over IMAP.
//!
//! These tests need /dev/fuse and root (CI has both): without them they
//! fail, never skip.

mod common;

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::*;

const EROFS: i32 = 30;
const EIO: i32 = 5;

struct Mounted {
    child: Child,
    dir: PathBuf,
    out: PathBuf,
    err: PathBuf,
}

fn is_mounted(dir: &Path) -> bool {
    let want = dir.canonicalize().unwrap_or(dir.to_path_buf());
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some(want.to_str().unwrap()))
}

/// Starts `holdfast mount` on `dir` and waits until the mount answers.
fn mount(w: &World, repo: &str, dir: &Path, extra: &[&str]) -> Mounted {
    assert!(
        Path::new("/dev/fuse").exists(),
        "the mount tests need /dev/fuse (CI runs as root with it)"
    );
    std::fs::create_dir_all(dir).unwrap();
    let tag = rand_tag();
    let out = w.path(&format!("mount-{tag}.out"));
    let err = w.path(&format!("mount-{tag}.err"));
    let child = w
        .cmd(&[
            "mount",
            "--repo",
            repo,
            "--key",
            &w.key("restore"),
            dir.to_str().unwrap(),
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut m = Mounted {
        child,
        dir: dir.to_path_buf(),
        out,
        err,
    };
    let t = Instant::now();
    while !(is_mounted(dir) && dir.join("snapshots").is_dir()) {
        if let Ok(Some(s)) = m.child.try_wait() {
            panic!("holdfast mount exited ({s}): {}", m.stderr());
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "mount did not come up: {}",
            m.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    m
}

fn rand_tag() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

impl Mounted {
    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }
    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }
    fn signal(&self, sig: &str) {
        let s = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(s.success());
    }
    /// Waits for the process to end (at most `secs`).
    fn wait(&mut self, secs: u64) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                t.elapsed() < Duration::from_secs(secs),
                "holdfast mount did not exit: {}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = self.child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if is_mounted(&self.dir) {
            let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
        }
    }
}

/// The only entry of `dir`.
fn only_entry(dir: &Path) -> PathBuf {
    let v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(v.len(), 1, "{v:?}");
    v[0].clone()
}

fn errno(r: std::io::Result<impl Sized>) -> Option<i32> {
    r.err().and_then(|e| e.raw_os_error())
}

/// Every kind of change under `dir` (which holds `file` and `sub/`) is
/// refused with EROFS.
fn assert_read_only(dir: &Path, file: &Path) {
    use std::fs::OpenOptions;
    let checks: Vec<(&str, Option<i32>)> = vec![
        ("create", errno(std::fs::File::create(dir.join("new")))),
        (
            "open for writing",
            errno(OpenOptions::new().write(true).open(file)),
        ),
        (
            "open for append",
            errno(OpenOptions::new().append(true).open(file)),
        ),
        (
            "truncate",
            errno(OpenOptions::new().write(true).truncate(true).open(file)),
        ),
        ("unlink", errno(std::fs::remove_file(file))),
        ("mkdir", errno(std::fs::create_dir(dir.join("newdir")))),
        ("rmdir", errno(std::fs::remove_dir(dir.join("sub")))),
        ("rename", errno(std::fs::rename(file, dir.join("renamed")))),
        (
            "chmod",
            errno(std::fs::set_permissions(
                file,
                std::fs::Permissions::from_mode(0o600),
            )),
        ),
        (
            "symlink",
            errno(std::os::unix::fs::symlink("x", dir.join("newlink"))),
        ),
        (
            "hard link",
            errno(std::fs::hard_link(file, dir.join("newhard"))),
        ),
        (
            "utimes",
            errno(filetime::set_file_mtime(
                file,
                filetime::FileTime::from_unix_time(1, 0),
            )),
        ),
    ];
    for (what, e) in checks {
        assert_eq!(e, Some(EROFS), "{what} on the mount");
    }
}

/// A source tree with every kind of entry: a Maildir spool (`spool/`), a symlink, a
/// private file, an empty file, a multi-chunk file, a private directory.
fn make_source(src: &Path, seed: u64) {
    make_maildir(&src.join("spool"), 3, 30, seed);
    std::os::unix::fs::symlink("spool/user000/cur", src.join("link")).unwrap();
    std::fs::write(src.join("private"), b"secret\n").unwrap();
    std::fs::set_permissions(src.join("private"), std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(src.join("empty"), b"").unwrap();
    std::fs::write(src.join("big.bin"), Rng(seed).bytes(5 << 20)).unwrap();
    std::fs::create_dir(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/x"), b"x").unwrap();
    std::fs::set_permissions(src.join("sub"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn mount_shows_every_snapshot_as_backed_up_and_refuses_writes() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_source(&src, 11);
    let s1 = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let d1 = digest(&src);
    // Snapshot names have second resolution.
    std::thread::sleep(Duration::from_millis(1100));
    mail_day(&src.join("spool"), 1);
    let s2 = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let d2 = digest(&src);
    assert_ne!(d1, d2);

    let mp = w.path("mnt");
    let mut m = mount(&w, &w.repo(), &mp, &[]);
    let mut snaps: Vec<String> = std::fs::read_dir(mp.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    snaps.sort();
    assert_eq!(snaps.len(), 2, "{snaps:?}");
    assert!(snaps[0].ends_with(&format!("_{}", &s1[..8])), "{snaps:?}");
    assert!(snaps[1].ends_with(&format!("_{}", &s2[..8])), "{snaps:?}");
    assert!(!snaps[0].contains(':'), "no colons: {snaps:?}");

    // Every path, mode, mtime, link and byte, in both snapshots.
    assert_eq!(
        digest(&mp.join("snapshots").join(&snaps[0]).join("mail")),
        d1
    );
    assert_eq!(
        digest(&mp.join("snapshots").join(&snaps[1]).join("mail")),
        d2
    );

    // by-client/<name>/latest and by-host/<host>/latest: the newest.
    let client = only_entry(&mp.join("by-client"));
    let want = PathBuf::from(format!("../../snapshots/{}", snaps[1]));
    assert_eq!(std::fs::read_link(client.join("latest")).unwrap(), want);
    let host = only_entry(&mp.join("by-host"));
    assert_eq!(std::fs::read_link(host.join("latest")).unwrap(), want);
    let mut times: Vec<String> = std::fs::read_dir(&client)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n != "latest")
        .collect();
    times.sort();
    assert_eq!(times.len(), 2);
    assert_eq!(
        std::fs::read_link(client.join(&times[0])).unwrap(),
        PathBuf::from(format!("../../snapshots/{}", snaps[0]))
    );
    assert_eq!(digest(&client.join("latest/mail")), d2);

    // Nothing can change it.
    let latest = client.join("latest/mail");
    assert_read_only(&latest, &latest.join("big.bin"));
    assert_eq!(digest(&client.join("latest/mail")), d2);

    // SIGTERM: unmounted, exit 0.
    m.signal("-TERM");
    let st = m.wait(30);
    assert!(st.success(), "{st}: {}", m.stderr());
    assert!(!is_mounted(&mp));
    assert!(m.stdout().contains("unmounted"), "{}", m.stdout());
}

/// The largest pack file of a directory repository.
fn largest_pack(repo: &Path) -> PathBuf {
    let mut best: Option<(u64, PathBuf)> = None;
    for f in files(&repo.join("packs")) {
        let n = std::fs::metadata(&f).unwrap().len();
        if best.as_ref().is_none_or(|(b, _)| n > *b) {
            best = Some((n, f));
        }
    }
    best.unwrap().1
}

#[test]
fn flipped_byte_in_a_pack_is_eio_for_that_file_never_wrong_bytes() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 3, 60, 5);
    w.backup(&[&src]);
    let pack = largest_pack(&w.path("repo"));
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x40;
    std::fs::set_permissions(&pack, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&pack, &bytes).unwrap();

    let mp = w.path("mnt");
    let mut m = mount(&w, &w.repo(), &mp, &[]);
    let root = only_entry(&mp.join("snapshots")).join("mail");
    let (mut good, mut eio) = (0, Vec::new());
    for f in files(&src) {
        let rel = f.strip_prefix(&src).unwrap();
        let want = std::fs::read(&f).unwrap();
        match std::fs::read(root.join(rel)) {
            Ok(got) => {
                assert!(got == want, "{}: other bytes than backed up", rel.display());
                good += 1;
            }
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(EIO), "{}: {e}", rel.display());
                eio.push(rel.to_path_buf());
            }
        }
    }
    assert!(!eio.is_empty(), "the flipped byte went unnoticed");
    assert!(good > eio.len() * 10, "{good} good, {} EIO", eio.len());
    // Still EIO on a second read (nothing wrong was cached).
    for rel in &eio {
        let e = std::fs::read(root.join(rel)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(EIO));
    }
    assert!(m.stderr().contains("DAMAGE DETECTED"), "{}", m.stderr());
    m.signal("-TERM");
    let st = m.wait(30);
    assert_eq!(st.code(), Some(4), "damage seen while mounted: exit 4");
    assert!(!is_mounted(&mp));
}

fn fusermount() -> &'static str {
    for b in ["fusermount3", "fusermount"] {
        if Command::new(b).arg("-V").output().is_ok() {
            return b;
        }
    }
    panic!("neither fusermount3 nor fusermount is installed (apt-get install fuse3)");
}

#[test]
fn through_a_vault_held_file_survives_sigterm_and_fusermount_unmounts() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_source(&src, 23);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let d = digest(&src);

    let mp = w.path("mnt");
    let mut m = mount(&w, &vault.url, &mp, &[]);
    let latest = only_entry(&mp.join("by-client")).join("latest/mail");
    assert_eq!(digest(&latest), d);
    assert_read_only(&latest, &latest.join("big.bin"));

    // A reader holds a file open across SIGTERM: the mount is detached at
    // once, the open file still reads the right bytes, then the process
    // ends by itself.
    let want = std::fs::read(src.join("big.bin")).unwrap();
    let mut held = std::fs::File::open(latest.join("big.bin")).unwrap();
    let mut first = vec![0u8; 1000];
    held.read_exact(&mut first).unwrap();
    m.signal("-TERM");
    let t = Instant::now();
    while is_mounted(&mp) {
        assert!(t.elapsed() < Duration::from_secs(20), "{}", m.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rest = Vec::new();
    held.read_to_end(&mut rest).unwrap();
    first.extend(rest);
    assert!(first == want, "the held file read other bytes");
    assert!(
        m.child.try_wait().unwrap().is_none(),
        "exited under a reader"
    );
    drop(held);
    let st = m.wait(30);
    assert!(st.success(), "{st}: {}", m.stderr());

    // Again (the disk cache is warm now), unmounted with fusermount -u.
    let mut m = mount(&w, &vault.url, &mp, &[]);
    assert_eq!(
        digest(&only_entry(&mp.join("by-client")).join("latest/mail")),
        d
    );
    let s = Command::new(fusermount())
        .arg("-u")
        .arg(&mp)
        .status()
        .unwrap();
    assert!(s.success());
    let st = m.wait(30);
    assert!(st.success(), "{st}: {}", m.stderr());
    assert!(!is_mounted(&mp));
    assert!(
        m.stdout().contains("from the disk cache")
            && !m.stdout().contains(" 0 from the disk cache"),
        "the second mount read from the disk cache: {}",
        m.stdout()
    );
}

#[test]
fn without_dev_fuse_one_line_and_exit_1() {
    let w = World::new();
    w.init();
    let mp = w.path("mnt");
    std::fs::create_dir_all(&mp).unwrap();
    // A private mount namespace whose /dev is empty.
    let o = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs none /dev && exec "$@""#)
        .arg("sh")
        .arg(bin())
        .args(["mount", "--repo", &w.repo(), "--key", &w.key("restore")])
        .arg(&mp)
        .env("HOLDFAST_PASSPHRASE", PASS)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("/dev/fuse"), "{err}");
}
