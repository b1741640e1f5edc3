//! Byte layouts of every repository record. `docs/format.md` is the binding
//! description; this module is its implementation, with the constants in one
//! place. Magic numbers are versioned and never change meaning. Decoders
//! refuse anything malformed with a [`DecodeError`]; none panics.

use crate::codec::{DecodeError, Reader, Writer};
use crate::crypto::{self, CryptoError, Identity, SessionKey};
use crate::id::{BlobId, ObjectId};

pub const CONFIG_MAGIC: &[u8; 8] = b"HFCONFIG";
pub const PACK_MAGIC: &[u8; 8] = b"HFPACK01";
pub const PACK_TABLE_MAGIC: &[u8; 8] = b"HFPACKT1";
pub const SNAPSHOT_MAGIC: &[u8; 8] = b"HFSNAP01";
pub const IDENTITY_MAGIC: &[u8; 8] = b"HFIDENT1";
pub const TREE_VERSION: u8 = 1;
pub const FORMAT_VERSION: u32 = 1;
/// Snapshot record version 2: version 1 plus the client's findings (§9).
pub const SNAPSHOT_VERSION_FINDINGS: u32 = 2;
/// Snapshot record version 3: version 2 plus how the client judged it
/// (§9.1: compared or not, baseline runs, thresholds).
pub const SNAPSHOT_VERSION_JUDGED: u32 = 3;
/// Snapshot record version 4: version 3 plus the restore key epoch (its
/// X25519 public key) the session was sealed to (§9, §11.2).
pub const SNAPSHOT_VERSION_EPOCH: u32 = 4;
/// Most thresholds one snapshot records.
pub const MAX_JUDGED_THRESHOLDS: usize = 16;
/// Most findings one snapshot may carry, and the longest detail text.
pub const MAX_FINDINGS: usize = 64;
pub const MAX_FINDING_DETAIL: usize = 1024;

pub const SIG_SNAPSHOT: &str = "holdfast snapshot v1";
pub const SIG_IDENTITY: &str = "holdfast identity v1";
const SNAPSHOT_BODY_AAD: &[u8] = b"holdfast snapshot body v1";

/// Largest blob (chunk or tree, plaintext or stored) any decoder accepts.
pub const MAX_BLOB: usize = 256 << 20;
/// Largest name, path or symlink target accepted.
pub const MAX_NAME: usize = 64 << 10;

/// Blob kinds.
pub const KIND_DATA: u8 = 0;
pub const KIND_TREE: u8 = 1;
/// Blob flags.
pub const FLAG_ZSTD: u8 = 1;

/// Roles of keys and identities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Client = 1,
    Restore = 2,
    Admin = 3,
    Replica = 4,
    Auditor = 5,
    Vault = 6,
}

impl Role {
    pub fn from_u8(v: u8) -> Result<Self, DecodeError> {
        Ok(match v {
            1 => Role::Client,
            2 => Role::Restore,
            3 => Role::Admin,
            4 => Role::Replica,
            5 => Role::Auditor,
            6 => Role::Vault,
            _ => return Err(DecodeError::Invalid("role")),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Role::Client => "client",
            Role::Restore => "restore",
            Role::Admin => "admin",
            Role::Replica => "replica",
            Role::Auditor => "auditor",
            Role::Vault => "vault",
        }
    }
}

fn utf8(b: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(b.to_vec()).map_err(|_| DecodeError::Invalid(what))
}

// ---------------------------------------------------------------- config

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Chunking {
    pub min: u32,
    pub avg: u32,
    pub max: u32,
}

impl Chunking {
    pub const DEFAULT: Chunking = Chunking {
        min: 16 << 10,
        avg: 64 << 10,
        max: 1 << 20,
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Every snapshot is kept at least this long after the vault received it.
    pub keep_within_secs: u64,
    /// How many of the newest days, weeks, months, years keep their first
    /// snapshot beyond `keep_within`.
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
    pub yearly: u32,
}

impl Retention {
    pub const DEFAULT: Retention = Retention {
        keep_within_secs: 14 * 86_400,
        daily: 14,
        weekly: 8,
        monthly: 12,
        yearly: 7,
    };
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub role: Role,
    pub name: String,
    pub public: [u8; 32],
}

/// The repository's root record, written once by `init` and pinned by id in
/// every key file: any change to it is detected by every key holder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub repo_id: [u8; 16],
    pub repo_public: [u8; 32],
    pub chunking: Chunking,
    pub pack_target: u32,
    pub zstd_level: u32,
    /// Admins, then other identities known at init.
    pub members: Vec<Member>,
    pub quorum: u32,
    pub retention: Retention,
    pub delay_secs: u64,
    pub grace_secs: u64,
}

impl Config {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.raw(CONFIG_MAGIC).u32(FORMAT_VERSION);
        w.raw(&self.repo_id).raw(&self.repo_public);
        w.u32(self.chunking.min)
            .u32(self.chunking.avg)
            .u32(self.chunking.max);
        w.u32(self.pack_target).u32(self.zstd_level);
        w.u32(self.members.len() as u32);
        for m in &self.members {
            w.u8(m.role as u8).bytes(m.name.as_bytes()).raw(&m.public);
        }
        w.u32(self.quorum);
        let r = &self.retention;
        w.u64(r.keep_within_secs)
            .u32(r.daily)
            .u32(r.weekly)
            .u32(r.monthly)
            .u32(r.yearly);
        w.u64(self.delay_secs).u64(self.grace_secs);
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(CONFIG_MAGIC, "config")?;
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version {
                what: "config",
                version,
            });
        }
        let repo_id = r.array()?;
        let repo_public = r.array()?;
        let chunking = Chunking {
            min: r.u32()?,
            avg: r.u32()?,
            max: r.u32()?,
        };
        if !(64 <= chunking.min && chunking.min <= chunking.avg && chunking.avg <= chunking.max)
            || chunking.max as usize > MAX_BLOB
        {
            return Err(DecodeError::Invalid("chunking parameters"));
        }
        let pack_target = r.u32()?;
        let zstd_level = r.u32()?;
        if !(1..=19).contains(&zstd_level) || pack_target == 0 || pack_target > 1 << 30 {
            return Err(DecodeError::Invalid("pack parameters"));
        }
        let n = r.count(37, "members")?;
        let mut members = Vec::with_capacity(n);
        for _ in 0..n {
            members.push(Member {
                role: Role::from_u8(r.u8()?)?,
                name: utf8(r.bytes(MAX_NAME, "name")?, "name")?,
                public: r.array()?,
            });
        }
        let quorum = r.u32()?;
        let admins = members.iter().filter(|m| m.role == Role::Admin).count();
        if quorum == 0 || quorum as usize > admins {
            return Err(DecodeError::Invalid("quorum"));
        }
        let retention = Retention {
            keep_within_secs: r.u64()?,
            daily: r.u32()?,
            weekly: r.u32()?,
            monthly: r.u32()?,
            yearly: r.u32()?,
        };
        let delay_secs = r.u64()?;
        let grace_secs = r.u64()?;
        r.finish()?;
        Ok(Config {
            repo_id,
            repo_public,
            chunking,
            pack_target,
            zstd_level,
            members,
            quorum,
            retention,
            delay_secs,
            grace_secs,
        })
    }

    pub fn admins(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(|m| m.role == Role::Admin)
    }

    /// The vault's public key, which signs the log's checkpoints.
    pub fn vault_key(&self) -> Option<[u8; 32]> {
        self.members
            .iter()
            .find(|m| m.role == Role::Vault)
            .map(|m| m.public)
    }
}

// ---------------------------------------------------------------- identity

/// Identity record version 2: a client key's successor (docs/format.md
/// §4.3), signed by its predecessor as well as by an admin.
pub const IDENTITY_VERSION_SUCCESSOR: u32 = 2;
/// The context of a predecessor's signature over its successor's record.
pub const SIG_SUCCESSION: &str = "holdfast succession v1";

/// The key a successor record replaces, and its signature over the record
/// (every byte before the signature, context [`SIG_SUCCESSION`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Predecessor {
    pub public: [u8; 32],
    pub signature: [u8; 64],
}

/// An identity added after init (`holdfast key new`), signed by an admin
/// listed in the config; or (version 2) a client key's successor, signed by
/// the key it replaces too (`holdfast key rotate client`). Stored as
/// `identities/<object id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityRecord {
    pub config_id: ObjectId,
    pub member: Member,
    pub admin: [u8; 32],
    pub time_ns: i64,
    /// Version 2 only: the client key this one succeeds.
    pub predecessor: Option<Predecessor>,
    pub signature: [u8; 64],
}

impl IdentityRecord {
    /// The bytes the predecessor signs: everything up to and including
    /// its key (version 2).
    fn head(
        config_id: &ObjectId,
        member: &Member,
        admin: &[u8; 32],
        time_ns: i64,
        predecessor: Option<&[u8; 32]>,
    ) -> Writer {
        let mut w = Writer::new();
        w.raw(IDENTITY_MAGIC)
            .u32(if predecessor.is_some() {
                IDENTITY_VERSION_SUCCESSOR
            } else {
                FORMAT_VERSION
            })
            .raw(&config_id.0);
        w.u8(member.role as u8)
            .bytes(member.name.as_bytes())
            .raw(&member.public);
        w.raw(admin).i64(time_ns);
        if let Some(p) = predecessor {
            w.raw(p);
        }
        w
    }

    /// The bytes the admin signs: all before the admin's signature.
    fn signed_part(&self) -> Vec<u8> {
        let mut w = Self::head(
            &self.config_id,
            &self.member,
            &self.admin,
            self.time_ns,
            self.predecessor.as_ref().map(|p| &p.public),
        );
        if let Some(p) = &self.predecessor {
            w.raw(&p.signature);
        }
        w.into_vec()
    }

    pub fn new(config_id: ObjectId, member: Member, admin: &Identity, time_ns: i64) -> Self {
        let mut rec = IdentityRecord {
            signature: [0; 64],
            config_id,
            member,
            admin: admin.public(),
            time_ns,
            predecessor: None,
        };
        rec.signature = admin.sign(SIG_IDENTITY, &rec.signed_part());
        rec
    }

    /// A successor record (version 2): `successor` becomes the client
    /// `predecessor` was, under the same name; signed first by the
    /// predecessor, then by the admin.
    pub fn successor(
        config_id: ObjectId,
        name: &str,
        successor: [u8; 32],
        predecessor: &Identity,
        admin: &Identity,
        time_ns: i64,
    ) -> Self {
        let member = Member {
            role: Role::Client,
            name: name.into(),
            public: successor,
        };
        let pred = predecessor.public();
        let head = Self::head(&config_id, &member, &admin.public(), time_ns, Some(&pred));
        let mut rec = IdentityRecord {
            config_id,
            member,
            admin: admin.public(),
            time_ns,
            predecessor: Some(Predecessor {
                public: pred,
                signature: predecessor.sign(SIG_SUCCESSION, &head.into_vec()),
            }),
            signature: [0; 64],
        };
        rec.signature = admin.sign(SIG_IDENTITY, &rec.signed_part());
        rec
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut v = self.signed_part();
        v.extend_from_slice(&self.signature);
        v
    }

    /// Decodes a record of version 1 or 2. A version 2 record must name a
    /// client, a predecessor other than itself, and carry the
    /// predecessor's valid signature: one that does not, does not decode.
    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        r.magic(IDENTITY_MAGIC, "identity record")?;
        let version = r.u32()?;
        if version != FORMAT_VERSION && version != IDENTITY_VERSION_SUCCESSOR {
            return Err(DecodeError::Version {
                what: "identity record",
                version,
            });
        }
        let config_id = ObjectId(r.array()?);
        let member = Member {
            role: Role::from_u8(r.u8()?)?,
            name: utf8(r.bytes(MAX_NAME, "name")?, "name")?,
            public: r.array()?,
        };
        let admin = r.array()?;
        let time_ns = r.i64()?;
        let predecessor = if version == IDENTITY_VERSION_SUCCESSOR {
            let public: [u8; 32] = r.array()?;
            let signature: [u8; 64] = r.array()?;
            if member.role != Role::Client {
                return Err(DecodeError::Invalid("a successor that is not a client"));
            }
            if public == member.public {
                return Err(DecodeError::Invalid("a key that succeeds itself"));
            }
            let head = Self::head(&config_id, &member, &admin, time_ns, Some(&public));
            crypto::verify(&public, SIG_SUCCESSION, &head.into_vec(), &signature)
                .map_err(|_| DecodeError::Invalid("predecessor's signature"))?;
            Some(Predecessor { public, signature })
        } else {
            None
        };
        let signature = r.array()?;
        r.finish()?;
        Ok(IdentityRecord {
            config_id,
            member,
            admin,
            time_ns,
            predecessor,
            signature,
        })
    }

    /// Checks the signature, that the signer is an admin of `config`, and
    /// that the new identity is a client, replica or auditor: one admin's
    /// signature can never create an admin (that would defeat the quorum),
    /// a restore key or a vault key. (A successor's predecessor signature
    /// was checked by [`IdentityRecord::decode`]; whether its predecessor
    /// is a live client is the log fold's question.)
    pub fn verify(&self, config: &Config, config_id: &ObjectId) -> Result<(), CryptoError> {
        if !matches!(
            self.member.role,
            Role::Client | Role::Replica | Role::Auditor
        ) {
            return Err(CryptoError::BadSignature);
        }
        if &self.config_id != config_id
            || !config
                .admins()
                .any(|a| a.public == self.admin && a.role == Role::Admin)
        {
            return Err(CryptoError::BadSignature);
        }
        if let Some(p) = &self.predecessor {
            let head = Self::head(
                &self.config_id,
                &self.member,
                &self.admin,
                self.time_ns,
                Some(&p.public),
            );
            crypto::verify(&p.public, SIG_SUCCESSION, &head.into_vec(), &p.signature)?;
        }
        crypto::verify(
            &self.admin,
            SIG_IDENTITY,
            &self.signed_part(),
            &self.signature,
        )
    }
}

// ---------------------------------------------------------------- packs

/// One row of a pack's plaintext table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackEntry {
    pub id: BlobId,
    pub kind: u8,
    pub flags: u8,
    /// Offset of the sealed blob (nonce first) from the start of the pack.
    pub offset: u32,
    /// Length of nonce + ciphertext + tag.
    pub stored_len: u32,
    /// Length of the plaintext after decompression.
    pub raw_len: u32,
}

impl PackEntry {
    /// Where the sealed blob lies in its pack, computed without overflow.
    /// Every entry [`decode_pack_table`] returns ends at or before
    /// `u32::MAX`, so this never fails for one of those.
    pub fn range(&self) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.offset).ok()?;
        Some(start..start.checked_add(usize::try_from(self.stored_len).ok()?)?)
    }

    /// The sealed blob's bytes in `pack`, or None if the pack is shorter.
    pub fn sealed<'a>(&self, pack: &'a [u8]) -> Option<&'a [u8]> {
        pack.get(self.range()?)
    }
}

pub const PACK_HEADER_LEN: usize = 8 + 32;
pub const PACK_ENTRY_LEN: usize = 32 + 1 + 1 + 4 + 4 + 4;
/// count u32 before the entries; table_len u32 + magic after.
pub const PACK_TRAILER_LEN: usize = 4 + 8;

/// Builds a pack in memory: header, sealed blobs, then the table.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
}

impl PackBuilder {
    pub fn new(epk: &[u8; 32], capacity: usize) -> Self {
        Self::with_buffer(epk, Vec::with_capacity(capacity))
    }
    /// Starts a pack in a recycled buffer (its contents are discarded).
    pub fn with_buffer(epk: &[u8; 32], mut buf: Vec<u8>) -> Self {
        buf.clear();
        buf.extend_from_slice(PACK_MAGIC);
        buf.extend_from_slice(epk);
        Self {
            buf,
            entries: Vec::new(),
        }
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    pub fn entries(&self) -> &[PackEntry] {
        &self.entries
    }
    /// Appends a sealed blob (from [`SessionKey::seal_blob`]).
    pub fn add(&mut self, id: BlobId, kind: u8, flags: u8, raw_len: u32, sealed: &[u8]) {
        self.entries.push(PackEntry {
            id,
            kind,
            flags,
            offset: self.buf.len() as u32,
            stored_len: sealed.len() as u32,
            raw_len,
        });
        self.buf.extend_from_slice(sealed);
    }
    /// Finishes the pack: returns its object id, bytes and table.
    pub fn finish(mut self) -> (ObjectId, Vec<u8>, Vec<PackEntry>) {
        let table = encode_pack_table(&self.entries);
        self.buf.extend_from_slice(&table);
        (ObjectId::of(&self.buf), self.buf, self.entries)
    }
}

pub fn encode_pack_table(entries: &[PackEntry]) -> Vec<u8> {
    let mut w = Writer::with_capacity(4 + entries.len() * PACK_ENTRY_LEN + PACK_TRAILER_LEN);
    w.u32(entries.len() as u32);
    for e in entries {
        w.raw(&e.id.0)
            .u8(e.kind)
            .u8(e.flags)
            .u32(e.offset)
            .u32(e.stored_len)
            .u32(e.raw_len);
    }
    let table_len = w.len() as u32;
    w.u32(table_len).raw(PACK_TABLE_MAGIC);
    w.into_vec()
}

/// From the last 12 bytes of a pack, the length of the table that precedes
/// them (so a reader can fetch only the tail).
pub fn pack_table_len(trailer: &[u8]) -> Result<usize, DecodeError> {
    if trailer.len() != PACK_TRAILER_LEN || &trailer[4..] != PACK_TABLE_MAGIC {
        return Err(DecodeError::BadMagic("pack table"));
    }
    Ok(u32::from_le_bytes(trailer[..4].try_into().unwrap()) as usize)
}

/// Decodes a pack table (count + entries) and checks every entry lies inside
/// the blob area `[PACK_HEADER_LEN, blob_end)` without overlap.
pub fn decode_pack_table(table: &[u8], blob_end: u64) -> Result<Vec<PackEntry>, DecodeError> {
    let mut r = Reader::new(table);
    let n = r.count(PACK_ENTRY_LEN, "pack table")?;
    let mut out = Vec::with_capacity(n);
    let mut next = PACK_HEADER_LEN as u64;
    for _ in 0..n {
        let e = PackEntry {
            id: BlobId(r.array()?),
            kind: r.u8()?,
            flags: r.u8()?,
            offset: r.u32()?,
            stored_len: r.u32()?,
            raw_len: r.u32()?,
        };
        if e.kind > KIND_TREE || e.flags & !FLAG_ZSTD != 0 {
            return Err(DecodeError::Invalid("pack entry kind or flags"));
        }
        // Offsets are u32: no blob may end past 4 GiB - 1, whatever the
        // size of the pack (a crafted one may be larger).
        let end = e.offset as u64 + e.stored_len as u64;
        if (e.offset as u64) < next
            || end > blob_end
            || end > u32::MAX as u64
            || (e.stored_len as usize) < crypto::NONCE_LEN + crypto::TAG_LEN
            || e.stored_len as usize > MAX_BLOB
            || e.raw_len as usize > MAX_BLOB
        {
            return Err(DecodeError::Invalid("pack entry bounds"));
        }
        next = end;
        out.push(e);
    }
    r.finish()?;
    Ok(out)
}

/// Parses a whole pack's header and table. Returns the ephemeral public key
/// and the entries. Does not decrypt.
pub fn parse_pack(bytes: &[u8]) -> Result<([u8; 32], Vec<PackEntry>), DecodeError> {
    if bytes.len() < PACK_HEADER_LEN + 4 + PACK_TRAILER_LEN || &bytes[..8] != PACK_MAGIC {
        return Err(DecodeError::BadMagic("pack"));
    }
    let epk: [u8; 32] = bytes[8..40].try_into().unwrap();
    let tlen = pack_table_len(&bytes[bytes.len() - PACK_TRAILER_LEN..])?;
    let table_end = bytes.len() - PACK_TRAILER_LEN;
    let Some(start) = table_end
        .checked_sub(tlen)
        .filter(|s| *s >= PACK_HEADER_LEN)
    else {
        return Err(DecodeError::Invalid("pack table length"));
    };
    let entries = decode_pack_table(&bytes[start..table_end], start as u64)?;
    Ok((epk, entries))
}

/// Compresses (if it helps) and seals one blob. Returns (flags, sealed).
pub fn seal_blob(
    key: &SessionKey,
    id: &BlobId,
    kind: u8,
    plaintext: &[u8],
    zstd_level: i32,
) -> Result<(u8, Vec<u8>), CryptoError> {
    // One compression context per thread and level: making a context per
    // chunk costs more than compressing a small chunk.
    thread_local! {
        static CCTX: std::cell::RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
            const { std::cell::RefCell::new(None) };
    }
    let compressed = CCTX.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().is_none_or(|(l, _)| *l != zstd_level) {
            *c = Some((zstd_level, zstd::bulk::Compressor::new(zstd_level).ok()?));
        }
        c.as_mut()?.1.compress(plaintext).ok()
    });
    let (flags, body) = match compressed {
        // Keep compression only when it saves at least 1/32 of the size.
        Some(c) if c.len() + plaintext.len() / 32 < plaintext.len() => (FLAG_ZSTD, c),
        _ => (0, plaintext.to_vec()),
    };
    Ok((flags, key.seal_blob(id, kind, flags, body)?))
}

/// Why a blob could not be opened.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum BlobError {
    #[error("blob {0:?} fails authentication (corrupt or tampered)")]
    Auth(BlobId),
    #[error("blob {0:?} does not decompress")]
    Decompress(BlobId),
    #[error("blob {0:?} content does not match its id")]
    IdMismatch(BlobId),
}

/// Opens, decompresses and checks a blob against its keyed id.
pub fn open_blob(
    key: &SessionKey,
    id_key: &crypto::IdKey,
    e: &PackEntry,
    sealed: &[u8],
) -> Result<Vec<u8>, BlobError> {
    let body = key
        .open_blob(&e.id, e.kind, e.flags, sealed)
        .map_err(|_| BlobError::Auth(e.id))?;
    let plain = if e.flags & FLAG_ZSTD != 0 {
        // One decompression context per thread, as for compression.
        thread_local! {
            static DCTX: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
                const { std::cell::RefCell::new(None) };
        }
        DCTX.with(|d| {
            let mut d = d.borrow_mut();
            if d.is_none() {
                *d = zstd::bulk::Decompressor::new().ok();
            }
            d.as_mut()?.decompress(&body, e.raw_len as usize).ok()
        })
        .ok_or(BlobError::Decompress(e.id))?
    } else {
        body
    };
    if plain.len() != e.raw_len as usize || id_key.blob_id(&plain) != e.id {
        return Err(BlobError::IdMismatch(e.id));
    }
    Ok(plain)
}

// ---------------------------------------------------------------- trees

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeKind {
    File { size: u64, chunks: Vec<BlobId> },
    Dir { subtree: BlobId },
    Symlink { target: Vec<u8> },
}

/// One directory entry. Names are raw bytes (Unix names need not be UTF-8).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime_s: i64,
    pub mtime_ns: u32,
    pub kind: NodeKind,
}

/// A directory: nodes sorted by name, names unique, no `.`/`..`/`/`/NUL.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Tree {
    pub nodes: Vec<Node>,
}

fn valid_name(n: &[u8]) -> bool {
    !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0)
}

impl Tree {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(64 + self.nodes.len() * 80);
        w.u8(TREE_VERSION).u32(self.nodes.len() as u32);
        for n in &self.nodes {
            w.bytes(&n.name)
                .u32(n.mode)
                .u32(n.uid)
                .u32(n.gid)
                .i64(n.mtime_s)
                .u32(n.mtime_ns);
            match &n.kind {
                NodeKind::File { size, chunks } => {
                    w.u8(1).u64(*size).u32(chunks.len() as u32);
                    for c in chunks {
                        w.raw(&c.0);
                    }
                }
                NodeKind::Dir { subtree } => {
                    w.u8(2).raw(&subtree.0);
                }
                NodeKind::Symlink { target } => {
                    w.u8(3).bytes(target);
                }
            }
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let v = r.u8()?;
        if v != TREE_VERSION {
            return Err(DecodeError::Version {
                what: "tree",
                version: v as u32,
            });
        }
        let n = r.count(30, "tree")?;
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for _ in 0..n {
            let name = r.bytes(MAX_NAME, "name")?.to_vec();
            if !valid_name(&name) {
                return Err(DecodeError::Invalid("file name"));
            }
            if let Some(prev) = nodes.last()
                && prev.name >= name
            {
                return Err(DecodeError::Invalid("tree order"));
            }
            let mode = r.u32()?;
            let uid = r.u32()?;
            let gid = r.u32()?;
            let mtime_s = r.i64()?;
            let mtime_ns = r.u32()?;
            if mtime_ns >= 1_000_000_000 || mode > 0o7777 {
                return Err(DecodeError::Invalid("mode or mtime"));
            }
            let kind = match r.u8()? {
                1 => {
                    let size = r.u64()?;
                    let c = r.count(32, "chunk list")?;
                    let mut chunks = Vec::with_capacity(c);
                    for _ in 0..c {
                        chunks.push(BlobId(r.array()?));
                    }
                    NodeKind::File { size, chunks }
                }
                2 => NodeKind::Dir {
                    subtree: BlobId(r.array()?),
                },
                3 => NodeKind::Symlink {
                    target: r.bytes(MAX_NAME, "symlink target")?.to_vec(),
                },
                _ => return Err(DecodeError::Invalid("node kind")),
            };
            nodes.push(Node {
                name,
                mode,
                uid,
                gid,
                mtime_s,
                mtime_ns,
                kind,
            });
        }
        r.finish()?;
        Ok(Tree { nodes })
    }
}

// ---------------------------------------------------------------- snapshots

/// What a snapshot says in the clear, for anyone (the vault included) to
/// check and use for retention and garbage collection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    pub config_id: ObjectId,
    pub client: [u8; 32],
    /// The client's claimed time; informative only. The vault stamps its own.
    pub time_ns: i64,
    pub parent: Option<ObjectId>,
    /// Every pack holding a blob this snapshot needs, sorted and unique.
    pub packs: Vec<ObjectId>,
    pub epk: [u8; 32],
}

/// The encrypted part: only restore.key reads it.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotBody {
    pub root: BlobId,
    pub hostname: String,
    pub paths: Vec<Vec<u8>>,
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub unreadable: Vec<Vec<u8>>,
    /// `backup --tag` (body field 1, docs/format.md §9.2); empty when none.
    pub tags: Vec<String>,
}

/// Body trailer field ids (docs/format.md §9.2), strictly ascending.
pub const BODY_FIELD_TAGS: u8 = 1;
/// At most this many tags, each at most [`MAX_TAG`] bytes.
pub const MAX_TAGS: usize = 64;
pub const MAX_TAG: usize = 128;
/// The largest body trailer field.
const MAX_BODY_FIELD: usize = 1 << 20;

/// Why `tag` cannot be a tag: empty, too long, a control character, a
/// comma (lists separate with it) or white space at either end.
pub fn tag_problem(tag: &str) -> Option<&'static str> {
    if tag.is_empty() {
        Some("a tag is empty")
    } else if tag.len() > MAX_TAG {
        Some("a tag is longer than 128 bytes")
    } else if tag.chars().any(char::is_control) {
        Some("a tag holds a control character")
    } else if tag.contains(',') {
        Some("a tag holds a comma")
    } else if tag.trim() != tag {
        Some("a tag starts or ends with white space")
    } else {
        None
    }
}

impl SnapshotBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(FORMAT_VERSION).raw(&self.root.0);
        w.bytes(self.hostname.as_bytes());
        w.u32(self.paths.len() as u32);
        for p in &self.paths {
            w.bytes(p);
        }
        w.u64(self.files)
            .u64(self.dirs)
            .u64(self.bytes)
            .u64(self.new_bytes);
        w.u32(self.unreadable.len() as u32);
        for p in &self.unreadable {
            w.bytes(p);
        }
        // The trailer: absent fields are not written, so a body without
        // tags is byte for byte what readers before §9.2 wrote and read.
        if !self.tags.is_empty() {
            let mut f = Writer::new();
            f.u32(self.tags.len() as u32);
            for t in &self.tags {
                f.bytes(t.as_bytes());
            }
            w.u8(BODY_FIELD_TAGS).bytes(&f.into_vec());
        }
        w.into_vec()
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(b);
        let version = r.u32()?;
        if version != FORMAT_VERSION {
            return Err(DecodeError::Version {
                what: "snapshot body",
                version,
            });
        }
        let root = BlobId(r.array()?);
        let hostname = utf8(r.bytes(MAX_NAME, "hostname")?, "hostname")?;
        let n = r.count(4, "paths")?;
        let mut paths = Vec::with_capacity(n);
        for _ in 0..n {
            paths.push(r.bytes(MAX_NAME, "path")?.to_vec());
        }
        let files = r.u64()?;
        let dirs = r.u64()?;
        let bytes = r.u64()?;
        let new_bytes = r.u64()?;
        let n = r.count(4, "unreadable")?;
        let mut unreadable = Vec::with_capacity(n);
        for _ in 0..n {
            unreadable.push(r.bytes(MAX_NAME, "path")?.to_vec());
        }
        let mut tags = Vec::new();
        let mut last_field = 0u8;
        while r.remaining() > 0 {
            let id = r.u8()?;
            if id <= last_field {
                return Err(DecodeError::Invalid("snapshot body field order"));
            }
            last_field = id;
            let value = r.bytes(MAX_BODY_FIELD, "snapshot body field")?;
            if id != BODY_FIELD_TAGS {
                // A field from a newer writer: informative by rule (§9.2).
                continue;
            }
            let mut f = Reader::new(value);
            let n = f.count(4, "tags")?;
            if n == 0 || n > MAX_TAGS {
                return Err(DecodeError::Invalid("tag count"));
            }
            for _ in 0..n {
                let t = utf8(f.bytes(MAX_TAG, "tag")?, "tag")?;
                if tag_problem(&t).is_some() {
                    return Err(DecodeError::Invalid("tag"));
                }
                tags.push(t);
            }
            f.finish()?;
        }
        Ok(SnapshotBody {
            root,
            hostname,
            paths,
            files,
            dirs,
            bytes,
            new_bytes,
            unreadable,
            tags,
        })
    }
}

/// What a detector found (docs/format.md §9.1). Findings travel in the clear
/// part of a snapshot, signed by the client, so the vault and every key
/// holder read them; `detail` never holds a path or a name from the data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub signal: Signal,
    /// How many items (files, messages, runs) the signal counted.
    pub count: u64,
    /// One line of UTF-8 for a human; no paths.
    pub detail: String,
}

/// Signal codes. Unknown codes decode (a newer client may know more) and
/// read as "unknown".
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Signal(pub u8);

impl Signal {
    pub const IN_PLACE: Signal = Signal(1);
    pub const ENTROPY: Signal = Signal(2);
    pub const NOT_MAIL: Signal = Signal(3);
    pub const RENAMES: Signal = Signal(4);
    pub const NEW_EXTENSION: Signal = Signal(5);
    pub const DELETIONS: Signal = Signal(6);
    pub const WIPE: Signal = Signal(7);
    pub const VOLUME: Signal = Signal(8);
    /// The vault's own signals (log entry kind 9; never in a snapshot).
    /// A snapshot that references far less stored data than the client's
    /// previous (or last healthy) one.
    pub const SHRINK: Signal = Signal(64);
    /// Many snapshots from one client in an hour.
    pub const BURST: Signal = Signal(65);
    /// The client's own signed findings were not empty.
    pub const CLIENT_REPORTED: Signal = Signal(66);

    pub fn name(self) -> &'static str {
        match self.0 {
            1 => "in_place",
            2 => "entropy",
            3 => "not_mail",
            4 => "renames",
            5 => "new_extension",
            6 => "deletions",
            7 => "wipe",
            8 => "volume",
            64 => "shrink",
            65 => "burst",
            66 => "client_reported",
            _ => "unknown",
        }
    }
}

impl Finding {
    /// A finding with its detail cut to the limit (on a char boundary).
    pub fn new(signal: Signal, count: u64, detail: impl Into<String>) -> Finding {
        let mut detail = detail.into();
        if detail.len() > MAX_FINDING_DETAIL {
            let mut end = MAX_FINDING_DETAIL;
            while !detail.is_char_boundary(end) {
                end -= 1;
            }
            detail.truncate(end);
        }
        Finding {
            signal,
            count,
            detail,
        }
    }

    fn encode_list(w: &mut Writer, list: &[Finding]) {
        w.u32(list.len() as u32);
        for f in list {
            w.u8(f.signal.0).u64(f.count).bytes(f.detail.as_bytes());
        }
    }

    /// Decodes `count u32 | (signal u8, count u64, detail bytes) × count`,
    /// refusing more than [`MAX_FINDINGS`], details over
    /// [`MAX_FINDING_DETAIL`] or not UTF-8.
    pub fn decode_list(r: &mut Reader) -> Result<Vec<Finding>, DecodeError> {
        let n = r.count(13, "findings")?;
        if n > MAX_FINDINGS {
            return Err(DecodeError::Invalid("too many findings"));
        }
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            let signal = Signal(r.u8()?);
            let count = r.u64()?;
            let detail = utf8(
                r.bytes(MAX_FINDING_DETAIL, "finding detail")?,
                "finding detail",
            )?;
            out.push(Finding {
                signal,
                count,
                detail,
            });
        }
        Ok(out)
    }

    /// [`Finding::decode_list`] over a whole buffer (fuzzing).
    pub fn decode_all(b: &[u8]) -> Result<Vec<Finding>, DecodeError> {
        let mut r = Reader::new(b);
        let v = Self::decode_list(&mut r)?;
        r.finish()?;
        Ok(v)
    }
}

/// Whether the client compared this run with a previous snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// No previous snapshot in its cache (first backup, lost cache): no
    /// baseline, nothing compared.
    NoBaseline = 0,
    /// Compared with its previous snapshot.
    Compared = 1,
    /// Detection turned off (`backup --no-detect`).
    Off = 2,
}

/// How the client judged a snapshot (record version 3, §9.1), signed with
/// it: whether it compared, with how many earlier runs of volume baseline,
/// and the thresholds (signal code, value) it applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Judgement {
    pub checked: Checked,
    pub runs: u32,
    /// Ascending by signal code, at most [`MAX_JUDGED_THRESHOLDS`].
    pub thresholds: Vec<(u8, u32)>,
}

impl Judgement {
    fn encode(&self, w: &mut Writer) {
        let t = &self.thresholds[..self.thresholds.len().min(MAX_JUDGED_THRESHOLDS)];
        w.u8(self.checked as u8).u32(self.runs).u8(t.len() as u8);
        for (c, v) in t {
            w.u8(*c).u32(*v);
        }
    }

    /// Decodes `checked u8 | runs u32 | count u8 | (signal u8, value u32) ×
    /// count`: checked 0–2, count ≤ [`MAX_JUDGED_THRESHOLDS`], codes
    /// strictly ascending.
    pub fn decode(r: &mut Reader) -> Result<Judgement, DecodeError> {
        let checked = match r.u8()? {
            0 => Checked::NoBaseline,
            1 => Checked::Compared,
            2 => Checked::Off,
            _ => return Err(DecodeError::Invalid("judgement")),
        };
        let runs = r.u32()?;
        let n = r.u8()? as usize;
        if n > MAX_JUDGED_THRESHOLDS {
            return Err(DecodeError::Invalid("too many thresholds"));
        }
        let mut thresholds: Vec<(u8, u32)> = Vec::with_capacity(n);
        for _ in 0..n {
            let c = r.u8()?;
            if thresholds.last().is_some_and(|l| l.0 >= c) {
                return Err(DecodeError::Invalid("threshold order"));
            }
            thresholds.push((c, r.u32()?));
        }
        Ok(Judgement {
            checked,
            runs,
            thresholds,
        })
    }
}

/// A decoded snapshot file whose signature has been checked against the
/// `client` key it names (whether that client belongs to the repository is
/// the caller's question).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub header: SnapshotHeader,
    /// The client's findings (record version 2); `None` for a version 1
    /// record, written before clients looked for anomalies.
    pub findings: Option<Vec<Finding>>,
    /// How the client judged it (record version 3); `None` before.
    pub judgement: Option<Judgement>,
    /// The restore key epoch's public key its session was sealed to
    /// (record version 4); `None` before. The client's signed claim: the
    /// vault checks it is the log's current epoch, a restore key holder
    /// that the body opens with that epoch's secret.
    pub restore_epoch: Option<[u8; 32]>,
    /// nonce || ciphertext || tag of the [`SnapshotBody`].
    pub sealed_body: Vec<u8>,
    pub signature: [u8; 64],
}

impl Snapshot {
    fn signed_part(
        h: &SnapshotHeader,
        findings: Option<&[Finding]>,
        judgement: Option<&Judgement>,
        epoch: Option<&[u8; 32]>,
        sealed_body: &[u8],
    ) -> Vec<u8> {
        let mut w = Writer::with_capacity(240 + h.packs.len() * 32 + sealed_body.len());
        // Version 4 always carries a judgement (one that says nothing was
        // compared when the caller gave none).
        let none = Judgement {
            checked: Checked::NoBaseline,
            runs: 0,
            thresholds: Vec::new(),
        };
        let judgement = judgement.or(epoch.map(|_| &none));
        w.raw(SNAPSHOT_MAGIC)
            .u32(match (findings, judgement, epoch) {
                (_, _, Some(_)) => SNAPSHOT_VERSION_EPOCH,
                (_, Some(_), None) => SNAPSHOT_VERSION_JUDGED,
                (Some(_), None, None) => SNAPSHOT_VERSION_FINDINGS,
                (None, None, None) => FORMAT_VERSION,
            });
        w.raw(&h.config_id.0).raw(&h.client).i64(h.time_ns);
        match &h.parent {
            Some(p) => w.u8(1).raw(&p.0),
            None => w.u8(0),
        };
        w.u32(h.packs.len() as u32);
        for p in &h.packs {
            w.raw(&p.0);
        }
        w.raw(&h.epk);
        if let Some(f) = findings.or(judgement.map(|_| &[][..])) {
            Finding::encode_list(&mut w, f);
        }
        if let Some(j) = judgement {
            j.encode(&mut w);
        }
        if let Some(e) = epoch {
            w.raw(e);
        }
        w.bytes(sealed_body);
        w.into_vec()
    }

    fn body_aad(h: &SnapshotHeader) -> Vec<u8> {
        let mut aad = SNAPSHOT_BODY_AAD.to_vec();
        aad.extend_from_slice(&h.config_id.0);
        aad.extend_from_slice(&h.client);
        aad
    }

    /// Seals `body` with the session key and signs the whole record (a
    /// version 2 record with no findings).
    pub fn create(
        header: SnapshotHeader,
        body: &SnapshotBody,
        key: &SessionKey,
        client: &Identity,
    ) -> Result<(ObjectId, Vec<u8>), CryptoError> {
        Self::create_with_findings(header, &[], body, key, client)
    }

    /// As [`Snapshot::create`], carrying the client's findings in the
    /// signed clear part (at most [`MAX_FINDINGS`]; more are cut).
    pub fn create_with_findings(
        header: SnapshotHeader,
        findings: &[Finding],
        body: &SnapshotBody,
        key: &SessionKey,
        client: &Identity,
    ) -> Result<(ObjectId, Vec<u8>), CryptoError> {
        Self::create_signed(header, findings, None, None, body, key, client)
    }

    /// As [`Snapshot::create_with_findings`], also recording how the client
    /// judged the run (a version 3 record).
    pub fn create_judged(
        header: SnapshotHeader,
        findings: &[Finding],
        judgement: &Judgement,
        body: &SnapshotBody,
        key: &SessionKey,
        client: &Identity,
    ) -> Result<(ObjectId, Vec<u8>), CryptoError> {
        Self::create_signed(header, findings, Some(judgement), None, body, key, client)
    }

    /// As [`Snapshot::create_judged`], also naming the restore key epoch
    /// (its public key) the session was sealed to (a version 4 record).
    pub fn create_sealed_to(
        header: SnapshotHeader,
        findings: &[Finding],
        judgement: &Judgement,
        epoch: &[u8; 32],
        body: &SnapshotBody,
        key: &SessionKey,
        client: &Identity,
    ) -> Result<(ObjectId, Vec<u8>), CryptoError> {
        Self::create_signed(
            header,
            findings,
            Some(judgement),
            Some(epoch),
            body,
            key,
            client,
        )
    }

    fn create_signed(
        header: SnapshotHeader,
        findings: &[Finding],
        judgement: Option<&Judgement>,
        epoch: Option<&[u8; 32]>,
        body: &SnapshotBody,
        key: &SessionKey,
        client: &Identity,
    ) -> Result<(ObjectId, Vec<u8>), CryptoError> {
        let findings = &findings[..findings.len().min(MAX_FINDINGS)];
        let sealed = key.seal(&Self::body_aad(&header), body.encode())?;
        let mut bytes = Self::signed_part(&header, Some(findings), judgement, epoch, &sealed);
        let sig = client.sign(SIG_SNAPSHOT, &bytes);
        bytes.extend_from_slice(&sig);
        Ok((ObjectId::of(&bytes), bytes))
    }

    /// The record with its header (as changed by the caller) signed again
    /// by `client`, keeping the sealed body. What a stolen client key can
    /// make; tests use it to play that attacker.
    pub fn resign(&self, client: &Identity) -> Vec<u8> {
        let mut bytes = Self::signed_part(
            &self.header,
            self.findings.as_deref(),
            self.judgement.as_ref(),
            self.restore_epoch.as_ref(),
            &self.sealed_body,
        );
        let sig = client.sign(SIG_SNAPSHOT, &bytes);
        bytes.extend_from_slice(&sig);
        bytes
    }

    /// Decodes and checks the signature. Errors name what is wrong.
    pub fn decode(b: &[u8]) -> Result<Self, SnapshotError> {
        if b.len() < 64 {
            return Err(SnapshotError::Decode(DecodeError::BadMagic("snapshot")));
        }
        let (signed, sig) = b.split_at(b.len() - 64);
        let mut r = Reader::new(signed);
        r.magic(SNAPSHOT_MAGIC, "snapshot")?;
        let version = r.u32()?;
        if !(FORMAT_VERSION..=SNAPSHOT_VERSION_EPOCH).contains(&version) {
            return Err(DecodeError::Version {
                what: "snapshot",
                version,
            }
            .into());
        }
        let config_id = ObjectId(r.array()?);
        let client = r.array()?;
        let time_ns = r.i64()?;
        let parent = match r.u8()? {
            0 => None,
            1 => Some(ObjectId(r.array()?)),
            _ => return Err(DecodeError::Invalid("parent flag").into()),
        };
        let n = r.count(32, "pack list")?;
        let mut packs: Vec<ObjectId> = Vec::with_capacity(n);
        for _ in 0..n {
            let p = ObjectId(r.array()?);
            if packs.last().is_some_and(|l| *l >= p) {
                return Err(DecodeError::Invalid("pack list order").into());
            }
            packs.push(p);
        }
        let epk = r.array()?;
        let findings = if version >= SNAPSHOT_VERSION_FINDINGS {
            Some(Finding::decode_list(&mut r)?)
        } else {
            None
        };
        let judgement = if version >= SNAPSHOT_VERSION_JUDGED {
            Some(Judgement::decode(&mut r)?)
        } else {
            None
        };
        let restore_epoch = if version >= SNAPSHOT_VERSION_EPOCH {
            Some(r.array()?)
        } else {
            None
        };
        let sealed_body = r.bytes(MAX_BLOB, "snapshot body")?.to_vec();
        r.finish()?;
        let signature: [u8; 64] = sig.try_into().unwrap();
        crypto::verify(&client, SIG_SNAPSHOT, signed, &signature)
            .map_err(|_| SnapshotError::Signature)?;
        Ok(Snapshot {
            header: SnapshotHeader {
                config_id,
                client,
                time_ns,
                parent,
                packs,
                epk,
            },
            findings,
            judgement,
            restore_epoch,
            sealed_body,
            signature,
        })
    }

    /// Decrypts the body with the repository secret.
    pub fn open_body(&self, secret: &crypto::RepoSecret) -> Result<SnapshotBody, SnapshotError> {
        // A record that names its epoch (version 4) must open with that
        // epoch's secret alone; one that opens only with another is
        // mislabelled (a client key sealing to an older, maybe leaked, key
        // while claiming the current one).
        if let Some(e) = &self.restore_epoch {
            let named = secret.only(e).map(|one| self.open_with(&one));
            return match named {
                Some(Ok(b)) => Ok(b),
                _ if self.open_with(secret).is_ok() => Err(SnapshotError::Epoch),
                Some(Err(x)) => Err(x),
                None => Err(SnapshotError::Body),
            };
        }
        self.open_with(secret)
    }

    fn open_with(&self, secret: &crypto::RepoSecret) -> Result<SnapshotBody, SnapshotError> {
        let key = secret
            .open_session(&self.header.epk)
            .map_err(|_| SnapshotError::Body)?;
        let plain = key
            .open(&Self::body_aad(&self.header), &self.sealed_body)
            .map_err(|_| SnapshotError::Body)?;
        Ok(SnapshotBody::decode(&plain)?)
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    #[error("malformed snapshot: {0}")]
    Decode(#[from] DecodeError),
    #[error("snapshot signature does not verify (tampered)")]
    Signature,
    #[error("snapshot body fails authentication (tampered, or wrong restore key)")]
    Body,
    #[error(
        "snapshot body is sealed to another restore key epoch than the one it names \
         (a client key sealing to an older key: tampered)"
    )]
    Epoch,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::{IdKey, RepoSecret, seal_session};

    pub(crate) fn sample_config() -> Config {
        Config {
            repo_id: [1; 16],
            repo_public: RepoSecret::from_bytes([5; 32]).public(),
            chunking: Chunking::DEFAULT,
            pack_target: 16 << 20,
            zstd_level: 3,
            members: vec![
                Member {
                    role: Role::Admin,
                    name: "admin-1".into(),
                    public: [2; 32],
                },
                Member {
                    role: Role::Client,
                    name: "mx1".into(),
                    public: [3; 32],
                },
            ],
            quorum: 1,
            retention: Retention::DEFAULT,
            delay_secs: 72 * 3600,
            grace_secs: 86_400,
        }
    }

    #[test]
    fn config_round_trip() {
        let c = sample_config();
        assert_eq!(Config::decode(&c.encode()).unwrap(), c);
        let mut bad = c.clone();
        bad.quorum = 2;
        assert!(Config::decode(&bad.encode()).is_err());
    }

    #[test]
    fn pack_round_trip_and_blob_checks() {
        let secret = RepoSecret::generate().unwrap();
        let idk = IdKey::generate().unwrap();
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let mut pb = PackBuilder::new(&epk, 1024);
        let data = vec![b'a'; 5000];
        let id = idk.blob_id(&data);
        let (flags, sealed) = seal_blob(&key, &id, KIND_DATA, &data, 3).unwrap();
        assert_eq!(flags, FLAG_ZSTD);
        pb.add(id, KIND_DATA, flags, data.len() as u32, &sealed);
        let (oid, bytes, entries) = pb.finish();
        assert_eq!(oid, ObjectId::of(&bytes));
        let (epk2, parsed) = parse_pack(&bytes).unwrap();
        assert_eq!(epk2, epk);
        assert_eq!(parsed, entries);
        let e = parsed[0];
        let opened = secret.open_session(&epk2).unwrap();
        let blob = &bytes[e.offset as usize..(e.offset + e.stored_len) as usize];
        assert_eq!(open_blob(&opened, &idk, &e, blob).unwrap(), data);
        // A different id key (another repository) fails the id check.
        let other = IdKey::generate().unwrap();
        assert_eq!(
            open_blob(&opened, &other, &e, blob),
            Err(BlobError::IdMismatch(e.id))
        );
    }

    #[test]
    fn crafted_pack_tables_are_errors_never_panics() {
        let entry = |offset: u32, stored_len: u32| PackEntry {
            id: BlobId([1; 32]),
            kind: KIND_DATA,
            flags: 0,
            offset,
            stored_len,
            raw_len: 1,
        };
        let table = |es: &[PackEntry]| {
            let t = encode_pack_table(es);
            t[..t.len() - PACK_TRAILER_LEN].to_vec()
        };
        // A pack of 5 GiB (never built: only its size is claimed): a blob
        // that ends past 4 GiB cannot be addressed with u32 offsets.
        let huge = 5u64 << 30;
        let past = [entry(u32::MAX - 100, 1000)];
        assert_eq!(
            decode_pack_table(&table(&past), huge),
            Err(DecodeError::Invalid("pack entry bounds"))
        );
        // Ending exactly at 4 GiB - 1 is the largest accepted, and its
        // range is computed without overflow.
        let last = [entry(u32::MAX - 1000, 1000)];
        let got = decode_pack_table(&table(&last), huge).unwrap();
        assert_eq!(
            got[0].range(),
            Some((u32::MAX - 1000) as usize..u32::MAX as usize)
        );
        assert_eq!(got[0].sealed(&[0u8; 64]), None);
        // Overlapping, out of the blob area, before the header, too short.
        for es in [
            vec![entry(40, 100), entry(100, 100)],
            vec![entry(40, 100)],
            vec![entry(0, 100)],
            vec![entry(40, 10)],
        ] {
            assert!(decode_pack_table(&table(&es), 120).is_err(), "{es:?}");
        }
        // Whole packs: a table length larger than the pack, a trailer
        // alone, a table starting inside the header.
        let mut p = PACK_MAGIC.to_vec();
        p.extend([0u8; 32]);
        p.extend(encode_pack_table(&[]));
        assert!(parse_pack(&p).is_ok());
        for tlen in [u32::MAX, 5, 1 << 20] {
            let mut bad = p.clone();
            let at = bad.len() - PACK_TRAILER_LEN;
            bad[at..at + 4].copy_from_slice(&tlen.to_le_bytes());
            assert!(parse_pack(&bad).is_err());
        }
        assert!(parse_pack(&p[..p.len() - 1]).is_err());
        assert!(parse_pack(&[]).is_err());
    }

    #[test]
    fn snapshot_sign_and_tamper() {
        let secret = RepoSecret::generate().unwrap();
        let client = Identity::generate().unwrap();
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let header = SnapshotHeader {
            config_id: ObjectId([9; 32]),
            client: client.public(),
            time_ns: 1,
            parent: None,
            packs: vec![ObjectId([1; 32]), ObjectId([2; 32])],
            epk,
        };
        let body = SnapshotBody {
            hostname: "mx1".into(),
            paths: vec![b"/srv/mail".to_vec()],
            ..Default::default()
        };
        let (_, bytes) = Snapshot::create(header.clone(), &body, &key, &client).unwrap();
        let s = Snapshot::decode(&bytes).unwrap();
        assert_eq!(s.header, header);
        assert_eq!(s.open_body(&secret).unwrap(), body);
        for i in [0, 20, 50, bytes.len() - 70, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Snapshot::decode(&bad).is_err(), "flip at {i} accepted");
        }
    }

    #[test]
    fn snapshot_body_tags_trailer() {
        let old = SnapshotBody {
            hostname: "mx1".into(),
            paths: vec![b"/srv/mail".to_vec()],
            files: 3,
            unreadable: vec![b"/srv/mail/x".to_vec()],
            ..Default::default()
        };
        // Without tags: the body as written before the trailer existed.
        let bytes = old.encode();
        let mut w = Writer::new();
        w.u32(FORMAT_VERSION).raw(&[0; 32]).bytes(b"mx1").u32(1);
        w.bytes(b"/srv/mail").u64(3).u64(0).u64(0).u64(0).u32(1);
        w.bytes(b"/srv/mail/x");
        assert_eq!(bytes, w.into_vec());
        assert_eq!(SnapshotBody::decode(&bytes).unwrap(), old);
        let tagged = SnapshotBody {
            tags: vec!["nightly".into(), "pg-dump".into()],
            ..old.clone()
        };
        let tb = tagged.encode();
        assert_eq!(SnapshotBody::decode(&tb).unwrap(), tagged);
        // A field from a newer writer after the tags is skipped.
        let mut newer = tb.clone();
        newer.push(9);
        newer.extend_from_slice(&3u32.to_le_bytes());
        newer.extend_from_slice(b"abc");
        assert_eq!(SnapshotBody::decode(&newer).unwrap(), tagged);
        // Out of order, repeated, truncated, hostile: refused, never a panic.
        let mut twice = tb.clone();
        twice.extend_from_slice(&tb[bytes.len()..]);
        assert!(SnapshotBody::decode(&twice).is_err());
        for cut in bytes.len() + 1..tb.len() {
            assert!(SnapshotBody::decode(&tb[..cut]).is_err(), "cut at {cut}");
        }
        for bad in ["", "a,b", "x\u{1b}[2J", " pad", &"t".repeat(MAX_TAG + 1)] {
            assert!(tag_problem(bad).is_some(), "{bad:?}");
            let b = SnapshotBody {
                tags: vec![bad.to_string()],
                ..old.clone()
            };
            assert!(SnapshotBody::decode(&b.encode()).is_err(), "{bad:?}");
        }
        let many = SnapshotBody {
            tags: (0..=MAX_TAGS).map(|i| format!("t{i}")).collect(),
            ..old.clone()
        };
        assert!(SnapshotBody::decode(&many.encode()).is_err());
    }

    #[test]
    fn snapshot_findings_v2_and_v1_compat() {
        let secret = RepoSecret::generate().unwrap();
        let client = Identity::generate().unwrap();
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let header = SnapshotHeader {
            config_id: ObjectId([9; 32]),
            client: client.public(),
            time_ns: 1,
            parent: None,
            packs: vec![ObjectId([1; 32])],
            epk,
        };
        let body = SnapshotBody::default();
        let findings = vec![
            Finding::new(Signal::IN_PLACE, 12, "12 of 40 messages rewritten in place"),
            Finding::new(Signal(200), 1, "from a newer client"),
        ];
        let (_, bytes) =
            Snapshot::create_with_findings(header.clone(), &findings, &body, &key, &client)
                .unwrap();
        assert_eq!(&bytes[8..12], &SNAPSHOT_VERSION_FINDINGS.to_le_bytes());
        let s = Snapshot::decode(&bytes).unwrap();
        assert_eq!(s.findings.as_deref(), Some(&findings[..]));
        assert_eq!(s.findings.as_ref().unwrap()[1].signal.name(), "unknown");
        assert_eq!(s.open_body(&secret).unwrap(), body);
        // The findings are signed: changing a count breaks the signature.
        let at = bytes
            .windows(8)
            .position(|w| w == 12u64.to_le_bytes())
            .unwrap();
        let mut bad = bytes.clone();
        bad[at] = 0;
        assert_eq!(Snapshot::decode(&bad), Err(SnapshotError::Signature));
        // No findings: still version 2, an empty list.
        let (_, b) = Snapshot::create(header.clone(), &body, &key, &client).unwrap();
        assert_eq!(Snapshot::decode(&b).unwrap().findings, Some(vec![]));
        // A version 1 record (written before findings existed) still reads,
        // and re-signs to the same layout.
        let mut v1 = s.clone();
        v1.findings = None;
        let old = v1.resign(&client);
        assert_eq!(&old[8..12], &FORMAT_VERSION.to_le_bytes());
        let back = Snapshot::decode(&old).unwrap();
        assert_eq!(back.findings, None);
        assert_eq!(back.header, header);
        assert_eq!(back.resign(&client), old);
        // Version 5 is refused.
        let mut v4 = bytes.clone();
        v4[8] = 5;
        assert!(matches!(
            Snapshot::decode(&v4),
            Err(SnapshotError::Decode(DecodeError::Version { .. }))
        ));
    }

    #[test]
    fn snapshot_judgement_v3() {
        let secret = RepoSecret::generate().unwrap();
        let client = Identity::generate().unwrap();
        let (epk, key) = seal_session(&secret.public()).unwrap();
        let header = SnapshotHeader {
            config_id: ObjectId([9; 32]),
            client: client.public(),
            time_ns: 1,
            parent: None,
            packs: vec![],
            epk,
        };
        let body = SnapshotBody::default();
        let j = Judgement {
            checked: Checked::Compared,
            runs: 7,
            thresholds: vec![(1, 1), (5, 25), (8, 30)],
        };
        let f = vec![Finding::new(Signal::VOLUME, 3, "x")];
        let (_, bytes) =
            Snapshot::create_judged(header.clone(), &f, &j, &body, &key, &client).unwrap();
        assert_eq!(&bytes[8..12], &SNAPSHOT_VERSION_JUDGED.to_le_bytes());
        let s = Snapshot::decode(&bytes).unwrap();
        assert_eq!(s.judgement.as_ref(), Some(&j));
        assert_eq!(s.findings.as_deref(), Some(&f[..]));
        assert_eq!(s.resign(&client), bytes);
        // The thresholds are signed: a raised value breaks the signature.
        let at = bytes
            .windows(5)
            .position(|w| w == [5, 25, 0, 0, 0])
            .unwrap();
        let mut bad = bytes.clone();
        bad[at + 1] = 99;
        assert_eq!(Snapshot::decode(&bad), Err(SnapshotError::Signature));
        // Malformed judgements are refused, never a panic.
        for (checked, codes) in [(3u8, vec![1u8]), (1, vec![5, 5]), (1, vec![8, 1])] {
            let mut w = Writer::new();
            w.u8(checked).u32(0).u8(codes.len() as u8);
            for c in codes {
                w.u8(c).u32(1);
            }
            let v = w.into_vec();
            assert!(Judgement::decode(&mut Reader::new(&v)).is_err());
        }
        let mut w = Writer::new();
        w.u8(1).u32(0).u8(17);
        let v = w.into_vec();
        assert!(Judgement::decode(&mut Reader::new(&v)).is_err());
        for cut in 0..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn finding_lists_refuse_bad_input() {
        let enc = |fs: &[Finding]| {
            let mut w = Writer::new();
            Finding::encode_list(&mut w, fs);
            w.into_vec()
        };
        let one = Finding::new(Signal::WIPE, 36, "36 files, now 0");
        assert_eq!(
            Finding::decode_all(&enc(std::slice::from_ref(&one))).unwrap(),
            vec![one.clone()]
        );
        let many = vec![one.clone(); MAX_FINDINGS + 1];
        assert!(Finding::decode_all(&enc(&many)).is_err());
        // Details are cut at the limit on a character boundary.
        let long = Finding::new(Signal::WIPE, 1, "é".repeat(MAX_FINDING_DETAIL));
        assert!(long.detail.len() <= MAX_FINDING_DETAIL);
        assert!(Finding::decode_all(&enc(&[long])).is_ok());
        let mut raw = enc(&[one]);
        let n = raw.len();
        raw[n - 1] = 0xff; // not UTF-8
        assert!(Finding::decode_all(&raw).is_err());
        assert!(Finding::decode_all(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(Finding::decode_all(&[]).is_err());
    }

    #[test]
    fn tree_rejects_bad_names_and_order() {
        let node = |name: &[u8]| Node {
            name: name.to_vec(),
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime_s: 0,
            mtime_ns: 0,
            kind: NodeKind::Symlink {
                target: b"x".to_vec(),
            },
        };
        let ok = Tree {
            nodes: vec![node(b"a"), node(b"b\n\xff")],
        };
        assert_eq!(Tree::decode(&ok.encode()).unwrap(), ok);
        for bad in [
            vec![node(b"b"), node(b"a")],
            vec![node(b"..")],
            vec![node(b"a/b")],
            vec![node(b"")],
        ] {
            assert!(Tree::decode(&Tree { nodes: bad }.encode()).is_err());
        }
    }

    #[test]
    fn successor_record_round_trip_and_refusals() {
        // sample_config's keys are constants: give it real ones.
        let admin = Identity::generate().unwrap();
        let old = Identity::generate().unwrap();
        let new = Identity::generate().unwrap();
        let mut config = sample_config();
        config.members[0].public = admin.public();
        config.members[1].public = old.public();
        let cid2 = ObjectId::of(&config.encode());
        let rec = IdentityRecord::successor(cid2, "mx1", new.public(), &old, &admin, 7);
        let bytes = rec.encode();
        assert_eq!(&bytes[8..12], &IDENTITY_VERSION_SUCCESSOR.to_le_bytes());
        let back = IdentityRecord::decode(&bytes).unwrap();
        assert_eq!(back, rec);
        assert_eq!(back.predecessor.as_ref().unwrap().public, old.public());
        back.verify(&config, &cid2).unwrap();
        // Every truncation, and a byte more, is refused.
        for cut in 0..bytes.len() {
            assert!(
                IdentityRecord::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(IdentityRecord::decode(&long).is_err());
        // A flipped bit anywhere before the admin's signature breaks the
        // predecessor's signature (does not decode) or the admin's.
        for i in 12..bytes.len() - 64 {
            let mut bad = bytes.clone();
            bad[i] ^= 1;
            let ok = IdentityRecord::decode(&bad)
                .ok()
                .is_some_and(|r| r.verify(&config, &cid2).is_ok());
            assert!(!ok, "flip at {i} accepted");
        }
        // The predecessor's signature is over the record: signed by
        // another key (an attacker naming a victim as predecessor), it
        // does not decode.
        let thief = Identity::generate().unwrap();
        let mut forged = IdentityRecord::successor(cid2, "mx1", new.public(), &thief, &admin, 7);
        forged.predecessor.as_mut().unwrap().public = old.public();
        forged.signature = admin.sign(SIG_IDENTITY, &forged.signed_part());
        assert_eq!(
            IdentityRecord::decode(&forged.encode()),
            Err(DecodeError::Invalid("predecessor's signature"))
        );
        // A key succeeding itself, and a successor that is not a client.
        let me = IdentityRecord::successor(cid2, "mx1", old.public(), &old, &admin, 7);
        assert!(IdentityRecord::decode(&me.encode()).is_err());
        let mut replica = rec.clone();
        replica.member.role = Role::Replica;
        let head = IdentityRecord::head(
            &cid2,
            &replica.member,
            &admin.public(),
            7,
            Some(&old.public()),
        );
        replica.predecessor.as_mut().unwrap().signature =
            old.sign(SIG_SUCCESSION, &head.into_vec());
        replica.signature = admin.sign(SIG_IDENTITY, &replica.signed_part());
        assert!(IdentityRecord::decode(&replica.encode()).is_err());
        // Version 1 records are unchanged, byte for byte.
        let v1 = IdentityRecord::new(cid2, config.members[1].clone(), &admin, 7);
        let b1 = v1.encode();
        assert_eq!(&b1[8..12], &FORMAT_VERSION.to_le_bytes());
        assert_eq!(b1.len(), 8 + 4 + 32 + 1 + 4 + 3 + 32 + 32 + 8 + 64);
        assert_eq!(IdentityRecord::decode(&b1).unwrap(), v1);
        let mut v3 = b1.clone();
        v3[8] = 3;
        assert!(IdentityRecord::decode(&v3).is_err());
    }

    #[test]
    fn snapshot_epoch_v4() {
        let old = RepoSecret::generate().unwrap();
        let newer = RepoSecret::generate().unwrap();
        let both = RepoSecret::with_older(*newer.as_bytes(), vec![*old.as_bytes()]);
        let client = Identity::generate().unwrap();
        let j = Judgement {
            checked: Checked::Compared,
            runs: 2,
            thresholds: vec![(1, 1)],
        };
        let make = |sealed_to: &RepoSecret, names: [u8; 32]| {
            let (epk, key) = seal_session(&sealed_to.public()).unwrap();
            let header = SnapshotHeader {
                config_id: ObjectId([9; 32]),
                client: client.public(),
                time_ns: 1,
                parent: None,
                packs: vec![ObjectId([1; 32])],
                epk,
            };
            let body = SnapshotBody {
                hostname: "mx1".into(),
                ..Default::default()
            };
            Snapshot::create_sealed_to(header, &[], &j, &names, &body, &key, &client)
                .unwrap()
                .1
        };
        let bytes = make(&newer, newer.public());
        assert_eq!(&bytes[8..12], &SNAPSHOT_VERSION_EPOCH.to_le_bytes());
        let s = Snapshot::decode(&bytes).unwrap();
        assert_eq!(s.restore_epoch, Some(newer.public()));
        assert_eq!(s.judgement.as_ref(), Some(&j));
        assert_eq!(s.resign(&client), bytes);
        assert_eq!(s.open_body(&both).unwrap().hostname, "mx1");
        assert_eq!(s.open_body(&newer).unwrap().hostname, "mx1");
        assert_eq!(s.open_body(&old), Err(SnapshotError::Body));
        // The epoch is signed.
        let at = bytes.windows(32).position(|w| w == newer.public()).unwrap();
        let mut bad = bytes.clone();
        bad[at] ^= 1;
        assert_eq!(Snapshot::decode(&bad), Err(SnapshotError::Signature));
        // Sealed to the old epoch while naming the new one: both the new
        // key and the old one say so.
        let lie = Snapshot::decode(&make(&old, newer.public())).unwrap();
        assert_eq!(lie.open_body(&both), Err(SnapshotError::Epoch));
        assert_eq!(lie.open_body(&old), Err(SnapshotError::Epoch));
        // Every truncation is refused.
        for cut in 0..bytes.len() {
            assert!(Snapshot::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // A version 3 record still decodes, without an epoch.
        let mut v3 = s.clone();
        v3.restore_epoch = None;
        let b3 = v3.resign(&client);
        assert_eq!(&b3[8..12], &SNAPSHOT_VERSION_JUDGED.to_le_bytes());
        assert_eq!(Snapshot::decode(&b3).unwrap().restore_epoch, None);
        assert_eq!(b3.len() + 32, bytes.len());
    }
}
