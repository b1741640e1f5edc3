use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

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
    let (repo, _) = util::open(&a.repo, &a.key)?;
    let r = holdfast_repo::audit::audit(&repo)?;
    if a.json {
        util::json(&serde_json::json!([{
            "entries": r.entries, "snapshots_logged": r.snapshots_logged, "live": r.live,
            "deletions": r.deletions, "reclaimed": r.reclaimed,
            "packs_checked": r.packs_checked, "revoked": r.revoked,
            "clock_held": r.clock_held.map(|(entry, gap_secs)| serde_json::json!({
                "entry": entry, "gap_secs": gap_secs,
            })),
            "problems": r.problems,
        }]));
    } else {
        util::print_problems(&r.problems);
        if !r.revoked.is_empty() {
            util::out(format!("revoked or removed: {}", r.revoked.join(", ")));
        }
        if let Some((entry, gap)) = r.clock_held {
            util::out(format!(
                "CLOCK HELD since log entry {entry} (the vault started {} h past its log): no \
                 reclaim or deletion until an admin quorum acknowledges the clock \
                 (`holdfast propose ack-clock`)",
                gap / 3600
            ));
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
    Ok(util::problems_exit("audit", &r.problems))
}
