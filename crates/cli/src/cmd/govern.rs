//! Governance through the vault: proposals, votes, lock extension.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use holdfast_core::format::{Retention, Role};
use holdfast_core::governance::{Action, Proposal, Vote, VoteKind};
use holdfast_repo::now_ns;

use crate::util;

#[derive(clap::Args)]
pub struct ProposeArgs {
    /// The vault (before or after the subcommand, as with every command)
    #[arg(long, global = true)]
    pub repo: Option<String>,
    /// An admin key
    #[arg(long, global = true)]
    pub key: Option<PathBuf>,
    #[command(subcommand)]
    pub what: What,
}

#[derive(clap::Subcommand)]
pub enum What {
    /// Delete these snapshots before their locks end (legal erasure)
    Delete {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Change the retention policy: what is not given stays as it is now
    Retention {
        #[arg(long)]
        keep_within_days: Option<u64>,
        #[arg(long)]
        keep_daily: Option<u32>,
        #[arg(long)]
        keep_weekly: Option<u32>,
        #[arg(long)]
        keep_monthly: Option<u32>,
        #[arg(long)]
        keep_yearly: Option<u32>,
    },
    /// Remove an identity (admin, client, replica, auditor) by name
    RemoveIdentity { name: String },
    /// Lift the anomaly flags of these snapshots (a false alarm): `latest`
    /// may then choose them, and they take retention slots again
    LiftFlags {
        #[arg(required = true)]
        snapshots: Vec<String>,
    },
    /// Set the threshold of a signal. The vault's: `shrink` (percent of
    /// stored bytes lost, default 50), `burst` (snapshots per hour, 30). The
    /// client's (applied by clients backing up through this vault):
    /// `in_place`, `entropy`, `not_mail` (messages, 1), `renames` (in one
    /// folder, 200), `new_extension` (more than, 20), `deletions` (messages,
    /// 100), `volume` (z-score in tenths, 30). Raising it is limited to 5
    /// points per proposal
    Threshold { signal: String, value: u32 },
    /// Rotate the vault key to a new one (`holdfast key new vault` made it,
    /// on the vault host): its public file FILE.pub, or the key file. From
    /// the execution on the vault signs checkpoints and serves TLS with it;
    /// clients and replicas follow through the log
    VaultKey {
        /// FILE.pub from `key new vault` (or the new vault key file)
        new_key: PathBuf,
    },
    /// Acknowledge the vault's clock after a "CLOCK HELD" alert, so that
    /// reclaims and deletions resume. The vault holds its clock when it
    /// starts with the clock far past its log's last entry (beyond
    /// --clock-hold-after-secs, 6 h by default): a clock that jumped (a
    /// spoofed NTP answer, a bad RTC) or a vault that really was down that
    /// long. First check the vault host's clock against a clock you trust
    /// (`date -u`). Run this only if the vault really was down that long or
    /// its clock is right again; this machine's clock must be right too:
    /// the proposal carries it, and the vault (and every reader) refuses
    /// it when it is more than 15 min from the vault's. If the vault's
    /// clock is wrong, fix it and restart the vault instead: its log keeps
    /// the jumped dates, and the acknowledgement is accepted once the
    /// clocks agree. Then approve (`holdfast approve`) with a quorum; it
    /// runs after the usual delay and can be vetoed like any proposal
    AckClock,
}

#[derive(clap::Args)]
pub struct VoteArgs {
    #[arg(long)]
    pub repo: String,
    /// An admin key
    #[arg(long)]
    pub key: PathBuf,
    /// Proposal id or unique prefix
    pub proposal: String,
}

#[derive(clap::Args)]
pub struct ListArgs {
    #[arg(long)]
    pub repo: String,
    #[arg(long)]
    pub key: PathBuf,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args)]
pub struct LockArgs {
    #[arg(long)]
    pub repo: String,
    /// An admin key
    #[arg(long)]
    pub key: PathBuf,
    pub snapshot: String,
    /// New lock end, in days from now (locks only ever grow)
    #[arg(long)]
    pub days: u64,
}

fn admin(key: &holdfast_repo::keys::Key) -> Result<&holdfast_core::crypto::Identity> {
    match (key.role, key.identity()) {
        (Role::Admin, Some(i)) => Ok(i),
        _ => bail!("this needs an admin key, not a {} key", key.role.name()),
    }
}

pub fn propose(a: ProposeArgs) -> Result<ExitCode> {
    // Optional for clap (an argument given after the subcommand cannot be
    // required), needed here.
    let (Some(repo_arg), Some(key_arg)) = (&a.repo, &a.key) else {
        bail!("propose needs --repo and --key (or HOLDFAST_REPO and HOLDFAST_KEY)");
    };
    let (vault, repo, key) = util::open_vault(repo_arg, key_arg)?;
    let id = admin(&key)?;
    let action = match a.what {
        What::Delete { snapshots } => {
            let mut ids = Vec::new();
            for s in snapshots {
                ids.push(repo.resolve(&s)?.0);
            }
            Action::DeleteSnapshots(ids)
        }
        What::Retention {
            keep_within_days,
            keep_daily,
            keep_weekly,
            keep_monthly,
            keep_yearly,
        } => {
            // The policy in force: the log's (a change executed earlier),
            // else the config's.
            let now: &Retention = repo
                .log
                .as_ref()
                .map(|l| &l.state.retention)
                .unwrap_or(&repo.config.retention);
            if [keep_daily, keep_weekly, keep_monthly, keep_yearly]
                .iter()
                .all(Option::is_none)
                && keep_within_days.is_none()
            {
                bail!(
                    "say what to change: --keep-within-days, --keep-daily, --keep-weekly, --keep-monthly or --keep-yearly"
                );
            }
            Action::SetRetention(Retention {
                keep_within_secs: keep_within_days
                    .map_or(now.keep_within_secs, |d| d.saturating_mul(86_400)),
                daily: keep_daily.unwrap_or(now.daily),
                weekly: keep_weekly.unwrap_or(now.weekly),
                monthly: keep_monthly.unwrap_or(now.monthly),
                yearly: keep_yearly.unwrap_or(now.yearly),
            })
        }
        What::RemoveIdentity { name } => {
            // A client's replaced keys share its name: the live one is
            // meant (never revoked, and not a successor that never joined).
            let live = |k: &[u8; 32]| {
                repo.log
                    .as_ref()
                    .is_none_or(|l| !l.state.removed.contains(k) && !l.state.is_pending(k))
            };
            let m = repo
                .members
                .values()
                .filter(|m| m.name == name)
                .min_by_key(|m| !live(&m.public))
                .ok_or_else(|| anyhow!("no identity named {name:?}"))?;
            Action::RemoveIdentity(m.public)
        }
        What::LiftFlags { snapshots } => {
            let mut ids = Vec::new();
            for s in snapshots {
                ids.push(repo.resolve(&s)?.0);
            }
            Action::LiftFlags(ids)
        }
        What::Threshold { signal, value } => {
            let code = (1..=u8::MAX)
                .find(|c| {
                    holdfast_core::logstate::default_threshold(*c).is_some()
                        && holdfast_core::format::Signal(*c).name() == signal
                })
                .ok_or_else(|| {
                    anyhow!(
                        "no signal {signal:?} with a threshold: say shrink, burst, in_place, \
                         entropy, not_mail, renames, new_extension, deletions or volume"
                    )
                })?;
            let from = repo
                .log
                .as_ref()
                .and_then(|l| l.state.threshold(code))
                .or_else(|| holdfast_core::logstate::default_threshold(code))
                .unwrap_or_default();
            Action::SetThreshold {
                signal: code,
                from,
                to: value,
            }
        }
        What::VaultKey { new_key } => {
            let (cid, key, pop) = crate::cmd::key::read_vault_pub(&new_key)?;
            if cid != repo.config_id {
                bail!(
                    "{}: a vault key made for another repository",
                    new_key.display()
                );
            }
            if !holdfast_core::governance::verify_vault_key_pop(&cid, &key, &pop) {
                bail!(
                    "{}: its proof of possession does not verify (damaged, or not made by \
                     `key new vault`)",
                    new_key.display()
                );
            }
            Action::RotateVaultKey { key, pop }
        }
        What::AckClock => {
            if let Some(l) = repo.log.as_ref()
                && l.state.clock_held().is_none()
            {
                bail!("the vault's log holds no clock hold: nothing to acknowledge");
            }
            Action::AckClock
        }
    };
    let p = Proposal::new(repo.config_id, action, id, now_ns())?;
    let r = vault.request("POST", "/v1/proposals", &p.encode(), None)?;
    let j: serde_json::Value = serde_json::from_slice(&r)?;
    util::out(format!(
        "proposal {} submitted; it needs {} admin approvals, then waits {} s for vetoes",
        j["id"].as_str().unwrap_or("?"),
        repo.config.quorum,
        repo.config.delay_secs
    ));
    Ok(ExitCode::SUCCESS)
}

fn proposals(vault: &holdfast_store::VaultBackend) -> Result<Vec<serde_json::Value>> {
    Ok(serde_json::from_slice(&vault.request(
        "GET",
        "/v1/proposals",
        &[],
        None,
    )?)?)
}

/// The proposals of the log this admin verified itself, not the vault's
/// listing: what an admin approves is the signed proposal in that log, and
/// what it is told it approves is rendered from those signed bytes.
pub fn vote(a: VoteArgs, kind: VoteKind) -> Result<ExitCode> {
    let (vault, repo, key) = util::open_vault(&a.repo, &a.key)?;
    let id = admin(&key)?;
    let Some(log) = repo.log.as_ref() else {
        bail!("the vault served no log");
    };
    let m: Vec<_> = log
        .state
        .proposals
        .iter()
        .filter(|(i, _)| i.to_hex().starts_with(&a.proposal))
        .collect();
    let (pid, prop) = match m.as_slice() {
        [one] => (*one.0, one.1),
        [] => bail!(
            "no proposal in the vault's log matches {:?} (`holdfast proposals` lists them)",
            a.proposal
        ),
        _ => bail!("{:?} matches several proposals", a.proposal),
    };
    let what = render(&repo, &prop.proposal.action);
    let v = Vote::new(pid, kind, id);
    vault.request("POST", "/v1/votes", &v.encode(), None)?;
    util::out(format!(
        "{} proposal {}: {what}",
        if kind == VoteKind::Veto {
            "vetoed"
        } else {
            "approved"
        },
        pid.short()
    ));
    Ok(ExitCode::SUCCESS)
}

/// What a signed action does, for an admin deciding on it: snapshots by
/// full id with their client, vault time and anomalies, identities by name,
/// thresholds from and to. Rendered here from the signed bytes, never from
/// text the vault host sends.
fn render(repo: &holdfast_repo::Repository, a: &Action) -> String {
    let state = repo.log.as_ref().map(|l| &l.state);
    let snaps = |ids: &[holdfast_core::ObjectId]| -> String {
        ids.iter()
            .map(|i| match state.and_then(|s| s.snapshots.get(i)) {
                Some(s) => {
                    let flags: Vec<&str> = s
                        .flags
                        .iter()
                        .map(|(c, _)| holdfast_core::format::Signal(*c).name())
                        .collect();
                    format!(
                        "{} (client {}, {}{})",
                        i.to_hex(),
                        repo.member_name(&s.client),
                        util::time(s.added_ns),
                        if flags.is_empty() {
                            String::new()
                        } else {
                            format!(", flagged {}", flags.join(", "))
                        }
                    )
                }
                None => format!("{} (not a live snapshot)", i.to_hex()),
            })
            .collect::<Vec<_>>()
            .join("; ")
    };
    match a {
        Action::DeleteSnapshots(ids) => {
            format!(
                "early deletion of {} snapshot(s): {}",
                ids.len(),
                snaps(ids)
            )
        }
        Action::SetRetention(r) => format!(
            "retention keep-within {}s daily {} weekly {} monthly {} yearly {}",
            r.keep_within_secs, r.daily, r.weekly, r.monthly, r.yearly
        ),
        Action::RemoveIdentity(k) => format!("removal of identity {}", repo.member_name(k)),
        Action::RotateRestoreKey(k) => format!(
            "a new restore key {} (check the whole fingerprint with its holder)",
            holdfast_core::id::hex(k)
        ),
        Action::LiftFlags(ids) => format!(
            "lifting the anomaly flags of {} snapshot(s): {}",
            ids.len(),
            snaps(ids)
        ),
        Action::SetThreshold { signal, from, to } => format!(
            "the {} threshold from {from} to {to}",
            holdfast_core::format::Signal(*signal).name()
        ),
        Action::RotateVaultKey { key, .. } => format!(
            "a new vault key {} (check the whole fingerprint with the vault's operator)",
            holdfast_core::id::hex(key)
        ),
        Action::AckClock => match state.and_then(|s| s.clock_held()) {
            Some(h) => format!(
                "acknowledging the vault's clock after the hold at log entry {} ({} h past \
                 the log at a start); deletions resume. Check the vault's clock (`date -u` on \
                 its host) against yours first",
                h.last,
                h.gap_ns / 3_600_000_000_000
            ),
            None => "acknowledging the vault's clock (no hold in the log now)".to_string(),
        },
    }
}

/// One proposal as the vault lists it, with identities by name and times
/// in RFC 3339 (the vault sends keys and nanoseconds).
fn readable(repo: &holdfast_repo::Repository, p: &serde_json::Value) -> serde_json::Value {
    let name = |v: &serde_json::Value| -> Option<String> {
        let k = holdfast_core::id::parse_hex32(v.as_str()?).ok()?;
        Some(repo.member_name(&k))
    };
    let time = |v: &serde_json::Value| v.as_i64().map(util::time);
    let approvals: Vec<String> = p["approvals"]
        .as_array()
        .map(|a| a.iter().filter_map(name).collect())
        .unwrap_or_default();
    // What it does, from the signed proposal whose id the vault lists (and,
    // when this reader's verified log holds it, as the log holds it): never
    // the vault's own description.
    let listed = p["id"]
        .as_str()
        .and_then(|h| holdfast_core::ObjectId::from_hex(h).ok());
    let in_log = listed.and_then(|i| repo.log.as_ref()?.state.proposals.get(&i));
    let action = match in_log {
        Some(pr) => render(repo, &pr.proposal.action),
        None => p["proposal"]
            .as_str()
            .and_then(|h| holdfast_core::id::parse_hex(h).ok())
            .filter(|b| Some(holdfast_core::ObjectId::of(b)) == listed)
            .and_then(|b| Proposal::decode(&b).ok())
            .map(|pr| format!("{} (not in the vault's log)", render(repo, &pr.action)))
            .unwrap_or_else(|| "(the vault sent no signed proposal for this id)".into()),
    };
    let vetoed_by = name(&p["vetoed_by"]);
    let state = p["state"].as_str().unwrap_or("unknown").to_string();
    let status = match (&vetoed_by, p["status"].as_str()) {
        (Some(by), _) => format!("Vetoed by {by}"),
        (None, Some(s)) => s.to_string(),
        (None, None) => state.clone(),
    };
    serde_json::json!({
        "id": p["id"],
        "action": action,
        "state": state,
        "status": status,
        "proposer": name(&p["proposer"]),
        "received": time(&p["received_ns"]),
        "approvals": approvals,
        "needed": p["needed"],
        "veto_window_ends": time(&p["until_ns"]),
        "vetoed_by": vetoed_by,
        "executed": time(&p["executed_ns"]),
        "proposal": p["proposal"],
    })
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let (vault, repo, _) = util::open_vault(&a.repo, &a.key)?;
    let all: Vec<serde_json::Value> = proposals(&vault)?
        .iter()
        .map(|p| readable(&repo, p))
        .collect();
    if a.json {
        util::json(&serde_json::Value::Array(all));
        return Ok(ExitCode::SUCCESS);
    }
    if all.is_empty() {
        util::out("no proposals");
    }
    for p in &all {
        let s = |k: &str| p[k].as_str().unwrap_or("").to_string();
        let id = s("id");
        let mut detail = vec![format!(
            "proposed by {} at {}",
            s("proposer"),
            s("received")
        )];
        let approvals: Vec<&str> = p["approvals"]
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
            .unwrap_or_default();
        detail.push(format!(
            "approvals {} of {}: {}",
            approvals.len(),
            p["needed"].as_u64().unwrap_or(0),
            approvals.join(", ")
        ));
        if let Some(t) = p["veto_window_ends"].as_str() {
            detail.push(format!("veto window ends {t}"));
        }
        if let Some(by) = p["vetoed_by"].as_str() {
            detail.push(format!("vetoed by {by}: it never runs"));
        }
        if let Some(t) = p["executed"].as_str() {
            detail.push(format!("executed at {t}"));
        }
        util::out(format!(
            "{}  {:<8}  {}\n    {}",
            &id[..id.len().min(16)],
            s("state"),
            s("action"),
            detail.join("; ")
        ));
    }
    Ok(ExitCode::SUCCESS)
}

pub fn lock(a: LockArgs) -> Result<ExitCode> {
    let (vault, repo, key) = util::open_vault(&a.repo, &a.key)?;
    admin(&key)?;
    let (snap, _) = repo.resolve(&a.snapshot)?;
    let until = now_ns() + (a.days as i64) * 86_400 * 1_000_000_000;
    let body =
        serde_json::to_vec(&serde_json::json!({"snapshot": snap.to_hex(), "until_ns": until}))?;
    vault.request("POST", "/v1/locks", &body, None)?;
    util::out(format!(
        "snapshot {} locked until {}",
        snap.short(),
        util::time(until)
    ));
    Ok(ExitCode::SUCCESS)
}
