//! `holdfast restore`: every byte is authenticated and checked against its
//! keyed id before it is written. Directories are created first, files are
//! written in parallel, then directory modes and times are set bottom-up
//! (writing into a directory changes its mtime). All-zero chunks are skipped
//! with a seek, so sparse files stay sparse.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use filetime::FileTime;
use holdfast_core::ObjectId;
use holdfast_core::format::{Node, NodeKind, Tree};
use rayon::prelude::*;

use crate::index::{BlobReader, Index};
use crate::keys::Key;
use crate::{Error, Progress, Repository, Result, io_err};

pub struct RestoreOptions {
    pub target: PathBuf,
    /// Restore only this path inside the snapshot (`/`-separated).
    pub subpath: Option<String>,
}

#[derive(Debug, Default)]
pub struct RestoreReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
    pub errors: Vec<String>,
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, Node)>,
}

fn walk(reader: &BlobReader, tree: &Tree, at: &Path, plan: &mut Plan, errors: &mut Vec<String>) {
    for n in &tree.nodes {
        let p = at.join(OsStr::from_bytes(&n.name));
        match &n.kind {
            NodeKind::Dir { subtree } => {
                plan.dirs.push((p.clone(), n.clone()));
                match reader.tree(subtree) {
                    Ok(t) => walk(reader, &t, &p, plan, errors),
                    Err(e) => errors.push(format!("{}: {e}", p.display())),
                }
            }
            NodeKind::File { .. } => plan.files.push((p, n.clone())),
            NodeKind::Symlink { .. } => plan.links.push((p, n.clone())),
        }
    }
}

fn set_times(path: &Path, n: &Node) -> std::io::Result<()> {
    let t = FileTime::from_unix_time(n.mtime_s, n.mtime_ns);
    filetime::set_symlink_file_times(path, t, t)
}

/// Ownership is restored only where permitted (as root); elsewhere the
/// restoring user owns the files.
fn set_owner(path: &Path, n: &Node) {
    let _ = std::os::unix::fs::lchown(path, Some(n.uid), Some(n.gid));
}

fn restore_file(
    reader: &BlobReader,
    path: &Path,
    n: &Node,
    zero_ids: &Mutex<HashSet<holdfast_core::BlobId>>,
) -> Result<u64> {
    let NodeKind::File { size, chunks } = &n.kind else {
        unreachable!()
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| io_err(path, e))?;
    let mut pos = 0u64;
    let mut hole = false;
    for c in chunks {
        let data = reader.read(c)?;
        let zero = zero_ids.lock().unwrap().contains(c) || data.iter().all(|b| *b == 0);
        if zero && !data.is_empty() {
            zero_ids.lock().unwrap().insert(*c);
            f.seek(SeekFrom::Current(data.len() as i64))
                .map_err(|e| io_err(path, e))?;
            hole = true;
        } else {
            f.write_all(&data).map_err(|e| io_err(path, e))?;
            hole = false;
        }
        pos += data.len() as u64;
    }
    if pos != *size {
        return Err(Error::Corrupt(format!(
            "{}: restored {pos} bytes, snapshot says {size}",
            path.display()
        )));
    }
    if hole {
        f.set_len(pos).map_err(|e| io_err(path, e))?;
    }
    drop(f);
    set_owner(path, n);
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(n.mode))
        .map_err(|e| io_err(path, e))?;
    set_times(path, n).map_err(|e| io_err(path, e))?;
    Ok(pos)
}

pub fn restore(
    repo: &Repository,
    key: &Key,
    snap_id: &ObjectId,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let (id_key, secret) = key.require_restore("restore")?;
    let snap = repo.load_snapshot(snap_id)?;
    let body = snap
        .open_body(secret)
        .map_err(|e| Error::Tamper(e.to_string()))?;
    let (index, pack_errors) = Index::load(repo.backend.as_ref(), &snap.header.packs);
    let reader = BlobReader::new(repo.backend.as_ref(), &index, id_key, secret);
    let mut report = RestoreReport {
        errors: pack_errors.iter().map(|e| e.to_string()).collect(),
        ..Default::default()
    };

    // Find the starting tree (whole snapshot, or one path in it).
    let target = &opts.target;
    if target.exists()
        && std::fs::read_dir(target)
            .map_err(|e| io_err(target, e))?
            .next()
            .is_some()
    {
        return Err(Error::Usage(format!(
            "{} exists and is not empty; restore into a new directory",
            target.display()
        )));
    }
    let mut plan = Plan {
        dirs: Vec::new(),
        files: Vec::new(),
        links: Vec::new(),
    };
    let root = reader.tree(&body.root)?;
    match &opts.subpath {
        None => walk(&reader, &root, target, &mut plan, &mut report.errors),
        Some(sub) => {
            let mut tree = root;
            let mut at = target.clone();
            let parts: Vec<&str> = sub.split('/').filter(|s| !s.is_empty()).collect();
            for (i, part) in parts.iter().enumerate() {
                let node = tree
                    .nodes
                    .iter()
                    .find(|n| n.name == part.as_bytes())
                    .cloned()
                    .ok_or_else(|| Error::Usage(format!("{sub:?} is not in the snapshot")))?;
                at = at.join(part);
                let last = i + 1 == parts.len();
                match &node.kind {
                    NodeKind::Dir { subtree } => {
                        tree = reader.tree(subtree)?;
                        if last {
                            plan.dirs.push((at.clone(), node.clone()));
                            walk(&reader, &tree, &at, &mut plan, &mut report.errors);
                        } else {
                            std::fs::create_dir_all(&at).map_err(|e| io_err(&at, e))?;
                        }
                    }
                    _ if last => {
                        std::fs::create_dir_all(at.parent().unwrap())
                            .map_err(|e| io_err(&at, e))?;
                        if matches!(node.kind, NodeKind::File { .. }) {
                            plan.files.push((at.clone(), node));
                        } else {
                            plan.links.push((at.clone(), node));
                        }
                    }
                    _ => {
                        return Err(Error::Usage(format!(
                            "{part:?} in {sub:?} is not a directory"
                        )));
                    }
                }
            }
        }
    }
    std::fs::create_dir_all(target).map_err(|e| io_err(target, e))?;
    let total: u64 = plan
        .files
        .iter()
        .map(|(_, n)| match n.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        })
        .sum();
    progress.files_total.store(
        plan.files.len() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
    progress
        .bytes_total
        .store(total, std::sync::atomic::Ordering::Relaxed);

    for (p, _) in &plan.dirs {
        std::fs::create_dir(p).map_err(|e| io_err(p, e))?;
        report.dirs += 1;
    }
    for (p, n) in &plan.links {
        let NodeKind::Symlink { target } = &n.kind else {
            unreachable!()
        };
        match std::os::unix::fs::symlink(OsStr::from_bytes(target), p) {
            Ok(()) => {
                set_owner(p, n);
                let _ = set_times(p, n);
                report.symlinks += 1;
            }
            Err(e) => report.errors.push(format!("{}: {e}", p.display())),
        }
    }
    let zero_ids = Mutex::new(HashSet::new());
    let results: Vec<(PathBuf, Result<u64>)> = plan
        .files
        .par_iter()
        .map(|(p, n)| {
            let r = restore_file(&reader, p, n, &zero_ids);
            if let Ok(b) = &r {
                progress.add(1, *b);
            }
            (p.clone(), r)
        })
        .collect();
    for (p, r) in results {
        match r {
            Ok(b) => {
                report.files += 1;
                report.bytes += b;
            }
            Err(e) => report.errors.push(format!("{}: {e}", p.display())),
        }
    }
    for (p, n) in plan.dirs.iter().rev() {
        set_owner(p, n);
        let r = std::fs::set_permissions(p, std::fs::Permissions::from_mode(n.mode))
            .and_then(|_| set_times(p, n));
        if let Err(e) = r {
            report.errors.push(format!("{}: {e}", p.display()));
        }
    }
    Ok(report)
}
