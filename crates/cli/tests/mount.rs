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

use std::io::{Read, Write};
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

    // The same through a vault serving that directory, where a miss reads
    // the blobs after it ahead (sealed, each checked only when read).
    let vault = w.start_vault(&[]);
    let cache = w.path("vault-cache");
    let mut m = mount(
        &w,
        &vault.url,
        &mp,
        &["--cache-dir", cache.to_str().unwrap()],
    );
    let root = only_entry(&mp.join("snapshots")).join("mail");
    let mut eio_v = Vec::new();
    for f in files(&src) {
        let rel = f.strip_prefix(&src).unwrap();
        match std::fs::read(root.join(rel)) {
            Ok(got) => assert!(got == std::fs::read(&f).unwrap(), "{}", rel.display()),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(EIO), "{}: {e}", rel.display());
                eio_v.push(rel.to_path_buf());
            }
        }
    }
    assert_eq!(eio_v, eio, "the same files fail through the vault");
    m.signal("-TERM");
    assert_eq!(m.wait(30).code(), Some(4), "{}", m.stderr());
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
            && !m.stdout().contains(" 0 blob(s) from the disk cache"),
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

// ------------------------------------------------------------ Dovecot

/// A real Dovecot (`dovecot -F`, own config in `dir`, IMAP on a free
/// loopback port) whose users see the mount as `Archive/`: the location
/// below is the README's, with INDEX, CONTROL and VOLATILEDIR on local disk.
struct Dovecot {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Dovecot {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dovecot {
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }

    /// `archive` is the mount's path of the spool, with %u for the user.
    fn start(dir: &Path, user: &str, archive: &str) -> Dovecot {
        assert!(
            Path::new("/usr/sbin/dovecot").exists(),
            "Dovecot is not installed (apt-get install dovecot-imapd)"
        );
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        std::fs::create_dir_all(dir.join("archive")).unwrap();
        // Mail processes run as nobody: every parent must be traversable.
        let mut p = dir.to_path_buf();
        loop {
            let _ = Command::new("chmod").arg("o+x").arg(&p).status();
            if !p.pop() || p == Path::new("/") {
                break;
            }
        }
        let s = Command::new("chown")
            .args(["-R", "65534:65534"])
            .arg(dir.join("mail"))
            .arg(dir.join("archive"))
            .status()
            .unwrap();
        assert!(s.success());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.display();
        let conf = format!(
            r#"base_dir = {d}/run
log_path = {d}/dovecot.log
state_dir = {d}/state
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain
first_valid_uid = 1
default_internal_user = dovecot
default_login_user = dovenull
mail_location = maildir:{d}/mail/%u
namespace inbox {{
  inbox = yes
  separator = /
}}
namespace archive {{
  prefix = Archive/
  separator = /
  location = maildir:{archive}:INDEX={d}/archive/%u/index:CONTROL={d}/archive/%u/control:VOLATILEDIR={d}/archive/%u/volatile
  list = yes
  subscriptions = no
}}
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
  default_fields = uid=65534 gid=65534 home={d}/mail/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
service pop3-login {{
  inet_listener pop3 {{
    port = 0
  }}
}}
"#
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        std::fs::write(
            dir.join("archive.acl"),
            "Archive owner lr\nArchive/* owner lr\n",
        )
        .unwrap();
        std::fs::write(dir.join("passwd"), format!("{user}:{{PLAIN}}pw::::::\n")).unwrap();
        let child = Command::new("/usr/sbin/dovecot")
            .arg("-F")
            .arg("-c")
            .arg(dir.join("dovecot.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("dovecot.stderr")).unwrap())
            .spawn()
            .unwrap();
        let dv = Dovecot {
            child,
            dir: dir.to_path_buf(),
            port,
        };
        let t = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "dovecot did not start: {} {}",
                dv.log(),
                std::fs::read_to_string(dir.join("dovecot.stderr")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        dv
    }
}

/// A minimal IMAP client: literals are kept as raw bytes.
struct Imap {
    r: std::io::BufReader<std::net::TcpStream>,
    w: std::net::TcpStream,
    tag: u32,
}

/// One response line, with the literals it carried.
struct Line {
    text: String,
    literals: Vec<Vec<u8>>,
}

impl Imap {
    fn connect(port: u16, user: &str) -> Imap {
        let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut i = Imap {
            r: std::io::BufReader::new(s.try_clone().unwrap()),
            w: s,
            tag: 0,
        };
        let greet = i.read_line();
        assert!(greet.starts_with("* OK"), "{greet}");
        i.ok(&format!("LOGIN {user} pw"));
        i
    }

    fn read_line(&mut self) -> String {
        let mut l = Vec::new();
        let n = std::io::BufRead::read_until(&mut self.r, b'\n', &mut l).unwrap();
        assert!(n > 0, "IMAP connection closed");
        String::from_utf8_lossy(&l)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    /// Sends a command; the untagged lines and the tagged status line.
    fn cmd(&mut self, c: &str) -> (Vec<Line>, String) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        write!(self.w, "{tag} {c}\r\n").unwrap();
        std::io::Write::flush(&mut self.w).unwrap();
        let mut lines = Vec::new();
        loop {
            let mut text = self.read_line();
            let mut literals = Vec::new();
            while let Some(n) = text
                .strip_suffix('}')
                .and_then(|l| l.rfind('{').and_then(|i| l[i + 1..].parse::<usize>().ok()))
            {
                let mut buf = vec![0u8; n];
                self.r.read_exact(&mut buf).unwrap();
                literals.push(buf);
                text.push_str(&self.read_line());
            }
            if text.starts_with(&format!("{tag} ")) {
                return (lines, text);
            }
            lines.push(Line { text, literals });
        }
    }

    fn ok(&mut self, c: &str) -> Vec<Line> {
        let (lines, status) = self.cmd(c);
        assert!(
            status.split_whitespace().nth(1) == Some("OK"),
            "IMAP {c}: {status}"
        );
        lines
    }
}

/// `n` messages with distinct subjects into `folder` (a Maildir): half in
/// cur/ (seen), half in new/.
fn put_messages(folder: &Path, tag: &str, n: usize, r: &mut Rng) -> Vec<Vec<u8>> {
    for sub in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(folder.join(sub)).unwrap();
    }
    let mut out = Vec::new();
    for i in 0..n {
        let mut msg = format!(
            "From: someone@example.org\r\nTo: alice@example.org\r\nSubject: {tag} number {i}\r\nMessage-ID: <{tag}.{i}@example.org>\r\n\r\n"
        )
        .into_bytes();
        msg.extend(
            r.text(300 + 50 * i)
                .iter()
                .map(|b| if *b == b'\n' { b' ' } else { *b }),
        );
        msg.extend(b"\r\n");
        let t = 1_700_000_000 + i as u64 * 1000;
        let name = if i % 2 == 0 {
            format!("cur/{t}.M{i}P1.mx1,S={}:2,S", msg.len())
        } else {
            format!("new/{t}.M{i}P1.mx1,S={}", msg.len())
        };
        std::fs::write(folder.join(name), &msg).unwrap();
        out.push(msg);
    }
    out
}

#[test]
fn dovecot_serves_the_mount_as_an_archive_namespace() {
    let w = World::new();
    w.init();
    let spool = w.path("spool");
    let mut r = Rng(99);
    let inbox = put_messages(&spool.join("alice"), "inbox", 6, &mut r);
    let sent = put_messages(&spool.join("alice/.Sent"), "sent", 3, &mut r);
    w.backup(&[&spool]);

    let mp = w.path("mnt");
    let _m = mount(&w, &w.repo(), &mp, &["--allow-other"]);
    let client = only_entry(&mp.join("by-client"));
    let client = client.file_name().unwrap().to_str().unwrap();
    let archive = format!("{}/by-client/{client}/latest/spool/%u", mp.display());
    let dv = Dovecot::start(&w.path("dovecot"), "alice", &archive);
    let mut imap = Imap::connect(dv.port, "alice");

    let list: Vec<String> = imap
        .ok(r#"LIST "" "Archive*""#)
        .into_iter()
        .map(|l| l.text)
        .collect();
    let has = |name: &str| {
        list.iter()
            .any(|l| l.ends_with(&format!("\"{name}\"")) || l.ends_with(&format!(" {name}")))
    };
    // The Maildir's own INBOX is the namespace's root mailbox, `Archive`;
    // its folders are below it.
    assert!(
        has("Archive") && has("Archive/Sent"),
        "{list:?}\n{}",
        dv.log()
    );

    // Every message of the archived INBOX, byte for byte.
    let sel = imap.ok(r#"SELECT "Archive""#);
    assert!(
        sel.iter()
            .any(|l| l.text == format!("* {} EXISTS", inbox.len())),
        "{:?}\n{}",
        sel.iter().map(|l| &l.text).collect::<Vec<_>>(),
        dv.log()
    );
    let mut got: Vec<Vec<u8>> = imap
        .ok("FETCH 1:* (BODY.PEEK[])")
        .into_iter()
        .filter(|l| l.text.contains(" FETCH "))
        .flat_map(|l| l.literals)
        .collect();
    let mut want = inbox.clone();
    got.sort();
    want.sort();
    assert!(got == want, "Archive holds other bytes than backed up");

    // SEARCH finds a message by subject.
    let found: Vec<String> = imap
        .ok(r#"SEARCH SUBJECT "inbox number 3""#)
        .into_iter()
        .map(|l| l.text)
        .collect();
    let hits: Vec<&str> = found
        .iter()
        .filter_map(|l| l.strip_prefix("* SEARCH"))
        .flat_map(|l| l.split_whitespace())
        .collect();
    assert_eq!(hits.len(), 1, "{found:?}");
    let body = imap.ok(&format!("FETCH {} (BODY.PEEK[])", hits[0]));
    assert_eq!(body[0].literals[0], inbox[3]);

    // Archive/Sent too.
    imap.ok(r#"SELECT "Archive/Sent""#);
    let mut got: Vec<Vec<u8>> = imap
        .ok("FETCH 1:* (BODY.PEEK[])")
        .into_iter()
        .flat_map(|l| l.literals)
        .collect();
    let mut want = sent.clone();
    got.sort();
    want.sort();
    assert!(got == want, "Archive/Sent holds other bytes than backed up");

    // Copy one back into the live INBOX.
    imap.ok(r#"SELECT "Archive""#);
    imap.ok(&format!("COPY {} INBOX", hits[0]));
    imap.ok("SELECT INBOX");
    let live = imap.ok("FETCH 1:* (BODY.PEEK[])");
    let live: Vec<&Vec<u8>> = live.iter().flat_map(|l| &l.literals).collect();
    assert_eq!(live, vec![&inbox[3]], "{}", dv.log());
    imap.ok("LOGOUT");
    // The one error Dovecot logs: it tries to move messages from new/ to
    // cur/ (it takes only EACCES, not EROFS, as a read-only Maildir); the
    // messages stay where they are and are served all the same.
    let log = dv.log();
    for l in log.lines() {
        let known = l.contains("rename(")
            && l.contains("/new/")
            && l.ends_with("failed: Read-only file system");
        assert!(
            known || !(l.contains("Error:") || l.contains("Panic") || l.contains("Fatal")),
            "dovecot logged: {l}\n{log}"
        );
    }
}

#[test]
fn a_bundle_and_a_replica_mount_too_and_a_dead_vault_is_eio_not_a_hang() {
    let w = World::new();
    w.init();
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 2, 30, 31);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let d = digest(&src);

    // An offline bundle of the vault's repository, mounted as bundle:DIR.
    let bundle = w.path("bundle");
    w.ok(&[
        "export",
        "--repo",
        &vault.url,
        "--key",
        &w.key("replica"),
        "--to",
        bundle.to_str().unwrap(),
    ]);
    let mp = w.path("mnt-bundle");
    let mut m = mount(&w, &format!("bundle:{}", bundle.display()), &mp, &[]);
    assert_eq!(
        digest(&only_entry(&mp.join("by-client")).join("latest/mail")),
        d
    );
    m.signal("-TERM");
    assert!(m.wait(30).success(), "{}", m.stderr());

    // A replica directory (pulled from the vault) mounts too.
    let replica = w.path("replica");
    w.ok(&[
        "replica",
        "pull",
        "--from",
        &vault.url,
        "--key",
        &w.key("replica"),
        "--into",
        replica.to_str().unwrap(),
    ]);
    let mp = w.path("mnt-replica");
    let mut m = mount(&w, replica.to_str().unwrap(), &mp, &[]);
    assert_eq!(
        digest(&only_entry(&mp.join("by-client")).join("latest/mail")),
        d
    );
    m.signal("-TERM");
    assert!(m.wait(30).success(), "{}", m.stderr());

    // Through the vault, which then dies: listings already read still
    // answer; a file not read yet is EIO within the client's retries, and
    // the mount stays usable and unmounts cleanly.
    let mp = w.path("mnt-vault");
    let mut m = mount(&w, &vault.url, &mp, &["--cache-mib", "0"]);
    let root = only_entry(&mp.join("by-client")).join("latest/mail");
    let all = files(&root);
    assert_eq!(all.len(), files(&src).len());
    let _ = vault.stop();
    let t = Instant::now();
    let e = std::fs::read(&all[0]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EIO), "{e}");
    assert!(
        t.elapsed() < Duration::from_secs(30),
        "a dead vault took {:?} to fail a read",
        t.elapsed()
    );
    assert!(mp.join("snapshots").is_dir());
    m.signal("-TERM");
    let st = m.wait(30);
    // A network failure is not damage: exit 0, the failure on stderr.
    assert!(st.success(), "{st}: {}", m.stderr());
    assert!(m.stderr().contains("read failed"), "{}", m.stderr());
}

#[test]
fn a_damaged_disk_cache_costs_a_refetch_never_wrong_bytes() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 2, 20, 41);
    w.backup(&[&src]);
    let d = digest(&src);
    // Only a remote store's blobs are cached on disk (a vault here).
    let vault = w.start_vault(&[]);
    let cache = w.path("blob-cache");
    let args = ["--cache-dir", cache.to_str().unwrap()];
    let mp = w.path("mnt");
    let mut m = mount(&w, &vault.url, &mp, &args);
    assert_eq!(digest(&only_entry(&mp.join("snapshots")).join("mail")), d);
    m.signal("-TERM");
    assert!(m.wait(30).success());

    // Flip a byte in every cached blob (what someone with this disk could do).
    let cached = files(&cache);
    assert!(cached.len() > 10, "{} cache files", cached.len());
    for f in &cached {
        let mut b = std::fs::read(f).unwrap();
        let i = b.len() / 2;
        b[i] ^= 1;
        std::fs::write(f, b).unwrap();
    }
    let mut m = mount(&w, &vault.url, &mp, &args);
    assert_eq!(digest(&only_entry(&mp.join("snapshots")).join("mail")), d);
    m.signal("-TERM");
    let st = m.wait(30);
    // Not the repository's damage: exit 0; every blob fetched again.
    assert!(st.success(), "{st}: {}", m.stderr());
    assert!(
        m.stdout().contains(" 0 blob(s) from the disk cache"),
        "{}",
        m.stdout()
    );
}

/// Straight from an S3 bucket with Object Lock (the Ceph test server; in
/// CI a missing one fails, see `common::s3`).
#[test]
fn an_s3_bucket_mounts_too() {
    let Some(s3) = s3() else { return };
    let w = World::new();
    let url = s3.fresh_url("mount");
    let keys = w.path("keys").display().to_string();
    w.ok(&["init", &url, "--keys", &keys]);
    let state = w.path("vault-state").display().to_string();
    let vault = w.start_vault_on(&url, &["--state", &state]);
    let src = w.path("mail");
    make_maildir(&src, 2, 30, 51);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let d = digest(&src);
    drop(vault);
    let mp = w.path("mnt");
    let mut m = mount(&w, &url, &mp, &[]);
    assert_eq!(
        digest(&only_entry(&mp.join("by-client")).join("latest/mail")),
        d
    );
    m.signal("-TERM");
    let st = m.wait(30);
    assert!(st.success(), "{st}: {}", m.stderr());
}

/// `latest` in the mount is the newest snapshot not flagged as anomalous,
/// as for `restore latest`: a wiped spool's backup (exit 5) is shown by
/// time but not chosen as `latest`.
#[test]
fn latest_in_the_mount_skips_a_flagged_snapshot() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_source(&src, 13);
    let good = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let d = digest(&src);
    std::thread::sleep(Duration::from_millis(1100));
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            std::fs::remove_dir_all(&p).unwrap();
        } else {
            std::fs::remove_file(&p).unwrap();
        }
    }
    let repo = w.repo();
    let key = w.key("client");
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &key,
        src.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let mp = w.path("mnt");
    let mut m = mount(&w, &repo, &mp, &[]);
    let snaps = std::fs::read_dir(mp.join("snapshots")).unwrap().count();
    assert_eq!(snaps, 2, "the flagged snapshot is still shown");
    let client = only_entry(&mp.join("by-client"));
    let target = std::fs::read_link(client.join("latest")).unwrap();
    assert!(
        target.to_string_lossy().ends_with(&good[..8]),
        "latest -> {target:?}, not the healthy {}",
        &good[..8]
    );
    assert_eq!(digest(&client.join("latest/mail")), d);
    m.signal("-TERM");
    assert!(m.wait(30).success(), "{}", m.stderr());
}

/// Waits (at most 30 s) until `by-client/<the one client>/latest` points
/// to snapshot `id`.
fn wait_for_latest(m: &Mounted, id: &str) {
    let mp = &m.dir;
    let t = Instant::now();
    loop {
        let target = std::fs::read_dir(mp.join("by-client"))
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| std::fs::read_link(e.unwrap().path().join("latest")).ok());
        if target
            .as_ref()
            .is_some_and(|t| t.to_string_lossy().ends_with(&id[..8]))
        {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "latest still -> {target:?}, not {}: {}",
            &id[..8],
            m.stderr()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ino(p: &Path) -> u64 {
    std::os::unix::fs::MetadataExt::ino(&std::fs::symlink_metadata(p).unwrap())
}

/// A snapshot made after mounting shows up without a remount (snapshots/,
/// by-client/…/latest and by time), from a directory and through a vault
/// (whose log is read again); entries already there keep their inodes and
/// their bytes.
#[test]
fn new_snapshots_appear_without_remount_with_stable_inodes() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 2, 20, 61);
    let first = backup_via(&w, &vault.url, &w.key("client"), &src);
    let d1 = digest(&src);

    for (n, repo) in [w.repo(), vault.url.clone()].into_iter().enumerate() {
        let mp = w.path(&format!("mnt-{n}"));
        let mut m = mount(&w, &repo, &mp, &["--refresh", "1"]);
        let client = only_entry(&mp.join("by-client"));
        let latest = std::fs::read_link(client.join("latest")).unwrap();
        let old_snap = mp.join("snapshots").join(latest.file_name().unwrap());
        let old_file = files(&old_snap.join("mail"))[0].clone();
        let before = [
            ino(&client),
            ino(&old_snap),
            ino(&old_file),
            ino(&only_entry(&mp.join("by-host"))),
        ];
        let old_link = std::fs::read_dir(&client)
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| !p.ends_with("latest"))
            .unwrap();
        let old_link_ino = ino(&old_link);

        // A new snapshot (a new message, one deleted), made while mounted.
        std::thread::sleep(Duration::from_millis(1100));
        let gone = files(&src)[0].clone();
        std::fs::remove_file(&gone).unwrap();
        let newest_src = src.join(format!("user000/cur/new-{n}:2,S"));
        let body = format!("From: a@example.net\nSubject: new {n}\n\nnew message {n}\n");
        std::fs::write(&newest_src, &body).unwrap();
        let second = backup_via(&w, &vault.url, &w.key("client"), &src);
        let d2 = digest(&src);
        wait_for_latest(&m, &second);

        assert_eq!(
            std::fs::read_dir(mp.join("snapshots")).unwrap().count(),
            2 + n,
            "every snapshot listed"
        );
        assert_eq!(digest(&client.join("latest/mail")), d2);
        assert_eq!(
            std::fs::read(client.join(format!("latest/mail/user000/cur/new-{n}:2,S"))).unwrap(),
            body.as_bytes()
        );
        // What was there keeps its inodes and its bytes.
        let after = [
            ino(&client),
            ino(&old_snap),
            ino(&old_file),
            ino(&only_entry(&mp.join("by-host"))),
        ];
        assert_eq!(before, after, "inodes of existing entries changed");
        assert_eq!(ino(&old_link), old_link_ino);
        if n == 0 {
            assert_eq!(digest(&old_snap.join("mail")), d1);
        }
        assert_eq!(
            std::fs::read_dir(&client).unwrap().count(),
            3 + n,
            "latest and one link per snapshot"
        );
        m.signal("-TERM");
        let st = m.wait(30);
        assert!(st.success(), "{st}: {}", m.stderr());
    }
    let _ = first;
}

/// A vault that accepts connections but never answers (stopped): a read
/// of what is not cached fails with EIO after --read-timeout, not after
/// the client's request timeout and retries; listings read before still
/// answer, and the mount unmounts at once.
#[test]
fn a_vault_that_stops_answering_is_eio_within_the_read_timeout() {
    let w = World::new();
    w.init();
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 2, 30, 71);
    // Larger than what a miss reads ahead: some of it is never fetched
    // before the vault stops.
    std::fs::write(src.join("big.bin"), Rng(71).bytes(8 << 20)).unwrap();
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let mp = w.path("mnt");
    let mut m = mount(
        &w,
        &vault.url,
        &mp,
        &["--cache-mib", "0", "--read-timeout", "3", "--refresh", "0"],
    );
    let root = only_entry(&mp.join("by-client")).join("latest/mail");
    let all = files(&root);
    assert!(all.len() > 50);
    let pid = vault.child.id().to_string();
    let stop = |sig: &str| {
        assert!(
            Command::new("kill")
                .args([sig, &pid])
                .status()
                .unwrap()
                .success()
        );
    };
    stop("-STOP");
    // A reader on another thread, so that a hang fails the test instead
    // of holding it.
    let (tx, rx) = std::sync::mpsc::channel();
    let victim = root.join("big.bin");
    let t = Instant::now();
    std::thread::spawn(move || {
        let _ = tx.send(std::fs::read(victim).map_err(|e| e.raw_os_error()));
    });
    let r = rx.recv_timeout(Duration::from_secs(30));
    let took = t.elapsed();
    stop("-CONT");
    let r = r.expect("a read hung on a vault that does not answer");
    assert_eq!(r.err(), Some(Some(EIO)), "{:?}", m.stderr());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(15),
        "failed after {took:?}"
    );
    assert!(m.stderr().contains("did not answer"), "{}", m.stderr());
    assert!(mp.join("snapshots").is_dir());
    m.signal("-TERM");
    let st = m.wait(30);
    assert!(st.success(), "a network failure is not damage: {st}");
    let _ = vault.stop();
}
