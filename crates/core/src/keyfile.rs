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
/// The most earlier key epochs a restore key carries.
pub const MAX_EPOCHS: usize = 64;
/// The largest payload a key file holds (a restore key with every epoch).
pub const MAX_PAYLOAD: usize = 96 + 32 * MAX_EPOCHS;
const PROT_PLAIN: u8 = 0;
const PROT_ARGON2ID: u8 = 1;

/// The most Argon2id work a key file may ask of whoever opens it, well
/// above what `init` writes ([`KdfParams::DEFAULT`]: 46 MiB, 2 passes) and
/// low enough that a hostile key file cannot take minutes or the machine's
/// memory: at most 1 GiB, 16 passes, 8 lanes, and memory × passes at most
/// 2 GiB (a few seconds).
pub const MAX_KDF_MEMORY_KIB: u32 = 1 << 20;
pub const MAX_KDF_PASSES: u32 = 16;
pub const MAX_KDF_LANES: u32 = 8;
pub const MAX_KDF_WORK_KIB: u64 = 2 << 20;

/// True when a key file's Argon2id parameters are within the limits above
/// (and valid for Argon2 at all).
pub fn kdf_params_acceptable(p: &KdfParams) -> bool {
    p.check()
        && p.m_kib <= MAX_KDF_MEMORY_KIB
        && p.t <= MAX_KDF_PASSES
        && p.p <= MAX_KDF_LANES
        && p.m_kib as u64 * p.t as u64 <= MAX_KDF_WORK_KIB
}

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
    /// The raw secret payload (what a key file seals, and what a split
    /// shares).
    pub fn payload(&self) -> Zeroizing<Vec<u8>> {
        self.encode()
    }

    /// A secret from its raw payload.
    pub fn from_payload(role: Role, b: &[u8]) -> Result<Self, DecodeError> {
        Self::decode(role, b)
    }

    fn encode(&self) -> Zeroizing<Vec<u8>> {
        let extra = match self {
            Secret::Restore { secret, .. } => 32 * secret.older().len(),
            _ => 0,
        };
        // Sized once: a growing buffer would leave copies of the secret
        // behind in freed memory.
        let mut v = Zeroizing::new(Vec::with_capacity(96 + extra));
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
                for o in secret.older() {
                    v.extend_from_slice(o);
                }
            }
            Secret::Signer(id) => v.extend_from_slice(id.as_bytes()),
        }
        v
    }

    fn decode(role: Role, b: &[u8]) -> Result<Self, DecodeError> {
        let a = |i: usize| -> [u8; 32] { b[i * 32..(i + 1) * 32].try_into().unwrap() };
        let ok = match role {
            // A restore key after rotations also holds earlier epochs'
            // repository secrets (32 bytes each, newest first).
            Role::Restore => {
                b.len() >= 96
                    && (b.len() - 96).is_multiple_of(32)
                    && (b.len() - 96) / 32 <= MAX_EPOCHS
            }
            Role::Client => b.len() == 96,
            _ => b.len() == 32,
        };
        if !ok {
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
                secret: RepoSecret::with_older(a(1), (3..b.len() / 32).map(a).collect()),
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

impl Protection {
    /// `u8 kind | …` as in format.md §11 (key files and key shares alike).
    pub(crate) fn write(&self, w: &mut Writer) {
        match self {
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
    }

    /// Inverse of [`Protection::write`]; refuses Argon2 costs beyond the
    /// limits before any work.
    pub(crate) fn read(r: &mut Reader) -> Result<Self, DecodeError> {
        Ok(match r.u8()? {
            PROT_PLAIN => Protection::Plain(Zeroizing::new(
                r.bytes(MAX_PAYLOAD + 1, "key payload")?.to_vec(),
            )),
            PROT_ARGON2ID => {
                let params = KdfParams {
                    m_kib: r.u32()?,
                    t: r.u32()?,
                    p: r.u32()?,
                };
                if !kdf_params_acceptable(&params) {
                    return Err(DecodeError::TooLarge("Argon2 cost of the key file"));
                }
                Protection::Passphrase {
                    params,
                    salt: r.array()?,
                    sealed: r.bytes(MAX_PAYLOAD + 64, "key payload")?.to_vec(),
                }
            }
            _ => return Err(DecodeError::Invalid("key protection")),
        })
    }
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
        if let Protection::Passphrase { params, .. } = &self.protection
            && !kdf_params_acceptable(params)
        {
            return Err(KeyError::Decode(DecodeError::TooLarge(
                "Argon2 cost of the key file",
            )));
        }
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
        self.protection.write(&mut w);
        Zeroizing::new(w.into_vec())
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(KEY_MAGIC, "key file")?;
        let role = Role::from_u8(r.u8()?)?;
        let name = String::from_utf8(r.bytes(MAX_NAME, "key name")?.to_vec())
            .map_err(|_| DecodeError::Invalid("key name"))?;
        let config_id = ObjectId(r.array()?);
        let protection = Protection::read(&mut r)?;
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

    #[test]
    fn a_restore_key_carries_earlier_epochs() {
        let older = vec![[7u8; 32], [8u8; 32]];
        let s = Secret::Restore {
            id_key: IdKey::from_bytes([1; 32]),
            secret: RepoSecret::with_older([2; 32], older.clone()),
            identity: Identity::from_bytes([3; 32]),
        };
        let kf = KeyFile::seal(Role::Restore, "restore", ObjectId([4; 32]), &s, None).unwrap();
        match KeyFile::decode(&kf.encode()).unwrap().open(None).unwrap() {
            Secret::Restore { secret, .. } => {
                assert_eq!(secret.as_bytes(), &[2; 32]);
                assert_eq!(secret.older(), &older[..]);
            }
            _ => panic!("wrong role"),
        }
        // A payload that is not 96 + 32k bytes is refused.
        assert!(Secret::from_payload(Role::Restore, &[0; 100]).is_err());
        assert!(Secret::from_payload(Role::Restore, &[0; 96 + 32 * (MAX_EPOCHS + 1)]).is_err());
    }

    #[test]
    fn costly_kdf_parameters_are_refused_before_any_work() {
        let id = Identity::generate().unwrap();
        let kf = KeyFile::seal(
            Role::Restore,
            "restore",
            ObjectId([4; 32]),
            &Secret::Signer(id),
            Some((b"pw", KdfParams::DEFAULT)),
        )
        .unwrap();
        let good = kf.encode();
        assert!(KeyFile::decode(&good).is_ok());
        // The parameters sit right after the protection byte.
        let at = good.len() - (12 + 16 + 4 + kf_sealed_len(&kf));
        let with = |m: u32, t: u32, p: u32| {
            let mut b = good.to_vec();
            b[at..at + 4].copy_from_slice(&m.to_le_bytes());
            b[at + 4..at + 8].copy_from_slice(&t.to_le_bytes());
            b[at + 8..at + 12].copy_from_slice(&p.to_le_bytes());
            b
        };
        assert!(KeyFile::decode(&with(47_104, 2, 1)).is_ok());
        assert!(KeyFile::decode(&with(MAX_KDF_MEMORY_KIB, 2, 1)).is_ok());
        let t0 = std::time::Instant::now();
        for (m, t, p) in [
            (4 * 1024 * 1024, 1, 1),    // 4 GiB
            (MAX_KDF_MEMORY_KIB, 3, 1), // 3 GiB of passes
            (47_104, 64, 1),            // 64 passes
            (47_104, 2, 16),            // 16 lanes
            (u32::MAX, u32::MAX, u32::MAX),
        ] {
            match KeyFile::decode(&with(m, t, p)) {
                Err(DecodeError::TooLarge(_)) => {}
                r => panic!("{m} {t} {p}: {:?}", r.map(|_| ())),
            }
        }
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        // A key file built in memory with such parameters does not open.
        let mut costly = kf.clone();
        if let Protection::Passphrase { params, .. } = &mut costly.protection {
            params.m_kib = 4 * 1024 * 1024;
        }
        assert!(matches!(
            costly.open(Some(b"pw")),
            Err(KeyError::Decode(DecodeError::TooLarge(_)))
        ));
    }

    fn kf_sealed_len(kf: &KeyFile) -> usize {
        match &kf.protection {
            Protection::Passphrase { sealed, .. } => sealed.len(),
            Protection::Plain(_) => unreachable!(),
        }
    }
}
