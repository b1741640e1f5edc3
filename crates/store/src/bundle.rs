//! Offline bundles as a read-only [`Backend`]: `bundle:DIR[,DIR…]`.
//!
//! A bundle is a directory with a repository's layout (see docs/format.md,
//! bundles) written by `holdfast export`; an incremental bundle holds only
//! what its predecessors lack. A series is read as the union of its
//! bundles: each object is served from the first bundle that has it, and
//! checked against its id like any other read. Nothing can be written.

use std::path::PathBuf;

use crate::{Backend, Kind, LocalDir, Result, StoreError};

pub struct BundleSet {
    dirs: Vec<PathBuf>,
    parts: Vec<LocalDir>,
}

impl BundleSet {
    /// Opens `bundle:DIR[,DIR…]` (the part after `bundle:`), oldest first.
    pub fn open(spec: &str) -> Result<Self> {
        let dirs: Vec<PathBuf> = spec
            .split(',')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        if dirs.is_empty() {
            return Err(StoreError::BadName(
                "bundle: needs at least one directory".into(),
            ));
        }
        let mut parts = Vec::new();
        for d in &dirs {
            if !d.join("manifest.json").is_file() {
                return Err(StoreError::NotFound {
                    kind: Kind::Config,
                    name: format!("{}/manifest.json (not a finished bundle)", d.display()),
                });
            }
            parts.push(LocalDir::open(d)?);
        }
        Ok(BundleSet { dirs, parts })
    }

    fn find<T>(&self, kind: Kind, name: &str, f: impl Fn(&LocalDir) -> Result<T>) -> Result<T> {
        for p in self.parts.iter().rev() {
            match f(p) {
                Err(StoreError::NotFound { .. }) => continue,
                r => return r,
            }
        }
        Err(StoreError::NotFound {
            kind,
            name: name.to_string(),
        })
    }
}

impl Backend for BundleSet {
    fn put(&self, kind: Kind, _name: &str, _data: &[u8]) -> Result<()> {
        Err(StoreError::Refused(format!(
            "bundles are read-only: cannot write a {kind}"
        )))
    }
    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>> {
        self.find(kind, name, |p| p.get(kind, name))
    }
    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.find(kind, name, |p| p.get_range(kind, name, offset, len))
    }
    fn size(&self, kind: Kind, name: &str) -> Result<u64> {
        self.find(kind, name, |p| p.size(kind, name))
    }
    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>> {
        let mut all = std::collections::BTreeMap::new();
        for p in &self.parts {
            for (n, s) in p.list(kind)? {
                all.entry(n).or_insert(s);
            }
        }
        Ok(all.into_iter().collect())
    }
    fn location(&self) -> String {
        format!(
            "bundle:{}",
            self.dirs
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(",")
        )
    }
}
