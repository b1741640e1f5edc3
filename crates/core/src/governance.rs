//! Quorum for destruction (SPEC G4), as pure functions the vault and every
//! replica evaluate the same way.
//!
//! A **proposal** is a canonical, signed statement of exactly what will
//! happen; its id is the BLAKE3 of its bytes. **Votes** (approve or veto)
//! sign that id. The rules:
//!
//! The rules that decide whether a proposal may run (quorum, delay, veto)
//! live in the one log fold, [`crate::logstate`], which every reader runs;
//! [`Status`] is what it answers.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, CryptoError, Identity};
use crate::format::Retention;
use crate::id::ObjectId;

pub const PROPOSAL_MAGIC: &[u8; 8] = b"HFPROP01";
pub const VOTE_MAGIC: &[u8; 8] = b"HFVOTE01";
pub const SIG_PROPOSAL: &str = "holdfast proposal v1";
pub const SIG_VOTE: &str = "holdfast vote v1";
pub const SIG_REVOCATION: &str = "holdfast revocation v1";
const REVOCATION_MAGIC: &[u8; 8] = b"HFREVK01";
/// The context of a new vault key's proof of possession.
pub const SIG_VAULT_KEY: &str = "holdfast vault key v1";
const VAULT_KEY_MAGIC: &[u8; 8] = b"HFVKEY01";

/// What a new vault key signs to prove its holder has the secret: the
/// repository and the key itself.
pub fn vault_key_message(config_id: &ObjectId, key: &[u8; 32]) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(VAULT_KEY_MAGIC).raw(&config_id.0).raw(key);
    w.into_vec()
}

/// The proof of possession of a new vault key (see [`vault_key_message`]).
pub fn vault_key_pop(config_id: &ObjectId, new_key: &Identity) -> [u8; 64] {
    new_key.sign(
        SIG_VAULT_KEY,
        &vault_key_message(config_id, &new_key.public()),
    )
}

/// Checks a new vault key's proof of possession.
pub fn verify_vault_key_pop(config_id: &ObjectId, key: &[u8; 32], pop: &[u8; 64]) -> bool {
    crypto::verify(key, SIG_VAULT_KEY, &vault_key_message(config_id, key), pop).is_ok()
}

/// What an admin signs to revoke a client at once: the repository, the
/// client, and the admin's clock (informative). The vault logs the
/// signature with the revocation, so that no reader has to take the vault
/// host's word that an admin asked for it.
pub fn revocation_message(config_id: &ObjectId, client: &[u8; 32], time_ns: i64) -> Vec<u8> {
    let mut w = Writer::new();
    w.raw(REVOCATION_MAGIC)
        .raw(&config_id.0)
        .raw(client)
        .i64(time_ns);
    w.into_vec()
}

/// Signs a revocation of `client` (see [`revocation_message`]).
pub fn sign_revocation(
    config_id: &ObjectId,
    client: &[u8; 32],
    time_ns: i64,
    admin: &Identity,
) -> [u8; 64] {
    admin.sign(
        SIG_REVOCATION,
        &revocation_message(config_id, client, time_ns),
    )
}

/// Checks a revocation's signature by `admin` (not whether `admin` is an
/// active admin: that is the log fold's question).
pub fn verify_revocation(
    config_id: &ObjectId,
    client: &[u8; 32],
    admin: &[u8; 32],
    time_ns: i64,
    signature: &[u8; 64],
) -> bool {
    crypto::verify(
        admin,
        SIG_REVOCATION,
        &revocation_message(config_id, client, time_ns),
        signature,
    )
    .is_ok()
}
const MAX_TARGETS: usize = 100_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Early deletion of these snapshots (legal erasure), before their locks end.
    DeleteSnapshots(Vec<ObjectId>),
    /// Replace the retention policy (shortening it needs this).
    SetRetention(Retention),
    /// Remove an identity (admin, client, replica, auditor).
    RemoveIdentity([u8; 32]),
    /// A new restore key epoch: clients seal new data to this X25519
    /// public key from the execution on. Earlier data stays sealed to the
    /// earlier keys (a rotated restore key holds their secrets too).
    RotateRestoreKey([u8; 32]),
    /// Clear every anomaly flag of these snapshots (the client's signed
    /// findings and the vault's): a false alarm, acknowledged by the
    /// quorum. From then on `latest` may choose them and they take
    /// retention slots again.
    LiftFlags(Vec<ObjectId>),
    /// Change the threshold of one of the vault's signals from `from` (its
    /// value when proposed) to `to` (see
    /// [`crate::logstate::default_threshold`] for units). It runs only if
    /// the threshold is still `from` (so proposals do not stack), raises it
    /// by at most [`crate::logstate::MAX_RAISE`] points, and does not go
    /// below [`crate::logstate::min_threshold`].
    SetThreshold { signal: u8, from: u32, to: u32 },
    /// A new vault key (Ed25519): from the checkpoint that covers this
    /// proposal's execution entry on, the vault signs checkpoints and
    /// presents TLS with it. `pop` is the new key's signature over
    /// [`vault_key_message`]: a proposal without a valid one does not decode.
    RotateVaultKey { key: [u8; 32], pop: [u8; 64] },
    /// Acknowledge the vault's clock after a hold (log kind 12): the
    /// quorum says the time the vault now dates entries with is right (the
    /// vault really was down that long, or its clock was fixed). No
    /// payload: it lifts every hold logged before its `Proposed` entry,
    /// none logged after. The proposer's clock (`time_ns`, signed) is the
    /// witness: it must be within [`ACK_CLOCK_SKEW_NS`] of the time of the
    /// `Proposed` entry, or the proposal is refused.
    AckClock,
}

/// How far an `AckClock` proposer's clock may be from the vault's (the
/// time of its `Proposed` entry).
pub const ACK_CLOCK_SKEW_NS: i64 = 15 * 60 * 1_000_000_000;

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
        Action::RotateRestoreKey(k) => {
            w.u8(4).raw(k);
        }
        Action::LiftFlags(ids) => {
            w.u8(5).u32(ids.len() as u32);
            for id in ids {
                w.raw(&id.0);
            }
        }
        Action::SetThreshold { signal, from, to } => {
            w.u8(6).u8(*signal).u32(*from).u32(*to);
        }
        Action::RotateVaultKey { key, pop } => {
            w.u8(7).raw(key).raw(pop);
        }
        Action::AckClock => {
            w.u8(8);
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
        if let Action::DeleteSnapshots(ids) | Action::LiftFlags(ids) = &mut action {
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
            tag @ (1 | 5) => {
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
                if tag == 1 {
                    Action::DeleteSnapshots(ids)
                } else {
                    Action::LiftFlags(ids)
                }
            }
            2 => Action::SetRetention(Retention {
                keep_within_secs: r.u64()?,
                daily: r.u32()?,
                weekly: r.u32()?,
                monthly: r.u32()?,
                yearly: r.u32()?,
            }),
            3 => Action::RemoveIdentity(r.array()?),
            4 => Action::RotateRestoreKey(r.array()?),
            6 => Action::SetThreshold {
                signal: r.u8()?,
                from: r.u32()?,
                to: r.u32()?,
            },
            7 => Action::RotateVaultKey {
                key: r.array()?,
                pop: r.array()?,
            },
            8 => Action::AckClock,
            _ => return Err(DecodeError::Invalid("proposal action")),
        };
        if let Action::RotateVaultKey { key, pop } = &action
            && !verify_vault_key_pop(&config_id, key, pop)
        {
            return Err(DecodeError::Invalid(
                "vault key proof of possession (not signed by the new key for this repository)",
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn admins() -> Vec<Identity> {
        (1..=3u8).map(|i| Identity::from_bytes([i; 32])).collect()
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
        let a = admins();
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
    fn every_action_round_trips_and_revocations_verify() {
        let a = admins();
        let cid = ObjectId([4; 32]);
        for action in [
            Action::SetRetention(Retention {
                keep_within_secs: 1,
                daily: 2,
                weekly: 3,
                monthly: 4,
                yearly: 5,
            }),
            Action::RemoveIdentity([6; 32]),
            Action::RotateRestoreKey([7; 32]),
            Action::LiftFlags(vec![
                ObjectId([9; 32]),
                ObjectId([8; 32]),
                ObjectId([9; 32]),
            ]),
            Action::SetThreshold {
                signal: 65,
                from: 30,
                to: 35,
            },
            {
                let k = Identity::from_bytes([42; 32]);
                Action::RotateVaultKey {
                    key: k.public(),
                    pop: vault_key_pop(&cid, &k),
                }
            },
            Action::AckClock,
        ] {
            let p = Proposal::new(cid, action, &a[0], 1).unwrap();
            assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
        }
        // Lifts are canonical like deletions: sorted, no duplicates.
        let p = Proposal::new(
            cid,
            Action::LiftFlags(vec![
                ObjectId([9; 32]),
                ObjectId([8; 32]),
                ObjectId([9; 32]),
            ]),
            &a[0],
            1,
        )
        .unwrap();
        assert_eq!(
            p.action,
            Action::LiftFlags(vec![ObjectId([8; 32]), ObjectId([9; 32])])
        );
        let sig = sign_revocation(&cid, &[1; 32], 5, &a[0]);
        assert!(verify_revocation(&cid, &[1; 32], &a[0].public(), 5, &sig));
        assert!(!verify_revocation(&cid, &[2; 32], &a[0].public(), 5, &sig));
        assert!(!verify_revocation(&cid, &[1; 32], &a[1].public(), 5, &sig));
        assert!(!verify_revocation(&cid, &[1; 32], &a[0].public(), 6, &sig));
        assert!(!verify_revocation(
            &ObjectId([3; 32]),
            &[1; 32],
            &a[0].public(),
            5,
            &sig
        ));
    }

    #[test]
    fn a_clock_acknowledgement_has_no_payload_and_malformed_ones_are_errors() {
        let a = admins();
        let p = Proposal::new(ObjectId([4; 32]), Action::AckClock, &a[0], 77).unwrap();
        let b = p.encode();
        assert_eq!(Proposal::decode(&b).unwrap(), p);
        // magic, config id, then the action: tag 8 and nothing more.
        assert_eq!(b[40], 8);
        assert_eq!(b.len(), 8 + 32 + 1 + 32 + 8 + 16 + 64);
        for n in 0..b.len() {
            assert!(Proposal::decode(&b[..n]).is_err(), "truncated at {n}");
        }
        // A byte of payload shifts the rest: the signature no longer checks.
        let mut extra = b.clone();
        extra.insert(41, 0);
        assert!(Proposal::decode(&extra).is_err());
        let mut unknown = b.clone();
        unknown[40] = 9;
        assert!(Proposal::decode(&unknown).is_err());
        // Its time is signed like every proposal's.
        let mut later = b.clone();
        later[41 + 32] ^= 1;
        assert!(Proposal::decode(&later).is_err());
    }

    #[test]
    fn vault_key_proposal_needs_the_new_keys_proof_of_possession() {
        let a = admins();
        let cid = ObjectId([4; 32]);
        let new = Identity::from_bytes([42; 32]);
        let other = Identity::from_bytes([43; 32]);
        let good = Action::RotateVaultKey {
            key: new.public(),
            pop: vault_key_pop(&cid, &new),
        };
        let p = Proposal::new(cid, good, &a[0], 1).unwrap();
        assert_eq!(Proposal::decode(&p.encode()).unwrap(), p);
        // Signed by another key, for another repository, or damaged: refused.
        for pop in [
            vault_key_pop(&cid, &other),
            vault_key_pop(&ObjectId([5; 32]), &new),
            {
                let mut x = vault_key_pop(&cid, &new);
                x[3] ^= 1;
                x
            },
        ] {
            let bad = Proposal::new(
                cid,
                Action::RotateVaultKey {
                    key: new.public(),
                    pop,
                },
                &a[0],
                1,
            )
            .unwrap();
            let e = Proposal::decode(&bad.encode()).unwrap_err();
            assert!(e.to_string().contains("proof of possession"), "{e}");
        }
        // Truncated encodings are errors, not panics.
        let b = p.encode();
        for n in 0..b.len() {
            assert!(Proposal::decode(&b[..n]).is_err());
        }
    }
}
