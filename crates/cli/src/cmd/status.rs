//! `holdfast status`: where this key's history stands. The vault's log as
//! this key verifies it, and, for each witness (a replica directory, a
//! bundle, or a held checkpoint file such as an auditor's), whether the
//! witness saw the same history and which snapshots it does not hold yet.
//! A vault that shows different histories to different parties (a split
//! view) is caught here: exit 4.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use holdfast_core::merkle::Checkpoint;
use holdfast_repo::logview::compare_witness;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// A vault (https://…), a replica or a bundle directory
    #[arg(long)]
    pub repo: String,
    /// Any key of the repository (a client key reports its own snapshots)
    #[arg(long)]
    pub key: PathBuf,
    /// A witness to compare with: a replica or bundle directory (its
    /// `vault/checkpoint`) or a checkpoint file (repeatable)
    #[arg(long, value_name = "DIR|FILE")]
    pub witness: Vec<PathBuf>,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

fn read_witness(p: &std::path::Path) -> Result<Checkpoint> {
    let file = if p.is_dir() {
        p.join("vault/checkpoint")
    } else {
        p.to_path_buf()
    };
    let b = holdfast_store::read_regular(&file, 4096)
        .map_err(|e| anyhow!("{}: {e}", file.display()))?;
    Checkpoint::decode(&b).map_err(|e| anyhow!("{}: not a checkpoint: {e}", file.display()))
}

pub fn run(a: Args) -> Result<ExitCode> {
    let witnesses: Vec<(PathBuf, Checkpoint)> = a
        .witness
        .iter()
        .map(|p| read_witness(p).map(|c| (p.clone(), c)))
        .collect::<Result<_>>()?;
    let (repo, key) = util::open(&a.repo, &a.key)?;
    let view = repo.log.as_ref().ok_or_else(|| {
        anyhow!(
            "{}: no vault log here (a plain directory has no history to compare)",
            a.repo
        )
    })?;
    let client = (key.role == holdfast_core::format::Role::Client)
        .then(|| key.identity().map(|i| i.public()))
        .flatten();
    let mine = view
        .state
        .snapshots
        .values()
        .filter(|s| client.is_none_or(|c| s.client == c))
        .count();
    // Live snapshots the vault flagged as anomalies (log kind 9).
    let flagged = view
        .state
        .snapshots
        .values()
        .filter(|s| client.is_none_or(|c| s.client == c) && !s.flags.is_empty())
        .count();
    // Problems of the log itself were printed when it was read (and set
    // the exit status); these are the witnesses'.
    let mut problems: Vec<String> = Vec::new();
    let mut rows = Vec::new();
    for (p, w) in &witnesses {
        let r = compare_witness(&repo, view, w, client.as_ref());
        if let Some(x) = &r.problem {
            problems.push(format!("witness {}: {x}", p.display()));
        }
        rows.push((p, r));
    }
    if a.json {
        let ws: Vec<_> = rows
            .iter()
            .map(|(p, r)| {
                serde_json::json!({
                    "witness": p.display().to_string(),
                    "log_size": r.size,
                    "time": util::time(r.time_ns),
                    "consistent": r.consistent,
                    "snapshots_not_covered": r.not_covered.iter().map(|i| i.to_hex()).collect::<Vec<_>>(),
                })
            })
            .collect();
        util::json(&serde_json::json!([{
            "log_size": view.checkpoint.size,
            "vault_time": util::time(view.checkpoint.time_ns),
            "live_snapshots": mine,
            "flagged_snapshots": flagged,
            "witnesses": ws,
            "problems": view.problems.iter().chain(&problems).collect::<Vec<_>>(),
        }]));
    } else {
        util::out(format!(
            "log of {} entries, signed {}; {} live snapshot(s){}{}",
            view.checkpoint.size,
            util::time(view.checkpoint.time_ns),
            mine,
            if client.is_some() {
                " of this client"
            } else {
                ""
            },
            if flagged > 0 {
                format!("; {flagged} flagged as ANOMALY by the vault (see holdfast snapshots)")
            } else {
                String::new()
            }
        ));
        for (p, r) in &rows {
            util::out(format!(
                "witness {}: log of {} entries, signed {}: {}; {} snapshot(s) not on it yet",
                p.display(),
                r.size,
                util::time(r.time_ns),
                if r.consistent {
                    "same history"
                } else {
                    "DIFFERENT HISTORY"
                },
                r.not_covered.len()
            ));
        }
        util::print_problems(&problems);
    }
    Ok(util::problems_exit("status", &problems))
}
