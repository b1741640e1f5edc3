use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_repo::snapshots::{entries, with_snapshot};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: crate::cmd::mail::Pick,
    /// An id, a prefix, `latest`, or a time (2026-11-20T12:00:00Z,
    /// 2026-11-20): the newest at or before it, by the vault's time
    pub snapshot: String,
    /// List only under this path, as `ls` prints it or as backed up
    /// (/var/mail/u7); repeatable
    #[arg(long)]
    pub path: Vec<String>,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("ls")?;
    let id = a.pick.resolve(&repo, &key, &a.snapshot, &a.path)?;
    let mut list = with_snapshot(&repo, &key, &id, entries)?;
    if !a.path.is_empty() {
        let (_, secret) = key.require_restore("ls")?;
        let body = repo.open_body(&id, &repo.load_snapshot(&id)?, secret)?;
        let mut want = Vec::new();
        for p in &a.path {
            want.push(
                holdfast_repo::repo::tree_path(&body, p)?
                    .join("/")
                    .into_bytes(),
            );
        }
        list.retain(|e| {
            want.iter().any(|w| {
                w.is_empty()
                    || e.path == *w
                    || (e.path.starts_with(w) && e.path.get(w.len()) == Some(&b'/'))
            })
        });
    }
    if a.json {
        let v: Vec<_> = list
            .iter()
            .map(|e| {
                serde_json::json!({
                    "path": util::lossy(&e.path), "type": e.kind, "size": e.size,
                    "mode": format!("{:04o}", e.mode), "mtime": util::time(e.mtime_s * 1_000_000_000),
                })
            })
            .collect();
        util::json(&serde_json::Value::Array(v));
    } else {
        for e in &list {
            util::out(format!(
                "{:<7} {:04o} {:>12} {}  {}",
                e.kind,
                e.mode,
                e.size,
                util::time(e.mtime_s * 1_000_000_000),
                util::lossy(&e.path)
            ));
        }
    }
    Ok(ExitCode::SUCCESS)
}
