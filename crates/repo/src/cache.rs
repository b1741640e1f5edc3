//! The client's local cache: what this client has already sent.
//!
//! A write-only client cannot read its earlier snapshots, so it remembers
//! (1) for each file it saved: size, mtime, ctime, inode, device → chunk ids,
//! and (2) for each blob it sent: which pack holds it. Losing or damaging the
//! cache costs a re-read of every file, never correctness: it is checked
//! against the repository's pack list before use, and rebuilt from the
//! plaintext tables of this client's own packs when missing.
//!
//! File layout (all little-endian, see docs/format.md §8): magic
//! `HFCACHE1`, repo id, client public key, config id, last snapshot,
//! packs, blobs (id, pack index), files (path, stat fields, chunk ids).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use holdfast_core::codec::{DecodeError, Reader, Writer};
use holdfast_core::{BlobId, ObjectId};

use crate::{Result, io_err};

const MAGIC_V1: &[u8; 8] = b"HFCACHE1";
/// Version 2: version 1 followed by the run history (detection baseline).
const MAGIC: &[u8; 8] = b"HFCACHE2";

/// One earlier run, for the volume baseline (`holdfast_repo::detect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Files new, rewritten or deleted (moves excluded).
    pub churn: u64,
    /// Bytes of the new and rewritten files.
    pub changed_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileStat {
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
    pub dev: u64,
}

#[derive(Clone, Debug)]
pub struct CachedFile {
    pub stat: FileStat,
    pub chunks: Vec<BlobId>,
}

#[derive(Default)]
pub struct Cache {
    pub last_snapshot: Option<ObjectId>,
    pub packs: Vec<ObjectId>,
    /// Blob → index into `packs`.
    pub blobs: HashMap<BlobId, u32>,
    /// Absolute path bytes → file.
    pub files: HashMap<Vec<u8>, CachedFile>,
    /// The last runs, oldest first (at most `detect::BASELINE_MAX_RUNS`).
    pub history: Vec<RunStats>,
}

/// Identifies whose cache a file is.
pub struct Owner {
    pub repo_id: [u8; 16],
    pub client: [u8; 32],
    pub config_id: ObjectId,
}

impl Cache {
    pub fn path(dir: &Path, owner: &Owner) -> PathBuf {
        dir.join(format!(
            "{}-{}.cache",
            holdfast_core::id::hex(&owner.repo_id),
            holdfast_core::id::hex(&owner.client[..8])
        ))
    }

    /// Loads the cache; a missing, foreign or damaged cache is empty.
    pub fn load(path: &Path, owner: &Owner) -> Cache {
        let Ok(bytes) = std::fs::read(path) else {
            return Cache::default();
        };
        Self::decode(&bytes, owner).unwrap_or_default()
    }

    fn decode(b: &[u8], owner: &Owner) -> std::result::Result<Cache, DecodeError> {
        let v2 = b.starts_with(MAGIC);
        let mut r = Reader::new(b);
        r.magic(if v2 { MAGIC } else { MAGIC_V1 }, "cache")?;
        if r.array::<16>()? != owner.repo_id
            || r.array::<32>()? != owner.client
            || ObjectId(r.array()?) != owner.config_id
        {
            return Err(DecodeError::Invalid("cache owner"));
        }
        let last_snapshot = match r.u8()? {
            0 => None,
            _ => Some(ObjectId(r.array()?)),
        };
        let n = r.count(32, "packs")?;
        let mut packs = Vec::with_capacity(n);
        for _ in 0..n {
            packs.push(ObjectId(r.array()?));
        }
        let n = r.count(36, "blobs")?;
        let mut blobs = HashMap::with_capacity(n);
        for _ in 0..n {
            let id = BlobId(r.array()?);
            let p = r.u32()?;
            if p as usize >= packs.len() {
                return Err(DecodeError::Invalid("pack index"));
            }
            blobs.insert(id, p);
        }
        let n = r.count(56, "files")?;
        let mut files = HashMap::with_capacity(n);
        for _ in 0..n {
            let path = r.bytes(1 << 16, "path")?.to_vec();
            let stat = FileStat {
                size: r.u64()?,
                mtime: (r.i64()?, r.u32()?),
                ctime: (r.i64()?, r.u32()?),
                ino: r.u64()?,
                dev: r.u64()?,
            };
            let c = r.count(32, "chunks")?;
            let mut chunks = Vec::with_capacity(c);
            for _ in 0..c {
                chunks.push(BlobId(r.array()?));
            }
            files.insert(path, CachedFile { stat, chunks });
        }
        let mut history = Vec::new();
        if v2 {
            let n = r.count(16, "history")?;
            for _ in 0..n.min(holdfast_core::detect::BASELINE_MAX_RUNS) {
                history.push(RunStats {
                    churn: r.u64()?,
                    changed_bytes: r.u64()?,
                });
            }
            if n > holdfast_core::detect::BASELINE_MAX_RUNS {
                return Err(DecodeError::Invalid("history"));
            }
        }
        r.finish()?;
        Ok(Cache {
            last_snapshot,
            packs,
            blobs,
            files,
            history,
        })
    }

    fn encode(&self, owner: &Owner) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.blobs.len() * 36 + self.files.len() * 120);
        w.raw(MAGIC)
            .raw(&owner.repo_id)
            .raw(&owner.client)
            .raw(&owner.config_id.0);
        match &self.last_snapshot {
            Some(s) => w.u8(1).raw(&s.0),
            None => w.u8(0),
        };
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.raw(&p.0);
        }
        w.u32(self.blobs.len() as u32);
        for (id, p) in &self.blobs {
            w.raw(&id.0).u32(*p);
        }
        w.u32(self.files.len() as u32);
        for (path, f) in &self.files {
            w.bytes(path)
                .u64(f.stat.size)
                .i64(f.stat.mtime.0)
                .u32(f.stat.mtime.1)
                .i64(f.stat.ctime.0)
                .u32(f.stat.ctime.1)
                .u64(f.stat.ino)
                .u64(f.stat.dev);
            w.u32(f.chunks.len() as u32);
            for c in &f.chunks {
                w.raw(&c.0);
            }
        }
        let keep = self
            .history
            .len()
            .min(holdfast_core::detect::BASELINE_MAX_RUNS);
        let history = &self.history[self.history.len() - keep..];
        w.u32(history.len() as u32);
        for h in history {
            w.u64(h.churn).u64(h.changed_bytes);
        }
        w.into_vec()
    }

    /// Saves crash-safely (temp, fsync, rename, directory fsync), readable
    /// by its owner only: it lists every path backed up. The directory is
    /// created owner-only too.
    pub fn save(&self, path: &Path, owner: &Owner) -> Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        holdfast_store::create_private_dir(dir).map_err(|e| io_err(dir, e))?;
        holdfast_store::write_private(path, &self.encode(owner)).map_err(|e| io_err(path, e))
    }

    /// Drops everything that refers to a pack not in `existing`, so the
    /// cache can never make a snapshot point at reclaimed or lost data.
    pub fn retain_packs(&mut self, existing: &std::collections::HashSet<ObjectId>) {
        let keep: Vec<bool> = self.packs.iter().map(|p| existing.contains(p)).collect();
        if keep.iter().all(|k| *k) {
            return;
        }
        self.blobs.retain(|_, p| keep[*p as usize]);
        let blobs = &self.blobs;
        self.files
            .retain(|_, f| f.chunks.iter().all(|c| blobs.contains_key(c)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_round_trip_and_version_1_caches_still_read() {
        let owner = Owner {
            repo_id: [1; 16],
            client: [2; 32],
            config_id: ObjectId([3; 32]),
        };
        let mut c = Cache {
            last_snapshot: Some(ObjectId([4; 32])),
            packs: vec![ObjectId([5; 32])],
            ..Default::default()
        };
        c.blobs.insert(BlobId([6; 32]), 0);
        c.files.insert(
            b"/m/cur/1".to_vec(),
            CachedFile {
                stat: FileStat {
                    size: 9,
                    mtime: (1, 2),
                    ctime: (3, 4),
                    ino: 5,
                    dev: 6,
                },
                chunks: vec![BlobId([6; 32])],
            },
        );
        c.history = (0..40)
            .map(|i| RunStats {
                churn: i,
                changed_bytes: i * 10,
            })
            .collect();
        let b = c.encode(&owner);
        let back = Cache::decode(&b, &owner).unwrap();
        // The newest 30 runs are kept.
        assert_eq!(back.history.len(), 30);
        assert_eq!(back.history[0].churn, 10);
        assert_eq!(back.history[29].changed_bytes, 390);
        assert_eq!(back.files.len(), 1);
        // A version 1 cache: the same bytes without the history.
        let mut v1 = b[..b.len() - (4 + 30 * 16)].to_vec();
        v1[..8].copy_from_slice(MAGIC_V1);
        let old = Cache::decode(&v1, &owner).unwrap();
        assert!(old.history.is_empty());
        assert_eq!(old.files.len(), 1);
        // A history longer than the limit is damage (the cache is dropped).
        let mut long = b[..b.len() - (4 + 30 * 16)].to_vec();
        long.extend(31u32.to_le_bytes());
        long.extend(vec![0u8; 31 * 16]);
        assert!(Cache::decode(&long, &owner).is_err());
    }
}
