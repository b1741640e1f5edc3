//! HTTPS transport for the vault. One dispatch function maps (method, path)
//! to a [`Vault`] call after authenticating the request; the vault's state
//! sits behind one mutex, so every rule is checked and applied atomically.
//! Bounded: a connection limit, a body cap (checked before a body is
//! buffered beyond it), per-identity rate limits and quotas in the state.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::format::Role;
use holdfast_core::request::Auth;
use holdfast_store::{Kind, check_name};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::state::{Options, Vault, describe, now_ns};
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
    pub listen: SocketAddr,
    pub vault: Options,
    pub max_connections: usize,
    pub reclaim_every: Duration,
}

type Shared = Arc<Mutex<Vault>>;

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

fn handle(
    v: &mut Vault,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Response, ApiError> {
    let path = uri.path();
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or(path);
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
    let role = v.authenticate(&auth, method.as_str(), pq, body)?;
    let who = auth.key;
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let small = || {
        if body.len() > MAX_SMALL_BODY {
            Err(ApiError::new(413, "body too large"))
        } else {
            Ok(())
        }
    };
    let bytes = |b: Vec<u8>| -> Response {
        ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()
    };
    let jsn = |j: serde_json::Value| -> Response { axum::Json(j).into_response() };
    match (method.clone(), segs.as_slice()) {
        (Method::GET, ["v1", "config"]) => Ok(bytes(v.store_get(Kind::Config, "config")?)),
        (Method::GET, ["v1", "identities"]) => {
            let l = v.store.list(Kind::Identity).map_err(ApiError::store)?;
            Ok(jsn(json!(l)))
        }
        (Method::GET, ["v1", "identities", name]) => {
            object_id(Kind::Identity, name)?;
            Ok(bytes(v.store_get(Kind::Identity, name)?))
        }
        (Method::GET, ["v1", "objects", kind]) => {
            let kind = kind_of(kind)?;
            Ok(jsn(json!(v.list(&who, role, kind)?)))
        }
        (Method::GET, ["v1", "objects", kind, name])
        | (Method::GET, ["v1", "stat", kind, name]) => {
            let k = kind_of(kind)?;
            let id = object_id(k, name)?;
            let visible = v.may_read(&who, role, k, &id)
                && (k != Kind::Snapshot || v.snapshots.contains_key(&id));
            if !visible {
                // Same answer for "absent" and "not yours": no probing.
                return Err(ApiError::not_found("no such object"));
            }
            if segs[1] == "stat" {
                let size = v.store.size(k, name).map_err(ApiError::store)?;
                return Ok(jsn(json!({ "size": size })));
            }
            match parse_range(headers)? {
                Some((off, len)) => Ok(bytes(
                    v.store
                        .get_range(k, name, off, len)
                        .map_err(ApiError::store)?,
                )),
                None => Ok(bytes(v.store_get(k, name)?)),
            }
        }
        (Method::PUT, ["v1", "objects", "packs", name]) => {
            need(role, &[Role::Client])?;
            let id = object_id(Kind::Pack, name)?;
            v.put_pack(&who, &id, body)?;
            Ok(StatusCode::CREATED.into_response())
        }
        (Method::PUT, ["v1", "objects", "snapshots", name]) => {
            need(role, &[Role::Client])?;
            let id = object_id(Kind::Snapshot, name)?;
            let m = v.put_snapshot(&who, &id, body)?;
            Ok(jsn(
                json!({ "time_ns": m.time_ns, "lock_until_ns": m.lock_until_ns }),
            ))
        }
        (Method::GET, ["v1", "snapshots"]) => {
            let list: Vec<_> = v
                .snapshots
                .iter()
                .filter(|(id, _)| v.may_read(&who, role, Kind::Snapshot, id))
                .map(|(id, s)| {
                    json!({
                        "id": id.to_hex(),
                        "client": holdfast_core::id::hex(&s.client),
                        "time_ns": s.time_ns,
                        "lock_until_ns": s.lock_until_ns,
                    })
                })
                .collect();
            Ok(jsn(json!(list)))
        }
        (Method::POST, ["v1", "identities"]) => {
            need(role, &[Role::Admin])?;
            small()?;
            let id = v.add_identity(&who, body)?;
            Ok(jsn(json!({ "id": id.to_hex() })))
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
        (Method::GET, ["v1", "proposals"]) => {
            need(
                role,
                &[Role::Admin, Role::Auditor, Role::Replica, Role::Restore],
            )?;
            let now = now_ns();
            let list: Vec<_> = v
                .proposals
                .iter()
                .map(|(id, p)| {
                    let status = if p.executed {
                        "executed".to_string()
                    } else {
                        format!("{:?}", v.proposal_status(id, now).expect("listed"))
                    };
                    json!({
                        "id": id.to_hex(),
                        "action": describe(&p.proposal.action),
                        "proposer": holdfast_core::id::hex(&p.proposal.proposer),
                        "received_ns": p.received_ns,
                        "status": status,
                        "proposal": holdfast_core::id::hex(&p.proposal.encode()),
                    })
                })
                .collect();
            Ok(jsn(json!(list)))
        }
        (Method::GET, ["v1", "log", "checkpoint"]) => Ok(bytes(v.checkpoint().encode())),
        (Method::GET, ["v1", "log", "proof"]) => {
            let from = query(uri, "from").ok_or_else(|| ApiError::bad("from= missing"))?;
            let proof = v.consistency(from)?;
            Ok(jsn(json!({
                "checkpoint": holdfast_core::id::hex(&v.checkpoint().encode()),
                "proof": proof.iter().map(|h| holdfast_core::id::hex(h)).collect::<Vec<_>>(),
            })))
        }
        (Method::GET, ["v1", "log", "entries"]) => {
            need(
                role,
                &[Role::Admin, Role::Auditor, Role::Replica, Role::Restore],
            )?;
            let start = query(uri, "start").unwrap_or(0) as usize;
            let count = query(uri, "count").unwrap_or(10_000).min(10_000) as usize;
            let mut out = Vec::new();
            for e in v.log.entries.iter().skip(start).take(count) {
                out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                out.extend_from_slice(e);
            }
            Ok(bytes(out))
        }
        _ => Err(ApiError::not_found("no such endpoint")),
    }
}

impl Vault {
    fn store_get(&self, kind: Kind, name: &str) -> Result<Vec<u8>, ApiError> {
        self.store.get(kind, name).map_err(ApiError::store)
    }
}

async fn dispatch(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = tokio::task::spawn_blocking(move || {
        let mut v = state.lock().unwrap_or_else(|p| p.into_inner());
        handle(&mut v, &method, &uri, &headers, &body)
    })
    .await;
    match r {
        Ok(Ok(resp)) => resp,
        Ok(Err(e)) => e.into_response(),
        Err(_) => ApiError::internal("request handler failed").into_response(),
    }
}

/// Runs the vault until `shutdown` resolves; then stops accepting, lets
/// requests in flight finish (up to 30 s) and returns.
pub async fn run(
    listener: TcpListener,
    vault: Shared,
    tls: Arc<rustls::ServerConfig>,
    max_connections: usize,
    reclaim_every: Duration,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let app = axum::Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(vault.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let permits = Arc::new(Semaphore::new(max_connections));
    let ticker = {
        let vault = vault.clone();
        tokio::spawn(async move {
            let mut last_reclaim = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let do_reclaim = last_reclaim.elapsed() >= reclaim_every;
                let v = vault.clone();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut v = v.lock().unwrap_or_else(|p| p.into_inner());
                    v.execute_ready();
                    if do_reclaim && let Err(e) = v.reclaim() {
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
        let (tcp, _) = tokio::select! {
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
            _ = &mut shutdown => break,
        };
        let acceptor = acceptor.clone();
        let svc = TowerToHyperService::new(app.clone());
        tokio::spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    _ => return,
                };
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(tls), svc)
                .await;
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
        let tls = crate::tls::server_config(&opts.identity)?;
        let vault = Vault::open(
            opts.store,
            &opts.state_dir,
            opts.identity,
            opts.config_id,
            opts.vault,
        )?;
        let n = vault.log.entries.len();
        let listener = TcpListener::bind(opts.listen)
            .await
            .map_err(|e| VaultError::Io(format!("{}: {e}", opts.listen)))?;
        let addr = listener
            .local_addr()
            .map_err(|e| VaultError::Io(e.to_string()))?;
        println!(
            "holdfast vault listening on https://{addr} ({} snapshots, log of {n} entries)",
            vault.snapshots.len()
        );
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
            Arc::new(Mutex::new(vault)),
            tls,
            opts.max_connections,
            opts.reclaim_every,
            shutdown,
        )
        .await;
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
