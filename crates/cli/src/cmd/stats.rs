//! `holdfast stats`: what the repository holds, per client: snapshots, the
//! newest, stored bytes (the packs its snapshots list: deduplication is per
//! client), and with the restore key the logical size and the dedup ratio.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_core::ObjectId;
use holdfast_store::Kind;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// Any key that may list packs (restore, replica, admin, auditor; a
    /// client key sees its own); the restore key adds logical sizes
    #[arg(long)]
    pub key: PathBuf,
    /// Print one JSON object
    #[arg(long)]
    pub json: bool,
}

#[derive(Default)]
struct Client {
    snapshots: u64,
    newest_ns: Option<i64>,
    /// The newest snapshot's id.
    newest_id: Option<ObjectId>,
    packs: HashSet<ObjectId>,
    /// Bytes of the files in its newest snapshot (restore key only).
    newest_bytes: Option<u64>,
    /// Bytes of the files over all its snapshots (restore key only).
    logical: Option<u64>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    let sizes: HashMap<ObjectId, u64> = repo
        .backend
        .list(Kind::Pack)?
        .into_iter()
        .filter_map(|(n, s)| ObjectId::from_hex(&n).ok().map(|id| (id, s)))
        .collect();
    let (snaps, bad) = repo.snapshots()?;
    let secret = key.repo_secret();
    let mut clients: BTreeMap<String, Client> = BTreeMap::new();
    let mut problems = bad.iter().map(|e| e.to_string()).collect::<Vec<_>>();
    for (id, s) in &snaps {
        let c = clients
            .entry(repo.member_name(&s.header.client))
            .or_default();
        c.snapshots += 1;
        let t = repo.order_time(id, s);
        let newest = c.newest_ns.is_none_or(|n| t >= n);
        c.newest_ns = c.newest_ns.max(Some(t));
        if newest {
            c.newest_id = Some(*id);
        }
        c.packs.extend(s.header.packs.iter().copied());
        if let Some(secret) = secret {
            match s.open_body(secret) {
                Ok(b) => {
                    c.logical = Some(c.logical.unwrap_or(0) + b.bytes);
                    if newest {
                        c.newest_bytes = Some(b.bytes);
                    }
                }
                Err(e) => problems.push(format!("snapshot {}: {e}", id.short())),
            }
        }
    }
    let stored_of = |packs: &HashSet<ObjectId>| -> u64 {
        packs
            .iter()
            .map(|p| sizes.get(p).copied().unwrap_or(0))
            .sum()
    };
    let total_stored: u64 = sizes.values().sum();
    let total_logical: Option<u64> = clients
        .values()
        .map(|c| c.logical)
        .try_fold(0u64, |acc, l| l.map(|l| acc + l));
    let ratio = |logical: Option<u64>, stored: u64| {
        logical
            .filter(|_| stored > 0)
            .map(|l| l as f64 / stored as f64)
    };
    if a.json {
        let per: Vec<_> = clients
            .iter()
            .map(|(name, c)| {
                let stored = stored_of(&c.packs);
                serde_json::json!({
                    "client": name,
                    "snapshots": c.snapshots,
                    "newest": c.newest_ns.map(util::time),
                    // The newest snapshot, by the key every --json uses.
                    "snapshot": c.newest_id.map(|i| i.to_hex()),
                    "newest_bytes": c.newest_bytes,
                    "logical_bytes": c.logical,
                    "stored_bytes": stored,
                    "packs": c.packs.len(),
                    "dedup_ratio": ratio(c.logical, stored),
                })
            })
            .collect();
        util::json(&serde_json::json!({
            "snapshots": snaps.len(),
            "packs": sizes.len(),
            "stored_bytes": total_stored,
            "logical_bytes": total_logical,
            "dedup_ratio": ratio(total_logical, total_stored),
            "clients": per,
            "problems": problems,
        }));
    } else {
        util::out(format!(
            "{} snapshots, {} packs, {} stored{}",
            snaps.len(),
            sizes.len(),
            util::bytes(total_stored),
            match (total_logical, ratio(total_logical, total_stored)) {
                (Some(l), Some(r)) => format!(
                    " for {} of files over all snapshots ({r:.1}x)",
                    util::bytes(l)
                ),
                _ => String::new(),
            }
        ));
        util::out(format!(
            "{:<20} {:>9}  {:<20}  {:>12}  {:>12}  {:>7}",
            "client", "snapshots", "newest", "newest size", "stored", "dedup"
        ));
        for (name, c) in &clients {
            let stored = stored_of(&c.packs);
            util::out(format!(
                "{:<20} {:>9}  {:<20}  {:>12}  {:>12}  {:>7}",
                name,
                c.snapshots,
                c.newest_ns.map(util::time).unwrap_or_else(|| "-".into()),
                c.newest_bytes
                    .map(util::bytes)
                    .unwrap_or_else(|| "-".into()),
                util::bytes(stored),
                ratio(c.logical, stored)
                    .map(|r| format!("{r:.1}x"))
                    .unwrap_or_else(|| "-".into()),
            ));
        }
        if secret.is_none() {
            util::out("(sizes of files and dedup need the restore key)");
        }
        util::print_problems(&problems);
    }
    Ok(util::problems_exit("stats", &problems))
}
