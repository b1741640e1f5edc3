//! The one validating fold over the vault's log.
//!
//! Every party reads the log through [`LogState::apply`]: the vault when it
//! starts and on every append, the replica on every pull, the audit, and
//! clients when they list, verify, restore or back up. Every rule lives here
//! once, so the parties cannot disagree about what the log means.
//!
//! The log is authenticated (the vault signs its checkpoints), but the vault
//! host is one of the attackers (SPEC T3): it holds the vault key and can
//! append whatever it likes. So each entry is also *validated*:
//!
//! * entry times strictly increase, and none is dated after the reader's
//!   clock plus [`MAX_SKEW_NS`];
//! * entries after a checkpoint the reader already held are dated no earlier
//!   than that checkpoint (no backdating into a quiet gap);
//! * a snapshot is added once, by a client, with a lock of at least the
//!   policy's keep-within; a snapshot that is gone never returns;
//! * a reclaim is valid only for a snapshot whose lock has passed on the
//!   log's clock *and* the reader's, that is not among its client's last
//!   [`KEEP_LAST`], and only for packs no live snapshot lists;
//! * an execution needs a proposal signed by an active admin, a quorum of
//!   distinct active admins, the delay passed on the log's clock, and no
//!   veto; a veto is final whatever later happens to the admin who cast it,
//!   and the subject of a removal cannot veto its own removal; a removal
//!   that would leave fewer admins than the quorum is refused;
//! * a reader that has seen the log before counts the delay of a deletion
//!   from when *it* first saw the quorum, on its own clock, and keeps the
//!   data until then;
//! * from a clock hold (kind 12: the vault started with its clock far past
//!   the log) until an executed `AckClock` proposed after it, no deletion:
//!   a reclaim, or an execution that deletes or shortens retention
//!   ([`LogState::deletes`]), is refused; an `AckClock` proposal whose
//!   proposer's clock is more than [`ACK_CLOCK_SKEW_NS`] from its entry's
//!   time is refused.
//!
//! An entry that breaks a rule is reported as a [`Problem`] (tampering) and
//! its destructive part is not applied: damage is never a reason to delete.
//! Effects the reader may carry out are returned as [`Effect`]s.
//!
//! Pure: no I/O and no clock. The caller passes its clock in [`Reader`] and a
//! lookup of snapshot pack lists.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::format::{Config, Member, Retention, Role};
use crate::governance::{ACK_CLOCK_SKEW_NS, Action, Proposal, Status, Vote, VoteKind};
use crate::id::ObjectId;
use crate::vaultlog::{Entry, Event};

const NS: i64 = 1_000_000_000;
/// How far ahead of the reader's clock an entry may be dated.
pub const MAX_SKEW_NS: i64 = 600 * NS;
/// Every client's newest snapshots that no reclaim may take, whatever their
/// age: a stolen client key that stops backing up (or a vault clock that
/// jumps) never empties a client's history.
pub const KEEP_LAST: usize = 3;

/// The party reading the log: its own clock and, if it has read this log
/// before, when.
#[derive(Clone, Debug, Default)]
pub struct Reader {
    /// The reader's clock (ns since the epoch).
    pub now_ns: i64,
    /// Earlier contacts: (log size then, reader's clock then), ascending.
    /// `None` for a reader with no history (one audit run): the log's own
    /// times are used for delays.
    pub contacts: Option<Vec<(u64, i64)>>,
    /// A checkpoint the reader held before this read: (size, vault time).
    pub held: Option<(u64, i64)>,
}

impl Reader {
    /// A reader with no history, at `now_ns`.
    pub fn at(now_ns: i64) -> Self {
        Reader {
            now_ns,
            ..Default::default()
        }
    }

    /// When this reader first saw entry `index`, if it keeps track.
    fn first_seen(&self, index: u64) -> Option<i64> {
        let c = self.contacts.as_ref()?;
        Some(
            c.iter()
                .find(|(n, _)| *n > index)
                .map_or(self.now_ns, |(_, t)| *t),
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// Index of the entry that broke a rule.
    pub index: u64,
    pub what: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "log entry {}: {}", self.index, self.what)
    }
}

/// What an entry lets the reader do to its copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Early deletion by quorum: delete the snapshot.
    Erase(ObjectId),
    /// Its lock passed: the vault deletes it; copies may keep it.
    ReclaimSnapshot(ObjectId),
    /// No live snapshot lists it.
    ReclaimPack(ObjectId),
}

#[derive(Clone, Debug)]
pub struct Snap {
    pub client: [u8; 32],
    /// Index of its `SnapshotAdded` entry.
    pub index: u64,
    /// The vault's time when it was committed: what orders snapshots.
    pub added_ns: i64,
    pub lock_until_ns: i64,
    /// Its pack list, if the reader could read it.
    pub packs: Option<Vec<ObjectId>>,
    /// An authorized erasure this reader does not apply before this time.
    pub erase_due_ns: Option<i64>,
    /// Anomalies the vault logged about it (signal code, count): a flagged
    /// snapshot never takes a retention slot.
    pub flags: Vec<(u8, u64)>,
    /// The admin quorum acknowledged its flags as a false alarm: its
    /// client's signed findings no longer count either, and no flag is
    /// added again.
    pub lifted: bool,
    /// The stored bytes it references, as the log says (kind 11).
    pub stored_bytes: Option<u64>,
    /// The restore key epoch current when it was added (an index into
    /// [`LogState::restore_publics`]): a snapshot added after a rotation
    /// ran must name that epoch (format.md §11.2).
    pub epoch: usize,
}

/// Most flags kept per snapshot (a log cannot grow a reader's memory).
pub const MAX_FLAGS: usize = 16;
/// More commits than this from one client within an hour of the vault's
/// time are a burst (the vault's flag 65). Readers recount them from the log.
pub const BURST_PER_HOUR: u64 = 30;
/// How many points one executed proposal may raise a threshold by
/// (Veeam's model: acknowledging a false alarm loosens a rule a little).
pub const MAX_RAISE: u32 = 5;

/// The signals whose threshold the quorum may set, and their defaults.
/// The vault's: 64 (shrink) in percent of the baseline's stored bytes the
/// snapshot must have lost (50: less than half is left); 65 (burst) in
/// commits from one client within an hour (more than it is a burst). The
/// client's (applied by a client that backs up through a vault whose log
/// it verified; [`crate::detect::CLIENT_THRESHOLDS`]): 1 in_place, 2
/// entropy, 3 not_mail (messages, default 1), 4 renames (in one folder,
/// 200), 5 new_extension (more than, 20), 6 deletions (messages, 100), 8
/// volume (z-score in tenths, 30). Higher means fewer alarms.
pub fn default_threshold(signal: u8) -> Option<u32> {
    match signal {
        64 => Some(50),
        65 => Some(BURST_PER_HOUR as u32),
        _ => crate::detect::client_default(signal),
    }
}

/// The least value a threshold may be set to: a burst threshold under 4 an
/// hour, or a shrink under 10 percent, would flag ordinary backups (and a
/// flagged snapshot keeps no retention slot); a client signal's floor is in
/// [`crate::detect::CLIENT_THRESHOLDS`].
pub fn min_threshold(signal: u8) -> u32 {
    match signal {
        64 => 10,
        65 => 4,
        _ => crate::detect::client_floor(signal).unwrap_or(4),
    }
}

/// True when a snapshot referencing `now` stored bytes shrank from `base`
/// by more than `pct` percent (`pct` 100 never fires).
pub fn shrunk(now: u64, base: u64, pct: u32) -> bool {
    let keep = 100u128.saturating_sub(pct.min(100) as u128);
    (now as u128) * 100 < (base as u128) * keep
}
const HOUR_NS: i64 = 3600 * NS;
/// The vault flags a snapshot that references less than half the stored
/// bytes of its client's previous snapshot, or of its last healthy one of
/// the last [`SHRINK_WINDOW_NS`], when that one referenced at least
/// [`SHRINK_MIN_BYTES`] (flag 64). Every reader's fold judges it from the
/// stored bytes the log records (kind 11).
pub const SHRINK_MIN_BYTES: u64 = 64 << 10;
pub const SHRINK_WINDOW_NS: i64 = 7 * 86_400 * NS;
/// Commit times kept per client to recount bursts (two hours' worth, and at
/// most this many: the vault refuses far fewer per hour).
const RECENT_MAX: usize = 4096;
/// Snapshots kept per client as shrink baselines (newest first, live ones
/// only count): the previous one, and the last unflagged one among them.
const RECENT_SNAPS: usize = 64;

/// A clock hold in force (log kind 12), until an executed `AckClock`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClockHold {
    /// The first hold entry since the last acknowledgement.
    pub first: u64,
    /// The newest: an acknowledgement must be proposed after it.
    pub last: u64,
    /// The gap the newest one logged (ns).
    pub gap_ns: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GoneHow {
    Reclaimed,
    Erased,
}

#[derive(Clone, Copy, Debug)]
pub struct Gone {
    pub how: GoneHow,
    pub index: u64,
    pub time_ns: i64,
    pub client: [u8; 32],
}

#[derive(Clone, Debug)]
pub struct Prop {
    pub proposal: Proposal,
    pub index: u64,
    pub received_ns: i64,
    /// Approvals in log order: (admin, entry index, time). The proposer's
    /// own signature counts as the first.
    pub approvals: Vec<([u8; 32], u64, i64)>,
    /// The veto that stopped it: final.
    pub veto: Option<([u8; 32], i64)>,
    pub executed: Option<(u64, i64)>,
}

/// The state the log describes, as far as its entries were valid.
#[derive(Clone, Debug)]
pub struct LogState {
    pub config_id: ObjectId,
    pub quorum: usize,
    pub delay_secs: u64,
    /// Every identity the caller knows (config plus verified records).
    pub members: HashMap<[u8; 32], Member>,
    pub removed: BTreeSet<[u8; 32]>,
    pub retention: Retention,
    /// Live snapshots.
    pub snapshots: BTreeMap<ObjectId, Snap>,
    /// Snapshots the log validly deleted or reclaimed: never to return.
    pub gone: BTreeMap<ObjectId, Gone>,
    pub proposals: BTreeMap<ObjectId, Prop>,
    pub identities: BTreeSet<ObjectId>,
    /// The restore key epochs' public keys, oldest first: the config's,
    /// then each executed rotation's. Clients seal to the last.
    pub restore_publics: Vec<[u8; 32]>,
    /// The chain of vault keys, oldest first: (key, the smallest checkpoint
    /// size it signs). The config's key from 0; a `RotateVaultKey` executed
    /// at entry `i` makes its key the signer of every checkpoint of size
    /// `> i` (see [`LogState::vault_key_at`]).
    pub vault_keys: Vec<([u8; 32], u64)>,
    /// Entries folded.
    pub size: u64,
    /// Time of the newest valid entry.
    pub last_time_ns: i64,
    pub problems: Vec<Problem>,
    /// How many live snapshots list each pack (those whose lists are known).
    pack_refs: HashMap<ObjectId, u32>,
    /// Thresholds the quorum set (signal → value); the others are at
    /// [`default_threshold`].
    pub thresholds: BTreeMap<u8, u32>,
    /// Each client's snapshots in the order they were added (the last
    /// [`RECENT_SNAPS`]): the baselines of a shrink.
    recent_snaps: HashMap<[u8; 32], std::collections::VecDeque<ObjectId>>,
    /// Each client's recent commit times (the last two hours), to recount a
    /// burst the vault flags.
    recent_adds: HashMap<[u8; 32], std::collections::VecDeque<i64>>,
    /// Client key successions the caller read (verified records, format.md
    /// §4.3): record id → (predecessor, successor). Applied when the log
    /// adds the record (kind 7).
    successions: HashMap<ObjectId, ([u8; 32], [u8; 32])>,
    /// The name each succession record gives its successor (judged by the
    /// record's own name, never by another record naming the same key).
    succession_names: HashMap<ObjectId, String>,
    /// Successor keys whose record the log has not (validly) added yet:
    /// not active.
    pending: HashSet<[u8; 32]>,
    /// Keys that are members by the config or a version 1 record: a
    /// successor record naming one never makes it pending (a stray record
    /// must not silence an active key).
    plain: HashSet<[u8; 32]>,
    /// Every identity record the caller holds, verified and stored under
    /// its content id (any version): a record the log adds must be one of
    /// them, or the reader cannot apply it as every other reader does.
    held: HashSet<ObjectId>,
    /// Records the caller holds but could not use (damaged, not verified,
    /// or not named by their content id) → why.
    bad_records: HashMap<ObjectId, String>,
    /// Each successor key that joined → the first key of its client (what
    /// every per-client rule counts by: one client across its keys).
    lineage: HashMap<[u8; 32], [u8; 32]>,
    /// The clock hold in force, if any (see [`LogState::clock_held`]).
    clock_hold: Option<ClockHold>,
}

impl LogState {
    pub fn new(config: &Config, config_id: ObjectId, members: HashMap<[u8; 32], Member>) -> Self {
        // The config's members always win: an identity record (one admin's
        // signature) never changes the role or name of a config member.
        let mut members = members;
        for m in &config.members {
            members.insert(m.public, m.clone());
        }
        LogState {
            config_id,
            quorum: config.quorum as usize,
            delay_secs: config.delay_secs,
            members,
            removed: BTreeSet::new(),
            retention: config.retention.clone(),
            snapshots: BTreeMap::new(),
            gone: BTreeMap::new(),
            proposals: BTreeMap::new(),
            identities: BTreeSet::new(),
            restore_publics: vec![config.repo_public],
            vault_keys: vec![(config.vault_key().unwrap_or([0; 32]), 0)],
            size: 0,
            last_time_ns: i64::MIN,
            problems: Vec::new(),
            pack_refs: HashMap::new(),
            recent_adds: HashMap::new(),
            recent_snaps: HashMap::new(),
            thresholds: BTreeMap::new(),
            successions: HashMap::new(),
            succession_names: HashMap::new(),
            pending: HashSet::new(),
            plain: config.members.iter().map(|m| m.public).collect(),
            held: HashSet::new(),
            bad_records: HashMap::new(),
            lineage: HashMap::new(),
            clock_hold: None,
        }
    }

    /// Tells the fold about an identity record the caller read and
    /// verified (stored as `identities/<id>`): a successor record (version
    /// 2) takes effect where the log adds it. Call before folding.
    pub fn register_record(&mut self, id: ObjectId, rec: &crate::format::IdentityRecord) {
        self.held.insert(id);
        if rec.predecessor.is_none() {
            self.plain.insert(rec.member.public);
        }
        if let Some(p) = &rec.predecessor
            && !self.successions.contains_key(&id)
        {
            self.successions.insert(id, (p.public, rec.member.public));
            self.succession_names.insert(id, rec.member.name.clone());
            self.pending.insert(rec.member.public);
        }
    }

    /// Tells the fold the caller holds record `id` (verified, named by its
    /// content id) without applying it: one naming a member of the config,
    /// which never overrides the config.
    pub fn hold_record(&mut self, id: ObjectId) {
        self.held.insert(id);
    }

    /// Tells the fold the caller holds a record under the name `id` that
    /// it could not use (`why`: damaged, not verified, or its name is not
    /// its content id). The log adding it is a problem.
    pub fn refuse_record(&mut self, id: ObjectId, why: impl Into<String>) {
        self.bad_records.insert(id, why.into());
    }

    /// Forgets record `id` registered but not logged (the vault, when
    /// logging it failed: the record stays stored, and the next start
    /// judges it again): its successor is no longer pending.
    pub fn unregister_record(&mut self, id: &ObjectId) {
        if self.identities.contains(id) {
            return;
        }
        self.held.remove(id);
        self.succession_names.remove(id);
        if let Some((_, succ)) = self.successions.remove(id) {
            self.pending.remove(&succ);
        }
    }

    /// Whether `key` is a successor whose record the log has not (validly)
    /// added yet: it may not act.
    pub fn is_pending(&self, key: &[u8; 32]) -> bool {
        self.pending.contains(key) && !self.plain.contains(key)
    }

    /// Identity records the log added that the caller does not hold, or
    /// holds but could not use.
    pub fn records_not_held(&self) -> Vec<ObjectId> {
        self.identities
            .iter()
            .filter(|i| !self.held.contains(i) || self.bad_records.contains_key(i))
            .copied()
            .collect()
    }

    /// Whether the caller registered record `id` as a succession.
    pub fn registered(&self, id: &ObjectId) -> bool {
        self.successions.contains_key(id)
    }

    /// The client a key belongs to: the first key of its succession chain
    /// (itself, for a key that succeeds none). Per-client rules (baselines,
    /// bursts, the last snapshots kept, retention slots) count by it.
    pub fn client_of(&self, key: &[u8; 32]) -> [u8; 32] {
        self.lineage.get(key).copied().unwrap_or(*key)
    }

    /// The key that succeeded `key`, if one joined.
    pub fn successor_of(&self, key: &[u8; 32]) -> Option<[u8; 32]> {
        self.successions
            .values()
            .find(|(p, s)| p == key && self.lineage.contains_key(s))
            .map(|(_, s)| *s)
    }

    /// Why the succession in record `id` (registered) may not join now.
    pub fn succession_refused(&self, id: &ObjectId) -> Option<String> {
        let (pred, succ) = self.successions.get(id)?;
        let name = self.succession_names.get(id).map_or("", String::as_str);
        self.succession_problem(id, pred, succ, name)
    }

    /// Why record `id`, making `succ` the successor of `pred` under
    /// `name`, may not join now, if it may not: the predecessor must be an
    /// active client of that name, the successor a key never seen before.
    /// The vault asks before it stores and logs the record; every reader's
    /// fold asks where the log adds it.
    pub fn succession_problem(
        &self,
        id: &ObjectId,
        pred: &[u8; 32],
        succ: &[u8; 32],
        name: &str,
    ) -> Option<String> {
        if self.identities.contains(id) {
            return Some("this succession was already logged".into());
        }
        if !self.is_client(pred) {
            return Some(
                "its predecessor is not an active client (revoked, removed, already \
                 succeeded, or not a client)"
                    .into(),
            );
        }
        if self.members.get(pred).is_none_or(|m| m.name != name) {
            return Some("the successor does not keep its predecessor's name".into());
        }
        let other_member = self
            .members
            .get(succ)
            .is_some_and(|m| m.role != Role::Client || m.name != name);
        if other_member
            || self.removed.contains(succ)
            || self.lineage.contains_key(succ)
            || self.vault_keys.iter().any(|(k, _)| k == succ)
            || self.restore_publics.contains(succ)
            || self
                .successions
                .iter()
                .any(|(i, (_, s))| i != id && s == succ && self.identities.contains(i))
            || self.snapshots.values().any(|s| &s.client == succ)
            || self.gone.values().any(|g| &g.client == succ)
        {
            return Some("the successor key is not new (it is or was another key)".into());
        }
        None
    }

    /// Folds a whole log. `packs_of` reads a snapshot's pack list (`None`
    /// when unreadable or not wanted).
    pub fn fold<'a>(
        mut self,
        entries: impl IntoIterator<Item = &'a [u8]>,
        reader: &Reader,
        packs_of: &mut dyn FnMut(&ObjectId) -> Option<Vec<ObjectId>>,
    ) -> (Self, Vec<Effect>) {
        let mut effects = Vec::new();
        for raw in entries {
            effects.extend(self.apply(raw, reader, packs_of));
        }
        (self, effects)
    }

    /// The vault key that must sign a checkpoint of `size` entries, as far
    /// as this fold has read: the config's key, or the key of the last
    /// rotation executed at an entry before `size`. A checkpoint is valid
    /// iff its signature verifies under its signer and its signer is this
    /// key; anything else (an old key after a rotation) is tampering.
    pub fn vault_key_at(&self, size: u64) -> [u8; 32] {
        self.vault_keys
            .iter()
            .rev()
            .find(|(_, from)| *from <= size)
            .map_or([0; 32], |(k, _)| *k)
    }

    /// The vault key now (the last of the chain).
    pub fn vault_key(&self) -> [u8; 32] {
        self.vault_keys.last().map_or([0; 32], |(k, _)| *k)
    }

    /// A signal's threshold now (see [`default_threshold`]).
    pub fn threshold(&self, signal: u8) -> Option<u32> {
        self.thresholds
            .get(&signal)
            .copied()
            .or_else(|| default_threshold(signal))
    }

    /// The clock hold in force: from a kind-12 entry until an executed
    /// `AckClock` proposed after it, no deletion may happen.
    pub fn clock_held(&self) -> Option<ClockHold> {
        self.clock_hold
    }

    /// Whether executing `action` now would delete data or bring a deletion
    /// forward: an early deletion, or a retention policy lower than the one
    /// in force in any of its numbers. Held while the clock is.
    pub fn deletes(&self, action: &Action) -> bool {
        match action {
            Action::DeleteSnapshots(_) => true,
            Action::SetRetention(r) => {
                let now = &self.retention;
                r.keep_within_secs < now.keep_within_secs
                    || r.daily < now.daily
                    || r.weekly < now.weekly
                    || r.monthly < now.monthly
                    || r.yearly < now.yearly
            }
            _ => false,
        }
    }

    /// Whether proposal `id` may run now, by every rule that depends on the
    /// state (quorum, delay and vetoes aside): [`Self::action_allowed`] and
    /// the clock hold. The vault asks before it logs an execution; every
    /// reader's fold when it meets one.
    pub fn execution_allowed(&self, id: &ObjectId) -> Result<(), String> {
        let Some(p) = self.proposals.get(id) else {
            return Err("no such proposal".into());
        };
        self.action_allowed(&p.proposal.action)?;
        let hold = self.clock_hold;
        match (&p.proposal.action, hold) {
            (Action::AckClock, None) => {
                Err("the vault's clock is not held: nothing to acknowledge".into())
            }
            (Action::AckClock, Some(h)) if p.index < h.last => Err(format!(
                "it was proposed before the clock hold at log entry {}, which it cannot have \
                 acknowledged (propose a new one)",
                h.last
            )),
            (a, Some(h)) if self.deletes(a) => Err(format!(
                "the vault's clock is held (log entry {}: {} h past the log at a start) until \
                 an admin quorum acknowledges it (`holdfast propose ack-clock`)",
                h.last,
                h.gap_ns / (3600 * NS)
            )),
            _ => Ok(()),
        }
    }

    /// Why an `AckClock` proposal dated `proposer_ns` by its proposer may
    /// not enter a log at `vault_ns`: the two clocks disagree by more than
    /// [`ACK_CLOCK_SKEW_NS`], so the quorum would acknowledge a clock its
    /// own clocks contradict.
    pub fn ack_clock_skew(proposer_ns: i64, vault_ns: i64) -> Option<String> {
        let d = proposer_ns.saturating_sub(vault_ns);
        (d.saturating_abs() > ACK_CLOCK_SKEW_NS).then(|| {
            format!(
                "the proposer's clock is {} min {} the vault's (at most {} min): one of them is \
                 wrong; fix it before acknowledging the vault's clock",
                d.saturating_abs() / (60 * NS),
                if d > 0 { "ahead of" } else { "behind" },
                ACK_CLOCK_SKEW_NS / (60 * NS)
            )
        })
    }

    /// Whether `action` may run now, by the rules that depend on the state
    /// (quorum, delay and vetoes aside): the vault checks it when a
    /// proposal arrives and before it logs an execution, and every reader's
    /// fold when it meets the execution. `Err` says why not.
    pub fn action_allowed(&self, action: &Action) -> Result<(), String> {
        match action {
            Action::RemoveIdentity(k) => {
                let admins = self.active_admins();
                if admins.contains(k) && admins.len() - 1 < self.quorum {
                    return Err("it would leave fewer admins than the quorum".into());
                }
            }
            Action::SetThreshold { signal, from, to } => {
                let name = crate::format::Signal(*signal).name();
                let Some(now) = self.threshold(*signal) else {
                    return Err(format!("signal {name} has no threshold the quorum can set"));
                };
                if now != *from {
                    return Err(format!(
                        "the {name} threshold is {now}, not {from} as the proposal assumed"
                    ));
                }
                if *to > now.saturating_add(MAX_RAISE) {
                    return Err(format!(
                        "a threshold is raised by at most {MAX_RAISE} points at a time: \
                         {name} is {now}, at most {}",
                        now.saturating_add(MAX_RAISE)
                    ));
                }
                if *to < min_threshold(*signal) {
                    return Err(format!(
                        "the {name} threshold is at least {} (lower would flag ordinary backups)",
                        min_threshold(*signal)
                    ));
                }
            }
            Action::RotateVaultKey { key, pop } => {
                if !crate::governance::verify_vault_key_pop(&self.config_id, key, pop) {
                    return Err("the new vault key's proof of possession does not verify".into());
                }
                if self.vault_keys.iter().any(|(k, _)| k == key) {
                    return Err(
                        "this key is or was already a vault key of this repository (a key \
                         never returns)"
                            .into(),
                    );
                }
                if self.members.contains_key(key) {
                    return Err("this key is a member's key, not a new vault key".into());
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// True when the snapshot counts as anomalous for `latest` and
    /// retention: the vault flagged it or its client's signed findings are
    /// not empty (`client_found`), and the quorum did not lift that.
    pub fn anomalous(&self, id: &ObjectId, client_found: bool) -> bool {
        match self.snapshots.get(id) {
            Some(s) => !s.lifted && (client_found || !s.flags.is_empty()),
            None => client_found,
        }
    }

    pub fn is_active_admin(&self, k: &[u8; 32]) -> bool {
        !self.removed.contains(k) && self.members.get(k).is_some_and(|m| m.role == Role::Admin)
    }

    pub fn active_admins(&self) -> BTreeSet<[u8; 32]> {
        self.members
            .values()
            .filter(|m| m.role == Role::Admin && !self.removed.contains(&m.public))
            .map(|m| m.public)
            .collect()
    }

    /// An active client key: a client, not revoked, removed or succeeded,
    /// and (a successor) its record joined the log.
    pub fn is_client(&self, k: &[u8; 32]) -> bool {
        !self.removed.contains(k)
            && !self.is_pending(k)
            && self.members.get(k).is_some_and(|m| m.role == Role::Client)
    }

    /// Live snapshots whose pack lists the reader could not read: while any
    /// exist, no pack may be reclaimed.
    pub fn unknown_pack_lists(&self) -> Vec<ObjectId> {
        self.snapshots
            .iter()
            .filter(|(_, s)| s.packs.is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Is this pack listed by a live snapshot (as far as lists are known)?
    pub fn pack_live(&self, p: &ObjectId) -> bool {
        self.pack_refs.get(p).is_some_and(|n| *n > 0)
    }

    /// The newest [`KEEP_LAST`] live snapshots of every client (by the
    /// vault's time): no reclaim may take them. One pass over the snapshots.
    pub fn last_of_each_client(&self) -> HashSet<ObjectId> {
        let mut newest: HashMap<[u8; 32], Vec<(i64, ObjectId)>> = HashMap::new();
        for (id, s) in &self.snapshots {
            let v = newest.entry(self.client_of(&s.client)).or_default();
            v.push((s.added_ns, *id));
            if v.len() > KEEP_LAST {
                v.sort_unstable_by(|a, b| b.cmp(a));
                v.truncate(KEEP_LAST);
            }
        }
        newest.into_values().flatten().map(|(_, id)| id).collect()
    }

    /// A proposal's status at `now_ns` (the caller's clock).
    pub fn status(&self, id: &ObjectId, now_ns: i64) -> Option<Status> {
        let p = self.proposals.get(id)?;
        if let Some((by, _)) = p.veto {
            return Some(Status::Vetoed { by });
        }
        Some(match self.quorum_at(p) {
            None => Status::Pending {
                approvals: self.counted(p).len(),
                needed: self.quorum,
            },
            Some((_, t)) => {
                let until_ns = t.saturating_add(self.delay_ns());
                if now_ns < until_ns {
                    Status::Waiting { until_ns }
                } else {
                    Status::Ready
                }
            }
        })
    }

    fn delay_ns(&self) -> i64 {
        (self.delay_secs.min(i64::MAX as u64 / (2 * NS as u64)) as i64) * NS
    }

    /// Distinct approvals that count now: admins still active.
    fn counted(&self, p: &Prop) -> Vec<([u8; 32], u64, i64)> {
        let mut out: Vec<([u8; 32], u64, i64)> = Vec::new();
        for a in &p.approvals {
            if self.is_active_admin(&a.0) && !out.iter().any(|o| o.0 == a.0) {
                out.push(*a);
            }
        }
        out
    }

    /// The entry (index, time) whose approval completed the quorum.
    fn quorum_at(&self, p: &Prop) -> Option<(u64, i64)> {
        let c = self.counted(p);
        if self.quorum == 0 || c.len() < self.quorum {
            return None;
        }
        let q = c[self.quorum - 1];
        Some((q.1, q.2))
    }

    fn problem(&mut self, index: u64, what: impl Into<String>) {
        self.problems.push(Problem {
            index,
            what: what.into(),
        });
    }

    /// Folds one encoded entry.
    pub fn apply(
        &mut self,
        raw: &[u8],
        reader: &Reader,
        packs_of: &mut dyn FnMut(&ObjectId) -> Option<Vec<ObjectId>>,
    ) -> Vec<Effect> {
        let index = self.size;
        self.size += 1;
        let e = match Entry::decode(raw) {
            Ok(e) => e,
            Err(x) => {
                self.problem(index, format!("malformed: {x}"));
                return Vec::new();
            }
        };
        // Time: strictly increasing, not in the reader's future, not before
        // a checkpoint the reader held.
        let mut time_ok = true;
        if e.time_ns > reader.now_ns.saturating_add(MAX_SKEW_NS) {
            self.problem(
                index,
                format!(
                    "dated {} s after this reader's clock",
                    (e.time_ns - reader.now_ns) / NS
                ),
            );
            time_ok = false;
        } else if e.time_ns <= self.last_time_ns {
            self.problem(index, "dated before the entry before it");
            time_ok = false;
        } else if let Some((n, t)) = reader.held
            && index >= n
            && e.time_ns < t
        {
            self.problem(
                index,
                "dated before a checkpoint this reader held that did not include it (backdated)",
            );
            time_ok = false;
        }
        if time_ok {
            self.last_time_ns = e.time_ns;
        }
        let t = e.time_ns;
        match e.event {
            Event::SnapshotAdded {
                snapshot,
                client,
                lock_until_ns,
            } => {
                if self.snapshots.contains_key(&snapshot) || self.gone.contains_key(&snapshot) {
                    self.problem(
                        index,
                        format!("adds snapshot {} a second time", snapshot.short()),
                    );
                    return Vec::new();
                }
                if !self.is_client(&client) {
                    self.problem(
                        index,
                        format!(
                            "adds snapshot {} for a key that is not an active client",
                            snapshot.short()
                        ),
                    );
                    return Vec::new();
                }
                let min_lock = t.saturating_add(
                    (self
                        .retention
                        .keep_within_secs
                        .min(i64::MAX as u64 / (2 * NS as u64)) as i64)
                        * NS,
                );
                let mut lock = lock_until_ns;
                if lock < min_lock {
                    self.problem(
                        index,
                        format!(
                            "locks snapshot {} for less than the policy's keep-within",
                            snapshot.short()
                        ),
                    );
                    lock = min_lock;
                }
                let who = self.client_of(&client);
                let recent = self.recent_adds.entry(who).or_default();
                while recent
                    .front()
                    .is_some_and(|x| *x < t.saturating_sub(2 * HOUR_NS))
                    || recent.len() >= RECENT_MAX
                {
                    recent.pop_front();
                }
                recent.push_back(t);
                // A burst: every reader counts it from the log itself.
                let n = recent
                    .iter()
                    .filter(|x| **x > t.saturating_sub(HOUR_NS))
                    .count() as u64;
                let limit = self.threshold(65).unwrap_or(BURST_PER_HOUR as u32) as u64;
                let flags = if n > limit { vec![(65, n)] } else { Vec::new() };
                let order = self.recent_snaps.entry(who).or_default();
                if order.len() >= RECENT_SNAPS {
                    order.pop_front();
                }
                order.push_back(snapshot);
                let packs = packs_of(&snapshot);
                if let Some(ps) = &packs {
                    for p in ps {
                        *self.pack_refs.entry(*p).or_default() += 1;
                    }
                }
                self.snapshots.insert(
                    snapshot,
                    Snap {
                        client,
                        index,
                        added_ns: t,
                        lock_until_ns: lock,
                        packs,
                        erase_due_ns: None,
                        flags,
                        lifted: false,
                        stored_bytes: None,
                        epoch: self.restore_publics.len().saturating_sub(1),
                    },
                );
                Vec::new()
            }
            Event::LockExtended {
                snapshot,
                until_ns,
                admin,
            } => {
                let by_ok = self.is_active_admin(&admin)
                    || self
                        .members
                        .get(&admin)
                        .is_some_and(|m| m.role == Role::Vault)
                    || self.vault_keys.iter().any(|(k, _)| *k == admin);
                if !by_ok {
                    self.problem(index, "lock extended by a key that is not an admin");
                }
                match self.snapshots.get_mut(&snapshot) {
                    Some(s) if until_ns > s.lock_until_ns => s.lock_until_ns = until_ns,
                    Some(_) => self.problem(index, "a lock \"extension\" that does not extend"),
                    None => {}
                }
                Vec::new()
            }
            Event::Proposed { proposal } => {
                let p = match Proposal::decode(&proposal) {
                    Ok(p) => p,
                    Err(x) => {
                        self.problem(index, format!("bad proposal: {x}"));
                        return Vec::new();
                    }
                };
                if p.config_id != self.config_id {
                    self.problem(index, "proposal for another repository");
                    return Vec::new();
                }
                if !self.is_active_admin(&p.proposer) {
                    self.problem(index, "proposal by a key that is not an active admin");
                    return Vec::new();
                }
                let id = p.id();
                if self.proposals.contains_key(&id) {
                    self.problem(index, "the same proposal twice");
                    return Vec::new();
                }
                if p.action == Action::AckClock
                    && let Some(why) = Self::ack_clock_skew(p.time_ns, t)
                {
                    self.problem(
                        index,
                        format!("a clock acknowledgement refused: {why}; not applied"),
                    );
                    return Vec::new();
                }
                let proposer = p.proposer;
                self.proposals.insert(
                    id,
                    Prop {
                        proposal: p,
                        index,
                        received_ns: t,
                        approvals: if time_ok {
                            vec![(proposer, index, t)]
                        } else {
                            Vec::new()
                        },
                        veto: None,
                        executed: None,
                    },
                );
                Vec::new()
            }
            Event::Voted { vote } => {
                let v = match Vote::decode(&vote) {
                    Ok(v) => v,
                    Err(x) => {
                        self.problem(index, format!("bad vote: {x}"));
                        return Vec::new();
                    }
                };
                if !self.is_active_admin(&v.admin) {
                    self.problem(index, "vote by a key that is not an active admin");
                    return Vec::new();
                }
                let Some(p) = self.proposals.get(&v.proposal) else {
                    self.problem(index, "vote on an unknown proposal");
                    return Vec::new();
                };
                if p.executed.is_some() {
                    self.problem(index, "vote on a proposal already executed");
                    return Vec::new();
                }
                if v.kind == VoteKind::Veto && p.proposal.action == Action::RemoveIdentity(v.admin)
                {
                    self.problem(index, "the subject of a removal vetoes its own removal");
                    return Vec::new();
                }
                if !time_ok {
                    // A vote whose time cannot be trusted does not count
                    // towards a quorum (a veto always counts: it only stops).
                    if v.kind == VoteKind::Approve {
                        return Vec::new();
                    }
                }
                let p = self.proposals.get_mut(&v.proposal).expect("checked above");
                match v.kind {
                    VoteKind::Approve => p.approvals.push((v.admin, index, t)),
                    VoteKind::Veto => {
                        if p.veto.is_none() {
                            p.veto = Some((v.admin, t));
                        }
                    }
                }
                Vec::new()
            }
            Event::Executed { proposal } => self.execute(index, t, time_ok, proposal, reader),
            Event::Reclaimed { snapshots, packs } => {
                if !time_ok {
                    self.problem(index, "a reclaim with an untrustworthy time: not applied");
                    return Vec::new();
                }
                if let Some(h) = self.clock_hold {
                    self.problem(
                        index,
                        format!(
                            "a reclaim while the vault's clock is held (log entry {}) and no \
                             admin quorum acknowledged it: not applied",
                            h.last
                        ),
                    );
                    return Vec::new();
                }
                self.reclaim(index, t, snapshots, packs, reader)
            }
            Event::IdentityAdded { record } => {
                // A record only the files outside the log carry: a reader
                // without it (or with it damaged or renamed) would fold
                // differently from the others, e.g. keep a key a
                // succession revoked.
                if let Some(why) = self.bad_records.get(&record) {
                    let what = format!(
                        "adds identity record {}, which this reader holds unusable ({why}): \
                         not applied",
                        record.short()
                    );
                    self.problem(index, what);
                } else if !self.held.contains(&record) {
                    self.problem(
                        index,
                        format!(
                            "adds identity record {}, which this reader does not hold \
                             (missing, renamed or damaged): not applied",
                            record.short()
                        ),
                    );
                } else if let Some((pred, succ)) = self.successions.get(&record).copied() {
                    if let Some(why) = self.succession_refused(&record) {
                        self.problem(
                            index,
                            format!(
                                "adds the succession of client key {}: {why}; not applied",
                                crate::id::hex(&pred[..4])
                            ),
                        );
                    } else {
                        // The predecessor is revoked at once; the successor
                        // is the same client from here on.
                        self.removed.insert(pred);
                        self.pending.remove(&succ);
                        let first = self.client_of(&pred);
                        self.lineage.insert(succ, first);
                    }
                }
                self.identities.insert(record);
                Vec::new()
            }
            Event::Flagged {
                snapshot,
                signal,
                count,
            } => {
                // A shrink or a burst is judged by the fold itself (at the
                // `Stored` and `SnapshotAdded` entries), the same way for
                // every reader: the vault's own flag must agree, and adds
                // nothing; one the fold did not raise is not applied (the
                // vault host cannot make `latest` skip a snapshot by
                // calling it one).
                if signal == crate::format::Signal::SHRINK.0
                    || signal == crate::format::Signal::BURST.0
                {
                    let ours = self
                        .snapshots
                        .get(&snapshot)
                        .is_some_and(|s| s.flags.iter().any(|(c, _)| *c == signal));
                    if !ours {
                        self.problem(
                            index,
                            format!(
                                "flags snapshot {} as a {}, which the log's own commit times \
                                 and stored bytes do not bear out: not applied",
                                snapshot.short(),
                                crate::format::Signal(signal).name()
                            ),
                        );
                    }
                    return Vec::new();
                }
                if signal != crate::format::Signal::CLIENT_REPORTED.0 {
                    self.problem(
                        index,
                        format!(
                            "flags snapshot {} with code {signal}, not a vault signal: not applied",
                            snapshot.short()
                        ),
                    );
                    return Vec::new();
                }
                match self.snapshots.get_mut(&snapshot) {
                    Some(s) if s.lifted => self.problem(
                        index,
                        format!(
                            "flags snapshot {} whose flags the admins lifted: not applied",
                            snapshot.short()
                        ),
                    ),
                    Some(s) => {
                        if s.flags.len() < MAX_FLAGS {
                            s.flags.push((signal, count));
                        }
                    }
                    None => self.problem(
                        index,
                        format!("flags snapshot {} which is not live", snapshot.short()),
                    ),
                }
                Vec::new()
            }
            Event::Stored { snapshot, bytes } => {
                self.stored(index, snapshot, bytes);
                Vec::new()
            }
            Event::ClockHeld { gap_ns } => {
                // Applied whatever its time: it only stops deletions.
                self.clock_hold = Some(ClockHold {
                    first: self.clock_hold.map_or(index, |h| h.first),
                    last: index,
                    gap_ns,
                });
                Vec::new()
            }
            Event::ClientRevoked {
                client,
                admin,
                signed,
            } => {
                let signed_ok = signed.is_some_and(|(st, sig)| {
                    crate::governance::verify_revocation(&self.config_id, &client, &admin, st, &sig)
                });
                if !signed_ok {
                    self.problem(
                        index,
                        "a client revocation without its admin's signature: not applied",
                    );
                } else if !self.is_active_admin(&admin) {
                    self.problem(
                        index,
                        "a client revoked by a key that is not an active admin",
                    );
                } else if !self.is_client(&client) {
                    self.problem(index, "revokes a key that is not an active client");
                } else {
                    self.removed.insert(client);
                }
                Vec::new()
            }
        }
    }

    fn execute(
        &mut self,
        index: u64,
        t: i64,
        time_ok: bool,
        id: ObjectId,
        reader: &Reader,
    ) -> Vec<Effect> {
        let Some(p) = self.proposals.get(&id).cloned() else {
            self.problem(index, format!("executes unknown proposal {}", id.short()));
            return Vec::new();
        };
        let refuse = |s: &mut Self, why: &str| {
            s.problem(
                index,
                format!("executes proposal {} {why}; not applied", id.short()),
            );
            Vec::new()
        };
        if p.executed.is_some() {
            return refuse(self, "a second time");
        }
        if let Some((by, _)) = p.veto {
            let by = crate::id::hex(&by[..4]);
            return refuse(self, &format!("despite a veto by {by}"));
        }
        let Some((qi, qt)) = self.quorum_at(&p) else {
            return refuse(self, "without a quorum of active admins");
        };
        if !time_ok {
            return refuse(self, "with an untrustworthy time");
        }
        if t < qt.saturating_add(self.delay_ns()) {
            return refuse(self, "before its delay window passed");
        }
        let action = p.proposal.action.clone();
        if let Err(why) = self.execution_allowed(&id) {
            return refuse(self, &format!("that may not run: {why}"));
        }
        // Valid. This reader applies an erasure only once the delay has also
        // passed since it first saw the quorum, on its own clock.
        let due = reader
            .first_seen(qi)
            .map_or(t, |s| t.max(s.saturating_add(self.delay_ns())));
        self.proposals.get_mut(&id).expect("checked").executed = Some((index, t));
        let mut out = Vec::new();
        match action {
            Action::DeleteSnapshots(ids) => {
                for s in ids {
                    if due <= reader.now_ns {
                        if let Some(snap) = self.remove_live(&s) {
                            self.gone.insert(
                                s,
                                Gone {
                                    how: GoneHow::Erased,
                                    index,
                                    time_ns: t,
                                    client: snap.client,
                                },
                            );
                            out.push(Effect::Erase(s));
                        }
                    } else if let Some(snap) = self.snapshots.get_mut(&s) {
                        snap.erase_due_ns = Some(due);
                    }
                }
            }
            Action::SetRetention(r) => self.retention = r,
            Action::RemoveIdentity(k) => {
                self.removed.insert(k);
            }
            Action::RotateRestoreKey(k) => {
                if !self.restore_publics.contains(&k) {
                    self.restore_publics.push(k);
                }
            }
            Action::LiftFlags(ids) => {
                // Only what the admins could have looked at: a snapshot
                // added after the proposal is not lifted by it.
                let proposed_at = p.index;
                for s in ids {
                    match self.snapshots.get_mut(&s) {
                        Some(snap) if snap.index < proposed_at => {
                            snap.flags.clear();
                            snap.lifted = true;
                        }
                        Some(_) => self.problem(
                            index,
                            format!(
                                "lifts the flags of snapshot {}, added after the proposal: \
                                 not applied",
                                s.short()
                            ),
                        ),
                        None => {}
                    }
                }
            }
            Action::SetThreshold { signal, to, .. } => {
                self.thresholds.insert(signal, to);
            }
            Action::RotateVaultKey { key, .. } => {
                self.vault_keys.push((key, index.saturating_add(1)));
            }
            Action::AckClock => {
                // execution_allowed: proposed after the newest hold.
                self.clock_hold = None;
            }
        }
        out
    }

    /// A snapshot's stored bytes (kind 11), and the shrink judged from them
    /// against its client's previous live snapshot and its last unflagged
    /// one of the [`SHRINK_WINDOW_NS`] before, as far as the log gave their
    /// bytes too.
    fn stored(&mut self, index: u64, snapshot: ObjectId, bytes: u64) {
        let Some(me) = self.snapshots.get(&snapshot) else {
            self.problem(
                index,
                format!(
                    "stored bytes for snapshot {}, which is not live",
                    snapshot.short()
                ),
            );
            return;
        };
        if me.stored_bytes.is_some() {
            self.problem(
                index,
                format!(
                    "stored bytes for snapshot {} a second time",
                    snapshot.short()
                ),
            );
            return;
        }
        let (client, added, at) = (self.client_of(&me.client), me.added_ns, me.index);
        let mut base = Vec::new();
        if let Some(order) = self.recent_snaps.get(&client) {
            let earlier = order
                .iter()
                .rev()
                .filter_map(|i| self.snapshots.get(i))
                .filter(|s| s.index < at);
            let mut previous = true;
            for s in earlier {
                if previous {
                    base.push(s.stored_bytes);
                    previous = false;
                }
                if s.flags.is_empty() {
                    if added.saturating_sub(s.added_ns) <= SHRINK_WINDOW_NS {
                        base.push(s.stored_bytes);
                    }
                    break;
                }
            }
        }
        let pct = self.threshold(64).unwrap_or(50);
        let shrank = base
            .into_iter()
            .flatten()
            .filter(|b| *b >= SHRINK_MIN_BYTES)
            .any(|b| shrunk(bytes, b, pct));
        let me = self.snapshots.get_mut(&snapshot).expect("checked above");
        me.stored_bytes = Some(bytes);
        if shrank && !me.lifted && me.flags.len() < MAX_FLAGS {
            me.flags.push((64, bytes));
        }
    }

    fn remove_live(&mut self, id: &ObjectId) -> Option<Snap> {
        let s = self.snapshots.remove(id)?;
        if let Some(ps) = &s.packs {
            for p in ps {
                if let Some(n) = self.pack_refs.get_mut(p) {
                    *n = n.saturating_sub(1);
                    if *n == 0 {
                        self.pack_refs.remove(p);
                    }
                }
            }
        }
        Some(s)
    }

    fn reclaim(
        &mut self,
        index: u64,
        t: i64,
        snapshots: Vec<ObjectId>,
        packs: Vec<ObjectId>,
        reader: &Reader,
    ) -> Vec<Effect> {
        let mut out = Vec::new();
        // Checked against the state before this entry: the last-N rule
        // looks at the client's snapshots as they were.
        let last = self.last_of_each_client();
        let mut valid = Vec::new();
        for s in snapshots {
            let Some(snap) = self.snapshots.get(&s) else {
                if self.gone.contains_key(&s) {
                    self.problem(index, format!("reclaims snapshot {} again", s.short()));
                } else {
                    self.problem(index, format!("reclaims unknown snapshot {}", s.short()));
                }
                continue;
            };
            if snap.lock_until_ns > t || snap.lock_until_ns > reader.now_ns {
                self.problem(
                    index,
                    format!("reclaims snapshot {} before its lock expired", s.short()),
                );
                continue;
            }
            if snap.erase_due_ns.is_some() {
                valid.push(s);
                continue;
            }
            if last.contains(&s) {
                self.problem(
                    index,
                    format!(
                        "reclaims snapshot {}, one of its client's last {KEEP_LAST}",
                        s.short()
                    ),
                );
                continue;
            }
            valid.push(s);
        }
        for s in valid {
            if let Some(snap) = self.remove_live(&s) {
                self.gone.insert(
                    s,
                    Gone {
                        how: GoneHow::Reclaimed,
                        index,
                        time_ns: t,
                        client: snap.client,
                    },
                );
                out.push(Effect::ReclaimSnapshot(s));
            }
        }
        let unknown = self.snapshots.values().any(|s| s.packs.is_none());
        for p in packs {
            if self.pack_live(&p) {
                self.problem(
                    index,
                    format!("reclaims pack {} that a live snapshot lists", p.short()),
                );
            } else {
                if unknown {
                    // Not provably wrong, but nothing to act on either: a
                    // reader that cannot read every list deletes nothing.
                    continue;
                }
                out.push(Effect::ReclaimPack(p));
            }
        }
        out
    }
}

/// Folds arbitrary bytes as a log file (`u32 length | entry`, repeated)
/// under a fixed two-admin config: for the fuzz target and property tests.
/// Must never panic.
#[doc(hidden)]
pub fn fold_any(data: &[u8]) {
    use crate::format::Chunking;
    let m = |role, n: u8| Member {
        role,
        name: format!("m{n}"),
        public: [n; 32],
    };
    let config = Config {
        repo_id: [0; 16],
        repo_public: [0; 32],
        chunking: Chunking {
            min: 64,
            avg: 128,
            max: 256,
        },
        pack_target: 1 << 20,
        zstd_level: 3,
        members: vec![
            m(Role::Admin, 1),
            m(Role::Admin, 2),
            m(Role::Client, 3),
            m(Role::Vault, 4),
        ],
        quorum: 2,
        retention: Retention::DEFAULT,
        delay_secs: 60,
        grace_secs: 0,
    };
    let (entries, _) = crate::vaultlog::split_log(data);
    let mut reader = Reader::at(0);
    reader.contacts = Some(vec![(1, -5), (3, 7)]);
    reader.held = Some((2, 0));
    let (st, _) = LogState::new(&config, ObjectId([9; 32]), HashMap::new()).fold(
        entries,
        &reader,
        &mut |id| Some(vec![*id]),
    );
    for id in st.proposals.keys() {
        let _ = st.status(id, i64::MAX);
    }
    let _ = st.last_of_each_client();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Identity;
    use crate::format::{Chunking, Config};

    const S: i64 = NS;
    const H: i64 = 3600 * S;
    const T0: i64 = 1_800_000_000 * S;

    struct Fx {
        admins: Vec<Identity>,
        client: Identity,
        vault: Identity,
        config: Config,
        cid: ObjectId,
        log: Vec<Vec<u8>>,
        packs: HashMap<ObjectId, Vec<ObjectId>>,
    }

    fn fx(quorum: u32, delay_secs: u64, keep_within_secs: u64) -> Fx {
        let admins: Vec<Identity> = (1..=3u8).map(|i| Identity::from_bytes([i; 32])).collect();
        let client = Identity::from_bytes([10; 32]);
        let vault = Identity::from_bytes([11; 32]);
        let mut members: Vec<Member> = admins
            .iter()
            .enumerate()
            .map(|(i, a)| Member {
                role: Role::Admin,
                name: format!("admin-{}", i + 1),
                public: a.public(),
            })
            .collect();
        members.push(Member {
            role: Role::Client,
            name: "mx1".into(),
            public: client.public(),
        });
        members.push(Member {
            role: Role::Vault,
            name: "vault".into(),
            public: vault.public(),
        });
        let config = Config {
            repo_id: [0; 16],
            repo_public: [0; 32],
            chunking: Chunking {
                min: 64,
                avg: 128,
                max: 256,
            },
            pack_target: 1 << 20,
            zstd_level: 3,
            members,
            quorum,
            retention: Retention {
                keep_within_secs,
                daily: 0,
                weekly: 0,
                monthly: 0,
                yearly: 0,
            },
            delay_secs,
            grace_secs: 0,
        };
        let cid = ObjectId::of(&config.encode());
        Fx {
            admins,
            client,
            vault,
            config,
            cid,
            log: Vec::new(),
            packs: HashMap::new(),
        }
    }

    fn sid(n: u8) -> ObjectId {
        ObjectId([n; 32])
    }

    impl Fx {
        fn push(&mut self, time_ns: i64, event: Event) {
            self.log.push(Entry { time_ns, event }.encode());
        }
        fn add(&mut self, t: i64, n: u8, lock: i64) {
            self.packs.insert(sid(n), vec![ObjectId([100 + n; 32])]);
            let client = self.client.public();
            self.push(
                t,
                Event::SnapshotAdded {
                    snapshot: sid(n),
                    client,
                    lock_until_ns: lock,
                },
            );
        }
        fn propose(&mut self, t: i64, action: Action, by: usize) -> ObjectId {
            let p = Proposal::new(self.cid, action, &self.admins[by], t).unwrap();
            self.push(
                t,
                Event::Proposed {
                    proposal: p.encode(),
                },
            );
            p.id()
        }
        fn vote(&mut self, t: i64, p: ObjectId, kind: VoteKind, by: usize) {
            let v = Vote::new(p, kind, &self.admins[by]);
            self.push(t, Event::Voted { vote: v.encode() });
        }
        fn run(&self, reader: &Reader) -> (LogState, Vec<Effect>) {
            let packs = self.packs.clone();
            LogState::new(&self.config, self.cid, HashMap::new()).fold(
                self.log.iter().map(|v| v.as_slice()),
                reader,
                &mut |id| packs.get(id).cloned(),
            )
        }
    }

    #[test]
    fn an_honest_log_folds_cleanly() {
        let mut f = fx(2, 3600, 3600);
        for i in 0..5u8 {
            f.add(T0 + i as i64 * H, i, T0 + i as i64 * H + H);
        }
        // Reclaim the oldest two (locks passed, not among the last 3).
        f.push(
            T0 + 10 * H,
            Event::Reclaimed {
                snapshots: vec![sid(0), sid(1)],
                packs: vec![ObjectId([100; 32]), ObjectId([101; 32])],
            },
        );
        let (st, eff) = f.run(&Reader::at(T0 + 11 * H));
        assert!(st.problems.is_empty(), "{:?}", st.problems);
        assert_eq!(st.snapshots.len(), 3);
        assert_eq!(eff.len(), 4);
        let _ = &f.vault;
    }

    /// Issue 11: the vault flags a snapshot (kind 9) and holds the last
    /// healthy one by extending its lock with the vault key; every reader
    /// folds both, and the hold outlives a burst of bad snapshots.
    #[test]
    fn flags_and_the_vaults_lock_hold_fold_for_every_reader() {
        let mut f = fx(2, 3600, 3600);
        f.add(T0, 0, T0 + H); // healthy
        f.push(
            T0 + 1,
            Event::Stored {
                snapshot: sid(0),
                bytes: 1 << 20,
            },
        );
        let vault = f.vault.public();
        for i in 1..=5u8 {
            let t = T0 + i as i64 * S;
            f.add(t, i, t + H);
            // Each references next to nothing: a shrink, judged by the fold
            // from the stored bytes; the vault's own flag agrees and adds
            // nothing.
            f.push(
                t + 1,
                Event::Stored {
                    snapshot: sid(i),
                    bytes: 1,
                },
            );
            f.push(
                t + 2,
                Event::Flagged {
                    snapshot: sid(i),
                    signal: 64,
                    count: 1,
                },
            );
        }
        f.push(
            T0 + 10 * S,
            Event::LockExtended {
                snapshot: sid(0),
                until_ns: T0 + 30 * 24 * H,
                admin: vault,
            },
        );
        // Later, every lock but the held one has passed: reclaiming the
        // healthy one is refused, the flagged ones (not the last 3) go.
        f.push(
            T0 + 3 * H,
            Event::Reclaimed {
                snapshots: vec![sid(1), sid(2)],
                packs: vec![],
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 4 * H));
        assert!(st.problems.is_empty(), "{:?}", st.problems);
        assert_eq!(st.snapshots[&sid(0)].lock_until_ns, T0 + 30 * 24 * H);
        assert!(st.snapshots[&sid(0)].flags.is_empty());
        assert_eq!(st.snapshots[&sid(4)].flags, vec![(64, 1)]);
        assert!(!st.snapshots.contains_key(&sid(1)));
        f.push(
            T0 + 5 * H,
            Event::Reclaimed {
                snapshots: vec![sid(0)],
                packs: vec![],
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 6 * H));
        assert!(st.snapshots.contains_key(&sid(0)));
        assert!(st.problems[0].what.contains("before its lock expired"));
        // A flag on a snapshot that is not live is a problem, not a crash;
        // so is a code that is not one of the vault's.
        f.push(
            T0 + 7 * H,
            Event::Flagged {
                snapshot: sid(99),
                signal: 66,
                count: 0,
            },
        );
        f.push(
            T0 + 7 * H + 1,
            Event::Flagged {
                snapshot: sid(4),
                signal: 1,
                count: 0,
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 8 * H));
        assert!(st.problems.iter().any(|p| p.what.contains("not live")));
        assert!(
            st.problems
                .iter()
                .any(|p| p.what.contains("not a vault signal"))
        );
        assert_eq!(st.snapshots[&sid(4)].flags, vec![(64, 1)]);
    }

    #[test]
    fn a_burst_flag_is_recounted_from_the_log() {
        let mut f = fx(2, 3600, 3600);
        // 31 commits within the hour: a burst the log bears out.
        for i in 0..31u8 {
            let t = T0 + i as i64 * 60 * S;
            f.add(t, i, t + H);
        }
        let last = T0 + 30 * 60 * S;
        f.push(
            last + 1,
            Event::Flagged {
                snapshot: sid(30),
                signal: 65,
                count: 31,
            },
        );
        let (st, _) = f.run(&Reader::at(last + H));
        assert!(st.problems.is_empty(), "{:?}", st.problems);
        assert_eq!(st.snapshots[&sid(30)].flags, vec![(65, 31)]);
        // The vault host calling an ordinary snapshot part of a burst (to
        // make `latest` skip it) is tampering, and the flag is not applied;
        // so is claiming more commits than the log holds.
        let mut f = fx(2, 3600, 3600);
        for i in 0..3u8 {
            let t = T0 + i as i64 * H;
            f.add(t, i, t + H);
        }
        f.push(
            T0 + 2 * H + 1,
            Event::Flagged {
                snapshot: sid(2),
                signal: 65,
                count: 40,
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 3 * H));
        assert!(st.snapshots[&sid(2)].flags.is_empty());
        assert!(st.problems[0].what.contains("burst"), "{:?}", st.problems);
    }

    #[test]
    fn a_shrink_is_judged_from_the_logged_stored_bytes() {
        let mut f = fx(2, 3600, 3600);
        let stored = |f: &mut Fx, t: i64, n: u8, bytes: u64| {
            f.add(t, n, t + H);
            f.push(
                t + 1,
                Event::Stored {
                    snapshot: sid(n),
                    bytes,
                },
            );
        };
        stored(&mut f, T0, 0, 10 << 20);
        stored(&mut f, T0 + H, 1, 9 << 20); // ordinary
        stored(&mut f, T0 + 2 * H, 2, 1 << 20); // a wipe: flagged by the fold
        stored(&mut f, T0 + 3 * H, 3, 9 << 20);
        // The vault host calls the ordinary one a shrink: not applied.
        f.push(
            T0 + 3 * H + 5,
            Event::Flagged {
                snapshot: sid(3),
                signal: 64,
                count: 1,
            },
        );
        // Stored bytes twice, or for what is not live: problems.
        f.push(
            T0 + 3 * H + 6,
            Event::Stored {
                snapshot: sid(3),
                bytes: 1,
            },
        );
        f.push(
            T0 + 3 * H + 7,
            Event::Stored {
                snapshot: sid(77),
                bytes: 1,
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 4 * H));
        assert!(st.snapshots[&sid(1)].flags.is_empty());
        assert_eq!(st.snapshots[&sid(2)].flags, vec![(64, 1 << 20)]);
        // The previous one was the wipe, but the last unflagged one (9 MiB)
        // is the baseline too: 9 MiB after it is not a shrink.
        assert!(st.snapshots[&sid(3)].flags.is_empty());
        assert_eq!(st.snapshots[&sid(3)].stored_bytes, Some(9 << 20));
        let whats: Vec<&str> = st.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(whats.len(), 3, "{whats:?}");
        assert!(whats[0].contains("do not bear out"), "{whats:?}");
        assert!(whats[1].contains("second time"), "{whats:?}");
        assert!(whats[2].contains("not live"), "{whats:?}");
    }

    #[test]
    fn future_dated_reclaim_of_locked_snapshots_is_refused() {
        let mut f = fx(2, 3600, 30 * 86_400);
        f.add(T0, 1, T0 + 30 * 24 * H);
        f.add(T0 + H, 2, T0 + H + 30 * 24 * H);
        // Root on the vault host appends a reclaim dated after the locks.
        f.push(
            T0 + 40 * 24 * H,
            Event::Reclaimed {
                snapshots: vec![sid(1)],
                packs: vec![ObjectId([101; 32])],
            },
        );
        let (st, eff) = f.run(&Reader::at(T0 + 2 * H));
        assert!(eff.is_empty());
        assert!(st.snapshots.contains_key(&sid(1)));
        assert!(
            st.problems
                .iter()
                .any(|p| p.what.contains("after this reader's clock")),
            "{:?}",
            st.problems
        );
    }

    #[test]
    fn reclaim_before_lock_expiry_is_refused_even_if_dated_honestly() {
        let mut f = fx(2, 3600, 86_400);
        for i in 0..5u8 {
            f.add(T0 + i as i64 * S, i, T0 + 30 * H);
        }
        f.push(
            T0 + H,
            Event::Reclaimed {
                snapshots: vec![sid(0)],
                packs: vec![],
            },
        );
        let (st, eff) = f.run(&Reader::at(T0 + 48 * H));
        assert!(eff.is_empty());
        assert_eq!(st.problems.len(), 1);
        assert!(st.problems[0].what.contains("before its lock expired"));
    }

    #[test]
    fn duplicate_snapshot_with_a_past_lock_is_refused() {
        let mut f = fx(2, 3600, 86_400);
        f.add(T0, 1, T0 + 24 * H);
        f.add(T0 + S, 1, T0 - H);
        let (st, _) = f.run(&Reader::at(T0 + H));
        assert_eq!(st.snapshots[&sid(1)].lock_until_ns, T0 + 24 * H);
        assert!(st.problems[0].what.contains("second time"));
        // A first add with a lock in the past is raised to keep-within.
        let mut f = fx(2, 3600, 86_400);
        f.add(T0, 1, T0 - H);
        let (st, _) = f.run(&Reader::at(T0 + H));
        assert_eq!(st.snapshots[&sid(1)].lock_until_ns, T0 + 24 * H);
        assert_eq!(st.problems.len(), 1);
    }

    #[test]
    fn reordered_entries_are_reported_and_not_destructive() {
        let mut f = fx(2, 3600, 0);
        for i in 0..5u8 {
            f.add(T0 + i as i64 * H, i, T0 + i as i64 * H);
        }
        f.push(
            T0 + H,
            Event::Reclaimed {
                snapshots: vec![sid(0)],
                packs: vec![],
            },
        );
        let (st, eff) = f.run(&Reader::at(T0 + 10 * H));
        assert!(eff.is_empty());
        assert!(st.problems[0].what.contains("before the entry before it"));
    }

    #[test]
    fn reclaim_of_a_clients_last_snapshots_is_refused() {
        let mut f = fx(2, 3600, 0);
        for i in 0..3u8 {
            f.add(T0 + i as i64 * H, i, T0 + i as i64 * H);
        }
        f.push(
            T0 + 5 * H,
            Event::Reclaimed {
                snapshots: vec![sid(0), sid(1), sid(2)],
                packs: vec![],
            },
        );
        let (st, eff) = f.run(&Reader::at(T0 + 10 * H));
        assert!(eff.is_empty());
        assert_eq!(st.problems.len(), 3);
        assert_eq!(st.snapshots.len(), 3);
    }

    #[test]
    fn pack_listed_by_a_live_snapshot_is_not_reclaimable() {
        let mut f = fx(2, 3600, 0);
        for i in 0..4u8 {
            f.add(T0 + i as i64 * H, i, T0 + i as i64 * H);
        }
        f.push(
            T0 + 5 * H,
            Event::Reclaimed {
                snapshots: vec![sid(0)],
                packs: vec![ObjectId([100; 32]), ObjectId([102; 32])],
            },
        );
        let (st, eff) = f.run(&Reader::at(T0 + 10 * H));
        assert_eq!(
            eff,
            vec![
                Effect::ReclaimSnapshot(sid(0)),
                Effect::ReclaimPack(ObjectId([100; 32]))
            ]
        );
        assert_eq!(st.problems.len(), 1);
        assert!(st.problems[0].what.contains("live snapshot lists"));
    }

    fn erase_proposal(f: &mut Fx, t: i64) -> ObjectId {
        f.propose(t, Action::DeleteSnapshots(vec![sid(1)]), 0)
    }

    #[test]
    fn early_execution_is_refused() {
        let mut f = fx(2, 72 * 3600, 0);
        f.add(T0, 1, T0);
        let p = erase_proposal(&mut f, T0 + H);
        f.vote(T0 + 2 * H, p, VoteKind::Approve, 1);
        f.push(T0 + 3 * H, Event::Executed { proposal: p });
        let (st, eff) = f.run(&Reader::at(T0 + 100 * H));
        assert!(eff.is_empty());
        assert!(st.problems[0].what.contains("before its delay"));
        assert!(st.snapshots.contains_key(&sid(1)));
    }

    #[test]
    fn execution_dated_after_the_delay_but_in_the_readers_future_is_refused() {
        let mut f = fx(2, 72 * 3600, 0);
        f.add(T0, 1, T0);
        let p = erase_proposal(&mut f, T0 + H);
        f.vote(T0 + 2 * H, p, VoteKind::Approve, 1);
        f.push(T0 + 80 * H, Event::Executed { proposal: p });
        let (st, eff) = f.run(&Reader::at(T0 + 3 * H));
        assert!(eff.is_empty());
        assert!(st.snapshots.contains_key(&sid(1)));
        assert!(!st.problems.is_empty());
    }

    #[test]
    fn a_replica_counts_the_delay_from_when_it_saw_the_quorum() {
        let mut f = fx(2, 72 * 3600, 0);
        f.add(T0, 1, T0);
        // Backdated into a quiet gap: quorum "reached" at T0+2h.
        let p = erase_proposal(&mut f, T0 + H);
        f.vote(T0 + 2 * H, p, VoteKind::Approve, 1);
        f.push(T0 + 75 * H, Event::Executed { proposal: p });
        // This replica last pulled at T0 + 74h, when the log had 1 entry.
        let mut r = Reader::at(T0 + 76 * H);
        r.contacts = Some(vec![(1, T0 + 74 * H)]);
        r.held = Some((1, T0));
        let (st, eff) = f.run(&r);
        assert!(eff.is_empty(), "applied before its own window");
        assert_eq!(
            st.snapshots[&sid(1)].erase_due_ns,
            Some(T0 + 76 * H + 72 * H)
        );
        // Its checkpoint then said T0+74h: the votes are backdated.
        r.held = Some((1, T0 + 74 * H));
        let (st, _) = f.run(&r);
        assert!(st.problems.iter().any(|p| p.what.contains("backdated")));
        // Later, past its own window, it applies the erasure.
        let mut r = Reader::at(T0 + 200 * H);
        r.contacts = Some(vec![(1, T0 + 74 * H), (4, T0 + 76 * H)]);
        let (st, eff) = f.run(&r);
        assert_eq!(eff, vec![Effect::Erase(sid(1))]);
        assert!(st.problems.is_empty());
    }

    #[test]
    fn a_revoked_client_adds_nothing_and_only_an_admin_revokes() {
        let mut f = fx(2, 3600, 3600);
        f.add(T0, 1, T0 + H);
        let client = f.client.public();
        let revoke = |f: &Fx, who: &Identity, target: [u8; 32], t: i64| Event::ClientRevoked {
            client: target,
            admin: who.public(),
            signed: Some((
                t,
                crate::governance::sign_revocation(&f.cid, &target, t, who),
            )),
        };
        // The client cannot revoke itself (nor can the vault key).
        let e = revoke(&f, &f.client, client, T0);
        f.push(T0 + S, e);
        // Root on the vault host, without an admin's key: an unsigned
        // revocation naming an admin, and one with a signature over another
        // client, are not applied.
        let admin = f.admins[0].public();
        f.push(
            T0 + S + 1,
            Event::ClientRevoked {
                client,
                admin,
                signed: None,
            },
        );
        let wrong = revoke(&f, &f.admins[0], [9; 32], T0);
        let Event::ClientRevoked { signed, .. } = wrong else {
            unreachable!()
        };
        f.push(
            T0 + S + 2,
            Event::ClientRevoked {
                client,
                admin,
                signed,
            },
        );
        f.add(T0 + 2 * S, 2, T0 + 2 * S + H);
        let e = revoke(&f, &f.admins[0], client, T0 + 3 * S);
        f.push(T0 + 3 * S, e);
        f.add(T0 + 4 * S, 3, T0 + 4 * S + H);
        // Revoking again, or revoking an admin this way, is refused.
        let e = revoke(&f, &f.admins[0], client, T0 + 5 * S);
        f.push(T0 + 5 * S, e);
        let other = f.admins[1].public();
        let e = revoke(&f, &f.admins[0], other, T0 + 6 * S);
        f.push(T0 + 6 * S, e);
        let (st, _) = f.run(&Reader::at(T0 + H));
        assert!(st.snapshots.contains_key(&sid(1)));
        assert!(st.snapshots.contains_key(&sid(2)));
        assert!(!st.snapshots.contains_key(&sid(3)));
        assert!(st.removed.contains(&client));
        assert!(!st.removed.contains(&other));
        let whats: Vec<&str> = st.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(st.problems.len(), 6, "{whats:?}");
        assert!(whats[0].contains("not an active admin"), "{whats:?}");
        assert!(whats[1].contains("signature"), "{whats:?}");
        assert!(whats[2].contains("signature"), "{whats:?}");
        assert!(whats[3].contains("not an active client"), "{whats:?}");
    }

    #[test]
    fn a_veto_is_final_even_after_its_caster_is_removed() {
        let mut f = fx(2, 3600, 0);
        f.add(T0, 1, T0);
        let p = erase_proposal(&mut f, T0 + H);
        f.vote(T0 + 2 * H, p, VoteKind::Veto, 2);
        // Admins 0 and 1 remove admin 2, properly.
        let r = f.propose(T0 + 3 * H, Action::RemoveIdentity(f.admins[2].public()), 0);
        f.vote(T0 + 4 * H, r, VoteKind::Approve, 1);
        f.push(T0 + 6 * H, Event::Executed { proposal: r });
        f.vote(T0 + 7 * H, p, VoteKind::Approve, 1);
        f.push(T0 + 9 * H, Event::Executed { proposal: p });
        let (st, eff) = f.run(&Reader::at(T0 + 10 * H));
        assert!(st.removed.contains(&f.admins[2].public()));
        assert!(eff.is_empty());
        assert!(st.problems[0].what.contains("despite a veto"));
        assert!(matches!(
            st.status(&p, T0 + 10 * H),
            Some(Status::Vetoed { .. })
        ));
    }

    #[test]
    fn the_subject_of_a_removal_cannot_veto_it_and_quorum_is_kept() {
        let mut f = fx(2, 3600, 0);
        let target = f.admins[2].public();
        let r = f.propose(T0, Action::RemoveIdentity(target), 0);
        f.vote(T0 + S, r, VoteKind::Veto, 2);
        f.vote(T0 + 2 * S, r, VoteKind::Approve, 1);
        f.push(T0 + 2 * H, Event::Executed { proposal: r });
        let (st, _) = f.run(&Reader::at(T0 + 3 * H));
        assert!(st.removed.contains(&target));
        assert_eq!(st.problems.len(), 1);
        assert!(st.problems[0].what.contains("its own removal"));
        // Two removals ready together would leave 1 admin < quorum 2.
        let mut f = fx(2, 3600, 0);
        let (a1, a2) = (f.admins[1].public(), f.admins[2].public());
        let r1 = f.propose(T0, Action::RemoveIdentity(a1), 0);
        f.vote(T0 + S, r1, VoteKind::Approve, 2);
        let r2 = f.propose(T0 + 2 * S, Action::RemoveIdentity(a2), 0);
        f.vote(T0 + 3 * S, r2, VoteKind::Approve, 1);
        f.push(T0 + 2 * H, Event::Executed { proposal: r1 });
        f.push(T0 + 2 * H + S, Event::Executed { proposal: r2 });
        let (st, _) = f.run(&Reader::at(T0 + 3 * H));
        assert_eq!(st.active_admins().len(), 2);
        assert!(!st.problems.is_empty());
    }

    #[test]
    fn one_admin_alone_and_forged_votes_do_not_make_a_quorum() {
        let mut f = fx(2, 0, 0);
        f.add(T0, 1, T0);
        let p = erase_proposal(&mut f, T0 + S);
        f.vote(T0 + 2 * S, p, VoteKind::Approve, 0);
        let outsider = Identity::from_bytes([77; 32]);
        let v = Vote::new(p, VoteKind::Approve, &outsider);
        f.push(T0 + 3 * S, Event::Voted { vote: v.encode() });
        f.push(T0 + 4 * S, Event::Executed { proposal: p });
        let (st, eff) = f.run(&Reader::at(T0 + H));
        assert!(eff.is_empty());
        assert!(st.snapshots.contains_key(&sid(1)));
        assert_eq!(st.problems.len(), 2);
    }

    /// Quorum counting and the delay window, as `status` answers them (the
    /// assertions of the former `governance::status`, on the fold).
    #[test]
    fn quorum_counts_distinct_active_admins_then_the_delay_runs() {
        let mut f = fx(2, 60, 0);
        f.add(T0, 1, T0);
        let p = erase_proposal(&mut f, T0 + S);
        // The proposer approves again, twice: one approval.
        f.vote(T0 + 2 * S, p, VoteKind::Approve, 0);
        f.vote(T0 + 3 * S, p, VoteKind::Approve, 0);
        // An outsider's approval and an approval of another proposal: none.
        let outsider = Identity::from_bytes([77; 32]);
        let v = Vote::new(p, VoteKind::Approve, &outsider);
        f.push(T0 + 4 * S, Event::Voted { vote: v.encode() });
        let other = f.propose(T0 + 5 * S, Action::DeleteSnapshots(vec![sid(1)]), 2);
        f.vote(T0 + 6 * S, other, VoteKind::Approve, 1);
        let (st, _) = f.run(&Reader::at(T0 + H));
        assert_eq!(
            st.status(&p, T0 + 1000 * S),
            Some(Status::Pending {
                approvals: 1,
                needed: 2
            })
        );
        // A second admin completes the quorum at T0+100s: 60 s of delay.
        f.vote(T0 + 100 * S, p, VoteKind::Approve, 1);
        let (st, _) = f.run(&Reader::at(T0 + H));
        assert_eq!(
            st.status(&p, T0 + 120 * S),
            Some(Status::Waiting {
                until_ns: T0 + 160 * S
            })
        );
        assert_eq!(st.status(&p, T0 + 160 * S), Some(Status::Ready));
    }

    #[test]
    fn an_identity_record_never_overrides_a_config_member() {
        // An identity record (one admin's signature) naming another admin's
        // key as a client: the config's role and name stand, so that
        // admin's vetoes and approvals still count.
        let f = fx(2, 0, 0);
        let mut records = HashMap::new();
        let victim = f.admins[1].public();
        records.insert(
            victim,
            Member {
                role: Role::Client,
                name: "demoted".into(),
                public: victim,
            },
        );
        let st = LogState::new(&f.config, f.cid, records);
        assert_eq!(st.members[&victim].role, Role::Admin);
        assert_eq!(st.members[&victim].name, "admin-2");
        assert!(st.is_active_admin(&victim));
        assert_eq!(st.active_admins().len(), 3);
    }

    #[test]
    fn garbage_never_panics() {
        let f = fx(2, 0, 0);
        let mut st = LogState::new(&f.config, f.cid, HashMap::new());
        for raw in [&b""[..], &[1u8; 3], &[1, 0, 0, 0, 0, 0, 0, 0, 0, 9][..]] {
            st.apply(raw, &Reader::at(T0), &mut |_| None);
        }
        assert_eq!(st.problems.len(), 3);
    }

    fn rotation(f: &Fx, new: &Identity) -> Action {
        Action::RotateVaultKey {
            key: new.public(),
            pop: crate::governance::vault_key_pop(&f.cid, new),
        }
    }

    #[test]
    fn vault_key_chain_follows_only_executed_quorum_rotations() {
        let mut f = fx(2, 3600, 0);
        let old = f.vault.public();
        let new = Identity::from_bytes([77; 32]);
        let newer = Identity::from_bytes([78; 32]);
        f.add(T0, 1, T0);
        // A rotation proposed by one admin, "executed" without the quorum by
        // the vault host: not applied.
        let lone = f.propose(T0 + S, rotation(&f, &new), 0);
        f.push(T0 + 2 * S, Event::Executed { proposal: lone });
        let (st, _) = f.run(&Reader::at(T0 + 10 * H));
        assert_eq!(st.vault_keys, vec![(old, 0)]);
        assert_eq!(st.vault_key_at(100), old);
        assert!(
            st.problems
                .iter()
                .any(|p| p.what.contains("without a quorum"))
        );
        // Approved, but executed before the delay: not applied either.
        f.vote(T0 + 3 * S, lone, VoteKind::Approve, 1);
        f.push(T0 + 4 * S, Event::Executed { proposal: lone });
        let (st, _) = f.run(&Reader::at(T0 + 10 * H));
        assert_eq!(st.vault_key(), old);
        assert!(st.problems.iter().any(|p| p.what.contains("delay")));
        // After the delay: the execution at entry i makes the new key the
        // signer of every checkpoint of size > i.
        f.push(T0 + 2 * H, Event::Executed { proposal: lone });
        let i = f.log.len() as u64 - 1;
        let (st, _) = f.run(&Reader::at(T0 + 10 * H));
        assert_eq!(st.vault_keys, vec![(old, 0), (new.public(), i + 1)]);
        assert_eq!(st.vault_key_at(0), old);
        assert_eq!(st.vault_key_at(i), old);
        assert_eq!(st.vault_key_at(i + 1), new.public());
        assert_eq!(st.vault_key_at(u64::MAX), new.public());
        assert_eq!(st.vault_key(), new.public());
        // The vault may extend a lock under its new key.
        let before = st.problems.len();
        f.push(
            T0 + 2 * H + S,
            Event::LockExtended {
                snapshot: sid(1),
                until_ns: T0 + 100 * H,
                admin: new.public(),
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 10 * H));
        assert_eq!(st.problems.len(), before, "{:?}", st.problems);
        // Back to the rotated-out key: refused (a key never returns), by
        // the rule the vault checks before it executes.
        let back = Action::RotateVaultKey {
            key: old,
            pop: crate::governance::vault_key_pop(&f.cid, &f.vault),
        };
        assert!(
            st.action_allowed(&back)
                .unwrap_err()
                .contains("never returns")
        );
        let b = f.propose(T0 + 3 * H, back, 0);
        f.vote(T0 + 3 * H + S, b, VoteKind::Approve, 1);
        f.push(T0 + 5 * H, Event::Executed { proposal: b });
        // A vetoed rotation never runs.
        let v = f.propose(T0 + 5 * H + S, rotation(&f, &newer), 0);
        f.vote(T0 + 5 * H + 2 * S, v, VoteKind::Approve, 1);
        f.vote(T0 + 5 * H + 3 * S, v, VoteKind::Veto, 2);
        f.push(T0 + 8 * H, Event::Executed { proposal: v });
        let (st, _) = f.run(&Reader::at(T0 + 10 * H));
        assert_eq!(st.vault_key(), new.public());
        assert_eq!(st.vault_keys.len(), 2);
        assert!(st.problems.iter().any(|p| p.what.contains("never returns")));
        assert!(st.problems.iter().any(|p| p.what.contains("veto")));
    }

    #[test]
    fn a_rotation_with_a_bad_proof_of_possession_is_refused_by_the_fold() {
        let mut f = fx(1, 0, 0);
        let new = Identity::from_bytes([77; 32]);
        let wrong = Identity::from_bytes([79; 32]);
        let p = Proposal::new(
            f.cid,
            Action::RotateVaultKey {
                key: new.public(),
                pop: crate::governance::vault_key_pop(&f.cid, &wrong),
            },
            &f.admins[0],
            T0,
        )
        .unwrap();
        f.push(
            T0,
            Event::Proposed {
                proposal: p.encode(),
            },
        );
        f.push(T0 + S, Event::Executed { proposal: p.id() });
        let (st, _) = f.run(&Reader::at(T0 + H));
        assert_eq!(st.vault_keys.len(), 1);
        assert!(
            st.problems
                .iter()
                .any(|x| x.what.contains("proof of possession")),
            "{:?}",
            st.problems
        );
    }

    /// Issue 13: a client key's successor joins where the log adds its
    /// record; the predecessor is revoked there, the successor is the same
    /// client for the per-client rules; a second succession of the same
    /// key, or one the caller did not verify, is not applied.
    #[test]
    fn a_client_key_succession_joins_where_the_log_adds_it() {
        use crate::format::IdentityRecord;
        let mut f = fx(2, 3600, 3600);
        let old = f.client.public();
        let new = Identity::from_bytes([20; 32]);
        let rec = IdentityRecord::successor(f.cid, "mx1", new.public(), &f.client, &f.admins[0], 1);
        let rid = ObjectId::of(&rec.encode());
        let other = Identity::from_bytes([21; 32]);
        let again =
            IdentityRecord::successor(f.cid, "mx1", other.public(), &f.client, &f.admins[0], 2);
        let aid = ObjectId::of(&again.encode());
        for i in 0..3u8 {
            f.add(T0 + i as i64 * S, i, T0 + i as i64 * S + H);
        }
        f.push(T0 + 10 * S, Event::IdentityAdded { record: rid });
        f.add(T0 + 11 * S, 3, T0 + 11 * S + H); // by the old key: refused
        let add_by = |f: &mut Fx, t: i64, n: u8, k: [u8; 32]| {
            f.packs.insert(sid(n), vec![ObjectId([100 + n; 32])]);
            f.push(
                t,
                Event::SnapshotAdded {
                    snapshot: sid(n),
                    client: k,
                    lock_until_ns: t + H,
                },
            );
        };
        // The successor before its record joined would have been refused;
        // after it, accepted.
        add_by(&mut f, T0 + 12 * S, 4, new.public());
        f.push(T0 + 13 * S, Event::IdentityAdded { record: aid });
        add_by(&mut f, T0 + 14 * S, 5, other.public());
        let run = |f: &Fx, recs: &[(ObjectId, &IdentityRecord)]| {
            let mut st0 = LogState::new(&f.config, f.cid, HashMap::new());
            for (id, r) in recs {
                st0.members.insert(r.member.public, r.member.clone());
                st0.register_record(*id, r);
            }
            let packs = f.packs.clone();
            st0.fold(
                f.log.iter().map(|v| v.as_slice()),
                &Reader::at(T0 + H),
                &mut |id| packs.get(id).cloned(),
            )
            .0
        };
        let st = run(&f, &[(rid, &rec), (aid, &again)]);
        assert!(st.removed.contains(&old));
        assert!(st.is_client(&new.public()));
        assert!(!st.is_client(&other.public()));
        assert_eq!(st.client_of(&new.public()), old);
        assert_eq!(st.successor_of(&old), Some(new.public()));
        let what: Vec<_> = st
            .problems
            .iter()
            .map(|p| (p.index, p.what.clone()))
            .collect();
        assert_eq!(what.len(), 3, "{what:?}");
        assert_eq!(what[0].0, 4);
        assert!(what[0].1.contains("not an active client"));
        assert!(what[1].1.contains("succession") && what[1].1.contains("not applied"));
        assert!(what[2].1.contains("not an active client"));
        assert!(!st.snapshots.contains_key(&sid(3)));
        assert!(st.snapshots.contains_key(&sid(4)));
        // One client across its keys: its last 3 are 4, 2 and 1.
        let last = st.last_of_each_client();
        assert_eq!(last.len(), 3);
        assert!(last.contains(&sid(4)) && !last.contains(&sid(0)));
        // A reader that was not told of the record (its file hidden): the
        // old key stays active for it, and the entry adding what it does
        // not hold is a problem (review finding 2).
        let st = run(&f, &[]);
        assert!(!st.removed.contains(&old));
        assert!(
            st.problems
                .iter()
                .any(|p| p.index == 3 && p.what.contains("does not hold")),
            "{:?}",
            st.problems
        );
        assert_eq!(st.records_not_held(), {
            let mut v = vec![rid, aid];
            v.sort();
            v
        });
    }

    /// Review finding 1: a chain of three keys (two rotations): each
    /// succession joins where the log adds it, though the reader registered
    /// every record up front; the first two keys end revoked.
    #[test]
    fn a_chain_of_successions_joins_in_order() {
        use crate::format::IdentityRecord;
        let mut f = fx(2, 3600, 3600);
        let k1 = f.client.public();
        let s1 = Identity::from_bytes([30; 32]);
        let s2 = Identity::from_bytes([31; 32]);
        let r1 = IdentityRecord::successor(f.cid, "mx1", s1.public(), &f.client, &f.admins[0], 1);
        let r2 = IdentityRecord::successor(f.cid, "mx1", s2.public(), &s1, &f.admins[0], 2);
        let (i1, i2) = (ObjectId::of(&r1.encode()), ObjectId::of(&r2.encode()));
        f.add(T0, 0, T0 + H);
        f.push(T0 + S, Event::IdentityAdded { record: i1 });
        f.push(T0 + 2 * S, Event::IdentityAdded { record: i2 });
        f.add(T0 + 3 * S, 1, T0 + 3 * S + H); // by the first key: refused
        f.packs.insert(sid(2), vec![ObjectId([102; 32])]);
        f.push(
            T0 + 4 * S,
            Event::SnapshotAdded {
                snapshot: sid(2),
                client: s2.public(),
                lock_until_ns: T0 + 4 * S + H,
            },
        );
        let mut st = LogState::new(&f.config, f.cid, HashMap::new());
        for (id, r) in [(i1, &r1), (i2, &r2)] {
            st.members.insert(r.member.public, r.member.clone());
            st.register_record(id, r);
        }
        let packs = f.packs.clone();
        let (st, _) = st.fold(
            f.log.iter().map(|v| v.as_slice()),
            &Reader::at(T0 + H),
            &mut |id| packs.get(id).cloned(),
        );
        assert!(st.removed.contains(&k1) && st.removed.contains(&s1.public()));
        assert!(st.is_client(&s2.public()));
        assert_eq!(st.client_of(&s2.public()), k1);
        assert_eq!(st.successor_of(&s1.public()), Some(s2.public()));
        assert_eq!(st.problems.len(), 1, "{:?}", st.problems);
        assert!(st.problems[0].what.contains("not an active client"));
        assert!(st.snapshots.contains_key(&sid(2)) && !st.snapshots.contains_key(&sid(1)));
        assert!(st.records_not_held().is_empty());
    }

    /// Review finding 7: the fold itself refuses a successor key that is
    /// not new (here: a key that already added a snapshot), whatever the
    /// vault let through.
    #[test]
    fn the_fold_refuses_a_successor_key_that_is_not_new() {
        use crate::format::IdentityRecord;
        let mut f = fx(2, 3600, 3600);
        let old = f.client.public();
        let s1 = Identity::from_bytes([40; 32]);
        let r1 = IdentityRecord::successor(f.cid, "mx1", s1.public(), &f.client, &f.admins[0], 1);
        // Back to the revoked first key: not a new key.
        let r2 = IdentityRecord::successor(f.cid, "mx1", old, &s1, &f.admins[0], 2);
        let (i1, i2) = (ObjectId::of(&r1.encode()), ObjectId::of(&r2.encode()));
        f.add(T0, 0, T0 + H);
        f.push(T0 + S, Event::IdentityAdded { record: i1 });
        f.push(T0 + 2 * S, Event::IdentityAdded { record: i2 });
        let mut st = LogState::new(&f.config, f.cid, HashMap::new());
        st.members.insert(s1.public(), r1.member.clone());
        st.register_record(i1, &r1);
        st.register_record(i2, &r2);
        let packs = f.packs.clone();
        let (st, _) = st.fold(
            f.log.iter().map(|v| v.as_slice()),
            &Reader::at(T0 + H),
            &mut |id| packs.get(id).cloned(),
        );
        assert!(st.removed.contains(&old), "{:?}", st.problems);
        assert!(st.is_client(&s1.public()) && !st.is_client(&old));
        assert_eq!(st.problems.len(), 1, "{:?}", st.problems);
        assert!(st.problems[0].index == 2 && st.problems[0].what.contains("is not new"));
    }

    /// Review finding 2: a logged record the reader holds damaged (or
    /// renamed) is a problem, and its succession is not applied.
    #[test]
    fn a_logged_record_held_unusable_is_a_problem() {
        use crate::format::IdentityRecord;
        let mut f = fx(2, 3600, 3600);
        let s1 = Identity::from_bytes([50; 32]);
        let r1 = IdentityRecord::successor(f.cid, "mx1", s1.public(), &f.client, &f.admins[0], 1);
        let i1 = ObjectId::of(&r1.encode());
        f.push(T0, Event::IdentityAdded { record: i1 });
        let mut st = LogState::new(&f.config, f.cid, HashMap::new());
        st.refuse_record(i1, "does not decode");
        let (st, _) = st.fold(
            f.log.iter().map(|v| v.as_slice()),
            &Reader::at(T0 + H),
            &mut |_| None,
        );
        assert!(!st.removed.contains(&f.client.public()));
        assert_eq!(st.problems.len(), 1);
        assert!(st.problems[0].what.contains("unusable (does not decode)"));
        assert_eq!(st.records_not_held(), vec![i1]);
    }

    /// Five snapshots with short locks, then a clock hold: what a vault
    /// restarted on a jumped clock logs.
    fn held(f: &mut Fx) {
        for i in 0..5u8 {
            f.add(T0 + i as i64 * S, i, T0 + i as i64 * S + H);
        }
        f.push(T0 + 30 * H, Event::ClockHeld { gap_ns: 30 * H });
    }

    fn reclaim_two(f: &mut Fx, t: i64) {
        f.push(
            t,
            Event::Reclaimed {
                snapshots: vec![sid(0), sid(1)],
                packs: vec![],
            },
        );
    }

    #[test]
    fn no_reclaim_while_the_clock_is_held_until_a_quorum_acknowledges_it() {
        let mut f = fx(2, 60, 3600);
        held(&mut f);
        // A reclaim after the hold, without an acknowledgement: tampering,
        // and nothing is deleted (a reader exits 4 on any problem).
        reclaim_two(&mut f, T0 + 31 * H);
        let (st, eff) = f.run(&Reader::at(T0 + 40 * H));
        assert!(eff.is_empty(), "{eff:?}");
        assert_eq!(st.problems.len(), 1, "{:?}", st.problems);
        assert!(
            st.problems[0].what.contains("clock is held"),
            "{:?}",
            st.problems
        );
        assert_eq!(st.problems[0].index, 6);
        assert_eq!(st.snapshots.len(), 5);
        assert_eq!(st.clock_held().map(|h| h.last), Some(5));
        // The acknowledgement: proposed (its proposer's clock agrees),
        // approved, run after the delay; then the reclaim is valid.
        f.log.pop();
        let ack = f.propose(T0 + 31 * H, Action::AckClock, 0);
        f.vote(T0 + 31 * H + S, ack, VoteKind::Approve, 1);
        let (st, _) = f.run(&Reader::at(T0 + 40 * H));
        assert_eq!(st.execution_allowed(&ack), Ok(()));
        assert!(st.clock_held().is_some());
        f.push(T0 + 31 * H + 61 * S, Event::Executed { proposal: ack });
        reclaim_two(&mut f, T0 + 32 * H);
        let (st, eff) = f.run(&Reader::at(T0 + 40 * H));
        assert!(st.problems.is_empty(), "{:?}", st.problems);
        assert!(st.clock_held().is_none());
        assert_eq!(st.snapshots.len(), 3);
        assert!(eff.contains(&Effect::ReclaimSnapshot(sid(0))));
        // A second hold after the acknowledgement holds again.
        f.push(T0 + 60 * H, Event::ClockHeld { gap_ns: 20 * H });
        f.push(
            T0 + 61 * H,
            Event::Reclaimed {
                snapshots: vec![sid(2)],
                packs: vec![],
            },
        );
        let (st, _) = f.run(&Reader::at(T0 + 70 * H));
        assert_eq!(st.problems.len(), 1, "{:?}", st.problems);
        assert!(st.snapshots.contains_key(&sid(2)));
    }

    #[test]
    fn deleting_executions_wait_for_the_acknowledgement_and_others_run() {
        let mut f = fx(2, 60, 3600);
        held(&mut f);
        let erase = f.propose(T0 + 30 * H + S, Action::DeleteSnapshots(vec![sid(0)]), 0);
        f.vote(T0 + 30 * H + 2 * S, erase, VoteKind::Approve, 1);
        let mut shorter = f.config.retention.clone();
        shorter.keep_within_secs -= 1;
        let mut longer = f.config.retention.clone();
        longer.daily += 7;
        let short = f.propose(T0 + 30 * H + 3 * S, Action::SetRetention(shorter), 0);
        f.vote(T0 + 30 * H + 4 * S, short, VoteKind::Approve, 1);
        let long = f.propose(T0 + 30 * H + 5 * S, Action::SetRetention(longer.clone()), 0);
        f.vote(T0 + 30 * H + 6 * S, long, VoteKind::Approve, 1);
        let (st, _) = f.run(&Reader::at(T0 + 40 * H));
        for p in [erase, short] {
            let e = st.execution_allowed(&p).unwrap_err();
            assert!(e.contains("ack-clock"), "{e}");
        }
        assert_eq!(st.execution_allowed(&long), Ok(()));
        f.push(T0 + 31 * H, Event::Executed { proposal: erase });
        f.push(T0 + 31 * H + S, Event::Executed { proposal: short });
        f.push(T0 + 31 * H + 2 * S, Event::Executed { proposal: long });
        let (st, eff) = f.run(&Reader::at(T0 + 40 * H));
        assert!(eff.is_empty(), "{eff:?}");
        assert_eq!(st.problems.len(), 2, "{:?}", st.problems);
        assert!(st.problems.iter().all(|p| p.what.contains("clock is held")));
        assert!(st.snapshots.contains_key(&sid(0)));
        assert_eq!(st.retention, longer, "a longer policy is not a deletion");
    }

    #[test]
    fn an_acknowledgement_needs_agreeing_clocks_and_to_follow_the_hold() {
        let mut f = fx(2, 60, 3600);
        // Without a hold there is nothing to acknowledge.
        let early = f.propose(T0 - H, Action::AckClock, 0);
        f.vote(T0 - H + S, early, VoteKind::Approve, 1);
        held(&mut f);
        let (st, _) = f.run(&Reader::at(T0 + 40 * H));
        let e = st.execution_allowed(&early).unwrap_err();
        assert!(e.contains("before the clock hold"), "{e}");
        // Proposed by a clock 20 min off the vault's: refused at its entry.
        let t = T0 + 31 * H;
        let off = Proposal::new(f.cid, Action::AckClock, &f.admins[0], t - 20 * 60 * S).unwrap();
        f.push(
            t,
            Event::Proposed {
                proposal: off.encode(),
            },
        );
        f.vote(t + S, off.id(), VoteKind::Approve, 1);
        f.push(t + 2 * H, Event::Executed { proposal: early });
        let (st, _) = f.run(&Reader::at(T0 + 40 * H));
        assert!(!st.proposals.contains_key(&off.id()));
        let w: Vec<&str> = st.problems.iter().map(|p| p.what.as_str()).collect();
        assert_eq!(w.len(), 3, "{w:?}");
        assert!(w[0].contains("20 min behind"), "{w:?}");
        assert!(w[1].contains("unknown proposal"), "{w:?}");
        assert!(w[2].contains("before the clock hold"), "{w:?}");
        assert!(st.clock_held().is_some());
        // 14 min off is within the bound.
        let ok = Proposal::new(
            f.cid,
            Action::AckClock,
            &f.admins[0],
            t + 3 * H + 14 * 60 * S,
        )
        .unwrap();
        assert!(LogState::ack_clock_skew(ok.time_ns, t + 3 * H).is_none());
        // No hold at all: an acknowledgement may not run.
        let mut g = fx(2, 60, 3600);
        let lone = g.propose(T0, Action::AckClock, 0);
        g.vote(T0 + S, lone, VoteKind::Approve, 1);
        let (st, _) = g.run(&Reader::at(T0 + H));
        assert!(
            st.execution_allowed(&lone)
                .unwrap_err()
                .contains("not held")
        );
    }

    #[test]
    fn the_fuzz_fold_reaches_clock_holds() {
        // What `fold_any` (the decode fuzz target) is given: a hold, a
        // reclaim under it, and a malformed hold; then every prefix.
        let mut data = Vec::new();
        for e in [
            Entry {
                time_ns: -10,
                event: Event::ClockHeld { gap_ns: i64::MAX },
            },
            Entry {
                time_ns: -9,
                event: Event::Reclaimed {
                    snapshots: vec![sid(1)],
                    packs: vec![sid(2)],
                },
            },
        ] {
            crate::vaultlog::frame(&e.encode(), &mut data);
        }
        crate::vaultlog::frame(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 12, 1], &mut data);
        for n in 0..=data.len() {
            fold_any(&data[..n]);
        }
        crate::decode_any(&data[4..]);
    }
}
