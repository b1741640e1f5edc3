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
    let (id, _) = repo.resolve(&a.snapshot)?;
    let opts = RestoreOptions {
        target: a.target.clone(),
        subpath: a.path,
    };
    let r = util::with_progress("restore", |p| restore(&repo, &key, &id, &opts, p))?;
    util::out(format!(
        "restored snapshot {} into {}: {} files, {} dirs, {} symlinks, {} (every byte verified)",
        id.short(),
        a.target.display(),
        r.files,
        r.dirs,
        r.symlinks,
        util::bytes(r.bytes)
    ));
    if r.errors.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for e in &r.errors {
        eprintln!("failed: {e}");
    }
    eprintln!("holdfast: restore incomplete: {} error(s)", r.errors.len());
    Ok(ExitCode::from(util::EXIT_PARTIAL))
}
