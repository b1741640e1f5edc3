use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

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
    pub snapshot_a: String,
    pub snapshot_b: String,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("diff")?;
    let (x, _) = repo.resolve_for(&a.snapshot_a, a.client.as_deref())?;
    let (y, _) = repo.resolve_for(&a.snapshot_b, a.client.as_deref())?;
    let d = holdfast_repo::snapshots::diff(&repo, &key, &x, &y)?;
    let rows = [
        ("+", "added", &d.added),
        ("-", "removed", &d.removed),
        ("M", "modified", &d.modified),
        ("U", "metadata", &d.metadata),
    ];
    if a.json {
        let v: Vec<_> = rows
            .iter()
            .flat_map(|(_, what, list)| {
                list.iter()
                    .map(move |p| serde_json::json!({"change": what, "path": util::lossy(p)}))
            })
            .collect();
        util::json(&serde_json::Value::Array(v));
    } else {
        for (mark, _, list) in rows {
            for p in list {
                util::out(format!("{mark} {}", util::lossy(p)));
            }
        }
        util::out(format!(
            "{} added, {} removed, {} modified, {} metadata only",
            d.added.len(),
            d.removed.len(),
            d.modified.len(),
            d.metadata.len()
        ));
    }
    Ok(ExitCode::SUCCESS)
}
