use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use holdfast_core::format::Role;
use holdfast_repo::replica::pull_with_progress;
use holdfast_store::VaultBackend;

use crate::util;

#[derive(clap::Subcommand)]
pub enum ReplicaCommand {
    /// Copy new snapshots and log entries from the vault into a local replica directory
    Pull(PullArgs),
}

#[derive(clap::Args)]
pub struct PullArgs {
    /// The vault, https://HOST:PORT
    #[arg(long)]
    pub from: String,
    /// The replica key (KEYDIR/replica.key)
    #[arg(long)]
    pub key: PathBuf,
    /// The replica directory (a repository; created on the first pull)
    #[arg(long)]
    pub into: PathBuf,
    /// Keep running, pulling every this many seconds
    #[arg(long)]
    pub every: Option<u64>,
    /// Print each pull's report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: ReplicaCommand) -> Result<ExitCode> {
    let ReplicaCommand::Pull(a) = c;
    if !a.from.starts_with("https://") {
        bail!(
            "{}: a replica pulls from a vault (https://HOST:PORT)",
            a.from
        );
    }
    let key = util::load_key(&a.key)?;
    let identity = match (key.role, key.identity()) {
        (Role::Replica, Some(i)) => i.clone(),
        _ => bail!("{}: not a replica key", a.key.display()),
    };
    // The replica's own verified checkpoint lives beside its data.
    let state = a.into.with_extension("replica-state");
    loop {
        let started = std::time::Instant::now();
        let r = VaultBackend::connect(&a.from, identity.clone(), key.config_id, &state)
            .map_err(holdfast_repo::Error::from)
            .and_then(|v| {
                util::with_progress("replica pull", |p| {
                    pull_with_progress(&v, &a.into, key.config_id, p)
                })
            });
        match r {
            Ok(r) => {
                let lag_s = (holdfast_repo::now_ns() - r.vault_time_ns).max(0) as f64 / 1e9;
                if a.json {
                    util::json(&serde_json::json!([{
                        "entries_new": r.entries_new, "log_size": r.log_size,
                        "snapshots_copied": r.snapshots_copied, "packs_copied": r.packs_copied,
                        "bytes_copied": r.bytes_copied, "deletions_applied": r.deletions_applied,
                        "reclaims_kept": r.reclaims_kept, "missed": r.missed,
                        "deletions_pending": r.deletions_pending, "problems": r.problems,
                        "seconds": started.elapsed().as_secs_f64(),
                        "lag_seconds": lag_s,
                    }]));
                } else {
                    util::out(format!(
                        "pulled {} log entries (log now {}): {} snapshots, {} packs, {} copied; {} deletions applied, {} reclaims kept; in sync with the vault's state of {:.0} s ago",
                        r.entries_new,
                        r.log_size,
                        r.snapshots_copied,
                        r.packs_copied,
                        util::bytes(r.bytes_copied),
                        r.deletions_applied,
                        r.reclaims_kept,
                        lag_s
                    ));
                }
                if !r.problems.is_empty() {
                    util::print_problems(&r.problems);
                    if a.every.is_none() {
                        return Ok(ExitCode::from(util::EXIT_DAMAGE));
                    }
                }
            }
            Err(e) => {
                let damage = e.is_damage();
                if damage || a.every.is_none() {
                    return Err(e.into());
                }
                eprintln!("holdfast: pull failed, will retry: {e}");
            }
        }
        match a.every {
            Some(s) => std::thread::sleep(Duration::from_secs(s.max(1))),
            None => return Ok(ExitCode::SUCCESS),
        }
    }
}
