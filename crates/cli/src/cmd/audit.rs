use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use holdfast_core::merkle::Checkpoint;
use holdfast_core::vaultlog::split_log;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// A vault (https://…) or a vault's repository directory
    #[arg(long)]
    pub repo: String,
    /// The auditor key (any key of the repository works)
    #[arg(long)]
    pub key: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, entries, checkpoint) = if a.repo.starts_with("https://") {
        let (vault, repo, _) = util::open_vault(&a.repo, &a.key)?;
        // Consistent with what this auditor saw before, or TAMPERING.
        let cp = vault.sync_checkpoint()?;
        let mut entries = Vec::new();
        while (entries.len() as u64) < cp.size {
            let raw = vault.request(
                "GET",
                &format!("/v1/log/entries?start={}&count=10000", entries.len()),
                &[],
                None,
            )?;
            let (chunk, torn) = split_log(&raw);
            if chunk.is_empty() || torn != 0 {
                bail!("the vault sent a malformed log page");
            }
            entries.extend(chunk.into_iter().map(|e| e.to_vec()));
        }
        entries.truncate(cp.size as usize);
        (repo, entries, cp)
    } else {
        let (repo, _) = util::open(&a.repo, &a.key)?;
        let dir = PathBuf::from(&a.repo).join("vault");
        let raw = std::fs::read(dir.join("log"))
            .map_err(|e| anyhow!("{}: no vault log here ({e})", dir.display()))?;
        let cp = std::fs::read(dir.join("checkpoint"))
            .map_err(|e| anyhow!("{}: no checkpoint ({e})", dir.display()))?;
        let cp = Checkpoint::decode(&cp).map_err(|e| anyhow!("checkpoint: {e}"))?;
        let (entries, _) = split_log(&raw);
        let entries = entries.into_iter().map(|e| e.to_vec()).collect();
        (repo, entries, cp)
    };
    let r = holdfast_repo::audit::audit(&repo, &entries, &checkpoint)?;
    if a.json {
        util::json(&serde_json::json!([{
            "entries": r.entries, "snapshots_logged": r.snapshots_logged, "live": r.live,
            "deletions": r.deletions, "reclaimed": r.reclaimed,
            "packs_checked": r.packs_checked, "problems": r.problems,
        }]));
    } else {
        for p in &r.problems {
            util::out(format!("PROBLEM {p}"));
        }
        util::out(format!(
            "log of {} entries: {} snapshots logged, {} live, {} deleted by quorum, {} reclaimed: {} problem(s)",
            r.entries,
            r.snapshots_logged,
            r.live,
            r.deletions,
            r.reclaimed,
            r.problems.len()
        ));
    }
    if r.problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("holdfast: audit found {} problem(s)", r.problems.len());
        Ok(ExitCode::from(util::EXIT_DAMAGE))
    }
}
