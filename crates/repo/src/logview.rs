//! The vault's log as a reader sees it: the signed checkpoint checked, then
//! every entry through the one validating fold ([`holdfast_core::logstate`]),
//! on this reader's clock. Clients, the audit and the replica all read the
//! log this way.

use std::ops::ControlFlow;

use holdfast_core::ObjectId;
use holdfast_core::logstate::{LogState, Reader};
use holdfast_core::merkle::{self, Checkpoint, Frontier};

use crate::Repository;
use crate::logcache::LogFile;

/// The entries a reader folded: in memory (a vault, replica or bundle
/// directory's log), or the client's verified copy of a vault's log, read
/// from its file each time they are needed (memory does not grow with it).
#[derive(Clone, Debug)]
pub enum LogEntries {
    Memory(Vec<Vec<u8>>),
    File(LogFile),
}

impl From<Vec<Vec<u8>>> for LogEntries {
    fn from(v: Vec<Vec<u8>>) -> Self {
        LogEntries::Memory(v)
    }
}

impl From<LogFile> for LogEntries {
    fn from(f: LogFile) -> Self {
        LogEntries::File(f)
    }
}

impl LogEntries {
    pub fn len(&self) -> usize {
        match self {
            LogEntries::Memory(v) => v.len(),
            LogEntries::File(f) => f.len() as usize,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Hands each entry, in order, to `f` until it breaks.
    pub fn for_each(
        &self,
        f: &mut dyn FnMut(u64, &[u8]) -> ControlFlow<()>,
    ) -> std::io::Result<()> {
        match self {
            LogEntries::Memory(v) => {
                for (i, e) in v.iter().enumerate() {
                    if f(i as u64, e).is_break() {
                        break;
                    }
                }
                Ok(())
            }
            LogEntries::File(lf) => lf.for_each(f),
        }
    }

    /// Every entry in memory (export writes them into a bundle).
    pub fn to_vec(&self) -> std::io::Result<Vec<Vec<u8>>> {
        match self {
            LogEntries::Memory(v) => Ok(v.clone()),
            LogEntries::File(lf) => {
                let mut out = Vec::with_capacity(lf.len() as usize);
                lf.for_each(&mut |_, e| {
                    out.push(e.to_vec());
                    ControlFlow::Continue(())
                })?;
                Ok(out)
            }
        }
    }

    /// The Merkle root of the first `n` entries, if there are that many.
    pub fn root_at(&self, n: u64) -> std::io::Result<Option<merkle::Hash>> {
        let mut tree = Frontier::new();
        let mut at = (n == 0).then(|| tree.root());
        if n > 0 {
            self.for_each(&mut |_, e| {
                tree.push(merkle::leaf_hash(e));
                if tree.size() == n {
                    at = Some(tree.root());
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            })?;
        }
        Ok(at)
    }
}

/// The folded log, and everything wrong with it (each one tampering).
pub struct LogView {
    pub state: LogState,
    /// The encoded entries as read (audit, export and witness comparisons
    /// read them again).
    pub entries: LogEntries,
    pub checkpoint: Checkpoint,
    pub problems: Vec<String>,
    /// Snapshots whose vault flags this reader could not bear out or
    /// check: `latest` does not choose for their client.
    pub disputed: std::collections::BTreeSet<ObjectId>,
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

/// The vault key that must sign a checkpoint of `size` over `entries`:
/// the config's, or the last key the log's first `size` entries rotated to
/// by executed, quorum-approved proposals.
pub fn vault_key_at(repo: &Repository, entries: &[Vec<u8>], size: u64) -> [u8; 32] {
    let n = (size as usize).min(entries.len());
    let (st, _) = repo.log_state().fold(
        entries[..n].iter().map(|e| e.as_slice()),
        &Reader::at(crate::now_ns()),
        &mut |_| None,
    );
    st.vault_key_at(size)
}

/// Checks `checkpoint` and `entries` against it, folds them, and checks
/// that the checkpoint is signed by the vault key the fold makes current at
/// its size (the config's key, then each executed rotation's: a checkpoint
/// signed by a rotated-out key is tampering). `packs_of` may read snapshot
/// pack lists (`None` skips the checks that need them).
pub fn fold(
    repo: &Repository,
    entries: impl Into<LogEntries>,
    checkpoint: &Checkpoint,
    reader: &Reader,
    read_packs: bool,
) -> LogView {
    let entries = entries.into();
    let mut problems = Vec::new();
    if checkpoint.verify(&checkpoint.signer).is_err() || checkpoint.config_id != repo.config_id.0 {
        problems.push("the log checkpoint is not signed by this repository's vault key".into());
    }
    let mut packs_of = |id: &ObjectId| {
        if !read_packs {
            return None;
        }
        repo.load_snapshot(id).ok().map(|s| s.header.packs)
    };
    // One pass, entry by entry: hashed into the tree's right edge (the
    // root at the checkpoint's size kept), and the first `size` folded.
    // A copy of the log this process just hashed to this checkpoint's root
    // (and holds locked, see logcache.rs) is not hashed a second time.
    let hashed = match &entries {
        LogEntries::File(lf) if lf.verified() && lf.len() == checkpoint.size => Some(lf.root()),
        _ => None,
    };
    let mut state = repo.log_state();
    let mut tree = Frontier::new();
    let mut root_at = (checkpoint.size == 0).then(|| tree.root());
    let mut len = 0u64;
    let read = entries.for_each(&mut |i, e| {
        len = i + 1;
        if hashed.is_none() {
            tree.push(merkle::leaf_hash(e));
            if tree.size() == checkpoint.size {
                root_at = Some(tree.root());
            }
        }
        if i < checkpoint.size {
            state.apply(e, reader, &mut packs_of);
        }
        ControlFlow::Continue(())
    });
    if let Err(e) = read {
        problems.push(format!(
            "the client's copy of the log could not be read: {e}"
        ));
    }
    if hashed.is_some() {
        root_at = hashed;
    }
    if len < checkpoint.size {
        problems.push(format!(
            "the log has {len} entries but the signed checkpoint says {}: truncated",
            checkpoint.size
        ));
    } else if root_at != Some(checkpoint.root) {
        problems.push("the log does not match its signed checkpoint: entries altered".into());
    } else if len > checkpoint.size {
        problems.push(format!(
            "{} log entries after the signed checkpoint: not signed by the vault",
            len - checkpoint.size
        ));
    }
    let want = state.vault_key_at(checkpoint.size);
    if checkpoint.signer != want {
        let old = state
            .vault_keys
            .iter()
            .any(|(k, _)| *k == checkpoint.signer);
        problems.push(format!(
            "the log checkpoint (size {}) is signed by {} key {}, not by the vault key the log's \
             executed rotations make current at that size ({})",
            checkpoint.size,
            if old { "the rotated-out" } else { "an unknown" },
            holdfast_core::id::hex(&checkpoint.signer[..8]),
            holdfast_core::id::hex(&want[..8])
        ));
    }
    // The chain a reader that synced after a rotation gave (--vault-keys):
    // a checkpoint above a rotation it names must be signed by its key (a
    // log forked before the rotation and signed by the old key is refused).
    if let Some(vk) = repo.config.vault_key() {
        match holdfast_store::VaultBackend::seed_chain(&vk) {
            Ok(Some(seed)) => {
                let given = holdfast_store::VaultBackend::chain_key_at(&seed, checkpoint.size);
                if checkpoint.signer != given {
                    problems.push(format!(
                        "the log checkpoint (size {}) is signed by {}, but the chain given \
                         with --vault-keys makes {} the vault key at that size: a \
                         rotated-out key or a log forked before the rotation",
                        checkpoint.size,
                        holdfast_core::id::hex(&checkpoint.signer[..8]),
                        holdfast_core::id::hex(&given[..8])
                    ));
                }
            }
            Ok(None) => {}
            Err(e) => problems.push(e.to_string()),
        }
    }
    problems.extend(state.problems.iter().map(|p| p.to_string()));
    let disputed = confirm_flags(repo, &mut state, &mut problems);
    LogView {
        disputed,
        state,
        entries,
        checkpoint: checkpoint.clone(),
        problems,
    }
}

/// Checks the one vault flag the fold cannot: 66 says the client's signed
/// findings are not empty, which only the snapshot itself shows. (A shrink
/// and a burst are judged by the fold from the log; other codes it refuses.)
/// A flag 66 on a snapshot whose findings are empty is tampering and is
/// dropped; one that cannot be checked (the snapshot does not load) is
/// reported and kept, and the snapshot is *disputed*: `latest` does not
/// choose for its client (an admin names a snapshot by id).
fn confirm_flags(
    repo: &Repository,
    state: &mut LogState,
    problems: &mut Vec<String>,
) -> std::collections::BTreeSet<ObjectId> {
    use holdfast_core::format::Signal;
    let mut disputed = std::collections::BTreeSet::new();
    let to_check: Vec<ObjectId> = state
        .snapshots
        .iter()
        .filter(|(_, s)| s.flags.iter().any(|(c, _)| *c == Signal::CLIENT_REPORTED.0))
        .map(|(id, _)| *id)
        .collect();
    for id in to_check {
        let found = match repo.load_snapshot(&id) {
            Ok(s) => Some(s.findings.is_some_and(|f| !f.is_empty())),
            Err(e) => {
                problems.push(format!(
                    "the vault flagged snapshot {} as client_reported, and it cannot be \
                     checked ({e})",
                    id.short()
                ));
                None
            }
        };
        if found == Some(true) {
            continue;
        }
        if found.is_none() {
            disputed.insert(id);
        }
        if found == Some(false) {
            problems.push(format!(
                "the vault flagged snapshot {} as client_reported, but its client's signed \
                 findings are empty; the flag is ignored",
                id.short()
            ));
            if let Some(s) = state.snapshots.get_mut(&id) {
                s.flags.retain(|(c, _)| *c != Signal::CLIENT_REPORTED.0);
            }
        }
    }
    disputed
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
    // Signed by the vault key of the log at the witness's size (as far as
    // this reader's log reaches: beyond it, the current key).
    let signed = witness.config_id == repo.config_id.0
        && witness
            .verify(&view.state.vault_key_at(witness.size))
            .is_ok();
    if !signed {
        problem = Some("its checkpoint is not signed by this repository's vault".to_string());
    }
    let n = witness.size;
    let consistent = match view.entries.root_at(n) {
        Ok(Some(root)) => root == witness.root,
        // The witness saw more than this reader: not a fork by itself.
        Ok(None) => true,
        Err(e) => {
            problem = Some(format!(
                "the client's copy of the log could not be read: {e}"
            ));
            true
        }
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
