use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_repo::restore::{RestoreOptions, RestoreReport, restore};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key (restore.key)
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: crate::cmd::mail::Pick,
    /// An id, a prefix, `latest`, or a time (2026-11-20T12:00:00Z,
    /// 2026-11-20): the newest at or before it, by the vault's time
    pub snapshot: String,
    /// A new or empty directory to restore into
    pub target: PathBuf,
    /// Restore only this path inside the snapshot, as `ls` shows it or as
    /// it was backed up (/var/mail/u7); repeatable. `latest` and times
    /// then choose among snapshots that hold it.
    #[arg(long)]
    pub path: Vec<String>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("restore")?;
    let id = a.pick.resolve(&repo, &key, &a.snapshot, &a.path)?;
    let r = util::with_progress("restore", |p| restore_paths(&repo, &key, &id, &a, p))?;
    let summary = format!(
        "restored snapshot {} into {}: {} files, {} dirs, {} symlinks, {}",
        id.short(),
        a.target.display(),
        r.files,
        r.dirs,
        r.symlinks,
        util::bytes(r.bytes)
    );
    if r.damaged.is_empty() && r.errors.is_empty() {
        util::out(format!("{summary} (every byte verified)"));
        return Ok(ExitCode::SUCCESS);
    }
    // Something is missing: no claim about the whole restore. What was
    // written was checked; what failed a check was not written as good.
    util::out(format!(
        "{summary}; NOT restored: {} damaged in the repository, {} failed here",
        r.damaged.len(),
        r.errors.len()
    ));
    for e in &r.damaged {
        eprintln!("damaged: {e}");
    }
    for e in &r.errors {
        eprintln!("failed: {e}");
    }
    if !r.damaged.is_empty() {
        eprintln!(
            "holdfast: DAMAGE DETECTED: {} path(s) of snapshot {} could not be restored because the repository is damaged or was tampered with",
            r.damaged.len(),
            id.short()
        );
        return Ok(ExitCode::from(util::EXIT_DAMAGE));
    }
    eprintln!(
        "holdfast: restore incomplete: {} path(s) could not be written (not repository damage)",
        r.errors.len()
    );
    Ok(ExitCode::from(util::EXIT_PARTIAL))
}

/// Restores the whole snapshot, or each `--path` (either form) into the
/// same target.
fn restore_paths(
    repo: &holdfast_repo::Repository,
    key: &holdfast_repo::keys::Key,
    id: &holdfast_core::ObjectId,
    a: &Args,
    p: &holdfast_repo::Progress,
) -> Result<RestoreReport> {
    if a.path.is_empty() {
        let opts = RestoreOptions {
            target: a.target.clone(),
            subpath: None,
        };
        return Ok(restore(repo, key, id, &opts, p)?);
    }
    let (_, secret) = key.require_restore("restore")?;
    let body = repo.open_body(id, &repo.load_snapshot(id)?, secret)?;
    let mut subs: Vec<Vec<String>> = Vec::new();
    for path in &a.path {
        subs.push(holdfast_repo::repo::tree_path(&body, path)?);
    }
    // A path inside another one given is restored with it.
    subs.sort();
    subs.dedup();
    let subs: Vec<Vec<String>> = subs
        .iter()
        .filter(|s| !subs.iter().any(|o| o.len() < s.len() && s.starts_with(o)))
        .cloned()
        .collect();
    // All paths in one pass: one index, batches across paths (many
    // mailboxes restore as fast as one tree of the same size).
    let subs: Vec<String> = subs.iter().map(|s| s.join("/")).collect();
    Ok(holdfast_repo::restore::restore_paths(
        repo, key, id, &a.target, &subs, p,
    )?)
}
