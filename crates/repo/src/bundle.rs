//! `holdfast export`: self-contained, incremental bundles for removable
//! media or tape, and the checks `verify --repo bundle:…` adds.
//!
//! A bundle has a repository's layout (config, identities, packs,
//! snapshots), the vault's whole log and signed checkpoint (`vault/`), and
//! `manifest.json`, written last: a directory without it is not a bundle.
//! An incremental bundle (`--since` earlier bundles) leaves out objects they
//! hold; the log is always whole, so each bundle can be checked alone and
//! each must extend the log of the one before.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use holdfast_core::ObjectId;
use holdfast_core::id::{hex, parse_hex};
use holdfast_core::merkle::{self, Checkpoint};
use holdfast_core::vaultlog::split_log;
use holdfast_store::{Backend, Kind, LocalDir};

use crate::{Error, Repository, Result, io_err};

pub const BUNDLE_FORMAT: &str = "holdfast-bundle-1";

#[derive(Debug, Default)]
pub struct ExportReport {
    pub snapshots: u64,
    pub packs: u64,
    pub bytes: u64,
    pub skipped: u64,
    pub log_size: u64,
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path))
        .map_err(|e| io_err(path, e))?;
    holdfast_store::fsync_dir(path.parent().unwrap()).map_err(|e| io_err(path, e))
}

/// Objects held by earlier bundles (by kind and name).
fn held_by(since: &[PathBuf]) -> Result<BTreeSet<(String, String)>> {
    let mut held = BTreeSet::new();
    for d in since {
        let b = LocalDir::open(d)?;
        if !d.join("manifest.json").is_file() {
            return Err(Error::Usage(format!(
                "{} is not a finished bundle",
                d.display()
            )));
        }
        for k in Kind::all_objects() {
            for (n, _) in b.list(k)? {
                held.insert((k.to_string(), n));
            }
        }
    }
    Ok(held)
}

/// Writes a bundle of everything `repo` holds into the new directory `to`.
/// `log` is the vault's log and checkpoint, if the source has one.
pub fn export(
    repo: &Repository,
    log: Option<(&[Vec<u8>], &Checkpoint)>,
    to: &Path,
    since: &[PathBuf],
) -> Result<ExportReport> {
    let mut rep = ExportReport::default();
    let held = held_by(since)?;
    let src = repo.backend.as_ref();
    let out = LocalDir::create(to)?;
    out.put(Kind::Config, "config", &src.get(Kind::Config, "config")?)?;
    let mut listed = serde_json::Map::new();
    let copy = |kind: Kind, name: &str, rep: &mut ExportReport| -> Result<bool> {
        if held.contains(&(kind.to_string(), name.to_string())) {
            rep.skipped += 1;
            return Ok(false);
        }
        let data = src.get(kind, name)?;
        out.put(kind, name, &data)?;
        rep.bytes += data.len() as u64;
        Ok(true)
    };
    let mut ids = Vec::new();
    for (name, _) in src.list(Kind::Identity)? {
        if copy(Kind::Identity, &name, &mut rep)? {
            ids.push(name);
        }
    }
    listed.insert("identities".into(), ids.into());
    // Packs before the snapshots that list them.
    let (snaps, bad) = repo.snapshots()?;
    if let Some(e) = bad.into_iter().next() {
        return Err(e);
    }
    let mut packs: BTreeSet<ObjectId> = BTreeSet::new();
    for (_, s) in &snaps {
        packs.extend(s.header.packs.iter().copied());
    }
    let mut plist = Vec::new();
    for p in &packs {
        if copy(Kind::Pack, &p.to_hex(), &mut rep)? {
            rep.packs += 1;
            plist.push(p.to_hex());
        }
    }
    listed.insert("packs".into(), plist.into());
    let mut slist = Vec::new();
    for (id, _) in &snaps {
        if copy(Kind::Snapshot, &id.to_hex(), &mut rep)? {
            rep.snapshots += 1;
            slist.push(id.to_hex());
        }
    }
    listed.insert("snapshots".into(), slist.into());
    let mut manifest = serde_json::json!({
        "format": BUNDLE_FORMAT,
        "config_id": repo.config_id.to_hex(),
        "created_ns": crate::now_ns(),
        "objects": listed,
        "since": since.iter().map(|d| d.display().to_string()).collect::<Vec<_>>(),
        "log_size": 0,
        "checkpoint": null,
    });
    if let Some((entries, cp)) = log {
        let vdir = to.join("vault");
        std::fs::create_dir_all(&vdir).map_err(|e| io_err(&vdir, e))?;
        let mut raw = Vec::new();
        // A log shorter than its checkpoint (a damaged replica or bundle
        // being exported again) is refused, never sliced past its end.
        let Some(kept) = usize::try_from(cp.size).ok().and_then(|n| entries.get(..n)) else {
            return Err(Error::Tamper(format!(
                "the log holds {} entries, fewer than its checkpoint's {}",
                entries.len(),
                cp.size
            )));
        };
        for e in kept {
            raw.extend_from_slice(&(e.len() as u32).to_le_bytes());
            raw.extend_from_slice(e);
        }
        write_atomic(&vdir.join("log"), &raw)?;
        write_atomic(&vdir.join("checkpoint"), &cp.encode())?;
        manifest["log_size"] = cp.size.into();
        manifest["checkpoint"] = hex(&cp.encode()).into();
        rep.log_size = cp.size;
    }
    let text = serde_json::to_vec_pretty(&manifest).expect("JSON serialises");
    write_atomic(&to.join("manifest.json"), &text)?;
    Ok(rep)
}

/// Largest manifest and log read from a bundle.
const MAX_MANIFEST: u64 = 1 << 30;
const MAX_LOG: u64 = 4 << 30;

/// The bundle checks beyond `verify`: manifests, logs against their signed
/// checkpoints, and each bundle's log extending the previous one's.
pub fn check_bundles(repo: &Repository, dirs: &[PathBuf]) -> Vec<String> {
    let mut problems = Vec::new();
    let mut prev: Option<(PathBuf, Vec<Vec<u8>>)> = None;
    for d in dirs {
        let name = d.display();
        // A received bundle is untrusted: regular files only, capped.
        let m: serde_json::Value =
            match holdfast_store::read_regular(&d.join("manifest.json"), MAX_MANIFEST)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
            {
                Some(m) => m,
                None => {
                    problems.push(format!(
                        "bundle {name}: manifest.json missing or unreadable"
                    ));
                    continue;
                }
            };
        if m["format"] != BUNDLE_FORMAT || m["config_id"] != repo.config_id.to_hex().as_str() {
            problems.push(format!(
                "bundle {name}: manifest is not for this repository"
            ));
            continue;
        }
        let Ok(b) = LocalDir::open(d) else {
            problems.push(format!("bundle {name}: not readable"));
            continue;
        };
        for (kind, key) in [
            (Kind::Pack, "packs"),
            (Kind::Snapshot, "snapshots"),
            (Kind::Identity, "identities"),
        ] {
            let want: BTreeSet<String> = m["objects"][key]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default();
            let have: BTreeSet<String> = b
                .list(kind)
                .map(|l| l.into_iter().map(|(n, _)| n).collect())
                .unwrap_or_default();
            for n in want.difference(&have) {
                problems.push(format!(
                    "bundle {name}: {kind} {n} is in the manifest but missing"
                ));
            }
            for n in have.difference(&want) {
                problems.push(format!(
                    "bundle {name}: {kind} {n} is present but not in the manifest"
                ));
            }
        }
        let size = m["log_size"].as_u64().unwrap_or(0);
        if size == 0 {
            prev = Some((d.clone(), Vec::new()));
            continue;
        }
        let raw = match holdfast_store::read_regular(&d.join("vault/log"), MAX_LOG) {
            Ok(r) => r,
            Err(e) => {
                problems.push(format!("bundle {name}: vault/log: {e}"));
                Vec::new()
            }
        };
        let entries: Vec<Vec<u8>> = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
        let cp = m["checkpoint"]
            .as_str()
            .and_then(|h| parse_hex(h).ok())
            .and_then(|b| Checkpoint::decode(&b).ok());
        match cp {
            Some(cp) if cp.verify(&cp.signer).is_ok() && cp.size == size => {
                let leaves: Vec<_> = entries
                    .iter()
                    .take(size as usize)
                    .map(|e| merkle::leaf_hash(e))
                    .collect();
                if entries.len() as u64 != size || merkle::root(&leaves) != cp.root {
                    problems.push(format!(
                        "bundle {name}: the log does not match its signed checkpoint"
                    ));
                } else {
                    // Signed by the vault key the log's executed rotations
                    // make current at its size (the config's, before any).
                    let want = crate::logview::vault_key_at(repo, &entries, size);
                    if cp.signer != want {
                        problems.push(format!(
                            "bundle {name}: its checkpoint is signed by {}, not by the vault key \
                             of the log at size {size} ({}): a rotated-out or unknown key",
                            holdfast_core::id::hex(&cp.signer[..8]),
                            holdfast_core::id::hex(&want[..8])
                        ));
                    }
                }
            }
            _ => problems.push(format!(
                "bundle {name}: checkpoint missing or not signed by the vault key"
            )),
        }
        if let Some((pd, pe)) = &prev
            && (pe.len() > entries.len() || entries[..pe.len()] != pe[..])
        {
            problems.push(format!(
                "bundle {name}: its log does not extend the log of {} (a fork or rewritten history)",
                pd.display()
            ));
        }
        prev = Some((d.clone(), entries));
    }
    problems
}
