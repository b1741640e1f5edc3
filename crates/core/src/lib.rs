//! holdfast-core: the repository format, ids, chunking and cryptography.
//!
//! No filesystem, network or clock calls live here; callers pass bytes in
//! and get bytes or errors out. `docs/format.md` is the binding description
//! of every layout implemented in [`format`] and [`keyfile`].

pub mod chunker;
pub mod codec;
pub mod crypto;
pub mod detect;
pub mod format;
pub mod governance;
pub mod id;
pub mod keyfile;
pub mod logstate;
pub mod merkle;
pub mod request;
pub mod retention;
pub mod shares;
pub mod vaultlog;

pub use codec::DecodeError;
pub use id::{BlobId, ObjectId};

/// Decodes `data` with every decoder of untrusted repository bytes, and
/// folds it as a vault log; used by
/// the fuzz target and by property tests. Must never panic.
pub fn decode_any(data: &[u8]) {
    let _ = format::Config::decode(data);
    let _ = format::IdentityRecord::decode(data);
    // The same bytes as a successor record (version 2) of a client key.
    if data.len() >= 12 {
        let mut v2 = data.to_vec();
        v2[..8].copy_from_slice(format::IDENTITY_MAGIC);
        v2[8..12].copy_from_slice(&format::IDENTITY_VERSION_SUCCESSOR.to_le_bytes());
        let _ = format::IdentityRecord::decode(&v2);
    }
    let _ = format::Tree::decode(data);
    let _ = format::SnapshotBody::decode(data);
    let _ = format::Snapshot::decode(data);
    let _ = format::Finding::decode_all(data);
    let _ = format::parse_pack(data);
    let _ = format::decode_pack_table(data, data.len() as u64);
    let _ = keyfile::KeyFile::decode(data);
    let _ = shares::ShareFile::decode(data);
    // The same bytes with a valid checksum, to reach the share's fields.
    let mut summed = data.to_vec();
    summed.extend_from_slice(blake3::hash(data).as_bytes());
    let _ = shares::ShareFile::decode(&summed);
    let _ = merkle::Checkpoint::decode(data);
    let _ = governance::Proposal::decode(data);
    let _ = governance::Vote::decode(data);
    let _ = vaultlog::Entry::decode(data);
    logstate::fold_any(data);
    let _ = std::str::from_utf8(data).map(|s| request::Auth::from_headers(|_| Some(s)));
    if data.len() >= format::PACK_TRAILER_LEN {
        let _ = format::pack_table_len(&data[data.len() - format::PACK_TRAILER_LEN..]);
    }
}
