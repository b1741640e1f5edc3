//! Mail-aware restore (SPEC G9): finds the Maildirs in a snapshot and
//! gives their history back into live mailboxes the way Dovecot expects
//! (doc.dovecot.org "Maildir", "doveadm import"):
//!
//! * nothing live changes: no live file is modified, renamed or deleted;
//!   a live `dovecot-uidlist`, `dovecot-keywords` or `subscriptions` is
//!   never rewritten (new files are only ever placed with a no-replace
//!   link);
//! * a message is skipped when the live folder holds its base name or its
//!   exact bytes; the same Message-ID with other bytes is reported;
//! * messages are delivered as an MDA does: written into `tmp/` under a
//!   fresh unique name, fsynced, then placed into `cur/` (with the flags)
//!   or `new/`, with the original mtime (IMAP's INTERNALDATE) and a correct
//!   `,S=`;
//! * keywords keep their names through both folders' `dovecot-keywords`;
//! * a folder with no live `dovecot-uidlist` gets its control files back
//!   byte for byte and its messages under their original names, so that
//!   UIDVALIDITY and every UID survive;
//! * INBOX first, newest first, many mailboxes at once.
//!
//! Every byte read from the snapshot is authenticated and checked against
//! its keyed id ([`BlobReader`]).

pub mod maildir;
pub mod mbox;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use holdfast_core::format::{Node, NodeKind, SnapshotBody, Tree};
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::{Backend, Kind};

use crate::keys::Key;
use crate::packindex::{PackIndex, Reader};
use crate::{Error, Repository, Result, io_err};
use maildir::MaildirName;

/// A backend that counts the bytes it hands out: what a mail command read.
pub struct Counting {
    inner: Arc<dyn Backend>,
    read: AtomicU64,
}

impl Counting {
    pub fn new(inner: Arc<dyn Backend>) -> Counting {
        Counting {
            inner,
            read: AtomicU64::new(0),
        }
    }
    pub fn bytes_read(&self) -> u64 {
        self.read.load(Ordering::Relaxed)
    }
    fn count(&self, r: holdfast_store::Result<Vec<u8>>) -> holdfast_store::Result<Vec<u8>> {
        if let Ok(b) = &r {
            self.read.fetch_add(b.len() as u64, Ordering::Relaxed);
        }
        r
    }
}

impl Backend for Counting {
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> holdfast_store::Result<()> {
        self.inner.put(kind, name, data)
    }
    fn get(&self, kind: Kind, name: &str) -> holdfast_store::Result<Vec<u8>> {
        self.count(self.inner.get(kind, name))
    }
    fn get_range(
        &self,
        kind: Kind,
        name: &str,
        offset: u64,
        len: u64,
    ) -> holdfast_store::Result<Vec<u8>> {
        self.count(self.inner.get_range(kind, name, offset, len))
    }
    fn size(&self, kind: Kind, name: &str) -> holdfast_store::Result<u64> {
        self.inner.size(kind, name)
    }
    fn list(&self, kind: Kind) -> holdfast_store::Result<Vec<(String, u64)>> {
        self.inner.list(kind)
    }
    fn location(&self) -> String {
        self.inner.location()
    }
    fn prefers_whole_objects(&self) -> bool {
        self.inner.prefers_whole_objects()
    }
    fn get_pinned(&self, kind: Kind, name: &str, id: &ObjectId) -> holdfast_store::Result<Vec<u8>> {
        self.count(self.inner.get_pinned(kind, name, id))
    }
}

/// How a mailbox keeps its folders.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// `.Folder` and `.Folder.Sub` beside `cur/new/tmp` (Maildir++).
    MaildirPlusPlus,
    /// `Folder/Sub/` sub-directories (Dovecot's `LAYOUT=fs`).
    Fs,
}

impl Layout {
    pub fn name(self) -> &'static str {
        match self {
            Layout::MaildirPlusPlus => "maildir++",
            Layout::Fs => "fs",
        }
    }
}

/// One message file in a snapshot.
#[derive(Clone, Debug)]
pub struct Msg {
    pub name: Vec<u8>,
    pub node: Node,
    /// In `new/` (else `cur/`).
    pub in_new: bool,
}

impl Msg {
    pub fn size(&self) -> u64 {
        match self.node.kind {
            NodeKind::File { size, .. } => size,
            _ => 0,
        }
    }
    pub fn mtime_ns(&self) -> i64 {
        self.node.mtime_s * 1_000_000_000 + self.node.mtime_ns as i64
    }
}

/// One folder of a mailbox in a snapshot.
#[derive(Clone, Debug)]
pub struct Folder {
    /// `INBOX`, or the folder's name (`Sent`, `Archive.2024`, `a/b`).
    pub name: String,
    /// Its directory relative to the mailbox (empty for INBOX).
    pub rel: Vec<u8>,
    pub msgs: Vec<Msg>,
    /// Regular files beside `cur/new/tmp` (dovecot-uidlist, -keywords,
    /// subscriptions…), not Dovecot's index caches.
    pub control: Vec<Node>,
    /// The folder directory's own node (mode, owner).
    pub node: Option<Node>,
}

impl Folder {
    pub fn is_inbox(&self) -> bool {
        self.rel.is_empty()
    }
    pub fn bytes(&self) -> u64 {
        self.msgs.iter().map(Msg::size).sum()
    }
    pub fn newest_ns(&self) -> Option<i64> {
        self.msgs.iter().map(Msg::mtime_ns).max()
    }
}

/// A Maildir (one user's mailbox) found in a snapshot.
#[derive(Clone, Debug)]
pub struct Mailbox {
    /// Its path in the snapshot's tree (`/`-joined, as `ls` prints).
    pub path: String,
    /// Its path relative to the PATH the command was given.
    pub rel: PathBuf,
    pub layout: Layout,
    /// INBOX first, then the others by name.
    pub folders: Vec<Folder>,
}

impl Mailbox {
    pub fn messages(&self) -> u64 {
        self.folders.iter().map(|f| f.msgs.len() as u64).sum()
    }
    pub fn bytes(&self) -> u64 {
        self.folders.iter().map(Folder::bytes).sum()
    }
    pub fn newest_ns(&self) -> Option<i64> {
        self.folders.iter().filter_map(Folder::newest_ns).max()
    }
}

/// Files Dovecot rebuilds by itself (indexes, caches, locks): never
/// restored as control files.
fn is_cache(name: &[u8]) -> bool {
    name.starts_with(b"dovecot.index")
        || name.starts_with(b"dovecot.list.index")
        || name.starts_with(b"dovecot.mailbox.log")
        || name.ends_with(b".lock")
}

fn dir_child<'t>(tree: &'t Tree, name: &[u8]) -> Option<&'t BlobId> {
    tree.nodes.iter().find_map(|n| match &n.kind {
        NodeKind::Dir { subtree } if n.name == name => Some(subtree),
        _ => None,
    })
}

fn is_maildir(tree: &Tree) -> bool {
    dir_child(tree, b"cur").is_some() && dir_child(tree, b"new").is_some()
}

/// The folder whose directory's tree is `tree`.
fn folder_of(
    reader: &BlobReader,
    tree: &Tree,
    name: String,
    rel: Vec<u8>,
    node: Option<Node>,
) -> Result<Folder> {
    let mut msgs = Vec::new();
    for (sub, in_new) in [(&b"cur"[..], false), (&b"new"[..], true)] {
        if let Some(id) = dir_child(tree, sub) {
            for n in reader.tree(id)?.nodes {
                if matches!(n.kind, NodeKind::File { .. }) {
                    msgs.push(Msg {
                        name: n.name.clone(),
                        node: n,
                        in_new,
                    });
                }
            }
        }
    }
    let control = tree
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::File { .. }) && !is_cache(&n.name))
        .cloned()
        .collect();
    Ok(Folder {
        name,
        rel,
        msgs,
        control,
        node,
    })
}

/// Dovecot's `LAYOUT=fs` folders under `tree` (a mailbox root or a
/// folder), recursively; intermediate directories without `cur/new` are
/// walked through.
fn fs_folders(
    reader: &BlobReader,
    tree: &Tree,
    prefix: &[u8],
    depth: usize,
    out: &mut Vec<Folder>,
) -> Result<()> {
    if depth > 32 {
        return Ok(());
    }
    for n in &tree.nodes {
        let NodeKind::Dir { subtree } = &n.kind else {
            continue;
        };
        if n.name.starts_with(b".") || [&b"cur"[..], b"new", b"tmp"].contains(&n.name.as_slice()) {
            continue;
        }
        let mut rel = prefix.to_vec();
        if !rel.is_empty() {
            rel.push(b'/');
        }
        rel.extend_from_slice(&n.name);
        let t = reader.tree(subtree)?;
        if is_maildir(&t) {
            let name = String::from_utf8_lossy(&rel).into_owned();
            out.push(folder_of(reader, &t, name, rel.clone(), Some(n.clone()))?);
        }
        fs_folders(reader, &t, &rel, depth + 1, out)?;
    }
    Ok(())
}

fn mailbox_of(
    reader: &BlobReader,
    tree: &Tree,
    path: String,
    rel: PathBuf,
    node: Option<Node>,
) -> Result<Mailbox> {
    let mut folders = vec![folder_of(reader, tree, "INBOX".into(), Vec::new(), node)?];
    let mut dotted = Vec::new();
    for n in &tree.nodes {
        let NodeKind::Dir { subtree } = &n.kind else {
            continue;
        };
        if n.name.len() > 1 && n.name[0] == b'.' && n.name != b".." {
            let t = reader.tree(subtree)?;
            if is_maildir(&t) {
                let name = String::from_utf8_lossy(&n.name[1..]).into_owned();
                dotted.push(folder_of(
                    reader,
                    &t,
                    name,
                    n.name.clone(),
                    Some(n.clone()),
                )?);
            }
        }
    }
    let mut fs = Vec::new();
    fs_folders(reader, tree, b"", 0, &mut fs)?;
    let layout = if fs.len() > dotted.len() {
        Layout::Fs
    } else {
        Layout::MaildirPlusPlus
    };
    folders.extend(dotted);
    folders.extend(fs);
    folders[1..].sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Mailbox {
        path,
        rel,
        layout,
        folders,
    })
}

/// A Maildir found in a snapshot, not yet read: where it is and its tree.
/// Finding every mailbox of a spool holds only these (a few hundred bytes
/// each), never the spool's message list.
#[derive(Clone, Debug)]
pub struct BoxRef {
    /// Its path in the snapshot's tree (`/`-joined, as `ls` prints).
    pub path: String,
    /// Its path relative to the PATH the command was given.
    pub rel: PathBuf,
    /// Its directory's node (None for the snapshot's root).
    pub node: Option<Node>,
    pub tree: BlobId,
}

impl BoxRef {
    /// Reads the mailbox's folders and their message lists.
    pub fn load(&self, reader: &BlobReader) -> Result<Mailbox> {
        let tree = reader.tree(&self.tree)?;
        mailbox_of(
            reader,
            &tree,
            self.path.clone(),
            self.rel.clone(),
            self.node.clone(),
        )
    }
}

/// Every Maildir at or under `tree` (whose tree path is `path`), handed
/// to `f` as it is found, depth first (one tree held per level). A tree
/// that cannot be read is handed over as an error (its path).
fn find(reader: &BlobReader, tree: &Tree, at: BoxRef, depth: usize, f: &mut dyn FnMut(Walked)) {
    if is_maildir(tree) {
        f(Ok(at));
        return;
    }
    let (path, rel) = (at.path.as_str(), &at.rel);
    if depth > 64 {
        return;
    }
    for n in &tree.nodes {
        let NodeKind::Dir { subtree } = &n.kind else {
            continue;
        };
        let name = String::from_utf8_lossy(&n.name);
        let p = if path.is_empty() {
            name.to_string()
        } else {
            format!("{path}/{name}")
        };
        match reader.tree(subtree) {
            Ok(t) => {
                let at = BoxRef {
                    path: p,
                    rel: rel.join(OsStr::from_bytes(&n.name)),
                    node: Some(n.clone()),
                    tree: *subtree,
                };
                find(reader, &t, at, depth + 1, f)
            }
            Err(e) => f(Err((p, e))),
        }
    }
}

/// A mailbox found, or a tree that could not be read (its path, why).
pub type Walked = std::result::Result<BoxRef, (String, Error)>;

/// Mailboxes found, and the trees that could not be read (path, error).
pub type Found = (Vec<Mailbox>, Vec<(String, Error)>);

/// The reader mail commands use: blob locations from the on-disk pack
/// index (memory does not grow with the snapshot's blob count).
pub type BlobReader<'a> = Reader<'a>;

/// A snapshot opened for mail commands: the reader counts what it reads.
pub struct Opened {
    pub id: ObjectId,
    pub body: SnapshotBody,
    backend: Counting,
    index: PackIndex,
    /// Packs whose tables could not be read (damage).
    pub pack_errors: Vec<Error>,
}

impl Opened {
    pub fn open(repo: &Repository, key: &Key, id: &ObjectId) -> Result<Opened> {
        let (_, secret) = key.require_restore("reading mail")?;
        let snap = repo.load_snapshot(id)?;
        let body = repo.open_body(id, &snap, secret)?;
        let backend = Counting::new(repo.backend.clone());
        let (index, pack_errors) = PackIndex::for_packs(&backend, &snap.header.packs);
        Ok(Opened {
            id: *id,
            body,
            backend,
            index: index?,
            pack_errors,
        })
    }

    pub fn bytes_read(&self) -> u64 {
        self.backend.bytes_read()
    }

    pub fn reader<'a>(&'a self, key: &'a Key) -> Result<BlobReader<'a>> {
        let (id_key, secret) = key.require_restore("reading mail")?;
        Ok(Reader::new(&self.backend, &self.index, id_key, secret))
    }

    /// Something read through the index failed its check: the next
    /// command rebuilds the index from the packs.
    pub fn distrust_index(&self) {
        self.index.distrust();
    }

    /// Hands each Maildir at or under `path` (either form, see
    /// [`crate::repo::tree_path`]; empty for the whole snapshot) to `f` as
    /// it is found, reading only the trees on the way there and under it.
    /// An error only when `path` is not a directory of the snapshot.
    pub fn walk_mailboxes(
        &self,
        reader: &BlobReader,
        path: &str,
        f: &mut dyn FnMut(Walked),
    ) -> Result<()> {
        let (tree, at) = self.resolve(reader, path)?;
        find(reader, &tree, at, 0, f);
        Ok(())
    }

    /// True when `path` is itself a Maildir (one mailbox, not a spool).
    pub fn is_mailbox(&self, reader: &BlobReader, path: &str) -> Result<bool> {
        Ok(is_maildir(&self.resolve(reader, path)?.0))
    }

    /// The directory `path` names: its tree, and where it is.
    fn resolve(&self, reader: &BlobReader, path: &str) -> Result<(Tree, BoxRef)> {
        let parts = crate::repo::tree_path(&self.body, path)?;
        let mut id = self.body.root;
        let mut tree = reader.tree(&id)?;
        let mut node = None;
        for p in &parts {
            let n = tree
                .nodes
                .iter()
                .find(|n| n.name == p.as_bytes())
                .cloned()
                .ok_or_else(|| Error::Usage(format!("{path:?} is not in the snapshot")))?;
            let NodeKind::Dir { subtree } = &n.kind else {
                return Err(Error::Usage(format!("{path:?} is not a directory")));
            };
            id = *subtree;
            tree = reader.tree(subtree)?;
            node = Some(n);
        }
        let at = BoxRef {
            path: parts.join("/"),
            rel: PathBuf::new(),
            node,
            tree: id,
        };
        Ok((tree, at))
    }

    /// Every Maildir at or under `path`, read whole (all their message
    /// lists in memory: for a sample or one mailbox; the mail commands
    /// stream with [`Self::walk_mailboxes`]).
    pub fn mailboxes(&self, reader: &BlobReader, path: &str) -> Result<Found> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        self.walk_mailboxes(reader, path, &mut |r| match r {
            Ok(b) => match b.load(reader) {
                Ok(m) => out.push(m),
                Err(e) => errors.push((b.path, e)),
            },
            Err(pe) => errors.push(pe),
        })?;
        Ok((out, errors))
    }
}

/// A file's bytes from the snapshot, every chunk checked against its id.
pub fn read_file(reader: &BlobReader, node: &Node) -> Result<Vec<u8>> {
    read_many(reader, &[node])
        .pop()
        .unwrap_or_else(|| Err(Error::Usage("not a file".into())))
}

/// Reads closer than this are merged into one range request (the gap is
/// read and dropped); a request is at most `max` long unless one blob is.
/// The same figures as `restore`.
fn coalescing(remote: bool) -> (u64, u64) {
    if remote {
        (256 << 10, 2 << 20)
    } else {
        (64 << 10, 1 << 20)
    }
}

/// Reads several files at once: every chunk located through the pack
/// index, sorted by pack and offset, fetched as coalesced range requests
/// (whatever the backend), each blob opened once and checked against its
/// keyed id. Returns each file's bytes or why it could not be read.
pub fn read_many(reader: &BlobReader, nodes: &[&Node]) -> Vec<Result<Vec<u8>>> {
    struct Want {
        loc: crate::index::Location,
        file: usize,
        chunk: usize,
    }
    let mut parts: Vec<Result<Vec<Option<Vec<u8>>>>> = Vec::with_capacity(nodes.len());
    let mut wants: Vec<Want> = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let NodeKind::File { chunks, .. } = &n.kind else {
            parts.push(Err(Error::Usage("not a file".into())));
            continue;
        };
        let first = wants.len();
        let mut slot = Ok(vec![None; chunks.len()]);
        for (k, c) in chunks.iter().enumerate() {
            match reader.locate(c) {
                Ok(Some(loc)) => wants.push(Want {
                    loc,
                    file: i,
                    chunk: k,
                }),
                Ok(None) => {
                    slot = Err(Error::Corrupt(format!(
                        "blob {} is not in any pack the snapshot lists",
                        c.to_hex()
                    )));
                    break;
                }
                Err(e) => {
                    slot = Err(e);
                    break;
                }
            }
        }
        if slot.is_err() {
            wants.truncate(first);
        }
        parts.push(slot);
    }
    wants.sort_unstable_by_key(|w| (w.loc.pack, w.loc.entry.offset, w.file, w.chunk));
    let (gap, max) = coalescing(reader.backend.prefers_whole_objects());
    let mut i = 0;
    while i < wants.len() {
        let pack = wants[i].loc.pack;
        let start = wants[i].loc.entry.offset as u64;
        let mut end = start + wants[i].loc.entry.stored_len as u64;
        let mut j = i + 1;
        while j < wants.len() {
            let w = &wants[j].loc;
            let (s, e) = (
                w.entry.offset as u64,
                w.entry.offset as u64 + w.entry.stored_len as u64,
            );
            if w.pack != pack || s > end + gap || e.max(end) - start > max {
                break;
            }
            end = end.max(e);
            j += 1;
        }
        let name = reader.index.packs[pack as usize].to_hex();
        match reader
            .backend
            .get_range(Kind::Pack, &name, start, end - start)
        {
            Err(e) => {
                let e = Error::from(e);
                for w in &wants[i..j] {
                    if parts[w.file].is_ok() {
                        parts[w.file] = Err(copy_err(&e));
                    }
                }
            }
            Ok(bytes) => {
                // The same blob in several files (or twice in one) is
                // opened once.
                let mut last: Option<(u32, Result<Vec<u8>>)> = None;
                for w in &wants[i..j] {
                    if parts[w.file].is_err() {
                        continue;
                    }
                    let at = w.loc.entry.offset;
                    if last.as_ref().is_none_or(|(o, _)| *o != at) {
                        let from = (at as u64 - start) as usize;
                        let plain = match bytes.get(from..from + w.loc.entry.stored_len as usize) {
                            Some(sealed) => reader.open(&w.loc, sealed),
                            None => Err(Error::Corrupt(format!(
                                "pack {} is shorter than its table says",
                                reader.index.packs[pack as usize]
                            ))),
                        };
                        last = Some((at, plain));
                    }
                    match &last {
                        Some((_, Ok(p))) => {
                            if let Ok(v) = &mut parts[w.file] {
                                v[w.chunk] = Some(p.clone());
                            }
                        }
                        Some((_, Err(e))) => parts[w.file] = Err(copy_err(e)),
                        None => {}
                    }
                }
            }
        }
        i = j;
    }
    nodes
        .iter()
        .zip(parts)
        .map(|(n, p)| {
            let pieces = p?;
            let NodeKind::File { size, .. } = &n.kind else {
                return Err(Error::Usage("not a file".into()));
            };
            let mut v = Vec::with_capacity((*size).min(64 << 20) as usize);
            for piece in pieces {
                match piece {
                    Some(b) => v.extend_from_slice(&b),
                    None => return Err(Error::Corrupt("a chunk was not read".into())),
                }
            }
            if v.len() as u64 != *size {
                return Err(Error::Corrupt(format!(
                    "chunks add up to {} bytes, the snapshot says {size}",
                    v.len()
                )));
            }
            Ok(v)
        })
        .collect()
}

/// One error reported for several files: the same kind (damage or not),
/// the same words.
fn copy_err(e: &Error) -> Error {
    match e {
        Error::Corrupt(s) => Error::Corrupt(s.clone()),
        Error::Tamper(s) => Error::Tamper(s.clone()),
        e if is_damage(e) => Error::Corrupt(e.to_string()),
        e => Error::Usage(e.to_string()),
    }
}

/// The largest batch of messages read (and written) together (bytes,
/// messages): the order stays newest first at this granularity, and each
/// of the mailboxes worked on at once holds at most one batch.
const BATCH_BYTES: u64 = 4 << 20;
const BATCH_MSGS: usize = 256;

/// A message and its bytes (or why they could not be read).
type MsgRead<'a> = (&'a Msg, Result<Vec<u8>>);

/// Messages in order, read a batch at a time with [`read_many`].
struct Batches<'a, 'r> {
    reader: &'r BlobReader<'r>,
    msgs: &'a [&'a Msg],
    next: usize,
}

impl<'a, 'r> Batches<'a, 'r> {
    fn new(reader: &'r BlobReader<'r>, msgs: &'a [&'a Msg]) -> Self {
        Batches {
            reader,
            msgs,
            next: 0,
        }
    }

    /// The next batch of messages with their bytes (or errors).
    fn next_batch(&mut self) -> Option<Vec<MsgRead<'a>>> {
        if self.next >= self.msgs.len() {
            return None;
        }
        let start = self.next;
        let mut bytes = 0;
        while self.next < self.msgs.len()
            && self.next - start < BATCH_MSGS
            && (self.next == start || bytes + self.msgs[self.next].size() <= BATCH_BYTES)
        {
            bytes += self.msgs[self.next].size();
            self.next += 1;
        }
        let batch = &self.msgs[start..self.next];
        let nodes: Vec<&Node> = batch.iter().map(|m| &m.node).collect();
        let data = read_many(self.reader, &nodes);
        Some(batch.iter().copied().zip(data).collect())
    }
}

/// True when `e` is the repository's fault (a missing object the snapshot
/// lists counts as damage).
pub fn is_damage(e: &Error) -> bool {
    e.is_damage() || matches!(e, Error::Store(s) if s.is_not_found())
}

// ------------------------------------------------------------- restore

pub struct MailRestoreOptions {
    pub target: PathBuf,
    /// Only these folders (`INBOX`, `Sent`…); empty for all.
    pub folders: Vec<String>,
    /// Everything into this folder (and sub-folders of it).
    pub into_folder: Option<String>,
    pub dry_run: bool,
    /// Mailboxes worked on at once.
    pub parallel: usize,
}

/// Counters the front end polls for progress.
#[derive(Default, Debug)]
pub struct MailProgress {
    pub mailboxes_total: AtomicU64,
    pub mailboxes_done: AtomicU64,
    pub messages_total: AtomicU64,
    pub messages_done: AtomicU64,
    pub bytes_done: AtomicU64,
    /// Every mailbox has been found (`mailboxes_total` is final).
    pub found_all: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default, Clone)]
pub struct MailReport {
    pub mailboxes: u64,
    pub folders: u64,
    /// Messages in the snapshot's folders considered.
    pub messages: u64,
    /// Delivered (with --dry-run: would be).
    pub written: u64,
    pub bytes_written: u64,
    /// The live folder holds the same base name.
    pub skipped_same_name: u64,
    /// The live folder holds the same bytes under another name.
    pub skipped_same_content: u64,
    /// Written, but the live folder holds the same Message-ID with other
    /// bytes (folder path and Message-ID).
    pub same_message_id: Vec<String>,
    /// Control files restored byte for byte (folders with no live uidlist).
    pub control_files: u64,
    /// Folders restored as a disaster restore (no live uidlist: UIDs kept).
    pub folders_uids_kept: u64,
    /// Keyword names the live folder lacks: dropped from the flags.
    pub keywords_dropped: BTreeMap<String, u64>,
    pub damaged: Vec<String>,
    pub errors: Vec<String>,
    pub bytes_read: u64,
    /// Seconds from the start until the first / every INBOX was complete.
    pub first_inbox_s: Option<f64>,
    pub all_inboxes_s: Option<f64>,
    /// Seconds from the start until every mailbox of a spool had its
    /// newest [`FIRST_PASS`] INBOX messages (the first pass; None for one
    /// mailbox, which is restored in one pass).
    pub inbox_newest_s: Option<f64>,
    pub seconds: f64,
    /// `syncfs` calls that made the written batches durable.
    pub syncs: u64,
    /// The target's file system was full (ENOSPC, EDQUOT): the restore
    /// stopped there (the first such error). Said once in `errors`.
    pub full: Option<String>,
}

impl MailReport {
    fn note(&mut self, what: &str, e: &Error) {
        let line = format!("{what}: {e}");
        if is_damage(e) {
            self.damaged.push(line);
        } else {
            self.errors.push(line);
        }
    }
    fn merge(&mut self, o: MailReport) {
        self.folders += o.folders;
        self.messages += o.messages;
        self.written += o.written;
        self.bytes_written += o.bytes_written;
        self.skipped_same_name += o.skipped_same_name;
        self.skipped_same_content += o.skipped_same_content;
        self.same_message_id.extend(o.same_message_id);
        self.control_files += o.control_files;
        self.folders_uids_kept += o.folders_uids_kept;
        for (k, v) in o.keywords_dropped {
            *self.keywords_dropped.entry(k).or_default() += v;
        }
        self.damaged.extend(o.damaged);
        self.errors.extend(o.errors);
        self.full = self.full.take().or(o.full);
    }
}

/// A full file system or an exhausted quota: nothing more can be written
/// there, so the restore stops rather than fail every message alike.
fn is_full(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(c) if c == nix::errno::Errno::ENOSPC as i32 || c == nix::errno::Errno::EDQUOT as i32)
}

/// What a live folder holds, read once (names and sizes) and lazily
/// (content ids, Message-IDs).
struct Live {
    names: HashSet<Vec<u8>>,
    by_size: HashMap<u64, Vec<PathBuf>>,
    ids: HashMap<PathBuf, Option<BlobId>>,
    msgids: Option<HashSet<Vec<u8>>>,
    files: Vec<PathBuf>,
    has_uidlist: bool,
}

/// The largest header read from a live message for its Message-ID.
const HEADER_MAX: u64 = 256 << 10;
/// The largest `dovecot-keywords` read.
const KEYWORDS_MAX: u64 = 1 << 20;

impl Live {
    fn scan(dir: &Path) -> std::io::Result<Live> {
        let mut l = Live {
            names: HashSet::new(),
            by_size: HashMap::new(),
            ids: HashMap::new(),
            msgids: None,
            files: Vec::new(),
            has_uidlist: std::fs::symlink_metadata(dir.join("dovecot-uidlist")).is_ok(),
        };
        for sub in ["cur", "new"] {
            let d = dir.join(sub);
            let rd = match std::fs::read_dir(&d) {
                Ok(r) => r,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for e in rd {
                let e = e?;
                let md = match e.metadata() {
                    Ok(m) => m,
                    Err(_) => continue, // renamed away meanwhile
                };
                if !md.is_file() {
                    continue;
                }
                let name = e.file_name();
                l.names
                    .insert(MaildirName::parse(name.as_bytes()).base.to_vec());
                l.by_size.entry(md.len()).or_default().push(e.path());
                l.files.push(e.path());
            }
        }
        Ok(l)
    }

    /// True when a live message has exactly `data`'s bytes.
    fn holds(&mut self, reader: &BlobReader, data: &[u8]) -> bool {
        let Some(paths) = self.by_size.get(&(data.len() as u64)) else {
            return false;
        };
        let want = reader.id_key().blob_id(data);
        for p in paths {
            let id = self.ids.entry(p.clone()).or_insert_with(|| {
                // A message Dovecot renamed meanwhile (a flag change) is
                // found again under its new name by its base name.
                read_live(p).map(|b| reader.id_key().blob_id(&b))
            });
            if *id == Some(want) {
                return true;
            }
        }
        false
    }

    fn has_message_id(&mut self, id: &[u8]) -> bool {
        let files = &self.files;
        self.msgids
            .get_or_insert_with(|| {
                files
                    .iter()
                    .filter_map(|p| {
                        let mut b = Vec::new();
                        let f = std::fs::File::open(p).ok()?;
                        std::io::Read::read_to_end(&mut std::io::Read::take(f, HEADER_MAX), &mut b)
                            .ok()?;
                        maildir::message_id(&b)
                    })
                    .collect()
            })
            .contains(id)
    }
}

/// A live message's bytes; `None` when it moved away (Dovecot renames on
/// flag changes) or cannot be read.
fn read_live(p: &Path) -> Option<Vec<u8>> {
    let md = std::fs::symlink_metadata(p).ok()?;
    if !md.is_file() {
        return None;
    }
    std::fs::read(p).ok()
}

/// Reads a regular live file of at most `max` bytes; `None` if absent.
fn read_small(p: &Path, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    match std::fs::symlink_metadata(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
        Ok(m) if !m.is_file() => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        )),
        Ok(m) if m.len() > max => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "too large",
        )),
        Ok(_) => std::fs::read(p).map(Some),
    }
}

static SEQ: AtomicU64 = AtomicU64::new(0);

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "holdfast".into())
}

/// A fresh Maildir base name, unique on this host: time, microseconds,
/// pid, a sequence number and random bits (Dovecot's own pattern).
fn fresh_base(host: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let r: [u8; 4] = holdfast_core::crypto::random_bytes().unwrap_or([0; 4]);
    format!(
        "{}.M{}P{}Q{}R{}.{}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        holdfast_core::id::hex(&r),
        maildir::host_part(host)
    )
}

/// Writes `data` into `tmp/` of a folder under a fresh name: created
/// exclusively, mtime set, owner set where permitted; fsynced when `sync`
/// (else the caller makes it durable, see [`Syncer`], before placing it).
fn write_tmp(
    tmp_dir: &Path,
    host: &str,
    data: &[u8],
    mtime: filetime::FileTime,
    owner: Option<(u32, u32)>,
    sync: bool,
) -> std::io::Result<PathBuf> {
    let p = tmp_dir.join(fresh_base(host));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&p)?;
    let r = (|| {
        f.write_all(data)?;
        if let Some((u, g)) = owner {
            let _ = std::os::unix::fs::fchown(&f, Some(u), Some(g));
        }
        filetime::set_file_handle_times(&f, Some(mtime), Some(mtime))?;
        if sync { f.sync_all() } else { Ok(()) }
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&p);
        return Err(e);
    }
    Ok(p)
}

/// Moves our own `tmp` file to `to`, never replacing anything there: one
/// `renameat2(RENAME_NOREPLACE)`, or where the file system lacks it a
/// hard link and the tmp name removed. `AlreadyExists` when `to` is taken;
/// the tmp file is removed either way.
fn place(tmp: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    match renameat2(AT_FDCWD, tmp, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => return Ok(()),
        Err(nix::errno::Errno::EEXIST) => {
            let _ = std::fs::remove_file(tmp);
            return Err(std::io::ErrorKind::AlreadyExists.into());
        }
        Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {}
        Err(e) => {
            let _ = std::fs::remove_file(tmp);
            return Err(e.into());
        }
    }
    let r = match std::fs::hard_link(tmp, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            // A file system without hard links: check, then rename.
            if std::fs::symlink_metadata(to).is_ok() {
                Err(std::io::ErrorKind::AlreadyExists.into())
            } else {
                std::fs::rename(tmp, to)
            }
        }
    };
    let _ = std::fs::remove_file(tmp);
    r
}

fn fsync_dir(d: &Path) -> std::io::Result<()> {
    std::fs::File::open(d)?.sync_all()
}

/// Makes what was written durable for many writers at once, with one
/// `syncfs` per file system for everyone waiting (a group commit): a
/// writer takes a ticket once its files are written; a `syncfs` started
/// after that covers them. Whoever finds no sync running runs the next
/// one for all the tickets taken so far. A batch of restored messages
/// thus costs a share of one sync instead of one fsync per message.
///
/// `syncfs` also flushes what other programs wrote to the same file
/// system (on a mail host, mostly mail being delivered): that is the
/// price of not waiting for one journal commit per message. Where it
/// fails, every later caller gets the error and falls back to fsyncing
/// each file and its directories.
#[derive(Default)]
pub struct Syncer {
    st: Mutex<SyncState>,
    cv: std::sync::Condvar,
}

#[derive(Default)]
struct SyncState {
    asked: u64,
    done: u64,
    running: bool,
    failed: bool,
    /// One open directory per file system with something to sync.
    dirty: HashMap<u64, Arc<std::fs::File>>,
    /// syncfs calls made (for tests and figures).
    calls: u64,
}

impl Syncer {
    /// Returns once everything written on `dir`'s file system before this
    /// call is durable (file data, inodes and directory entries).
    pub fn sync(&self, dir: &Path) -> std::io::Result<()> {
        let f = std::fs::File::open(dir)?;
        let dev = f.metadata()?.dev();
        let mut s = self.st.lock().unwrap_or_else(|p| p.into_inner());
        if s.failed {
            return Err(std::io::Error::other("syncfs failed earlier"));
        }
        s.dirty.entry(dev).or_insert_with(|| Arc::new(f));
        s.asked += 1;
        let ticket = s.asked;
        loop {
            if s.done >= ticket {
                return if s.failed {
                    Err(std::io::Error::other("syncfs failed"))
                } else {
                    Ok(())
                };
            }
            if !s.running {
                s.running = true;
                let target = s.asked;
                let files: Vec<Arc<std::fs::File>> = s.dirty.drain().map(|(_, f)| f).collect();
                s.calls += files.len() as u64;
                drop(s);
                let mut ok = true;
                for f in &files {
                    use std::os::fd::AsFd;
                    ok &= nix::unistd::syncfs(f.as_fd()).is_ok();
                }
                s = self.st.lock().unwrap_or_else(|p| p.into_inner());
                s.running = false;
                s.failed |= !ok;
                s.done = s.done.max(target);
                self.cv.notify_all();
                continue;
            }
            s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// How many `syncfs` calls were made.
    pub fn calls(&self) -> u64 {
        self.st.lock().unwrap_or_else(|p| p.into_inner()).calls
    }
}

/// Creates a directory (mode 0700, owned like `owner` where permitted) and
/// its missing parents; true if it was created.
fn make_dir(d: &Path, owner: Option<(u32, u32)>) -> std::io::Result<bool> {
    if d.as_os_str().is_empty() || d.is_dir() {
        return Ok(false);
    }
    if let Some(p) = d.parent() {
        make_dir(p, owner)?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(d) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(e),
    }
    if let Some((u, g)) = owner {
        let _ = std::os::unix::fs::lchown(d, Some(u), Some(g));
    }
    match d.parent() {
        Some(p) if !p.as_os_str().is_empty() => fsync_dir(p)?,
        _ => fsync_dir(Path::new("."))?,
    }
    Ok(true)
}

/// The folder a snapshot folder goes to, relative to the mailbox.
fn target_rel(mb: &Mailbox, f: &Folder, into: Option<&str>) -> Vec<u8> {
    let Some(n) = into else {
        return f.rel.clone();
    };
    match (mb.layout, f.is_inbox()) {
        (Layout::MaildirPlusPlus, true) => format!(".{n}").into_bytes(),
        (Layout::MaildirPlusPlus, false) => format!(".{n}.{}", f.name).into_bytes(),
        (Layout::Fs, true) => n.as_bytes().to_vec(),
        (Layout::Fs, false) => format!("{n}/{}", f.name).into_bytes(),
    }
}

/// How many of each INBOX's newest messages the first pass over a spool
/// restores in every mailbox before anything else.
pub const FIRST_PASS: usize = 100;

/// Which messages of a mailbox a walk over the spool restores.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Pass {
    /// Everything: INBOX first, then the other folders.
    All,
    /// The newest [`FIRST_PASS`] messages of INBOX only.
    InboxNewest,
    /// What [`Pass::InboxNewest`] left: the rest of INBOX, the other folders.
    Rest,
}

impl Pass {
    /// The part of folder `f` (its messages sorted newest first) this
    /// pass restores, or None when it restores nothing of it.
    fn range(self, f: &Folder) -> Option<std::ops::Range<usize>> {
        let n = f.msgs.len();
        match (self, f.is_inbox()) {
            (Pass::All, _) | (Pass::Rest, false) => Some(0..n),
            (Pass::InboxNewest, true) => Some(0..n.min(FIRST_PASS)),
            (Pass::InboxNewest, false) => None,
            (Pass::Rest, true) => (n > FIRST_PASS).then_some(FIRST_PASS..n),
        }
    }
}

struct Ctx<'a> {
    reader: &'a BlobReader<'a>,
    opts: &'a MailRestoreOptions,
    pass: Pass,
    progress: &'a MailProgress,
    host: String,
    start: Instant,
    /// Seconds until the first and the last INBOX were complete.
    first_inbox: Mutex<(Option<f64>, Option<f64>)>,
    /// Threads that write messages into `tmp/`.
    writers: rayon::ThreadPool,
    /// Makes each batch durable before it is placed.
    sync: Syncer,
    /// Set by the first write that found the target full: every worker
    /// stops at its next batch, folder or mailbox.
    full: std::sync::OnceLock<String>,
}

impl Ctx<'_> {
    /// True (and the restore stops) when `e` says the target is full.
    fn full(&self, e: &std::io::Error) -> bool {
        if is_full(e) {
            let _ = self.full.set(e.to_string());
            true
        } else {
            false
        }
    }
    fn stopped(&self) -> bool {
        self.full.get().is_some()
    }
}

/// Restores the Maildirs at or under `path` of snapshot `snap` into
/// `opts.target` (the Maildir itself when `path` is one, else the spool
/// root), merging into live mailboxes. The snapshot's trees are streamed:
/// mailboxes are found while the first ones are restored, and only the
/// mailboxes being worked on (and a few found ahead) are held.
pub fn restore(
    snap: &Opened,
    key: &Key,
    path: &str,
    opts: &MailRestoreOptions,
    progress: &MailProgress,
) -> Result<MailReport> {
    let start = Instant::now();
    if let Some(n) = &opts.into_folder
        && (n.is_empty() || n.contains('/') || n.starts_with('.') || n == "INBOX")
    {
        return Err(Error::Usage(format!(
            "--into-folder {n:?}: give a plain folder name (not INBOX, no '/', not starting with '.')"
        )));
    }
    let reader = snap.reader(key)?;
    let mut report = MailReport::default();
    for e in &snap.pack_errors {
        report.note("(snapshot)", e);
    }
    // The path must be there before anything is written.
    crate::repo::tree_path(&snap.body, path)?;
    // A spool is walked twice: first every mailbox's newest INBOX
    // messages, then the rest. Each walk reads the trees again and holds
    // only the mailboxes being worked on; nothing is kept in between.
    let passes: &[Pass] = if snap.is_mailbox(&reader, path)? {
        &[Pass::All]
    } else {
        &[Pass::InboxNewest, Pass::Rest]
    };
    let mut found = 0u64;
    let mut walk_errors: Vec<(String, Error)> = Vec::new();
    let mut r = MailReport::default();
    for (i, &pass) in passes.iter().enumerate() {
        let mut found_now = 0u64;
        let mut errors_now = Vec::new();
        let mut walked = Ok(());
        let p = run_boxes(snap, &reader, opts, progress, pass, start, |send| {
            walked = snap.walk_mailboxes(&reader, path, &mut |b| match b {
                Ok(b) => {
                    found_now += 1;
                    match b.load(&reader) {
                        Ok(mut mb) => {
                            keep_folders(&mut mb, &opts.folders);
                            send(mb);
                        }
                        Err(e) => errors_now.push((b.path, e)),
                    }
                }
                Err(pe) => errors_now.push(pe),
            });
        })?;
        walked?;
        found = found.max(found_now);
        // A tree that failed the first walk fails the second: noted once.
        for (path, e) in errors_now {
            if !walk_errors.iter().any(|(p, _)| *p == path) {
                walk_errors.push((path, e));
            }
        }
        if i == 0 {
            r = p;
        } else {
            r.mailboxes = r.mailboxes.max(p.mailboxes);
            r.first_inbox_s = r.first_inbox_s.or(p.first_inbox_s);
            r.all_inboxes_s = p.all_inboxes_s.or(r.all_inboxes_s);
            r.syncs += p.syncs;
            r.bytes_read = p.bytes_read;
            r.merge(p);
        }
        if pass == Pass::InboxNewest && r.full.is_none() {
            r.inbox_newest_s = Some(start.elapsed().as_secs_f64());
        }
        if found == 0 || r.full.is_some() {
            break; // no Maildir: said below; a full target: said below
        }
    }
    if let Some(e) = &r.full {
        r.errors.push(format!(
            "{}: {e}: stopped; the {} messages this run placed are whole and durable, nothing partial is in cur/ or new/ (at most files in tmp/, which Dovecot cleans); free space and run the same command again: it writes only what is missing",
            opts.target.display(),
            r.written
        ));
    }
    for (p, e) in &walk_errors {
        report.note(p, e);
    }
    if found == 0 && walk_errors.is_empty() {
        return Err(Error::Usage(format!(
            "no Maildir (a directory with cur/ and new/) at or under {path:?} in snapshot {}",
            snap.id.short()
        )));
    }
    r.merge(report);
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
}

/// Keeps only the folders `want` names (all when empty).
fn keep_folders(mb: &mut Mailbox, want: &[String]) {
    if want.is_empty() {
        return;
    }
    mb.folders.retain(|f| {
        want.iter()
            .any(|w| *w == f.name || (f.is_inbox() && w.eq_ignore_ascii_case("INBOX")))
    });
}

/// Restores `boxes` (found in `snap`) into `opts.target`, each at its
/// `rel` path, many at once; INBOX first, newest first.
pub fn restore_boxes(
    snap: &Opened,
    reader: &BlobReader,
    boxes: &[Mailbox],
    opts: &MailRestoreOptions,
    progress: &MailProgress,
) -> Result<MailReport> {
    run_boxes(
        snap,
        reader,
        opts,
        progress,
        Pass::All,
        Instant::now(),
        |send| {
            for mb in boxes {
                send(mb.clone());
            }
        },
    )
}

/// Restores the mailboxes `feed` hands over, `opts.parallel` at once:
/// `feed` runs on this thread while workers take the mailboxes in order
/// (neighbours in the snapshot, mostly in the same packs) through a
/// short queue. Times are counted from `start`; the mailbox and message
/// totals are counted in the first walk (`pass` All or InboxNewest),
/// mailboxes done in the last (All or Rest).
fn run_boxes(
    snap: &Opened,
    reader: &BlobReader,
    opts: &MailRestoreOptions,
    progress: &MailProgress,
    pass: Pass,
    start: Instant,
    feed: impl FnOnce(&mut dyn FnMut(Mailbox)),
) -> Result<MailReport> {
    let mut report = MailReport::default();
    let ctx = Ctx {
        reader,
        opts,
        pass,
        progress,
        host: hostname(),
        start,
        first_inbox: Mutex::new((None, None)),
        writers: rayon::ThreadPoolBuilder::new()
            .num_threads(16)
            .build()
            .map_err(|e| Error::Usage(format!("threads: {e}")))?,
        sync: Syncer::default(),
        full: std::sync::OnceLock::new(),
    };
    let workers = opts.parallel.max(1);
    let (send, recv) = std::sync::mpsc::sync_channel::<Mailbox>(workers);
    let recv = Mutex::new(recv);
    let parts = Mutex::new(Vec::new());
    let mut count = 0u64;
    std::thread::scope(|sc| {
        for _ in 0..workers {
            sc.spawn(|| {
                loop {
                    let next = recv.lock().unwrap_or_else(|p| p.into_inner()).recv();
                    let Ok(mb) = next else { break };
                    let r = restore_mailbox(&ctx, &mb);
                    drop(mb);
                    if pass != Pass::InboxNewest {
                        progress.mailboxes_done.fetch_add(1, Ordering::Relaxed);
                    }
                    parts.lock().unwrap_or_else(|p| p.into_inner()).push(r);
                }
            });
        }
        feed(&mut |mb: Mailbox| {
            count += 1;
            if pass != Pass::Rest {
                progress.mailboxes_total.fetch_add(1, Ordering::Relaxed);
                progress
                    .messages_total
                    .fetch_add(mb.messages(), Ordering::Relaxed);
            }
            if ctx.stopped() {
                return; // the target is full: the rest is not tried
            }
            // The workers only stop early by panicking; nothing to do then.
            let _ = send.send(mb);
        });
        progress.found_all.store(true, Ordering::Relaxed);
        drop(send);
    });
    report.mailboxes = count;
    for p in parts.into_inner().unwrap_or_else(|p| p.into_inner()) {
        report.merge(p);
    }
    (report.first_inbox_s, report.all_inboxes_s) =
        *ctx.first_inbox.lock().unwrap_or_else(|p| p.into_inner());
    report.syncs = ctx.sync.calls();
    report.full = ctx.full.into_inner();
    report.bytes_read = snap.bytes_read();
    report.seconds = start.elapsed().as_secs_f64();
    if !report.damaged.is_empty() {
        snap.distrust_index();
    }
    Ok(report)
}

fn restore_mailbox(ctx: &Ctx, mb: &Mailbox) -> MailReport {
    let mut r = MailReport::default();
    let root = if mb.rel.as_os_str().is_empty() {
        ctx.opts.target.clone()
    } else {
        ctx.opts.target.join(&mb.rel)
    };
    // New files belong to whoever owns the live mailbox (as root: the
    // mail user); else to the owner the snapshot recorded.
    let owner = std::fs::metadata(&root)
        .ok()
        .map(|m| (m.uid(), m.gid()))
        .or_else(|| {
            mb.folders
                .first()
                .and_then(|f| f.node.as_ref())
                .map(|n| (n.uid, n.gid))
        });
    for f in &mb.folders {
        if ctx.stopped() {
            break;
        }
        let Some(range) = ctx.pass.range(f) else {
            continue;
        };
        let rel = target_rel(mb, f, ctx.opts.into_folder.as_deref());
        let dir = if rel.is_empty() {
            root.clone()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        // The folder is counted in the walk that starts it, and complete
        // in the walk that reaches its oldest message.
        let complete = range.end == f.msgs.len();
        if range.start == 0 {
            r.folders += 1;
        }
        match restore_folder(ctx, mb, f, range, &dir, owner, &mut r) {
            Err(Error::Io { source, .. }) if ctx.full(&source) => break,
            Err(e) => r.note(&format!("{} {}", mb.path, f.name), &e),
            Ok(()) => {}
        }
        if f.is_inbox() && complete {
            let t = ctx.start.elapsed().as_secs_f64();
            let mut fi = ctx.first_inbox.lock().unwrap_or_else(|p| p.into_inner());
            if fi.0.is_none_or(|x| t < x) {
                fi.0 = Some(t);
            }
            if fi.1.is_none_or(|x| t > x) {
                fi.1 = Some(t);
            }
        }
    }
    r
}

/// A message decided on: its bytes, mtime, and where it goes.
type Pending = (Vec<u8>, filetime::FileTime, PathBuf);

/// Makes the files just written in `tmp/` durable: the shared group sync,
/// else (no syncfs) an fsync of each and of the directory.
fn make_durable(ctx: &Ctx, tmp_dir: &Path, files: &[&Path]) -> std::io::Result<()> {
    if ctx.sync.sync(tmp_dir).is_ok() {
        return Ok(());
    }
    ctx.writers.install(|| {
        use rayon::prelude::*;
        files
            .par_iter()
            .try_for_each(|p| std::fs::File::open(p)?.sync_all())
    })?;
    fsync_dir(tmp_dir)
}

/// Writes `pending` into the folder's `tmp/` in parallel, makes them
/// durable together, then, in order, places each (merge) or stages it
/// (disaster restore). Nothing is placed in `cur/` or `new/` before its
/// bytes are on disk.
fn flush(
    ctx: &Ctx,
    dir: &Path,
    owner: Option<(u32, u32)>,
    keep_uids: bool,
    pending: &mut Vec<Pending>,
    staged: &mut Vec<(PathBuf, PathBuf)>,
    r: &mut MailReport,
) {
    if pending.is_empty() {
        return;
    }
    let tmp_dir = dir.join("tmp");
    let mut written: Vec<std::io::Result<PathBuf>> = ctx.writers.install(|| {
        use rayon::prelude::*;
        pending
            .par_iter()
            .map(|(data, mtime, _)| write_tmp(&tmp_dir, &ctx.host, data, *mtime, owner, false))
            .collect()
    });
    let done: Vec<&Path> = written
        .iter()
        .filter_map(|w| w.as_ref().ok().map(PathBuf::as_path))
        .collect();
    if let Err(e) = make_durable(ctx, &tmp_dir, &done) {
        // Not durable: nothing of this batch is placed; the next run
        // writes it again.
        for w in &mut written {
            if let Ok(p) = w {
                let _ = std::fs::remove_file(&*p);
            }
            *w = Err(std::io::Error::new(e.kind(), e.to_string()));
        }
    }
    for ((data, _, to), tmp) in pending.drain(..).zip(written) {
        // Not written: counted off; a full target is said once, at the end.
        let fail = |r: &mut MailReport, at: &Path, e: std::io::Error| {
            r.written -= 1;
            r.bytes_written -= data.len() as u64;
            if !ctx.full(&e) {
                r.errors.push(format!("{}: {e}", at.display()));
            }
        };
        match tmp {
            Err(e) => fail(r, &tmp_dir, e),
            Ok(tmp) if keep_uids => staged.push((tmp, to)),
            Ok(tmp) => {
                if let Err(e) = place(&tmp, &to) {
                    fail(r, &to, e);
                }
            }
        }
    }
}

/// Restores the messages `range` of folder `f` (sorted newest first)
/// into `dir`. A disaster restore (no live uidlist) places the snapshot's
/// control files only with the part that ends the folder: until then the
/// messages already placed keep their snapshot names and no uidlist
/// names messages not there yet (Dovecot would expunge them, then
/// renumber them as "reappeared"). If Dovecot makes its own uidlist in
/// between, the rest is merged under fresh names like any live folder.
fn restore_folder(
    ctx: &Ctx,
    mb: &Mailbox,
    f: &Folder,
    range: std::ops::Range<usize>,
    dir: &Path,
    owner: Option<(u32, u32)>,
    r: &mut MailReport,
) -> Result<()> {
    let ends_folder = range.end == f.msgs.len();
    let reader = ctx.reader;
    let dry = ctx.opts.dry_run;
    let ioe = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| io_err(&p, e)
    };
    // A mail user could point a folder at another place (as root, a
    // restore would then write there): nothing below TARGET is followed
    // through a symbolic link.
    let mut below = ctx.opts.target.clone();
    let rest = dir.strip_prefix(&ctx.opts.target).unwrap_or(Path::new(""));
    let subs = ["cur", "new", "tmp"].map(|s| dir.join(s));
    let steps = rest
        .components()
        .map(|c| {
            below.push(c);
            below.clone()
        })
        .collect::<Vec<_>>();
    for p in steps.iter().chain(subs.iter()) {
        if std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(io_err(
                p,
                std::io::Error::other("a symbolic link in a live mailbox; not followed"),
            ));
        }
    }
    if !dry {
        let made = make_dir(dir, owner).map_err(ioe(dir))?;
        for sub in ["cur", "new", "tmp"] {
            make_dir(&dir.join(sub), owner).map_err(ioe(dir))?;
        }
        // A new Maildir++ folder is marked as one, as Dovecot does (with
        // the snapshot's own marker when a disaster restore brings it).
        let plusplus = mb.layout == Layout::MaildirPlusPlus
            && dir
                .file_name()
                .is_some_and(|n| n.as_bytes().starts_with(b"."));
        let brought =
            ctx.opts.into_folder.is_none() && f.control.iter().any(|c| c.name == b"maildirfolder");
        if made && plusplus && !brought {
            let mf = dir.join("maildirfolder");
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&mf)
                .map_err(ioe(&mf))?;
        }
    }
    let mut live = if dir.is_dir() {
        Live::scan(dir).map_err(ioe(dir))?
    } else {
        Live {
            names: HashSet::new(),
            by_size: HashMap::new(),
            ids: HashMap::new(),
            msgids: None,
            files: Vec::new(),
            has_uidlist: false,
        }
    };
    // A folder without a live uidlist is a disaster restore: its control
    // files come back byte for byte and its messages keep their names, so
    // UIDVALIDITY and every UID survive.
    let keep_uids = ctx.opts.into_folder.is_none() && !live.has_uidlist;

    // Keywords: the snapshot's names, and the live folder's letters for
    // them. A live folder without dovecot-keywords gets the snapshot's
    // (a new file; an existing one is never rewritten).
    let snap_kw = match f.control.iter().find(|n| n.name == b"dovecot-keywords") {
        Some(n) => {
            let b = read_file(reader, n)?;
            match maildir::parse_keywords(&b) {
                Ok(k) => Some((b, k)),
                Err(e) => {
                    r.errors
                        .push(format!("{}/dovecot-keywords in the snapshot: {e}", mb.path));
                    None
                }
            }
        }
        None => None,
    };
    let kw_path = dir.join("dovecot-keywords");
    let mut live_kw = read_small(&kw_path, KEYWORDS_MAX).map_err(ioe(&kw_path))?;
    if live_kw.is_none()
        && let Some((bytes, _)) = &snap_kw
    {
        if dry {
            live_kw = Some(bytes.clone());
        } else {
            let now = filetime::FileTime::now();
            let tmp = write_tmp(&dir.join("tmp"), &ctx.host, bytes, now, owner, true)
                .map_err(ioe(&dir.join("tmp")))?;
            match place(&tmp, &kw_path) {
                Ok(()) => r.control_files += 1,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err(&kw_path, e)),
            }
            live_kw = read_small(&kw_path, KEYWORDS_MAX).map_err(ioe(&kw_path))?;
        }
    }
    let live_kw = match live_kw.map(|b| maildir::parse_keywords(&b)) {
        Some(Ok(k)) => k,
        Some(Err(e)) => {
            r.errors.push(format!("{}: {e}", kw_path.display()));
            Vec::new()
        }
        None => Vec::new(),
    };
    // Snapshot letter → live letter (None: the live folder lacks the name).
    let mut map: [Option<u8>; 26] = [None; 26];
    let mut names: [Option<String>; 26] = Default::default();
    if let Some((_, k)) = &snap_kw {
        for (i, n) in k.iter().enumerate().take(26) {
            if let Some(n) = n {
                map[i] = maildir::letter_of(&live_kw, n);
                names[i] = Some(n.clone());
            }
        }
    }

    let mut msgs: Vec<&Msg> = f.msgs.iter().collect();
    // Stable: the same snapshot folder sorts the same way in every walk,
    // so the walks share out its messages exactly.
    msgs.sort_by_key(|m| std::cmp::Reverse(m.mtime_ns()));
    let msgs = msgs.get(range).unwrap_or_default().to_vec();
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    // What the live folder holds by name needs no reading.
    let mut todo: Vec<&Msg> = Vec::with_capacity(msgs.len());
    for m in msgs {
        if live.names.contains(MaildirName::parse(&m.name).base) {
            r.messages += 1;
            r.skipped_same_name += 1;
            ctx.progress.messages_done.fetch_add(1, Ordering::Relaxed);
        } else {
            todo.push(m);
        }
    }
    let mut batches = Batches::new(reader, &todo);
    while !ctx.stopped()
        && let Some(batch) = batches.next_batch()
    {
        for (m, data) in batch {
            r.messages += 1;
            ctx.progress.messages_done.fetch_add(1, Ordering::Relaxed);
            let parsed = MaildirName::parse(&m.name);
            let what = || format!("{}/{}", mb.path, String::from_utf8_lossy(&m.name));
            let data = match data {
                Ok(d) => d,
                Err(e) => {
                    r.note(&what(), &e);
                    continue;
                }
            };
            ctx.progress
                .bytes_done
                .fetch_add(data.len() as u64, Ordering::Relaxed);
            if live.holds(reader, &data) {
                r.skipped_same_content += 1;
                continue;
            }
            if let Some(id) = maildir::message_id(&data)
                && live.has_message_id(&id)
            {
                r.same_message_id.push(format!(
                    "{} {}",
                    dir.display(),
                    String::from_utf8_lossy(&id)
                ));
            }
            // Flags, with keyword letters mapped by name.
            let mut info = Vec::new();
            if let Some(o) = parsed.other_info {
                info.push(b':');
                info.extend_from_slice(o);
            } else if !m.in_new || !parsed.flags.is_empty() || !parsed.keywords.is_empty() {
                let mut letters: Vec<u8> = parsed.flags.clone();
                for k in &parsed.keywords {
                    let i = (k - b'a') as usize;
                    match map[i] {
                        Some(l) => letters.push(l),
                        None => {
                            let n = names[i]
                                .clone()
                                .unwrap_or_else(|| format!("(unnamed letter {})", *k as char));
                            *r.keywords_dropped.entry(n).or_default() += 1;
                        }
                    }
                }
                letters.sort_unstable();
                letters.dedup();
                info.extend_from_slice(b":2,");
                info.extend_from_slice(&letters);
            }
            let mut name = if keep_uids {
                parsed.base.to_vec()
            } else {
                let mut b = fresh_base(&ctx.host).into_bytes();
                b.extend_from_slice(format!(",S={}", data.len()).as_bytes());
                if let Some(w) = parsed.field(b'W') {
                    b.extend_from_slice(format!(",W={w}").as_bytes());
                }
                b
            };
            name.extend_from_slice(&info);
            r.written += 1;
            r.bytes_written += data.len() as u64;
            if dry {
                continue;
            }
            let mtime = filetime::FileTime::from_unix_time(m.node.mtime_s, m.node.mtime_ns);
            let to = dir
                .join(if m.in_new { "new" } else { "cur" })
                .join(OsStr::from_bytes(&name));
            pending.push((data, mtime, to));
        }
        // One batch read, written and made durable together.
        flush(ctx, dir, owner, keep_uids, &mut pending, &mut staged, r);
    }
    if ctx.stopped() {
        // The target is full: what is staged is not placed (a disaster
        // folder's uidlist could not follow it); the next run writes it.
        for (tmp, _) in staged {
            r.written -= 1;
            if let Ok(m) = std::fs::symlink_metadata(&tmp) {
                r.bytes_written = r.bytes_written.saturating_sub(m.len());
            }
            let _ = std::fs::remove_file(tmp);
        }
        return Ok(());
    }
    if !keep_uids && !dry && f.is_inbox() && ctx.opts.into_folder.is_none() {
        // A live mailbox without `subscriptions` gets the snapshot's (a
        // new file; an existing one is never rewritten).
        if let Some(c) = f.control.iter().find(|c| c.name == b"subscriptions") {
            let to = dir.join("subscriptions");
            if std::fs::symlink_metadata(&to).is_err() {
                match read_file(reader, c) {
                    Ok(data) => {
                        let mtime = filetime::FileTime::from_unix_time(c.mtime_s, c.mtime_ns);
                        let tmp_dir = dir.join("tmp");
                        let tmp = write_tmp(&tmp_dir, &ctx.host, &data, mtime, owner, false)
                            .map_err(ioe(dir))?;
                        if let Err(e) = make_durable(ctx, &tmp_dir, &[&tmp]) {
                            let _ = std::fs::remove_file(&tmp);
                            return Err(io_err(&tmp_dir, e));
                        }
                        match place(&tmp, &to) {
                            Ok(()) => r.control_files += 1,
                            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                            Err(e) => r.errors.push(format!("{}: {e}", to.display())),
                        }
                    }
                    Err(e) => r.note(&to.display().to_string(), &e),
                }
            }
        }
    }
    if keep_uids && !dry && !ends_folder {
        // More of this folder comes in a later walk: its messages go in
        // now under their own names, the control files with the last.
        for (tmp, to) in staged.drain(..) {
            if let Err(e) = place(&tmp, &to) {
                r.written -= 1;
                if !ctx.full(&e) {
                    r.errors.push(format!("{}: {e}", to.display()));
                }
            }
        }
    }
    if keep_uids && !dry && ends_folder {
        // Control files first, then the staged messages: Dovecot sees the
        // uidlist and the files it names together, as close as renames go.
        // The control files are made durable together, like a batch.
        let tmp_dir = dir.join("tmp");
        let mut ctl: Vec<(PathBuf, PathBuf, bool)> = Vec::new();
        for c in &f.control {
            let to = dir.join(OsStr::from_bytes(&c.name));
            if std::fs::symlink_metadata(&to).is_ok() {
                continue; // live: never replaced
            }
            let data = match read_file(reader, c) {
                Ok(d) => d,
                Err(e) => {
                    r.note(&to.display().to_string(), &e);
                    continue;
                }
            };
            let mtime = filetime::FileTime::from_unix_time(c.mtime_s, c.mtime_ns);
            match write_tmp(&tmp_dir, &ctx.host, &data, mtime, owner, false) {
                Ok(tmp) => ctl.push((tmp, to, c.name == b"dovecot-uidlist")),
                Err(e) => {
                    for (t, _, _) in &ctl {
                        let _ = std::fs::remove_file(t);
                    }
                    return Err(io_err(&tmp_dir, e));
                }
            }
        }
        let tmps: Vec<&Path> = ctl.iter().map(|(t, _, _)| t.as_path()).collect();
        if let Err(e) = make_durable(ctx, &tmp_dir, &tmps) {
            for (t, _, _) in &ctl {
                let _ = std::fs::remove_file(t);
            }
            return Err(io_err(&tmp_dir, e));
        }
        for (tmp, to, uidlist) in ctl {
            match place(&tmp, &to) {
                Ok(()) => {
                    r.control_files += 1;
                    if uidlist {
                        r.folders_uids_kept += 1;
                    }
                }
                // Dovecot made one meanwhile: it numbers the messages.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => r.errors.push(format!("{}: {e}", to.display())),
            }
        }
        for (tmp, to) in staged {
            if let Err(e) = place(&tmp, &to) {
                r.written -= 1;
                if !ctx.full(&e) {
                    r.errors.push(format!("{}: {e}", to.display()));
                }
            }
        }
    }
    if !dry && ctx.sync.sync(dir).is_err() {
        // The folder's new directory entries, durable before it counts
        // as done.
        for sub in ["cur", "new", "tmp"] {
            fsync_dir(&dir.join(sub)).map_err(ioe(dir))?;
        }
        fsync_dir(dir).map_err(ioe(dir))?;
    }
    Ok(())
}

// -------------------------------------------------------------- export

#[derive(Debug, Default)]
pub struct ExportReport {
    pub files: Vec<PathBuf>,
    pub messages: u64,
    pub bytes: u64,
    pub damaged: Vec<String>,
    pub errors: Vec<String>,
    pub bytes_read: u64,
}

/// Writes one mboxrd file per folder: `OUT/<mailbox>/<folder>.mbox`,
/// oldest message first. Mailboxes are streamed from the snapshot (one
/// held at a time) and each file is written as its messages are read, to
/// a temp name, fsynced and linked into place; an existing file is never
/// replaced.
pub fn export(snap: &Opened, key: &Key, path: &str, out: &Path) -> Result<ExportReport> {
    let reader = snap.reader(key)?;
    let mut rep = ExportReport::default();
    for e in &snap.pack_errors {
        rep.damaged.push(format!("(snapshot): {e}"));
    }
    let mut found = 0u64;
    let mut fatal: Option<Error> = None;
    snap.walk_mailboxes(&reader, path, &mut |b| {
        if fatal.is_some() {
            return;
        }
        let b = match b {
            Ok(b) => b,
            Err((p, e)) => return rep.damaged.push(format!("{p}: {e}")),
        };
        found += 1;
        let mb = match b.load(&reader) {
            Ok(m) => m,
            Err(e) => return rep.damaged.push(format!("{}: {e}", b.path)),
        };
        if let Err(e) = export_mailbox(&reader, &mb, out, &mut rep) {
            fatal = Some(e);
        }
    })?;
    if let Some(e) = fatal {
        return Err(e);
    }
    if found == 0 && rep.damaged.is_empty() {
        return Err(Error::Usage(format!("no Maildir at or under {path:?}")));
    }
    rep.bytes_read = snap.bytes_read();
    Ok(rep)
}

fn export_mailbox(
    reader: &BlobReader,
    mb: &Mailbox,
    out: &Path,
    rep: &mut ExportReport,
) -> Result<()> {
    let dir = out.join(&mb.rel);
    make_dir(&dir, None).map_err(|e| io_err(&dir, e))?;
    for f in &mb.folders {
        let file = dir.join(format!("{}.mbox", f.name));
        if let Some(p) = file.parent() {
            make_dir(p, None).map_err(|e| io_err(p, e))?;
        }
        let mut msgs: Vec<&Msg> = f.msgs.iter().collect();
        msgs.sort_by_key(|m| (m.mtime_ns(), m.name.clone()));
        let parent = file.parent().unwrap_or(out).to_path_buf();
        let tmp = parent.join(format!(".{}.tmp", fresh_base("export")));
        let mut n = 0;
        let mut bytes = 0u64;
        let w = (|| -> std::io::Result<()> {
            let h = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            let mut h = std::io::BufWriter::with_capacity(1 << 20, h);
            let mut batches = Batches::new(reader, &msgs);
            let mut buf = Vec::new();
            while let Some(batch) = batches.next_batch() {
                for (m, data) in batch {
                    match data {
                        Ok(d) => {
                            buf.clear();
                            mbox::write_message(&mut buf, &d, m.node.mtime_s);
                            h.write_all(&buf)?;
                            bytes += buf.len() as u64;
                            n += 1;
                        }
                        Err(e) => {
                            let line =
                                format!("{}/{}: {e}", mb.path, String::from_utf8_lossy(&m.name));
                            if is_damage(&e) {
                                rep.damaged.push(line)
                            } else {
                                rep.errors.push(line)
                            }
                        }
                    }
                }
            }
            let h = h.into_inner().map_err(|e| e.into_error())?;
            h.sync_all()?;
            place(&tmp, &file)?;
            fsync_dir(&parent)
        })();
        match w {
            Ok(()) => {
                rep.files.push(file);
                rep.messages += n;
                rep.bytes += bytes;
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                rep.errors.push(format!("{}: {e}", file.display()));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder(rel: &[u8], n: usize) -> Folder {
        let msgs = (0..n)
            .map(|i| Msg {
                name: format!("{i}.M1P1.h").into_bytes(),
                node: Node {
                    name: format!("{i}.M1P1.h").into_bytes(),
                    mode: 0o100600,
                    uid: 0,
                    gid: 0,
                    mtime_s: i as i64,
                    mtime_ns: 0,
                    kind: NodeKind::File {
                        size: 1,
                        chunks: Vec::new(),
                    },
                },
                in_new: false,
            })
            .collect();
        Folder {
            name: "x".into(),
            rel: rel.to_vec(),
            msgs,
            control: Vec::new(),
            node: None,
        }
    }

    /// The two walks over a spool share out every folder exactly: each
    /// message in one of them, INBOX's newest 100 in the first.
    #[test]
    fn passes_share_out_each_folder_once() {
        for n in [0, 1, 99, 100, 101, 250] {
            for rel in [&b""[..], b".Sent"] {
                let f = folder(rel, n);
                let all = Pass::All.range(&f).unwrap();
                assert_eq!(all, 0..n);
                let first = Pass::InboxNewest.range(&f);
                let rest = Pass::Rest.range(&f);
                let mut seen = vec![0u8; n];
                for r in [first.clone(), rest.clone()].into_iter().flatten() {
                    for i in r {
                        seen[i] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "n {n} rel {rel:?}");
                if f.is_inbox() {
                    assert_eq!(first, Some(0..n.min(FIRST_PASS)));
                    // An INBOX the first walk finished is not visited again.
                    assert_eq!(rest.is_none(), n <= FIRST_PASS);
                } else {
                    assert_eq!(first, None);
                }
            }
        }
    }
}
