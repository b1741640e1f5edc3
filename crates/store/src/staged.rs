//! Objects written as their bytes arrive (the vault's uploads), invisible
//! until committed.
//!
//! [`crate::ObjectStore::stage`] starts one; [`Staged::write`] appends (and
//! hashes: BLAKE3, the content id, computed once); the caller checks what
//! it must (the hash against the signed hash and the name, the pack's
//! structure through [`Staged::read_at`]) and then
//! [`crate::ObjectStore::commit_staged`] makes it visible under its name,
//! durably, or drops it. Dropping a [`Staged`] that was not committed
//! removes its bytes: an object whose name is visible is always complete.
//!
//! Where the bytes wait:
//! * [`Spool::Memory`]: in memory (the default of a store that has nothing
//!   better; the vault only uses it through such a store).
//! * [`Spool::File`]: a staging file (`*.stage`), written as the bytes
//!   arrive. A directory store stages in its own `tmp/` (same file system,
//!   so the commit is the fsync and hard link of [`crate::LocalDir`]'s
//!   put); S3 spools in a directory the caller names (the vault's state
//!   directory) and PUTs from the file.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::{Kind, Result, StoreError};

/// The suffix of staging files; [`clean_staging`] removes only these.
pub const STAGE_SUFFIX: &str = ".stage";

/// Where a staged object's bytes wait until the commit.
pub enum Spool {
    Memory(Vec<u8>),
    File {
        file: File,
        path: PathBuf,
        /// Removed on drop unless committed.
        keep: bool,
    },
}

/// One object being written. See the module documentation.
pub struct Staged {
    pub kind: Kind,
    pub(crate) spool: Spool,
    hasher: blake3::Hasher,
    /// MD5 as well, for stores that must send it (S3 with Object Lock).
    pub(crate) md5: Option<md5::Md5>,
    len: u64,
}

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        return StoreError::Full(path.display().to_string());
    }
    StoreError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

impl Staged {
    /// An object staged in memory.
    pub fn in_memory(kind: Kind) -> Staged {
        Staged {
            kind,
            spool: Spool::Memory(Vec::new()),
            hasher: blake3::Hasher::new(),
            md5: None,
            len: 0,
        }
    }

    /// An object staged in a new file `dir/<random>.stage` (mode 0600).
    pub fn in_file(kind: Kind, dir: &Path, md5: bool) -> Result<Staged> {
        let rnd: [u8; 12] = holdfast_core::crypto::random_bytes()
            .map_err(|e| StoreError::Transient(e.to_string()))?;
        let path = dir.join(holdfast_core::id::hex(&rnd) + STAGE_SUFFIX);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        Ok(Staged {
            kind,
            spool: Spool::File {
                file,
                path,
                keep: false,
            },
            hasher: blake3::Hasher::new(),
            md5: md5.then(<md5::Md5 as md5::Digest>::new),
            len: 0,
        })
    }

    /// Appends bytes (and hashes them).
    pub fn write(&mut self, data: &[u8]) -> Result<()> {
        match &mut self.spool {
            Spool::Memory(v) => v.extend_from_slice(data),
            Spool::File { file, path, .. } => {
                file.write_all(data).map_err(|e| io_err(path, e))?;
            }
        }
        self.hasher.update(data);
        if let Some(m) = &mut self.md5 {
            md5::Digest::update(m, data);
        }
        self.len += data.len() as u64;
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// BLAKE3 of everything written (for a content-addressed object, its
    /// id).
    pub fn hash(&self) -> [u8; 32] {
        *self.hasher.finalize().as_bytes()
    }

    /// Reads back `len` bytes at `offset` of what was written.
    pub fn read_at(&self, offset: u64, len: usize) -> Result<Vec<u8>> {
        let short = || StoreError::Corrupt {
            kind: self.kind,
            name: "(staged)".into(),
            why: format!("range {offset}+{len} beyond the {} bytes staged", self.len),
        };
        if offset.checked_add(len as u64).is_none_or(|e| e > self.len) {
            return Err(short());
        }
        match &self.spool {
            Spool::Memory(v) => Ok(v[offset as usize..offset as usize + len].to_vec()),
            Spool::File { file, path, .. } => {
                let mut buf = vec![0u8; len];
                file.read_exact_at(&mut buf, offset)
                    .map_err(|e| io_err(path, e))?;
                Ok(buf)
            }
        }
    }

    /// The staged bytes, read whole (for a store with no better way).
    pub fn into_bytes(mut self) -> Result<Vec<u8>> {
        match &mut self.spool {
            Spool::Memory(v) => Ok(std::mem::take(v)),
            Spool::File { .. } => self.read_at(0, self.len as usize),
        }
    }

    /// The hex content id of what was written must be `name` (every kind
    /// but the config): the same check as a put's.
    pub fn check_name(&self, name: &str) -> Result<()> {
        crate::check_name(self.kind, name)?;
        if self.kind != Kind::Config && holdfast_core::id::hex(&self.hash()) != name {
            return Err(StoreError::Corrupt {
                kind: self.kind,
                name: name.to_string(),
                why: "content does not match its id".into(),
            });
        }
        Ok(())
    }

    /// The staging file, and that it is to be kept (it was linked into
    /// place, or the caller takes it over).
    pub(crate) fn file(&mut self) -> Option<(&File, &Path, &mut bool)> {
        match &mut self.spool {
            Spool::Memory(_) => None,
            Spool::File { file, path, keep } => Some((&*file, path.as_path(), keep)),
        }
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Spool::File { path, keep, .. } = &self.spool
            && !*keep
        {
            let _ = fs::remove_file(path);
        }
    }
}

/// Removes every staging file (`*.stage`, regular files only; a symlink is
/// removed as a name, never followed) directly in `dir`. Only for a
/// directory whose staging files belong to one process that is starting
/// (the vault, which holds its state directory's lock): a staging file is
/// never a visible object, so this deletes no stored data, only the bytes
/// of uploads a crash cut short (their clients retry).
pub fn clean_staging(dir: &Path) -> Result<usize> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_err(dir, e)),
    };
    let mut n = 0;
    for e in rd.flatten() {
        let name = e.file_name();
        let b = name.as_encoded_bytes();
        if b.len() != 24 + STAGE_SUFFIX.len()
            || !b.ends_with(STAGE_SUFFIX.as_bytes())
            || !b[..24]
                .iter()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
        {
            continue;
        }
        // DirEntry::file_type does not follow symlinks.
        if e.file_type().is_ok_and(|t| t.is_file() || t.is_symlink())
            && fs::remove_file(e.path()).is_ok()
        {
            n += 1;
        }
    }
    Ok(n)
}
