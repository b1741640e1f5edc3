//! An opened repository: the backend, its config (checked against the id
//! the key pins) and the identities that may write snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use holdfast_core::ObjectId;
use holdfast_core::format::{Config, IdentityRecord, Member, Role, Snapshot, SnapshotBody};
use holdfast_store::{Backend, Kind, StoreError};

use crate::keys::Key;
use crate::{Error, Result};

/// Checked snapshots sorted by time, and the errors of those that failed.
pub type SnapshotList = (Vec<(ObjectId, Snapshot)>, Vec<Error>);

pub struct Repository {
    pub backend: Arc<dyn Backend>,
    pub config: Config,
    pub config_id: ObjectId,
    /// Every identity: from the config, plus admin-signed identity records.
    pub members: HashMap<[u8; 32], Member>,
    /// The verified identity records (id, record): the log's fold learns
    /// client key successions from them.
    pub records: Vec<(ObjectId, IdentityRecord)>,
    /// Verified records naming a member of the config: held, never applied
    /// (the config wins).
    pub shadowing: Vec<ObjectId>,
    /// The vault's log, folded, when the repository has one (a vault, a
    /// replica, a bundle): it orders snapshots by the vault's time.
    pub log: Option<crate::logview::LogView>,
}

impl Repository {
    /// Opens the repository, refusing a config that is not the one `key`
    /// was made for.
    pub fn open(backend: Arc<dyn Backend>, key: &Key) -> Result<Self> {
        // A versioned store may hold the pinned config under a newer one.
        let bytes = match backend.get_pinned(Kind::Config, "config", &key.config_id) {
            Ok(b) => b,
            Err(StoreError::Corrupt { .. }) => backend.get(Kind::Config, "config")?,
            Err(e) => return Err(e.into()),
        };
        let config_id = ObjectId::of(&bytes);
        if config_id != key.config_id {
            // A well-formed config that does not know this key at all: the
            // wrong --repo (exit 1), not tampering.
            if let Some(e) = key.wrong_repository(&backend.location(), &bytes) {
                return Err(e);
            }
            return Err(Error::Tamper(format!(
                "repository config at {} is not the one this key belongs to \
                 (config id {}, key expects {})",
                backend.location(),
                config_id.short(),
                key.config_id.short()
            )));
        }
        let config = Config::decode(&bytes).map_err(|e| Error::Corrupt(format!("config: {e}")))?;
        let mut members: HashMap<[u8; 32], Member> = config
            .members
            .iter()
            .map(|m| (m.public, m.clone()))
            .collect();
        let mut records = Vec::new();
        let mut shadowing = Vec::new();
        for (name, _) in backend.list(Kind::Identity)? {
            let bytes = backend.get(Kind::Identity, &name)?;
            // Stored under its content id, or someone renamed it (a
            // renamed record is a hidden one: the log names the id).
            let id = ObjectId::of(&bytes);
            if id.to_hex() != name {
                return Err(Error::Tamper(format!(
                    "identity {name}: its name is not its content id ({})",
                    id.short()
                )));
            }
            let rec = IdentityRecord::decode(&bytes)
                .map_err(|e| Error::Corrupt(format!("identity {name}: {e}")))?;
            rec.verify(&config, &config_id).map_err(|_| {
                Error::Tamper(format!(
                    "identity {name}: not signed by an admin, or a role one admin may not add"
                ))
            })?;
            members
                .entry(rec.member.public)
                .or_insert(rec.member.clone());
            if config.members.iter().any(|m| m.public == rec.member.public) {
                shadowing.push(id);
            } else {
                records.push((id, rec));
            }
        }
        Ok(Repository {
            backend,
            config,
            config_id,
            members,
            records,
            shadowing,
            log: None,
        })
    }

    /// The log fold over this repository's identities: the config's
    /// members, the records' identities and their successions.
    pub fn log_state(&self) -> holdfast_core::logstate::LogState {
        let mut st = holdfast_core::logstate::LogState::new(
            &self.config,
            self.config_id,
            self.members.clone(),
        );
        for (id, rec) in &self.records {
            st.register_record(*id, rec);
        }
        for id in &self.shadowing {
            st.hold_record(*id);
        }
        st
    }

    /// The keys `key` succeeds, newest first, by the successor records
    /// (each signed by the key it replaces): a new key carries on its
    /// predecessors' cache and history.
    pub fn predecessors(&self, key: &[u8; 32]) -> Vec<[u8; 32]> {
        let mut out = Vec::new();
        let mut k = *key;
        while out.len() < 64 {
            let Some(p) = self
                .records
                .iter()
                .filter(|(_, r)| r.member.public == k)
                .find_map(|(_, r)| r.predecessor.as_ref().map(|p| p.public))
            else {
                break;
            };
            if p == *key || out.contains(&p) {
                break;
            }
            out.push(p);
            k = p;
        }
        out
    }

    /// Reads the vault's log through the validating fold, on this reader's
    /// clock; from then on snapshots are ordered by the vault's time.
    pub fn attach_log(
        &mut self,
        entries: impl Into<crate::logview::LogEntries>,
        checkpoint: &holdfast_core::merkle::Checkpoint,
    ) {
        let reader = holdfast_core::logstate::Reader::at(crate::now_ns());
        self.log = Some(crate::logview::fold(
            self, entries, checkpoint, &reader, false,
        ));
    }

    /// Problems the log shows (tampering), if it has any.
    pub fn log_problems(&self) -> &[String] {
        self.log.as_ref().map_or(&[], |l| l.problems.as_slice())
    }

    /// The time that orders a snapshot: the vault's commit time when the
    /// log has it, else the client's own claim (a plain directory).
    pub fn order_time(&self, id: &ObjectId, s: &Snapshot) -> i64 {
        self.log
            .as_ref()
            .and_then(|l| l.time_of(id))
            .unwrap_or(s.header.time_ns)
    }

    /// The restore key epoch new data is sealed to: the last rotation the
    /// log executed (validated by the fold: a quorum of admins), else the
    /// config's key.
    pub fn sealing_public(&self) -> [u8; 32] {
        self.log
            .as_ref()
            .and_then(|l| l.state.restore_publics.last().copied())
            .unwrap_or(self.config.repo_public)
    }

    /// The index of a restore key epoch (0: the config's key; then each
    /// rotation the log executed), if this reader knows it.
    pub fn epoch_index(&self, public: &[u8; 32]) -> Option<usize> {
        match &self.log {
            Some(l) => l.state.restore_publics.iter().position(|k| k == public),
            None => (*public == self.config.repo_public).then_some(0),
        }
    }

    /// Decrypts a snapshot's body. A body that does not open with a restore
    /// key lacking an epoch the log rotated to, for a snapshot made after
    /// that rotation, is a usage error (the old key, by design); any other
    /// failure is tampering.
    pub fn open_body(
        &self,
        id: &ObjectId,
        snap: &Snapshot,
        secret: &holdfast_core::crypto::RepoSecret,
    ) -> Result<holdfast_core::format::SnapshotBody> {
        snap.open_body(secret)
            .map_err(|e| match self.stale_restore_key(secret) {
                _ if e == holdfast_core::format::SnapshotError::Epoch => {
                    Error::Tamper(format!("snapshot {}: {e}", id.short()))
                }
                Some(t) if self.order_time(id, snap) >= t => Error::Usage(format!(
                    "snapshot {} was sealed after the restore key rotation of {}: this restore key \
                 is older; use the newest one",
                    id.short(),
                    fmt_time(t)
                )),
                _ => Error::Tamper(format!("snapshot {}: {e}", id.short())),
            })
    }

    /// When `secret` lacks a restore key epoch the log executed: the time
    /// of the first such rotation (what it was sealed after cannot be read
    /// with this key).
    pub fn stale_restore_key(&self, secret: &holdfast_core::crypto::RepoSecret) -> Option<i64> {
        let log = self.log.as_ref()?;
        let have = secret.publics();
        if log.state.restore_publics.iter().all(|p| have.contains(p)) {
            return None;
        }
        log.state
            .proposals
            .values()
            .filter(|p| {
                matches!(&p.proposal.action,
                    holdfast_core::governance::Action::RotateRestoreKey(k) if !have.contains(k))
            })
            .filter_map(|p| p.executed.map(|(_, t)| t))
            .min()
    }

    pub fn member_name(&self, public: &[u8; 32]) -> String {
        self.members
            .get(public)
            .map(|m| m.name.clone())
            .unwrap_or_else(|| format!("unknown:{}", holdfast_core::id::hex(&public[..4])))
    }

    /// Reads and checks one snapshot: content id, signature, config, and that
    /// its signer is a client of this repository.
    pub fn load_snapshot(&self, id: &ObjectId) -> Result<Snapshot> {
        let bytes = self.backend.get(Kind::Snapshot, &id.to_hex())?;
        let snap = Snapshot::decode(&bytes)
            .map_err(|e| Error::Tamper(format!("snapshot {}: {e}", id.short())))?;
        if snap.header.config_id != self.config_id {
            return Err(Error::Tamper(format!(
                "snapshot {} belongs to another repository",
                id.short()
            )));
        }
        match self.members.get(&snap.header.client) {
            Some(m) if m.role == Role::Client => Ok(snap),
            _ => Err(Error::Tamper(format!(
                "snapshot {} is signed by a key that is not a client of this repository",
                id.short()
            ))),
        }
    }

    /// All snapshots, checked, sorted by (claimed) time. Damaged ones are
    /// returned as errors beside the good ones, never silently dropped.
    pub fn snapshots(&self) -> Result<SnapshotList> {
        let mut good: Vec<(ObjectId, Snapshot)> = Vec::new();
        let mut bad = Vec::new();
        for (name, _) in self.backend.list(Kind::Snapshot)? {
            let id = ObjectId::from_hex(&name).map_err(|e| Error::Corrupt(e.to_string()))?;
            match self.load_snapshot(&id) {
                Ok(s) => good.push((id, s)),
                Err(e) => bad.push(e),
            }
        }
        if let Some(log) = &self.log {
            // A snapshot file the log does not hold is not a snapshot of
            // this repository's history: listed as a problem, never chosen.
            let (known, unknown): (Vec<_>, Vec<_>) = good
                .into_iter()
                .partition(|(id, _)| log.time_of(id).is_some());
            for (id, _) in unknown {
                bad.push(Error::Tamper(format!(
                    "snapshot {} is present but the vault's log does not hold it",
                    id.short()
                )));
            }
            good = known;
        }
        good.sort_by_key(|(id, s)| (self.order_time(id, s), *id));
        Ok((good, bad))
    }

    /// Resolves an id, a unique prefix, or `latest`.
    pub fn resolve(&self, spec: &str) -> Result<(ObjectId, Snapshot)> {
        self.resolve_for(spec, None)
    }

    /// Resolves an id, a unique prefix, or `latest`: the newest snapshot by
    /// the vault's time (never a client's claim) of one client. With
    /// snapshots of several clients, `client` must say which.
    pub fn resolve_for(&self, spec: &str, client: Option<&str>) -> Result<(ObjectId, Snapshot)> {
        let sel = Select {
            client: client.map(str::to_string),
            ..Select::default()
        };
        self.resolve_select(spec, &sel, None)
    }

    /// True when the snapshot was flagged: by its client's signed findings,
    /// or by the vault in the log (issue 11).
    /// Flags the admin quorum lifted (a false alarm) no longer count.
    pub fn flagged(&self, id: &ObjectId, s: &Snapshot) -> bool {
        let found = s.findings.as_ref().is_some_and(|f| !f.is_empty());
        match &self.log {
            Some(l) => l.state.anomalous(id, found),
            None => found,
        }
    }

    /// `latest` is chosen only when the reader sees the client's whole
    /// history as the log has it: a snapshot live in the log that the
    /// repository did not serve (or that did not load), or one whose vault
    /// flags this reader could not bear out, could be the newest or the
    /// healthy one, so the choice would be the vault host's. Tampering
    /// (exit 4); naming a snapshot by id still works.
    fn latest_is_decidable(
        &self,
        all: &[(ObjectId, Snapshot)],
        served: &std::collections::HashSet<ObjectId>,
    ) -> Result<()> {
        let (Some(log), Some((_, first))) = (&self.log, all.first()) else {
            return Ok(());
        };
        // The client across its keys (a successor's history holds its
        // predecessors' snapshots).
        let client = log.state.client_of(&first.header.client);
        let unserved: Vec<String> = log
            .state
            .snapshots
            .iter()
            .filter(|(id, s)| log.state.client_of(&s.client) == client && !served.contains(id))
            .map(|(id, _)| id.short())
            .collect();
        if !unserved.is_empty() {
            return Err(Error::Tamper(format!(
                "latest: {} snapshot(s) of client {} are live in the vault's log but were not \
                 served or did not load ({}); name the snapshot to restore by id",
                unserved.len(),
                self.member_name(&client),
                unserved.join(", ")
            )));
        }
        let disputed: Vec<String> = all
            .iter()
            .filter(|(id, _)| log.disputed.contains(id))
            .map(|(id, _)| id.short())
            .collect();
        if !disputed.is_empty() {
            return Err(Error::Tamper(format!(
                "latest: the vault's flags on snapshot(s) {} of client {} are disputed (see \
                 above); name the snapshot to restore by id",
                disputed.join(", "),
                self.member_name(&client)
            )));
        }
        Ok(())
    }

    /// `latest`: the newest snapshot not flagged. Newer flagged ones are
    /// skipped with a note (they can still be named by id); when every
    /// snapshot is flagged, none is chosen.
    fn latest_healthy(&self, all: Vec<(ObjectId, Snapshot)>) -> Result<(ObjectId, Snapshot)> {
        if all.is_empty() {
            return Err(Error::Usage("the repository has no snapshots".into()));
        }
        let Some(pos) = all.iter().rposition(|(id, s)| !self.flagged(id, s)) else {
            return Err(Error::Usage(format!(
                "every one of the {} snapshot(s) is flagged as anomalous (see `snapshots`): \
                 name the one to use by id",
                all.len()
            )));
        };
        let skipped: Vec<String> = all[pos + 1..].iter().map(|(id, _)| id.short()).collect();
        if !skipped.is_empty() {
            crate::note(format!(
                "latest: skipped {} newer snapshot(s) flagged as anomalous ({}); name one by id \
                 to use it",
                skipped.len(),
                skipped.join(", ")
            ));
        }
        Ok(all.into_iter().nth(pos).expect("found above"))
    }

    /// Resolves SNAPSHOT among the snapshots `sel` keeps: an id, a unique
    /// prefix, `latest`, or a time (`2026-11-20T12:00:00Z`, `2026-11-20`)
    /// meaning the newest at or before it, by the vault's time. `--host`
    /// and `--path` filters read the encrypted bodies: they need `secret`.
    pub fn resolve_select(
        &self,
        spec: &str,
        sel: &Select,
        secret: Option<&holdfast_core::crypto::RepoSecret>,
    ) -> Result<(ObjectId, Snapshot)> {
        let (mut all, _) = self.snapshots()?;
        let served: std::collections::HashSet<ObjectId> = all.iter().map(|(id, _)| *id).collect();
        if let Some(c) = &sel.client {
            all.retain(|(_, s)| self.member_name(&s.header.client) == *c);
            if all.is_empty() {
                return Err(Error::Usage(format!("no snapshot of client {c:?}")));
            }
        }
        if sel.host.is_some() || !sel.paths.is_empty() || !sel.tags.is_empty() {
            let secret = secret.ok_or_else(|| {
                Error::Usage(
                    "--host, --path and --tag choose by what only the restore key reads".into(),
                )
            })?;
            all.retain(|(_, s)| {
                let Ok(body) = s.open_body(secret) else {
                    return false;
                };
                sel.host.as_ref().is_none_or(|h| body.hostname == *h)
                    && sel.paths.iter().all(|p| covers(&body, p))
                    && sel.tags.iter().all(|t| body.tags.contains(t))
            });
            if all.is_empty() {
                return Err(Error::Usage(format!(
                    "no snapshot{}{}{} matches",
                    sel.host
                        .as_ref()
                        .map(|h| format!(" of host {h:?}"))
                        .unwrap_or_default(),
                    if sel.paths.is_empty() {
                        String::new()
                    } else {
                        format!(" holding {}", sel.paths.join(", "))
                    },
                    if sel.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" tagged {}", sel.tags.join(", "))
                    }
                )));
            }
        }
        let at = parse_time(spec);
        if let Some(t) = at {
            all.retain(|(id, s)| self.order_time(id, s) <= t);
            if all.is_empty() {
                return Err(Error::Usage(format!(
                    "no snapshot at or before {spec} (by the vault's time)"
                )));
            }
        }
        if spec == "latest" || at.is_some() {
            let mut clients: Vec<String> = all
                .iter()
                .map(|(_, s)| self.member_name(&s.header.client))
                .collect();
            clients.sort();
            clients.dedup();
            if clients.len() > 1 {
                return Err(Error::Usage(format!(
                    "`latest` is per client and {} clients have snapshots ({}): choose one with --client NAME",
                    clients.len(),
                    clients.join(", ")
                )));
            }
            if spec == "latest" {
                self.latest_is_decidable(&all, &served)?;
                return self.latest_healthy(all);
            }
            return all
                .into_iter()
                .last()
                .ok_or_else(|| Error::Usage("the repository has no snapshots".into()));
        }
        let m: Vec<_> = all
            .into_iter()
            .filter(|(id, _)| id.to_hex().starts_with(spec))
            .collect();
        match m.len() {
            1 => Ok(m.into_iter().next().unwrap()),
            0 => Err(Error::Usage(format!("no snapshot matches {spec:?}"))),
            n => Err(Error::Usage(format!(
                "{n} snapshots match {spec:?}; give more digits"
            ))),
        }
    }
}

/// What chooses among the snapshots of many servers: the client's name,
/// the host name the snapshot records, and paths it must hold.
#[derive(Clone, Debug, Default)]
pub struct Select {
    pub client: Option<String>,
    pub host: Option<String>,
    pub paths: Vec<String>,
    /// Tags the snapshot must all carry (`backup --tag`).
    pub tags: Vec<String>,
}

/// True when the snapshot holds `p`: an absolute path as backed up
/// (`/var/mail/u7`), or a path as `ls` prints it (`mail/u7`).
pub fn covers(body: &SnapshotBody, p: &str) -> bool {
    tree_path(body, p).is_ok_and(|parts| {
        parts
            .first()
            .is_none_or(|first| body.paths.iter().any(|a| top_name(a) == first.as_bytes()))
    })
}

/// The name a backed-up path has at the top of the snapshot's tree.
fn top_name(abs: &[u8]) -> &[u8] {
    let t = abs.strip_suffix(b"/").unwrap_or(abs);
    match t.iter().rposition(|c| *c == b'/') {
        Some(i) if i + 1 < t.len() => &t[i + 1..],
        _ if t.is_empty() => b"root",
        _ => t,
    }
}

/// A path inside a snapshot, as its tree's components. Accepts the form
/// `ls` prints (`mail/u7/Maildir`) and the absolute path as it was backed
/// up (`/var/mail/u7/Maildir`), which is looked up among the snapshot's
/// backed-up paths.
pub fn tree_path(body: &SnapshotBody, p: &str) -> Result<Vec<String>> {
    let parts = |s: &str| -> Vec<String> {
        s.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    if !p.starts_with('/') {
        return Ok(parts(p));
    }
    let want = p.trim_end_matches('/');
    for a in &body.paths {
        let a = String::from_utf8_lossy(a);
        let a = a.trim_end_matches('/');
        let rest = if a.is_empty() {
            Some(want)
        } else if want == a {
            Some("")
        } else {
            want.strip_prefix(a).filter(|r| r.starts_with('/'))
        };
        if let Some(rest) = rest {
            let mut v = vec![String::from_utf8_lossy(top_name(a.as_bytes())).into_owned()];
            v.extend(parts(rest));
            return Ok(v);
        }
    }
    let held: Vec<String> = body
        .paths
        .iter()
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Err(Error::Usage(format!(
        "{p} is not in the snapshot (it holds {})",
        held.join(", ")
    )))
}

/// A time given for SNAPSHOT, in ns since the epoch (UTC unless an offset
/// is given): `2026-11-20`, `2026-11-20T12:00`, `2026-11-20T12:00:00Z`,
/// `2026-11-20T12:00:00.5+01:00`. A bare date is that day's first instant.
pub fn parse_time(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        (!t.is_empty() && t.bytes().all(|c| c.is_ascii_digit()))
            .then(|| t.parse().ok())
            .flatten()
    };
    let (y, mo, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) {
        return None;
    }
    let mut secs = days_from_civil(y, mo as u32, d as u32) * 86_400;
    let mut nanos = 0i64;
    let mut rest = &s[10..];
    if !rest.is_empty() {
        rest = rest.strip_prefix(['T', 't', ' '])?;
        let hb = rest.as_bytes();
        if hb.len() < 5 || hb[2] != b':' {
            return None;
        }
        let h: i64 = rest.get(0..2)?.parse().ok()?;
        let mi: i64 = rest.get(3..5)?.parse().ok()?;
        let mut sec = 0i64;
        rest = &rest[5..];
        if let Some(r) = rest.strip_prefix(':') {
            sec = r.get(0..2)?.parse().ok()?;
            rest = &r[2..];
            if let Some(r) = rest.strip_prefix('.') {
                let digits = r.bytes().take_while(u8::is_ascii_digit).count();
                if digits == 0 || digits > 9 {
                    return None;
                }
                let f: i64 = r[..digits].parse().ok()?;
                nanos = f * 10i64.pow(9 - digits as u32);
                rest = &r[digits..];
            }
        }
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + sec;
        match rest {
            "" | "Z" | "z" => {}
            _ => {
                let sign = match rest.as_bytes()[0] {
                    b'+' => 1,
                    b'-' => -1,
                    _ => return None,
                };
                let o = &rest[1..];
                if o.len() != 5 || o.as_bytes()[2] != b':' {
                    return None;
                }
                let oh: i64 = o[0..2].parse().ok()?;
                let om: i64 = o[3..5].parse().ok()?;
                secs -= sign * (oh * 3600 + om * 60);
            }
        }
    }
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Howard Hinnant's days-from-civil algorithm.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// A vault time as RFC 3339 UTC (second precision).
pub fn fmt_time(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-01"), Some(0));
        assert_eq!(
            parse_time("2026-11-20T12:00:00Z"),
            Some(1_795_176_000 * 1_000_000_000)
        );
        assert_eq!(
            parse_time("2026-11-20"),
            Some((1_795_176_000 - 12 * 3600) * 1_000_000_000)
        );
        assert_eq!(
            parse_time("2026-11-20T13:00:00+01:00"),
            parse_time("2026-11-20T12:00:00Z")
        );
        assert_eq!(
            parse_time("2026-11-20T12:00:00.5Z"),
            Some(1_795_176_000 * 1_000_000_000 + 500_000_000)
        );
        assert_eq!(
            parse_time("2026-11-20 12:00"),
            parse_time("2026-11-20T12:00:00Z")
        );
        for bad in [
            "latest",
            "abcdef12",
            "2026-13-01",
            "2026-11-20T25:00Z",
            "2026-11-20X",
            "2026-11-20T12:00:00+0100",
            "2026-1-20",
        ] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }

    #[test]
    fn paths() {
        let body = SnapshotBody {
            paths: vec![b"/var/mail".to_vec(), b"/etc".to_vec()],
            ..Default::default()
        };
        assert_eq!(
            tree_path(&body, "/var/mail/u7/Maildir").unwrap(),
            ["mail", "u7", "Maildir"]
        );
        assert_eq!(tree_path(&body, "/var/mail/").unwrap(), ["mail"]);
        assert_eq!(tree_path(&body, "mail/u7/").unwrap(), ["mail", "u7"]);
        assert!(tree_path(&body, "/var/mailx").is_err());
        assert!(tree_path(&body, "/srv").is_err());
        assert!(covers(&body, "/etc/passwd"));
        assert!(covers(&body, "mail/u7"));
        assert!(!covers(&body, "srv/x"));
        let root = SnapshotBody {
            paths: vec![b"/".to_vec()],
            ..Default::default()
        };
        assert_eq!(
            tree_path(&root, "/var/mail").unwrap(),
            ["root", "var", "mail"]
        );
    }
}
