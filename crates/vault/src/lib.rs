//! holdfast-vault: `holdfast vault serve`, the only network service.
//!
//! * [`state`] — every rule (roles, namespaces, quotas, locks, quorum,
//!   reclaim) as synchronous code over the repository directory;
//! * [`logstore`] — the append-only log and its signed checkpoint on disk;
//! * [`server`] — HTTPS transport: TLS with the vault key, signatures
//!   checked before any body is read, body caps, a connection limit, clean
//!   stop on SIGTERM;
//! * [`gate`] — admission: timeouts, the per-address cap on anonymous
//!   connections, nonces and rate limits;
//! * [`alert`] — alerts to stderr and `--alert-cmd`, deduplicated and
//!   rate-limited, every command reaped;
//! * [`tls`] — the self-signed certificate made from the vault key, which
//!   clients pin through the repository config;
//! * [`metrics`] and [`dashboard`] — `GET /metrics` (Prometheus text) and a
//!   read-only HTML page on a separate plain-HTTP listener (`--http`),
//!   with no route to anything else.
//!
//! The HTTP API is documented in docs/vault.md.

pub mod alert;
pub mod commit;
pub mod dashboard;
pub mod gate;
pub mod logstore;
pub mod metrics;
pub mod server;
pub mod state;
pub mod tls;

pub use server::{ServeOptions, serve};

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("{0}")]
    Io(String),
    #[error("TAMPERING DETECTED: {0}")]
    Tamper(String),
    #[error("{0}")]
    Usage(String),
}

/// An HTTP error: status and one line of text.
#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub msg: String,
}

impl ApiError {
    pub fn new(status: u16, msg: impl Into<String>) -> Self {
        ApiError {
            status,
            msg: msg.into(),
        }
    }
    pub fn bad(msg: impl Into<String>) -> Self {
        Self::new(400, msg)
    }
    pub fn unauthorized(msg: impl Into<String>) -> Self {
        Self::new(401, msg)
    }
    pub fn forbidden(msg: impl Into<String>) -> Self {
        Self::new(403, msg)
    }
    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::new(404, msg)
    }
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(500, msg)
    }
}
