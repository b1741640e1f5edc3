//! `holdfast restore`: every byte is authenticated and checked against its
//! keyed id before it is written. All-zero chunks are left as holes, so
//! sparse files stay sparse.
//!
//! Memory does not grow with the number of files. Blob locations come from
//! the on-disk [`PackIndex`]. The trees are walked depth first (one
//! directory held per level), creating directories and symlinks as they
//! come; files are gathered into bounded batches. A batch's blobs are
//! sorted by pack and offset and read as coalesced range requests, several
//! at once (a set concurrency: 8 against a vault or S3), each worker
//! fetching, then opening and checking, then writing, while the walk
//! prepares the next batch. A directory's mode and times are set once
//! everything in it is written (writing into a directory changes its
//! mtime), deepest first.

use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use filetime::FileTime;
use holdfast_core::ObjectId;
use holdfast_core::format::{Node, NodeKind, Tree};
use holdfast_store::Kind;

use crate::index::Location;
use crate::keys::Key;
use crate::packindex::{PackIndex, Reader, concurrency};
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

/// A batch is handed over once it holds this many files, chunks or closed
/// directories, or this many bytes of file content.
const BATCH_FILES: usize = 8 * 1024;
const BATCH_CHUNKS: usize = 32 * 1024;
const BATCH_DIRS: usize = 8 * 1024;
const BATCH_BYTES: u64 = 128 << 20;

/// Files to write and directories to finish once they are written.
#[derive(Default)]
struct Batch {
    files: Vec<(PathBuf, Node)>,
    /// Closed directories, deepest first: every file under them is in this
    /// batch or an earlier one.
    dirs: Vec<(PathBuf, Node)>,
    chunks: usize,
    bytes: u64,
}

impl Batch {
    fn full(&self) -> bool {
        self.files.len() >= BATCH_FILES
            || self.chunks >= BATCH_CHUNKS
            || self.dirs.len() >= BATCH_DIRS
            || self.bytes >= BATCH_BYTES
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

/// The depth-first walk: creates directories and symlinks, hands batches
/// of files to the writer.
struct Walk<'a, 'r> {
    reader: &'a Reader<'r>,
    report: &'a mut RestoreReport,
    progress: &'a Progress,
    batch: Batch,
    send: &'a std::sync::mpsc::SyncSender<Batch>,
    /// The totals were set from the snapshot's body before the walk (a
    /// whole restore): the time left is known from the start.
    counted: bool,
}

impl Walk<'_, '_> {
    fn push_file(&mut self, p: PathBuf, n: Node) {
        if let NodeKind::File { size, chunks } = &n.kind {
            self.batch.chunks += chunks.len();
            self.batch.bytes += size;
            if !self.counted {
                self.progress.files_total.fetch_add(1, Ordering::Relaxed);
                self.progress
                    .bytes_total
                    .fetch_add(*size, Ordering::Relaxed);
            }
        }
        self.batch.files.push((p, n));
        self.maybe_send();
    }

    fn maybe_send(&mut self) {
        if self.batch.full() {
            self.send_now();
        }
    }

    fn send_now(&mut self) {
        let b = std::mem::take(&mut self.batch);
        if !b.files.is_empty() || !b.dirs.is_empty() {
            // The writer only stops early by panicking; nothing to do then.
            let _ = self.send.send(b);
        }
    }

    fn symlink(&mut self, p: &Path, n: &Node) {
        let NodeKind::Symlink { target } = &n.kind else {
            return;
        };
        match std::os::unix::fs::symlink(OsStr::from_bytes(target), p) {
            Ok(()) => {
                set_owner(p, n);
                let _ = set_times(p, n);
                self.report.symlinks += 1;
            }
            Err(e) => self.report.errors.push(format!("{}: {e}", p.display())),
        }
    }

    /// A directory node at `p`: created, walked, then queued to be
    /// finished.
    fn dir(&mut self, p: PathBuf, n: Node) -> Result<()> {
        let NodeKind::Dir { subtree } = &n.kind else {
            return Ok(());
        };
        std::fs::create_dir(&p).map_err(|e| io_err(&p, e))?;
        self.report.dirs += 1;
        match self.reader.tree(subtree) {
            Ok(t) => self.walk(t, &p)?,
            Err(e) => self.report.note(&p, &e),
        }
        self.batch.dirs.push((p, n));
        self.maybe_send();
        Ok(())
    }

    fn walk(&mut self, tree: Tree, at: &Path) -> Result<()> {
        for n in tree.nodes {
            let p = at.join(OsStr::from_bytes(&n.name));
            match &n.kind {
                NodeKind::Dir { .. } => self.dir(p, n)?,
                NodeKind::File { .. } => self.push_file(p, n),
                NodeKind::Symlink { .. } => self.symlink(&p, &n),
            }
        }
        Ok(())
    }
}

/// What the writer did with its batches.
#[derive(Default)]
struct Written {
    files: u64,
    bytes: u64,
    fails: Vec<(PathBuf, Error)>,
    errors: Vec<String>,
}

fn write_batches(
    reader: &Reader,
    progress: &Progress,
    recv: std::sync::mpsc::Receiver<Batch>,
) -> Written {
    let mut w = Written::default();
    for b in recv {
        let results = restore_files(reader, &b.files, progress);
        for ((p, _), r) in b.files.into_iter().zip(results) {
            match r {
                Ok(n) => {
                    w.files += 1;
                    w.bytes += n;
                }
                Err(e) => w.fails.push((p, e)),
            }
        }
        for (p, n) in b.dirs {
            set_owner(&p, &n);
            let r = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(n.mode))
                .and_then(|_| set_times(&p, &n));
            if let Err(e) = r {
                w.errors.push(format!("{}: {e}", p.display()));
            }
        }
    }
    w
}

/// One write a blob makes: where it is, and the file and offset it goes to.
struct Write {
    loc: Location,
    file: u32,
    off: u64,
}

/// Reads closer than this are merged into one request (the gap is read
/// and dropped); a request is at most `max` long unless one blob is.
fn coalescing(remote: bool) -> (u64, u64) {
    if remote {
        // Eight of these in flight (see `concurrency`): 16 MiB.
        (256 << 10, 2 << 20)
    } else {
        (64 << 10, 1 << 20)
    }
}

/// Writes the content of a batch of files. Every blob is authenticated and
/// checked against its keyed id, then written at its offsets in every file
/// that needs it; each is read once per batch. Files are created empty and
/// written at offsets, so skipped all-zero chunks stay holes. Returns, per
/// file, its size or why it could not be restored.
fn restore_files(
    reader: &Reader,
    files: &[(PathBuf, Node)],
    progress: &Progress,
) -> Vec<Result<u64>> {
    let mut errors: Vec<Option<Fail>> = (0..files.len()).map(|_| None).collect();
    let mut writes: Vec<Write> = Vec::new();
    for (i, (_, n)) in files.iter().enumerate() {
        let NodeKind::File { size, chunks } = &n.kind else {
            continue;
        };
        let mut off = 0u64;
        let first = writes.len();
        for c in chunks {
            match reader.locate(c) {
                Ok(Some(loc)) => {
                    writes.push(Write {
                        loc,
                        file: i as u32,
                        off,
                    });
                    off += loc.entry.raw_len as u64;
                }
                Ok(None) => {
                    errors[i] = Some(Fail::Damage(format!(
                        "chunk {} is not in the snapshot's packs",
                        c.to_hex()
                    )));
                    break;
                }
                Err(e) => {
                    errors[i] = Some(Fail::Local(e.to_string()));
                    break;
                }
            }
        }
        if errors[i].is_none() && off != *size {
            errors[i] = Some(Fail::Damage(format!(
                "chunks add up to {off} bytes, the snapshot says {size}"
            )));
        }
        if errors[i].is_some() {
            writes.truncate(first);
        }
    }
    writes.sort_unstable_by_key(|w| (w.loc.pack, w.loc.entry.offset, w.file, w.off));
    // Coalesced requests: (pack, start, end, writes).
    let remote = reader.backend.prefers_whole_objects();
    let (gap, max) = coalescing(remote);
    let mut requests: Vec<(u32, u64, u64, std::ops::Range<usize>)> = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        let (s, e) = (
            w.loc.entry.offset as u64,
            w.loc.entry.offset as u64 + w.loc.entry.stored_len as u64,
        );
        match requests.last_mut() {
            Some((p, start, end, r))
                if *p == w.loc.pack && s <= *end + gap && e.max(*end) - *start <= max =>
            {
                *end = e.max(*end);
                r.end = i + 1;
            }
            _ => requests.push((w.loc.pack, s, e, i..i + 1)),
        }
    }
    let errors = Mutex::new(errors);
    let fail = |f: u32, why: Fail| {
        errors.lock().unwrap_or_else(|p| p.into_inner())[f as usize].get_or_insert(why);
    };
    let next = AtomicUsize::new(0);
    let workers = concurrency(reader.backend).min(requests.len());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((pack, start, end, range)) = requests.get(i) else {
                        return;
                    };
                    let list = &writes[range.clone()];
                    let name = reader.index.packs[*pack as usize].to_hex();
                    let bytes =
                        match reader
                            .backend
                            .get_range(Kind::Pack, &name, *start, end - start)
                        {
                            Ok(b) => b,
                            Err(e) => {
                                let e = Error::from(e);
                                for w in list {
                                    fail(w.file, Fail::reading(&e));
                                }
                                continue;
                            }
                        };
                    write_request(reader, &bytes, *start, list, files, progress, &fail);
                }
            });
        }
    });
    // Lengths, owners, modes and times: system calls that wait on the
    // file system, so several threads whatever the CPU count.
    let mut errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut results: Vec<Option<Result<u64>>> = (0..files.len()).map(|_| None).collect();
    let per = files.len().div_ceil(FINISHERS).max(1);
    std::thread::scope(|s| {
        for ((fs, es), rs) in files
            .chunks(per)
            .zip(errors.chunks_mut(per))
            .zip(results.chunks_mut(per))
        {
            s.spawn(move || {
                for (((p, n), e), r) in fs.iter().zip(es.iter_mut()).zip(rs.iter_mut()) {
                    *r = Some(finish_file(p, n, e.take(), progress));
                }
            });
        }
    });
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(Error::Usage("file not finished".into()))))
        .collect()
}

/// Threads setting files' metadata once their content is written.
const FINISHERS: usize = 8;

/// Opens each blob of one fetched stretch of a pack once and writes it
/// wherever it goes.
fn write_request(
    reader: &Reader,
    bytes: &[u8],
    start: u64,
    list: &[Write],
    files: &[(PathBuf, Node)],
    progress: &Progress,
    fail: &(impl Fn(u32, Fail) + Sync),
) {
    let mut current: Option<(u32, Result<Vec<u8>>)> = None;
    let mut open: Option<(u32, std::fs::File)> = None;
    for w in list {
        let at = w.loc.entry.offset;
        if current.as_ref().is_none_or(|(c, _)| *c != at) {
            let from = (at as u64 - start) as usize;
            let plain = match bytes.get(from..from + w.loc.entry.stored_len as usize) {
                Some(sealed) => reader.open(&w.loc, sealed),
                None => Err(Error::Corrupt(format!(
                    "pack {} is shorter than its table",
                    reader.index.packs[w.loc.pack as usize]
                ))),
            };
            current = Some((at, plain));
        }
        let data = match &current.as_ref().map(|c| &c.1) {
            Some(Ok(d)) => d,
            Some(Err(e)) => {
                fail(w.file, Fail::reading(e));
                continue;
            }
            None => continue,
        };
        if data.iter().all(|b| *b == 0) {
            progress.add(0, data.len() as u64);
            continue; // left as a hole; the length is set at the end
        }
        if open.as_ref().is_none_or(|(of, _)| *of != w.file) {
            // Created on first write: one open per file when its chunks
            // sit together, as almost all mail does. (The target directory
            // was checked empty and its dirs made by us.)
            let path = &files[w.file as usize].0;
            match OpenOptions::new()
                .write(true)
                .create(true)
                // Another request may already have written other parts.
                .truncate(false)
                .mode(0o600)
                .open(path)
            {
                Ok(h) => open = Some((w.file, h)),
                Err(e) => {
                    fail(w.file, Fail::Local(e.to_string()));
                    continue;
                }
            }
        }
        if let Some((_, h)) = &open
            && let Err(e) = h.write_all_at(data, w.off)
        {
            fail(w.file, Fail::Local(e.to_string()));
        }
        progress.add(0, data.len() as u64);
    }
}

/// Sets a written file's length, owner, mode and times.
fn finish_file(p: &Path, n: &Node, err: Option<Fail>, progress: &Progress) -> Result<u64> {
    // A file that could not be restored whole is not left behind in part
    // (other chunks of it may have been written).
    match err {
        Some(Fail::Damage(e)) => {
            let _ = std::fs::remove_file(p);
            return Err(Error::Corrupt(e));
        }
        Some(Fail::Local(e)) => {
            let _ = std::fs::remove_file(p);
            return Err(io_err(p, std::io::Error::other(e)));
        }
        None => {}
    }
    let NodeKind::File { size, .. } = &n.kind else {
        return Ok(0);
    };
    // Empty and all-zero files were never opened; trailing holes (zero
    // chunks at the end) need the length set.
    let len = match std::fs::symlink_metadata(p) {
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
}

pub fn restore(
    repo: &Repository,
    key: &Key,
    snap_id: &ObjectId,
    opts: &RestoreOptions,
    progress: &Progress,
) -> Result<RestoreReport> {
    let subs: Vec<String> = opts.subpath.iter().cloned().collect();
    restore_paths(repo, key, snap_id, &opts.target, &subs, progress)
}

/// Where a walk starts.
enum Start {
    Tree(Tree),
    Dir(PathBuf, Node),
    Other(PathBuf, Node),
}

/// The node `sub` names under `root`, placed under `target`.
fn find_start(reader: &Reader, root: &Tree, target: &Path, sub: &str) -> Result<Start> {
    let mut tree: Option<Tree> = None;
    let mut at = target.to_path_buf();
    let parts: Vec<&str> = sub.split('/').filter(|s| !s.is_empty()).collect();
    for (i, part) in parts.iter().enumerate() {
        let node = tree
            .as_ref()
            .unwrap_or(root)
            .nodes
            .iter()
            .find(|n| n.name == part.as_bytes())
            .cloned()
            .ok_or_else(|| Error::Usage(format!("{sub:?} is not in the snapshot")))?;
        at = at.join(part);
        let last = i + 1 == parts.len();
        match &node.kind {
            NodeKind::Dir { subtree } if !last => tree = Some(reader.tree(subtree)?),
            NodeKind::Dir { .. } => return Ok(Start::Dir(at, node)),
            _ if last => return Ok(Start::Other(at, node)),
            _ => {
                return Err(Error::Usage(format!(
                    "{part:?} in {sub:?} is not a directory"
                )));
            }
        }
    }
    Ok(Start::Tree(tree.unwrap_or_else(|| root.clone())))
}

/// Restores the whole snapshot (no `subpaths`), or each of `subpaths`
/// (`/`-separated, none inside another) at its place under `target`, in
/// one pass: one index, one writer, batches across paths.
pub fn restore_paths(
    repo: &Repository,
    key: &Key,
    snap_id: &ObjectId,
    target: &Path,
    subpaths: &[String],
    progress: &Progress,
) -> Result<RestoreReport> {
    let (id_key, secret) = key.require_restore("restore")?;
    let snap = repo.load_snapshot(snap_id)?;
    let body = repo.open_body(snap_id, &snap, secret)?;
    let (index, pack_errors) = PackIndex::for_packs(repo.backend.as_ref(), &snap.header.packs);
    let index = index?;
    let reader = Reader::new(repo.backend.as_ref(), &index, id_key, secret);
    let mut report = RestoreReport::default();
    for e in &pack_errors {
        report.note(Path::new("(snapshot)"), e);
    }

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
    // Find the starting points before anything is created.
    let root = reader.tree(&body.root)?;
    let mut starts = Vec::new();
    if subpaths.is_empty() {
        starts.push(Start::Tree(root));
    } else {
        for sub in subpaths {
            starts.push(find_start(&reader, &root, target, sub)?);
        }
        drop(root);
    }
    std::fs::create_dir_all(target).map_err(|e| io_err(target, e))?;
    for start in &starts {
        if let Start::Dir(p, _) | Start::Other(p, _) = start
            && let Some(parent) = p.parent()
        {
            std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
        }
    }
    reader.clear_cache();
    // A whole restore knows its size from the body (the client's signed
    // figures, informative only): the bar and the time left are right from
    // the first byte instead of growing with the walk.
    let counted = subpaths.is_empty();
    if counted {
        progress.files_total.store(body.files, Ordering::Relaxed);
        progress.bytes_total.store(body.bytes, Ordering::Relaxed);
    }

    let (send, recv) = std::sync::mpsc::sync_channel::<Batch>(1);
    let (walked, written) = std::thread::scope(|s| {
        let writer = s.spawn(|| write_batches(&reader, progress, recv));
        let mut w = Walk {
            reader: &reader,
            report: &mut report,
            progress,
            batch: Batch::default(),
            send: &send,
            counted,
        };
        let mut r = Ok(());
        for start in starts {
            r = match start {
                Start::Tree(t) => w.walk(t, target),
                Start::Dir(p, n) => w.dir(p, n),
                Start::Other(p, n) => {
                    if matches!(n.kind, NodeKind::File { .. }) {
                        w.push_file(p, n);
                    } else {
                        w.symlink(&p, &n);
                    }
                    Ok(())
                }
            };
            if r.is_err() {
                break;
            }
        }
        w.send_now();
        drop(send);
        let written = writer
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        (r, written)
    });
    report.files += written.files;
    report.bytes += written.bytes;
    for (p, e) in &written.fails {
        report.note(p, e);
    }
    report.errors.extend(written.errors);
    walked?;
    if !report.damaged.is_empty() {
        // Perhaps the cached index was wrong: the next run rebuilds it.
        index.distrust();
    }
    Ok(report)
}
