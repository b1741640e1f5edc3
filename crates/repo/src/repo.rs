//! An opened repository: the backend, its config (checked against the id
//! the key pins) and the identities that may write snapshots.

use std::collections::HashMap;
use std::sync::Arc;

use holdfast_core::ObjectId;
use holdfast_core::format::{Config, IdentityRecord, Member, Role, Snapshot};
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
        for (name, _) in backend.list(Kind::Identity)? {
            let rec = backend.get(Kind::Identity, &name)?;
            let rec = IdentityRecord::decode(&rec)
                .map_err(|e| Error::Corrupt(format!("identity {name}: {e}")))?;
            rec.verify(&config, &config_id).map_err(|_| {
                Error::Tamper(format!(
                    "identity {name}: not signed by an admin, or a role one admin may not add"
                ))
            })?;
            members.entry(rec.member.public).or_insert(rec.member);
        }
        Ok(Repository {
            backend,
            config,
            config_id,
            members,
            log: None,
        })
    }

    /// Reads the vault's log through the validating fold, on this reader's
    /// clock; from then on snapshots are ordered by the vault's time.
    pub fn attach_log(
        &mut self,
        entries: Vec<Vec<u8>>,
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
        let (mut all, _) = self.snapshots()?;
        if let Some(c) = client {
            all.retain(|(_, s)| self.member_name(&s.header.client) == c);
            if all.is_empty() {
                return Err(Error::Usage(format!("no snapshot of client {c:?}")));
            }
        }
        if spec == "latest" {
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
