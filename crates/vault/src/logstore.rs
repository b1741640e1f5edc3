//! The vault's log on disk: `vault/log` holds length-prefixed entries
//! (u32 length, then the entry), appended and fsynced one at a time;
//! `vault/checkpoint` holds the latest signed checkpoint, replaced
//! atomically after each append.
//!
//! An append is: sign the checkpoint that will cover the new entry and store
//! it as `checkpoint.next` (atomically), append the entry and fsync, then
//! rename `checkpoint.next` over `checkpoint`. So every complete entry on
//! disk is covered by a checkpoint the vault signed *before* writing it.
//!
//! On open the log is checked against the checkpoint: fewer entries than the
//! checkpoint names, or a different root, means the log was cut or altered
//! and the vault refuses to start. A crash after the append but before the
//! rename is finished from `checkpoint.next`. A torn last record (crash
//! mid-append) is dropped; it was never acknowledged. Complete entries that
//! no signed checkpoint covers were appended by someone else: the vault
//! refuses to start rather than adopt them (or drop them unseen).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use holdfast_core::crypto::Identity;
use holdfast_core::merkle::{self, Checkpoint, Hash};
use holdfast_core::vaultlog::{Entry, frame, split_log};

use crate::VaultError;

pub struct LogStore {
    path: PathBuf,
    checkpoint_path: PathBuf,
    file: File,
    pub entries: Vec<Vec<u8>>,
    pub leaves: Vec<Hash>,
    /// Roots of the perfect subtrees that make up the tree, largest first
    /// (the RFC 6962 "frontier"): the root after an append costs O(log n).
    frontier: Vec<(u32, Hash)>,
    pub checkpoint: Checkpoint,
    /// Bytes of the log file that hold whole, covered entries.
    len: u64,
    /// Set when an append failed halfway in a way this process cannot undo
    /// (the entry is on disk but the checkpoint rename failed, or a failed
    /// write could not be cut back): no further append until a restart
    /// finishes or drops it.
    poisoned: bool,
}

fn push_frontier(f: &mut Vec<(u32, Hash)>, leaf: Hash) {
    f.push((0, leaf));
    while f.len() >= 2 && f[f.len() - 1].0 == f[f.len() - 2].0 {
        let (l, right) = f.pop().expect("two");
        let (_, left) = f.pop().expect("two");
        f.push((l + 1, merkle::node_hash(&left, &right)));
    }
}

fn frontier_root(f: &[(u32, Hash)]) -> Hash {
    let mut it = f.iter().rev();
    match it.next() {
        None => merkle::empty_root(),
        Some((_, last)) => it.fold(*last, |acc, (_, h)| merkle::node_hash(h, &acc)),
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

impl LogStore {
    /// Opens (or creates, for a new vault) the log in `dir`.
    pub fn open(
        dir: &Path,
        config_id: [u8; 32],
        vault: &Identity,
        now_ns: i64,
    ) -> Result<Self, VaultError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join("log");
        let checkpoint_path = dir.join("checkpoint");
        let fresh = !path.exists() && !checkpoint_path.exists();
        if fresh {
            File::create(&path)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&path, e))?;
            let cp = Checkpoint::sign(config_id, 0, merkle::empty_root(), now_ns, vault);
            write_atomic(&checkpoint_path, &cp.encode())?;
        }
        let raw = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let cp_bytes = std::fs::read(&checkpoint_path).map_err(|_| {
            VaultError::Tamper(
                "the log checkpoint is missing: the vault's state was altered".into(),
            )
        })?;
        let mut checkpoint = Checkpoint::decode(&cp_bytes)
            .map_err(|e| VaultError::Tamper(format!("log checkpoint unreadable: {e}")))?;
        checkpoint
            .verify(&vault.public())
            .map_err(|_| VaultError::Tamper("log checkpoint signature does not verify".into()))?;
        let next_path = dir.join("checkpoint.next");
        let next = std::fs::read(&next_path)
            .ok()
            .and_then(|b| Checkpoint::decode(&b).ok())
            .filter(|c| c.verify(&vault.public()).is_ok() && c.size == checkpoint.size + 1);
        let (records, torn) = split_log(&raw);
        let pos = raw.len() - torn;
        let mut entries = Vec::with_capacity(records.len());
        for e in records {
            Entry::decode(e).map_err(|x| {
                VaultError::Tamper(format!("log entry {} is malformed: {x}", entries.len()))
            })?;
            entries.push(e.to_vec());
        }

        if (entries.len() as u64) < checkpoint.size {
            return Err(VaultError::Tamper(format!(
                "the log has {} entries but its signed checkpoint says {}: it was truncated",
                entries.len(),
                checkpoint.size
            )));
        }
        let leaves: Vec<Hash> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
        if merkle::root(&leaves[..checkpoint.size as usize]) != checkpoint.root {
            return Err(VaultError::Tamper(
                "the log does not match its signed checkpoint: entries were altered".into(),
            ));
        }
        // A crash between the append and the rename: finish it.
        if let Some(n) = next
            && leaves.len() as u64 >= n.size
            && merkle::root(&leaves[..n.size as usize]) == n.root
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
        if leaves.len() as u64 > checkpoint.size {
            return Err(VaultError::Tamper(format!(
                "{} complete log entr(ies) after the last signed checkpoint (size {}): \
                 the vault signs a checkpoint before it appends, so these were added by \
                 someone else; refusing to start (see docs/vault.md, \"Recovery\")",
                leaves.len() as u64 - checkpoint.size,
                checkpoint.size
            )));
        }
        if pos < raw.len() {
            // A torn append past the checkpoint: never acknowledged; drop it.
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| io(&path, e))?;
            f.set_len(pos as u64)
                .and_then(|_| f.sync_all())
                .map_err(|e| io(&path, e))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| io(&path, e))?;
        let mut frontier = Vec::new();
        for l in &leaves {
            push_frontier(&mut frontier, *l);
        }
        Ok(LogStore {
            path,
            checkpoint_path,
            file,
            entries,
            leaves,
            frontier,
            checkpoint,
            len: pos as u64,
            poisoned: false,
        })
    }

    /// Appends one entry durably, then signs and stores a new checkpoint.
    pub fn append(
        &mut self,
        entry: &Entry,
        config_id: [u8; 32],
        vault: &Identity,
    ) -> Result<u64, VaultError> {
        if self.poisoned {
            return Err(VaultError::Io(
                "an earlier log append failed halfway: restart the vault to finish it".into(),
            ));
        }
        let bytes = entry.encode();
        let leaf = merkle::leaf_hash(&bytes);
        let mut frontier = self.frontier.clone();
        push_frontier(&mut frontier, leaf);
        let cp = Checkpoint::sign(
            config_id,
            self.leaves.len() as u64 + 1,
            frontier_root(&frontier),
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
        self.len += rec.len() as u64;
        self.leaves.push(leaf);
        self.frontier = frontier;
        self.entries.push(bytes);
        self.checkpoint = cp;
        Ok(self.entries.len() as u64 - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frontier_root_matches_the_full_root() {
        let mut f = Vec::new();
        let mut leaves = Vec::new();
        for i in 0..70u32 {
            let l = merkle::leaf_hash(&i.to_le_bytes());
            leaves.push(l);
            push_frontier(&mut f, l);
            assert_eq!(frontier_root(&f), merkle::root(&leaves), "n = {}", i + 1);
        }
    }

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
        let mut log = LogStore::open(d.path(), [1; 32], &id, 0).unwrap();
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

    #[test]
    fn a_crash_after_the_append_is_finished_at_open() {
        let (d, id) = setup(3);
        half_append(d.path(), &id, &entry(4), true);
        let log = LogStore::open(d.path(), [1; 32], &id, 9).unwrap();
        assert_eq!(log.checkpoint.size, 4);
        assert_eq!(log.entries.len(), 4);
        assert!(!d.path().join("checkpoint.next").exists());
    }

    #[test]
    fn a_crash_before_the_append_keeps_the_unused_checkpoint_aside() {
        let (d, id) = setup(3);
        half_append(d.path(), &id, &entry(4), false);
        let mut log = LogStore::open(d.path(), [1; 32], &id, 9).unwrap();
        assert_eq!(log.checkpoint.size, 3);
        assert!(d.path().join("checkpoint.next.unused-9").exists());
        log.append(&entry(5), [1; 32], &id).unwrap();
        assert_eq!(
            LogStore::open(d.path(), [1; 32], &id, 10)
                .unwrap()
                .entries
                .len(),
            4
        );
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
            LogStore::open(d.path(), [1; 32], &id, 9)
                .unwrap()
                .entries
                .len(),
            2
        );
        assert_eq!(std::fs::metadata(&log).unwrap().len() as usize, good);
        let mut raw = std::fs::read(&log).unwrap();
        frame(&entry(3).encode(), &mut raw);
        std::fs::write(&log, &raw).unwrap();
        match LogStore::open(d.path(), [1; 32], &id, 9) {
            Err(VaultError::Tamper(m)) => assert!(m.contains("after the last signed checkpoint")),
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("adopted an entry nobody signed for"),
        }
    }
}
