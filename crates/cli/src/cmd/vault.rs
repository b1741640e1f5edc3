use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use holdfast_core::format::Role;
use holdfast_vault::ServeOptions;
use holdfast_vault::state::Options;

use crate::util;

#[derive(clap::Subcommand)]
pub enum VaultCommand {
    /// Serve a repository directory over HTTPS to clients, admins, replicas and auditors
    Serve(ServeArgs),
}

#[derive(clap::Args)]
pub struct ServeArgs {
    /// The repository directory (made by `holdfast init`)
    #[arg(long)]
    pub repo: PathBuf,
    /// The vault key (KEYDIR/vault.key)
    #[arg(long)]
    pub key: PathBuf,
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0 picks one; the address is printed)
    #[arg(long)]
    pub listen: SocketAddr,
    /// Storage quota per client identity, in MiB of pack data
    #[arg(long, default_value_t = 1 << 20)]
    pub quota_mib: u64,
    /// Requests per second per identity
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// Request burst per identity
    #[arg(long, default_value_t = 2000.0)]
    pub burst: f64,
    /// Concurrent connections
    #[arg(long, default_value_t = 32)]
    pub max_connections: usize,
    /// Seconds between reclaims of expired snapshots and unreferenced packs
    #[arg(long, default_value_t = 3600)]
    pub reclaim_every_secs: u64,
    /// Shell command run on every alert, with the text in HOLDFAST_ALERT
    #[arg(long)]
    pub alert_cmd: Option<String>,
}

pub fn run(c: VaultCommand) -> Result<ExitCode> {
    let VaultCommand::Serve(a) = c;
    let key = util::load_key(&a.key)?;
    let identity = match (key.role, key.identity()) {
        (Role::Vault, Some(i)) => i.clone(),
        _ => bail!("{}: not a vault key", a.key.display()),
    };
    holdfast_vault::serve(ServeOptions {
        dir: a.repo,
        identity,
        listen: a.listen,
        vault: Options {
            quota_bytes: a.quota_mib.saturating_mul(1 << 20),
            rate: a.rate,
            burst: a.burst,
            alert_cmd: a.alert_cmd,
        },
        max_connections: a.max_connections.max(1),
        reclaim_every: Duration::from_secs(a.reclaim_every_secs.max(1)),
    })?;
    Ok(ExitCode::SUCCESS)
}
