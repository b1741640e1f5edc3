use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
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
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    let (snaps, errors) = list(&repo, &key)?;
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
    if a.json {
        let v: Vec<_> = snaps
            .iter()
            .map(|s| {
                let mut o = serde_json::json!({
                    "id": s.id.to_hex(),
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
                    "checked_for_anomalies": s.findings.is_some(),
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
                }
                o
            })
            .collect();
        util::json(&serde_json::Value::Array(v));
    } else {
        for s in &snaps {
            let detail = match &s.body {
                Some(b) => format!(
                    "  {}  {} files  {}  {}",
                    b.hostname,
                    b.files,
                    util::bytes(b.bytes),
                    b.paths
                        .iter()
                        .map(|p| util::lossy(p))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
                None => String::new(),
            };
            // Through a vault: its time, and how long the snapshot is locked.
            let (time, lock) = match lock_of(&s.id) {
                Some((t, l)) => (t, format!("  locked until {}", util::time(l))),
                None => (s.time_ns, String::new()),
            };
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
                format!("  ANOMALY: {}", all.join(", "))
            };
            util::out(format!(
                "{}  {}  {}{}{}{}",
                &s.id.to_hex()[..16],
                util::time(time),
                s.client,
                lock,
                detail,
                flags
            ));
        }
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
