//! What `holdfast mount` serves, without the FUSE glue (which lives in the
//! CLI): the snapshots a restore key reads, their trees, and the bytes of
//! their files, read lazily.
//!
//! Every blob is opened with the restore key and checked against its keyed
//! id ([`format::open_blob`], the check `restore` makes) each time it is
//! taken from the repository or from the on-disk cache; what fails is an
//! error, never bytes. Blobs are fetched by range (one request per blob,
//! from a directory, a vault, S3 or a bundle alike). Caches are bounded:
//! verified plaintext in memory, decoded trees in memory, and sealed blobs
//! (ciphertext as fetched, never plaintext) on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::Hash;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use holdfast_core::crypto::SessionKey;
use holdfast_core::format::{self, Tree};
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::{Backend, Kind, StoreError};

use crate::index::{Location, read_pack_table};
use crate::keys::Key;
use crate::packindex::PackIndex;
use crate::{Error, Repository, Result};

/// How much a mount may keep.
#[derive(Clone, Debug)]
pub struct CacheLimits {
    /// Where sealed blobs are kept between reads (and mounts); None: no
    /// disk cache.
    pub dir: Option<PathBuf>,
    /// Bytes of sealed blobs on disk.
    pub disk_bytes: u64,
    /// Bytes of verified plaintext blobs in memory.
    pub memory_bytes: u64,
    /// Approximate bytes of decoded trees in memory.
    pub tree_bytes: u64,
    /// Over a remote store, the longest a read waits for the store before
    /// it fails (the fetch goes on in the background, bounded in number);
    /// None: as long as the store's own client waits.
    pub read_timeout: Option<Duration>,
}

impl Default for CacheLimits {
    fn default() -> Self {
        CacheLimits {
            dir: None,
            disk_bytes: 1 << 30,
            memory_bytes: 8 << 20,
            tree_bytes: 16 << 20,
            read_timeout: Some(Duration::from_secs(30)),
        }
    }
}

/// One snapshot the restore key opened.
#[derive(Clone)]
pub struct SnapEntry {
    pub id: ObjectId,
    /// By the vault's time where the repository has a log.
    pub time_ns: i64,
    pub client: String,
    pub host: String,
    pub root: BlobId,
    /// Flagged as anomalous (client findings or the vault's flags): not
    /// chosen as `latest`, as `restore latest` does not choose it.
    pub flagged: bool,
    packs: Vec<ObjectId>,
    /// Where its blobs are: an index over its packs' tables, on disk
    /// (looked up with pread; shared with restore/ls through the index
    /// cache), built on first access.
    index: Arc<OnceLock<Arc<PackIndex>>>,
}

/// Counters, for a summary and for tests (all relaxed).
#[derive(Default, Debug)]
pub struct MountStats {
    /// Range requests to the store (one blob, or one with those after it).
    pub fetched_blobs: AtomicU64,
    pub fetched_bytes: AtomicU64,
    pub disk_hits: AtomicU64,
    pub memory_hits: AtomicU64,
    /// Blobs that failed their check (from the repository or the cache).
    pub damaged: AtomicU64,
    /// Reads given up after the read timeout.
    pub timed_out: AtomicU64,
}

/// Over a remote store, a miss fetches up to this much of the pack from
/// the blob on (the blobs after it, which a backup wrote in walk order: the
/// next messages of the folder) and keeps them sealed in memory, each
/// checked only when something reads it.
const READ_AHEAD: u64 = 1 << 20;

/// Fetches given up after the read timeout but still running (each holds
/// a thread until the store's client gives up): past this many, a read
/// over a remote store fails at once.
const MAX_STRANDED: usize = 16;

/// Bytes of pack tables kept for reading ahead (remote stores).
const TABLES: u64 = 4 << 20;

pub struct Archive {
    repo: Repository,
    key: Key,
    /// Append-only: a snapshot's index never changes (the FUSE side keys
    /// inodes on it); a refresh adds new ones and updates `flagged`.
    snapshots: RwLock<Vec<Arc<SnapEntry>>>,
    /// Snapshots that could not be opened (not shown), one line each.
    problems: Mutex<(Vec<String>, HashSet<String>)>,
    /// Over a remote store, recently used pack tables sorted by offset
    /// (what a read ahead needs to name the blobs after a miss).
    tables: Mutex<Lru<ObjectId, Arc<Vec<format::PackEntry>>>>,
    load_lock: Mutex<()>,
    read_timeout: Option<Duration>,
    /// Fetches past their timeout, still running.
    stranded: Arc<AtomicUsize>,
    /// Bumped by each refresh that changed the list or a flag.
    generation: AtomicU64,
    sessions: Mutex<HashMap<[u8; 32], SessionKey>>,
    /// Blobs being fetched, so that concurrent readers of one blob (the
    /// kernel reads ahead on several threads) fetch it once.
    inflight: Mutex<HashMap<BlobId, Arc<Mutex<()>>>>,
    plain: Mutex<Lru<BlobId, Arc<Vec<u8>>>>,
    trees: Mutex<Lru<BlobId, Arc<Tree>>>,
    disk: Option<DiskCache>,
    /// Whether misses read ahead (a remote store).
    read_ahead: bool,
    /// Sealed blobs read ahead, not checked yet (bounded).
    ahead: Mutex<Lru<BlobId, Arc<Vec<u8>>>>,
    pub stats: MountStats,
}

impl Archive {
    /// Lists and opens every snapshot with the restore key `key`.
    /// Snapshots that fail their checks are left out and listed in
    /// `problems`.
    pub fn open(repo: Repository, key: Key, limits: CacheLimits) -> Result<Archive> {
        key.require_restore("mounting snapshots")?;
        let read_ahead = repo.backend.prefers_whole_objects();
        // A local repository (a directory, a replica, a bundle) is read as
        // fast as a cache would be: only a remote store's blobs are kept.
        let disk = match &limits.dir {
            Some(d) if read_ahead => Some(DiskCache::open(d, limits.disk_bytes)?),
            _ => None,
        };
        let ar = Archive {
            snapshots: RwLock::new(Vec::new()),
            problems: Mutex::new((Vec::new(), HashSet::new())),
            tables: Mutex::new(Lru::new(TABLES)),
            load_lock: Mutex::new(()),
            // Only a remote store can leave a read hanging.
            read_timeout: limits.read_timeout.filter(|_| read_ahead),
            stranded: Arc::new(AtomicUsize::new(0)),
            generation: AtomicU64::new(0),
            sessions: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            plain: Mutex::new(Lru::new(limits.memory_bytes)),
            trees: Mutex::new(Lru::new(limits.tree_bytes)),
            read_ahead,
            ahead: Mutex::new(Lru::new(READ_AHEAD * 8)),
            disk,
            stats: MountStats::default(),
            repo,
            key,
        };
        ar.refresh(None)?;
        Ok(ar)
    }

    /// Lists the snapshots again (through `fresh`, a repository opened
    /// anew so that a vault's log is read again, or else through the one
    /// mounted) and opens those not seen yet, appending them: existing
    /// indices never change. Flags are updated for all. Returns how many
    /// were added and the problems not reported before.
    pub fn refresh(&self, fresh: Option<&Repository>) -> Result<(usize, Vec<String>)> {
        let repo = fresh.unwrap_or(&self.repo);
        let secret = self.key.require_restore("mounting snapshots")?.1;
        let (snaps, bad) = repo.snapshots()?;
        let mut problems: Vec<String> = bad.iter().map(|e| e.to_string()).collect();
        let known: HashMap<ObjectId, usize> = {
            let list = self.snapshots.read().unwrap();
            list.iter().enumerate().map(|(i, s)| (s.id, i)).collect()
        };
        let mut added = Vec::new();
        let mut reflag = Vec::new();
        for (id, s) in snaps {
            if let Some(&i) = known.get(&id) {
                reflag.push((i, repo.flagged(&id, &s)));
                continue;
            }
            match repo.open_body(&id, &s, secret) {
                Ok(body) => added.push(SnapEntry {
                    id,
                    time_ns: repo.order_time(&id, &s),
                    client: repo.member_name(&s.header.client),
                    host: body.hostname.clone(),
                    root: body.root,
                    flagged: repo.flagged(&id, &s),
                    packs: s.header.packs.clone(),
                    index: Arc::new(OnceLock::new()),
                }),
                Err(e) => problems.push(e.to_string()),
            }
        }
        let n = added.len();
        {
            let mut list = self.snapshots.write().unwrap();
            let mut changed = n > 0;
            for (i, f) in reflag {
                if list[i].flagged != f {
                    let mut e = (*list[i]).clone();
                    e.flagged = f;
                    list[i] = Arc::new(e);
                    changed = true;
                }
            }
            list.extend(added.into_iter().map(Arc::new));
            if changed {
                self.generation.fetch_add(1, Ordering::Release);
            }
        }
        let mut p = self.problems.lock().unwrap();
        let new: Vec<String> = problems
            .into_iter()
            .filter(|x| p.1.insert(x.clone()))
            .collect();
        p.0.extend(new.iter().cloned());
        Ok((n, new))
    }

    /// Changes with every refresh that added a snapshot or changed a flag.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Whether the mounted repository's order comes from a vault's log.
    pub fn has_log(&self) -> bool {
        self.repo.log.is_some()
    }

    /// Every snapshot opened so far, by index.
    pub fn snapshots(&self) -> Vec<Arc<SnapEntry>> {
        self.snapshots.read().unwrap().clone()
    }

    /// Snapshot `i`.
    pub fn snapshot(&self, i: usize) -> Option<Arc<SnapEntry>> {
        self.snapshots.read().unwrap().get(i).cloned()
    }

    /// Snapshots that could not be opened (not shown), one line each.
    pub fn problems(&self) -> Vec<String> {
        self.problems.lock().unwrap().0.clone()
    }

    pub fn key(&self) -> &Key {
        &self.key
    }

    pub fn backend(&self) -> Arc<dyn Backend> {
        self.repo.backend.clone()
    }

    pub fn location(&self) -> String {
        self.repo.backend.location()
    }

    /// Runs `f` on the store; over a remote store, gives up after the read
    /// timeout (a transient error: the next access tries again) while the
    /// request runs on in the background, and fails at once while too many
    /// such requests are still stranded.
    fn on_store<T: Send + 'static>(
        &self,
        f: impl FnOnce(&dyn Backend) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let Some(limit) = self.read_timeout else {
            return f(self.repo.backend.as_ref());
        };
        let gave_up = || {
            self.stats.timed_out.fetch_add(1, Ordering::Relaxed);
            Error::Store(StoreError::Transient(format!(
                "{} did not answer within {} s",
                self.repo.backend.location(),
                limit.as_secs_f64()
            )))
        };
        if self.stranded.load(Ordering::Relaxed) >= MAX_STRANDED {
            return Err(gave_up());
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let backend = self.repo.backend.clone();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (stranded, done2) = (self.stranded.clone(), done.clone());
        std::thread::Builder::new()
            .name("fetch".into())
            .spawn(move || {
                let r = f(backend.as_ref());
                // Counted as stranded only if the reader gave up first.
                if done2.swap(true, Ordering::AcqRel) {
                    stranded.fetch_sub(1, Ordering::Relaxed);
                }
                let _ = tx.send(r);
            })
            .map_err(|e| Error::Store(StoreError::Transient(format!("no thread: {e}"))))?;
        match rx.recv_timeout(limit) {
            Ok(r) => r,
            Err(_) => {
                if !done.swap(true, Ordering::AcqRel) {
                    self.stranded.fetch_add(1, Ordering::Relaxed);
                    return Err(gave_up());
                }
                // It finished just now.
                match rx.recv() {
                    Ok(r) => r,
                    Err(_) => Err(gave_up()),
                }
            }
        }
    }

    /// The index of snapshot `snap`'s blobs, built (or taken from the
    /// index cache) on first access. A pack that cannot be read leaves its
    /// blobs unknown: reading them fails; a network failure is tried again
    /// on the next access.
    fn ensure(&self, snap: usize) -> Result<Arc<PackIndex>> {
        let Some(entry) = self.snapshot(snap) else {
            return Err(Error::Usage(format!("no snapshot {snap}")));
        };
        if let Some(ix) = entry.index.get() {
            return Ok(ix.clone());
        }
        let _one = self.load_lock.lock().unwrap();
        if let Some(ix) = entry.index.get() {
            return Ok(ix.clone());
        }
        let packs = entry.packs.clone();
        let (ix, errors) = self.on_store(move |b| Ok(PackIndex::for_packs(b, &packs)))?;
        let mut transient = None;
        for e in errors {
            match &e {
                Error::Store(s) if s.is_transient() => {
                    transient.get_or_insert(e);
                }
                _ => {
                    self.stats.damaged.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        if let Some(e) = transient {
            return Err(e);
        }
        let ix = Arc::new(ix?);
        let _ = entry.index.set(ix.clone());
        Ok(ix)
    }

    /// Pack `pack`'s table sorted by offset (remote stores, for reading
    /// ahead); kept in a small LRU.
    fn table(&self, pack: &ObjectId) -> Result<Arc<Vec<format::PackEntry>>> {
        if let Some(t) = self.tables.lock().unwrap().get(pack) {
            return Ok(t);
        }
        let id = *pack;
        let (_, mut entries) = self.on_store(move |b| read_pack_table(b, &id))?;
        entries.sort_by_key(|e| e.offset);
        let w = (entries.len() * std::mem::size_of::<format::PackEntry>()) as u64;
        let t = Arc::new(entries);
        self.tables.lock().unwrap().put(*pack, t.clone(), w);
        Ok(t)
    }

    fn session(&self, epk: &[u8; 32]) -> Result<SessionKey> {
        let mut s = self.sessions.lock().unwrap();
        if let Some(k) = s.get(epk) {
            return Ok(k.clone());
        }
        let secret = self.key.require_restore("reading blobs")?.1;
        let k = secret.open_session(epk).map_err(|e| {
            Error::Corrupt(format!(
                "a pack's ephemeral key {} does not open: {e}",
                holdfast_core::id::hex(&epk[..8])
            ))
        })?;
        s.insert(*epk, k.clone());
        Ok(k)
    }

    /// Opens sealed bytes and checks them against the blob's keyed id.
    fn open_sealed(
        &self,
        epk: &[u8; 32],
        pack: &ObjectId,
        loc: &Location,
        sealed: &[u8],
    ) -> Result<Vec<u8>> {
        let id_key = self.key.require_restore("reading blobs")?.0;
        let key = self.session(epk)?;
        format::open_blob(&key, id_key, &loc.entry, sealed)
            .map_err(|e| Error::Corrupt(format!("{e} in pack {pack}")))
    }

    /// The plaintext of blob `id` of snapshot `snap`, checked against its
    /// id. `keep` puts it in the memory cache (file data; trees have their
    /// own cache).
    fn blob(&self, snap: usize, id: &BlobId, keep: bool) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = self.plain.lock().unwrap().get(id) {
            self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(b);
        }
        if !keep {
            return self.fetch(snap, id, false);
        }
        let gate = self
            .inflight
            .lock()
            .unwrap()
            .entry(*id)
            .or_insert_with(|| Arc::new(Mutex::new(())))
            .clone();
        let r = {
            let _one = gate.lock().unwrap();
            let cached = self.plain.lock().unwrap().get(id);
            match cached {
                Some(b) => {
                    self.stats.memory_hits.fetch_add(1, Ordering::Relaxed);
                    Ok(b)
                }
                None => self.fetch(snap, id, true),
            }
        };
        let mut f = self.inflight.lock().unwrap();
        if f.get(id).is_some_and(|g| Arc::ptr_eq(g, &gate)) && Arc::strong_count(&gate) <= 2 {
            f.remove(id);
        }
        r
    }

    /// Fetches (or takes from the disk cache) and checks blob `id`.
    fn fetch(&self, snap: usize, id: &BlobId, keep: bool) -> Result<Arc<Vec<u8>>> {
        let ix = self.ensure(snap)?;
        let (loc, pack, epk) = {
            let loc = ix.find(id)?.ok_or_else(|| {
                Error::Corrupt(format!(
                    "blob {} is not in any readable pack of snapshot {}",
                    id.to_hex(),
                    self.snapshot(snap)
                        .map(|s| s.id.short())
                        .unwrap_or_default()
                ))
            })?;
            let n = loc.pack as usize;
            let (Some(pack), Some(epk)) = (ix.packs.get(n), ix.epks.get(n)) else {
                return Err(Error::Corrupt(format!("blob {}: no pack {n}", id.to_hex())));
            };
            (loc, *pack, *epk)
        };
        let plain = match self.disk.as_ref().and_then(|d| d.get(id, &pack, &loc)) {
            Some(sealed) => match self.open_sealed(&epk, &pack, &loc, &sealed) {
                Ok(p) => {
                    self.stats.disk_hits.fetch_add(1, Ordering::Relaxed);
                    Some(p)
                }
                Err(_) => {
                    // A damaged cache file is not the repository's damage:
                    // dropped, and the blob fetched again.
                    if let Some(d) = &self.disk {
                        d.remove(id, &pack);
                    }
                    None
                }
            },
            None => None,
        };
        let plain = match plain {
            Some(p) => Some(p),
            None => {
                let early = self.ahead.lock().unwrap().get(id);
                match early {
                    Some(sealed) => {
                        self.ahead.lock().unwrap().remove(id);
                        // A neighbour that fails is fetched again below,
                        // alone, and fails (or not) on its own bytes.
                        self.open_sealed(&epk, &pack, &loc, &sealed)
                            .ok()
                            .inspect(|_| {
                                if let Some(d) = &self.disk {
                                    d.put(id, &pack, &sealed);
                                }
                            })
                    }
                    None => None,
                }
            }
        };
        let plain = match plain {
            Some(p) => p,
            None => {
                let sealed = self.fetch_range(&pack, &loc, &ix)?;
                let p = match self.open_sealed(&epk, &pack, &loc, &sealed) {
                    Ok(p) => p,
                    Err(e) => {
                        self.stats.damaged.fetch_add(1, Ordering::Relaxed);
                        // In case the index is what is wrong: the next
                        // mount builds it again from the pack tables.
                        ix.distrust();
                        return Err(e);
                    }
                };
                if let Some(d) = &self.disk {
                    d.put(id, &pack, &sealed);
                }
                p
            }
        };
        let plain = Arc::new(plain);
        if keep {
            let w = plain.len() as u64;
            self.plain.lock().unwrap().put(*id, plain.clone(), w);
        }
        Ok(plain)
    }

    /// The sealed bytes of the blob at `loc`; over a remote store also the
    /// blobs after it in its pack (up to [`READ_AHEAD`]), kept sealed in
    /// memory for a later read.
    fn fetch_range(&self, pack: &ObjectId, loc: &Location, ix: &PackIndex) -> Result<Vec<u8>> {
        let start = loc.entry.offset as u64;
        let own = loc.entry.stored_len as u64;
        // A table that cannot be read only means no reading ahead.
        let list = match self.read_ahead {
            true => self.table(pack).ok(),
            false => None,
        };
        let ahead: Vec<format::PackEntry> = match &list {
            Some(list) => {
                let i = list.partition_point(|e| e.offset < loc.entry.offset);
                list[i..]
                    .iter()
                    .skip(1)
                    .take_while(|e| {
                        e.offset as u64 + e.stored_len as u64 <= start + READ_AHEAD.max(own)
                    })
                    .filter(|e| {
                        // Only blobs the index reads from this very place.
                        ix.find(&e.id).ok().flatten().is_some_and(|l| {
                            ix.packs.get(l.pack as usize) == Some(pack)
                                && l.entry.offset == e.offset
                        })
                    })
                    .copied()
                    .collect()
            }
            None => Vec::new(),
        };
        let end = ahead
            .iter()
            .map(|e| e.offset as u64 + e.stored_len as u64)
            .fold(start + own, u64::max);
        let name = pack.to_hex();
        let bytes =
            self.on_store(move |b| Ok(b.get_range(Kind::Pack, &name, start, end - start)?))?;
        self.stats.fetched_blobs.fetch_add(1, Ordering::Relaxed);
        self.stats
            .fetched_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        let slice = |e: &format::PackEntry| -> Option<&[u8]> {
            let from = (e.offset as u64).checked_sub(start)? as usize;
            bytes.get(from..from.checked_add(e.stored_len as usize)?)
        };
        // Neighbours are kept sealed and unchecked; each is checked when
        // (and if) something reads it.
        {
            let mut a = self.ahead.lock().unwrap();
            for e in &ahead {
                let known = self.disk.as_ref().is_some_and(|d| d.has(&e.id, pack));
                if let (false, Some(sealed)) = (known, slice(e)) {
                    a.put(e.id, Arc::new(sealed.to_vec()), sealed.len() as u64);
                }
            }
        }
        slice(&loc.entry)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| Error::Corrupt(format!("pack {pack} is shorter than its table says")))
    }

    /// A tree of snapshot `snap`, checked and decoded.
    pub fn tree(&self, snap: usize, id: &BlobId) -> Result<Arc<Tree>> {
        if let Some(t) = self.trees.lock().unwrap().get(id) {
            return Ok(t);
        }
        let bytes = self.blob(snap, id, false)?;
        let tree = Tree::decode(&bytes).map_err(|e| {
            self.stats.damaged.fetch_add(1, Ordering::Relaxed);
            Error::Corrupt(format!("tree {}: {e}", id.to_hex()))
        })?;
        let weight = bytes.len() as u64 + 64 * tree.nodes.len() as u64;
        let tree = Arc::new(tree);
        self.trees.lock().unwrap().put(*id, tree.clone(), weight);
        Ok(tree)
    }

    /// The plaintext of one data chunk of snapshot `snap`, checked.
    pub fn chunk(&self, snap: usize, id: &BlobId) -> Result<Arc<Vec<u8>>> {
        self.blob(snap, id, true)
    }

    /// Where each chunk of a file starts, and the file's length as its
    /// chunks add up; an error when a chunk is unknown or they do not add
    /// up to `size`.
    pub fn layout(&self, snap: usize, chunks: &[BlobId], size: u64) -> Result<Vec<u64>> {
        let ix = self.ensure(snap)?;
        let mut starts = Vec::with_capacity(chunks.len());
        let mut off = 0u64;
        for c in chunks {
            let loc = ix.find(c)?.ok_or_else(|| {
                self.stats.damaged.fetch_add(1, Ordering::Relaxed);
                Error::Corrupt(format!(
                    "chunk {} is not in any readable pack of snapshot {}",
                    c.to_hex(),
                    self.snapshot(snap)
                        .map(|s| s.id.short())
                        .unwrap_or_default()
                ))
            })?;
            starts.push(off);
            off += loc.entry.raw_len as u64;
        }
        if off != size {
            self.stats.damaged.fetch_add(1, Ordering::Relaxed);
            return Err(Error::Corrupt(format!(
                "chunks add up to {off} bytes, the snapshot says {size}"
            )));
        }
        Ok(starts)
    }

    /// Reads up to `len` bytes at `offset` of a file whose chunks start at
    /// `starts` (from [`Archive::layout`]); every chunk touched is checked.
    pub fn read(
        &self,
        snap: usize,
        chunks: &[BlobId],
        starts: &[u64],
        size: u64,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let end = size.min(offset.saturating_add(len as u64));
        let mut out = Vec::with_capacity((end - offset) as usize);
        // The chunk holding `offset`: the last that starts at or before it.
        let mut i = starts.partition_point(|s| *s <= offset).saturating_sub(1);
        let mut at = offset;
        while at < end && i < chunks.len() {
            let data = self.chunk(snap, &chunks[i])?;
            let from = (at - starts[i]) as usize;
            let take = ((end - at) as usize).min(data.len().saturating_sub(from));
            if take == 0 {
                break;
            }
            out.extend_from_slice(&data[from..from + take]);
            at += take as u64;
            i += 1;
        }
        if at != end {
            return Err(Error::Corrupt(format!(
                "a file's chunks end at {at}, before {end}"
            )));
        }
        Ok(out)
    }
}

/// A least-recently-used map bounded by the total weight of its values.
pub struct Lru<K, V> {
    map: HashMap<K, (V, u64, u64)>,
    order: BTreeMap<u64, K>,
    tick: u64,
    weight: u64,
    limit: u64,
}

impl<K: Hash + Eq + Clone, V: Clone> Lru<K, V> {
    pub fn new(limit: u64) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            weight: 0,
            limit,
        }
    }

    pub fn get(&mut self, k: &K) -> Option<V> {
        let (v, w, t) = self.map.get_mut(k)?;
        self.order.remove(t);
        self.tick += 1;
        *t = self.tick;
        self.order.insert(self.tick, k.clone());
        let _ = w;
        Some(v.clone())
    }

    pub fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }

    /// Inserts, then evicts the least recently used until within the
    /// limit; returns what was evicted. A value heavier than the limit is
    /// not kept (and returned as evicted).
    pub fn put(&mut self, k: K, v: V, w: u64) -> Vec<K> {
        self.remove(&k);
        if w > self.limit {
            return vec![k];
        }
        let mut evicted = Vec::new();
        self.tick += 1;
        self.order.insert(self.tick, k.clone());
        self.map.insert(k, (v, w, self.tick));
        self.weight += w;
        while self.weight > self.limit {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((_, ow, _)) = self.map.remove(&old) {
                self.weight -= ow;
            }
            evicted.push(old);
        }
        evicted
    }

    pub fn remove(&mut self, k: &K) -> bool {
        match self.map.remove(k) {
            Some((_, w, t)) => {
                self.order.remove(&t);
                self.weight -= w;
                true
            }
            None => false,
        }
    }

    pub fn weight(&self) -> u64 {
        self.weight
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Sealed blobs on disk, as fetched: `<dir>/<2 hex>/<blob id>.<pack id
/// prefix>`, bounded in total size (least recently used go first). Only
/// bytes that opened and matched their id are written; every read is
/// checked again by the caller, so a damaged or planted file costs a
/// refetch, never wrong bytes. Holds ciphertext only.
struct DiskCache {
    dir: PathBuf,
    lru: Mutex<Lru<String, ()>>,
    tmp: AtomicU64,
}

impl DiskCache {
    fn open(dir: &Path, limit: u64) -> Result<DiskCache> {
        std::fs::create_dir_all(dir).map_err(|e| crate::io_err(dir, e))?;
        let mut found: Vec<(std::time::SystemTime, String, u64)> = Vec::new();
        for sub in std::fs::read_dir(dir).map_err(|e| crate::io_err(dir, e))? {
            let Ok(sub) = sub else { continue };
            let Ok(rd) = std::fs::read_dir(sub.path()) else {
                continue;
            };
            for f in rd.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                match f.metadata() {
                    Ok(m) if m.is_file() && Self::is_cache_name(&name) => {
                        found.push((m.modified().unwrap_or(std::time::UNIX_EPOCH), name, m.len()))
                    }
                    _ => {
                        let _ = std::fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        let c = DiskCache {
            dir: dir.to_path_buf(),
            lru: Mutex::new(Lru::new(limit)),
            tmp: AtomicU64::new(0),
        };
        for (_, name, len) in found {
            let evicted = c.lru.lock().unwrap().put(name, (), len);
            c.drop_files(evicted);
        }
        Ok(c)
    }

    fn name(id: &BlobId, pack: &ObjectId) -> String {
        format!("{}.{}", id.to_hex(), &pack.to_hex()[..16])
    }

    /// `<64 hex>.<16 hex>`: anything else in the directory is not ours
    /// (a crashed write's temp file, or planted) and is removed.
    fn is_cache_name(name: &str) -> bool {
        let b = name.as_bytes();
        b.len() == 81
            && b[64] == b'.'
            && b.iter()
                .enumerate()
                .all(|(i, c)| i == 64 || c.is_ascii_hexdigit())
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name.get(..2).unwrap_or("__")).join(name)
    }

    fn drop_files(&self, names: Vec<String>) {
        for n in names {
            let _ = std::fs::remove_file(self.path(&n));
        }
    }

    fn has(&self, id: &BlobId, pack: &ObjectId) -> bool {
        self.lru.lock().unwrap().contains(&Self::name(id, pack))
    }

    fn get(&self, id: &BlobId, pack: &ObjectId, loc: &Location) -> Option<Vec<u8>> {
        let name = Self::name(id, pack);
        self.lru.lock().unwrap().get(&name)?;
        match std::fs::read(self.path(&name)) {
            Ok(b) if b.len() == loc.entry.stored_len as usize => Some(b),
            _ => {
                self.remove(id, pack);
                None
            }
        }
    }

    fn put(&self, id: &BlobId, pack: &ObjectId, sealed: &[u8]) {
        let name = Self::name(id, pack);
        let path = self.path(&name);
        let Some(parent) = path.parent() else { return };
        let tmp = parent.join(format!(
            ".tmp{}-{}",
            std::process::id(),
            self.tmp.fetch_add(1, Ordering::Relaxed)
        ));
        // A full or unwritable cache disk only costs refetches.
        let ok = std::fs::create_dir_all(parent).is_ok()
            && std::fs::write(&tmp, sealed).is_ok()
            && std::fs::rename(&tmp, &path).is_ok();
        if !ok {
            let _ = std::fs::remove_file(&tmp);
            return;
        }
        let evicted = self
            .lru
            .lock()
            .unwrap()
            .put(name.clone(), (), sealed.len() as u64);
        if evicted.contains(&name) {
            // Heavier than the whole cache.
            let _ = std::fs::remove_file(&path);
        }
        self.drop_files(evicted.into_iter().filter(|n| *n != name).collect());
    }

    fn remove(&self, id: &BlobId, pack: &ObjectId) {
        let name = Self::name(id, pack);
        self.lru.lock().unwrap().remove(&name);
        let _ = std::fs::remove_file(self.path(&name));
    }
}

#[cfg(test)]
mod tests {
    use super::{DiskCache, Lru};

    #[test]
    fn disk_cache_keeps_only_its_own_files_within_its_bound() {
        let d = tempfile::tempdir().unwrap();
        let sub = d.path().join("ab");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join("x"), b"planted").unwrap();
        std::fs::write(sub.join(".tmp1-2"), b"crashed").unwrap();
        let name = |i: u8| format!("{}.0123456789abcdef", holdfast_core::id::hex(&[i; 32]));
        for i in 0..4u8 {
            let n = name(i);
            let p = d.path().join(&n[..2]);
            std::fs::create_dir_all(&p).unwrap();
            std::fs::write(p.join(&n), vec![0u8; 100]).unwrap();
        }
        let c = DiskCache::open(d.path(), 250).unwrap();
        assert!(!sub.join("x").exists() && !sub.join(".tmp1-2").exists());
        let kept = (0..4u8)
            .filter(|i| {
                let n = name(*i);
                d.path().join(&n[..2]).join(&n).exists()
            })
            .count();
        assert_eq!(kept, 2, "evicted down to the bound at open");
        assert_eq!(c.lru.lock().unwrap().weight(), 200);
    }

    #[test]
    fn lru_bounded_by_weight() {
        let mut l: Lru<u32, u32> = Lru::new(10);
        assert!(l.put(1, 1, 4).is_empty());
        assert!(l.put(2, 2, 4).is_empty());
        assert_eq!(l.get(&1), Some(1)); // 2 is now the oldest
        assert_eq!(l.put(3, 3, 4), vec![2]);
        assert_eq!(l.weight(), 8);
        assert_eq!(l.get(&2), None);
        assert_eq!(l.put(4, 4, 11), vec![4]); // too heavy: not kept
        assert!(!l.contains(&4));
        assert!(l.remove(&1));
        assert_eq!(l.weight(), 4);
        assert_eq!(l.len(), 1);
    }
}
