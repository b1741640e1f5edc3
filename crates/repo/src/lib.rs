//! holdfast-repo: what the commands do — init, backup, restore, verify,
//! listings — on top of any [`Backend`]. No argument parsing, no terminal
//! handling; progress is reported through [`Progress`] counters.

pub mod audit;
pub mod backup;
pub mod blobset;
pub mod bundle;
pub mod cache;
pub mod detect;
pub mod drill;
pub mod index;
pub mod init;
pub mod keys;
pub mod logcache;
pub mod logview;
pub mod mail;
pub mod mount;
#[cfg(test)]
mod mutate;
pub mod packindex;
pub mod replica;
pub mod repo;
pub mod restore;
pub mod snapshots;
pub mod spill;
pub mod verify;
pub mod walk;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

pub use holdfast_store::{Backend, StoreError};
pub use repo::Repository;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("TAMPERING DETECTED: {0}")]
    Tamper(String),
    #[error("repository damaged: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Usage(String),
    /// The key is of another repository than the one at `location`: a wrong
    /// argument (exit status 1), not tampering. Only when the config found
    /// there is a well-formed config that does not list this key at all;
    /// a config that lists it but is not the one it pins is tampering.
    #[error(
        "this key belongs to another repository (config id {expected}); {location} holds {found}"
    )]
    WrongRepository {
        location: String,
        expected: String,
        found: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Key(#[from] holdfast_core::keyfile::KeyError),
    #[error("{0}")]
    Crypto(#[from] holdfast_core::crypto::CryptoError),
}

impl Error {
    /// True for damage or tampering found in the repository (exit status
    /// 4). A wrong argument, a wrong key, this machine's I/O (a full disk)
    /// and network failures are not.
    pub fn is_damage(&self) -> bool {
        match self {
            Error::Tamper(_) | Error::Corrupt(_) => true,
            Error::Store(e) => e.is_damage(),
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

pub(crate) fn io_err(path: &Path, e: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// Counters a long operation advances; a front end may poll them to draw
/// progress. All relaxed: they are informative only.
#[derive(Default, Debug)]
pub struct Progress {
    pub files_total: AtomicU64,
    pub bytes_total: AtomicU64,
    pub files_done: AtomicU64,
    pub bytes_done: AtomicU64,
}

impl Progress {
    pub fn add(&self, files: u64, bytes: u64) {
        self.files_done.fetch_add(files, Ordering::Relaxed);
        self.bytes_done.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Current wall-clock time in nanoseconds since the Unix epoch.
static NOTES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Something the user should be told beside a command's result (e.g. that
/// `latest` skipped flagged snapshots). The CLI prints them at the end.
pub fn note(s: String) {
    NOTES.lock().unwrap_or_else(|p| p.into_inner()).push(s);
}

/// The notes so far, emptied.
pub fn take_notes() -> Vec<String> {
    std::mem::take(&mut *NOTES.lock().unwrap_or_else(|p| p.into_inner()))
}

pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}
