//! `holdfast restore`: every byte is authenticated and checked against its
//! keyed id before it is written. Directories are created first; file
//! contents are written pack by pack, in parallel, each pack fetched once
//! (the same order works for a local directory and for the vault, where a
//! request per blob would be far too slow); then directory modes and times
//! are set bottom-up (writing into a directory changes its mtime). All-zero
//! chunks are left as holes, so sparse files stay sparse.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use filetime::FileTime;
use holdfast_core::format::{Node, NodeKind, Tree};
use holdfast_core::{BlobId, ObjectId};
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
    /// What could not be restored because the repository is damaged or was
    /// tampered with (a blob that fails its check, a missing pack): exit
    /// status 4. Nothing of it was written as if it were good.
    pub damaged: Vec<String>,
    /// What could not be restored for other reasons: this machine (the
    /// target not writable, a full disk) or the network. Exit status 3.
    pub errors: Vec<String>,
}

impl RestoreReport {
    /// Files one `path` names could not be restored because of `e`.
    fn note(&mut self, path: &Path, e: &Error) {
        let line = format!("{}: {e}", path.display());
        if e.is_damage() || matches!(e, Error::Store(s) if s.is_not_found()) {
            self.damaged.push(line);
        } else {
            self.errors.push(line);
        }
    }
}

/// Why one file could not be restored.
enum Fail {
    /// The repository's fault: damage or tampering.
    Damage(String),
    /// This machine's or the network's.
    Local(String),
}

impl Fail {
    /// A failure to read from the repository: a missing object is damage
    /// here (the snapshot lists it), like a corrupt one.
    fn reading(e: &Error) -> Fail {
        if e.is_damage() || matches!(e, Error::Store(s) if s.is_not_found()) {
            Fail::Damage(e.to_string())
        } else {
            Fail::Local(e.to_string())
        }
    }
}

struct Plan {
    dirs: Vec<(PathBuf, Node)>,
    files: Vec<(PathBuf, Node)>,
    links: Vec<(PathBuf, Node)>,
}

fn walk(reader: &BlobReader, tree: &Tree, at: &Path, plan: &mut Plan, report: &mut RestoreReport) {
    for n in &tree.nodes {
        let p = at.join(OsStr::from_bytes(&n.name));
        match &n.kind {
            NodeKind::Dir { subtree } => {
                plan.dirs.push((p.clone(), n.clone()));
                match reader.tree(subtree) {
                    Ok(t) => walk(reader, &t, &p, plan, report),
                    Err(e) => report.note(&p, &e),
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

/// One write a pack's blob makes: (blob, file index, offset in the file).
type Write = (BlobId, u32, u64);

/// Writes every file's content, pack by pack: each needed pack is fetched
/// once (whole, checked against its id), each blob in it is authenticated
/// and checked against its keyed id, then written at its offsets in every
/// file that needs it. Files are created empty and written at offsets, so
/// skipped all-zero chunks stay holes. Returns, per file, its size or why it
/// could not be restored.
fn restore_files(
    reader: &BlobReader,
    files: &[(PathBuf, Node)],
    progress: &Progress,
) -> Vec<Result<u64>> {
    let mut errors: Vec<Option<Fail>> = (0..files.len()).map(|_| None).collect();
    let mut needs: HashMap<u32, Vec<Write>> = HashMap::new();
    for (i, (_, n)) in files.iter().enumerate() {
        let NodeKind::File { size, chunks } = &n.kind else {
            unreachable!()
        };
        let mut off = 0u64;
        for c in chunks {
            match reader.index.blobs.get(c) {
                Some(loc) => {
                    needs.entry(loc.pack).or_default().push((*c, i as u32, off));
                    off += loc.entry.raw_len as u64;
                }
                None => {
                    errors[i] = Some(Fail::Damage(format!(
                        "chunk {} is not in the snapshot's packs",
                        c.to_hex()
                    )));
                    break;
                }
            }
        }
        if errors[i].is_none() && off != *size {
            errors[i] = Some(Fail::Damage(format!(
                "chunks add up to {off} bytes, the snapshot says {size}"
            )));
        }
    }
    let errors = Mutex::new(errors);
    let mut packs: Vec<(u32, Vec<Write>)> = needs.into_iter().collect();
    packs.sort_by_key(|(p, _)| *p);
    packs.par_iter_mut().for_each(|(pack, list)| {
        let fail = |f: u32, why: Fail| {
            errors.lock().unwrap()[f as usize].get_or_insert(why);
        };
        let bytes = match reader.whole_pack(*pack) {
            Ok(b) => b,
            Err(e) => {
                for (_, f, _) in list.iter() {
                    fail(*f, Fail::reading(&e));
                }
                return;
            }
        };
        // Each blob is opened once however many files use it.
        list.sort_by_key(|(id, f, off)| (*id, *f, *off));
        let mut current: Option<(BlobId, Result<Vec<u8>>)> = None;
        let mut open: Option<(u32, std::fs::File)> = None;
        for (id, f, off) in list.iter() {
            if current.as_ref().is_none_or(|(c, _)| c != id) {
                let loc = reader.index.blobs[id];
                let plain = match loc.entry.sealed(&bytes) {
                    Some(sealed) => reader.open(&loc, sealed),
                    None => Err(Error::Corrupt(format!(
                        "pack {} is shorter than its table",
                        reader.index.packs[*pack as usize]
                    ))),
                };
                current = Some((*id, plain));
            }
            let data = match &current.as_ref().unwrap().1 {
                Ok(d) => d,
                Err(e) => {
                    fail(*f, Fail::reading(e));
                    continue;
                }
            };
            if data.iter().all(|b| *b == 0) {
                progress.add(0, data.len() as u64);
                continue; // left as a hole; the length is set at the end
            }
            if open.as_ref().is_none_or(|(of, _)| of != f) {
                // Created on first write: one open per file when its chunks
                // sit in one pack, as almost all mail does. (The target
                // directory was checked empty and its dirs made by us.)
                let path = &files[*f as usize].0;
                match OpenOptions::new()
                    .write(true)
                    .create(true)
                    // Another pack may already have written other parts of it.
                    .truncate(false)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(h) => open = Some((*f, h)),
                    Err(e) => {
                        fail(*f, Fail::Local(e.to_string()));
                        continue;
                    }
                }
            }
            if let Err(e) = open.as_ref().unwrap().1.write_all_at(data, *off) {
                fail(*f, Fail::Local(e.to_string()));
            }
            progress.add(0, data.len() as u64);
        }
    });
    let errors = errors.into_inner().unwrap();
    files
        .iter()
        .zip(errors)
        .map(|((p, n), err)| {
            match err {
                Some(Fail::Damage(e)) => return Err(Error::Corrupt(e)),
                Some(Fail::Local(e)) => return Err(io_err(p, std::io::Error::other(e))),
                None => {}
            }
            let NodeKind::File { size, .. } = &n.kind else {
                unreachable!()
            };
            // Empty and all-zero files were never opened; trailing holes
            // (zero chunks at the end) need the length set.
            let len = match std::fs::metadata(p) {
                Ok(m) => m.len(),
                Err(_) => {
                    OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(p)
                        .map_err(|e| io_err(p, e))?;
                    0
                }
            };
            if len < *size {
                OpenOptions::new()
                    .write(true)
                    .open(p)
                    .and_then(|f| f.set_len(*size))
                    .map_err(|e| io_err(p, e))?;
            }

            set_owner(p, n);
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(n.mode))
                .map_err(|e| io_err(p, e))?;

            set_times(p, n).map_err(|e| io_err(p, e))?;
            progress.add(1, 0);
            Ok(*size)
        })
        .collect()
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
    let body = repo.open_body(snap_id, &snap, secret)?;
    let (index, pack_errors) = Index::load(repo.backend.as_ref(), &snap.header.packs);
    let reader = BlobReader::new(repo.backend.as_ref(), &index, id_key, secret);
    let mut report = RestoreReport::default();
    for e in &pack_errors {
        report.note(Path::new("(snapshot)"), e);
    }

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
        None => walk(&reader, &root, target, &mut plan, &mut report),
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
                            walk(&reader, &tree, &at, &mut plan, &mut report);
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
    reader.clear_cache();
    let results = restore_files(&reader, &plan.files, progress);
    for ((p, _), r) in plan.files.iter().zip(results) {
        match r {
            Ok(b) => {
                report.files += 1;
                report.bytes += b;
            }
            Err(e) => report.note(p, &e),
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
