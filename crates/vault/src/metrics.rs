//! What the vault tells its operators: `GET /metrics` (Prometheus text) and
//! `GET /` (the dashboard, [`crate::dashboard`]) on a plain-HTTP listener of
//! its own (`vault serve --http ADDR`, loopback unless told otherwise).
//!
//! That listener is deliberately separate from the API: it has no route to
//! any vault function, only these two read-only pages, built from an
//! [`Overview`] copied under the vault's lock (no storage I/O). Anything but
//! `GET` is 405, any other path 404; a connection gets a header timeout, a
//! whole-connection deadline, a small header buffer, and a place among
//! [`MAX_HTTP_CONNECTIONS`] (beyond that it is closed at once).
//!
//! Labels are a fixed vocabulary or a client's identity name, sanitised
//! ([`client_label`]): never a mailbox, a path, an address or alert text. A
//! client costs a handful of series whatever it stores.
//!
//! State metrics are computed at each scrape into a registry made for that
//! scrape (`prometheus-client`, explicit registry, no global state); request
//! counts and latencies live in [`Metrics`] for the life of the process.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Method, Request, Response, StatusCode, header};
use holdfast_core::format::Role;
use holdfast_core::governance::{Action, Status};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::alert::Recent;
use crate::gate;
use crate::state::{Vault, describe, now_ns};

/// Connections the metrics listener serves at once; more are closed.
pub const MAX_HTTP_CONNECTIONS: usize = 8;
/// The longest one connection to the metrics listener may live.
pub const HTTP_CONNECTION_DEADLINE: Duration = Duration::from_secs(30);
/// Largest request head the metrics listener reads.
const HTTP_MAX_HEAD: usize = 16 * 1024;

const NS: i64 = 1_000_000_000;

type RequestLabels = [(&'static str, String); 2];

/// Request counts and latencies (API and metrics listener alike), and when
/// a replica or an auditor last made an authenticated request.
pub struct Metrics {
    requests: Family<RequestLabels, Counter>,
    latency: Family<RequestLabels, Histogram, fn() -> Histogram>,
    replica_contact_ns: AtomicI64,
    auditor_contact_ns: AtomicI64,
    started_ns: i64,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(latency_histogram),
            replica_contact_ns: AtomicI64::new(i64::MIN),
            auditor_contact_ns: AtomicI64::new(i64::MIN),
            started_ns: now_ns(),
        }
    }

    /// One answered request: `route` from [`api_route`] or the listener's
    /// own names, so the label set is bounded.
    pub fn observe(&self, route: &'static str, status: u16, elapsed: Duration) {
        let labels = [("route", route.to_string()), ("status", status.to_string())];
        self.requests.get_or_create(&labels).inc();
        self.latency
            .get_or_create(&labels)
            .observe(elapsed.as_secs_f64());
    }

    /// An authenticated request from `role`: replicas and auditors are
    /// remembered (the dashboard shows when each last came).
    pub fn contact(&self, role: Role) {
        let slot = match role {
            Role::Replica => &self.replica_contact_ns,
            Role::Auditor => &self.auditor_contact_ns,
            _ => return,
        };
        slot.store(now_ns(), Ordering::Relaxed);
    }

    fn last(slot: &AtomicI64) -> Option<i64> {
        Some(slot.load(Ordering::Relaxed)).filter(|t| *t != i64::MIN)
    }
}

/// The route of an API request, from a fixed list (never the object name).
pub fn api_route(method: &Method, path: &str) -> &'static str {
    let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), segs.as_slice()) {
        ("GET", ["v1", "config"]) => "config",
        ("GET", ["v1", "identities"]) => "identities_list",
        ("GET", ["v1", "identities", _]) => "identity_get",
        ("POST", ["v1", "identities"]) => "identity_add",
        ("GET", ["v1", "objects", _]) => "objects_list",
        ("GET", ["v1", "objects", _, _]) => "object_get",
        ("GET", ["v1", "stat", _, _]) => "object_stat",
        ("PUT", ["v1", "objects", "packs", _]) => "pack_put",
        ("PUT", ["v1", "objects", "snapshots", _]) => "snapshot_put",
        ("GET", ["v1", "snapshots"]) => "snapshots_list",
        ("POST", ["v1", "locks"]) => "lock",
        ("POST", ["v1", "proposals"]) => "propose",
        ("GET", ["v1", "proposals"]) => "proposals_list",
        ("POST", ["v1", "votes"]) => "vote",
        ("GET", ["v1", "log", "checkpoint"]) => "log_checkpoint",
        ("GET", ["v1", "log", "proof"]) => "log_proof",
        ("GET", ["v1", "log", "entries"]) => "log_entries",
        _ => "other",
    }
}

/// A client's name as a label value: the identity name if it is a plain
/// host-like name (letters, digits, `.`, `_`, `-`; at most 64), else
/// `key-` and the first bytes of its public key. A name that looks like a
/// mailbox or a path never reaches a label.
pub fn client_label(name: &str, public: &[u8; 32]) -> String {
    let plain = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !name.starts_with('.');
    if plain {
        name.to_string()
    } else {
        format!("key-{}", holdfast_core::id::hex(&public[..4]))
    }
}

/// One client, as the metrics and the dashboard show it.
#[derive(Clone, Debug)]
pub struct ClientView {
    pub label: String,
    pub removed: bool,
    pub snapshots: u64,
    /// The vault's time of its newest snapshot.
    pub last_ns: Option<i64>,
    pub stored_bytes: u64,
    /// The earliest lock still in force on one of its snapshots.
    pub nearest_lock_ns: Option<i64>,
    /// The latest lock: until then at least one snapshot is held.
    pub latest_lock_ns: Option<i64>,
    /// Live snapshots the vault flagged as anomalous (log kind 9).
    pub flagged: u64,
    /// The signals of its newest flagged snapshot, by name.
    pub newest_flags: Vec<&'static str>,
    newest_flag_ns: i64,
}

/// A proposal not yet executed.
#[derive(Clone, Debug)]
pub struct ProposalView {
    pub id: String,
    pub action: String,
    pub proposer: String,
    pub received_ns: i64,
    /// `pending`, `waiting` (quorum reached, veto window open), `ready`,
    /// `vetoed`.
    pub status: &'static str,
    pub approvals: Vec<String>,
    pub needed: usize,
    /// End of the veto window, when quorum is reached.
    pub until_ns: Option<i64>,
    pub vetoed_by: Option<String>,
}

/// Everything the two pages show, copied under the vault's lock.
#[derive(Clone, Debug)]
pub struct Overview {
    pub now_ns: i64,
    pub started_ns: i64,
    pub config_id: String,
    pub clients: Vec<ClientView>,
    pub proposals: Vec<ProposalView>,
    pub log_entries: u64,
    pub log_problems: u64,
    /// Pack bytes each client may store (`--quota-mib`).
    pub quota_bytes: u64,
    pub replica_contact_ns: Option<i64>,
    pub auditor_contact_ns: Option<i64>,
    pub alerts_by_kind: Vec<(&'static str, u64)>,
    pub recent_alerts: Vec<Recent>,
}

impl Overview {
    /// Reads the vault's state (no storage I/O: only what it holds).
    pub fn collect(v: &Vault, m: &Metrics) -> Overview {
        let now = v.clock.now();
        let name_of = |k: &[u8; 32]| match v.st.members.get(k) {
            Some(mem) => client_label(&mem.name, k),
            None => format!("key-{}", holdfast_core::id::hex(&k[..4])),
        };
        // Clients in name order; labels made unique.
        let mut clients: BTreeMap<String, ([u8; 32], ClientView)> = BTreeMap::new();
        let mut used = HashSet::new();
        let mut members: Vec<_> =
            v.st.members
                .values()
                .filter(|mem| mem.role == Role::Client)
                .collect();
        members.sort_by(|a, b| (&a.name, a.public).cmp(&(&b.name, b.public)));
        for mem in members {
            let mut label = client_label(&mem.name, &mem.public);
            if !used.insert(label.clone()) {
                label = format!("{label}-{}", holdfast_core::id::hex(&mem.public[..4]));
                used.insert(label.clone());
            }
            clients.insert(
                label.clone(),
                (
                    mem.public,
                    ClientView {
                        label,
                        removed: v.st.removed.contains(&mem.public),
                        snapshots: 0,
                        last_ns: None,
                        stored_bytes: v.stored_bytes(&mem.public),
                        nearest_lock_ns: None,
                        latest_lock_ns: None,
                        flagged: 0,
                        newest_flags: Vec::new(),
                        newest_flag_ns: i64::MIN,
                    },
                ),
            );
        }
        let mut by_key: BTreeMap<[u8; 32], String> = clients
            .iter()
            .map(|(label, (k, _))| (*k, label.clone()))
            .collect();
        for s in v.st.snapshots.values() {
            let label = by_key.entry(s.client).or_insert_with(|| {
                let label = format!("key-{}", holdfast_core::id::hex(&s.client[..4]));
                clients.insert(
                    label.clone(),
                    (
                        s.client,
                        ClientView {
                            label: label.clone(),
                            removed: false,
                            snapshots: 0,
                            last_ns: None,
                            stored_bytes: v.stored_bytes(&s.client),
                            nearest_lock_ns: None,
                            latest_lock_ns: None,
                            flagged: 0,
                            newest_flags: Vec::new(),
                            newest_flag_ns: i64::MIN,
                        },
                    ),
                );
                label
            });
            let c = &mut clients.get_mut(label.as_str()).expect("inserted").1;
            c.snapshots += 1;
            c.last_ns = c.last_ns.max(Some(s.added_ns));
            c.latest_lock_ns = c.latest_lock_ns.max(Some(s.lock_until_ns));
            if !s.flags.is_empty() {
                c.flagged += 1;
                if s.added_ns > c.newest_flag_ns {
                    c.newest_flag_ns = s.added_ns;
                    c.newest_flags = s
                        .flags
                        .iter()
                        .map(|(code, _)| holdfast_core::format::Signal(*code).name())
                        .collect();
                }
            }
            if s.lock_until_ns > now {
                c.nearest_lock_ns = Some(
                    c.nearest_lock_ns
                        .map_or(s.lock_until_ns, |n| n.min(s.lock_until_ns)),
                );
            }
        }
        let proposals = v
            .st
            .proposals
            .iter()
            .filter(|(_, p)| p.executed.is_none())
            .map(|(id, p)| {
                let (status, until_ns, vetoed_by) = match v.st.status(id, now) {
                    Some(Status::Pending { .. }) | None => ("pending", None, None),
                    Some(Status::Waiting { until_ns }) => ("waiting", Some(until_ns), None),
                    Some(Status::Ready) => ("ready", None, None),
                    Some(Status::Vetoed { by }) => ("vetoed", None, Some(name_of(&by))),
                };
                let mut approvals: Vec<String> = Vec::new();
                for (a, _, _) in &p.approvals {
                    let n = name_of(a);
                    if !approvals.contains(&n) {
                        approvals.push(n);
                    }
                }
                ProposalView {
                    id: id.short(),
                    action: match &p.proposal.action {
                        Action::RemoveIdentity(k) => format!("removal of identity {}", name_of(k)),
                        a => describe(a),
                    },
                    proposer: name_of(&p.proposal.proposer),
                    received_ns: p.received_ns,
                    status,
                    approvals,
                    needed: v.st.quorum,
                    until_ns,
                    vetoed_by,
                }
            })
            .collect();
        Overview {
            now_ns: now,
            started_ns: m.started_ns,
            config_id: v.config_id.short(),
            clients: clients.into_values().map(|(_, c)| c).collect(),
            proposals,
            log_entries: v.log.len(),
            log_problems: v.st.problems.len() as u64,
            quota_bytes: v.opts.quota_bytes,
            replica_contact_ns: Metrics::last(&m.replica_contact_ns),
            auditor_contact_ns: Metrics::last(&m.auditor_contact_ns),
            alerts_by_kind: v.alerts.counts(),
            recent_alerts: v.alerts.recent(),
        }
    }
}

fn secs(ns: i64) -> i64 {
    ns.div_euclid(NS)
}

type ClientGauge = Family<[(&'static str, String); 1], Gauge>;

/// The Prometheus text exposition of an overview plus the request metrics.
pub fn render(o: &Overview, m: &Metrics) -> String {
    let mut r = Registry::with_prefix("holdfast");
    let client = |c: &ClientView| [("client", c.label.clone())];
    let family = |r: &mut Registry, name: &str, help: &str| -> ClientGauge {
        let f = ClientGauge::default();
        r.register(name, help, f.clone());
        f
    };
    let last = family(
        &mut r,
        "backup_last_success_timestamp_seconds",
        "Vault time of the client's newest snapshot (Unix seconds); absent before its first",
    );
    let snaps = family(&mut r, "snapshots", "Live snapshots of the client");
    let stored = family(
        &mut r,
        "stored_bytes",
        "Bytes of encrypted pack data stored for the client (what its quota counts)",
    );
    let nearest = family(
        &mut r,
        "lock_nearest_expiry_timestamp_seconds",
        "Earliest retention lock still in force on one of the client's snapshots (Unix seconds)",
    );
    let flagged = family(
        &mut r,
        "snapshots_flagged",
        "Live snapshots of the client the vault flagged as anomalous",
    );
    let latest = family(
        &mut r,
        "lock_latest_expiry_timestamp_seconds",
        "Latest retention lock on the client's snapshots: until then at least one is held (Unix seconds)",
    );
    for c in &o.clients {
        let l = client(c);
        if let Some(t) = c.last_ns {
            last.get_or_create(&l).set(secs(t));
        }
        snaps.get_or_create(&l).set(c.snapshots as i64);
        flagged.get_or_create(&l).set(c.flagged as i64);
        stored
            .get_or_create(&l)
            .set(c.stored_bytes.min(i64::MAX as u64) as i64);
        if let Some(t) = c.nearest_lock_ns {
            nearest.get_or_create(&l).set(secs(t));
        }
        if let Some(t) = c.latest_lock_ns {
            latest.get_or_create(&l).set(secs(t));
        }
    }
    let gauge = |r: &mut Registry, name: &str, help: &str, v: i64| {
        let g: Gauge = Gauge::default();
        g.set(v);
        r.register(name, help, g);
    };
    gauge(
        &mut r,
        "clients",
        "Client identities the vault knows",
        o.clients.len() as i64,
    );
    gauge(
        &mut r,
        "quota_bytes",
        "Bytes of pack data each client may store (holdfast_stored_bytes counts against it)",
        o.quota_bytes.min(i64::MAX as u64) as i64,
    );
    gauge(
        &mut r,
        "log_entries",
        "Entries in the vault's append-only log",
        o.log_entries as i64,
    );
    gauge(
        &mut r,
        "log_problems",
        "Log entries that broke a rule when the vault read its own log (tampering)",
        o.log_problems as i64,
    );
    gauge(
        &mut r,
        "proposals_pending",
        "Proposals neither executed nor vetoed",
        o.proposals.iter().filter(|p| p.status != "vetoed").count() as i64,
    );
    gauge(
        &mut r,
        "proposals_vetoed",
        "Vetoed proposals (final; kept in the log)",
        o.proposals.iter().filter(|p| p.status == "vetoed").count() as i64,
    );
    if let Some(t) = o
        .proposals
        .iter()
        .filter_map(|p| p.until_ns)
        .chain(
            o.proposals
                .iter()
                .filter(|p| p.status == "ready")
                .map(|_| o.now_ns),
        )
        .min()
    {
        gauge(
            &mut r,
            "proposal_next_execution_timestamp_seconds",
            "When the next approved proposal may run: its veto window ends (Unix seconds)",
            secs(t),
        );
    }
    let contact = Family::<[(&'static str, String); 1], Gauge>::default();
    for (role, t) in [
        ("replica", o.replica_contact_ns),
        ("auditor", o.auditor_contact_ns),
    ] {
        if let Some(t) = t {
            contact
                .get_or_create(&[("role", role.to_string())])
                .set(secs(t));
        }
    }
    r.register(
        "last_contact_timestamp_seconds",
        "Last authenticated request from a replica or an auditor since the vault started (Unix seconds)",
        contact,
    );
    gauge(
        &mut r,
        "start_time_seconds",
        "When this vault process started (Unix seconds)",
        secs(o.started_ns),
    );
    let alerts = Family::<[(&'static str, String); 1], Counter>::default();
    for (kind, n) in &o.alerts_by_kind {
        alerts
            .get_or_create(&[("kind", kind.to_string())])
            .inc_by(*n);
    }
    r.register(
        "alerts",
        "Alerts raised since the vault started, by kind",
        alerts,
    );
    r.register(
        "http_requests",
        "Requests answered, by route and status (API and metrics listener)",
        m.requests.clone(),
    );
    r.register(
        "http_request_duration_seconds",
        "Time to answer a request, by route and status",
        m.latency.clone(),
    );
    r.register(
        "build",
        "The running holdfast's version",
        Info::new([("version", env!("CARGO_PKG_VERSION").to_string())]),
    );
    let mut out = String::new();
    prometheus_text::encode(&mut out, &r).expect("writing to a String");
    out
}

/// The shared pieces the metrics listener needs.
#[derive(Clone)]
pub struct Pages {
    pub vault: crate::state::Shared,
    pub metrics: Arc<Metrics>,
    /// Strings no page may show (the state directory, the storage location).
    pub hide: Arc<Vec<String>>,
}

/// Which page a request asks for, or why it gets none.
fn route(method: &Method, path: &str) -> Result<&'static str, StatusCode> {
    let page = match path {
        "/metrics" => "metrics",
        "/" => "dashboard",
        _ => return Err(StatusCode::NOT_FOUND),
    };
    if method != Method::GET {
        return Err(StatusCode::METHOD_NOT_ALLOWED);
    }
    Ok(page)
}

async fn answer(pages: &Pages, method: &Method, path: &str) -> (&'static str, Response<Body>) {
    let refuse = |code: StatusCode, text: &str| {
        let mut b = Response::builder()
            .status(code)
            .header(header::CONTENT_TYPE, "text/plain; charset=utf-8");
        if code == StatusCode::METHOD_NOT_ALLOWED {
            b = b.header(header::ALLOW, "GET");
        }
        b.body(Body::from(format!("{text}\n")))
            .expect("static response")
    };
    let page = match route(method, path) {
        Ok(p) => p,
        Err(StatusCode::METHOD_NOT_ALLOWED) => {
            return (
                "other",
                refuse(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "only GET: this listener is read-only",
                ),
            );
        }
        Err(code) => return ("other", refuse(code, "not found: try /metrics or /")),
    };
    let p = pages.clone();
    let built = tokio::task::spawn_blocking(move || {
        let o = {
            let v = crate::state::read(&p.vault);
            Overview::collect(&v, &p.metrics)
        };
        match page {
            "metrics" => (prometheus_text::CONTENT_TYPE, render(&o, &p.metrics)),
            _ => (
                "text/html; charset=utf-8",
                crate::dashboard::render(&o, &p.hide),
            ),
        }
    })
    .await;
    let resp = match built {
        Ok((ctype, body)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, ctype)
            .header(header::CACHE_CONTROL, "no-store")
            .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
            .header(
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
            )
            .body(Body::from(body))
            .expect("static response"),
        Err(_) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal error"),
    };
    (page, resp)
}

/// Serves `/metrics` and `/` on `listener` until the task is dropped.
pub async fn serve_http(listener: TcpListener, pages: Pages) {
    let permits = Arc::new(Semaphore::new(MAX_HTTP_CONNECTIONS));
    let http = {
        let mut b = hyper::server::conn::http1::Builder::new();
        b.timer(TokioTimer::new())
            .header_read_timeout(gate::HEADER_TIMEOUT)
            .max_buf_size(HTTP_MAX_HEAD)
            // One request per connection: a scraper reconnects (cheap on
            // loopback), and no idle connection holds one of the few places.
            .keep_alive(false);
        Arc::new(b)
    };
    loop {
        let tcp = match listener.accept().await {
            Ok((tcp, _)) => tcp,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            drop(tcp);
            continue;
        };
        let (pages, http) = (pages.clone(), http.clone());
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let pages = pages.clone();
                async move {
                    let start = Instant::now();
                    let (page, resp) = answer(&pages, req.method(), req.uri().path()).await;
                    pages
                        .metrics
                        .observe(page, resp.status().as_u16(), start.elapsed());
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = gate::WriteDeadline::new(tcp, gate::WRITE_STALL_TIMEOUT);
            let conn = http.serve_connection(TokioIo::new(io), svc);
            let _ = tokio::time::timeout(HTTP_CONNECTION_DEADLINE, conn).await;
            drop(permit);
        });
    }
}

/// `--http ADDR`: a port alone binds the loopback address.
pub fn parse_http_addr(s: &str) -> Result<SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse::<SocketAddr>()
        .map_err(|_| format!("{s}: expected PORT or HOST:PORT (e.g. 127.0.0.1:9464)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_a_fixed_vocabulary() {
        let name = "0".repeat(64);
        assert_eq!(
            api_route(&Method::PUT, &format!("/v1/objects/packs/{name}")),
            "pack_put"
        );
        assert_eq!(
            api_route(&Method::GET, &format!("/v1/objects/packs/{name}")),
            "object_get"
        );
        assert_eq!(api_route(&Method::GET, "/etc/passwd"), "other");
        assert_eq!(api_route(&Method::DELETE, "/v1/objects/packs/x"), "other");
    }

    #[test]
    fn labels_never_carry_a_mailbox_or_a_path() {
        let k = [0xabu8; 32];
        assert_eq!(client_label("mx1", &k), "mx1");
        assert_eq!(client_label("mx-1.example_net", &k), "mx-1.example_net");
        for bad in [
            "alice@example.net",
            "/var/mail/alice",
            "../x",
            "a b",
            "",
            ".hidden",
            "10.0.0.1:8443",
            &"x".repeat(65),
        ] {
            assert_eq!(client_label(bad, &k), "key-abababab", "{bad}");
        }
    }

    #[test]
    fn the_listener_answers_two_pages_and_refuses_the_rest() {
        assert_eq!(route(&Method::GET, "/metrics"), Ok("metrics"));
        assert_eq!(route(&Method::GET, "/"), Ok("dashboard"));
        assert_eq!(
            route(&Method::POST, "/metrics"),
            Err(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            route(&Method::PUT, "/v1/objects/packs/x"),
            Err(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            route(&Method::GET, "/v1/config"),
            Err(StatusCode::NOT_FOUND)
        );
    }

    #[test]
    fn http_addr_defaults_to_loopback() {
        assert_eq!(
            parse_http_addr("9464").unwrap(),
            "127.0.0.1:9464".parse().unwrap()
        );
        assert_eq!(
            parse_http_addr("[::1]:9464").unwrap(),
            "[::1]:9464".parse().unwrap()
        );
        assert!(parse_http_addr("localhost").is_err());
    }
}
