//! Listings: `snapshots`, `ls`, `diff`.

use std::collections::BTreeMap;

use holdfast_core::format::{Finding, NodeKind, SnapshotBody, Tree};
use holdfast_core::{BlobId, ObjectId};

use crate::index::{BlobReader, Index};
use crate::keys::Key;
use crate::{Error, Repository, Result};

pub struct SnapshotInfo {
    pub id: ObjectId,
    pub time_ns: i64,
    pub client: String,
    pub parent: Option<ObjectId>,
    pub packs: usize,
    /// The client's findings at backup time (signed, in the clear); None
    /// for a snapshot written before clients looked (record version 1).
    pub findings: Option<Vec<Finding>>,
    /// Only with the restore key.
    pub body: Option<SnapshotBody>,
}

/// Every snapshot; with the restore key, its encrypted details too.
/// Snapshots that fail their checks are returned as errors.
pub fn list(repo: &Repository, key: &Key) -> Result<(Vec<SnapshotInfo>, Vec<Error>)> {
    let (snaps, bad) = repo.snapshots()?;
    let mut out = Vec::with_capacity(snaps.len());
    let mut errors = bad;
    for (id, s) in snaps {
        let body = match key.repo_secret() {
            Some(secret) => match repo.open_body(&id, &s, secret) {
                Ok(b) => Some(b),
                Err(e) => {
                    errors.push(e);
                    None
                }
            },
            None => None,
        };
        out.push(SnapshotInfo {
            id,
            time_ns: repo.order_time(&id, &s),
            client: repo.member_name(&s.header.client),
            parent: s.header.parent,
            packs: s.header.packs.len(),
            findings: s.findings.clone(),
            body,
        });
    }
    Ok((out, errors))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: Vec<u8>,
    pub kind: &'static str,
    pub size: u64,
    pub mode: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    /// Identifies the content (keyed hash of the chunk list / target).
    pub content: BlobId,
}

/// Runs `f` with a reader over one snapshot's packs and its root tree id.
pub fn with_snapshot<T>(
    repo: &Repository,
    key: &Key,
    id: &ObjectId,
    f: impl FnOnce(&BlobReader, BlobId) -> Result<T>,
) -> Result<T> {
    let (id_key, secret) = key.require_restore("reading a snapshot's contents")?;
    let snap = repo.load_snapshot(id)?;
    let body = repo.open_body(id, &snap, secret)?;
    let (index, errors) = Index::load(repo.backend.as_ref(), &snap.header.packs);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let reader = BlobReader::new(repo.backend.as_ref(), &index, id_key, secret);
    f(&reader, body.root)
}

/// Every entry of a tree, depth first, with `/`-joined paths.
pub fn entries(reader: &BlobReader, root: BlobId) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    fn rec(reader: &BlobReader, tree: &Tree, prefix: &[u8], out: &mut Vec<Entry>) -> Result<()> {
        for n in &tree.nodes {
            let mut path = prefix.to_vec();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(&n.name);
            let (kind, size, content) = match &n.kind {
                NodeKind::File { size, chunks } => {
                    let mut ids = Vec::with_capacity(chunks.len() * 32);
                    for c in chunks {
                        ids.extend_from_slice(&c.0);
                    }
                    ("file", *size, reader.id_key().blob_id(&ids))
                }
                NodeKind::Dir { subtree } => ("dir", 0, *subtree),
                NodeKind::Symlink { target } => (
                    "symlink",
                    target.len() as u64,
                    reader.id_key().blob_id(target),
                ),
            };
            out.push(Entry {
                path: path.clone(),
                kind,
                size,
                mode: n.mode,
                mtime_s: n.mtime_s,
                mtime_ns: n.mtime_ns,
                content,
            });
            if let NodeKind::Dir { subtree } = &n.kind {
                rec(reader, &reader.tree(subtree)?, &path, out)?;
            }
        }
        Ok(())
    }
    rec(reader, &reader.tree(&root)?, b"", &mut out)?;
    Ok(out)
}

#[derive(Debug, Default)]
pub struct Diff {
    pub added: Vec<Vec<u8>>,
    pub removed: Vec<Vec<u8>>,
    /// Content changed.
    pub modified: Vec<Vec<u8>>,
    /// Only mode or mtime changed.
    pub metadata: Vec<Vec<u8>>,
}

pub fn diff(repo: &Repository, key: &Key, a: &ObjectId, b: &ObjectId) -> Result<Diff> {
    let ea = with_snapshot(repo, key, a, entries)?;
    let eb = with_snapshot(repo, key, b, entries)?;
    let ma: BTreeMap<_, _> = ea.into_iter().map(|e| (e.path.clone(), e)).collect();
    let mb: BTreeMap<_, _> = eb.into_iter().map(|e| (e.path.clone(), e)).collect();
    let mut d = Diff::default();
    for (p, x) in &ma {
        match mb.get(p) {
            None => d.removed.push(p.clone()),
            Some(y) if x.kind != y.kind || (x.kind != "dir" && x.content != y.content) => {
                d.modified.push(p.clone())
            }
            Some(y)
                if x.mode != y.mode
                    || (x.kind != "dir" && (x.mtime_s, x.mtime_ns) != (y.mtime_s, y.mtime_ns)) =>
            {
                d.metadata.push(p.clone())
            }
            _ => {}
        }
    }
    d.added = mb
        .keys()
        .filter(|p| !ma.contains_key(*p))
        .cloned()
        .collect();
    Ok(d)
}
