//! Admission: what an unauthenticated party can make the vault hold, and
//! the per-request replay and rate checks.
//!
//! * Connections: the TLS handshake, and every wait for a request's headers
//!   (the first one and each idle keep-alive gap), end after a few seconds;
//!   a write the peer does not read, and a body that stops arriving, end
//!   the connection too. Each source address may hold at most
//!   [`MAX_ANONYMOUS_PER_ADDRESS`] connections that have not yet carried an
//!   authenticated request (on top of the global `--max-connections`).
//! * Requests: [`RequestGate`] remembers nonces for the time window and
//!   keeps one token bucket per identity.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use holdfast_core::request::WINDOW_NS;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// A TLS handshake must finish within this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's headers must arrive within this of the connection being
/// ready for them: after the handshake, and after each response (so this
/// is also the keep-alive idle timeout).
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause while an (authenticated) body is arriving.
pub const BODY_STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a response write may wait on a peer that does not read.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Connections from one address that have not yet carried an
/// authenticated request.
pub const MAX_ANONYMOUS_PER_ADDRESS: usize = 8;

/// Counts, per source address, the connections that have not yet carried
/// an authenticated request.
pub struct Addresses {
    anonymous: Mutex<HashMap<IpAddr, usize>>,
    max: usize,
}

impl Addresses {
    pub fn new(max: usize) -> Arc<Addresses> {
        Arc::new(Addresses {
            anonymous: Mutex::new(HashMap::new()),
            max: max.max(1),
        })
    }

    /// A ticket for a new connection from `ip`, or None if that address
    /// already holds its share of anonymous connections.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Arc<Ticket>> {
        let mut m = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= self.max {
            return None;
        }
        *n += 1;
        Some(Arc::new(Ticket {
            ip,
            addresses: self.clone(),
            anonymous: AtomicBool::new(true),
        }))
    }

    fn release(&self, ip: IpAddr) {
        let mut m = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&ip);
            }
        }
    }

    /// Anonymous connections `ip` holds now.
    pub fn anonymous(&self, ip: IpAddr) -> usize {
        let m = self.anonymous.lock().unwrap_or_else(|p| p.into_inner());
        m.get(&ip).copied().unwrap_or(0)
    }
}

/// One connection's place in its address's count; given back when the
/// connection authenticates a request or ends, whichever comes first.
pub struct Ticket {
    pub ip: IpAddr,
    addresses: Arc<Addresses>,
    anonymous: AtomicBool,
}

impl Ticket {
    /// The connection carried an authenticated request: it no longer counts
    /// against its address.
    pub fn authenticated(&self) {
        if self.anonymous.swap(false, Ordering::SeqCst) {
            self.addresses.release(self.ip);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.authenticated();
    }
}

/// A connection's stream with a bound on how long a write may wait: a peer
/// that stops reading its response loses the connection instead of holding
/// it for ever.
pub struct WriteDeadline<T> {
    inner: T,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<T> WriteDeadline<T> {
    pub fn new(inner: T, limit: Duration) -> Self {
        WriteDeadline {
            inner,
            limit,
            stalled: None,
        }
    }

    fn pending<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.stalled = None;
            return r;
        }
        let limit = self.limit;
        let s = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        if s.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "peer stopped reading",
            )));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WriteDeadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.pending(cx, r)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_flush(cx);
        this.pending(cx, r)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let r = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.pending(cx, r)
    }
}

/// Replay and rate checks for authenticated requests.
#[derive(Default)]
pub struct RequestGate {
    /// (key, nonce) → vault time first seen.
    nonces: HashMap<([u8; 32], [u8; 16]), i64>,
    /// Vault time of the last sweep of nonces too old to replay.
    swept_ns: i64,
    /// key → (tokens, last refill).
    buckets: HashMap<[u8; 32], (f64, Instant)>,
    /// key → vault time of its last "signed but outside the time window"
    /// alert.
    clock_alerts: HashMap<[u8; 32], i64>,
}

/// A key whose correctly signed requests fall outside the time window is
/// alerted about at most once per this long (its client retries; the
/// alert's text is the same each time).
pub const CLOCK_ALERT_EVERY_NS: i64 = 600 * 1_000_000_000;

/// How often nonces too old to replay are swept.
pub const NONCE_SWEEP_NS: i64 = 60 * 1_000_000_000;

impl RequestGate {
    /// True when a correctly signed request from `key` dated outside the
    /// window should be alerted now: the first for this key, or the first
    /// after [`CLOCK_ALERT_EVERY_NS`]. Only members' keys reach this, so
    /// the map is bounded by the repository's identities.
    pub fn clock_alert_due(&mut self, key: &[u8; 32], now_ns: i64) -> bool {
        match self.clock_alerts.get(key) {
            Some(&t) if now_ns.saturating_sub(t) < CLOCK_ALERT_EVERY_NS => false,
            _ => {
                self.clock_alerts.insert(*key, now_ns);
                true
            }
        }
    }

    /// Records a nonce; false if this key used it within the window. A
    /// request is only taken within [`WINDOW_NS`] of its own time, so a
    /// nonce first seen more than two windows ago can never be replayed:
    /// those are swept once every [`NONCE_SWEEP_NS`] (one pass a minute,
    /// not one per request), and the map holds what the last two windows
    /// and a minute brought, whatever the uptime.
    pub fn fresh_nonce(&mut self, key: &[u8; 32], nonce: &[u8; 16], now_ns: i64) -> bool {
        if now_ns.saturating_sub(self.swept_ns) >= NONCE_SWEEP_NS || now_ns < self.swept_ns {
            let old = now_ns.saturating_sub(2 * WINDOW_NS);
            self.nonces.retain(|_, t| *t > old);
            // A burst's table is given back once the burst is over.
            if self.nonces.capacity() > 4 * self.nonces.len().max(1024) {
                self.nonces.shrink_to(2 * self.nonces.len());
            }
            self.swept_ns = now_ns;
        }
        self.nonces.insert((*key, *nonce), now_ns).is_none()
    }

    #[cfg(test)]
    fn nonces(&self) -> usize {
        self.nonces.len()
    }

    /// Takes one token from `key`'s bucket (`rate` per second, at most
    /// `burst`); false if it is empty.
    pub fn take_token(&mut self, key: &[u8; 32], rate: f64, burst: f64) -> bool {
        let t = Instant::now();
        let b = self.buckets.entry(*key).or_insert((burst, t));
        b.0 = (b.0 + t.duration_since(b.1).as_secs_f64() * rate).min(burst);
        b.1 = t;
        if b.0 < 1.0 {
            return false;
        }
        b.0 -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_alerts_once_per_key_per_period() {
        let mut g = RequestGate::default();
        let (k1, k2) = ([1u8; 32], [2u8; 32]);
        assert!(g.clock_alert_due(&k1, 0));
        assert!(!g.clock_alert_due(&k1, CLOCK_ALERT_EVERY_NS - 1));
        assert!(
            g.clock_alert_due(&k2, 5),
            "another key is alerted on its own"
        );
        assert!(g.clock_alert_due(&k1, CLOCK_ALERT_EVERY_NS));
        assert!(!g.clock_alert_due(&k1, CLOCK_ALERT_EVERY_NS + 1));
    }

    #[test]
    fn anonymous_connections_are_capped_per_address_and_released() {
        let a = Addresses::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let t1 = a.admit(ip).unwrap();
        let t2 = a.admit(ip).unwrap();
        assert!(a.admit(ip).is_none(), "third anonymous connection admitted");
        assert!(a.admit(other).is_some(), "another address is not affected");
        // Authenticating frees the place (once), and so does closing.
        t1.authenticated();
        t1.authenticated();
        assert_eq!(a.anonymous(ip), 1);
        let t3 = a.admit(ip).unwrap();
        drop(t1);
        assert_eq!(a.anonymous(ip), 2);
        drop(t2);
        drop(t3);
        assert_eq!(a.anonymous(ip), 0);
    }

    #[test]
    fn nonces_once_and_buckets_empty() {
        let mut g = RequestGate::default();
        assert!(g.fresh_nonce(&[1; 32], &[2; 16], 10));
        assert!(!g.fresh_nonce(&[1; 32], &[2; 16], 11));
        assert!(g.fresh_nonce(&[3; 32], &[2; 16], 11));
        // Swept by time, not by count: after two windows and a sweep the
        // old nonces are gone and the map holds only the recent ones; a
        // nonce is refused again for all of two windows.
        let mut t = 20;
        for i in 0..5000u32 {
            t += 1_000_000;
            let mut n = [0u8; 16];
            n[..4].copy_from_slice(&i.to_le_bytes());
            assert!(g.fresh_nonce(&[4; 32], &n, t));
        }
        assert!(!g.fresh_nonce(&[1; 32], &[2; 16], 2 * WINDOW_NS));
        assert_eq!(g.nonces(), 5002);
        let later = 2 * WINDOW_NS + NONCE_SWEEP_NS + 100;
        assert!(g.fresh_nonce(&[5; 32], &[5; 16], later));
        // (The replay attempt at 2 windows renewed its nonce's time.)
        assert_eq!(g.nonces(), 2, "old nonces kept past two windows");
        assert!(g.fresh_nonce(&[3; 32], &[2; 16], later + 1));
        assert!(!g.fresh_nonce(&[1; 32], &[2; 16], later + 1));
        assert!(!g.fresh_nonce(&[5; 32], &[5; 16], later + 2 * WINDOW_NS - 1));
        assert!(g.take_token(&[1; 32], 0.0, 2.0));
        assert!(g.take_token(&[1; 32], 0.0, 2.0));
        assert!(!g.take_token(&[1; 32], 0.0, 2.0));
        assert!(g.take_token(&[2; 32], 0.0, 2.0));
    }
}
