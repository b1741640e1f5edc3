//! Entries of the vault's append-only log. Every state change is one entry;
//! the Merkle tree ([`crate::merkle`]) is built over the encoded entries.
//!
//! Entry: `version u8 = 1 | time_ns i64 (vault clock) | kind u8 | fields`.

use crate::codec::{DecodeError, Reader, Writer};
use crate::id::ObjectId;

const VERSION: u8 = 1;
const MAX_LIST: usize = 1_000_000;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A client committed a snapshot; the vault stamped it and locked it.
    SnapshotAdded {
        snapshot: ObjectId,
        client: [u8; 32],
        lock_until_ns: i64,
    },
    /// An admin extended a snapshot's lock (never shortened).
    LockExtended {
        snapshot: ObjectId,
        until_ns: i64,
        admin: [u8; 32],
    },
    /// A quorum proposal, as its signed bytes.
    Proposed { proposal: Vec<u8> },
    /// An approval or veto, as its signed bytes.
    Voted { vote: Vec<u8> },
    /// A proposal ran (after quorum, delay and no veto).
    Executed { proposal: ObjectId },
    /// Storage reclaimed: snapshots whose locks had expired, and packs no
    /// unexpired snapshot listed (older than the grace period).
    Reclaimed {
        snapshots: Vec<ObjectId>,
        packs: Vec<ObjectId>,
    },
    /// An identity record (signed by an admin) joined the repository.
    IdentityAdded { record: ObjectId },
    /// One admin revoked a client identity, at once: its requests are
    /// refused from then on and a snapshot it adds later is not valid.
    /// Revocation only stops writes, so it needs no quorum; it is final
    /// (a new client identity is issued instead). `signed` is the admin's
    /// clock and signature ([`crate::governance::sign_revocation`]), kind
    /// 10; kind 8 entries (before signatures) decode with `None`, and no
    /// reader applies them: the vault host could have written them.
    ClientRevoked {
        client: [u8; 32],
        admin: [u8; 32],
        signed: Option<(i64, [u8; 64])>,
    },
    /// The vault found an anomaly about a live snapshot (a signal code of
    /// `format::Signal`, 64 and up for the vault's own; 66 records that the
    /// client's signed findings were not empty). Flagged snapshots never
    /// take a retention slot; flags are never lifted by the vault alone.
    Flagged {
        snapshot: ObjectId,
        signal: u8,
        count: u64,
    },
    /// The stored bytes a live snapshot references, by the sizes the vault
    /// recorded as each of its packs arrived (kind 11, right after its
    /// `SnapshotAdded`). In the Merkle log, the same for every reader; a
    /// replica checks it against the packs it holds. Every reader's fold
    /// judges a shrink from these numbers.
    Stored { snapshot: ObjectId, bytes: u64 },
    /// The vault started with its wall clock `gap_ns` past the log's last
    /// entry, beyond its hold bound (kind 12): a jumped clock, or a vault
    /// down that long. From this entry on, every reader's fold refuses a
    /// deletion (a reclaim, or an execution that deletes or shortens
    /// retention) until an executed `AckClock` proposed after it. It only
    /// stops deletions, so the vault host gains nothing by forging one.
    ClockHeld { gap_ns: i64 },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub time_ns: i64,
    pub event: Event,
}

fn ids(w: &mut Writer, v: &[ObjectId]) {
    w.u32(v.len() as u32);
    for id in v {
        w.raw(&id.0);
    }
}

fn read_ids(r: &mut Reader) -> Result<Vec<ObjectId>, DecodeError> {
    let n = r.count(32, "id list")?;
    if n > MAX_LIST {
        return Err(DecodeError::TooLarge("id list"));
    }
    (0..n).map(|_| Ok(ObjectId(r.array()?))).collect()
}

impl Entry {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(128);
        w.u8(VERSION).i64(self.time_ns);
        match &self.event {
            Event::SnapshotAdded {
                snapshot,
                client,
                lock_until_ns,
            } => {
                w.u8(1).raw(&snapshot.0).raw(client).i64(*lock_until_ns);
            }
            Event::LockExtended {
                snapshot,
                until_ns,
                admin,
            } => {
                w.u8(2).raw(&snapshot.0).i64(*until_ns).raw(admin);
            }
            Event::Proposed { proposal } => {
                w.u8(3).bytes(proposal);
            }
            Event::Voted { vote } => {
                w.u8(4).bytes(vote);
            }
            Event::Executed { proposal } => {
                w.u8(5).raw(&proposal.0);
            }
            Event::Reclaimed { snapshots, packs } => {
                w.u8(6);
                ids(&mut w, snapshots);
                ids(&mut w, packs);
            }
            Event::IdentityAdded { record } => {
                w.u8(7).raw(&record.0);
            }
            Event::ClientRevoked {
                client,
                admin,
                signed: None,
            } => {
                w.u8(8).raw(client).raw(admin);
            }
            Event::ClientRevoked {
                client,
                admin,
                signed: Some((t, sig)),
            } => {
                w.u8(10).raw(client).raw(admin).i64(*t).raw(sig);
            }
            Event::Flagged {
                snapshot,
                signal,
                count,
            } => {
                w.u8(9).raw(&snapshot.0).u8(*signal).u64(*count);
            }
            Event::Stored { snapshot, bytes } => {
                w.u8(11).raw(&snapshot.0).u64(*bytes);
            }
            Event::ClockHeld { gap_ns } => {
                w.u8(12).i64(*gap_ns);
            }
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let v = r.u8()?;
        if v != VERSION {
            return Err(DecodeError::Version {
                what: "log entry",
                version: v as u32,
            });
        }
        let time_ns = r.i64()?;
        let event = match r.u8()? {
            1 => Event::SnapshotAdded {
                snapshot: ObjectId(r.array()?),
                client: r.array()?,
                lock_until_ns: r.i64()?,
            },
            2 => Event::LockExtended {
                snapshot: ObjectId(r.array()?),
                until_ns: r.i64()?,
                admin: r.array()?,
            },
            3 => Event::Proposed {
                proposal: r.bytes(8 << 20, "proposal")?.to_vec(),
            },
            4 => Event::Voted {
                vote: r.bytes(4096, "vote")?.to_vec(),
            },
            5 => Event::Executed {
                proposal: ObjectId(r.array()?),
            },
            6 => Event::Reclaimed {
                snapshots: read_ids(&mut r)?,
                packs: read_ids(&mut r)?,
            },
            7 => Event::IdentityAdded {
                record: ObjectId(r.array()?),
            },
            8 => Event::ClientRevoked {
                client: r.array()?,
                admin: r.array()?,
                signed: None,
            },
            10 => Event::ClientRevoked {
                client: r.array()?,
                admin: r.array()?,
                signed: Some((r.i64()?, r.array()?)),
            },
            9 => Event::Flagged {
                snapshot: ObjectId(r.array()?),
                signal: r.u8()?,
                count: r.u64()?,
            },
            11 => Event::Stored {
                snapshot: ObjectId(r.array()?),
                bytes: r.u64()?,
            },
            12 => Event::ClockHeld { gap_ns: r.i64()? },
            _ => return Err(DecodeError::Invalid("log entry kind")),
        };
        r.finish()?;
        Ok(Entry { time_ns, event })
    }
}

/// One log record as stored in every log file: `u32 length (LE) | entry`.
pub fn frame(entry: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(entry.len() as u32).to_le_bytes());
    out.extend_from_slice(entry);
}

/// Splits a log file (`u32 length | entry`, repeated) into entries; a torn
/// last record is ignored and reported as the byte length it left out.
pub fn split_log(raw: &[u8]) -> (Vec<&[u8]>, usize) {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while raw.len() - pos >= 4 {
        let n = u32::from_le_bytes(raw[pos..pos + 4].try_into().unwrap()) as usize;
        if raw.len() - pos - 4 < n {
            break;
        }
        out.push(&raw[pos + 4..pos + 4 + n]);
        pos += 4 + n;
    }
    (out, raw.len() - pos)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for event in [
            Event::SnapshotAdded {
                snapshot: ObjectId([1; 32]),
                client: [2; 32],
                lock_until_ns: 9,
            },
            Event::LockExtended {
                snapshot: ObjectId([1; 32]),
                until_ns: 10,
                admin: [3; 32],
            },
            Event::Proposed {
                proposal: vec![1, 2, 3],
            },
            Event::Voted { vote: vec![4] },
            Event::Executed {
                proposal: ObjectId([5; 32]),
            },
            Event::Reclaimed {
                snapshots: vec![ObjectId([6; 32])],
                packs: vec![ObjectId([7; 32]), ObjectId([8; 32])],
            },
            Event::IdentityAdded {
                record: ObjectId([9; 32]),
            },
            Event::ClientRevoked {
                client: [10; 32],
                admin: [11; 32],
                signed: None,
            },
            Event::ClientRevoked {
                client: [10; 32],
                admin: [11; 32],
                signed: Some((-7, [13; 64])),
            },
            Event::Flagged {
                snapshot: ObjectId([12; 32]),
                signal: 64,
                count: u64::MAX,
            },
            Event::Stored {
                snapshot: ObjectId([14; 32]),
                bytes: 1 << 40,
            },
            Event::ClockHeld { gap_ns: 86_400 },
            Event::ClockHeld { gap_ns: i64::MIN },
        ] {
            let e = Entry { time_ns: -4, event };
            assert_eq!(Entry::decode(&e.encode()).unwrap(), e);
        }
    }

    #[test]
    fn a_clock_hold_entry_is_exact_and_malformed_ones_are_errors() {
        let e = Entry {
            time_ns: 5,
            event: Event::ClockHeld { gap_ns: 7 * 3600 },
        };
        let b = e.encode();
        // version, time, kind 12, gap: nothing else.
        assert_eq!(b.len(), 1 + 8 + 1 + 8);
        assert_eq!(b[9], 12);
        for n in 0..b.len() {
            assert!(Entry::decode(&b[..n]).is_err(), "truncated at {n}");
        }
        let mut long = b.clone();
        long.push(0);
        assert!(Entry::decode(&long).is_err(), "a trailing byte");
        let mut unknown = b.clone();
        unknown[9] = 13;
        assert!(Entry::decode(&unknown).is_err(), "kind 13 is not defined");
    }
}
