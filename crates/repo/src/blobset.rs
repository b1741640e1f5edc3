//! Which blobs are stored, and in which pack: on disk, not in memory.
//!
//! *Before this run* the set is a sorted table of 36-byte records (blob id,
//! pack number) — a section of the cache file, or a scratch file rebuilt
//! from pack tables when the cache is lost. A lookup is a binary search
//! over an in-memory fence (the first id of every 4 KiB block: 32 bytes
//! per 113 blobs) and one `pread` of that block. No mmap: touched pages of
//! a mapping count into RSS, `pread` goes through the page cache.
//!
//! *This run's new blobs* are deduplicated in a small in-memory map; when
//! it fills up it is sorted into a run in a scratch file (with its own
//! fence and a 16-bit-per-blob Bloom filter, so that looking up a blob
//! that is new costs no read). At the end everything is merged into the
//! next cache's sorted table. Memory: about 3 bytes per stored blob (fence
//! and filters) plus a fixed buffer.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use holdfast_core::BlobId;

use crate::spill::{Spill, scratch_file};

/// Bytes per record: blob id, then pack number (u32 little-endian).
pub const REC: usize = 36;
/// Records per block read at once (4068 bytes).
const BLOCK: u64 = 113;
/// New blobs held in memory before a sorted run is written.
const NEW_IN_MEMORY: usize = 1 << 16;
/// Sorted runs of new blobs kept apart at most: then they are merged into
/// one (a lookup checks every run's filter).
const MAX_RUNS: usize = 8;
/// Marks a blob reserved by a worker that is still sealing it.
const PENDING: u32 = u32::MAX;

pub fn rec(id: &BlobId, pack: u32) -> [u8; REC] {
    let mut r = [0u8; REC];
    r[..32].copy_from_slice(&id.0);
    r[32..].copy_from_slice(&pack.to_le_bytes());
    r
}

fn rec_pack(r: &[u8]) -> u32 {
    u32::from_le_bytes([r[32], r[33], r[34], r[35]])
}

/// A sorted table of records in a file, from byte `off`.
pub struct Table {
    file: Arc<File>,
    off: u64,
    count: u64,
    fences: Vec<[u8; 32]>,
}

impl Table {
    /// Reads the fence (one small read per block).
    pub fn open(file: Arc<File>, off: u64, count: u64) -> io::Result<Table> {
        let blocks = count.div_ceil(BLOCK);
        let mut fences = Vec::with_capacity(blocks as usize);
        for b in 0..blocks {
            let mut id = [0u8; 32];
            file.read_exact_at(&mut id, off + b * BLOCK * REC as u64)?;
            if fences.last().is_some_and(|l: &[u8; 32]| *l >= id) {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "blobs unsorted"));
            }
            fences.push(id);
        }
        Ok(Table {
            file,
            off,
            count,
            fences,
        })
    }

    pub fn len(&self) -> u64 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn get(&self, id: &BlobId) -> io::Result<Option<u32>> {
        let b = self.fences.partition_point(|f| f <= &id.0);
        if b == 0 {
            return Ok(None);
        }
        let b = (b - 1) as u64;
        let n = (self.count - b * BLOCK).min(BLOCK) as usize;
        let mut buf = [0u8; BLOCK as usize * REC];
        let buf = &mut buf[..n * REC];
        self.file
            .read_exact_at(buf, self.off + b * BLOCK * REC as u64)?;
        let (mut lo, mut hi) = (0usize, n);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let r = &buf[mid * REC..(mid + 1) * REC];
            match r[..32].cmp(&id.0) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(rec_pack(r))),
            }
        }
        Ok(None)
    }

    /// All records in order, read through a buffer.
    pub fn reader(&self) -> TableReader {
        TableReader {
            file: self.file.clone(),
            next: self.off,
            end: self.off + self.count * REC as u64,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

pub struct TableReader {
    file: Arc<File>,
    next: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

impl TableReader {
    pub fn next_rec(&mut self) -> io::Result<Option<[u8; REC]>> {
        if self.pos + REC > self.buf.len() {
            if self.next >= self.end {
                return Ok(None);
            }
            let want = ((self.end - self.next) as usize).min(1800 * REC);
            self.buf.resize(want, 0);
            self.file.read_exact_at(&mut self.buf, self.next)?;
            self.next += want as u64;
            self.pos = 0;
        }
        let mut r = [0u8; REC];
        r.copy_from_slice(&self.buf[self.pos..self.pos + REC]);
        self.pos += REC;
        Ok(Some(r))
    }
}

/// A Bloom filter over blob ids (which are uniformly random already).
struct Bloom {
    bits: Vec<u64>,
    mask: u64,
}

impl Bloom {
    fn new(n: usize) -> Bloom {
        let nbits = (n.max(64) * 16).next_power_of_two() as u64;
        Bloom {
            bits: vec![0; (nbits / 64) as usize],
            mask: nbits - 1,
        }
    }
    fn probes(id: &BlobId) -> [u64; 4] {
        let w = |i: usize| u64::from_le_bytes(id.0[i..i + 8].try_into().unwrap_or([0; 8]));
        [w(0), w(8), w(16), w(24)]
    }
    fn insert(&mut self, id: &BlobId) {
        for h in Self::probes(id) {
            let b = h & self.mask;
            self.bits[(b / 64) as usize] |= 1 << (b % 64);
        }
    }
    fn may_contain(&self, id: &BlobId) -> bool {
        Self::probes(id).iter().all(|h| {
            let b = h & self.mask;
            self.bits[(b / 64) as usize] & (1 << (b % 64)) != 0
        })
    }
}

struct NewBlobs {
    mem: HashMap<BlobId, u32>,
    sort_buf: Vec<[u8; REC]>,
    write_buf: Vec<u8>,
    runs: Vec<(Table, Bloom)>,
    file: Option<Arc<File>>,
    end: u64,
    count: u64,
}

/// What [`BlobSet::reserve`] found.
pub enum Reserve {
    /// Stored before this run, in this pack.
    Old(u32),
    /// Stored earlier in this run, in this pack.
    New(u32),
    /// Not stored: the caller must store it and call [`BlobSet::resolve`].
    Mine,
}

pub struct BlobSet {
    old: Option<Table>,
    /// Pack number → the pack still exists. Blobs in other packs are
    /// treated as not stored.
    live: Vec<bool>,
    new: Mutex<NewBlobs>,
    dir: PathBuf,
}

impl BlobSet {
    pub fn new(old: Option<Table>, live: Vec<bool>, scratch_dir: &Path) -> BlobSet {
        BlobSet {
            old,
            live,
            new: Mutex::new(NewBlobs {
                mem: HashMap::with_capacity(NEW_IN_MEMORY),
                sort_buf: Vec::new(),
                write_buf: Vec::new(),
                runs: Vec::new(),
                file: None,
                end: 0,
                count: 0,
            }),
            dir: scratch_dir.to_path_buf(),
        }
    }

    /// The pack holding `id` before this run, if it still exists. A read
    /// error counts as not stored (the blob is stored again).
    pub fn old_pack(&self, id: &BlobId) -> Option<u32> {
        let p = self.old.as_ref()?.get(id).ok().flatten()?;
        self.live
            .get(p as usize)
            .copied()
            .unwrap_or(false)
            .then_some(p)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NewBlobs> {
        self.new.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Looks `id` up; when nobody has it, reserves it for the caller. A
    /// blob another worker is still sealing is waited for (until `failed`).
    pub fn reserve(&self, id: &BlobId, failed: &AtomicBool) -> io::Result<Reserve> {
        if let Some(p) = self.old_pack(id) {
            return Ok(Reserve::Old(p));
        }
        loop {
            {
                let mut n = self.lock();
                match n.mem.get(id) {
                    Some(&PENDING) => {}
                    Some(&p) => return Ok(Reserve::New(p)),
                    None => {
                        for (t, bloom) in &n.runs {
                            if bloom.may_contain(id)
                                && let Some(p) = t.get(id)?
                            {
                                return Ok(Reserve::New(p));
                            }
                        }
                        n.mem.insert(*id, PENDING);
                        return Ok(Reserve::Mine);
                    }
                }
            }
            if failed.load(Ordering::Relaxed) {
                return Err(io::Error::other("backup aborted"));
            }
            std::thread::yield_now();
        }
    }

    /// The reserved blob is now in pack `pack`.
    pub fn resolve(&self, id: &BlobId, pack: u32) -> io::Result<()> {
        let mut n = self.lock();
        n.mem.insert(*id, pack);
        n.count += 1;
        if n.mem.len() >= NEW_IN_MEMORY {
            self.spill(&mut n)?;
        }
        Ok(())
    }

    /// The reserved blob will not be stored (its worker failed).
    pub fn abandon(&self, id: &BlobId) {
        let mut n = self.lock();
        if n.mem.get(id) == Some(&PENDING) {
            n.mem.remove(id);
        }
    }

    fn spill(&self, n: &mut NewBlobs) -> io::Result<()> {
        // The buffers are kept from one spill to the next: large short-lived
        // allocations make the allocator keep memory that never comes back.
        let mut done = std::mem::take(&mut n.sort_buf);
        done.clear();
        done.extend(
            n.mem
                .iter()
                .filter(|(_, p)| **p != PENDING)
                .map(|(i, p)| rec(i, *p)),
        );
        if done.is_empty() {
            n.sort_buf = done;
            return Ok(());
        }
        done.sort_unstable();
        if n.file.is_none() {
            n.file = Some(Arc::new(scratch_file(&self.dir)?));
        }
        let Some(file) = n.file.clone() else {
            return Err(io::Error::other("no scratch file"));
        };
        let mut bloom = Bloom::new(done.len());
        let mut fences = Vec::with_capacity(done.len() / BLOCK as usize + 1);
        let mut at = n.end;
        let mut out = std::mem::take(&mut n.write_buf);
        out.clear();
        for (k, r) in done.iter().enumerate() {
            let mut id = [0u8; 32];
            id.copy_from_slice(&r[..32]);
            if (k as u64).is_multiple_of(BLOCK) {
                fences.push(id);
            }
            bloom.insert(&BlobId(id));
            n.mem.remove(&BlobId(id));
            out.extend_from_slice(r);
            if out.len() >= 32 << 10 {
                file.write_all_at(&out, at)?;
                at += out.len() as u64;
                out.clear();
            }
        }
        file.write_all_at(&out, at)?;
        at += out.len() as u64;
        let t = Table {
            file,
            off: n.end,
            count: done.len() as u64,
            fences,
        };
        n.end = at;
        n.runs.push((t, bloom));
        n.sort_buf = done;
        n.write_buf = out;
        if n.runs.len() >= MAX_RUNS {
            self.compact(n)?;
        }
        Ok(())
    }

    /// Merges every run into one, appended to the scratch file, with one
    /// filter: lookups stay at one filter per [`MAX_RUNS`] runs.
    fn compact(&self, n: &mut NewBlobs) -> io::Result<()> {
        let Some(file) = n.file.clone() else {
            return Ok(());
        };
        let total: u64 = n.runs.iter().map(|(t, _)| t.count).sum();
        let mut readers: Vec<TableReader> = n.runs.iter().map(|(t, _)| t.reader()).collect();
        let mut heap = std::collections::BinaryHeap::new();
        for (i, r) in readers.iter_mut().enumerate() {
            if let Some(x) = r.next_rec()? {
                heap.push(std::cmp::Reverse((x, i)));
            }
        }
        let mut bloom = Bloom::new(total as usize);
        let mut fences = Vec::with_capacity((total / BLOCK) as usize + 1);
        let off = n.end;
        let mut at = off;
        let mut out = std::mem::take(&mut n.write_buf);
        out.clear();
        let mut k = 0u64;
        while let Some(std::cmp::Reverse((r, i))) = heap.pop() {
            if let Some(x) = readers[i].next_rec()? {
                heap.push(std::cmp::Reverse((x, i)));
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&r[..32]);
            if k.is_multiple_of(BLOCK) {
                fences.push(id);
            }
            bloom.insert(&BlobId(id));
            out.extend_from_slice(&r);
            k += 1;
            if out.len() >= 32 << 10 {
                file.write_all_at(&out, at)?;
                at += out.len() as u64;
                out.clear();
            }
        }
        file.write_all_at(&out, at)?;
        at += out.len() as u64;
        out.clear();
        n.write_buf = out;
        n.end = at;
        n.runs = vec![(
            Table {
                file,
                off,
                count: k,
                fences,
            },
            bloom,
        )];
        Ok(())
    }

    /// Writes every blob (those before this run still in live packs, and
    /// this run's) as one sorted table; returns the count.
    pub fn write_all(&self, out: &mut dyn Write, live_after: &[bool]) -> io::Result<u64> {
        let n = self.lock();
        let mut mem: Vec<[u8; REC]> = n
            .mem
            .iter()
            .filter(|(_, p)| **p != PENDING)
            .map(|(i, p)| rec(i, *p))
            .collect();
        mem.sort_unstable();
        let mut sources: Vec<Source<'_>> = Vec::new();
        if let Some(t) = &self.old {
            let mut r = t.reader();
            sources.push(Box::new(move || r.next_rec()));
        }
        for (t, _) in &n.runs {
            let mut r = t.reader();
            sources.push(Box::new(move || r.next_rec()));
        }
        let mut it = mem.into_iter();
        sources.push(Box::new(move || Ok(it.next())));
        let mut heap = std::collections::BinaryHeap::new();
        for (i, s) in sources.iter_mut().enumerate() {
            if let Some(r) = s()? {
                heap.push(std::cmp::Reverse((r, i)));
            }
        }
        let mut last: Option<[u8; 32]> = None;
        let mut count = 0u64;
        while let Some(std::cmp::Reverse((r, i))) = heap.pop() {
            if let Some(nx) = sources[i]()? {
                heap.push(std::cmp::Reverse((nx, i)));
            }
            let live = live_after
                .get(rec_pack(&r) as usize)
                .copied()
                .unwrap_or(false);
            if !live || last.is_some_and(|l| l[..] == r[..32]) {
                continue;
            }
            let mut id = [0u8; 32];
            id.copy_from_slice(&r[..32]);
            last = Some(id);
            out.write_all(&r)?;
            count += 1;
        }
        Ok(count)
    }
}

/// One sorted stream of records, for merging.
type Source<'a> = Box<dyn FnMut() -> io::Result<Option<[u8; REC]>> + 'a>;

/// Builds a sorted table in a scratch file from records in any order (the
/// lost-cache rebuild).
pub struct TableBuilder {
    spill: Spill<REC>,
    dir: PathBuf,
}

impl TableBuilder {
    pub fn new(dir: &Path) -> TableBuilder {
        TableBuilder {
            spill: Spill::new(dir, 1 << 16),
            dir: dir.to_path_buf(),
        }
    }
    pub fn push(&mut self, id: &BlobId, pack: u32) -> io::Result<()> {
        self.spill.push(rec(id, pack))
    }
    /// Sorted and deduplicated (the first pack of a blob stored twice).
    pub fn finish(self) -> io::Result<Table> {
        let mut m = self.spill.finish()?;
        let file = scratch_file(&self.dir)?;
        let mut w = io::BufWriter::with_capacity(64 << 10, &file);
        let mut last: Option<[u8; REC]> = None;
        let mut count = 0u64;
        while let Some(r) = m.next_rec()? {
            if last.is_some_and(|l| l[..32] == r[..32]) {
                continue;
            }
            w.write_all(&r)?;
            last = Some(r);
            count += 1;
        }
        w.flush()?;
        drop(w);
        Table::open(Arc::new(file), 0, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u32) -> BlobId {
        let mut b = [0u8; 32];
        let h = blake3::hash(&n.to_le_bytes());
        b.copy_from_slice(h.as_bytes());
        BlobId(b)
    }

    #[test]
    fn old_and_new_blobs_are_found_and_merged() {
        let dir = tempfile::tempdir().unwrap();
        let mut tb = TableBuilder::new(dir.path());
        for n in 0..1000 {
            tb.push(&id(n), n % 3).unwrap();
        }
        let t = tb.finish().unwrap();
        assert_eq!(t.len(), 1000);
        // Pack 2 is gone.
        let set = BlobSet::new(Some(t), vec![true, true, false, true], dir.path());
        let failed = AtomicBool::new(false);
        assert!(matches!(
            set.reserve(&id(3), &failed).unwrap(),
            Reserve::Old(0)
        ));
        assert!(matches!(
            set.reserve(&id(2), &failed).unwrap(),
            Reserve::Mine
        ));
        set.resolve(&id(2), 3).unwrap();
        assert!(matches!(
            set.reserve(&id(2), &failed).unwrap(),
            Reserve::New(3)
        ));
        for n in 5000..5000 + NEW_IN_MEMORY as u32 * (MAX_RUNS as u32 + 1) + 7 {
            assert!(matches!(
                set.reserve(&id(n), &failed).unwrap(),
                Reserve::Mine
            ));
            set.resolve(&id(n), 3).unwrap();
        }
        assert!(matches!(
            set.reserve(&id(5001), &failed).unwrap(),
            Reserve::New(3)
        ));
        assert!(matches!(
            set.reserve(&id(1_000_000), &failed).unwrap(),
            Reserve::Mine
        ));
        set.abandon(&id(1_000_000));
        let mut out = Vec::new();
        let n = set.write_all(&mut out, &[true, true, false, true]).unwrap();
        // 1000 old minus pack 2's 333, plus 1 + 9*65536+7 new.
        assert_eq!(
            n,
            667 + 1 + NEW_IN_MEMORY as u64 * (MAX_RUNS as u64 + 1) + 7
        );
        assert!(
            out.chunks(REC)
                .zip(out.chunks(REC).skip(1))
                .all(|(a, b)| a < b)
        );
    }
}
