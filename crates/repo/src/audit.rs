//! `holdfast audit`: the whole log against the repository.
//!
//! 1. The log matches the vault's signed checkpoint (signature, size, root).
//! 2. Replaying it: every executed deletion had quorum, its delay passed and
//!    no veto (checked with the same rules the vault uses, on the times the
//!    log records); every reclaimed snapshot's lock had expired.
//! 3. Every snapshot the log says is live is present and valid, and its
//!    packs exist (where the key may list packs); every snapshot present is
//!    explained by the log.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use holdfast_core::ObjectId;
use holdfast_core::format::Role;
use holdfast_core::governance::{self, Action, Proposal, Status, Vote};
use holdfast_core::merkle::{self, Checkpoint};
use holdfast_core::vaultlog::{Entry, Event};
use holdfast_store::Kind;

use crate::{Repository, Result};

#[derive(Debug, Default)]
pub struct AuditReport {
    pub entries: u64,
    pub snapshots_logged: u64,
    pub live: u64,
    pub deletions: u64,
    pub reclaimed: u64,
    pub packs_checked: bool,
    pub problems: Vec<String>,
}

pub fn audit(
    repo: &Repository,
    entries: &[Vec<u8>],
    checkpoint: &Checkpoint,
) -> Result<AuditReport> {
    let mut r = AuditReport::default();
    let vault_key = repo
        .config
        .members
        .iter()
        .find(|m| m.role == Role::Vault)
        .map(|m| m.public)
        .unwrap_or([0; 32]);
    if checkpoint.verify(&vault_key).is_err() || checkpoint.config_id != repo.config_id.0 {
        r.problems
            .push("the log checkpoint is not signed by this repository's vault key".into());
    }
    let leaves: Vec<_> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    if (leaves.len() as u64) < checkpoint.size {
        r.problems.push(format!(
            "the log has {} entries but the signed checkpoint says {}: truncated",
            leaves.len(),
            checkpoint.size
        ));
    } else if merkle::root(&leaves[..checkpoint.size as usize]) != checkpoint.root {
        r.problems
            .push("the log does not match its signed checkpoint: entries altered".into());
    }
    r.entries = entries.len() as u64;

    // Replay.
    let admins: BTreeSet<[u8; 32]> = repo.config.admins().map(|a| a.public).collect();
    let mut removed: BTreeSet<[u8; 32]> = BTreeSet::new();
    let mut live: BTreeMap<ObjectId, ([u8; 32], i64)> = BTreeMap::new();
    let mut proposals: BTreeMap<ObjectId, (Proposal, i64)> = BTreeMap::new();
    let mut votes: Vec<(Vote, i64)> = Vec::new();
    // Reclaimed as expired: a replica keeps them, and a vault that crashed
    // between logging and deleting still has them. Not a problem.
    let mut reclaimed: BTreeSet<ObjectId> = BTreeSet::new();
    let mut logged_identities: BTreeSet<ObjectId> = BTreeSet::new();
    for (i, raw) in entries.iter().enumerate() {
        let e = match Entry::decode(raw) {
            Ok(e) => e,
            Err(x) => {
                r.problems.push(format!("log entry {i} is malformed: {x}"));
                continue;
            }
        };
        match e.event {
            Event::SnapshotAdded {
                snapshot,
                client,
                lock_until_ns,
            } => {
                r.snapshots_logged += 1;
                live.insert(snapshot, (client, lock_until_ns));
            }
            Event::LockExtended {
                snapshot, until_ns, ..
            } => {
                if let Some(s) = live.get_mut(&snapshot) {
                    s.1 = s.1.max(until_ns);
                }
            }
            Event::Proposed { proposal } => match Proposal::decode(&proposal) {
                Ok(p) => {
                    proposals.insert(p.id(), (p, e.time_ns));
                }
                Err(x) => r.problems.push(format!("log entry {i}: bad proposal: {x}")),
            },
            Event::Voted { vote } => match Vote::decode(&vote) {
                Ok(v) => votes.push((v, e.time_ns)),
                Err(x) => r.problems.push(format!("log entry {i}: bad vote: {x}")),
            },
            Event::Executed { proposal } => {
                let Some((p, received)) = proposals.get(&proposal) else {
                    r.problems.push(format!(
                        "log entry {i} executes unknown proposal {}",
                        proposal.short()
                    ));
                    continue;
                };
                let active: BTreeSet<_> = admins.difference(&removed).copied().collect();
                let st = governance::status(
                    p,
                    *received,
                    &votes,
                    &active,
                    repo.config.quorum as usize,
                    repo.config.delay_secs,
                    e.time_ns,
                );
                if st != Status::Ready {
                    r.problems.push(format!(
                        "log entry {i} executed proposal {} without authority ({st:?})",
                        proposal.short()
                    ));
                }
                match &p.action {
                    Action::DeleteSnapshots(ids) => {
                        for id in ids {
                            live.remove(id);
                            r.deletions += 1;
                        }
                    }
                    Action::RemoveIdentity(k) => {
                        removed.insert(*k);
                    }
                    Action::SetRetention(_) => {}
                }
            }
            Event::IdentityAdded { record } => {
                logged_identities.insert(record);
            }
            Event::Reclaimed { snapshots, .. } => {
                for id in snapshots {
                    reclaimed.insert(id);
                    match live.remove(&id) {
                        Some((_, lock)) if lock > e.time_ns => r.problems.push(format!(
                            "log entry {i} reclaimed snapshot {} before its lock expired",
                            id.short()
                        )),
                        _ => r.reclaimed += 1,
                    }
                }
            }
        }
    }
    r.live = live.len() as u64;

    // Compare with what is stored.
    let present: HashSet<ObjectId> = repo
        .backend
        .list(Kind::Snapshot)?
        .into_iter()
        .filter_map(|(n, _)| ObjectId::from_hex(&n).ok())
        .collect();
    let packs: Option<HashSet<ObjectId>> = repo.backend.list(Kind::Pack).ok().map(|l| {
        l.into_iter()
            .filter_map(|(n, _)| ObjectId::from_hex(&n).ok())
            .collect()
    });
    r.packs_checked = packs.is_some();
    for (id, (client, _)) in &live {
        if !present.contains(id) {
            r.problems.push(format!(
                "snapshot {id} of {} is in the log but missing from the repository",
                repo.member_name(client)
            ));
            continue;
        }
        match repo.load_snapshot(id) {
            Ok(s) => {
                if &s.header.client != client {
                    r.problems.push(format!(
                        "snapshot {id} is signed by another client than the log says"
                    ));
                }
                if let Some(packs) = &packs {
                    for p in &s.header.packs {
                        if !packs.contains(p) {
                            r.problems
                                .push(format!("snapshot {id}: pack {p} is missing"));
                        }
                    }
                }
            }
            Err(e) => r.problems.push(format!("snapshot {id}: {e}")),
        }
    }
    for (name, _) in repo.backend.list(Kind::Identity)? {
        let logged = ObjectId::from_hex(&name).is_ok_and(|id| logged_identities.contains(&id));
        if !logged {
            r.problems.push(format!(
                "identity record {name} is present but the log does not explain it"
            ));
        }
    }
    for id in &present {
        if !live.contains_key(id) && !reclaimed.contains(id) {
            r.problems.push(format!(
                "snapshot {id} is present but the log does not explain it"
            ));
        }
    }
    Ok(r)
}
