//! Test helpers: run the real binary, make data, compare trees.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const PASS: &str = "correct horse battery";

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_holdfast"))
}

/// A scratch world: a temp dir with a repository and keys in it.
pub struct World {
    pub dir: tempfile::TempDir,
}

impl World {
    pub fn new() -> World {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    pub fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    pub fn repo(&self) -> String {
        self.path("repo").display().to_string()
    }
    pub fn key(&self, role: &str) -> String {
        self.path("keys")
            .join(format!("{role}.key"))
            .display()
            .to_string()
    }
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("HOLDFAST_PASSPHRASE", PASS)
            .env("HOLDFAST_CACHE_DIR", self.path("cache"))
            .env_remove("XDG_CACHE_HOME");
        with_s3_env(&mut c);
        c
    }
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    /// Runs and insists on success.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "holdfast {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8(o.stdout).unwrap()
    }
    pub fn init(&self) {
        let keys = self.path("keys").display().to_string();
        self.ok(&["init", &self.repo(), "--keys", &keys]);
    }
    /// `init` with extra options (retention, quorum, delays...).
    pub fn init_with(&self, extra: &[&str]) {
        let (repo, keys) = (self.repo(), self.path("keys").display().to_string());
        let mut args = vec!["init", repo.as_str(), "--keys", keys.as_str()];
        args.extend_from_slice(extra);
        self.ok(&args);
    }
    /// The quorum's open and past proposals at `url`, as `proposals --json`
    /// shows them to the auditor.
    pub fn proposals(&self, url: &str) -> Vec<serde_json::Value> {
        serde_json::from_str(&self.ok(&[
            "proposals",
            "--repo",
            url,
            "--key",
            &self.key("auditor"),
            "--json",
        ]))
        .unwrap()
    }
    pub fn backup(&self, paths: &[&Path]) -> serde_json::Value {
        let repo = self.repo();
        let key = self.key("client");
        let mut args = vec!["backup", "--repo", &repo, "--key", &key, "--json"];
        let ps: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        args.extend(ps.iter().map(|s| s.as_str()));
        let out = self.ok(&args);
        serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
    }
    pub fn restore(&self, snap: &str, target: &Path) {
        let (repo, key) = (self.repo(), self.key("restore"));
        let t = target.display().to_string();
        self.ok(&["restore", "--repo", &repo, "--key", &key, snap, &t]);
    }
    pub fn snapshots(&self) -> Vec<serde_json::Value> {
        let (repo, key) = (self.repo(), self.key("restore"));
        let out = self.ok(&["snapshots", "--repo", &repo, "--key", &key, "--json"]);
        serde_json::from_str::<Vec<serde_json::Value>>(&out).unwrap()
    }
}

/// xorshift64*: deterministic bytes for test data.
pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        const WORDS: &[&str] = &[
            "mail", "meeting", "invoice", "the", "attached", "please", "regards", "server",
            "backup", "tomorrow", "project", "report", "quarter", "thanks", "hello",
        ];
        let mut v = Vec::with_capacity(n + 16);
        while v.len() < n {
            v.extend_from_slice(WORDS[self.below(WORDS.len() as u64) as usize].as_bytes());
            v.push(if self.below(12) == 0 { b'\n' } else { b' ' });
        }
        v.truncate(n);
        v
    }
}

/// A Maildir tree shaped like a small mail provider's: users with cur/new/tmp
/// and folders, small text messages, some attachments, and a shared pool of
/// popular attachments so cross-user dedup matters. Deterministic by seed.
pub fn make_maildir(root: &Path, users: usize, msgs_per_user: usize, seed: u64) {
    let mut r = Rng(seed | 1);
    let pool: Vec<Vec<u8>> = (0..6)
        .map(|_| {
            let n = 40_000 + r.below(60_000) as usize;
            r.bytes(n)
        })
        .collect();
    for u in 0..users {
        let home = root.join(format!("user{u:03}"));
        for f in ["", ".Sent", ".Archive"] {
            for sub in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(home.join(f).join(sub)).unwrap();
            }
        }
        for m in 0..msgs_per_user {
            let folder = ["", ".Sent", ".Archive"][r.below(3) as usize];
            let t = 1_600_000_000 + r.below(100_000_000);
            let name = format!("{t}.M{m}P{u}.mx1,S={}:2,S", r.below(99999));
            let mut msg = format!(
                "From: a{}@example.org\nTo: user{u}@example.org\nSubject: msg {m}\n\n",
                r.below(1000)
            )
            .into_bytes();
            let n = 500 + r.below(6000) as usize;
            msg.extend(r.text(n));
            match r.below(10) {
                0 => msg.extend(&pool[r.below(6) as usize]),
                1 => {
                    let n = 10_000 + r.below(30_000) as usize;
                    msg.extend(r.bytes(n))
                }
                _ => {}
            }
            let p = home.join(folder).join("cur").join(name);
            std::fs::write(&p, &msg).unwrap();
            let mt = filetime::FileTime::from_unix_time(t as i64, (r.below(1_000_000_000)) as u32);
            filetime::set_file_mtime(&p, mt).unwrap();
        }
    }
}

/// One day of mail: deliveries into new/, flag renames, a deletion.
pub fn mail_day(root: &Path, seed: u64) {
    let mut r = Rng(seed | 1);
    let mut users: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    users.sort();
    for (i, u) in users.iter().enumerate() {
        for k in 0..3 {
            let p = u.join("new").join(format!("day{seed}.{i}.{k}.mx1"));
            let mut msg = b"From: x@example.org\nSubject: new\n\n".to_vec();
            msg.extend(r.text(2000));
            std::fs::write(p, msg).unwrap();
        }
        let mut cur: Vec<_> = std::fs::read_dir(u.join("cur"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        cur.sort();
        if let Some(f) = cur.first() {
            let mut n = f.clone().into_os_string();
            n.push("R");
            std::fs::rename(f, n).unwrap();
        }
        if cur.len() > 2 && i % 3 == 0 {
            std::fs::remove_file(&cur[1]).unwrap();
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Item {
    File {
        mode: u32,
        mtime: (i64, i64),
        data_hash: [u8; 32],
        size: u64,
    },
    Dir {
        mode: u32,
        mtime: (i64, i64),
    },
    Link {
        target: Vec<u8>,
        mtime: (i64, i64),
    },
}

/// Everything about a tree that a restore must reproduce: path, type,
/// permission bits, mtime to the nanosecond, bytes, link targets.
pub fn digest(root: &Path) -> BTreeMap<Vec<u8>, Item> {
    let mut out = BTreeMap::new();
    fn rec(base: &Path, p: &Path, out: &mut BTreeMap<Vec<u8>, Item>) {
        let mut entries: Vec<_> = std::fs::read_dir(p)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        entries.sort();
        for e in entries {
            let md = std::fs::symlink_metadata(&e).unwrap();
            let rel = e
                .strip_prefix(base)
                .unwrap()
                .as_os_str()
                .as_bytes()
                .to_vec();
            let mtime = (md.mtime(), md.mtime_nsec());
            let item = if md.file_type().is_symlink() {
                Item::Link {
                    target: std::fs::read_link(&e)
                        .unwrap()
                        .as_os_str()
                        .as_bytes()
                        .to_vec(),
                    mtime,
                }
            } else if md.is_dir() {
                rec(base, &e, out);
                Item::Dir {
                    mode: md.permissions().mode() & 0o7777,
                    mtime,
                }
            } else {
                let data = std::fs::read(&e).unwrap();
                Item::File {
                    mode: md.permissions().mode() & 0o7777,
                    mtime,
                    data_hash: *blake3::hash(&data).as_bytes(),
                    size: data.len() as u64,
                }
            };
            out.insert(rel, item);
        }
    }
    rec(root, root, &mut out);
    out
}

pub fn name(s: &[u8]) -> &OsStr {
    OsStr::from_bytes(s)
}

/// Every file under `dir`, recursively.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    fn rec(p: &Path, v: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(p).unwrap() {
            let e = e.unwrap().path();
            if e.is_dir() { rec(&e, v) } else { v.push(e) }
        }
    }
    rec(dir, &mut v);
    v.sort();
    v
}

/// A real `holdfast vault serve` on 127.0.0.1 with a free port; stopped
/// with SIGTERM when dropped.
pub struct VaultProc {
    pub child: std::process::Child,
    pub url: String,
    pub stderr_path: PathBuf,
}

impl World {
    pub fn start_vault(&self, extra: &[&str]) -> VaultProc {
        self.start_vault_on(&self.repo(), extra)
    }

    /// Starts a vault over `repo` (a directory or s3://…).
    pub fn start_vault_on(&self, repo: &str, extra: &[&str]) -> VaultProc {
        self.start_vault_env(repo, extra, &[])
    }

    /// A vault with extra environment (e.g. libfaketime for a jumped clock).
    pub fn start_vault_env(&self, repo: &str, extra: &[&str], env: &[(&str, &str)]) -> VaultProc {
        self.start_vault_key(repo, &self.key("vault"), extra, env)
    }

    /// A vault serving with the key file `key` (e.g. a rotated vault key).
    pub fn start_vault_key(
        &self,
        repo: &str,
        key: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> VaultProc {
        let stderr_path = self.path(&format!(
            "vault-{}.err",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut c = Command::new(bin());
        c.args([
            "vault",
            "serve",
            "--repo",
            repo,
            "--key",
            key,
            "--listen",
            "127.0.0.1:0",
        ])
        .args(extra)
        .env("HOLDFAST_PASSPHRASE", PASS)
        .envs(env.iter().copied());
        with_s3_env(&mut c);
        c.stdout(std::process::Stdio::piped())
            .stderr(std::fs::File::create(&stderr_path).unwrap());
        let mut child = c.spawn().unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("https://"))
            .unwrap_or_else(|| {
                panic!(
                    "vault did not start: {line} {}",
                    std::fs::read_to_string(&stderr_path).unwrap_or_default()
                )
            })
            .to_string();
        // Keep draining stdout so the vault never blocks on it.
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::Read::read_to_end(&mut out, &mut sink);
        });
        VaultProc {
            child,
            url,
            stderr_path,
        }
    }
}

impl VaultProc {
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        self.child.wait().unwrap()
    }
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }
}

impl Drop for VaultProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ------------------------------------------------------------------ S3

/// A real S3 server with Object Lock: a throwaway single-node Ceph cluster
/// (RADOS Gateway) started once per test binary by `tests/ceph/up.sh`, or
/// the server `HOLDFAST_TEST_S3` names. With neither Ceph installed nor
/// that variable, S3 tests are skipped with a message, unless
/// `HOLDFAST_REQUIRE_S3` is set (as `.ci/run` does): then they fail.
pub struct S3Env {
    pub endpoint: String,
    dir: Option<PathBuf>,
}

pub const S3_KEY: &str = "testing";
pub const S3_SECRET: &str = "testingsecret";

static CEPH: std::sync::OnceLock<Option<S3Env>> = std::sync::OnceLock::new();
static BUCKETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn s3() -> Option<&'static S3Env> {
    CEPH.get_or_init(|| {
        if let Ok(ep) = std::env::var("HOLDFAST_TEST_S3") {
            return Some(S3Env {
                endpoint: ep,
                dir: None,
            });
        }
        let have = Command::new("sh")
            .args(["-c", "command -v ceph-mon && command -v radosgw"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !have {
            assert!(
                std::env::var_os("HOLDFAST_REQUIRE_S3").is_none(),
                "HOLDFAST_REQUIRE_S3 is set but Ceph is not installed \
                 (apt-get install ceph-mon ceph-osd radosgw ceph-common uuid-runtime curl)"
            );
            eprintln!("SKIPPED: S3 tests need Ceph (ceph-mon, radosgw) or HOLDFAST_TEST_S3");
            return None;
        }
        let dir = std::env::temp_dir().join(format!("holdfast-ceph-{}", std::process::id()));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph/up.sh");
        let (mon, rgw) = (free_port(), free_port());
        let t = std::time::Instant::now();
        let out = Command::new("bash")
            .arg(&script)
            .env("D", &dir)
            .env("MON_PORT", mon.to_string())
            .env("RGW_PORT", rgw.to_string())
            .env("WATCH_PID", std::process::id().to_string())
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "Ceph did not start: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("ceph cluster up in {:.1} s", t.elapsed().as_secs_f64());
        Some(S3Env {
            endpoint: format!("http://127.0.0.1:{rgw}"),
            dir: Some(dir),
        })
    })
    .as_ref()
}

impl S3Env {
    /// A fresh bucket address for one test: s3://BUCKET/repo.
    pub fn fresh_url(&self, tag: &str) -> String {
        let n = BUCKETS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        format!("s3://hf-{tag}-{}-{n}/repo", std::process::id())
    }
    pub fn settings(&self) -> holdfast_store::S3Settings {
        holdfast_store::S3Settings {
            endpoint: Some(self.endpoint.clone()),
            region: "us-east-1".into(),
            access_key: S3_KEY.into(),
            secret_key: zeroize::Zeroizing::new(S3_SECRET.into()),
            session_token: None,
        }
    }
    pub fn cluster_dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }
}

/// Sets the AWS variables on a command when a test S3 server is up.
pub fn with_s3_env(c: &mut Command) {
    if let Some(Some(s)) = CEPH.get() {
        c.env("AWS_ENDPOINT_URL", &s.endpoint)
            .env("AWS_ACCESS_KEY_ID", S3_KEY)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .env("AWS_REGION", "us-east-1");
    }
}

// ------------------------------------------------------- vault helpers

/// Loads a key file with the test passphrase.
pub fn load_key(path: &str) -> holdfast_repo::keys::Key {
    holdfast_repo::keys::Key::load(Path::new(path), || {
        Ok(zeroize::Zeroizing::new(PASS.to_string()))
    })
    .unwrap()
}

/// A raw client for crafted requests, as the holder of `key`.
pub fn raw(w: &World, url: &str, key: &str) -> holdfast_store::VaultBackend {
    let k = load_key(key);
    holdfast_store::VaultBackend::connect(
        url,
        k.identity().unwrap().clone(),
        k.config_id,
        &w.path("raw-state").join(key.replace('/', "_")),
    )
    .unwrap()
}

/// Backs `src` up to `url` with `key`; returns the backup's JSON report.
pub fn backup_json(w: &World, url: &str, key: &str, src: &Path) -> serde_json::Value {
    let out = w.ok(&[
        "backup",
        "--repo",
        url,
        "--key",
        key,
        "--json",
        src.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

/// Backs `src` up to `url` with `key`; returns the snapshot id.
pub fn backup_via(w: &World, url: &str, key: &str, src: &Path) -> String {
    backup_json(w, url, key, src)["snapshot"]
        .as_str()
        .unwrap()
        .to_string()
}

/// An identity record by which the admin of `admin_key` tries to add an
/// admin of its own (which must never be accepted).
pub fn rogue_admin_record(admin_key: &str, name: &str) -> holdfast_core::format::IdentityRecord {
    let admin = load_key(admin_key);
    let rogue = holdfast_core::crypto::Identity::generate().unwrap();
    holdfast_core::format::IdentityRecord::new(
        admin.config_id,
        holdfast_core::format::Member {
            role: holdfast_core::format::Role::Admin,
            name: name.into(),
            public: rogue.public(),
        },
        admin.identity().unwrap(),
        holdfast_repo::now_ns(),
    )
}

/// Restores `snap` from `repo` with the restore key into `target`.
pub fn restore_via(w: &World, repo: &str, snap: &str, target: &Path) {
    w.ok(&[
        "restore",
        "--repo",
        repo,
        "--key",
        &w.key("restore"),
        snap,
        target.to_str().unwrap(),
    ]);
}

// ------------------------------------------------- raw connections

/// The vault's socket address from its `https://HOST:PORT` URL.
pub fn vault_addr(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("https://")
        .trim_end_matches('/')
        .parse()
        .unwrap()
}

/// A TCP connection to `to` from the local address `src` (any of
/// 127.0.0.0/8 on loopback: another "host" for the vault's per-address
/// accounting).
pub fn tcp_from(
    src: std::net::IpAddr,
    to: std::net::SocketAddr,
) -> std::io::Result<std::net::TcpStream> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4()?;
        s.bind(std::net::SocketAddr::new(src, 0))?;
        let c = s.connect(to).await?;
        let c = c.into_std()?;
        c.set_nonblocking(false)?;
        Ok(c)
    })
}

/// Accepts any server certificate: the attacks need TLS to reach the vault,
/// not to trust it.
#[derive(Debug)]
struct AnyCert(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn verify_tls13_signature(
        &self,
        _: &[u8],
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Ok(rustls::client::danger::HandshakeSignatureValid::assertion())
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub type RawTls = rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>;

/// TLS to the vault from `src`, handshake completed.
pub fn tls_from(src: std::net::IpAddr, to: std::net::SocketAddr) -> std::io::Result<RawTls> {
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let name = rustls::pki_types::ServerName::try_from("holdfast-vault").unwrap();
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(cfg), name)
        .map_err(std::io::Error::other)?;
    let tcp = tcp_from(src, to)?;
    tcp.set_read_timeout(Some(std::time::Duration::from_secs(15)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// Reads one HTTP/1.1 response (status, body) from `s`.
pub fn read_response(s: &mut impl std::io::Read) -> std::io::Result<(u16, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line: {head}")))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)?;
    Ok((status, body))
}

/// The vault process's peak resident set (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Children of `pid` as (pid, state letter), from /proc/*/stat.
pub fn children_of(pid: u32) -> Vec<(u32, char)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …; comm may hold spaces and parentheses.
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<u32>().ok()) == Some(pid) {
            out.push((child, state));
        }
    }
    out
}

/// Unmounts on drop (tests that mount a small tmpfs for a full disk).
pub struct Mount(pub PathBuf);
impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. "256k") at `at`; None where this machine
/// cannot (not root).
pub fn small_tmpfs(at: &Path, size: &str) -> Option<Mount> {
    std::fs::create_dir_all(at).unwrap();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(at)
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| Mount(at.to_path_buf()))
}

/// Runs holdfast under a python3 wrapper that waits with wait4 and prints
/// the child's ru_maxrss (KiB) on stderr.
pub fn measured(w: &World, args: &[&str]) -> (Output, u64) {
    const PY: &str = "import os,sys\n\
pid=os.fork()\n\
if pid==0:\n    os.execv(sys.argv[1], sys.argv[1:])\n\
_,st,ru=os.wait4(pid,0)\n\
sys.stderr.write('\\nHF_MAXRSS_KIB=%d\\n' % ru.ru_maxrss)\n\
sys.exit(os.waitstatus_to_exitcode(st) & 255)\n";
    let inner = w.cmd(args);
    let mut c = Command::new("python3");
    c.arg("-c").arg(PY).arg(bin()).args(args);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    let o = c.output().expect("python3 runs");
    let err = String::from_utf8_lossy(&o.stderr);
    let kib = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("HF_MAXRSS_KIB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rusage from the wrapper: {err}"));
    (o, kib)
}

/// Holding the vault key (root on the vault host), signs a checkpoint over
/// `entries` and puts it in place of the vault's own.
pub fn sign_log(w: &World, entries: &[Vec<u8>]) {
    let vk = load_key(&w.key("vault"));
    let leaves: Vec<_> = entries
        .iter()
        .map(|e| holdfast_core::merkle::leaf_hash(e))
        .collect();
    let cp = holdfast_core::merkle::Checkpoint::sign(
        vk.config_id.0,
        entries.len() as u64,
        holdfast_core::merkle::root(&leaves),
        holdfast_repo::now_ns(),
        vk.identity().unwrap(),
    );
    std::fs::write(w.path("repo/vault/checkpoint"), cp.encode()).unwrap();
}

/// `vault serve` on the test repository, run to its end (for a vault that
/// must refuse to start).
pub fn serve_once(w: &World) -> Output {
    w.run(&[
        "vault",
        "serve",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("vault"),
        "--listen",
        "127.0.0.1:0",
    ])
}

/// `init` options that keep snapshots only `keep_within_secs` seconds: no
/// daily, weekly, monthly or yearly slots and no grace for packs, so that
/// reclaims can be watched within a test.
pub fn short_retention(keep_within_secs: &str) -> Vec<&str> {
    vec![
        "--keep-within-secs",
        keep_within_secs,
        "--keep-daily",
        "0",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
        "--keep-yearly",
        "0",
        "--grace-secs",
        "0",
    ]
}

/// Polls `f` every 200 ms for up to 20 s; panics naming `what` if it never
/// holds.
pub fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..100 {
        if f() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}
