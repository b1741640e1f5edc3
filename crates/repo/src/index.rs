//! Where each blob lives, built from the plaintext tables at the end of each
//! pack (fetched with two small range reads, no decryption), and a reader
//! that fetches, authenticates and checks blobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use holdfast_core::crypto::{IdKey, RepoSecret, SessionKey};
use holdfast_core::format::{self, PACK_HEADER_LEN, PACK_TRAILER_LEN, PackEntry};
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::{Backend, Kind};

use crate::{Error, Result};

/// Reads a pack's table from its tail: (ephemeral public key, entries).
pub fn read_pack_table(
    backend: &dyn Backend,
    pack: &ObjectId,
) -> Result<([u8; 32], Vec<PackEntry>)> {
    read_pack_table_sized(backend, pack).map(|(epk, _, entries)| (epk, entries))
}

/// [`read_pack_table`], with the pack's size.
pub fn read_pack_table_sized(
    backend: &dyn Backend,
    pack: &ObjectId,
) -> Result<([u8; 32], u64, Vec<PackEntry>)> {
    let name = pack.to_hex();
    let size = backend.size(Kind::Pack, &name)?;
    let corrupt = |why: String| Error::Corrupt(format!("pack {}: {why}", pack.short()));
    if size < (PACK_HEADER_LEN + 4 + PACK_TRAILER_LEN) as u64 {
        return Err(corrupt("too short".into()));
    }
    let head = backend.get_range(Kind::Pack, &name, 0, PACK_HEADER_LEN as u64)?;
    if &head[..8] != format::PACK_MAGIC {
        return Err(corrupt("bad magic".into()));
    }
    let epk: [u8; 32] = head[8..40].try_into().unwrap();
    let trailer = backend.get_range(
        Kind::Pack,
        &name,
        size - PACK_TRAILER_LEN as u64,
        PACK_TRAILER_LEN as u64,
    )?;
    let tlen = format::pack_table_len(&trailer).map_err(|e| corrupt(e.to_string()))? as u64;
    if tlen > size - (PACK_HEADER_LEN + PACK_TRAILER_LEN) as u64 {
        return Err(corrupt("table length out of range".into()));
    }
    let start = size - PACK_TRAILER_LEN as u64 - tlen;
    let table = backend.get_range(Kind::Pack, &name, start, tlen)?;
    let entries = format::decode_pack_table(&table, start).map_err(|e| corrupt(e.to_string()))?;
    Ok((epk, size, entries))
}

#[derive(Clone, Copy, Debug)]
pub struct Location {
    pub pack: u32,
    pub entry: PackEntry,
}

/// Blob id → location, over a set of packs.
#[derive(Default)]
pub struct Index {
    pub packs: Vec<ObjectId>,
    pub epks: Vec<[u8; 32]>,
    pub blobs: HashMap<BlobId, Location>,
}

impl Index {
    /// Reads the tables of `packs`. Missing or damaged packs are returned as
    /// errors beside the index rather than failing the whole load.
    ///
    /// The tables come from the on-disk index cache when it holds this
    /// pack list (see [`crate::packindex`]): a local sequential read
    /// instead of two range reads per pack.
    pub fn load(backend: &dyn Backend, packs: &[ObjectId]) -> (Index, Vec<Error>) {
        if let (Ok(ix), errors) = crate::packindex::PackIndex::for_packs(backend, packs)
            && errors.is_empty()
        {
            let mut idx = Index {
                packs: ix.packs.clone(),
                epks: ix.epks.clone(),
                blobs: HashMap::with_capacity(ix.len() as usize),
            };
            // Records come in (id, pack) order: the first pack listed wins.
            let read = ix.for_each(|loc| {
                idx.blobs.entry(loc.entry.id).or_insert(loc);
            });
            if read.is_ok() {
                return (idx, errors);
            }
        }
        let mut idx = Index::default();
        let mut errors = Vec::new();
        for p in packs {
            match read_pack_table(backend, p) {
                Ok((epk, entries)) => {
                    let n = idx.packs.len() as u32;
                    idx.packs.push(*p);
                    idx.epks.push(epk);
                    for e in entries {
                        idx.blobs
                            .entry(e.id)
                            .or_insert(Location { pack: n, entry: e });
                    }
                }
                Err(e) => errors.push(e),
            }
        }
        (idx, errors)
    }
}

/// Fetches and opens blobs with the restore key; every blob is
/// authenticated and checked against its keyed id.
pub struct BlobReader<'a> {
    pub backend: &'a dyn Backend,
    pub index: &'a Index,
    id_key: &'a IdKey,
    secret: &'a RepoSecret,
    sessions: Mutex<HashMap<[u8; 32], SessionKey>>,
    /// Whole packs recently fetched (by pack index), newest last; used only
    /// when the backend prefers whole objects (the vault).
    packs: Option<PackCache>,
}

/// Recently fetched whole packs, by index into [`Index::packs`], newest last.
type PackCache = Mutex<std::collections::VecDeque<(u32, Arc<Vec<u8>>)>>;

/// Whole packs kept in memory by a [`BlobReader`] over a remote backend.
const PACK_CACHE: usize = 6;

impl<'a> BlobReader<'a> {
    pub fn new(
        backend: &'a dyn Backend,
        index: &'a Index,
        id_key: &'a IdKey,
        secret: &'a RepoSecret,
    ) -> Self {
        Self {
            backend,
            index,
            id_key,
            secret,
            sessions: Mutex::new(HashMap::new()),
            packs: backend
                .prefers_whole_objects()
                .then(|| Mutex::new(std::collections::VecDeque::new())),
        }
    }

    /// Fetches one whole pack (checked against its id by the backend).
    pub fn whole_pack(&self, n: u32) -> Result<Vec<u8>> {
        Ok(self
            .backend
            .get(Kind::Pack, &self.index.packs[n as usize].to_hex())?)
    }

    /// Drops packs cached for tree reads.
    pub fn clear_cache(&self) {
        if let Some(c) = &self.packs {
            c.lock().unwrap().clear();
        }
    }

    /// A whole pack, from the cache or fetched (and checked against its id).
    fn pack(&self, cache: &PackCache, n: u32) -> Result<Arc<Vec<u8>>> {
        if let Some((_, p)) = cache.lock().unwrap().iter().find(|(i, _)| *i == n) {
            return Ok(p.clone());
        }
        let bytes = Arc::new(
            self.backend
                .get(Kind::Pack, &self.index.packs[n as usize].to_hex())?,
        );
        let mut c = cache.lock().unwrap();
        if c.len() >= PACK_CACHE {
            c.pop_front();
        }
        c.push_back((n, bytes.clone()));
        Ok(bytes)
    }

    pub fn session(&self, epk: &[u8; 32]) -> Result<SessionKey> {
        let mut s = self.sessions.lock().unwrap();
        if let Some(k) = s.get(epk) {
            return Ok(k.clone());
        }
        let k = self.secret.open_session(epk).map_err(|e| {
            Error::Corrupt(format!(
                "a pack's ephemeral key {} does not open: {e}",
                holdfast_core::id::hex(&epk[..8])
            ))
        })?;
        s.insert(*epk, k.clone());
        Ok(k)
    }

    pub fn id_key(&self) -> &IdKey {
        self.id_key
    }

    /// Opens a blob whose sealed bytes were already fetched.
    pub fn open(&self, loc: &Location, sealed: &[u8]) -> Result<Vec<u8>> {
        let key = self.session(&self.index.epks[loc.pack as usize])?;
        format::open_blob(&key, self.id_key, &loc.entry, sealed).map_err(|e| {
            Error::Corrupt(format!(
                "{e} in pack {}",
                self.index.packs[loc.pack as usize]
            ))
        })
    }

    pub fn read(&self, id: &BlobId) -> Result<Vec<u8>> {
        let loc = self.index.blobs.get(id).ok_or_else(|| {
            Error::Corrupt(format!(
                "blob {} is not in any pack the snapshot lists",
                id.to_hex()
            ))
        })?;
        if let Some(cache) = &self.packs {
            let bytes = self.pack(cache, loc.pack)?;
            let sealed = loc.entry.sealed(&bytes).ok_or_else(|| {
                Error::Corrupt(format!(
                    "pack {} is shorter than its table says",
                    self.index.packs[loc.pack as usize]
                ))
            })?;
            return self.open(loc, sealed);
        }
        let pack = self.index.packs[loc.pack as usize].to_hex();

        let sealed = self.backend.get_range(
            Kind::Pack,
            &pack,
            loc.entry.offset as u64,
            loc.entry.stored_len as u64,
        )?;
        self.open(loc, &sealed)
    }

    pub fn tree(&self, id: &BlobId) -> Result<format::Tree> {
        let b = self.read(id)?;
        format::Tree::decode(&b).map_err(|e| Error::Corrupt(format!("tree {}: {e}", id.to_hex())))
    }
}
