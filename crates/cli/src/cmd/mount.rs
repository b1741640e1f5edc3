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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, mpsc};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow, bail};
use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    MountOption, OpenAccMode, OpenFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, SessionACL, TimeOrNow,
    WriteFlags,
};
use holdfast_core::BlobId;
use holdfast_core::format::{Node, NodeKind, Tree};
use holdfast_repo::mount::{Archive, CacheLimits};

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
}

/// Snapshots never change: the kernel may keep what it was told.
const TTL: Duration = Duration::from_secs(3600);

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
    /// A snapshot's root directory.
    Snap(usize),
}

struct VNode {
    kind: VKind,
    time_ns: i64,
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

struct HoldfastFs {
    ar: Arc<Archive>,
    v: Vec<VNode>,
    /// Directories whose entries may have inodes: by the directory's inode.
    dirs: RwLock<HashMap<u64, DirInfo>>,
    /// First inode of a directory's entries → the directory's inode.
    ranges: RwLock<BTreeMap<u64, u64>>,
    next_ino: AtomicU64,
    handles: Mutex<HashMap<u64, Arc<Handle>>>,
    next_fh: AtomicU64,
    /// Problems already printed (bounded).
    reported: Mutex<HashSet<String>>,
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
    fn new(ar: Arc<Archive>) -> HoldfastFs {
        let mut v: Vec<VNode> = Vec::new();
        let newest = ar.snapshots.iter().map(|s| s.time_ns).max().unwrap_or(0);
        // 1: root, 2: snapshots, 3: by-client, 4: by-host.
        for _ in 0..4 {
            v.push(VNode {
                kind: VKind::Dir(Vec::new()),
                time_ns: newest,
            });
        }
        let mut snap_names = Vec::new();
        let mut snap_dir = Vec::new();
        for (i, s) in ar.snapshots.iter().enumerate() {
            let name = format!("{}_{}", time_name(s.time_ns), s.id.short()).into_bytes();
            v.push(VNode {
                kind: VKind::Snap(i),
                time_ns: s.time_ns,
            });
            snap_dir.push((name.clone(), v.len() as u64));
            snap_names.push(name);
        }
        // by-client and by-host: one directory per name, a symlink per
        // snapshot (by time) and `latest` (the newest by the vault's time).
        let group = |v: &mut Vec<VNode>, key: &dyn Fn(usize) -> String| {
            let mut by: BTreeMap<Vec<u8>, Vec<usize>> = BTreeMap::new();
            for i in 0..ar.snapshots.len() {
                by.entry(component(&key(i))).or_default().push(i);
            }
            let mut out = Vec::new();
            for (name, list) in by {
                let mut entries: Vec<(Vec<u8>, u64)> = Vec::new();
                let mut used = HashSet::new();
                let link = |v: &mut Vec<VNode>, i: usize| {
                    let mut t = b"../../snapshots/".to_vec();
                    t.extend_from_slice(&snap_names[i]);
                    v.push(VNode {
                        kind: VKind::Link(t),
                        time_ns: ar.snapshots[i].time_ns,
                    });
                    v.len() as u64
                };
                for &i in &list {
                    let s = &ar.snapshots[i];
                    let mut n = time_name(s.time_ns).into_bytes();
                    if !used.insert(n.clone()) {
                        n = snap_names[i].clone();
                        used.insert(n.clone());
                    }
                    entries.push((n, link(v, i)));
                }
                // Snapshots are sorted by the vault's time: `latest` is the
                // newest not flagged as anomalous (as for `restore latest`).
                if let Some(&last) = list.iter().rev().find(|&&i| !ar.snapshots[i].flagged) {
                    entries.push((b"latest".to_vec(), link(v, last)));
                }
                entries.sort();
                let t = list
                    .last()
                    .map(|&i| ar.snapshots[i].time_ns)
                    .unwrap_or(newest);
                v.push(VNode {
                    kind: VKind::Dir(entries),
                    time_ns: t,
                });
                out.push((name, v.len() as u64));
            }
            out
        };
        let clients = group(&mut v, &|i| ar.snapshots[i].client.clone());
        let hosts = group(&mut v, &|i| ar.snapshots[i].host.clone());
        v[0].kind = VKind::Dir(vec![
            (b"by-client".to_vec(), 3),
            (b"by-host".to_vec(), 4),
            (b"snapshots".to_vec(), 2),
        ]);
        snap_dir.sort();
        v[1].kind = VKind::Dir(snap_dir);
        v[2].kind = VKind::Dir(clients);
        v[3].kind = VKind::Dir(hosts);
        let mut dirs = HashMap::new();
        for (i, n) in v.iter().enumerate() {
            if let VKind::Snap(s) = n.kind {
                dirs.insert(
                    i as u64 + 1,
                    DirInfo {
                        snap: s,
                        tree: ar.snapshots[s].root,
                        base: None,
                    },
                );
            }
        }
        let next = v.len() as u64 + 1;
        HoldfastFs {
            ar,
            v,
            dirs: RwLock::new(dirs),
            ranges: RwLock::new(BTreeMap::new()),
            next_ino: AtomicU64::new(next),
            handles: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            reported: Mutex::new(HashSet::new()),
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
        format!("snapshot {}", self.ar.snapshots[snap].id.short())
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
        if ino >= 1 && ino <= self.v.len() as u64 {
            return Ok(Obj::Virtual(ino as usize - 1));
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
                let v = &self.v[*i];
                let t = ns_time(v.time_ns);
                let (kind, perm, size) = match &v.kind {
                    VKind::Dir(_) | VKind::Snap(_) => (FileType::Directory, 0o555, 0),
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
        let found = (|| -> Result<(u64, Obj), Errno> {
            if let Ok(Obj::Virtual(i)) = self.obj(parent)
                && let VKind::Dir(entries) = &self.v[i].kind
            {
                let (_, ino) = entries
                    .iter()
                    .find(|(n, _)| n == name)
                    .ok_or(Errno::ENOENT)?;
                return Ok((*ino, self.obj(*ino)?));
            }
            let (snap, tree, base) = self.children(parent)?;
            let idx = tree
                .nodes
                .binary_search_by(|n| n.name.as_slice().cmp(name))
                .map_err(|_| Errno::ENOENT)?;
            Ok((base + idx as u64, Obj::Node { snap, tree, idx }))
        })();
        match found {
            Ok((ino, obj)) => reply.entry(&TTL, &self.attr(ino, &obj), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.obj(ino.0) {
            Ok(o) => reply.attr(&TTL, &self.attr(ino.0, &o)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.obj(ino.0) {
            Ok(Obj::Virtual(i)) => match &self.v[i].kind {
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
            Ok(Obj::Virtual(i)) if matches!(self.v[i].kind, VKind::Link(_)) => {
                reply.error(Errno::ENOTDIR)
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
        let parent = INodeNo::ROOT.0;
        list.push((ino, FileType::Directory, b"."));
        list.push((parent, FileType::Directory, b".."));
        if let Ok(Obj::Virtual(i)) = self.obj(ino)
            && let VKind::Dir(entries) = &self.v[i].kind
        {
            for (name, child) in entries {
                let kind = match self.v[*child as usize - 1].kind {
                    VKind::Link(_) => FileType::Symlink,
                    _ => FileType::Directory,
                };
                list.push((*child, kind, name));
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
        ..CacheLimits::default()
    };
    let ar = Arc::new(Archive::open(repo, key, limits)?);
    for p in &ar.problems {
        eprintln!("holdfast: DAMAGE DETECTED: {p} (not mounted)");
    }
    let fs = HoldfastFs::new(ar.clone());

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
        ar.snapshots.len(),
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
    if damaged > 0 || !ar.problems.is_empty() {
        eprintln!(
            "holdfast: DAMAGE DETECTED while mounted: {damaged} blob(s) failed their check, {} snapshot(s) not opened",
            ar.problems.len()
        );
        return Ok(ExitCode::from(util::EXIT_DAMAGE));
    }
    Ok(ExitCode::SUCCESS)
}
