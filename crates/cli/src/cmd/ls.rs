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
    /// Choose `latest` (or a prefix) among this client's snapshots only;
    /// `latest` needs it when several clients have snapshots
    #[arg(long, value_name = "NAME")]
    pub client: Option<String>,
    pub snapshot: String,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("ls")?;
    let (id, _) = repo.resolve_for(&a.snapshot, a.client.as_deref())?;
    let list = with_snapshot(&repo, &key, &id, entries)?;
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
