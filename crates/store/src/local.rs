//! The embedded default: a repository in a local directory.
//!
//! Layout: `config`, `packs/<2 hex>/<id>`, `snapshots/<id>`,
//! `identities/<id>`, and `tmp/` for writes in progress.
//!
//! Write path: refuse an existing name (no-op) → write `tmp/<random>` →
//! fsync → hard-link into place (link fails rather than overwrite, so two
//! writers racing on one name cannot clobber each other) → fsync the
//! directory → remove the temp name. A crash leaves at most a stray file in
//! `tmp/`, which [`LocalDir::clean_tmp`] removes (the first write of a
//! process does; reading never does).
//!
//! A repository directory may be hostile (a received bundle, a replica):
//! objects are opened without following a symlink and without blocking on
//! a FIFO, must be regular files, and are read up to the size of their kind
//! ([`crate::max_object_size`]); `tmp/` is cleaned only when it is a real
//! directory, and nothing is ever deleted through a symlink.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::{Backend, Kind, Result, StoreError, check_content, check_name, max_object_size};

pub struct LocalDir {
    root: PathBuf,
    /// Open handles for range reads (objects never change once written, so
    /// a handle stays valid); bounded, oldest dropped first.
    handles: Mutex<VecDeque<(String, Arc<File>)>>,
    /// Whether this process has already cleaned `tmp/` (on its first write).
    cleaned: AtomicBool,
}

const HANDLES: usize = 64;

/// Temp files of crashed writers older than this are removed on the first
/// write (an hour, so another process's write in progress is left alone).
const TMP_AGE: Duration = Duration::from_secs(3600);

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(libc::ENOSPC) {
        return StoreError::Full(path.display().to_string());
    }
    StoreError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// The error of reading object `name`: missing, damaged (not a regular
/// file, too large: [`ErrorKind::InvalidData`] from [`open_regular`]) or an
/// I/O failure.
fn obj_err(kind: Kind, name: &str, path: &Path, e: std::io::Error) -> StoreError {
    match e.kind() {
        ErrorKind::NotFound => StoreError::NotFound {
            kind,
            name: name.to_string(),
        },
        ErrorKind::InvalidData => StoreError::Corrupt {
            kind,
            name: name.to_string(),
            why: format!("{}: {e}", path.display()),
        },
        _ => io_err(path, e),
    }
}

pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn refuse(why: String) -> std::io::Error {
    std::io::Error::new(ErrorKind::InvalidData, why)
}

fn check_regular(m: &fs::Metadata, max: u64) -> std::io::Result<()> {
    let t = m.file_type();
    if !t.is_file() {
        let what = if t.is_symlink() {
            "a symbolic link"
        } else if t.is_dir() {
            "a directory"
        } else if t.is_fifo() {
            "a FIFO"
        } else if t.is_char_device() || t.is_block_device() {
            "a device"
        } else if t.is_socket() {
            "a socket"
        } else {
            "of an unknown type"
        };
        return Err(refuse(format!("not a regular file (it is {what})")));
    }
    if m.len() > max {
        return Err(refuse(format!(
            "too large: {} bytes, at most {max} accepted",
            m.len()
        )));
    }
    Ok(())
}

/// Opens `path` for reading only if it is a regular file of at most `max`
/// bytes: a symlink in its last component is not followed, a FIFO does not
/// block, a device is never opened. Returns the file and its size. Refusals
/// are [`ErrorKind::InvalidData`] errors that say why.
pub fn open_regular(path: &Path, max: u64) -> std::io::Result<(File, u64)> {
    // lstat first, so that no device or FIFO is even opened.
    check_regular(&fs::symlink_metadata(path)?, max)?;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse("not a regular file (it is a symbolic link)".into())
            } else {
                e
            }
        })?;
    // fstat: what was opened, whatever was put in its place meanwhile.
    let m = f.metadata()?;
    check_regular(&m, max)?;
    Ok((f, m.len()))
}

/// Reads a whole file that must be a regular file of at most `max` bytes
/// (see [`open_regular`]).
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    let (f, len) = open_regular(path, max)?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len + 1).read_to_end(&mut buf)?;
    if buf.len() as u64 != len {
        return Err(refuse(format!(
            "changed while being read ({len} bytes, then {})",
            buf.len()
        )));
    }
    Ok(buf)
}

/// Creates a directory and its missing parents, each readable by its owner
/// only (an existing directory is left as it is: it may not be ours).
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Replaces `path` with `data` crash-safely, readable by its owner only:
/// a temp file (mode 0600) beside it, written, fsynced, renamed over
/// `path`, then the directory fsynced.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let rnd: [u8; 8] =
        holdfast_core::crypto::random_bytes().map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".{}.tmp", holdfast_core::id::hex(&rnd)));
    let tmp = dir.join(tmp_name);
    let r = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        fsync_dir(dir)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// A temp name this module writes: 24 hex digits and `.tmp`.
fn is_tmp_name(name: &std::ffi::OsStr) -> bool {
    let b = name.as_encoded_bytes();
    b.len() == 28
        && b.ends_with(b".tmp")
        && b[..24]
            .iter()
            .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'))
}

impl LocalDir {
    /// Opens an existing repository directory (it must hold a config).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if !root.join("config").is_file() {
            return Err(StoreError::NotFound {
                kind: Kind::Config,
                name: root.join("config").display().to_string(),
            });
        }
        Ok(Self {
            root,
            handles: Mutex::default(),
            cleaned: AtomicBool::new(false),
        })
    }

    /// Creates the directory layout for a new repository. The directory
    /// must not exist or be empty.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        Self::create_inner(root.into(), false)
    }

    /// As [`LocalDir::create`], but also over the bare layout a creation
    /// cut short left behind (directories only, not one file): what a
    /// killed first `replica pull` leaves, so the next one can go on.
    pub fn create_or_resume(root: impl Into<PathBuf>) -> Result<Self> {
        Self::create_inner(root.into(), true)
    }

    fn create_inner(root: PathBuf, resume: bool) -> Result<Self> {
        /// True when `d` holds directories only, at most two levels deep
        /// (at the top, `tmp/` may hold anything: it is scratch).
        fn bare(d: &Path, depth: u32) -> bool {
            let Ok(rd) = fs::read_dir(d) else {
                return false;
            };
            rd.into_iter().all(|e| {
                e.is_ok_and(|e| {
                    let dir = e.file_type().is_ok_and(|t| t.is_dir());
                    dir && ((depth == 2 && e.file_name() == "tmp")
                        || (depth > 0 && bare(&e.path(), depth - 1)))
                })
            })
        }
        if root.exists()
            && fs::read_dir(&root)
                .map_err(|e| io_err(&root, e))?
                .next()
                .is_some()
            && !(resume && bare(&root, 2))
        {
            return Err(StoreError::Refused(format!(
                "{} exists and is not empty",
                root.display()
            )));
        }
        for d in ["", "packs", "snapshots", "identities", "tmp"] {
            let p = root.join(d);
            fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        }
        for i in 0..256 {
            let p = root.join("packs").join(format!("{i:02x}"));
            fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
        }
        if let Some(parent) = root.parent() {
            let _ = fsync_dir(parent);
        }
        Ok(Self {
            root,
            handles: Mutex::default(),
            cleaned: AtomicBool::new(true),
        })
    }

    fn handle(&self, kind: Kind, name: &str, p: &Path) -> Result<Arc<File>> {
        let mut h = self.handles.lock().unwrap();
        if let Some((_, f)) = h.iter().find(|(n, _)| n == name) {
            return Ok(f.clone());
        }
        let (f, _) =
            open_regular(p, max_object_size(kind)).map_err(|e| obj_err(kind, name, p, e))?;
        let f = Arc::new(f);
        if h.len() >= HANDLES {
            h.pop_front();
        }
        h.push_back((name.to_string(), f.clone()));
        Ok(f)
    }

    /// `tmp/`, if it is a real directory inside the repository: its
    /// (device, inode). None if it does not exist; refused if it is a
    /// symlink or anything else.
    fn tmp_dir(&self) -> Result<Option<(u64, u64)>> {
        let dir = self.root.join("tmp");
        match fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_dir() => Ok(Some((m.dev(), m.ino()))),
            Ok(_) => Err(StoreError::Refused(format!(
                "{} is not a directory (a symlink?): refusing to write or delete through it",
                dir.display()
            ))),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&dir, e)),
        }
    }

    /// Removes temp files left by crashed writers (older than `age`, so
    /// another process's write in progress is left alone). Only in a `tmp/`
    /// that is a real directory, only regular files with the names this
    /// module writes; a symlink is never followed. Read-only commands never
    /// call this; the first write of a process does.
    pub fn clean_tmp(&self, age: Duration) -> Result<usize> {
        let dir = self.root.join("tmp");
        let Some(before) = self.tmp_dir()? else {
            return Ok(0);
        };
        let rd = fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
        let now = SystemTime::now();
        let mut n = 0;
        for e in rd.flatten() {
            if !is_tmp_name(&e.file_name()) {
                continue;
            }
            // DirEntry::metadata does not follow symlinks.
            let Ok(m) = e.metadata() else { continue };
            let old = m
                .modified()
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false);
            if !m.file_type().is_file() || !old {
                continue;
            }
            // The directory must still be the one listed (not swapped for a
            // symlink meanwhile).
            if self.tmp_dir()? != Some(before) {
                break;
            }
            if fs::remove_file(e.path()).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    pub fn path_of(&self, kind: Kind, name: &str) -> PathBuf {
        match kind {
            Kind::Config => self.root.join("config"),
            Kind::Pack => self.root.join("packs").join(&name[..2]).join(name),
            _ => self.root.join(kind.dir()).join(name),
        }
    }
}

impl Backend for LocalDir {
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()> {
        check_name(kind, name)?;
        check_content(kind, name, data)?;
        let dest = self.path_of(kind, name);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(());
        }
        if self.tmp_dir()?.is_none() {
            let dir = self.root.join("tmp");
            return Err(io_err(
                &dir,
                std::io::Error::new(ErrorKind::NotFound, "the repository has no tmp/"),
            ));
        }
        if !self.cleaned.swap(true, Ordering::Relaxed) {
            let _ = self.clean_tmp(TMP_AGE);
        }
        let rnd: [u8; 12] = holdfast_core::crypto::random_bytes()
            .map_err(|e| StoreError::Transient(e.to_string()))?;
        let tmp = self
            .root
            .join("tmp")
            .join(holdfast_core::id::hex(&rnd) + ".tmp");
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            f.write_all(data)?;
            f.sync_all()
        };
        if let Err(e) = write() {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp, e));
        }
        let linked = fs::hard_link(&tmp, &dest);
        let _ = fs::remove_file(&tmp);
        match linked {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(&dest, e)),
        }
        let dir = dest.parent().expect("object path has a parent");
        fsync_dir(dir).map_err(|e| io_err(dir, e))
    }

    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let p = self.path_of(kind, name);
        let data =
            read_regular(&p, max_object_size(kind)).map_err(|e| obj_err(kind, name, &p, e))?;
        check_content(kind, name, &data)?;
        Ok(data)
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let p = self.path_of(kind, name);
        if offset
            .checked_add(len)
            .is_none_or(|end| end > max_object_size(kind))
        {
            return Err(StoreError::Corrupt {
                kind,
                name: name.to_string(),
                why: format!("range {offset}+{len} is beyond any {kind}"),
            });
        }
        let f = self.handle(kind, name, &p)?;
        let mut buf = vec![0u8; len.min(1 << 30) as usize];
        let mut got = 0usize;
        while got < buf.len() {
            match f.read_at(&mut buf[got..], offset + got as u64) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err(&p, e)),
            }
        }
        buf.truncate(got);
        if buf.len() as u64 != len {
            return Err(StoreError::Corrupt {
                kind,
                name: name.to_string(),
                why: format!("short read at {offset}+{len}"),
            });
        }
        Ok(buf)
    }

    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        check_name(kind, name)?;
        let p = self.path_of(kind, name);
        fs::symlink_metadata(&p)
            .and_then(|m| check_regular(&m, max_object_size(kind)).map(|_| m.len()))
            .map_err(|e| obj_err(kind, name, &p, e))
    }

    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        let mut scan = |dir: &Path| -> Result<()> {
            let rd = match fs::read_dir(dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err(dir, e)),
            };
            for e in rd {
                let e = e.map_err(|e| io_err(dir, e))?;
                let name = e.file_name().to_string_lossy().into_owned();
                if check_name(kind, &name).is_ok() {
                    let len = e.metadata().map_err(|x| io_err(&e.path(), x))?.len();
                    out.push((name, len));
                }
            }
            Ok(())
        };
        match kind {
            Kind::Config => {
                if let Ok(m) = fs::symlink_metadata(self.root.join("config")) {
                    out.push(("config".into(), m.len()));
                }
            }
            Kind::Pack => {
                for i in 0..256 {
                    scan(&self.root.join("packs").join(format!("{i:02x}")))?;
                }
            }
            _ => scan(&self.root.join(kind.dir()))?,
        }
        out.sort();
        Ok(out)
    }

    fn location(&self) -> String {
        self.root.display().to_string()
    }
}

impl crate::ObjectStore for LocalDir {
    /// A directory has no storage-enforced lock: the vault's rules are the
    /// only protection, which is why the S3 backend exists.
    fn put_retained(&self, kind: Kind, name: &str, data: &[u8], _until_ns: i64) -> Result<()> {
        self.put(kind, name, data)
    }

    fn retain(&self, _kind: Kind, _name: &str, _until_ns: i64) -> Result<()> {
        Ok(())
    }

    fn delete(&self, kind: Kind, name: &str) -> Result<crate::Deletion> {
        check_name(kind, name)?;
        let p = self.path_of(kind, name);
        match fs::remove_file(&p) {
            Ok(()) => {
                if let Some(d) = p.parent() {
                    fsync_dir(d).map_err(|e| io_err(d, e))?;
                }
            }
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p, e)),
        }
        self.handles
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, _)| n != name);
        Ok(crate::Deletion::Done)
    }

    fn stored_at_ns(&self, kind: Kind, name: &str) -> Result<i64> {
        check_name(kind, name)?;
        let p = self.path_of(kind, name);
        let m = fs::symlink_metadata(&p)
            .and_then(|m| m.modified())
            .map_err(|e| io_err(&p, e))?;
        Ok(m.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or(0))
    }

    fn locked_until_ns(&self, _kind: Kind, _name: &str) -> Result<Option<i64>> {
        Ok(None)
    }

    fn locks_enforced(&self) -> bool {
        false
    }

    /// Staged in `tmp/<random>.stage` (the store's own file system, so the
    /// commit is a hard link), whatever `spool` says.
    fn stage(&self, kind: Kind, _spool: &Path) -> Result<crate::Staged> {
        if self.tmp_dir()?.is_none() {
            let dir = self.root.join("tmp");
            return Err(io_err(
                &dir,
                std::io::Error::new(ErrorKind::NotFound, "the repository has no tmp/"),
            ));
        }
        crate::Staged::in_file(kind, &self.root.join("tmp"), false)
    }

    /// As [`Backend::put`] from there: the staging file fsynced, hard-linked
    /// into place (never over an existing object: that one stays), its
    /// directory fsynced; the staging name goes when `staged` is dropped.
    fn commit_staged(&self, mut staged: crate::Staged, name: &str, _until_ns: i64) -> Result<()> {
        staged.check_name(name)?;
        let kind = staged.kind;
        let dest = self.path_of(kind, name);
        if fs::symlink_metadata(&dest).is_ok() {
            return Ok(());
        }
        let Some((file, tmp, _)) = staged.file() else {
            let data = staged.into_bytes()?;
            return self.put(kind, name, &data);
        };
        file.sync_all().map_err(|e| io_err(tmp, e))?;
        match fs::hard_link(tmp, &dest) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::AlreadyExists => return Ok(()),
            Err(e) => return Err(io_err(&dest, e)),
        }
        drop(staged);
        let dir = dest.parent().expect("object path has a parent");
        fsync_dir(dir).map_err(|e| io_err(dir, e))
    }

    /// The `*.stage` files in `tmp/` (a real directory only).
    fn clean_staged(&self) -> Result<usize> {
        if self.tmp_dir()?.is_none() {
            return Ok(0);
        }
        crate::clean_staging(&self.root.join("tmp"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::ObjectId;

    /// A creation cut short (the layout made, no file yet) may be resumed;
    /// a directory holding any file outside tmp/ never is.
    #[test]
    fn a_bare_layout_is_resumed_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        drop(LocalDir::create(&root).unwrap());
        assert!(LocalDir::create(&root).is_err());
        std::fs::write(root.join("tmp/half-written"), b"x").unwrap();
        drop(LocalDir::create_or_resume(&root).unwrap());
        std::fs::write(root.join("packs/00/somefile"), b"x").unwrap();
        assert!(LocalDir::create_or_resume(&root).is_err());
        let other = dir.path().join("o");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("mail"), b"x").unwrap();
        assert!(LocalDir::create_or_resume(&other).is_err());
    }

    #[test]
    fn contract() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalDir::create(&root).unwrap();
        b.put(Kind::Config, "config", b"cfg").unwrap();
        let data = b"some pack bytes".to_vec();
        let id = ObjectId::of(&data).to_hex();
        b.put(Kind::Pack, &id, &data).unwrap();
        b.put(Kind::Pack, &id, &data).unwrap(); // idempotent
        assert_eq!(b.get(Kind::Pack, &id).unwrap(), data);
        assert_eq!(b.get_range(Kind::Pack, &id, 5, 4).unwrap(), b"pack");
        assert_eq!(b.list(Kind::Pack).unwrap(), vec![(id.clone(), 15)]);
        assert_eq!(b.size(Kind::Pack, &id).unwrap(), 15);
        // Wrong content for a name is refused.
        assert!(b.put(Kind::Snapshot, &id, b"other").is_err());
        // Path tricks are refused before touching the disk.
        assert!(matches!(
            b.get(Kind::Snapshot, "../config"),
            Err(StoreError::BadName(_))
        ));
        assert!(b.get(Kind::Snapshot, &id).unwrap_err().is_not_found());
        // Corruption on disk is caught on read.
        fs::write(b.path_of(Kind::Pack, &id), b"some pack bytez").unwrap();
        assert!(matches!(
            b.get(Kind::Pack, &id),
            Err(StoreError::Corrupt { .. })
        ));
        // Nothing left in tmp.
        assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
        assert!(LocalDir::create(&root).is_err());
    }

    /// A staged object: invisible until committed, removed when dropped,
    /// refused under a name its bytes do not hash to, idempotent; stale
    /// staging files go at `clean_staged`, other files in tmp/ stay.
    #[test]
    fn staged_objects() {
        use crate::ObjectStore;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalDir::create(&root).unwrap();
        b.put(Kind::Config, "config", b"cfg").unwrap();
        let stage_files = || {
            fs::read_dir(root.join("tmp"))
                .unwrap()
                .filter(|e| {
                    let n = e.as_ref().unwrap().file_name();
                    n.to_string_lossy().ends_with(crate::STAGE_SUFFIX)
                })
                .count()
        };
        let data = vec![5u8; 3 << 20];
        let id = ObjectId::of(&data).to_hex();
        let mut s = b.stage(Kind::Pack, Path::new("/nonexistent")).unwrap();
        for c in data.chunks(1 << 20) {
            s.write(c).unwrap();
        }
        assert_eq!(s.hash(), ObjectId::of(&data).0);
        assert_eq!(s.read_at(5, 3).unwrap(), vec![5u8; 3]);
        assert!(s.read_at((3 << 20) - 2, 3).is_err());
        assert_eq!(stage_files(), 1);
        assert!(b.size(Kind::Pack, &id).unwrap_err().is_not_found());
        // Dropped: gone, nothing visible.
        drop(s);
        assert_eq!(stage_files(), 0);
        assert!(b.list(Kind::Pack).unwrap().is_empty());
        // Under a name it does not hash to: refused, nothing visible.
        let mut s = b.stage(Kind::Pack, Path::new("/nonexistent")).unwrap();
        s.write(&data[1..]).unwrap();
        let e = b.commit_staged(s, &id, 0).unwrap_err();
        assert!(e.is_damage(), "{e}");
        assert_eq!(stage_files(), 0);
        assert!(b.list(Kind::Pack).unwrap().is_empty());
        // Committed: visible, whole; twice: the first stays.
        for _ in 0..2 {
            let mut s = b.stage(Kind::Pack, Path::new("/nonexistent")).unwrap();
            s.write(&data).unwrap();
            b.commit_staged(s, &id, 0).unwrap();
        }
        assert_eq!(b.get(Kind::Pack, &id).unwrap(), data);
        assert_eq!(stage_files(), 0);
        // A crash's leftover goes; anything else in tmp/ stays.
        let s = b.stage(Kind::Pack, Path::new("/nonexistent")).unwrap();
        std::mem::forget(s);
        fs::write(root.join("tmp/keep-me"), b"x").unwrap();
        assert_eq!(stage_files(), 1);
        assert_eq!(b.clean_staged().unwrap(), 1);
        assert_eq!(stage_files(), 0);
        assert!(root.join("tmp/keep-me").exists());
    }

    #[test]
    fn hostile_directory() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let b = LocalDir::create(&root).unwrap();
        b.put(Kind::Config, "config", b"cfg").unwrap();
        let id = ObjectId::of(b"x").to_hex();
        // A snapshot symlinked to /dev/zero, a FIFO, a directory: refused
        // as damage, at once.
        std::os::unix::fs::symlink("/dev/zero", b.path_of(Kind::Snapshot, &id)).unwrap();
        for r in [
            b.get(Kind::Snapshot, &id),
            b.get_range(Kind::Snapshot, &id, 0, 4),
        ] {
            match r {
                Err(e @ StoreError::Corrupt { .. }) => {
                    assert!(e.to_string().contains("not a regular file"), "{e}")
                }
                r => panic!("{r:?}"),
            }
        }
        assert!(b.size(Kind::Snapshot, &id).unwrap_err().is_damage());
        fs::remove_file(b.path_of(Kind::Snapshot, &id)).unwrap();
        let fifo = std::process::Command::new("mkfifo")
            .arg(b.path_of(Kind::Snapshot, &id))
            .status()
            .unwrap();
        assert!(fifo.success());
        assert!(b.get(Kind::Snapshot, &id).unwrap_err().is_damage());
        // Too large for its kind (sparse, so cheap).
        let big = ObjectId::of(b"y").to_hex();
        File::create(b.path_of(Kind::Identity, &big))
            .unwrap()
            .set_len(1 << 30)
            .unwrap();
        let e = b.get(Kind::Identity, &big).unwrap_err();
        assert!(e.is_damage() && e.to_string().contains("too large"), "{e}");

        // A tmp/ that is a symlink to a directory outside: nothing there is
        // ever deleted, and writes are refused.
        let outside = dir.path().join("outside");
        fs::create_dir(&outside).unwrap();
        let victim = outside.join("0123456789abcdef01234567.tmp");
        fs::write(&victim, b"precious").unwrap();
        let age = |p: &Path| {
            let old = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(old)
                .unwrap()
        };
        age(&victim);
        fs::remove_dir(root.join("tmp")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("tmp")).unwrap();
        let b = LocalDir::open(&root).unwrap();
        assert!(b.clean_tmp(Duration::ZERO).is_err());
        let data = b"new pack".to_vec();
        assert!(
            b.put(Kind::Pack, &ObjectId::of(&data).to_hex(), &data)
                .is_err()
        );
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
        assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);

        // In a real tmp/, only old files with our temp names go; a symlink
        // there is removed as a name, its target left alone.
        fs::remove_file(root.join("tmp")).unwrap();
        fs::create_dir(root.join("tmp")).unwrap();
        let stale = root.join("tmp/aaaaaaaaaaaaaaaaaaaaaaaa.tmp");
        let other = root.join("tmp/keep-me");
        fs::write(&stale, b"").unwrap();
        fs::write(&other, b"").unwrap();
        age(&stale);
        age(&other);
        std::os::unix::fs::symlink(&victim, root.join("tmp/bbbbbbbbbbbbbbbbbbbbbbbb.tmp")).unwrap();
        let b = LocalDir::open(&root).unwrap();
        assert_eq!(b.clean_tmp(Duration::from_secs(3600)).unwrap(), 1);
        assert!(!stale.exists() && other.exists());
        assert_eq!(fs::read(&victim).unwrap(), b"precious");
    }

    #[test]
    fn private_files() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("a/b");
        create_private_dir(&d).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&dir.path().join("a")), 0o700);
        let f = d.join("state");
        fs::write(&f, b"old").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&f, b"new").unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"new");
        assert_eq!(mode(&f), 0o600);
        assert_eq!(fs::read_dir(&d).unwrap().count(), 1);
    }
}
