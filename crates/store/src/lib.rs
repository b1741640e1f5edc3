//! Storage backends behind one trait.
//!
//! # The contract every backend keeps
//!
//! * Objects are named by kind and name. Except for the config, the name is
//!   the hex [`ObjectId`] (BLAKE3) of the bytes.
//! * `put` is idempotent and **never overwrites**: putting a name that exists
//!   changes nothing and succeeds. A put returns only once the object is
//!   durable (for a directory: written, fsynced, renamed, directory fsynced).
//! * `get` of a content-addressed object checks the bytes against the name
//!   and returns [`StoreError::Corrupt`] if they differ. Range reads cannot
//!   be checked here; the blob layer authenticates every blob it reads.
//! * `list` returns each object once, with its size.
//! * There is no delete in this trait. Reclaiming storage is the vault's
//!   job, on its own terms, outside the client path.
//! * Errors say whether trying again can help ([`StoreError::is_transient`]).

use std::fmt;

use holdfast_core::ObjectId;

mod bundle;
mod local;
mod s3;
mod staged;
mod vault;
pub use bundle::BundleSet;
pub use local::{LocalDir, create_private_dir, fsync_dir, read_regular, write_private};
pub use s3::{S3Settings, S3Store};
pub use staged::{STAGE_SUFFIX, Staged, clean_staging};

pub use vault::VaultBackend;

/// What kind of object, which decides where it lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    Config,
    Pack,
    Snapshot,
    Identity,
}

impl Kind {
    pub fn dir(self) -> &'static str {
        match self {
            Kind::Config => "",
            Kind::Pack => "packs",
            Kind::Snapshot => "snapshots",
            Kind::Identity => "identities",
        }
    }
    pub fn all_objects() -> [Kind; 3] {
        [Kind::Pack, Kind::Snapshot, Kind::Identity]
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Config => "config",
            Kind::Pack => "pack",
            Kind::Snapshot => "snapshot",
            Kind::Identity => "identity",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{kind} {name} not found")]
    NotFound { kind: Kind, name: String },
    #[error("{kind} {name} is corrupt: {why}")]
    Corrupt {
        kind: Kind,
        name: String,
        why: String,
    },
    #[error("storage full while writing {0}")]
    Full(String),
    #[error("invalid object name {0:?}")]
    BadName(String),
    #[error("refused by the repository: {0}")]
    Refused(String),
    #[error("I/O error on {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Transient(String),
    #[error("TAMPERING DETECTED: {0}")]
    Tamper(String),
    /// This machine's own record (a held checkpoint) is unreadable or
    /// damaged: a local problem, never evidence against the repository,
    /// and never silently replaced (see the message for the way out).
    #[error("{0}")]
    LocalState(String),
}

impl StoreError {
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Transient(_))
    }
    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }
    /// True for damage or tampering found in the repository (exit status 4):
    /// an object whose bytes are wrong, or not a regular file of a sane
    /// size, or a vault that lies. A missing object, a full disk, an I/O or
    /// network failure, a refusal or a local record are not.
    pub fn is_damage(&self) -> bool {
        matches!(self, StoreError::Corrupt { .. } | StoreError::Tamper(_))
    }
}

/// The largest object of each kind a reader accepts, so a hostile
/// repository directory cannot make it read without end (a symlink to
/// `/dev/zero`, a sparse file of a terabyte). Config and identity records
/// are a few KiB (a name is at most 64 KiB); a snapshot is its header, pack
/// list and a body of at most one blob; a pack's offsets are u32, so no
/// pack can exceed 4 GiB - 1.
pub fn max_object_size(kind: Kind) -> u64 {
    match kind {
        Kind::Config => 16 << 20,
        Kind::Identity => 128 << 10,
        Kind::Snapshot => 512 << 20,
        Kind::Pack => u32::MAX as u64,
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// The storage trait. See the module documentation for the contract.
pub trait Backend: Send + Sync {
    fn put(&self, kind: Kind, name: &str, data: &[u8]) -> Result<()>;
    fn get(&self, kind: Kind, name: &str) -> Result<Vec<u8>>;
    fn get_range(&self, kind: Kind, name: &str, offset: u64, len: u64) -> Result<Vec<u8>>;
    fn size(&self, kind: Kind, name: &str) -> Result<u64>;
    fn list(&self, kind: Kind) -> Result<Vec<(String, u64)>>;
    /// Human-readable location, for messages.
    fn location(&self) -> String;
    /// True where each request is expensive (network): readers should fetch
    /// whole objects and cut blobs from them rather than make range reads.
    fn prefers_whole_objects(&self) -> bool {
        false
    }
    /// Reads an object that must have the id `id` (the config a key pins).
    /// A versioned store looks through older versions for it.
    fn get_pinned(&self, kind: Kind, name: &str, id: &ObjectId) -> Result<Vec<u8>> {
        let b = self.get(kind, name)?;
        if ObjectId::of(&b) == *id {
            Ok(b)
        } else {
            Err(StoreError::Corrupt {
                kind,
                name: name.to_string(),
                why: format!(
                    "its id is {}, expected {}",
                    ObjectId::of(&b).short(),
                    id.short()
                ),
            })
        }
    }
}

/// What a deletion did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deletion {
    /// Gone (or was not there).
    Done,
    /// The storage refused: a version is under a retention lock.
    Locked,
}

/// The vault's own view of its storage, beyond the client contract:
/// deletion (only ever after a log entry explains it), storage-enforced
/// retention where the store has it, and the time an object was stored.
pub trait ObjectStore: Backend {
    /// Puts like [`Backend::put`], locked by the storage until `until_ns`
    /// (Unix ns) where it can lock; an existing object gets its lock raised.
    fn put_retained(&self, kind: Kind, name: &str, data: &[u8], until_ns: i64) -> Result<()>;
    /// Raises an object's storage lock to at least `until_ns`; never lowers.
    fn retain(&self, kind: Kind, name: &str, until_ns: i64) -> Result<()>;
    /// Deletes an object (every version of it).
    fn delete(&self, kind: Kind, name: &str) -> Result<Deletion>;
    /// When the object was stored (Unix ns).
    fn stored_at_ns(&self, kind: Kind, name: &str) -> Result<i64>;
    /// Until when the storage itself holds the object (None: no lock).
    fn locked_until_ns(&self, kind: Kind, name: &str) -> Result<Option<i64>>;
    /// True where the storage itself refuses early deletion.
    fn locks_enforced(&self) -> bool;

    /// Starts an object that is written as its bytes arrive and stays
    /// invisible until [`ObjectStore::commit_staged`] (see [`Staged`]).
    /// `spool` is a directory the caller owns, for a store that cannot
    /// stage inside itself (S3 spools there). The default stages in
    /// memory, so a store that does nothing here keeps working.
    fn stage(&self, kind: Kind, _spool: &std::path::Path) -> Result<Staged> {
        Ok(Staged::in_memory(kind))
    }

    /// Makes a staged object visible under `name` as
    /// [`ObjectStore::put_retained`] would: the bytes must hash to `name`
    /// (else [`StoreError::Corrupt`] and nothing is visible), durable
    /// before it returns, idempotent (an existing object stays as it is,
    /// its lock raised). The default reads the staged bytes and puts them.
    fn commit_staged(&self, staged: Staged, name: &str, until_ns: i64) -> Result<()> {
        staged.check_name(name)?;
        let kind = staged.kind;
        let data = staged.into_bytes()?;
        self.put_retained(kind, name, &data, until_ns)
    }

    /// Removes the staging files a crash left inside the store (never a
    /// visible object); only for the one process that stages there, at
    /// its start. The default has none.
    fn clean_staged(&self) -> Result<usize> {
        Ok(0)
    }
}

/// Checks a name: `config` for the config, else 64 lowercase hex digits.
pub fn check_name(kind: Kind, name: &str) -> Result<()> {
    let ok = match kind {
        Kind::Config => name == "config",
        _ => name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
    };
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName(name.chars().take(80).collect()))
    }
}

/// Checks fetched bytes against a content-addressed name.
pub fn check_content(kind: Kind, name: &str, data: &[u8]) -> Result<()> {
    if kind == Kind::Config || ObjectId::of(data).to_hex() == name {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        kind,
        name: name.to_string(),
        why: "content does not match its id".into(),
    })
}
