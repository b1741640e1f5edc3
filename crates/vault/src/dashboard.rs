//! The vault's dashboard: one read-only HTML page rendered on the server
//! from an [`Overview`], useful without JavaScript (it has none; the page
//! reloads itself every minute through a meta refresh).
//!
//! Every string that reaches the page is HTML-escaped; alert texts also
//! have the state directory and storage location cut out, as error bodies
//! do, since the page may be shown on a shared screen.

use std::fmt::Write;

use crate::metrics::Overview;

const NS: i64 = 1_000_000_000;

/// `&`, `<`, `>`, `"` and `'` escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// RFC 3339 UTC, to the second.
pub fn rfc3339(ns: i64) -> String {
    let secs = ns.div_euclid(NS);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// A duration for people: `3 d 4 h`, `2 h 5 min`, `40 s`.
pub fn span(ns: i64) -> String {
    let s = (ns / NS).unsigned_abs();
    let (d, h, m) = (s / 86_400, s / 3600 % 24, s / 60 % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{s} s")
    }
}

fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

fn when(t: Option<i64>, now: i64, past: &str) -> String {
    match t {
        None => "—".into(),
        Some(t) if t <= now => format!(
            "<time datetime=\"{0}\">{0}</time> <span class=dim>({1} {past})</span>",
            rfc3339(t),
            span(now - t)
        ),
        Some(t) => format!(
            "<time datetime=\"{0}\">{0}</time> <span class=dim>(in {1})</span>",
            rfc3339(t),
            span(t - now)
        ),
    }
}

/// A backup older than this is flagged on the page.
const STALE_NS: i64 = 26 * 3600 * NS;
/// A lock ending sooner than this is flagged.
const LOCK_SOON_NS: i64 = 7 * 86_400 * NS;

/// The page.
pub fn render(o: &Overview, hide: &[String]) -> String {
    let now = o.now_ns;
    let mut h = String::new();
    let _ = write!(
        h,
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="60">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>holdfast vault {cfg}</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}}
table{{border-collapse:collapse;margin:.5em 0 1.5em}}
th,td{{border-bottom:1px solid #ddd;padding:.3em .8em;text-align:left;vertical-align:top}}
th{{background:#f4f4f4}} td.n{{text-align:right}}
.dim{{color:#777}} .bad{{color:#b00;font-weight:bold}} .warn{{color:#a60}}
</style></head><body>
<h1>holdfast vault <span class=dim>config {cfg}</span></h1>
<p id=summary>Vault time <time datetime="{now}">{now}</time> · holdfast {ver} · up {up}</p>
"#,
        cfg = escape(&o.config_id),
        now = rfc3339(now),
        ver = escape(env!("CARGO_PKG_VERSION")),
        up = span(now - o.started_ns),
    );

    // Clients.
    let _ = write!(
        h,
        "<h2>Clients</h2>\n<table id=clients><thead><tr><th>client</th><th>last backup</th>\
         <th>snapshots</th><th>stored</th><th>nearest lock expiry</th><th>latest lock expiry</th>\
         <th>anomalies</th></tr></thead><tbody>\n"
    );
    if o.clients.is_empty() {
        h.push_str("<tr><td colspan=7 class=dim>no client identities</td></tr>\n");
    }
    for c in &o.clients {
        let stale = c.last_ns.is_none_or(|t| now - t > STALE_NS);
        let last = if c.last_ns.is_none() {
            "<span class=bad>never</span>".to_string()
        } else if stale {
            format!("<span class=bad>{}</span>", when(c.last_ns, now, "ago"))
        } else {
            when(c.last_ns, now, "ago")
        };
        let latest = match c.latest_lock_ns {
            Some(t) if t - now < LOCK_SOON_NS => {
                format!("<span class=warn>{}</span>", when(Some(t), now, "ago"))
            }
            t => when(t, now, "ago"),
        };
        let _ = writeln!(
            h,
            "<tr data-client=\"{l}\"><td>{l}{removed}</td><td class=last>{last}</td>\
             <td class=n>{n}</td><td class=n>{stored}</td><td>{nearest}</td><td>{latest}</td>\
             <td class=anomalies>{anomalies}</td></tr>",
            l = escape(&c.label),
            removed = if c.removed {
                " <span class=dim>(removed)</span>"
            } else {
                ""
            },
            n = c.snapshots,
            stored = if o.quota_bytes > 0 {
                format!(
                    "{}<br><span class=dim>{:.1} % of quota</span>",
                    bytes(c.stored_bytes),
                    100.0 * c.stored_bytes as f64 / o.quota_bytes as f64
                )
            } else {
                bytes(c.stored_bytes)
            },
            nearest = when(c.nearest_lock_ns, now, "ago"),
            anomalies = if c.flagged == 0 {
                "none".to_string()
            } else {
                format!(
                    "<span class=bad>{} flagged snapshot{}; newest: {}</span>",
                    c.flagged,
                    if c.flagged == 1 { "" } else { "s" },
                    escape(&c.newest_flags.join(", "))
                )
            },
        );
    }
    h.push_str("</tbody></table>\n");
    h.push_str(
        "<p class=dim>Deduplication happens per client inside encrypted packs: the vault \
         sees stored bytes, not what they dedup from (<code>holdfast stats</code> with the restore \
         key does). Anomalies: snapshots the vault flagged; a client's own findings are in \
         <code>holdfast snapshots</code>.</p>\n",
    );

    // Proposals.
    h.push_str("<h2>Pending proposals</h2>\n<table id=proposals><thead><tr><th>proposal</th><th>action</th>\
         <th>proposer</th><th>status</th><th>approvals</th><th>time left</th><th>veto</th></tr></thead><tbody>\n");
    if o.proposals.is_empty() {
        h.push_str("<tr><td colspan=7 class=dim>none</td></tr>\n");
    }
    for p in &o.proposals {
        let left = match (p.status, p.until_ns) {
            ("waiting", Some(t)) => format!(
                "veto window ends {} (in {})",
                rfc3339(t),
                span((t - now).max(0))
            ),
            ("ready", _) => "runs at the next tick".into(),
            ("vetoed", _) => "never runs".into(),
            _ => "waits for quorum".into(),
        };
        let _ = writeln!(
            h,
            "<tr data-proposal=\"{id}\"><td><code>{id}</code><br><span class=dim>received {recv}</span></td>\
             <td>{action}</td><td>{proposer}</td><td class=\"status {status}\">{status}</td>\
             <td>{n}/{needed}: {who}</td><td>{left}</td><td>{veto}</td></tr>",
            id = escape(&p.id),
            recv = rfc3339(p.received_ns),
            action = escape(&p.action),
            proposer = escape(&p.proposer),
            status = p.status,
            n = p.approvals.len(),
            needed = p.needed,
            who = escape(&p.approvals.join(", ")),
            left = escape(&left),
            veto = match &p.vetoed_by {
                Some(by) => format!("<span class=bad>vetoed by {}</span>", escape(by)),
                None => "—".into(),
            },
        );
    }
    h.push_str("</tbody></table>\n");

    // Log and copies.
    let _ = write!(
        h,
        "<h2>Log and copies</h2>\n<table id=log><tbody>\
         <tr><th>log entries</th><td class=n id=log-entries>{entries}</td></tr>\
         <tr><th>log problems</th><td class=n>{problems}</td></tr>\
         <tr><th>last replica contact</th><td id=replica-contact>{replica}</td></tr>\
         <tr><th>last auditor contact</th><td id=auditor-contact>{auditor}</td></tr>\
         </tbody></table>\n<p class=dim>Contacts are known since this vault process started.</p>\n",
        entries = o.log_entries,
        problems = if o.log_problems > 0 {
            format!("<span class=bad>{}</span>", o.log_problems)
        } else {
            "0".into()
        },
        replica = when(o.replica_contact_ns, now, "ago"),
        auditor = when(o.auditor_contact_ns, now, "ago"),
    );

    // Alerts.
    let counts: Vec<String> = o
        .alerts_by_kind
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = write!(
        h,
        "<h2>Recent alerts</h2>\n<p>Since start: {}</p>\n<table id=alerts><thead><tr><th>time</th>\
         <th>kind</th><th>alert</th></tr></thead><tbody>\n",
        if counts.is_empty() {
            "none".to_string()
        } else {
            escape(&counts.join(", "))
        }
    );
    if o.recent_alerts.is_empty() {
        h.push_str("<tr><td colspan=3 class=dim>none</td></tr>\n");
    }
    for a in &o.recent_alerts {
        let mut text = a.text.clone();
        for x in hide.iter().filter(|x| !x.is_empty()) {
            text = text.replace(x.as_str(), "…");
        }
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            rfc3339(a.time_ns),
            escape(a.kind),
            escape(&text)
        );
    }
    h.push_str("</tbody></table>\n</body></html>\n");
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_709_210_096 * NS), "2024-02-29T12:34:56Z");
        assert_eq!(rfc3339(-NS), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn markup_in_names_is_escaped() {
        assert_eq!(
            escape("<script>alert('x')&\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;)&amp;&quot;&lt;/script&gt;"
        );
    }
}
