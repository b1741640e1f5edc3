//! Writes (pack and snapshot PUTs) without a global lock around I/O.
//!
//! A write runs in three steps:
//!
//! 1. **Outside any lock**: the body's hash against its id (computed once,
//!    while the body arrived), the pack parse or the snapshot decode and
//!    signature check.
//! 2. **Under the write lock, briefly**: every rule (ownership, quota,
//!    namespace, time, burst), and a *reservation* in [`InFlight`]: the
//!    quota bytes, the commit's place in the burst count, and the packs
//!    involved, which reclaim then leaves alone.
//! 3. **Outside any lock**: the object is written to storage (durably,
//!    atomically, by its content id: writes of different objects run in
//!    parallel, two writes of the same object write the same bytes).
//! 4. **Under the write lock**: the reservation is released, the rules that
//!    may have changed meanwhile are checked again (a snapshot committed by
//!    a concurrent duplicate, a revoked client, a pack reclaimed), and the
//!    commit is made: the pack enters the namespace (its owner record was
//!    appended and fsynced in step 3, under the owners file's own lock), or
//!    the snapshot's log entry (stamped now, on the vault's clock) and
//!    checkpoint are appended.
//!
//! So the only serialised work is the rule checks and the log append
//! (the owner record has a lock of its own), as before in that order (object durable → log entry →
//! checkpoint → answer). A check made in step 2 either holds in step 4 by
//! the reservation (quota, burst, reclaim of a pack in flight) or is made
//! again there (namespace, revocation, idempotence).

use std::collections::HashMap;
use std::sync::Arc;

use holdfast_core::ObjectId;
use holdfast_core::format::{self, Snapshot};
use holdfast_store::{Kind, ObjectStore, Staged};

use crate::ApiError;
use crate::state::{CLIENT_AHEAD_NS, CLIENT_BEHIND_NS, NS, Shared, SnapMeta, Vault, short, write};

/// What writes between their check and their commit hold.
#[derive(Default)]
pub(crate) struct InFlight {
    /// Packs being uploaded, or listed by a snapshot being committed
    /// (count of requests): reclaim never deletes them.
    packs: HashMap<ObjectId, u32>,
    /// Pack bytes reserved against each client's quota.
    reserved: HashMap<[u8; 32], u64>,
    /// Snapshot commits under way per client (counted in the burst limit).
    commits: HashMap<[u8; 32], usize>,
}

impl InFlight {
    /// True while a request in flight uploads this pack or commits a
    /// snapshot that lists it.
    pub fn holds(&self, id: &ObjectId) -> bool {
        self.packs.contains_key(id)
    }

    fn hold(&mut self, ids: &[ObjectId]) {
        for id in ids {
            *self.packs.entry(*id).or_default() += 1;
        }
    }

    fn release(&mut self, ids: &[ObjectId]) {
        for id in ids {
            if let Some(n) = self.packs.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    self.packs.remove(id);
                }
            }
        }
    }

    fn unreserve(&mut self, who: &[u8; 32], bytes: u64) {
        if let Some(n) = self.reserved.get_mut(who) {
            *n = n.saturating_sub(bytes);
            if *n == 0 {
                self.reserved.remove(who);
            }
        }
    }

    fn end_commit(&mut self, who: &[u8; 32]) {
        if let Some(n) = self.commits.get_mut(who) {
            *n -= 1;
            if *n == 0 {
                self.commits.remove(who);
            }
        }
    }
}

/// Releases a reservation however the request ends (error or panic).
struct Reservation {
    vault: Shared,
    who: [u8; 32],
    packs: Vec<ObjectId>,
    bytes: u64,
    commit: bool,
    released: bool,
}

impl Reservation {
    fn release_in(&mut self, v: &mut Vault) {
        if self.released {
            return;
        }
        self.released = true;
        v.flight.release(&self.packs);
        v.flight.unreserve(&self.who, self.bytes);
        if self.commit {
            v.flight.end_commit(&self.who);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.released {
            let vault = self.vault.clone();
            let mut v = write(&vault);
            self.release_in(&mut v);
        }
    }
}

/// The content id check, with the hash computed while the body arrived
/// when there is one.
fn check_id(
    id: &ObjectId,
    body: &[u8],
    hash: Option<[u8; 32]>,
    what: &str,
) -> Result<(), ApiError> {
    let h = hash.unwrap_or_else(|| ObjectId::of(body).0);
    if h != id.0 {
        return Err(ApiError::bad(format!(
            "{what} content does not match its id"
        )));
    }
    Ok(())
}

/// `PUT /v1/objects/packs/ID`: hashes to ID, parses as a pack, within the
/// client's quota; stored, then recorded in the client's namespace.
/// Idempotent. The whole body at once: [`begin_pack`] and [`finish_pack`]
/// with the body staged in memory (the server streams instead).
pub fn put_pack(
    vault: &Shared,
    store: &Arc<dyn ObjectStore>,
    who: &[u8; 32],
    id: &ObjectId,
    body: &[u8],
    hash: Option<[u8; 32]>,
) -> Result<(), ApiError> {
    check_id(id, body, hash, "pack")?;
    format::parse_pack(body).map_err(|e| ApiError::bad(format!("not a pack: {e}")))?;
    let PackStart::New(up) = begin_pack(vault, who, id, body.len() as u64)? else {
        return Ok(());
    };
    let mut staged = Staged::in_memory(Kind::Pack);
    staged.write(body).map_err(ApiError::store)?;
    finish_pack(up, store, staged)
}

/// What [`begin_pack`] decided.
pub enum PackStart {
    /// Stream the body into a staged object, then [`finish_pack`].
    New(PackUpload),
    /// `who` already has this pack: the answer is 201 once the body is
    /// checked against its id (nothing is stored).
    Owned,
}

/// A pack upload between its check and its commit: holds the quota bytes
/// (so staged bytes count against the client's quota while they arrive)
/// and keeps reclaim away from the id. Dropped unfinished, it releases both.
pub struct PackUpload {
    reservation: Reservation,
    id: ObjectId,
    len: u64,
    until: i64,
    owners_file: Arc<std::sync::Mutex<std::fs::File>>,
}

/// Before a byte of a pack's body is read: ownership (idempotence), the
/// quota for the `len` declared bytes, and the reservation.
pub fn begin_pack(
    vault: &Shared,
    who: &[u8; 32],
    id: &ObjectId,
    len: u64,
) -> Result<PackStart, ApiError> {
    let (until, owners_file) = {
        let mut v = write(vault);
        if v.owns(who, id) {
            return Ok(PackStart::Owned);
        }
        let used = v.usage_of(who);
        let reserved = v.flight.reserved.get(who).copied().unwrap_or(0);
        if used.saturating_add(reserved).saturating_add(len) > v.opts.quota_bytes {
            v.alert(&format!("client {} hit its storage quota", short(who)));
            return Err(ApiError::new(507, "storage quota exceeded for this client"));
        }
        *v.flight.reserved.entry(*who).or_default() += len;
        v.flight.hold(&[*id]);
        // Locked in storage (where it can) from the start, for as long as
        // the snapshot it is for will be at least.
        let until = v
            .clock
            .now()
            .saturating_add((v.st.retention.keep_within_secs as i64).saturating_mul(NS));
        (until, v.owners_file.clone())
    };
    Ok(PackStart::New(PackUpload {
        reservation: Reservation {
            vault: vault.clone(),
            who: *who,
            packs: vec![*id],
            bytes: len,
            commit: false,
            released: false,
        },
        id: *id,
        len,
        until,
        owners_file,
    }))
}

/// A staged pack's structure, as [`format::parse_pack`] checks it, from the
/// few bytes it needs (header, trailer, table) read back from the staging.
fn check_staged_pack(staged: &Staged) -> Result<(), ApiError> {
    use format::{PACK_HEADER_LEN, PACK_MAGIC, PACK_TRAILER_LEN};
    let bad = |e: String| ApiError::bad(format!("not a pack: {e}"));
    let len = staged.len();
    if len < (PACK_HEADER_LEN + 4 + PACK_TRAILER_LEN) as u64 {
        return Err(bad("too short".into()));
    }
    let read = |off: u64, n: usize| staged.read_at(off, n).map_err(ApiError::store);
    if read(0, 8)? != PACK_MAGIC {
        return Err(bad("bad magic".into()));
    }
    let table_end = len - PACK_TRAILER_LEN as u64;
    let tlen = format::pack_table_len(&read(table_end, PACK_TRAILER_LEN)?)
        .map_err(|e| bad(e.to_string()))? as u64;
    let Some(start) = table_end
        .checked_sub(tlen)
        .filter(|s| *s >= PACK_HEADER_LEN as u64)
    else {
        return Err(bad("invalid pack table length".into()));
    };
    format::decode_pack_table(&read(start, tlen as usize)?, start)
        .map_err(|e| bad(e.to_string()))?;
    Ok(())
}

/// After the whole body is staged (and matched its signed hash): its
/// length, its id, its structure; then the commit (the object made visible
/// in storage, durably), the owner record, and the pack enters the
/// namespace. On any failure `staged` is dropped (its bytes removed) and
/// nothing is visible: a pack whose id is visible is complete and checked.
pub fn finish_pack(
    up: PackUpload,
    store: &Arc<dyn ObjectStore>,
    staged: Staged,
) -> Result<(), ApiError> {
    let PackUpload {
        mut reservation,
        id,
        len,
        until,
        owners_file,
    } = up;
    if staged.len() != len {
        return Err(ApiError::bad("body shorter than its content-length"));
    }
    if staged.hash() != id.0 {
        return Err(ApiError::bad("pack content does not match its id"));
    }
    check_staged_pack(&staged)?;
    let who = reservation.who;
    // The object, then its owner record (durable before the pack is in the
    // namespace), both without the vault's lock; the reservation holds the
    // quota and keeps reclaim away until the pack is recorded.
    let stored = store
        .commit_staged(staged, &id.to_hex(), until)
        .map_err(ApiError::store)
        .and_then(|_| crate::state::append_owner(&owners_file, &id, &who, len));
    let vault = reservation.vault.clone();
    let mut v = write(&vault);
    reservation.release_in(&mut v);
    stored?;
    // (A concurrent PUT of the same pack may have recorded it too: a
    // second record of the same owner is harmless, counted once.)
    v.note_owner(&id, &who, len);
    Ok(())
}

/// `PUT /v1/objects/snapshots/ID`: commits a snapshot signed by the
/// requester, every pack it lists in the requester's namespace, its own
/// time near the vault's; stamped and locked on the vault's clock.
/// Idempotent. A snapshot the log deleted never comes back.
pub fn put_snapshot(
    vault: &Shared,
    store: &Arc<dyn ObjectStore>,
    who: &[u8; 32],
    id: &ObjectId,
    body: &[u8],
    hash: Option<[u8; 32]>,
) -> Result<SnapMeta, ApiError> {
    check_id(id, body, hash, "snapshot")?;
    // Decoded once, outside the lock: the signature check is the costly
    // part. (A body that hashes to a logged id is that snapshot, so
    // decoding first changes no answer.)
    let decoded = Snapshot::decode(body);
    let (now, lock, snap) = {
        let mut v = write(vault);
        if let Some(m) = v.already(who, id)? {
            return Ok(m);
        }
        let snap = decoded.map_err(|e| ApiError::bad(format!("not a valid snapshot: {e}")))?;
        v.check_snapshot(who, &snap)?;
        let now = v.stamp();
        let claimed = snap.header.time_ns;
        if claimed > now.saturating_add(CLIENT_AHEAD_NS) || claimed < now - CLIENT_BEHIND_NS {
            v.alert(&format!(
                "client {} sent a snapshot dated {} h from the vault's clock; refused",
                short(who),
                (claimed - now) / (3600 * NS)
            ));
            return Err(ApiError::bad(
                "the snapshot's time is too far from the vault's clock (check this host's clock)",
            ));
        }
        let in_flight = v.flight.commits.get(who).copied().unwrap_or(0);
        let max = v.opts.max_snapshots_per_hour;
        let client = v.st.client_of(who);
        let recent = v.recent.entry(client).or_default();
        while recent.front().is_some_and(|t| *t < now - 3600 * NS) {
            recent.pop_front();
        }
        if recent.len() + in_flight >= max {
            let n = recent.len();
            v.alert(&format!(
                "client {} is committing snapshots in a burst ({n} in the last hour); refused",
                short(who)
            ));
            return Err(ApiError::new(
                429,
                format!("too many snapshots from this client ({n} in the last hour)"),
            ));
        }
        *v.flight.commits.entry(*who).or_default() += 1;
        v.flight.hold(&snap.header.packs);
        (now, v.lock_for(now), snap)
    };
    let mut r = Reservation {
        vault: vault.clone(),
        who: *who,
        packs: snap.header.packs.clone(),
        bytes: 0,
        commit: true,
        released: false,
    };
    let stored = store
        .put_retained(Kind::Snapshot, &id.to_hex(), body, lock)
        .map_err(ApiError::store);
    let mut v = write(vault);
    r.release_in(&mut v);
    stored?;
    // What may have changed while the object was written.
    if let Some(m) = v.already(who, id)? {
        return Ok(m);
    }
    v.check_snapshot(who, &snap)?;
    // Stamped now: entries are appended in time order. The storage lock
    // set above is raised by the commit if the policy now asks for more.
    let now = v.stamp().max(now);
    let lock = v.lock_for(now);
    v.observe_storage_clock(id, now);
    let m = v.commit_snapshot(who, id, &snap.header.packs, now, lock)?;
    let client = v.st.client_of(who);
    v.recent.entry(client).or_default().push_back(now);
    v.judge(who, id, &snap);
    Ok(v.meta(id).unwrap_or(m))
}

impl Vault {
    /// True if `who` uploaded this pack (it is in `who`'s namespace).
    pub(crate) fn owns(&self, who: &[u8; 32], id: &ObjectId) -> bool {
        // A client's keys share its namespace (a successor key reads and
        // references what its predecessors uploaded).
        self.owners.get(id).is_some_and(|o| {
            o.contains(who) || {
                let first = self.st.client_of(who);
                o.iter().any(|k| self.st.client_of(k) == first)
            }
        })
    }

    /// A snapshot already committed (the same answer again, to its own
    /// client only), or one the log deleted (410).
    fn already(&self, who: &[u8; 32], id: &ObjectId) -> Result<Option<SnapMeta>, ApiError> {
        if let Some(m) = self.meta(id) {
            return if &m.client == who {
                Ok(Some(m))
            } else {
                Err(ApiError::forbidden("not your snapshot"))
            };
        }
        if self.st.gone.contains_key(id) {
            return Err(ApiError::new(
                410,
                "this snapshot was deleted by the log (erased or reclaimed) and never comes back",
            ));
        }
        Ok(None)
    }
}
