//! `holdfast mount`: every snapshot the restore key reads, as a read-only
//! FUSE filesystem (docs/mount.md). The layout:
//!
//! ```text
//! snapshots/<vault time>_<short id>/<the snapshot's tree>
//! by-client/<client>/latest  -> ../../snapshots/<newest of that client not flagged>
//! by-client/<client>/<vault time> -> ../../snapshots/<that snapshot>
//! by-host/<host>/…           (the same, by the host name backup recorded)
//! ```
//!
//! Times are UTC without colons (`2026-12-07T181200Z`), so that a path
//! through the mount can stand in a Dovecot mail location. The files' bytes
//! come from [`holdfast_repo::mount::Archive`]: fetched on first read, each
//! blob checked against its id; a blob that fails is EIO, never bytes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow,
    WriteFlags,
};
use holdfast_core::BlobId;
use holdfast_core::format::{Node, NodeKind, Tree};
use holdfast_repo::Repository;
use holdfast_repo::mount::{Archive, CacheLimits, SnapEntry};
use holdfast_store::VaultBackend;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key (or M shares, as repeated --key)
    #[arg(long)]
    pub key: PathBuf,
    /// An empty directory to mount on
    pub mountpoint: PathBuf,
    /// Let other users (the mail server's) read the mount; the snapshot's
    /// owners and modes still apply
    #[arg(long)]
    pub allow_other: bool,
    /// Where sealed blobs are cached between reads (default: the cache
    /// directory's mount/ subdirectory)
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Size of the on-disk cache in MiB (0: none)
    #[arg(long, value_name = "N", default_value_t = 1024)]
    pub cache_mib: u64,
    /// Look for new snapshots at most every SECS seconds, when a top-level
    /// directory is listed or looked up (0: only at mount)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub refresh: u64,
    /// Over a vault or S3, fail a read with EIO after SECS seconds without
    /// an answer (0: wait as long as the store's client does)
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub read_timeout: u64,
}

/// Snapshots never change: the kernel may keep what it was told.
const TTL: Duration = Duration::from_secs(3600);

/// The virtual directories (the top, snapshots/, by-client/, by-host/ and
/// theirs) gain entries when new snapshots are found: the kernel keeps
/// them only briefly.
const VTTL: Duration = Duration::from_secs(1);

/// Inodes below this are virtual (index + 1 into [`Virt::v`]); a
/// snapshot's tree gets inodes from here on, so the virtual ones can grow
/// without ever meeting them.
const TREE_INO: u64 = 1 << 40;

/// Event-loop threads: a slow fetch does not stall listings.
const THREADS: usize = 4;

/// The FUSE `Filesystem`'s view of one inode.
enum Obj {
    Virtual(usize),
    /// Node `idx` of directory tree `tree` of snapshot `snap`.
    Node {
        snap: usize,
        tree: Arc<Tree>,
        idx: usize,
    },
}

enum VKind {
    Dir(Vec<(Vec<u8>, u64)>),
    Link(Vec<u8>),
    /// A snapshot's root directory (its tree: in `dirs`).
    Snap,
}

struct VNode {
    kind: VKind,
    time_ns: i64,
}

/// A by-client/<name> or by-host/<name> directory.
#[derive(Default)]
struct Group {
    ino: u64,
    members: Vec<usize>,
    /// The snapshot `latest` points to, and the link's inode.
    latest: Option<(usize, u64)>,
}

/// The virtual part of the tree, grown (never renumbered) as snapshots
/// are found.
struct Virt {
    v: Vec<VNode>,
    /// Per snapshot index: its name under snapshots/ and its inode.
    snaps: Vec<(Vec<u8>, u64)>,
    clients: BTreeMap<Vec<u8>, Group>,
    hosts: BTreeMap<Vec<u8>, Group>,
    /// The archive generation this reflects.
    generation: u64,
}

impl Virt {
    fn new() -> Virt {
        // 1: root, 2: snapshots, 3: by-client, 4: by-host.
        let mut v: Vec<VNode> = (0..4)
            .map(|_| VNode {
                kind: VKind::Dir(Vec::new()),
                time_ns: 0,
            })
            .collect();
        v[0].kind = VKind::Dir(vec![
            (b"by-client".to_vec(), 3),
            (b"by-host".to_vec(), 4),
            (b"snapshots".to_vec(), 2),
        ]);
        Virt {
            v,
            snaps: Vec::new(),
            clients: BTreeMap::new(),
            hosts: BTreeMap::new(),
            generation: u64::MAX,
        }
    }

    fn push(&mut self, kind: VKind, time_ns: i64) -> u64 {
        self.v.push(VNode { kind, time_ns });
        self.v.len() as u64
    }

    /// Adds (name, ino) to directory `dir`, keeping it sorted by name;
    /// replaces the inode of an existing name.
    fn put(&mut self, dir: u64, name: Vec<u8>, ino: u64) {
        if let VKind::Dir(e) = &mut self.v[dir as usize - 1].kind {
            match e.binary_search_by(|(n, _)| n.as_slice().cmp(&name)) {
                Ok(i) => e[i].1 = ino,
                Err(i) => e.insert(i, (name, ino)),
            }
        }
    }

    fn has(&self, dir: u64, name: &[u8]) -> bool {
        match &self.v[dir as usize - 1].kind {
            VKind::Dir(e) => e.binary_search_by(|(n, _)| n.as_slice().cmp(name)).is_ok(),
            _ => false,
        }
    }

    fn link(&mut self, snap: usize, time_ns: i64) -> u64 {
        let mut t = b"../../snapshots/".to_vec();
        t.extend_from_slice(&self.snaps[snap].0);
        self.push(VKind::Link(t), time_ns)
    }

    /// Brings the tree up to `list` (the archive's snapshots): new
    /// snapshots get new inodes; existing entries keep theirs; `latest`
    /// (the newest by the vault's time not flagged as anomalous, as for
    /// `restore latest`) becomes a new link when it changes. Returns the
    /// new snapshots' (inode, index).
    fn sync(&mut self, list: &[Arc<SnapEntry>], generation: u64) -> Vec<(u64, usize)> {
        let mut new = Vec::new();
        for (i, s) in list.iter().enumerate().skip(self.snaps.len()) {
            let mut name = format!("{}_{}", time_name(s.time_ns), s.id.short()).into_bytes();
            if self.has(2, &name) {
                name = format!("{}_{}", time_name(s.time_ns), s.id.to_hex()).into_bytes();
            }
            let ino = self.push(VKind::Snap, s.time_ns);
            self.put(2, name.clone(), ino);
            self.snaps.push((name, ino));
            new.push((ino, i));
            for by_host in [false, true] {
                let key = component(if by_host { &s.host } else { &s.client });
                let top = if by_host { 4 } else { 3 };
                let known = if by_host { &self.hosts } else { &self.clients }.contains_key(&key);
                if !known {
                    let dir = self.push(VKind::Dir(Vec::new()), s.time_ns);
                    self.put(top, key.clone(), dir);
                    let g = Group {
                        ino: dir,
                        ..Group::default()
                    };
                    if by_host {
                        &mut self.hosts
                    } else {
                        &mut self.clients
                    }
                    .insert(key.clone(), g);
                }
                let dir = if by_host { &self.hosts } else { &self.clients }[&key].ino;
                // Two snapshots in the same second: the second by its id.
                let mut n = time_name(s.time_ns).into_bytes();
                if self.has(dir, &n) || n == b"latest" {
                    n = self.snaps[i].0.clone();
                }
                let l = self.link(i, s.time_ns);
                self.put(dir, n, l);
                if by_host {
                    &mut self.hosts
                } else {
                    &mut self.clients
                }
                .get_mut(&key)
                .unwrap()
                .members
                .push(i);
            }
        }
        for by_host in [false, true] {
            let keys: Vec<Vec<u8>> = if by_host { &self.hosts } else { &self.clients }
                .keys()
                .cloned()
                .collect();
            for key in keys {
                let g = &if by_host { &self.hosts } else { &self.clients }[&key];
                let want = g
                    .members
                    .iter()
                    .copied()
                    .filter(|&i| !list[i].flagged)
                    .max_by_key(|&i| (list[i].time_ns, list[i].id));
                let newest = g.members.iter().map(|&i| list[i].time_ns).max();
                let (dir, had) = (g.ino, g.latest);
                if let Some(t) = newest {
                    self.v[dir as usize - 1].time_ns = t;
                }
                if want == had.map(|(i, _)| i) {
                    continue;
                }
                let latest = match want {
                    Some(i) => {
                        let l = self.link(i, list[i].time_ns);
                        self.put(dir, b"latest".to_vec(), l);
                        Some((i, l))
                    }
                    None => {
                        if let VKind::Dir(e) = &mut self.v[dir as usize - 1].kind {
                            e.retain(|(n, _)| n != b"latest");
                        }
                        None
                    }
                };
                if by_host {
                    &mut self.hosts
                } else {
                    &mut self.clients
                }
                .get_mut(&key)
                .unwrap()
                .latest = latest;
            }
        }
        let newest = list.iter().map(|s| s.time_ns).max().unwrap_or(0);
        for n in &mut self.v[..4] {
            n.time_ns = newest;
        }
        self.generation = generation;
        new
    }
}

#[derive(Clone, Copy)]
struct DirInfo {
    snap: usize,
    tree: BlobId,
    /// First inode of its entries, once given out.
    base: Option<u64>,
}

/// An open file: where its chunks start.
struct Handle {
    snap: usize,
    name: Vec<u8>,
    chunks: Vec<BlobId>,
    starts: Vec<u64>,
    size: u64,
}

/// Opens the repository anew for a refresh (None: list the mounted one).
type Reopen = dyn Fn(&Archive) -> Result<Option<Repository>> + Send + Sync;

struct HoldfastFs {
    ar: Arc<Archive>,
    virt: RwLock<Virt>,
    /// Directories whose entries may have inodes: by the directory's inode.
    dirs: RwLock<HashMap<u64, DirInfo>>,
    /// First inode of a directory's entries → the directory's inode.
    ranges: RwLock<BTreeMap<u64, u64>>,
    next_ino: AtomicU64,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Problems already printed (bounded).
    reported: Mutex<HashSet<String>>,
    /// How often the snapshot list may be read again; None: never.
    refresh: Option<Duration>,
    last_refresh: Mutex<Instant>,
    refreshing: Arc<AtomicBool>,
    reopen: Arc<Reopen>,
}

fn ns_time(ns: i64) -> SystemTime {
    let d = Duration::from_nanos(ns.unsigned_abs());
    let t = if ns >= 0 {
        UNIX_EPOCH.checked_add(d)
    } else {
        UNIX_EPOCH.checked_sub(d)
    };
    t.unwrap_or(UNIX_EPOCH)
}

/// A node's mtime; one the system cannot represent (a hostile record) is
/// shown as the epoch rather than ending the mount.
fn node_time(n: &Node) -> SystemTime {
    let secs = Duration::from_secs(n.mtime_s.unsigned_abs());
    let nanos = Duration::from_nanos(n.mtime_ns.min(999_999_999) as u64);
    let t = if n.mtime_s >= 0 {
        UNIX_EPOCH.checked_add(secs)
    } else {
        UNIX_EPOCH.checked_sub(secs)
    };
    t.and_then(|t| t.checked_add(nanos)).unwrap_or(UNIX_EPOCH)
}

/// A vault time as a file name: `2026-12-07T181200Z` (no colons).
pub fn time_name(ns: i64) -> String {
    util::time(ns).replace(':', "")
}

/// A client or host name as one path component.
fn component(s: &str) -> Vec<u8> {
    let c: String = s
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if c.is_empty() || c == "." || c == ".." {
        b"_".to_vec()
    } else {
        c.into_bytes()
    }
}

impl HoldfastFs {
    fn new(ar: Arc<Archive>, refresh: Option<Duration>, reopen: Arc<Reopen>) -> HoldfastFs {
        let fs = HoldfastFs {
            ar,
            virt: RwLock::new(Virt::new()),
            dirs: RwLock::new(HashMap::new()),
            ranges: RwLock::new(BTreeMap::new()),
            next_ino: AtomicU64::new(TREE_INO),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            reported: Mutex::new(HashSet::new()),
            refresh,
            last_refresh: Mutex::new(Instant::now()),
            refreshing: Arc::new(AtomicBool::new(false)),
            reopen,
        };
        fs.sync_virt();
        fs
    }

    /// Brings the virtual tree up to the archive's snapshot list.
    fn sync_virt(&self) {
        let g = self.ar.generation();
        if self.virt.read().unwrap().generation == g {
            return;
        }
        let list = self.ar.snapshots();
        let mut virt = self.virt.write().unwrap();
        if virt.generation == g {
            return;
        }
        let new = virt.sync(&list, g);
        let mut dirs = self.dirs.write().unwrap();
        for (ino, i) in new {
            dirs.insert(
                ino,
                DirInfo {
                    snap: i,
                    tree: list[i].root,
                    base: None,
                },
            );
        }
    }

    /// A top-level directory is being looked at: at most every `refresh`,
    /// the snapshot list is read again in the background (a slow or dead
    /// vault never holds a listing); what it finds shows from the next
    /// access on.
    fn poke(&self) {
        self.sync_virt();
        let Some(every) = self.refresh else { return };
        {
            let mut last = self.last_refresh.lock().unwrap();
            if last.elapsed() < every || self.refreshing.load(Ordering::Acquire) {
                return;
            }
            *last = Instant::now();
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let (ar, reopen, busy) = (
            self.ar.clone(),
            self.reopen.clone(),
            self.refreshing.clone(),
        );
        let spawned = std::thread::Builder::new()
            .name("refresh".into())
            .spawn(move || {
                let r = reopen(&ar).and_then(|fresh| Ok(ar.refresh(fresh.as_ref())?));
                match r {
                    Ok((_, problems)) => {
                        for p in problems {
                            eprintln!("holdfast: DAMAGE DETECTED: {p} (not mounted)");
                        }
                    }
                    Err(e) => eprintln!(
                        "holdfast: looking for new snapshots: {} (tried again later)",
                        util::one_line(&e)
                    ),
                }
                busy.store(false, Ordering::Release);
            });
        if spawned.is_err() {
            self.refreshing.store(false, Ordering::Release);
        }
    }

    /// Prints a read failure once (to stderr) and answers EIO.
    fn fail(&self, what: &str, e: &holdfast_repo::Error) -> Errno {
        let line =
            if e.is_damage() || matches!(e, holdfast_repo::Error::Store(s) if s.is_not_found()) {
                format!("DAMAGE DETECTED: {what}: {e}")
            } else {
                format!("read failed: {what}: {e}")
            };
        let mut r = self.reported.lock().unwrap();
        if r.len() < 10_000 && r.insert(line.clone()) {
            eprintln!("holdfast: {line}");
        }
        Errno::EIO
    }

    fn snap_label(&self, snap: usize) -> String {
        match self.ar.snapshot(snap) {
            Some(s) => format!("snapshot {}", s.id.short()),
            None => format!("snapshot #{snap}"),
        }
    }

    fn tree(&self, snap: usize, id: &BlobId) -> Result<Arc<Tree>, Errno> {
        self.ar.tree(snap, id).map_err(|e| {
            self.fail(
                &format!("{}: tree {}", self.snap_label(snap), id.short()),
                &e,
            )
        })
    }

    fn obj(&self, ino: u64) -> Result<Obj, Errno> {
        if (1..TREE_INO).contains(&ino) {
            let n = self.virt.read().unwrap().v.len() as u64;
            return match ino <= n {
                true => Ok(Obj::Virtual(ino as usize - 1)),
                false => Err(Errno::ENOENT),
            };
        }
        let (base, dir) = {
            let r = self.ranges.read().unwrap();
            match r.range(..=ino).next_back() {
                Some((b, d)) => (*b, *d),
                None => return Err(Errno::ENOENT),
            }
        };
        let info = match self.dirs.read().unwrap().get(&dir) {
            Some(i) => *i,
            None => return Err(Errno::ENOENT),
        };
        let tree = self.tree(info.snap, &info.tree)?;
        let idx = (ino - base) as usize;
        if idx >= tree.nodes.len() {
            return Err(Errno::ENOENT);
        }
        Ok(Obj::Node {
            snap: info.snap,
            tree,
            idx,
        })
    }

    /// A directory's tree and the inode of its first entry.
    fn children(&self, ino: u64) -> Result<(usize, Arc<Tree>, u64), Errno> {
        let known = self.dirs.read().unwrap().get(&ino).copied();
        let info = match known {
            Some(i) => i,
            None => match self.obj(ino)? {
                Obj::Node { snap, tree, idx } => match &tree.nodes[idx].kind {
                    NodeKind::Dir { subtree } => {
                        let i = DirInfo {
                            snap,
                            tree: *subtree,
                            base: None,
                        };
                        *self.dirs.write().unwrap().entry(ino).or_insert(i)
                    }
                    _ => return Err(Errno::ENOTDIR),
                },
                Obj::Virtual(_) => return Err(Errno::ENOTDIR),
            },
        };
        let tree = self.tree(info.snap, &info.tree)?;
        if let Some(b) = info.base {
            return Ok((info.snap, tree, b));
        }
        let mut dirs = self.dirs.write().unwrap();
        let d = dirs.get_mut(&ino).ok_or(Errno::ENOENT)?;
        let base = match d.base {
            Some(b) => b,
            None => {
                let n = (tree.nodes.len() as u64).max(1);
                let b = self.next_ino.fetch_add(n, Ordering::Relaxed);
                self.ranges.write().unwrap().insert(b, ino);
                d.base = Some(b);
                b
            }
        };
        Ok((info.snap, tree, base))
    }

    fn attr(&self, ino: u64, obj: &Obj) -> FileAttr {
        let base = FileAttr {
            ino: INodeNo(ino),
            size: 0,
            blocks: 0,
            atime: UNIX_EPOCH,
            mtime: UNIX_EPOCH,
            ctime: UNIX_EPOCH,
            crtime: UNIX_EPOCH,
            kind: FileType::Directory,
            perm: 0o555,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            flags: 0,
            blksize: 4096,
        };
        match obj {
            Obj::Virtual(i) => {
                let virt = self.virt.read().unwrap();
                let v = &virt.v[*i];
                let t = ns_time(v.time_ns);
                let (kind, perm, size) = match &v.kind {
                    VKind::Dir(_) | VKind::Snap => (FileType::Directory, 0o555, 0),
                    VKind::Link(target) => (FileType::Symlink, 0o777, target.len() as u64),
                };
                FileAttr {
                    kind,
                    perm,
                    size,
                    atime: t,
                    mtime: t,
                    ctime: t,
                    crtime: t,
                    ..base
                }
            }
            Obj::Node { tree, idx, .. } => {
                let n = &tree.nodes[*idx];
                let t = node_time(n);
                let (kind, size) = match &n.kind {
                    NodeKind::File { size, .. } => (FileType::RegularFile, *size),
                    NodeKind::Dir { .. } => (FileType::Directory, 0),
                    NodeKind::Symlink { target } => (FileType::Symlink, target.len() as u64),
                };
                FileAttr {
                    kind,
                    size,
                    blocks: size.div_ceil(512),
                    perm: (n.mode & 0o7777) as u16,
                    uid: n.uid,
                    gid: n.gid,
                    atime: t,
                    mtime: t,
                    ctime: t,
                    crtime: t,
                    ..base
                }
            }
        }
    }

    fn kind_of(n: &Node) -> FileType {
        match n.kind {
            NodeKind::File { .. } => FileType::RegularFile,
            NodeKind::Dir { .. } => FileType::Directory,
            NodeKind::Symlink { .. } => FileType::Symlink,
        }
    }
}

impl Filesystem for HoldfastFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let parent = parent.0;
        let name = name.as_bytes();
        let found = (|| -> Result<(u64, Obj, Duration), Errno> {
            if let Ok(Obj::Virtual(i)) = self.obj(parent) {
                self.poke();
                let virt = self.virt.read().unwrap();
                if let VKind::Dir(entries) = &virt.v[i].kind {
                    let at = entries
                        .binary_search_by(|(n, _)| n.as_slice().cmp(name))
                        .map_err(|_| Errno::ENOENT)?;
                    let ino = entries[at].1;
                    drop(virt);
                    return Ok((ino, self.obj(ino)?, VTTL));
                }
            }
            let (snap, tree, base) = self.children(parent)?;
            let idx = tree
                .nodes
                .binary_search_by(|n| n.name.as_slice().cmp(name))
                .map_err(|_| Errno::ENOENT)?;
            Ok((base + idx as u64, Obj::Node { snap, tree, idx }, TTL))
        })();
        match found {
            Ok((ino, obj, ttl)) => reply.entry(&ttl, &self.attr(ino, &obj), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.obj(ino.0) {
            Ok(o @ Obj::Virtual(_)) => reply.attr(&VTTL, &self.attr(ino.0, &o)),
            Ok(o) => reply.attr(&TTL, &self.attr(ino.0, &o)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.obj(ino.0) {
            Ok(Obj::Virtual(i)) => match &self.virt.read().unwrap().v[i].kind {
                VKind::Link(t) => reply.data(t),
                _ => reply.error(Errno::EINVAL),
            },
            Ok(Obj::Node { tree, idx, .. }) => match &tree.nodes[idx].kind {
                NodeKind::Symlink { target } => reply.data(target),
                _ => reply.error(Errno::EINVAL),
            },
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY || flags.0 & libc_o_trunc() != 0 {
            return reply.error(Errno::EROFS);
        }
        let (snap, node) = match self.obj(ino.0) {
            Ok(Obj::Node { snap, tree, idx }) => (snap, tree.nodes[idx].clone()),
            Ok(Obj::Virtual(_)) => return reply.error(Errno::EISDIR),
            Err(e) => return reply.error(e),
        };
        let NodeKind::File { size, chunks } = node.kind else {
            return reply.error(Errno::EISDIR);
        };
        let starts = match self.ar.layout(snap, &chunks, size) {
            Ok(s) => s,
            Err(e) => {
                let what = format!(
                    "{}: {}",
                    self.snap_label(snap),
                    String::from_utf8_lossy(&node.name)
                );
                return reply.error(self.fail(&what, &e));
            }
        };
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().unwrap().insert(
            fh,
            Arc::new(Handle {
                snap,
                name: node.name,
                chunks,
                starts,
                size,
            }),
        );
        // The bytes never change: the page cache may keep them across opens.
        reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE);
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(h) = self.handles.lock().unwrap().get(&fh.0).cloned() else {
            return reply.error(Errno::EBADF);
        };
        match self
            .ar
            .read(h.snap, &h.chunks, &h.starts, h.size, offset, size as usize)
        {
            Ok(data) => reply.data(&data),
            Err(e) => {
                let what = format!(
                    "{}: {}",
                    self.snap_label(h.snap),
                    String::from_utf8_lossy(&h.name)
                );
                reply.error(self.fail(&what, &e))
            }
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.handles.lock().unwrap().remove(&fh.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        if flags.acc_mode() != OpenAccMode::O_RDONLY {
            return reply.error(Errno::EROFS);
        }
        match self.obj(ino.0) {
            Ok(Obj::Virtual(i)) => {
                let link = matches!(self.virt.read().unwrap().v[i].kind, VKind::Link(_));
                if link {
                    reply.error(Errno::ENOTDIR)
                } else {
                    self.poke();
                    // Listings of the virtual directories grow.
                    reply.opened(FileHandle(0), FopenFlags::empty())
                }
            }
            Ok(Obj::Node { tree, idx, .. })
                if !matches!(tree.nodes[idx].kind, NodeKind::Dir { .. }) =>
            {
                reply.error(Errno::ENOTDIR)
            }
            Ok(_) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let ino = ino.0;
        // "." and ".." first (offsets 1 and 2), then the entries.
        let mut list: Vec<(u64, FileType, &[u8])> = Vec::new();
        let holder;
        let vholder;
        let parent = INodeNo::ROOT.0;
        list.push((ino, FileType::Directory, b"."));
        list.push((parent, FileType::Directory, b".."));
        let vdir = match self.obj(ino) {
            Ok(Obj::Virtual(i)) => {
                self.poke();
                matches!(self.virt.read().unwrap().v[i].kind, VKind::Dir(_)).then_some(i)
            }
            _ => None,
        };
        if let Some(i) = vdir {
            let virt = self.virt.read().unwrap();
            let VKind::Dir(entries) = &virt.v[i].kind else {
                return reply.error(Errno::ENOTDIR);
            };
            vholder = entries
                .iter()
                .map(|(name, child)| {
                    let kind = match virt.v[*child as usize - 1].kind {
                        VKind::Link(_) => FileType::Symlink,
                        _ => FileType::Directory,
                    };
                    (*child, kind, name.clone())
                })
                .collect::<Vec<_>>();
            drop(virt);
            for (child, kind, name) in &vholder {
                list.push((*child, *kind, name));
            }
        } else {
            match self.children(ino) {
                Ok((_, tree, base)) => {
                    holder = tree;
                    for (i, n) in holder.nodes.iter().enumerate() {
                        list.push((base + i as u64, Self::kind_of(n), &n.name));
                    }
                }
                Err(e) => return reply.error(e),
            }
        }
        for (i, (child, kind, name)) in list.iter().enumerate().skip(offset as usize) {
            if reply.add(
                INodeNo(*child),
                i as u64 + 1,
                *kind,
                OsStr::from_bytes(name),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
    }

    // Every change is refused: the mount is read-only (the kernel refuses
    // most of them before they get here, as the mount is `ro`).

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: fuser::RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

/// The repository opened anew, to look for new snapshots: a vault is
/// reconnected and its log read and checked again; a directory holding a
/// vault's log (the vault's own directory, a replica, a bundle) has it read
/// again from `vault/`; a bucket without a log is listed again. New
/// snapshots are then ordered by the vault's time, and one the log does
/// not hold is refused, exactly as at mount.
fn reopen(url: &str, ar: &Archive) -> Result<Option<Repository>> {
    let key = ar.key();
    let (mut r, log) = if url.starts_with("https://") {
        let id = key
            .identity()
            .ok_or_else(|| anyhow!("this key cannot sign requests to a vault"))?
            .clone();
        let v = Arc::new(VaultBackend::connect(
            url,
            id,
            key.config_id,
            &util::checkpoint_dir(),
        )?);
        let r = Repository::open(v.clone(), key)?;
        let cp = v.sync_checkpoint()?;
        let entries = v.log_entries(0, cp.size)?;
        (r, Some((entries, cp)))
    } else {
        (Repository::open(ar.backend(), key)?, util::local_log(url)?)
    };
    if let Some((entries, cp)) = log {
        r.attach_log(entries, &cp);
        let problems = r.log_problems();
        if !problems.is_empty() {
            for p in problems {
                eprintln!("holdfast: TAMPERING DETECTED in the vault's log: {p}");
            }
            util::LOG_TAMPERED.store(true, Ordering::Relaxed);
        }
    } else if ar.has_log() {
        bail!("the vault's log that was read at mount is gone");
    }
    Ok(Some(r))
}

/// O_TRUNC on Linux (every architecture holdfast builds for).
fn libc_o_trunc() -> i32 {
    0o1000
}

enum Event {
    Signal(&'static str),
    Ended(std::io::Result<()>),
}

/// Forwards SIGTERM, SIGINT and SIGHUP to `tx` (registered before the
/// mount, so none of them kills the process with the mount left behind).
fn forward_signals(tx: mpsc::Sender<Event>) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    let (mut term, mut int, mut hup) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::terminate())?,
            signal(SignalKind::interrupt())?,
            signal(SignalKind::hangup())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            rt.block_on(async move {
                loop {
                    let s = tokio::select! {
                        _ = term.recv() => "SIGTERM",
                        _ = int.recv() => "SIGINT",
                        _ = hup.recv() => "SIGHUP",
                    };
                    if tx.send(Event::Signal(s)).is_err() {
                        break;
                    }
                }
            })
        })?;
    Ok(())
}

pub fn run(a: Args) -> Result<ExitCode> {
    if std::fs::metadata("/dev/fuse").is_err() {
        bail!(
            "holdfast mount needs /dev/fuse, which this machine does not have \
             (load the fuse kernel module; in a container, pass the device through)"
        );
    }
    let mountpoint = std::fs::canonicalize(&a.mountpoint)
        .map_err(|e| anyhow!("{}: {e}", a.mountpoint.display()))?;
    if !mountpoint.is_dir() {
        bail!("{}: not a directory", mountpoint.display());
    }
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("mount")?;
    let cache = (a.cache_mib > 0).then(|| {
        a.cache_dir.clone().unwrap_or_else(|| {
            util::cache_dir(None)
                .join("mount")
                .join(repo.config_id.to_hex())
        })
    });
    let limits = CacheLimits {
        dir: cache,
        disk_bytes: a.cache_mib.saturating_mul(1 << 20),
        read_timeout: (a.read_timeout > 0).then(|| Duration::from_secs(a.read_timeout)),
        ..CacheLimits::default()
    };
    let ar = Arc::new(Archive::open(repo, key, limits)?);
    for p in &ar.problems() {
        eprintln!("holdfast: DAMAGE DETECTED: {p} (not mounted)");
    }
    let refresh = (a.refresh > 0).then(|| Duration::from_secs(a.refresh));
    let url = a.repo.clone();
    let fs = HoldfastFs::new(
        ar.clone(),
        refresh,
        Arc::new(move |ar: &Archive| reopen(&url, ar)),
    );

    let (tx, rx) = mpsc::channel();
    forward_signals(tx.clone())?;
    let mut cfg = fuser::Config::default();
    cfg.mount_options = vec![
        MountOption::RO,
        MountOption::FSName("holdfast".into()),
        MountOption::Subtype("holdfast".into()),
        // The snapshot's owners and modes decide who reads what.
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::NoExec,
        MountOption::NoAtime,
    ];
    cfg.acl = if a.allow_other {
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    cfg.n_threads = Some(THREADS);
    let mut session = fuser::Session::new(fs, &mountpoint, &cfg)
        .map_err(|e| anyhow!("mounting on {}: {e}", mountpoint.display()))?;
    let mut unmounter = session.unmount_callable();
    std::thread::Builder::new()
        .name("fuse".into())
        .spawn(move || {
            let _ = tx.send(Event::Ended(session.run()));
        })?;
    util::out(format!(
        "mounted {} snapshot(s) of {} on {} (read-only); unmount with `fusermount -u {}` or SIGTERM",
        ar.snapshots().len(),
        ar.location(),
        mountpoint.display(),
        mountpoint.display()
    ));

    let mut signalled = false;
    let ended = loop {
        match rx.recv() {
            Ok(Event::Ended(r)) => break r,
            Ok(Event::Signal(s)) if !signalled => {
                signalled = true;
                if let Err(e) = unmounter.unmount() {
                    // Busy: a reader holds a file open. Detach now; open
                    // files keep working until closed, then the session ends.
                    eprintln!(
                        "holdfast: {s}: {} is busy ({e}); detached, open files stay readable until closed (send {s} again to stop at once)",
                        mountpoint.display()
                    );
                    nix::mount::umount2(&mountpoint, nix::mount::MntFlags::MNT_DETACH)
                        .map_err(|e| anyhow!("unmounting {}: {e}", mountpoint.display()))?;
                }
            }
            Ok(Event::Signal(s)) => {
                eprintln!("holdfast: {s} again: stopping; open files on the mount now fail");
                break Ok(());
            }
            Err(_) => break Ok(()),
        }
    };
    if let Err(e) = ended {
        bail!("the FUSE session on {} failed: {e}", mountpoint.display());
    }
    let st = &ar.stats;
    let damaged = st.damaged.load(Ordering::Relaxed);
    util::out(format!(
        "unmounted {}: {} range request(s) ({}), {} blob(s) from the disk cache, {} from memory",
        mountpoint.display(),
        st.fetched_blobs.load(Ordering::Relaxed),
        util::bytes(st.fetched_bytes.load(Ordering::Relaxed)),
        st.disk_hits.load(Ordering::Relaxed),
        st.memory_hits.load(Ordering::Relaxed),
    ));
    let problems = ar.problems().len();
    if damaged > 0 || problems > 0 {
        eprintln!(
            "holdfast: DAMAGE DETECTED while mounted: {damaged} blob(s) failed their check, {problems} snapshot(s) not opened"
        );
        return Ok(ExitCode::from(util::EXIT_DAMAGE));
    }
    Ok(ExitCode::SUCCESS)
}
