//! A small, bounded binary codec for every record in the repository.
//!
//! All integers are little-endian. Byte strings carry a `u32` length prefix.
//! The reader never allocates more than the bytes actually present, so a
//! hostile length prefix cannot make it reserve gigabytes; every read is
//! bounds-checked and returns [`DecodeError`] instead of panicking.

use thiserror::Error;

/// Why a record could not be decoded. Always means "corrupt or not ours".
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("truncated record (wanted {wanted} more bytes at offset {at})")]
    Truncated { at: usize, wanted: usize },
    #[error("bad magic: not a holdfast {0}")]
    BadMagic(&'static str),
    #[error("unsupported {what} version {version}")]
    Version { what: &'static str, version: u32 },
    #[error("invalid {0}")]
    Invalid(&'static str),
    #[error("{0} exceeds its limit")]
    TooLarge(&'static str),
    #[error("{0} trailing bytes after record")]
    Trailing(usize),
}

/// Appends encoded values to a byte vector.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn with_capacity(n: usize) -> Self {
        Self {
            buf: Vec::with_capacity(n),
        }
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn i64(&mut self, v: i64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// Fixed-size bytes, no length prefix.
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(v);
        self
    }
    /// Length-prefixed (`u32`) bytes.
    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        let len = u32::try_from(v.len()).expect("record field over 4 GiB");
        self.u32(len);
        self.raw(v)
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub fn into_vec(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads values from a byte slice with bounds checks.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.remaining() < n {
            return Err(DecodeError::Truncated {
                at: self.pos,
                wanted: n,
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, DecodeError> {
        Ok(i64::from_le_bytes(self.array()?))
    }
    /// Length-prefixed bytes, refusing lengths over `max`.
    pub fn bytes(&mut self, max: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(DecodeError::TooLarge(what));
        }
        self.take(n)
    }
    /// A count of following items, each at least `min_item` bytes long;
    /// refuses counts the remaining input cannot possibly hold.
    pub fn count(&mut self, min_item: usize, what: &'static str) -> Result<usize, DecodeError> {
        let n = self.u32()? as usize;
        if n.saturating_mul(min_item.max(1)) > self.remaining() {
            return Err(DecodeError::TooLarge(what));
        }
        Ok(n)
    }
    pub fn magic(&mut self, magic: &[u8; 8], what: &'static str) -> Result<(), DecodeError> {
        if self.take(8).map_err(|_| DecodeError::BadMagic(what))? != magic {
            return Err(DecodeError::BadMagic(what));
        }
        Ok(())
    }
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bounds() {
        let mut w = Writer::new();
        w.u8(7).u32(9).u64(11).i64(-3).bytes(b"abc");
        let v = w.into_vec();
        let mut r = Reader::new(&v);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 9);
        assert_eq!(r.u64().unwrap(), 11);
        assert_eq!(r.i64().unwrap(), -3);
        assert_eq!(r.bytes(10, "x").unwrap(), b"abc");
        r.finish().unwrap();
        let mut r = Reader::new(&v[..3]);
        r.u8().unwrap();
        assert!(r.u32().is_err());
    }

    #[test]
    fn hostile_counts_refused() {
        let v = [0xff, 0xff, 0xff, 0xff];
        assert!(Reader::new(&v).count(1, "x").is_err());
        assert!(Reader::new(&v).bytes(usize::MAX, "x").is_err());
    }
}
