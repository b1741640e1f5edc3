//! `holdfast backup`.
//!
//! Pipeline: walk the paths into an in-memory plan of directories (names and
//! stat results only) → files the cache does not vouch for are read,
//! chunked, hashed, compressed and sealed in parallel (rayon) → sealed blobs
//! go into a shared pack builder → a writer thread stores finished packs →
//! trees are built bottom-up → after every pack is durable, the signed
//! snapshot is written (the commit point) → the cache is saved.
//!
//! Before the commit, this run is compared with the previous snapshot
//! ([`crate::detect`]); findings go into the snapshot and the report, and
//! the snapshot is written whatever they say (it is the evidence).
//!
//! At most one pack is being filled and one being written at a time, and
//! files are streamed through the chunker, so memory stays bounded whatever
//! the size of the files.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobSet, GlobSetBuilder};
use holdfast_core::chunker::{self, StreamError};
use holdfast_core::crypto::{self, IdKey, Identity, SessionKey};
use holdfast_core::format::{
    self, Finding, KIND_DATA, KIND_TREE, Node, NodeKind, PackBuilder, PackEntry, Signal, Snapshot,
    SnapshotBody, SnapshotHeader, Tree,
};
use holdfast_core::keyfile::Secret;
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::Kind;
use rayon::prelude::*;

use crate::cache::{Cache, CachedFile, FileStat, Owner};
use crate::detect::{self, ReadStats, Reading};
use crate::index::read_pack_table;
use crate::keys::Key;
use crate::{Error, Progress, Repository, Result, now_ns};

/// Files up to this size (the largest chunk) are read whole and chunked from
/// memory; larger ones are streamed.
const SLURP_LIMIT: u64 = 1 << 20;

pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub hostname: String,
    pub cache_dir: PathBuf,
}

#[derive(Debug)]
pub struct BackupReport {
    pub snapshot: ObjectId,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub files_read: u64,
    pub new_blobs: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub packs_written: u64,
    pub unreadable: Vec<(PathBuf, String)>,
    /// Anomalies against the previous snapshot (stored in the snapshot).
    pub findings: Vec<Finding>,
    /// Some paths behind each finding (local only, never stored).
    pub examples: Vec<(Signal, Vec<PathBuf>)>,
    /// False when there was no previous snapshot in the cache to compare
    /// with (first backup, or a lost cache).
    pub compared: bool,
}

// ------------------------------------------------------------------ plan

struct PNode {
    name: Vec<u8>,
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: (i64, u32),
    kind: PKind,
}

enum PKind {
    File {
        path: PathBuf,
        stat: FileStat,
        chunks: Option<Vec<BlobId>>,
    },
    Dir(usize),
    Symlink(Vec<u8>),
}

struct Walker<'a> {
    dirs: Vec<Vec<PNode>>,
    excludes: &'a GlobSet,
    one_fs: Option<u64>,
    unreadable: Vec<(PathBuf, String)>,
}

fn node_from(name: &[u8], md: &std::fs::Metadata, kind: PKind) -> PNode {
    PNode {
        name: name.to_vec(),
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: (md.mtime(), md.mtime_nsec() as u32),
        kind,
    }
}

fn stat_of(md: &std::fs::Metadata) -> FileStat {
    FileStat {
        size: md.len(),
        mtime: (md.mtime(), md.mtime_nsec() as u32),
        ctime: (md.ctime(), md.ctime_nsec() as u32),
        ino: md.ino(),
        dev: md.dev(),
    }
}

impl Walker<'_> {
    fn excluded(&self, path: &Path) -> bool {
        self.excludes.is_match(path) || path.file_name().is_some_and(|n| self.excludes.is_match(n))
    }

    /// Makes the node for `path` (already lstat-ed), recursing into dirs.
    fn visit(&mut self, path: &Path, name: &[u8], md: &std::fs::Metadata) -> Option<PNode> {
        let ft = md.file_type();
        if ft.is_dir() {
            let idx = self.dirs.len();
            self.dirs.push(Vec::new());
            let rd = match std::fs::read_dir(path) {
                Ok(rd) => rd,
                Err(e) => {
                    self.dirs.pop();
                    self.unreadable.push((path.to_path_buf(), e.to_string()));
                    return None;
                }
            };
            let mut entries: Vec<_> = rd
                .filter_map(|e| match e {
                    Ok(e) => Some(e.file_name()),
                    Err(e) => {
                        self.unreadable.push((path.to_path_buf(), e.to_string()));
                        None
                    }
                })
                .collect();
            entries.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
            let mut nodes = Vec::with_capacity(entries.len());
            for n in entries {
                let child = path.join(&n);
                if self.excluded(&child) {
                    continue;
                }
                let cmd = match std::fs::symlink_metadata(&child) {
                    Ok(m) => m,
                    Err(e) => {
                        self.unreadable.push((child, e.to_string()));
                        continue;
                    }
                };
                if cmd.is_dir() && self.one_fs.is_some_and(|d| d != cmd.dev()) {
                    continue;
                }
                if let Some(node) = self.visit(&child, n.as_bytes(), &cmd) {
                    nodes.push(node);
                }
            }
            self.dirs[idx] = nodes;
            Some(node_from(name, md, PKind::Dir(idx)))
        } else if ft.is_file() {
            Some(node_from(
                name,
                md,
                PKind::File {
                    path: path.to_path_buf(),
                    stat: stat_of(md),
                    chunks: None,
                },
            ))
        } else if ft.is_symlink() {
            match std::fs::read_link(path) {
                Ok(t) => Some(node_from(
                    name,
                    md,
                    PKind::Symlink(t.as_os_str().as_bytes().to_vec()),
                )),
                Err(e) => {
                    self.unreadable.push((path.to_path_buf(), e.to_string()));
                    None
                }
            }
        } else {
            // Sockets, fifos and devices are not backed up.
            None
        }
    }
}

// ------------------------------------------------------------------ upload

/// Shared by the parallel workers: dedups, seals and packs blobs.
struct Uploader<'a> {
    id_key: &'a IdKey,
    key: SessionKey,
    epk: [u8; 32],
    level: i32,
    pack_target: usize,
    known: &'a HashMap<BlobId, u32>,
    pending: Mutex<HashSet<BlobId>>,
    packer: Mutex<Option<PackBuilder>>,
    tx: Mutex<Option<SyncSender<PackBuilder>>>,
    /// Pack buffers the writer has finished with, for reuse: a few large
    /// buffers recycled instead of one allocated per pack keeps the
    /// allocator from holding freed packs in per-thread arenas.
    spare: Mutex<Receiver<Vec<u8>>>,
    failed: &'a AtomicBool,
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
}

impl Uploader<'_> {
    fn add(&self, kind: u8, data: &[u8]) -> Result<BlobId> {
        let id = self.id_key.blob_id(data);
        if self.known.contains_key(&id) || !self.pending.lock().unwrap().insert(id) {
            return Ok(id);
        }
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::Usage("backup aborted: a pack write failed".into()));
        }
        let (flags, sealed) = format::seal_blob(&self.key, &id, kind, data, self.level)?;
        self.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.new_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let full = {
            let mut p = self.packer.lock().unwrap();
            let b = p.get_or_insert_with(|| match self.spare.lock().unwrap().try_recv() {
                Ok(buf) => PackBuilder::with_buffer(&self.epk, buf),
                Err(_) => PackBuilder::new(&self.epk, self.pack_target + (2 << 20)),
            });
            b.add(id, kind, flags, data.len() as u32, &sealed);
            if b.len() >= self.pack_target {
                p.take()
            } else {
                None
            }
        };
        if let Some(b) = full {
            self.send(b)?;
        }
        Ok(id)
    }

    fn send(&self, b: PackBuilder) -> Result<()> {
        let tx = self.tx.lock().unwrap().clone();
        match tx {
            Some(tx) if tx.send(b).is_ok() => Ok(()),
            _ => Err(Error::Usage(
                "backup aborted: the pack writer stopped".into(),
            )),
        }
    }

    /// Sends the last partial pack and closes the channel.
    fn flush(&self) -> Result<()> {
        let last = self.packer.lock().unwrap().take();
        if let Some(b) = last {
            self.send(b)?;
        }
        self.tx.lock().unwrap().take();
        Ok(())
    }
}

/// A pack the writer stored: id, table, size.
type WrittenPack = (ObjectId, Vec<PackEntry>, u64);

enum FileResult {
    Done(Vec<BlobId>, u64, Option<ReadStats>),
    Unreadable(String),
}

/// Reads, chunks and uploads one file. With `detect`, a message's header
/// block is checked, and its entropy measured over the chunks not already
/// stored before this run (content already stored was there before: a
/// re-read of unchanged mail costs no histogram), on the bytes already read
/// for chunking.
fn read_file(
    up: &Uploader,
    chunking: &format::Chunking,
    path: &Path,
    size: u64,
    detect: bool,
) -> Result<FileResult> {
    let mut reading =
        (detect && detect::is_message(path.as_os_str().as_bytes())).then(Reading::default);
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return Ok(FileResult::Unreadable(e.to_string())),
    };
    let mut chunks = Vec::new();
    let mut total = 0u64;
    if size <= SLURP_LIMIT {
        let mut buf = Vec::with_capacity(size as usize + 1);
        if let Err(e) = f.read_to_end(&mut buf) {
            return Ok(FileResult::Unreadable(e.to_string()));
        }
        total = buf.len() as u64;
        if let Some(r) = &mut reading {
            r.head(&buf, true);
        }
        chunker::chunk_slice(chunking, &buf, |c| {
            let id = up.add(KIND_DATA, c)?;
            if let Some(r) = &mut reading
                && !up.known.contains_key(&id)
            {
                r.count(c);
            }
            chunks.push(id);
            Ok::<_, Error>(())
        })?;
    } else {
        let r = chunker::chunk_stream(chunking, f, |c| {
            total += c.len() as u64;
            let id = up.add(KIND_DATA, &c)?;
            if let Some(r) = &mut reading {
                r.head(&c, false);
                if !up.known.contains_key(&id) {
                    r.count(&c);
                }
            }
            chunks.push(id);
            Ok::<_, Error>(())
        });
        match r {
            Ok(()) => {}
            Err(StreamError::Read(e)) => return Ok(FileResult::Unreadable(e.to_string())),
            Err(StreamError::Sink(e)) => return Err(e),
        }
    }
    Ok(FileResult::Done(
        chunks,
        total,
        reading.map(Reading::finish),
    ))
}

/// Rebuilds the blob → pack map from the tables of packs that this client's
/// own snapshots reference (when the cache is lost).
fn rebuild_known(repo: &Repository, client: &[u8; 32], cache: &mut Cache) -> Result<()> {
    let (snaps, _) = repo.snapshots()?;
    let mut packs: Vec<ObjectId> = snaps
        .iter()
        .filter(|(_, s)| &s.header.client == client)
        .flat_map(|(_, s)| s.header.packs.iter().copied())
        .collect();
    packs.sort();
    packs.dedup();
    cache.last_snapshot = snaps
        .iter()
        .rev()
        .find(|(_, s)| &s.header.client == client)
        .map(|(id, _)| *id);
    for p in packs {
        let Ok((_, entries)) = read_pack_table(repo.backend.as_ref(), &p) else {
            continue;
        };
        let n = cache.packs.len() as u32;
        cache.packs.push(p);
        for e in entries {
            cache.blobs.entry(e.id).or_insert(n);
        }
    }
    Ok(())
}

fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::Usage(format!("bad exclude {p:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| Error::Usage(format!("bad excludes: {e}")))
}

pub fn backup(
    repo: &Repository,
    key: &Key,
    opts: &BackupOptions,
    progress: &Progress,
) -> Result<BackupReport> {
    let (id_key, repo_public, identity): (&IdKey, &[u8; 32], &Identity) = match &key.secret {
        Secret::Client {
            id_key,
            repo_public,
            identity,
        } => (id_key, repo_public, identity),
        _ => {
            return Err(Error::Usage(format!(
                "backup needs a client key, not a {} key",
                key.role.name()
            )));
        }
    };
    if repo_public != &repo.config.repo_public {
        return Err(Error::Tamper(
            "the repository public key differs from the one in the client key".into(),
        ));
    }
    let me = identity.public();
    if !repo.members.contains_key(&me) {
        return Err(Error::Usage(
            "this client key is not registered with the repository".into(),
        ));
    }
    if opts.paths.is_empty() {
        return Err(Error::Usage(
            "nothing to back up: give at least one path".into(),
        ));
    }

    // 1. Walk.
    let excludes = build_excludes(&opts.excludes)?;
    let mut walker = Walker {
        dirs: vec![Vec::new()],
        excludes: &excludes,
        one_fs: None,
        unreadable: Vec::new(),
    };
    let mut abs_paths = Vec::new();
    // Each root, and the error that made it missing (a wipe if the previous
    // snapshot had files under it, else an error as before).
    let mut roots: Vec<(Vec<u8>, Option<Error>)> = Vec::new();
    for p in &opts.paths {
        let abs = std::path::absolute(p).map_err(|e| crate::io_err(p, e))?;
        let md = match std::fs::symlink_metadata(&abs) {
            Ok(md) => md,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                abs_paths.push(abs.as_os_str().as_bytes().to_vec());
                roots.push((
                    abs.as_os_str().as_bytes().to_vec(),
                    Some(crate::io_err(&abs, e)),
                ));
                continue;
            }
            Err(e) => return Err(crate::io_err(&abs, e)),
        };
        roots.push((abs.as_os_str().as_bytes().to_vec(), None));
        walker.one_fs = opts.one_file_system.then_some(md.dev());
        let name = abs
            .file_name()
            .map(OsStr::as_bytes)
            .unwrap_or(b"root")
            .to_vec();
        if walker.dirs[0].iter().any(|n: &PNode| n.name == name) {
            return Err(Error::Usage(format!(
                "two paths end in the same name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        if let Some(node) = walker.visit(&abs, &name, &md) {
            walker.dirs[0].push(node);
        }
        abs_paths.push(abs.as_os_str().as_bytes().to_vec());
    }
    walker.dirs[0].sort_by(|a, b| a.name.cmp(&b.name));
    let Walker {
        mut dirs,
        mut unreadable,
        ..
    } = walker;

    // 2. Cache: load, check against the repository's packs, or rebuild.
    let owner = Owner {
        repo_id: repo.config.repo_id,
        client: me,
        config_id: repo.config_id,
    };
    let cache_path = Cache::path(&opts.cache_dir, &owner);
    let mut cache = Cache::load(&cache_path, &owner);
    let existing: HashSet<ObjectId> = repo
        .backend
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|(n, _)| ObjectId::from_hex(&n).ok())
        .collect();
    cache.retain_packs(&existing);
    if cache.packs.is_empty() {
        let history = std::mem::take(&mut cache.history);
        cache = Cache::default();
        cache.history = history;
        rebuild_known(repo, &me, &mut cache)?;
    }
    // A root that is gone is a wipe only if the last snapshot had files
    // under it; otherwise it is the error it always was (a typo).
    let compared = cache.last_snapshot.is_some() && !cache.files.is_empty();
    for (root, missing) in &mut roots {
        if let Some(e) = missing.take() {
            let had = cache
                .files
                .keys()
                .any(|p| p.starts_with(root) && p.get(root.len()).is_none_or(|&b| b == b'/'));
            if !had {
                return Err(e);
            }
            *missing = Some(e);
        }
    }

    // 3. Which files must be read?
    let mut work: Vec<(usize, usize)> = Vec::new();
    let (mut files, mut bytes) = (0u64, 0u64);
    for (d, nodes) in dirs.iter_mut().enumerate() {
        for (i, n) in nodes.iter_mut().enumerate() {
            if let PKind::File { path, stat, chunks } = &mut n.kind {
                files += 1;
                bytes += stat.size;
                let key = path.as_os_str().as_bytes();
                match cache.files.get(key) {
                    Some(c)
                        if &c.stat == stat
                            && c.chunks.iter().all(|b| cache.blobs.contains_key(b)) =>
                    {
                        *chunks = Some(c.chunks.clone());
                    }
                    _ => work.push((d, i)),
                }
            }
        }
    }
    progress.files_total.store(files, Ordering::Relaxed);
    progress.bytes_total.store(bytes, Ordering::Relaxed);
    progress.add(files - work.len() as u64, 0);

    // 4. Read, chunk, seal, pack — in parallel; a writer thread stores packs.
    // The current restore key epoch (the log's last executed rotation;
    // without one, the config's key, which the client key pins above).
    let (epk, session) = crypto::seal_session(&repo.sealing_public())?;
    let failed = AtomicBool::new(false);
    let (tx, rx) = sync_channel::<PackBuilder>(0);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(2);
    let written: Arc<Mutex<Vec<WrittenPack>>> = Arc::default();
    let write_error: Arc<Mutex<Option<Error>>> = Arc::default();
    let backend = repo.backend.clone();
    let writer = {
        let written = written.clone();
        let write_error = write_error.clone();
        std::thread::spawn(move || {
            for b in rx {
                if write_error.lock().unwrap().is_some() {
                    continue;
                }
                let (id, bytes, entries) = b.finish();
                match backend.put(Kind::Pack, &id.to_hex(), &bytes) {
                    Ok(()) => written
                        .lock()
                        .unwrap()
                        .push((id, entries, bytes.len() as u64)),
                    Err(e) => *write_error.lock().unwrap() = Some(e.into()),
                }
                let _ = spare_tx.try_send(bytes);
            }
        })
    };
    let up = Uploader {
        id_key,
        key: session.clone(),
        epk,
        level: repo.config.zstd_level as i32,
        pack_target: repo.config.pack_target as usize,
        known: &cache.blobs,
        pending: Mutex::default(),
        packer: Mutex::default(),
        tx: Mutex::new(Some(tx)),
        spare: Mutex::new(spare_rx),
        failed: &failed,
        new_blobs: AtomicU64::new(0),
        new_bytes: AtomicU64::new(0),
    };
    let chunking = &repo.config.chunking;
    let paths: Vec<(PathBuf, u64)> = work
        .iter()
        .map(|&(d, i)| match &dirs[d][i].kind {
            PKind::File { path, stat, .. } => (path.clone(), stat.size),
            _ => unreachable!(),
        })
        .collect();
    let results: Vec<Result<FileResult>> = paths
        .par_iter()
        .map(|(path, size)| {
            let r = read_file(&up, chunking, path, *size, compared);
            if r.is_err() {
                failed.store(true, Ordering::Relaxed);
            }
            progress.add(1, *size);
            r
        })
        .collect();

    let mut first_error = None;
    let mut gone: HashSet<(usize, usize)> = HashSet::new();
    let mut read_stats: HashMap<Vec<u8>, ReadStats> = HashMap::new();
    for ((d, i), r) in work.iter().zip(results) {
        match r {
            Ok(FileResult::Done(c, size, stats)) => {
                if let PKind::File { chunks, stat, path } = &mut dirs[*d][*i].kind {
                    *chunks = Some(c);
                    stat.size = size;
                    if let Some(s) = stats {
                        read_stats.insert(path.as_os_str().as_bytes().to_vec(), s);
                    }
                }
            }
            Ok(FileResult::Unreadable(why)) => {
                if let PKind::File { path, .. } = &dirs[*d][*i].kind {
                    unreadable.push((path.clone(), why));
                }
                gone.insert((*d, *i));
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }

    // 5. Trees, bottom-up (children always have larger indices).
    let mut tree_ids = vec![BlobId::default(); dirs.len()];
    let mut new_cache_files: HashMap<Vec<u8>, CachedFile> = HashMap::new();
    let mut referenced: Vec<BlobId> = Vec::new();
    let mut ndirs = 0u64;
    if first_error.is_none() {
        for d in (0..dirs.len()).rev() {
            let mut tree = Tree::default();
            for (i, n) in std::mem::take(&mut dirs[d]).into_iter().enumerate() {
                if gone.contains(&(d, i)) {
                    continue;
                }
                let kind = match n.kind {
                    PKind::File { path, stat, chunks } => {
                        let chunks = chunks.unwrap_or_default();
                        referenced.extend_from_slice(&chunks);
                        new_cache_files.insert(
                            path.as_os_str().as_bytes().to_vec(),
                            CachedFile {
                                stat: stat.clone(),
                                chunks: chunks.clone(),
                            },
                        );
                        NodeKind::File {
                            size: stat.size,
                            chunks,
                        }
                    }
                    PKind::Dir(c) => {
                        ndirs += 1;
                        NodeKind::Dir {
                            subtree: tree_ids[c],
                        }
                    }
                    PKind::Symlink(t) => NodeKind::Symlink { target: t },
                };
                tree.nodes.push(Node {
                    name: n.name,
                    mode: n.mode,
                    uid: n.uid,
                    gid: n.gid,
                    mtime_s: n.mtime.0,
                    mtime_ns: n.mtime.1,
                    kind,
                });
            }
            match up.add(KIND_TREE, &tree.encode()) {
                Ok(id) => {
                    tree_ids[d] = id;
                    referenced.push(id);
                }
                Err(e) => {
                    first_error = Some(e);
                    break;
                }
            }
        }
    }
    let flushed = up.flush();
    let new_blobs = up.new_blobs.load(Ordering::Relaxed);
    let new_bytes = up.new_bytes.load(Ordering::Relaxed);
    drop(up);
    writer
        .join()
        .map_err(|_| Error::Usage("pack writer panicked".into()))?;
    if let Some(e) = write_error.lock().unwrap().take() {
        return Err(e);
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    flushed?;

    // 6. Which packs does the snapshot need? Every blob must be found.
    let written = std::mem::take(&mut *written.lock().unwrap());
    let (mut packs_written, mut stored_bytes) = (0, 0);
    for (pack, entries, size) in written {
        packs_written += 1;
        stored_bytes += size;
        let n = cache.packs.len() as u32;
        cache.packs.push(pack);
        for e in entries {
            cache.blobs.insert(e.id, n);
        }
    }
    let mut need: Vec<ObjectId> = Vec::new();
    let mut seen = vec![false; cache.packs.len()];
    for b in &referenced {
        let p =
            *cache.blobs.get(b).ok_or_else(|| {
                Error::Corrupt(format!("internal: blob {} was not stored", b.short()))
            })? as usize;
        if !seen[p] {
            seen[p] = true;
            need.push(cache.packs[p]);
        }
    }
    need.sort();
    need.dedup();

    // 7. Detection: this run against the previous snapshot (the cache).
    let outcome = if compared {
        let unreadable_set: HashSet<Vec<u8>> = unreadable
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes().to_vec())
            .collect();
        let root_list: Vec<(Vec<u8>, bool)> = roots
            .iter()
            .map(|(r, m)| (r.clone(), m.is_some()))
            .collect();
        detect::compare(&detect::Input {
            roots: &root_list,
            prev: &cache.files,
            cur: &new_cache_files,
            read: &read_stats,
            unreadable: &unreadable_set,
            history: &cache.history,
        })
    } else {
        detect::Outcome::default()
    };

    // 8. Commit: the snapshot, after everything it references is durable.
    let header = SnapshotHeader {
        config_id: repo.config_id,
        client: me,
        time_ns: now_ns(),
        parent: cache.last_snapshot,
        packs: need,
        epk,
    };
    let body = SnapshotBody {
        root: tree_ids[0],
        hostname: opts.hostname.clone(),
        paths: abs_paths,
        files: new_cache_files.len() as u64,
        dirs: ndirs,
        bytes: new_cache_files.values().map(|f| f.stat.size).sum(),
        new_bytes,
        unreadable: unreadable
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes().to_vec())
            .collect(),
    };
    let (snap_id, snap_bytes) =
        Snapshot::create_with_findings(header, &outcome.findings, &body, &session, identity)?;
    repo.backend
        .put(Kind::Snapshot, &snap_id.to_hex(), &snap_bytes)?;
    drop(session);

    // 9. Cache (best effort: losing it costs a re-read, not correctness).
    cache.files = new_cache_files;
    cache.last_snapshot = Some(snap_id);
    if compared {
        cache.history.push(outcome.run);
        let n = cache.history.len();
        let max = holdfast_core::detect::BASELINE_MAX_RUNS;
        if n > max {
            cache.history.drain(..n - max);
        }
    }
    let _ = cache.save(&cache_path, &owner);

    Ok(BackupReport {
        snapshot: snap_id,
        files: body.files,
        dirs: ndirs,
        bytes: body.bytes,
        files_read: work.len() as u64,
        new_blobs,
        new_bytes,
        stored_bytes,
        packs_written,
        unreadable,
        examples: outcome
            .examples
            .into_iter()
            .map(|(s, ps)| {
                (
                    s,
                    ps.into_iter()
                        .map(|p| PathBuf::from(OsStr::from_bytes(&p)))
                        .collect(),
                )
            })
            .collect(),
        findings: outcome.findings,
        compared,
    })
}
