//! `holdfast audit`: the whole log against the repository.
//!
//! 1. The log matches the vault's signed checkpoint (signature, size, root).
//! 2. The log read through the one validating fold
//!    ([`holdfast_core::logstate`]): every rule every reader applies
//!    (times, duplicates, reclaims only after their locks, executions only
//!    with quorum, delay and no veto); each broken rule is a problem.
//! 3. Every snapshot the log says is live is present and valid, and its
//!    packs exist (where the key may list packs); every snapshot present is
//!    explained by the log.

use std::collections::HashSet;

use holdfast_core::ObjectId;
use holdfast_core::logstate::{GoneHow, Reader};
use holdfast_core::vaultlog::{Entry, Event};
use holdfast_store::Kind;

use crate::{Repository, Result};

#[derive(Debug, Default)]
pub struct AuditReport {
    pub entries: u64,
    pub snapshots_logged: u64,
    pub live: u64,
    pub deletions: u64,
    pub reclaimed: u64,
    pub packs_checked: bool,
    /// Identities revoked or removed, by name.
    pub revoked: Vec<String>,
    /// A clock hold in force (log kind 12): its newest entry and the gap it
    /// logged (seconds). No deletion until an admin quorum acknowledges it.
    pub clock_held: Option<(u64, i64)>,
    pub problems: Vec<String>,
}

/// Audits the log `repo` was opened with (folded again, this time reading
/// every snapshot's pack list), or says there is none.
pub fn audit(repo: &Repository) -> Result<AuditReport> {
    let mut r = AuditReport::default();
    let Some(log) = &repo.log else {
        return Err(crate::Error::Usage(format!(
            "{}: no vault log here to audit",
            repo.backend.location()
        )));
    };
    // Read again from where the open read them (the client's copy of a
    // vault's log is streamed from its file, not held in memory).
    let entries = &log.entries;
    let view = crate::logview::fold(
        repo,
        entries.clone(),
        &log.checkpoint,
        &Reader::at(crate::now_ns()),
        true,
    );
    r.problems.extend(view.problems.iter().cloned());
    let st = &view.state;
    r.entries = entries.len() as u64;
    entries
        .for_each(&mut |_, e| {
            if matches!(
                Entry::decode(e).map(|e| e.event),
                Ok(Event::SnapshotAdded { .. })
            ) {
                r.snapshots_logged += 1;
            }
            std::ops::ControlFlow::Continue(())
        })
        .map_err(|e| crate::Error::Io {
            path: "the client's copy of the vault's log".into(),
            source: e,
        })?;
    r.live = st.snapshots.len() as u64;
    r.clock_held = st.clock_held().map(|h| (h.last, h.gap_ns / 1_000_000_000));
    // A key its client replaced (`key rotate client`) says by which.
    r.revoked = st
        .removed
        .iter()
        .map(|k| match st.successor_of(k) {
            Some(s) => format!(
                "{} (key {} replaced by key {})",
                repo.member_name(k),
                holdfast_core::id::hex(&k[..4]),
                holdfast_core::id::hex(&s[..4])
            ),
            None => repo.member_name(k),
        })
        .collect();
    r.deletions = st
        .gone
        .values()
        .filter(|g| g.how == GoneHow::Erased)
        .count() as u64;
    r.reclaimed = st
        .gone
        .values()
        .filter(|g| g.how == GoneHow::Reclaimed)
        .count() as u64;

    // Compare with what is stored.
    let present: HashSet<ObjectId> = repo
        .backend
        .list(Kind::Snapshot)?
        .into_iter()
        .filter_map(|(n, _)| ObjectId::from_hex(&n).ok())
        .collect();
    let packs: Option<HashSet<ObjectId>> = repo.backend.list(Kind::Pack).ok().map(|l| {
        l.into_iter()
            .filter_map(|(n, _)| ObjectId::from_hex(&n).ok())
            .collect()
    });
    r.packs_checked = packs.is_some();
    for (id, snap) in &st.snapshots {
        if !present.contains(id) {
            r.problems.push(format!(
                "snapshot {id} of {} is in the log but missing from the repository",
                repo.member_name(&snap.client)
            ));
            continue;
        }
        match repo.load_snapshot(id) {
            Ok(s) => {
                if s.header.client != snap.client {
                    r.problems.push(format!(
                        "snapshot {id} is signed by another client than the log says"
                    ));
                }
                // Added after a restore key rotation ran: it must name the
                // epoch then current (format.md §11.2), which the vault
                // checks; a vault host that let one through is caught here.
                if snap.epoch > 0 {
                    let want = st.restore_publics.get(snap.epoch);
                    if s.restore_epoch.as_ref() != want {
                        let named = match s.restore_epoch {
                            Some(e) => match st.restore_publics.iter().position(|k| *k == e) {
                                Some(i) => format!("epoch {i}"),
                                None => "a key that is no restore key epoch".into(),
                            },
                            None => "no epoch".into(),
                        };
                        r.problems.push(format!(
                            "snapshot {id} was added while restore key epoch {} was current but \
                             names {named}: the vault should have refused it",
                            snap.epoch
                        ));
                    }
                }
                if let Some(packs) = &packs {
                    for p in &s.header.packs {
                        if !packs.contains(p) {
                            r.problems
                                .push(format!("snapshot {id}: pack {p} is missing"));
                        }
                    }
                }
            }
            Err(e) => r.problems.push(format!("snapshot {id}: {e}")),
        }
    }
    for (name, _) in repo.backend.list(Kind::Identity)? {
        let logged = ObjectId::from_hex(&name).is_ok_and(|id| st.identities.contains(&id));
        if !logged {
            r.problems.push(format!(
                "identity record {name} is present but the log does not explain it"
            ));
        }
    }
    for id in &present {
        // Reclaimed as expired: a replica keeps them, and a vault that
        // crashed between logging and deleting still has them.
        let explained = st.snapshots.contains_key(id)
            || st.gone.get(id).is_some_and(|g| g.how == GoneHow::Reclaimed);
        if !explained {
            r.problems.push(if st.gone.contains_key(id) {
                format!("snapshot {id} was erased by quorum but is still present")
            } else {
                format!("snapshot {id} is present but the log does not explain it")
            });
        }
    }
    Ok(r)
}
