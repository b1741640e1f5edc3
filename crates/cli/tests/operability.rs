//! Running holdfast the way operators run everything else (issue 12): the
//! vault's /metrics and dashboard, textfile metrics from backups, systemd
//! units, and a command line without traps. Real binary, real vault.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Sends raw bytes to the metrics listener; returns (status, head, body).
/// A closed connection without an answer is status 0.
fn http_raw(addr: &str, raw: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(raw);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

fn http(addr: &str, method: &str, path: &str) -> (u16, String, String) {
    http_raw(
        addr,
        format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
    )
}

/// A sample line of an exposition: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// Every sample line of an exposition.
fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let rest = rest.strip_suffix('}').unwrap();
                let labels = rest
                    .split("\",")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| {
                        let (k, v) = kv.split_once("=\"").unwrap();
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (n.to_string(), labels)
            }
            None => (series.to_string(), Vec::new()),
        };
        out.push((name, labels, value.parse().unwrap()));
    }
    out
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples(text)
        .into_iter()
        .find(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
}

/// A tool the tests need from Debian: absent on a developer's machine is a
/// skip (said loudly); absent in CI (`CI` set, as .ci/run runs) a failure.
fn tool(name: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {name}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is missing: .ci/run installs it"
        );
        eprintln!("SKIPPED: {name} not installed");
    }
    found
}

/// `vault serve --http`: /metrics passes promtool, names and units follow
/// Prometheus's guide, a client costs a few series and no label holds a
/// path, a mailbox or an address; the dashboard shows three clients, a
/// proposal with its veto, the replica's contact and the alerts; the
/// listener answers nothing else and survives garbage.
#[test]
fn vault_metrics_and_dashboard() {
    let w = World::new();
    w.init_with(&["--client", "mx1", "--client", "mx2", "--client", "mx3"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let t0 = now_secs();
    let vault = w.start_vault(&["--http", &port.to_string()]);
    let url = vault.url.clone();

    let src = w.path("mail");
    make_maildir(&src, 2, 8, 7);
    backup_via(&w, &url, &w.key("client"), &src);
    mail_day(&src, 1);
    backup_via(&w, &url, &w.key("client"), &src);
    backup_via(&w, &url, &w.key("client-mx2"), &src);
    let (a1, a2) = (w.key("admin-1"), w.key("admin-2"));
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "remove-identity",
        "mx3",
    ]);
    let j: serde_json::Value =
        serde_json::from_str(&w.ok(&["proposals", "--repo", &url, "--key", &a1, "--json"]))
            .unwrap();
    let pid = j[0]["id"].as_str().unwrap().to_string();
    w.ok(&["veto", "--repo", &url, "--key", &a2, &pid[..12]]);
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "retention",
        "--keep-within-days",
        "30",
    ]);
    w.ok(&[
        "replica",
        "pull",
        "--from",
        &url,
        "--key",
        &w.key("replica"),
        "--into",
        w.path("replica").to_str().unwrap(),
    ]);

    // --- /metrics
    let (code, head, m) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200, "{head}\n{m}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let last = value(
        &m,
        "holdfast_backup_last_success_timestamp_seconds",
        &[("client", "mx1")],
    )
    .expect("last success of mx1");
    assert!(
        last >= t0 as f64 && last <= now_secs() as f64 + 1.0,
        "{last}"
    );
    assert_eq!(
        value(&m, "holdfast_snapshots", &[("client", "mx1")]),
        Some(2.0)
    );
    assert_eq!(
        value(&m, "holdfast_snapshots", &[("client", "mx2")]),
        Some(1.0)
    );
    assert_eq!(
        value(&m, "holdfast_snapshots", &[("client", "mx3")]),
        Some(0.0)
    );
    assert!(
        value(
            &m,
            "holdfast_backup_last_success_timestamp_seconds",
            &[("client", "mx3")]
        )
        .is_none(),
        "a client that never backed up has no success time"
    );
    assert!(value(&m, "holdfast_stored_bytes", &[("client", "mx1")]).unwrap() > 1000.0);
    assert_eq!(
        value(&m, "holdfast_quota_bytes", &[]),
        Some((1u64 << 40) as f64)
    );
    let lock = value(
        &m,
        "holdfast_lock_nearest_expiry_timestamp_seconds",
        &[("client", "mx1")],
    )
    .unwrap();
    assert!(lock > now_secs() as f64 + 13.0 * 86_400.0, "{lock}");
    // 3 snapshots (each with its stored bytes) + proposal + veto + proposal
    assert_eq!(value(&m, "holdfast_log_entries", &[]), Some(9.0));
    assert_eq!(value(&m, "holdfast_proposals_pending", &[]), Some(1.0));
    assert_eq!(value(&m, "holdfast_proposals_vetoed", &[]), Some(1.0));
    assert!(
        value(&m, "holdfast_alerts_total", &[("kind", "governance")]).unwrap() >= 3.0,
        "{m}"
    );
    assert_eq!(
        value(&m, "holdfast_alerts_total", &[("kind", "tampering")]),
        Some(0.0)
    );
    assert!(
        value(
            &m,
            "holdfast_http_requests_total",
            &[("route", "snapshot_put"), ("status", "200")]
        )
        .unwrap()
            >= 3.0
    );
    assert!(
        value(
            &m,
            "holdfast_http_request_duration_seconds_count",
            &[("route", "pack_put"), ("status", "201")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &m,
            "holdfast_last_contact_timestamp_seconds",
            &[("role", "replica")]
        )
        .unwrap()
            >= t0 as f64
    );
    assert_eq!(
        value(
            &m,
            "holdfast_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    let all = samples(&m);
    let world = w.dir.path().display().to_string();
    for (name, labels, _) in &all {
        assert!(name.starts_with("holdfast_"), "{name}");
        for (k, v) in labels {
            let bad = v.contains('/')
                || v.contains('@')
                || v.contains(&world)
                || v.contains("127.0.0.1")
                || v.contains(':');
            assert!(!bad, "label {k}={v:?} on {name}");
        }
    }
    let per_client = all
        .iter()
        .filter(|(_, l, _)| l.iter().any(|(k, v)| k == "client" && v == "mx1"))
        .count();
    assert!(
        (3..=6).contains(&per_client),
        "{per_client} series for one client"
    );
    if tool("promtool") {
        let p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with_stdin(m.as_bytes());
        assert!(
            p.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&p.stdout),
            String::from_utf8_lossy(&p.stderr)
        );
    }

    // --- the dashboard
    let (code, head, d) = http(&addr, "GET", "/");
    assert_eq!(code, 200);
    assert!(head.contains("text/html"), "{head}");
    assert!(
        head.to_lowercase()
            .contains("content-security-policy: default-src 'none'")
    );
    assert!(!d.contains("<script"), "the dashboard needs no JavaScript");
    for c in ["mx1", "mx2", "mx3"] {
        assert!(d.contains(&format!("<tr data-client=\"{c}\">")), "{c}: {d}");
    }
    let row = |c: &str| {
        let i = d.find(&format!("data-client=\"{c}\"")).unwrap();
        d[i..i + d[i..].find("</tr>").unwrap()].to_string()
    };
    assert!(row("mx3").contains("never"), "{}", row("mx3"));
    assert!(row("mx1").contains("ago)"), "{}", row("mx1"));
    assert!(row("mx1").contains("% of quota"), "{}", row("mx1"));
    assert!(d.contains("vetoed by admin-2"), "{d}");
    assert!(d.contains("removal of identity mx3"), "{d}");
    assert!(d.contains("waits for quorum"), "{d}");
    assert!(d.contains("<td class=n id=log-entries>9</td>"), "{d}");
    let replica = &d[d.find("id=replica-contact>").unwrap()..];
    assert!(replica[..80].contains("<time"), "{}", &replica[..80]);
    assert!(
        d.contains("proposed removal of identity"),
        "recent alerts: {d}"
    );
    assert!(!d.contains(&world), "the page shows a server path");

    // --- nothing else answers
    let (code, head, _) = http(&addr, "POST", "/metrics");
    assert_eq!(code, 405);
    assert!(
        head.contains("allow: GET") || head.contains("Allow: GET"),
        "{head}"
    );
    assert_eq!(http(&addr, "DELETE", "/").0, 405);
    for path in [
        "/v1/config",
        "/v1/log/checkpoint",
        "/v1/objects/snapshots",
        "/metrics/../v1/config",
        "/index.html",
    ] {
        assert_eq!(http(&addr, "GET", path).0, 404, "{path}");
    }
    // Garbage and oversized heads are refused without harm.
    let (code, _, _) = http_raw(&addr, b"\x16\x03\x01\x02\x00 garbage\r\n\r\n");
    assert!(code == 400 || code == 0, "{code}");
    let big = format!(
        "GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    let (code, _, _) = http_raw(&addr, big.as_bytes());
    assert!(code == 431 || code == 400 || code == 0, "{code}");
    assert_eq!(http(&addr, "GET", "/metrics").0, 200, "still serving");
    // The metrics port is plain HTTP only: it never speaks the API's TLS.
    let (code, _, _) = http(&addr, "GET", "/v1/identities");
    assert_eq!(code, 404);
    let (code, _, after) = http(&addr, "GET", "/metrics");
    assert_eq!(code, 200);
    assert!(
        value(
            &after,
            "holdfast_http_requests_total",
            &[("route", "other"), ("status", "404")]
        )
        .unwrap()
            >= 5.0
    );
}

trait OutputWithStdin {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output;
}

impl OutputWithStdin for Command {
    fn output_with_stdin(&mut self, input: &[u8]) -> std::process::Output {
        let mut child = self
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }
}

/// `--http` with something that is not PORT or HOST:PORT is refused before
/// anything starts.
#[test]
fn vault_http_address_is_checked_before_start() {
    let w = World::new();
    w.init_with(&[]);
    let o = w.run(&[
        "vault",
        "serve",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("vault"),
        "--listen",
        "127.0.0.1:0",
        "--http",
        "localhost",
    ]);
    assert!(matches!(o.status.code(), Some(1 | 2)), "{o:?}");
    assert!(o.stdout.is_empty(), "the vault started: {o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("PORT or HOST:PORT"));
}

/// `backup --metrics-file`: a success writes the success time and the
/// figures; a failed run moves the attempt time and the failure counts but
/// keeps the success time and the last snapshot's figures; the file is
/// replaced whole (no temp file left) and passes promtool.
#[test]
fn backup_metrics_file_never_moves_success_on_failure() {
    let w = World::new();
    w.init_with(&["--client", "mx1"]);
    let src = w.path("data");
    make_maildir(&src, 1, 5, 3);
    let dir = w.path("textfile");
    std::fs::create_dir(&dir).unwrap();
    let prom = dir.join("holdfast.prom");
    let (repo, key) = (w.repo(), w.key("client"));
    let backup = |repo: &str| {
        w.run(&[
            "backup",
            "--repo",
            repo,
            "--key",
            &key,
            "--metrics-file",
            prom.to_str().unwrap(),
            src.to_str().unwrap(),
        ])
    };
    let t0 = now_secs();
    let o = backup(&repo);
    assert!(o.status.success(), "{o:?}");
    let first = std::fs::read_to_string(&prom).unwrap();
    let v = |t: &str, n: &str| value(t, n, &[("client", "mx1")]);
    let success = v(&first, "holdfast_backup_last_success_timestamp_seconds").unwrap();
    assert!(success >= t0 as f64 && success <= now_secs() as f64 + 1.0);
    assert_eq!(v(&first, "holdfast_backup_failures_total"), Some(0.0));
    assert_eq!(v(&first, "holdfast_backup_last_exit_code"), Some(0.0));
    assert!(v(&first, "holdfast_backup_last_source_bytes").unwrap() > 1000.0);
    assert!(v(&first, "holdfast_backup_last_stored_bytes").unwrap() > 0.0);
    let source = v(&first, "holdfast_backup_last_source_bytes");

    std::thread::sleep(Duration::from_millis(1100));
    // A repository that is not there: the run fails.
    let o = backup(w.path("no-such-repo").to_str().unwrap());
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let second = std::fs::read_to_string(&prom).unwrap();
    assert_eq!(
        v(&second, "holdfast_backup_last_success_timestamp_seconds"),
        Some(success),
        "a failed run moved the success time:\n{second}"
    );
    assert!(v(&second, "holdfast_backup_last_attempt_timestamp_seconds").unwrap() > success);
    assert_eq!(v(&second, "holdfast_backup_failures_total"), Some(1.0));
    assert_eq!(
        v(&second, "holdfast_backup_consecutive_failures"),
        Some(1.0)
    );
    assert_eq!(v(&second, "holdfast_backup_last_exit_code"), Some(1.0));
    assert_eq!(v(&second, "holdfast_backup_last_source_bytes"), source);

    let o = backup(&repo);
    assert!(o.status.success(), "{o:?}");
    let third = std::fs::read_to_string(&prom).unwrap();
    assert!(v(&third, "holdfast_backup_last_success_timestamp_seconds").unwrap() > success);
    assert_eq!(v(&third, "holdfast_backup_failures_total"), Some(1.0));
    assert_eq!(v(&third, "holdfast_backup_consecutive_failures"), Some(0.0));
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["holdfast.prom".to_string()]);
    for (name, labels, _) in samples(&third) {
        assert!(name.starts_with("holdfast_backup_"), "{name}");
        assert_eq!(labels, vec![("client".to_string(), "mx1".to_string())]);
    }
    if tool("promtool") {
        let p = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .output_with_stdin(third.as_bytes());
        assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
    }
}

/// The units in dist/systemd pass `systemd-analyze verify` (with the built
/// binary standing in for /usr/bin/holdfast), timers are persistent and
/// spread, and `systemd-analyze security --offline=yes` scores every
/// service, the vault's included, at an exposure of 3.0 or less.
#[test]
fn systemd_units_verify_and_are_confined() {
    if !tool("systemd-analyze") {
        return;
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/systemd");
    let w = World::new();
    let dir = w.path("units");
    std::fs::create_dir(&dir).unwrap();
    let mut units = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(e.path()).unwrap();
        std::fs::write(
            dir.join(&name),
            text.replace("/usr/bin/holdfast", bin().to_str().unwrap()),
        )
        .unwrap();
        units.push((name, text));
    }
    units.sort();
    let names: Vec<&str> = units.iter().map(|(n, _)| n.as_str()).collect();
    for need in [
        "holdfast-vault.service",
        "holdfast-backup@.service",
        "holdfast-backup@.timer",
        "holdfast-replica.service",
        "holdfast-export.service",
        "holdfast-export.timer",
        "holdfast-audit.service",
        "holdfast-audit.timer",
        "holdfast-drill.service",
        "holdfast-drill.timer",
    ] {
        assert!(names.contains(&need), "dist/systemd has no {need}");
    }
    for (name, text) in &units {
        if name.ends_with(".timer") {
            assert!(text.contains("\nPersistent=true\n"), "{name}");
            assert!(text.contains("\nRandomizedDelaySec="), "{name}");
            continue;
        }
        for key in [
            "\nNoNewPrivileges=yes\n",
            "\nProtectSystem=strict\n",
            "\nProtectHome=yes\n",
            "\nPrivateTmp=yes\n",
        ] {
            assert!(text.contains(key), "{name} lacks {}", key.trim());
        }
        assert!(text.contains("\nUser="), "{name} has no dedicated user");
        assert!(
            !text.contains("HOLDFAST_PASSPHRASE="),
            "{name}: a passphrase in a unit"
        );
    }
    let vault = &units
        .iter()
        .find(|(n, _)| n == "holdfast-vault.service")
        .unwrap()
        .1;
    assert!(vault.contains("\nUser=holdfast\n"));
    assert!(vault.contains("\nReadWritePaths="));
    assert!(vault.contains("--http 127.0.0.1:"), "metrics on loopback");

    // verify: templates through an instance.
    let paths: Vec<String> = units
        .iter()
        .map(|(n, _)| {
            dir.join(n.replace("@.", "@test."))
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .args(&paths)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    let ours: Vec<&str> = err.lines().filter(|l| l.contains("holdfast")).collect();
    assert!(o.status.success() && ours.is_empty(), "verify:\n{err}");
    // And a broken unit is caught, so the check above can fail.
    let broken = dir.join("holdfast-broken.service");
    std::fs::write(
        &broken,
        vault.replace("NoNewPrivileges=yes", "NoNewPrivilegs=yes"),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&o.stderr).contains("NoNewPrivilegs"));
    std::fs::remove_file(&broken).unwrap();

    for (name, _) in units.iter().filter(|(n, _)| n.ends_with(".service")) {
        let unit = dir.join(name.replace("@.", "@test."));
        let o = Command::new("systemd-analyze")
            .args(["security", "--offline=yes", unit.to_str().unwrap()])
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        let score: f64 = out
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no score for {name}: {out}{}",
                    String::from_utf8_lossy(&o.stderr)
                )
            });
        eprintln!("systemd-analyze security {name}: {score}");
        assert!(score <= 3.0, "{name}: exposure {score}");
    }
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `HOLDFAST_REPO` and `HOLDFAST_KEY` stand in for --repo and --key (the
/// command line wins); the passphrase comes from --passphrase-file,
/// `HOLDFAST_PASSPHRASE_FILE` or `HOLDFAST_PASSPHRASE_COMMAND`, exactly one
/// source at a time, and is never echoed.
#[test]
fn env_vars_and_passphrase_sources() {
    let w = World::new();
    w.init_with(&[]);
    let src = w.path("data");
    make_maildir(&src, 1, 3, 5);
    let o = w
        .cmd(&["backup", src.to_str().unwrap()])
        .env("HOLDFAST_REPO", w.repo())
        .env("HOLDFAST_KEY", w.key("client"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The command line wins over the environment.
    let o = w
        .cmd(&["snapshots", "--repo", &w.repo(), "--json"])
        .env("HOLDFAST_REPO", w.path("nowhere"))
        .env("HOLDFAST_KEY", w.key("restore"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let list: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list.len(), 1);

    let good = w.path("pass");
    std::fs::write(&good, format!("{PASS}\n")).unwrap();
    let bad = w.path("wrong");
    std::fs::write(&bad, "not the passphrase at all\n").unwrap();
    let snapshots = |envs: &[(&str, &str)], extra: &[&str]| {
        let mut c = w.cmd(&["snapshots", "--repo", &w.repo(), "--key", &w.key("restore")]);
        c.args(extra).env_remove("HOLDFAST_PASSPHRASE");
        for (k, v) in envs {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let o = snapshots(&[], &["--passphrase-file", good.to_str().unwrap()]);
    assert!(o.status.success(), "--passphrase-file: {}", stderr(&o));
    let o = snapshots(&[("HOLDFAST_PASSPHRASE_FILE", good.to_str().unwrap())], &[]);
    assert!(
        o.status.success(),
        "HOLDFAST_PASSPHRASE_FILE: {}",
        stderr(&o)
    );
    let o = snapshots(&[], &["--passphrase-file", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!stderr(&o).contains("not the passphrase"), "{}", stderr(&o));
    let cmd = format!("cat {}", good.display());
    let o = snapshots(&[("HOLDFAST_PASSPHRASE_COMMAND", &cmd)], &[]);
    assert!(
        o.status.success(),
        "HOLDFAST_PASSPHRASE_COMMAND: {}",
        stderr(&o)
    );
    // A failing command: its output is not shown, the run stops.
    let o = snapshots(
        &[("HOLDFAST_PASSPHRASE_COMMAND", "echo hunter2-secret; exit 3")],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("HOLDFAST_PASSPHRASE_COMMAND failed"), "{e}");
    assert!(!e.contains("hunter2"), "{e}");
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    // Two sources at once are refused, not guessed between.
    let o = snapshots(
        &[
            ("HOLDFAST_PASSPHRASE", PASS),
            ("HOLDFAST_PASSPHRASE_FILE", good.to_str().unwrap()),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("more than one passphrase source"),
        "{}",
        stderr(&o)
    );
    assert!(!stderr(&o).contains(PASS));
}

/// `init --client mx1,mx2` makes two clients (never one named "mx1,mx2");
/// a name that is not a plain name is refused; a failed init leaves
/// nothing behind, so the retry just works.
#[test]
fn init_clients_and_all_or_nothing() {
    let w = World::new();
    let keys = w.path("keys");
    w.init_with(&["--client", "mx1,mx2", "--client", "mx3"]);
    for f in ["client.key", "client-mx2.key", "client-mx3.key"] {
        assert!(keys.join(f).exists(), "{f}");
    }
    assert!(!keys.join("client-mx1,mx2.key").exists());
    let src = w.path("data");
    make_maildir(&src, 1, 2, 9);
    w.ok(&[
        "backup",
        "--repo",
        &w.repo(),
        "--key",
        keys.join("client-mx2.key").to_str().unwrap(),
        src.to_str().unwrap(),
    ]);
    let list = w.snapshots();
    assert_eq!(list.len(), 1);
    assert!(
        list[0].to_string().contains("mx2"),
        "snapshot of client mx2: {}",
        list[0]
    );

    for bad in ["../evil", "a b", "mx1,,mx2", "mx1,mx1"] {
        let w2 = World::new();
        let o = w2.run(&[
            "init",
            &w2.repo(),
            "--keys",
            w2.path("keys").to_str().unwrap(),
            "--client",
            bad,
        ]);
        assert_eq!(o.status.code(), Some(1), "{bad}: {}", stderr(&o));
        assert!(!w2.path("repo").exists(), "{bad}: a repository was made");
        assert!(!w2.path("keys").exists(), "{bad}: keys were made");
    }

    // A failure after the repository directory was made: keys under a
    // regular file cannot be written.
    let w3 = World::new();
    std::fs::write(w3.path("file"), b"x").unwrap();
    let bad_keys = w3.path("file").join("keys");
    let o = w3.run(&["init", &w3.repo(), "--keys", bad_keys.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        !w3.path("repo").exists(),
        "a failed init left the repository"
    );
    // An existing key in the keys directory: refused, the key untouched,
    // the (empty, existing) repository directory left empty.
    std::fs::create_dir(w3.path("repo")).unwrap();
    std::fs::create_dir(w3.path("keys")).unwrap();
    std::fs::write(w3.path("keys/auditor.key"), b"precious").unwrap();
    let o = w3.run(&[
        "init",
        &w3.repo(),
        "--keys",
        w3.path("keys").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(
        std::fs::read(w3.path("keys/auditor.key")).unwrap(),
        b"precious"
    );
    assert_eq!(std::fs::read_dir(w3.path("repo")).unwrap().count(), 0);
    assert_eq!(std::fs::read_dir(w3.path("keys")).unwrap().count(), 1);
    std::fs::remove_file(w3.path("keys/auditor.key")).unwrap();
    // The retry works.
    w3.ok(&[
        "init",
        &w3.repo(),
        "--keys",
        w3.path("keys").to_str().unwrap(),
    ]);
}

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
}

/// `proposals` names admins, gives RFC 3339 times and plain status fields
/// (no Rust debug text, no nanoseconds); approving one's own proposal or a
/// vetoed one fails (exit 1) and never prints "approved"; a retention
/// proposal that names one tier keeps the others.
#[test]
fn governance_output_is_for_people() {
    let w = World::new();
    w.init_with(&["--delay-secs", "3600"]);
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let src = w.path("data");
    make_maildir(&src, 1, 2, 4);
    let snap = backup_via(&w, &url, &w.key("client"), &src);
    let (a1, a2, a3) = (w.key("admin-1"), w.key("admin-2"), w.key("admin-3"));
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "delete",
        &snap[..12],
    ]);
    let list = |key: &str| -> Vec<serde_json::Value> {
        serde_json::from_str(&w.ok(&["proposals", "--repo", &url, "--key", key, "--json"])).unwrap()
    };
    let p = list(&a1);
    assert_eq!(p.len(), 1);
    let p0 = &p[0];
    assert_eq!(p0["state"], "pending", "{p0}");
    assert_eq!(p0["proposer"], "admin-1");
    assert_eq!(p0["approvals"], serde_json::json!(["admin-1"]));
    assert_eq!(p0["needed"], 2);
    assert!(is_rfc3339(p0["received"].as_str().unwrap()), "{p0}");
    let pid = p0["id"].as_str().unwrap().to_string();
    let text = w.ok(&["proposals", "--repo", &url, "--key", &a1]);
    let json = serde_json::to_string(&p).unwrap();
    for out in [&text, &json] {
        for debug in ["Pending {", "approvals:", "until_ns", "Vetoed {", "by: ["] {
            assert!(!out.contains(debug), "{debug:?} in {out}");
        }
    }
    assert!(text.contains("proposed by admin-1 at 20"), "{text}");
    assert!(text.contains("approvals 1 of 2: admin-1"), "{text}");

    // Approving one's own proposal: refused, exit 1, no "approved".
    let o = w.run(&["approve", "--repo", &url, "--key", &a1, &pid[..12]]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("approved"));
    assert!(stderr(&o).contains("already approved"), "{}", stderr(&o));
    // Quorum, then a veto; approving the vetoed proposal fails.
    w.ok(&["approve", "--repo", &url, "--key", &a2, &pid[..12]]);
    let p = list(&a2);
    assert_eq!(p[0]["state"], "waiting", "{}", p[0]);
    assert!(is_rfc3339(p[0]["veto_window_ends"].as_str().unwrap()));
    w.ok(&["veto", "--repo", &url, "--key", &a3, &pid[..12]]);
    let o = w.run(&["approve", "--repo", &url, "--key", &a3, &pid[..12]]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!String::from_utf8_lossy(&o.stdout).contains("approved"));
    assert!(stderr(&o).contains("vetoed"), "{}", stderr(&o));
    let p = list(&a1);
    assert_eq!(p[0]["state"], "vetoed");
    assert_eq!(p[0]["vetoed_by"], "admin-3");
    assert_eq!(p[0]["status"], "Vetoed by admin-3");
    let text = w.ok(&["proposals", "--repo", &url, "--key", &a1]);
    assert!(text.contains("vetoed by admin-3"), "{text}");

    // A retention proposal changes what it names and nothing else
    // (init's defaults: 14 days, daily 14, weekly 8, monthly 12, yearly 7).
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "retention",
        "--keep-daily",
        "30",
    ]);
    let p = list(&a1);
    let r = p
        .iter()
        .find(|x| x["action"].as_str().unwrap().starts_with("retention"))
        .unwrap();
    assert_eq!(
        r["action"], "retention keep-within 1209600s daily 30 weekly 8 monthly 12 yearly 7",
        "{r}"
    );
    let o = w.run(&["propose", "--repo", &url, "--key", &a1, "retention"]);
    assert_eq!(o.status.code(), Some(1), "an empty change was proposed");
    // --repo and --key may follow the subcommand, as with every command.
    w.ok(&[
        "propose",
        "retention",
        "--keep-weekly",
        "9",
        "--repo",
        &url,
        "--key",
        &a1,
    ]);
    let o = w.run(&["propose", "retention", "--keep-weekly", "9"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("propose needs --repo and --key"),
        "{}",
        stderr(&o)
    );
}

/// A vault that is not running: one clear line at once, not seconds of
/// retries and a raw HTTP-library error.
#[test]
fn a_vault_that_is_not_running_is_said_at_once() {
    let w = World::new();
    w.init_with(&[]);
    let url = format!("https://127.0.0.1:{}", free_port());
    let src = w.path("data");
    std::fs::create_dir(&src).unwrap();
    let t = std::time::Instant::now();
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    let took = t.elapsed();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("connection refused"), "{e}");
    assert!(e.contains("no vault is listening"), "{e}");
    assert!(!e.contains("os error"), "raw error text: {e}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

/// `holdfast completion SHELL` prints a script for each shell, made from
/// the same definitions (new options included); bash accepts its syntax.
#[test]
fn shell_completions() {
    let w = World::new();
    let bash = w.ok(&["completion", "bash"]);
    assert!(
        bash.contains("_holdfast()"),
        "{}",
        &bash[..200.min(bash.len())]
    );
    assert!(bash.contains("--metrics-file"));
    assert!(bash.contains("--passphrase-file"));
    let f = w.path("holdfast.bash");
    std::fs::write(&f, &bash).unwrap();
    let o = Command::new("bash")
        .args(["-n", f.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        w.ok(&["completion", "zsh"])
            .starts_with("#compdef holdfast")
    );
    assert!(
        w.ok(&["completion", "fish"])
            .contains("complete -c holdfast")
    );
    let o = w.run(&["completion", "tcsh"]);
    assert!(!o.status.success());
}

/// `holdfast stats`: snapshots and stored bytes per client, matching the
/// pack files on disk; with the restore key, logical sizes and a dedup
/// ratio that shows a second backup of the same data cost nothing.
#[test]
fn stats_per_client() {
    let w = World::new();
    w.init_with(&["--client", "mx1,mx2"]);
    let src = w.path("data");
    make_maildir(&src, 2, 10, 11);
    let (repo, keys) = (w.repo(), w.path("keys"));
    for k in ["client.key", "client.key", "client-mx2.key"] {
        w.ok(&[
            "backup",
            "--repo",
            &repo,
            "--key",
            keys.join(k).to_str().unwrap(),
            src.to_str().unwrap(),
        ]);
    }
    let j: serde_json::Value = serde_json::from_str(&w.ok(&[
        "stats",
        "--repo",
        &repo,
        "--key",
        &w.key("restore"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(j["snapshots"], 3, "{j}");
    let on_disk: u64 = files(&w.path("repo/packs"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(j["stored_bytes"].as_u64().unwrap(), on_disk);
    let clients = j["clients"].as_array().unwrap();
    assert_eq!(clients.len(), 2);
    let mx1 = &clients[0];
    assert_eq!(mx1["client"], "mx1");
    assert_eq!(mx1["snapshots"], 2);
    // Two backups of the same files: twice the logical size, stored once.
    let ratio = mx1["dedup_ratio"].as_f64().unwrap();
    assert!(ratio > 1.5, "{mx1}");
    assert_eq!(
        mx1["logical_bytes"].as_u64().unwrap(),
        2 * mx1["newest_bytes"].as_u64().unwrap()
    );
    // Per-client dedup: each client stores its own copy.
    assert!(clients[1]["stored_bytes"].as_u64().unwrap() > 0);
    let text = w.ok(&["stats", "--repo", &repo, "--key", &w.key("auditor")]);
    assert!(text.contains("3 snapshots"), "{text}");
    assert!(text.contains("need the restore key"), "{text}");
}

/// The alert rules in dist/prometheus pass `promtool check rules`, and
/// their unit tests (`promtool test rules`: stale backup, failing runs, a
/// missing client, anomalies, locks ending, proposals, drills, the vault's
/// disk) pass.
#[test]
fn prometheus_alert_rules() {
    if !tool("promtool") {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/prometheus");
    let o = Command::new("promtool")
        .args(["check", "rules", "holdfast.rules.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        stderr(&o)
    );
    let o = Command::new("promtool")
        .args(["test", "rules", "holdfast.rules.test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("SUCCESS"),
        "{out}{}",
        stderr(&o)
    );
    let rules = std::fs::read_to_string(dir.join("holdfast.rules.yml")).unwrap();
    for alert in [
        "HoldfastBackupStale",
        "HoldfastClientMissing",
        "HoldfastAnomaly",
        "HoldfastLockExpiring",
        "HoldfastDrillFailed",
        "HoldfastDrillStale",
        "HoldfastVaultDiskFilling",
    ] {
        assert!(rules.contains(&format!("alert: {alert}\n")), "{alert}");
        let tests = std::fs::read_to_string(dir.join("holdfast.rules.test.yml")).unwrap();
        assert!(
            tests.contains(&format!("alertname: {alert}\n")),
            "no test of {alert}"
        );
    }
}

/// A snapshot the vault flags (here: a wiped spool, far smaller than the
/// one before) shows on /metrics, in the alerts by kind, and in the
/// client's row of the dashboard.
#[test]
fn vault_metrics_show_flagged_snapshots() {
    let w = World::new();
    w.init_with(&["--client", "mx1"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let vault = w.start_vault(&["--http", &port.to_string()]);
    let src = w.path("mail");
    make_maildir(&src, 3, 30, 21);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let (_, _, m) = http(&addr, "GET", "/metrics");
    assert_eq!(
        value(&m, "holdfast_snapshots_flagged", &[("client", "mx1")]),
        Some(0.0)
    );
    // The spool is wiped: one small file is left.
    std::fs::remove_dir_all(&src).unwrap();
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("left"), b"x").unwrap();
    let o = w.run(&[
        "backup",
        "--repo",
        &vault.url,
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ]);
    assert!(matches!(o.status.code(), Some(0 | 5)), "{}", stderr(&o));
    let (_, _, m) = http(&addr, "GET", "/metrics");
    assert_eq!(
        value(&m, "holdfast_snapshots_flagged", &[("client", "mx1")]),
        Some(1.0),
        "{m}"
    );
    assert!(value(&m, "holdfast_alerts_total", &[("kind", "anomaly")]).unwrap() >= 1.0);
    let (_, _, d) = http(&addr, "GET", "/");
    let i = d.find("data-client=\"mx1\"").unwrap();
    let row = &d[i..i + d[i..].find("</tr>").unwrap()];
    assert!(row.contains("1 flagged snapshot; newest: "), "{row}");
}

/// `holdfast man` prints holdfast(1); `--dir` writes a page per subcommand;
/// `man` renders them without warnings.
#[test]
fn manual_pages() {
    let w = World::new();
    let page = w.ok(&["man"]);
    assert!(
        page.contains(".TH holdfast 1"),
        "{}",
        &page[..200.min(page.len())]
    );
    assert!(page.contains("backup"));
    let dir = w.path("man");
    w.ok(&["man", "--dir", dir.to_str().unwrap()]);
    for f in ["holdfast.1", "holdfast-backup.1", "holdfast-vault-serve.1"] {
        assert!(dir.join(f).exists(), "{f}");
    }
    let backup = std::fs::read_to_string(dir.join("holdfast-backup.1")).unwrap();
    assert!(backup.contains("metrics\\-file"), "{backup}");
    if Command::new("man").arg("--version").output().is_ok() {
        let o = Command::new("man")
            .args(["--warnings", "-l", "-P", "cat"])
            .arg(dir.join("holdfast-backup.1"))
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
    }
}

/// The dashboard in a real browser (headless Chromium, no JavaScript
/// needed): a vault with three clients, the DOM as rendered, and a
/// screenshot kept in target/tmp/dashboard.png.
#[test]
fn dashboard_in_headless_chromium() {
    if !tool("chromium") {
        return;
    }
    let w = World::new();
    w.init_with(&["--client", "mx1,mx2,mx3"]);
    let port = free_port();
    let vault = w.start_vault(&["--http", &format!("127.0.0.1:{port}")]);
    let src = w.path("mail");
    make_maildir(&src, 2, 5, 13);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    backup_via(&w, &vault.url, &w.key("client-mx2"), &src);
    w.ok(&[
        "propose",
        "--repo",
        &vault.url,
        "--key",
        &w.key("admin-1"),
        "retention",
        "--keep-daily",
        "20",
    ]);
    let url = format!("http://127.0.0.1:{port}/");
    let chromium = |extra: &[&str]| {
        let o = Command::new("chromium")
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                &format!("--user-data-dir={}", w.path("chromium").display()),
            ])
            .args(extra)
            .arg(&url)
            .env("HOME", w.path("home"))
            .output()
            .unwrap();
        assert!(o.status.success(), "chromium: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    // The page carries no script, and its Content-Security-Policy would
    // refuse one: what the browser shows is what the server rendered.
    let dom = chromium(&["--dump-dom"]);
    let rows: Vec<&str> = dom.split("<tr data-client=\"").skip(1).collect();
    assert_eq!(rows.len(), 3, "{dom}");
    for (row, c) in rows.iter().zip(["mx1", "mx2", "mx3"]) {
        assert!(row.starts_with(&format!("{c}\"")), "{row}");
    }
    assert!(
        rows[2].contains("never"),
        "mx3 never backed up: {}",
        rows[2]
    );
    assert!(rows[0].contains("<time datetime=\""), "{}", rows[0]);
    assert!(dom.contains("data-proposal="), "{dom}");
    assert!(dom.contains("waits for quorum"), "{dom}");
    assert!(dom.contains("<title>holdfast vault"), "{dom}");

    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    chromium(&[
        &format!("--screenshot={}", shot.display()),
        "--window-size=1280,900",
        "--hide-scrollbars",
    ]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert!(png.len() > 20_000, "a blank page? {} bytes", png.len());
    eprintln!("dashboard screenshot: {}", shot.display());
}

/// `--progress-interval` (or `HOLDFAST_PROGRESS_INTERVAL`) makes a piped
/// run log its progress to stderr; without it a piped run prints none.
#[test]
fn progress_lines_when_piped() {
    let w = World::new();
    w.init_with(&[]);
    let src = w.path("data");
    make_maildir(&src, 2, 20, 17);
    let args = [
        "backup",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        src.to_str().unwrap(),
    ];
    let o = w.run(&args);
    assert!(o.status.success());
    assert!(!stderr(&o).contains("holdfast backup:"), "{}", stderr(&o));
    let o = w
        .cmd(&args)
        .env("HOLDFAST_PROGRESS_INTERVAL", "60")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let line = e
        .lines()
        .find(|l| l.starts_with("holdfast backup: "))
        .unwrap_or_else(|| panic!("no progress line: {e}"));
    assert!(
        line.contains(" files, ") && line.contains(", done in "),
        "{line}"
    );
    let o = w
        .cmd(&[
            "verify",
            "--progress-interval",
            "60",
            "--repo",
            &w.repo(),
            "--key",
            &w.key("restore"),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stderr(&o).contains(" packs, "),
        "verify counts packs: {}",
        stderr(&o)
    );
}

/// `init --admin-passphrase-file` gives each admin key its own passphrase
/// (and `--restore-passphrase-file` the restore key): admin keys go to
/// different people, and one admin's passphrase opens no other key.
#[test]
fn init_gives_each_admin_its_own_passphrase() {
    let w = World::new();
    let mut files = Vec::new();
    for (i, pw) in [
        "first admin phrase",
        "second admin phrase",
        "restore phrase!",
    ]
    .iter()
    .enumerate()
    {
        let f = w.path(&format!("pw{i}"));
        std::fs::write(&f, format!("{pw}\n")).unwrap();
        files.push(f.to_str().unwrap().to_string());
    }
    let keys = w.path("keys");
    let o = w
        .cmd(&[
            "init",
            &w.repo(),
            "--keys",
            keys.to_str().unwrap(),
            "--admins",
            "2",
            "--quorum",
            "2",
            "--admin-passphrase-file",
            &files[0],
            "--admin-passphrase-file",
            &files[1],
            "--restore-passphrase-file",
            &files[2],
        ])
        .env_remove("HOLDFAST_PASSPHRASE")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!keys.join("admin-1.key.new").exists());
    // Opening a key needs its passphrase (checkpoint show opens the key).
    let opens = |key: &str, pw_file: &str| {
        w.cmd(&[
            "checkpoint",
            "show",
            "--key",
            keys.join(key).to_str().unwrap(),
        ])
        .env_remove("HOLDFAST_PASSPHRASE")
        .env("HOLDFAST_PASSPHRASE_FILE", pw_file)
        .output()
        .unwrap()
        .status
        .success()
    };
    assert!(opens("admin-1.key", &files[0]));
    assert!(opens("admin-2.key", &files[1]));
    assert!(opens("restore.key", &files[2]));
    assert!(
        !opens("admin-1.key", &files[1]),
        "admin-2's passphrase opened admin-1"
    );
    assert!(
        !opens("admin-2.key", &files[2]),
        "the restore passphrase opened admin-2"
    );
    // One file per admin, or none.
    let w2 = World::new();
    let o = w2.run(&[
        "init",
        &w2.repo(),
        "--keys",
        w2.path("keys").to_str().unwrap(),
        "--admin-passphrase-file",
        &files[0],
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("one per admin key"), "{}", stderr(&o));
    assert!(!w2.path("repo").exists());
}

/// `key passwd` changes one key file's passphrase: the old passphrase no
/// longer opens it, the new one does, the other keys keep theirs; a key
/// without a passphrase, a wrong current passphrase or an unchanged one is
/// refused with one line and the file left as it was; no temp file stays.
#[test]
fn key_passwd_changes_one_key() {
    let w = World::new();
    w.init_with(&[]);
    let keys = w.path("keys");
    let admin = w.key("admin-1");
    let before = std::fs::read(&admin).unwrap();
    let newp = w.path("new-pass");
    std::fs::write(&newp, "a new passphrase for admin 1\n").unwrap();
    let np = newp.to_str().unwrap();
    let out = w.ok(&[
        "key",
        "passwd",
        "--key",
        &admin,
        "--new-passphrase-file",
        np,
    ]);
    assert!(out.contains("changed"), "{out}");
    assert_ne!(std::fs::read(&admin).unwrap(), before);
    let names: Vec<String> = std::fs::read_dir(&keys)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temp file left: {names:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&admin).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // The old passphrase no longer opens it; the new one does.
    let o = w.run(&[
        "key",
        "passwd",
        "--key",
        &admin,
        "--new-passphrase-file",
        np,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("wrong passphrase"), "{}", stderr(&o));
    let o = w
        .cmd(&[
            "key",
            "passwd",
            "--key",
            &admin,
            "--new-passphrase-file",
            np,
        ])
        .env("HOLDFAST_PASSPHRASE", "a new passphrase for admin 1")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is the current one"), "{}", stderr(&o));
    let back = w.path("back");
    std::fs::write(&back, format!("{PASS}\n")).unwrap();
    let o = w
        .cmd(&[
            "key",
            "passwd",
            "--key",
            &admin,
            "--new-passphrase-file",
            back.to_str().unwrap(),
        ])
        .env("HOLDFAST_PASSPHRASE", "a new passphrase for admin 1")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // The restore key kept its passphrase all along.
    assert_eq!(w.snapshots().len(), 0);
    // A client key has none; no terminal and no file: refused, unchanged.
    let client = w.key("client");
    let c0 = std::fs::read(&client).unwrap();
    let o = w.run(&[
        "key",
        "passwd",
        "--key",
        &client,
        "--new-passphrase-file",
        np,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has no passphrase"), "{}", stderr(&o));
    assert_eq!(std::fs::read(&client).unwrap(), c0);
    let r = w.key("restore");
    let r0 = std::fs::read(&r).unwrap();
    let o = w
        .cmd(&["key", "passwd", "--key", &r])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--new-passphrase-file"),
        "{}",
        stderr(&o)
    );
    assert_eq!(stderr(&o).trim().lines().count(), 1);
    assert_eq!(std::fs::read(&r).unwrap(), r0);
}

/// `backup --files-from` and `--exclude-file` read lists (comments and
/// empty lines skipped); a missing path among several: the rest is backed
/// up, a warning names it, exit 3; only missing paths: exit 1, one line.
/// `backup --json` gives the snapshot as "id", as `snapshots --json` does
/// (and still as "snapshot").
#[test]
fn backup_lists_and_missing_paths() {
    let w = World::new();
    w.init_with(&[]);
    let (a, b) = (w.path("a"), w.path("b"));
    std::fs::create_dir_all(&a).unwrap();
    std::fs::create_dir_all(&b).unwrap();
    std::fs::write(a.join("keep.txt"), "keep").unwrap();
    std::fs::write(a.join("drop.log"), "drop").unwrap();
    std::fs::write(b.join("other.txt"), "other").unwrap();
    let ex = w.path("excludes");
    std::fs::write(&ex, "# logs are noise\n\n*.log\n").unwrap();
    let ff = w.path("files");
    std::fs::write(&ff, format!("# more\n{}\n\n", b.display())).unwrap();
    let missing = w.path("gone");
    let (repo, ck) = (w.repo(), w.key("client"));
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        "--json",
        "--exclude-file",
        ex.to_str().unwrap(),
        "--files-from",
        ff.to_str().unwrap(),
        a.to_str().unwrap(),
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("warning") && e.contains(missing.to_str().unwrap()),
        "{e}"
    );
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["id"], j[0]["snapshot"]);
    assert_eq!(j[0]["files"], 2, "{j}");
    assert_eq!(j[0]["missing"][0], missing.to_str().unwrap());
    let id = j[0]["id"].as_str().unwrap();
    let list = w.snapshots();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
    let out = w.ok(&["ls", "--repo", &repo, "--key", &w.key("restore"), id]);
    assert!(
        out.contains("keep.txt") && out.contains("other.txt"),
        "{out}"
    );
    assert!(!out.contains("drop.log"), "{out}");
    // Nothing but a missing path: an error, nothing written.
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        missing.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    let also = w.path("also-gone");
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        missing.to_str().unwrap(),
        also.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    let last = e.trim().lines().last().unwrap();
    assert!(
        last.contains("nothing to back up") && last.contains(also.to_str().unwrap()),
        "{e}"
    );
    assert_eq!(w.snapshots().len(), 1);
}

/// `snapshots` prints a header and filters by client, host, path and
/// --latest N; --host and --path need the restore key.
#[test]
fn snapshots_header_and_filters() {
    let w = World::new();
    w.init_with(&["--client", "mx1,mx2"]);
    let (a, b) = (w.path("spool"), w.path("home"));
    make_maildir(&a, 1, 2, 3);
    make_maildir(&b, 1, 2, 4);
    let repo = w.repo();
    let k2 = w.path("keys/client-mx2.key").display().to_string();
    let (ck, rk) = (w.key("client"), w.key("restore"));
    let (sa, sb) = (a.to_str().unwrap(), b.to_str().unwrap());
    for (key, host, path) in [
        (&ck, "alpha", sa),
        (&ck, "alpha", sb),
        (&ck, "alpha", sa),
        (&k2, "beta", sa),
    ] {
        w.ok(&[
            "backup", "--repo", &repo, "--key", key, "--host", host, path,
        ]);
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["snapshots", "--repo", &repo, "--key", &rk, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&w.ok(&args)).unwrap()
    };
    assert_eq!(list(&[]).len(), 4);
    assert_eq!(list(&["--client", "mx2"]).len(), 1);
    assert_eq!(list(&["--client", "mx1,mx2"]).len(), 4);
    assert_eq!(list(&["--host", "alpha"]).len(), 3);
    assert_eq!(list(&["--path", sb]).len(), 1);
    assert_eq!(list(&["--path", &format!("{sa}/")]).len(), 3);
    assert_eq!(list(&["--path", sa, "--host", "beta"]).len(), 1);
    let newest = list(&["--latest", "1"]);
    assert_eq!(newest.len(), 2, "{newest:?}");
    let all = list(&["--client", "mx1"]);
    let last = all
        .iter()
        .max_by_key(|s| s["time_ns"].as_i64().unwrap())
        .unwrap();
    assert!(newest.iter().any(|s| s["id"] == last["id"]), "{newest:?}");
    assert_eq!(list(&["--latest", "2", "--client", "mx1"]).len(), 2);
    // The table: a header, one row per snapshot, a count.
    let text = w.ok(&["snapshots", "--repo", &repo, "--key", &rk, "--host", "beta"]);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    for col in ["ID", "TIME", "CLIENT", "HOST", "FILES", "SIZE", "PATHS"] {
        assert!(lines[0].contains(col), "{text}");
    }
    assert!(
        lines[1].contains("mx2") && lines[1].contains("beta"),
        "{text}"
    );
    assert_eq!(lines[2], "1 snapshot");
    // Hosts and paths are encrypted: a client key cannot filter on them.
    let o = w.run(&[
        "snapshots",
        "--repo",
        &repo,
        "--key",
        &ck,
        "--host",
        "alpha",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("restore key"), "{}", stderr(&o));
}

fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            n += count_files(&e.path());
        } else {
            n += 1;
        }
    }
    n
}

/// `retention --dry-run` (alias `forget`) shows what the policy keeps and
/// until when, and changes nothing; `prune` carries it out on a plain
/// directory (admin key), keeping each client's last snapshots and every
/// pack they list, so the rest still verifies and restores; `prune` is
/// refused on a directory that had a vault, on a vault URL and on a bundle.
#[test]
fn retention_dry_run_and_prune_of_a_plain_directory() {
    let w = World::new();
    w.init_with(&short_retention("1"));
    let src = w.path("data");
    std::fs::create_dir_all(&src).unwrap();
    let mut rng = Rng(77);
    for i in 0..5 {
        std::fs::write(src.join("blob.bin"), rng.bytes(200_000 + i)).unwrap();
        let o = w.run(&[
            "backup",
            "--repo",
            &w.repo(),
            "--key",
            &w.key("client"),
            src.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    }
    std::thread::sleep(Duration::from_millis(1500));
    let (repo, ak, rk) = (w.repo(), w.key("admin-1"), w.key("restore"));
    let snaps_dir = w.path("repo/snapshots");
    let packs_dir = w.path("repo/packs");
    let (s0, p0) = (count_files(&snaps_dir), count_files(&packs_dir));
    assert_eq!(s0, 5);
    let plan: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "retention",
        "--repo",
        &repo,
        "--key",
        &ak,
        "--dry-run",
        "--json",
    ]))
    .unwrap();
    assert_eq!(plan.len(), 5);
    let kept: Vec<&serde_json::Value> = plan.iter().filter(|r| r["keep"] == true).collect();
    assert_eq!(kept.len(), 3, "{plan:?}");
    assert!(
        kept.iter()
            .all(|r| r["why"].as_str().unwrap().contains("last"))
    );
    let text = w.ok(&["forget", "--repo", &repo, "--key", &ak, "--dry-run"]);
    assert!(text.contains("retention policy"), "{text}");
    assert!(
        text.contains("5 snapshots: 3 kept, 2 reclaimable now"),
        "{text}"
    );
    // A dry run of prune removes nothing.
    let out = w.ok(&["prune", "--repo", &repo, "--key", &ak, "--dry-run"]);
    assert!(out.contains("would remove 2 snapshot(s)"), "{out}");
    assert_eq!(count_files(&snaps_dir), 5);
    assert_eq!(count_files(&packs_dir), p0);
    // Not with a client key.
    let o = w.run(&["prune", "--repo", &repo, "--key", &w.key("client")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("admin key"), "{}", stderr(&o));
    // Not while a backup writes: a backup holds DIR/lock shared (here this
    // test holds it, as a running backup would), and could be reusing data
    // from a pack only the removed snapshots list.
    {
        let held = std::fs::File::open(Path::new(&repo).join("lock")).unwrap();
        held.lock_shared().unwrap();
        let o = w.run(&["prune", "--repo", &repo, "--key", &ak]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("a backup is writing"), "{}", stderr(&o));
        assert_eq!(count_files(&snaps_dir), 5);
    }
    let out = w.ok(&["prune", "--repo", &repo, "--key", &ak]);
    assert!(out.contains("removed 2 snapshot(s)"), "{out}");
    assert_eq!(count_files(&snaps_dir), 3);
    assert!(count_files(&packs_dir) < p0, "no pack removed");
    let left = w.snapshots();
    let ids: Vec<&str> = left.iter().map(|s| s["id"].as_str().unwrap()).collect();
    for k in &kept {
        assert!(ids.contains(&k["id"].as_str().unwrap()));
    }
    w.ok(&["verify", "--repo", &repo, "--key", &rk, "--read-data"]);
    let out = w.path("out");
    w.restore("latest", &out);
    assert_eq!(
        std::fs::read(out.join("data/blob.bin")).unwrap(),
        std::fs::read(src.join("blob.bin")).unwrap()
    );
    // Nothing more to do.
    let again = w.ok(&["prune", "--repo", &repo, "--key", &ak]);
    assert!(
        again.contains("removed 0 snapshot(s) and 0 pack(s)"),
        "{again}"
    );
    // A directory a vault serves, even with its state elsewhere (the vault
    // leaves vault/served in it), or a replica: refused, nothing removed.
    let state = w.path("state-elsewhere");
    let mut v = w.start_vault(&["--state", state.to_str().unwrap()]);
    v.stop();
    assert!(w.path("repo/vault/served").exists());
    let o = w.run(&["prune", "--repo", &repo, "--key", &ak]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("vault"), "{}", stderr(&o));
    for r in ["https://127.0.0.1:9", &format!("bundle:{repo}")] {
        let o = w.run(&["prune", "--repo", r, "--key", &ak]);
        assert_eq!(o.status.code(), Some(1), "{r}");
        assert!(stderr(&o).contains("plain directory"), "{}", stderr(&o));
    }
    assert_eq!(count_files(&snaps_dir), 3);
}

/// Admin keys made on each admin's own machine: `key new admin --out`
/// writes the key (its own passphrase) and a public file; `init
/// --admin-pub` takes only the public files and writes no admin key; the
/// key is unusable (one line, exit 1, not "tampering") until `key bind`
/// ties it to the config id init printed; then it signs as an admin.
#[test]
fn admin_keys_made_apart_from_init() {
    let w = World::new();
    let alice = w.path("alice/alice.key");
    let bob = w.path("bob/bob.key");
    std::fs::create_dir_all(alice.parent().unwrap()).unwrap();
    std::fs::create_dir_all(bob.parent().unwrap()).unwrap();
    for (k, name, pass) in [
        (&alice, "alice", "alice's own passphrase"),
        (&bob, "bob", "bob's own passphrase!"),
    ] {
        // HOLDFAST_REPO and HOLDFAST_KEY set in the environment do not
        // get in the way.
        let o = w
            .cmd(&["key", "new", "admin", name, "--out", k.to_str().unwrap()])
            .env("HOLDFAST_PASSPHRASE", pass)
            .env("HOLDFAST_REPO", w.repo())
            .env("HOLDFAST_KEY", w.path("elsewhere.key"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(k.with_extension("pub").exists());
    }
    // Never over an existing file.
    let o = w.run(&[
        "key",
        "new",
        "admin",
        "alice",
        "--out",
        alice.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let pubs = [alice.with_extension("pub"), bob.with_extension("pub")];
    let out = w.ok(&[
        "init",
        &w.repo(),
        "--keys",
        w.path("keys").to_str().unwrap(),
        "--quorum",
        "2",
        "--admin-pub",
        pubs[0].to_str().unwrap(),
        "--admin-pub",
        pubs[1].to_str().unwrap(),
    ]);
    let config = out
        .split_whitespace()
        .map(|t| t.trim_matches(|c: char| !c.is_ascii_hexdigit()))
        .find(|t| t.len() == 64 && t.bytes().all(|b| b.is_ascii_hexdigit()))
        .unwrap_or_else(|| panic!("no config id in {out}"))
        .to_string();
    let files: Vec<String> = std::fs::read_dir(w.path("keys"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !files.iter().any(|f| f.starts_with("admin")),
        "init wrote admin keys: {files:?}"
    );
    // Not bound yet: refused in one line, exit 1.
    let src = w.path("data");
    make_maildir(&src, 1, 2, 3);
    w.backup(&[&src]);
    let o = w
        .cmd(&[
            "retention",
            "--repo",
            &w.repo(),
            "--key",
            alice.to_str().unwrap(),
        ])
        .env("HOLDFAST_PASSPHRASE", "alice's own passphrase")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("key bind"), "{}", stderr(&o));
    assert_eq!(stderr(&o).trim().lines().count(), 1);
    // A wrong config id is refused when the repository is given.
    let wrong = "ab".repeat(32);
    let o = w
        .cmd(&[
            "key",
            "bind",
            "--key",
            alice.to_str().unwrap(),
            "--config",
            &wrong,
            "--repo",
            &w.repo(),
        ])
        .env("HOLDFAST_PASSPHRASE", "alice's own passphrase")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = w
        .cmd(&[
            "key",
            "bind",
            "--key",
            alice.to_str().unwrap(),
            "--config",
            &config,
            "--repo",
            &w.repo(),
        ])
        .env("HOLDFAST_PASSPHRASE", "alice's own passphrase")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    // Bound: it opens the repository as an admin, with its own passphrase.
    let o = w
        .cmd(&[
            "retention",
            "--repo",
            &w.repo(),
            "--key",
            alice.to_str().unwrap(),
        ])
        .env("HOLDFAST_PASSPHRASE", "alice's own passphrase")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w
        .cmd(&[
            "prune",
            "--repo",
            &w.repo(),
            "--key",
            alice.to_str().unwrap(),
            "--dry-run",
        ])
        .env("HOLDFAST_PASSPHRASE", "alice's own passphrase")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let o = w
        .cmd(&[
            "retention",
            "--repo",
            &w.repo(),
            "--key",
            alice.to_str().unwrap(),
        ])
        .env("HOLDFAST_PASSPHRASE", "bob's own passphrase!")
        .output()
        .unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "alice's key opened with bob's passphrase"
    );
    // Binding twice is refused.
    let o = w
        .cmd(&[
            "key",
            "bind",
            "--key",
            alice.to_str().unwrap(),
            "--config",
            &config,
        ])
        .env("HOLDFAST_PASSPHRASE", "alice's own passphrase")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("already"), "{}", stderr(&o));
}

/// A lone incremental bundle says at once which bundle it was made over,
/// instead of failing object by object; with its base first it reads.
#[test]
fn a_lone_incremental_bundle_names_its_base() {
    let w = World::new();
    w.init_with(&[]);
    let src = w.path("data");
    make_maildir(&src, 1, 3, 8);
    w.backup(&[&src]);
    let (repo, rk) = (w.repo(), w.key("restore"));
    let b1 = w.path("media/b1").display().to_string();
    let b2 = w.path("media/b2").display().to_string();
    w.ok(&["export", "--repo", &repo, "--key", &rk, "--to", &b1]);
    make_maildir(&w.path("data/more"), 1, 3, 9);
    w.backup(&[&src]);
    w.ok(&[
        "export", "--repo", &repo, "--key", &rk, "--to", &b2, "--since", &b1,
    ]);
    let o = w.run(&["snapshots", "--repo", &format!("bundle:{b2}"), "--key", &rk]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert_eq!(e.trim().lines().count(), 1, "{e}");
    assert!(e.contains("incremental") && e.contains(&b1), "{e}");
    assert!(e.contains(&format!("bundle:{b1},{b2}")), "{e}");
    let out = w.ok(&[
        "snapshots",
        "--repo",
        &format!("bundle:{b1},{b2}"),
        "--key",
        &rk,
        "--json",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 2);
}

/// `replica pull` shows progress like backup and restore: piped with
/// --progress-interval, a line counting snapshots and bytes copied; the
/// replica then lists what the vault holds.
#[test]
fn replica_pull_progress() {
    let w = World::new();
    w.init();
    let vault = w.start_vault(&[]);
    let src = w.path("data");
    make_maildir(&src, 2, 10, 21);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    std::fs::write(src.join("notes.txt"), Rng(22).text(50_000)).unwrap();
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let replica = w.path("replica");
    let o = w
        .cmd(&[
            "replica",
            "pull",
            "--from",
            &vault.url,
            "--key",
            &w.key("replica"),
            "--into",
            replica.to_str().unwrap(),
            "--progress-interval",
            "60",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let line = e
        .lines()
        .find(|l| l.starts_with("holdfast replica pull: "))
        .unwrap_or_else(|| panic!("no progress line: {e}"));
    assert!(line.contains(" 2/2 snapshots"), "{line}");
    assert!(
        line.contains("(100 %)") && line.contains("done in"),
        "{line}"
    );
    let list: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "snapshots",
        "--repo",
        replica.to_str().unwrap(),
        "--key",
        &w.key("restore"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(list.len(), 2);
}

/// `find` lists the files whose name matches a pattern in every snapshot
/// (or those of one client), with the snapshot each is in; a pattern with
/// `/` matches the whole path; -i ignores case; none found is not an error.
#[test]
fn find_across_snapshots() {
    let w = World::new();
    w.init_with(&["--client", "mx1,mx2"]);
    let src = w.path("data");
    std::fs::create_dir_all(src.join("docs")).unwrap();
    std::fs::write(src.join("docs/Invoice-2026.pdf"), "one").unwrap();
    std::fs::write(src.join("notes.txt"), "notes").unwrap();
    let repo = w.repo();
    let k2 = w.path("keys/client-mx2.key").display().to_string();
    let s = src.to_str().unwrap();
    w.ok(&["backup", "--repo", &repo, "--key", &w.key("client"), s]);
    std::fs::write(src.join("docs/invoice-2027.pdf"), "two").unwrap();
    w.ok(&["backup", "--repo", &repo, "--key", &w.key("client"), s]);
    w.ok(&["backup", "--repo", &repo, "--key", &k2, s]);
    let rk = w.key("restore");
    let find = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["find", "--repo", &repo, "--key", &rk, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&w.ok(&args)).unwrap()
    };
    let hits = find(&["*.pdf"]);
    // 1 in the first snapshot, 2 in each of the others.
    assert_eq!(hits.len(), 5, "{hits:?}");
    assert!(
        hits.iter()
            .all(|h| h["path"].as_str().unwrap().ends_with(".pdf"))
    );
    assert_eq!(find(&["invoice*"]).len(), 2);
    assert_eq!(find(&["-i", "invoice*"]).len(), 5);
    assert_eq!(find(&["--client", "mx2", "*.pdf"]).len(), 2);
    assert_eq!(find(&["data/docs/*2027*"]).len(), 2);
    assert_eq!(find(&["*.doc"]).len(), 0);
    let text = w.ok(&["find", "--repo", &repo, "--key", &rk, "notes.txt"]);
    assert!(text.contains("3 matches in 3 of 3 snapshots"), "{text}");
    assert!(text.contains("data/notes.txt"), "{text}");
    // Names are encrypted: the client key cannot look.
    let o = w.run(&["find", "--repo", &repo, "--key", &w.key("client"), "*"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("restore key"), "{}", stderr(&o));
}

/// `prune` on a plain directory holds what the vault would hold after an
/// anomaly: the flagged snapshot (evidence) and the last healthy one
/// before it, 30 days, whatever the policy says.
#[test]
fn prune_holds_anomaly_evidence() {
    let w = World::new();
    w.init_with(&short_retention("1"));
    let src = w.path("spool");
    make_maildir(&src, 4, 9, 41);
    let (repo, ck) = (w.repo(), w.key("client"));
    let backup = |want: i32| {
        let o = w.run(&[
            "backup",
            "--repo",
            &repo,
            "--key",
            &ck,
            "--json",
            src.to_str().unwrap(),
        ]);
        assert_eq!(o.status.code(), Some(want), "{}", stderr(&o));
        let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        j[0]["id"].as_str().unwrap().to_string()
    };
    let first = backup(0);
    make_maildir(&src.join("user900"), 1, 3, 42);
    let healthy = backup(0);
    for e in std::fs::read_dir(&src).unwrap() {
        std::fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    let wiped = backup(5);
    for i in 0..3 {
        std::fs::write(src.join(format!("later-{i}.txt")), Rng(i + 2).text(20_000)).unwrap();
        backup(0);
    }
    std::thread::sleep(Duration::from_millis(1500));
    let ak = w.key("admin-1");
    let plan: Vec<serde_json::Value> =
        serde_json::from_str(&w.ok(&["retention", "--repo", &repo, "--key", &ak, "--json"]))
            .unwrap();
    let row = |id: &str| plan.iter().find(|r| r["id"] == id).unwrap().clone();
    assert_eq!(row(&first)["keep"], false, "{plan:?}");
    assert_eq!(row(&healthy)["keep"], true, "{plan:?}");
    assert!(
        row(&healthy)["why"]
            .as_str()
            .unwrap()
            .contains("last healthy")
    );
    assert_eq!(row(&wiped)["keep"], true, "{plan:?}");
    assert!(row(&wiped)["why"].as_str().unwrap().contains("evidence"));
    let out = w.ok(&["prune", "--repo", &repo, "--key", &ak]);
    assert!(out.contains("removed 1 snapshot(s)"), "{out}");
    let left: Vec<String> = w
        .snapshots()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left.len(), 5);
    assert!(left.contains(&healthy) && left.contains(&wiped) && !left.contains(&first));
    w.ok(&[
        "verify",
        "--repo",
        &repo,
        "--key",
        &w.key("restore"),
        "--read-data",
    ]);
}

/// The snapshot ids, oldest first, as `snapshots --json` lists them.
fn ids_by_time(list: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<(i64, String)> = list
        .iter()
        .map(|s| {
            (
                s["time_ns"].as_i64().unwrap(),
                s["id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, id)| id).collect()
}

/// `backup --tag` (repeatable) stores tags in the signed, encrypted body;
/// `snapshots` shows them (TAGS column, `"tags"` in JSON) and `--tag`
/// filters `snapshots`, and `latest` in `restore`, `ls` and `drill`. A bad
/// tag is one line and exit 1; a key that cannot read bodies cannot filter.
#[test]
fn backup_tags_and_tag_filters() {
    let w = World::new();
    w.init_with(&[]);
    let src = w.path("src");
    std::fs::create_dir_all(&src).unwrap();
    let (repo, ck, rk) = (w.repo(), w.key("client"), w.key("restore"));
    let s = src.to_str().unwrap();
    let mut made = Vec::new();
    for (content, tags) in [
        ("one", vec!["nightly", "db"]),
        ("two", vec!["weekly"]),
        ("three", vec![]),
    ] {
        std::fs::write(src.join("f"), content).unwrap();
        let mut args = vec!["backup", "--repo", &repo, "--key", &ck, "--json", s];
        for t in &tags {
            args.extend(["--tag", t]);
        }
        let j: serde_json::Value = serde_json::from_str(&w.ok(&args)).unwrap();
        assert_eq!(j[0]["tags"], serde_json::json!(tags), "{j}");
        made.push(j[0]["snapshot"].as_str().unwrap().to_string());
        std::thread::sleep(Duration::from_millis(20));
    }
    let list = |extra: &[&str]| -> Vec<serde_json::Value> {
        let mut args = vec!["snapshots", "--repo", &repo, "--key", &rk, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(&w.ok(&args)).unwrap()
    };
    let all = list(&[]);
    assert_eq!(ids_by_time(&all), made);
    for s in &all {
        let want: Vec<&str> = match made.iter().position(|m| m == s["id"].as_str().unwrap()) {
            Some(0) => vec!["nightly", "db"],
            Some(1) => vec!["weekly"],
            _ => vec![],
        };
        assert_eq!(s["tags"], serde_json::json!(want), "{s}");
        assert_eq!(s["snapshot"], s["id"], "{s}");
    }
    let one = list(&["--tag", "db"]);
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["id"], made[0]);
    assert_eq!(list(&["--tag", "db", "--tag", "nightly"]).len(), 1);
    assert_eq!(list(&["--tag", "db", "--tag", "weekly"]).len(), 0);
    assert_eq!(list(&["--tag", "nope"]).len(), 0);
    let found: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "find", "--repo", &repo, "--key", &rk, "--json", "--tag", "weekly", "f",
    ]))
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["snapshot"], made[1]);
    // The table has a TAGS column.
    let text = w.ok(&["snapshots", "--repo", &repo, "--key", &rk]);
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].contains("TAGS"), "{text}");
    assert!(lines.iter().any(|l| l.contains("nightly,db")), "{text}");
    // `latest` among the tagged: the weekly one is older than the newest.
    let t = w.path("restored");
    w.ok(&[
        "restore",
        "--repo",
        &repo,
        "--key",
        &rk,
        "--tag",
        "weekly",
        "latest",
        t.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(t.join("src/f")).unwrap(), "two");
    let o = w.run(&[
        "ls", "--repo", &repo, "--key", &rk, "--tag", "gone", "latest",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("tagged gone"), "{}", stderr(&o));
    // Bad tags: one line, exit 1, nothing written.
    for bad in ["a,b", "", " x", "bell\u{7}"] {
        let o = w.run(&["backup", "--repo", &repo, "--key", &ck, "--tag", bad, s]);
        assert_eq!(o.status.code(), Some(1), "{bad:?}");
        assert_eq!(stderr(&o).trim().lines().count(), 1, "{}", stderr(&o));
    }
    assert_eq!(list(&[]).len(), 3);
    // Tags are encrypted: a client key cannot choose by them.
    let o = w.run(&["snapshots", "--repo", &repo, "--key", &ck, "--tag", "db"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("restore key"), "{}", stderr(&o));
}

/// Writes `n` bytes of deterministic data to `to` in pieces, pausing
/// `pause` between pieces (a slow dump).
fn feed(mut to: impl Write, n: usize, seed: u64, pause: Duration) -> std::io::Result<()> {
    let mut rng = Rng(seed);
    let mut left = n;
    while left > 0 {
        let k = left.min(1 << 20);
        // Half text, half random: compressible, but not to nothing.
        let mut piece = rng.text(k / 2);
        piece.extend(rng.bytes(k - k / 2));
        to.write_all(&piece)?;
        left -= k;
        std::thread::sleep(pause);
    }
    Ok(())
}

fn data_of(n: usize, seed: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(n);
    feed(&mut v, n, seed, Duration::ZERO).unwrap();
    v
}

/// Runs `backup --stdin` with `n` bytes fed through a pipe; returns the
/// output and the peak RSS (KiB) of holdfast, measured by wait4.
fn backup_stdin(
    w: &World,
    extra: &[&str],
    n: usize,
    seed: u64,
    pause: Duration,
) -> (std::process::Output, u64) {
    const PY: &str = "import os,sys\n\
pid=os.fork()\n\
if pid==0:\n    os.execv(sys.argv[1], sys.argv[1:])\n\
_,st,ru=os.wait4(pid,0)\n\
sys.stderr.write('\\nHF_MAXRSS_KIB=%d\\n' % ru.ru_maxrss)\n\
sys.exit(os.waitstatus_to_exitcode(st) & 255)\n";
    let (repo, ck) = (w.repo(), w.key("client"));
    let mut args = vec!["backup", "--repo", &repo, "--key", &ck, "--stdin"];
    args.extend_from_slice(extra);
    let inner = w.cmd(&args);
    let mut c = Command::new("python3");
    c.arg("-c").arg(PY).arg(bin()).args(&args);
    for (k, v) in inner.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || feed(stdin, n, seed, pause));
    let o = child.wait_with_output().unwrap();
    let fed = writer.join().unwrap();
    assert!(
        fed.is_ok(),
        "{fed:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let kib = err
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("HF_MAXRSS_KIB="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rusage: {err}"));
    (o, kib)
}

/// `backup --stdin --stdin-filename db.sql` stores a dump streamed (peak
/// memory well under its size), restorable like any file, recorded as
/// `/db.sql`; the next dump deduplicates against it (its own cache), and
/// the file backups' cache is left alone (their next run reads nothing).
#[test]
fn backup_from_stdin_streamed() {
    let w = World::new();
    w.init_with(&[]);
    let (repo, ck, rk) = (w.repo(), w.key("client"), w.key("restore"));
    let src = w.path("files");
    make_maildir(&src, 2, 10, 5);
    w.ok(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        src.to_str().unwrap(),
    ]);

    const N: usize = 128 << 20;
    let (o, kib) = backup_stdin(
        &w,
        &["--stdin-filename", "db.sql", "--json", "--tag", "pg"],
        N,
        42,
        Duration::ZERO,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["files"], 1, "{j}");
    assert_eq!(j[0]["bytes"], N as u64, "{j}");
    eprintln!(
        "backup --stdin of {} MiB: peak RSS {} MiB",
        N >> 20,
        kib >> 10
    );
    assert!(
        kib < (N as u64 / 1024) / 2,
        "peak RSS {kib} KiB for a {N}-byte dump: not streamed"
    );
    let first = j[0]["snapshot"].as_str().unwrap().to_string();
    let list = w.snapshots();
    let s = list.iter().find(|s| s["id"] == first.as_str()).unwrap();
    assert_eq!(s["paths"], serde_json::json!(["/db.sql"]), "{s}");
    // It restores like any file, by either path form.
    let t = w.path("out");
    w.ok(&[
        "restore",
        "--repo",
        &repo,
        "--key",
        &rk,
        &first,
        t.to_str().unwrap(),
        "--path",
        "/db.sql",
    ]);
    let back = std::fs::read(t.join("db.sql")).unwrap();
    assert!(back == data_of(N, 42), "the restored dump differs");
    drop(back);
    let ls = w.ok(&["ls", "--repo", &repo, "--key", &rk, &first]);
    assert_eq!(ls.lines().count(), 1, "{ls}");
    assert!(
        ls.contains(&format!(" {N} ")) && ls.ends_with("db.sql\n"),
        "{ls}"
    );
    // Tonight's dump again: no data is stored again.
    let (o, _) = backup_stdin(
        &w,
        &["--stdin-filename", "db.sql", "--json"],
        N,
        42,
        Duration::ZERO,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        j[0]["new_blobs"], 1,
        "only the root tree (a new mtime): {j}"
    );
    assert_eq!(j[0]["packs_written"], 1, "{j}");
    // The file backup's cache is untouched by the dumps.
    let out = w.ok(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        "--json",
        src.to_str().unwrap(),
    ]);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j[0]["files_read"], 0, "{j}");
    // A slash in the name, or paths beside --stdin: one line, exit 1.
    for args in [
        vec![
            "backup",
            "--repo",
            &repo,
            "--key",
            &ck,
            "--stdin",
            "--stdin-filename",
            "a/b",
        ],
        vec![
            "backup",
            "--repo",
            &repo,
            "--key",
            &ck,
            "--stdin",
            src.to_str().unwrap(),
        ],
        vec![
            "backup",
            "--repo",
            &repo,
            "--key",
            &ck,
            "--stdin-filename",
            "x",
            src.to_str().unwrap(),
        ],
    ] {
        let o = w
            .cmd(&args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
    }
    // Standard input left on a terminal (nothing piped): refused at once,
    // not a snapshot of whatever gets typed.
    if tool("script") {
        let line = format!(
            "{} backup --repo {repo} --key {ck} --stdin",
            bin().display()
        );
        let o = Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .env("HOLDFAST_CACHE_DIR", w.path("cache"))
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(o.status.code(), Some(1), "{out}");
        assert!(out.contains("standard input, which is a terminal"), "{out}");
    }
}

/// Every file and directory under `root` with its bytes (files) and
/// mode, for before/after comparison.
fn snapshot_tree(root: &Path) -> std::collections::BTreeMap<std::path::PathBuf, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().to_path_buf();
            if md.is_dir() {
                stack.push(e.path());
                out.insert(rel, (md.permissions().mode(), Vec::new()));
            } else {
                out.insert(
                    rel,
                    (md.permissions().mode(), std::fs::read(e.path()).unwrap()),
                );
            }
        }
    }
    out
}

/// `backup --dry-run` reads what a backup would, says what it would add
/// (files new and changed, bytes new) and writes nothing: the repository
/// and the cache are byte for byte as before, and the real backup after it
/// still has all the work to do.
#[test]
fn backup_dry_run_writes_nothing() {
    let w = World::new();
    w.init_with(&[]);
    let (repo, ck) = (w.repo(), w.key("client"));
    let src = w.path("src");
    make_maildir(&src, 2, 20, 9);
    std::fs::write(src.join("plain.txt"), "before").unwrap();
    let s = src.to_str().unwrap();
    w.ok(&["backup", "--repo", &repo, "--key", &ck, s]);
    // Two new files and one changed (outside the Maildirs: no anomaly).
    std::fs::write(src.join("new-1.txt"), data_of(300_000, 1)).unwrap();
    std::fs::write(src.join("new-2.txt"), "small").unwrap();
    std::fs::write(src.join("plain.txt"), data_of(50_000, 2)).unwrap();
    let before_repo = snapshot_tree(&w.path("repo"));
    let before_cache = snapshot_tree(&w.path("cache"));
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        "--dry-run",
        "--json",
        s,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(j[0]["dry_run"], true, "{j}");
    assert!(j[0]["snapshot"].is_null(), "{j}");
    assert_eq!(j[0]["files_new"], 2, "{j}");
    assert_eq!(j[0]["files_changed"], 1, "{j}");
    assert_eq!(j[0]["files_read"], 3, "{j}");
    let new_bytes = j[0]["new_bytes"].as_u64().unwrap();
    assert!(new_bytes >= 350_000, "{j}");
    assert!(j[0]["packs_written"].as_u64().unwrap() >= 1, "{j}");
    assert!(
        snapshot_tree(&w.path("repo")) == before_repo,
        "dry run changed the repository"
    );
    assert!(
        snapshot_tree(&w.path("cache")) == before_cache,
        "dry run changed the cache"
    );
    // The text form says it.
    let out = w.ok(&["backup", "--repo", &repo, "--key", &ck, "--dry-run", s]);
    assert!(
        out.contains("dry run: would add 2 new and 1 changed files")
            && out.contains("nothing was written"),
        "{out}"
    );
    assert!(snapshot_tree(&w.path("repo")) == before_repo);
    // A dry run cannot touch a metrics file.
    let o = w.run(&[
        "backup",
        "--repo",
        &repo,
        "--key",
        &ck,
        "--dry-run",
        "--metrics-file",
        w.path("m.prom").to_str().unwrap(),
        s,
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(!w.path("m.prom").exists());
    // The real backup after it adds exactly what the dry run announced.
    let r = w.backup(&[&src]);
    assert_eq!(r["files_read"], 3, "{r}");
    assert_eq!(r["new_bytes"], new_bytes, "{r}");
    assert_eq!(w.snapshots().len(), 2);
}

/// `ls` shows the owner (uid:gid) and a symlink's target, and lists a
/// sub-path given as an argument or with --path, in either form.
#[test]
fn ls_owner_target_and_subpath() {
    use std::os::unix::fs::MetadataExt;
    let w = World::new();
    w.init_with(&[]);
    let (repo, rk) = (w.repo(), w.key("restore"));
    let src = w.path("data");
    std::fs::create_dir_all(src.join("sub/deeper")).unwrap();
    std::fs::write(src.join("top.txt"), "top").unwrap();
    std::fs::write(src.join("sub/a.txt"), "a").unwrap();
    std::fs::write(src.join("sub/deeper/b.txt"), "b").unwrap();
    std::os::unix::fs::symlink("../top.txt", src.join("sub/link")).unwrap();
    let id = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let md = std::fs::metadata(src.join("top.txt")).unwrap();
    let owner = format!("{}:{}", md.uid(), md.gid());
    let out = w.ok(&["ls", "--repo", &repo, "--key", &rk, &id]);
    let top = out.lines().find(|l| l.ends_with("data/top.txt")).unwrap();
    assert!(top.split_whitespace().any(|c| c == owner), "{out}");
    let link = out.lines().find(|l| l.contains("data/sub/link")).unwrap();
    assert!(
        link.starts_with("symlink") && link.ends_with("data/sub/link -> ../top.txt"),
        "{out}"
    );
    // Limited to a sub-path: as an argument, with --path, or absolute.
    let abs = format!("{}/sub", src.display());
    for args in [
        vec!["ls", "--repo", &repo, "--key", &rk, &id, "data/sub"],
        vec![
            "ls", "--repo", &repo, "--key", &rk, &id, "--path", "data/sub",
        ],
        vec!["ls", "--repo", &repo, "--key", &rk, &id, &abs],
    ] {
        let out = w.ok(&args);
        let paths: Vec<&str> = out
            .lines()
            .map(|l| l.rsplit("  ").next().unwrap())
            .collect();
        assert_eq!(
            paths,
            [
                "data/sub",
                "data/sub/a.txt",
                "data/sub/deeper",
                "data/sub/deeper/b.txt",
                "data/sub/link -> ../top.txt"
            ],
            "{args:?}: {out}"
        );
    }
    let j: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "ls", "--repo", &repo, "--key", &rk, &id, "data/sub", "--json",
    ]))
    .unwrap();
    let l = j.iter().find(|e| e["path"] == "data/sub/link").unwrap();
    assert_eq!(l["target"], "../top.txt", "{l}");
    assert_eq!(l["uid"], md.uid(), "{l}");
    assert_eq!(l["gid"], md.gid(), "{l}");
    let o = w.run(&["ls", "--repo", &repo, "--key", &rk, &id, "data/none"]);
    assert!(o.status.success());
    assert!(o.stdout.is_empty());
}

/// Every --json output that names one snapshot does it with the key
/// `"snapshot"`: backup, snapshots and retention (beside "id"), drill
/// (top level and in each run), stats (each client's newest), find.
#[test]
fn json_names_the_snapshot() {
    let w = World::new();
    w.init_with(&[]);
    let (repo, rk) = (w.repo(), w.key("restore"));
    let src = w.path("src");
    make_maildir(&src, 2, 5, 3);
    let id = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let list = w.snapshots();
    assert_eq!(list[0]["snapshot"], id.as_str());
    let hist = w.path("drill.jsonl");
    let d: serde_json::Value = serde_json::from_str(&w.ok(&[
        "drill",
        "--repo",
        &repo,
        "--key",
        &rk,
        "--history",
        hist.to_str().unwrap(),
        "--json",
    ]))
    .unwrap();
    assert_eq!(d["snapshot"], id.as_str(), "{d}");
    assert_eq!(d["run"]["snapshot"], id.as_str(), "{d}");
    assert_eq!(d["history"][0]["snapshot"], id.as_str(), "{d}");
    assert_eq!(d["ok"], true, "{d}");
    let st: serde_json::Value =
        serde_json::from_str(&w.ok(&["stats", "--repo", &repo, "--key", &rk, "--json"])).unwrap();
    assert_eq!(st["clients"][0]["snapshot"], id.as_str(), "{st}");
    let f: Vec<serde_json::Value> =
        serde_json::from_str(&w.ok(&["find", "--repo", &repo, "--key", &rk, "--json", "*"]))
            .unwrap();
    assert!(
        !f.is_empty() && f.iter().all(|e| e["snapshot"] == id.as_str()),
        "{f:?}"
    );
    let r: Vec<serde_json::Value> =
        serde_json::from_str(&w.ok(&["retention", "--repo", &repo, "--key", &rk, "--json"]))
            .unwrap();
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0]["snapshot"], id.as_str(), "{r:?}");
    assert_eq!(r[0]["id"], id.as_str(), "{r:?}");
}

/// Progress for piped runs: a slow dump piped into `backup --stdin` prints
/// lines every --progress-interval whose byte counter moves during the
/// run; a whole restore knows its size from the start (the time left), and
/// its counter ends at every file; verify counts packs.
#[test]
fn progress_moves_during_piped_runs() {
    let w = World::new();
    w.init_with(&[]);
    let (repo, rk) = (w.repo(), w.key("restore"));
    // 6 MiB over about 3 s, a line every second.
    let (o, _) = backup_stdin(
        &w,
        &["--stdin-filename", "slow.sql", "--progress-interval", "1"],
        6 << 20,
        7,
        Duration::from_millis(500),
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let during: Vec<&str> = e
        .lines()
        .filter(|l| l.starts_with("holdfast backup: ") && !l.contains("done in"))
        .collect();
    assert!(during.len() >= 2, "{e}");
    assert!(
        during.first() != during.last()
            && !during.last().unwrap().starts_with("holdfast backup: 0 B"),
        "the counter does not move: {e}"
    );
    let src = w.path("src");
    make_maildir(&src, 3, 30, 11);
    w.backup(&[&src]);
    let t = w.path("out");
    let o = w
        .cmd(&[
            "restore",
            "--progress-interval",
            "1",
            "--repo",
            &repo,
            "--key",
            &rk,
            "--client",
            "client",
            "latest",
            t.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let e = stderr(&o);
    let last = e
        .lines()
        .find(|l| l.starts_with("holdfast restore: ") && l.contains("done in"))
        .unwrap_or_else(|| panic!("{e}"));
    let n = files(&src).iter().filter(|p| p.is_file()).count();
    assert!(
        last.contains(&format!(" {n}/{n} files")),
        "{n} files: {last}"
    );
    assert!(last.contains("(100 %)"), "{last}");
    let o = w
        .cmd(&[
            "verify",
            "--progress-interval",
            "1",
            "--repo",
            &repo,
            "--key",
            &rk,
            "--read-data",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(" packs, "), "{}", stderr(&o));
}
