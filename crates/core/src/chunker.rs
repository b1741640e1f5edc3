//! Content-defined chunking: FastCDC 2020 (crate `fastcdc`, pinned to 5.0.0,
//! normalisation level 1, no seed), with the sizes in the repository config.
//! Chunk boundaries are part of the format: they decide deduplication, and
//! the golden test below fails if they ever drift.
//!
//! Small inputs are chunked from memory, large ones streamed; both paths give
//! the same boundaries (tested).

use std::io::Read;

use fastcdc::v2020::{FastCDC, StreamCDC};

use crate::format::Chunking;

/// Calls `f` with each chunk of `data` in order.
pub fn chunk_slice<E>(
    p: &Chunking,
    data: &[u8],
    mut f: impl FnMut(&[u8]) -> Result<(), E>,
) -> Result<(), E> {
    if data.is_empty() {
        return Ok(());
    }
    for c in FastCDC::new(data, p.min as usize, p.avg as usize, p.max as usize) {
        f(&data[c.offset..c.offset + c.length])?;
    }
    Ok(())
}

/// Error from [`chunk_stream`]: reading failed, or the callback failed.
#[derive(Debug)]
pub enum StreamError<E> {
    Read(std::io::Error),
    Sink(E),
}

/// Streams `source` through the chunker, calling `f` with each chunk; holds
/// at most `max` bytes at a time.
pub fn chunk_stream<R: Read, E>(
    p: &Chunking,
    source: R,
    mut f: impl FnMut(Vec<u8>) -> Result<(), E>,
) -> Result<(), StreamError<E>> {
    for c in StreamCDC::new(source, p.min as usize, p.avg as usize, p.max as usize) {
        let c = c.map_err(|e| match e {
            fastcdc::v2020::Error::IoError(e) => StreamError::Read(e),
            other => StreamError::Read(std::io::Error::other(other.to_string())),
        })?;
        f(c.data).map_err(StreamError::Sink)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random bytes (xorshift), so the test needs no files.
    pub fn seeded(n: usize, mut s: u64) -> Vec<u8> {
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 24) as u8
            })
            .collect()
    }

    fn lengths_slice(data: &[u8]) -> Vec<usize> {
        let mut v = Vec::new();
        chunk_slice::<()>(&Chunking::DEFAULT, data, |c| {
            v.push(c.len());
            Ok(())
        })
        .unwrap();
        v
    }

    #[test]
    fn golden_boundaries() {
        let data = seeded(2 << 20, 0x5eed);
        let lens = lengths_slice(&data);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        // Golden values: if this changes, deduplication against every existing
        // repository breaks. Never update it without a format version bump.
        let digest = blake3::hash(
            &lens
                .iter()
                .flat_map(|l| (*l as u32).to_le_bytes())
                .collect::<Vec<_>>(),
        );
        assert_eq!(lens.len(), 22);
        assert_eq!(&lens[..4], &[80324, 98978, 93729, 136093]);
        assert_eq!(&digest.to_hex()[..16], "7816b9e77c4a7abc");
    }

    #[test]
    fn stream_equals_slice() {
        let data = seeded(3 << 20, 42);
        let mut streamed = Vec::new();
        chunk_stream::<_, ()>(&Chunking::DEFAULT, &data[..], |c| {
            streamed.push(c.len());
            Ok(())
        })
        .unwrap();
        assert_eq!(streamed, lengths_slice(&data));
    }
}
