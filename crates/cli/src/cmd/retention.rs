//! `holdfast retention`: what the retention policy keeps and when each
//! snapshot's lock ends. Retention *is* forget+prune here: nobody forgets a
//! snapshot by hand; once its lock has passed the vault reclaims it (and
//! the packs no live snapshot lists). It changes nothing.
//!
//! `holdfast prune`: the same policy carried out on a plain directory
//! repository that never had a vault, where there is no vault to do it
//! and no lock to respect. Never offered on a vault, a replica, a bundle or
//! S3: there, deletion is the vault's (a passed lock) or a quorum's.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, bail};
use holdfast_core::ObjectId;
use holdfast_core::format::{Retention, Role};
use holdfast_core::logstate::KEEP_LAST;
use holdfast_core::retention::{Candidate, commit_lock, slot_locks};
use holdfast_repo::Repository;
use holdfast_store::{Kind, LocalDir, ObjectStore};

use crate::util;

const NS: i64 = 1_000_000_000;
const DAY_NS: i64 = 86_400 * NS;
/// How long a snapshot flagged as an anomaly, and the last healthy one
/// before it, are held (as the vault holds them: docs/vault.md §6.2).
const ANOMALY_HOLD_NS: i64 = 30 * DAY_NS;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// Any key of the repository
    #[arg(long)]
    pub key: PathBuf,
    /// Accepted for restic users: this command never changes anything
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct PruneArgs {
    /// A plain directory repository that never had a vault
    #[arg(long)]
    pub repo: String,
    /// An admin key of the repository
    #[arg(long)]
    pub key: PathBuf,
    /// Show what would be removed; remove nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print one JSON array of objects (each snapshot and pack removed)
    #[arg(long)]
    pub json: bool,
}

/// One snapshot and what the policy does with it.
struct Row {
    id: ObjectId,
    client: String,
    time_ns: i64,
    lock_ns: i64,
    keep: bool,
    why: String,
    packs: Vec<ObjectId>,
}

fn policy_line(p: &Retention) -> String {
    let tiers: Vec<String> = [
        (p.daily, "day"),
        (p.weekly, "week"),
        (p.monthly, "month"),
        (p.yearly, "year"),
    ]
    .iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, what)| format!("{n} {what}{}", if *n == 1 { "" } else { "s" }))
    .collect();
    let within = if p.keep_within_secs.is_multiple_of(86_400) {
        format!("{} days", p.keep_within_secs / 86_400)
    } else {
        format!("{} s", p.keep_within_secs)
    };
    format!(
        "retention policy: every snapshot for {within}; {}; each client's last {KEEP_LAST} always",
        if tiers.is_empty() {
            "no calendar tiers".to_string()
        } else {
            format!("the last of each of {}", tiers.join(", "))
        }
    )
}

/// What the policy keeps at `now`, newest last. On a repository with a
/// log, its times and locks are the vault's; without one, the clients'.
fn plan(repo: &Repository, now: i64) -> Result<(Vec<Row>, Retention, Vec<holdfast_repo::Error>)> {
    let (snaps, errors) = repo.snapshots()?;
    let policy = repo
        .log
        .as_ref()
        .map(|l| l.state.retention.clone())
        .unwrap_or_else(|| repo.config.retention.clone());
    let sizes: HashMap<String, u64> = repo.backend.list(Kind::Pack)?.into_iter().collect();
    let logged = |id: &ObjectId| repo.log.as_ref().and_then(|l| l.state.snapshots.get(id));
    let mut by_client: HashMap<[u8; 32], Vec<usize>> = HashMap::new();
    for (i, (_, s)) in snaps.iter().enumerate() {
        by_client.entry(s.header.client).or_default().push(i);
    }
    let mut rows: Vec<Option<Row>> = (0..snaps.len()).map(|_| None).collect();
    for idx in by_client.values() {
        let time = |i: usize| repo.order_time(&snaps[i].0, &snaps[i].1);
        let flagged = |i: usize| {
            let (id, s) = &snaps[i];
            s.findings.as_ref().is_some_and(|f| !f.is_empty())
                || logged(id).is_some_and(|l| !l.flags.is_empty())
        };
        let cands: Vec<Candidate<ObjectId>> = idx
            .iter()
            .map(|&i| Candidate {
                id: snaps[i].0,
                time_ns: time(i),
                bytes: snaps[i]
                    .1
                    .header
                    .packs
                    .iter()
                    .map(|p| sizes.get(&p.to_hex()).copied().unwrap_or(0))
                    .sum(),
                flagged: flagged(i),
            })
            .collect();
        let slots: HashMap<ObjectId, i64> = slot_locks(&policy, &cands, now).into_iter().collect();
        let mut newest: Vec<(i64, ObjectId)> = cands.iter().map(|c| (c.time_ns, c.id)).collect();
        newest.sort_unstable_by(|a, b| b.cmp(a));
        let last: HashSet<ObjectId> = newest.iter().take(KEEP_LAST).map(|(_, id)| *id).collect();
        // The last healthy snapshot before each recent anomaly is held
        // (a vault logs its own hold: its lock already says it).
        let mut held: HashMap<ObjectId, i64> = HashMap::new();
        for c in cands.iter().filter(|c| c.flagged && repo.log.is_none()) {
            // The suspect itself is kept as evidence as long.
            let e = held.entry(c.id).or_insert(i64::MIN);
            *e = (*e).max(c.time_ns.saturating_add(ANOMALY_HOLD_NS));
            if let Some(h) = cands
                .iter()
                .filter(|h| !h.flagged && (h.time_ns, h.id) < (c.time_ns, c.id))
                .max_by_key(|h| (h.time_ns, h.id))
            {
                let until = c.time_ns.saturating_add(ANOMALY_HOLD_NS);
                let e = held.entry(h.id).or_insert(until);
                *e = (*e).max(until);
            }
        }
        for (&i, c) in idx.iter().zip(&cands) {
            let (id, s) = &snaps[i];
            let committed = logged(id)
                .map(|l| l.lock_until_ns)
                .unwrap_or_else(|| commit_lock(&policy, c.time_ns));
            let slot = slots.get(id).copied().unwrap_or(i64::MIN);
            let hold = held.get(id).copied().unwrap_or(i64::MIN);
            let lock = committed.max(slot).max(hold);
            let within = c
                .time_ns
                .saturating_add((policy.keep_within_secs as i64).saturating_mul(NS));
            let (keep, why) = if lock > now {
                let why = if lock == slot {
                    "the keeper of a closed day, week, month or year"
                } else if lock == hold && c.flagged {
                    "flagged as an anomaly: kept 30 days as evidence"
                } else if lock == hold {
                    "the last healthy snapshot before an anomaly: held 30 days"
                } else if lock == within {
                    "within the keep-within time"
                } else if repo.log.is_some() && lock > commit_lock(&policy, c.time_ns) {
                    "held by the vault (a lock extended or an anomaly)"
                } else {
                    "its day (or week…) has not closed: it may become the keeper"
                };
                (true, why)
            } else if last.contains(id) {
                (true, "one of its client's last snapshots")
            } else {
                (false, "lock passed: reclaimable")
            };
            rows[i] = Some(Row {
                id: *id,
                client: repo.member_name(&s.header.client),
                time_ns: c.time_ns,
                lock_ns: lock,
                keep,
                why: why.to_string(),
                packs: s.header.packs.clone(),
            });
        }
    }
    Ok((rows.into_iter().flatten().collect(), policy, errors))
}

fn row_json(r: &Row) -> serde_json::Value {
    serde_json::json!({
        "id": r.id.to_hex(),
        "snapshot": r.id.to_hex(),
        "client": r.client,
        "time": util::time(r.time_ns),
        "time_ns": r.time_ns,
        "locked_until": util::time(r.lock_ns),
        "locked_until_ns": r.lock_ns,
        "keep": r.keep,
        "why": r.why,
    })
}

fn print_table(rows: &[Row]) {
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.id.to_hex()[..16].to_string(),
                util::time(r.time_ns),
                r.client.clone(),
                util::time(r.lock_ns),
                format!("{} ({})", if r.keep { "keep" } else { "remove" }, r.why),
            ]
        })
        .collect();
    let header = ["ID", "TIME", "CLIENT", "LOCKED UNTIL", "POLICY"];
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for c in &cells {
        for (w, c) in w.iter_mut().zip(c) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |c: &[String]| {
        c.iter()
            .zip(&w)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    if !cells.is_empty() {
        util::out(line(&header.map(String::from)));
    }
    for c in &cells {
        util::out(line(c));
    }
}

fn report_errors(errors: &[holdfast_repo::Error]) -> ExitCode {
    for e in errors {
        eprintln!("holdfast: {e}");
    }
    if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(util::EXIT_DAMAGE)
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, _key) = util::open(&a.repo, &a.key)?;
    let now = holdfast_repo::now_ns();
    let (rows, policy, errors) = plan(&repo, now)?;
    if a.json {
        util::json(&serde_json::Value::Array(
            rows.iter().map(row_json).collect(),
        ));
        return Ok(report_errors(&errors));
    }
    util::out(policy_line(&policy));
    if repo.log.is_some() {
        util::out(
            "retention is forget+prune: the vault reclaims a snapshot once its lock has passed \
             (times and locks are the vault's); a lock is never shortened",
        );
    } else {
        util::out(
            "no vault: times are the clients' clocks; `holdfast prune` removes what is marked \
             remove (a plain directory only)",
        );
    }
    print_table(&rows);
    let gone = rows.iter().filter(|r| !r.keep).count();
    util::out(format!(
        "{} snapshots: {} kept, {} reclaimable now",
        rows.len(),
        rows.len() - gone,
        gone
    ));
    Ok(report_errors(&errors))
}

/// A plain directory repository that never had a vault, or why not.
fn plain_directory(repo: &str) -> Result<()> {
    if repo.contains("://") || repo.starts_with("bundle:") {
        bail!(
            "{repo}: prune is only for a plain directory repository; a vault reclaims by itself \
             once locks pass, and early deletion is a quorum proposal (`holdfast propose`)"
        );
    }
    if Path::new(repo).join("vault").exists() {
        bail!(
            "{repo}: this directory has (or had) a vault, or is a replica: its snapshots are \
             under retention locks, and only the vault reclaims them"
        );
    }
    Ok(())
}

pub fn prune(a: PruneArgs) -> Result<ExitCode> {
    plain_directory(&a.repo)?;
    // No backup may run while packs are removed: one could be reusing
    // data from a pack only the removed snapshots list.
    let _lock = if a.dry_run {
        None
    } else {
        util::dir_lock(&a.repo, true)?
    };
    let (repo, key) = util::open(&a.repo, &a.key)?;
    if key.role != Role::Admin {
        bail!(
            "{}: prune needs an admin key (this is a {} key)",
            a.key.display(),
            key.role.name()
        );
    }
    if repo.log.is_some() {
        bail!(
            "{}: this repository has a vault log: prune is refused",
            a.repo
        );
    }
    let now = holdfast_repo::now_ns();
    let (rows, _, errors) = plan(&repo, now)?;
    if !errors.is_empty() {
        // A snapshot that cannot be read may list packs: removing any pack
        // could take its data.
        let code = report_errors(&errors);
        eprintln!(
            "holdfast: {} snapshot(s) could not be read: nothing removed",
            errors.len()
        );
        return Ok(code);
    }
    let live: HashSet<ObjectId> = rows
        .iter()
        .filter(|r| r.keep)
        .flat_map(|r| r.packs.iter().copied())
        .collect();
    let store = LocalDir::open(&a.repo)?;
    // A pack younger than the grace period may belong to a backup still
    // running (packs are written before the snapshot that lists them).
    let grace = (repo.config.grace_secs as i64).saturating_mul(NS);
    let mut packs: Vec<(ObjectId, u64)> = Vec::new();
    for (name, size) in repo.backend.list(Kind::Pack)? {
        let Ok(id) = ObjectId::from_hex(&name) else {
            continue;
        };
        if live.contains(&id) {
            continue;
        }
        if store.stored_at_ns(Kind::Pack, &name)? > now.saturating_sub(grace) {
            continue;
        }
        packs.push((id, size));
    }
    let remove: Vec<&Row> = rows.iter().filter(|r| !r.keep).collect();
    let bytes: u64 = packs.iter().map(|(_, s)| s).sum();
    if !a.dry_run {
        // Snapshots first: a crash between leaves packs no snapshot lists,
        // which the next prune removes; never a snapshot without its packs.
        for r in &remove {
            store.delete(Kind::Snapshot, &r.id.to_hex())?;
        }
        for (p, _) in &packs {
            store.delete(Kind::Pack, &p.to_hex())?;
        }
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    if a.json {
        let mut v: Vec<serde_json::Value> = remove
            .iter()
            .map(|r| {
                let mut j = row_json(r);
                j["kind"] = "snapshot".into();
                j
            })
            .collect();
        v.extend(
            packs
                .iter()
                .map(|(p, s)| serde_json::json!({"kind": "pack", "id": p.to_hex(), "bytes": s})),
        );
        util::json(&serde_json::Value::Array(v));
    } else {
        for r in &remove {
            util::out(format!(
                "{verb} snapshot {}  {}  {}  (lock passed {})",
                &r.id.to_hex()[..16],
                util::time(r.time_ns),
                r.client,
                util::time(r.lock_ns)
            ));
        }
        util::out(format!(
            "{verb} {} snapshot(s) and {} pack(s), {}; kept {} snapshot(s)",
            remove.len(),
            packs.len(),
            util::bytes(bytes),
            rows.len() - remove.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
