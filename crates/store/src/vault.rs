//! The vault as a [`Backend`]: HTTPS to `holdfast vault serve`.
//!
//! * Every request is signed by the caller's identity (see
//!   `holdfast_core::request`).
//! * TLS: the vault presents a self-signed certificate for its Ed25519 key.
//!   The first request fetches the config; it must hash to the config id the
//!   caller's key file pins, and the certificate's key must be the config's
//!   vault key. From then on only that key is accepted. No CA is involved.
//! * The log: on connect and after each snapshot commit, the client asks for
//!   a consistency proof from the last checkpoint it verified (kept in its
//!   state directory) to the vault's current one. A rollback, a fork or a
//!   bad signature is [`StoreError::Tamper`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::format::Config;
use holdfast_core::id::{hex, parse_hex32};
use holdfast_core::merkle::{self, Checkpoint, Consistency};
use holdfast_core::request::Auth;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::{Backend, Kind, Result, StoreError, check_content, check_name};

#[derive(Debug)]
struct PinVerifier {
    expected: Arc<Mutex<Option<[u8; 32]>>>,
    seen: Arc<Mutex<Option<[u8; 32]>>>,
    provider: Arc<CryptoProvider>,
}

fn ed25519_key_of(cert: &[u8]) -> Option<[u8; 32]> {
    let (_, c) = x509_parser::parse_x509_certificate(cert).ok()?;
    let spki = c.public_key();
    if spki.algorithm.algorithm.to_id_string() != "1.3.101.112" {
        return None;
    }
    spki.subject_public_key.data.as_ref().try_into().ok()
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let key = ed25519_key_of(end_entity).ok_or(rustls::Error::InvalidCertificate(
            rustls::CertificateError::BadEncoding,
        ))?;
        *self.seen.lock().unwrap() = Some(key);
        match *self.expected.lock().unwrap() {
            Some(k) if k != key => Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            )),
            _ => Ok(ServerCertVerified::assertion()),
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not accepted".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

pub struct VaultBackend {
    base: String,
    identity: Identity,
    http: reqwest::blocking::Client,
    vault_key: [u8; 32],
    config_id: ObjectId,
    state_file: PathBuf,
    /// Set once the vault has answered: from then on a refused connection
    /// is a vault restarting, worth the retries; before, it is a vault that
    /// is not running (or a wrong address), said at once.
    answered: std::sync::atomic::AtomicBool,
}

/// Why a connection could not be made at all, when retrying cannot help:
/// nothing listens at the address, or the host name does not resolve.
fn unreachable(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = src {
        if let Some(io) = x.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Some(
                "connection refused: no vault is listening there (is `holdfast vault serve` running, on this address?)",
            );
        }
        let t = x.to_string();
        if t.contains("failed to lookup address") || t.contains("Name or service not known") {
            return Some("host name not found");
        }
        src = x.source();
    }
    None
}

fn transient(e: impl std::fmt::Display) -> StoreError {
    StoreError::Transient(e.to_string())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

impl VaultBackend {
    /// Connects, checks the config against `config_id` and pins the vault
    /// key, then checks the log against the checkpoint held in `state_dir`.
    pub fn connect(
        url: &str,
        identity: Identity,
        config_id: ObjectId,
        state_dir: &Path,
    ) -> Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let expected = Arc::new(Mutex::new(None));
        let seen = Arc::new(Mutex::new(None));
        let verifier = PinVerifier {
            expected: expected.clone(),
            seen: seen.clone(),
            provider: provider.clone(),
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(transient)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http = reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(4)
            // The vault closes a connection idle for 10 s; never reuse one
            // that may be closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(transient)?;
        let mut b = VaultBackend {
            base: url.trim_end_matches('/').to_string(),
            identity,
            http,
            vault_key: [0; 32],
            config_id,
            state_file: PathBuf::new(),
            answered: std::sync::atomic::AtomicBool::new(false),
        };
        let cfg = b.request("GET", "/v1/config", &[], None)?;
        if ObjectId::of(&cfg) != config_id {
            // A well-formed config that does not list this key: the wrong
            // vault (a usage error), not one that altered our config.
            let public = b.identity.public();
            if Config::decode(&cfg).is_ok_and(|c| !c.members.iter().any(|m| m.public == public)) {
                return Err(StoreError::Refused(format!(
                    "this key belongs to another repository (config id {}); the vault at {url} \
                     serves config {}",
                    config_id.short(),
                    ObjectId::of(&cfg).short()
                )));
            }
            return Err(StoreError::Tamper(format!(
                "the vault at {url} serves a config that is not the one this key belongs to"
            )));
        }
        let cfg =
            Config::decode(&cfg).map_err(|e| StoreError::Tamper(format!("vault config: {e}")))?;
        let vault_key = cfg.vault_key().ok_or_else(|| {
            StoreError::Refused("the repository config names no vault key".into())
        })?;
        if *seen.lock().unwrap() != Some(vault_key) {
            return Err(StoreError::Tamper(format!(
                "the server at {url} is not this repository's vault (TLS key mismatch)"
            )));
        }
        *expected.lock().unwrap() = Some(vault_key);
        b.vault_key = vault_key;
        crate::create_private_dir(state_dir).map_err(|e| StoreError::Io {
            path: state_dir.display().to_string(),
            source: e,
        })?;
        b.state_file = Self::checkpoint_path(state_dir, &config_id, &b.identity.public());
        b.sync_checkpoint()?;
        Ok(b)
    }

    /// Where the holder of `public` keeps the last checkpoint it verified of
    /// the repository `config_id`, in `state_dir`.
    pub fn checkpoint_path(state_dir: &Path, config_id: &ObjectId, public: &[u8; 32]) -> PathBuf {
        state_dir.join(format!(
            "{}-{}.checkpoint",
            &config_id.to_hex()[..16],
            hex(&public[..8])
        ))
    }

    /// The explicit way out when a held checkpoint is unreadable or no
    /// longer matches the vault: moves it aside (kept as evidence, renamed
    /// `…checkpoint.forgotten-UNIXTIME`), so the next contact is a first
    /// contact. Returns where it went, or None if there was none.
    pub fn forget_checkpoint(path: &Path) -> std::io::Result<Option<PathBuf>> {
        let secs = now_ns() / 1_000_000_000;
        let mut aside = path.as_os_str().to_os_string();
        aside.push(format!(".forgotten-{secs}"));
        let aside = PathBuf::from(aside);
        match std::fs::rename(path, &aside) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            crate::fsync_dir(dir)?;
        }
        Ok(Some(aside))
    }

    /// Reads a held checkpoint file: None if there is none; an error if it
    /// exists but cannot be read, decoded, or is not signed by `vault_key`
    /// for `config_id`. Never treated as a first contact.
    pub fn read_held_checkpoint(
        path: &Path,
        config_id: &ObjectId,
        vault_key: Option<&[u8; 32]>,
    ) -> Result<Option<Checkpoint>> {
        let bytes = match crate::read_regular(path, 64 << 10) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::bad_held(path, &e.to_string())),
        };
        let cp = Checkpoint::decode(&bytes).map_err(|e| Self::bad_held(path, &e.to_string()))?;
        if cp.config_id != config_id.0 {
            return Err(Self::bad_held(path, "it is of another repository"));
        }
        if let Some(k) = vault_key
            && cp.verify(k).is_err()
        {
            return Err(Self::bad_held(path, "its signature is not the vault's"));
        }
        Ok(Some(cp))
    }

    fn bad_held(path: &Path, why: &str) -> StoreError {
        StoreError::LocalState(format!(
            "the checkpoint this key last verified, {}, is unreadable ({why}). It is what \
             shows that the vault's log was not rolled back, so it is not replaced silently. \
             If this machine lost it (not the vault), run `holdfast checkpoint forget --key KEY` \
             (it is kept aside) and the next contact trusts the vault's current log as a first \
             contact does; compare that log with a replica's or the auditor's",
            path.display()
        ))
    }

    /// The checkpoint this client last verified: None before the first
    /// contact; an error ([`StoreError::LocalState`]) if the file is there
    /// but unreadable or damaged.
    pub fn held_checkpoint(&self) -> Result<Option<Checkpoint>> {
        Self::read_held_checkpoint(&self.state_file, &self.config_id, Some(&self.vault_key))
    }

    /// The vault's current checkpoint, signature checked.
    fn current_checkpoint(&self) -> Result<Checkpoint> {
        let b = self.request("GET", "/v1/log/checkpoint", &[], None)?;
        let cp =
            Checkpoint::decode(&b).map_err(|e| StoreError::Tamper(format!("checkpoint: {e}")))?;
        if cp.verify(&self.vault_key).is_err() || cp.config_id != self.config_id.0 {
            return Err(StoreError::Tamper(
                "the vault's checkpoint signature does not verify".into(),
            ));
        }
        Ok(cp)
    }

    /// Demands a consistency proof from the held checkpoint to the vault's
    /// current one; stores the new one when it extends the old.
    pub fn sync_checkpoint(&self) -> Result<Checkpoint> {
        let held = self.held_checkpoint()?;
        let from = held.as_ref().map(|c| c.size).unwrap_or(0);
        let r = match self.request("GET", &format!("/v1/log/proof?from={from}"), &[], None) {
            Ok(r) => r,
            // No proof from the size this client holds: a log now shorter
            // than it was is a rollback, whatever the refusal says.
            Err(StoreError::Refused(m)) if from > 0 => {
                let now = self.current_checkpoint()?;
                if now.size < from {
                    return Err(StoreError::Tamper(format!(
                        "the vault's log went back from {from} to {} entries: rolled back",
                        now.size
                    )));
                }
                return Err(StoreError::Refused(m));
            }
            Err(e) => return Err(e),
        };
        let j: serde_json::Value = serde_json::from_slice(&r).map_err(transient)?;
        let cp_bytes = j["checkpoint"]
            .as_str()
            .and_then(|s| holdfast_core::id::parse_hex(s).ok())
            .ok_or_else(|| StoreError::Tamper("malformed checkpoint from the vault".into()))?;
        let cp = Checkpoint::decode(&cp_bytes)
            .map_err(|e| StoreError::Tamper(format!("checkpoint: {e}")))?;
        if cp.verify(&self.vault_key).is_err() || cp.config_id != self.config_id.0 {
            return Err(StoreError::Tamper(
                "the vault's checkpoint signature does not verify".into(),
            ));
        }
        let proof: Vec<merkle::Hash> = j["proof"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|h| h.as_str().and_then(|s| parse_hex32(s).ok()))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(held) = &held {
            match merkle::check_extends(held, &cp, &proof) {
                Consistency::Extends => {}
                Consistency::Rollback { held, shown } => {
                    return Err(StoreError::Tamper(format!(
                        "the vault's log went back from {held} to {shown} entries: rolled back"
                    )));
                }
                Consistency::Fork => {
                    return Err(StoreError::Tamper(format!(
                        "the vault's log of {} entries does not extend the one of {} this client verified: history was rewritten",
                        cp.size, held.size
                    )));
                }
            }
        }
        // Crash-safe (temp, fsync, rename, directory fsync) and private.
        crate::write_private(&self.state_file, &cp.encode()).map_err(|e| StoreError::Io {
            path: self.state_file.display().to_string(),
            source: e,
        })?;
        Ok(cp)
    }

    /// Log entries `[from, to)` from the vault, fetched in pages of 10 000.
    /// The caller checks them against a verified checkpoint.
    pub fn log_entries(&self, from: usize, to: u64) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        while ((from + out.len()) as u64) < to {
            let start = from + out.len();
            let raw = self.request(
                "GET",
                &format!("/v1/log/entries?start={start}&count=10000"),
                &[],
                None,
            )?;
            let (chunk, torn) = holdfast_core::vaultlog::split_log(&raw);
            if chunk.is_empty() || torn != 0 {
                return Err(StoreError::Tamper(
                    "the vault sent a malformed log page".into(),
                ));
            }
            out.extend(chunk.into_iter().map(|e| e.to_vec()));
        }
        out.truncate((to as usize).saturating_sub(from));
        Ok(out)
    }

    /// One signed request; retries rate limits and transient failures.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>> {
        let mut delay = Duration::from_millis(100);
        for attempt in 0.. {
            match self.try_request(method, path, body, range) {
                Err(e) if e.is_transient() && attempt < 6 => {
                    std::thread::sleep(delay);
                    delay *= 2;
                }
                r => return r,
            }
        }
        unreachable!()
    }

    /// Sends one request with the given signature headers as they are (no
    /// retry) and returns the HTTP status and body: for tools and tests that
    /// must see exactly what the vault answers to a crafted request.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        auth: &Auth,
    ) -> Result<(u16, Vec<u8>)> {
        self.send_with(method, path, body, auth, &[])
    }

    /// [`Self::send`] with extra headers (a `range`, say).
    pub fn send_with(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        auth: &Auth,
        extra: &[(&str, &str)],
    ) -> Result<(u16, Vec<u8>)> {
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(transient)?;
        let mut rq = self.http.request(m, format!("{}{path}", self.base));
        for (k, v) in auth.headers() {
            rq = rq.header(k, v);
        }
        for (k, v) in extra {
            rq = rq.header(*k, *v);
        }
        let resp = rq.body(body.to_vec()).send().map_err(transient)?;
        let status = resp.status().as_u16();
        Ok((status, resp.bytes().map_err(transient)?.to_vec()))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    fn try_request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>> {
        let auth = Auth::sign(&self.identity, method, path, now_ns(), body).map_err(transient)?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(transient)?;
        let mut rq = self.http.request(m, format!("{}{path}", self.base));
        for (k, v) in auth.headers() {
            rq = rq.header(k, v);
        }
        if let Some((off, len)) = range {
            rq = rq.header("range", format!("bytes={off}-{}", off + len - 1));
        }
        if !body.is_empty() {
            rq = rq.body(body.to_vec());
        }
        let resp = rq.send().map_err(|e| {
            if !self.answered.load(std::sync::atomic::Ordering::Relaxed)
                && let Some(why) = unreachable(&e)
            {
                return StoreError::Io {
                    path: self.base.clone(),
                    source: std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why),
                };
            }
            let mut s = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(x) = src {
                s = format!("{s}: {x}");
                src = x.source();
            }
            if s.contains("ApplicationVerificationFailure") || s.contains("BadEncoding") {
                StoreError::Tamper(format!(
                    "{}: not this repository's vault (TLS key mismatch)",
                    self.base
                ))
            } else {
                StoreError::Transient(format!("{}: {s}", self.base))
            }
        })?;
        self.answered
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let status = resp.status().as_u16();
        let bytes = Vec::from(resp.bytes().map_err(transient)?);
        let msg = || {
            String::from_utf8_lossy(&bytes)
                .trim()
                .chars()
                .take(300)
                .collect::<String>()
        };
        match status {
            200..=299 => Ok(bytes),
            404 => Err(StoreError::NotFound {
                kind: Kind::Config,
                name: format!("{path} ({})", msg()),
            }),
            429 | 500..=506 | 508.. => {
                Err(StoreError::Transient(format!("vault: {status} {}", msg())))
            }
            507 => Err(StoreError::Full(format!("vault: {}", msg()))),
            _ => Err(StoreError::Refused(format!(
                "vault refused ({status}): {}",
                msg()
            ))),
        }
    }

    fn object_path(kind: Kind, name: &str) -> Result<String> {
        check_name(kind, name)?;
        Ok(match kind {
            Kind::Config => "/v1/config".into(),
            Kind::Identity => format!("/v1/identities/{name}"),
            Kind::Pack => format!("/v1/objects/packs/{name}"),
            Kind::Snapshot => format!("/v1/objects/snapshots/{name}"),
        })
    }

    fn not_found(e: StoreError, kind: Kind, name: &str) -> StoreError {
        match e {
            StoreError::NotFound { .. } => StoreError::NotFound {
                kind,
                name: name.to_string(),
            },
            e => e,
        }
    }
}

impl Backend for VaultBackend {
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        check_content(kind, name, data)?;
        if kind == Kind::Identity {
            // Accepted only from an admin, who signed the record.
            self.request("POST", "/v1/identities", data, None)?;
            return Ok(());
        }
        if !matches!(kind, Kind::Pack | Kind::Snapshot) {
            return Err(StoreError::Refused(format!(
                "a {kind} cannot be written through the vault"
            )));
        }
        self.request("PUT", &Self::object_path(kind, name)?, data, None)?;
        if kind == Kind::Snapshot {
            self.sync_checkpoint()?;
        }
        Ok(())
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        let data = self
            .request("GET", &Self::object_path(kind, name)?, &[], None)
            .map_err(|e| Self::not_found(e, kind, name))?;
        check_content(kind, name, &data)?;
        Ok(data)
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let data = self
            .request(
                "GET",
                &Self::object_path(kind, name)?,
                &[],
                Some((offset, len)),
            )
            .map_err(|e| Self::not_found(e, kind, name))?;
        if data.len() as u64 != len {
            return Err(StoreError::Corrupt {
                kind,
                name: name.to_string(),
                why: format!("short read at {offset}+{len}"),
            });
        }
        Ok(data)
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        check_name(kind, name)?;
        let seg = match kind {
            Kind::Pack => "packs",
            Kind::Snapshot => "snapshots",
            _ => return Ok(self.get(kind, name)?.len() as u64),
        };
        let r = self
            .request("GET", &format!("/v1/stat/{seg}/{name}"), &[], None)
            .map_err(|e| Self::not_found(e, kind, name))?;
        let j: serde_json::Value = serde_json::from_slice(&r).map_err(transient)?;
        j["size"]
            .as_u64()
            .ok_or_else(|| transient("malformed stat"))
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        let path = match kind {
            Kind::Config => return Ok(vec![("config".into(), 0)]),
            Kind::Identity => "/v1/identities",
            Kind::Pack => "/v1/objects/packs",
            Kind::Snapshot => "/v1/objects/snapshots",
        };
        let r = self.request("GET", path, &[], None)?;
        let v: Vec<(String, u64)> = serde_json::from_slice(&r).map_err(transient)?;
        for (n, _) in &v {
            check_name(kind, n)?;
        }
        Ok(v)
    }

    fn location(&self) -> String {
        self.base.clone()
    }

    fn prefers_whole_objects(&self) -> bool {
        true
    }
}
