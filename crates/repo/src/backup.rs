//! `holdfast backup`, in memory that does not grow with the file count
//! (issue 10).
//!
//! Three stages run at once, linked by a bounded window of files in order:
//!
//! 1. **walk** ([`crate::walk`]): depth first, each directory's entries in
//!    name order. The walk is merged (a merge-join) with the previous
//!    cache's files section, which is stored in the same order
//!    ([`crate::cache`]), so deciding whether a file is unchanged costs one
//!    sequential read, not a map of every path. A cached file is unchanged
//!    when its stat fields match and every chunk's *pack number* (kept in
//!    the cache entry) is in the in-memory live-pack bitmap: O(1), no blob
//!    lookup.
//! 2. **upload**: files to read go to the rayon pool (at most [`WINDOW`]
//!    in flight); each is read, chunked, hashed, compressed and sealed; new
//!    blobs go into the one pack being filled, and a writer thread stores
//!    finished packs. Which blobs are stored is a sorted table on disk with
//!    a small in-memory fence, plus this run's new blobs in a bounded map
//!    spilled to sorted runs ([`crate::blobset`]).
//! 3. **trees**: results are consumed in walk order; a directory's tree is
//!    built and sealed as soon as its last entry is in, so only the
//!    directories on the current path are open. Each file's cache record is
//!    streamed to the next cache file, its comparison with the previous
//!    snapshot fed to the [`Detector`], and its chunks' pack numbers set in
//!    a bitmap over pack numbers: the snapshot's `packs` list comes from
//!    that bitmap, not from a list of every referenced blob.
//!
//! After every pack is durable, the signed snapshot is written (the commit
//! point), then the new cache is completed (blob table, meta, hash) and
//! put in place crash-safely (temp file, fsync, rename, directory fsync).
//!
//! Why these choices rather than an embedded database (redb): the access
//! pattern is a sequential scan in walk order, so a sorted stream needs no
//! index, no random I/O and no page cache of its own in RSS, and writing the
//! next cache is one sequential append; the blob set is the only random
//! lookup, and on an unchanged run it is not consulted at all.
//!
//! What memory remains per file or blob: about 3 bytes per stored blob
//! (fence, Bloom filters of this run's spilled blobs), one bit per pack,
//! per-directory state (the open directories' entries, per Maildir folder
//! counters in the detector). Files in flight are bounded by [`WINDOW`].
//!
//! Roots are walked in path order; a root inside another one given too is
//! walked without the cache (read again each time, deduplicated, not
//! compared), since its files would break the cache's order.

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use globset::{Glob, GlobSet, GlobSetBuilder};
use holdfast_core::chunker::{self, StreamError};
use holdfast_core::crypto::{self, IdKey, Identity, SessionKey};
use holdfast_core::format::{
    self, Checked, Finding, Judgement, KIND_DATA, KIND_TREE, Node, NodeKind, PackBuilder, Signal,
    Snapshot, SnapshotBody, SnapshotHeader, Tree,
};
use holdfast_core::keyfile::Secret;
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::Kind;

use crate::blobset::{BlobSet, Reserve, Table, TableBuilder};
use crate::cache::{self, CacheMeta, CacheWriter, Cursor, Entry, FileStat, Loaded, Owner};
use crate::detect::{self, Cur, Detector, Prev, ReadStats, Reading};
use crate::index::read_pack_table;
use crate::keys::Key;
use crate::walk::{Event, Meta, Walk};
use crate::{Error, Progress, Repository, Result, io_err, now_ns};

/// Files up to this size (the largest chunk) are read whole and chunked from
/// memory; larger ones are streamed.
const SLURP_LIMIT: u64 = 1 << 20;
/// Walk events (files, directories) between the walk and the tree stage:
/// how many files can be read at once, and all that is held of them.
pub const WINDOW: usize = 512;

pub struct BackupOptions {
    pub paths: Vec<PathBuf>,
    pub excludes: Vec<String>,
    pub one_file_system: bool,
    pub hostname: String,
    pub cache_dir: PathBuf,
    /// Compare with the previous snapshot (issue 11). Off only to measure
    /// detection's overhead: the snapshot then records it was not checked.
    pub detect: bool,
    /// Stored in the snapshot's body (docs/format.md §9.2).
    pub tags: Vec<String>,
    /// Back up standard input, streamed, as one file of this name (no
    /// `/`) instead of `paths`; its own cache, so a dump is compared with
    /// the previous dump of the same name.
    pub stdin: Option<String>,
    /// Walk, read, chunk, compress and seal as a backup would, but store
    /// nothing: no pack, no snapshot, no cache.
    pub dry_run: bool,
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
    /// with (first backup, or a lost cache), or detection was off.
    pub compared: bool,
    /// How the run was judged, as the snapshot records it.
    pub judgement: Judgement,
    /// Of `files_read`: files the cache did not know (new, or a lost
    /// cache) and files it knew whose stat changed.
    pub files_new: u64,
    pub files_changed: u64,
    /// Nothing was stored: `snapshot` is the id the snapshot would have
    /// had, `packs_written` and `stored_bytes` what would have been stored.
    pub dry_run: bool,
}

// ------------------------------------------------------------------ upload

/// A blob as the uploader placed it.
#[derive(Clone, Copy)]
struct Placed {
    id: BlobId,
    pack: u32,
    /// Stored before this run.
    old: bool,
}

/// Shared by the parallel workers: dedups, seals and packs blobs.
struct Uploader<'a> {
    id_key: &'a IdKey,
    key: SessionKey,
    epk: [u8; 32],
    level: i32,
    pack_target: usize,
    blobs: &'a BlobSet,
    scratch: &'a Path,
    /// The pack being filled and its number.
    packer: Mutex<(Option<PackBuilder>, u32)>,
    tx: Mutex<Option<SyncSender<(PackBuilder, u32)>>>,
    /// Pack buffers the writer has finished with, for reuse: a few large
    /// buffers recycled instead of one allocated per pack keeps the
    /// allocator from holding freed packs in per-thread arenas.
    spare: Mutex<Receiver<Vec<u8>>>,
    failed: &'a AtomicBool,
    new_blobs: AtomicU64,
    new_bytes: AtomicU64,
}

impl Uploader<'_> {
    fn add(&self, kind: u8, data: &[u8]) -> Result<Placed> {
        let id = self.id_key.blob_id(data);
        match self
            .blobs
            .reserve(&id, self.failed)
            .map_err(|e| io_err(self.scratch, e))?
        {
            Reserve::Old(pack) => {
                return Ok(Placed {
                    id,
                    pack,
                    old: true,
                });
            }
            Reserve::New(pack) => {
                return Ok(Placed {
                    id,
                    pack,
                    old: false,
                });
            }
            Reserve::Mine => {}
        }
        match self.store(id, kind, data) {
            Ok(pack) => {
                self.blobs
                    .resolve(&id, pack)
                    .map_err(|e| io_err(self.scratch, e))?;
                Ok(Placed {
                    id,
                    pack,
                    old: false,
                })
            }
            Err(e) => {
                self.failed.store(true, Ordering::Relaxed);
                self.blobs.abandon(&id);
                Err(e)
            }
        }
    }

    /// Seals one new blob into the current pack; returns the pack number.
    fn store(&self, id: BlobId, kind: u8, data: &[u8]) -> Result<u32> {
        if self.failed.load(Ordering::Relaxed) {
            return Err(Error::Usage("backup aborted: a pack write failed".into()));
        }
        let (flags, sealed) = format::seal_blob(&self.key, &id, kind, data, self.level)?;
        self.new_blobs.fetch_add(1, Ordering::Relaxed);
        self.new_bytes
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let (no, full) = {
            let mut p = self.packer.lock().unwrap_or_else(|p| p.into_inner());
            let (cur, next) = &mut *p;
            if cur.is_none() {
                let b = match self
                    .spare
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .try_recv()
                {
                    Ok(buf) => PackBuilder::with_buffer(&self.epk, buf),
                    Err(_) => PackBuilder::new(&self.epk, self.pack_target + (2 << 20)),
                };
                *cur = Some(b);
                *next += 1;
            }
            let no = *next - 1;
            let full = match cur {
                Some(b) => {
                    b.add(id, kind, flags, data.len() as u32, &sealed);
                    b.len() >= self.pack_target
                }
                None => false,
            };
            (no, if full { cur.take() } else { None })
        };
        if let Some(b) = full {
            self.send(b, no)?;
        }
        Ok(no)
    }

    fn send(&self, b: PackBuilder, no: u32) -> Result<()> {
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match tx {
            Some(tx) if tx.send((b, no)).is_ok() => Ok(()),
            _ => Err(Error::Usage(
                "backup aborted: the pack writer stopped".into(),
            )),
        }
    }

    /// Sends the last partial pack and closes the channel.
    fn flush(&self) -> Result<()> {
        let last = {
            let mut p = self.packer.lock().unwrap_or_else(|p| p.into_inner());
            p.0.take().map(|b| (b, p.1 - 1))
        };
        if let Some((b, no)) = last {
            self.send(b, no)?;
        }
        self.tx.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(())
    }
}

enum FileResult {
    Done(Vec<(BlobId, u32)>, u64, Option<ReadStats>),
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
    match File::open(path) {
        Ok(f) => read_from(up, chunking, f, path, size, detect),
        Err(e) => Ok(FileResult::Unreadable(e.to_string())),
    }
}

/// [`read_file`] from an open source; `size` only chooses between reading
/// whole (up to [`SLURP_LIMIT`]) and streaming.
fn read_from(
    up: &Uploader,
    chunking: &format::Chunking,
    mut f: impl Read,
    path: &Path,
    size: u64,
    detect: bool,
) -> Result<FileResult> {
    let mut reading =
        (detect && detect::is_message(path.as_os_str().as_bytes())).then(Reading::default);
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
            let p = up.add(KIND_DATA, c)?;
            if let Some(r) = &mut reading
                && !p.old
            {
                r.count(c);
            }
            chunks.push((p.id, p.pack));
            Ok::<_, Error>(())
        })?;
    } else {
        let r = chunker::chunk_stream(chunking, f, |c| {
            total += c.len() as u64;
            let p = up.add(KIND_DATA, &c)?;
            if let Some(r) = &mut reading {
                r.head(&c, false);
                if !p.old {
                    r.count(&c);
                }
            }
            chunks.push((p.id, p.pack));
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

/// Rebuilds the blob → pack table from the tables of packs that this
/// client's own snapshots reference (when the cache is lost), on disk.
fn rebuild_known(
    repo: &Repository,
    client: &[u8; 32],
    existing: &HashSet<ObjectId>,
    scratch: &Path,
) -> Result<(Vec<ObjectId>, Table, Option<ObjectId>)> {
    let (snaps, _) = repo.snapshots()?;
    // This client's snapshots under its earlier keys count too (a key's
    // successor, format.md §4.3).
    let mut keys = repo.predecessors(client);
    keys.push(*client);
    let mut packs: Vec<ObjectId> = snaps
        .iter()
        .filter(|(_, s)| keys.contains(&s.header.client))
        .flat_map(|(_, s)| s.header.packs.iter().copied())
        .filter(|p| existing.contains(p))
        .collect();
    packs.sort();
    packs.dedup();
    let last = snaps
        .iter()
        .rev()
        .find(|(_, s)| keys.contains(&s.header.client))
        .map(|(id, _)| *id);
    drop(snaps);
    let mut tb = TableBuilder::new(scratch);
    let mut kept = Vec::with_capacity(packs.len());
    for p in packs {
        let Ok((_, entries)) = read_pack_table(repo.backend.as_ref(), &p) else {
            continue;
        };
        let n = kept.len() as u32;
        kept.push(p);
        for e in entries {
            tb.push(&e.id, n).map_err(|e| io_err(scratch, e))?;
        }
    }
    let table = tb.finish().map_err(|e| io_err(scratch, e))?;
    Ok((kept, table, last))
}

fn build_excludes(patterns: &[String]) -> Result<GlobSet> {
    let mut b = GlobSetBuilder::new();
    for p in patterns {
        b.add(Glob::new(p).map_err(|e| Error::Usage(format!("bad exclude {p:?}: {e}")))?);
    }
    b.build()
        .map_err(|e| Error::Usage(format!("bad excludes: {e}")))
}

// ------------------------------------------------------------------ walk

/// One backed-up path.
struct Root {
    abs: PathBuf,
    name: Vec<u8>,
    /// `None` when missing (and for standard input).
    md: Option<std::fs::Metadata>,
    /// Merged with the cache (false for a root inside another root).
    joined: bool,
    /// Standard input (`--stdin`), stored as one file named `name`.
    stdin: bool,
}

fn bytes_of(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

fn under(path: &[u8], root: &[u8]) -> bool {
    let root = root.strip_suffix(b"/").unwrap_or(root);
    path.starts_with(root) && (path.len() == root.len() || path.get(root.len()) == Some(&b'/'))
}

/// The previous cache's files, merged with the walk.
struct Merge {
    cursor: Option<Cursor>,
}

fn prev_of(e: &Entry, with_chunks: bool) -> Prev {
    Prev {
        size: e.stat.size,
        fp: detect::content_fp(e.stat.size, e.chunks.first().map(|c| &c.0)),
        chunks_fp: if with_chunks {
            detect::chunks_fp(e.chunks.iter().map(|c| &c.0))
        } else {
            0
        },
    }
}

impl Merge {
    /// Passes the entries before `path`: gone from this run (`gone`), or
    /// outside every root (not compared).
    fn pass_before(&mut self, path: &[u8], det: &mut Option<Detector>, gone: bool) {
        let Some(c) = &mut self.cursor else { return };
        while c
            .peek()
            .is_some_and(|e| cache::cmp_path(&e.path, path).is_lt() && !under(&e.path, path))
        {
            let Some(e) = c.next_entry() else { break };
            if gone && let Some(d) = det {
                d.gone(&e.path, &prev_of(&e, false));
            }
        }
    }

    /// Passes the entries at or under `path`: gone, or still there but
    /// unreadable.
    fn pass_under(&mut self, path: &[u8], det: &mut Option<Detector>, gone: bool) {
        let Some(c) = &mut self.cursor else { return };
        while c.peek().is_some_and(|e| under(&e.path, path)) {
            let Some(e) = c.next_entry() else { break };
            if let Some(d) = det {
                let p = prev_of(&e, false);
                if gone {
                    d.gone(&e.path, &p);
                } else {
                    d.still_there(&e.path, &p);
                }
            }
        }
    }

    /// The previous entry for the file at `path`, if any.
    fn take(&mut self, path: &[u8], det: &mut Option<Detector>) -> Option<Entry> {
        self.pass_before(path, det, true);
        let c = self.cursor.as_mut()?;
        if c.peek().is_some_and(|e| e.path == path) {
            c.next_entry()
        } else {
            None
        }
    }
}

// ------------------------------------------------------------------ trees

enum Work {
    Cached(Vec<(BlobId, u32)>),
    /// Read by a worker, in the next batch (results come back in order).
    Read,
    /// Standard input, streamed by the tree stage itself.
    Stdin,
}

/// Files read by one rayon job, one after the other: one spawn and one
/// wake-up per batch instead of per file (most mail is a few KiB).
const BATCH_FILES: usize = 32;
const BATCH_BYTES: u64 = 1 << 20;

type BatchResults = Vec<Result<FileResult>>;

/// The tree stage's side of the batches: receivers in order, and what is
/// left of the batch being consumed.
#[derive(Default)]
struct Batches {
    pending: VecDeque<Receiver<BatchResults>>,
    current: VecDeque<Result<FileResult>>,
}

impl Batches {
    fn next(&mut self) -> Result<FileResult> {
        if self.current.is_empty() {
            let rx = self
                .pending
                .pop_front()
                .ok_or_else(|| Error::Usage("internal: no batch to read".into()))?;
            let v = rx
                .recv()
                .map_err(|_| Error::Usage("internal: a reader stopped".into()))?;
            self.current = v.into();
        }
        self.current
            .pop_front()
            .unwrap_or_else(|| Err(Error::Usage("internal: a short batch".into())))
    }
}

/// One walk event on its way to the tree stage.
enum Item {
    Enter {
        name: Vec<u8>,
        meta: Meta,
    },
    Leave,
    Symlink {
        name: Vec<u8>,
        meta: Meta,
        target: Vec<u8>,
    },
    File {
        name: Vec<u8>,
        meta: Meta,
        path: PathBuf,
        stat: FileStat,
        prev: Option<Prev>,
        joined: bool,
        work: Work,
    },
    Unreadable {
        path: PathBuf,
        why: String,
    },
}

fn node(name: Vec<u8>, meta: Meta, kind: NodeKind) -> Node {
    Node {
        name,
        mode: meta.mode,
        uid: meta.uid,
        gid: meta.gid,
        mtime_s: meta.mtime.0,
        mtime_ns: meta.mtime.1,
        kind,
    }
}

/// The tree stage: open directories, the used-pack bitmap, the next cache.
struct Trees<'a> {
    up: &'a Uploader<'a>,
    chunking: &'a format::Chunking,
    progress: &'a Progress,
    stack: Vec<(Vec<u8>, Meta, Vec<Node>)>,
    top: Vec<Node>,
    /// Bit per pack number: referenced by this snapshot.
    used: Vec<u64>,
    cache: CacheWriter,
    exts: BTreeSet<Vec<u8>>,
    files: u64,
    bytes: u64,
    dirs: u64,
    files_read: u64,
    files_new: u64,
    files_changed: u64,
    unreadable: Vec<(PathBuf, String)>,
}

/// Counts what passes through into the progress's bytes done.
struct Counted<'a, R> {
    inner: R,
    progress: &'a Progress,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.add(0, n as u64);
        Ok(n)
    }
}

impl Trees<'_> {
    fn use_pack(&mut self, p: u32) {
        let (w, b) = (p as usize / 64, p % 64);
        if w >= self.used.len() {
            self.used.resize(w + 1, 0);
        }
        self.used[w] |= 1 << b;
    }

    fn place(&mut self, n: Node) {
        match self.stack.last_mut() {
            Some((_, _, nodes)) => nodes.push(n),
            None => self.top.push(n),
        }
    }

    fn consume(
        &mut self,
        item: Item,
        det: &mut Option<Detector>,
        batches: &mut Batches,
    ) -> Result<()> {
        match item {
            Item::Enter { name, meta } => self.stack.push((name, meta, Vec::new())),
            Item::Leave => {
                let Some((name, meta, nodes)) = self.stack.pop() else {
                    return Err(Error::Usage("internal: unbalanced walk".into()));
                };
                let p = self.up.add(KIND_TREE, &Tree { nodes }.encode())?;
                self.use_pack(p.pack);
                self.dirs += 1;
                self.place(node(name, meta, NodeKind::Dir { subtree: p.id }));
            }
            Item::Symlink { name, meta, target } => {
                self.place(node(name, meta, NodeKind::Symlink { target }))
            }
            Item::Unreadable { path, why } => self.unreadable.push((path, why)),
            Item::File {
                name,
                meta,
                path,
                mut stat,
                prev,
                joined,
                work,
            } => {
                let (chunks, read, was_read) = match work {
                    Work::Cached(c) => (c, None, false),
                    Work::Read | Work::Stdin => {
                        let r = if matches!(work, Work::Stdin) {
                            let stdin = Counted {
                                inner: std::io::stdin().lock(),
                                progress: self.progress,
                            };
                            let r = read_from(
                                self.up,
                                self.chunking,
                                stdin,
                                &path,
                                u64::MAX,
                                det.is_some(),
                            );
                            self.progress.add(1, 0);
                            r
                        } else {
                            batches.next()
                        };
                        self.files_read += 1;
                        if prev.is_some() {
                            self.files_changed += 1;
                        } else {
                            self.files_new += 1;
                        }
                        match r? {
                            FileResult::Done(c, size, read) => {
                                stat.size = size;
                                (c, read, true)
                            }
                            FileResult::Unreadable(why) => {
                                if let (Some(d), Some(p), true) = (det.as_mut(), prev, joined) {
                                    d.still_there(bytes_of(&path), &p);
                                }
                                self.unreadable.push((path, why));
                                return Ok(());
                            }
                        }
                    }
                };
                let key = bytes_of(&path);
                self.files += 1;
                self.bytes += stat.size;
                for (_, p) in &chunks {
                    self.use_pack(*p);
                }
                if joined {
                    self.cache.file(key, &stat, &chunks);
                    if let Some(d) = det {
                        let fp = detect::content_fp(stat.size, chunks.first().map(|c| &c.0));
                        let cur = Cur {
                            size: stat.size,
                            fp,
                            chunks_fp: if was_read {
                                detect::chunks_fp(chunks.iter().map(|c| &c.0))
                            } else {
                                prev.map_or(0, |p| p.chunks_fp)
                            },
                            read,
                        };
                        match &prev {
                            Some(p) => d.same(key, p, &cur),
                            None => d.added(key, &cur),
                        }
                    }
                }
                if self.exts.len() < cache::MAX_EXTS {
                    for e in detect::exts_of(key) {
                        if !self.exts.contains(e) {
                            self.exts.insert(e.to_vec());
                        }
                    }
                }
                let kind = NodeKind::File {
                    size: stat.size,
                    chunks: chunks.into_iter().map(|c| c.0).collect(),
                };
                self.place(node(name, meta, kind));
            }
        }
        Ok(())
    }
}

/// Walks every root, merged with the cache, with at most [`WINDOW`] files
/// in flight to the rayon pool, consumed in order by the tree stage.
#[allow(clippy::too_many_arguments)]
fn walk_all(
    roots: &[Root],
    excludes: &GlobSet,
    one_fs: bool,
    merge: &mut Merge,
    trees: &mut Trees,
    det: &mut Option<Detector>,
    live: &[bool],
    chunking: &format::Chunking,
    compared: bool,
) -> Result<()> {
    let up = trees.up;
    let progress = trees.progress;
    rayon::in_place_scope(|s| {
        let mut queue: VecDeque<Item> = VecDeque::with_capacity(WINDOW + 1);
        let mut batches = Batches::default();
        let mut open: Vec<(PathBuf, u64)> = Vec::new();
        // Hands the open batch to the pool.
        let flush = |open: &mut Vec<(PathBuf, u64)>, batches: &mut Batches| {
            if open.is_empty() {
                return;
            }
            let files = std::mem::take(open);
            let (tx, rx) = sync_channel(1);
            batches.pending.push_back(rx);
            s.spawn(move |_| {
                let mut out = Vec::with_capacity(files.len());
                for (p, size) in files {
                    let r = read_file(up, chunking, &p, size, compared);
                    if r.is_err() {
                        up.failed.store(true, Ordering::Relaxed);
                    }
                    progress.add(1, size);
                    out.push(r);
                }
                let _ = tx.send(out);
            });
        };
        let mut open_bytes = 0u64;
        for root in roots {
            let rb = bytes_of(&root.abs);
            if root.joined {
                merge.pass_before(rb, det, false);
            }
            if root.stdin {
                // One file, read by the tree stage as it comes (never
                // whole in memory), owned by whoever runs the backup.
                progress.files_total.fetch_add(1, Ordering::Relaxed);
                let now = now_ns();
                let t = (
                    now.div_euclid(1_000_000_000),
                    now.rem_euclid(1_000_000_000) as u32,
                );
                let (uid, gid) = std::fs::metadata("/proc/self")
                    .map(|m| {
                        use std::os::unix::fs::MetadataExt;
                        (m.uid(), m.gid())
                    })
                    .unwrap_or((0, 0));
                let prev = merge.take(rb, det).map(|e| prev_of(&e, compared));
                queue.push_back(Item::File {
                    name: root.name.clone(),
                    meta: Meta {
                        mode: 0o600,
                        uid,
                        gid,
                        mtime: t,
                    },
                    path: root.abs.clone(),
                    stat: FileStat {
                        size: 0,
                        mtime: t,
                        ctime: t,
                        ino: 0,
                        dev: 0,
                    },
                    prev,
                    joined: root.joined,
                    work: Work::Stdin,
                });
            } else if let Some(md) = &root.md {
                for ev in Walk::new(&root.abs, &root.name, md.clone(), excludes, one_fs) {
                    if up.failed.load(Ordering::Relaxed) {
                        break;
                    }
                    let item = match ev {
                        Event::Enter { name, meta } => Item::Enter { name, meta },
                        Event::Leave => Item::Leave,
                        Event::Symlink { name, meta, target } => {
                            Item::Symlink { name, meta, target }
                        }
                        Event::Unreadable { path, why } => {
                            if root.joined {
                                merge.pass_before(bytes_of(&path), det, true);
                                merge.pass_under(bytes_of(&path), det, false);
                            }
                            Item::Unreadable { path, why }
                        }
                        Event::File {
                            name,
                            meta,
                            path,
                            stat,
                        } => {
                            progress.files_total.fetch_add(1, Ordering::Relaxed);
                            progress.bytes_total.fetch_add(stat.size, Ordering::Relaxed);
                            let old = if root.joined {
                                merge.take(bytes_of(&path), det)
                            } else {
                                None
                            };
                            let unchanged = old.as_ref().is_some_and(|e| {
                                e.stat == stat
                                    && e.chunks
                                        .iter()
                                        .all(|(_, p)| live.get(*p as usize).copied() == Some(true))
                            });
                            let (prev, work) = match old {
                                Some(e) if unchanged => {
                                    progress.add(1, 0);
                                    (Some(prev_of(&e, false)), Work::Cached(e.chunks))
                                }
                                old => {
                                    open.push((path.clone(), stat.size));
                                    open_bytes += stat.size;
                                    if open.len() >= BATCH_FILES || open_bytes >= BATCH_BYTES {
                                        flush(&mut open, &mut batches);
                                        open_bytes = 0;
                                    }
                                    (old.map(|e| prev_of(&e, compared)), Work::Read)
                                }
                            };
                            Item::File {
                                name,
                                meta,
                                path,
                                stat,
                                prev,
                                joined: root.joined,
                                work,
                            }
                        }
                    };
                    queue.push_back(item);
                    while queue.len() > WINDOW {
                        if let Some(it) = queue.pop_front() {
                            // A file to read whose batch is still open (many
                            // unchanged files since it, few to read): hand
                            // the batch to the pool before waiting for it.
                            if matches!(
                                it,
                                Item::File {
                                    work: Work::Read,
                                    ..
                                }
                            ) && batches.pending.is_empty()
                                && batches.current.is_empty()
                            {
                                flush(&mut open, &mut batches);
                                open_bytes = 0;
                            }
                            trees.consume(it, det, &mut batches).inspect_err(|_| {
                                up.failed.store(true, Ordering::Relaxed);
                            })?;
                        }
                    }
                }
            }
            flush(&mut open, &mut batches);
            open_bytes = 0;
            while let Some(it) = queue.pop_front() {
                trees.consume(it, det, &mut batches).inspect_err(|_| {
                    up.failed.store(true, Ordering::Relaxed);
                })?;
            }
            // Everything under the root the walk did not meet is gone (the
            // whole root, when it is missing).
            if root.joined {
                merge.pass_under(rb, det, true);
            }
        }
        Ok(())
    })
}

// ------------------------------------------------------------------ backup

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
    if opts.paths.is_empty() && opts.stdin.is_none() {
        return Err(Error::Usage(
            "nothing to back up: give at least one path".into(),
        ));
    }
    let excludes = build_excludes(&opts.excludes)?;
    for t in &opts.tags {
        if let Some(why) = format::tag_problem(t) {
            return Err(Error::Usage(format!("--tag {t:?}: {why}")));
        }
    }
    if opts.tags.len() > format::MAX_TAGS {
        return Err(Error::Usage(format!("at most {} tags", format::MAX_TAGS)));
    }

    // 1. Roots, in the order given (for the snapshot) and in walk order.
    let mut abs_paths = Vec::new();
    let mut roots: Vec<Root> = Vec::new();
    let mut missing_errors: Vec<(Vec<u8>, Error)> = Vec::new();
    if let Some(name) = &opts.stdin {
        if !opts.paths.is_empty() {
            return Err(Error::Usage(
                "--stdin backs up standard input only: give no path".into(),
            ));
        }
        if name.is_empty()
            || name.len() > 255
            || name.contains('/')
            || name == "."
            || name == ".."
            || name.chars().any(char::is_control)
        {
            return Err(Error::Usage(format!(
                "--stdin-filename {name:?}: one file name, without '/'"
            )));
        }
        // Recorded as `/NAME`, as restic does: `restore --path /NAME`.
        let abs = PathBuf::from(format!("/{name}"));
        abs_paths.push(bytes_of(&abs).to_vec());
        roots.push(Root {
            abs,
            name: name.as_bytes().to_vec(),
            md: None,
            joined: true,
            stdin: true,
        });
    }
    for p in &opts.paths {
        let abs = std::path::absolute(p).map_err(|e| io_err(p, e))?;
        abs_paths.push(bytes_of(&abs).to_vec());
        let name = abs
            .file_name()
            .map(OsStr::as_bytes)
            .unwrap_or(b"root")
            .to_vec();
        let md = match std::fs::symlink_metadata(&abs) {
            Ok(md) => Some(md),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing_errors.push((bytes_of(&abs).to_vec(), io_err(&abs, e)));
                None
            }
            Err(e) => return Err(io_err(&abs, e)),
        };
        if md.is_some() && roots.iter().any(|r| r.md.is_some() && r.name == name) {
            return Err(Error::Usage(format!(
                "two paths end in the same name {:?}",
                String::from_utf8_lossy(&name)
            )));
        }
        roots.push(Root {
            abs,
            name,
            md,
            joined: true,
            stdin: false,
        });
    }
    let root_list: Vec<(Vec<u8>, bool)> = roots
        .iter()
        .map(|r| (bytes_of(&r.abs).to_vec(), r.md.is_none() && !r.stdin))
        .collect();
    roots.sort_by(|a, b| cache::cmp_path(bytes_of(&a.abs), bytes_of(&b.abs)));
    for i in 0..roots.len() {
        let inside = roots[..i]
            .iter()
            .any(|o| o.joined && under(bytes_of(&roots[i].abs), bytes_of(&o.abs)));
        roots[i].joined = !inside;
    }

    // 2. Cache: load and check against the repository's packs, or rebuild
    // the blob table from this client's packs.
    let owner = Owner {
        repo_id: repo.config.repo_id,
        client: me,
        config_id: repo.config_id,
    };
    let scratch = opts.cache_dir.as_path();
    holdfast_store::create_private_dir(scratch).map_err(|e| io_err(scratch, e))?;
    let path_of = |owner: &Owner| {
        let mut cache_path = cache::path(scratch, owner);
        if let Some(name) = &opts.stdin {
            // A dump has its own cache per name: the file backups' cache
            // (and their comparison) is left as it was, and tonight's dump
            // is compared with last night's.
            let tag = id_key.blob_id(format!("stdin\0{name}").as_bytes());
            let mut n = cache_path.into_os_string();
            n.push(format!(".stdin-{}", holdfast_core::id::hex(&tag.0[..8])));
            cache_path = PathBuf::from(n);
        }
        cache_path
    };
    let cache_path = path_of(&owner);
    let existing: HashSet<ObjectId> = repo
        .backend
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|(n, _)| ObjectId::from_hex(&n).ok())
        .collect();
    // A new key that succeeds an old one (`key rotate client`) carries on
    // its predecessor's cache: its baseline and its known blobs.
    let loaded = Loaded::load(&cache_path, &owner).or_else(|| {
        repo.predecessors(&me).into_iter().find_map(|p| {
            let theirs = Owner {
                repo_id: owner.repo_id,
                client: p,
                config_id: owner.config_id,
            };
            Loaded::load(&path_of(&theirs), &theirs)
        })
    });
    let history = loaded
        .as_ref()
        .map(|l| l.history.clone())
        .unwrap_or_default();
    let usable = loaded.filter(|l| l.packs.iter().any(|p| existing.contains(p)));
    let opened = usable.and_then(|l| {
        let table = l.blobs().ok()?;
        let cursor = l.cursor().ok()?;
        Some((l, table, cursor))
    });
    let (packs, old_table, last_snapshot, cursor, prev_exts, prev_files, had) = match opened {
        Some((l, table, cursor)) => {
            // A root that is gone is a wipe only if the last snapshot had
            // files under it; otherwise it is the error it always was.
            let mut had = vec![false; missing_errors.len()];
            if !missing_errors.is_empty()
                && let Ok(mut c) = l.cursor()
            {
                while let Some(e) = c.next_entry() {
                    for (k, (r, _)) in missing_errors.iter().enumerate() {
                        had[k] |= under(&e.path, r);
                    }
                }
            }
            (
                l.packs.clone(),
                table,
                l.last_snapshot,
                Some(cursor),
                l.exts.clone(),
                l.files,
                had,
            )
        }
        None => {
            let (packs, table, last) = rebuild_known(repo, &me, &existing, scratch)?;
            let had = vec![false; missing_errors.len()];
            (packs, table, last, None, Vec::new(), 0, had)
        }
    };
    for ((_, e), had) in missing_errors.into_iter().zip(had) {
        if !had {
            return Err(e);
        }
    }
    let compared = opts.detect && cursor.is_some() && last_snapshot.is_some() && prev_files > 0;
    // The thresholds of the log this client verified (a vault's), or the
    // defaults; the snapshot records them.
    let thresholds = repo.log.as_ref().map_or_else(Default::default, |l| {
        holdfast_core::detect::Thresholds::from_fn(|c| l.state.threshold(c))
    });
    let judgement = Judgement {
        checked: match (opts.detect, compared) {
            (false, _) => Checked::Off,
            (true, false) => Checked::NoBaseline,
            (true, true) => Checked::Compared,
        },
        runs: if compared { history.len() as u32 } else { 0 },
        thresholds: thresholds.list(),
    };
    let live: Vec<bool> = packs.iter().map(|p| existing.contains(p)).collect();
    drop(existing);
    let blobs = BlobSet::new(Some(old_table), live.clone(), scratch);
    let mut det = compared.then(|| {
        Detector::new(&root_list, prev_exts, &history, scratch).with_thresholds(thresholds)
    });

    // 3. Upload: a writer thread stores finished packs.
    let sealed_to = repo.sealing_public();
    let (epk, session) = crypto::seal_session(&sealed_to)?;
    let failed = AtomicBool::new(false);
    let (tx, rx) = sync_channel::<(PackBuilder, u32)>(0);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(2);
    let written: Arc<Mutex<Vec<(u32, ObjectId, u64)>>> = Arc::default();
    let write_error: Arc<Mutex<Option<Error>>> = Arc::default();
    let backend = repo.backend.clone();
    let dry_run = opts.dry_run;
    let writer = {
        let written = written.clone();
        let write_error = write_error.clone();
        std::thread::spawn(move || {
            for (b, no) in rx {
                if write_error
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_some()
                {
                    continue;
                }
                let (id, bytes, _) = b.finish();
                // A dry run builds each pack (its size is the figure) and
                // stores none.
                let put = if dry_run {
                    Ok(())
                } else {
                    backend.put(Kind::Pack, &id.to_hex(), &bytes)
                };
                match put {
                    Ok(()) => written.lock().unwrap_or_else(|p| p.into_inner()).push((
                        no,
                        id,
                        bytes.len() as u64,
                    )),
                    Err(e) => {
                        *write_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.into())
                    }
                }
                let _ = spare_tx.try_send(bytes);
            }
        })
    };
    let base = packs.len() as u32;
    let up = Uploader {
        id_key,
        key: session.clone(),
        epk,
        level: repo.config.zstd_level as i32,
        pack_target: repo.config.pack_target as usize,
        blobs: &blobs,
        scratch,
        packer: Mutex::new((None, base)),
        tx: Mutex::new(Some(tx)),
        spare: Mutex::new(spare_rx),
        failed: &failed,
        new_blobs: AtomicU64::new(0),
        new_bytes: AtomicU64::new(0),
    };

    // 4. Walk, read, build trees — at once.
    let mut trees = Trees {
        up: &up,
        chunking: &repo.config.chunking,
        progress,
        stack: Vec::new(),
        top: Vec::new(),
        used: Vec::new(),
        cache: CacheWriter::create(&cache_path),
        exts: BTreeSet::new(),
        files: 0,
        bytes: 0,
        dirs: 0,
        files_read: 0,
        files_new: 0,
        files_changed: 0,
        unreadable: Vec::new(),
    };
    let mut merge = Merge { cursor };
    let walked = walk_all(
        &roots,
        &excludes,
        opts.one_file_system,
        &mut merge,
        &mut trees,
        &mut det,
        &live,
        &repo.config.chunking,
        compared,
    );
    drop(merge);
    // The root tree: one node per backed-up path, by name.
    let root = walked.and_then(|()| {
        let mut top = std::mem::take(&mut trees.top);
        top.sort_by(|a, b| a.name.cmp(&b.name));
        let p = up.add(KIND_TREE, &Tree { nodes: top }.encode())?;
        trees.use_pack(p.pack);
        Ok(p.id)
    });
    let flushed = up.flush();
    let new_blobs = up.new_blobs.load(Ordering::Relaxed);
    let new_bytes = up.new_bytes.load(Ordering::Relaxed);
    let joined = writer
        .join()
        .map_err(|_| Error::Usage("pack writer panicked".into()));
    let Trees {
        used,
        cache: cache_writer,
        exts,
        files,
        bytes,
        dirs,
        files_read,
        files_new,
        files_changed,
        unreadable,
        ..
    } = trees;
    drop(up);
    fn fail(cw: CacheWriter, e: Error) -> Result<BackupReport> {
        cw.abort();
        Err(e)
    }
    if let Err(e) = joined {
        return fail(cache_writer, e);
    }
    if let Some(e) = write_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
        return fail(cache_writer, e);
    }
    let root = match root {
        Ok(r) => r,
        Err(e) => return fail(cache_writer, e),
    };
    if let Err(e) = flushed {
        return fail(cache_writer, e);
    }

    // 5. Which packs does the snapshot need? The bitmap over pack numbers.
    let mut written = std::mem::take(&mut *written.lock().unwrap_or_else(|p| p.into_inner()));
    written.sort_by_key(|w| w.0);
    let mut all_packs = packs;
    let (mut packs_written, mut stored_bytes) = (0, 0);
    for (no, id, size) in written {
        if no as usize != all_packs.len() {
            return fail(
                cache_writer,
                Error::Corrupt(format!("internal: pack number {no} out of order")),
            );
        }
        packs_written += 1;
        stored_bytes += size;
        all_packs.push(id);
    }
    let mut need: Vec<ObjectId> = Vec::new();
    for (w, bits) in used.iter().enumerate() {
        for b in 0..64 {
            if bits & (1 << b) != 0 {
                let n = w * 64 + b;
                match all_packs.get(n) {
                    Some(p) => need.push(*p),
                    None => {
                        return fail(
                            cache_writer,
                            Error::Corrupt(format!("internal: pack number {n} was not stored")),
                        );
                    }
                }
            }
        }
    }
    need.sort();
    need.dedup();

    // 6. Detection: this run against the previous snapshot (the cache).
    let outcome = match det.map(Detector::finish) {
        Some(Ok(o)) => o,
        Some(Err(e)) => return fail(cache_writer, io_err(scratch, e)),
        None => detect::Outcome::default(),
    };

    // 7. Commit: the snapshot, after everything it references is durable.
    let header = SnapshotHeader {
        config_id: repo.config_id,
        client: me,
        time_ns: now_ns(),
        parent: last_snapshot,
        packs: need,
        epk,
    };
    let body = SnapshotBody {
        root,
        hostname: opts.hostname.clone(),
        paths: abs_paths,
        files,
        dirs,
        bytes,
        new_bytes,
        unreadable: unreadable
            .iter()
            .map(|(p, _)| bytes_of(p).to_vec())
            .collect(),
        tags: opts.tags.clone(),
    };
    let anomalies = &outcome.findings;
    let committed = Snapshot::create_sealed_to(
        header, anomalies, &judgement, &sealed_to, &body, &session, identity,
    )
    .map_err(Error::from)
    .and_then(|(id, bytes)| {
        if opts.dry_run {
            return Ok(id);
        }
        repo.backend
            .put(Kind::Snapshot, &id.to_hex(), &bytes)
            .map(|()| id)
            .map_err(Error::from)
    });
    let snap_id = match committed {
        Ok(id) => id,
        Err(e) => return fail(cache_writer, e),
    };
    drop(session);

    // 8. Cache (best effort: losing it costs a re-read, not correctness).
    let mut history = history;
    if compared {
        history.push(outcome.run);
        let n = history.len();
        let max = holdfast_core::detect::BASELINE_MAX_RUNS;
        if n > max {
            history.drain(..n - max);
        }
    }
    let mut live_after = live;
    live_after.resize(all_packs.len(), true);
    let meta = CacheMeta {
        last_snapshot: Some(snap_id),
        packs: all_packs,
        history,
        exts: exts.into_iter().collect(),
    };
    if opts.dry_run {
        // Nothing was stored, so the cache must not say otherwise.
        cache_writer.abort();
    } else {
        let _ = cache_writer.finish(&owner, &meta, |w| blobs.write_all(w, &live_after));
    }

    Ok(BackupReport {
        snapshot: snap_id,
        files,
        dirs,
        bytes,
        files_read,
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
        judgement,
        files_new,
        files_changed,
        dry_run: opts.dry_run,
    })
}
