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
        })
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
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (name, _) in self.backend.list(Kind::Snapshot)? {
            let id = ObjectId::from_hex(&name).map_err(|e| Error::Corrupt(e.to_string()))?;
            match self.load_snapshot(&id) {
                Ok(s) => good.push((id, s)),
                Err(e) => bad.push(e),
            }
        }
        good.sort_by_key(|(id, s)| (s.header.time_ns, *id));
        Ok((good, bad))
    }

    /// Resolves an id, a unique prefix, or `latest`.
    pub fn resolve(&self, spec: &str) -> Result<(ObjectId, Snapshot)> {
        let (all, _) = self.snapshots()?;
        if spec == "latest" {
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
