use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// Any key; with the restore key, every blob is decrypted and checked
    #[arg(long)]
    pub key: PathBuf,
    /// Read every pack in full and check it against its id
    #[arg(long)]
    pub read_data: bool,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    let mut r = util::with_progress("verify", |p| {
        holdfast_repo::verify::verify(&repo, &key, a.read_data, p)
    })?;
    if let Some(spec) = a.repo.strip_prefix("bundle:") {
        let dirs: Vec<PathBuf> = spec
            .split(',')
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .collect();
        r.problems
            .extend(holdfast_repo::bundle::check_bundles(&repo, &dirs));
    }

    if a.json {
        util::json(&serde_json::json!([{
            "snapshots": r.snapshots, "packs": r.packs, "blobs": r.blobs,
            "bytes_read": r.bytes_read, "decrypted": r.decrypted,
            "unreferenced_packs": r.unreferenced_packs, "problems": r.problems,
        }]));
    } else {
        util::print_problems(&r.problems);
        util::out(format!(
            "checked {} snapshots, {} packs, {} blobs{}{}: {} problem(s)",
            r.snapshots,
            r.packs,
            r.blobs,
            if a.read_data {
                format!(", read {}", util::bytes(r.bytes_read))
            } else {
                String::new()
            },
            if r.decrypted { ", decrypted" } else { "" },
            r.problems.len()
        ));
    }
    Ok(util::problems_exit("verify", &r.problems))
}
