//! The embedded default: a repository in a local directory.
//!
//! Layout: `config`, `packs/<2 hex>/<id>`, `snapshots/<id>`,
//! `identities/<id>`, and `tmp/` for writes in progress.
//!
//! Write path: refuse an existing name (no-op) → write `tmp/<random>` →
//! fsync → hard-link into place (link fails rather than overwrite, so two
//! writers racing on one name cannot clobber each other) → fsync the
//! directory → remove the temp name. A crash leaves at most a stray file in
//! `tmp/`, which [`LocalDir::clean_tmp`] removes.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::{Backend, Kind, Result, StoreError, check_content, check_name};

pub struct LocalDir {
    root: PathBuf,
    /// Open handles for range reads (objects never change once written, so
    /// a handle stays valid); bounded, oldest dropped first.
    handles: Mutex<VecDeque<(String, Arc<File>)>>,
}

const HANDLES: usize = 64;

fn io_err(path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == ErrorKind::StorageFull || e.raw_os_error() == Some(28) {
        return StoreError::Full(path.display().to_string());
    }
    StoreError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
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
        })
    }

    /// Creates the directory layout for a new repository. The directory
    /// must not exist or be empty.
    pub fn create(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if root.exists()
            && fs::read_dir(&root)
                .map_err(|e| io_err(&root, e))?
                .next()
                .is_some()
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
        })
    }

    fn handle(&self, kind: Kind, name: &str, p: &Path) -> Result<Arc<File>> {
        let mut h = self.handles.lock().unwrap();
        if let Some((_, f)) = h.iter().find(|(n, _)| n == name) {
            return Ok(f.clone());
        }
        let f = Arc::new(File::open(p).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound {
                kind,
                name: name.to_string(),
            },
            _ => io_err(p, e),
        })?);
        if h.len() >= HANDLES {
            h.pop_front();
        }
        h.push_back((name.to_string(), f.clone()));
        Ok(f)
    }

    /// Removes temp files left by crashed writers (older than `age`, so
    /// another process's write in progress is left alone).
    pub fn clean_tmp(&self, age: Duration) -> Result<usize> {
        let dir = self.root.join("tmp");
        let mut n = 0;
        let Ok(rd) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let now = SystemTime::now();
        for e in rd.flatten() {
            let old = e
                .metadata()
                .and_then(|m| m.modified())
                .map(|t| now.duration_since(t).unwrap_or_default() >= age)
                .unwrap_or(false);
            if old && fs::remove_file(e.path()).is_ok() {
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
        if dest.exists() {
            return Ok(());
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
        let data = fs::read(&p).map_err(|e| match e.kind() {
            ErrorKind::NotFound => StoreError::NotFound {
                kind,
                name: name.to_string(),
            },
            _ => io_err(&p, e),
        })?;
        check_content(kind, name, &data)?;
        Ok(data)
    }

    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        check_name(kind, name)?;
        let p = self.path_of(kind, name);
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
        fs::metadata(&p)
            .map(|m| m.len())
            .map_err(|e| match e.kind() {
                ErrorKind::NotFound => StoreError::NotFound {
                    kind,
                    name: name.to_string(),
                },
                _ => io_err(&p, e),
            })
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
                if let Ok(m) = fs::metadata(self.root.join("config")) {
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
        let m = fs::metadata(&p)
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use holdfast_core::ObjectId;

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
}
