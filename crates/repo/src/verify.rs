//! `holdfast verify`.
//!
//! With any key: the config matches the key, every snapshot's id and
//! signature check out and its signer is a client, every pack a snapshot
//! lists exists and its table is well formed. With `--read-data`: every pack
//! is read whole and checked against its id. With the restore key as well:
//! every blob is decrypted and checked against its keyed id, every snapshot
//! body opens and every tree and chunk it references is found in the packs
//! it lists. Each problem names the object it concerns.
//!
//! Memory does not grow with the number of blobs: pack tables go into an
//! on-disk [`PackIndex`] built here from the packs just checked (verify
//! never trusts a cached one), and trees are walked depth first.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use holdfast_core::format::{self, KIND_TREE, NodeKind, PackEntry, Tree};
use holdfast_core::{BlobId, ObjectId};
use holdfast_store::Kind;
use rayon::prelude::*;

use crate::index::read_pack_table;
use crate::keys::Key;
use crate::packindex::{Builder, PackIndex, Reader, index_dir};
use crate::{Progress, Repository, Result};

#[derive(Debug, Default)]
pub struct VerifyReport {
    pub snapshots: u64,
    pub packs: u64,
    pub blobs: u64,
    pub bytes_read: u64,
    pub unreferenced_packs: u64,
    pub decrypted: bool,
    pub problems: Vec<String>,
}

pub fn verify(
    repo: &Repository,
    key: &Key,
    read_data: bool,
    progress: &Progress,
) -> Result<VerifyReport> {
    let mut rep = VerifyReport::default();
    let backend = repo.backend.as_ref();
    let (snaps, bad) = repo.snapshots()?;
    rep.problems.extend(bad.iter().map(|e| e.to_string()));
    rep.snapshots = snaps.len() as u64;

    // Packs: structure always; whole content with --read-data.
    let listed = backend.list(Kind::Pack)?;
    progress
        .files_total
        .store(listed.len() as u64, Ordering::Relaxed);
    progress
        .bytes_total
        .store(listed.iter().map(|(_, s)| s).sum(), Ordering::Relaxed);
    let restore = key.require_restore("").ok();
    if let Some((_, secret)) = restore
        && let Some(t) = repo.stale_restore_key(secret)
    {
        return Err(crate::Error::Usage(format!(
            "this restore key predates the restore key rotation of {}: it cannot check what \
             was sealed after it; use the newest restore key",
            crate::repo::fmt_time(t)
        )));
    }
    // With the restore key, the tables of good packs go into an on-disk
    // index built here (never a cached one), numbered as listed.
    let ids: Vec<ObjectId> = listed
        .iter()
        .map(|(name, _)| ObjectId::from_hex(name).unwrap_or(ObjectId([0; 32])))
        .collect();
    let builder = restore.map(|_| Mutex::new(Builder::new(ids.clone(), &index_dir().0)));
    let build_error: Mutex<Option<crate::Error>> = Mutex::new(None);
    let results: Vec<std::result::Result<(u64, u64), String>> = listed
        .par_iter()
        .enumerate()
        .map(|(i, (_, size))| {
            let r = check_pack(repo, &ids[i], read_data, restore).map(|(bytes, epk, entries)| {
                if let Some(b) = &builder
                    && let Err(e) = b
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .add(i as u32, epk, *size, &entries)
                {
                    build_error.lock().unwrap().get_or_insert(e);
                }
                (bytes, entries.len() as u64)
            });
            progress.add(1, *size);
            r
        })
        .collect();
    if let Some(e) = build_error.into_inner().unwrap() {
        return Err(e);
    }
    let mut good: HashMap<ObjectId, u32> = HashMap::new();
    for (i, r) in results.into_iter().enumerate() {
        rep.packs += 1;
        match r {
            Ok((bytes, blobs)) => {
                rep.bytes_read += bytes;
                rep.blobs += blobs;
                good.insert(ids[i], i as u32);
            }
            Err(why) => rep.problems.push(format!("pack {}: {why}", ids[i])),
        }
    }
    let index = match builder {
        Some(b) => Some(PackIndex::build_scratch(
            b.into_inner().unwrap_or_else(|p| p.into_inner()),
        )?),
        None => None,
    };

    // Snapshots: their packs, and with the restore key their trees.
    let mut referenced: HashSet<ObjectId> = HashSet::new();
    for (sid, s) in &snaps {
        for p in &s.header.packs {
            referenced.insert(*p);
            if !good.contains_key(p) && !rep.problems.iter().any(|x| x.contains(&p.to_hex())) {
                rep.problems
                    .push(format!("snapshot {sid}: pack {p} is missing"));
            }
        }
        if let (Some((id_key, secret)), Some(index)) = (restore, &index) {
            rep.decrypted = true;
            let body = match s.open_body(secret) {
                Ok(b) => b,
                Err(e) => {
                    rep.problems.push(format!("snapshot {sid}: {e}"));
                    continue;
                }
            };
            // Only this snapshot's good packs count.
            let mut allow = vec![false; ids.len()];
            for p in &s.header.packs {
                if let Some(n) = good.get(p) {
                    allow[*n as usize] = true;
                }
            }
            let mut reader = Reader::new(backend, index, id_key, secret);
            reader.restrict(allow);
            let mut seen = HashSet::new();
            check_tree(&reader, body.root, &mut seen, &mut |why| {
                rep.problems.push(format!("snapshot {sid}: {why}"))
            });
        }
    }
    rep.unreferenced_packs = good.keys().filter(|p| !referenced.contains(p)).count() as u64;
    Ok(rep)
}

/// Bytes read, ephemeral key and table of a good pack, or what is wrong.
type PackCheck = std::result::Result<(u64, [u8; 32], Vec<PackEntry>), String>;

fn check_pack(
    repo: &Repository,
    id: &ObjectId,
    read_data: bool,
    restore: Option<(
        &holdfast_core::crypto::IdKey,
        &holdfast_core::crypto::RepoSecret,
    )>,
) -> PackCheck {
    let backend = repo.backend.as_ref();
    if !read_data {
        return read_pack_table(backend, id)
            .map(|(epk, e)| (0, epk, e))
            .map_err(|e| e.to_string());
    }
    let bytes = backend
        .get(Kind::Pack, &id.to_hex())
        .map_err(|e| e.to_string())?;
    let (epk, entries) = format::parse_pack(&bytes).map_err(|e| e.to_string())?;
    if let Some((id_key, secret)) = restore {
        let key = secret.open_session(&epk).map_err(|e| e.to_string())?;
        let mut bad = Vec::new();
        for e in &entries {
            // parse_pack keeps every entry inside the pack; checked anyway.
            let Some(sealed) = e.sealed(&bytes) else {
                bad.push(format!("blob {} lies outside the pack", e.id.to_hex()));
                continue;
            };
            if let Err(x) = format::open_blob(&key, id_key, e, sealed) {
                bad.push(x.to_string());
            }
        }
        if !bad.is_empty() {
            return Err(format!("{} damaged blob(s): {}", bad.len(), bad.join("; ")));
        }
    }
    Ok((bytes.len() as u64, epk, entries))
}

/// Checks a tree and everything under it: every tree opens, every chunk
/// is in the snapshot's packs. `seen` holds trees (and chunks reported
/// missing), not every chunk, so memory follows the number of directories.
fn check_tree(
    reader: &Reader,
    id: BlobId,
    seen: &mut HashSet<BlobId>,
    report: &mut impl FnMut(String),
) {
    if !seen.insert(id) {
        return;
    }
    let tree: Tree = match reader.locate(&id) {
        Ok(Some(loc)) if loc.entry.kind == KIND_TREE => match reader.tree(&id) {
            Ok(t) => t,
            Err(e) => return report(e.to_string()),
        },
        Err(e) => return report(e.to_string()),
        _ => {
            return report(format!(
                "tree {} is not in the snapshot's packs",
                id.to_hex()
            ));
        }
    };
    for n in tree.nodes {
        match n.kind {
            NodeKind::Dir { subtree } => check_tree(reader, subtree, seen, report),
            NodeKind::File { chunks, .. } => {
                for c in chunks {
                    match reader.locate(&c) {
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            if seen.insert(c) {
                                report(format!(
                                    "chunk {} of {} is not in the snapshot's packs",
                                    c.to_hex(),
                                    String::from_utf8_lossy(&n.name)
                                ))
                            }
                        }
                        Err(e) => report(e.to_string()),
                    }
                }
            }
            NodeKind::Symlink { .. } => {}
        }
    }
}
