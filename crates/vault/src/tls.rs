//! TLS from the vault key: a self-signed Ed25519 certificate whose public
//! key is the vault member key in the repository config. Clients accept the
//! connection only if the certificate's key is that key (see
//! holdfast-store's vault client), so no CA is involved and nothing else can
//! impersonate the vault.

use std::sync::Arc;

use holdfast_core::crypto::Identity;
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

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

pub fn server_config(identity: &Identity) -> Result<Arc<rustls::ServerConfig>, VaultError> {
    let err = |e: String| VaultError::Usage(format!("TLS set-up: {e}"));
    let der = pkcs8(identity.as_bytes());
    let key = PrivatePkcs8KeyDer::from(der);
    let kp = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)
        .map_err(|e| err(e.to_string()))?;
    let cert = rcgen::CertificateParams::new(vec!["holdfast-vault".to_string()])
        .map_err(|e| err(e.to_string()))?
        .self_signed(&kp)
        .map_err(|e| err(e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| err(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], PrivateKeyDer::Pkcs8(key))
        .map_err(|e| err(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}
