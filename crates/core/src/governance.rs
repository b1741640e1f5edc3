//! Quorum for destruction (SPEC G4), as pure functions the vault and every
//! replica evaluate the same way.
//!
//! A **proposal** is a canonical, signed statement of exactly what will
//! happen; its id is the BLAKE3 of its bytes. **Votes** (approve or veto)
//! sign that id. The rules:
//!
//! * only admins that are still active count, each at most once (the
//!   proposer's signature counts as its approval);
//! * any single active admin's veto stops the proposal for good;
//! * once `quorum` distinct admins have approved, a delay window of
//!   `delay_secs` starts, on the vault's clock (the time the vault received
//!   the approval that completed the quorum); the proposal may run only
//!   after the window has passed without a veto;
//! * execution performs exactly the action, nothing more.

use std::collections::BTreeSet;

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, CryptoError, Identity};
use crate::format::Retention;
use crate::id::ObjectId;

pub const PROPOSAL_MAGIC: &[u8; 8] = b"HFPROP01";
pub const VOTE_MAGIC: &[u8; 8] = b"HFVOTE01";
pub const SIG_PROPOSAL: &str = "holdfast proposal v1";
pub const SIG_VOTE: &str = "holdfast vote v1";
const MAX_TARGETS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Early deletion of these snapshots (legal erasure), before their locks end.
    DeleteSnapshots(Vec<ObjectId>),
    /// Replace the retention policy (shortening it needs this).
    SetRetention(Retention),
    /// Remove an identity (admin, client, replica, auditor).
    RemoveIdentity([u8; 32]),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proposal {
    pub config_id: ObjectId,
    pub action: Action,
    pub proposer: [u8; 32],
    /// The proposer's clock; informative only.
    pub time_ns: i64,
    pub nonce: [u8; 16],
    pub signature: [u8; 64],
}

fn encode_action(w: &mut Writer, a: &Action) {
    match a {
        Action::DeleteSnapshots(ids) => {
            w.u8(1).u32(ids.len() as u32);
            for id in ids {
                w.raw(&id.0);
            }
        }
        Action::SetRetention(r) => {
            w.u8(2)
                .u64(r.keep_within_secs)
                .u32(r.daily)
                .u32(r.weekly)
                .u32(r.monthly)
                .u32(r.yearly);
        }
        Action::RemoveIdentity(k) => {
            w.u8(3).raw(k);
        }
    }
}

impl Proposal {
    fn signed_part(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(PROPOSAL_MAGIC).raw(&self.config_id.0);
        encode_action(&mut w, &self.action);
        w.raw(&self.proposer).i64(self.time_ns).raw(&self.nonce);
        w.into_vec()
    }

    /// Makes and signs a proposal. Snapshot lists are sorted and deduplicated
    /// so that one intent has one canonical form.
    pub fn new(
        config_id: ObjectId,
        mut action: Action,
        admin: &Identity,
        time_ns: i64,
    ) -> Result<Self, CryptoError> {
        if let Action::DeleteSnapshots(ids) = &mut action {
            ids.sort();
            ids.dedup();
        }
        let mut p = Proposal {
            config_id,
            action,
            proposer: admin.public(),
            time_ns,
            nonce: crypto::random_bytes()?,
            signature: [0; 64],
        };
        p.signature = admin.sign(SIG_PROPOSAL, &p.signed_part());
        Ok(p)
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.signed_part();
        v.extend_from_slice(&self.signature);
        v
    }

    pub fn id(&self) -> ObjectId {
        ObjectId::of(&self.encode())
    }

    /// Decodes and checks the proposer's signature (not whether the proposer
    /// is an admin: that is [`status`]'s question).
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(PROPOSAL_MAGIC, "proposal")?;
        let config_id = ObjectId(r.array()?);
        let action = match r.u8()? {
            1 => {
                let n = r.count(32, "snapshot list")?;
                if n == 0 || n > MAX_TARGETS {
                    return Err(DecodeError::Invalid("snapshot list length"));
                }
                let mut ids: Vec<ObjectId> = Vec::with_capacity(n);
                for _ in 0..n {
                    let id = ObjectId(r.array()?);
                    if ids.last().is_some_and(|l| *l >= id) {
                        return Err(DecodeError::Invalid("snapshot list order"));
                    }
                    ids.push(id);
                }
                Action::DeleteSnapshots(ids)
            }
            2 => Action::SetRetention(Retention {
                keep_within_secs: r.u64()?,
                daily: r.u32()?,
                weekly: r.u32()?,
                monthly: r.u32()?,
                yearly: r.u32()?,
            }),
            3 => Action::RemoveIdentity(r.array()?),
            _ => return Err(DecodeError::Invalid("proposal action")),
        };
        let p = Proposal {
            config_id,
            action,
            proposer: r.array()?,
            time_ns: r.i64()?,
            nonce: r.array()?,
            signature: r.array()?,
        };
        r.finish()?;
        crypto::verify(&p.proposer, SIG_PROPOSAL, &p.signed_part(), &p.signature)
            .map_err(|_| DecodeError::Invalid("proposal signature"))?;
        Ok(p)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VoteKind {
    Approve = 1,
    Veto = 2,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vote {
    pub proposal: ObjectId,
    pub kind: VoteKind,
    pub admin: [u8; 32],
    pub signature: [u8; 64],
}

impl Vote {
    fn signed_part(proposal: &ObjectId, kind: VoteKind, admin: &[u8; 32]) -> Vec<u8> {
        let mut w = Writer::with_capacity(80);
        w.raw(VOTE_MAGIC).raw(&proposal.0).u8(kind as u8).raw(admin);
        w.into_vec()
    }

    pub fn new(proposal: ObjectId, kind: VoteKind, admin: &Identity) -> Self {
        let pubkey = admin.public();
        Vote {
            proposal,
            kind,
            admin: pubkey,
            signature: admin.sign(SIG_VOTE, &Self::signed_part(&proposal, kind, &pubkey)),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = Self::signed_part(&self.proposal, self.kind, &self.admin);
        v.extend_from_slice(&self.signature);
        v
    }

    /// Decodes and checks the signature.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(VOTE_MAGIC, "vote")?;
        let proposal = ObjectId(r.array()?);
        let kind = match r.u8()? {
            1 => VoteKind::Approve,
            2 => VoteKind::Veto,
            _ => return Err(DecodeError::Invalid("vote kind")),
        };
        let admin = r.array()?;
        let signature = r.array()?;
        r.finish()?;
        crypto::verify(
            &admin,
            SIG_VOTE,
            &Self::signed_part(&proposal, kind, &admin),
            &signature,
        )
        .map_err(|_| DecodeError::Invalid("vote signature"))?;
        Ok(Vote {
            proposal,
            kind,
            admin,
            signature,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Fewer than `quorum` distinct active admins approved.
    Pending { approvals: usize, needed: usize },
    /// Quorum reached; vetoes are still possible until `until_ns`.
    Waiting { until_ns: i64 },
    /// Vetoed by this admin: final.
    Vetoed { by: [u8; 32] },
    /// May be executed now.
    Ready,
}

/// Evaluates a proposal on the vault's clock.
///
/// `received_ns` is when the vault received the proposal; `votes` are
/// (vote, time the vault received it), already signature-checked;
/// `active_admins` are the admins not removed.
pub fn status(
    proposal: &Proposal,
    received_ns: i64,
    votes: &[(Vote, i64)],
    active_admins: &BTreeSet<[u8; 32]>,
    quorum: usize,
    delay_secs: u64,
    now_ns: i64,
) -> Status {
    let id = proposal.id();
    let mine = || {
        votes
            .iter()
            .filter(|(v, _)| v.proposal == id && active_admins.contains(&v.admin))
    };
    if let Some((v, _)) = mine().find(|(v, _)| v.kind == VoteKind::Veto) {
        return Status::Vetoed { by: v.admin };
    }
    // Approvals in the order the vault received them; the proposer first.
    let mut approvals: Vec<([u8; 32], i64)> = Vec::new();
    if active_admins.contains(&proposal.proposer) {
        approvals.push((proposal.proposer, received_ns));
    }
    let mut ordered: Vec<_> = mine()
        .filter(|(v, _)| v.kind == VoteKind::Approve)
        .collect();
    ordered.sort_by_key(|(_, t)| *t);
    for (v, t) in ordered {
        if !approvals.iter().any(|(a, _)| *a == v.admin) {
            approvals.push((v.admin, *t));
        }
    }
    if quorum == 0 || approvals.len() < quorum {
        return Status::Pending {
            approvals: approvals.len(),
            needed: quorum,
        };
    }
    let reached = approvals[quorum - 1].1;
    let until_ns = reached
        .saturating_add((delay_secs.min(i64::MAX as u64 / 2_000_000_000) as i64) * 1_000_000_000);
    if now_ns < until_ns {
        Status::Waiting { until_ns }
    } else {
        Status::Ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn admins() -> (Vec<Identity>, BTreeSet<[u8; 32]>) {
        let ids: Vec<Identity> = (1..=3u8).map(|i| Identity::from_bytes([i; 32])).collect();
        let set = ids.iter().map(|i| i.public()).collect();
        (ids, set)
    }

    fn delete_one(a: &Identity) -> Proposal {
        Proposal::new(
            ObjectId([7; 32]),
            Action::DeleteSnapshots(vec![
                ObjectId([2; 32]),
                ObjectId([1; 32]),
                ObjectId([2; 32]),
            ]),
            a,
            0,
        )
        .unwrap()
    }

    #[test]
    fn canonical_round_trip_and_forgery() {
        let (a, _) = admins();
        let p = delete_one(&a[0]);
        assert_eq!(
            p.action,
            Action::DeleteSnapshots(vec![ObjectId([1; 32]), ObjectId([2; 32])])
        );
        let b = p.encode();
        assert_eq!(Proposal::decode(&b).unwrap(), p);
        for i in [10, 40, 80, b.len() - 1] {
            let mut bad = b.clone();
            bad[i] ^= 1;
            assert!(Proposal::decode(&bad).is_err(), "flip at {i}");
        }
        let v = Vote::new(p.id(), VoteKind::Approve, &a[1]);
        assert_eq!(Vote::decode(&v.encode()).unwrap(), v);
        let mut forged = v.encode();
        forged[8] ^= 1; // points the approval at another proposal
        assert!(Vote::decode(&forged).is_err());
    }

    #[test]
    fn one_stolen_admin_key_alone_achieves_nothing() {
        let (a, set) = admins();
        let p = delete_one(&a[0]);
        // It approves its own proposal again, twice.
        let votes = vec![
            (Vote::new(p.id(), VoteKind::Approve, &a[0]), S),
            (Vote::new(p.id(), VoteKind::Approve, &a[0]), 2 * S),
        ];
        let st = status(&p, 0, &votes, &set, 2, 72 * 3600, 1_000_000 * S);
        assert_eq!(
            st,
            Status::Pending {
                approvals: 1,
                needed: 2
            }
        );
        // A non-admin's approval does not count either.
        let outsider = Identity::from_bytes([9; 32]);
        let votes = vec![(Vote::new(p.id(), VoteKind::Approve, &outsider), S)];
        assert!(matches!(
            status(&p, 0, &votes, &set, 2, 0, S),
            Status::Pending { .. }
        ));
        // An approval of a different proposal does not count.
        let other = delete_one(&a[0]);
        let votes = vec![(Vote::new(other.id(), VoteKind::Approve, &a[1]), S)];
        assert!(matches!(
            status(&p, 0, &votes, &set, 2, 0, S),
            Status::Pending { .. }
        ));
    }

    #[test]
    fn quorum_then_delay_then_ready_unless_vetoed() {
        let (a, set) = admins();
        let p = delete_one(&a[0]);
        let approve = (Vote::new(p.id(), VoteKind::Approve, &a[1]), 100 * S);
        let votes = vec![approve.clone()];
        assert_eq!(
            status(&p, 0, &votes, &set, 2, 60, 120 * S),
            Status::Waiting { until_ns: 160 * S }
        );
        assert_eq!(status(&p, 0, &votes, &set, 2, 60, 160 * S), Status::Ready);
        // Any one admin's veto stops it, even the third.
        let votes = vec![approve, (Vote::new(p.id(), VoteKind::Veto, &a[2]), 150 * S)];
        assert_eq!(
            status(&p, 0, &votes, &set, 2, 60, 1000 * S),
            Status::Vetoed { by: a[2].public() }
        );
        // A removed admin's votes no longer count.
        let mut fewer = set.clone();
        fewer.remove(&a[2].public());
        let votes = vec![(Vote::new(p.id(), VoteKind::Veto, &a[2]), 150 * S)];
        assert!(matches!(
            status(&p, 0, &votes, &fewer, 2, 60, 1000 * S),
            Status::Pending { .. }
        ));
    }
}
