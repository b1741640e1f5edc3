use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_repo::restore::{RestoreOptions, restore};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key (restore.key)
    #[arg(long)]
    pub key: PathBuf,
    /// Choose `latest` (or a prefix) among this client's snapshots only;
    /// `latest` needs it when several clients have snapshots
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    pub snapshot: String,
    /// A new or empty directory to restore into
    pub target: PathBuf,
    /// Restore only this path inside the snapshot (as `ls` shows it)
    #[arg(long)]
    pub path: Option<String>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("restore")?;
    let (id, _) = repo.resolve_for(&a.snapshot, a.client.as_deref())?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        subpath: a.path,
    };
    let r = util::with_progress("restore", |p| restore(&repo, &key, &id, &opts, p))?;
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
