//! The vault's state and every rule it enforces, with no HTTP in it.
//!
//! What the log means comes from the one validating fold,
//! [`holdfast_core::logstate`], which every reader also runs; the vault adds
//! what only it knows: which client uploaded which pack (`owners`, for
//! namespaces and quotas), nonces and rate limits, and storage locks. Every
//! mutation follows the same order: check everything → write the object
//! durably → append the log entry → sign a checkpoint → answer.
//!
//! Damage is never a reason to delete: a snapshot file the vault cannot
//! read stops every pack reclaim, a snapshot it cannot explain pins its
//! packs, and a log entry that breaks a rule is reported and not applied.
//!
//! Time: entries are stamped on an anchored clock ([`Clock`]) that never
//! runs before the last entry, nor further ahead of it than the monotonic
//! time since start (plus a bound) allows, so no single reading of a wrong
//! wall clock can reclaim anything.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Instant, SystemTime};

use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::format::{self, Config, IdentityRecord, Member, Role, Snapshot};
use holdfast_core::governance::{Action, Proposal, Status, Vote, VoteKind};
use holdfast_core::logstate::{Effect, LogState, Reader};
use holdfast_core::merkle::{Checkpoint, Hash};
use holdfast_core::request::{Auth, WINDOW_NS};
use holdfast_core::retention::{self, Candidate};
use holdfast_core::vaultlog::{Entry, Event};
use holdfast_store::{Deletion, Kind, ObjectStore, StoreError};

use crate::logstore::LogStore;
use crate::{ApiError, VaultError};

pub(crate) const NS: i64 = 1_000_000_000;

pub struct Options {
    /// Bytes of pack data one client may hold (reclaimed packs free it).
    pub quota_bytes: u64,
    /// Requests per second per identity (token bucket), and burst size.
    pub rate: f64,
    pub burst: f64,
    /// Run with the alert text in `HOLDFAST_ALERT` for every alert.
    pub alert_cmd: Option<String>,
    /// Snapshots one client may commit per hour; more are refused (429)
    /// and alerted: a stolen client key cannot flood the log.
    pub max_snapshots_per_hour: usize,
    /// How far ahead of its last log entry the vault's clock may be at
    /// start (a vault down longer than this runs behind until restarted
    /// within the bound; a clock that jumped further is not believed).
    pub max_clock_gap_secs: u64,
    /// A wall clock more than this past the log's last entry at start is
    /// held: the vault logs a clock hold (kind 12) and no deletion happens
    /// until an admin quorum acknowledges the clock (`AckClock`).
    pub clock_hold_after_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quota_bytes: 1 << 40,
            rate: 500.0,
            burst: 2000.0,
            alert_cmd: None,
            max_snapshots_per_hour: 120,
            max_clock_gap_secs: 7 * 86_400,
            clock_hold_after_secs: 6 * 3600,
        }
    }
}

/// What the vault answers for a committed snapshot.
#[derive(Clone, Debug)]
pub struct SnapMeta {
    pub client: [u8; 32],
    pub time_ns: i64,
    pub lock_until_ns: i64,
}

/// Storage locks on shared objects (packs, the config, identity records) are
/// raised in steps of this much at most, so that consecutive snapshots do
/// not each extend every pack they share (at most one step of extra hold).
const LOCK_STEP_MAX_NS: i64 = 7 * 86_400 * NS;
/// On any anomaly the client's last healthy snapshot, and the suspect one,
/// are held at least this long from now (SPEC T4: a burst of bad snapshots
/// never ages out the pre-attack ones).
pub const ANOMALY_HOLD_NS: i64 = 30 * 86_400 * NS;
/// A hold is renewed once it has less than this left (so a burst does not
/// log an extension per snapshot).
const HOLD_RENEW_NS: i64 = 86_400 * NS;
// Shrink and burst are judged by the log fold itself (holdfast_core::
// logstate: `SHRINK_MIN_BYTES`, `SHRINK_WINDOW_NS`, `BURST_PER_HOUR` and the
// quorum's thresholds), the same way for this vault and every reader.
/// A client that committed before and has sent nothing for this long is
/// alerted (restic #1968: 26 h for a daily job).
const SILENT_NS: i64 = 26 * 3600 * NS;
/// How far a snapshot's own (client) time may be ahead of the vault's.
pub(crate) const CLIENT_AHEAD_NS: i64 = 600 * NS;
/// How far behind: a backup may run long, but not for weeks.
pub(crate) const CLIENT_BEHIND_NS: i64 = 7 * 86_400 * NS;
/// The least time a pack no snapshot has listed is kept: a backup's packs
/// are uploaded before the snapshot that lists them, and a grace period of
/// 0 must not reclaim a backup in flight.
const IN_FLIGHT_NS: i64 = 3600 * NS;
/// How far the vault's clock and the storage's may disagree before the
/// disagreement is alerted; deletions use the earlier of the two plus this.
const STORAGE_SKEW_NS: i64 = 600 * NS;

/// The vault's clock, anchored to its log: never before the last entry, and
/// never further ahead of the anchor than the monotonic clock has run since
/// start. At start, a wall clock more than `max_gap` past the log's last
/// entry (a bad RTC, a spoofed NTP answer, or a vault down that long) is
/// not believed at all: the vault runs on the log's time, and alerts. A
/// wall clock that jumps back never dates an entry before the last.
pub struct Clock {
    base_ns: i64,
    start: Instant,
    /// What deletions count from: the time deletions had been credited up
    /// to when this vault last ran (`state/clock`), else the log's last
    /// entry; `None` on an empty log. Entries are dated on a believed wall
    /// clock, so a spoofed gap would otherwise carry into the next start's
    /// anchor.
    anchor_ns: Option<i64>,
    /// Never earlier than this (the newest snapshot adopted on a first
    /// start: a clock set back must not shorten its lock).
    floor_ns: Option<i64>,
    /// At start: how far the wall clock was past [`Clock::anchor_ns`]: what
    /// the uptime credit judges.
    pub hold_gap_ns: i64,
    /// Believed start gaps not yet acknowledged, before this start
    /// (`state/clock`): each start adds its own; the hold judges the sum.
    pub pending_before_ns: i64,
    /// At start: how far the wall clock was past the log's last entry.
    pub start_gap_ns: i64,
    /// At start: the wall clock was not believed (gap beyond the bound).
    pub disbelieved: bool,
}

impl Clock {
    /// `credited_before`: the time deletions were credited up to when the
    /// vault last ran (`state/clock`), if known; `pending_before_ns`: the
    /// start gaps believed since the last acknowledgement.
    pub fn new(
        last_entry_ns: i64,
        max_gap_ns: i64,
        credited_before: Option<i64>,
        pending_before_ns: i64,
    ) -> Self {
        Self::at(
            now_ns(),
            Instant::now(),
            last_entry_ns,
            max_gap_ns,
            credited_before,
            pending_before_ns,
        )
    }

    /// [`Clock::new`] with the wall clock read at start given (tests).
    pub fn at(
        wall: i64,
        start: Instant,
        last_entry_ns: i64,
        max_gap_ns: i64,
        credited_before: Option<i64>,
        pending_before_ns: i64,
    ) -> Self {
        let anchor_ns = match credited_before {
            _ if last_entry_ns == i64::MIN => None,
            Some(c) => Some(c),
            None => Some(last_entry_ns),
        };
        let (base_ns, gap, disbelieved) = if last_entry_ns == i64::MIN {
            (wall, 0, false)
        } else {
            let gap = wall.saturating_sub(last_entry_ns);
            if gap > max_gap_ns {
                (last_entry_ns, gap, true)
            } else {
                (last_entry_ns.max(wall), gap, false)
            }
        };
        Clock {
            base_ns,
            start,
            anchor_ns,
            floor_ns: None,
            hold_gap_ns: anchor_ns.map_or(0, |a| wall.saturating_sub(a)),
            pending_before_ns: pending_before_ns.max(0),
            start_gap_ns: gap,
            disbelieved,
        }
    }

    fn up(&self) -> i64 {
        self.start.elapsed().as_nanos().min(i64::MAX as u128) as i64
    }

    /// The time the vault acts on: the wall clock, capped by the anchor.
    pub fn now(&self) -> i64 {
        self.now_at(now_ns(), self.up())
    }

    /// [`Clock::now`] at wall clock `wall`, `up` after start.
    pub fn now_at(&self, wall: i64, up: i64) -> i64 {
        wall.min(self.base_ns.saturating_add(up))
            .max(self.floor_ns.unwrap_or(i64::MIN))
    }

    /// How far the wall clock is ahead of what the vault believes.
    pub fn wall_ahead_ns(&self) -> i64 {
        now_ns().saturating_sub(self.base_ns.saturating_add(self.up()))
    }

    /// At a first start over adopted snapshots: `t`, the newest one's own
    /// time, is what deletions count from (no later than `wall`), as the
    /// credited time is at a later start.
    pub fn anchor_first_start(&mut self, t: i64, wall: i64) {
        if self.anchor_ns.is_none() {
            let a = t.min(wall);
            self.anchor_ns = Some(a);
            self.hold_gap_ns = wall.saturating_sub(a);
        }
    }

    /// Raises the clock's floor (the newest adopted snapshot's own time).
    pub fn raise_floor(&mut self, t: i64) {
        self.floor_ns = Some(self.floor_ns.map_or(t, |f| f.max(t)));
    }

    /// The believed start gaps not yet acknowledged, this start's included:
    /// what the hold bound judges.
    pub fn pending_ns(&self) -> i64 {
        if self.anchor_ns.is_none() {
            return 0;
        }
        self.pending_before_ns
            .saturating_add(self.hold_gap_ns.max(0))
    }

    /// The start is held: the unacknowledged gaps pass `hold_ns`.
    pub fn held(&self, hold_ns: i64) -> bool {
        self.pending_ns() > hold_ns
    }

    /// The time deletions are judged on, by this clock alone. A gap at
    /// start under the hold bound `hold_ns` was believed for dating, but
    /// is credited to deletions only as fast as the vault has been up
    /// ([`credited`]): a spoofed +5 h at a restart needs 5 h of uptime to
    /// reclaim anything. A larger gap was held (kind 12: nothing is
    /// deleted until the quorum acknowledges it) or not believed at all.
    pub fn for_deletion(&self, hold_ns: i64) -> i64 {
        self.for_deletion_at(now_ns(), self.up(), hold_ns)
    }

    /// [`Clock::for_deletion`] at wall clock `wall`, `up` after start.
    pub fn for_deletion_at(&self, wall: i64, up: i64, hold_ns: i64) -> i64 {
        // Not raised by the floor: a snapshot's own signed time dates
        // entries after it, but never brings a deletion forward (adopted
        // locks count from it anyway).
        let now = wall.min(self.base_ns.saturating_add(up));
        match self.anchor_ns {
            Some(a) if !self.disbelieved && !self.held(hold_ns) => {
                credited(now, a, self.hold_gap_ns, up)
            }
            _ => now,
        }
    }

    /// The most `state/clock` may say while a hold is in force: the anchor
    /// plus uptime (the gap is not credited until acknowledged).
    pub fn held_credit_at(&self, up: i64) -> Option<i64> {
        self.anchor_ns.map(|a| a.saturating_add(up))
    }

    /// What `state/clock` should say at wall clock `wall`, `up` after
    /// start ([`Vault::save_credit`]): `held`, a hold is in force (logged
    /// or not); `floor`, the highest credit recorded; `acks` and
    /// `acks_seen`, the newest executed acknowledgement now and when the
    /// gaps were counted.
    #[allow(clippy::too_many_arguments)]
    pub fn credit_at(
        &self,
        wall: i64,
        up: i64,
        hold_ns: i64,
        held: bool,
        floor: Option<i64>,
        acks: u64,
        acks_seen: u64,
    ) -> Credit {
        let mut t = self.for_deletion_at(wall, up, hold_ns);
        if held && let Some(cap) = self.held_credit_at(up) {
            t = t.min(cap);
        }
        Credit {
            time_ns: t.max(floor.unwrap_or(i64::MIN)),
            pending_ns: if acks > acks_seen {
                0
            } else {
                self.pending_ns()
            },
            acks,
        }
    }

    /// What deletions are judged on ([`Vault::deletion_now`]): this clock's
    /// [`Clock::for_deletion_at`], and on storage with a clock of its own
    /// no later than that clock (`storage`: its reading and the time since,
    /// `None` until read) plus the allowed skew.
    pub fn deletion_at(
        &self,
        wall: i64,
        up: i64,
        hold_ns: i64,
        locks_enforced: bool,
        storage: Option<(i64, i64)>,
    ) -> Option<i64> {
        let mine = self.for_deletion_at(wall, up, hold_ns);
        if !locks_enforced {
            return Some(mine);
        }
        let (t, since) = storage?;
        Some(mine.min(t.saturating_add(since).saturating_add(STORAGE_SKEW_NS)))
    }
}

/// `min(now, last + up + min(gap, up))`: a believed gap of `gap` past the
/// log's last entry (`last`) at start counts for deletions only once the
/// vault has been up that long (`up`).
pub fn credited(now: i64, last: i64, gap: i64, up: i64) -> i64 {
    now.min(
        last.saturating_add(up)
            .saturating_add(gap.clamp(0, up.max(0))),
    )
}

/// What `state/clock` holds (§8 of docs/vault.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Credit {
    /// The time deletions were credited up to.
    pub time_ns: i64,
    /// Believed start gaps since the last acknowledgement.
    pub pending_ns: i64,
    /// One past the log index of the newest executed `AckClock` then.
    pub acks: u64,
}

impl Credit {
    pub fn encode(&self) -> [u8; 24] {
        let mut b = [0u8; 24];
        b[..8].copy_from_slice(&self.time_ns.to_le_bytes());
        b[8..16].copy_from_slice(&self.pending_ns.to_le_bytes());
        b[16..].copy_from_slice(&self.acks.to_le_bytes());
        b
    }

    /// What a start takes from `saved` at wall clock `wall`, with `acks`
    /// the newest executed acknowledgement in the log and `last` the log's
    /// last entry: the credited time, and the unacknowledged gaps (none
    /// after a newer acknowledgement, also one logged just before a crash).
    /// A credit later than the wall clock is kept (a clock set back since:
    /// it is never lowered, so the clock's return is no jump) while it is
    /// within `keep_ahead` of the log's last entry; further (a quiet log
    /// that long, or a damaged or planted file) it is none, with how much
    /// later than the wall clock it was, to alert.
    pub fn at_start(
        saved: Option<Credit>,
        wall: i64,
        acks: u64,
        last: i64,
        keep_ahead: i64,
    ) -> (Option<i64>, i64, Option<i64>) {
        let Some(c) = saved else {
            return (None, 0, None);
        };
        let pending = if c.acks >= acks {
            c.pending_ns.max(0)
        } else {
            0
        };
        if c.time_ns > wall && c.time_ns > last.saturating_add(keep_ahead) {
            (None, pending, Some(c.time_ns.saturating_sub(wall)))
        } else {
            (Some(c.time_ns), pending, None)
        }
    }

    /// 24 bytes, or the older 8 (the time alone).
    pub fn decode(b: &[u8]) -> Option<Credit> {
        let i = |r: std::ops::Range<usize>| b.get(r).and_then(|s| <[u8; 8]>::try_from(s).ok());
        match b.len() {
            8 => Some(Credit {
                time_ns: i64::from_le_bytes(i(0..8)?),
                ..Credit::default()
            }),
            24 => Some(Credit {
                time_ns: i64::from_le_bytes(i(0..8)?),
                pending_ns: i64::from_le_bytes(i(8..16)?),
                acks: u64::from_le_bytes(i(16..24)?),
            }),
            _ => None,
        }
    }
}

pub struct Vault {
    /// Where the log, checkpoint and pack-owner records live.
    pub state_dir: PathBuf,
    /// Shared with request handlers, which read and write objects outside
    /// the vault's lock (the store is `Sync`; every write is atomic).
    pub store: Arc<dyn ObjectStore>,
    pub config: Config,
    pub config_id: ObjectId,
    /// The vault key it signs checkpoints with now: the log's current one.
    identity: Identity,
    /// The key of a coming rotation (`--next-key`), and its certificate,
    /// made at start so that the switch cannot fail halfway.
    next: Option<(Identity, Arc<rustls::sign::CertifiedKey>)>,
    /// The TLS certificate presented: switched with `identity`.
    pub tls: Arc<crate::tls::SwapCert>,
    /// What the log says, through the validating fold every reader runs.
    pub st: LogState,
    pub(crate) owners: HashMap<ObjectId, HashSet<[u8; 32]>>,
    /// Its own lock: a pack's owner record is appended and fsynced without
    /// the vault's lock held ([`crate::commit`]).
    pub(crate) owners_file: Arc<Mutex<File>>,
    pub(crate) usage: HashMap<[u8; 32], u64>,
    /// Stored size of each pack with an owner record.
    sizes: HashMap<ObjectId, u64>,
    pub log: LogStore,
    /// Nonces seen in the time window, and per-identity rate buckets: a
    /// lock of their own, so authentication needs only a read lock.
    gate: Mutex<crate::gate::RequestGate>,
    /// Writes between their check and their commit (see [`crate::commit`]).
    pub(crate) flight: crate::commit::InFlight,
    /// Stderr and `--alert-cmd`, deduplicated and rate-limited.
    pub alerts: crate::alert::Alerter,
    pub opts: Options,
    pub clock: Clock,
    /// Storage lock (Unix ns) this process has set per shared object.
    retained: HashMap<(Kind, ObjectId), i64>,
    /// Deletions the log explains that the storage refused for now (still
    /// under its lock): retried at reclaim once the lock has passed.
    pending: BTreeMap<(u8, ObjectId), Kind>,
    /// True while replaying: deletions are collected, then done once.
    replaying: bool,
    /// Packs listed by snapshot files the log does not explain: kept.
    pinned: HashSet<ObjectId>,
    /// Why no pack may be reclaimed (a snapshot file nobody can read).
    hold_packs: Option<String>,
    /// Commit times per client in the last hour (burst limit).
    pub(crate) recent: HashMap<[u8; 32], VecDeque<i64>>,
    /// Ready proposals that may not run (already alerted once).
    unrunnable: HashSet<ObjectId>,
    /// Packs a committed snapshot has listed since this vault started.
    /// Any other unreferenced pack may belong to a backup still in flight
    /// and is kept at least `IN_FLIGHT_NS`, whatever the grace period says.
    listed: HashSet<ObjectId>,
    /// Silent clients already alerted (client, its last snapshot).
    silent: HashSet<([u8; 32], ObjectId)>,
    /// The storage's own clock (S3's time stamp on an object the vault just
    /// wrote) and when it was read: a second witness, so that no single
    /// clock reading can cause a deletion.
    storage_time: Option<(i64, Instant)>,
    /// New log entries are dated after this (the newest entry's time, but
    /// for entries forged beyond the clock gap the vault believes).
    dated_after_ns: i64,
    /// Why the vault takes no writes (its log runs far ahead of its clock).
    frozen: Option<String>,
    /// A clock hold this vault could not log at start (a full disk): it
    /// deletes nothing until restarted.
    hold_unlogged: Option<String>,
    /// The clock hold (its newest entry) already alerted as stopping
    /// reclaims: one alert per hold.
    hold_alerted: Option<u64>,
    /// When `state/clock` was last written by this process.
    credit_saved: Option<Instant>,
    /// The highest value `state/clock` held or was given: never lowered.
    credit_floor: Option<i64>,
    /// One past the log index of the newest executed `AckClock` when the
    /// unacknowledged gaps were last counted: a newer one resets them.
    acks_seen: u64,
    /// Exclusive lock on the state directory: one vault per state.
    _lock: File,
}

/// Debug builds only: the process dies here, as with kill -9 (no unwinding,
/// nothing flushed), when `HOLDFAST_VAULT_CRASH_AT` names this point. The
/// crash tests' fault hook; release builds have none.
#[cfg(debug_assertions)]
pub(crate) fn crash_point(name: &str) {
    if std::env::var_os("HOLDFAST_VAULT_CRASH_AT").is_some_and(|v| v == name) {
        std::process::abort();
    }
}

#[cfg(not(debug_assertions))]
pub(crate) fn crash_point(_name: &str) {}

/// The vault as request handlers share it. Reads (authentication, listings,
/// proofs, visibility checks) take the read lock together; a write takes
/// the write lock only to check its rules and to commit (owner record, log
/// append), never across storage I/O or hashing of a body
/// ([`crate::commit`]).
pub type Shared = Arc<RwLock<Vault>>;

pub fn read(v: &Shared) -> RwLockReadGuard<'_, Vault> {
    v.read().unwrap_or_else(|p| p.into_inner())
}

pub fn write(v: &Shared) -> RwLockWriteGuard<'_, Vault> {
    v.write().unwrap_or_else(|p| p.into_inner())
}

/// Every pack in storage with the time it was stored (None if that could
/// not be read: never reclaimed then). Storage I/O, made outside the
/// vault's lock for [`Vault::reclaim`].
pub fn pack_ages(store: &dyn ObjectStore) -> Result<Vec<(String, Option<i64>)>, ApiError> {
    Ok(store
        .list(Kind::Pack)
        .map_err(ApiError::store)?
        .into_iter()
        .map(|(name, _)| {
            let t = store.stored_at_ns(Kind::Pack, &name).ok();
            (name, t)
        })
        .collect())
}

/// Appends a pack-owner record (pack id, client, size: 72 bytes) and
/// fsyncs it, under the owners file's own lock.
pub(crate) fn append_owner(
    file: &Mutex<File>,
    id: &ObjectId,
    who: &[u8; 32],
    size: u64,
) -> Result<(), ApiError> {
    let mut rec = Vec::with_capacity(72);
    rec.extend_from_slice(&id.0);
    rec.extend_from_slice(who);
    rec.extend_from_slice(&size.to_le_bytes());
    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
    // Records are 72 bytes read in step: a write a full disk cut short is
    // cut back, so the next record does not start mid-record.
    let len = f
        .metadata()
        .map_err(|e| ApiError::internal(e.to_string()))?
        .len();
    if let Err(e) = f.write_all(&rec).and_then(|_| f.sync_data()) {
        let _ = f.set_len(len - len % 72);
        return Err(match e.kind() {
            std::io::ErrorKind::StorageFull => ApiError::new(507, "the vault's state disk is full"),
            _ => ApiError::internal(format!("recording a pack owner: {e}")),
        });
    }
    Ok(())
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

pub(crate) fn short(k: &[u8]) -> String {
    holdfast_core::id::hex(&k[..4])
}

/// Takes the state directory's lock, or says which vault holds it.
fn lock_state_dir(dir: &Path) -> Result<File, VaultError> {
    std::fs::create_dir_all(dir).map_err(|e| VaultError::Io(format!("{}: {e}", dir.display())))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    let p = dir.join("lock");
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&p)
        .map_err(|e| VaultError::Io(format!("{}: {e}", p.display())))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(VaultError::Usage(format!(
            "another vault is already running on {} (two vaults on one repository would fork its log)",
            dir.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(VaultError::Io(format!("{}: {e}", p.display())))
        }
    }
}

impl Vault {
    /// Opens the vault over a repository's storage, with its own state
    /// (log, checkpoint, pack owners) in `state_dir`, and the vault key,
    /// which pins the config by its id. `next` is the key of a coming
    /// rotation: the vault switches to it when it executes the rotation.
    /// Whichever of the two the log's chain makes current signs from the
    /// start; holding neither is refused.
    pub fn open(
        store: Arc<dyn ObjectStore>,
        state_dir: &Path,
        identity: Identity,
        next: Option<Identity>,
        pinned_config: ObjectId,
        opts: Options,
    ) -> Result<Vault, VaultError> {
        let lock = lock_state_dir(state_dir)?;
        let cfg_bytes = match store.get_pinned(Kind::Config, "config", &pinned_config) {
            Ok(b) => b,
            Err(StoreError::Corrupt { why, .. }) => {
                return Err(VaultError::Tamper(format!(
                    "the repository's config is not the one this vault key belongs to ({why})"
                )));
            }
            Err(e) => return Err(VaultError::Io(e.to_string())),
        };
        let config_id = pinned_config;
        let config =
            Config::decode(&cfg_bytes).map_err(|e| VaultError::Tamper(format!("config: {e}")))?;
        if config.vault_key().is_none() {
            return Err(VaultError::Usage(
                "the repository's config names no vault key".into(),
            ));
        }
        let mut identity_files = Vec::new();
        let mut records: Vec<(ObjectId, IdentityRecord)> = Vec::new();
        let mut members: HashMap<[u8; 32], Member> = HashMap::new();
        let mut shadowing: Vec<String> = Vec::new();
        for (name, _) in store
            .list(Kind::Identity)
            .map_err(|e| VaultError::Io(e.to_string()))?
        {
            let b = store
                .get(Kind::Identity, &name)
                .map_err(|e| VaultError::Tamper(format!("identity {name}: {e}")))?;
            // Under its content id, or renamed (which hides it from the
            // log's entry naming the id): the vault does not start.
            if ObjectId::of(&b).to_hex() != name {
                return Err(VaultError::Tamper(format!(
                    "identity {name}: its name is not its content id ({}); restore the record \
                     under its id (e.g. from a replica)",
                    ObjectId::of(&b).short()
                )));
            }
            let rec = IdentityRecord::decode(&b)
                .map_err(|e| VaultError::Tamper(format!("identity {name}: {e}")))?;
            rec.verify(&config, &config_id).map_err(|_| {
                VaultError::Tamper(format!(
                    "identity {name}: not signed by an admin, or a role one admin may not add"
                ))
            })?;
            // A record naming a config member's key is refused (the config
            // wins; one admin must not demote another), and said.
            if config.members.iter().any(|m| m.public == rec.member.public) {
                shadowing.push(name.clone());
            } else {
                members
                    .entry(rec.member.public)
                    .or_insert(rec.member.clone());
                if let Ok(id) = ObjectId::from_hex(&name) {
                    records.push((id, rec));
                }
            }
            identity_files
                .push(ObjectId::from_hex(&name).map_err(|e| VaultError::Tamper(e.to_string()))?);
        }
        let vdir = state_dir.to_path_buf();
        let first = [Some(&identity), next.as_ref()]
            .into_iter()
            .flatten()
            .find(|k| Some(k.public()) == config.vault_key());
        let own: Vec<[u8; 32]> = [Some(&identity), next.as_ref()]
            .into_iter()
            .flatten()
            .map(|k| k.public())
            .collect();
        let log = LogStore::open_holding(&vdir, config_id.0, first, &own, now_ns())?;

        // Pack owners: pack id [32] | client [32] | size u64, appended.
        let owners_path = vdir.join("owners");
        let raw = std::fs::read(&owners_path).unwrap_or_default();
        let mut owners: HashMap<ObjectId, HashSet<[u8; 32]>> = HashMap::new();
        let mut usage: HashMap<[u8; 32], u64> = HashMap::new();
        let mut sizes: HashMap<ObjectId, u64> = HashMap::new();
        for rec in raw.chunks_exact(72) {
            let pack = ObjectId(rec[..32].try_into().expect("72-byte record"));
            let client: [u8; 32] = rec[32..64].try_into().expect("72-byte record");
            let size = u64::from_le_bytes(rec[64..72].try_into().expect("72-byte record"));
            sizes.insert(pack, size);
            if owners.entry(pack).or_default().insert(client) {
                *usage.entry(client).or_default() += size;
            }
        }
        let owners_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&owners_path)
            .map_err(|e| VaultError::Io(format!("{}: {e}", owners_path.display())))?;

        let mut st = LogState::new(&config, config_id, members);
        for (id, rec) in &records {
            st.register_record(*id, rec);
        }
        for id in &identity_files {
            st.hold_record(*id);
        }
        let alerts = crate::alert::Alerter::new(opts.alert_cmd.clone());
        for name in &shadowing {
            alerts.raise(&format!(
                "identity record {name} names a member of the config: refused, not applied \
                 (an admin signed it; the config's role stands)"
            ));
        }
        let tls = crate::tls::SwapCert::new(&identity)?;
        let next = match next {
            Some(k) => {
                let cert = crate::tls::certified_key(&k)?;
                Some((k, cert))
            }
            None => None,
        };
        let mut v = Vault {
            state_dir: vdir,
            store,
            config,
            config_id,
            identity,
            next,
            tls,
            st,
            owners,
            owners_file: Arc::new(Mutex::new(owners_file)),
            usage,
            sizes,
            log,
            gate: Mutex::new(crate::gate::RequestGate::default()),
            flight: Default::default(),
            alerts,
            clock: Clock::new(i64::MIN, 0, None, 0),
            opts,
            retained: HashMap::new(),
            pending: BTreeMap::new(),
            replaying: true,
            pinned: HashSet::new(),
            hold_packs: None,
            recent: HashMap::new(),
            unrunnable: HashSet::new(),
            listed: HashSet::new(),
            storage_time: None,
            dated_after_ns: i64::MIN,
            frozen: None,
            hold_unlogged: None,
            hold_alerted: None,
            credit_saved: None,
            credit_floor: None,
            acks_seen: 0,
            silent: HashSet::new(),
            _lock: lock,
        };
        let fresh = v.log.is_empty();
        v.replay();
        v.replaying = false;
        // A record the log added that is not on disk (moved away, renamed):
        // this vault cannot apply it (a succession's revocation), so it
        // would accept a key every reader holding the record refuses. It
        // does not start until the record is put back.
        let missing = v.st.records_not_held();
        if !missing.is_empty() {
            let why = format!(
                "TAMPERING: the log adds identity record(s) {} that identities/ does not hold \
                 (moved away or renamed): the vault does not start until they are restored \
                 (e.g. from a replica)",
                missing
                    .iter()
                    .map(|i| i.to_hex())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            v.alert(&why);
            return Err(VaultError::Tamper(why));
        }
        v.take_current_key()?;
        // New entries are dated after every entry of the log, even ones this
        // vault's clock calls future (a clock set back at restart) — except
        // entries beyond the gap the vault would believe at all (forged far
        // ahead: readers ignore those for ordering, and so does the vault).
        let bound = now_ns().saturating_add(
            (v.opts
                .max_clock_gap_secs
                .min(i64::MAX as u64 / (2 * NS as u64)) as i64)
                * NS,
        );
        let mut times: Vec<i64> = Vec::with_capacity(v.log.len() as usize);
        v.log
            .for_each(|_, e| times.extend(Entry::decode(e).ok().map(|e| e.time_ns)))
            .map_err(|e| VaultError::Io(e.to_string()))?;
        v.dated_after_ns = times
            .iter()
            .copied()
            .filter(|t| *t <= bound)
            .max()
            .unwrap_or(i64::MIN)
            .max(v.st.last_time_ns);
        // Entries further ahead than that: either this host's clock is far
        // behind, or they were forged far ahead. Dating new entries before
        // them would scar the log for every reader, after them would date
        // them far in the future: the vault takes no writes (reads go on)
        // until the clock is right or the log is restored from a replica.
        if let Some(far) = times.iter().copied().filter(|t| *t > bound).max() {
            let days = far.saturating_sub(now_ns()) / (86_400 * NS);
            let why = format!(
                "the log holds entries dated {days} d after this host's clock, beyond \
                 --max-clock-gap-secs: this clock is wrong or the log was forged; the vault \
                 takes no writes until the clock is right (or the state is restored from a replica)"
            );
            v.alert(&format!("CLOCK or TAMPERING: {why}"));
            v.frozen = Some(why);
        }
        let wall = now_ns();
        let saved = v.read_credit();
        let acks = v.newest_ack();
        // An acknowledgement executed since the gaps were counted (also
        // one whose execution was logged just before a crash) resets them.
        v.acks_seen = acks;
        // A credit later than the wall clock at start and far past the
        // log's last entry would switch off the hold and the uptime credit
        // (the gap from it is negative): ignored.
        // (Judged against the log's newest entry as written, even one this
        // clock calls far future: a clock set back far freezes the vault,
        // and its credit must survive that run too.)
        let newest_entry = times.iter().copied().max().unwrap_or(i64::MIN);
        let (credited_before, pending, ahead) =
            Credit::at_start(saved, wall, acks, newest_entry, v.hold_ns());
        if let Some(ahead) = ahead {
            v.alert(&format!(
                "CLOCK: state/clock credits deletions up to {} min after this host's clock: \
                 ignored (deletions count from the log's last entry)",
                ahead / (60 * NS)
            ));
        }
        v.credit_floor = credited_before;
        v.clock = Clock::at(
            wall,
            Instant::now(),
            v.dated_after_ns,
            (v.opts
                .max_clock_gap_secs
                .min(i64::MAX as u64 / (2 * NS as u64)) as i64)
                * NS,
            credited_before,
            pending,
        );
        v.check_clock();
        v.report_start_gap();
        v.hold_clock_at_start();
        // One listing of the snapshots serves every check at start (on S3
        // each listing is a paginated walk over every version).
        let present: HashSet<String> = v
            .store
            .list(Kind::Snapshot)
            .map_err(|e| VaultError::Io(e.to_string()))?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        v.report_missing_snapshots(&present);
        v.finish_replayed_deletions(&present)?;
        // Identity records written into the directory before the vault ran
        // (or behind its back): valid ones are admitted, and logged now.
        for id in identity_files {
            if !v.st.identities.contains(&id) {
                // A successor record that may not join now (a stale one
                // whose logging failed before another succession of the
                // same key was logged): not logged, said.
                if let Some(why) = v.st.succession_refused(&id) {
                    v.alert(&format!(
                        "identity record {} found on disk is a client key succession that may \
                         not join now ({why}): not logged",
                        id.short()
                    ));
                    continue;
                }
                v.log(Event::IdentityAdded { record: id })
                    .map_err(|e| VaultError::Io(e.msg))?;
                v.alert(&format!(
                    "identity record {} found on disk; now in the log",
                    id.short()
                ));
            }
        }
        v.recover_unlogged_snapshots(&present, fresh)?;
        v.log_missing_stored();
        Ok(v)
    }

    /// Live snapshots whose stored bytes (kind 11) the log lacks: a crash
    /// between a snapshot's `SnapshotAdded` entry and its `Stored` one, or
    /// a snapshot adopted or recovered at start. Logged now from the pack
    /// sizes the vault recorded at upload, and alerted once. One whose pack
    /// sizes are not all known stays without (every reader then judges no
    /// shrink against it).
    fn log_missing_stored(&mut self) {
        let missing: Vec<(ObjectId, u64)> = self
            .st
            .snapshots
            .iter()
            .filter(|(_, s)| s.stored_bytes.is_none())
            .filter_map(|(id, s)| {
                let bytes = s
                    .packs
                    .as_ref()?
                    .iter()
                    .try_fold(0u64, |a, p| a.checked_add(self.sizes.get(p).copied()?))?;
                Some((*id, bytes))
            })
            .collect();
        let mut logged = Vec::new();
        for (id, bytes) in missing {
            match self.log(Event::Stored {
                snapshot: id,
                bytes,
            }) {
                Ok(()) => logged.push(id.short()),
                Err(e) => {
                    self.alert(&format!(
                        "logging the stored bytes of snapshot {} failed: {}",
                        id.short(),
                        e.msg
                    ));
                    break;
                }
            }
        }
        if !logged.is_empty() {
            let more = logged.len().saturating_sub(8);
            logged.truncate(8);
            self.alert(&format!(
                "the stored bytes of {} snapshot(s) were not in the log (a crash after the \
                 commit, or adopted at start): logged now: {}{}",
                logged.len() + more,
                logged.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
    }

    /// After the replay: the log's checkpoint must be signed by the key the
    /// chain of executed rotations makes current at its size, and this
    /// vault must hold the current key (the one it was started with, or
    /// `--next-key` if the rotation ran while it was down).
    fn take_current_key(&mut self) -> Result<(), VaultError> {
        let cp = &self.log.checkpoint;
        let want = self.st.vault_key_at(cp.size);
        if cp.signer != want {
            return Err(VaultError::Tamper(format!(
                "the log's checkpoint (size {}) is signed by {}, but the log's executed \
                 rotations make {} the vault key there",
                cp.size,
                holdfast_core::id::hex(&cp.signer[..8]),
                holdfast_core::id::hex(&want[..8]),
            )));
        }
        let current = self.st.vault_key();
        if self.identity.public() == current {
            return Ok(());
        }
        match self.next.take() {
            Some((k, cert)) if k.public() == current => {
                self.identity = k;
                self.tls.set(cert);
                Ok(())
            }
            other => {
                self.next = other;
                let at = self.st.vault_keys.last().map_or(0, |(_, f)| *f);
                Err(VaultError::Usage(format!(
                    "this vault does not hold the current vault key {}: the log rotated to it \
                     (checkpoints from size {at} on); start the vault with that key (--key)",
                    holdfast_core::id::hex(&current)
                )))
            }
        }
    }

    /// The vault key it signs with now.
    pub fn public(&self) -> [u8; 32] {
        self.identity.public()
    }

    /// Rebuilds the state from the log through the validating fold. An
    /// entry that breaks a rule is alerted as tampering and not applied.
    fn replay(&mut self) {
        let reader = Reader::at(now_ns());
        let mut unreadable = Vec::new();
        let store = &self.store;
        let mut packs_of = |id: &ObjectId| match store.get(Kind::Snapshot, &id.to_hex()) {
            Ok(b) => match Snapshot::decode(&b) {
                Ok(s) if ObjectId::of(&b) == *id => Some(s.header.packs),
                _ => {
                    unreadable.push(*id);
                    None
                }
            },
            Err(StoreError::NotFound { .. }) => None,
            Err(_) => {
                unreadable.push(*id);
                None
            }
        };
        let mut effects = Vec::new();
        let st = &mut self.st;
        let read = self.log.for_each(|_, raw| {
            effects.extend(st.apply(raw, &reader, &mut packs_of));
        });
        if let Err(e) = read {
            self.alert(&format!("reading the vault's own log failed: {e}"));
        }
        // A committed snapshot's packs are in its client's namespace: the
        // log alone rebuilds this if `owners` is lost.
        let live: Vec<([u8; 32], Vec<ObjectId>)> = self
            .st
            .snapshots
            .values()
            .filter_map(|s| s.packs.clone().map(|p| (s.client, p)))
            .collect();
        for (client, packs) in live {
            for p in packs {
                self.owners.entry(p).or_default().insert(client);
                self.listed.insert(p);
            }
        }
        self.perform(effects);
        for p in self.st.problems.clone() {
            self.alert(&format!("TAMPERING: the vault's own {p}; not applied"));
        }
        if !unreadable.is_empty() {
            let why = format!(
                "{} live snapshot(s) unreadable ({}): no pack is reclaimed until they are repaired",
                unreadable.len(),
                unreadable
                    .iter()
                    .map(|i| i.short())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            self.alert(&format!("DAMAGE: {why}"));
            self.hold_packs = Some(why);
        }
    }

    /// Alerts when the wall clock is far ahead of the anchored clock, or
    /// behind the log's last entry.
    pub fn check_clock(&self) {
        let ahead = self.clock.wall_ahead_ns();
        if ahead > 3600 * NS {
            self.alert(&format!(
                "CLOCK: the system clock is {} h ahead of the vault's anchored time; \
                 reclaims, executions and new entries use the anchored time",
                ahead / (3600 * NS)
            ));
        }
        let behind = self.dated_after_ns.saturating_sub(now_ns());
        if self.dated_after_ns != i64::MIN && behind > 60 * NS {
            self.alert(&format!(
                "CLOCK: the system clock is {} min behind the log's last entry; \
                 new entries are dated after it, and clients with correct clocks are refused \
                 until the clock is right",
                behind / (60 * NS)
            ));
        }
    }

    /// Reads the storage's time stamp on a snapshot just written (S3's own
    /// clock: only storage that enforces locks keeps one of its own) and
    /// alerts when it disagrees with the vault's.
    pub(crate) fn observe_storage_clock(&mut self, id: &ObjectId, stamp: i64) {
        if !self.store.locks_enforced() {
            return;
        }
        let Ok(t) = self.store.stored_at_ns(Kind::Snapshot, &id.to_hex()) else {
            return;
        };
        self.storage_time = Some((t, Instant::now()));
        let skew = stamp.saturating_sub(t);
        if skew.abs() > STORAGE_SKEW_NS {
            self.alert(&format!(
                "CLOCK: the storage's clock is {} min {} the vault's; deletions wait for the \
                 earlier of the two",
                skew.abs() / (60 * NS),
                if skew > 0 { "behind" } else { "ahead of" }
            ));
        }
    }

    /// The time deletions (reclaims, executions) are judged on: the
    /// anchored clock, and on storage with a clock of its own (S3) also no
    /// later than that clock allows. None on such storage until its clock
    /// has been read once since start (at the first snapshot committed).
    pub fn deletion_now(&self) -> Option<i64> {
        self.clock.deletion_at(
            now_ns(),
            self.clock.up(),
            self.hold_ns(),
            self.store.locks_enforced(),
            self.storage_time
                .map(|(t, at)| (t, at.elapsed().as_nanos().min(i64::MAX as u128) as i64)),
        )
    }

    fn hold_ns(&self) -> i64 {
        (self
            .opts
            .clock_hold_after_secs
            .min(i64::MAX as u64 / (2 * NS as u64)) as i64)
            * NS
    }

    /// One past the log index of the newest executed `AckClock` (0: none).
    fn newest_ack(&self) -> u64 {
        self.st
            .proposals
            .values()
            .filter(|p| p.proposal.action == Action::AckClock)
            .filter_map(|p| p.executed.map(|(i, _)| i.saturating_add(1)))
            .max()
            .unwrap_or(0)
    }

    /// At start, believed start gaps adding up to more than
    /// `--clock-hold-after-secs` since the last acknowledgement (this
    /// start's gap from the credited time included) are held: logged (kind
    /// 12, so the hold survives a restart and every reader's fold enforces
    /// it) and alerted once. A hold already in force is not logged again
    /// (an acknowledgement being voted on stays valid) unless this start's
    /// clock is more than the bound past the log's last entry (a new jump).
    fn hold_clock_at_start(&mut self) {
        if !self.clock.held(self.hold_ns()) || self.frozen.is_some() {
            return;
        }
        let gap_ns = self.clock.pending_ns();
        let h = gap_ns / (3600 * NS);
        let this = self.clock.hold_gap_ns / (3600 * NS);
        if self.st.clock_held().is_some() && self.clock.start_gap_ns <= self.hold_ns() {
            // Already held, and this start's clock is within the bound of
            // the log's last entry (dated on the clock the hold was logged
            // on): alerted by the first reclaim it stops. Further (a new
            // jump while held) logs a new hold, so that an acknowledgement
            // proposed before this start (for the older hold) cannot run
            // and cover what this start added: it must be proposed again,
            // by a clock that agrees with this one.
            return;
        }
        self.log_hold(
            gap_ns,
            &format!(
                "the system clock moved {h} h past the credited time over the starts since the \
                 last acknowledgement ({this} h at this one)"
            ),
        );
    }

    /// Logs a clock hold of `gap_ns` (`what`: the gap, for the alert), or
    /// holds deletions until restart when it cannot be logged.
    fn log_hold(&mut self, gap_ns: i64, what: &str) {
        match self.log(Event::ClockHeld { gap_ns }) {
            Ok(()) => {
                self.hold_alerted = self.st.clock_held().map(|c| c.last);
                self.alert(&format!(
                    "CLOCK HELD: {what}, beyond --clock-hold-after-secs: logged as a clock hold; \
                     no reclaim and no deleting execution until an admin quorum acknowledges the \
                     clock. If the vault really was down that long (or the clock is now right), \
                     run `holdfast propose ack-clock` and approve it; if not, fix the clock first"
                ));
            }
            Err(e) => {
                let why = format!(
                    "{what} and the hold could not be logged ({}): nothing is deleted until the \
                     vault is restarted",
                    e.msg
                );
                self.alert(&format!("CLOCK HELD: {why}"));
                self.hold_unlogged = Some(why);
            }
        }
    }

    /// What `state/clock` holds (`None` when absent or malformed).
    fn read_credit(&self) -> Option<Credit> {
        let path = self.state_dir.join("clock");
        match std::fs::read(&path) {
            Ok(b) => match Credit::decode(&b) {
                Some(c) => Some(c),
                None => {
                    self.alert(&format!(
                        "CLOCK: {} is not 8 or 24 bytes: ignored (deletions count from the \
                         log's last entry)",
                        path.display()
                    ));
                    None
                }
            },
            Err(_) => None,
        }
    }

    /// What `state/clock` should say now: the time deletions are credited
    /// up to (never lower than before; while a hold is in force, logged or
    /// not, no further than the anchor plus uptime), the believed start
    /// gaps not yet acknowledged (none once an acknowledgement executed),
    /// and the newest acknowledgement.
    fn credit_at(&self, wall: i64, up: i64) -> Credit {
        self.clock.credit_at(
            wall,
            up,
            self.hold_ns(),
            self.clock_hold_reason().is_some(),
            self.credit_floor,
            self.newest_ack(),
            self.acks_seen,
        )
    }

    /// Records (crash-safe, at most once a minute unless `force`)
    /// [`Vault::credit_at`]: the next start measures its gap from the
    /// credited time and adds it to the unacknowledged gaps, so restarts on
    /// a clock spoofed a little more each time add up to a hold instead of
    /// a free advance.
    pub fn save_credit(&mut self, force: bool) {
        if self
            .credit_saved
            .is_some_and(|at| !force && at.elapsed() < std::time::Duration::from_secs(60))
        {
            return;
        }
        self.credit_saved = Some(Instant::now());
        let c = self.credit_at(now_ns(), self.clock.up());
        let path = self.state_dir.join("clock");
        match holdfast_store::write_private(&path, &c.encode()) {
            Ok(()) => self.credit_floor = Some(c.time_ns),
            Err(e) => self.alert(&format!("CLOCK: recording {} failed: {e}", path.display())),
        }
    }

    /// Why no deletion may happen now (a clock hold), if so.
    pub fn clock_hold_reason(&self) -> Option<String> {
        if let Some(why) = &self.hold_unlogged {
            return Some(why.clone());
        }
        self.st.clock_held().map(|h| {
            format!(
                "the vault's clock is held (log entry {}: {} h past the credited time over the \
                 starts since the last acknowledgement) until an admin quorum acknowledges it: \
                 run `holdfast propose ack-clock` (with a right clock) and approve it",
                h.last,
                h.gap_ns / (3600 * NS)
            )
        })
    }

    /// Alerts once at start on a clock that moved far while the vault was
    /// down (believed or not).
    fn report_start_gap(&self) {
        let h = self.clock.start_gap_ns / (3600 * NS);
        if self.clock.disbelieved {
            self.alert(&format!(
                "CLOCK: the system clock is {h} h past the log's last entry, beyond \
                 --max-clock-gap-secs: not believed; the vault runs on the log's time \
                 (reclaims wait). If the vault really was down that long, restart it with a \
                 larger --max-clock-gap-secs"
            ));
        } else if self.clock.held(self.hold_ns()) {
            self.alert(&format!(
                "CLOCK: the system clock is {} h past the credited time ({} h over the starts \
                 since the last acknowledgement); believed for dating (within \
                 --max-clock-gap-secs), held for deletions. If the vault was not down that \
                 long, the clock jumped: readers will report entries dated after their clocks",
                self.clock.hold_gap_ns / (3600 * NS),
                self.clock.pending_ns() / (3600 * NS)
            ));
        }
    }

    /// Snapshots the log names must be in storage; alerts on any that is not.
    fn report_missing_snapshots(&self, present: &HashSet<String>) {
        let missing: Vec<String> = self
            .st
            .snapshots
            .keys()
            .filter(|id| !present.contains(&id.to_hex()))
            .map(|id| id.short())
            .collect();
        if !missing.is_empty() {
            self.alert(&format!(
                "TAMPERING: {} logged snapshot(s) missing from disk: {}",
                missing.len(),
                missing.join(", ")
            ));
        }
    }

    /// Snapshot files the log does not hold. A crash between writing a
    /// snapshot and logging it leaves one the client never got an answer
    /// for; a vault started on a directory repository finds the ones made
    /// before it. Either is committed now if it passes every check a PUT
    /// would (signed by an active client, for this repository, its packs in
    /// the client's namespace, or, on a vault's first start, present in
    /// storage). Anything else is reported and its packs kept; a snapshot
    /// the log deleted stays deleted.
    fn recover_unlogged_snapshots(
        &mut self,
        present: &HashSet<String>,
        fresh: bool,
    ) -> Result<(), VaultError> {
        let pack_sizes: HashMap<ObjectId, u64> = if fresh {
            self.store
                .list(Kind::Pack)
                .map_err(|e| VaultError::Io(e.to_string()))?
                .into_iter()
                .filter_map(|(n, s)| ObjectId::from_hex(&n).ok().map(|i| (i, s)))
                .collect()
        } else {
            HashMap::new()
        };
        let mut found: Vec<(i64, ObjectId, Snapshot)> = Vec::new();
        for name in present {
            let Ok(id) = ObjectId::from_hex(name) else {
                continue;
            };
            if self.st.snapshots.contains_key(&id) || self.st.gone.contains_key(&id) {
                continue;
            }
            let body = match self.store.get(Kind::Snapshot, name) {
                Ok(b) => b,
                Err(e) => {
                    let why = format!(
                        "snapshot file {} not in the log and unreadable: {e}",
                        id.short()
                    );
                    self.alert(&format!("TAMPERING: {why}"));
                    self.hold_packs = Some(why);
                    continue;
                }
            };
            match Snapshot::decode(&body) {
                Ok(s) if ObjectId::of(&body) == id => found.push((s.header.time_ns, id, s)),
                _ => {
                    let why = format!("snapshot file {} is not a valid snapshot", id.short());
                    self.alert(&format!("TAMPERING: {why}"));
                    self.hold_packs = Some(why);
                }
            }
        }
        // In the clients' own order, so that the vault's times keep it.
        found.sort_by_key(|(t, id, _)| (*t, *id));
        // On a first start nothing dates the vault's clock but the wall
        // clock: one set back would shorten every adopted lock. The clock
        // never runs before the newest snapshot's own signed time.
        // A snapshot dated further ahead of this host's clock than
        // --max-clock-gap-secs (a client's spoofed clock, or a stolen client
        // key writing to the directory before the vault existed) does not
        // move it: it is adopted (its lock counts from its own time too,
        // which only lengthens it) but alerted, and the floor ignores it.
        // The floor dates entries only: deletions never follow it.
        let wall = now_ns();
        let max_ahead = (self
            .opts
            .max_clock_gap_secs
            .min(i64::MAX as u64 / (2 * NS as u64)) as i64)
            * NS;
        let ahead = found
            .iter()
            .filter(|(t, _, _)| *t > wall.saturating_add(max_ahead))
            .count();
        if fresh && ahead > 0 {
            self.alert(&format!(
                "CLOCK: {ahead} snapshot(s) to adopt are dated more than --max-clock-gap-secs \
                 ahead of the system clock: adopted, but they do not move the vault's clock"
            ));
        }
        let newest = found
            .iter()
            .map(|(t, _, _)| *t)
            .filter(|t| *t <= wall.saturating_add(max_ahead))
            .max();
        if fresh && let Some(newest) = newest {
            let behind = newest.saturating_sub(self.clock.now());
            if behind > 0 {
                self.alert(&format!(
                    "CLOCK: the system clock is {} min before the newest snapshot's own time \
                     at this first start: the vault's clock starts from that time",
                    behind / (60 * NS)
                ));
                self.clock.raise_floor(newest);
            }
        }
        // An empty log over snapshots a vault once locked in storage: this
        // vault's state was lost or deleted, not a first start.
        let now = self.clock.now();
        let lost_state = fresh
            && self.store.locks_enforced()
            && found.iter().any(|(_, id, _)| {
                self.store
                    .locked_until_ns(Kind::Snapshot, &id.to_hex())
                    .is_ok_and(|t| t.is_some_and(|t| t > now))
            });
        let mut adopted = 0usize;
        for (_, id, snap) in found {
            let c = snap.header.client;
            if fresh && snap.header.packs.iter().all(|p| pack_sizes.contains_key(p)) {
                for p in &snap.header.packs {
                    if !self.owners.get(p).is_some_and(|o| o.contains(&c)) {
                        self.record_owner(p, &c, pack_sizes[p])
                            .map_err(|e| VaultError::Io(e.msg))?;
                    }
                }
            }
            match self.check_snapshot(&c, &snap) {
                Ok(()) => {
                    let now = self.stamp();
                    // Also from its own signed time: a later lock is safe,
                    // a clock set back must not shorten it.
                    let lock = self.lock_for(now).max(self.lock_for(snap.header.time_ns));
                    self.commit_snapshot(&c, &id, &snap.header.packs, now, lock)
                        .map_err(|e| VaultError::Io(e.msg))?;
                    if fresh {
                        adopted += 1;
                    } else {
                        self.alert(&format!(
                            "snapshot {} was written before a crash but not logged; committed now",
                            id.short()
                        ));
                    }
                }
                Err(e) => {
                    self.pinned.extend(snap.header.packs.iter().copied());
                    self.alert(&format!(
                        "TAMPERING: snapshot file {} is not in the log and would not be accepted: {}; its packs are kept",
                        id.short(),
                        e.msg
                    ))
                }
            }
        }
        if adopted > 0 && lost_state {
            self.alert(&format!(
                "TAMPERING: the vault's log is empty but the storage holds {adopted} snapshot(s) \
                 a vault locked: its state was lost or deleted; adopted them to keep them \
                 (restore the state from a replica's vault/ to keep their history)"
            ));
        } else if adopted > 0 {
            self.alert(&format!(
                "adopted {adopted} snapshot(s) written to this repository before the vault ran; \
                 checked as a PUT, logged and locked from now"
            ));
        }
        // Nor does anything bound a clock ahead at a first start but the
        // adopted snapshots' own times: further past the newest than the
        // hold bound, deletions wait for an acknowledgement.
        if fresh
            && adopted > 0
            && self.frozen.is_none()
            && self.st.clock_held().is_none()
            && let Some(newest) = newest
        {
            let now = self.clock.now();
            let gap_ns = now.saturating_sub(newest);
            // The newest adopted snapshot's time is this start's anchor:
            // its gap enters the sum of believed gaps (so a later restart
            // adds to it), is credited to deletions only as fast as uptime,
            // and caps what state/clock records while held.
            self.clock.anchor_first_start(newest, now);
            if gap_ns > self.hold_ns() {
                self.log_hold(
                    gap_ns,
                    &format!(
                        "the system clock is {} h past the newest adopted snapshot's own time \
                         at this first start",
                        gap_ns / (3600 * NS)
                    ),
                );
            }
        }
        Ok(())
    }

    /// Carries out what valid log entries let the vault do. While
    /// replaying, deletions are only collected.
    fn perform(&mut self, effects: Vec<Effect>) {
        for e in effects {
            match e {
                Effect::Erase(s) | Effect::ReclaimSnapshot(s) => {
                    self.remove_file(Kind::Snapshot, &s)
                }
                Effect::ReclaimPack(p) => {
                    self.listed.remove(&p);
                    let size = self.sizes.remove(&p).unwrap_or(0);
                    for c in self.owners.remove(&p).unwrap_or_default() {
                        if let Some(u) = self.usage.get_mut(&c) {
                            *u = u.saturating_sub(size);
                        }
                    }
                    self.remove_file(Kind::Pack, &p);
                }
            }
        }
    }

    /// Deletion is the vault's alone, outside the client contract, and only
    /// after a log entry that explains it. Storage that holds the object
    /// under its own lock refuses; the deletion then waits in `pending`.
    /// While replaying, deletions are only collected.
    fn remove_file(&mut self, kind: Kind, id: &ObjectId) {
        if self.replaying {
            self.pending.insert((kind_tag(kind), *id), kind);
            return;
        }
        match self.store.delete(kind, &id.to_hex()) {
            Ok(Deletion::Done) => {
                self.pending.remove(&(kind_tag(kind), *id));
            }
            Ok(Deletion::Locked) => {
                self.pending.insert((kind_tag(kind), *id), kind);
            }
            Err(e) => {
                self.pending.insert((kind_tag(kind), *id), kind);
                self.alert(&format!("deleting {kind} {} failed: {e}", id.short()));
            }
        }
    }

    /// After replay: carries out the deletions the log explains for objects
    /// still in storage (one listing per kind, not one request per entry).
    fn finish_replayed_deletions(&mut self, snapshots: &HashSet<String>) -> Result<(), VaultError> {
        let collected = std::mem::take(&mut self.pending);
        if collected.is_empty() {
            return Ok(());
        }
        let packs: HashSet<String> = self
            .store
            .list(Kind::Pack)
            .map_err(|e| VaultError::Io(e.to_string()))?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        for ((_, id), kind) in collected {
            let present = match kind {
                Kind::Pack => &packs,
                _ => snapshots,
            };
            if present.contains(&id.to_hex()) {
                self.remove_file(kind, &id);
            }
        }
        Ok(())
    }

    /// Raises the storage lock of a shared object to cover `until_ns`, in
    /// steps (see [`LOCK_STEP_MAX_NS`]); remembers what it set.
    fn retain_shared(&mut self, kind: Kind, id: ObjectId, until_ns: i64) -> Result<(), ApiError> {
        if !self.store.locks_enforced() {
            return Ok(());
        }
        if self
            .retained
            .get(&(kind, id))
            .is_some_and(|&t| t >= until_ns)
        {
            return Ok(());
        }
        let step = (self.st.retention.keep_within_secs as i64)
            .saturating_mul(NS / 2)
            .clamp(NS, LOCK_STEP_MAX_NS);
        let target = until_ns
            .div_euclid(step)
            .saturating_add(1)
            .saturating_mul(step);
        let name = if kind == Kind::Config {
            "config".to_string()
        } else {
            id.to_hex()
        };
        self.store
            .retain(kind, &name, target)
            .map_err(|e| ApiError::new(503, format!("cannot lock {kind} {}: {e}", id.short())))?;
        self.retained.insert((kind, id), target);
        Ok(())
    }

    /// Locks in storage everything a snapshot needs until `until_ns`: the
    /// snapshot itself, its packs, the config and the identity records.
    fn retain_snapshot(
        &mut self,
        id: &ObjectId,
        packs: &[ObjectId],
        until_ns: i64,
    ) -> Result<(), ApiError> {
        if !self.store.locks_enforced() {
            return Ok(());
        }
        self.store
            .retain(Kind::Snapshot, &id.to_hex(), until_ns)
            .map_err(|e| ApiError::new(503, format!("cannot lock snapshot {}: {e}", id.short())))?;
        for &p in packs {
            self.retain_shared(Kind::Pack, p, until_ns)?;
        }
        self.retain_shared(Kind::Config, self.config_id, until_ns)?;
        let idents: Vec<ObjectId> = self.st.identities.iter().copied().collect();
        for i in idents {
            self.retain_shared(Kind::Identity, i, until_ns)?;
        }
        Ok(())
    }

    /// The time for a new entry: the anchored clock, and always after the
    /// last entry.
    pub(crate) fn stamp(&self) -> i64 {
        self.clock.now().max(self.dated_after_ns.saturating_add(1))
    }

    fn log(&mut self, event: Event) -> Result<(), ApiError> {
        let t = self.stamp();
        self.log_at(event, t, None)
    }

    /// Logs with a given vault time (a snapshot's stamp and the lock computed
    /// from it must use the same reading of the clock), then folds the entry
    /// exactly as every reader will, and carries out its effects.
    fn log_at(
        &mut self,
        event: Event,
        time_ns: i64,
        packs: Option<&[ObjectId]>,
    ) -> Result<(), ApiError> {
        if let Some(why) = &self.frozen {
            return Err(ApiError::new(409, why.clone()));
        }
        let entry = Entry { time_ns, event };
        let raw = self
            .log
            .append(&entry, self.config_id.0, &self.identity)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.dated_after_ns = self.dated_after_ns.max(time_ns);
        self.listed.extend(packs.into_iter().flatten().copied());
        let before = self.st.problems.len();
        let reader = Reader::at(time_ns.max(now_ns()));
        let effects = self
            .st
            .apply(&raw, &reader, &mut |_| packs.map(|p| p.to_vec()));
        for p in &self.st.problems[before..] {
            self.alert(&format!(
                "BUG: the vault logged an entry its readers refuse: {p}"
            ));
        }
        self.perform(effects);
        Ok(())
    }

    pub fn alert(&self, msg: &str) {
        self.alerts.raise(msg);
    }

    // ------------------------------------------------------------ auth

    /// Checks a request's signer, time window, signature (over the
    /// declared body hash: the body itself is checked against it once
    /// read), nonce and rate. Returns the signer's role.
    pub fn authenticate(&self, auth: &Auth, method: &str, path: &str) -> Result<Role, ApiError> {
        // The anchored clock: a wall clock that jumped forward does not lock
        // every client out.
        let now = self.clock.now();
        let member = self.st.members.get(&auth.key).ok_or_else(|| {
            ApiError::unauthorized(format!(
                "unknown key: not an identity of this vault's repository (config id {}); \
                     a key of another repository, or one not added yet",
                self.config_id.short()
            ))
        })?;
        let role = member.role;
        if self.st.removed.contains(&auth.key) {
            return Err(ApiError::forbidden(
                "this identity was revoked or removed (see the log)",
            ));
        }
        if self.st.is_pending(&auth.key) {
            return Err(ApiError::forbidden(
                "this key's succession record is not in the log yet: it may not act",
            ));
        }
        // The signature first: a request correctly signed by a member's key
        // but dated outside the window is that key used on a host with a
        // wrong clock (a stolen client key, say), and is alerted; an
        // unsigned one is nobody's and is not.
        auth.verify_declared(method, path)
            .map_err(|_| ApiError::unauthorized("bad request signature"))?;
        let mut gate = self.gate.lock().unwrap_or_else(|p| p.into_inner());
        if (auth.time_ns - now).abs() > WINDOW_NS {
            let minutes = (auth.time_ns - now) / (60 * NS);
            if gate.clock_alert_due(&auth.key, now) {
                drop(gate);
                self.alert(&format!(
                    "{} {} (key {}) sent a correctly signed request dated {minutes} min from \
                     the vault's clock: refused (401). Its host's clock is wrong, or the key is \
                     used elsewhere (stolen): check that host and the key",
                    role.name(),
                    self.member_name(&auth.key),
                    short(&auth.key),
                ));
            }
            return Err(ApiError::unauthorized(format!(
                "request time outside the allowed window: {minutes} min from the vault's clock \
                 (check this host's clock and the vault's)"
            )));
        }
        if !gate.fresh_nonce(&auth.key, &auth.nonce, now) {
            return Err(ApiError::unauthorized("replayed request"));
        }
        if !gate.take_token(&auth.key, self.opts.rate, self.opts.burst) {
            return Err(ApiError::new(429, "rate limit: slow down"));
        }
        Ok(role)
    }

    // ------------------------------------------------------------ reads

    /// May `who` (with `role`) see this object?
    pub fn may_read(&self, who: &[u8; 32], role: Role, kind: Kind, id: &ObjectId) -> bool {
        match (role, kind) {
            (Role::Restore | Role::Replica, Kind::Pack | Kind::Snapshot) => true,
            (Role::Auditor | Role::Admin, Kind::Snapshot) => true,
            (Role::Client, Kind::Pack) => self.owns(who, id),
            (Role::Client, Kind::Snapshot) => self
                .st
                .snapshots
                .get(id)
                .is_some_and(|s| self.st.client_of(&s.client) == self.st.client_of(who)),
            (_, Kind::Config | Kind::Identity) => true,
            _ => false,
        }
    }

    /// Objects of a kind that `who` may see, with sizes. Snapshots: only
    /// those the log holds (an unlogged file is not a snapshot). Auditors
    /// and admins may list pack ids and sizes (to check that snapshots are
    /// whole) but not read packs.
    /// `all` is the storage's listing, made outside the lock.
    pub fn visible(
        &self,
        who: &[u8; 32],
        role: Role,
        kind: Kind,
        all: Vec<(String, u64)>,
    ) -> Vec<(String, u64)> {
        if kind == Kind::Pack && matches!(role, Role::Auditor | Role::Admin) {
            return all;
        }

        all.into_iter()
            .filter(|(n, _)| {
                let Ok(id) = ObjectId::from_hex(n) else {
                    return false;
                };
                (kind != Kind::Snapshot || self.st.snapshots.contains_key(&id))
                    && self.may_read(who, role, kind, &id)
            })
            .collect()
    }

    // ------------------------------------------------------------ writes

    pub(crate) fn record_owner(
        &mut self,
        id: &ObjectId,
        who: &[u8; 32],
        size: u64,
    ) -> Result<(), ApiError> {
        append_owner(&self.owners_file, id, who, size)?;
        self.note_owner(id, who, size);
        Ok(())
    }

    /// An owner record made durable: the pack is now in `who`'s namespace.
    pub(crate) fn note_owner(&mut self, id: &ObjectId, who: &[u8; 32], size: u64) {
        self.sizes.insert(*id, size);
        if self.owners.entry(*id).or_default().insert(*who) {
            *self.usage.entry(*who).or_default() += size;
        }
    }

    pub(crate) fn meta(&self, id: &ObjectId) -> Option<SnapMeta> {
        self.st.snapshots.get(id).map(|s| SnapMeta {
            client: s.client,
            time_ns: s.added_ns,
            lock_until_ns: s.lock_until_ns,
        })
    }

    /// The vault's own look at a snapshot it just committed, trusting
    /// nothing the client says about sizes: what it references in stored
    /// bytes (pack sizes the vault recorded at upload) against the client's
    /// previous and last healthy snapshots, and how many the client sent
    /// this hour. The client's signed findings count too (they can only
    /// make the vault keep more). Each signal is logged (kind 9) and
    /// alerted, and the client's last healthy snapshot and this one are
    /// held (their locks extended, never shortened). Failures to log or
    /// hold are alerted: the snapshot is committed either way.
    pub(crate) fn judge(&mut self, who: &[u8; 32], id: &ObjectId, snap: &Snapshot) {
        let Some(me) = self.st.snapshots.get(id) else {
            return;
        };
        let now = me.added_ns;
        // The stored bytes it references, into the log (kind 11) when the
        // size of every pack is known: every reader's fold, this vault's
        // included, judges a shrink from them; a burst it judged at the
        // commit already.
        let stored: Option<u64> = me.packs.as_ref().and_then(|ps| {
            ps.iter()
                .map(|p| self.sizes.get(p).copied())
                .try_fold(0u64, |a, b| a.checked_add(b?))
        });
        crash_point("before-stored");
        if let Some(bytes) = stored
            && let Err(e) = self.log(Event::Stored {
                snapshot: *id,
                bytes,
            })
        {
            self.alert(&format!(
                "logging the stored bytes of snapshot {} failed: {}",
                id.short(),
                e.msg
            ));
        }
        // This client's other live snapshots, newest first.
        let mut earlier: Vec<(&ObjectId, &holdfast_core::logstate::Snap)> = self
            .st
            .snapshots
            .iter()
            .filter(|(i, s)| {
                self.st.client_of(&s.client) == self.st.client_of(who)
                    && *i != id
                    && s.added_ns <= now
            })
            .collect();
        earlier.sort_by_key(|(i, s)| std::cmp::Reverse((s.added_ns, **i)));
        let healthy: Option<ObjectId> = earlier
            .iter()
            .find(|(_, s)| s.flags.is_empty())
            .map(|(i, _)| **i);
        let mut signals: Vec<(format::Signal, u64, String)> = Vec::new();
        for &(code, count) in self.st.snapshots.get(id).map_or(&[][..], |s| &s.flags) {
            let what = if code == format::Signal::SHRINK.0 {
                format!(
                    "references {count} stored bytes, less than its baseline by more than \
                     {}% (the log's stored bytes)",
                    self.st.threshold(code).unwrap_or(50)
                )
            } else {
                format!("{count} snapshots from this client in the last hour")
            };
            signals.push((format::Signal(code), count, what));
        }
        if let Some(fs) = snap.findings.as_deref().filter(|f| !f.is_empty()) {
            signals.push((
                format::Signal::CLIENT_REPORTED,
                fs.len() as u64,
                format!(
                    "the client reported {}",
                    fs.iter()
                        .map(|f| format!("{} ({})", f.signal.name(), f.count))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if signals.is_empty() {
            return;
        }
        for (signal, count, what) in &signals {
            // A shrink or a burst is in every reader's fold already; only
            // the client's report needs an entry of its own.
            if *signal == format::Signal::CLIENT_REPORTED
                && let Err(e) = self.log(Event::Flagged {
                    snapshot: *id,
                    signal: signal.0,
                    count: *count,
                })
            {
                self.alert(&format!(
                    "ANOMALY: flagging snapshot {} failed: {}",
                    id.short(),
                    e.msg
                ));
            }
            self.alert(&format!(
                "ANOMALY: client {} snapshot {}: {}: {what}; it takes no retention slot",
                self.member_name(who),
                id.short(),
                signal.name()
            ));
        }
        self.hold(who, healthy.as_ref(), id);
    }

    /// Extends the locks of the client's last healthy snapshot and of the
    /// suspect one to at least [`ANOMALY_HOLD_NS`] from now.
    fn hold(&mut self, who: &[u8; 32], healthy: Option<&ObjectId>, suspect: &ObjectId) {
        let until = self.clock.now().saturating_add(ANOMALY_HOLD_NS);
        let me = self.identity.public();
        for (what, id) in healthy
            .map(|h| ("last healthy", *h))
            .into_iter()
            .chain([("suspect", *suspect)])
        {
            let Some(cur) = self.st.snapshots.get(&id).map(|s| s.lock_until_ns) else {
                continue;
            };
            if cur >= until - HOLD_RENEW_NS {
                continue;
            }
            match self.raise_lock(me, &id, until) {
                Ok(_) => self.alert(&format!(
                    "ANOMALY: held the {what} snapshot {} of client {} for {} days",
                    id.short(),
                    self.member_name(who),
                    ANOMALY_HOLD_NS / (86_400 * NS)
                )),
                Err(e) => self.alert(&format!(
                    "ANOMALY: holding the {what} snapshot {} failed: {}",
                    id.short(),
                    e.msg
                )),
            }
        }
        if healthy.is_none() {
            self.alert(&format!(
                "ANOMALY: client {} has no healthy snapshot left to hold",
                self.member_name(who)
            ));
        }
    }

    /// A client's name, for alerts.
    fn member_name(&self, who: &[u8; 32]) -> String {
        self.st
            .members
            .get(who)
            .map_or_else(|| short(who), |m| m.name.clone())
    }

    /// Alerts once for each client that committed snapshots before and has
    /// sent none for [`SILENT_NS`] (until it sends one again).
    fn check_silent(&mut self, now: i64) {
        let mut last: HashMap<[u8; 32], (i64, ObjectId)> = HashMap::new();
        for (id, s) in &self.st.snapshots {
            // By client, across its keys: a key that was succeeded is not
            // a silent client; its successor may be.
            let e = last
                .entry(self.current_key(&s.client))
                .or_insert((s.added_ns, *id));
            if (s.added_ns, *id) > *e {
                *e = (s.added_ns, *id);
            }
        }
        for (client, (t, id)) in last {
            if now.saturating_sub(t) > SILENT_NS
                && !self.st.removed.contains(&client)
                && self.silent.insert((client, id))
            {
                self.alert(&format!(
                    "SILENT: client {} has sent no snapshot for {} h",
                    self.member_name(&client),
                    now.saturating_sub(t) / (3600 * NS)
                ));
            }
        }
    }

    /// The lock a snapshot stamped `now` gets at commit.
    pub(crate) fn lock_for(&self, now: i64) -> i64 {
        retention::commit_lock(&self.st.retention, now)
    }

    /// What a snapshot must be to be committed: signed by `who`, a client of
    /// this repository, listing only packs in `who`'s namespace.
    pub(crate) fn check_snapshot(&self, who: &[u8; 32], snap: &Snapshot) -> Result<(), ApiError> {
        if &snap.header.client != who {
            return Err(ApiError::forbidden(
                "a client may only write snapshots it signed itself",
            ));
        }
        if !self.st.is_client(who) {
            return Err(ApiError::forbidden(
                "not signed by a client of this repository",
            ));
        }
        if snap.header.config_id != self.config_id {
            return Err(ApiError::bad("snapshot is for another repository"));
        }
        // The restore key epoch it names must be the log's current one;
        // once a rotation ran, a snapshot that names none is refused too
        // (format.md §11.2).
        let current = self.st.restore_publics.last().copied();
        let rotated = self.st.restore_publics.len() > 1;
        match (snap.restore_epoch, current) {
            (Some(e), Some(c)) if e == c => {}
            (None, _) if !rotated => {}
            (e, _) => {
                let named = match e {
                    Some(e) => match self.st.restore_publics.iter().position(|k| *k == e) {
                        Some(i) => format!("restore key epoch {i}"),
                        None => "a key that is no restore key epoch".into(),
                    },
                    None => "no restore key epoch".into(),
                };
                return Err(ApiError::bad(format!(
                    "snapshot sealed to {named}, not the current epoch {} (the restore key was \
                     rotated: run the backup again, with this version or later)",
                    self.st.restore_publics.len() - 1
                )));
            }
        }
        for p in &snap.header.packs {
            if !self.owns(who, p) {
                return Err(ApiError::new(
                    409,
                    format!(
                        "snapshot lists pack {} which is not stored in this client's namespace",
                        p.short()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Locks (in storage, where it can) and logs a snapshot whose object is
    /// already durable, stamped `now` with lock `lock`.
    pub(crate) fn commit_snapshot(
        &mut self,
        who: &[u8; 32],
        id: &ObjectId,
        packs: &[ObjectId],
        now: i64,
        lock: i64,
    ) -> Result<SnapMeta, ApiError> {
        self.retain_snapshot(id, packs, lock)?;
        crash_point("before-snapshot-added");
        self.log_at(
            Event::SnapshotAdded {
                snapshot: *id,
                client: *who,
                lock_until_ns: lock,
            },
            now,
            Some(packs),
        )?;
        self.meta(id)
            .ok_or_else(|| ApiError::internal("snapshot not committed"))
    }

    /// An admin adds a client, replica or auditor identity (its record
    /// signed by that admin). Logged and alerted.
    pub fn add_identity(&mut self, admin: &[u8; 32], body: &[u8]) -> Result<ObjectId, ApiError> {
        let rec = IdentityRecord::decode(body)
            .map_err(|e| ApiError::bad(format!("bad identity record: {e}")))?;
        if &rec.admin != admin {
            return Err(ApiError::forbidden(
                "an identity record must be signed by the admin sending it",
            ));
        }
        rec.verify(&self.config, &self.config_id).map_err(|_| {
            ApiError::bad("identity record refused: bad signature, or a role one admin may not add")
        })?;
        let id = ObjectId::of(body);
        if self.st.identities.contains(&id) {
            return Ok(id);
        }
        if let Some(p) = &rec.predecessor {
            return self.add_successor(admin, id, body, &rec, p.public);
        }
        if self.st.members.contains_key(&rec.member.public)
            || self.st.members.values().any(|m| m.name == rec.member.name)
        {
            return Err(ApiError::new(
                409,
                "an identity with this key or name exists",
            ));
        }
        self.store
            .put(Kind::Identity, &id.to_hex(), body)
            .map_err(ApiError::store)?;
        let (name, role) = (rec.member.name.clone(), rec.member.role);
        self.st.register_record(id, &rec);
        self.st.members.insert(rec.member.public, rec.member);
        self.log(Event::IdentityAdded { record: id })?;
        self.alert(&format!(
            "admin {} added {} identity {name:?}",
            short(admin),
            role.name()
        ));
        Ok(id)
    }

    /// A client key's successor (identity record version 2, its
    /// predecessor's signature checked by decoding): the predecessor must
    /// be an active client, the successor a new key under its name. Stored,
    /// then logged: the log's entry revokes the predecessor (the fold), and
    /// from it on the successor is the same client.
    fn add_successor(
        &mut self,
        admin: &[u8; 32],
        id: ObjectId,
        body: &[u8],
        rec: &IdentityRecord,
        pred: [u8; 32],
    ) -> Result<ObjectId, ApiError> {
        let succ = rec.member.public;
        // The same record again, stored but not logged (a crash between
        // the two): logged now.
        let retry = self.st.registered(&id) && self.st.members.get(&succ) == Some(&rec.member);
        if self.st.members.contains_key(&succ) && !retry {
            return Err(ApiError::new(
                409,
                "succession refused: the successor key is not new (it is another identity's)",
            ));
        }
        if let Some(why) = self
            .st
            .succession_problem(&id, &pred, &succ, &rec.member.name)
        {
            return Err(ApiError::new(409, format!("succession refused: {why}")));
        }
        self.store
            .put(Kind::Identity, &id.to_hex(), body)
            .map_err(ApiError::store)?;
        self.st.members.insert(succ, rec.member.clone());
        self.st.register_record(id, rec);
        if let Err(e) = self.log(Event::IdentityAdded { record: id }) {
            // Not logged, as far as this process knows: the successor stays
            // inactive here. The record is never deleted: an append can
            // fail after its entry is durable (the checkpoint's rename or
            // the directory's fsync), and the next start then completes it,
            // so the log may name this record. At that start a record the
            // log does not add is logged only if its succession may still
            // join (a stale one is alerted and left unlogged).
            self.st.unregister_record(&id);
            self.st.members.remove(&succ);
            self.alert(&format!(
                "the succession record {} was stored but its log entry failed ({}); it is \
                 kept, and the next start logs it if it may still join",
                id.short(),
                e.msg
            ));
            return Err(e);
        }
        self.alert(&format!(
            "admin {} gave client {:?} a new key {} succeeding {} (revoked from now on)",
            short(admin),
            rec.member.name,
            short(&succ),
            short(&pred)
        ));
        Ok(id)
    }

    /// Pack bytes stored for a client across its keys (what its quota
    /// counts).
    pub(crate) fn usage_of(&self, who: &[u8; 32]) -> u64 {
        let first = self.st.client_of(who);
        self.usage
            .iter()
            .filter(|(k, _)| *k == who || self.st.client_of(k) == first)
            .map(|(_, n)| *n)
            .sum()
    }

    /// The key a client uses now: `key`, or the last successor of it.
    fn current_key(&self, key: &[u8; 32]) -> [u8; 32] {
        let mut k = *key;
        for _ in 0..64 {
            match self.st.successor_of(&k) {
                Some(s) => k = s,
                None => break,
            }
        }
        k
    }

    /// Raises a snapshot's lock (in storage first, then in the log). `by`
    /// is the admin asking, or the vault itself (retention slots, anomalies).
    fn raise_lock(
        &mut self,
        by: [u8; 32],
        snapshot: &ObjectId,
        until_ns: i64,
    ) -> Result<i64, ApiError> {
        let (cur, packs) = self
            .st
            .snapshots
            .get(snapshot)
            .map(|s| (s.lock_until_ns, s.packs.clone().unwrap_or_default()))
            .ok_or_else(|| ApiError::not_found("no such snapshot"))?;
        if until_ns <= cur {
            return Err(ApiError::new(
                409,
                "locks can only be extended, never shortened",
            ));
        }
        self.retain_snapshot(snapshot, &packs, until_ns)?;
        self.log(Event::LockExtended {
            snapshot: *snapshot,
            until_ns,
            admin: by,
        })?;
        Ok(until_ns)
    }

    pub fn extend_lock(
        &mut self,
        admin: &[u8; 32],
        snapshot: &ObjectId,
        until_ns: i64,
    ) -> Result<i64, ApiError> {
        let until = self.raise_lock(*admin, snapshot, until_ns)?;
        self.alert(&format!(
            "admin {} extended the lock of snapshot {}",
            short(admin),
            snapshot.short()
        ));
        Ok(until)
    }

    pub fn active_admins(&self) -> std::collections::BTreeSet<[u8; 32]> {
        self.st.active_admins()
    }

    pub fn propose(&mut self, admin: &[u8; 32], body: &[u8]) -> Result<ObjectId, ApiError> {
        let p = Proposal::decode(body).map_err(|e| ApiError::bad(format!("bad proposal: {e}")))?;
        if &p.proposer != admin {
            return Err(ApiError::forbidden(
                "a proposal must be signed by the admin sending it",
            ));
        }
        if p.config_id != self.config_id {
            return Err(ApiError::bad("proposal is for another repository"));
        }
        match &p.action {
            Action::DeleteSnapshots(ids) => {
                if let Some(id) = ids.iter().find(|id| !self.st.snapshots.contains_key(id)) {
                    return Err(ApiError::not_found(format!("no snapshot {}", id.short())));
                }
            }
            Action::RemoveIdentity(k) => {
                if !self.st.members.contains_key(k) || self.st.removed.contains(k) {
                    return Err(ApiError::not_found("no such identity"));
                }
                if self.st.members[k].role == Role::Vault {
                    return Err(ApiError::bad("the vault's own key cannot be removed"));
                }
                let admins = self.active_admins();
                if admins.contains(k) && admins.len() - 1 < self.config.quorum as usize {
                    return Err(ApiError::bad(
                        "removing this admin would leave fewer admins than the quorum",
                    ));
                }
            }
            Action::SetRetention(_) => {}
            Action::LiftFlags(ids) => {
                if let Some(id) = ids.iter().find(|id| !self.st.snapshots.contains_key(id)) {
                    return Err(ApiError::not_found(format!("no snapshot {}", id.short())));
                }
            }
            Action::SetThreshold { .. } | Action::RotateVaultKey { .. } => {
                self.st.action_allowed(&p.action).map_err(ApiError::bad)?;
            }
            Action::AckClock => {
                if self.st.clock_held().is_none() {
                    return Err(ApiError::bad(
                        "the vault's clock is not held: nothing to acknowledge",
                    ));
                }
                // The proposer's signed clock is the witness, against the
                // time this proposal's entry will bear (what every reader's
                // fold compares it with).
                if let Some(why) = LogState::ack_clock_skew(p.time_ns, self.stamp()) {
                    return Err(ApiError::bad(format!(
                        "clock acknowledgement refused: {why}"
                    )));
                }
            }
            Action::RotateRestoreKey(k) => {
                if !holdfast_core::crypto::usable_public(k) {
                    return Err(ApiError::bad(
                        "not a usable X25519 public key (a low-order point)",
                    ));
                }
                if self.st.restore_publics.contains(k) {
                    return Err(ApiError::new(
                        409,
                        "this restore key is already an epoch of this repository",
                    ));
                }
            }
        }
        let id = p.id();
        if self.st.proposals.contains_key(&id) {
            return Ok(id);
        }
        let what = describe(&p.action);
        self.log(Event::Proposed {
            proposal: body.to_vec(),
        })?;
        self.alert(&format!(
            "admin {} proposed {what} (proposal {})",
            short(admin),
            id.short()
        ));
        Ok(id)
    }

    pub fn vote(&mut self, admin: &[u8; 32], body: &[u8]) -> Result<(), ApiError> {
        let v = Vote::decode(body).map_err(|e| ApiError::bad(format!("bad vote: {e}")))?;
        if &v.admin != admin {
            return Err(ApiError::forbidden(
                "a vote must be signed by the admin sending it",
            ));
        }
        if !self.st.is_active_admin(admin) {
            return Err(ApiError::forbidden("only an active admin may vote"));
        }
        let p = self
            .st
            .proposals
            .get(&v.proposal)
            .ok_or_else(|| ApiError::not_found("no such proposal"))?;
        if p.executed.is_some() {
            return Err(ApiError::new(409, "proposal already executed"));
        }
        match v.kind {
            VoteKind::Veto => {
                if p.proposal.action == Action::RemoveIdentity(*admin) {
                    return Err(ApiError::forbidden(
                        "the subject of a removal cannot veto its own removal",
                    ));
                }
                if p.veto.is_some() {
                    return Ok(());
                }
            }
            VoteKind::Approve => {
                if p.veto.is_some() {
                    return Err(ApiError::new(
                        409,
                        "this proposal was vetoed: it can never run",
                    ));
                }
                if p.approvals.iter().any(|a| &a.0 == admin) {
                    return Err(ApiError::new(
                        409,
                        "you already approved this proposal (a proposer's own proposal counts as its approval)",
                    ));
                }
            }
        }
        let kind = v.kind;
        let pid = v.proposal;
        self.log(Event::Voted {
            vote: body.to_vec(),
        })?;
        self.alert(&format!(
            "admin {} {} proposal {}",
            short(admin),
            if kind == VoteKind::Veto {
                "VETOED"
            } else {
                "approved"
            },
            pid.short()
        ));
        Ok(())
    }

    pub fn proposal_status(&self, id: &ObjectId, now: i64) -> Option<Status> {
        self.st.status(id, now)
    }

    /// Executes every proposal that is ready on the anchored clock. Returns
    /// how many ran.
    pub fn execute_ready(&mut self) -> usize {
        self.save_credit(false);
        if self.frozen.is_some() {
            return 0;
        }
        let Some(now) = self.deletion_now() else {
            return 0;
        };
        let ready: Vec<ObjectId> = self
            .st
            .proposals
            .iter()
            .filter(|(_, p)| p.executed.is_none())
            .map(|(id, _)| *id)
            .filter(|id| self.proposal_status(id, now) == Some(Status::Ready))
            .collect();
        let mut ran = 0;
        for id in &ready {
            let action = self.st.proposals[id].proposal.action.clone();
            // The fold would refuse the execution (and this vault would log
            // it again on every tick): say so once and leave it pending.
            let allowed = match &self.hold_unlogged {
                Some(why) if self.st.deletes(&action) => Err(why.clone()),
                _ => self.st.execution_allowed(id),
            };
            if let Err(why) = allowed {
                if self.unrunnable.insert(*id) {
                    self.alert(&format!("proposal {} cannot run: {why}", id.short()));
                }
                continue;
            }
            let what = describe(&action);
            if let Action::RotateVaultKey { key, .. } = &action {
                match self.run_rotation(*id, key) {
                    Ok(true) => {
                        ran += 1;
                        self.alert(&format!("EXECUTED proposal {}: {what}", id.short()));
                    }
                    Ok(false) => {}
                    Err(e) => self.alert(&format!(
                        "executing proposal {} failed: {}",
                        id.short(),
                        e.msg
                    )),
                }
                continue;
            }
            match self.log(Event::Executed { proposal: *id }) {
                Ok(()) => {
                    ran += 1;
                    self.alert(&format!("EXECUTED proposal {}: {what}", id.short()));
                    if matches!(action, Action::AckClock) {
                        // Recorded at once: a stop within the minute between
                        // saves would otherwise hold the vault again at the
                        // next start, over the gap just acknowledged.
                        self.save_credit(true);
                    }
                }
                Err(e) => self.alert(&format!(
                    "executing proposal {} failed: {}",
                    id.short(),
                    e.msg
                )),
            }
        }
        ran
    }

    /// Executes a ready vault key rotation, if this vault holds the new
    /// key: the execution entry's checkpoint is the first the new key
    /// signs, and the TLS certificate switches with it, under the write
    /// lock the caller holds. Without the key: alerted once, left pending.
    fn run_rotation(&mut self, id: ObjectId, key: &[u8; 32]) -> Result<bool, ApiError> {
        if self.next.as_ref().is_none_or(|(k, _)| k.public() != *key) {
            if self.unrunnable.insert(id) {
                self.alert(&format!(
                    "proposal {} cannot run: this vault does not hold the new vault key {} \
                     (restart it with --next-key FILE)",
                    id.short(),
                    holdfast_core::id::hex(&key[..8])
                ));
            }
            return Ok(false);
        }
        let (new, cert) = self.next.take().expect("checked above");
        let old = std::mem::replace(&mut self.identity, new);
        match self.log(Event::Executed { proposal: id }) {
            Ok(()) if self.st.vault_key() == *key => {
                self.tls.set(cert);
                drop(old);
                Ok(true)
            }
            Ok(()) => {
                // Logged, but the fold did not take the new key (a bug:
                // alerted by `log_at`). Signing on with the new key would
                // make every checkpoint invalid; neither key is right now.
                let new = std::mem::replace(&mut self.identity, old);
                self.next = Some((new, cert));
                Err(ApiError::internal(
                    "the rotation was logged but the log's fold did not take the new key",
                ))
            }
            Err(e) => {
                let new = std::mem::replace(&mut self.identity, old);
                self.next = Some((new, cert));
                Err(e)
            }
        }
    }

    /// Stored bytes a snapshot references (unknown lists count as large,
    /// so that they are never passed over for a slot).
    fn referenced_bytes(&self, packs: Option<&Vec<ObjectId>>) -> u64 {
        match packs {
            Some(ps) => ps
                .iter()
                .map(|p| self.sizes.get(p).copied().unwrap_or(0))
                .sum(),
            None => u64::MAX / 4,
        }
    }

    /// Gives each closed period's keeper its long lock (see
    /// [`retention::slot_locks`]), logged as an extension by the vault.
    pub fn assign_slots(&mut self, now: i64) -> usize {
        // One pass groups every live snapshot by client.
        let mut by_client: HashMap<[u8; 32], Vec<Candidate<ObjectId>>> = HashMap::new();
        for (id, s) in &self.st.snapshots {
            by_client
                .entry(self.st.client_of(&s.client))
                .or_default()
                .push(Candidate {
                    id: *id,
                    time_ns: s.added_ns,
                    bytes: self.referenced_bytes(s.packs.as_ref()),
                    flagged: !s.flags.is_empty(),
                });
        }
        let mut raises = Vec::new();
        for cands in by_client.values() {
            for (id, until) in retention::slot_locks(&self.st.retention, cands, now) {
                if self.st.snapshots[&id].lock_until_ns < until {
                    raises.push((id, until));
                }
            }
        }
        let me = self.identity.public();
        let mut n = 0;
        for (id, until) in raises {
            match self.raise_lock(me, &id, until) {
                Ok(_) => n += 1,
                Err(e) => self.alert(&format!(
                    "keeping snapshot {} for its retention slot failed: {}",
                    id.short(),
                    e.msg
                )),
            }
        }
        n
    }

    /// Reclaims storage: snapshots whose locks expired on the anchored
    /// clock (never a client's last few), then packs that no remaining
    /// snapshot lists and that are older than the grace period (so a backup
    /// in flight, whose snapshot is not yet committed, keeps its packs).
    /// Logged before anything is deleted. No pack is reclaimed while any
    /// snapshot's pack list is unknown.
    ///
    /// `packs` is the storage's listing of packs with the time each was
    /// stored ([`pack_ages`]), made before the write lock was taken (on S3
    /// a listing is a paginated walk): a pack stored after it is simply
    /// not a candidate this time, and a pack referenced or uploaded since
    /// is excluded below, under the lock, by the live set and the
    /// reservations of writes in flight.
    pub fn reclaim(
        &mut self,
        packs_stored: Result<Vec<(String, Option<i64>)>, ApiError>,
    ) -> Result<(usize, usize), ApiError> {
        self.check_clock();
        self.save_credit(true);
        if self.frozen.is_some() {
            return Ok((0, 0));
        }
        let Some(now) = self.deletion_now() else {
            return Ok((0, 0));
        };
        self.assign_slots(now);
        self.check_silent(now);
        if let Some(why) = self.clock_hold_reason() {
            let at = self.st.clock_held().map_or(u64::MAX, |h| h.last);
            if self.hold_alerted != Some(at) {
                self.hold_alerted = Some(at);
                self.alert(&format!("CLOCK HELD: not reclaiming: {why}"));
            }
            return Ok((0, 0));
        }
        self.retry_pending(now);
        let last = self.st.last_of_each_client();
        let expired: Vec<ObjectId> = self
            .st
            .snapshots
            .iter()
            .filter(|(id, s)| s.lock_until_ns <= now && !last.contains(id))
            .map(|(id, _)| *id)
            .filter(|id| !self.storage_locked(Kind::Snapshot, id, now))
            .collect();
        let unknown = self.st.unknown_pack_lists();
        let mut packs = Vec::new();
        if let Some(why) = &self.hold_packs {
            self.alert(&format!("not reclaiming packs: {why}"));
        } else if !unknown.is_empty() {
            self.alert(&format!(
                "not reclaiming packs: {} live snapshot(s) whose pack lists are unknown",
                unknown.len()
            ));
        } else {
            let live: HashSet<ObjectId> = self
                .st
                .snapshots
                .iter()
                .filter(|(id, _)| !expired.contains(id))
                .flat_map(|(_, s)| s.packs.iter().flatten().copied())
                .collect();
            let grace = (self.config.grace_secs as i64).saturating_mul(NS);
            for (name, stored_at) in packs_stored? {
                let Ok(id) = ObjectId::from_hex(&name) else {
                    continue;
                };
                if live.contains(&id)
                    || self.flight.holds(&id)
                    || self.pinned.contains(&id)
                    || self.pending.contains_key(&(kind_tag(Kind::Pack), id))
                {
                    continue;
                }
                // A pack no snapshot has listed may be a backup in flight:
                // it waits the grace period and at least IN_FLIGHT_NS.
                let wait = if self.listed.contains(&id) {
                    grace
                } else {
                    grace.max(IN_FLIGHT_NS)
                };
                let old = stored_at.is_some_and(|t| now.saturating_sub(t) >= wait);
                if old && !self.storage_locked(Kind::Pack, &id, now) {
                    packs.push(id);
                }
            }
        }
        if expired.is_empty() && packs.is_empty() {
            return Ok((0, 0));
        }
        let n = (expired.len(), packs.len());
        self.log(Event::Reclaimed {
            snapshots: expired,
            packs,
        })?;
        self.alert(&format!(
            "reclaimed {} expired snapshot(s) and {} unreferenced pack(s)",
            n.0, n.1
        ));
        Ok(n)
    }

    /// True while the storage itself still holds the object under a lock.
    fn storage_locked(&self, kind: Kind, id: &ObjectId, now: i64) -> bool {
        self.store.locks_enforced()
            && self
                .store
                .locked_until_ns(kind, &id.to_hex())
                .map_or(true, |t| t.is_some_and(|t| t > now))
    }

    /// Retries deletions the storage refused while their lock held.
    fn retry_pending(&mut self, now: i64) {
        let due: Vec<(ObjectId, Kind)> = self
            .pending
            .iter()
            .map(|((_, id), k)| (*id, *k))
            .filter(|(id, k)| !self.storage_locked(*k, id, now))
            .collect();
        for (id, k) in due {
            self.remove_file(k, &id);
        }
    }

    // ------------------------------------------------------------ log
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.log.checkpoint
    }

    pub fn consistency(&self, from: u64) -> Result<Vec<Hash>, ApiError> {
        if from > self.log.len() {
            return Err(ApiError::new(
                409,
                format!(
                    "you hold a checkpoint of size {from}, the log has {}: rollback?",
                    self.log.len()
                ),
            ));
        }
        // From the stored nodes: O(log n) reads, not every leaf.
        self.log
            .consistency(from)
            .ok_or_else(|| ApiError::internal("the Merkle node file could not be read"))
    }

    /// Bytes of pack data stored for a client (what its quota counts), for
    /// the metrics and the dashboard.
    pub fn stored_bytes(&self, client: &[u8; 32]) -> u64 {
        self.usage.get(client).copied().unwrap_or(0)
    }

    /// One admin revokes a client identity, at once and for good: logged,
    /// alerted, and its requests are refused from then on. Revocation only
    /// stops writes, so it needs no quorum; a rogue admin revoking every
    /// client stops backups (loudly) but deletes nothing.
    pub fn revoke_client(
        &mut self,
        admin: &[u8; 32],
        client: &[u8; 32],
        signed: (i64, [u8; 64]),
    ) -> Result<(), ApiError> {
        if !holdfast_core::governance::verify_revocation(
            &self.config_id,
            client,
            admin,
            signed.0,
            &signed.1,
        ) {
            return Err(ApiError::bad(
                "the revocation is not signed by the requesting admin for this client and repository",
            ));
        }
        match self.st.members.get(client) {
            Some(m) if m.role == Role::Client => {}
            Some(m) => {
                return Err(ApiError::bad(format!(
                    "only a client is revoked at once; a {} is removed by a quorum proposal",
                    m.role.name()
                )));
            }
            None => return Err(ApiError::new(404, "no such identity")),
        }
        if self.st.removed.contains(client) {
            return Err(ApiError::new(409, "this client is already revoked"));
        }
        let name = self.st.members[client].name.clone();
        self.log(Event::ClientRevoked {
            client: *client,
            admin: *admin,
            signed: Some(signed),
        })?;
        self.alert(&format!(
            "admin {} revoked client {name:?}: its requests are refused from now on",
            short(admin)
        ));
        Ok(())
    }
}

fn kind_tag(k: Kind) -> u8 {
    match k {
        Kind::Config => 0,
        Kind::Pack => 1,
        Kind::Snapshot => 2,
        Kind::Identity => 3,
    }
}

pub fn describe(a: &Action) -> String {
    match a {
        Action::DeleteSnapshots(ids) => format!(
            "early deletion of {} snapshot(s): {}",
            ids.len(),
            ids.iter().map(|i| i.short()).collect::<Vec<_>>().join(", ")
        ),
        Action::SetRetention(r) => format!(
            "retention keep-within {}s daily {} weekly {} monthly {} yearly {}",
            r.keep_within_secs, r.daily, r.weekly, r.monthly, r.yearly
        ),
        Action::RemoveIdentity(k) => format!("removal of identity {}", short(k)),
        Action::RotateRestoreKey(k) => format!(
            "a new restore key {} (check the whole fingerprint with its holder)",
            holdfast_core::id::hex(k)
        ),
        Action::LiftFlags(ids) => format!(
            "lifting the anomaly flags of {} snapshot(s) (a false alarm): {}",
            ids.len(),
            ids.iter().map(|i| i.short()).collect::<Vec<_>>().join(", ")
        ),
        Action::SetThreshold { signal, from, to } => format!(
            "the {} threshold from {from} to {to}",
            holdfast_core::format::Signal(*signal).name()
        ),
        Action::RotateVaultKey { key, .. } => format!(
            "a new vault key {} (check the whole fingerprint with the vault's operator)",
            holdfast_core::id::hex(key)
        ),
        Action::AckClock => {
            "acknowledging the vault's clock after a hold (deletions resume)".to_string()
        }
    }
}

impl ApiError {
    pub fn store(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::not_found(e.to_string()),
            StoreError::Full(_) => ApiError::new(507, e.to_string()),
            StoreError::BadName(_) => ApiError::bad(e.to_string()),
            _ => ApiError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod clock_tests {
    use super::{Clock, Credit, NS, STORAGE_SKEW_NS, credited};
    use std::time::Instant;

    const HOLD: i64 = 6 * H;
    const MAX_GAP: i64 = 7 * 24 * H;

    /// A start at wall clock `wall` over a log whose last entry is `last`,
    /// with `saved` in state/clock, as [`super::Vault::open`] takes it.
    fn start(wall: i64, last: i64, saved: Option<Credit>, acks: u64) -> Clock {
        let (credit, pending, _) = Credit::at_start(saved, wall, acks, last, HOLD);
        Clock::at(wall, Instant::now(), last, MAX_GAP, credit, pending)
    }

    /// What a run of `up` ending at wall clock `wall` saves.
    fn save(c: &Clock, wall: i64, up: i64, held: bool, floor: Option<i64>) -> Credit {
        c.credit_at(wall, up, HOLD, held, floor, 0, 0)
    }

    #[test]
    fn restarts_each_under_the_bound_add_up_to_a_hold() {
        // Each restart on a clock 5 h further ahead, each run 5 h up: the
        // log's last entry follows the believed clock (entries are dated on
        // it), and after 5 h of uptime the credit reaches the wall clock.
        let mut saved = None;
        let mut real = LAST;
        let mut spoof = 0;
        for n in 0..2 {
            spoof += 5 * H;
            let wall = real + spoof;
            let last = real + spoof - 5 * H;
            let c = start(wall, last, saved, 0);
            if n == 0 {
                assert!(!c.held(HOLD), "a first +5 h is under the bound");
            } else {
                // 5 h believed at the first start, 5 h at this one.
                assert_eq!(c.pending_ns(), 10 * H);
                assert!(c.held(HOLD), "the second +5 h passes the bound");
                // Held: the saved credit stays at the anchor plus uptime.
                let s = save(&c, wall + 5 * H, 5 * H, true, saved.map(|c| c.time_ns));
                assert_eq!(s.time_ns, saved.unwrap().time_ns + 5 * H);
                assert!(s.time_ns < wall + 5 * H);
                return;
            }
            let s = save(&c, wall + 5 * H, 5 * H, false, saved.map(|c| c.time_ns));
            assert_eq!(s.pending_ns, 5 * H);
            saved = Some(s);
            real += 5 * H;
        }
        unreachable!();
    }

    #[test]
    fn an_executed_acknowledgement_resets_the_unacknowledged_gaps() {
        let wall = LAST + 5 * H;
        let c = start(
            wall,
            LAST,
            Some(Credit {
                time_ns: LAST,
                pending_ns: 4 * H,
                acks: 3,
            }),
            3,
        );
        assert_eq!(c.pending_ns(), 9 * H);
        assert!(c.held(HOLD));
        // Saved while held and before the acknowledgement: the gaps stay.
        assert_eq!(
            c.credit_at(wall, H, HOLD, true, Some(LAST), 3, 3)
                .pending_ns,
            9 * H
        );
        // An acknowledgement executed (log index 9): gaps reset, and the
        // credit may go to the clock.
        let s = c.credit_at(wall + H, H, HOLD, false, Some(LAST), 10, 3);
        assert_eq!(
            s,
            Credit {
                time_ns: wall + H,
                pending_ns: 0,
                acks: 10
            }
        );
        // The acknowledgement logged but state/clock not rewritten (a
        // crash): the next start sees it in the log and resets the gaps.
        let c = start(
            wall + H,
            wall,
            Some(Credit {
                time_ns: LAST,
                pending_ns: 9 * H,
                acks: 3,
            }),
            10,
        );
        assert_eq!(c.pending_before_ns, 0);
        // The saved acks as new as the log's: the gaps are kept.
        let c = start(
            wall + H,
            wall,
            Some(Credit {
                time_ns: wall,
                pending_ns: 2 * H,
                acks: 10,
            }),
            10,
        );
        assert_eq!(c.pending_before_ns, 2 * H);
    }

    #[test]
    fn while_a_hold_is_in_force_the_saved_credit_is_the_anchor_plus_uptime() {
        // Held at start (+1 day): the credit may not follow the wall clock.
        let wall = LAST + 24 * H;
        let c = start(
            wall,
            LAST,
            Some(Credit {
                time_ns: LAST,
                ..Credit::default()
            }),
            0,
        );
        assert!(c.held(HOLD));
        let s = save(&c, wall + 2 * H, 2 * H, true, Some(LAST));
        assert_eq!(s.time_ns, LAST + 2 * H);
        assert_eq!(s.pending_ns, 24 * H);
        // A hold logged at an earlier start, this start's gap small: still
        // capped (the caller passes held from the log's hold).
        let c = start(
            LAST + 10 * 60 * NS,
            LAST,
            Some(Credit {
                time_ns: LAST,
                ..Credit::default()
            }),
            0,
        );
        assert!(!c.held(HOLD));
        let s = save(&c, LAST + 10 * 60 * NS + 30 * H, 30 * H, true, Some(LAST));
        assert!(s.time_ns <= LAST + 30 * H, "{}", s.time_ns);
        // Never lowered below what was recorded.
        let s = save(&c, LAST, 0, true, Some(LAST + H));
        assert_eq!(s.time_ns, LAST + H);
        // Without a hold, as before.
        let s = save(&c, LAST + 10 * 60 * NS + 30 * H, 30 * H, false, Some(LAST));
        assert_eq!(s.time_ns, LAST + 10 * 60 * NS + 30 * H);
    }

    #[test]
    fn a_credit_later_than_the_wall_clock_is_ignored() {
        let wall = LAST + 30 * H;
        let future = Credit {
            time_ns: wall + 24 * H,
            pending_ns: 0,
            acks: 0,
        };
        let (credit, pending, ahead) = Credit::at_start(Some(future), wall, 0, LAST, HOLD);
        assert_eq!((credit, pending, ahead), (None, 0, Some(24 * H)));
        // A clock set back a day since the vault last ran (the credit is at
        // the log's last entry): kept, and the clock's return is no jump.
        let back = Credit {
            time_ns: LAST,
            pending_ns: 0,
            acks: 0,
        };
        let (credit, _, ahead) = Credit::at_start(Some(back), LAST - 24 * H, 0, LAST, HOLD);
        assert_eq!((credit, ahead), (Some(LAST), None));
        assert!(!start(LAST - 24 * H, LAST, Some(back), 0).held(HOLD));
        assert!(!start(LAST + 60 * NS, LAST, Some(back), 0).held(HOLD));
        // So the hold judges the gap from the log's last entry.
        assert!(start(wall, LAST, Some(future), 0).held(HOLD));
        // i64::MIN is a credit far in the past, not a sentinel: held.
        let min = Credit {
            time_ns: i64::MIN,
            pending_ns: 0,
            acks: 0,
        };
        let c = start(LAST + H, LAST, Some(min), 0);
        assert!(c.held(HOLD));
        // A negative pending count is none.
        let neg = Credit {
            time_ns: LAST,
            pending_ns: -100 * H,
            acks: 0,
        };
        assert!(start(LAST + 7 * H, LAST, Some(neg), 0).held(HOLD));
        // The file: 24 bytes, the older 8, nothing else.
        let c = Credit {
            time_ns: LAST,
            pending_ns: 3 * H,
            acks: 7,
        };
        assert_eq!(Credit::decode(&c.encode()), Some(c));
        assert_eq!(
            Credit::decode(&LAST.to_le_bytes()),
            Some(Credit {
                time_ns: LAST,
                ..Credit::default()
            })
        );
        assert_eq!(Credit::decode(&[0; 9]), None);
        assert_eq!(Credit::decode(&[]), None);
    }

    #[test]
    fn at_a_first_start_the_clock_never_runs_before_the_newest_adopted_snapshot() {
        // An empty log, the wall clock 3 days behind the newest snapshot.
        let wall = LAST - 72 * H;
        let mut c = start(wall, i64::MIN, None, 0);
        assert_eq!(c.now_at(wall, 0), wall);
        c.raise_floor(LAST);
        assert_eq!(c.now_at(wall, 0), LAST);
        // Deletions do not follow the floor (a snapshot's own time could be
        // a lie); adopted locks count from it instead.
        assert_eq!(c.for_deletion_at(wall + H, H, HOLD), wall + H);
        // Once the wall clock passes it, the clock follows again.
        assert_eq!(c.now_at(LAST + H, 75 * H), LAST + H);
        assert!(!c.held(HOLD));
    }

    #[test]
    fn a_first_starts_gap_from_its_adopted_snapshots_enters_the_sum() {
        // A first start 5 h past the newest adopted snapshot (under the
        // bound): the gap counts like a restart's.
        let wall = LAST + 5 * H;
        let mut c = start(wall, i64::MIN, None, 0);
        assert_eq!(c.pending_ns(), 0);
        c.anchor_first_start(LAST, wall);
        assert_eq!(c.pending_ns(), 5 * H);
        assert!(!c.held(HOLD));
        // Deletions count from the snapshot's time, the gap credited only
        // as fast as uptime.
        assert_eq!(c.for_deletion_at(wall, 0, HOLD), LAST);
        assert_eq!(c.for_deletion_at(wall + H, H, HOLD), LAST + 2 * H);
        // What it records carries the 5 h: a restart half an hour further
        // on is held (the first start alone used to be forgotten).
        let saved = save(&c, wall, 0, false, None);
        assert_eq!(saved.pending_ns, 5 * H);
        assert!(start(wall + H / 2, wall, Some(saved), 0).held(HOLD));
    }

    #[test]
    fn deletions_are_judged_on_the_credited_clock_and_the_storages() {
        // A believed +2 h at start, 1 h up: deletions at LAST + 2 h, not
        // the wall clock's LAST + 3 h (deletion_now uses the credit).
        let wall = LAST + 2 * H;
        let c = start(wall, LAST, None, 0);
        assert_eq!(c.now_at(wall + H, H), wall + H);
        assert_eq!(
            c.deletion_at(wall + H, H, HOLD, false, None),
            Some(LAST + 2 * H)
        );
        // On storage with locks: nothing until its clock is read, then the
        // earlier of the two (plus the allowed skew).
        assert_eq!(c.deletion_at(wall + H, H, HOLD, true, None), None);
        assert_eq!(
            c.deletion_at(wall + H, H, HOLD, true, Some((LAST, 60 * NS))),
            Some(LAST + 60 * NS + STORAGE_SKEW_NS)
        );
        assert_eq!(
            c.deletion_at(wall + H, H, HOLD, true, Some((LAST + 10 * H, 0))),
            Some(LAST + 2 * H)
        );
    }

    const H: i64 = 3600 * NS;
    const LAST: i64 = 1_800_000_000 * NS;

    #[test]
    fn a_believed_gap_counts_for_deletions_only_as_fast_as_uptime() {
        // Restarted with the clock 2 h past the log's last entry.
        let gap = 2 * H;
        let wall = |up: i64| LAST + gap + up;
        // At start, deletions are judged at the log's last entry, not 2 h on.
        assert_eq!(credited(wall(0), LAST, gap, 0), LAST);
        // After 1 h up: 1 h of uptime plus 1 h of the gap.
        assert_eq!(credited(wall(H), LAST, gap, H), LAST + 2 * H);
        assert!(credited(wall(H), LAST, gap, H) < wall(H));
        // After about 2 h up, the whole gap is credited: the wall clock.
        assert_eq!(credited(wall(2 * H), LAST, gap, 2 * H), wall(2 * H));
        assert_eq!(credited(wall(5 * H), LAST, gap, 5 * H), wall(5 * H));
        // A lock ending 90 min after the last entry waits 45 min of uptime,
        // not 0 as the wall clock alone would say.
        let lock = LAST + 90 * 60 * NS;
        let first = (0..=3 * 60)
            .map(|m| m * 60 * NS)
            .find(|up| credited(wall(*up), LAST, gap, *up) >= lock)
            .unwrap();
        assert_eq!(first, 45 * 60 * NS);
        // No gap, or a clock behind the log: the wall clock as before.
        assert_eq!(credited(LAST + H, LAST, 0, H), LAST + H);
        assert_eq!(credited(LAST - H, LAST, -2 * H, H), LAST - H);
        // Never past the wall clock, and no overflow at the extremes.
        assert_eq!(credited(LAST, LAST, gap, 10 * H), LAST);
        let _ = credited(i64::MAX, i64::MAX, i64::MAX, i64::MAX);
        let _ = credited(i64::MIN, i64::MIN, i64::MIN, 0);
    }
}
