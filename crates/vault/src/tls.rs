//! TLS from the vault key: a self-signed Ed25519 certificate whose public
//! key is the vault's current key (the config's, or the last rotation the
//! log executed). Clients accept the connection only if the certificate's
//! key is the key they know, or one the log's executed, quorum-approved
//! rotations lead to (see holdfast-store's vault client), so no CA is
//! involved and nothing else can impersonate the vault.
//!
//! The certificate is served through [`SwapCert`], which the vault switches
//! under the same write lock as the log entry that rotates its key.

use std::sync::{Arc, RwLock};

use holdfast_core::crypto::Identity;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::VaultError;

/// PKCS#8 v1 encoding of an Ed25519 private key (RFC 8410 §7): a fixed
/// 16-byte prefix followed by the 32-byte seed.
fn pkcs8(seed: &[u8; 32]) -> Vec<u8> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    let mut v = PREFIX.to_vec();
    v.extend_from_slice(seed);
    v
}

fn err(e: impl std::fmt::Display) -> VaultError {
    VaultError::Usage(format!("TLS set-up: {e}"))
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The self-signed certificate and signing key for `identity`.
pub fn certified_key(identity: &Identity) -> Result<Arc<CertifiedKey>, VaultError> {
    let key = PrivatePkcs8KeyDer::from(pkcs8(identity.as_bytes()));
    let kp =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519).map_err(err)?;
    let cert = rcgen::CertificateParams::new(vec!["holdfast-vault".to_string()])
        .map_err(err)?
        .self_signed(&kp)
        .map_err(err)?;
    let ck = CertifiedKey::from_der(
        vec![cert.der().clone()],
        PrivateKeyDer::Pkcs8(key),
        &provider(),
    )
    .map_err(err)?;
    Ok(Arc::new(ck))
}

/// The certificate the vault presents now; [`SwapCert::set`] replaces it
/// for every handshake after.
#[derive(Debug)]
pub struct SwapCert(RwLock<Arc<CertifiedKey>>);

impl SwapCert {
    pub fn new(identity: &Identity) -> Result<Arc<Self>, VaultError> {
        Ok(Arc::new(SwapCert(RwLock::new(certified_key(identity)?))))
    }

    pub fn set(&self, key: Arc<CertifiedKey>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = key;
    }
}

impl ResolvesServerCert for SwapCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.read().unwrap_or_else(|p| p.into_inner()).clone())
    }
}

/// The server's TLS configuration, presenting whatever `certs` holds.
pub fn server_config(certs: Arc<SwapCert>) -> Result<Arc<rustls::ServerConfig>, VaultError> {
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(err)?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
