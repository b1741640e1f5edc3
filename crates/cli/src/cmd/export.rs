use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// The vault (with the replica or restore key), or a vault or replica directory
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub key: PathBuf,
    /// The new bundle directory (for removable media or tape)
    #[arg(long)]
    pub to: PathBuf,
    /// Earlier bundles: leave out what they already hold (repeatable)
    #[arg(long)]
    pub since: Vec<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, _) = util::open(&a.repo, &a.key)?;
    // The bundle carries the whole log: read into memory here only (every
    // other command streams the client's copy).
    let log = match &repo.log {
        Some(l) => Some((l.entries.to_vec()?, &l.checkpoint)),
        None => None,
    };
    let log_ref = log.as_ref().map(|(e, cp)| (e.as_slice(), *cp));
    let r = util::with_progress("export", |_| {
        holdfast_repo::bundle::export(&repo, log_ref, &a.to, &a.since)
    })?;
    util::out(format!(
        "bundle {} written: {} snapshots, {} packs, {} ({} objects already in earlier bundles), log of {} entries",
        a.to.display(),
        r.snapshots,
        r.packs,
        util::bytes(r.bytes),
        r.skipped,
        r.log_size
    ));
    Ok(ExitCode::SUCCESS)
}
