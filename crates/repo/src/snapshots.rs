//! Listings: `snapshots`, `ls`, `diff`.
//!
//! `ls` and `diff` stream: trees are walked depth first with one directory
//! held per level, blob locations come from the on-disk [`PackIndex`], and
//! entries go to a callback as they are found, so memory does not grow
//! with the number of files.

use holdfast_core::format::{Finding, Node, NodeKind, SnapshotBody, Tree};
use holdfast_core::{BlobId, ObjectId};

use crate::keys::Key;
use crate::packindex::{PackIndex, Reader};
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
    /// How the client judged it (record version 3), None before.
    pub judgement: Option<holdfast_core::format::Judgement>,
    /// Only with the restore key.
    pub body: Option<SnapshotBody>,
    /// The restore key epoch it names (record version 4): its public key,
    /// and its index (0 the config's) where this reader knows it.
    pub restore_epoch: Option<([u8; 32], Option<usize>)>,
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
            judgement: s.judgement.clone(),
            restore_epoch: s.restore_epoch.map(|e| (e, repo.epoch_index(&e))),
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
    pub uid: u32,
    pub gid: u32,
    /// A symlink's target.
    pub target: Option<Vec<u8>>,
}

/// Runs `f` with a reader over one snapshot's packs and its root tree id.
pub fn with_snapshot<T>(
    repo: &Repository,
    key: &Key,
    id: &ObjectId,
    f: impl FnOnce(&Reader, BlobId) -> Result<T>,
) -> Result<T> {
    let (id_key, secret) = key.require_restore("reading a snapshot's contents")?;
    let snap = repo.load_snapshot(id)?;
    let body = repo.open_body(id, &snap, secret)?;
    let (index, errors) = PackIndex::for_packs(repo.backend.as_ref(), &snap.header.packs);
    if let Some(e) = errors.into_iter().next() {
        return Err(e);
    }
    let index = index?;
    let reader = Reader::new(repo.backend.as_ref(), &index, id_key, secret);
    let r = f(&reader, body.root);
    if r.as_ref().is_err_and(|e| e.is_damage()) {
        // Perhaps the cached index was wrong: the next run rebuilds it.
        index.distrust();
    }
    r
}

/// The entry a node makes at `path`.
fn entry(reader: &Reader, path: Vec<u8>, n: &Node) -> Entry {
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
    Entry {
        path,
        kind,
        size,
        mode: n.mode,
        mtime_s: n.mtime_s,
        mtime_ns: n.mtime_ns,
        content,
        uid: n.uid,
        gid: n.gid,
        target: match &n.kind {
            NodeKind::Symlink { target } => Some(target.clone()),
            _ => None,
        },
    }
}

fn join(prefix: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
    path.extend_from_slice(prefix);
    if !path.is_empty() {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Every entry of a tree, depth first, with `/`-joined paths, given to
/// `f` as it is found; `f` says whether to descend into a directory.
pub fn walk(
    reader: &Reader,
    root: BlobId,
    f: &mut dyn FnMut(&Entry) -> Result<bool>,
) -> Result<()> {
    fn rec(
        reader: &Reader,
        tree: Tree,
        prefix: &[u8],
        f: &mut dyn FnMut(&Entry) -> Result<bool>,
    ) -> Result<()> {
        for n in tree.nodes {
            let e = entry(reader, join(prefix, &n.name), &n);
            let descend = f(&e)?;
            if let NodeKind::Dir { subtree } = &n.kind
                && descend
            {
                rec(reader, reader.tree(subtree)?, &e.path, f)?;
            }
        }
        Ok(())
    }
    rec(reader, reader.tree(&root)?, b"", f)
}

/// Every entry of a tree, depth first, with `/`-joined paths, collected
/// (memory grows with the tree: [`walk`] streams).
pub fn entries(reader: &Reader, root: BlobId) -> Result<Vec<Entry>> {
    let mut out = Vec::new();
    walk(reader, root, &mut |e| {
        out.push(e.clone());
        Ok(true)
    })?;
    Ok(out)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Added,
    Removed,
    /// Content changed.
    Modified,
    /// Only mode or mtime changed.
    Metadata,
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

/// One step of a directory in diff order: an entry (at its name) or the
/// entries under a directory (at its name and `/`), so that paths come out
/// in the byte order of whole paths (`a`, `a.b`, `a/c`).
enum Step {
    Entry(Entry),
    Under(BlobId, Vec<u8>),
}

fn steps(reader: &Reader, tree: Option<Tree>, prefix: &[u8]) -> Vec<(Vec<u8>, Step)> {
    let Some(tree) = tree else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(tree.nodes.len() * 2);
    for n in tree.nodes {
        let e = entry(reader, join(prefix, &n.name), &n);
        if let NodeKind::Dir { subtree } = &n.kind {
            let mut k = n.name.clone();
            k.push(b'/');
            out.push((k, Step::Under(*subtree, e.path.clone())));
        }
        out.push((n.name, Step::Entry(e)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Compares two directories (either may be absent), reporting changes in
/// whole-path byte order. Identical subtrees are skipped unread.
fn diff_dirs(
    ra: &Reader,
    rb: &Reader,
    ta: Option<Tree>,
    tb: Option<Tree>,
    prefix: &[u8],
    f: &mut dyn FnMut(Change, &[u8]) -> Result<()>,
) -> Result<()> {
    let sa = steps(ra, ta, prefix);
    let sb = steps(rb, tb, prefix);
    let (mut ia, mut ib) = (sa.into_iter().peekable(), sb.into_iter().peekable());
    loop {
        let ord = match (ia.peek(), ib.peek()) {
            (None, None) => return Ok(()),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(a), Some(b)) => a.0.cmp(&b.0),
        };
        let (a, b) = match ord {
            std::cmp::Ordering::Less => (ia.next().map(|x| x.1), None),
            std::cmp::Ordering::Greater => (None, ib.next().map(|x| x.1)),
            std::cmp::Ordering::Equal => (ia.next().map(|x| x.1), ib.next().map(|x| x.1)),
        };
        match (a, b) {
            (Some(Step::Entry(x)), Some(Step::Entry(y))) => {
                if x.kind != y.kind || (x.kind != "dir" && x.content != y.content) {
                    f(Change::Modified, &x.path)?;
                } else if x.mode != y.mode
                    || (x.kind != "dir" && (x.mtime_s, x.mtime_ns) != (y.mtime_s, y.mtime_ns))
                {
                    f(Change::Metadata, &x.path)?;
                }
            }
            (Some(Step::Entry(x)), None) => f(Change::Removed, &x.path)?,
            (None, Some(Step::Entry(y))) => f(Change::Added, &y.path)?,
            (Some(Step::Under(x, path)), Some(Step::Under(y, _))) if x != y => {
                diff_dirs(ra, rb, Some(ra.tree(&x)?), Some(rb.tree(&y)?), &path, f)?;
            }
            (Some(Step::Under(x, path)), None) => {
                diff_dirs(ra, rb, Some(ra.tree(&x)?), None, &path, f)?;
            }
            (None, Some(Step::Under(y, path))) => {
                diff_dirs(ra, rb, None, Some(rb.tree(&y)?), &path, f)?;
            }
            _ => {}
        }
    }
}

/// Streams the changes from snapshot `a` to snapshot `b` to `f`, each
/// kind in whole-path byte order (interleaved).
pub fn diff_stream(
    repo: &Repository,
    key: &Key,
    a: &ObjectId,
    b: &ObjectId,
    f: &mut dyn FnMut(Change, &[u8]) -> Result<()>,
) -> Result<()> {
    with_snapshot(repo, key, a, |ra, root_a| {
        with_snapshot(repo, key, b, |rb, root_b| {
            if root_a == root_b {
                return Ok(());
            }
            diff_dirs(
                ra,
                rb,
                Some(ra.tree(&root_a)?),
                Some(rb.tree(&root_b)?),
                b"",
                f,
            )
        })
    })
}

/// The changes from `a` to `b`, collected (see [`diff_stream`]).
pub fn diff(repo: &Repository, key: &Key, a: &ObjectId, b: &ObjectId) -> Result<Diff> {
    let mut d = Diff::default();
    diff_stream(repo, key, a, b, &mut |c, p| {
        let list = match c {
            Change::Added => &mut d.added,
            Change::Removed => &mut d.removed,
            Change::Modified => &mut d.modified,
            Change::Metadata => &mut d.metadata,
        };
        list.push(p.to_vec());
        Ok(())
    })?;
    Ok(d)
}
