//! Signed requests to the vault. Every request carries five headers:
//!
//! | header | value |
//! |---|---|
//! | `x-holdfast-key` | signer's Ed25519 public key, hex |
//! | `x-holdfast-time` | signer's clock, ns since the epoch, decimal |
//! | `x-holdfast-nonce` | 16 random bytes, hex |
//! | `x-holdfast-body` | BLAKE3 of the body, hex (absent: the empty body) |
//! | `x-holdfast-signature` | Ed25519 signature, hex |
//!
//! The signature (context `holdfast request v1`) covers
//! `METHOD \n PATH-AND-QUERY \n TIME \n NONCE-HEX \n BLAKE3(BODY)-HEX`, so a
//! request cannot be altered, moved to another path, or replayed outside the
//! time window (the vault remembers nonces for the whole window).
//!
//! Because the body's hash travels in a header, the vault checks the
//! signature ([`Auth::verify_declared`]) before it reads a byte of the body,
//! then reads the body and checks it against the signed hash
//! ([`Auth::body_matches`]): nobody without a key can make it buffer
//! anything.

use crate::codec::DecodeError;
use crate::crypto::{self, CryptoError, Identity};
use crate::id::{hex, parse_hex};

pub const SIG_REQUEST: &str = "holdfast request v1";
pub const H_KEY: &str = "x-holdfast-key";
pub const H_TIME: &str = "x-holdfast-time";
pub const H_NONCE: &str = "x-holdfast-nonce";
pub const H_SIG: &str = "x-holdfast-signature";
pub const H_BODY: &str = "x-holdfast-body";
/// How far a request's time may be from the vault's clock.
pub const WINDOW_NS: i64 = 300 * 1_000_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Auth {
    pub key: [u8; 32],
    pub time_ns: i64,
    pub nonce: [u8; 16],
    /// BLAKE3 of the body, as declared by the signer (and signed).
    pub body_hash: [u8; 32],
    pub signature: [u8; 64],
}

fn message(
    method: &str,
    path: &str,
    time_ns: i64,
    nonce: &[u8; 16],
    body_hash: &[u8; 32],
) -> Vec<u8> {
    format!(
        "{method}\n{path}\n{time_ns}\n{}\n{}",
        hex(nonce),
        hex(body_hash)
    )
    .into_bytes()
}

fn empty_body_hash() -> [u8; 32] {
    *blake3::hash(b"").as_bytes()
}

impl Auth {
    pub fn sign(
        id: &Identity,
        method: &str,
        path: &str,
        time_ns: i64,
        body: &[u8],
    ) -> Result<Self, CryptoError> {
        let nonce = crypto::random_bytes()?;
        let body_hash = *blake3::hash(body).as_bytes();
        Ok(Auth {
            key: id.public(),
            time_ns,
            nonce,
            body_hash,
            signature: id.sign(
                SIG_REQUEST,
                &message(method, path, time_ns, &nonce, &body_hash),
            ),
        })
    }

    /// Checks the signature over method, path, time, nonce and the
    /// declared body hash, without the body.
    pub fn verify_declared(&self, method: &str, path: &str) -> Result<(), CryptoError> {
        crypto::verify(
            &self.key,
            SIG_REQUEST,
            &message(method, path, self.time_ns, &self.nonce, &self.body_hash),
            &self.signature,
        )
    }

    /// Is `body` the body the signer declared?
    pub fn body_matches(&self, body: &[u8]) -> bool {
        *blake3::hash(body).as_bytes() == self.body_hash
    }

    /// The whole check: signature and body.
    pub fn verify(&self, method: &str, path: &str, body: &[u8]) -> Result<(), CryptoError> {
        self.verify_declared(method, path)?;
        if self.body_matches(body) {
            Ok(())
        } else {
            Err(CryptoError::BadSignature)
        }
    }

    pub fn headers(&self) -> [(&'static str, String); 5] {
        [
            (H_KEY, hex(&self.key)),
            (H_TIME, self.time_ns.to_string()),
            (H_NONCE, hex(&self.nonce)),
            (H_BODY, hex(&self.body_hash)),
            (H_SIG, hex(&self.signature)),
        ]
    }

    /// Parses the headers (`get` returns a header's value).
    pub fn from_headers<'a>(get: impl Fn(&str) -> Option<&'a str>) -> Result<Self, DecodeError> {
        let h = |n: &'static str| get(n).ok_or(DecodeError::Invalid(n));
        let fixed = |n: &'static str, len: usize| -> Result<Vec<u8>, DecodeError> {
            let v = h(n)?;
            if v.len() != len * 2 {
                return Err(DecodeError::Invalid(n));
            }
            parse_hex(v)
        };
        let t = h(H_TIME)?;
        if t.len() > 20 {
            return Err(DecodeError::Invalid(H_TIME));
        }
        Ok(Auth {
            key: fixed(H_KEY, 32)?.try_into().unwrap(),
            time_ns: t.parse().map_err(|_| DecodeError::Invalid(H_TIME))?,
            nonce: fixed(H_NONCE, 16)?.try_into().unwrap(),
            body_hash: match get(H_BODY) {
                None => empty_body_hash(),
                Some(_) => fixed(H_BODY, 32)?.try_into().unwrap(),
            },
            signature: fixed(H_SIG, 64)?.try_into().unwrap(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_requests_bind_everything() {
        let id = Identity::from_bytes([1; 32]);
        let a = Auth::sign(&id, "PUT", "/v1/packs/ab", 5, b"body").unwrap();
        a.verify("PUT", "/v1/packs/ab", b"body").unwrap();
        assert!(a.verify("GET", "/v1/packs/ab", b"body").is_err());
        assert!(a.verify("PUT", "/v1/packs/ac", b"body").is_err());
        assert!(a.verify("PUT", "/v1/packs/ab", b"bodz").is_err());
        let mut later = a.clone();
        later.time_ns = 6;
        assert!(later.verify("PUT", "/v1/packs/ab", b"body").is_err());
        let hs = a.headers();
        let back =
            Auth::from_headers(|n| hs.iter().find(|(k, _)| *k == n).map(|(_, v)| v.as_str()))
                .unwrap();
        assert_eq!(back, a);
        assert!(Auth::from_headers(|n| if n == H_KEY { Some("zz") } else { None }).is_err());
        // The signature binds the declared hash; the body is checked
        // against it separately, after the headers.
        a.verify_declared("PUT", "/v1/packs/ab").unwrap();
        assert!(a.body_matches(b"body") && !a.body_matches(b"bodz"));
        let mut other = a.clone();
        other.body_hash = *blake3::hash(b"bodz").as_bytes();
        assert!(other.verify_declared("PUT", "/v1/packs/ab").is_err());
        // Without the body header, the declared body is the empty one.
        let g = Auth::sign(&id, "GET", "/v1/config", 5, b"").unwrap();
        let gh = g.headers();
        let back = Auth::from_headers(|n| {
            gh.iter()
                .find(|(k, _)| *k == n && n != H_BODY)
                .map(|(_, v)| v.as_str())
        })
        .unwrap();
        assert_eq!(back, g);
    }
}
