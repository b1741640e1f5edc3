//! The vault's state and every rule it enforces, with no HTTP in it.
//!
//! The state is rebuilt at start by replaying the log (the source of truth)
//! plus `vault/owners` (which client uploaded which pack, for namespaces and
//! quotas). Every mutation follows the same order: check everything → write
//! the object durably → append the log entry → sign a checkpoint → answer.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use holdfast_core::ObjectId;
use holdfast_core::crypto::Identity;
use holdfast_core::format::{self, Config, IdentityRecord, Member, Retention, Role, Snapshot};
use holdfast_core::governance::{self, Action, Proposal, Status, Vote, VoteKind};
use holdfast_core::merkle::{self, Checkpoint, Hash};
use holdfast_core::request::{Auth, WINDOW_NS};
use holdfast_core::retention;
use holdfast_core::vaultlog::{Entry, Event};
use holdfast_store::{Deletion, Kind, ObjectStore, StoreError};

use crate::logstore::LogStore;
use crate::{ApiError, VaultError};

pub struct Options {
    /// Bytes of pack data one client may add.
    pub quota_bytes: u64,
    /// Requests per second per identity (token bucket), and burst size.
    pub rate: f64,
    pub burst: f64,
    /// Run with the alert text in `HOLDFAST_ALERT` for every alert.
    pub alert_cmd: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            quota_bytes: 1 << 40,
            rate: 500.0,
            burst: 2000.0,
            alert_cmd: None,
        }
    }
}

#[derive(Clone, Debug)]
pub struct SnapMeta {
    pub client: [u8; 32],
    pub time_ns: i64,
    pub lock_until_ns: i64,
    pub packs: Vec<ObjectId>,
}

pub struct ProposalState {
    pub proposal: Proposal,
    pub received_ns: i64,
    pub executed: bool,
}

/// Storage locks on shared objects (packs, the config, identity records) are
/// raised in steps of this much at most, so that consecutive snapshots do
/// not each extend every pack they share (at most one step of extra hold).
const LOCK_STEP_MAX_NS: i64 = 7 * 86_400 * 1_000_000_000;

pub struct Vault {
    /// Where the log, checkpoint and pack-owner records live.
    pub state_dir: PathBuf,
    pub store: Box<dyn ObjectStore>,
    pub config: Config,
    pub config_id: ObjectId,
    identity: Identity,
    pub members: HashMap<[u8; 32], Member>,
    pub removed: HashSet<[u8; 32]>,
    /// Identity records the log has recorded.
    logged_identities: HashSet<ObjectId>,
    /// Snapshots the log deleted (by quorum) or reclaimed: never to return.
    gone: HashSet<ObjectId>,
    pub snapshots: BTreeMap<ObjectId, SnapMeta>,
    owners: HashMap<ObjectId, HashSet<[u8; 32]>>,
    owners_file: File,
    usage: HashMap<[u8; 32], u64>,
    pub log: LogStore,
    pub proposals: BTreeMap<ObjectId, ProposalState>,
    pub votes: Vec<(Vote, i64)>,
    pub retention: Retention,
    nonces: HashMap<([u8; 32], [u8; 16]), i64>,
    buckets: HashMap<[u8; 32], (f64, Instant)>,
    pub opts: Options,
    /// Storage lock (Unix ns) this process has set per shared object.
    retained: HashMap<(Kind, ObjectId), i64>,
    /// Deletions the log explains that the storage refused for now (still
    /// under its lock): retried at reclaim once the lock has passed.
    pending: BTreeMap<(u8, ObjectId), Kind>,
    /// True while replaying: deletions are collected, then done once.
    replaying: bool,
}

pub fn now_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

fn short(k: &[u8]) -> String {
    holdfast_core::id::hex(&k[..4])
}

impl Vault {
    /// Opens the vault over a repository's storage, with its own state
    /// (log, checkpoint, pack owners) in `state_dir`, and the vault key,
    /// which pins the config by its id.
    pub fn open(
        store: Box<dyn ObjectStore>,
        state_dir: &Path,
        identity: Identity,
        pinned_config: ObjectId,
        opts: Options,
    ) -> Result<Vault, VaultError> {
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
        match config.members.iter().find(|m| m.role == Role::Vault) {
            Some(m) if m.public == identity.public() => {}
            _ => {
                return Err(VaultError::Usage(
                    "this vault key is not the vault key of the repository's config".into(),
                ));
            }
        }
        let mut identity_files = Vec::new();
        let mut members: HashMap<[u8; 32], Member> = config
            .members
            .iter()
            .map(|m| (m.public, m.clone()))
            .collect();
        for (name, _) in store
            .list(Kind::Identity)
            .map_err(|e| VaultError::Io(e.to_string()))?
        {
            let b = store
                .get(Kind::Identity, &name)
                .map_err(|e| VaultError::Tamper(format!("identity {name}: {e}")))?;
            let rec = IdentityRecord::decode(&b)
                .map_err(|e| VaultError::Tamper(format!("identity {name}: {e}")))?;
            rec.verify(&config, &config_id).map_err(|_| {
                VaultError::Tamper(format!(
                    "identity {name}: not signed by an admin, or a role one admin may not add"
                ))
            })?;
            members.entry(rec.member.public).or_insert(rec.member);
            identity_files
                .push(ObjectId::from_hex(&name).map_err(|e| VaultError::Tamper(e.to_string()))?);
        }
        let vdir = state_dir.to_path_buf();
        let log = LogStore::open(&vdir, config_id.0, &identity, now_ns())?;

        // Pack owners: pack id [32] | client [32] | size u64, appended.
        let owners_path = vdir.join("owners");
        let raw = std::fs::read(&owners_path).unwrap_or_default();
        let mut owners: HashMap<ObjectId, HashSet<[u8; 32]>> = HashMap::new();
        let mut usage: HashMap<[u8; 32], u64> = HashMap::new();
        for rec in raw.chunks_exact(72) {
            let pack = ObjectId(rec[..32].try_into().unwrap());
            let client: [u8; 32] = rec[32..64].try_into().unwrap();
            let size = u64::from_le_bytes(rec[64..72].try_into().unwrap());
            if owners.entry(pack).or_default().insert(client) {
                *usage.entry(client).or_default() += size;
            }
        }
        let owners_file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&owners_path)
            .map_err(|e| VaultError::Io(format!("{}: {e}", owners_path.display())))?;

        let mut v = Vault {
            state_dir: vdir,
            store,
            retention: config.retention.clone(),
            config,
            config_id,
            identity,
            members,
            removed: HashSet::new(),
            logged_identities: HashSet::new(),
            gone: HashSet::new(),
            snapshots: BTreeMap::new(),
            owners,
            owners_file,
            usage,
            log,
            proposals: BTreeMap::new(),
            votes: Vec::new(),
            nonces: HashMap::new(),
            buckets: HashMap::new(),
            opts,
            retained: HashMap::new(),
            pending: BTreeMap::new(),
            replaying: true,
        };
        v.replay()?;
        v.replaying = false;
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
            if !v.logged_identities.contains(&id) {
                v.log(Event::IdentityAdded { record: id })
                    .map_err(|e| VaultError::Io(e.msg))?;
                v.alert(&format!(
                    "identity record {} found on disk; now in the log",
                    id.short()
                ));
            }
        }
        v.recover_unlogged_snapshots(&present)?;
        Ok(v)
    }

    /// Rebuilds snapshots, locks, proposals, votes and policy from the log.
    fn replay(&mut self) -> Result<(), VaultError> {
        let entries: Vec<Entry> = self.log.decoded().collect();
        for e in entries {
            self.apply(&e)?;
        }
        Ok(())
    }

    /// Snapshots the log names must be in storage; alerts on any that is not.
    fn report_missing_snapshots(&self, present: &HashSet<String>) {
        let missing: Vec<String> = self
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

    /// A crash between writing a snapshot file and logging it leaves a valid
    /// snapshot the client never got an answer for. At start such a file is
    /// committed now, if it passes every check a PUT would (signed by a
    /// client, packs in its namespace). Anything else not in the log is
    /// reported and left alone; a snapshot the log deleted stays deleted.
    fn recover_unlogged_snapshots(&mut self, present: &HashSet<String>) -> Result<(), VaultError> {
        for name in present {
            let Ok(id) = ObjectId::from_hex(name) else {
                continue;
            };
            // Deleted ones were dealt with by `finish_replayed_deletions`.
            if self.snapshots.contains_key(&id) || self.gone.contains(&id) {
                continue;
            }
            let body = match self.store.get(Kind::Snapshot, name) {
                Ok(b) => b,
                Err(e) => {
                    self.alert(&format!(
                        "TAMPERING: snapshot file {} not in the log and unreadable: {e}",
                        id.short()
                    ));
                    continue;
                }
            };
            let client = Snapshot::decode(&body).map(|s| s.header.client);
            match client
                .map_err(|e| ApiError::bad(e.to_string()))
                .and_then(|c| self.check_snapshot(&c, &body).map(|p| (c, p)))
            {
                Ok((c, packs)) => {
                    let now = now_ns();
                    let lock = self.lock_for(&c, now);
                    self.commit_snapshot(&c, &id, &packs, now, lock)
                        .map_err(|e| VaultError::Io(e.msg))?;
                    self.alert(&format!(
                        "snapshot {} was written before a crash but not logged; committed now",
                        id.short()
                    ));
                }
                Err(e) => self.alert(&format!(
                    "TAMPERING: snapshot file {} is not in the log and would not be accepted: {}",
                    id.short(),
                    e.msg
                )),
            }
        }
        Ok(())
    }

    /// Applies one log entry to the in-memory state and the files: a
    /// deletion the entry explains is carried out (on replay this finishes
    /// one a crash interrupted between logging and deleting).
    fn apply(&mut self, e: &Entry) -> Result<(), VaultError> {
        match &e.event {
            Event::SnapshotAdded {
                snapshot,
                client,
                lock_until_ns,
            } => {
                let packs = self
                    .store
                    .get(Kind::Snapshot, &snapshot.to_hex())
                    .ok()
                    .and_then(|b| Snapshot::decode(&b).ok())
                    .map(|s| s.header.packs)
                    .unwrap_or_default();
                // A committed snapshot's packs are in its client's namespace:
                // the log alone rebuilds this if `owners` is lost.
                for p in &packs {
                    self.owners.entry(*p).or_default().insert(*client);
                }
                self.snapshots.insert(
                    *snapshot,
                    SnapMeta {
                        client: *client,
                        time_ns: e.time_ns,
                        lock_until_ns: *lock_until_ns,
                        packs,
                    },
                );
            }
            Event::LockExtended {
                snapshot, until_ns, ..
            } => {
                if let Some(s) = self.snapshots.get_mut(snapshot) {
                    s.lock_until_ns = s.lock_until_ns.max(*until_ns);
                }
            }
            Event::Proposed { proposal } => {
                let p = Proposal::decode(proposal)
                    .map_err(|x| VaultError::Tamper(format!("logged proposal: {x}")))?;
                self.proposals.insert(
                    p.id(),
                    ProposalState {
                        proposal: p,
                        received_ns: e.time_ns,
                        executed: false,
                    },
                );
            }
            Event::Voted { vote } => {
                let v = Vote::decode(vote)
                    .map_err(|x| VaultError::Tamper(format!("logged vote: {x}")))?;
                self.votes.push((v, e.time_ns));
            }
            Event::Executed { proposal } => {
                let action = match self.proposals.get_mut(proposal) {
                    Some(p) => {
                        p.executed = true;
                        p.proposal.action.clone()
                    }
                    None => {
                        return Err(VaultError::Tamper(
                            "log executes an unknown proposal".into(),
                        ));
                    }
                };
                match action {
                    Action::DeleteSnapshots(ids) => {
                        for id in ids {
                            self.gone.insert(id);
                            self.snapshots.remove(&id);
                            self.remove_file(Kind::Snapshot, &id);
                        }
                    }
                    Action::SetRetention(r) => self.retention = r,
                    Action::RemoveIdentity(k) => {
                        self.removed.insert(k);
                    }
                }
            }
            Event::IdentityAdded { record } => {
                self.logged_identities.insert(*record);
            }
            Event::Reclaimed { snapshots, packs } => {
                for id in snapshots {
                    self.gone.insert(*id);
                    self.snapshots.remove(id);
                    self.remove_file(Kind::Snapshot, id);
                }
                for p in packs {
                    self.owners.remove(p);
                    self.remove_file(Kind::Pack, p);
                }
            }
        }
        Ok(())
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
        let step = (self.retention.keep_within_secs as i64)
            .saturating_mul(500_000_000)
            .clamp(1_000_000_000, LOCK_STEP_MAX_NS);
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
        let idents: Vec<ObjectId> = self.logged_identities.iter().copied().collect();
        for i in idents {
            self.retain_shared(Kind::Identity, i, until_ns)?;
        }
        Ok(())
    }

    fn log(&mut self, event: Event) -> Result<(), ApiError> {
        self.log_at(event, now_ns())
    }

    /// Logs with a given vault time (a snapshot's stamp and the lock computed
    /// from it must use the same reading of the clock).
    fn log_at(&mut self, event: Event, time_ns: i64) -> Result<(), ApiError> {
        let entry = Entry { time_ns, event };
        self.log
            .append(&entry, self.config_id.0, &self.identity)
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.apply(&entry)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    pub fn alert(&self, msg: &str) {
        eprintln!("holdfast vault ALERT: {msg}");
        if let Some(cmd) = &self.opts.alert_cmd {
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .env("HOLDFAST_ALERT", msg)
                .spawn();
        }
    }

    // ------------------------------------------------------------ auth

    /// Checks a request's signature, signer, time window, nonce and rate.
    /// Returns the signer's role.
    pub fn authenticate(
        &mut self,
        auth: &Auth,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Role, ApiError> {
        let now = now_ns();
        let member = self
            .members
            .get(&auth.key)
            .ok_or_else(|| ApiError::unauthorized("unknown key"))?;
        let role = member.role;
        if self.removed.contains(&auth.key) {
            return Err(ApiError::forbidden("this identity was removed by quorum"));
        }
        if (auth.time_ns - now).abs() > WINDOW_NS {
            return Err(ApiError::unauthorized(
                "request time outside the allowed window",
            ));
        }
        auth.verify(method, path, body)
            .map_err(|_| ApiError::unauthorized("bad request signature"))?;
        if self.nonces.len() > 100_000 {
            self.nonces.retain(|_, t| *t > now - 2 * WINDOW_NS);
        }
        if self.nonces.insert((auth.key, auth.nonce), now).is_some() {
            return Err(ApiError::unauthorized("replayed request"));
        }
        let (rate, burst) = (self.opts.rate, self.opts.burst);
        let b = self
            .buckets
            .entry(auth.key)
            .or_insert((burst, Instant::now()));
        let t = Instant::now();
        b.0 = (b.0 + t.duration_since(b.1).as_secs_f64() * rate).min(burst);
        b.1 = t;
        if b.0 < 1.0 {
            return Err(ApiError::new(429, "rate limit: slow down"));
        }
        b.0 -= 1.0;
        Ok(role)
    }

    // ------------------------------------------------------------ reads

    /// May `who` (with `role`) see this object?
    pub fn may_read(&self, who: &[u8; 32], role: Role, kind: Kind, id: &ObjectId) -> bool {
        match (role, kind) {
            (Role::Restore | Role::Replica, Kind::Pack | Kind::Snapshot) => true,
            (Role::Auditor | Role::Admin, Kind::Snapshot) => true,
            (Role::Client, Kind::Pack) => self.owners.get(id).is_some_and(|o| o.contains(who)),
            (Role::Client, Kind::Snapshot) => {
                self.snapshots.get(id).is_some_and(|s| &s.client == who)
            }
            (_, Kind::Config | Kind::Identity) => true,
            _ => false,
        }
    }

    /// Objects of a kind that `who` may see, with sizes. Snapshots: only
    /// those the log holds (an unlogged file is not a snapshot). Auditors
    /// and admins may list pack ids and sizes (to check that snapshots are
    /// whole) but not read packs.
    pub fn list(
        &self,
        who: &[u8; 32],
        role: Role,
        kind: Kind,
    ) -> Result<Vec<(String, u64)>, ApiError> {
        let all = self.store.list(kind).map_err(ApiError::store)?;
        if kind == Kind::Pack && matches!(role, Role::Auditor | Role::Admin) {
            return Ok(all);
        }

        Ok(all
            .into_iter()
            .filter(|(n, _)| {
                let Ok(id) = ObjectId::from_hex(n) else {
                    return false;
                };
                (kind != Kind::Snapshot || self.snapshots.contains_key(&id))
                    && self.may_read(who, role, kind, &id)
            })
            .collect())
    }

    // ------------------------------------------------------------ writes

    pub fn put_pack(&mut self, who: &[u8; 32], id: &ObjectId, body: &[u8]) -> Result<(), ApiError> {
        if ObjectId::of(body) != *id {
            return Err(ApiError::bad("pack content does not match its id"));
        }
        format::parse_pack(body).map_err(|e| ApiError::bad(format!("not a pack: {e}")))?;
        if self.owners.get(id).is_some_and(|o| o.contains(who)) {
            return Ok(());
        }
        let used = self.usage.get(who).copied().unwrap_or(0);
        if used + body.len() as u64 > self.opts.quota_bytes {
            self.alert(&format!("client {} hit its storage quota", short(who)));
            return Err(ApiError::new(507, "storage quota exceeded for this client"));
        }
        // Locked in storage (where it can) from the start, for as long as
        // the snapshot it is for will be at least.
        let until = now_ns()
            .saturating_add((self.retention.keep_within_secs as i64).saturating_mul(1_000_000_000));
        self.store
            .put_retained(Kind::Pack, &id.to_hex(), body, until)
            .map_err(ApiError::store)?;
        let mut rec = Vec::with_capacity(72);
        rec.extend_from_slice(&id.0);
        rec.extend_from_slice(who);
        rec.extend_from_slice(&(body.len() as u64).to_le_bytes());
        self.owners_file
            .write_all(&rec)
            .and_then(|_| self.owners_file.sync_data())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        self.owners.entry(*id).or_default().insert(*who);
        *self.usage.entry(*who).or_default() += body.len() as u64;
        Ok(())
    }

    /// Commits a snapshot: signed by the requester, every pack it lists is
    /// present and in the requester's namespace; stamped and locked on the
    /// vault's clock. Idempotent.
    pub fn put_snapshot(
        &mut self,
        who: &[u8; 32],
        id: &ObjectId,
        body: &[u8],
    ) -> Result<SnapMeta, ApiError> {
        if ObjectId::of(body) != *id {
            return Err(ApiError::bad("snapshot content does not match its id"));
        }
        if let Some(m) = self.snapshots.get(id) {
            return if &m.client == who {
                Ok(m.clone())
            } else {
                Err(ApiError::forbidden("not your snapshot"))
            };
        }
        let packs = self.check_snapshot(who, body)?;
        let now = now_ns();
        let lock = self.lock_for(who, now);
        self.store
            .put_retained(Kind::Snapshot, &id.to_hex(), body, lock)
            .map_err(ApiError::store)?;
        self.commit_snapshot(who, id, &packs, now, lock)
    }

    /// The lock a snapshot of `who` stamped `now` gets under the policy.
    fn lock_for(&self, who: &[u8; 32], now: i64) -> i64 {
        let earlier: Vec<i64> = self
            .snapshots
            .values()
            .filter(|s| &s.client == who)
            .map(|s| s.time_ns)
            .collect();
        retention::lock_until(&self.retention, now, &earlier)
    }

    /// What a snapshot must be to be committed: signed by `who`, a client of
    /// this repository, listing only packs in `who`'s namespace.
    fn check_snapshot(&self, who: &[u8; 32], body: &[u8]) -> Result<Vec<ObjectId>, ApiError> {
        let snap = Snapshot::decode(body)
            .map_err(|e| ApiError::bad(format!("not a valid snapshot: {e}")))?;
        if &snap.header.client != who {
            return Err(ApiError::forbidden(
                "a client may only write snapshots it signed itself",
            ));
        }
        match self.members.get(who) {
            Some(m) if m.role == Role::Client && !self.removed.contains(who) => {}
            _ => {
                return Err(ApiError::forbidden(
                    "not signed by a client of this repository",
                ));
            }
        }
        if snap.header.config_id != self.config_id {
            return Err(ApiError::bad("snapshot is for another repository"));
        }
        for p in &snap.header.packs {
            if !self.owners.get(p).is_some_and(|o| o.contains(who)) {
                return Err(ApiError::new(
                    409,
                    format!(
                        "snapshot lists pack {} which is not stored in this client's namespace",
                        p.short()
                    ),
                ));
            }
        }
        Ok(snap.header.packs)
    }

    /// Locks (in storage, where it can) and logs a snapshot whose object is
    /// already durable, stamped `now` with lock `lock`.
    fn commit_snapshot(
        &mut self,
        who: &[u8; 32],
        id: &ObjectId,
        packs: &[ObjectId],
        now: i64,
        lock: i64,
    ) -> Result<SnapMeta, ApiError> {
        self.retain_snapshot(id, packs, lock)?;
        self.log_at(
            Event::SnapshotAdded {
                snapshot: *id,
                client: *who,
                lock_until_ns: lock,
            },
            now,
        )?;
        Ok(self.snapshots[id].clone())
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
        if self.logged_identities.contains(&id) {
            return Ok(id);
        }
        if self.members.contains_key(&rec.member.public)
            || self.members.values().any(|m| m.name == rec.member.name)
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
        self.members.insert(rec.member.public, rec.member);
        self.log(Event::IdentityAdded { record: id })?;
        self.alert(&format!(
            "admin {} added {} identity {name:?}",
            short(admin),
            role.name()
        ));
        Ok(id)
    }

    pub fn extend_lock(
        &mut self,
        admin: &[u8; 32],
        snapshot: &ObjectId,
        until_ns: i64,
    ) -> Result<i64, ApiError> {
        let (cur, packs) = self
            .snapshots
            .get(snapshot)
            .map(|s| (s.lock_until_ns, s.packs.clone()))
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
            admin: *admin,
        })?;
        self.alert(&format!(
            "admin {} extended the lock of snapshot {}",
            short(admin),
            snapshot.short()
        ));
        Ok(until_ns)
    }

    fn active_admins(&self) -> BTreeSet<[u8; 32]> {
        self.members
            .values()
            .filter(|m| m.role == Role::Admin && !self.removed.contains(&m.public))
            .map(|m| m.public)
            .collect()
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
                if let Some(id) = ids.iter().find(|id| !self.snapshots.contains_key(id)) {
                    return Err(ApiError::not_found(format!("no snapshot {}", id.short())));
                }
            }
            Action::RemoveIdentity(k) => {
                if !self.members.contains_key(k) || self.removed.contains(k) {
                    return Err(ApiError::not_found("no such identity"));
                }
                if self.members[k].role == Role::Vault {
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
        }
        let id = p.id();
        if self.proposals.contains_key(&id) {
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
        let p = self
            .proposals
            .get(&v.proposal)
            .ok_or_else(|| ApiError::not_found("no such proposal"))?;
        if p.executed {
            return Err(ApiError::new(409, "proposal already executed"));
        }
        if self.votes.iter().any(|(x, _)| x == &v) {
            return Ok(());
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
        let p = self.proposals.get(id)?;
        Some(governance::status(
            &p.proposal,
            p.received_ns,
            &self.votes,
            &self.active_admins(),
            self.config.quorum as usize,
            self.config.delay_secs,
            now,
        ))
    }

    /// Executes every proposal that is ready. Returns how many ran.
    pub fn execute_ready(&mut self) -> usize {
        let now = now_ns();
        let ready: Vec<ObjectId> = self
            .proposals
            .iter()
            .filter(|(_, p)| !p.executed)
            .map(|(id, _)| *id)
            .filter(|id| self.proposal_status(id, now) == Some(Status::Ready))
            .collect();
        for id in &ready {
            let what = describe(&self.proposals[id].proposal.action);
            match self.log(Event::Executed { proposal: *id }) {
                Ok(()) => self.alert(&format!("EXECUTED proposal {}: {what}", id.short())),
                Err(e) => self.alert(&format!(
                    "executing proposal {} failed: {}",
                    id.short(),
                    e.msg
                )),
            }
        }
        ready.len()
    }

    /// Reclaims storage: snapshots whose locks expired, then packs that no
    /// remaining snapshot lists and that are older than the grace period
    /// (so a backup in flight, whose snapshot is not yet committed, keeps
    /// its packs). Logged before anything is deleted.
    pub fn reclaim(&mut self) -> Result<(usize, usize), ApiError> {
        let now = now_ns();
        self.retry_pending(now);
        let expired: Vec<ObjectId> = self
            .snapshots
            .iter()
            .filter(|(_, s)| s.lock_until_ns <= now)
            .map(|(id, _)| *id)
            .filter(|id| !self.storage_locked(Kind::Snapshot, id, now))
            .collect();
        let live: HashSet<ObjectId> = self
            .snapshots
            .iter()
            .filter(|(id, _)| !expired.contains(id))
            .flat_map(|(_, s)| s.packs.iter().copied())
            .collect();
        let grace = (self.config.grace_secs as i64).saturating_mul(1_000_000_000);
        let mut packs = Vec::new();
        for (name, _) in self.store.list(Kind::Pack).map_err(ApiError::store)? {
            let Ok(id) = ObjectId::from_hex(&name) else {
                continue;
            };
            if live.contains(&id) || self.pending.contains_key(&(kind_tag(Kind::Pack), id)) {
                continue;
            }
            let old = self
                .store
                .stored_at_ns(Kind::Pack, &name)
                .is_ok_and(|t| now.saturating_sub(t) >= grace);
            if old && !self.storage_locked(Kind::Pack, &id, now) {
                packs.push(id);
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
        if from > self.log.leaves.len() as u64 {
            return Err(ApiError::new(
                409,
                format!(
                    "you hold a checkpoint of size {from}, the log has {}: rollback?",
                    self.log.leaves.len()
                ),
            ));
        }
        Ok(merkle::consistency_proof(&self.log.leaves, from as usize).unwrap_or_default())
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
