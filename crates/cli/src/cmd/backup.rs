use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_repo::backup::{BackupOptions, backup};

use crate::util;

/// `backup` found an anomaly (SPEC G8); the snapshot is written.
pub const EXIT_ANOMALY: u8 = 5;

#[derive(clap::Args)]
pub struct Args {
    /// Repository
    #[arg(long)]
    pub repo: String,
    /// Client key
    #[arg(long)]
    pub key: PathBuf,
    /// Files and directories to back up; each is stored under its last path component
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Glob of paths to leave out (matches the full path or the file name); repeatable
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Do not cross into other file systems
    #[arg(long)]
    pub one_file_system: bool,
    /// Host name recorded in the snapshot
    #[arg(long)]
    pub host: Option<String>,
    /// Where the local cache of sent files lives (default ~/.cache/holdfast)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Write node-exporter textfile metrics about this run to PATH (e.g.
    /// /var/lib/prometheus/node-exporter/holdfast.prom), atomically; a
    /// failed run never moves the last success time
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let Some(path) = a.metrics_file.clone() else {
        return run_backup(a, &mut None);
    };
    let key = a.key.clone();
    crate::metrics_file::run(path, &key, |stats| run_backup(a, stats))
}

fn run_backup(a: Args, stats: &mut Option<crate::metrics_file::Stats>) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    let opts = BackupOptions {
        paths: a.paths,
        excludes: a.excludes,
        one_file_system: a.one_file_system,
        hostname: a.host.unwrap_or_else(util::hostname),
        cache_dir: util::cache_dir(a.cache_dir),
    };
    let r = util::with_progress("backup", |p| backup(&repo, &key, &opts, p))?;
    *stats = Some((&r).into());
    if a.json {
        util::json(&serde_json::json!([{
            "snapshot": r.snapshot.to_hex(),
            "files": r.files, "dirs": r.dirs, "bytes": r.bytes,
            "files_read": r.files_read, "new_blobs": r.new_blobs,
            "new_bytes": r.new_bytes, "stored_bytes": r.stored_bytes,
            "packs_written": r.packs_written,
            "anomalies": r.findings.iter().map(|f| serde_json::json!({"signal": f.signal.name(), "count": f.count, "detail": f.detail})).collect::<Vec<_>>(),
            "unreadable": r.unreadable.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
        }]));
    } else {
        util::out(format!(
            "snapshot {} saved: {} files, {} dirs, {}; read {} files, {} new in {} blobs, {} stored in {} packs",
            r.snapshot.short(),
            r.files,
            r.dirs,
            util::bytes(r.bytes),
            r.files_read,
            util::bytes(r.new_bytes),
            r.new_blobs,
            util::bytes(r.stored_bytes),
            r.packs_written
        ));
    }
    for f in &r.findings {
        eprintln!("ANOMALY {}: {} ({})", f.signal.name(), f.detail, f.count);
        if let Some((_, ex)) = r.examples.iter().find(|(s, _)| *s == f.signal) {
            for p in ex {
                eprintln!("  e.g. {}", p.display());
            }
        }
    }
    if !r.findings.is_empty() {
        for (p, e) in &r.unreadable {
            eprintln!("unreadable: {}: {e}", p.display());
        }
        eprintln!(
            "holdfast: snapshot {} written and flagged: {} anomaly signal(s); the previous snapshots are untouched",
            r.snapshot.short(),
            r.findings.len()
        );
        return Ok(ExitCode::from(EXIT_ANOMALY));
    }
    if r.unreadable.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (p, e) in &r.unreadable {
        eprintln!("unreadable: {}: {e}", p.display());
    }
    eprintln!(
        "holdfast: snapshot {} written, but {} file(s) could not be read",
        r.snapshot.short(),
        r.unreadable.len()
    );
    Ok(ExitCode::from(util::EXIT_PARTIAL))
}
