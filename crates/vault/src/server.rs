//! HTTPS transport for the vault. One dispatch function maps (method, path)
//! to a [`Vault`] call after authenticating the request; the vault's state
//! sits behind one mutex, so every rule is checked and applied atomically.
//!
//! Order for every request: the signature headers (which carry the body's
//! BLAKE3) are checked, the declared length against the route's cap, then
//! key, time, signature, nonce and rate, all before a byte of the body is
//! read; only then is the body read (no more than declared) and checked
//! against the signed hash. Someone without a key therefore gets 401 and a
//! closed connection, never a buffer. A pack body is never held whole: it
//! is streamed into a staging object of the store and made visible only
//! once checked ([`put_pack_streamed`], docs/vault.md §9.1). Connections
//! are bounded by the timeouts and caps in [`crate::gate`]. Error bodies
//! never carry server paths: 5xx details go to stderr, the client gets a
//! generic line.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, HttpBody};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::format::Role;
use holdfast_core::governance::Status;
use holdfast_core::request::Auth;
use holdfast_store::{Kind, check_name};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::commit;
use crate::gate::{self, Ticket};
use crate::metrics::{Metrics, api_route};
use crate::state::{Options, Shared, Vault, describe, now_ns, read, write};
use crate::{ApiError, VaultError};

/// Largest request body: a pack (8 MiB target plus one large blob) or a
/// snapshot. Anything larger is refused before it is read.
pub const MAX_BODY: usize = 96 << 20;
/// Largest body for everything but packs and snapshots.
const MAX_SMALL_BODY: usize = 8 << 20;

pub struct ServeOptions {
    /// The repository's objects (a directory, or S3 with Object Lock).
    pub store: Box<dyn holdfast_store::ObjectStore>,
    /// The vault's own state: log, checkpoint, pack owners.
    pub state_dir: PathBuf,
    /// The config id the vault key pins.
    pub config_id: holdfast_core::ObjectId,
    pub identity: Identity,
    /// The key of a coming vault key rotation (`--next-key`): the vault
    /// switches to it when it executes that rotation.
    pub next_identity: Option<Identity>,
    pub listen: SocketAddr,
    pub vault: Options,
    pub max_connections: usize,
    pub reclaim_every: Duration,
    /// MiB of request bodies held in memory at once, over all requests.
    pub body_budget_mib: u32,
    /// Where to serve `/metrics` and the dashboard over plain HTTP (none:
    /// not served). See [`crate::metrics`].
    pub http: Option<SocketAddr>,
}

/// What every request handler shares: the vault, and the strings no error
/// body may contain (the state directory and the storage location).
#[derive(Clone)]
struct App {
    vault: Shared,
    /// The objects, read and written outside the vault's lock.
    store: Arc<dyn holdfast_store::ObjectStore>,
    hide: Arc<Vec<String>>,
    metrics: Arc<Metrics>,
    /// MiB of large request bodies held in memory at once, over all
    /// requests (small bodies, every vote and veto among them, take none).
    bodies: Arc<Semaphore>,
    /// MiB of large bodies and of pack uploads (staged on disk) in flight
    /// per identity: one key cannot take the whole budget, nor stage more
    /// than this at once.
    per_key: Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], usize>>>,
    /// Where a store that cannot stage inside itself (S3) spools pack
    /// bodies: `STATE_DIR/staging`.
    spool: Arc<PathBuf>,
}

/// Most MiB of large bodies (in memory) and pack uploads (staged) one
/// identity may have in flight at once.
const PER_KEY_MIB: usize = 2 * (MAX_BODY >> 20);
/// A streamed pack body is written to its staging in pieces of this size;
/// one piece is written while the next arrives, so an upload holds at most
/// two (2 MiB), whatever its length.
const STREAM_CHUNK: usize = 1 << 20;
/// What a streamed upload takes from the body budget (its two pieces).
const STREAM_MIB: u32 = 2;
/// The slowest a large body may arrive overall (after a 30 s allowance).
const MIN_BODY_RATE: usize = 256 << 10;

/// Returns an identity's share of the large-body budget when dropped.
struct KeyShare {
    map: Arc<std::sync::Mutex<std::collections::HashMap<[u8; 32], usize>>>,
    key: [u8; 32],
    mib: usize,
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        let mut m = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(self.mib);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

/// By default, at most this many MiB of request bodies are in memory at
/// once (each authenticated first); a request that cannot get its share
/// within [`BODY_WAIT`] is answered 503 and retried by the client.
pub const BODY_BUDGET_MIB: u32 = 512;
const BODY_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, self.msg + "\n").into_response()
    }
}

fn kind_of(seg: &str) -> Result<Kind, ApiError> {
    match seg {
        "packs" => Ok(Kind::Pack),
        "snapshots" => Ok(Kind::Snapshot),
        _ => Err(ApiError::not_found("no such object kind")),
    }
}

fn object_id(kind: Kind, name: &str) -> Result<ObjectId, ApiError> {
    check_name(kind, name).map_err(|e| ApiError::bad(e.to_string()))?;
    ObjectId::from_hex(name).map_err(|e| ApiError::bad(e.to_string()))
}

fn query(uri: &Uri, key: &str) -> Option<u64> {
    uri.query()?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
}

fn need(role: Role, allowed: &[Role]) -> Result<(), ApiError> {
    if allowed.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::forbidden(format!(
            "the {} role may not do this",
            role.name()
        )))
    }
}

/// `bytes=START-END` (inclusive), one range only.
fn parse_range(h: &HeaderMap) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(v) = h.get(header::RANGE) else {
        return Ok(None);
    };
    let v = v.to_str().map_err(|_| ApiError::bad("bad Range"))?;
    let r = v
        .strip_prefix("bytes=")
        .ok_or_else(|| ApiError::bad("bad Range"))?;
    let (a, b) = r
        .split_once('-')
        .ok_or_else(|| ApiError::bad("bad Range"))?;
    let a: u64 = a.parse().map_err(|_| ApiError::bad("bad Range"))?;
    let b: u64 = b.parse().map_err(|_| ApiError::bad("bad Range"))?;
    if b < a || b - a >= MAX_BODY as u64 {
        return Err(ApiError::bad("bad Range"));
    }
    Ok(Some((a, b - a + 1)))
}

/// Every parser a request reaches before it is authenticated or dispatched
/// (signature headers, Range, query, object names) and every body decoder,
/// on arbitrary input: each must refuse with an error, never panic. Used by
/// the `request` fuzz target and by tests.
pub fn fuzz_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\n');
    let (a, b, c, d) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
        parts.next().unwrap_or(""),
    );
    let _ = Auth::from_headers(|n| match n {
        holdfast_core::request::H_KEY => Some(a),
        holdfast_core::request::H_TIME => Some(b),
        holdfast_core::request::H_NONCE => Some(c),
        _ => Some(d),
    });
    let mut h = HeaderMap::new();
    if let Ok(v) = axum::http::HeaderValue::from_str(a) {
        h.insert(header::RANGE, v);
    }
    let _ = parse_range(&h);
    if let Ok(uri) = format!("/v1/log/proof?{b}").parse::<Uri>() {
        let _ = query(&uri, "from");
    }
    for k in ["packs", "snapshots", c] {
        if let Ok(kind) = kind_of(k) {
            let _ = object_id(kind, d);
        }
    }
    let _ = holdfast_core::governance::Proposal::decode(data);
    let _ = holdfast_core::governance::Vote::decode(data);
    let _ = holdfast_core::format::parse_pack(data);
    let _ = holdfast_core::format::Snapshot::decode(data);
    let _ = serde_json::from_slice::<serde_json::Value>(data);
}

/// The largest body a route takes.
fn body_cap(method: &Method, path: &str) -> usize {
    let big = method == Method::PUT
        && (path.starts_with("/v1/objects/packs/") || path.starts_with("/v1/objects/snapshots/"));
    if big { MAX_BODY } else { MAX_SMALL_BODY }
}

/// The body length the request declares (`content-length`; none and no
/// `transfer-encoding` means no body).
fn declared_length(h: &HeaderMap) -> Result<usize, ApiError> {
    match h.get(header::CONTENT_LENGTH) {
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| ApiError::bad("bad content-length")),
        None if h.contains_key(header::TRANSFER_ENCODING) => {
            Err(ApiError::new(411, "a body needs a content-length"))
        }
        None => Ok(0),
    }
}

/// Reads exactly `declared` bytes of an (already authenticated) request
/// body; a pause longer than [`gate::BODY_STALL_TIMEOUT`] ends it.
async fn read_body(mut body: Body, declared: usize) -> Result<(Vec<u8>, [u8; 32]), ApiError> {
    let mut out = Vec::with_capacity(declared);
    // Hashed as it arrives (the signed hash, and for objects their id):
    // no second pass over a 96 MiB body.
    let mut hasher = blake3::Hasher::new();
    loop {
        let frame = tokio::time::timeout(
            gate::BODY_STALL_TIMEOUT,
            std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
        )
        .await
        .map_err(|_| ApiError::new(408, "request body stalled"))?;
        match frame {
            None => break,
            Some(Err(_)) => return Err(ApiError::bad("request body cut short")),
            Some(Ok(f)) => {
                if let Ok(d) = f.into_data() {
                    if out.len() + d.len() > declared {
                        return Err(ApiError::bad("body longer than its content-length"));
                    }
                    hasher.update(&d);
                    out.extend_from_slice(&d);
                }
            }
        }
    }
    if out.len() != declared {
        return Err(ApiError::bad("body shorter than its content-length"));
    }
    Ok((out, *hasher.finalize().as_bytes()))
}

/// Where a streamed body goes: a staged object (hashed as written), or
/// nowhere (hashed only: a pack the client already has, or one refused
/// before its body was read).
enum Sink {
    Staged(Box<holdfast_store::Staged>),
    Hash(Box<blake3::Hasher>),
}

impl Sink {
    fn hash(&self) -> [u8; 32] {
        match self {
            Sink::Staged(s) => s.hash(),
            Sink::Hash(h) => *h.finalize().as_bytes(),
        }
    }
}

/// Writes one piece to the sink, off the async threads when it is storage.
async fn sink_write(sink: Sink, buf: Vec<u8>) -> Result<(Sink, Vec<u8>), ApiError> {
    match sink {
        Sink::Hash(mut h) => {
            h.update(&buf);
            Ok((Sink::Hash(h), buf))
        }
        Sink::Staged(mut st) => {
            tokio::task::spawn_blocking(move || st.write(&buf).map(|()| (Sink::Staged(st), buf)))
                .await
                .map_err(|_| ApiError::internal("request handler failed"))?
                .map_err(ApiError::store)
        }
    }
}

/// Streams exactly `declared` bytes of an (already authenticated) request
/// body into `sink`, in pieces of [`STREAM_CHUNK`]: one piece is written
/// while the next arrives. Returns the sink and the body's BLAKE3. A pause
/// longer than [`gate::BODY_STALL_TIMEOUT`] ends it; on any error the sink
/// is dropped (a staged object's bytes with it) before this returns.
async fn stream_body(
    mut body: Body,
    declared: usize,
    sink: Sink,
) -> Result<(Sink, [u8; 32]), ApiError> {
    type Pending = tokio::task::JoinHandle<Result<(Sink, Vec<u8>), ApiError>>;
    let mut sink = Some(sink);
    let mut pending: Option<Pending> = None;
    let mut spare: Option<Vec<u8>> = None;
    let mut buf = Vec::with_capacity(STREAM_CHUNK.min(declared));
    let mut got = 0usize;
    // The piece being written (if any) must end, and give the sink back,
    // before the next is written or this returns.
    async fn settle(
        pending: &mut Option<Pending>,
        sink: &mut Option<Sink>,
        spare: &mut Option<Vec<u8>>,
    ) -> Result<(), ApiError> {
        if let Some(p) = pending.take() {
            let (s, mut b) = p
                .await
                .map_err(|_| ApiError::internal("request handler failed"))??;
            b.clear();
            *sink = Some(s);
            *spare = Some(b);
        }
        Ok(())
    }
    let r: Result<(), ApiError> = async {
        loop {
            let frame = tokio::time::timeout(
                gate::BODY_STALL_TIMEOUT,
                std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)),
            )
            .await
            .map_err(|_| ApiError::new(408, "request body stalled"))?;
            let d = match frame {
                None => break,
                Some(Err(_)) => return Err(ApiError::bad("request body cut short")),
                Some(Ok(f)) => match f.into_data() {
                    Ok(d) => d,
                    Err(_) => continue,
                },
            };
            if got + d.len() > declared {
                return Err(ApiError::bad("body longer than its content-length"));
            }
            got += d.len();
            buf.extend_from_slice(&d);
            if buf.len() >= STREAM_CHUNK {
                settle(&mut pending, &mut sink, &mut spare).await?;
                let next = spare
                    .take()
                    .unwrap_or_else(|| Vec::with_capacity(STREAM_CHUNK));
                let full = std::mem::replace(&mut buf, next);
                let s = sink.take().expect("sink back after settle");
                pending = Some(tokio::spawn(sink_write(s, full)));
            }
        }
        settle(&mut pending, &mut sink, &mut spare).await?;
        if got != declared {
            return Err(ApiError::bad("body shorter than its content-length"));
        }
        if !buf.is_empty() {
            let s = sink.take().expect("sink back after settle");
            let (s, _) = sink_write(s, std::mem::take(&mut buf)).await?;
            sink = Some(s);
        }
        Ok(())
    }
    .await;
    if let Err(e) = r {
        // The piece in flight still holds the sink: wait for it, so that a
        // staged object is gone when the answer goes out.
        if let Some(p) = pending.take() {
            let _ = p.await;
        }
        drop(sink);
        return Err(e);
    }
    let sink = sink.expect("sink back after settle");
    let hash = sink.hash();
    Ok((sink, hash))
}

/// `PUT /v1/objects/packs/ID`, streamed: the quota reserved and the
/// staging started before a byte is read, the body written to the staging
/// as it arrives (hashed as it goes), then checked (signed hash, id,
/// structure) and committed by [`commit::finish_pack`]; a failure anywhere
/// leaves nothing visible and no staged bytes. A pack the client already
/// has, or a refusal decided before the body (quota), reads the body
/// without storing it (hash only), so the client gets the answer on a
/// connection in good order, and a body that does not match its signed
/// hash is answered 400 first, as every other body.
async fn put_pack_streamed(
    app: &App,
    name: &str,
    who: [u8; 32],
    role: Role,
    body: Body,
    declared: usize,
    signed: [u8; 32],
) -> Result<Response, ApiError> {
    need(role, &[Role::Client])?;
    let id = object_id(Kind::Pack, name)?;
    let begun = {
        let (vault, store, spool) = (app.vault.clone(), app.store.clone(), app.spool.clone());
        tokio::task::spawn_blocking(move || {
            let start = commit::begin_pack(&vault, &who, &id, declared as u64)?;
            Ok::<_, ApiError>(match start {
                commit::PackStart::New(up) => {
                    let staged = store.stage(Kind::Pack, &spool).map_err(ApiError::store)?;
                    Some((up, staged))
                }
                commit::PackStart::Owned => None,
            })
        })
        .await
        .map_err(|_| ApiError::internal("request handler failed"))?
    };
    let deadline = std::time::Duration::from_secs(30 + (declared / MIN_BODY_RATE) as u64);
    let stream = |sink| async move {
        tokio::time::timeout(deadline, stream_body(body, declared, sink))
            .await
            .map_err(|_| ApiError::new(408, "request body too slow"))?
    };
    let (up, staged) = match begun {
        Ok(Some(x)) => x,
        // Owned already, or refused: the body is read and hashed, not kept.
        other => {
            let (_, hash) = stream(Sink::Hash(Box::default())).await?;
            if hash != signed {
                return Err(ApiError::bad("body does not match its signed hash"));
            }
            other?;
            if hash != id.0 {
                return Err(ApiError::bad("pack content does not match its id"));
            }
            return Ok(StatusCode::CREATED.into_response());
        }
    };
    let (sink, hash) = stream(Sink::Staged(Box::new(staged))).await?;
    let Sink::Staged(staged) = sink else {
        return Err(ApiError::internal("request handler failed"));
    };
    if hash != signed {
        return Err(ApiError::bad("body does not match its signed hash"));
    }
    let store = app.store.clone();
    tokio::task::spawn_blocking(move || commit::finish_pack(up, &store, *staged))
        .await
        .map_err(|_| ApiError::internal("request handler failed"))??;
    Ok(StatusCode::CREATED.into_response())
}

/// What a client may see of an error: 5xx details (which may name files)
/// go to stderr only, and no message may contain a server path.
fn public(e: ApiError, hide: &[String]) -> ApiError {
    let leaks = hide
        .iter()
        .any(|h| !h.is_empty() && e.msg.contains(h.as_str()));
    let quota = e.status == 507 && e.msg.starts_with("storage quota");
    if (e.status < 500 || quota) && !leaks {
        return e;
    }
    eprintln!("holdfast vault: answered {}: {}", e.status, e.msg);
    let msg = match e.status {
        503 => "storage unavailable for now; try again",
        507 => "storage full",
        s if s < 500 => "request refused",
        _ => "internal error (details in the vault's log)",
    };
    ApiError::new(e.status, msg)
}

/// Routes an authenticated request whose body matched its signed hash
/// (`hash`, computed as it arrived). Storage I/O runs outside the vault's
/// lock: writes through [`commit`], reads after a visibility check under
/// the read lock. Everything else takes the read lock (GET) or the write
/// lock (POST) for the call alone.
#[allow(clippy::too_many_arguments)]
fn route(
    app: &App,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    who: [u8; 32],
    role: Role,
    body: &[u8],
    hash: [u8; 32],
) -> Result<Response, ApiError> {
    let path = uri.path();
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let store = &app.store;
    let bytes = |b: Vec<u8>| -> Response {
        ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
    };
    let jsn = |j: serde_json::Value| -> Response { axum::Json(j).into_response() };
    let get = |kind: Kind, name: &str| store.get(kind, name).map_err(ApiError::store);
    match (method.clone(), segs.as_slice()) {
        (Method::PUT, ["v1", "objects", "packs", name]) => {
            need(role, &[Role::Client])?;
            let id = object_id(Kind::Pack, name)?;
            commit::put_pack(&app.vault, store, &who, &id, body, Some(hash))?;
            Ok(StatusCode::CREATED.into_response())
        }
        (Method::PUT, ["v1", "objects", "snapshots", name]) => {
            need(role, &[Role::Client])?;
            let id = object_id(Kind::Snapshot, name)?;
            let m = commit::put_snapshot(&app.vault, store, &who, &id, body, Some(hash))?;
            Ok(jsn(
                json!({ "time_ns": m.time_ns, "lock_until_ns": m.lock_until_ns }),
            ))
        }
        (Method::GET, ["v1", "config"]) => Ok(bytes(get(Kind::Config, "config")?)),
        (Method::GET, ["v1", "identities"]) => {
            let l = store.list(Kind::Identity).map_err(ApiError::store)?;
            Ok(jsn(json!(l)))
        }
        (Method::GET, ["v1", "identities", name]) => {
            object_id(Kind::Identity, name)?;
            Ok(bytes(get(Kind::Identity, name)?))
        }
        (Method::GET, ["v1", "objects", kind]) => {
            let kind = kind_of(kind)?;
            let all = store.list(kind).map_err(ApiError::store)?;
            Ok(jsn(json!(read(&app.vault).visible(&who, role, kind, all))))
        }
        (Method::GET, ["v1", "objects", kind, name])
        | (Method::GET, ["v1", "stat", kind, name]) => {
            let k = kind_of(kind)?;
            let id = object_id(k, name)?;
            let visible = {
                let v = read(&app.vault);
                v.may_read(&who, role, k, &id)
                    && (k != Kind::Snapshot || v.st.snapshots.contains_key(&id))
            };
            if !visible {
                // Same answer for "absent" and "not yours": no probing.
                return Err(ApiError::not_found("no such object"));
            }
            if segs[1] == "stat" {
                let size = store.size(k, name).map_err(ApiError::store)?;
                return Ok(jsn(json!({ "size": size })));
            }
            match parse_range(headers)? {
                Some((off, len)) => {
                    let size = store.size(k, name).map_err(ApiError::store)?;
                    if off >= size {
                        return Ok((
                            StatusCode::RANGE_NOT_SATISFIABLE,
                            [(header::CONTENT_RANGE, format!("bytes */{size}"))],
                            format!("range starts at {off}, past the end ({size} bytes)\n"),
                        )
                            .into_response());
                    }
                    let len = len.min(size - off);
                    let data = store
                        .get_range(k, name, off, len)
                        .map_err(ApiError::store)?;
                    Ok((
                        StatusCode::PARTIAL_CONTENT,
                        [
                            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                            (
                                header::CONTENT_RANGE,
                                format!("bytes {off}-{}/{size}", off + len - 1),
                            ),
                        ],
                        data,
                    )
                        .into_response())
                }
                None => Ok(bytes(get(k, name)?)),
            }
        }
        (Method::GET, _) => handle_read(&read(&app.vault), uri, &segs, who, role),
        _ => handle_write(&mut write(&app.vault), method, &segs, who, role, body),
    }
}

/// The other reads: the vault's state only, under the read lock.
fn handle_read(
    v: &Vault,
    uri: &Uri,
    segs: &[&str],
    who: [u8; 32],
    role: Role,
) -> Result<Response, ApiError> {
    let bytes = |b: Vec<u8>| -> Response {
        ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
    };
    let jsn = |j: serde_json::Value| -> Response { axum::Json(j).into_response() };
    match segs {
        ["v1", "snapshots"] => {
            let list: Vec<_> =
                v.st.snapshots
                    .iter()
                    .filter(|(id, _)| v.may_read(&who, role, Kind::Snapshot, id))
                    .map(|(id, s)| {
                        json!({
                            "id": id.to_hex(),
                            "client": holdfast_core::id::hex(&s.client),
                            "time_ns": s.added_ns,
                            "lock_until_ns": s.lock_until_ns,
                        })
                    })
                    .collect();
            Ok(jsn(json!(list)))
        }
        ["v1", "proposals"] => {
            need(
                role,
                &[Role::Admin, Role::Auditor, Role::Replica, Role::Restore],
            )?;
            let now = now_ns();
            let hex = |k: &[u8; 32]| holdfast_core::id::hex(k);
            let list: Vec<_> =
                v.st.proposals
                    .iter()
                    .map(|(id, p)| {
                        // A state word and plain fields (never Rust debug
                        // text); `status` is a line for people.
                        let (state, status, until_ns, vetoed_by) = match p.executed {
                            Some(_) => ("executed", "executed".to_string(), None, None),
                            None => match v.proposal_status(id, now) {
                                Some(Status::Pending { approvals, needed }) => (
                                    "pending",
                                    format!("Pending: {approvals} of {needed} approvals"),
                                    None,
                                    None,
                                ),
                                Some(Status::Waiting { until_ns }) => (
                                    "waiting",
                                    format!(
                                        "Waiting: quorum reached, veto window ends {}",
                                        crate::dashboard::rfc3339(until_ns)
                                    ),
                                    Some(until_ns),
                                    None,
                                ),
                                Some(Status::Vetoed { by }) => {
                                    ("vetoed", "Vetoed".to_string(), None, Some(hex(&by)))
                                }
                                Some(Status::Ready) | None => {
                                    ("ready", "Ready: runs at the next tick".into(), None, None)
                                }
                            },
                        };
                        let mut approvals: Vec<String> = Vec::new();
                        for (a, _, _) in &p.approvals {
                            if !approvals.contains(&hex(a)) {
                                approvals.push(hex(a));
                            }
                        }
                        json!({
                            "id": id.to_hex(),
                            "action": describe(&p.proposal.action),
                            "proposer": hex(&p.proposal.proposer),
                            "received_ns": p.received_ns,
                            "state": state,
                            "status": status,
                            "approvals": approvals,
                            "needed": v.st.quorum,
                            "until_ns": until_ns,
                            "vetoed_by": vetoed_by,
                            "executed_ns": p.executed.map(|(_, t)| t),
                            "proposal": holdfast_core::id::hex(&p.proposal.encode()),
                        })
                    })
                    .collect();
            Ok(jsn(json!(list)))
        }
        ["v1", "log", "checkpoint"] => Ok(bytes(v.checkpoint().encode())),
        ["v1", "log", "proof"] => {
            let from = query(uri, "from").ok_or_else(|| ApiError::bad("from= missing"))?;
            let proof = v.consistency(from)?;
            Ok(jsn(json!({
                "checkpoint": holdfast_core::id::hex(&v.checkpoint().encode()),
                "proof": proof.iter().map(|h| holdfast_core::id::hex(h)).collect::<Vec<_>>(),
            })))
        }
        ["v1", "log", "entries"] => {
            // Every party reads the log through the same fold (clients
            // too): ids, keys, times and locks, no content.
            need(
                role,
                &[
                    Role::Admin,
                    Role::Auditor,
                    Role::Replica,
                    Role::Restore,
                    Role::Client,
                ],
            )?;
            let start = query(uri, "start").unwrap_or(0);
            let count = query(uri, "count").unwrap_or(10_000).min(10_000);
            // The records as stored: one positioned read of the log file.
            let out = v
                .log
                .records(start, count)
                .map_err(|e| ApiError::internal(e.to_string()))?;
            Ok(bytes(out))
        }
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

/// The state changes with small bodies (identities, revocations, locks,
/// proposals, votes): under the write lock, as every rule is checked and
/// its log entry appended.
fn handle_write(
    v: &mut Vault,
    method: &Method,
    segs: &[&str],
    who: [u8; 32],
    role: Role,
    body: &[u8],
) -> Result<Response, ApiError> {
    let small = || {
        if body.len() > MAX_SMALL_BODY {
            Err(ApiError::new(413, "body too large"))
        } else {
            Ok(())
        }
    };
    let jsn = |j: serde_json::Value| -> Response { axum::Json(j).into_response() };
    match (method.clone(), segs) {
        (Method::POST, ["v1", "identities"]) => {
            need(role, &[Role::Admin])?;
            small()?;
            let id = v.add_identity(&who, body)?;
            Ok(jsn(json!({ "id": id.to_hex() })))
        }
        (Method::POST, ["v1", "revocations"]) => {
            need(role, &[Role::Admin])?;
            small()?;
            let j: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| ApiError::bad("expected JSON"))?;
            let client: [u8; 32] = j["client"]
                .as_str()
                .and_then(|h| ObjectId::from_hex(h).ok())
                .map(|o| o.0)
                .ok_or_else(|| ApiError::bad("client key missing"))?;
            // The admin's own signature, logged with the revocation (an
            // unsigned one is refused: readers would not apply it).
            let time_ns = j["time_ns"]
                .as_i64()
                .ok_or_else(|| ApiError::bad("time_ns missing: sign the revocation"))?;
            let signature: [u8; 64] = j["signature"]
                .as_str()
                .and_then(|h| holdfast_core::id::parse_hex(h).ok())
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ApiError::bad("signature missing: sign the revocation"))?;
            v.revoke_client(&who, &client, (time_ns, signature))?;
            Ok(jsn(json!({ "revoked": holdfast_core::id::hex(&client) })))
        }
        (Method::POST, ["v1", "locks"]) => {
            need(role, &[Role::Admin])?;
            small()?;
            let j: serde_json::Value =
                serde_json::from_slice(body).map_err(|_| ApiError::bad("expected JSON"))?;
            let snap = j["snapshot"]
                .as_str()
                .ok_or_else(|| ApiError::bad("snapshot missing"))?;
            let until = j["until_ns"]
                .as_i64()
                .ok_or_else(|| ApiError::bad("until_ns missing"))?;
            let id = object_id(Kind::Snapshot, snap)?;
            let until = v.extend_lock(&who, &id, until)?;
            Ok(jsn(json!({ "lock_until_ns": until })))
        }
        (Method::POST, ["v1", "proposals"]) => {
            need(role, &[Role::Admin])?;
            small()?;
            let id = v.propose(&who, body)?;
            Ok(jsn(json!({ "id": id.to_hex() })))
        }
        (Method::POST, ["v1", "votes"]) => {
            need(role, &[Role::Admin])?;
            small()?;
            v.vote(&who, body)?;
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

/// Takes `mib` of an identity's share of large bodies in flight, or 429.
fn take_share(app: &App, key: [u8; 32], mib: usize) -> Result<KeyShare, ApiError> {
    let mut m = app.per_key.lock().unwrap_or_else(|p| p.into_inner());
    let n = m.entry(key).or_default();
    if *n + mib > PER_KEY_MIB {
        return Err(ApiError::new(
            429,
            "too many large uploads from this key at once; try again",
        ));
    }
    *n += mib;
    Ok(KeyShare {
        map: app.per_key.clone(),
        key,
        mib,
    })
}

async fn dispatch(State(app): State<App>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ticket = parts.extensions.get::<Arc<Ticket>>().cloned();
    let (start, route) = (
        std::time::Instant::now(),
        api_route(&parts.method, parts.uri.path()),
    );
    let resp = match serve_request(&app, parts, body, ticket).await {
        Ok(resp) => resp,
        Err(e) => public(e, &app.hide).into_response(),
    };
    app.metrics
        .observe(route, resp.status().as_u16(), start.elapsed());
    resp
}

async fn serve_request(
    app: &App,
    parts: axum::http::request::Parts,
    body: Body,
    ticket: Option<Arc<Ticket>>,
) -> Result<Response, ApiError> {
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    if method == Method::DELETE {
        return Err(ApiError::new(
            405,
            "nothing is ever deleted through the vault's API",
        ));
    }
    let auth =
        Auth::from_headers(|n| headers.get(n).and_then(|v| v.to_str().ok())).map_err(|e| {
            ApiError::unauthorized(format!("missing or malformed signature headers: {e}"))
        })?;
    let declared = declared_length(&headers)?;
    if declared > body_cap(&method, uri.path()) {
        return Err(ApiError::new(413, "body too large"));
    }
    // Key, time, signature over the declared hash, nonce, rate: before a
    // byte of the body is read.
    let role = {
        let (vault, auth, method) = (app.vault.clone(), auth.clone(), method.clone());
        let pq = uri
            .path_and_query()
            .map(|p| p.as_str().to_string())
            .unwrap_or_else(|| uri.path().to_string());
        // Under the read lock: requests authenticate side by side.
        tokio::task::spawn_blocking(move || read(&vault).authenticate(&auth, method.as_str(), &pq))
            .await
            .map_err(|_| ApiError::internal("request handler failed"))??
    };
    if let Some(t) = &ticket {
        t.authenticated();
    }
    app.metrics.contact(role);
    if method == Method::PUT
        && let Some(name) = uri.path().strip_prefix("/v1/objects/packs/")
    {
        // Counted against the identity's share while staged (so one key
        // cannot fill the disk with staging files), and two pieces of the
        // memory budget.
        let mib = declared.div_ceil(1 << 20).clamp(1, MAX_BODY >> 20);
        let _share = take_share(app, auth.key, mib)?;
        let _budget =
            tokio::time::timeout(BODY_WAIT, app.bodies.clone().acquire_many_owned(STREAM_MIB))
                .await
                .map_err(|_| {
                    ApiError::new(503, "the vault is busy receiving other uploads; try again")
                })?
                .map_err(|_| ApiError::internal("request handler failed"))?;
        return put_pack_streamed(app, name, auth.key, role, body, declared, auth.body_hash).await;
    }
    // Bodies are read whole (and hashed) before the vault looks at them:
    // bound the memory large ones may hold, over all requests and per key,
    // and how long one may take to arrive. Small bodies (votes, vetoes,
    // revocations, log reads) never wait for the large ones.
    let mut _budget = None;
    let mut _share = None;
    let (body, hash) = if declared > MAX_SMALL_BODY {
        let mib = declared.div_ceil(1 << 20).min(MAX_BODY >> 20);
        _share = Some(take_share(app, auth.key, mib)?);
        _budget = Some(
            tokio::time::timeout(BODY_WAIT, app.bodies.clone().acquire_many_owned(mib as u32))
                .await
                .map_err(|_| {
                    ApiError::new(503, "the vault is busy receiving other uploads; try again")
                })?
                .map_err(|_| ApiError::internal("request handler failed"))?,
        );
        let deadline = std::time::Duration::from_secs(30 + (declared / MIN_BODY_RATE) as u64);
        tokio::time::timeout(deadline, read_body(body, declared))
            .await
            .map_err(|_| ApiError::new(408, "request body too slow"))??
    } else {
        read_body(body, declared).await?
    };
    if hash != auth.body_hash {
        return Err(ApiError::bad("body does not match its signed hash"));
    }
    let app = app.clone();
    tokio::task::spawn_blocking(move || {
        route(&app, &method, &uri, &headers, auth.key, role, &body, hash)
    })
    .await
    .map_err(|_| ApiError::internal("request handler failed"))?
}

/// The strings no answer may contain: the storage location and the state
/// directory.
fn hidden(vault: &Shared) -> Vec<String> {
    let v = read(vault);
    let mut hide = vec![v.store.location(), v.state_dir.display().to_string()];
    if let Ok(c) = v.state_dir.canonicalize() {
        hide.push(c.display().to_string());
    }
    hide
}

/// Removes the staged uploads a crash (kill -9, power loss) cut short, in
/// the store (`tmp/*.stage` of a directory) and in `STATE_DIR/staging`
/// (created here: S3 spools there), and returns the latter. They are never
/// visible objects (an object becomes visible only by its commit), so this
/// deletes no stored data; their clients retry. Run before any connection
/// is accepted; this vault holds its state directory's lock, and stages
/// only there and in its own store.
fn clean_stale_staging(
    state_dir: &std::path::Path,
    store: &dyn holdfast_store::ObjectStore,
) -> PathBuf {
    let spool = state_dir.join("staging");
    if let Err(e) = holdfast_store::create_private_dir(&spool) {
        eprintln!("holdfast vault: cannot create {}: {e}", spool.display());
    }
    let stale =
        holdfast_store::clean_staging(&spool).and_then(|a| store.clean_staged().map(|b| a + b));
    match stale {
        Ok(0) => {}
        Ok(n) => eprintln!("holdfast vault: removed {n} staged uploads a stop cut short"),
        Err(e) => eprintln!("holdfast vault: could not remove stale staged uploads: {e}"),
    }
    spool
}

/// How much the server takes on at once, and how often it reclaims.
pub struct Limits {
    pub max_connections: usize,
    pub reclaim_every: Duration,
    pub body_budget_mib: u32,
}

/// Runs the vault until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish (up to 30 s) and returns.
pub async fn run(
    listener: TcpListener,
    vault: Shared,
    tls: Arc<rustls::ServerConfig>,
    limits: Limits,
    metrics: Arc<Metrics>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let Limits {
        max_connections,
        reclaim_every,
        body_budget_mib,
    } = limits;
    // A body larger than the budget could never be read: keep room for one.
    let budget = body_budget_mib.max((MAX_BODY >> 20) as u32);
    let store = read(&vault).store.clone();
    let spool = {
        let v = read(&vault);
        clean_stale_staging(&v.state_dir, v.store.as_ref())
    };
    let app = axum::Router::new().fallback(dispatch).with_state(App {
        vault: vault.clone(),
        store,
        hide: Arc::new(hidden(&vault)),
        metrics,
        bodies: Arc::new(Semaphore::new(budget as usize)),
        per_key: Default::default(),
        spool: Arc::new(spool),
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(max_connections));
    let addresses = gate::Addresses::new(gate::MAX_ANONYMOUS_PER_ADDRESS);
    let http = {
        let mut b = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new()).http1_only();
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(gate::HEADER_TIMEOUT);
        Arc::new(b)
    };
    let ticker = {
        let vault = vault.clone();
        let store = read(&vault).store.clone();
        tokio::spawn(async move {
            let mut last_reclaim = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let do_reclaim = last_reclaim.elapsed() >= reclaim_every;
                let (v, store) = (vault.clone(), store.clone());
                let _ = tokio::task::spawn_blocking(move || {
                    // The storage listing for reclaim, outside the lock.
                    let ages = do_reclaim.then(|| crate::state::pack_ages(store.as_ref()));
                    let mut v = write(&v);
                    v.execute_ready();
                    if let Some(ages) = ages
                        && let Err(e) = v.reclaim(ages)
                    {
                        v.alert(&format!("reclaim failed: {}", e.msg));
                    }
                })
                .await;
                if do_reclaim {
                    last_reclaim = tokio::time::Instant::now();
                }
            }
        })
    };
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => p.expect("semaphore open"),
            _ = &mut shutdown => break,
        };
        let (tcp, peer) = tokio::select! {
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(_) => {
                    // Out of descriptors, say: never spin on it.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // An address holding its share of connections that never
        // authenticated a request gets no more (and frees the permit now).
        let Some(ticket) = addresses.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let acceptor = acceptor.clone();
        let http = http.clone();
        let t = ticket.clone();
        let svc = TowerToHyperService::new(app.clone().map_request(
            move |mut r: axum::http::Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(t.clone());
                r
            },
        ));
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(gate::HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
            let io = gate::WriteDeadline::new(tls, gate::WRITE_STALL_TIMEOUT);
            let _ = http.serve_connection(TokioIo::new(io), svc).await;
            drop(ticket);
            drop(permit);
        });
    }
    ticker.abort();
    let _ = tokio::time::timeout(
        Duration::from_secs(30),
        permits.acquire_many(max_connections as u32),
    )
    .await;
}

/// `holdfast vault serve`: opens the vault, binds, prints the address, and
/// serves until SIGTERM or Ctrl-C.
pub fn serve(opts: ServeOptions) -> Result<(), VaultError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| VaultError::Io(e.to_string()))?;
    rt.block_on(async move {
        let vault = Vault::open(
            Arc::from(opts.store),
            &opts.state_dir,
            opts.identity,
            opts.next_identity,
            opts.config_id,
            opts.vault,
        )?;
        // Before the address is printed, so that whoever reads it sees no
        // stale staging (run() makes sure again, for its other callers).
        clean_stale_staging(&vault.state_dir, vault.store.as_ref());
        let tls = crate::tls::server_config(vault.tls.clone())?;
        let n = vault.log.len();
        let alerts = vault.alerts.clone();
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| VaultError::Io(format!("{}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| VaultError::Io(e.to_string()))?;
        // Bound before anything is printed: whoever reads the first line
        // may connect to either listener at once.
        let http = match opts.http {
            Some(a) => Some(
                TcpListener::bind(a)
                    .await
                    .map_err(|e| VaultError::Io(format!("--http {a}: {e}")))?,
            ),
            None => None,
        };
        println!(
            "holdfast vault listening on https://{addr} ({} snapshots, log of {n} entries)",
            vault.st.snapshots.len()
        );
        let vault: Shared = Arc::new(std::sync::RwLock::new(vault));
        let metrics = Arc::new(Metrics::new());
        if let Some(l) = http {
            let addr = l.local_addr().map_err(|e| VaultError::Io(e.to_string()))?;
            println!("holdfast vault metrics and dashboard on http://{addr}/");
            let pages = crate::metrics::Pages {
                vault: vault.clone(),
                metrics: metrics.clone(),
                hide: Arc::new(hidden(&vault)),
            };
            tokio::spawn(crate::metrics::serve_http(l, pages));
        }
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {},
                _ = tokio::signal::ctrl_c() => {},
            }
        };
        run(
            listener,
            vault,
            tls,
            Limits {
                max_connections: opts.max_connections,
                reclaim_every: opts.reclaim_every,
                body_budget_mib: opts.body_budget_mib,
            },
            metrics,
            shutdown,
        )
        .await;
        // Counts of repeated or suppressed alerts still held go out now.
        alerts.flush(Duration::from_secs(10));
        eprintln!("holdfast vault stopped");
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::fuzz_request;

    #[test]
    fn request_parsers_survive_random_and_mutated_input() {
        let mut s = 0x9e3779b97f4a7c15u64;
        let mut next = || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        };
        let seeds: [&[u8]; 4] = [
            b"bytes=0-10\nfrom=5\nsnapshots\n0123abcd",
            b"HFPROP01\x00\x01\x02",
            b"HFVOTE01",
            b"{\"snapshot\":\"ab\",\"until_ns\":1}",
        ];
        for i in 0..20_000 {
            let mut v = seeds[i % seeds.len()].to_vec();
            for _ in 0..(next() % 8) {
                let n = next();
                let pos = (n as usize) % (v.len() + 1);
                match n % 3 {
                    0 => v.insert(pos, (n >> 8) as u8),
                    1 if pos < v.len() => v[pos] ^= (n >> 16) as u8,
                    _ => v.truncate(pos),
                }
            }
            fuzz_request(&v);
        }
    }
}
