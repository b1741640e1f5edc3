//! Client signals at backup time (SPEC G8, issue 11): this run's files
//! against the client's previous snapshot, as its cache remembers it (path,
//! size, chunk ids per file), and against a baseline of its earlier runs.
//!
//! What the client sees that nobody else can is plaintext: a message
//! rewritten in place, new mail that is noise or no longer mail. The
//! findings go into the snapshot's signed clear part (so the vault reads
//! them) with counts and ratios only, never a path; the paths are for the
//! local report. The maths is in [`holdfast_core::detect`].
//!
//! A file is a *message* when it sits in a Maildir `cur/` or `new/`
//! directory; its *folder* is the directory holding that `cur/`/`new/`, its
//! *mailbox* the first directory under the backed-up root. A *move* (the
//! same content under another path, e.g. `new/` → `cur/` or a flag change)
//! is neither a deletion nor a new file.
//!
//! The comparison streams (issue 10): [`Detector`] is fed each file while
//! the backup merges its walk with the cache, so nothing per file is held
//! in memory; see its documentation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use holdfast_core::BlobId;
use holdfast_core::detect::{self as maths, ENTROPY_BITS, Thresholds};
use holdfast_core::format::{Finding, Signal};

use crate::cache::{CachedFile, RunStats};
use crate::spill::{Peek, Spill};

// The thresholds of in_place, entropy, not_mail (messages, default 1),
// renames (in one folder, 200, Veeam's), new_extension (more than 20,
// NetApp's), deletions (100 messages) and volume (z 3.0) are
// [`Thresholds`]: their defaults, or what the admin quorum set in the log
// the client verified (`holdfast_core::detect::CLIENT_THRESHOLDS`).

/// Deletions (with at least the deletions threshold of messages deleted in
/// all): more than this share of all messages (1/4) is spool-wide ...
pub const DELETED_SHARE_DIV: u64 = 4;
/// ... or more than half of a folder or mailbox went in at least this many
/// mailboxes (and one in 50 of them): many users hit at once. One user
/// deleting a folder, however large, is not a finding.
pub const DELETED_PLACES_MIN: usize = 3;
/// A folder or mailbox counts as hit from this many messages deleted.
pub const DELETED_PLACE_MIN: u64 = 5;
/// Wipe: a root's file count falls by at least this many and by more than
/// half; or its bytes by at least [`WIPE_MIN_BYTES`] and more than half.
pub const WIPE_MIN_FILES: u64 = 20;
pub const WIPE_MIN_BYTES: u64 = 1 << 20;
/// Volume: least spread of the baseline (files, bytes), so that a steady
/// history does not make one file more an anomaly.
pub const VOLUME_FLOOR_FILES: f64 = 20.0;
pub const VOLUME_FLOOR_BYTES: f64 = (4 << 20) as f64;
/// Paths kept per signal for the local report.
const EXAMPLES: usize = 5;

/// What reading one new or rewritten message told.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ReadStats {
    /// Bits per byte over the message's content not already stored (all of
    /// it for a new or rewritten message, unless parts deduplicate).
    pub entropy: f64,
    /// Opens with an RFC 5322 header block.
    pub header_ok: bool,
}

/// Accumulates [`ReadStats`] over a file streamed in pieces.
#[derive(Default)]
pub struct Reading {
    hist: maths::Histogram,
    header_ok: Option<bool>,
}

impl Reading {
    /// The start of the file (`whole` when it is all of it); only the first
    /// call counts.
    pub fn head(&mut self, data: &[u8], whole: bool) {
        if self.header_ok.is_none() {
            self.header_ok = Some(maths::is_header_block(data, whole));
        }
    }
    /// Bytes whose entropy counts.
    pub fn count(&mut self, data: &[u8]) {
        self.hist.add(data);
    }
    /// Both, for a piece that is new content.
    pub fn add(&mut self, data: &[u8], whole: bool) {
        self.head(data, whole);
        self.count(data);
    }
    pub fn finish(self) -> ReadStats {
        ReadStats {
            entropy: self.hist.entropy(),
            header_ok: self.header_ok.unwrap_or(false),
        }
    }
}

/// True for a file in a Maildir `cur/` or `new/` directory.
pub fn is_message(path: &[u8]) -> bool {
    let mut parts = path.rsplit(|&b| b == b'/');
    parts.next();
    matches!(parts.next(), Some(b"cur") | Some(b"new"))
}

fn parent(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[..i],
        None => b"",
    }
}

fn file_name(path: &[u8]) -> &[u8] {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => &path[i + 1..],
        None => path,
    }
}

/// The Maildir folder of a message (the directory holding its `cur/`).
fn folder(path: &[u8]) -> &[u8] {
    parent(parent(path))
}

/// A root as given may end in '/' (`spool/`): its files are still under it.
fn trim(root: &[u8]) -> &[u8] {
    root.strip_suffix(b"/").unwrap_or(root)
}

fn under(path: &[u8], root: &[u8]) -> bool {
    let root = trim(root);
    path.starts_with(root) && (path.len() == root.len() || path.get(root.len()) == Some(&b'/'))
}

/// The first directory under `root` on the way to `path` (the user's
/// mailbox in a spool), or the root itself for a file directly in it.
fn mailbox<'a>(path: &'a [u8], root: &[u8]) -> &'a [u8] {
    let rest = &path[(root.len() + 1).min(path.len())..];
    match rest.iter().position(|&b| b == b'/') {
        Some(i) => &path[..root.len() + 1 + i],
        None => &path[..root.len()],
    }
}

/// A file's extension as [`maths::extension`] reads it. A Maildir message
/// without an info part (`:2,…`, as in `new/`) is `time.unique.host`,
/// maybe with `,S=size,W=vsize` fields: with fields, its extension is what
/// a dot appends after the last field (`…,S=123.locked`); without, the
/// name may end in a dotted host name, whose last label the detector
/// learns from the messages' names ([`host_label`]) and does not count.
pub fn ext_of(path: &[u8]) -> Option<&[u8]> {
    let name = file_name(path);
    if is_message(path) && !name.contains(&b':') {
        return match name.iter().rposition(|&b| b == b',') {
            Some(c) => maths::extension(&name[c + 1..]),
            None => maths::extension(name),
        };
    }
    maths::extension(name)
}

/// The last label of a Maildir message name's host part, where the name
/// shows where that part ends (a `:` info part or a `,` field): `com` for
/// `1.M2.mail.example.com:2,S`. A new/ message's name may end in it; it is
/// not an extension.
pub fn host_label(path: &[u8]) -> Option<&[u8]> {
    let name = file_name(path);
    if !is_message(path) || !name.iter().any(|&b| b == b':' || b == b',') {
        return None;
    }
    let pre = name.split(|&b| b == b':').next()?;
    let pre = pre.split(|&b| b == b',').next()?;
    let dot = pre.iter().rposition(|&b| b == b'.')?;
    let label = &pre[dot + 1..];
    (!label.is_empty()).then_some(label)
}

/// Every extension a file teaches the next run (the cache's `exts`): its
/// own and, for a message, its host's last label.
pub fn exts_of(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    ext_of(path).into_iter().chain(host_label(path))
}

/// A folder whose deletions are expunges by design (Trash, Junk, Spam,
/// Deleted Messages): not a place hit by deletions.
fn expunge_folder(folder: &[u8]) -> bool {
    let name = file_name(folder).to_ascii_lowercase();
    [&b"trash"[..], b"junk", b"spam", b"deleted"]
        .iter()
        .any(|w| name.windows(w.len()).any(|x| x == *w))
}

/// Identifies content across paths (size and first chunk id) in 8 bytes.
pub fn content_fp(size: u64, first: Option<&BlobId>) -> u64 {
    let c = first.map_or(0, |b| {
        u64::from_le_bytes(b.0[..8].try_into().unwrap_or([0; 8]))
    });
    let x = c ^ size.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^ (x >> 29)
}

/// Identifies a whole chunk list in 8 bytes (a rewrite changes it).
pub fn chunks_fp<'a>(chunks: impl Iterator<Item = &'a BlobId>) -> u64 {
    let mut h = blake3::Hasher::new();
    for c in chunks {
        h.update(&c.0);
    }
    u64::from_le_bytes(h.finalize().as_bytes()[..8].try_into().unwrap_or([0; 8]))
}

fn ext_hash(e: Option<&[u8]>) -> u32 {
    e.map_or(0, |e| {
        u32::from_le_bytes(blake3::hash(e).as_bytes()[..4].try_into().unwrap_or([0; 4])) | 1
    })
}

/// A file of the previous snapshot, as the cache remembers it.
#[derive(Clone, Copy, Debug)]
pub struct Prev {
    pub size: u64,
    pub fp: u64,
    pub chunks_fp: u64,
}

/// A file of this run.
#[derive(Clone, Copy, Debug)]
pub struct Cur {
    pub size: u64,
    pub fp: u64,
    pub chunks_fp: u64,
    /// What reading told, when the file was read this run.
    pub read: Option<ReadStats>,
}

pub struct Input<'a> {
    /// Each backed-up root (absolute path bytes), and whether it was missing.
    pub roots: &'a [(Vec<u8>, bool)],
    /// The previous snapshot's files (the cache), absolute path → file.
    pub prev: &'a HashMap<Vec<u8>, CachedFile>,
    /// This run's files.
    pub cur: &'a HashMap<Vec<u8>, CachedFile>,
    /// What reading told, for the messages read this run.
    pub read: &'a HashMap<Vec<u8>, ReadStats>,
    /// Paths that could not be read this run (not deletions).
    pub unreadable: &'a HashSet<Vec<u8>>,
    /// Earlier runs, oldest first.
    pub history: &'a [RunStats],
}

#[derive(Debug, Default)]
pub struct Outcome {
    pub findings: Vec<Finding>,
    /// Some paths behind each finding, for the local report only.
    pub examples: Vec<(Signal, Vec<Vec<u8>>)>,
    /// This run, for the baseline of the next ones.
    pub run: RunStats,
}

#[derive(Default)]
struct Tally {
    count: u64,
    examples: Vec<Vec<u8>>,
}

impl Tally {
    fn hit(&mut self, path: &[u8]) {
        self.count += 1;
        if self.examples.len() < EXAMPLES {
            self.examples.push(path.to_vec());
        }
    }
    /// A hit decided after the walk: the path is known only for the first
    /// few candidates.
    fn hit_late(&mut self, path: Option<&Vec<u8>>) {
        self.count += 1;
        if let Some(p) = path
            && self.examples.len() < EXAMPLES
        {
            self.examples.push(p.clone());
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Group {
    before: u64,
    deleted: u64,
    /// For a folder: its mailbox, and whether it is a Trash-like folder.
    mailbox: u32,
    expunge: bool,
}

/// Deferred record of a file gone from its path: fp (big-endian, the sort
/// key), sequence, folder id, mailbox id, extension hash, message flag.
const GONE: usize = 25;
/// Deferred record of a file at a new path: fp, sequence, size, parent
/// directory id, extension hash, flags.
const ADDED: usize = 29;
const F_MSG: u8 = 1;
const F_ENTROPY: u8 = 2;
const F_NOT_MAIL: u8 = 4;
const F_EXT: u8 = 8;
/// Candidate paths kept for the examples of deferred findings.
const CANDIDATES: usize = 64;
/// Records held in memory per deferred list before a sorted run is written.
const SPILL_AT: usize = 1 << 15;
/// New extensions tracked at most (an attack uses one).
const NEW_EXTS_MAX: usize = 1024;

/// This run against the previous one, fed in walk order while the backup
/// merges its walk with the cache (a per-directory comparison), with only
/// compact state kept for what crosses directories: 8-byte content
/// fingerprints of files gone from a path and of files at a new path, and
/// of every current file, in sorted runs on disk beyond a fixed buffer
/// (bounded even when everything is deleted or renamed). Moves, deletions
/// and renames are decided in [`Detector::finish`] by merging those runs.
/// Per-folder and per-mailbox counts are kept per directory.
pub struct Detector {
    roots: Vec<(Vec<u8>, bool)>,
    /// Per root: files and bytes before, files and bytes now.
    root_stats: Vec<[u64; 4]>,
    prev_exts: HashSet<Vec<u8>>,
    history: Vec<RunStats>,
    in_place: Tally,
    entropy: Tally,
    not_mail: Tally,
    new_exts: BTreeMap<Vec<u8>, Tally>,
    /// Of those, files that are not messages.
    new_exts_other: HashMap<Vec<u8>, u64>,
    /// Of those, bare `time.unique.host` names (new/ mail without an info
    /// part or fields), whose last label may be a delivery host never seen
    /// before (a new MX): they count only as far as mail was deleted for
    /// good in the same run, as a rename that encrypts leaves the original
    /// gone, and a new host's deliveries delete nothing.
    new_exts_bare: HashMap<Vec<u8>, u64>,
    /// Host labels of this run's message names: a message's name ending in
    /// one is not a new extension.
    hosts: HashSet<Vec<u8>>,
    thresholds: Thresholds,
    churn: u64,
    changed_bytes: u64,
    cur_fps: Spill<8>,
    gone: Spill<GONE>,
    added: Spill<ADDED>,
    seq: u32,
    gone_paths: HashMap<u32, Vec<u8>>,
    added_paths: HashMap<u32, Vec<u8>>,
    ids: HashMap<Vec<u8>, u32>,
    folders: HashMap<u32, Group>,
    mailboxes: HashMap<u32, Group>,
    err: Option<std::io::Error>,
}

impl Detector {
    /// `prev_exts`: the extensions of the previous snapshot's files.
    pub fn new(
        roots: &[(Vec<u8>, bool)],
        prev_exts: impl IntoIterator<Item = Vec<u8>>,
        history: &[RunStats],
        scratch: &Path,
    ) -> Detector {
        Detector {
            roots: roots.to_vec(),
            root_stats: vec![[0; 4]; roots.len()],
            prev_exts: prev_exts.into_iter().collect(),
            history: history.to_vec(),
            in_place: Tally::default(),
            entropy: Tally::default(),
            not_mail: Tally::default(),
            new_exts: BTreeMap::new(),
            new_exts_other: HashMap::new(),
            new_exts_bare: HashMap::new(),
            hosts: HashSet::new(),
            thresholds: Thresholds::default(),
            churn: 0,
            changed_bytes: 0,
            cur_fps: Spill::new(scratch, SPILL_AT * 2),
            gone: Spill::new(scratch, SPILL_AT),
            added: Spill::new(scratch, SPILL_AT),
            seq: 0,
            gone_paths: HashMap::new(),
            added_paths: HashMap::new(),
            ids: HashMap::new(),
            folders: HashMap::new(),
            mailboxes: HashMap::new(),
            err: None,
        }
    }

    /// Judges with `t` instead of the defaults.
    pub fn with_thresholds(mut self, t: Thresholds) -> Detector {
        self.thresholds = t;
        self
    }

    fn root_of(&self, p: &[u8]) -> Option<usize> {
        self.roots.iter().position(|(r, _)| under(p, r))
    }

    fn id(&mut self, dir: &[u8]) -> u32 {
        if let Some(&i) = self.ids.get(dir) {
            return i;
        }
        let i = self.ids.len() as u32;
        self.ids.insert(dir.to_vec(), i);
        i
    }

    fn keep<T>(&mut self, r: std::io::Result<T>) {
        if let Err(e) = r {
            self.err.get_or_insert(e);
        }
    }

    /// The previous snapshot's side of one file; its folder and mailbox.
    fn count_prev(&mut self, path: &[u8], prev: &Prev) -> Option<(u32, u32)> {
        let r = self.root_of(path)?;
        self.root_stats[r][0] += 1;
        self.root_stats[r][1] += prev.size;
        if !is_message(path) {
            return Some((u32::MAX, u32::MAX));
        }
        let root = &path[..trim(&self.roots[r].0).len()];
        let (fo, mb) = (self.id(folder(path)), self.id(mailbox(path, root)));
        let g = self.folders.entry(fo).or_insert_with(|| Group {
            mailbox: mb,
            expunge: expunge_folder(folder(path)),
            ..Group::default()
        });
        g.before += 1;
        self.mailboxes.entry(mb).or_default().before += 1;
        Some((fo, mb))
    }

    fn count_cur(&mut self, path: &[u8], cur: &Cur) {
        if let Some(r) = self.root_of(path) {
            self.root_stats[r][2] += 1;
            self.root_stats[r][3] += cur.size;
        }
        let r = self.cur_fps.push(cur.fp.to_be_bytes());
        self.keep(r);
        if let Some(h) = host_label(path)
            && self.hosts.len() < NEW_EXTS_MAX
            && !self.hosts.contains(h)
        {
            self.hosts.insert(h.to_vec());
        }
        if let Some(e) = ext_of(path)
            && !self.prev_exts.contains(e)
            && (self.new_exts.len() < NEW_EXTS_MAX || self.new_exts.contains_key(e))
        {
            self.new_exts.entry(e.to_vec()).or_default().hit(path);
            if !is_message(path) {
                *self.new_exts_other.entry(e.to_vec()).or_default() += 1;
            } else if !file_name(path).iter().any(|&b| b == b':' || b == b',') {
                *self.new_exts_bare.entry(e.to_vec()).or_default() += 1;
            }
        }
    }

    fn judge(&mut self, path: &[u8], read: Option<ReadStats>) {
        if let Some(r) = read
            && is_message(path)
        {
            if r.entropy > ENTROPY_BITS {
                self.entropy.hit(path);
            }
            if !r.header_ok {
                self.not_mail.hit(path);
            }
        }
    }

    /// A file at the same path as before.
    pub fn same(&mut self, path: &[u8], prev: &Prev, cur: &Cur) {
        self.count_prev(path, prev);
        self.count_cur(path, cur);
        if prev.chunks_fp != cur.chunks_fp {
            self.churn += 1;
            self.changed_bytes += cur.size;
            if is_message(path) {
                self.in_place.hit(path);
            }
            self.judge(path, cur.read);
        }
    }

    /// A file at a path the previous snapshot did not have.
    pub fn added(&mut self, path: &[u8], cur: &Cur) {
        self.count_cur(path, cur);
        self.seq += 1;
        let ext = ext_of(path);
        let mut flags = 0;
        if is_message(path) {
            flags |= F_MSG;
            if let Some(r) = cur.read {
                if r.entropy > ENTROPY_BITS {
                    flags |= F_ENTROPY;
                }
                if !r.header_ok {
                    flags |= F_NOT_MAIL;
                }
            }
        }
        if ext.is_some() {
            flags |= F_EXT;
        }
        let dir = if ext.is_some() {
            self.id(parent(path))
        } else {
            u32::MAX
        };
        if flags & !F_MSG != 0 && self.added_paths.len() < CANDIDATES {
            self.added_paths.insert(self.seq, path.to_vec());
        }
        let mut rec = [0u8; ADDED];
        rec[..8].copy_from_slice(&cur.fp.to_be_bytes());
        rec[8..12].copy_from_slice(&self.seq.to_be_bytes());
        rec[12..20].copy_from_slice(&cur.size.to_le_bytes());
        rec[20..24].copy_from_slice(&dir.to_le_bytes());
        rec[24..28].copy_from_slice(&ext_hash(ext).to_le_bytes());
        rec[28] = flags;
        let r = self.added.push(rec);
        self.keep(r);
    }

    /// A file of the previous snapshot whose path is gone.
    pub fn gone(&mut self, path: &[u8], prev: &Prev) {
        let Some((fo, mb)) = self.count_prev(path, prev) else {
            return;
        };
        self.seq += 1;
        let msg = is_message(path);
        if msg && self.gone_paths.len() < CANDIDATES {
            self.gone_paths.insert(self.seq, path.to_vec());
        }
        let mut rec = [0u8; GONE];
        rec[..8].copy_from_slice(&prev.fp.to_be_bytes());
        rec[8..12].copy_from_slice(&self.seq.to_be_bytes());
        rec[12..16].copy_from_slice(&fo.to_le_bytes());
        rec[16..20].copy_from_slice(&mb.to_le_bytes());
        rec[20..24].copy_from_slice(&ext_hash(ext_of(path)).to_le_bytes());
        rec[24] = msg as u8;
        let r = self.gone.push(rec);
        self.keep(r);
    }

    /// A file of the previous snapshot that could not be read this run:
    /// still there, as far as anyone knows.
    pub fn still_there(&mut self, path: &[u8], prev: &Prev) {
        if self.count_prev(path, prev).is_none() {
            return;
        }
        if let Some(r) = self.root_of(path) {
            self.root_stats[r][2] += 1;
            self.root_stats[r][3] += prev.size;
        }
    }

    /// Decides moves, deletions and renames, and reports.
    pub fn finish(mut self) -> std::io::Result<Outcome> {
        if let Some(e) = self.err.take() {
            return Err(e);
        }
        let u32at = |r: &[u8], i: usize| u32::from_le_bytes([r[i], r[i + 1], r[i + 2], r[i + 3]]);
        let seq_of = |r: &[u8]| u32::from_be_bytes([r[8], r[9], r[10], r[11]]);
        let mut cur = Peek::new(
            std::mem::replace(&mut self.cur_fps, Spill::new(Path::new("."), 1)).finish()?,
        )?;
        let mut gone =
            Peek::new(std::mem::replace(&mut self.gone, Spill::new(Path::new("."), 1)).finish()?)?;
        let mut added =
            Peek::new(std::mem::replace(&mut self.added, Spill::new(Path::new("."), 1)).finish()?)?;
        let mut renames: HashMap<u32, u64> = HashMap::new();
        let (mut deleted, mut renamed_total) = (Tally::default(), Tally::default());
        loop {
            let fp = match (gone.peek(), added.peek()) {
                (None, None) => break,
                (Some(g), None) => g[..8].to_vec(),
                (None, Some(a)) => a[..8].to_vec(),
                (Some(g), Some(a)) => (&g[..8]).min(&a[..8]).to_vec(),
            };
            while cur.peek().is_some_and(|c| c[..] < fp[..]) {
                cur.advance()?;
            }
            let in_cur = cur.peek().is_some_and(|c| c[..] == fp[..]);
            let mut old_ext: Option<u32> = None;
            while let Some(g) = gone.peek().filter(|g| g[..8] == fp[..]).copied() {
                gone.advance()?;
                old_ext.get_or_insert(u32at(&g, 20));
                if in_cur {
                    continue;
                }
                // Gone for good. Not volume (new and rewritten data only: a
                // purge or a deleted folder is judged by deletions and wipe).
                if g[24] == 1 {
                    self.folders.entry(u32at(&g, 12)).or_default().deleted += 1;
                    self.mailboxes.entry(u32at(&g, 16)).or_default().deleted += 1;
                    deleted.hit_late(self.gone_paths.get(&seq_of(&g)));
                }
            }
            while let Some(a) = added.peek().filter(|a| a[..8] == fp[..]).copied() {
                added.advance()?;
                let flags = a[28];
                let path = self.added_paths.get(&seq_of(&a));
                match old_ext {
                    Some(old) => {
                        // A move or rename: the same content elsewhere.
                        if flags & F_EXT != 0 && old != u32at(&a, 24) {
                            *renames.entry(u32at(&a, 20)).or_default() += 1;
                            renamed_total.hit_late(path);
                        }
                    }
                    None => {
                        self.churn += 1;
                        self.changed_bytes +=
                            u64::from_le_bytes(a[12..20].try_into().unwrap_or([0; 8]));
                        if flags & F_ENTROPY != 0 {
                            self.entropy.hit_late(path);
                        }
                        if flags & F_NOT_MAIL != 0 {
                            self.not_mail.hit_late(path);
                        }
                    }
                }
            }
        }
        Ok(self.report(renames, deleted, renamed_total))
    }

    fn report(self, renames: HashMap<u32, u64>, deleted: Tally, renamed_total: Tally) -> Outcome {
        let mut out = Outcome::default();
        let push = |out: &mut Outcome, s: Signal, n: u64, d: String, ex: Vec<Vec<u8>>| {
            out.findings.push(Finding::new(s, n, d));
            out.examples.push((s, ex));
        };
        let msgs_before: u64 = self.folders.values().map(|g| g.before).sum();
        let (in_place, entropy, not_mail) = (self.in_place, self.entropy, self.not_mail);
        let (folders, mailboxes, new_exts) = (self.folders, self.mailboxes, self.new_exts);
        let (churn, changed_bytes) = (self.churn, self.changed_bytes);
        let t = &self.thresholds;
        let at = |code: Signal| t.get(code.0) as u64;
        if in_place.count >= at(Signal::IN_PLACE) {
            push(
                &mut out,
                Signal::IN_PLACE,
                in_place.count,
                format!(
                    "{} of {} messages rewritten in place (delivered mail never changes)",
                    in_place.count, msgs_before
                ),
                in_place.examples,
            );
        }
        if entropy.count >= at(Signal::ENTROPY) {
            push(
                &mut out,
                Signal::ENTROPY,
                entropy.count,
                format!(
                    "{} new or rewritten messages above {ENTROPY_BITS} bits/byte (encrypted or random)",
                    entropy.count
                ),
                entropy.examples,
            );
        }
        if not_mail.count >= at(Signal::NOT_MAIL) {
            push(
                &mut out,
                Signal::NOT_MAIL,
                not_mail.count,
                format!(
                    "{} new or rewritten messages do not open with a mail header block",
                    not_mail.count
                ),
                not_mail.examples,
            );
        }
        let max_renames = renames.values().copied().max().unwrap_or(0);
        if max_renames >= at(Signal::RENAMES) {
            push(
                &mut out,
                Signal::RENAMES,
                renamed_total.count,
                format!(
                    "{} files renamed to another extension, {max_renames} in one folder",
                    renamed_total.count
                ),
                renamed_total.examples,
            );
        }
        for (ext, mut tally) in new_exts {
            if self.hosts.contains(&ext) {
                // Messages named after the host: only the other files count.
                tally.count = self.new_exts_other.get(&ext).copied().unwrap_or(0);
            } else if let Some(&bare) = self.new_exts_bare.get(&ext) {
                // New mail named after a host not seen yet counts only
                // against mail deleted for good in this run.
                tally.count = tally.count - bare + bare.min(deleted.count);
            }
            if tally.count > at(Signal::NEW_EXTENSION) {
                // The extension is a few letters the data chose; it is not a
                // path, and it is what an operator needs to recognise.
                push(
                    &mut out,
                    Signal::NEW_EXTENSION,
                    tally.count,
                    format!(
                        "{} files with the new extension .{}",
                        tally.count,
                        String::from_utf8_lossy(&ext)
                    ),
                    tally.examples,
                );
            }
        }
        // Deletions: enough messages in all, and either a large share of
        // the whole spool or many mailboxes hit at once (one user deleting
        // one folder is ordinary; an attacker deleting across users is not).
        let hit = |g: &Group| g.deleted >= DELETED_PLACE_MIN && g.deleted * 2 > g.before;
        let mut places: HashSet<u32> = folders
            .values()
            .filter(|g| !g.expunge && hit(g))
            .map(|g| g.mailbox)
            .collect();
        let bad_folders = folders.values().filter(|g| !g.expunge && hit(g)).count();
        let bad_mailboxes = mailboxes.iter().filter(|(_, g)| hit(g)).count();
        places.extend(mailboxes.iter().filter(|(_, g)| hit(g)).map(|(id, _)| *id));
        let need = DELETED_PLACES_MIN.max(mailboxes.len().div_ceil(50));
        let share = deleted.count * DELETED_SHARE_DIV > msgs_before;
        if deleted.count >= at(Signal::DELETIONS) && (share || places.len() >= need) {
            let pct = deleted.count * 100 / msgs_before.max(1);
            push(
                &mut out,
                Signal::DELETIONS,
                deleted.count,
                format!(
                    "{} messages deleted (not moved), {pct}% of {msgs_before}: more than half of \
                     {bad_folders} folder(s) and {bad_mailboxes} mailbox(es), in {} of {} \
                     mailboxes",
                    deleted.count,
                    places.len(),
                    mailboxes.len()
                ),
                deleted.examples,
            );
        }

        // Wipe: per root, against what the previous snapshot held under it.
        let mut wipes = Vec::new();
        let mut wiped = 0u64;
        let mut wipe_examples = Vec::new();
        for ((root, missing), &[n0, b0, n1, b1]) in self.roots.iter().zip(&self.root_stats) {
            if n0 == 0 {
                continue;
            }
            let why = if *missing {
                format!("a backed-up root is missing (had {n0} files)")
            } else if n1 == 0 {
                format!("a backed-up root is empty (had {n0} files)")
            } else if n0 - n1.min(n0) >= WIPE_MIN_FILES && n1 * 2 < n0 {
                format!("a root's file count fell from {n0} to {n1}")
            } else if b0 - b1.min(b0) >= WIPE_MIN_BYTES && b1 * 2 < b0 {
                format!("a root's bytes fell from {b0} to {b1}")
            } else {
                continue;
            };
            wiped += n0 - n1.min(n0);
            wipes.push(why);
            wipe_examples.push(root.clone());
        }
        if !wipes.is_empty() {
            push(
                &mut out,
                Signal::WIPE,
                wiped,
                wipes.join("; "),
                wipe_examples,
            );
        }

        // Volume against the baseline of earlier runs.
        out.run = RunStats {
            churn,
            changed_bytes,
        };
        let files: Vec<f64> = self.history.iter().map(|r| r.churn as f64).collect();
        let bytes: Vec<f64> = self
            .history
            .iter()
            .map(|r| r.changed_bytes as f64)
            .collect();
        let floor = |v: &[f64], min: f64| {
            let mut v = v.to_vec();
            maths::median(&mut v).map_or(min, |m| (m / 4.0).max(min))
        };
        let zf = maths::robust_z(&files, churn as f64, floor(&files, VOLUME_FLOOR_FILES));
        let zb = maths::robust_z(
            &bytes,
            changed_bytes as f64,
            floor(&bytes, VOLUME_FLOOR_BYTES),
        );
        let limit = t.z_limit();
        if zf.is_some_and(|z| z > limit) || zb.is_some_and(|z| z > limit) {
            push(
                &mut out,
                Signal::VOLUME,
                churn,
                format!(
                    "{churn} files and {changed_bytes} bytes new or rewritten: z = {:.1} (files), \
                     {:.1} (bytes) against the median of the last {} runs",
                    zf.unwrap_or(0.0),
                    zb.unwrap_or(0.0),
                    self.history.len()
                ),
                Vec::new(),
            );
        }
        out
    }
}

/// Compares two whole file maps (the detector's unit tests, and a caller
/// that has both in memory): feeds [`Detector`] in walk order.
pub fn compare(i: &Input) -> Outcome {
    compare_with(i, Thresholds::default())
}

/// [`compare`] with thresholds other than the defaults.
pub fn compare_with(i: &Input, t: Thresholds) -> Outcome {
    let root_of = |p: &[u8]| i.roots.iter().any(|(r, _)| under(p, r));
    let prev_exts: HashSet<Vec<u8>> = i
        .prev
        .keys()
        .filter(|p| root_of(p))
        .flat_map(|p| exts_of(p).map(<[u8]>::to_vec))
        .collect();
    let mut d =
        Detector::new(i.roots, prev_exts, i.history, &std::env::temp_dir()).with_thresholds(t);
    let mut prev: Vec<&Vec<u8>> = i.prev.keys().filter(|p| root_of(p)).collect();
    let mut cur: Vec<&Vec<u8>> = i.cur.keys().collect();
    prev.sort_by(|a, b| crate::cache::cmp_path(a, b));
    cur.sort_by(|a, b| crate::cache::cmp_path(a, b));
    let p_of = |f: &CachedFile| Prev {
        size: f.stat.size,
        fp: content_fp(f.stat.size, f.chunks.first()),
        chunks_fp: chunks_fp(f.chunks.iter()),
    };
    let c_of = |p: &[u8], f: &CachedFile| Cur {
        size: f.stat.size,
        fp: content_fp(f.stat.size, f.chunks.first()),
        chunks_fp: chunks_fp(f.chunks.iter()),
        read: i.read.get(p).copied(),
    };
    let (mut a, mut b) = (prev.into_iter().peekable(), cur.into_iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(p), None) => {
                let f = &i.prev[*p];
                if i.unreadable.contains(*p) {
                    d.still_there(p, &p_of(f));
                } else {
                    d.gone(p, &p_of(f));
                }
                a.next();
            }
            (Some(p), Some(q)) if crate::cache::cmp_path(p, q).is_lt() => {
                let f = &i.prev[*p];
                if i.unreadable.contains(*p) {
                    d.still_there(p, &p_of(f));
                } else {
                    d.gone(p, &p_of(f));
                }
                a.next();
            }
            (Some(p), Some(q)) if p == q => {
                d.same(q, &p_of(&i.prev[*p]), &c_of(q, &i.cur[*q]));
                a.next();
                b.next();
            }
            (_, Some(q)) => {
                d.added(q, &c_of(q, &i.cur[*q]));
                b.next();
            }
        }
    }
    d.finish().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::FileStat;

    fn file(size: u64, tag: u8) -> CachedFile {
        CachedFile {
            stat: FileStat {
                size,
                mtime: (0, 0),
                ctime: (0, 0),
                ino: 0,
                dev: 0,
            },
            chunks: vec![BlobId([tag; 32])],
        }
    }

    fn spool(users: usize, per_folder: usize) -> HashMap<Vec<u8>, CachedFile> {
        let mut m = HashMap::new();
        let mut tag = 0u32;
        for u in 0..users {
            for f in ["", "/.Sent"] {
                for k in 0..per_folder {
                    tag += 1;
                    let mut c = file(1000 + tag as u64, 0);
                    c.chunks[0].0[..4].copy_from_slice(&tag.to_le_bytes());
                    m.insert(
                        format!("/spool/u{u}{f}/cur/{}.M{k}.mx1,S=1:2,S", 1600000000 + tag)
                            .into_bytes(),
                        c,
                    );
                }
            }
        }
        m
    }

    fn run(
        prev: &HashMap<Vec<u8>, CachedFile>,
        cur: &HashMap<Vec<u8>, CachedFile>,
        read: &HashMap<Vec<u8>, ReadStats>,
        history: &[RunStats],
    ) -> Outcome {
        compare(&Input {
            roots: &[(b"/spool".to_vec(), false)],
            prev,
            cur,
            read,
            unreadable: &HashSet::new(),
            history,
        })
    }

    fn signals(o: &Outcome) -> Vec<&'static str> {
        o.findings.iter().map(|f| f.signal.name()).collect()
    }

    #[test]
    fn message_paths() {
        assert!(is_message(b"/s/u1/cur/123.M1.mx1:2,S"));
        assert!(is_message(b"/s/u1/.Sent/new/123.M1.mx1"));
        assert!(!is_message(b"/s/u1/tmp/123"));
        assert!(!is_message(b"/s/u1/dovecot.index"));
        assert_eq!(folder(b"/s/u1/.Sent/cur/x"), b"/s/u1/.Sent");
        assert_eq!(mailbox(b"/s/u1/.Sent/cur/x", b"/s"), b"/s/u1");
        assert_eq!(mailbox(b"/s/x", b"/s"), b"/s");
        assert!(under(b"/s/a", b"/s") && !under(b"/sx/a", b"/s"));
    }

    #[test]
    fn a_normal_day_is_quiet() {
        let prev = spool(10, 30);
        let mut cur = prev.clone();
        let mut read = HashMap::new();
        // Moves new → cur and flag renames keep the content.
        let mut moved = 0;
        for p in prev.keys() {
            if moved < 15 {
                let f = cur.remove(p).unwrap();
                let mut q = p.clone();
                q.push(b'R');
                cur.insert(q, f);
                moved += 1;
            }
        }
        // A few deletions, new mail with plausible content.
        for p in prev.keys().skip(100).take(8) {
            cur.remove(p);
        }
        for k in 0..30u8 {
            let p = format!("/spool/u1/new/1700000000.M{k}.mx1").into_bytes();
            cur.insert(p.clone(), file(2000, 200 + k % 50));
            read.insert(
                p,
                ReadStats {
                    entropy: 4.6,
                    header_ok: true,
                },
            );
        }
        let o = run(&prev, &cur, &read, &[]);
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        // Volume counts new and rewritten files only (30 new; the moves
        // and the 8 deletions are not volume).
        assert_eq!(o.run.churn, 30);
    }

    #[test]
    fn in_place_rewrites_and_noise_are_found() {
        let prev = spool(2, 20);
        let mut cur = prev.clone();
        let mut read = HashMap::new();
        for (p, f) in cur.iter_mut().take(5) {
            f.chunks[0].0[31] ^= 1;
            read.insert(
                p.clone(),
                ReadStats {
                    entropy: 7.98,
                    header_ok: false,
                },
            );
        }
        let o = run(&prev, &cur, &read, &[]);
        assert_eq!(signals(&o), vec!["in_place", "entropy", "not_mail"]);
        assert!(o.findings.iter().all(|f| f.count == 5));
        // No path in the clear text.
        assert!(o.findings.iter().all(|f| !f.detail.contains("/spool")));
        assert_eq!(o.examples[0].1.len(), 5);
    }

    #[test]
    fn deletion_needs_both_thresholds_and_moves_do_not_count() {
        // 150 messages in one folder of 200: 75% and ≥ 100.
        let prev = spool(1, 200);
        let folder_of = |p: &[u8]| !p.starts_with(b"/spool/u0/.Sent");
        let mut cur = prev.clone();
        let victims: Vec<Vec<u8>> = prev
            .keys()
            .filter(|p| folder_of(p))
            .take(150)
            .cloned()
            .collect();
        for p in &victims {
            cur.remove(p);
        }
        let o = run(&prev, &cur, &HashMap::new(), &[]);
        assert_eq!(signals(&o), vec!["deletions"]);
        assert_eq!(o.findings[0].count, 150);
        // 99 deleted (49% of the folder): nothing.
        let mut cur = prev.clone();
        for p in victims.iter().take(99) {
            cur.remove(p);
        }
        assert!(run(&prev, &cur, &HashMap::new(), &[]).findings.is_empty());
        // The same 150 moved to another folder: a move, not a deletion.
        let mut cur = prev.clone();
        for p in &victims {
            let f = cur.remove(p).unwrap();
            let mut q = b"/spool/u0/.Archive/cur/".to_vec();
            q.extend_from_slice(file_name(p));
            cur.insert(q, f);
        }
        assert!(run(&prev, &cur, &HashMap::new(), &[]).findings.is_empty());
        // 120 of 1000 in a big folder: 12%, not more than half.
        let prev = spool(1, 1000);
        let mut cur = prev.clone();
        for p in prev.keys().filter(|p| folder_of(p)).take(120) {
            cur.remove(p);
        }
        assert!(run(&prev, &cur, &HashMap::new(), &[]).findings.is_empty());
    }

    #[test]
    fn renames_to_a_new_extension() {
        let prev = spool(1, 250);
        let mut cur = HashMap::new();
        for (p, f) in &prev {
            let mut q = p.clone();
            q.extend_from_slice(b".locked");
            cur.insert(q, f.clone());
        }
        let o = run(&prev, &cur, &HashMap::new(), &[]);
        assert_eq!(signals(&o), vec!["renames", "new_extension"]);
        assert_eq!(o.findings[1].count, 500);
        assert!(o.findings[1].detail.contains(".locked"));
        // 21 files with a new extension, spread out: only the extension.
        let mut cur = prev.clone();
        for (p, f) in prev.iter().take(21) {
            cur.remove(p);
            let mut q = p.clone();
            q.extend_from_slice(b".crypt");
            cur.insert(q, f.clone());
        }
        assert_eq!(
            signals(&run(&prev, &cur, &HashMap::new(), &[])),
            vec!["new_extension"]
        );
        // 20 is not more than 20.
        let mut cur = prev.clone();
        for (p, f) in prev.iter().take(20) {
            cur.remove(p);
            let mut q = p.clone();
            q.extend_from_slice(b".crypt");
            cur.insert(q, f.clone());
        }
        assert!(run(&prev, &cur, &HashMap::new(), &[]).findings.is_empty());
    }

    #[test]
    fn host_names_in_new_are_not_extensions() {
        let prev = spool(1, 10);
        let mut cur = prev.clone();
        for k in 0..40u8 {
            cur.insert(
                format!("/spool/u0/new/day1.{k}.mx1").into_bytes(),
                file(2000, 100 + k),
            );
        }
        assert!(run(&prev, &cur, &HashMap::new(), &[]).findings.is_empty());
        // The host's label is learnt from the names that show where the
        // host ends (`…mx1,S=…:2,S`); other files' new extensions count.
        for k in 0..40u8 {
            cur.insert(
                format!("/spool/u0/files/day1.{k}.dat").into_bytes(),
                file(2000, 150 + k),
            );
        }
        assert_eq!(
            signals(&run(&prev, &cur, &HashMap::new(), &[])),
            vec!["new_extension"]
        );
    }

    #[test]
    fn wipes() {
        let prev = spool(2, 20);
        let empty = HashMap::new();
        let o = run(&prev, &empty, &HashMap::new(), &[]);
        assert!(signals(&o).contains(&"wipe"), "{:?}", o.findings);
        let w = o
            .findings
            .iter()
            .find(|f| f.signal == Signal::WIPE)
            .unwrap();
        assert_eq!(w.count, 80);
        assert!(w.detail.contains("empty"));
        // Missing root.
        let o = compare(&Input {
            roots: &[(b"/spool".to_vec(), true)],
            prev: &prev,
            cur: &empty,
            read: &HashMap::new(),
            unreadable: &HashSet::new(),
            history: &[],
        });
        assert!(o.findings.iter().any(|f| f.detail.contains("missing")));
        // A root the previous run did not cover is not wiped.
        let o = compare(&Input {
            roots: &[(b"/other".to_vec(), false)],
            prev: &prev,
            cur: &empty,
            read: &HashMap::new(),
            unreadable: &HashSet::new(),
            history: &[],
        });
        assert!(o.findings.is_empty());
        // Unreadable files are not deletions, nor a wipe of the count.
        let unreadable: HashSet<Vec<u8>> = prev.keys().cloned().collect();
        let mut half = prev.clone();
        let gone: Vec<_> = prev.keys().take(60).cloned().collect();
        for p in &gone {
            half.remove(p);
        }
        let o = compare(&Input {
            roots: &[(b"/spool".to_vec(), false)],
            prev: &prev,
            cur: &half,
            read: &HashMap::new(),
            unreadable: &unreadable,
            history: &[],
        });
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        // Without them: the count fell from 80 to 20.
        let o = run(&prev, &half, &HashMap::new(), &[]);
        assert_eq!(signals(&o), vec!["wipe"]);
        assert!(o.findings[0].detail.contains("fell from 80 to 20"));
    }

    #[test]
    fn volume_against_the_baseline() {
        let prev = spool(1, 100);
        let history: Vec<RunStats> = [30, 35, 28, 40, 33, 31, 36]
            .iter()
            .map(|&n| RunStats {
                churn: n,
                changed_bytes: n * 3000,
            })
            .collect();
        let with_new = |n: u8| {
            let mut cur = prev.clone();
            for k in 0..n {
                cur.insert(
                    format!("/spool/u0/new/17.M{k}.mx1").into_bytes(),
                    file(3000, k),
                );
            }
            cur
        };
        let quiet = run(&prev, &with_new(45), &HashMap::new(), &history);
        assert!(quiet.findings.is_empty(), "{:?}", quiet.findings);
        let loud = run(&prev, &with_new(200), &HashMap::new(), &history);
        assert_eq!(signals(&loud), vec!["volume"]);
        // Six runs are no baseline.
        assert!(
            run(&prev, &with_new(200), &HashMap::new(), &history[..6])
                .findings
                .is_empty()
        );
    }
    fn drop_where(
        prev: &HashMap<Vec<u8>, CachedFile>,
        f: impl Fn(&[u8]) -> bool,
    ) -> HashMap<Vec<u8>, CachedFile> {
        prev.iter()
            .filter(|(p, _)| !f(p))
            .map(|(p, c)| (p.clone(), c.clone()))
            .collect()
    }

    #[test]
    fn deletions_are_judged_across_the_spool() {
        let prev = spool(10, 150);
        let inbox = |u: usize| format!("/spool/u{u}/cur/").into_bytes();
        // One user deletes a whole folder (150 messages, 5%): ordinary.
        let cur = drop_where(&prev, |p| p.starts_with(&inbox(3)));
        let o = run(&prev, &cur, &HashMap::new(), &[]);
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        // Three users at once: many mailboxes hit.
        let cur = drop_where(&prev, |p| (0..3).any(|u| p.starts_with(&inbox(u))));
        let o = run(&prev, &cur, &HashMap::new(), &[]);
        assert_eq!(signals(&o), vec!["deletions"]);
        assert_eq!(o.findings[0].count, 450);
        assert!(o.findings[0].detail.contains("in 3 of 10 mailboxes"));
        // 60% of the mailboxes, each far under 100 messages.
        let small = spool(20, 10);
        let cur = drop_where(&small, |p| {
            (0..12).any(|u| p.starts_with(format!("/spool/u{u}/").as_bytes()))
        });
        let o = run(&small, &cur, &HashMap::new(), &[]);
        assert!(signals(&o).contains(&"deletions"), "{:?}", o.findings);
        // Trash expunged in five mailboxes: not a place hit.
        let mut with_trash = prev.clone();
        for u in 0..5 {
            for k in 0..30u32 {
                let mut c = file(900 + k as u64, 0);
                c.chunks[0].0[..4].copy_from_slice(&(100_000 + u * 100 + k).to_le_bytes());
                with_trash.insert(
                    format!("/spool/u{u}/.Trash/cur/17.M{k}.mx1,S=9:2,ST").into_bytes(),
                    c,
                );
            }
        }
        let cur = drop_where(&with_trash, |p| p.windows(7).any(|w| w == b".Trash/"));
        let o = run(&with_trash, &cur, &HashMap::new(), &[]);
        assert!(o.findings.is_empty(), "{:?}", o.findings);
        // Under the count threshold nothing fires, whatever the share.
        let tiny = spool(2, 10);
        let o = run(&tiny, &HashMap::new(), &HashMap::new(), &[]);
        assert!(!signals(&o).contains(&"deletions"));
    }

    #[test]
    fn new_extensions_in_new_count_and_host_names_do_not() {
        let prev = spool(1, 10);
        let mut cur = prev.clone();
        for k in 0..25u8 {
            cur.insert(
                format!("/spool/u0/new/1700000000.M{k}.mx1,S=2000.locked").into_bytes(),
                file(2000, 100 + k),
            );
        }
        let o = run(&prev, &cur, &HashMap::new(), &[]);
        assert_eq!(signals(&o), vec!["new_extension"]);
        assert!(o.findings[0].detail.contains(".locked"));
        // A dotted host name ending unread mail's names: its last label is
        // learnt from the names that show where the host ends.
        let mut cur = prev.clone();
        cur.insert(
            b"/spool/u0/cur/1600000000.M1.mail.example.com:2,S".to_vec(),
            file(10, 1),
        );
        for k in 0..25u8 {
            cur.insert(
                format!("/spool/u0/new/1700000000.M{k}.mail.example.com").into_bytes(),
                file(2000, 100 + k),
            );
        }
        assert!(run(&prev, &cur, &HashMap::new(), &[]).findings.is_empty());
        // A delivery host never seen before (a new MX): its mail's names end
        // in a label no earlier name had, and no mail is gone: not counted.
        let mut fresh = prev.clone();
        for k in 0..25u8 {
            fresh.insert(
                format!("/spool/u0/new/1700000000.M{k}P9.mx9").into_bytes(),
                file(2000, 100 + k),
            );
        }
        assert!(
            run(&prev, &fresh, &HashMap::new(), &[]).findings.is_empty(),
            "{:?}",
            run(&prev, &fresh, &HashMap::new(), &[]).findings
        );
        // ... but what was appended to such names, the originals gone for
        // good (encrypted under a new name), counts.
        let mut crypt = fresh.clone();
        for k in 0..25u8 {
            crypt.remove(format!("/spool/u0/new/1700000000.M{k}P9.mx9").as_bytes());
            crypt.insert(
                format!("/spool/u0/new/1700000000.M{k}P9.mx9.crypt").into_bytes(),
                file(2000, 150 + k),
            );
        }
        assert_eq!(
            signals(&run(&fresh, &crypt, &HashMap::new(), &[])),
            vec!["new_extension"]
        );
    }

    #[test]
    fn thresholds_raise_the_bar() {
        let prev = spool(2, 20);
        let mut cur = prev.clone();
        for (_, f) in cur.iter_mut().take(3) {
            f.chunks[0].0[31] ^= 1;
        }
        let i = Input {
            roots: &[(b"/spool".to_vec(), false)],
            prev: &prev,
            cur: &cur,
            read: &HashMap::new(),
            unreadable: &HashSet::new(),
            history: &[],
        };
        assert_eq!(signals(&compare(&i)), vec!["in_place"]);
        let t = |n| Thresholds::from_fn(|c| (c == Signal::IN_PLACE.0).then_some(n));
        assert_eq!(signals(&compare_with(&i, t(3))), vec!["in_place"]);
        assert!(compare_with(&i, t(4)).findings.is_empty());
        // A value under the floor is the floor.
        assert_eq!(t(0).get(Signal::IN_PLACE.0), 1);
    }

    #[test]
    fn deletions_are_not_volume() {
        let prev = spool(4, 100);
        let history: Vec<RunStats> = [30, 35, 28, 40, 33, 31, 36]
            .iter()
            .map(|&n| RunStats {
                churn: n,
                changed_bytes: n * 3000,
            })
            .collect();
        // A purge of 40 messages in each of the 8 folders (320 of 800).
        let mut gone = 0;
        let cur = drop_where(&prev, |p| {
            let k: u32 = String::from_utf8_lossy(p)
                .rsplit(".M")
                .next()
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(99);
            k < 40
        });
        gone += prev.len() - cur.len();
        assert_eq!(gone, 320);
        let o = run(&prev, &cur, &HashMap::new(), &history);
        assert!(!signals(&o).contains(&"volume"), "{:?}", o.findings);
        assert_eq!(o.run.churn, 0);
    }
}
