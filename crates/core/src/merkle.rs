//! The append-only log's Merkle tree, as in RFC 6962 / RFC 9162 (Certificate
//! Transparency), with BLAKE3 as the hash:
//!
//! * leaf hash  = BLAKE3(0x00 ‖ entry)
//! * node hash  = BLAKE3(0x01 ‖ left ‖ right)
//! * the tree over n leaves splits at k, the largest power of two below n;
//!   the empty tree's root is BLAKE3("").
//!
//! A **checkpoint** is the vault's signed statement (size, root, time). A
//! party that holds a checkpoint it verified demands a consistency proof from
//! it to any newer one: a rollback, a fork or a removed entry cannot produce
//! one. Proof generation here recomputes subtree hashes from the leaf hashes
//! (O(n) per proof); verification is O(log n).

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, CryptoError, Identity};

pub type Hash = [u8; 32];

pub const CHECKPOINT_MAGIC: &[u8; 8] = b"HFCHKPT1";
pub const SIG_CHECKPOINT: &str = "holdfast checkpoint v1";

pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[0]);
    h.update(entry);
    *h.finalize().as_bytes()
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = blake3::Hasher::new();
    h.update(&[1]);
    h.update(left);
    h.update(right);
    *h.finalize().as_bytes()
}

pub fn empty_root() -> Hash {
    *blake3::hash(b"").as_bytes()
}

/// Largest power of two strictly below `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// Merkle tree hash over leaf hashes (RFC 9162 §2.1.1).
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// Inclusion proof of leaf `index` in the tree over `leaves` (§2.1.3.1).
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
        let n = d.len();
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            path(m, &d[..k], out);
            out.push(root(&d[k..]));
        } else {
            path(m - k, &d[k..], out);
            out.push(root(&d[..k]));
        }
    }
    let mut out = Vec::new();
    path(index, leaves, &mut out);
    Some(out)
}

/// Verifies an inclusion proof (§2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &r == root
}

/// Consistency proof between the first `m` leaves and all of `leaves`
/// (§2.1.4.1). Empty for m = 0 or m = n.
pub fn consistency_proof(leaves: &[Hash], m: usize) -> Option<Vec<Hash>> {
    let n = leaves.len();
    if m > n {
        return None;
    }
    if m == 0 || m == n {
        return Some(Vec::new());
    }
    fn subproof(m: usize, d: &[Hash], complete: bool, out: &mut Vec<Hash>) {
        let n = d.len();
        if m == n {
            if !complete {
                out.push(root(d));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            subproof(m, &d[..k], complete, out);
            out.push(root(&d[k..]));
        } else {
            subproof(m - k, &d[k..], false, out);
            out.push(root(&d[..k]));
        }
    }
    let mut out = Vec::new();
    subproof(m, leaves, true, &mut out);
    Some(out)
}

/// Verifies that the tree of size `n` with root `root_n` extends the tree of
/// size `m` with root `root_m` (§2.1.4.2).
pub fn verify_consistency(m: u64, n: u64, root_m: &Hash, root_n: &Hash, proof: &[Hash]) -> bool {
    if m > n {
        return false;
    }
    if m == n {
        return proof.is_empty() && root_m == root_n;
    }
    if m == 0 {
        // Everything extends the empty tree.
        return proof.is_empty();
    }
    let mut proof: Vec<Hash> = proof.to_vec();
    if m.is_power_of_two() {
        proof.insert(0, *root_m);
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    let (mut fn_, mut sn) = (m - 1, n - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if sn == 0 {
            return false;
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fn_ & 1 == 0 {
                while fn_ & 1 == 0 && fn_ != 0 {
                    fn_ >>= 1;
                    sn >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    sn == 0 && &fr == root_m && &sr == root_n
}

/// The vault's signed statement of the log at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    pub config_id: [u8; 32],
    pub size: u64,
    pub root: Hash,
    /// The vault's clock.
    pub time_ns: i64,
    pub signer: [u8; 32],
    pub signature: [u8; 64],
}

impl Checkpoint {
    fn signed_part(
        config_id: &[u8; 32],
        size: u64,
        root: &Hash,
        time_ns: i64,
        signer: &[u8; 32],
    ) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        w.raw(CHECKPOINT_MAGIC)
            .raw(config_id)
            .u64(size)
            .raw(root)
            .i64(time_ns)
            .raw(signer);
        w.into_vec()
    }

    pub fn sign(
        config_id: [u8; 32],
        size: u64,
        root: Hash,
        time_ns: i64,
        vault: &Identity,
    ) -> Self {
        let signer = vault.public();
        let msg = Self::signed_part(&config_id, size, &root, time_ns, &signer);
        Checkpoint {
            config_id,
            size,
            root,
            time_ns,
            signer,
            signature: vault.sign(SIG_CHECKPOINT, &msg),
        }
    }

    /// Checks the signature and that it was made by `expected_signer`.
    pub fn verify(&self, expected_signer: &[u8; 32]) -> Result<(), CryptoError> {
        if &self.signer != expected_signer {
            return Err(CryptoError::BadSignature);
        }
        let msg = Self::signed_part(
            &self.config_id,
            self.size,
            &self.root,
            self.time_ns,
            &self.signer,
        );
        crypto::verify(&self.signer, SIG_CHECKPOINT, &msg, &self.signature)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Self::signed_part(
            &self.config_id,
            self.size,
            &self.root,
            self.time_ns,
            &self.signer,
        );
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(CHECKPOINT_MAGIC, "checkpoint")?;
        let c = Checkpoint {
            config_id: r.array()?,
            size: r.u64()?,
            root: r.array()?,
            time_ns: r.i64()?,
            signer: r.array()?,
            signature: r.array()?,
        };
        r.finish()?;
        Ok(c)
    }
}

/// What a witness concludes when shown a newer checkpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Consistency {
    /// The new checkpoint extends the old one.
    Extends,
    /// Smaller than the one we hold: the log was rolled back.
    Rollback { held: u64, shown: u64 },
    /// Same or larger size, but not an extension: a fork or an altered entry.
    Fork,
}

/// Decides whether `new` extends `held`, given a consistency proof.
pub fn check_extends(held: &Checkpoint, new: &Checkpoint, proof: &[Hash]) -> Consistency {
    if new.size < held.size {
        return Consistency::Rollback {
            held: held.size,
            shown: new.size,
        };
    }
    if verify_consistency(held.size, new.size, &held.root, &new.root, proof) {
        Consistency::Extends
    } else {
        Consistency::Fork
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_tampering_fails() {
        for n in 1..=40 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(&l, i).unwrap();
                assert!(
                    verify_inclusion(&l[i], i as u64, n as u64, &p, &r),
                    "n={n} i={i}"
                );
                assert!(!verify_inclusion(
                    &leaf_hash(b"other"),
                    i as u64,
                    n as u64,
                    &p,
                    &r
                ));
                // A proof is bound to the (size, root) of a signed
                // checkpoint: against the next tree's root it fails.
                let mut next = l.clone();
                next.push(leaf_hash(b"next"));
                assert!(
                    !verify_inclusion(&l[i], i as u64, n as u64 + 1, &p, &root(&next)),
                    "n={n} i={i}"
                );
                if let Some(first) = p.first() {
                    let mut bad = p.clone();
                    bad[0] = node_hash(first, first);
                    assert!(!verify_inclusion(&l[i], i as u64, n as u64, &bad, &r));
                }
            }
        }
    }

    #[test]
    fn every_consistency_proof_verifies() {
        for n in 1..=40 {
            let l = leaves(n);
            let rn = root(&l);
            for m in 0..=n {
                let rm = root(&l[..m]);
                let p = consistency_proof(&l, m).unwrap();
                assert!(
                    verify_consistency(m as u64, n as u64, &rm, &rn, &p),
                    "m={m} n={n}"
                );
                if m > 0 && m < n {
                    // A proof for another old root fails.
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &leaf_hash(b"x"),
                        &rn,
                        &p
                    ));
                    // Truncated proof fails.
                    assert!(!verify_consistency(
                        m as u64,
                        n as u64,
                        &rm,
                        &rn,
                        &p[..p.len() - 1]
                    ));
                }
            }
        }
    }

    #[test]
    fn rollback_fork_and_removed_entry_are_detected() {
        let vault = Identity::from_bytes([9; 32]);
        let l = leaves(20);
        let held = Checkpoint::sign([1; 32], 12, root(&l[..12]), 5, &vault);
        held.verify(&vault.public()).unwrap();
        // Honest extension.
        let new = Checkpoint::sign([1; 32], 20, root(&l), 6, &vault);
        let p = consistency_proof(&l, 12).unwrap();
        assert_eq!(check_extends(&held, &new, &p), Consistency::Extends);
        // Rollback.
        let old = Checkpoint::sign([1; 32], 8, root(&l[..8]), 7, &vault);
        assert!(matches!(
            check_extends(&held, &old, &[]),
            Consistency::Rollback { .. }
        ));
        // Entry 5 altered, then the log re-signed: no proof can link them.
        let mut forked = l.clone();
        forked[5] = leaf_hash(b"rewritten history");
        let f = Checkpoint::sign([1; 32], 20, root(&forked), 8, &vault);
        let fp = consistency_proof(&forked, 12).unwrap();
        assert_eq!(check_extends(&held, &f, &fp), Consistency::Fork);
        // Entry removed.
        let mut removed = l.clone();
        removed.remove(3);
        let r = Checkpoint::sign([1; 32], 19, root(&removed), 9, &vault);
        let rp = consistency_proof(&removed, 12).unwrap();
        assert_eq!(check_extends(&held, &r, &rp), Consistency::Fork);
        // Signatures bind every field; another key is refused.
        let mut bad = new.clone();
        bad.size = 21;
        assert!(bad.verify(&vault.public()).is_err());
        assert!(new.verify(&Identity::from_bytes([8; 32]).public()).is_err());
        assert_eq!(Checkpoint::decode(&new.encode()).unwrap(), new);
    }

    #[test]
    fn known_small_roots() {
        // Structure check independent of the proof code.
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(root(&[]), empty_root());
    }
}
