//! Identifiers. Two kinds, never mixed up:
//!
//! * [`BlobId`]: keyed BLAKE3 of a chunk's or tree's *plaintext*, under the
//!   repository's id key. Whoever lacks the id key learns nothing from it.
//! * [`ObjectId`]: plain BLAKE3 of a stored file's bytes (pack, snapshot,
//!   identity record). Anyone, the vault included, can check an object
//!   against its name without any key.

use std::fmt;

use crate::codec::DecodeError;

macro_rules! id_type {
    ($name:ident, $doc:literal) => {
        #[doc = $doc]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }
            pub fn from_hex(s: &str) -> Result<Self, DecodeError> {
                Ok(Self(parse_hex32(s)?))
            }
            /// First 8 hex digits, for display.
            pub fn short(&self) -> String {
                hex(&self.0[..4])
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.short())
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }
    };
}

id_type!(BlobId, "Keyed BLAKE3 of a blob's plaintext.");
id_type!(ObjectId, "BLAKE3 of a stored object's bytes; its name.");

impl ObjectId {
    pub fn of(bytes: &[u8]) -> Self {
        Self(*blake3::hash(bytes).as_bytes())
    }
}

pub fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for &x in b {
        s.push(D[(x >> 4) as usize] as char);
        s.push(D[(x & 15) as usize] as char);
    }
    s
}

pub fn parse_hex(s: &str) -> Result<Vec<u8>, DecodeError> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return Err(DecodeError::Invalid("hex string"));
    }
    let nib = |c: u8| -> Result<u8, DecodeError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            _ => Err(DecodeError::Invalid("hex string")),
        }
    };
    b.chunks(2)
        .map(|p| Ok(nib(p[0])? << 4 | nib(p[1])?))
        .collect()
}

pub fn parse_hex32(s: &str) -> Result<[u8; 32], DecodeError> {
    let v = parse_hex(s)?;
    v.try_into().map_err(|_| DecodeError::Invalid("id length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn hex_round_trip() {
        let id = ObjectId::of(b"x");
        assert_eq!(ObjectId::from_hex(&id.to_hex()).unwrap(), id);
        assert!(ObjectId::from_hex("zz").is_err());
        assert!(ObjectId::from_hex("AB").is_err());
        assert!(ObjectId::from_hex("../../etc/passwd").is_err());
    }
}
