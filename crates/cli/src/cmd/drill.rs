//! `holdfast drill`: a restore drill, measured and recorded.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use holdfast_repo::drill::{DrillOptions, drill};

use crate::cmd::mail::Pick;
use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: Pick,
    /// An id, a prefix, `latest` (default), or a time
    #[arg(default_value = "latest")]
    pub snapshot: String,
    /// Restore N mailboxes, spread over the snapshot
    #[arg(long, value_name = "N", conflicts_with = "full", default_value_t = 10)]
    pub sample: usize,
    /// Restore everything
    #[arg(long)]
    pub full: bool,
    /// Scratch directory (new or empty; removed afterwards unless --keep)
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Keep the scratch directory
    #[arg(long)]
    pub keep: bool,
    /// Where runs are recorded (one JSON object a line); default
    /// drill-history.jsonl in the cache directory
    #[arg(long)]
    pub history: Option<PathBuf>,
    /// Mailboxes restored at once
    #[arg(long, default_value_t = 8)]
    pub parallel: usize,
    /// Print this run and the history as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("drill")?;
    let id = a.pick.resolve(&repo, &key, &a.snapshot, &[])?;
    let (scratch, made) = match &a.scratch {
        Some(s) => (s.clone(), false),
        None => {
            let r: [u8; 6] = holdfast_core::crypto::random_bytes()
                .map_err(|e| anyhow::anyhow!("random: {e}"))?;
            (
                std::env::temp_dir().join(format!("holdfast-drill-{}", holdfast_core::id::hex(&r))),
                true,
            )
        }
    };
    let opts = DrillOptions {
        scratch: scratch.clone(),
        sample: (!a.full).then_some(a.sample),
        parallel: a.parallel,
    };
    let r = drill(&repo, &key, &id, &opts);
    if !a.keep && (made || r.is_ok()) {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    let r = r?;
    let run = serde_json::json!({
        "time": util::time(holdfast_repo::now_ns()),
        "repo": a.repo, "snapshot": r.snapshot, "kind": r.kind, "full": r.full,
        "mailboxes": r.mailboxes, "mailboxes_total": r.mailboxes_total,
        "files": r.files, "bytes": r.bytes, "seconds": r.seconds,
        "mb_per_s": r.mb_per_s(), "files_per_s": r.files_per_s(),
        "first_inbox_seconds": r.first_inbox_s, "all_inboxes_seconds": r.all_inboxes_s,
        "snapshot_bytes": r.snapshot_bytes, "snapshot_files": r.snapshot_files,
        "projected_full_seconds": r.projected_full_s,
        "verified": r.verified, "verify_seconds": r.verify_seconds,
        "bytes_read": r.bytes_read,
        "failures": r.failures, "errors": r.errors,
        "ok": r.failures.is_empty() && r.errors.is_empty(),
    });
    let history = a
        .history
        .clone()
        .unwrap_or_else(|| util::cache_dir(None).join("drill-history.jsonl"));
    append_line(&history, &run.to_string())
        .with_context(|| format!("recording the drill in {}", history.display()))?;
    if a.json {
        let past: Vec<serde_json::Value> = std::fs::read_to_string(&history)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        // "snapshot" at the top as in every --json output (also in "run").
        util::json(&serde_json::json!({
            "snapshot": r.snapshot, "ok": run["ok"], "run": run, "history": past,
        }));
    } else {
        util::out(format!(
            "drill of snapshot {} ({}): {} of {} mailboxes, {} files, {} in {:.2} s: {:.1} MB/s, {:.0} files/s; first INBOX complete after {}; {} verified in {:.2} s; whole snapshot ({}) projected at {}",
            &r.snapshot[..12],
            if r.full { "full" } else { "sample" },
            r.mailboxes,
            r.mailboxes_total,
            r.files,
            util::bytes(r.bytes),
            r.seconds,
            r.mb_per_s(),
            r.files_per_s(),
            r.first_inbox_s
                .map(|s| format!("{s:.2} s"))
                .unwrap_or_else(|| "-".into()),
            r.verified,
            r.verify_seconds,
            util::bytes(r.snapshot_bytes),
            r.projected_full_s
                .map(|s| format!("{s:.1} s"))
                .unwrap_or_else(|| "-".into()),
        ));
        util::out(format!("recorded in {}", history.display()));
    }
    for f in &r.failures {
        eprintln!("damaged: {f}");
    }
    for e in &r.errors {
        eprintln!("failed: {e}");
    }
    if !r.failures.is_empty() {
        eprintln!(
            "holdfast: DRILL FAILED: {} item(s) did not restore or did not verify (damage or tampering)",
            r.failures.len()
        );
        return Ok(ExitCode::from(util::EXIT_DAMAGE));
    }
    if !r.errors.is_empty() {
        eprintln!(
            "holdfast: drill incomplete: {} item(s) could not be written here",
            r.errors.len()
        );
        return Ok(ExitCode::from(util::EXIT_PARTIAL));
    }
    Ok(ExitCode::SUCCESS)
}

/// Appends one line to the history, fsynced (the directory too when the
/// file is new).
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let new = !path.exists();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_all()?;
    if new && let Some(d) = path.parent() {
        std::fs::File::open(d)?.sync_all()?;
    }
    Ok(())
}
