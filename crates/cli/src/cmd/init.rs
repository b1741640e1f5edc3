use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, bail};
use holdfast_core::format::Retention;
use holdfast_repo::init::{InitOptions, init};
use holdfast_store::{Backend, Kind, LocalDir, S3Store};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    /// Where the repository goes (a new or empty directory)
    pub repo: String,
    /// Directory for the key files (restore.key, admin-N.key, client.key, replica.key, auditor.key)
    #[arg(long)]
    pub keys: PathBuf,
    /// Number of admin keys
    #[arg(long, default_value_t = 3)]
    pub admins: u32,
    /// Admin approvals a destructive proposal needs
    #[arg(long, default_value_t = 2)]
    pub quorum: u32,
    /// Names of client identities; the first gets client.key, others client-NAME.key
    #[arg(long = "client", default_value = "client")]
    pub clients: Vec<String>,
    /// Keep every snapshot at least this many days
    #[arg(long, default_value_t = 14)]
    pub keep_within_days: u64,
    /// Keep every snapshot at least this many seconds (overrides --keep-within-days; for drills and tests)
    #[arg(long)]
    pub keep_within_secs: Option<u64>,
    /// Keep the first snapshot of this many days, weeks, months, years
    #[arg(long, default_value_t = 14)]
    pub keep_daily: u32,
    #[arg(long, default_value_t = 8)]
    pub keep_weekly: u32,
    #[arg(long, default_value_t = 12)]
    pub keep_monthly: u32,
    #[arg(long, default_value_t = 7)]
    pub keep_yearly: u32,
    /// Seconds a quorum proposal waits for vetoes before it can run
    #[arg(long, default_value_t = 72 * 3600)]
    pub delay_secs: u64,
    /// Seconds unreferenced data is kept before it may be reclaimed
    #[arg(long, default_value_t = 86_400)]
    pub grace_secs: u64,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let s3 = a.repo.starts_with("s3://");
    if !s3 && (a.repo.contains("://") || a.repo.starts_with("bundle:")) {
        bail!(
            "{}: a repository is created in a directory or at s3://BUCKET/PREFIX",
            a.repo
        );
    }
    let pw = util::passphrase(true)?;
    if pw.len() < 8 {
        bail!("the passphrase must be at least 8 characters");
    }
    let backend: Box<dyn Backend> = if s3 {
        // Creates the bucket with Object Lock if missing; refuses one without.
        let b = S3Store::open(&a.repo, true)?;
        if !b.list(Kind::Snapshot)?.is_empty() || b.size(Kind::Config, "config").is_ok() {
            bail!("{}: a repository exists there already", a.repo);
        }
        Box::new(b)
    } else {
        Box::new(LocalDir::create(&a.repo)?)
    };
    let opts = InitOptions {
        admins: a.admins,
        quorum: a.quorum,
        clients: a.clients,
        retention: Retention {
            keep_within_secs: a.keep_within_secs.unwrap_or(a.keep_within_days * 86_400),

            daily: a.keep_daily,
            weekly: a.keep_weekly,
            monthly: a.keep_monthly,
            yearly: a.keep_yearly,
        },
        delay_secs: a.delay_secs,
        grace_secs: a.grace_secs,
        ..Default::default()
    };
    let id = init(backend.as_ref(), &a.keys, &opts, pw.as_bytes())?;
    util::out(format!(
        "created repository {} (config {}), keys in {}",
        a.repo,
        id.short(),
        a.keys.display()
    ));
    util::out(
        "keep restore.key and the admin keys offline; client.key goes on the backed-up server",
    );
    Ok(ExitCode::SUCCESS)
}
