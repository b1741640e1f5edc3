//! The restore key split M-of-N (Shamir over GF(256), from `vsss-rs`).
//!
//! A share file holds one share of a restore key's secret payload (the
//! 96 bytes a restore key file seals: id key, repository secret,
//! identity), with what a shareholder and `combine` need to know:
//!
//! | field       | bytes | meaning                                               |
//! |-------------|-------|-------------------------------------------------------|
//! | magic       | 8     | `HFSHARE1`                                            |
//! | config id   | 32    | the repository config the key pins                    |
//! | name        | u32+n | the restore key's name                                |
//! | split id    | 16    | random, one per `key split`: shares of two splits never mix |
//! | threshold   | 1     | M                                                     |
//! | count       | 1     | N                                                     |
//! | index       | 1     | this share's participant number, 1..=N               |
//! | check       | 32    | BLAKE3 derive_key(CHECK_CONTEXT, split id ‖ payload)  |
//! | protection  | …     | as a key file: 0 = plain bytes, 1 = Argon2id-wrapped (AAD = every byte before) |
//! | checksum    | 32    | BLAKE3 of every byte before it                        |
//!
//! The share bytes are vsss-rs's GF(256) share: the index, then one byte
//! per payload byte. Combining too few or damaged shares would silently
//! give wrong bytes; the check value catches that, and the checksum (and,
//! when wrapped, the AEAD) catches a damaged file before.
//!
//! Splitting again is not revoking: old shares still rebuild the old
//! secret. Revoking a shareholder means rotating the restore key.

use zeroize::Zeroizing;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, CryptoError, KdfParams};
use crate::format::{MAX_NAME, Role};
use crate::id::ObjectId;
use crate::keyfile::{Protection, Secret};

pub const SHARE_MAGIC: &[u8; 8] = b"HFSHARE1";
const CHECK_CONTEXT: &str = "holdfast 2026 restore key split check v1";
/// Payload bytes of a restore key (without earlier epochs; more with).
const PAYLOAD: usize = 96;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("not a holdfast key share: {0}")]
    Decode(#[from] DecodeError),
    #[error("damaged share: its checksum does not match")]
    Checksum,
    #[error("{0}")]
    Crypto(#[from] CryptoError),
    #[error("this share is passphrase-protected")]
    NeedsPassphrase,
    #[error("{0}")]
    Mismatch(String),
    #[error("only {have} distinct share(s) of a {m}-of-{n} split; {m} are needed")]
    TooFew { have: usize, m: u8, n: u8 },
    #[error(
        "the shares do not rebuild the key (its check value differs): one of them is damaged or forged"
    )]
    WrongResult,
    #[error("cannot split: {0}")]
    Split(String),
}

/// One share file.
#[derive(Clone, Debug)]
pub struct ShareFile {
    pub config_id: ObjectId,
    pub name: String,
    pub split_id: [u8; 16],
    pub threshold: u8,
    pub count: u8,
    pub index: u8,
    pub check: [u8; 32],
    protection: Protection,
}

fn check_value(split_id: &[u8; 16], payload: &[u8]) -> [u8; 32] {
    let mut h = blake3::Hasher::new_derive_key(CHECK_CONTEXT);
    h.update(split_id);
    h.update(payload);
    *h.finalize().as_bytes()
}

/// Splits a restore key's secret into `count` shares, any `threshold` of
/// which rebuild it. Each share is wrapped with the passphrase its
/// callback returns for its index (None: plain).
pub fn split(
    secret: &Secret,
    name: &str,
    config_id: ObjectId,
    threshold: u8,
    count: u8,
    mut passphrase: impl FnMut(u8) -> Option<(Zeroizing<Vec<u8>>, KdfParams)>,
) -> Result<Vec<ShareFile>, ShareError> {
    if !matches!(secret, Secret::Restore { .. }) {
        return Err(ShareError::Split("only the restore key is split".into()));
    }
    if threshold < 2 || threshold > count {
        return Err(ShareError::Split(format!(
            "the threshold must be between 2 and the number of shares (got {threshold} of {count})"
        )));
    }
    let payload = secret.payload();
    let split_id: [u8; 16] = crypto::random_bytes()?;
    let check = check_value(&split_id, &payload);
    let rng = rand_core::UnwrapErr(getrandom::SysRng);
    let raw =
        vsss_rs::Gf256::split_bytes(threshold as usize, count as usize, payload.as_slice(), rng)
            .map_err(|e| ShareError::Split(format!("{e:?}")))?;
    let mut out = Vec::with_capacity(raw.len());
    for share in raw {
        let share = Zeroizing::new(share);
        let index = share[0];
        let mut f = ShareFile {
            config_id,
            name: name.to_string(),
            split_id,
            threshold,
            count,
            index,
            check,
            protection: Protection::Plain(Zeroizing::new(Vec::new())),
        };
        f.protection = match passphrase(index) {
            None => Protection::Plain(share),
            Some((pw, params)) => {
                let aad = f.header().into_vec();
                let (salt, sealed) = crypto::wrap_with_passphrase(&pw, params, &aad, &share)?;
                Protection::Passphrase {
                    params,
                    salt,
                    sealed,
                }
            }
        };
        out.push(f);
    }
    Ok(out)
}

/// Rebuilds the restore key's secret from opened shares (file, share
/// bytes). Refuses shares of different splits, repeated indices, too few
/// shares, and a result whose check value differs.
pub fn combine(shares: &[(ShareFile, Zeroizing<Vec<u8>>)]) -> Result<Secret, ShareError> {
    let Some((first, _)) = shares.first() else {
        return Err(ShareError::TooFew {
            have: 0,
            m: 0,
            n: 0,
        });
    };
    let mut seen = Vec::new();
    // Wrapped from the start: an early refusal leaves no share bytes behind.
    let mut raw = Zeroizing::new(Vec::with_capacity(shares.len()));
    for (i, (f, bytes)) in shares.iter().enumerate() {
        if f.config_id != first.config_id {
            return Err(ShareError::Mismatch(format!(
                "share {} is of another repository's key (config id {}, not {})",
                i + 1,
                f.config_id.short(),
                first.config_id.short()
            )));
        }
        if f.split_id != first.split_id
            || f.threshold != first.threshold
            || f.count != first.count
            || f.check != first.check
            || f.name != first.name
        {
            return Err(ShareError::Mismatch(format!(
                "share {} is from another split of the key than share 1",
                i + 1
            )));
        }
        if bytes.len() != shares[0].1.len() || bytes.len() < PAYLOAD + 1 || bytes[0] != f.index {
            return Err(ShareError::Mismatch(format!(
                "share {} does not hold the share its header names",
                i + 1
            )));
        }
        if !seen.contains(&f.index) {
            seen.push(f.index);
            raw.push(bytes.to_vec());
        }
    }
    if raw.len() < first.threshold as usize {
        return Err(ShareError::TooFew {
            have: raw.len(),
            m: first.threshold,
            n: first.count,
        });
    }
    let payload = Zeroizing::new(
        vsss_rs::Gf256::combine_bytes(&raw[..]).map_err(|_| ShareError::WrongResult)?,
    );
    if check_value(&first.split_id, &payload) != first.check {
        return Err(ShareError::WrongResult);
    }
    Secret::from_payload(Role::Restore, &payload).map_err(ShareError::Decode)
}

impl ShareFile {
    fn header(&self) -> Writer {
        let mut w = Writer::new();
        w.raw(SHARE_MAGIC)
            .raw(&self.config_id.0)
            .bytes(self.name.as_bytes())
            .raw(&self.split_id)
            .u8(self.threshold)
            .u8(self.count)
            .u8(self.index)
            .raw(&self.check);
        w
    }

    pub fn needs_passphrase(&self) -> bool {
        matches!(self.protection, Protection::Passphrase { .. })
    }

    /// The share bytes (index, then one byte per payload byte).
    pub fn open(&self, passphrase: Option<&[u8]>) -> Result<Zeroizing<Vec<u8>>, ShareError> {
        match &self.protection {
            Protection::Plain(p) => Ok(p.clone()),
            Protection::Passphrase {
                params,
                salt,
                sealed,
            } => {
                let pw = passphrase.ok_or(ShareError::NeedsPassphrase)?;
                let aad = self.header().into_vec();
                Ok(crypto::unwrap_with_passphrase(
                    pw, *params, salt, &aad, sealed,
                )?)
            }
        }
    }

    pub fn encode(&self) -> Zeroizing<Vec<u8>> {
        let mut w = self.header();
        self.protection.write(&mut w);
        let mut v = Zeroizing::new(w.into_vec());
        let sum = *blake3::hash(&v).as_bytes();
        v.extend_from_slice(&sum);
        v
    }

    /// True when `b` starts like a share file (to tell a share passed as
    /// `--key` from a key file).
    pub fn is_share(b: &[u8]) -> bool {
        b.starts_with(SHARE_MAGIC)
    }

    pub fn decode(b: &[u8]) -> Result<Self, ShareError> {
        if !Self::is_share(b) {
            return Err(DecodeError::BadMagic("key share").into());
        }
        if b.len() < 8 + 32 {
            return Err(DecodeError::Truncated {
                at: b.len(),
                wanted: 40 - b.len(),
            }
            .into());
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(ShareError::Checksum);
        }
        let mut r = Reader::new(body);
        r.magic(SHARE_MAGIC, "key share")?;
        let config_id = ObjectId(r.array()?);
        let name = String::from_utf8(r.bytes(MAX_NAME, "key name")?.to_vec())
            .map_err(|_| DecodeError::Invalid("key name"))?;
        let split_id = r.array()?;
        let threshold = r.u8()?;
        let count = r.u8()?;
        let index = r.u8()?;
        if threshold < 2 || threshold > count || index == 0 || index > count {
            return Err(DecodeError::Invalid("share numbering").into());
        }
        let check = r.array()?;
        let protection = Protection::read(&mut r)?;
        r.finish()?;
        Ok(ShareFile {
            config_id,
            name,
            split_id,
            threshold,
            count,
            index,
            check,
            protection,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{IdKey, Identity, RepoSecret};

    fn restore_secret() -> Secret {
        Secret::Restore {
            id_key: IdKey::from_bytes(crypto::random_bytes().unwrap()),
            secret: RepoSecret::generate().unwrap(),
            identity: Identity::generate().unwrap(),
        }
    }

    fn opened(files: &[ShareFile], pick: &[usize]) -> Vec<(ShareFile, Zeroizing<Vec<u8>>)> {
        pick.iter()
            .map(|&i| {
                let f = ShareFile::decode(&files[i].encode()).unwrap();
                let b = f.open(Some(b"pw")).unwrap();
                (f, b)
            })
            .collect()
    }

    const FAST: KdfParams = KdfParams {
        m_kib: 64,
        t: 1,
        p: 1,
    };

    #[test]
    fn every_three_of_five_rebuild_the_key_and_two_do_not() {
        let s = restore_secret();
        let want = s.payload();
        let files = split(&s, "restore", ObjectId([3; 32]), 3, 5, |_| {
            Some((Zeroizing::new(b"pw".to_vec()), FAST))
        })
        .unwrap();
        assert_eq!(files.len(), 5);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let k = combine(&opened(&files, &[a, b, c])).unwrap();
                    assert_eq!(*k.payload(), *want);
                }
                let e = combine(&opened(&files, &[a, b])).err().expect("refused");
                assert!(matches!(e, ShareError::TooFew { have: 2, m: 3, .. }), "{e}");
            }
        }
        // The same share twice counts once.
        assert!(combine(&opened(&files, &[0, 0, 1])).is_err());
    }

    #[test]
    fn damaged_foreign_and_forged_shares_are_refused() {
        let s = restore_secret();
        let files = split(&s, "restore", ObjectId([3; 32]), 2, 3, |_| None).unwrap();
        let other = split(&s, "restore", ObjectId([3; 32]), 2, 3, |_| None).unwrap();
        // A flipped byte anywhere: the checksum.
        let good = files[0].encode();
        for at in [0usize, 20, good.len() / 2, good.len() - 1] {
            let mut b = good.to_vec();
            b[at] ^= 1;
            assert!(ShareFile::decode(&b).is_err(), "flip at {at}");
        }
        // A share of another split of the same key.
        let mut mix = opened(&files, &[0]);
        mix.extend(opened(&other, &[1]));
        assert!(matches!(
            combine(&mix).err().expect("refused"),
            ShareError::Mismatch(_)
        ));
        // A forged share with a valid checksum: the check value.
        let mut forged = opened(&files, &[0, 1]);
        forged[1].1[5] ^= 0x40;
        assert!(matches!(
            combine(&forged).err().expect("refused"),
            ShareError::WrongResult
        ));
        // Wrapped shares need their passphrase, and only theirs.
        let w = split(&s, "restore", ObjectId([3; 32]), 2, 2, |i| {
            Some((Zeroizing::new(vec![i]), FAST))
        })
        .unwrap();
        assert!(matches!(w[0].open(None), Err(ShareError::NeedsPassphrase)));
        assert!(w[0].open(Some(&[2])).is_err());
        assert!(w[0].open(Some(&[1])).is_ok());
    }

    /// One share alone says nothing about the secret: over many splits of
    /// the same secret, each byte of a share takes every value about
    /// equally often (coefficients uniform over the whole field).
    #[test]
    fn a_single_share_is_uniform() {
        let s = restore_secret();
        let mut counts = [0u32; 256];
        let rounds = 400;
        for _ in 0..rounds {
            let files = split(&s, "restore", ObjectId([3; 32]), 2, 2, |_| None).unwrap();
            let b = files[0].open(None).unwrap();
            for &x in &b[1..] {
                counts[x as usize] += 1;
            }
        }
        // 400 × 96 samples over 256 values: 150 expected per value. A
        // chi-squared test with 255 degrees of freedom: p = 0.0001 at ~341.
        let n = (rounds * PAYLOAD) as f64;
        let e = n / 256.0;
        let chi: f64 = counts.iter().map(|&c| (c as f64 - e).powi(2) / e).sum();
        assert!(chi < 341.0, "chi-squared {chi}");
        assert!(counts.iter().all(|&c| c > 0));
    }

    #[test]
    fn decode_never_panics_on_garbage() {
        let s = restore_secret();
        let f = split(&s, "r", ObjectId([1; 32]), 2, 2, |_| None).unwrap();
        let good = f[0].encode();
        for n in 0..good.len() {
            let _ = ShareFile::decode(&good[..n]);
        }
        let _ = ShareFile::decode(b"HFSHARE1");
    }
}
