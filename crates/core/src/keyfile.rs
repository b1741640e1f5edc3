//! Key files: one per role, holding no more than that role needs.
//!
//! | role    | secret payload                                   | protected |
//! |---------|--------------------------------------------------|-----------|
//! | client  | id key, repository public key, Ed25519 identity  | no        |
//! | restore | id key, repository secret (X25519), Ed25519 identity | passphrase|
//! | admin   | Ed25519 identity                                 | passphrase|
//! | replica | Ed25519 identity                                 | no        |
//! | auditor | Ed25519 identity                                 | no        |
//!
//! Every key file pins the id of the repository config it belongs to, so a
//! tampered or substituted config is refused by every key holder.

use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, CryptoError, IdKey, Identity, KdfParams, RepoSecret};
use crate::format::{MAX_NAME, Role};
use crate::id::ObjectId;

pub const KEY_MAGIC: &[u8; 8] = b"HFKEY001";
const PROT_PLAIN: u8 = 0;
const PROT_ARGON2ID: u8 = 1;

/// Decrypted key material, by role.
pub enum Secret {
    Client {
        id_key: IdKey,
        repo_public: [u8; 32],
        identity: Identity,
    },
    Restore {
        id_key: IdKey,
        secret: RepoSecret,
        /// Signs requests to the vault; decrypts nothing.
        identity: Identity,
    },
    /// Admin, replica, auditor (and the vault's own key).
    Signer(Identity),
}

impl Secret {
    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(96));
        match self {
            Secret::Client {
                id_key,
                repo_public,
                identity,
            } => {
                v.extend_from_slice(id_key.as_bytes());
                v.extend_from_slice(repo_public);
                v.extend_from_slice(identity.as_bytes());
            }
            Secret::Restore {
                id_key,
                secret,
                identity,
            } => {
                v.extend_from_slice(id_key.as_bytes());
                v.extend_from_slice(secret.as_bytes());
                v.extend_from_slice(identity.as_bytes());
            }
            Secret::Signer(id) => v.extend_from_slice(id.as_bytes()),
        }
        v
    }

    fn decode(role: Role, b: &[u8]) -> Result<Self, DecodeError> {
        let a = |i: usize| -> [u8; 32] { b[i * 32..(i + 1) * 32].try_into().unwrap() };
        let want = match role {
            Role::Client | Role::Restore => 96,
            _ => 32,
        };
        if b.len() != want {
            return Err(DecodeError::Invalid("key payload length"));
        }
        Ok(match role {
            Role::Client => Secret::Client {
                id_key: IdKey::from_bytes(a(0)),
                repo_public: a(1),
                identity: Identity::from_bytes(a(2)),
            },
            Role::Restore => Secret::Restore {
                id_key: IdKey::from_bytes(a(0)),
                secret: RepoSecret::from_bytes(a(1)),
                identity: Identity::from_bytes(a(2)),
            },
            _ => Secret::Signer(Identity::from_bytes(a(0))),
        })
    }
}

/// A key file as stored: readable header, possibly wrapped secret.
#[derive(Clone, Debug)]
pub struct KeyFile {
    pub role: Role,
    pub name: String,
    pub config_id: ObjectId,
    pub protection: Protection,
}

#[derive(Clone, Debug)]
pub enum Protection {
    Plain(Zeroizing<Vec<u8>>),
    Passphrase {
        params: KdfParams,
        salt: [u8; 16],
        sealed: Vec<u8>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("not a holdfast key file: {0}")]
    Decode(#[from] DecodeError),
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("this key file is passphrase-protected")]
    NeedsPassphrase,
}

impl KeyFile {
    fn header(role: Role, name: &str, config_id: &ObjectId) -> Writer {
        let mut w = Writer::new();
        w.raw(KEY_MAGIC)
            .u8(role as u8)
            .bytes(name.as_bytes())
            .raw(&config_id.0);
        w
    }

    /// Seals `secret` into a key file; with `passphrase`, wrapped by Argon2id.
    pub fn seal(
        role: Role,
        name: &str,
        config_id: ObjectId,
        secret: &Secret,
        passphrase: Option<(&[u8], KdfParams)>,
    ) -> Result<Self, CryptoError> {
        let payload = secret.encode();
        let protection = match passphrase {
            None => Protection::Plain(payload),
            Some((pw, params)) => {
                let aad = Self::header(role, name, &config_id).into_vec();
                let (salt, sealed) = crypto::wrap_with_passphrase(pw, params, &aad, &payload)?;
                Protection::Passphrase {
                    params,
                    salt,
                    sealed,
                }
            }
        };
        Ok(KeyFile {
            role,
            name: name.to_string(),
            config_id,
            protection,
        })
    }

    pub fn needs_passphrase(&self) -> bool {
        matches!(self.protection, Protection::Passphrase { .. })
    }

    pub fn open(&self, passphrase: Option<&[u8]>) -> Result<Secret, KeyError> {
        match &self.protection {
            Protection::Plain(p) => Ok(Secret::decode(self.role, p)?),
            Protection::Passphrase {
                params,
                salt,
                sealed,
            } => {
                let pw = passphrase.ok_or(KeyError::NeedsPassphrase)?;
                let aad = Self::header(self.role, &self.name, &self.config_id).into_vec();
                let p = crypto::unwrap_with_passphrase(pw, *params, salt, &aad, sealed)?;
                Ok(Secret::decode(self.role, &p)?)
            }
        }
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = Self::header(self.role, &self.name, &self.config_id);
        match &self.protection {
            Protection::Plain(p) => {
                w.u8(PROT_PLAIN).bytes(p);
            }
            Protection::Passphrase {
                params,
                salt,
                sealed,
            } => {
                w.u8(PROT_ARGON2ID)
                    .u32(params.m_kib)
                    .u32(params.t)
                    .u32(params.p)
                    .raw(salt)
                    .bytes(sealed);
            }
        }
        Zeroizing::new(w.into_vec())
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(KEY_MAGIC, "key file")?;
        let role = Role::from_u8(r.u8()?)?;
        let name = String::from_utf8(r.bytes(MAX_NAME, "key name")?.to_vec())
            .map_err(|_| DecodeError::Invalid("key name"))?;
        let config_id = ObjectId(r.array()?);
        let protection = match r.u8()? {
            PROT_PLAIN => Protection::Plain(Zeroizing::new(r.bytes(256, "key payload")?.to_vec())),
            PROT_ARGON2ID => {
                let params = KdfParams {
                    m_kib: r.u32()?,
                    t: r.u32()?,
                    p: r.u32()?,
                };
                if !params.check() {
                    return Err(DecodeError::Invalid("key derivation parameters"));
                }
                Protection::Passphrase {
                    params,
                    salt: r.array()?,
                    sealed: r.bytes(512, "key payload")?.to_vec(),
                }
            }
            _ => return Err(DecodeError::Invalid("key protection")),
        };
        r.finish()?;
        Ok(KeyFile {
            role,
            name,
            config_id,
            protection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_round_trip() {
        let cid = ObjectId([4; 32]);
        let id = Identity::generate().unwrap();
        let pubkey = id.public();
        let kf = KeyFile::seal(
            Role::Admin,
            "admin-1",
            cid,
            &Secret::Signer(id),
            Some((
                b"pw",
                KdfParams {
                    m_kib: 64,
                    t: 1,
                    p: 1,
                },
            )),
        )
        .unwrap();
        let back = KeyFile::decode(&kf.encode()).unwrap();
        assert!(back.needs_passphrase());
        assert!(matches!(back.open(None), Err(KeyError::NeedsPassphrase)));
        assert!(back.open(Some(b"nope")).is_err());
        match back.open(Some(b"pw")).unwrap() {
            Secret::Signer(i) => assert_eq!(i.public(), pubkey),
            _ => panic!("wrong role"),
        }
        // The header is bound: renaming the key breaks it.
        let mut renamed = back.clone();
        renamed.name = "admin-2".into();
        assert!(renamed.open(Some(b"pw")).is_err());
    }
}
