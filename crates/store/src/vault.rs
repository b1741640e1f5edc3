//! The vault as a [`Backend`]: HTTPS to `holdfast vault serve`.
//!
//! * Every request is signed by the caller's identity (see
//!   `holdfast_core::request`).
//! * TLS: the vault presents a self-signed certificate for its Ed25519 key.
//!   The first request fetches the config; it must hash to the config id the
//!   caller's key file pins, and the certificate's key must be the vault key
//!   this client knows: the config's, or the last one the log's executed
//!   rotations led it to (kept in its state directory). From then on only
//!   that key is accepted. No CA is involved.
//! * The log: on connect and after each snapshot commit, the client asks for
//!   a consistency proof from the last checkpoint it verified (kept in its
//!   state directory) to the vault's current one. A rollback, a fork or a
//!   bad signature is [`StoreError::Tamper`].
//! * Vault key rotation: a checkpoint of size `n` must be signed by the key
//!   the log's chain makes current at `n` (see
//!   `holdfast_core::logstate::LogState::vault_key_at`). When the vault
//!   presents a TLS key or a checkpoint signer other than the one this
//!   client knows, the client reads the log up to that checkpoint, checks
//!   its root (and that it extends the checkpoint it held), folds it, and
//!   accepts the new key only if the fold reaches it through executed,
//!   quorum-approved rotations from the chain it knew. The chain is then
//!   kept next to the checkpoint (`….vaultkeys`); a rotated-out key is
//!   refused from then on ([`StoreError::Tamper`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::format::Config;
use holdfast_core::id::{hex, parse_hex32};
use holdfast_core::logstate::{LogState, Reader};
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
    /// The HTTPS client pinned to `expected`; rebuilt (a fresh connection
    /// pool) whenever the pin changes, so no connection made under the old
    /// key is reused.
    http: Mutex<reqwest::blocking::Client>,
    config: Option<Config>,
    config_id: ObjectId,
    state_file: PathBuf,
    /// Where the chain of vault keys is kept (next to `state_file`).
    keys_file: PathBuf,
    /// The vault keys this client verified, oldest first: (key, smallest
    /// checkpoint size it signs). Starts as the config's key from 0.
    chain: Mutex<Vec<([u8; 32], u64)>>,
    /// The TLS key pinned (the chain's last) and the one last presented.
    expected: Arc<Mutex<Option<[u8; 32]>>>,
    seen: Arc<Mutex<Option<[u8; 32]>>>,
    provider: Arc<CryptoProvider>,
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

/// Bounds on what the vault may answer before it is checked: a client
/// reads no answer whole into memory unbounded (a man in the middle could
/// otherwise exhaust it).
const MAX_CONFIG_ANSWER: u64 = 16 << 20;
const MAX_CHECKPOINT_ANSWER: u64 = 64 << 10;
const MAX_PROOF_ANSWER: u64 = 1 << 20;
const MAX_LIST_ANSWER: u64 = 16 << 20;
/// The most identity records a client reads to follow a vault key.
const MAX_FOLLOW_IDENTITIES: usize = 100_000;
const MAX_RECORD_ANSWER: u64 = 1 << 20;
/// One page of log entries (an entry is at most 16 MiB).
const MAX_PAGE_ANSWER: u64 = 64 << 20;
/// The most log entries a client reads to follow a vault key it does not
/// know (a checkpoint signed by that key sets the size).
const MAX_FOLLOW_ENTRIES: u64 = 1 << 32;
const TOO_LARGE: &str = "an answer over";

/// A chain of vault keys every connection of this process starts from
/// (`--vault-keys FILE`: a `….vaultkeys` copied from a reader that synced
/// after a rotation). See [`VaultBackend::seed_vault_keys`].
/// A chain of vault keys, oldest first: (key, smallest checkpoint size it
/// signs).
pub type VaultChain = Vec<([u8; 32], u64)>;

static SEED_CHAIN: Mutex<Option<PathBuf>> = Mutex::new(None);

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
        let http = Self::client(&provider, expected.clone(), seen.clone())?;
        let mut b = VaultBackend {
            base: url.trim_end_matches('/').to_string(),
            identity,
            http: Mutex::new(http),
            config: None,
            config_id,
            state_file: PathBuf::new(),
            keys_file: PathBuf::new(),
            chain: Mutex::new(Vec::new()),
            expected: expected.clone(),
            seen: seen.clone(),
            provider,
            answered: std::sync::atomic::AtomicBool::new(false),
        };
        let cfg = b.request_via(
            &b.http(),
            "GET",
            "/v1/config",
            &[],
            None,
            true,
            MAX_CONFIG_ANSWER,
        )?;
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
        b.config = Some(cfg);
        crate::create_private_dir(state_dir).map_err(|e| StoreError::Io {
            path: state_dir.display().to_string(),
            source: e,
        })?;
        b.state_file = Self::checkpoint_path(state_dir, &config_id, &b.identity.public());
        b.keys_file = Self::keys_path(&b.state_file);
        // What a client with no state trusts: the config's key, then the
        // chain of rotations the log leads it along.
        let mut chain = Self::read_chain(&b.keys_file, &vault_key)?;
        let seed = SEED_CHAIN.lock().unwrap().clone();
        if let Some(seed) = seed {
            chain = b.seeded(&seed, &vault_key, chain)?;
        }
        let tip = chain.last().map(|(k, _)| *k).unwrap_or(vault_key);
        *b.chain.lock().unwrap() = chain;
        // A fresh pool: the config was fetched over a connection no key
        // was pinned for.
        b.repin(tip)?;
        // A held checkpoint signed by a key this chain does not reach yet
        // (the chain file lost): the log must lead there first.
        if let Some(held) = Self::read_held_checkpoint(&b.state_file, &config_id, None)?
            && held.signer != b.key_at(held.size)
        {
            if held.verify(&held.signer).is_err() {
                return Err(Self::bad_held(
                    &b.state_file,
                    "its signature does not verify",
                ));
            }
            // Over a connection pinned to the key the vault presents now:
            // what is read is checked against the held checkpoint's root.
            let http = match *seen.lock().unwrap() {
                Some(k) => Self::client(
                    &b.provider,
                    Arc::new(Mutex::new(Some(k))),
                    Arc::new(Mutex::new(None)),
                )?,
                None => b.http(),
            };
            b.follow(&held, Some(&http), None)?;
        }
        let presented = *seen.lock().unwrap();
        match presented {
            Some(k) if Some(k) == *expected.lock().unwrap() => {}
            Some(k) => b.follow_tls(k)?,
            None => {
                return Err(StoreError::Tamper(format!(
                    "the server at {url} is not this repository's vault (TLS key mismatch)"
                )));
            }
        }
        b.sync_checkpoint()?;
        Ok(b)
    }

    /// An HTTPS client that accepts only the TLS key in `expected` (any key
    /// while it is None, which only the config fetch sees).
    fn client(
        provider: &Arc<CryptoProvider>,
        expected: Arc<Mutex<Option<[u8; 32]>>>,
        seen: Arc<Mutex<Option<[u8; 32]>>>,
    ) -> Result<reqwest::blocking::Client> {
        let verifier = PinVerifier {
            expected,
            seen,
            provider: provider.clone(),
        };
        let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(transient)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        reqwest::blocking::Client::builder()
            .tls_backend_preconfigured(tls)
            .timeout(Duration::from_secs(300))
            .pool_max_idle_per_host(4)
            // The vault closes a connection idle for 10 s; never reuse one
            // that may be closing.
            .pool_idle_timeout(Duration::from_secs(5))
            .build()
            .map_err(transient)
    }

    /// Seeds the chain of vault keys this process knows with the file at
    /// `path` (format.md §12.1): a reader with no state of its own (new,
    /// reinstalled, a disaster-recovery host) then refuses a checkpoint or TLS
    /// key of a rotated-out key, as a reader that saw the rotation does. The
    /// file must start at the config's vault key and agree with the chain the
    /// reader kept (one extends the other); the longer one is kept.
    pub fn seed_vault_keys(path: Option<PathBuf>) {
        *SEED_CHAIN.lock().unwrap() = path;
    }

    /// The chain given with `--vault-keys` (see [`Self::seed_vault_keys`]),
    /// read for the repository whose config names `config_key`; `None`
    /// without one. For readers of a replica or bundle directory.
    pub fn seed_chain(config_key: &[u8; 32]) -> Result<Option<VaultChain>> {
        let Some(seed) = SEED_CHAIN.lock().unwrap().clone() else {
            return Ok(None);
        };
        Self::read_seed(&seed, config_key).map(Some)
    }

    fn read_seed(seed: &Path, config_key: &[u8; 32]) -> Result<Vec<([u8; 32], u64)>> {
        if !seed.is_file() {
            return Err(StoreError::LocalState(format!(
                "{}: --vault-keys: no such file",
                seed.display()
            )));
        }
        Self::read_chain(seed, config_key).map_err(|e| match e {
            StoreError::LocalState(_) => StoreError::LocalState(format!(
                "{}: --vault-keys: not a chain of this repository's vault keys (a \
                 ….vaultkeys file from a reader's state directory, starting at the config's \
                 vault key)",
                seed.display()
            )),
            e => e,
        })
    }

    /// The key `chain` makes current at checkpoint size `size`.
    pub fn chain_key_at(chain: &[([u8; 32], u64)], size: u64) -> [u8; 32] {
        chain
            .iter()
            .rev()
            .find(|(_, f)| *f <= size)
            .map_or([0; 32], |(k, _)| *k)
    }

    /// Where the chain of vault keys is kept, next to the checkpoint.
    pub fn keys_path(checkpoint: &Path) -> PathBuf {
        checkpoint.with_extension("vaultkeys")
    }

    const CHAIN_TAG: &'static str = "holdfast-vault-keys-v1";

    /// Reads the chain of vault keys a client verified: the config's key
    /// alone when there is no file. A damaged file is an error (it is what
    /// refuses a rotated-out key), never replaced silently.
    fn read_chain(path: &Path, config_key: &[u8; 32]) -> Result<Vec<([u8; 32], u64)>> {
        let bytes = match crate::read_regular(path, 1 << 20) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(vec![(*config_key, 0)]);
            }
            Err(e) => return Err(Self::bad_chain(path, &e.to_string())),
        };
        let text = String::from_utf8(bytes).map_err(|_| Self::bad_chain(path, "not text"))?;
        // Strict: '\n' line endings (no CR), a final newline, digits only.
        if text.contains('\r') {
            return Err(Self::bad_chain(path, "a carriage return"));
        }
        let Some(body) = text.strip_suffix('\n') else {
            return Err(Self::bad_chain(path, "no final newline"));
        };
        let mut lines = body.split('\n');
        if lines.next() != Some(Self::CHAIN_TAG) {
            return Err(Self::bad_chain(path, "not a chain of vault keys"));
        }
        let mut chain: Vec<([u8; 32], u64)> = Vec::new();
        for l in lines {
            let mut p = l.split(' ');
            let (Some(from), Some(key), None) = (p.next(), p.next(), p.next()) else {
                return Err(Self::bad_chain(path, "a malformed line"));
            };
            if from.is_empty() || !from.bytes().all(|c| c.is_ascii_digit()) {
                return Err(Self::bad_chain(path, "a malformed size"));
            }
            let from: u64 = from
                .parse()
                .map_err(|_| Self::bad_chain(path, "a malformed size"))?;
            let key = parse_hex32(key).map_err(|_| Self::bad_chain(path, "a malformed key"))?;
            if chain.iter().any(|(k, _)| *k == key) {
                return Err(Self::bad_chain(path, "a repeated key"));
            }
            if chain.last().is_some_and(|(_, f)| *f >= from) || (chain.is_empty() && from != 0) {
                return Err(Self::bad_chain(path, "sizes out of order"));
            }
            chain.push((key, from));
        }
        if chain.first().map(|(k, _)| k) != Some(config_key) {
            return Err(Self::bad_chain(
                path,
                "it does not start at the config's vault key",
            ));
        }
        Ok(chain)
    }

    /// Keeps `chain` next to the checkpoint (crash-safe, private).
    fn write_chain(&self, chain: &[([u8; 32], u64)]) -> Result<()> {
        let mut text = format!("{}\n", Self::CHAIN_TAG);
        for (k, f) in chain {
            text.push_str(&format!("{f} {}\n", hex(k)));
        }
        crate::write_private(&self.keys_file, text.as_bytes()).map_err(|e| StoreError::Io {
            path: self.keys_file.display().to_string(),
            source: e,
        })
    }

    /// The chain this reader kept, merged with the `--vault-keys` file at
    /// `seed`: one must extend the other; the longer is kept (and written
    /// when it is the seed's).
    fn seeded(
        &self,
        seed: &Path,
        config_key: &[u8; 32],
        kept: Vec<([u8; 32], u64)>,
    ) -> Result<Vec<([u8; 32], u64)>> {
        let given = Self::read_seed(seed, config_key)?;
        let n = kept.len().min(given.len());
        if kept[..n] != given[..n] {
            return Err(StoreError::Tamper(format!(
                "{}: --vault-keys names a chain of vault keys other than the one this key \
                 verified ({}): one of them is not this repository's",
                seed.display(),
                self.keys_file.display()
            )));
        }
        if given.len() > kept.len() {
            self.write_chain(&given)?;
            return Ok(given);
        }
        Ok(kept)
    }

    fn bad_chain(path: &Path, why: &str) -> StoreError {
        StoreError::LocalState(format!(
            "{}, the chain of vault keys this key verified, is unreadable ({why}); it is what \
             refuses a rotated-out vault key, so it is not replaced silently. If this machine \
             lost it, run `holdfast checkpoint forget --key KEY`, which moves it aside with \
             the checkpoint",
            path.display()
        ))
    }

    /// The vault key that must sign a checkpoint of `size`, by the chain
    /// this client verified.
    fn key_at(&self, size: u64) -> [u8; 32] {
        self.chain
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(_, f)| *f <= size)
            .map_or([0; 32], |(k, _)| *k)
    }

    /// Checks a checkpoint of the vault: this repository's, a valid
    /// signature, by the key the chain makes current at its size. A
    /// signer this client does not know yet is followed through the log
    /// ([`Self::follow`]); a rotated-out key is tampering.
    fn check_signed(&self, cp: &Checkpoint) -> Result<()> {
        if cp.config_id != self.config_id.0 || cp.verify(&cp.signer).is_err() {
            return Err(StoreError::Tamper(
                "the vault's checkpoint signature does not verify".into(),
            ));
        }
        if cp.signer == self.key_at(cp.size) {
            return Ok(());
        }
        self.follow(cp, None, None)
    }

    /// The HTTPS client pinned to the chain's last key.
    fn http(&self) -> reqwest::blocking::Client {
        self.http.lock().unwrap().clone()
    }

    /// Pins TLS key `k`; when it changes, the client is rebuilt so that no
    /// pooled connection made under the old pin is reused.
    fn repin(&self, k: [u8; 32]) -> Result<()> {
        let mut e = self.expected.lock().unwrap();
        if *e == Some(k) {
            return Ok(());
        }
        *e = Some(k);
        drop(e);
        let fresh = Self::client(&self.provider, self.expected.clone(), self.seen.clone())?;
        *self.http.lock().unwrap() = fresh;
        Ok(())
    }

    /// The verified identity records the vault serves (members of the
    /// config's repository added by an admin), as the other readers fold
    /// with. A record naming a config member's key is not applied.
    fn identity_members(
        &self,
        http: &reqwest::blocking::Client,
        config: &Config,
    ) -> Result<std::collections::HashMap<[u8; 32], holdfast_core::format::Member>> {
        let r = self.request_via(
            http,
            "GET",
            "/v1/identities",
            &[],
            None,
            false,
            MAX_LIST_ANSWER,
        )?;
        let names: Vec<(String, u64)> = serde_json::from_slice(&r).map_err(transient)?;
        if names.len() > MAX_FOLLOW_IDENTITIES {
            return Err(StoreError::Tamper(format!(
                "the vault lists {} identity records, over the {MAX_FOLLOW_IDENTITIES} a client \
                 reads to follow a vault key",
                names.len()
            )));
        }
        let mut out = std::collections::HashMap::new();
        for (name, _) in names {
            let path = Self::object_path(Kind::Identity, &name)?;
            let b = self.request_via(http, "GET", &path, &[], None, false, MAX_RECORD_ANSWER)?;
            if let Ok(rec) = holdfast_core::format::IdentityRecord::decode(&b)
                && rec.verify(config, &self.config_id).is_ok()
                && !config.members.iter().any(|m| m.public == rec.member.public)
            {
                out.insert(rec.member.public, rec.member);
            }
        }
        Ok(out)
    }

    /// Learns the vault keys up to `cp` from the log: reads entries
    /// `[0, cp.size)`, checks them against `cp`'s root and the held
    /// checkpoint's, folds them, and accepts `cp.signer` only if the fold's
    /// chain (executed, quorum-approved rotations from the config's key)
    /// extends the chain this client knew and makes it the key at
    /// `cp.size`. Then keeps the chain (crash-safe) and pins its last key.
    fn follow(
        &self,
        cp: &Checkpoint,
        http: Option<&reqwest::blocking::Client>,
        held: Option<&Checkpoint>,
    ) -> Result<()> {
        let Some(config) = &self.config else {
            return Err(StoreError::Tamper("no config to fold the log with".into()));
        };
        let held = match held {
            Some(h) => Some(h.clone()),
            None => Self::read_held_checkpoint(&self.state_file, &self.config_id, None)?,
        };
        if let Some(h) = &held
            && h.size > cp.size
        {
            return Err(StoreError::Tamper(format!(
                "the vault's log went back from {} to {} entries: rolled back",
                h.size, cp.size
            )));
        }
        if cp.size > MAX_FOLLOW_ENTRIES {
            return Err(StoreError::Tamper(format!(
                "the vault's checkpoint (signed by the unfamiliar key {}) claims {} log \
                 entries, over the {MAX_FOLLOW_ENTRIES} a client follows",
                hex(&cp.signer[..8]),
                cp.size
            )));
        }
        // Over a connection pinned to the key that signed `cp` (never the
        // pool of the old pin, which a new handshake would refuse).
        let own;
        let http = match http {
            Some(h) => h,
            None => {
                own = Self::client(
                    &self.provider,
                    Arc::new(Mutex::new(Some(cp.signer))),
                    Arc::new(Mutex::new(None)),
                )?;
                &own
            }
        };
        let members = self.identity_members(http, config)?;
        let reader = Reader {
            now_ns: now_ns(),
            contacts: None,
            held: held.as_ref().map(|h| (h.size, h.time_ns)),
        };
        // Hashed and folded as the pages arrive: nothing of the log is kept
        // but the tree's right edge and the fold's state.
        let mut st = LogState::new(config, self.config_id, members);
        let mut tree = merkle::Frontier::new();
        let forked = |h: &Checkpoint| {
            StoreError::Tamper(format!(
                "the vault's log of {} entries does not extend the one of {} this client \
                 verified: history was rewritten",
                cp.size, h.size
            ))
        };
        let check_held = |tree: &merkle::Frontier| -> Result<()> {
            if let Some(h) = &held
                && h.size == tree.size()
                && tree.root() != h.root
            {
                return Err(forked(h));
            }
            Ok(())
        };
        check_held(&tree)?;
        self.log_pages_via(http, 0, cp.size, &mut |e| {
            tree.push(merkle::leaf_hash(e));
            st.apply(e, &reader, &mut |_| None);
            check_held(&tree)
        })?;
        if tree.size() != cp.size || tree.root() != cp.root {
            return Err(StoreError::Tamper(format!(
                "the vault's log does not match its checkpoint of size {} (signed by {})",
                cp.size,
                hex(&cp.signer[..8])
            )));
        }
        let known = self.chain.lock().unwrap().clone();
        if st.vault_keys.len() < known.len() || st.vault_keys[..known.len()] != known[..] {
            return Err(StoreError::Tamper(
                "the vault's log lacks a vault key rotation this client verified before: \
                 rolled back to an older key"
                    .into(),
            ));
        }
        // A rotation whose execution entry broke a rule is never followed.
        for (_, from) in &st.vault_keys[known.len()..] {
            if let Some(p) = st.problems.iter().find(|p| p.index + 1 == *from) {
                return Err(StoreError::Tamper(format!(
                    "the vault key rotation executed at log entry {} is not valid: {}",
                    p.index, p.what
                )));
            }
        }
        let want = st.vault_key_at(cp.size);
        if want != cp.signer {
            let old = known.iter().any(|(k, _)| *k == cp.signer);
            return Err(StoreError::Tamper(format!(
                "the vault's checkpoint of size {} is signed by {} key {}, but the log's \
                 executed rotations make {} the vault key there",
                cp.size,
                if old { "the rotated-out" } else { "an unknown" },
                hex(&cp.signer[..8]),
                hex(&want[..8])
            )));
        }
        if st.vault_keys != known {
            self.write_chain(&st.vault_keys)?;
            *self.chain.lock().unwrap() = st.vault_keys.clone();
        }
        self.repin(st.vault_key())
    }

    /// The vault presented TLS key `k`, not the one this client pinned:
    /// over a connection pinned to exactly `k`, fetch the checkpoint (which
    /// `k` must sign) and follow the log to it. Only a key the log's
    /// executed rotations lead to is accepted.
    fn follow_tls(&self, k: [u8; 32]) -> Result<()> {
        let mismatch = || {
            StoreError::Tamper(format!(
                "{}: not this repository's vault (TLS key mismatch: {} is not a vault key the \
                 log leads to)",
                self.base,
                hex(&k[..8])
            ))
        };
        if self.chain.lock().unwrap().iter().any(|(c, _)| *c == k) {
            // A rotated-out key (or an earlier one): never again.
            return Err(StoreError::Tamper(format!(
                "{}: the vault presents the rotated-out vault key {} (TLS): a key rollback",
                self.base,
                hex(&k[..8])
            )));
        }
        let http = Self::client(
            &self.provider,
            Arc::new(Mutex::new(Some(k))),
            Arc::new(Mutex::new(None)),
        )?;
        let b = self
            .request_via(
                &http,
                "GET",
                "/v1/log/checkpoint",
                &[],
                None,
                false,
                MAX_CHECKPOINT_ANSWER,
            )
            .map_err(|e| match e {
                StoreError::Transient(_) | StoreError::Io { .. } => e,
                _ => mismatch(),
            })?;
        let cp = Checkpoint::decode(&b).map_err(|_| mismatch())?;
        if cp.signer != k || cp.config_id != self.config_id.0 || cp.verify(&k).is_err() {
            return Err(mismatch());
        }
        self.follow(&cp, Some(&http), None)?;
        if *self.expected.lock().unwrap() != Some(k) {
            return Err(mismatch());
        }
        Ok(())
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
        // The chain of vault keys goes aside with it (a fresh contact
        // follows the log from the config's key again).
        let keys = Self::keys_path(path);
        let mut keys_aside = keys.as_os_str().to_os_string();
        keys_aside.push(format!(".forgotten-{secs}"));
        match std::fs::rename(&keys, PathBuf::from(keys_aside)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
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
        let held = Self::read_held_checkpoint(&self.state_file, &self.config_id, None)?;
        if let Some(cp) = &held
            && cp.verify(&self.key_at(cp.size)).is_err()
        {
            return Err(Self::bad_held(
                &self.state_file,
                "its signature is not the vault key's at its size",
            ));
        }
        Ok(held)
    }

    /// The vault's current checkpoint, signature checked.
    fn current_checkpoint(&self) -> Result<Checkpoint> {
        let b = self.request_via(
            &self.http(),
            "GET",
            "/v1/log/checkpoint",
            &[],
            None,
            true,
            MAX_CHECKPOINT_ANSWER,
        )?;
        let cp =
            Checkpoint::decode(&b).map_err(|e| StoreError::Tamper(format!("checkpoint: {e}")))?;
        self.check_signed(&cp)?;
        Ok(cp)
    }

    /// Demands a consistency proof from the held checkpoint to the vault's
    /// current one; stores the new one when it extends the old.
    pub fn sync_checkpoint(&self) -> Result<Checkpoint> {
        let held = self.held_checkpoint()?;
        let from = held.as_ref().map(|c| c.size).unwrap_or(0);
        let r = match self.request_via(
            &self.http(),
            "GET",
            &format!("/v1/log/proof?from={from}"),
            &[],
            None,
            true,
            MAX_PROOF_ANSWER,
        ) {
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
        self.check_signed(&cp)?;
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

    /// Log entries `[from, to)` from the vault, fetched in pages of at most
    /// 10 000 entries and [`MAX_PAGE_ANSWER`] bytes.
    /// The caller checks them against a verified checkpoint.
    pub fn log_entries(&self, from: usize, to: u64) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Vec<u8>> = Vec::new();
        self.log_pages_via(&self.http(), from as u64, to, &mut |e| {
            out.push(e.to_vec());
            Ok(())
        })?;
        Ok(out)
    }

    /// Hands each log entry `[from, to)` to `f` as its page arrives (nothing
    /// kept); the caller checks them against a verified checkpoint.
    pub fn log_pages(
        &self,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.log_pages_via(&self.http(), from, to, f)
    }

    /// Hands each log entry `[from, to)` to `f` as its page arrives. A page
    /// over [`MAX_PAGE_ANSWER`] bytes is asked again for fewer entries (one
    /// entry always fits); the vault's answer is never read unbounded.
    fn log_pages_via(
        &self,
        http: &reqwest::blocking::Client,
        from: u64,
        to: u64,
        f: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let mut next = from;
        let mut count: u64 = 10_000;
        while next < to {
            let want = count.min(to - next);
            let raw = match self.request_via(
                http,
                "GET",
                &format!("/v1/log/entries?start={next}&count={want}"),
                &[],
                None,
                false,
                MAX_PAGE_ANSWER,
            ) {
                Ok(r) => r,
                Err(StoreError::Tamper(m)) if m.contains(TOO_LARGE) && want > 1 => {
                    count = (want / 8).max(1);
                    continue;
                }
                Err(e) => return Err(e),
            };
            let (chunk, torn) = holdfast_core::vaultlog::split_log(&raw);
            if chunk.is_empty() || torn != 0 || chunk.len() as u64 > want {
                return Err(StoreError::Tamper(
                    "the vault sent a malformed log page".into(),
                ));
            }
            for e in chunk {
                f(e)?;
                next += 1;
            }
        }
        Ok(())
    }

    /// One signed request; retries rate limits and transient failures.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: &[u8],
        range: Option<(u64, u64)>,
    ) -> Result<Vec<u8>> {
        self.request_via(&self.http(), method, path, body, range, true, u64::MAX)
    }

    /// [`Self::request`] over `http`; `follow`: when the vault presents a
    /// TLS key other than the pinned one, follow the log to it (once).
    #[allow(clippy::too_many_arguments)] // the request's parts, as `try_request` takes them
    fn request_via(
        &self,
        http: &reqwest::blocking::Client,
        method: &str,
        path: &str,
        body: &[u8],
        range: Option<(u64, u64)>,
        mut follow: bool,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let mut delay = Duration::from_millis(100);
        // After following a new key: the client rebuilt for it (no pooled
        // connection of the old pin is reused).
        let mut repinned: Option<reqwest::blocking::Client> = None;
        for attempt in 0.. {
            let http = repinned.as_ref().unwrap_or(http);
            match self.try_request(http, method, path, body, range, limit) {
                Err(StoreError::Tamper(m)) if follow && m.contains("TLS key mismatch") => {
                    let presented = *self.seen.lock().unwrap();
                    match presented {
                        Some(k) if Some(k) != *self.expected.lock().unwrap() => {
                            self.follow_tls(k)?;
                            repinned = Some(self.http());
                            follow = false;
                        }
                        _ => return Err(StoreError::Tamper(m)),
                    }
                }
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
        let mut rq = self.http().request(m, format!("{}{path}", self.base));
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
        http: &reqwest::blocking::Client,
        method: &str,
        path: &str,
        body: &[u8],
        range: Option<(u64, u64)>,
        limit: u64,
    ) -> Result<Vec<u8>> {
        let auth = Auth::sign(&self.identity, method, path, now_ns(), body).map_err(transient)?;
        let m = reqwest::Method::from_bytes(method.as_bytes()).map_err(transient)?;
        let mut rq = http.request(m, format!("{}{path}", self.base));
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
        let too_large = || {
            StoreError::Tamper(format!(
                "{}: {TOO_LARGE} {limit} bytes to {method} {path}",
                self.base
            ))
        };
        if resp.content_length().is_some_and(|n| n > limit) {
            return Err(too_large());
        }
        let mut bytes = Vec::new();
        {
            use std::io::Read;
            let mut resp = resp;
            (&mut resp)
                .take(limit.saturating_add(1))
                .read_to_end(&mut bytes)
                .map_err(transient)?;
        }
        if bytes.len() as u64 > limit {
            return Err(too_large());
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kept_chain_of_vault_keys_parses_strictly() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.vaultkeys");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        // No file: the config's key alone.
        assert_eq!(VaultBackend::read_chain(&p, &a).unwrap(), vec![(a, 0)]);
        let good = format!(
            "{}\n0 {}\n7 {}\n",
            VaultBackend::CHAIN_TAG,
            hex(&a),
            hex(&b)
        );
        std::fs::write(&p, &good).unwrap();
        assert_eq!(
            VaultBackend::read_chain(&p, &a).unwrap(),
            vec![(a, 0), (b, 7)]
        );
        // Not starting at the config's key, out of order, malformed, or
        // cut anywhere: an error of this machine, never a panic.
        assert!(VaultBackend::read_chain(&p, &b).is_err());
        let bad = [
            format!(
                "{}\n0 {}\n0 {}\n",
                VaultBackend::CHAIN_TAG,
                hex(&a),
                hex(&b)
            ),
            format!("{}\n3 {}\n", VaultBackend::CHAIN_TAG, hex(&a)),
            format!("{}\n0 {} x\n", VaultBackend::CHAIN_TAG, hex(&a)),
            "something else\n".to_string(),
            // A sign, CRLF, no final newline, a key again, an empty line.
            format!(
                "{}\n0 {}\n+7 {}\n",
                VaultBackend::CHAIN_TAG,
                hex(&a),
                hex(&b)
            ),
            format!("{}\r\n0 {}\r\n", VaultBackend::CHAIN_TAG, hex(&a)),
            format!("{}\n0 {}\n7 {}", VaultBackend::CHAIN_TAG, hex(&a), hex(&b)),
            format!(
                "{}\n0 {}\n7 {}\n9 {}\n",
                VaultBackend::CHAIN_TAG,
                hex(&a),
                hex(&b),
                hex(&a)
            ),
            format!("{}\n0 {}\n\n", VaultBackend::CHAIN_TAG, hex(&a)),
        ];
        for text in bad {
            std::fs::write(&p, &text).unwrap();
            assert!(
                matches!(
                    VaultBackend::read_chain(&p, &a),
                    Err(StoreError::LocalState(_))
                ),
                "{text}"
            );
        }
        for n in 0..good.len() - 1 {
            std::fs::write(&p, &good.as_bytes()[..n]).unwrap();
            let r = VaultBackend::read_chain(&p, &a);
            assert!(
                r.is_err() || r.as_ref().unwrap().len() < 2,
                "cut at {n}: {r:?}"
            );
        }
        std::fs::write(&p, [0xff, 0xfe, 0]).unwrap();
        assert!(VaultBackend::read_chain(&p, &a).is_err());
    }
}
