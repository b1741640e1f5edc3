//! Fixed-size records sorted on disk: what `backup` keeps per file or per
//! blob without holding it in memory.
//!
//! A [`Spill`] buffers up to `cap` records; when full it sorts them and
//! appends them as one sorted *run* to an unlinked temporary file. At the
//! end, [`Spill::finish`] merges the runs (k-way, each read through a small
//! buffer) into one ascending stream. Records compare bytewise, so a key
//! stored big-endian first sorts by that key. Memory: the buffer plus
//! 16 KiB per run, whatever the number of records.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

/// Bytes read at a time from each run while merging.
const RUN_BUFFER: usize = 16 << 10;

/// A new, already unlinked file in `dir` (owner-only), for scratch data
/// that must not outlive the process.
pub fn scratch_file(dir: &Path) -> io::Result<File> {
    let rnd: [u8; 8] =
        holdfast_core::crypto::random_bytes().map_err(|e| io::Error::other(e.to_string()))?;
    let path = dir.join(format!(".scratch-{}.tmp", holdfast_core::id::hex(&rnd)));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(f)
}

/// One sorted run in a scratch file: `count` records from byte `off`.
#[derive(Clone, Copy, Debug)]
pub struct Run {
    pub off: u64,
    pub count: u64,
}

pub struct Spill<const N: usize> {
    buf: Vec<[u8; N]>,
    cap: usize,
    dir: std::path::PathBuf,
    file: Option<File>,
    runs: Vec<Run>,
    end: u64,
    total: u64,
}

impl<const N: usize> Spill<N> {
    pub fn new(dir: &Path, cap: usize) -> Self {
        Spill {
            buf: Vec::new(),
            cap: cap.max(1),
            dir: dir.to_path_buf(),
            file: None,
            runs: Vec::new(),
            end: 0,
            total: 0,
        }
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn push(&mut self, rec: [u8; N]) -> io::Result<()> {
        if self.buf.capacity() == 0 {
            self.buf.reserve_exact(self.cap);
        }
        self.buf.push(rec);
        self.total += 1;
        if self.buf.len() >= self.cap {
            self.spill()?;
        }
        Ok(())
    }

    fn spill(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.buf.sort_unstable();
        if self.file.is_none() {
            self.file = Some(scratch_file(&self.dir)?);
        }
        let Some(f) = &self.file else {
            return Err(io::Error::other("no scratch file"));
        };
        let mut w = io::BufWriter::with_capacity(64 << 10, f);
        for r in &self.buf {
            w.write_all(r)?;
        }
        w.flush()?;
        drop(w);
        let count = self.buf.len() as u64;
        self.runs.push(Run {
            off: self.end,
            count,
        });
        self.end += count * N as u64;
        // The buffer is kept: a large allocation freed and made again is
        // memory the allocator may never give back.
        self.buf.clear();
        Ok(())
    }

    /// All records, ascending (duplicates kept).
    pub fn finish(mut self) -> io::Result<Merged<N>> {
        if self.file.is_none() {
            // Everything fits in memory: no file at all.
            self.buf.sort_unstable();
            return Ok(Merged {
                mem: std::mem::take(&mut self.buf).into_iter(),
                file: None,
                readers: Vec::new(),
                heap: BinaryHeap::new(),
            });
        }
        self.spill()?;
        let file = self.file.take();
        let mut m = Merged {
            mem: Vec::new().into_iter(),
            file,
            readers: self
                .runs
                .iter()
                .map(|r| RunReader {
                    next: r.off,
                    end: r.off + r.count * N as u64,
                    buf: Vec::new(),
                    pos: 0,
                })
                .collect(),
            heap: BinaryHeap::new(),
        };
        for i in 0..m.readers.len() {
            if let Some(r) = m.read_one(i)? {
                m.heap.push(Reverse((r, i)));
            }
        }
        Ok(m)
    }
}

struct RunReader {
    next: u64,
    end: u64,
    buf: Vec<u8>,
    pos: usize,
}

pub struct Merged<const N: usize> {
    mem: std::vec::IntoIter<[u8; N]>,
    file: Option<File>,
    readers: Vec<RunReader>,
    heap: BinaryHeap<Reverse<([u8; N], usize)>>,
}

impl<const N: usize> Merged<N> {
    fn read_one(&mut self, i: usize) -> io::Result<Option<[u8; N]>> {
        let Some(f) = &self.file else {
            return Ok(None);
        };
        let r = &mut self.readers[i];
        if r.pos + N > r.buf.len() {
            if r.next >= r.end {
                return Ok(None);
            }
            let want = ((r.end - r.next) as usize).min(RUN_BUFFER / N * N).max(N);
            r.buf.resize(want, 0);
            f.read_exact_at(&mut r.buf, r.next)?;
            r.next += want as u64;
            r.pos = 0;
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&r.buf[r.pos..r.pos + N]);
        r.pos += N;
        Ok(Some(out))
    }

    /// The next record, ascending; `None` at the end.
    pub fn next_rec(&mut self) -> io::Result<Option<[u8; N]>> {
        if self.file.is_none() {
            return Ok(self.mem.next());
        }
        let Some(Reverse((rec, i))) = self.heap.pop() else {
            return Ok(None);
        };
        if let Some(r) = self.read_one(i)? {
            self.heap.push(Reverse((r, i)));
        }
        Ok(Some(rec))
    }
}

/// A peekable wrapper over [`Merged`], for merge-joins.
pub struct Peek<const N: usize> {
    inner: Merged<N>,
    head: Option<[u8; N]>,
}

impl<const N: usize> Peek<N> {
    pub fn new(mut inner: Merged<N>) -> io::Result<Self> {
        let head = inner.next_rec()?;
        Ok(Peek { inner, head })
    }
    pub fn peek(&self) -> Option<&[u8; N]> {
        self.head.as_ref()
    }
    pub fn advance(&mut self) -> io::Result<Option<[u8; N]>> {
        let cur = self.head.take();
        self.head = self.inner.next_rec()?;
        Ok(cur)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_runs_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Spill::<4>::new(dir.path(), 7);
        let mut want = Vec::new();
        let mut x = 12345u32;
        for _ in 0..100 {
            x = x.wrapping_mul(1103515245).wrapping_add(12345);
            s.push(x.to_be_bytes()).unwrap();
            want.push(x.to_be_bytes());
        }
        want.sort();
        let mut m = s.finish().unwrap();
        let mut got = Vec::new();
        while let Some(r) = m.next_rec().unwrap() {
            got.push(r);
        }
        assert_eq!(got, want);
        // Nothing left behind in the directory.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
