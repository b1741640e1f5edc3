use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use holdfast_repo::snapshots::list;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// Any key of the repository; the restore key also shows hosts, paths and
    /// sizes. Through a vault, times are the vault's and locks are shown.

    #[arg(long)]
    pub key: PathBuf,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
    /// Only these clients' snapshots (repeat, or separate with commas)
    #[arg(long = "client", value_name = "NAME", value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Only snapshots taken on this host (repeatable; needs the restore key)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots that backed up this path, as `backup` recorded it
    /// (absolute, e.g. /var/mail); repeatable: each must be there (needs
    /// the restore key)
    #[arg(long = "path", value_name = "PATH")]
    pub paths: Vec<String>,
    /// Only snapshots carrying this tag (`backup --tag`); repeatable: each
    /// must be there (needs the restore key)
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only the N newest snapshots of each client (after the other filters)
    #[arg(long, value_name = "N")]
    pub latest: Option<usize>,
}

/// A path as given or as recorded, without trailing slashes ("/" stays).
fn norm(p: &str) -> &str {
    let t = p.trim_end_matches('/');
    if t.is_empty() && p.starts_with('/') {
        "/"
    } else {
        t
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    if (!a.hosts.is_empty() || !a.paths.is_empty() || !a.tags.is_empty())
        && key.repo_secret().is_none()
    {
        bail!(
            "--host, --path and --tag need the restore key: hosts, paths and tags are \
             encrypted (this is a {} key)",
            key.role.name()
        );
    }
    let (mut snaps, errors) = list(&repo, &key)?;
    snaps.retain(|s| {
        (a.clients.is_empty() || a.clients.contains(&s.client))
            && (a.hosts.is_empty()
                || s.body
                    .as_ref()
                    .is_some_and(|b| a.hosts.contains(&b.hostname)))
            && a.paths.iter().all(|want| {
                s.body
                    .as_ref()
                    .is_some_and(|b| b.paths.iter().any(|p| norm(&util::lossy(p)) == norm(want)))
            })
            && a.tags
                .iter()
                .all(|t| s.body.as_ref().is_some_and(|b| b.tags.contains(t)))
    });
    // With a log (a vault, a replica, a bundle), the vault's time and the
    // retention lock of each live snapshot, as the log says them.
    let lock_of = |id: &holdfast_core::ObjectId| {
        repo.log
            .as_ref()
            .and_then(|l| l.state.snapshots.get(id))
            .map(|s| (s.added_ns, s.lock_until_ns))
    };
    // Anomalies the vault logged about each live snapshot (log kind 9).
    let vault_flags = |id: &holdfast_core::ObjectId| -> Vec<(u8, u64)> {
        repo.log
            .as_ref()
            .and_then(|l| l.state.snapshots.get(id))
            .map(|s| s.flags.clone())
            .unwrap_or_default()
    };
    let signal = |c: u8| holdfast_core::format::Signal(c).name();
    // The time that orders snapshots: the vault's when there is a log.
    let when = |s: &holdfast_repo::snapshots::SnapshotInfo| {
        lock_of(&s.id).map(|(t, _)| t).unwrap_or(s.time_ns)
    };
    if let Some(n) = a.latest {
        let mut by_client: std::collections::HashMap<&str, Vec<(i64, holdfast_core::ObjectId)>> =
            std::collections::HashMap::new();
        for s in &snaps {
            by_client
                .entry(s.client.as_str())
                .or_default()
                .push((when(s), s.id));
        }
        let keep: std::collections::HashSet<holdfast_core::ObjectId> = by_client
            .into_values()
            .flat_map(|mut v| {
                v.sort_unstable_by(|x, y| y.cmp(x));
                v.truncate(n);
                v.into_iter().map(|(_, id)| id)
            })
            .collect();
        snaps.retain(|s| keep.contains(&s.id));
    }
    if a.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|s| {
                let mut o = serde_json::json!({
                    "id": s.id.to_hex(),
                    // The key every other --json output names a snapshot by.
                    "snapshot": s.id.to_hex(),
                    "time": util::time(s.time_ns),
                    "time_ns": s.time_ns,
                    "client": s.client,
                    "parent": s.parent.map(|p| p.to_hex()),
                    "packs": s.packs,
                    // The client's findings at backup time, then the
                    // vault's ([] when none); a snapshot from before
                    // detection was never checked by its client.
                    "anomalies": s.findings.iter().flatten().map(|f| serde_json::json!({
                        "signal": f.signal.name(), "count": f.count, "detail": f.detail, "by": "client",
                    })).chain(vault_flags(&s.id).into_iter().map(|(c, n)| serde_json::json!({
                        "signal": signal(c), "count": n, "detail": "flagged by the vault", "by": "vault",
                    }))).collect::<Vec<_>>(),
                    // True only when the client compared with its previous
                    // snapshot: not for a first backup, a lost cache or
                    // --no-detect (record version 3 says which); a version
                    // 2 record says so only by a finding.
                    "checked_for_anomalies": match &s.judgement {
                        Some(j) => j.checked == holdfast_core::format::Checked::Compared,
                        None => s.findings.as_ref().is_some_and(|f| !f.is_empty()),
                    },
                    "checked": s.judgement.as_ref().map(|j| super::backup::checked_name(j.checked)),
                    "thresholds": s.judgement.as_ref().map(|j| j.thresholds.iter()
                        .map(|(c, v)| (signal(*c).to_string(), serde_json::Value::from(*v)))
                        .collect::<serde_json::Map<_, _>>()),
                });
                // The restore key epoch its session was sealed to, as the
                // (signed) record names it: null before record version 4,
                // or when this reader does not know the key.
                o["restore_epoch"] = s
                    .restore_epoch
                    .and_then(|(_, i)| i)
                    .map_or(serde_json::Value::Null, |i| i.into());
                o["restore_epoch_key"] = s
                    .restore_epoch
                    .map_or(serde_json::Value::Null, |(k, _)| {
                        holdfast_core::id::hex(&k).into()
                    });
                if let Some((t, l)) = lock_of(&s.id) {
                    o["vault_time"] = util::time(t).into();
                    o["vault_time_ns"] = t.into();
                    o["locked_until"] = util::time(l).into();
                    o["locked_until_ns"] = l.into();
                }

                if let Some(b) = &s.body {
                    o["hostname"] = b.hostname.clone().into();
                    o["paths"] = b
                        .paths
                        .iter()
                        .map(|p| util::lossy(p))
                        .collect::<Vec<_>>()
                        .into();
                    o["files"] = b.files.into();
                    o["dirs"] = b.dirs.into();
                    o["bytes"] = b.bytes.into();
                    o["unreadable"] = b.unreadable.len().into();
                    o["tags"] = b.tags.clone().into();
                }
                o
            })
            .collect();
        util::json(&serde_json::Value::Array(v));
    } else {
        let locked = snaps.iter().any(|s| lock_of(&s.id).is_some());
        let bodies = snaps.iter().any(|s| s.body.is_some());
        let mut rows: Vec<(Vec<String>, String)> = Vec::with_capacity(snaps.len());
        for s in &snaps {
            let mut row = vec![
                s.id.to_hex()[..16].to_string(),
                util::time(when(s)),
                s.client.clone(),
            ];
            if locked {
                row.push(
                    lock_of(&s.id)
                        .map(|(_, l)| util::time(l))
                        .unwrap_or_default(),
                );
            }
            if bodies {
                match &s.body {
                    Some(b) => row.extend([
                        b.hostname.clone(),
                        b.tags.join(","),
                        b.files.to_string(),
                        util::bytes(b.bytes),
                        b.paths
                            .iter()
                            .map(|p| util::lossy(p))
                            .collect::<Vec<_>>()
                            .join(" "),
                    ]),
                    None => row.extend([
                        "?".into(),
                        String::new(),
                        String::new(),
                        String::new(),
                        String::new(),
                    ]),
                }
            }
            let all: Vec<String> = s
                .findings
                .iter()
                .flatten()
                .map(|f| format!("{} ({})", f.signal.name(), f.count))
                .chain(
                    vault_flags(&s.id)
                        .into_iter()
                        .map(|(c, n)| format!("vault: {} ({n})", signal(c))),
                )
                .collect();
            let flags = if all.is_empty() {
                String::new()
            } else {
                format!("ANOMALY: {}", all.join(", "))
            };
            let mut flags = flags;
            if let Some(j) = &s.judgement {
                let mut notes = Vec::new();
                if j.checked == holdfast_core::format::Checked::Off {
                    notes.push("not checked (--no-detect)".to_string());
                }
                let raised: Vec<String> = j
                    .thresholds
                    .iter()
                    .filter(|(c, v)| holdfast_core::detect::client_default(*c) != Some(*v))
                    .map(|(c, v)| format!("{} {v}", signal(*c)))
                    .collect();
                if !raised.is_empty() {
                    notes.push(format!("judged with thresholds {}", raised.join(", ")));
                }
                for n in notes {
                    if !flags.is_empty() {
                        flags.push_str("; ");
                    }
                    flags.push_str(&n);
                }
            }
            rows.push((row, flags));
        }
        let mut header = vec!["ID", "TIME", "CLIENT"];
        if locked {
            header.push("LOCKED UNTIL");
        }
        if bodies {
            header.extend(["HOST", "TAGS", "FILES", "SIZE", "PATHS"]);
        }
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        for (row, _) in &rows {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String], flags: &str| {
            let mut l = String::new();
            for (i, (c, w)) in cells.iter().zip(&width).enumerate() {
                if i > 0 {
                    l.push_str("  ");
                }
                // Numbers to the right, the last column unpadded.
                if bodies && (i + 3 == cells.len() || i + 2 == cells.len()) {
                    l.push_str(&format!("{c:>w$}"));
                } else if i + 1 == cells.len() {
                    l.push_str(c);
                } else {
                    l.push_str(&format!("{c:<w$}"));
                }
            }
            if !flags.is_empty() {
                l.push_str("  ");
                l.push_str(flags);
            }
            l.trim_end().to_string()
        };
        if !rows.is_empty() {
            let h: Vec<String> = header.iter().map(|h| h.to_string()).collect();
            util::out(line(&h, ""));
        }
        for (row, flags) in &rows {
            util::out(line(row, flags));
        }
        util::out(format!(
            "{} snapshot{}",
            rows.len(),
            if rows.len() == 1 { "" } else { "s" }
        ));
    }
    for e in &errors {
        eprintln!("holdfast: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(util::EXIT_DAMAGE)
    })
}
