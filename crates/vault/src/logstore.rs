//! The vault's log on disk: `vault/log` holds length-prefixed entries
//! (u32 length, then the entry), appended and fsynced one at a time;
//! `vault/checkpoint` holds the latest signed checkpoint, replaced
//! atomically after each append.
//!
//! On open the log is checked against the checkpoint: fewer entries than the
//! checkpoint names, or a different root, means the log was cut or altered
//! and the vault refuses to start. A torn last record (crash mid-append)
//! beyond the checkpoint is dropped; it was never acknowledged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use holdfast_core::crypto::Identity;
use holdfast_core::merkle::{self, Checkpoint, Hash};
use holdfast_core::vaultlog::{Entry, split_log};

use crate::VaultError;

pub struct LogStore {
    path: PathBuf,
    checkpoint_path: PathBuf,
    file: File,
    pub entries: Vec<Vec<u8>>,
    pub leaves: Vec<Hash>,
    pub checkpoint: Checkpoint,
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
        let checkpoint = Checkpoint::decode(&cp_bytes)
            .map_err(|e| VaultError::Tamper(format!("log checkpoint unreadable: {e}")))?;
        checkpoint
            .verify(&vault.public())
            .map_err(|_| VaultError::Tamper("log checkpoint signature does not verify".into()))?;
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
        let mut s = LogStore {
            path,
            checkpoint_path,
            file,
            entries,
            leaves,
            checkpoint,
        };
        if s.checkpoint.size < s.entries.len() as u64 {
            s.sign(config_id, vault, now_ns)?;
        }
        Ok(s)
    }

    /// Appends one entry durably, then signs and stores a new checkpoint.
    pub fn append(
        &mut self,
        entry: &Entry,
        config_id: [u8; 32],
        vault: &Identity,
    ) -> Result<u64, VaultError> {
        let bytes = entry.encode();
        let mut rec = Vec::with_capacity(4 + bytes.len());
        rec.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        rec.extend_from_slice(&bytes);
        self.file
            .write_all(&rec)
            .and_then(|_| self.file.sync_data())
            .map_err(|e| io(&self.path, e))?;
        self.leaves.push(merkle::leaf_hash(&bytes));
        self.entries.push(bytes);
        self.sign(config_id, vault, entry.time_ns)?;
        Ok(self.entries.len() as u64 - 1)
    }

    fn sign(
        &mut self,
        config_id: [u8; 32],
        vault: &Identity,
        now_ns: i64,
    ) -> Result<(), VaultError> {
        let cp = Checkpoint::sign(
            config_id,
            self.leaves.len() as u64,
            merkle::root(&self.leaves),
            now_ns,
            vault,
        );
        write_atomic(&self.checkpoint_path, &cp.encode())?;
        self.checkpoint = cp;
        Ok(())
    }

    pub fn decoded(&self) -> impl Iterator<Item = Entry> + '_ {
        self.entries
            .iter()
            .map(|e| Entry::decode(e).expect("checked at open and append"))
    }
}
