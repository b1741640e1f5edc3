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
//! 3. reads the whole log through the one validating fold
//!    ([`holdfast_core::logstate`]) on this replica's clock: entries that
//!    break a rule are reported (exit 4) and never applied; copies every
//!    live snapshot it lacks with its missing packs (every object checked
//!    against its id), going on past a missing or damaged one (reported,
//!    retried next time); applies an erasure only once the delay has also
//!    passed since this replica first saw its quorum (`vault/seen`); keeps
//!    snapshots the vault reclaimed as expired;
//! 4. appends the entries to its own log, stores the checkpoint, then
//!    records this contact in `vault/seen`.
//!
//! The replica directory has a vault's layout: `verify`, `restore` and
//! `audit` work on it directly.

use std::io::Write;
use std::path::Path;

use holdfast_core::ObjectId;
use holdfast_core::format::{Config, IdentityRecord, Snapshot};
use holdfast_core::logstate::{Effect, GoneHow, LogState, Reader};
use holdfast_core::merkle::{self, Checkpoint};
use holdfast_core::vaultlog::{frame, split_log};
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
    /// Erasures the log authorizes that this replica applies only once the
    /// delay has passed since it first saw their quorum.
    pub deletions_pending: u64,
    /// Tampering or loss found (the pull still copies what it can).
    pub problems: Vec<String>,
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
    pull_with_progress(vault, dir, config_id, &crate::Progress::default())
}

/// [`pull`], advancing `progress`: snapshots copied of those missing, and
/// bytes copied of the vault's packs this replica lacks (an estimate: a
/// pack no live snapshot lists yet is counted and not copied).
pub fn pull_with_progress(
    vault: &VaultBackend,
    dir: &Path,
    config_id: ObjectId,
    progress: &crate::Progress,
) -> Result<PullReport> {
    use std::sync::atomic::Ordering;
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
        let l = LocalDir::create_or_resume(dir)?;
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
        match local.get(Kind::Identity, &name) {
            Ok(_) => continue,
            Err(e) if e.is_not_found() => {}
            Err(e) => {
                // This replica's copy is damaged (its bytes are not its
                // name): set aside, never deleted, and fetched again from
                // the vault, whose answer is checked against the name.
                let at = local.path_of(Kind::Identity, &name);
                let aside = at.with_extension("damaged");
                std::fs::rename(&at, &aside).map_err(|e| io_err(&at, e))?;
                rep.problems.push(format!(
                    "identity record {name} in this replica was damaged ({e}): set aside as {}, \
                     fetched again",
                    aside.display()
                ));
            }
        }
        local.put(Kind::Identity, &name, &vault.get(Kind::Identity, &name)?)?;
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

    // Every entry through the one validating fold, on this replica's clock,
    // counting deletion delays from when this replica first saw them.
    let mut members = std::collections::HashMap::new();
    let mut records = Vec::new();
    // Held but unusable (damaged, unverified, renamed): said here, and
    // the log adding one is a problem of the fold.
    let mut refused: Vec<(ObjectId, String)> = Vec::new();
    let mut shadowing = Vec::new();
    for (name, _) in local.list(Kind::Identity)? {
        let named = ObjectId::from_hex(&name).ok();
        let b = match local.get(Kind::Identity, &name) {
            Ok(b) => b,
            Err(e) if !e.is_not_found() => {
                rep.problems
                    .push(format!("TAMPERING: identity record {name}: {e}"));
                if let Some(id) = named {
                    refused.push((id, e.to_string()));
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let why = if Some(ObjectId::of(&b)) != named {
            Some("its name is not its content id".to_string())
        } else {
            match IdentityRecord::decode(&b) {
                Err(e) => Some(format!("does not decode: {e}")),
                Ok(rec) if rec.verify(&config, &config_id).is_err() => {
                    Some("not signed by an admin, or a role one admin may not add".to_string())
                }
                Ok(rec) => {
                    let id = ObjectId::of(&b);
                    // The config's members always win: a record naming one
                    // is refused and reported (one admin demoting another).
                    if config.members.iter().any(|m| m.public == rec.member.public) {
                        rep.problems.push(format!(
                            "identity record {name} names a member of the config: refused, not \
                             applied"
                        ));
                        shadowing.push(id);
                    } else {
                        members
                            .entry(rec.member.public)
                            .or_insert(rec.member.clone());
                        records.push((id, rec));
                    }
                    None
                }
            }
        };
        if let Some(why) = why {
            rep.problems
                .push(format!("TAMPERING: identity record {name}: {why}"));
            if let Some(id) = named {
                refused.push((id, why));
            }
        }
    }
    let contacts = read_contacts(dir);
    let held = read_held(dir);
    let now = crate::now_ns();
    let reader = Reader {
        now_ns: now,
        contacts: Some(contacts.clone()),
        held,
    };
    let mut packs_of = |id: &ObjectId| {
        let b = local.get(Kind::Snapshot, &id.to_hex()).ok()?;
        Snapshot::decode(&b).ok().map(|s| s.header.packs)
    };
    let mut st = LogState::new(&config, config_id, members);
    for (id, rec) in &records {
        st.register_record(*id, rec);
    }
    for id in shadowing {
        st.hold_record(id);
    }
    for (id, why) in refused {
        st.refuse_record(id, why);
    }
    let (st, effects) = st.fold(entries.iter().map(|e| e.as_slice()), &reader, &mut packs_of);
    rep.problems.extend(
        st.problems
            .iter()
            .map(|p| format!("TAMPERING in the vault's log: {p}")),
    );
    // Copy every live snapshot this replica lacks (new ones, and ones a
    // failure left behind last time). A missing or damaged object is
    // reported and the pull goes on with the rest.
    let want: Vec<ObjectId> = st
        .snapshots
        .keys()
        .filter(|id| local.size(Kind::Snapshot, &id.to_hex()).is_err())
        .copied()
        .collect();
    progress
        .files_total
        .store(want.len() as u64, Ordering::Relaxed);
    if !want.is_empty() {
        let lacking: u64 = vault
            .list(Kind::Pack)?
            .into_iter()
            .filter(|(n, _)| local.size(Kind::Pack, n).is_err())
            .map(|(_, size)| size)
            .sum();
        progress.bytes_total.store(lacking, Ordering::Relaxed);
    }
    for &id in &want {
        let before = rep.bytes_copied;
        let r = copy_snapshot(vault, &local, &id, &mut rep);
        progress.add(1, rep.bytes_copied - before);
        if let Err(e) = r {
            match e {
                Error::Store(StoreError::NotFound { .. })
                | Error::Tamper(_)
                | Error::Corrupt(_) => rep.problems.push(format!("snapshot {}: {e}", id.short())),
                Error::Store(StoreError::Corrupt { .. }) => {
                    rep.problems.push(format!("snapshot {}: {e}", id.short()))
                }
                other => return Err(other),
            }
        }
    }
    // The stored bytes the log records for each snapshot copied now (what
    // every reader judges a shrink by) against the packs this replica holds
    // for it: the vault host cannot give readers sizes it did not store.
    for id in &want {
        let Some(logged) = st.snapshots.get(id).and_then(|s| s.stored_bytes) else {
            continue;
        };
        let Ok(b) = local.get(Kind::Snapshot, &id.to_hex()) else {
            continue;
        };
        let Ok(snap) = Snapshot::decode(&b) else {
            continue;
        };
        let held: Option<u64> = snap
            .header
            .packs
            .iter()
            .map(|p| local.size(Kind::Pack, &p.to_hex()).ok())
            .try_fold(0u64, |a, b| a.checked_add(b?));
        if let Some(held) = held
            && held != logged
        {
            rep.problems.push(format!(
                "TAMPERING in the vault's log: snapshot {} references {held} stored bytes here, \
                 the log says {logged}",
                id.short()
            ));
        }
    }
    for m in &rep.missed {
        rep.problems.push(format!(
            "snapshot {} is live in the log but the vault no longer has it: lost before this replica copied it",
            &m[..16.min(m.len())]
        ));
    }
    // Only erasures the log validly explains, and only once this replica's
    // own delay has passed; reclaims of expired snapshots are kept here.
    for e in effects {
        match e {
            Effect::Erase(id) => {
                let path = local.path_of(Kind::Snapshot, &id.to_hex());
                if std::fs::remove_file(&path).is_ok() {
                    rep.deletions_applied += 1;
                }
            }
            Effect::ReclaimSnapshot(_) => {}
            Effect::ReclaimPack(_) => {}
        }
    }
    // Reclaims this pull learned of (the copies stay).
    rep.reclaims_kept = st
        .gone
        .values()
        .filter(|g| g.how == GoneHow::Reclaimed && g.index >= have as u64)
        .count() as u64;
    rep.deletions_pending = st
        .snapshots
        .values()
        .filter(|s| s.erase_due_ns.is_some())
        .count() as u64;
    let _ = holdfast_store::fsync_dir(&dir.join("snapshots"));

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
        frame(e, &mut buf);
    }
    f.write_all(&buf)
        .and_then(|_| f.sync_all())
        .map_err(|e| io_err(&logp, e))?;
    write_checkpoint(&vdir, &cp)?;
    let mut seen = contacts;
    seen.push((entries.len() as u64, now));
    write_contacts(&vdir, &seen)?;
    Ok(rep)
}

/// When this replica pulled, and how long the log was then (`vault/seen`:
/// lines of `SIZE UNIX_NS`): deletion delays count from these.
fn read_contacts(dir: &Path) -> Vec<(u64, i64)> {
    let raw = std::fs::read_to_string(dir.join("vault/seen")).unwrap_or_default();
    let mut v: Vec<(u64, i64)> = raw
        .lines()
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    v.sort();
    v
}

fn write_contacts(vdir: &Path, seen: &[(u64, i64)]) -> Result<()> {
    // Keep the first contact at each size: that is when it was first seen.
    let mut out = String::new();
    let mut last = None;
    for (n, t) in seen {
        if last != Some(*n) {
            out.push_str(&format!("{n} {t}\n"));
            last = Some(*n);
        }
    }
    let p = vdir.join("seen");
    let tmp = vdir.join("seen.tmp");
    std::fs::write(&tmp, out)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &p))
        .map_err(|e| io_err(&p, e))?;
    holdfast_store::fsync_dir(vdir).map_err(|e| io_err(vdir, e))
}

/// The checkpoint this replica held before this pull: (size, vault time).
fn read_held(dir: &Path) -> Option<(u64, i64)> {
    let b = std::fs::read(dir.join("vault/checkpoint")).ok()?;
    Checkpoint::decode(&b).ok().map(|c| (c.size, c.time_ns))
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
