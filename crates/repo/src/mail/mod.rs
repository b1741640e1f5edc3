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

use crate::index::{BlobReader, Index};
use crate::keys::Key;
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

/// Every Maildir at or under `tree` (whose tree path is `path`). A tree
/// that cannot be read is returned as an error beside the others.
fn find(
    reader: &BlobReader,
    tree: &Tree,
    path: &str,
    rel: PathBuf,
    node: Option<Node>,
    out: &mut Vec<Mailbox>,
    errors: &mut Vec<(String, Error)>,
) {
    if is_maildir(tree) {
        match mailbox_of(reader, tree, path.to_string(), rel, node) {
            Ok(m) => out.push(m),
            Err(e) => errors.push((path.to_string(), e)),
        }
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
            Ok(t) => find(
                reader,
                &t,
                &p,
                rel.join(OsStr::from_bytes(&n.name)),
                Some(n.clone()),
                out,
                errors,
            ),
            Err(e) => errors.push((p, e)),
        }
    }
}

/// Mailboxes found, and the trees that could not be read (path, error).
pub type Found = (Vec<Mailbox>, Vec<(String, Error)>);

/// A snapshot opened for mail commands: the reader counts what it reads.
pub struct Opened {
    pub id: ObjectId,
    pub body: SnapshotBody,
    backend: Counting,
    index: Index,
    /// Packs whose tables could not be read (damage).
    pub pack_errors: Vec<Error>,
}

impl Opened {
    pub fn open(repo: &Repository, key: &Key, id: &ObjectId) -> Result<Opened> {
        let (_, secret) = key.require_restore("reading mail")?;
        let snap = repo.load_snapshot(id)?;
        let body = repo.open_body(id, &snap, secret)?;
        let backend = Counting::new(repo.backend.clone());
        let (index, pack_errors) = Index::load(&backend, &snap.header.packs);
        Ok(Opened {
            id: *id,
            body,
            backend,
            index,
            pack_errors,
        })
    }

    pub fn bytes_read(&self) -> u64 {
        self.backend.bytes_read()
    }

    pub fn reader<'a>(&'a self, key: &'a Key) -> Result<BlobReader<'a>> {
        let (id_key, secret) = key.require_restore("reading mail")?;
        Ok(BlobReader::new(&self.backend, &self.index, id_key, secret))
    }

    /// The Maildirs at or under `path` (either form, see
    /// [`crate::repo::tree_path`]; empty for the whole snapshot), reading
    /// only the trees on the way there and under it.
    pub fn mailboxes(&self, reader: &BlobReader, path: &str) -> Result<Found> {
        let parts = crate::repo::tree_path(&self.body, path)?;
        let mut tree = reader.tree(&self.body.root)?;
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
            tree = reader.tree(subtree)?;
            node = Some(n);
        }
        let mut out = Vec::new();
        let mut errors = Vec::new();
        find(
            reader,
            &tree,
            &parts.join("/"),
            PathBuf::new(),
            node,
            &mut out,
            &mut errors,
        );
        Ok((out, errors))
    }
}

/// A file's bytes from the snapshot, every chunk checked against its id.
pub fn read_file(reader: &BlobReader, node: &Node) -> Result<Vec<u8>> {
    let NodeKind::File { size, chunks } = &node.kind else {
        return Err(Error::Usage("not a file".into()));
    };
    let mut v = Vec::with_capacity((*size).min(64 << 20) as usize);
    for c in chunks {
        v.extend_from_slice(&reader.read(c)?);
    }
    if v.len() as u64 != *size {
        return Err(Error::Corrupt(format!(
            "chunks add up to {} bytes, the snapshot says {size}",
            v.len()
        )));
    }
    Ok(v)
}

/// Whole packs recently fetched from a backend that prefers whole objects
/// (the vault), shared by the threads of one command: neighbouring
/// mailboxes, worked on at the same time, mostly share packs.
pub struct PackLru {
    cap: usize,
    packs: Mutex<std::collections::VecDeque<(u32, Arc<Vec<u8>>)>>,
}

impl PackLru {
    pub fn new(cap: usize) -> PackLru {
        PackLru {
            cap: cap.max(1),
            packs: Mutex::new(Default::default()),
        }
    }

    /// A whole pack (checked against its id by the backend), from here or
    /// fetched.
    fn get(&self, reader: &BlobReader, pack: u32) -> Result<Arc<Vec<u8>>> {
        {
            let mut c = self.packs.lock().unwrap();
            if let Some(i) = c.iter().position(|(p, _)| *p == pack) {
                let hit = c.remove(i).unwrap();
                let bytes = hit.1.clone();
                c.push_back(hit);
                return Ok(bytes);
            }
        }
        let bytes = Arc::new(reader.whole_pack(pack)?);
        let mut c = self.packs.lock().unwrap();
        if c.len() >= self.cap {
            c.pop_front();
        }
        c.push_back((pack, bytes.clone()));
        Ok(bytes)
    }
}

/// Reads several files at once: on a backend that prefers whole objects
/// (the vault) each pack they need is fetched once and every blob cut from
/// it; elsewhere blob by blob with range reads. Every blob is checked
/// against its keyed id either way.
pub fn read_many(reader: &BlobReader, packs: &PackLru, nodes: &[&Node]) -> Vec<Result<Vec<u8>>> {
    if !reader.backend.prefers_whole_objects() {
        return nodes.iter().map(|n| read_file(reader, n)).collect();
    }
    let mut by_pack: BTreeMap<u32, Vec<BlobId>> = BTreeMap::new();
    for n in nodes {
        if let NodeKind::File { chunks, .. } = &n.kind {
            for c in chunks {
                if let Some(loc) = reader.index.blobs.get(c) {
                    by_pack.entry(loc.pack).or_default().push(*c);
                }
            }
        }
    }
    let mut plain: HashMap<BlobId, Vec<u8>> = HashMap::new();
    for (pack, mut ids) in by_pack {
        ids.sort_unstable();
        ids.dedup();
        // A pack that fails is left out: the file is then read on its own
        // below, which reports the error properly.
        let Ok(bytes) = packs.get(reader, pack) else {
            continue;
        };
        for id in ids {
            let loc = reader.index.blobs[&id];
            if let Some(sealed) = loc.entry.sealed(&bytes)
                && let Ok(p) = reader.open(&loc, sealed)
            {
                plain.insert(id, p);
            }
        }
    }
    nodes
        .iter()
        .map(|n| {
            let NodeKind::File { size, chunks } = &n.kind else {
                return read_file(reader, n);
            };
            let mut v = Vec::with_capacity((*size).min(64 << 20) as usize);
            for c in chunks {
                match plain.get(c) {
                    Some(p) => v.extend_from_slice(p),
                    None => return read_file(reader, n),
                }
            }
            if v.len() as u64 != *size {
                return read_file(reader, n);
            }
            Ok(v)
        })
        .collect()
}

/// The largest batch of messages read together (bytes, messages): the
/// order stays newest first at this granularity.
const BATCH_BYTES: u64 = 32 << 20;
const BATCH_MSGS: usize = 1024;

/// Messages in order, read a batch at a time with [`read_many`].
struct Batches<'a, 'r> {
    reader: &'r BlobReader<'r>,
    packs: &'r PackLru,
    msgs: &'a [&'a Msg],
    next: usize,
    ready: std::collections::VecDeque<(&'a Msg, Result<Vec<u8>>)>,
}

impl<'a, 'r> Batches<'a, 'r> {
    fn new(reader: &'r BlobReader<'r>, packs: &'r PackLru, msgs: &'a [&'a Msg]) -> Self {
        Batches {
            reader,
            packs,
            msgs,
            next: 0,
            ready: Default::default(),
        }
    }

    fn next_msg(&mut self) -> Option<(&'a Msg, Result<Vec<u8>>)> {
        if self.ready.is_empty() && self.next < self.msgs.len() {
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
            let data = read_many(self.reader, self.packs, &nodes);
            self.ready.extend(batch.iter().copied().zip(data));
        }
        self.ready.pop_front()
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
    pub seconds: f64,
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
    }
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
/// exclusively, mtime set, owner set where permitted, fsynced.
fn write_tmp(
    tmp_dir: &Path,
    host: &str,
    data: &[u8],
    mtime: filetime::FileTime,
    owner: Option<(u32, u32)>,
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
        f.sync_all()
    })();
    if let Err(e) = r {
        let _ = std::fs::remove_file(&p);
        return Err(e);
    }
    Ok(p)
}

/// Moves our own `tmp` file to `to`, never replacing anything there (a
/// hard link, then the tmp name removed). `AlreadyExists` when `to` is
/// taken; the tmp file is removed either way.
fn place(tmp: &Path, to: &Path) -> std::io::Result<()> {
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

struct Ctx<'a> {
    reader: &'a BlobReader<'a>,
    opts: &'a MailRestoreOptions,
    progress: &'a MailProgress,
    host: String,
    start: Instant,
    /// Seconds until the first and the last INBOX were complete.
    first_inbox: Mutex<(Option<f64>, Option<f64>)>,
    packs: PackLru,
    /// Threads that write (and fsync) messages.
    writers: rayon::ThreadPool,
}

/// Restores the Maildirs at or under `path` of snapshot `snap` into
/// `opts.target` (the Maildir itself when `path` is one, else the spool
/// root), merging into live mailboxes.
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
    let (mut boxes, errors) = snap.mailboxes(&reader, path)?;
    for (p, e) in &errors {
        report.note(p, e);
    }
    if boxes.is_empty() && errors.is_empty() {
        return Err(Error::Usage(format!(
            "no Maildir (a directory with cur/ and new/) at or under {path:?} in snapshot {}",
            snap.id.short()
        )));
    }
    if !opts.folders.is_empty() {
        for mb in &mut boxes {
            mb.folders.retain(|f| {
                opts.folders
                    .iter()
                    .any(|w| *w == f.name || (f.is_inbox() && w.eq_ignore_ascii_case("INBOX")))
            });
        }
    }
    let mut r = restore_boxes(snap, &reader, &boxes, opts, progress)?;
    r.merge(report);
    r.seconds = start.elapsed().as_secs_f64();
    Ok(r)
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
    let start = Instant::now();
    let mut report = MailReport::default();
    progress
        .mailboxes_total
        .store(boxes.len() as u64, Ordering::Relaxed);
    progress
        .messages_total
        .store(boxes.iter().map(Mailbox::messages).sum(), Ordering::Relaxed);
    report.mailboxes = boxes.len() as u64;
    let ctx = Ctx {
        reader,
        opts,
        progress,
        host: hostname(),
        start,
        first_inbox: Mutex::new((None, None)),
        packs: PackLru::new((2 * opts.parallel.max(1) + 2).min(24)),
        writers: rayon::ThreadPoolBuilder::new()
            .num_threads(16)
            .build()
            .map_err(|e| Error::Usage(format!("threads: {e}")))?,
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.parallel.max(1))
        .build()
        .map_err(|e| Error::Usage(format!("threads: {e}")))?;
    // Workers take mailboxes in order, so those worked on at once are
    // neighbours in the snapshot (and mostly in the same packs).
    let next = AtomicU64::new(0);
    let parts = Mutex::new(Vec::new());
    pool.scope(|sc| {
        for _ in 0..opts.parallel.max(1) {
            sc.spawn(|_| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(mb) = boxes.get(i) else { break };
                    let r = restore_mailbox(&ctx, mb);
                    progress.mailboxes_done.fetch_add(1, Ordering::Relaxed);
                    parts.lock().unwrap().push(r);
                }
            });
        }
    });
    for p in parts.into_inner().unwrap() {
        report.merge(p);
    }
    (report.first_inbox_s, report.all_inboxes_s) = *ctx.first_inbox.lock().unwrap();
    report.bytes_read = snap.bytes_read();
    report.seconds = start.elapsed().as_secs_f64();
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
        let rel = target_rel(mb, f, ctx.opts.into_folder.as_deref());
        let dir = if rel.is_empty() {
            root.clone()
        } else {
            root.join(OsStr::from_bytes(&rel))
        };
        if let Err(e) = restore_folder(ctx, mb, f, &dir, owner, &mut r) {
            r.note(&format!("{} {}", mb.path, f.name), &e);
        }
        r.folders += 1;
        if f.is_inbox() {
            let t = ctx.start.elapsed().as_secs_f64();
            let mut fi = ctx.first_inbox.lock().unwrap();
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

/// Messages written to `tmp/` together, in parallel: an fsync waits for
/// the disk, and many at once share its commits.
const WRITE_BATCH: usize = 64;

/// Writes `pending` into the folder's `tmp/` in parallel (each fsynced),
/// then, in order, places each (merge) or stages it (disaster restore).
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
    let written: Vec<std::io::Result<PathBuf>> = ctx.writers.install(|| {
        use rayon::prelude::*;
        pending
            .par_iter()
            .map(|(data, mtime, _)| write_tmp(&tmp_dir, &ctx.host, data, *mtime, owner))
            .collect()
    });
    for ((data, _, to), tmp) in pending.drain(..).zip(written) {
        let fail = |r: &mut MailReport, what: String| {
            r.written -= 1;
            r.bytes_written -= data.len() as u64;
            r.errors.push(what);
        };
        match tmp {
            Err(e) => fail(r, format!("{}: {e}", tmp_dir.display())),
            Ok(tmp) if keep_uids => staged.push((tmp, to)),
            Ok(tmp) => {
                if let Err(e) = place(&tmp, &to) {
                    fail(r, format!("{}: {e}", to.display()));
                }
            }
        }
    }
}

fn restore_folder(
    ctx: &Ctx,
    mb: &Mailbox,
    f: &Folder,
    dir: &Path,
    owner: Option<(u32, u32)>,
    r: &mut MailReport,
) -> Result<()> {
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
            let tmp = write_tmp(&dir.join("tmp"), &ctx.host, bytes, now, owner)
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
    msgs.sort_by_key(|m| std::cmp::Reverse(m.mtime_ns()));
    let mut staged: Vec<(PathBuf, PathBuf)> = Vec::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut pending_bytes = 0usize;
    let mut since_sync = 0usize;
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
    let mut batches = Batches::new(reader, &ctx.packs, &todo);
    while let Some((m, data)) = batches.next_msg() {
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
        pending_bytes += data.len();
        pending.push((data, mtime, to));
        if pending.len() >= WRITE_BATCH || pending_bytes >= BATCH_BYTES as usize {
            pending_bytes = 0;
            flush(ctx, dir, owner, keep_uids, &mut pending, &mut staged, r);
            since_sync += WRITE_BATCH;
            if since_sync >= 256 {
                since_sync = 0;
                for sub in ["cur", "new"] {
                    fsync_dir(&dir.join(sub)).map_err(ioe(dir))?;
                }
            }
        }
    }
    flush(ctx, dir, owner, keep_uids, &mut pending, &mut staged, r);
    if !keep_uids && !dry && f.is_inbox() && ctx.opts.into_folder.is_none() {
        // A live mailbox without `subscriptions` gets the snapshot's (a
        // new file; an existing one is never rewritten).
        if let Some(c) = f.control.iter().find(|c| c.name == b"subscriptions") {
            let to = dir.join("subscriptions");
            if std::fs::symlink_metadata(&to).is_err() {
                match read_file(reader, c) {
                    Ok(data) => {
                        let mtime = filetime::FileTime::from_unix_time(c.mtime_s, c.mtime_ns);
                        let tmp = write_tmp(&dir.join("tmp"), &ctx.host, &data, mtime, owner)
                            .map_err(ioe(dir))?;
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
    if keep_uids && !dry {
        // Control files first, then the staged messages: Dovecot sees the
        // uidlist and the files it names together, as close as renames go.
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
            let tmp =
                write_tmp(&dir.join("tmp"), &ctx.host, &data, mtime, owner).map_err(ioe(dir))?;
            match place(&tmp, &to) {
                Ok(()) => {
                    r.control_files += 1;
                    if c.name == b"dovecot-uidlist" {
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
                r.errors.push(format!("{}: {e}", to.display()));
            }
        }
    }
    if !dry {
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
/// oldest message first. Each file is written to a temp name, fsynced and
/// linked into place; an existing file is never replaced.
pub fn export(snap: &Opened, key: &Key, path: &str, out: &Path) -> Result<ExportReport> {
    let reader = snap.reader(key)?;
    let mut rep = ExportReport::default();
    for e in &snap.pack_errors {
        rep.damaged.push(format!("(snapshot): {e}"));
    }
    let (boxes, errors) = snap.mailboxes(&reader, path)?;
    for (p, e) in errors {
        rep.damaged.push(format!("{p}: {e}"));
    }
    let packs = PackLru::new(4);
    if boxes.is_empty() && rep.damaged.is_empty() {
        return Err(Error::Usage(format!("no Maildir at or under {path:?}")));
    }
    for mb in &boxes {
        let dir = out.join(&mb.rel);
        make_dir(&dir, None).map_err(|e| io_err(&dir, e))?;
        for f in &mb.folders {
            let file = dir.join(format!("{}.mbox", f.name));
            if let Some(p) = file.parent() {
                make_dir(p, None).map_err(|e| io_err(p, e))?;
            }
            let mut msgs: Vec<&Msg> = f.msgs.iter().collect();
            msgs.sort_by_key(|m| (m.mtime_ns(), m.name.clone()));
            let mut buf = Vec::new();
            let mut n = 0;
            let mut batches = Batches::new(&reader, &packs, &msgs);
            while let Some((m, data)) = batches.next_msg() {
                match data {
                    Ok(d) => {
                        mbox::write_message(&mut buf, &d, m.node.mtime_s);
                        n += 1;
                    }
                    Err(e) => {
                        let line = format!("{}/{}: {e}", mb.path, String::from_utf8_lossy(&m.name));
                        if is_damage(&e) {
                            rep.damaged.push(line)
                        } else {
                            rep.errors.push(line)
                        }
                    }
                }
            }
            let parent = file.parent().unwrap_or(out).to_path_buf();
            let tmp = parent.join(format!(".{}.tmp", fresh_base("export")));
            let w = (|| {
                let mut h = OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tmp)?;
                h.write_all(&buf)?;
                h.sync_all()?;
                place(&tmp, &file)?;
                fsync_dir(&parent)
            })();
            match w {
                Ok(()) => {
                    rep.files.push(file);
                    rep.messages += n;
                    rep.bytes += buf.len() as u64;
                }
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    rep.errors.push(format!("{}: {e}", file.display()));
                }
            }
        }
    }
    rep.bytes_read = snap.bytes_read();
    Ok(rep)
}
