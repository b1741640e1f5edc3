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
//! one. Verification is O(log n).
//!
//! Proofs come from stored nodes ([`Nodes`]): the roots of the complete
//! (perfect) subtrees, which never change once made. [`Frontier`] emits
//! them in post-order as leaves are appended (the layout of the vault's node
//! file, [`node_position`]), keeps the root in O(log n) per append, and
//! [`inclusion_proof_from`] / [`consistency_proof_from`] read O(log n)
//! stored nodes per subtree root they need (at most O(log² n) hashes, a few
//! hundred at a million entries). The slice functions ([`root`],
//! [`inclusion_proof`], [`consistency_proof`]) recompute everything from
//! the leaves (O(n)): they are the reference the stored-node functions are
//! tested against, and what a reader holding every leaf uses.

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

/// Largest power of two strictly below `n` (n ≥ 2), on u64.
fn split64(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// Nodes stored for the first `n` leaves: every leaf and every complete
/// subtree root (2n − popcount(n)).
pub fn stored_nodes(n: u64) -> u64 {
    2 * n - n.count_ones() as u64
}

/// Where the root of the complete subtree of height `level` over leaves
/// `index·2^level ..` sits among the stored nodes, in post-order (the order
/// [`Frontier::push`] emits them, so the node file only ever grows).
pub fn node_position(level: u32, index: u64) -> u64 {
    stored_nodes(index << level) + (1u64 << (level + 1)) - 2
}

/// Stored complete-subtree roots: `node(level, index)` is the root over
/// leaves `index·2^level .. (index+1)·2^level` (level 0: the leaf hashes).
/// None if it cannot be read.
pub trait Nodes {
    fn node(&self, level: u32, index: u64) -> Option<Hash>;
}

/// The root over leaves `start .. start+len` from stored nodes, for the
/// ranges the RFC 6962 recursion visits (aligned: O(log len) nodes).
pub fn range_root<N: Nodes + ?Sized>(t: &N, start: u64, len: u64) -> Option<Hash> {
    if len == 0 {
        return Some(empty_root());
    }
    if len.is_power_of_two() && start.is_multiple_of(len) {
        let level = len.trailing_zeros();
        return t.node(level, start >> level);
    }
    let k = split64(len);
    Some(node_hash(
        &range_root(t, start, k)?,
        &range_root(t, start + k, len - k)?,
    ))
}

/// [`inclusion_proof`] from stored nodes, for a tree of `n` leaves.
pub fn inclusion_proof_from<N: Nodes + ?Sized>(t: &N, n: u64, index: u64) -> Option<Vec<Hash>> {
    if index >= n {
        return None;
    }
    fn path<N: Nodes + ?Sized>(
        t: &N,
        m: u64,
        start: u64,
        len: u64,
        out: &mut Vec<Hash>,
    ) -> Option<()> {
        if len <= 1 {
            return Some(());
        }
        let k = split64(len);
        if m < k {
            path(t, m, start, k, out)?;
            out.push(range_root(t, start + k, len - k)?);
        } else {
            path(t, m - k, start + k, len - k, out)?;
            out.push(range_root(t, start, k)?);
        }
        Some(())
    }
    let mut out = Vec::new();
    path(t, index, 0, n, &mut out)?;
    Some(out)
}

/// [`consistency_proof`] from stored nodes: from the first `m` leaves to
/// all `n`. None if m > n (or a node cannot be read).
pub fn consistency_proof_from<N: Nodes + ?Sized>(t: &N, n: u64, m: u64) -> Option<Vec<Hash>> {
    if m > n {
        return None;
    }
    if m == 0 || m == n {
        return Some(Vec::new());
    }
    fn subproof<N: Nodes + ?Sized>(
        t: &N,
        m: u64,
        start: u64,
        len: u64,
        complete: bool,
        out: &mut Vec<Hash>,
    ) -> Option<()> {
        if m == len {
            if !complete {
                out.push(range_root(t, start, len)?);
            }
            return Some(());
        }
        let k = split64(len);
        if m <= k {
            subproof(t, m, start, k, complete, out)?;
            out.push(range_root(t, start + k, len - k)?);
        } else {
            subproof(t, m - k, start + k, len - k, false, out)?;
            out.push(range_root(t, start, k)?);
        }
        Some(())
    }
    let mut out = Vec::new();
    subproof(t, m, 0, n, true, &mut out)?;
    Some(out)
}

/// The right edge of the tree: the roots of its perfect subtrees, largest
/// first. An append costs O(log n) and reports the nodes it completed.
#[derive(Clone, Debug, Default)]
pub struct Frontier {
    peaks: Vec<(u32, Hash)>,
    size: u64,
}

impl Frontier {
    pub fn new() -> Self {
        Self::default()
    }

    /// Leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf hash; returns the nodes it completed in post-order
    /// (the leaf first, then each new parent), i.e. the stored nodes from
    /// position `stored_nodes(size)` on.
    pub fn push(&mut self, leaf: Hash) -> Vec<Hash> {
        let mut made = vec![leaf];
        self.peaks.push((0, leaf));
        while self.peaks.len() >= 2
            && self.peaks[self.peaks.len() - 1].0 == self.peaks[self.peaks.len() - 2].0
        {
            let (l, right) = self.peaks.pop().expect("two");
            let (_, left) = self.peaks.pop().expect("two");
            let up = node_hash(&left, &right);
            made.push(up);
            self.peaks.push((l + 1, up));
        }
        self.size += 1;
        made
    }

    /// The tree's root: O(log n).
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        match it.next() {
            None => empty_root(),
            Some((_, last)) => it.fold(*last, |acc, (_, h)| node_hash(h, &acc)),
        }
    }
}

/// Every stored node in memory, per level (tests, and small trees).
#[derive(Clone, Debug, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
    frontier: Frontier,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, leaf: Hash) {
        let made = self.frontier.push(leaf);
        for (level, h) in made.into_iter().enumerate() {
            if self.levels.len() <= level {
                self.levels.push(Vec::new());
            }
            self.levels[level].push(h);
        }
    }

    pub fn size(&self) -> u64 {
        self.frontier.size()
    }

    pub fn root(&self) -> Hash {
        self.frontier.root()
    }

    pub fn inclusion_proof(&self, index: u64) -> Option<Vec<Hash>> {
        inclusion_proof_from(self, self.size(), index)
    }

    pub fn consistency_proof(&self, m: u64) -> Option<Vec<Hash>> {
        consistency_proof_from(self, self.size(), m)
    }
}

impl Nodes for Tree {
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        self.levels
            .get(level as usize)?
            .get(usize::try_from(index).ok()?)
            .copied()
    }
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

    /// Stored nodes in post-order, as a node file holds them.
    struct Flat(Vec<Hash>);
    impl Nodes for Flat {
        fn node(&self, level: u32, index: u64) -> Option<Hash> {
            self.0.get(node_position(level, index) as usize).copied()
        }
    }

    #[test]
    fn stored_node_proofs_match_the_reference_for_every_small_tree() {
        let mut tree = Tree::new();
        let mut flat = Flat(Vec::new());
        let mut f = Frontier::new();
        let all = leaves(70);
        for n in 1..=all.len() {
            let l = &all[..n];
            tree.push(l[n - 1]);
            assert_eq!(flat.0.len() as u64, stored_nodes(n as u64 - 1));
            flat.0.extend(f.push(l[n - 1]));
            assert_eq!(flat.0.len() as u64, stored_nodes(n as u64));
            assert_eq!(tree.root(), root(l), "n={n}");
            assert_eq!(f.root(), root(l), "n={n}");
            assert_eq!(range_root(&flat, 0, n as u64), Some(root(l)));
            for i in 0..=n {
                assert_eq!(
                    tree.inclusion_proof(i as u64),
                    inclusion_proof(l, i),
                    "n={n} i={i}"
                );
                assert_eq!(
                    inclusion_proof_from(&flat, n as u64, i as u64),
                    inclusion_proof(l, i)
                );
                assert_eq!(
                    tree.consistency_proof(i as u64),
                    consistency_proof(l, i),
                    "n={n} m={i}"
                );
                assert_eq!(
                    consistency_proof_from(&flat, n as u64, i as u64),
                    consistency_proof(l, i)
                );
            }
            assert_eq!(tree.consistency_proof(n as u64 + 1), None);
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Random sizes up to 3000 leaves and random positions: the
        /// stored-node proofs are byte-identical to the reference, and a
        /// missing node makes the proof fail rather than come out wrong.
        #[test]
        fn stored_node_proofs_are_the_reference_proofs(
            n in 1usize..3000,
            a in 0usize..3000,
            b in 0usize..3000,
        ) {
            let l = leaves(n);
            let mut f = Frontier::new();
            let mut flat = Flat(Vec::new());
            for h in &l {
                flat.0.extend(f.push(*h));
            }
            let (i, m) = (a % n, b % (n + 1));
            proptest::prop_assert_eq!(f.root(), root(&l));
            proptest::prop_assert_eq!(
                inclusion_proof_from(&flat, n as u64, i as u64),
                inclusion_proof(&l, i)
            );
            proptest::prop_assert_eq!(
                consistency_proof_from(&flat, n as u64, m as u64),
                consistency_proof(&l, m)
            );
            let p = inclusion_proof_from(&flat, n as u64, i as u64).unwrap();
            proptest::prop_assert!(verify_inclusion(&l[i], i as u64, n as u64, &p, &f.root()));
            // With nodes missing, a proof is refused, never wrong.
            flat.0.truncate(flat.0.len() / 2);
            let cut = inclusion_proof_from(&flat, n as u64, i as u64);
            proptest::prop_assert!(cut.is_none() || cut == inclusion_proof(&l, i));
            let cut = consistency_proof_from(&flat, n as u64, m as u64);
            proptest::prop_assert!(cut.is_none() || cut == consistency_proof(&l, m));
            if n > 1 {
                proptest::prop_assert!(range_root(&flat, 0, n as u64).is_none());
            }
        }
    }

    #[test]
    fn known_small_roots() {
        // Structure check independent of the proof code.
        let l = leaves(3);
        assert_eq!(root(&l), node_hash(&node_hash(&l[0], &l[1]), &l[2]));
        assert_eq!(root(&[]), empty_root());
    }
}
