//! Cryptography, all from vetted crates, used as documented:
//!
//! * content ids: BLAKE3 keyed hash under the repository id key;
//! * sealing: each backup session makes an ephemeral X25519 key pair, agrees a
//!   shared secret with the repository public key, and derives the session
//!   key with BLAKE3 `derive_key`. The ephemeral secret is dropped (zeroized)
//!   when the session ends, so a client key cannot decrypt anything it wrote;
//!   only the repository secret (restore.key) can re-derive the session key;
//! * blobs: XChaCha20-Poly1305 with random 192-bit nonces, the blob id, kind
//!   and flags bound in as associated data (a blob cannot be moved or
//!   relabelled without failing authentication);
//! * signatures: Ed25519 (strict verification);
//! * passphrases: Argon2id wrapping XChaCha20-Poly1305.
//!
//! Every secret type zeroizes on drop and has a `Debug` that prints nothing.

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use ed25519_dalek::{Signer, SigningKey};
use thiserror::Error;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::id::BlobId;

const SESSION_CONTEXT: &str = "holdfast 2026-11 v1 session key";
pub const NONCE_LEN: usize = 24;
pub const TAG_LEN: usize = 16;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CryptoError {
    #[error("authentication failed: data is corrupt, tampered with, or not for this key")]
    Auth,
    #[error("invalid public key")]
    BadPublicKey,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong passphrase, or the key file is damaged")]
    Passphrase,
    #[error("system random source failed")]
    Random,
}

/// `Debug` for secret types: the type name only, never the bytes.
macro_rules! redacted_debug {
    ($($t:ty),*) => {$(
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "(..)"))
            }
        }
    )*};
}
redacted_debug!(IdKey, RepoSecret, SessionKey, Identity);

pub fn random_bytes<const N: usize>() -> Result<[u8; N], CryptoError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(|_| CryptoError::Random)?;
    Ok(b)
}

/// The repository id key: computes [`BlobId`]s. Held by clients and restore.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct IdKey([u8; 32]);

impl IdKey {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(random_bytes()?))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn blob_id(&self, plaintext: &[u8]) -> BlobId {
        BlobId(*blake3::keyed_hash(&self.0, plaintext).as_bytes())
    }
}

/// The repository secret (X25519). Lives only in restore.key. After a
/// rotation of the restore key (a new key epoch) it also holds the secrets
/// of earlier epochs, which open the sessions sealed before it.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct RepoSecret {
    current: [u8; 32],
    /// Earlier epochs' secrets, newest first.
    older: Vec<[u8; 32]>,
}

impl RepoSecret {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self {
            current: b,
            older: Vec::new(),
        }
    }
    /// A secret that also opens what earlier epochs sealed.
    pub fn with_older(current: [u8; 32], older: Vec<[u8; 32]>) -> Self {
        Self { current, older }
    }
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self::from_bytes(random_bytes()?))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.current
    }
    /// Earlier epochs' secrets, newest first.
    pub fn older(&self) -> &[[u8; 32]] {
        &self.older
    }
    /// The current epoch's public key.
    pub fn public(&self) -> [u8; 32] {
        x25519_public(&self.current)
    }
    /// This secret narrowed to the one epoch whose public key is
    /// `public`, if it holds that epoch.
    pub fn only(&self, public: &[u8; 32]) -> Option<RepoSecret> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .find(|s| x25519_public(s) == *public)
            .map(|s| RepoSecret::from_bytes(*s))
    }
    /// Every public key this secret opens sessions for, current first.
    pub fn publics(&self) -> Vec<[u8; 32]> {
        std::iter::once(&self.current)
            .chain(&self.older)
            .map(x25519_public)
            .collect()
    }
    /// Re-derives the key a session sealed with, from its ephemeral public
    /// key. With earlier epochs' secrets, the session key tries each (the
    /// first that authenticates a ciphertext is kept for the session).
    pub fn open_session(&self, epk: &[u8; 32]) -> Result<SessionKey, CryptoError> {
        let mut keys = Vec::with_capacity(1 + self.older.len());
        for s in std::iter::once(&self.current).chain(&self.older) {
            let shared = StaticSecret::from(*s).diffie_hellman(&PublicKey::from(*epk));
            if !shared.was_contributory() {
                return Err(CryptoError::BadPublicKey);
            }
            keys.push(SessionKey::derive_bytes(
                shared.as_bytes(),
                epk,
                &x25519_public(s),
            ));
        }
        Ok(SessionKey {
            keys,
            hit: Default::default(),
        })
    }
}

/// True when sessions can be sealed to `public` (not a low-order point).
pub fn usable_public(public: &[u8; 32]) -> bool {
    random_bytes::<32>().is_ok_and(|r| {
        StaticSecret::from(r)
            .diffie_hellman(&PublicKey::from(*public))
            .was_contributory()
    })
}

fn x25519_public(secret: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*secret)).to_bytes()
}

/// A symmetric session key. Created by [`seal_session`] on the client, or by
/// [`RepoSecret::open_session`] with the restore key (then one candidate
/// per key epoch the restore key holds).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SessionKey {
    keys: Vec<[u8; 32]>,
    /// Which candidate authenticated last.
    #[zeroize(skip)]
    hit: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

/// What a blob's AEAD binds in besides the ciphertext.
fn blob_aad(id: &BlobId, kind: u8, flags: u8) -> [u8; 34] {
    let mut aad = [0u8; 34];
    aad[..32].copy_from_slice(&id.0);
    aad[32] = kind;
    aad[33] = flags;
    aad
}

impl SessionKey {
    fn derive_bytes(shared: &[u8; 32], epk: &[u8; 32], repo_public: &[u8; 32]) -> [u8; 32] {
        let mut material = Zeroizing::new([0u8; 96]);
        material[..32].copy_from_slice(shared);
        material[32..64].copy_from_slice(epk);
        material[64..].copy_from_slice(repo_public);
        blake3::derive_key(SESSION_CONTEXT, &material[..])
    }

    fn derive(shared: &[u8; 32], epk: &[u8; 32], repo_public: &[u8; 32]) -> Self {
        Self::single(Self::derive_bytes(shared, epk, repo_public))
    }

    fn single(k: [u8; 32]) -> Self {
        Self {
            keys: vec![k],
            hit: Default::default(),
        }
    }

    fn cipher(k: &[u8; 32]) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*k).into())
    }

    /// Encrypts `buf` in place and returns `nonce || ciphertext || tag`.
    pub fn seal(&self, aad: &[u8], mut buf: Vec<u8>) -> Result<Vec<u8>, CryptoError> {
        let nonce: [u8; NONCE_LEN] = random_bytes()?;
        Self::cipher(&self.keys[0])
            .encrypt_in_place(&XNonce::from(nonce), aad, &mut buf)
            .map_err(|_| CryptoError::Auth)?;
        let mut out = Vec::with_capacity(NONCE_LEN + buf.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&buf);
        Ok(out)
    }

    /// Inverse of [`SessionKey::seal`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        use std::sync::atomic::Ordering;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(CryptoError::Auth);
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| CryptoError::Auth)?;
        let first = self.hit.load(Ordering::Relaxed).min(self.keys.len() - 1);
        let order = std::iter::once(first).chain((0..self.keys.len()).filter(|&i| i != first));
        for i in order {
            let mut buf = ct.to_vec();
            if Self::cipher(&self.keys[i])
                .decrypt_in_place(&XNonce::from(nonce), aad, &mut buf)
                .is_ok()
            {
                self.hit.store(i, Ordering::Relaxed);
                return Ok(buf);
            }
        }
        Err(CryptoError::Auth)
    }

    pub fn seal_blob(
        &self,
        id: &BlobId,
        kind: u8,
        flags: u8,
        body: Vec<u8>,
    ) -> Result<Vec<u8>, CryptoError> {
        self.seal(&blob_aad(id, kind, flags), body)
    }

    pub fn open_blob(
        &self,
        id: &BlobId,
        kind: u8,
        flags: u8,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.open(&blob_aad(id, kind, flags), sealed)
    }
}

/// Starts a sealing session to the repository public key. Returns the
/// ephemeral public key (stored in every pack and snapshot of the session)
/// and the session key; the ephemeral secret never leaves this function.
pub fn seal_session(repo_public: &[u8; 32]) -> Result<([u8; 32], SessionKey), CryptoError> {
    let esk = StaticSecret::from(random_bytes::<32>()?);
    let epk = PublicKey::from(&esk).to_bytes();
    let shared = esk.diffie_hellman(&PublicKey::from(*repo_public));
    if !shared.was_contributory() {
        return Err(CryptoError::BadPublicKey);
    }
    Ok((
        epk,
        SessionKey::derive(shared.as_bytes(), &epk, repo_public),
    ))
}

/// An Ed25519 identity (client, admin, replica, auditor, vault).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Identity([u8; 32]);

impl Identity {
    pub fn from_bytes(b: [u8; 32]) -> Self {
        Self(b)
    }
    pub fn generate() -> Result<Self, CryptoError> {
        Ok(Self(random_bytes()?))
    }
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
    pub fn public(&self) -> [u8; 32] {
        SigningKey::from_bytes(&self.0).verifying_key().to_bytes()
    }
    /// Signs `msg` under a domain-separation `context`.
    pub fn sign(&self, context: &str, msg: &[u8]) -> [u8; 64] {
        let key = SigningKey::from_bytes(&self.0);
        key.sign(&signed_message(context, msg)).to_bytes()
    }
}

fn signed_message(context: &str, msg: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(context.len() + 1 + msg.len());
    m.extend_from_slice(context.as_bytes());
    m.push(0);
    m.extend_from_slice(msg);
    m
}

/// Verifies an Ed25519 signature made by [`Identity::sign`].
pub fn verify(
    public: &[u8; 32],
    context: &str,
    msg: &[u8],
    sig: &[u8; 64],
) -> Result<(), CryptoError> {
    let key =
        ed25519_dalek::VerifyingKey::from_bytes(public).map_err(|_| CryptoError::BadPublicKey)?;
    let sig = ed25519_dalek::Signature::from_bytes(sig);
    key.verify_strict(&signed_message(context, msg), &sig)
        .map_err(|_| CryptoError::BadSignature)
}

/// Argon2id parameters stored beside a passphrase-wrapped secret.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    pub m_kib: u32,
    pub t: u32,
    pub p: u32,
}

impl KdfParams {
    /// OWASP's second recommended Argon2id setting (46 MiB, t=1) raised to t=2.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 47_104,
        t: 2,
        p: 1,
    };
    /// Refuses parameters a hostile key file could use to exhaust memory.
    pub fn check(&self) -> bool {
        (8..=4 * 1024 * 1024).contains(&self.m_kib)
            && (1..=64).contains(&self.t)
            && (1..=16).contains(&self.p)
    }
}

fn passphrase_key(
    passphrase: &[u8],
    salt: &[u8; 16],
    params: KdfParams,
) -> Result<Zeroizing<[u8; 32]>, CryptoError> {
    if !params.check() {
        return Err(CryptoError::Passphrase);
    }
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|_| CryptoError::Passphrase)?;
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = Zeroizing::new([0u8; 32]);
    a.hash_password_into(passphrase, salt, &mut out[..])
        .map_err(|_| CryptoError::Passphrase)?;
    Ok(out)
}

/// Wraps `secret` under a passphrase. Returns (salt, nonce||ciphertext||tag).
pub fn wrap_with_passphrase(
    passphrase: &[u8],
    params: KdfParams,
    aad: &[u8],
    secret: &[u8],
) -> Result<([u8; 16], Vec<u8>), CryptoError> {
    let salt: [u8; 16] = random_bytes()?;
    let key = passphrase_key(passphrase, &salt, params)?;
    let sk = SessionKey::single(*key);
    Ok((salt, sk.seal(aad, secret.to_vec())?))
}

pub fn unwrap_with_passphrase(
    passphrase: &[u8],
    params: KdfParams,
    salt: &[u8; 16],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = passphrase_key(passphrase, salt, params)?;
    let sk = SessionKey::single(*key);
    sk.open(aad, sealed)
        .map(Zeroizing::new)
        .map_err(|_| CryptoError::Passphrase)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_seal_opens_only_with_repo_secret() {
        let repo = RepoSecret::generate().unwrap();
        let (epk, sk) = seal_session(&repo.public()).unwrap();
        let id = BlobId([7; 32]);
        let ct = sk.seal_blob(&id, 0, 0, b"hello".to_vec()).unwrap();
        let opened = repo.open_session(&epk).unwrap();
        assert_eq!(opened.open_blob(&id, 0, 0, &ct).unwrap(), b"hello");
        // Bound to id, kind and flags.
        assert!(opened.open_blob(&BlobId([8; 32]), 0, 0, &ct).is_err());
        assert!(opened.open_blob(&id, 1, 0, &ct).is_err());
        assert!(opened.open_blob(&id, 0, 1, &ct).is_err());
        // Another repository's secret cannot open it.
        let other = RepoSecret::generate().unwrap();
        let wrong = other.open_session(&epk).unwrap();
        assert!(wrong.open_blob(&id, 0, 0, &ct).is_err());
        // Flipped bit.
        let mut bad = ct.clone();
        bad[30] ^= 1;
        assert!(opened.open_blob(&id, 0, 0, &bad).is_err());
    }

    /// After a rotation the new restore key opens both epochs' sessions;
    /// the old one opens only what was sealed before.
    #[test]
    fn a_rotated_secret_opens_both_epochs_and_the_old_one_only_its_own() {
        let old = RepoSecret::generate().unwrap();
        let fresh: [u8; 32] = random_bytes().unwrap();
        let ring = RepoSecret::with_older(fresh, vec![*old.as_bytes()]);
        assert_eq!(ring.publics()[1], old.public());
        let id = BlobId([7; 32]);
        let (epk_old, k_old) = seal_session(&old.public()).unwrap();
        let (epk_new, k_new) = seal_session(&ring.public()).unwrap();
        let ct_old = k_old.seal_blob(&id, 0, 0, b"before".to_vec()).unwrap();
        let ct_new = k_new.seal_blob(&id, 0, 0, b"after".to_vec()).unwrap();
        let s = ring.open_session(&epk_old).unwrap();
        // Twice: the second open starts with the candidate that worked.
        for _ in 0..2 {
            assert_eq!(s.open_blob(&id, 0, 0, &ct_old).unwrap(), b"before");
        }
        let s = ring.open_session(&epk_new).unwrap();
        assert_eq!(s.open_blob(&id, 0, 0, &ct_new).unwrap(), b"after");
        assert!(s.open_blob(&id, 0, 0, &ct_old).is_err());
        let leaked = old.open_session(&epk_new).unwrap();
        assert!(leaked.open_blob(&id, 0, 0, &ct_new).is_err());
    }

    #[test]
    fn signatures_are_domain_separated() {
        let who = Identity::generate().unwrap();
        let sig = who.sign("a", b"m");
        verify(&who.public(), "a", b"m", &sig).unwrap();
        assert!(verify(&who.public(), "b", b"m", &sig).is_err());
        assert!(verify(&who.public(), "a", b"n", &sig).is_err());
    }

    #[test]
    fn passphrase_wrap() {
        let p = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
        };
        let (salt, ct) = wrap_with_passphrase(b"pw", p, b"aad", b"secret").unwrap();
        assert_eq!(
            &unwrap_with_passphrase(b"pw", p, &salt, b"aad", &ct).unwrap()[..],
            b"secret"
        );
        assert_eq!(
            unwrap_with_passphrase(b"px", p, &salt, b"aad", &ct).unwrap_err(),
            CryptoError::Passphrase
        );
        assert!(
            !KdfParams {
                m_kib: u32::MAX,
                t: 1,
                p: 1
            }
            .check()
        );
    }
}
