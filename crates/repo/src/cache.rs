//! The client's local cache: what this client has already sent.
//!
//! A write-only client cannot read its earlier snapshots, so it remembers
//! (1) for each file it saved: size, mtime, ctime, inode, device → chunk ids
//! *and the number of the pack holding each chunk*, and (2) for each blob it
//! sent: which pack holds it. Losing or damaging the cache costs a re-read of
//! every file, never correctness: pack numbers are checked against the
//! repository's pack list before use, and the blob → pack table is rebuilt
//! from the plaintext tables of this client's own packs when missing.
//!
//! Version 3 is built to be *streamed*, never held in memory (issue 10):
//!
//! ```text
//! magic "HFCACHE3"
//! files   one record per file, in walk order (path components compared
//!         bytewise, i.e. '/' sorts before every other byte): shared prefix
//!         with the previous path u16, suffix length u16, suffix, size u64,
//!         mtime s i64 / ns u32, ctime s i64 / ns u32, inode u64, device u64,
//!         chunk count u32, then per chunk: id [32], pack number u32
//! blobs   sorted (id [32], pack number u32) records (`crate::blobset`)
//! meta    repo id, client, config id, last snapshot (flag + id), pack ids
//!         (the pack numbers index this list), run history, extensions seen
//! footer  files off/count/len, blobs off/count, meta off/len (u64 each),
//!         BLAKE3 of everything before the footer [32], magic "HFCACHE3"
//! ```
//!
//! All integers little-endian. The backup reads the files section as one
//! sequential stream merged with its walk, and writes the next cache the
//! same way: into a temp file beside it, then fsync, rename, directory
//! fsync. A cache of another version, another owner, or whose hash does not
//! match is ignored (the next backup rebuilds one).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use holdfast_core::codec::{DecodeError, Reader, Writer};
use holdfast_core::{BlobId, ObjectId};

use crate::blobset::{REC, Table};

const MAGIC: &[u8; 8] = b"HFCACHE3";
const FOOTER: u64 = 7 * 8 + 32 + 8;
/// Extensions remembered for the next run's "new extension" signal.
pub const MAX_EXTS: usize = 4096;
/// Most chunks one cached file may list (a 64 GiB file of 64 KiB chunks).
const MAX_CHUNKS: u32 = 1 << 20;

/// One earlier run, for the volume baseline (`holdfast_repo::detect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RunStats {
    /// Files new, rewritten or deleted (moves excluded).
    pub churn: u64,
    /// Bytes of the new and rewritten files.
    pub changed_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct FileStat {
    pub size: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    pub ino: u64,
    pub dev: u64,
}

/// A file as the detector's tests describe it.
#[derive(Clone, Debug)]
pub struct CachedFile {
    pub stat: FileStat,
    pub chunks: Vec<BlobId>,
}

/// One file of the files section.
#[derive(Clone, Debug, Default)]
pub struct Entry {
    pub path: Vec<u8>,
    pub stat: FileStat,
    /// Chunk id and the number of the pack holding it.
    pub chunks: Vec<(BlobId, u32)>,
}

/// Identifies whose cache a file is.
pub struct Owner {
    pub repo_id: [u8; 16],
    pub client: [u8; 32],
    pub config_id: ObjectId,
}

pub fn path(dir: &Path, owner: &Owner) -> PathBuf {
    dir.join(format!(
        "{}-{}.cache",
        holdfast_core::id::hex(&owner.repo_id),
        holdfast_core::id::hex(&owner.client[..8])
    ))
}

/// Orders paths as the walk visits them: component by component ('/'
/// before any other byte).
pub fn cmp_path(a: &[u8], b: &[u8]) -> std::cmp::Ordering {
    let m = |c: u8| if c == b'/' { 0 } else { c };
    a.iter().map(|&c| m(c)).cmp(b.iter().map(|&c| m(c)))
}

/// The small parts of a cache, in memory; the files and blobs stay on disk.
pub struct Loaded {
    pub last_snapshot: Option<ObjectId>,
    pub packs: Vec<ObjectId>,
    pub history: Vec<RunStats>,
    pub exts: Vec<Vec<u8>>,
    pub files: u64,
    file: Arc<File>,
    files_off: u64,
    files_len: u64,
    blobs_off: u64,
    blobs_count: u64,
}

fn bad(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("cache: {what}"))
}

impl Loaded {
    /// Opens and checks a cache; a missing, foreign, old or damaged one is
    /// `None`.
    pub fn load(path: &Path, owner: &Owner) -> Option<Loaded> {
        Self::try_load(path, owner).ok()
    }

    fn try_load(path: &Path, owner: &Owner) -> io::Result<Loaded> {
        let file = File::open(path)?;
        let len = file.metadata()?.len();
        if len < 8 + FOOTER {
            return Err(bad("short"));
        }
        let mut foot = [0u8; FOOTER as usize];
        file.read_exact_at(&mut foot, len - FOOTER)?;
        if &foot[FOOTER as usize - 8..] != MAGIC {
            return Err(bad("magic"));
        }
        let u = |i: usize| u64::from_le_bytes(foot[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let (files_off, files, files_len, blobs_off, blobs_count, meta_off, meta_len) =
            (u(0), u(1), u(2), u(3), u(4), u(5), u(6));
        let body = len - FOOTER;
        if files_off != 8
            || files_off.checked_add(files_len) != Some(blobs_off)
            || blobs_count
                .checked_mul(REC as u64)
                .and_then(|b| b.checked_add(blobs_off))
                != Some(meta_off)
            || meta_off.checked_add(meta_len) != Some(body)
            || meta_len > 1 << 30
        {
            return Err(bad("layout"));
        }
        // The whole file against its hash, streamed.
        let mut h = blake3::Hasher::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut at = 0u64;
        while at < body {
            let n = ((body - at) as usize).min(buf.len());
            file.read_exact_at(&mut buf[..n], at)?;
            h.update(&buf[..n]);
            at += n as u64;
        }
        if h.finalize().as_bytes()[..] != foot[56..88] {
            return Err(bad("hash"));
        }
        let mut head = [0u8; 8];
        file.read_exact_at(&mut head, 0)?;
        if &head != MAGIC {
            return Err(bad("magic"));
        }
        let mut meta = vec![0u8; meta_len as usize];
        file.read_exact_at(&mut meta, meta_off)?;
        let m = decode_meta(&meta, owner).map_err(|e| bad(&e.to_string()))?;
        Ok(Loaded {
            last_snapshot: m.0,
            packs: m.1,
            history: m.2,
            exts: m.3,
            files,
            file: Arc::new(file),
            files_off,
            files_len,
            blobs_off,
            blobs_count,
        })
    }

    /// The blob → pack table.
    pub fn blobs(&self) -> io::Result<Table> {
        Table::open(self.file.clone(), self.blobs_off, self.blobs_count)
    }

    /// The files, in walk order.
    pub fn cursor(&self) -> io::Result<Cursor> {
        let mut f = self.file.try_clone()?;
        f.seek(SeekFrom::Start(self.files_off))?;
        let mut c = Cursor {
            r: BufReader::with_capacity(256 << 10, f.take(self.files_len)),
            left: self.files,
            path: Vec::new(),
            head: None,
            packs: self.packs.len() as u32,
        };
        c.head = c.read_one();
        Ok(c)
    }
}

type Meta = (Option<ObjectId>, Vec<ObjectId>, Vec<RunStats>, Vec<Vec<u8>>);

fn decode_meta(b: &[u8], owner: &Owner) -> Result<Meta, DecodeError> {
    let mut r = Reader::new(b);
    if r.array::<16>()? != owner.repo_id
        || r.array::<32>()? != owner.client
        || ObjectId(r.array()?) != owner.config_id
    {
        return Err(DecodeError::Invalid("cache owner"));
    }
    let last = match r.u8()? {
        0 => None,
        _ => Some(ObjectId(r.array()?)),
    };
    let n = r.count(32, "packs")?;
    let mut packs = Vec::with_capacity(n);
    for _ in 0..n {
        packs.push(ObjectId(r.array()?));
    }
    let n = r.count(16, "history")?;
    if n > holdfast_core::detect::BASELINE_MAX_RUNS {
        return Err(DecodeError::Invalid("history"));
    }
    let mut history = Vec::with_capacity(n);
    for _ in 0..n {
        history.push(RunStats {
            churn: r.u64()?,
            changed_bytes: r.u64()?,
        });
    }
    let n = r.count(4, "extensions")?;
    if n > MAX_EXTS {
        return Err(DecodeError::Invalid("extensions"));
    }
    let mut exts = Vec::with_capacity(n);
    for _ in 0..n {
        exts.push(r.bytes(64, "extension")?.to_vec());
    }
    r.finish()?;
    Ok((last, packs, history, exts))
}

/// Reads the files section one record at a time. A record that does not
/// decode ends the stream (the hash makes that a bug, not an input).
pub struct Cursor {
    r: BufReader<std::io::Take<File>>,
    left: u64,
    path: Vec<u8>,
    head: Option<Entry>,
    packs: u32,
}

impl Cursor {
    fn read_one(&mut self) -> Option<Entry> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        match self.decode() {
            Ok(e) => Some(e),
            Err(_) => {
                self.left = 0;
                None
            }
        }
    }

    fn decode(&mut self) -> io::Result<Entry> {
        let r = &mut self.r;
        let mut b2 = [0u8; 2];
        let mut b4 = [0u8; 4];
        let mut b8 = [0u8; 8];
        r.read_exact(&mut b2)?;
        let shared = u16::from_le_bytes(b2) as usize;
        r.read_exact(&mut b2)?;
        let suffix = u16::from_le_bytes(b2) as usize;
        if shared > self.path.len() {
            return Err(bad("prefix"));
        }
        self.path.truncate(shared);
        let start = self.path.len();
        self.path.resize(start + suffix, 0);
        r.read_exact(&mut self.path[start..])?;
        let mut u64_ = |r: &mut BufReader<_>| -> io::Result<u64> {
            r.read_exact(&mut b8)?;
            Ok(u64::from_le_bytes(b8))
        };
        let size = u64_(r)?;
        let ms = u64_(r)? as i64;
        r.read_exact(&mut b4)?;
        let mns = u32::from_le_bytes(b4);
        let cs = u64_(r)? as i64;
        r.read_exact(&mut b4)?;
        let cns = u32::from_le_bytes(b4);
        let ino = u64_(r)?;
        let dev = u64_(r)?;
        r.read_exact(&mut b4)?;
        let n = u32::from_le_bytes(b4);
        if n > MAX_CHUNKS {
            return Err(bad("chunks"));
        }
        let mut chunks = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let mut id = [0u8; 32];
            r.read_exact(&mut id)?;
            r.read_exact(&mut b4)?;
            let p = u32::from_le_bytes(b4);
            if p >= self.packs {
                return Err(bad("pack number"));
            }
            chunks.push((BlobId(id), p));
        }
        Ok(Entry {
            path: self.path.clone(),
            stat: FileStat {
                size,
                mtime: (ms, mns),
                ctime: (cs, cns),
                ino,
                dev,
            },
            chunks,
        })
    }

    pub fn peek(&self) -> Option<&Entry> {
        self.head.as_ref()
    }

    pub fn next_entry(&mut self) -> Option<Entry> {
        let e = self.head.take();
        if e.is_some() {
            self.head = self.read_one();
        }
        e
    }
}

/// A writer that hashes what it writes.
struct Hashing {
    w: io::BufWriter<File>,
    h: blake3::Hasher,
    n: u64,
}

impl Write for Hashing {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        let n = self.w.write(b)?;
        self.h.update(&b[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

/// Writes the next cache as the backup goes. Errors are kept, not
/// returned: the cache is best effort, and a failed one is removed.
pub struct CacheWriter {
    tmp: PathBuf,
    path: PathBuf,
    w: Option<Hashing>,
    err: Option<io::Error>,
    files: u64,
    last: Vec<u8>,
}

impl CacheWriter {
    /// A temp file beside `path` (mode 0600, directory created 0700).
    pub fn create(path: &Path) -> CacheWriter {
        let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
        let rnd: [u8; 8] = holdfast_core::crypto::random_bytes().unwrap_or([0; 8]);
        let mut name = path.file_name().unwrap_or_default().to_os_string();
        name.push(format!(".{}.tmp", holdfast_core::id::hex(&rnd)));
        let tmp = dir.join(name);
        let mut cw = CacheWriter {
            tmp: tmp.clone(),
            path: path.to_path_buf(),
            w: None,
            err: None,
            files: 0,
            last: Vec::new(),
        };
        let opened = holdfast_store::create_private_dir(&dir).and_then(|_| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc_nofollow())
                .open(&tmp)
        });
        match opened {
            Ok(f) => {
                let mut h = Hashing {
                    w: io::BufWriter::with_capacity(256 << 10, f),
                    h: blake3::Hasher::new(),
                    n: 0,
                };
                match h.write_all(MAGIC) {
                    Ok(()) => cw.w = Some(h),
                    Err(e) => cw.fail(e),
                }
            }
            Err(e) => cw.err = Some(e),
        }
        cw
    }

    fn fail(&mut self, e: io::Error) {
        self.err.get_or_insert(e);
        self.w = None;
        let _ = std::fs::remove_file(&self.tmp);
    }

    /// Appends one file; paths must come in walk order (others are left
    /// out: they are read again next time, nothing worse).
    pub fn file(&mut self, path: &[u8], stat: &FileStat, chunks: &[(BlobId, u32)]) {
        let Some(w) = &mut self.w else { return };
        if path.len() > u16::MAX as usize
            || chunks.len() > MAX_CHUNKS as usize
            || (self.files > 0 && cmp_path(&self.last, path) != std::cmp::Ordering::Less)
        {
            return;
        }
        let shared = self
            .last
            .iter()
            .zip(path)
            .take_while(|(a, b)| a == b)
            .count();
        let mut b = Writer::with_capacity(64 + path.len() - shared + chunks.len() * 36);
        b.raw(&(shared as u16).to_le_bytes())
            .raw(&((path.len() - shared) as u16).to_le_bytes())
            .raw(&path[shared..])
            .u64(stat.size)
            .i64(stat.mtime.0)
            .u32(stat.mtime.1)
            .i64(stat.ctime.0)
            .u32(stat.ctime.1)
            .u64(stat.ino)
            .u64(stat.dev)
            .u32(chunks.len() as u32);
        for (id, p) in chunks {
            b.raw(&id.0).u32(*p);
        }
        if let Err(e) = w.write_all(&b.into_vec()) {
            self.fail(e);
            return;
        }
        self.files += 1;
        self.last.clear();
        self.last.extend_from_slice(path);
    }

    /// Writes the blobs (through `blobs`, which returns their count), the
    /// meta and the footer, then makes the file durable and puts it in
    /// place.
    pub fn finish(
        mut self,
        owner: &Owner,
        meta: &CacheMeta,
        blobs: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
    ) -> io::Result<()> {
        if let Some(e) = self.err.take() {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(e);
        }
        let Some(w) = self.w.take() else {
            return Err(io::Error::other("cache writer closed"));
        };
        let r = Self::complete(w, self.files, owner, meta, blobs, &self.tmp, &self.path);
        if r.is_err() {
            let _ = std::fs::remove_file(&self.tmp);
        }
        r
    }

    fn complete(
        mut w: Hashing,
        files: u64,
        owner: &Owner,
        meta: &CacheMeta,
        blobs: impl FnOnce(&mut dyn Write) -> io::Result<u64>,
        tmp: &Path,
        path: &Path,
    ) -> io::Result<()> {
        let files_len = w.n - 8;
        let blobs_off = w.n;
        let blobs_count = blobs(&mut w)?;
        if w.n != blobs_off + blobs_count * REC as u64 {
            return Err(io::Error::other("blob section length"));
        }
        let meta_off = w.n;
        let m = meta.encode(owner);
        w.write_all(&m)?;
        let hash = w.h.finalize();
        let mut foot = Writer::with_capacity(FOOTER as usize);
        foot.u64(8)
            .u64(files)
            .u64(files_len)
            .u64(blobs_off)
            .u64(blobs_count)
            .u64(meta_off)
            .u64(m.len() as u64)
            .raw(hash.as_bytes())
            .raw(MAGIC);
        w.w.write_all(&foot.into_vec())?;
        let f = w.w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(tmp, path)?;
        holdfast_store::fsync_dir(path.parent().unwrap_or(Path::new(".")))
    }

    /// Drops the temp file (a failed backup).
    pub fn abort(mut self) {
        self.w = None;
        let _ = std::fs::remove_file(&self.tmp);
    }
}

fn libc_nofollow() -> i32 {
    // O_NOFOLLOW | O_CLOEXEC on Linux (x86-64 and aarch64 share them).
    0o400000 | 0o2000000
}

/// The small parts of the next cache.
#[derive(Default)]
pub struct CacheMeta {
    pub last_snapshot: Option<ObjectId>,
    pub packs: Vec<ObjectId>,
    pub history: Vec<RunStats>,
    pub exts: Vec<Vec<u8>>,
}

impl CacheMeta {
    fn encode(&self, owner: &Owner) -> Vec<u8> {
        let mut w = Writer::with_capacity(128 + self.packs.len() * 32);
        w.raw(&owner.repo_id)
            .raw(&owner.client)
            .raw(&owner.config_id.0);
        match &self.last_snapshot {
            Some(s) => w.u8(1).raw(&s.0),
            None => w.u8(0),
        };
        w.u32(self.packs.len() as u32);
        for p in &self.packs {
            w.raw(&p.0);
        }
        let keep = self
            .history
            .len()
            .min(holdfast_core::detect::BASELINE_MAX_RUNS);
        let history = &self.history[self.history.len() - keep..];
        w.u32(history.len() as u32);
        for h in history {
            w.u64(h.churn).u64(h.changed_bytes);
        }
        let exts: Vec<&Vec<u8>> = self
            .exts
            .iter()
            .filter(|e| e.len() <= 64)
            .take(MAX_EXTS)
            .collect();
        w.u32(exts.len() as u32);
        for e in exts {
            w.bytes(e);
        }
        w.into_vec()
    }
}

/// The owner `fuzz` loads caches for.
#[doc(hidden)]
pub const FUZZ_OWNER: Owner = Owner {
    repo_id: [1; 16],
    client: [2; 32],
    config_id: ObjectId([3; 32]),
};

/// The fuzz target's way in (`fuzz/fuzz_targets/cache.rs`): `data` made
/// into a cache file in the temp directory, loaded, its files walked and
/// its blob table read. Every outcome is fine but a panic.
///
/// Input: a mode byte, then with bit 0 set the whole file as is; else three
/// u16 (file count, files section length, blob count), the files section,
/// the blobs, then the meta after its owner (bit 1 clear: [`FUZZ_OWNER`] is
/// put in front); the footer, with a matching BLAKE3, is computed.
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
    thread_local! {
        static PATH: PathBuf = std::env::temp_dir().join(format!(
            "holdfast-fuzz-cache-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    let path = PATH.with(|p| p.clone());
    if std::fs::write(&path, &file).is_err() {
        return;
    }
    if let Some(l) = Loaded::load(&path, &FUZZ_OWNER) {
        if let Ok(mut c) = l.cursor() {
            let mut n = 0u64;
            while let Some(e) = c.next_entry() {
                assert!(e.chunks.iter().all(|(_, p)| (*p as usize) < l.packs.len()));
                n += 1;
            }
            assert!(n <= l.files);
        }
        if let Ok(t) = l.blobs() {
            let mut r = t.reader();
            let mut probes = vec![BlobId([0; 32]), BlobId([0xff; 32])];
            while let Ok(Some(rec)) = r.next_rec() {
                if probes.len() < 64 {
                    let mut id = [0u8; 32];
                    id.copy_from_slice(&rec[..32]);
                    probes.push(BlobId(id));
                }
            }
            for id in &probes {
                let _ = t.get(id);
            }
        }
    }
    let _ = std::fs::remove_file(&path);
}

fn fuzz_file(mode: u8, rest: &[u8]) -> Vec<u8> {
    let u = |i: usize| {
        rest.get(i..i + 2)
            .map_or(0, |b| u16::from_le_bytes([b[0], b[1]]))
    };
    let (files, files_len, blobs) = (u(0) as u64, u(2) as usize, u(4) as usize);
    let body = rest.get(6..).unwrap_or(&[]);
    let files_len = files_len.min(body.len());
    let (files_sec, after) = body.split_at(files_len);
    let blobs = blobs.min(after.len() / REC);
    let (blobs_sec, meta_tail) = after.split_at(blobs * REC);
    let mut meta = Vec::new();
    if mode & 2 == 0 {
        meta.extend_from_slice(&FUZZ_OWNER.repo_id);
        meta.extend_from_slice(&FUZZ_OWNER.client);
        meta.extend_from_slice(&FUZZ_OWNER.config_id.0);
    }
    meta.extend_from_slice(meta_tail);
    let mut f = Vec::with_capacity(8 + body.len() + meta.len() + FOOTER as usize);
    f.extend_from_slice(MAGIC);
    f.extend_from_slice(files_sec);
    f.extend_from_slice(blobs_sec);
    let meta_off = f.len() as u64;
    f.extend_from_slice(&meta);
    let hash = blake3::hash(&f);
    let mut foot = Writer::with_capacity(FOOTER as usize);
    foot.u64(8)
        .u64(files)
        .u64(files_len as u64)
        .u64(8 + files_len as u64)
        .u64(blobs as u64)
        .u64(meta_off)
        .u64(meta.len() as u64)
        .raw(hash.as_bytes())
        .raw(MAGIC);
    f.extend_from_slice(&foot.into_vec());
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            repo_id: [1; 16],
            client: [2; 32],
            config_id: ObjectId([3; 32]),
        }
    }

    fn stat(n: u64) -> FileStat {
        FileStat {
            size: n,
            mtime: (1, 2),
            ctime: (3, 4),
            ino: n,
            dev: 6,
        }
    }

    #[test]
    fn round_trip_and_damage_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), &owner());
        let mut w = CacheWriter::create(&p);
        let paths: [&[u8]; 4] = [b"/m/a/x", b"/m/a/y", b"/m/a.txt", b"/m/b"];
        for (k, q) in paths.iter().enumerate() {
            w.file(q, &stat(k as u64), &[(BlobId([k as u8; 32]), 0)]);
        }
        // Out of order: left out.
        w.file(b"/m/a/z", &stat(9), &[]);
        let meta = CacheMeta {
            last_snapshot: Some(ObjectId([4; 32])),
            packs: vec![ObjectId([5; 32])],
            history: (0..40)
                .map(|i| RunStats {
                    churn: i,
                    changed_bytes: i * 10,
                })
                .collect(),
            exts: vec![b"eml".to_vec()],
        };
        w.finish(&owner(), &meta, |out| {
            out.write_all(&crate::blobset::rec(&BlobId([0; 32]), 0))?;
            out.write_all(&crate::blobset::rec(&BlobId([7; 32]), 0))?;
            Ok(2)
        })
        .unwrap();
        let l = Loaded::load(&p, &owner()).unwrap();
        assert_eq!(l.files, 4);
        assert_eq!(l.history.len(), 30);
        assert_eq!(l.history[0].churn, 10);
        assert_eq!(l.exts, vec![b"eml".to_vec()]);
        let mut c = l.cursor().unwrap();
        let mut got = Vec::new();
        while let Some(e) = c.next_entry() {
            assert_eq!(e.stat, stat(got.len() as u64));
            got.push(e.path);
        }
        assert_eq!(got, paths.iter().map(|p| p.to_vec()).collect::<Vec<_>>());
        let t = l.blobs().unwrap();
        assert_eq!(t.get(&BlobId([7; 32])).unwrap(), Some(0));
        assert_eq!(t.get(&BlobId([8; 32])).unwrap(), None);
        // Another owner, a flipped byte, a truncation, an old version.
        let other = Owner {
            client: [9; 32],
            ..owner()
        };
        assert!(Loaded::load(&p, &other).is_none());
        let good = std::fs::read(&p).unwrap();
        for at in [0, 9, 40, good.len() / 2, good.len() - 50, good.len() - 1] {
            let mut b = good.clone();
            b[at] ^= 0x40;
            std::fs::write(&p, &b).unwrap();
            assert!(Loaded::load(&p, &owner()).is_none(), "flip at {at}");
        }
        std::fs::write(&p, &good[..good.len() - 3]).unwrap();
        assert!(Loaded::load(&p, &owner()).is_none());
        std::fs::write(&p, b"HFCACHE2garbage").unwrap();
        assert!(Loaded::load(&p, &owner()).is_none());
    }

    /// Random damage behind a valid hash (the fuzz target's input, made
    /// from a real cache and mutated): every load ends in an error or a
    /// clean stop, never a panic.
    #[test]
    fn damage_behind_a_valid_hash_never_panics() {
        let dir = tempfile::tempdir().unwrap();
        let p = path(dir.path(), &owner());
        let mut w = CacheWriter::create(&p);
        let paths: [&[u8]; 5] = [b"/m/a/x", b"/m/a/y", b"/m/a.txt", b"/m/b", b"/n"];
        for (k, q) in paths.iter().enumerate() {
            let chunks: Vec<(BlobId, u32)> = (0..k as u8)
                .map(|c| (BlobId([c * 16 + k as u8; 32]), c as u32 % 2))
                .collect();
            w.file(q, &stat(k as u64), &chunks);
        }
        let meta = CacheMeta {
            last_snapshot: Some(ObjectId([4; 32])),
            packs: vec![ObjectId([5; 32]), ObjectId([6; 32])],
            history: vec![RunStats {
                churn: 1,
                changed_bytes: 2,
            }],
            exts: vec![b"eml".to_vec(), b"txt".to_vec()],
        };
        w.finish(&owner(), &meta, |out| {
            for i in 0..40u8 {
                out.write_all(&crate::blobset::rec(&BlobId([i * 6; 32]), i as u32 % 2))?;
            }
            Ok(40)
        })
        .unwrap();
        let good = std::fs::read(&p).unwrap();
        // The same file in the fuzz input format.
        let foot = &good[good.len() - FOOTER as usize..];
        let u = |i: usize| u64::from_le_bytes(foot[i * 8..i * 8 + 8].try_into().unwrap());
        let (files, files_len, blobs_off, blobs, meta_off) = (u(1), u(2), u(3), u(4), u(5));
        let mut input = vec![0u8];
        for v in [files, files_len, blobs] {
            input.extend_from_slice(&(v as u16).to_le_bytes());
        }
        input.extend_from_slice(&good[8..meta_off as usize]);
        input.extend_from_slice(&good[meta_off as usize + 80..good.len() - FOOTER as usize]);
        assert_eq!(blobs_off, 8 + files_len);
        // Unmutated, the harness rebuilds the very file: it reaches the parsers.
        assert_eq!(fuzz_file(0, &input[1..]), good);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n.max(1) as u64) as usize
        };
        for round in 0..4000 {
            let mut b = input.clone();
            crate::mutate::damage(&mut b, &mut next);
            if round % 7 == 0 {
                b[0] = next(4) as u8;
            }
            fuzz(&b);
        }
        fuzz(&good);
        fuzz(&[]);
        fuzz(&[0]);
    }

    #[test]
    fn walk_order() {
        use std::cmp::Ordering::Less;
        assert_eq!(cmp_path(b"/m/a/x", b"/m/a.txt"), Less);
        assert_eq!(cmp_path(b"/m/a", b"/m/a/x"), Less);
        assert_eq!(cmp_path(b"/m/a/x", b"/m/ab"), Less);
    }
}
