//! `holdfast drill`: what a monthly restore drill does. Restores a sample
//! of mailboxes (or everything) into a scratch directory, then reads every
//! restored file back from disk and checks each chunk of it against the
//! snapshot's keyed ids; measures the rate, the time to the first complete
//! INBOX, and projects the time to restore the whole snapshot.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use holdfast_core::ObjectId;
use holdfast_core::format::{Node, NodeKind, Tree};

use crate::keys::Key;
use crate::mail::{self, BlobReader, MailProgress, MailRestoreOptions, Mailbox, Opened};
use crate::restore::{RestoreOptions, restore};
use crate::{Error, Progress, Repository, Result};

pub struct DrillOptions {
    /// A new or empty directory to restore into.
    pub scratch: PathBuf,
    /// Mailboxes to sample; `None` for everything.
    pub sample: Option<usize>,
    pub parallel: usize,
}

#[derive(Debug, Default, Clone)]
pub struct DrillReport {
    pub snapshot: String,
    /// "mail" (mailboxes through `mail restore`) or "files" (plain restore).
    pub kind: &'static str,
    pub full: bool,
    pub mailboxes: u64,
    pub mailboxes_total: u64,
    pub files: u64,
    pub bytes: u64,
    pub seconds: f64,
    pub verify_seconds: f64,
    pub first_inbox_s: Option<f64>,
    pub all_inboxes_s: Option<f64>,
    /// The whole snapshot's bytes (what a full restore writes).
    pub snapshot_bytes: u64,
    pub snapshot_files: u64,
    pub projected_full_s: Option<f64>,
    pub bytes_read: u64,
    pub verified: u64,
    /// Damage found: what did not restore or did not verify.
    pub failures: Vec<String>,
    /// This machine's failures (disk), not the repository's.
    pub errors: Vec<String>,
}

impl DrillReport {
    pub fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / 1e6 / self.seconds.max(1e-9)
    }
    pub fn files_per_s(&self) -> f64 {
        self.files as f64 / self.seconds.max(1e-9)
    }
}

/// Checks a restored file on disk against its node: size, mtime, and
/// every chunk's keyed id.
fn verify_file(reader: &BlobReader, path: &Path, node: &Node) -> std::result::Result<(), String> {
    let NodeKind::File { size, chunks } = &node.kind else {
        return Ok(());
    };
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if data.len() as u64 != *size {
        return Err(format!(
            "{}: {} bytes, the snapshot says {size}",
            path.display(),
            data.len()
        ));
    }
    let mut off = 0usize;
    for c in chunks {
        let loc = reader
            .locate(c)
            .ok()
            .flatten()
            .ok_or_else(|| format!("{}: chunk {} in no pack", path.display(), c.to_hex()))?;
        let end = off + loc.entry.raw_len as usize;
        let piece = data
            .get(off..end)
            .ok_or_else(|| format!("{}: shorter than its chunks", path.display()))?;
        if reader.id_key().blob_id(piece) != *c {
            return Err(format!(
                "{}: bytes {off}..{end} do not match chunk {}",
                path.display(),
                c.to_hex()
            ));
        }
        off = end;
    }
    let md = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if (md.mtime(), md.mtime_nsec()) != (node.mtime_s, node.mtime_ns as i64) {
        return Err(format!(
            "{}: mtime differs from the snapshot",
            path.display()
        ));
    }
    Ok(())
}

/// Verifies each mailbox restored under `scratch`: every message found by
/// its base name, every control file by its name.
fn verify_mail(reader: &BlobReader, scratch: &Path, boxes: &[Mailbox], rep: &mut DrillReport) {
    for mb in boxes {
        let root = scratch.join(&mb.rel);
        for f in &mb.folders {
            let dir = if f.rel.is_empty() {
                root.clone()
            } else {
                root.join(OsStr::from_bytes(&f.rel))
            };
            let mut by_base: HashMap<Vec<u8>, PathBuf> = HashMap::new();
            for sub in ["cur", "new"] {
                if let Ok(rd) = std::fs::read_dir(dir.join(sub)) {
                    for e in rd.flatten() {
                        let n = e.file_name();
                        let base = mail::maildir::MaildirName::parse(n.as_bytes())
                            .base
                            .to_vec();
                        by_base.insert(base, e.path());
                    }
                }
            }
            for m in &f.msgs {
                let base = mail::maildir::MaildirName::parse(&m.name).base.to_vec();
                match by_base.get(&base) {
                    Some(p) => match verify_file(reader, p, &m.node) {
                        Ok(()) => rep.verified += 1,
                        Err(e) => rep.failures.push(e),
                    },
                    None => rep.failures.push(format!(
                        "{}/{}: not restored",
                        mb.path,
                        String::from_utf8_lossy(&m.name)
                    )),
                }
            }
            for c in &f.control {
                let p = dir.join(OsStr::from_bytes(&c.name));
                match verify_file(reader, &p, c) {
                    Ok(()) => rep.verified += 1,
                    Err(e) => rep.failures.push(e),
                }
            }
        }
    }
}

/// Verifies a plain restore of `tree` at `at`.
fn verify_tree(reader: &BlobReader, tree: &Tree, at: &Path, rep: &mut DrillReport) {
    for n in &tree.nodes {
        let p = at.join(OsStr::from_bytes(&n.name));
        match &n.kind {
            NodeKind::Dir { subtree } => match reader.tree(subtree) {
                Ok(t) => verify_tree(reader, &t, &p, rep),
                Err(e) => rep.failures.push(format!("{}: {e}", p.display())),
            },
            NodeKind::File { .. } => match verify_file(reader, &p, n) {
                Ok(()) => rep.verified += 1,
                Err(e) => rep.failures.push(e),
            },
            NodeKind::Symlink { target } => match std::fs::read_link(&p) {
                Ok(t) if t.as_os_str().as_bytes() == target.as_slice() => rep.verified += 1,
                _ => rep
                    .failures
                    .push(format!("{}: symlink differs", p.display())),
            },
        }
    }
}

/// Spreads `n` picks over `len` items, starting at a random offset so that
/// successive drills sample different mailboxes.
fn sample_indices(len: usize, n: usize) -> Vec<usize> {
    if n >= len {
        return (0..len).collect();
    }
    let r: [u8; 8] = holdfast_core::crypto::random_bytes().unwrap_or([0; 8]);
    let start = u64::from_le_bytes(r) as usize % len;
    let mut v: Vec<usize> = (0..n).map(|i| (start + i * len / n) % len).collect();
    v.sort_unstable();
    v.dedup();
    v
}

pub fn drill(
    repo: &Repository,
    key: &Key,
    id: &ObjectId,
    opts: &DrillOptions,
) -> Result<DrillReport> {
    let scratch = &opts.scratch;
    if scratch.exists()
        && std::fs::read_dir(scratch)
            .map_err(|e| crate::io_err(scratch, e))?
            .next()
            .is_some()
    {
        return Err(Error::Usage(format!(
            "{} exists and is not empty; the drill restores into a new directory",
            scratch.display()
        )));
    }
    let snap = Opened::open(repo, key, id)?;
    let reader = snap.reader(key)?;
    let mut rep = DrillReport {
        snapshot: id.to_hex(),
        snapshot_bytes: snap.body.bytes,
        snapshot_files: snap.body.files,
        ..Default::default()
    };
    for e in &snap.pack_errors {
        rep.failures.push(format!("(snapshot): {e}"));
    }
    let (boxes, errors) = snap.mailboxes(&reader, "")?;
    for (p, e) in &errors {
        rep.failures.push(format!("{p}: {e}"));
    }
    std::fs::create_dir_all(scratch).map_err(|e| crate::io_err(scratch, e))?;
    let start = Instant::now();
    if !boxes.is_empty() {
        rep.kind = "mail";
        rep.mailboxes_total = boxes.len() as u64;
        let picked: Vec<Mailbox> = match opts.sample {
            Some(n) => sample_indices(boxes.len(), n)
                .into_iter()
                .map(|i| boxes[i].clone())
                .collect(),
            None => boxes.clone(),
        };
        rep.full = picked.len() == boxes.len();
        rep.mailboxes = picked.len() as u64;
        let mopts = MailRestoreOptions {
            target: scratch.clone(),
            folders: Vec::new(),
            into_folder: None,
            dry_run: false,
            parallel: opts.parallel,
        };
        let r = mail::restore_boxes(&snap, &reader, &picked, &mopts, &MailProgress::default())?;
        rep.seconds = start.elapsed().as_secs_f64();
        rep.first_inbox_s = r.first_inbox_s;
        rep.all_inboxes_s = r.all_inboxes_s;
        rep.files = r.written + r.control_files;
        rep.bytes = r.bytes_written;
        rep.failures.extend(r.damaged);
        rep.errors.extend(r.errors);
        let v = Instant::now();
        verify_mail(&reader, scratch, &picked, &mut rep);
        rep.verify_seconds = v.elapsed().as_secs_f64();
    } else {
        // Not mail: a plain restore of everything, verified the same way.
        rep.kind = "files";
        rep.full = true;
        let target = scratch.join("snapshot");
        let r = restore(
            repo,
            key,
            id,
            &RestoreOptions {
                target: target.clone(),
                subpath: None,
            },
            &Progress::default(),
        )?;
        rep.seconds = start.elapsed().as_secs_f64();
        rep.files = r.files;
        rep.bytes = r.bytes;
        rep.failures.extend(r.damaged);
        rep.errors.extend(r.errors);
        let v = Instant::now();
        match reader.tree(&snap.body.root) {
            Ok(t) => verify_tree(&reader, &t, &target, &mut rep),
            Err(e) => rep.failures.push(format!("root tree: {e}")),
        }
        rep.verify_seconds = v.elapsed().as_secs_f64();
    }
    rep.bytes_read = snap.bytes_read();
    if rep.bytes > 0 {
        rep.projected_full_s =
            Some(rep.snapshot_bytes as f64 / (rep.bytes as f64 / rep.seconds.max(1e-9)));
    }
    Ok(rep)
}
