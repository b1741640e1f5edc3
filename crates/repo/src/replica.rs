//! `holdfast replica pull`: a copy the vault cannot reach.
//!
//! The replica initiates every contact (it accepts no connections), holds
//! only the replica key (reads ciphertext and the log; decrypts and deletes
//! nothing at the vault), and keeps its own verified checkpoint. Each pull:
//!
//! 1. demands a consistency proof from its checkpoint to the vault's
//!    (a rolled-back or forked vault is refused; nothing is written);
//! 2. fetches the new log entries and checks that, appended to its own, they
//!    hash to the vault's signed root;
//! 3. replays them: copies each added snapshot's missing packs, then the
//!    snapshot (every object checked against its id); applies a deletion
//!    only if the log shows the proposal had quorum, its delay passed and no
//!    veto (recomputed here, with the same rules); keeps snapshots the vault
//!    reclaimed as expired (the vault's clock is not trusted);
//! 4. appends the entries to its own log and stores the checkpoint, last.
//!
//! The replica directory has a vault's layout: `verify`, `restore` and
//! `audit` work on it directly.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;

use holdfast_core::ObjectId;
use holdfast_core::format::{Config, Snapshot};
use holdfast_core::governance::{self, Action, Proposal, Status, Vote};
use holdfast_core::merkle::{self, Checkpoint};
use holdfast_core::vaultlog::{Entry, Event, split_log};
use holdfast_store::{Backend, Kind, LocalDir, StoreError, VaultBackend};

use crate::{Error, Result, io_err};

#[derive(Debug, Default)]
pub struct PullReport {
    pub entries_new: u64,
    pub log_size: u64,
    pub snapshots_copied: u64,
    pub packs_copied: u64,
    pub bytes_copied: u64,
    pub deletions_applied: u64,
    pub reclaims_kept: u64,
    /// Snapshots the vault no longer had when this replica came for them.
    pub missed: Vec<String>,
    /// The vault's clock at its newest checkpoint.
    pub vault_time_ns: i64,
}

fn read_local_log(dir: &Path) -> Result<Vec<Vec<u8>>> {
    let p = dir.join("vault/log");
    match std::fs::read(&p) {
        Ok(raw) => Ok(split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io_err(&p, e)),
    }
}

/// Pulls once from `vault` into the replica directory `dir` (created on the
/// first pull). `config_id` is the id the replica key pins.
pub fn pull(vault: &VaultBackend, dir: &Path, config_id: ObjectId) -> Result<PullReport> {
    let mut rep = PullReport::default();
    let cp = vault.sync_checkpoint()?;
    rep.vault_time_ns = cp.time_ns;
    let cfg_bytes = vault.get(Kind::Config, "config")?;
    if ObjectId::of(&cfg_bytes) != config_id {
        return Err(Error::Tamper(
            "the vault's config is not the one the replica key pins".into(),
        ));
    }
    let config = Config::decode(&cfg_bytes).map_err(|e| Error::Corrupt(format!("config: {e}")))?;
    let local = if dir.join("config").exists() {
        LocalDir::open(dir)?
    } else {
        let l = LocalDir::create(dir)?;
        l.put(Kind::Config, "config", &cfg_bytes)?;
        l
    };
    if ObjectId::of(&local.get(Kind::Config, "config")?) != config_id {
        return Err(Error::Tamper(format!(
            "{} holds another repository",
            dir.display()
        )));
    }
    for (name, _) in vault.list(Kind::Identity)? {
        if local.size(Kind::Identity, &name).is_err() {
            local.put(Kind::Identity, &name, &vault.get(Kind::Identity, &name)?)?;
        }
    }

    // New entries, checked against the signed root.
    let mut entries = read_local_log(dir)?;
    let have = entries.len();
    if have as u64 > cp.size {
        return Err(Error::Tamper(format!(
            "the vault's log ({} entries) is shorter than this replica's ({have})",
            cp.size
        )));
    }
    entries.extend(vault.log_entries(have, cp.size)?);
    let leaves: Vec<_> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    if merkle::root(&leaves) != cp.root {
        return Err(Error::Tamper(
            "the vault's log entries do not match its signed checkpoint".into(),
        ));
    }
    rep.entries_new = (entries.len() - have) as u64;
    rep.log_size = entries.len() as u64;

    // Replay everything for governance state; act on the new entries only.
    let admins: BTreeSet<[u8; 32]> = config.admins().map(|a| a.public).collect();
    let mut removed = BTreeSet::new();
    let mut proposals: BTreeMap<ObjectId, (Proposal, i64)> = BTreeMap::new();
    let mut votes: Vec<(Vote, i64)> = Vec::new();
    for (i, raw) in entries.iter().enumerate() {
        let e = Entry::decode(raw).map_err(|x| Error::Tamper(format!("log entry {i}: {x}")))?;
        let new = i >= have;
        match e.event {
            Event::SnapshotAdded { snapshot, .. } if new => {
                copy_snapshot(vault, &local, &snapshot, &mut rep)?
            }
            Event::Proposed { proposal } => {
                let p = Proposal::decode(&proposal)
                    .map_err(|x| Error::Tamper(format!("log entry {i}: {x}")))?;
                proposals.insert(p.id(), (p, e.time_ns));
            }
            Event::Voted { vote } => votes.push((
                Vote::decode(&vote).map_err(|x| Error::Tamper(format!("log entry {i}: {x}")))?,
                e.time_ns,
            )),
            Event::Executed { proposal } => {
                let (p, received) = proposals.get(&proposal).ok_or_else(|| {
                    Error::Tamper(format!("log entry {i} executes an unknown proposal"))
                })?;
                let active: BTreeSet<_> = admins.difference(&removed).copied().collect();
                let st = governance::status(
                    p,
                    *received,
                    &votes,
                    &active,
                    config.quorum as usize,
                    config.delay_secs,
                    e.time_ns,
                );
                if st != Status::Ready {
                    return Err(Error::Tamper(format!(
                        "log entry {i} executes proposal {} without quorum, delay or despite a veto ({st:?}); not applied",
                        proposal.short()
                    )));
                }
                match &p.action {
                    Action::DeleteSnapshots(ids) if new => {
                        for id in ids {
                            let path = local.path_of(Kind::Snapshot, &id.to_hex());
                            if std::fs::remove_file(&path).is_ok() {
                                rep.deletions_applied += 1;
                            }
                        }
                        let _ = holdfast_store::fsync_dir(&dir.join("snapshots"));
                    }
                    Action::RemoveIdentity(k) => {
                        removed.insert(*k);
                    }
                    _ => {}
                }
            }
            Event::Reclaimed { snapshots, .. } if new => {
                rep.reclaims_kept += snapshots.len() as u64
            }
            _ => {}
        }
    }

    // The log and checkpoint last: objects first, then what explains them.
    let vdir = dir.join("vault");
    std::fs::create_dir_all(&vdir).map_err(|e| io_err(&vdir, e))?;
    let logp = vdir.join("log");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&logp)
        .map_err(|e| io_err(&logp, e))?;
    let mut buf = Vec::new();
    for e in &entries[have..] {
        buf.extend_from_slice(&(e.len() as u32).to_le_bytes());
        buf.extend_from_slice(e);
    }
    f.write_all(&buf)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&logp, e))?;
    write_checkpoint(&vdir, &cp)?;
    Ok(rep)
}

fn write_checkpoint(vdir: &Path, cp: &Checkpoint) -> Result<()> {
    let p = vdir.join("checkpoint");
    let tmp = vdir.join("checkpoint.tmp");
    std::fs::write(&tmp, cp.encode())
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| io_err(&p, e))?;
    holdfast_store::fsync_dir(vdir).map_err(|e| io_err(vdir, e))
}

fn copy_snapshot(
    vault: &VaultBackend,
    local: &LocalDir,
    id: &ObjectId,
    rep: &mut PullReport,
) -> Result<()> {
    let name = id.to_hex();
    if local.size(Kind::Snapshot, &name).is_ok() {
        return Ok(());
    }
    let bytes = match vault.get(Kind::Snapshot, &name) {
        Ok(b) => b,
        Err(StoreError::NotFound { .. }) => {
            rep.missed.push(name);
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    let snap = Snapshot::decode(&bytes)
        .map_err(|e| Error::Tamper(format!("snapshot {}: {e}", id.short())))?;
    for p in &snap.header.packs {
        let pn = p.to_hex();
        if local.size(Kind::Pack, &pn).is_ok() {
            continue;
        }
        let data = vault.get(Kind::Pack, &pn)?;
        local.put(Kind::Pack, &pn, &data)?;
        rep.packs_copied += 1;
        rep.bytes_copied += data.len() as u64;
    }
    local.put(Kind::Snapshot, &name, &bytes)?;
    rep.snapshots_copied += 1;
    rep.bytes_copied += bytes.len() as u64;
    Ok(())
}
