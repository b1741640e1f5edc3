//! The client's verified copy of a vault's log, so that a command fetches
//! only the entries the vault added since the last one.
//!
//! In `DIR` (one per repository and client key, under the cache directory):
//! * `log`: entries `[0, N)` in the vault's framed format (`u32 LE length |
//!   entry`, repeated), appended and fsynced; bytes after the verified
//!   prefix (a crash during a fetch) are cut off on the next open;
//! * `verified`: `"HFLOGC1\n" | N u64 LE | prefix bytes u64 LE | root 32`,
//!   replaced crash-safely (write, fsync, rename, fsync dir) after the log
//!   file is fsynced, only once entries `[0, N)` hashed to the root of a
//!   checkpoint this client verified (signature, and consistency with the
//!   checkpoint it held);
//! * `lock`: held (flock, exclusive) while a process uses the copy.
//!
//! On open the prefix is hashed again and must give the recorded root:
//! anything else (a flipped byte, a cut file, another repository's log, a
//! missing record) sets the copy aside as `log.damaged` and the whole log is
//! fetched again. Who asserts what: the file is this machine's, so it is
//! never trusted by itself; the entries it gives are folded only after the
//! whole log (cached prefix and fetched tail) hashed to the root of the
//! checkpoint the vault signed now. When that fails with a cached prefix,
//! the copy is set aside and the whole log fetched once more, so a damaged
//! copy is never taken for the vault's tampering, and a vault whose log does
//! not match its signed checkpoint is tampering exactly as without a copy.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_core::merkle::{self, Checkpoint, Frontier};
use holdfast_store::VaultBackend;

use crate::{Error, Result, io_err};

const MAGIC: &[u8; 8] = b"HFLOGC1\n";
const RECORD_LEN: usize = 8 + 8 + 8 + 32;
/// No entry the vault serves is longer (its largest log page).
const MAX_ENTRY: u32 = 64 << 20;

/// Entries `[0, size)` of a vault's log in the client's cache, hashed to
/// the root of a checkpoint this client verified (or, for a log that did
/// not match, as the vault served it, for the fold to report). The copy is
/// locked for as long as any clone lives.
#[derive(Clone, Debug)]
pub struct LogFile {
    dir: PathBuf,
    size: u64,
    bytes: u64,
    tree: Frontier,
    verified: bool,
    _lock: Arc<File>,
}

/// What a sync read and fetched (`HOLDFAST_DEBUG_LOGCACHE` prints it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Fetched {
    /// Entries taken from the cached copy.
    pub cached: u64,
    /// Entries fetched from the vault.
    pub fetched: u64,
    /// Their framed bytes.
    pub fetched_bytes: u64,
    /// The copy was set aside as damaged (or did not match).
    pub discarded: bool,
}

impl LogFile {
    /// Entries held.
    pub fn len(&self) -> u64 {
        self.size
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The entries as checked against a verified checkpoint's root.
    pub fn verified(&self) -> bool {
        self.verified
    }

    /// The Merkle root of the entries held.
    pub fn root(&self) -> merkle::Hash {
        self.tree.root()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("log")
    }

    /// Hands entries `[0, len)` in order to `f` (until it breaks), read
    /// from the file one at a time: memory does not grow with the log.
    pub fn for_each(
        &self,
        f: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        let file = File::open(self.log_path())?;
        let mut r = BufReader::with_capacity(1 << 20, file);
        let mut buf = Vec::new();
        for i in 0..self.size {
            read_frame(&mut r, &mut buf)?;
            if f(i, &buf).is_break() {
                break;
            }
        }
        Ok(())
    }

    /// Fetches entries `[len, cp.size)` (the vault's checkpoint `cp`, which
    /// the caller verified extends the one this copy was checked against),
    /// appends them, and checks the whole log against `cp`'s root; each new
    /// entry goes to `f`. A mismatch is the vault's tampering (the prefix
    /// was verified by this process).
    pub fn extend(
        &mut self,
        vault: &VaultBackend,
        cp: &Checkpoint,
        f: &mut dyn FnMut(&[u8]),
    ) -> Result<u64> {
        if !self.verified || cp.size < self.size {
            return Err(Error::Tamper(format!(
                "the vault's log of {} entries does not extend the {} this client read",
                cp.size, self.size
            )));
        }
        let fetched = self.append(vault, cp.size, f)?;
        if self.tree.root() != cp.root {
            self.verified = false;
            return Err(Error::Tamper(format!(
                "the vault's log does not match its signed checkpoint of size {}: entries altered",
                cp.size
            )));
        }
        self.commit(cp)?;
        Ok(fetched)
    }

    /// Appends the vault's entries `[len, to)`, hashing them into the tree.
    fn append(&mut self, vault: &VaultBackend, to: u64, f: &mut dyn FnMut(&[u8])) -> Result<u64> {
        let path = self.log_path();
        let mut file = open_rw(&path)?;
        file.set_len(self.bytes).map_err(|e| io_err(&path, e))?;
        file.seek(SeekFrom::Start(self.bytes))
            .map_err(|e| io_err(&path, e))?;
        let mut w = BufWriter::with_capacity(1 << 20, file);
        let mut werr = None;
        let from = self.size;
        let (tree, size, bytes) = (&mut self.tree, &mut self.size, &mut self.bytes);
        vault.log_pages(from, to, &mut |e| {
            if werr.is_none() {
                let r = w
                    .write_all(&(e.len() as u32).to_le_bytes())
                    .and_then(|_| w.write_all(e));
                if let Err(x) = r {
                    werr = Some(x);
                }
            }
            tree.push(merkle::leaf_hash(e));
            *size += 1;
            *bytes += 4 + e.len() as u64;
            f(e);
            Ok(())
        })?;
        if let Some(e) = werr {
            return Err(io_err(&path, e));
        }
        let file = w.into_inner().map_err(|e| io_err(&path, e.into_error()))?;
        file.sync_all().map_err(|e| io_err(&path, e))?;
        Ok(self.size - from)
    }

    /// Records the copy as verified up to `cp` (the log file is fsynced).
    fn commit(&mut self, cp: &Checkpoint) -> Result<()> {
        let mut rec = Vec::with_capacity(RECORD_LEN);
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&self.size.to_le_bytes());
        rec.extend_from_slice(&self.bytes.to_le_bytes());
        rec.extend_from_slice(&cp.root);
        let path = self.dir.join("verified");
        holdfast_store::write_private(&path, &rec).map_err(|e| io_err(&path, e))?;
        self.verified = true;
        Ok(())
    }
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))
}

fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<()> {
    let mut len = [0u8; 4];
    r.read_exact(&mut len)?;
    let n = u32::from_le_bytes(len);
    if n > MAX_ENTRY {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("a log entry of {n} bytes"),
        ));
    }
    buf.resize(n as usize, 0);
    r.read_exact(buf)
}

/// The record: (entries, prefix bytes, root), or None if absent or not one.
fn read_record(path: &Path) -> Option<(u64, u64, merkle::Hash)> {
    let b = std::fs::read(path).ok()?;
    if b.len() != RECORD_LEN || &b[..8] != MAGIC {
        return None;
    }
    let n = u64::from_le_bytes(b[8..16].try_into().ok()?);
    let bytes = u64::from_le_bytes(b[16..24].try_into().ok()?);
    let root: merkle::Hash = b[24..56].try_into().ok()?;
    Some((n, bytes, root))
}

/// Hashes the file's first `n` entries (exactly `bytes` bytes).
fn check_prefix(
    path: &Path,
    n: u64,
    bytes: u64,
    root: &merkle::Hash,
) -> std::result::Result<Frontier, String> {
    let file = File::open(path).map_err(|e| e.to_string())?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < bytes {
        return Err(format!("{len} bytes, the record says {bytes}"));
    }
    let mut r = BufReader::with_capacity(1 << 20, file.take(bytes));
    let mut buf = Vec::new();
    let mut tree = Frontier::new();
    for _ in 0..n {
        read_frame(&mut r, &mut buf).map_err(|e| format!("entry {}: {e}", tree.size()))?;
        tree.push(merkle::leaf_hash(&buf));
    }
    let mut rest = [0u8; 1];
    if r.read(&mut rest).map_err(|e| e.to_string())? != 0 {
        return Err("bytes after the recorded entries".into());
    }
    if tree.root() != *root {
        return Err("its entries do not hash to the recorded root".into());
    }
    Ok(tree)
}

/// Brings the copy in `dir` up to the vault's checkpoint `cp` (which the
/// caller verified: signature, consistency with the held checkpoint) and
/// returns it. Only entries after the verified prefix are fetched. A log
/// that still does not match `cp` after a fetch from 0 is returned as
/// served (not recorded as verified), for the fold to report. None when
/// another process holds the copy (a command with the same key still
/// running): the caller then reads the log as without a copy.
pub fn sync(
    dir: &Path,
    vault: &VaultBackend,
    cp: &Checkpoint,
) -> Result<Option<(LogFile, Fetched)>> {
    holdfast_store::create_private_dir(dir).map_err(|e| io_err(dir, e))?;
    let lock_path = dir.join("lock");
    let lock = open_rw(&lock_path)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(None),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err(&lock_path, e)),
    }
    let mut lf = LogFile {
        dir: dir.to_path_buf(),
        size: 0,
        bytes: 0,
        tree: Frontier::new(),
        verified: false,
        _lock: Arc::new(lock),
    };
    let mut stats = Fetched::default();
    let log_path = lf.log_path();
    let has_file = std::fs::symlink_metadata(&log_path).is_ok();
    match read_record(&dir.join("verified")) {
        Some((n, bytes, root)) if n <= cp.size => match check_prefix(&log_path, n, bytes, &root) {
            Ok(tree) => {
                lf.size = n;
                lf.bytes = bytes;
                lf.tree = tree;
                lf.verified = true;
            }
            Err(why) => {
                set_aside(&lf, &why)?;
                stats.discarded = true;
            }
        },
        Some(_) => {
            set_aside(&lf, "it holds more entries than the vault's checkpoint")?;
            stats.discarded = true;
        }
        None if has_file && std::fs::metadata(&log_path).is_ok_and(|m| m.len() > 0) => {
            set_aside(&lf, "no record of what it verified")?;
            stats.discarded = true;
        }
        None => {}
    }
    stats.cached = lf.size;
    for attempt in 0..2 {
        let before = lf.bytes;
        let n = lf.append(vault, cp.size, &mut |_| {})?;
        stats.fetched += n;
        stats.fetched_bytes += lf.bytes - before;
        if lf.tree.size() == cp.size && lf.tree.root() == cp.root {
            lf.commit(cp)?;
            return Ok(Some((lf, stats)));
        }
        lf.verified = false;
        if attempt == 0 && stats.cached > 0 {
            // The cached prefix or the vault: fetch everything to tell.
            set_aside(
                &lf,
                "with the vault's entries after it, it does not match the checkpoint",
            )?;
            stats.discarded = true;
            lf.size = 0;
            lf.bytes = 0;
            lf.tree = Frontier::new();
            continue;
        }
        break;
    }
    Ok(Some((lf, stats)))
}

/// Moves a copy that failed its check aside (`log.damaged`, replacing an
/// older one) and starts an empty one; the record goes with it.
fn set_aside(lf: &LogFile, why: &str) -> Result<()> {
    let log = lf.log_path();
    if std::env::var_os("HOLDFAST_DEBUG_LOGCACHE").is_some() {
        eprintln!("holdfast: log cache {}: set aside ({why})", log.display());
    }
    let rec = lf.dir.join("verified");
    match std::fs::remove_file(&rec) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&rec, e)),
    }
    match std::fs::rename(&log, lf.dir.join("log.damaged")) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err(&log, e)),
    }
    holdfast_store::fsync_dir(&lf.dir).map_err(|e| io_err(&lf.dir, e))
}
