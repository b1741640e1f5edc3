//! The vault's log as a reader sees it: the signed checkpoint checked, then
//! every entry through the one validating fold ([`holdfast_core::logstate`]),
//! on this reader's clock. Clients, the audit and the replica all read the
//! log this way.

use holdfast_core::ObjectId;
use holdfast_core::logstate::{LogState, Reader};
use holdfast_core::merkle::{self, Checkpoint};

use crate::Repository;

/// The folded log, and everything wrong with it (each one tampering).
pub struct LogView {
    pub state: LogState,
    /// The encoded entries as read (audit and export use them).
    pub entries: Vec<Vec<u8>>,
    pub checkpoint: Checkpoint,
    pub problems: Vec<String>,
}

impl LogView {
    /// The vault's commit time of a snapshot, if the log holds it (live or
    /// gone).
    pub fn time_of(&self, id: &ObjectId) -> Option<i64> {
        self.state
            .snapshots
            .get(id)
            .map(|s| s.added_ns)
            .or_else(|| self.state.gone.get(id).map(|g| g.time_ns))
    }
}

/// Checks `checkpoint` against the repository's vault key and `entries`
/// against it, then folds them. `packs_of` may read snapshot pack lists
/// (`None` skips the checks that need them).
pub fn fold(
    repo: &Repository,
    entries: Vec<Vec<u8>>,
    checkpoint: &Checkpoint,
    reader: &Reader,
    read_packs: bool,
) -> LogView {
    let mut problems = Vec::new();
    let vault_key = repo.config.vault_key().unwrap_or([0; 32]);
    if checkpoint.verify(&vault_key).is_err() || checkpoint.config_id != repo.config_id.0 {
        problems.push("the log checkpoint is not signed by this repository's vault key".into());
    }
    let leaves: Vec<_> = entries.iter().map(|e| merkle::leaf_hash(e)).collect();
    if (leaves.len() as u64) < checkpoint.size {
        problems.push(format!(
            "the log has {} entries but the signed checkpoint says {}: truncated",
            leaves.len(),
            checkpoint.size
        ));
    } else if merkle::root(&leaves[..checkpoint.size as usize]) != checkpoint.root {
        problems.push("the log does not match its signed checkpoint: entries altered".into());
    } else if leaves.len() as u64 > checkpoint.size {
        problems.push(format!(
            "{} log entries after the signed checkpoint: not signed by the vault",
            leaves.len() as u64 - checkpoint.size
        ));
    }
    let n = (checkpoint.size as usize).min(entries.len());
    let mut packs_of = |id: &ObjectId| {
        if !read_packs {
            return None;
        }
        repo.load_snapshot(id).ok().map(|s| s.header.packs)
    };
    let (state, _) = LogState::new(&repo.config, repo.config_id, repo.members.clone()).fold(
        entries[..n].iter().map(|e| e.as_slice()),
        reader,
        &mut packs_of,
    );
    problems.extend(state.problems.iter().map(|p| p.to_string()));
    let mut state = state;
    confirm_flags(repo, &mut state, &mut problems);
    LogView {
        state,
        entries,
        checkpoint: checkpoint.clone(),
        problems,
    }
}

/// Checks the vault's flags that the fold cannot: the vault host asserts
/// them, and a flag makes `latest` skip a snapshot, so a forged one would
/// let the host choose what `latest` restores. A flag this reader does not
/// bear out is tampering (reported) and is dropped from its view:
///
/// * 66 (the client reported findings): the snapshot's own signed findings
///   must not be empty;
/// * 64 (shrink): recomputed from the pack sizes this reader lists, against
///   the client's previous live snapshot and its last unflagged one of the
///   week before, as the vault computes it. When a baseline is no longer
///   there (reclaimed), the flag cannot be recomputed and stands;
/// * 65 (burst) is recounted by the fold itself;
/// * any other code is not one the vault raises.
fn confirm_flags(repo: &Repository, state: &mut LogState, problems: &mut Vec<String>) {
    use holdfast_core::format::Signal;
    use holdfast_core::logstate::{SHRINK_MIN_BYTES, SHRINK_WINDOW_NS, shrunk};
    let pct = state.threshold(Signal::SHRINK.0).unwrap_or(50);
    let flagged: Vec<ObjectId> = state
        .snapshots
        .iter()
        .filter(|(_, s)| s.flags.iter().any(|(sig, _)| *sig != Signal::BURST.0))
        .map(|(id, _)| *id)
        .collect();
    if flagged.is_empty() {
        return;
    }
    let mut sizes: Option<std::collections::HashMap<ObjectId, u64>> = None;
    let mut bytes_of = |id: &ObjectId| -> Option<u64> {
        let snap = repo.load_snapshot(id).ok()?;
        let sizes = sizes.get_or_insert_with(|| {
            repo.backend
                .list(holdfast_store::Kind::Pack)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|(n, size)| ObjectId::from_hex(&n).ok().map(|p| (p, size)))
                .collect()
        });
        snap.header
            .packs
            .iter()
            .map(|p| sizes.get(p).copied())
            .sum::<Option<u64>>()
    };
    for id in flagged {
        let snap = &state.snapshots[&id];
        let (client, added) = (snap.client, snap.added_ns);
        let mut keep = Vec::new();
        for &(signal, count) in &snap.flags {
            let why = match Signal(signal) {
                Signal::BURST => None,
                Signal::CLIENT_REPORTED => {
                    let findings = repo
                        .load_snapshot(&id)
                        .ok()
                        .map(|s| s.findings.is_some_and(|f| !f.is_empty()));
                    (findings == Some(false))
                        .then(|| "its client's signed findings are empty".to_string())
                }
                Signal::SHRINK => {
                    let mut earlier: Vec<(&ObjectId, &holdfast_core::logstate::Snap)> = state
                        .snapshots
                        .iter()
                        .filter(|(i, s)| s.client == client && **i != id && s.added_ns < added)
                        .collect();
                    earlier.sort_by_key(|(i, s)| std::cmp::Reverse((s.added_ns, **i)));
                    let mut bases = Vec::new();
                    if let Some((p, _)) = earlier.first() {
                        bases.push(**p);
                    }
                    if let Some((h, _)) = earlier.iter().find(|(_, s)| s.flags.is_empty())
                        && added.saturating_sub(state.snapshots[*h].added_ns) <= SHRINK_WINDOW_NS
                    {
                        bases.push(**h);
                    }
                    let base: Option<Vec<u64>> = bases.iter().map(&mut bytes_of).collect();
                    match (bytes_of(&id), base) {
                        (Some(now), Some(base)) if !base.is_empty() => {
                            let shrunk = base
                                .iter()
                                .filter(|b| **b >= SHRINK_MIN_BYTES)
                                .any(|b| shrunk(now, *b, pct));
                            (!shrunk).then(|| {
                                format!(
                                    "it references {now} stored bytes and its baselines \
                                     {base:?}: not a shrink"
                                )
                            })
                        }
                        // A baseline gone, or a pack unlisted: not
                        // recomputable here; the flag stands.
                        _ => None,
                    }
                }
                _ => Some("no such vault signal".to_string()),
            };
            match why {
                None => keep.push((signal, count)),
                Some(why) => problems.push(format!(
                    "the vault flagged snapshot {} as {}, but {why}; the flag is ignored",
                    id.short(),
                    Signal(signal).name()
                )),
            }
        }
        if let Some(s) = state.snapshots.get_mut(&id) {
            s.flags = keep;
        }
    }
}

/// What a witness (a replica, an auditor's held checkpoint, a bundle) holds,
/// compared with this reader's view of the log.
#[derive(Debug)]
pub struct WitnessReport {
    /// The witness's checkpoint: size and the vault's time.
    pub size: u64,
    pub time_ns: i64,
    /// The witness's checkpoint is signed by this repository's vault and is
    /// a prefix of the log this reader holds. False means the vault showed
    /// two histories (a fork: tampering).
    pub consistent: bool,
    /// Live snapshots (of `client`, or of everyone) the witness's log does
    /// not yet cover: not on the cold tier yet.
    pub not_covered: Vec<ObjectId>,
    pub problem: Option<String>,
}

/// Compares a witness's checkpoint with `view`. A witness further along than
/// this reader cannot be checked for consistency here (only counted).
pub fn compare_witness(
    repo: &Repository,
    view: &LogView,
    witness: &Checkpoint,
    client: Option<&[u8; 32]>,
) -> WitnessReport {
    let mut problem = None;
    let signed = witness.config_id == repo.config_id.0
        && repo
            .config
            .vault_key()
            .is_some_and(|k| witness.verify(&k).is_ok());
    if !signed {
        problem = Some("its checkpoint is not signed by this repository's vault".to_string());
    }
    let n = witness.size as usize;
    let consistent = if n <= view.entries.len() {
        let leaves: Vec<_> = view.entries[..n]
            .iter()
            .map(|e| merkle::leaf_hash(e))
            .collect();
        merkle::root(&leaves) == witness.root
    } else {
        // The witness saw more than this reader: not a fork by itself.
        true
    };
    if signed && !consistent {
        problem = Some(format!(
            "its checkpoint (size {n}) does not match the first {n} entries of the log this \
             vault served here: the vault shows different histories (a fork)"
        ));
    }
    let not_covered = view
        .state
        .snapshots
        .iter()
        .filter(|(_, s)| s.index >= witness.size && client.is_none_or(|c| &s.client == c))
        .map(|(id, _)| *id)
        .collect();
    WitnessReport {
        size: witness.size,
        time_ns: witness.time_ns,
        consistent: signed && consistent,
        not_covered,
        problem,
    }
}
