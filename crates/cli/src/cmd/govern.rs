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
    #[arg(long)]
    pub repo: String,
    /// An admin key
    #[arg(long)]
    pub key: PathBuf,
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
    /// Replace the retention policy
    Retention {
        #[arg(long)]
        keep_within_days: u64,
        #[arg(long, default_value_t = 0)]
        keep_daily: u32,
        #[arg(long, default_value_t = 0)]
        keep_weekly: u32,
        #[arg(long, default_value_t = 0)]
        keep_monthly: u32,
        #[arg(long, default_value_t = 0)]
        keep_yearly: u32,
    },
    /// Remove an identity (admin, client, replica, auditor) by name
    RemoveIdentity { name: String },
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
    let (vault, repo, key) = util::open_vault(&a.repo, &a.key)?;
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
        } => Action::SetRetention(Retention {
            keep_within_secs: keep_within_days * 86_400,
            daily: keep_daily,
            weekly: keep_weekly,
            monthly: keep_monthly,
            yearly: keep_yearly,
        }),
        What::RemoveIdentity { name } => {
            let m = repo
                .members
                .values()
                .find(|m| m.name == name)
                .ok_or_else(|| anyhow!("no identity named {name:?}"))?;
            Action::RemoveIdentity(m.public)
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

pub fn vote(a: VoteArgs, kind: VoteKind) -> Result<ExitCode> {
    let (vault, _, key) = util::open_vault(&a.repo, &a.key)?;
    let id = admin(&key)?;
    let all = proposals(&vault)?;
    let m: Vec<_> = all
        .iter()
        .filter(|p| p["id"].as_str().is_some_and(|i| i.starts_with(&a.proposal)))
        .collect();
    let pid = match m.as_slice() {
        [one] => one["id"].as_str().unwrap_or_default().to_string(),
        [] => bail!("no proposal matches {:?}", a.proposal),
        _ => bail!("{:?} matches several proposals", a.proposal),
    };
    let pid = holdfast_core::ObjectId::from_hex(&pid).map_err(|e| anyhow!("{e}"))?;
    let v = Vote::new(pid, kind, id);
    vault.request("POST", "/v1/votes", &v.encode(), None)?;
    util::out(format!(
        "{} proposal {}",
        if kind == VoteKind::Veto {
            "vetoed"
        } else {
            "approved"
        },
        pid.short()
    ));
    Ok(ExitCode::SUCCESS)
}

pub fn list(a: ListArgs) -> Result<ExitCode> {
    let (vault, _, _) = util::open_vault(&a.repo, &a.key)?;
    let all = proposals(&vault)?;
    if a.json {
        util::json(&serde_json::Value::Array(all));
    } else {
        for p in &all {
            util::out(format!(
                "{}  {}  {}",
                &p["id"].as_str().unwrap_or("?")[..16],
                p["status"].as_str().unwrap_or("?"),
                p["action"].as_str().unwrap_or("?")
            ));
        }
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
