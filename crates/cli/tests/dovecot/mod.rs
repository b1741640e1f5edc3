//! A real Dovecot for the mail tests: `dovecot -F` with its own config in
//! a temp dir, IMAP on a free loopback port (no TLS, a passwd-file
//! userdb, Maildir++ under `mail/USER`), `dovecot-lda` for deliveries, and
//! a tiny IMAP client over a plain TcpStream.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const PASSWORD: &str = "pw-for-tests";

pub fn installed() -> bool {
    Path::new("/usr/sbin/dovecot").exists() && Path::new("/usr/lib/dovecot/dovecot-lda").exists()
}

/// True when Dovecot is missing and the test should be skipped; in CI
/// (which installs it, and sets HOLDFAST_REQUIRE_S3) a missing Dovecot is
/// a failure instead.
pub fn skip() -> bool {
    if installed() {
        return false;
    }
    assert!(
        std::env::var_os("HOLDFAST_REQUIRE_S3").is_none(),
        "Dovecot is not installed (apt-get install dovecot-imapd)"
    );
    eprintln!("SKIPPED: the Dovecot tests need dovecot-imapd installed");
    true
}

pub struct Dovecot {
    pub dir: PathBuf,
    pub port: u16,
    child: Child,
    /// The uid/gid mail files belong to.
    pub uid: u32,
    pub gid: u32,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Dovecot {
    /// The spool: one Maildir per user under it.
    pub fn spool(&self) -> PathBuf {
        self.dir.join("mail")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("dovecot.log")).unwrap_or_default()
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.join("dovecot.conf")
    }

    /// Starts Dovecot for `users` in `dir` (made world-traversable: the
    /// mail user must reach its files).
    pub fn start(dir: &Path, users: &[&str]) -> Dovecot {
        std::fs::create_dir_all(dir.join("run")).unwrap();
        std::fs::create_dir_all(dir.join("mail")).unwrap();
        let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
        let me = std::env::var("USER").unwrap_or_else(|_| "root".into());
        // As root: mail as nobody, Dovecot's own users for its processes.
        // Else everything runs as the current user.
        let (uid, gid, internal, login) = if root {
            (65534, 65534, "dovecot".to_string(), "dovenull".to_string())
        } else {
            let m = std::fs::metadata(dir).unwrap();
            (m.uid(), m.gid(), me.clone(), me.clone())
        };
        // Every parent must be traversable by the mail user.
        let mut p = dir.to_path_buf();
        loop {
            let _ = Command::new("chmod").arg("o+x").arg(&p).status();
            if !p.pop() || p.as_os_str().is_empty() || p == Path::new("/") {
                break;
            }
        }
        let port = free_port();
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
default_internal_user = {internal}
default_login_user = {login}
mail_location = maildir:{d}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/passwd
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {d}/passwd
  default_fields = uid={uid} gid={gid} home={d}/mail/%u
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
protocol lda {{
  postmaster_address = postmaster@example.org
}}
"#
        );
        std::fs::write(dir.join("dovecot.conf"), conf).unwrap();
        let passwd: String = users
            .iter()
            .map(|u| format!("{u}:{{PLAIN}}{PASSWORD}::::::\n"))
            .collect();
        std::fs::write(dir.join("passwd"), passwd).unwrap();
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
            dir: dir.to_path_buf(),
            port,
            child,
            uid,
            gid,
        };
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
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

    /// Gives `path` (recursively) to the mail user.
    pub fn chown(&self, path: &Path) {
        let s = Command::new("chown")
            .arg("-R")
            .arg(format!("{}:{}", self.uid, self.gid))
            .arg(path)
            .status()
            .unwrap();
        assert!(s.success());
    }

    /// Delivers `msg` to `user` (into `folder` when given) with dovecot-lda.
    pub fn deliver(&self, user: &str, folder: Option<&str>, msg: &[u8]) {
        let mut c = Command::new("/usr/lib/dovecot/dovecot-lda");
        c.arg("-c")
            .arg(self.conf())
            .args(["-d", user, "-f", "sender@example.org"]);
        if let Some(f) = folder {
            c.args(["-m", f]);
        }
        let mut ch = c
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        ch.stdin.take().unwrap().write_all(msg).unwrap();
        let o = ch.wait_with_output().unwrap();
        assert!(
            o.status.success(),
            "dovecot-lda failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }

    pub fn imap(&self, user: &str) -> Imap {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut i = Imap {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
            tag: 0,
        };
        let mut greet = String::new();
        i.r.read_line(&mut greet).unwrap();
        assert!(greet.starts_with("* OK"), "{greet}");
        i.ok(&format!("LOGIN {user} {PASSWORD}"));
        i
    }
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

pub struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    tag: u32,
}

/// One message as a mail client sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Seen {
    pub uid: u32,
    pub flags: BTreeSet<String>,
    pub internaldate: String,
    pub size: u64,
    pub message_id: String,
}

#[derive(Clone, Debug)]
pub struct FolderView {
    pub uidvalidity: u32,
    pub uidnext: u32,
    pub msgs: Vec<Seen>,
}

impl FolderView {
    pub fn by_message_id(&self) -> BTreeMap<String, Seen> {
        self.msgs
            .iter()
            .map(|m| (m.message_id.clone(), m.clone()))
            .collect()
    }
}

impl Imap {
    /// Sends a command; returns the untagged lines (literals inlined) and
    /// the tagged status line.
    pub fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.tag += 1;
        let tag = format!("t{}", self.tag);
        write!(self.w, "{tag} {c}\r\n").unwrap();
        self.w.flush().unwrap();
        let mut lines = Vec::new();
        loop {
            let mut line = self.read_line();
            // Inline literals: `{n}` at the end of a line, then n bytes.
            while let Some(n) = literal_len(&line) {
                let mut buf = vec![0u8; n];
                self.r.read_exact(&mut buf).unwrap();
                line.push_str(&String::from_utf8_lossy(&buf));
                line.push_str(&self.read_line());
            }
            if line.starts_with(&format!("{tag} ")) {
                return (lines, line);
            }
            lines.push(line);
        }
    }

    fn read_line(&mut self) -> String {
        let mut l = Vec::new();
        let n = self.r.read_until(b'\n', &mut l).unwrap();
        assert!(n > 0, "IMAP connection closed");
        String::from_utf8_lossy(&l)
            .trim_end_matches(['\r', '\n'])
            .to_string()
    }

    pub fn ok(&mut self, c: &str) -> Vec<String> {
        let (lines, status) = self.cmd(c);
        assert!(
            status.split_whitespace().nth(1) == Some("OK"),
            "IMAP {c}: {status}"
        );
        lines
    }

    /// SELECT, then `UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE)` and
    /// each message's Message-ID.
    pub fn folder(&mut self, name: &str) -> FolderView {
        let sel = self.ok(&format!("SELECT \"{name}\""));
        let code = |k: &str| -> u32 {
            sel.iter()
                .find_map(|l| {
                    let i = l.find(&format!("[{k} "))?;
                    l[i + k.len() + 2..].split(']').next()?.trim().parse().ok()
                })
                .unwrap_or(0)
        };
        let (uidvalidity, uidnext) = (code("UIDVALIDITY"), code("UIDNEXT"));
        let lines = self.ok(
            "UID FETCH 1:* (FLAGS INTERNALDATE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])",
        );
        let mut msgs = Vec::new();
        for l in lines.iter().filter(|l| l.contains(" FETCH (")) {
            let after = |k: &str| -> &str { l.split(k).nth(1).unwrap_or("") };
            let uid: u32 = after("UID ")
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let flags: BTreeSet<String> = after("FLAGS (")
                .split(')')
                .next()
                .unwrap()
                .split_whitespace()
                .filter(|f| *f != "\\Recent")
                .map(str::to_string)
                .collect();
            let internaldate = after("INTERNALDATE \"")
                .split('"')
                .next()
                .unwrap()
                .to_string();
            let size: u64 = after("RFC822.SIZE ")
                .split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap();
            let lower = l.to_ascii_lowercase();
            let message_id = lower
                .split("message-id:")
                .nth(1)
                .map(|v| {
                    v.trim()
                        .split(['\r', '\n', ')'])
                        .next()
                        .unwrap()
                        .trim()
                        .to_string()
                })
                .unwrap_or_default();
            msgs.push(Seen {
                uid,
                flags,
                internaldate,
                size,
                message_id,
            });
        }
        msgs.sort_by_key(|m| m.uid);
        FolderView {
            uidvalidity,
            uidnext,
            msgs,
        }
    }
}

fn literal_len(line: &str) -> Option<usize> {
    let l = line.strip_suffix('}')?;
    let i = l.rfind('{')?;
    l[i + 1..].parse().ok()
}
