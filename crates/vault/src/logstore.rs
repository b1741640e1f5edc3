//! The vault's log on disk: `vault/log` holds length-prefixed entries
//! (u32 length, then the entry), appended and fsynced one at a time;
//! `vault/checkpoint` holds the latest signed checkpoint, replaced
//! atomically after each append; `vault/log.nodes` holds the Merkle tree's
//! stored nodes (every leaf hash and complete-subtree root, 32 bytes each,
//! in post-order: [`merkle::node_position`]), from which proofs are made in
//! O(log n) node reads instead of from every leaf.
//!
//! An append is: write the nodes the new leaf completes (at their fixed
//! positions, fsynced), sign the checkpoint that will cover the new entry
//! and store it as `checkpoint.next` (atomically), append the entry and
//! fsync, then rename `checkpoint.next` over `checkpoint`. So every
//! complete entry on disk is covered by a checkpoint the vault signed
//! *before* writing it. Nodes written for an append that did not happen
//! lie past the end and are overwritten by the next one.
//!
//! On open the log is read once, streaming (memory: one offset per entry,
//! not the entries), and checked against the checkpoint: fewer entries than
//! the checkpoint names, or a different root, means the log was cut or
//! altered and the vault refuses to start. A crash after the append but
//! before the rename is finished from `checkpoint.next`. A torn last record
//! (crash mid-append) is dropped; it was never acknowledged. Complete
//! entries that no signed checkpoint covers were appended by someone else:
//! the vault refuses to start rather than adopt them (or drop them unseen).
//!
//! The node file is derived data, checked node by node against the log at
//! every open: missing or short, it is rebuilt (extended) from the log; a
//! node that differs means it was damaged, and the file is kept aside as
//! evidence (`log.nodes.damaged-TIME`, never deleted) and rebuilt.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use holdfast_core::crypto::Identity;
use holdfast_core::merkle::{self, Checkpoint, Frontier, Hash, Nodes};
use holdfast_core::vaultlog::{Entry, frame};

use crate::VaultError;

/// Largest entry the log holds (a proposal or vote is a few KiB; the body
/// cap is 8 MiB): a length field beyond it is a torn or damaged record.
const MAX_ENTRY: usize = 16 << 20;

pub struct LogStore {
    path: PathBuf,
    checkpoint_path: PathBuf,
    file: File,
    /// For reading entries back (positioned reads, shared by readers).
    reader: File,
    /// Where each entry's record starts in the log file.
    offsets: Vec<u64>,
    nodes: NodeFile,
    /// The right edge of the tree: the root after an append costs O(log n).
    frontier: Frontier,
    pub checkpoint: Checkpoint,
    /// Bytes of the log file that hold whole, covered entries.
    len: u64,
    /// Set when an append failed halfway in a way this process cannot undo
    /// (the entry is on disk but the checkpoint rename failed, or a failed
    /// write could not be cut back): no further append until a restart
    /// finishes or drops it.
    poisoned: bool,
}

/// The stored nodes, read with positioned reads.
struct NodeFile {
    path: PathBuf,
    file: File,
}

impl Nodes for NodeFile {
    fn node(&self, level: u32, index: u64) -> Option<Hash> {
        let mut h = [0u8; 32];
        let pos = merkle::node_position(level, index).checked_mul(32)?;
        self.file.read_exact_at(&mut h, pos).ok()?;
        Some(h)
    }
}

fn io(path: &Path, e: std::io::Error) -> VaultError {
    VaultError::Io(format!("{}: {e}", path.display()))
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<(), VaultError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(|e| io(&tmp, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io(path, e))?;
    holdfast_store::fsync_dir(path.parent().unwrap()).map_err(|e| io(path, e))
}

/// Checks the node file against the nodes computed from the log, as they
/// come, and rebuilds what is missing or damaged.
struct NodeCheck {
    path: PathBuf,
    dir: PathBuf,
    now_ns: i64,
    /// Reading the existing file while it agrees.
    old: Option<BufReader<File>>,
    /// Writing from the first node it did not have (or got wrong).
    new: Option<BufWriter<File>>,
    pos: u64,
    damaged_at: Option<u64>,
}

impl NodeCheck {
    fn open(dir: &Path, now_ns: i64) -> Self {
        let path = dir.join("log.nodes");
        NodeCheck {
            old: File::open(&path)
                .ok()
                .map(|f| BufReader::with_capacity(1 << 16, f)),
            path,
            dir: dir.to_path_buf(),
            now_ns,
            new: None,
            pos: 0,
            damaged_at: None,
        }
    }

    /// From here on, nodes are written (the file is cut at `pos`; a
    /// damaged file is first kept aside and its good prefix copied).
    fn start_writing(&mut self, damaged: bool) -> Result<(), VaultError> {
        self.old = None;
        let keep = self.pos * 32;
        if damaged {
            let aside = self.dir.join(format!("log.nodes.damaged-{}", self.now_ns));
            std::fs::rename(&self.path, &aside).map_err(|e| io(&self.path, e))?;
            let mut src = File::open(&aside).map_err(|e| io(&aside, e))?;
            let mut dst = File::create(&self.path).map_err(|e| io(&self.path, e))?;
            std::io::copy(&mut (&mut src).take(keep), &mut dst).map_err(|e| io(&self.path, e))?;
        }
        let f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        f.set_len(keep).map_err(|e| io(&self.path, e))?;
        let mut w = BufWriter::with_capacity(1 << 16, f);
        std::io::Seek::seek(&mut w, std::io::SeekFrom::Start(keep))
            .map_err(|e| io(&self.path, e))?;
        self.new = Some(w);
        Ok(())
    }

    fn node(&mut self, h: &Hash) -> Result<(), VaultError> {
        if let Some(r) = &mut self.old {
            let mut got = [0u8; 32];
            match r.read_exact(&mut got) {
                Ok(()) if &got == h => {
                    self.pos += 1;
                    return Ok(());
                }
                Ok(()) => {
                    self.damaged_at = Some(self.pos);
                    self.start_writing(true)?;
                }
                Err(_) => self.start_writing(false)?,
            }
        } else if self.new.is_none() {
            self.start_writing(false)?;
        }
        let w = self.new.as_mut().expect("writing");
        w.write_all(h).map_err(|e| io(&self.path, e))?;
        self.pos += 1;
        Ok(())
    }

    /// Ends the check: the file holds exactly the nodes of the log, durably.
    fn finish(mut self) -> Result<(NodeFile, Option<u64>), VaultError> {
        if let Some(w) = self.new.take() {
            let f = w.into_inner().map_err(|e| io(&self.path, e.into_error()))?;
            f.sync_all().map_err(|e| io(&self.path, e))?;
            holdfast_store::fsync_dir(&self.dir).map_err(|e| io(&self.dir, e))?;
        }
        self.old = None;
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.path)
            .map_err(|e| io(&self.path, e))?;
        // Nodes past the log's end (an append that never happened).
        if file.metadata().map_err(|e| io(&self.path, e))?.len() != self.pos * 32 {
            file.set_len(self.pos * 32)
                .and_then(|_| file.sync_all())
                .map_err(|e| io(&self.path, e))?;
        }
        Ok((
            NodeFile {
                path: self.path,
                file,
            },
            self.damaged_at,
        ))
    }
}

impl LogStore {
    /// Opens (or creates, for a new vault) the log in `dir`. A new log's
    /// first checkpoint is signed by `first_signer` (the config's vault
    /// key; without it a new log is refused). An existing checkpoint must
    /// verify under its own signer and be of `config_id`: whether that
    /// signer is the vault key at its size is the log fold's question,
    /// which the caller asks once the log is read
    /// ([`holdfast_core::logstate::LogState::vault_key_at`]).
    pub fn open(
        dir: &Path,
        config_id: [u8; 32],
        first_signer: Option<&Identity>,
        now_ns: i64,
    ) -> Result<Self, VaultError> {
        let own: Vec<[u8; 32]> = first_signer.iter().map(|k| k.public()).collect();
        Self::open_holding(dir, config_id, first_signer, &own, now_ns)
    }

    /// [`Self::open`] by a vault holding the keys `own` (its `--key` and
    /// `--next-key`): a `checkpoint.next` left by a crash is taken over the
    /// checkpoint only if one of them signed it. One signed by another key
    /// never replaces the last good checkpoint: it is kept aside as
    /// evidence, or, if it matches an entry appended after the checkpoint
    /// (a crash while the vault held that key), the start is refused
    /// naming the key, with every file left as it is.
    pub fn open_holding(
        dir: &Path,
        config_id: [u8; 32],
        first_signer: Option<&Identity>,
        own: &[[u8; 32]],
        now_ns: i64,
    ) -> Result<Self, VaultError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join("log");
        let checkpoint_path = dir.join("checkpoint");
        let fresh = !path.exists() && !checkpoint_path.exists();
        if fresh {
            let Some(vault) = first_signer else {
                return Err(VaultError::Usage(
                    "this vault key is not the vault key of the repository's config (a new \
                     vault starts with the key `init` wrote)"
                        .into(),
                ));
            };
            File::create(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&path, e))?;
            let cp = Checkpoint::sign(config_id, 0, merkle::empty_root(), now_ns, vault);
            write_atomic(&checkpoint_path, &cp.encode())?;
        }
        let cp_bytes = std::fs::read(&checkpoint_path).map_err(|_| {
            VaultError::Tamper(
                "the log checkpoint is missing: the vault's state was altered".into(),
            )
        })?;
        let mut checkpoint = Checkpoint::decode(&cp_bytes)
            .map_err(|e| VaultError::Tamper(format!("log checkpoint unreadable: {e}")))?;
        checkpoint
            .verify(&checkpoint.signer)
            .ok()
            .filter(|()| checkpoint.config_id == config_id)
            .ok_or_else(|| VaultError::Tamper("log checkpoint signature does not verify".into()))?;
        let next_path = dir.join("checkpoint.next");
        let next = std::fs::read(&next_path)
            .ok()
            .and_then(|b| Checkpoint::decode(&b).ok())
            .filter(|c| {
                c.verify(&c.signer).is_ok()
                    && c.config_id == config_id
                    && c.size == checkpoint.size + 1
            });

        // One streaming pass: each record is decoded (a malformed one is
        // tampering), hashed into the tree, and its nodes checked against
        // (or written to) the node file. The roots at the checkpoint's size
        // and at `checkpoint.next`'s are kept for the checks below.
        let reader = File::open(&path).map_err(|e| io(&path, e))?;
        let file_len = reader.metadata().map_err(|e| io(&path, e))?.len();
        let mut r = BufReader::with_capacity(1 << 20, &reader);
        let mut offsets = Vec::new();
        let mut frontier = Frontier::new();
        let mut nodes = NodeCheck::open(dir, now_ns);
        let root_at = |f: &Frontier, want: &mut Option<Hash>, size: u64| {
            if f.size() == size {
                *want = Some(f.root());
            }
        };
        let (mut root_cp, mut root_next) = (None, None);
        root_at(&frontier, &mut root_cp, checkpoint.size);
        let mut pos = 0u64;
        let mut buf = Vec::new();
        loop {
            let mut len = [0u8; 4];
            if file_len - pos < 4 || r.read_exact(&mut len).is_err() {
                break;
            }
            let n = u32::from_le_bytes(len) as u64;
            if file_len - pos - 4 < n || n as usize > MAX_ENTRY {
                break;
            }
            buf.resize(n as usize, 0);
            r.read_exact(&mut buf).map_err(|e| io(&path, e))?;
            Entry::decode(&buf).map_err(|x| {
                VaultError::Tamper(format!("log entry {} is malformed: {x}", offsets.len()))
            })?;
            offsets.push(pos);
            for h in frontier.push(merkle::leaf_hash(&buf)) {
                nodes.node(&h)?;
            }
            root_at(&frontier, &mut root_cp, checkpoint.size);
            if let Some(nx) = &next {
                root_at(&frontier, &mut root_next, nx.size);
            }
            pos += 4 + n;
        }
        drop(r);
        let count = offsets.len() as u64;

        if count < checkpoint.size {
            return Err(VaultError::Tamper(format!(
                "the log has {count} entries but its signed checkpoint says {}: it was truncated",
                checkpoint.size
            )));
        }
        if root_cp != Some(checkpoint.root) {
            return Err(VaultError::Tamper(
                "the log does not match its signed checkpoint: entries were altered".into(),
            ));
        }
        // A crash between the append and the rename: finish it, if this
        // vault's own key signed it.
        if let Some(n) = &next
            && root_next == Some(n.root)
            && !own.contains(&n.signer)
        {
            return Err(VaultError::Usage(format!(
                "checkpoint.next (the last append, size {}) is signed by the vault key {}, \
                 which this vault was not started with: if this vault held that key, start it \
                 with it (--key or --next-key); if it never did, someone else appended (see \
                 docs/vault.md, \"Recovery\"); nothing was changed",
                n.size,
                holdfast_core::id::hex(&n.signer)
            )));
        }
        if let Some(n) = next
            && root_next == Some(n.root)
        {
            std::fs::rename(&next_path, &checkpoint_path).map_err(|e| io(&next_path, e))?;
            holdfast_store::fsync_dir(dir).map_err(|e| io(dir, e))?;
            checkpoint = n;
        } else if next_path.exists() {
            // Signed for an append that never happened (or not by us): kept
            // aside as evidence, never deleted.
            let aside = dir.join(format!("checkpoint.next.unused-{now_ns}"));
            std::fs::rename(&next_path, &aside).map_err(|e| io(&next_path, e))?;
            holdfast_store::fsync_dir(dir).map_err(|e| io(dir, e))?;
        }
        if count > checkpoint.size {
            return Err(VaultError::Tamper(format!(
                "{} complete log entr(ies) after the last signed checkpoint (size {}): \
                 the vault signs a checkpoint before it appends, so these were added by \
                 someone else; refusing to start (see docs/vault.md, \"Recovery\")",
                count - checkpoint.size,
                checkpoint.size
            )));
        }
        let (nodes, damaged) = nodes.finish()?;
        if let Some(at) = damaged {
            eprintln!(
                "holdfast vault: the Merkle node file differed from the log at node {at}: \
                 kept aside as log.nodes.damaged-{now_ns} and rebuilt from the log"
            );
        }
        if pos < file_len {
            // A torn append past the checkpoint: never acknowledged; drop it.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            f.set_len(pos)
                .and_then(|_| f.sync_all())
                .map_err(|e| io(&path, e))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        Ok(LogStore {
            path,
            checkpoint_path,
            file,
            reader,
            offsets,
            nodes,
            frontier,
            checkpoint,
            len: pos,
            poisoned: false,
        })
    }

    /// Entries in the log.
    pub fn len(&self) -> u64 {
        self.offsets.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// `count` records from entry `start` on, as stored (`u32 length ‖
    /// entry`, repeated): one positioned read, no copy per entry.
    pub fn records(&self, start: u64, count: u64) -> Result<Vec<u8>, VaultError> {
        let n = self.len();
        let (a, b) = (start.min(n), start.saturating_add(count).min(n));
        if a == b {
            return Ok(Vec::new());
        }
        let from = self.offsets[a as usize];
        let to = if b == n {
            self.len
        } else {
            self.offsets[b as usize]
        };
        let mut out = vec![0u8; (to - from) as usize];
        self.reader
            .read_exact_at(&mut out, from)
            .map_err(|e| io(&self.path, e))?;
        Ok(out)
    }

    /// Every entry in order, read in batches (start-up replay).
    pub fn for_each(&self, mut f: impl FnMut(u64, &[u8])) -> Result<(), VaultError> {
        let mut i = 0u64;
        while i < self.len() {
            let batch = self.records(i, 4096)?;
            for e in holdfast_core::vaultlog::split_log(&batch).0 {
                f(i, e);
                i += 1;
            }
        }
        Ok(())
    }

    /// Consistency proof from size `m` to the current checkpoint, from the
    /// stored nodes.
    pub fn consistency(&self, m: u64) -> Option<Vec<Hash>> {
        merkle::consistency_proof_from(&self.nodes, self.checkpoint.size, m)
    }

    /// Inclusion proof of entry `index` in the current checkpoint.
    pub fn inclusion(&self, index: u64) -> Option<Vec<Hash>> {
        merkle::inclusion_proof_from(&self.nodes, self.checkpoint.size, index)
    }

    /// Appends one entry durably, then signs and stores a new checkpoint.
    /// Returns the entry's bytes as logged.
    pub fn append(
        &mut self,
        entry: &Entry,
        config_id: [u8; 32],
        vault: &Identity,
    ) -> Result<Vec<u8>, VaultError> {
        if self.poisoned {
            return Err(VaultError::Io(
                "an earlier log append failed halfway: restart the vault to finish it".into(),
            ));
        }
        let bytes = entry.encode();
        let leaf = merkle::leaf_hash(&bytes);
        let mut frontier = self.frontier.clone();
        let made = frontier.push(leaf);
        // 0. The tree nodes the entry completes, at their fixed places
        // (past the end until the entry is there; rewritten by a retry).
        let at = merkle::stored_nodes(self.len()) * 32;
        self.nodes
            .file
            .write_all_at(&made.concat(), at)
            .and_then(|_| self.nodes.file.sync_data())
            .map_err(|e| io(&self.nodes.path, e))?;
        let cp = Checkpoint::sign(
            config_id,
            self.len() + 1,
            frontier.root(),
            entry.time_ns,
            vault,
        );
        // 1. The checkpoint that will cover it, signed first.
        let next = self.checkpoint_path.with_file_name("checkpoint.next");
        write_atomic(&next, &cp.encode())?;
        // 2. The entry.
        let mut rec = Vec::with_capacity(4 + bytes.len());
        frame(&bytes, &mut rec);
        if let Err(e) = self
            .file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data())
        {
            // A full disk mid-record: cut the file back to the last whole
            // entry, so the next append does not follow a torn one.
            if self
                .file
                .set_len(self.len)
                .and_then(|_| self.file.sync_data())
                .is_err()
            {
                self.poisoned = true;
            }
            return Err(io(&self.path, e));
        }
        // 3. The checkpoint takes effect.
        let renamed = std::fs::rename(&next, &self.checkpoint_path)
            .map_err(|e| io(&next, e))
            .and_then(|_| match self.checkpoint_path.parent() {
                Some(d) => holdfast_store::fsync_dir(d).map_err(|e| io(d, e)),
                None => Ok(()),
            });
        if let Err(e) = renamed {
            // The entry is durable and covered by `checkpoint.next`: a
            // restart finishes the append. Until then, append nothing.
            self.poisoned = true;
            return Err(e);
        }
        self.offsets.push(self.len);
        self.len += rec.len() as u64;
        self.frontier = frontier;
        self.checkpoint = cp;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::vaultlog::split_log;

    fn entry(t: i64) -> Entry {
        Entry {
            time_ns: t,
            event: holdfast_core::vaultlog::Event::IdentityAdded {
                record: holdfast_core::ObjectId([t as u8; 32]),
            },
        }
    }

    fn setup(n: i64) -> (tempfile::TempDir, Identity) {
        let d = tempfile::tempdir().unwrap();
        let id = Identity::from_bytes([5; 32]);
        let mut log = LogStore::open(d.path(), [1; 32], Some(&id), 0).unwrap();
        for t in 1..=n {
            log.append(&entry(t), [1; 32], &id).unwrap();
        }
        (d, id)
    }

    /// Appends `e` as a crash would leave it: `checkpoint.next` written,
    /// optionally the entry too, but no rename.
    fn half_append(dir: &Path, id: &Identity, e: &Entry, write_entry: bool) {
        let raw = std::fs::read(dir.join("log")).unwrap();
        let mut entries: Vec<Vec<u8>> = split_log(&raw).0.iter().map(|e| e.to_vec()).collect();
        entries.push(e.encode());
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        let cp = Checkpoint::sign(
            [1; 32],
            leaves.len() as u64,
            merkle::root(&leaves),
            e.time_ns,
            id,
        );
        std::fs::write(dir.join("checkpoint.next"), cp.encode()).unwrap();
        if write_entry {
            let mut raw = raw;
            frame(&e.encode(), &mut raw);
            std::fs::write(dir.join("log"), raw).unwrap();
        }
    }

    fn leaves_of(dir: &Path) -> Vec<Hash> {
        let raw = std::fs::read(dir.join("log")).unwrap();
        split_log(&raw)
            .0
            .iter()
            .map(|e| merkle::leaf_hash(e))
            .collect()
    }

    fn proofs_match(log: &LogStore, leaves: &[Hash]) {
        let n = leaves.len();
        assert_eq!(log.checkpoint.root, merkle::root(leaves));
        for m in 0..=n {
            assert_eq!(
                log.consistency(m as u64),
                merkle::consistency_proof(leaves, m),
                "m={m}"
            );
        }
        for i in 0..n {
            assert_eq!(log.inclusion(i as u64), merkle::inclusion_proof(leaves, i));
        }
    }

    #[test]
    fn the_node_file_is_rebuilt_when_missing_short_or_damaged_and_kept_aside() {
        let (d, id) = setup(37);
        let nodes = d.path().join("log.nodes");
        let full = std::fs::read(&nodes).unwrap();
        assert_eq!(full.len() as u64, merkle::stored_nodes(37) * 32);
        let leaves = leaves_of(d.path());
        proofs_match(
            &LogStore::open(d.path(), [1; 32], Some(&id), 1).unwrap(),
            &leaves,
        );
        // Missing.
        std::fs::remove_file(&nodes).unwrap();
        proofs_match(
            &LogStore::open(d.path(), [1; 32], Some(&id), 2).unwrap(),
            &leaves,
        );
        assert_eq!(std::fs::read(&nodes).unwrap(), full);
        // Truncated mid-node, and longer than the log.
        std::fs::write(&nodes, &full[..1000]).unwrap();
        proofs_match(
            &LogStore::open(d.path(), [1; 32], Some(&id), 3).unwrap(),
            &leaves,
        );
        assert_eq!(std::fs::read(&nodes).unwrap(), full);
        let mut long = full.clone();
        long.extend_from_slice(&[7; 96]);
        std::fs::write(&nodes, &long).unwrap();
        proofs_match(
            &LogStore::open(d.path(), [1; 32], Some(&id), 4).unwrap(),
            &leaves,
        );
        assert_eq!(std::fs::read(&nodes).unwrap(), full);
        // Damaged: rebuilt, and the damaged file kept as evidence.
        let mut bad = full.clone();
        bad[40 * 32 + 5] ^= 1;
        std::fs::write(&nodes, &bad).unwrap();
        let mut log = LogStore::open(d.path(), [1; 32], Some(&id), 5).unwrap();
        proofs_match(&log, &leaves);
        assert_eq!(std::fs::read(&nodes).unwrap(), full);
        assert_eq!(
            std::fs::read(d.path().join("log.nodes.damaged-5")).unwrap(),
            bad
        );
        // Appends go on from the rebuilt file.
        log.append(&entry(38), [1; 32], &id).unwrap();
        proofs_match(&log, &leaves_of(d.path()));
        // An altered log is still refused, whatever the node file says.
        drop(log);
        let mut raw = std::fs::read(d.path().join("log")).unwrap();
        let last = raw.len() - 1;
        raw[last] ^= 1;
        std::fs::write(d.path().join("log"), raw).unwrap();
        assert!(matches!(
            LogStore::open(d.path(), [1; 32], Some(&id), 6),
            Err(VaultError::Tamper(_))
        ));
    }

    #[test]
    fn a_crash_after_the_append_is_finished_at_open() {
        let (d, id) = setup(3);
        half_append(d.path(), &id, &entry(4), true);
        let log = LogStore::open(d.path(), [1; 32], Some(&id), 9).unwrap();
        assert_eq!(log.checkpoint.size, 4);
        assert_eq!(log.len(), 4);
        assert!(!d.path().join("checkpoint.next").exists());
    }

    #[test]
    fn a_crash_before_the_append_keeps_the_unused_checkpoint_aside() {
        let (d, id) = setup(3);
        half_append(d.path(), &id, &entry(4), false);
        let mut log = LogStore::open(d.path(), [1; 32], Some(&id), 9).unwrap();
        assert_eq!(log.checkpoint.size, 3);
        assert!(d.path().join("checkpoint.next.unused-9").exists());
        log.append(&entry(5), [1; 32], &id).unwrap();
        assert_eq!(
            LogStore::open(d.path(), [1; 32], Some(&id), 10)
                .unwrap()
                .len(),
            4
        );
    }

    #[test]
    fn a_checkpoint_next_by_a_key_the_vault_does_not_hold_never_replaces_the_checkpoint() {
        let other = Identity::from_bytes([6; 32]);
        let cp_path = |d: &tempfile::TempDir| d.path().join("checkpoint");
        // With no entry: kept aside, the checkpoint untouched.
        let (d, id) = setup(3);
        let good = std::fs::read(cp_path(&d)).unwrap();
        half_append(d.path(), &other, &entry(4), false);
        let log = LogStore::open(d.path(), [1; 32], Some(&id), 9).unwrap();
        assert_eq!(log.checkpoint.size, 3);
        assert_eq!(std::fs::read(cp_path(&d)).unwrap(), good);
        assert!(d.path().join("checkpoint.next.unused-9").exists());
        // With the entry appended: the start is refused, every file kept.
        let (d, id) = setup(3);
        let good = std::fs::read(cp_path(&d)).unwrap();
        half_append(d.path(), &other, &entry(4), true);
        let next = std::fs::read(d.path().join("checkpoint.next")).unwrap();
        match LogStore::open(d.path(), [1; 32], Some(&id), 9) {
            Err(VaultError::Usage(m)) => assert!(m.contains("not started with"), "{m}"),
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a foreign checkpoint.next was taken"),
        }
        assert_eq!(std::fs::read(cp_path(&d)).unwrap(), good);
        assert_eq!(
            std::fs::read(d.path().join("checkpoint.next")).unwrap(),
            next
        );
        // A vault holding that key (say as --next-key) finishes the append.
        let own = [id.public(), other.public()];
        let log = LogStore::open_holding(d.path(), [1; 32], Some(&id), &own, 10).unwrap();
        assert_eq!(log.checkpoint.size, 4);
        assert_eq!(log.checkpoint.signer, other.public());
    }

    #[test]
    fn entries_no_checkpoint_covers_are_refused_and_a_torn_tail_dropped() {
        let (d, id) = setup(2);
        let log = d.path().join("log");
        let mut raw = std::fs::read(&log).unwrap();
        let good = raw.len();
        raw.extend_from_slice(&[200, 0, 0, 0, 1, 2]); // torn
        std::fs::write(&log, &raw).unwrap();
        assert_eq!(
            LogStore::open(d.path(), [1; 32], Some(&id), 9)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, good);
        let mut raw = std::fs::read(&log).unwrap();
        frame(&entry(3).encode(), &mut raw);
        std::fs::write(&log, &raw).unwrap();
        match LogStore::open(d.path(), [1; 32], Some(&id), 9) {
            Err(VaultError::Tamper(m)) => assert!(m.contains("after the last signed checkpoint")),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("adopted an entry nobody signed for"),
        }
    }
}
