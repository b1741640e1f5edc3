//! An on-disk index of a snapshot's pack tables: fixed-size records sorted
//! by blob id, looked up with `pread` (never `mmap`, whose touched pages
//! would count as this process's memory), so reading a snapshot of a
//! million files holds a 256 KiB fan-out table instead of a hash map of a
//! million locations.
//!
//! It is a cache. Its content is a pure function of the pack ids it was
//! built from (packs are content-addressed), so it is keyed by a hash of
//! that list and shared by every command that reads the same snapshot.
//! It is written crash-safely (temporary file, fsync, rename, directory
//! fsync), checked whole when opened (a checksum over every byte, record
//! order, pack numbers), and anything wrong makes it rebuilt from the pack
//! tables. It is only ever a guide to where a blob is: every blob read
//! through it is still authenticated and checked against its keyed id.
//! `verify` never uses a cached one (it builds its own from the tables it
//! has just checked).
//!
//! File layout (little-endian): magic `HFPIDX01`, key `[32]`, pack count
//! u32, record count u64; per pack: id `[32]`, ephemeral key `[32]`, size
//! u64; records (id `[32]`, pack u32, offset u32, stored_len u32, raw_len
//! u32, kind u8, flags u8) sorted by (id, pack); then a checksum `[32]`:
//! BLAKE3 of the BLAKE3s of each 1 MiB block of everything before it.

use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_core::crypto::{IdKey, RepoSecret, SessionKey};
use holdfast_core::format::{self, PackEntry};
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::{Backend, Kind};

use crate::index::Location;
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"HFPIDX01";
const HEAD_LEN: u64 = 8 + 32 + 4 + 8;
const PACK_LEN: u64 = 32 + 32 + 8;
pub const REC_LEN: usize = 32 + 4 * 4 + 2;
const BLOCK: usize = 1 << 20;
/// Records sorted in memory before a run is spilled (about 7 MiB).
const RUN: usize = 128 * 1024;
/// Cached index files kept per cache directory.
const KEEP: usize = 8;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Rec {
    id: [u8; 32],
    pack: u32,
    offset: u32,
    stored_len: u32,
    raw_len: u32,
    kind: u8,
    flags: u8,
}

impl Rec {
    fn encode(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(&self.id);
        out[32..36].copy_from_slice(&self.pack.to_le_bytes());
        out[36..40].copy_from_slice(&self.offset.to_le_bytes());
        out[40..44].copy_from_slice(&self.stored_len.to_le_bytes());
        out[44..48].copy_from_slice(&self.raw_len.to_le_bytes());
        out[48] = self.kind;
        out[49] = self.flags;
    }
    fn decode(b: &[u8]) -> Rec {
        let u = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        Rec {
            id: b[..32].try_into().unwrap(),
            pack: u(32),
            offset: u(36),
            stored_len: u(40),
            raw_len: u(44),
            kind: b[48],
            flags: b[49],
        }
    }
    fn location(&self) -> Location {
        Location {
            pack: self.pack,
            entry: PackEntry {
                id: BlobId(self.id),
                kind: self.kind,
                flags: self.flags,
                offset: self.offset,
                stored_len: self.stored_len,
                raw_len: self.raw_len,
            },
        }
    }
}

/// Where holdfast keeps caches (as the CLI computes it).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("HOLDFAST_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("holdfast")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/holdfast")))
        .unwrap_or_else(|| PathBuf::from(".holdfast-cache"))
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

fn tmp_name(dir: &Path, stem: &str) -> PathBuf {
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        "{stem}.{}.{n}.{}.tmp",
        std::process::id(),
        crate::now_ns()
    ))
}

/// Where index files and their scratch runs go: the cache directory's
/// `pack-index` (made private), or the system's temporary directory.
pub fn index_dir() -> (PathBuf, bool) {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cache_dir().join("pack-index");
    match std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        Ok(()) => (dir, true),
        Err(_) => (std::env::temp_dir(), false),
    }
}

/// A scratch file nobody else can see, removed when closed (in the
/// system's temporary directory).
pub fn scratch_file() -> std::io::Result<File> {
    anonymous(&std::env::temp_dir())
}

/// A read-write file nobody else can see (created, then unlinked).
fn anonymous(dir: &Path) -> std::io::Result<File> {
    let open = |d: &Path| -> std::io::Result<File> {
        let p = tmp_name(d, ".hf-scratch");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&p)?;
        std::fs::remove_file(&p)?;
        Ok(f)
    };
    open(dir).or_else(|_| open(&std::env::temp_dir()))
}

fn io(what: &str, e: std::io::Error) -> Error {
    Error::Io {
        path: what.to_string(),
        source: e,
    }
}

/// Writes bytes, hashing each 1 MiB block as it goes.
struct BlockSink<W: Write> {
    out: W,
    buf: Vec<u8>,
    hashes: Vec<u8>,
}

impl<W: Write> BlockSink<W> {
    fn new(out: W) -> Self {
        Self {
            out,
            buf: Vec::with_capacity(BLOCK),
            hashes: Vec::new(),
        }
    }
    fn write(&mut self, mut b: &[u8]) -> std::io::Result<()> {
        while !b.is_empty() {
            let n = (BLOCK - self.buf.len()).min(b.len());
            self.buf.extend_from_slice(&b[..n]);
            b = &b[n..];
            if self.buf.len() == BLOCK {
                self.flush_block()?;
            }
        }
        Ok(())
    }
    fn flush_block(&mut self) -> std::io::Result<()> {
        self.hashes.extend_from_slice(&ObjectId::of(&self.buf).0);
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }
    fn finish(mut self) -> std::io::Result<W> {
        if !self.buf.is_empty() {
            self.flush_block()?;
        }
        self.out.write_all(&ObjectId::of(&self.hashes).0)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// Collects pack tables, spilling sorted runs to disk, and writes an index.
pub struct Builder {
    packs: Vec<ObjectId>,
    epks: Vec<[u8; 32]>,
    sizes: Vec<u64>,
    buf: Vec<Rec>,
    runs: Vec<File>,
    count: u64,
    scratch: PathBuf,
}

impl Builder {
    /// An index over `packs` (numbered in this order); a pack never added
    /// has no records.
    pub fn new(packs: Vec<ObjectId>, scratch: &Path) -> Self {
        let n = packs.len();
        Self {
            packs,
            epks: vec![[0; 32]; n],
            sizes: vec![0; n],
            buf: Vec::new(),
            runs: Vec::new(),
            count: 0,
            scratch: scratch.to_path_buf(),
        }
    }

    pub fn add(&mut self, n: u32, epk: [u8; 32], size: u64, entries: &[PackEntry]) -> Result<()> {
        self.epks[n as usize] = epk;
        self.sizes[n as usize] = size;
        for e in entries {
            self.buf.push(Rec {
                id: e.id.0,
                pack: n,
                offset: e.offset,
                stored_len: e.stored_len,
                raw_len: e.raw_len,
                kind: e.kind,
                flags: e.flags,
            });
            self.count += 1;
            if self.buf.len() >= RUN {
                self.spill()?;
            }
        }
        Ok(())
    }

    fn spill(&mut self) -> Result<()> {
        self.buf.sort_unstable();
        let f = anonymous(&self.scratch).map_err(|e| io("index scratch file", e))?;
        let mut w = std::io::BufWriter::with_capacity(256 << 10, f);
        let mut b = [0u8; REC_LEN];
        for r in &self.buf {
            r.encode(&mut b);
            w.write_all(&b).map_err(|e| io("index scratch file", e))?;
        }
        let f = w
            .into_inner()
            .map_err(|e| io("index scratch file", e.into_error()))?;
        self.runs.push(f);
        self.buf.clear();
        Ok(())
    }

    /// Writes the index for `key` into `out` (positioned at its start).
    fn write(mut self, key: &[u8; 32], out: File) -> Result<File> {
        let err = |e| io("pack index", e);
        let mut s = BlockSink::new(std::io::BufWriter::with_capacity(256 << 10, out));
        let mut head = Vec::with_capacity(HEAD_LEN as usize);
        head.extend_from_slice(MAGIC);
        head.extend_from_slice(key);
        head.extend_from_slice(&(self.packs.len() as u32).to_le_bytes());
        head.extend_from_slice(&self.count.to_le_bytes());
        s.write(&head).map_err(err)?;
        for i in 0..self.packs.len() {
            s.write(&self.packs[i].0).map_err(err)?;
            s.write(&self.epks[i]).map_err(err)?;
            s.write(&self.sizes[i].to_le_bytes()).map_err(err)?;
        }
        let mut b = [0u8; REC_LEN];
        if self.runs.is_empty() {
            self.buf.sort_unstable();
            for r in &self.buf {
                r.encode(&mut b);
                s.write(&b).map_err(err)?;
            }
        } else {
            if !self.buf.is_empty() {
                self.spill()?;
            }
            let mut readers = Vec::new();
            for mut f in std::mem::take(&mut self.runs) {
                use std::io::Seek;
                f.seek(std::io::SeekFrom::Start(0)).map_err(err)?;
                readers.push(BufReader::with_capacity(128 << 10, f));
            }
            let next = |r: &mut BufReader<File>| -> Result<Option<Rec>> {
                let mut b = [0u8; REC_LEN];
                match r.read_exact(&mut b) {
                    Ok(()) => Ok(Some(Rec::decode(&b))),
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Ok(None),
                    Err(e) => Err(io("index scratch file", e)),
                }
            };
            let mut heap = BinaryHeap::new();
            for (i, r) in readers.iter_mut().enumerate() {
                if let Some(x) = next(r)? {
                    heap.push(std::cmp::Reverse((x, i)));
                }
            }
            while let Some(std::cmp::Reverse((x, i))) = heap.pop() {
                x.encode(&mut b);
                s.write(&b).map_err(err)?;
                if let Some(y) = next(&mut readers[i])? {
                    heap.push(std::cmp::Reverse((y, i)));
                }
            }
        }
        let w = s.finish().map_err(err)?;
        w.into_inner().map_err(|e| err(e.into_error()))
    }
}

/// Blob id → location over a snapshot's packs, on disk.
pub struct PackIndex {
    pub packs: Vec<ObjectId>,
    pub epks: Vec<[u8; 32]>,
    pub sizes: Vec<u64>,
    file: File,
    /// Start record of each 16-bit id prefix, and the count at the end.
    fanout: Vec<u32>,
    count: u64,
    /// The cache file it came from (removed by [`Self::distrust`]).
    cached: Option<PathBuf>,
}

impl std::fmt::Debug for PackIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackIndex")
            .field("packs", &self.packs.len())
            .field("records", &self.count)
            .field("cached", &self.cached)
            .finish()
    }
}

fn bad(why: &str) -> Error {
    Error::Corrupt(format!("pack index cache: {why}"))
}

impl PackIndex {
    /// The key of an index over `packs`.
    pub fn key(packs: &[ObjectId]) -> [u8; 32] {
        let mut b = Vec::with_capacity(24 + packs.len() * 32);
        b.extend_from_slice(b"holdfast pack index v1\0");
        for p in packs {
            b.extend_from_slice(&p.0);
        }
        ObjectId::of(&b).0
    }

    /// Opens and checks a whole index file; `expect` is the pack list it
    /// must be over.
    fn open(mut file: File, key: &[u8; 32], expect: Option<&[ObjectId]>) -> Result<PackIndex> {
        use std::io::Seek;
        let len = file.metadata().map_err(|e| io("pack index", e))?.len();
        if len < HEAD_LEN + 32 {
            return Err(bad("too short"));
        }
        let body = len - 32;
        file.seek(std::io::SeekFrom::Start(0))
            .map_err(|e| io("pack index", e))?;
        let mut r = &file;
        let mut hashes = Vec::new();
        let mut block = vec![0u8; BLOCK];
        let mut pos = 0u64; // bytes consumed from the current block
        let mut fill = 0usize;
        let mut left = body;
        // Reads the next `n` bytes of the body, hashing full blocks.
        let mut take = |out: &mut [u8]| -> Result<()> {
            let mut done = 0;
            while done < out.len() {
                if pos as usize == fill {
                    if fill == BLOCK {
                        hashes.extend_from_slice(&ObjectId::of(&block).0);
                    }
                    let n = (BLOCK as u64).min(left) as usize;
                    if n == 0 {
                        return Err(bad("truncated"));
                    }
                    r.read_exact(&mut block[..n])
                        .map_err(|e| io("pack index", e))?;
                    left -= n as u64;
                    fill = n;
                    pos = 0;
                }
                let n = (fill - pos as usize).min(out.len() - done);
                out[done..done + n].copy_from_slice(&block[pos as usize..pos as usize + n]);
                pos += n as u64;
                done += n;
            }
            Ok(())
        };
        let mut head = [0u8; HEAD_LEN as usize];
        take(&mut head)?;
        if &head[..8] != MAGIC || head[8..40] != key[..] {
            return Err(bad("not this index"));
        }
        let npacks = u32::from_le_bytes(head[40..44].try_into().unwrap()) as u64;
        let count = u64::from_le_bytes(head[44..52].try_into().unwrap());
        let want = npacks
            .checked_mul(PACK_LEN)
            .and_then(|p| count.checked_mul(REC_LEN as u64).map(|r| (p, r)))
            .and_then(|(p, r)| (HEAD_LEN + p).checked_add(r));
        if want != Some(body) || count > u32::MAX as u64 {
            return Err(bad("wrong length"));
        }
        if let Some(e) = expect
            && e.len() as u64 != npacks
        {
            return Err(bad("another pack list"));
        }
        let mut packs = Vec::with_capacity(npacks as usize);
        let mut epks = Vec::with_capacity(npacks as usize);
        let mut sizes = Vec::with_capacity(npacks as usize);
        let mut p = [0u8; PACK_LEN as usize];
        for i in 0..npacks as usize {
            take(&mut p)?;
            let id = ObjectId(p[..32].try_into().unwrap());
            if let Some(e) = expect
                && e[i] != id
            {
                return Err(bad("another pack list"));
            }
            packs.push(id);
            epks.push(p[32..64].try_into().unwrap());
            sizes.push(u64::from_le_bytes(p[64..72].try_into().unwrap()));
        }
        let mut fanout = vec![0u32; 65537];
        let mut prev: Option<([u8; 32], u32)> = None;
        let mut b = [0u8; REC_LEN];
        for i in 0..count {
            take(&mut b)?;
            let rec = Rec::decode(&b);
            if rec.pack as u64 >= npacks || rec.offset.checked_add(rec.stored_len).is_none() {
                return Err(bad("a record out of range"));
            }
            if prev.is_some_and(|p| p > (rec.id, rec.pack)) {
                return Err(bad("records out of order"));
            }
            prev = Some((rec.id, rec.pack));
            let bucket = u16::from_be_bytes([rec.id[0], rec.id[1]]) as usize;
            fanout[bucket + 1] = i as u32 + 1;
        }
        // fanout[b + 1] now holds the end of bucket b where b has records;
        // carry ends forward over empty buckets.
        for b in 1..fanout.len() {
            if fanout[b] < fanout[b - 1] {
                fanout[b] = fanout[b - 1];
            }
        }
        if pos as usize == fill && fill > 0 {
            hashes.extend_from_slice(&ObjectId::of(&block[..fill]).0);
        } else if fill > 0 {
            return Err(bad("trailing bytes"));
        }
        let mut sum = [0u8; 32];
        file.read_exact_at(&mut sum, body)
            .map_err(|e| io("pack index", e))?;
        if ObjectId::of(&hashes).0 != sum {
            return Err(bad("checksum mismatch"));
        }
        Ok(PackIndex {
            packs,
            epks,
            sizes,
            file,
            fanout,
            count,
            cached: None,
        })
    }

    fn rec_base(&self) -> u64 {
        HEAD_LEN + self.packs.len() as u64 * PACK_LEN
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Where `id` is: the first pack (in list order) holding it for which
    /// `allow` says yes.
    pub fn find_in(&self, id: &BlobId, allow: impl Fn(u32) -> bool) -> Result<Option<Location>> {
        let b = u16::from_be_bytes([id.0[0], id.0[1]]) as usize;
        let (lo, hi) = (self.fanout[b] as u64, self.fanout[b + 1] as u64);
        if lo >= hi {
            return Ok(None);
        }
        let base = self.rec_base();
        let read = |i: u64, n: u64| -> Result<Vec<u8>> {
            let mut v = vec![0u8; (n as usize) * REC_LEN];
            self.file
                .read_exact_at(&mut v, base + i * REC_LEN as u64)
                .map_err(|e| io("pack index", e))?;
            Ok(v)
        };
        // Narrow to a few records by binary search on single reads when a
        // bucket is large (it is ~15 records at a million blobs): the first
        // record not below `id`.
        let (mut lo, mut hi) = (lo, hi);
        while hi - lo > 64 {
            let mid = lo + (hi - lo) / 2;
            if read(mid, 1)?[..32] < id.0[..] {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        // Matches may continue past `hi` (duplicates across packs).
        let mut i = lo;
        let mut n = (hi - lo).max(16);
        loop {
            let n_now = n.min(self.count - i);
            if n_now == 0 {
                return Ok(None);
            }
            let v = read(i, n_now)?;
            for c in v.chunks_exact(REC_LEN) {
                match c[..32].cmp(&id.0[..]) {
                    std::cmp::Ordering::Less => {}
                    std::cmp::Ordering::Greater => return Ok(None),
                    std::cmp::Ordering::Equal => {
                        let r = Rec::decode(c);
                        if allow(r.pack) {
                            return Ok(Some(r.location()));
                        }
                    }
                }
            }
            i += n_now;
            n = 16;
        }
    }

    /// Every record in id order (duplicates across packs included, the
    /// first pack first), read sequentially.
    pub fn for_each(&self, mut f: impl FnMut(Location)) -> Result<()> {
        let mut r = BufReader::with_capacity(256 << 10, &self.file);
        use std::io::Seek;
        r.seek(std::io::SeekFrom::Start(self.rec_base()))
            .map_err(|e| io("pack index", e))?;
        let mut b = [0u8; REC_LEN];
        for _ in 0..self.count {
            r.read_exact(&mut b).map_err(|e| io("pack index", e))?;
            f(Rec::decode(&b).location());
        }
        Ok(())
    }

    pub fn find(&self, id: &BlobId) -> Result<Option<Location>> {
        self.find_in(id, |_| true)
    }

    /// Removes the cache file this index came from (something read
    /// through it failed: the next command rebuilds it from the packs).
    pub fn distrust(&self) {
        if let Some(p) = &self.cached {
            let _ = std::fs::remove_file(p);
        }
    }

    /// An index over `packs` built into a scratch file (not cached).
    pub fn build_scratch(b: Builder) -> Result<PackIndex> {
        let key = Self::key(&b.packs);
        let f = anonymous(&b.scratch).map_err(|e| io("index scratch file", e))?;
        let f = b.write(&key, f)?;
        Self::open(f, &key, None)
    }

    /// The index over a snapshot's `packs`: from the cache when a good one
    /// is there, else built from the pack tables (and cached when every
    /// table was read). Packs whose tables cannot be read are returned as
    /// errors beside it, as [`crate::index::Index::load`] does.
    pub fn for_packs(backend: &dyn Backend, packs: &[ObjectId]) -> (Result<PackIndex>, Vec<Error>) {
        let key = Self::key(packs);
        let (dir, can_cache) = index_dir();
        let path = dir.join(format!("{}.idx", holdfast_core::id::hex(&key)));
        if let Ok(f) = File::open(&path) {
            match Self::open(f, &key, Some(packs)) {
                Ok(mut ix) => {
                    ix.cached = Some(path);
                    return (Ok(ix), Vec::new());
                }
                Err(_) => {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        let (builder, errors) = match load_tables(backend, packs, &dir) {
            Ok(x) => x,
            Err(e) => return (Err(e), Vec::new()),
        };
        if !errors.is_empty() || !can_cache {
            return (Self::build_scratch(builder), errors);
        }
        let r = (|| -> Result<PackIndex> {
            let tmp = tmp_name(&dir, &holdfast_core::id::hex(&key[..8]));
            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| io_path(&tmp, e))?;
            let f = match builder.write(&key, f) {
                Ok(f) => f,
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(e);
                }
            };
            let done = f
                .sync_all()
                .and_then(|_| std::fs::rename(&tmp, &path))
                .and_then(|_| holdfast_store::fsync_dir(&dir).map_err(std::io::Error::other));
            if let Err(e) = done {
                let _ = std::fs::remove_file(&tmp);
                return Err(io_path(&path, e));
            }
            prune(&dir);
            let mut ix = Self::open(f, &key, Some(packs))?;
            ix.cached = Some(path.clone());
            Ok(ix)
        })();
        (r, errors)
    }
}

/// The checksum an index file ends with: BLAKE3 of the BLAKE3s of each
/// 1 MiB block of `body`.
fn checksum(body: &[u8]) -> [u8; 32] {
    let mut hashes = Vec::new();
    for b in body.chunks(BLOCK) {
        hashes.extend_from_slice(&ObjectId::of(b).0);
    }
    ObjectId::of(&hashes).0
}

/// The fuzz target's way in (`fuzz/fuzz_targets/packindex.rs`): `data` made
/// into an index file in the temp directory, opened, looked up and walked.
/// Every outcome is fine but a panic.
///
/// Input: a mode byte, then with bit 0 set the whole file as is (opened
/// with the key it names); else the file after its magic, with the pack
/// count brought within the length, the record count set to what the
/// length holds (bit 1 clear) and a matching checksum appended.
#[doc(hidden)]
pub fn fuzz(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let file = if mode & 1 == 1 {
        rest.to_vec()
    } else {
        fuzz_file(mode, rest)
    };
    let mut key = [0u8; 32];
    if let Some(k) = file.get(8..40) {
        key.copy_from_slice(k);
    }
    thread_local! {
        static PATH: PathBuf = std::env::temp_dir().join(format!(
            "holdfast-fuzz-packindex-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    let path = PATH.with(|p| p.clone());
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    if let Ok(f) = File::open(&path)
        && let Ok(ix) = PackIndex::open(f, &key, None)
    {
        let mut ids = vec![BlobId([0; 32]), BlobId([0xff; 32])];
        let walked = ix.for_each(|l| {
            assert!((l.pack as usize) < ix.packs.len());
            if ids.len() < 64 {
                ids.push(l.entry.id);
                let mut near = l.entry.id.0;
                near[31] ^= 1;
                ids.push(BlobId(near));
            }
        });
        assert!(walked.is_ok());
        for id in &ids {
            if let Some(l) = ix.find(id).expect("a checked index reads") {
                assert_eq!(l.entry.id, *id);
            }
            let _ = ix.find_in(id, |p| p % 2 == 1);
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn fuzz_file(mode: u8, rest: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(8 + rest.len() + 32);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(rest);
    if f.len() >= HEAD_LEN as usize && mode & 2 == 0 {
        let room = f.len() as u64 - HEAD_LEN;
        let npacks = u32::from_le_bytes(f[40..44].try_into().unwrap_or_default()) as u64
            % (room / PACK_LEN + 1);
        let count = (room - npacks * PACK_LEN) / REC_LEN as u64;
        f.truncate((HEAD_LEN + npacks * PACK_LEN + count * REC_LEN as u64) as usize);
        f[40..44].copy_from_slice(&(npacks as u32).to_le_bytes());
        f[44..52].copy_from_slice(&count.to_le_bytes());
    }
    let sum = checksum(&f);
    f.extend_from_slice(&sum);
    f
}

fn io_path(p: &Path, e: std::io::Error) -> Error {
    crate::io_err(p, e)
}

/// Keeps the newest [`KEEP`] index files; removes leftovers of crashed
/// writers older than an hour.
fn prune(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut idx = Vec::new();
    let now = std::time::SystemTime::now();
    for e in rd.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let Ok(m) = e.metadata() else { continue };
        if !m.is_file() {
            continue;
        }
        let t = m.modified().unwrap_or(std::time::UNIX_EPOCH);
        if name.ends_with(".idx") && name.len() == 68 {
            idx.push((t, e.path()));
        } else if name.ends_with(".tmp") && now.duration_since(t).is_ok_and(|d| d.as_secs() > 3600)
        {
            let _ = std::fs::remove_file(e.path());
        }
    }
    idx.sort();
    while idx.len() > KEEP {
        let (_, p) = idx.remove(0);
        let _ = std::fs::remove_file(p);
    }
}

/// How many requests to keep in flight against `backend`.
pub fn concurrency(backend: &dyn Backend) -> usize {
    if backend.prefers_whole_objects() {
        8
    } else {
        // Reads from a local disk mostly wait on it (and writes of the
        // restored files on theirs): more threads than cores.
        4
    }
}

/// Reads every pack's table (several at once) into a builder.
fn load_tables(
    backend: &dyn Backend,
    packs: &[ObjectId],
    scratch: &Path,
) -> Result<(Builder, Vec<Error>)> {
    let builder = Mutex::new(Builder::new(packs.to_vec(), scratch));
    let errors = Mutex::new(Vec::new());
    let fatal: Mutex<Option<Error>> = Mutex::new(None);
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..concurrency(backend).min(packs.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= packs.len() {
                        return;
                    }
                    match crate::index::read_pack_table_sized(backend, &packs[i]) {
                        Ok((epk, size, entries)) => {
                            let mut b = builder.lock().unwrap_or_else(|p| p.into_inner());
                            if let Err(e) = b.add(i as u32, epk, size, &entries) {
                                fatal.lock().unwrap().get_or_insert(e);
                                next.store(packs.len(), Ordering::Relaxed);
                            }
                        }
                        Err(e) => errors.lock().unwrap().push((i, e)),
                    }
                }
            });
        }
    });
    if let Some(e) = fatal.into_inner().unwrap() {
        return Err(e);
    }
    let mut errors = errors.into_inner().unwrap();
    errors.sort_by_key(|(i, _)| *i);
    Ok((
        builder.into_inner().unwrap_or_else(|p| p.into_inner()),
        errors.into_iter().map(|(_, e)| e).collect(),
    ))
}

/// Recently fetched stretches of packs (remote backends only), newest last.
type Windows = Mutex<VecDeque<(u32, u64, Arc<Vec<u8>>)>>;
/// A miss over a remote backend reads this much of the pack from the blob
/// on (trees sit together at the end of packs, in walk order).
const WINDOW: u64 = 1 << 20;
const WINDOWS: usize = 4;

/// Fetches and opens blobs through a [`PackIndex`] with the restore key;
/// every blob is authenticated and checked against its keyed id.
pub struct Reader<'a> {
    pub backend: &'a dyn Backend,
    pub index: &'a PackIndex,
    id_key: &'a IdKey,
    secret: &'a RepoSecret,
    sessions: Mutex<HashMap<[u8; 32], SessionKey>>,
    windows: Option<Windows>,
    /// Only packs marked true are looked in (verify: the snapshot's).
    allow: Option<Vec<bool>>,
}

impl<'a> Reader<'a> {
    pub fn new(
        backend: &'a dyn Backend,
        index: &'a PackIndex,
        id_key: &'a IdKey,
        secret: &'a RepoSecret,
    ) -> Self {
        Self {
            backend,
            index,
            id_key,
            secret,
            sessions: Mutex::new(HashMap::new()),
            windows: backend
                .prefers_whole_objects()
                .then(|| Mutex::new(VecDeque::new())),
            allow: None,
        }
    }

    /// Looks only in the packs marked true.
    pub fn restrict(&mut self, allow: Vec<bool>) {
        self.allow = Some(allow);
    }

    pub fn id_key(&self) -> &IdKey {
        self.id_key
    }

    pub fn locate(&self, id: &BlobId) -> Result<Option<Location>> {
        match &self.allow {
            None => self.index.find(id),
            Some(a) => self
                .index
                .find_in(id, |p| a.get(p as usize).copied().unwrap_or(false)),
        }
    }

    pub fn session(&self, epk: &[u8; 32]) -> Result<SessionKey> {
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = s.get(epk) {
            return Ok(k.clone());
        }
        let k = self.secret.open_session(epk).map_err(|e| {
            Error::Corrupt(format!(
                "a pack's ephemeral key {} does not open: {e}",
                holdfast_core::id::hex(&epk[..8])
            ))
        })?;
        s.insert(*epk, k.clone());
        Ok(k)
    }

    /// Opens a blob whose sealed bytes were already fetched.
    pub fn open(&self, loc: &Location, sealed: &[u8]) -> Result<Vec<u8>> {
        let key = self.session(&self.index.epks[loc.pack as usize])?;
        format::open_blob(&key, self.id_key, &loc.entry, sealed).map_err(|e| {
            Error::Corrupt(format!(
                "{e} in pack {}",
                self.index.packs[loc.pack as usize]
            ))
        })
    }

    fn fetch(&self, loc: &Location) -> Result<Vec<u8>> {
        let pack = self.index.packs[loc.pack as usize].to_hex();
        let (off, len) = (loc.entry.offset as u64, loc.entry.stored_len as u64);
        let Some(w) = &self.windows else {
            return Ok(self.backend.get_range(Kind::Pack, &pack, off, len)?);
        };
        let hit = |ws: &VecDeque<(u32, u64, Arc<Vec<u8>>)>| {
            ws.iter().find_map(|(p, start, b)| {
                (*p == loc.pack && off >= *start && off + len <= start + b.len() as u64)
                    .then(|| b[(off - start) as usize..(off - start + len) as usize].to_vec())
            })
        };
        if let Some(b) = hit(&w.lock().unwrap_or_else(|p| p.into_inner())) {
            return Ok(b);
        }
        let size = self.index.sizes[loc.pack as usize];
        let want = len.max(WINDOW).min(size.saturating_sub(off)).max(len);
        let bytes = self.backend.get_range(Kind::Pack, &pack, off, want)?;
        let out = bytes[..len as usize].to_vec();
        let mut ws = w.lock().unwrap_or_else(|p| p.into_inner());
        if ws.len() >= WINDOWS {
            ws.pop_front();
        }
        ws.push_back((loc.pack, off, Arc::new(bytes)));
        Ok(out)
    }

    /// Drops stretches of packs kept for tree reads.
    pub fn clear_cache(&self) {
        if let Some(w) = &self.windows {
            w.lock().unwrap_or_else(|p| p.into_inner()).clear();
        }
    }

    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.locate(id)?.ok_or_else(|| {
            Error::Corrupt(format!(
                "blob {} is not in any pack the snapshot lists",
                id.to_hex()
            ))
        })?;
        let sealed = self.fetch(&loc)?;
        self.open(&loc, &sealed)
    }

    pub fn tree(&self, id: &BlobId) -> Result<format::Tree> {
        let b = self.read(id)?;
        format::Tree::decode(&b).map_err(|e| Error::Corrupt(format!("tree {}: {e}", id.to_hex())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: [u8; 32], off: u32) -> PackEntry {
        PackEntry {
            id: BlobId(id),
            kind: 0,
            flags: 0,
            offset: off,
            stored_len: 10,
            raw_len: 5,
        }
    }

    #[test]
    fn spilled_runs_merge_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let packs: Vec<ObjectId> = (0..3u8).map(|i| ObjectId([i; 32])).collect();
        let mut b = Builder::new(packs.clone(), dir.path());
        let n = RUN * 2 + 77;
        let mut all = Vec::new();
        for p in 0..3u32 {
            let mut es = Vec::new();
            for i in 0..n as u32 / 3 {
                let id = *blake3_like(i * 3 + p);
                es.push(entry(id, i));
                all.push(id);
            }
            b.add(p, [p as u8; 32], 1 << 20, &es).unwrap();
        }
        // A duplicate in a later pack: the first pack wins.
        b.add(2, [2; 32], 1 << 20, &[entry(all[0], 999)]).unwrap();
        let key = PackIndex::key(&packs);
        let path = dir.path().join("x.idx");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        b.write(&key, f).unwrap();
        let ix = PackIndex::open(File::open(&path).unwrap(), &key, Some(&packs)).unwrap();
        for (k, id) in all.iter().enumerate().step_by(997) {
            let l = ix.find(&BlobId(*id)).unwrap().unwrap();
            assert_eq!(l.entry.id.0, *id, "{k}");
        }
        let l = ix.find(&BlobId(all[0])).unwrap().unwrap();
        assert_eq!((l.pack, l.entry.offset), (0, 0));
        let l = ix.find_in(&BlobId(all[0]), |p| p == 2).unwrap().unwrap();
        assert_eq!((l.pack, l.entry.offset), (2, 999));
        assert!(ix.find(&BlobId([0xee; 32])).unwrap().is_none());
        // Any flipped byte is refused, never a panic.
        let good = std::fs::read(&path).unwrap();
        for at in [0, 9, 45, 60, 200, good.len() / 2, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 1;
            std::fs::write(&path, &b).unwrap();
            assert!(PackIndex::open(File::open(&path).unwrap(), &key, Some(&packs)).is_err());
        }
        for cut in [0, 10, 52, good.len() - 33, good.len() - 1] {
            std::fs::write(&path, &good[..cut]).unwrap();
            assert!(PackIndex::open(File::open(&path).unwrap(), &key, Some(&packs)).is_err());
        }
    }

    /// Random damage behind a valid checksum (the fuzz target's input, made
    /// from a real index and mutated): every open is an error or an index
    /// whose lookups and walk work, never a panic.
    #[test]
    fn damage_behind_a_valid_checksum_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let packs: Vec<ObjectId> = (0..3u8).map(|i| ObjectId([i; 32])).collect();
        let mut b = Builder::new(packs.clone(), dir.path());
        for p in 0..3u32 {
            let es: Vec<PackEntry> = (0..40u32)
                .map(|i| entry(*blake3_like(i * 3 + p % 2), i * 10))
                .collect();
            b.add(p, [p as u8; 32], 1 << 20, &es).unwrap();
        }
        let ix = PackIndex::build_scratch(b).unwrap();
        let mut good = vec![0u8; ix.file.metadata().unwrap().len() as usize];
        ix.file.read_exact_at(&mut good, 0).unwrap();
        // The same file in the fuzz input format; unmutated, the harness
        // rebuilds it exactly (it reaches the record checks and lookups).
        let mut input = vec![0u8];
        input.extend_from_slice(&good[8..good.len() - 32]);
        assert_eq!(fuzz_file(0, &input[1..]), good);
        let mut raw = vec![1u8];
        raw.extend_from_slice(&good);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        for round in 0..3000 {
            let mut b = if round % 5 == 0 {
                raw.clone()
            } else {
                input.clone()
            };
            crate::mutate::damage(&mut b, &mut next);
            if round % 11 == 0 {
                b[0] = next(4) as u8;
            }
            fuzz(&b);
        }
        fuzz(&raw);
        fuzz(&[]);
        fuzz(&[0]);
    }

    fn blake3_like(i: u32) -> Box<[u8; 32]> {
        Box::new(ObjectId::of(&i.to_le_bytes()).0)
    }
}
