use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Result, bail};
use holdfast_core::format::Role;
use holdfast_store::{LocalDir, ObjectStore, S3Store};
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
    /// The repository (made by `holdfast init`): a directory, or
    /// s3://BUCKET/PREFIX on a bucket with Object Lock (endpoint and
    /// credentials from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY)
    #[arg(long)]
    pub repo: String,
    /// Directory for the vault's own state (log, checkpoint, pack owners);
    /// default REPO/vault for a directory, required for S3
    #[arg(long)]
    pub state: Option<PathBuf>,
    /// The vault key (KEYDIR/vault.key): after a rotation of the vault key,
    /// the current one
    #[arg(long)]
    pub key: PathBuf,
    /// The new key of a proposed vault key rotation (`holdfast key new
    /// vault`): when the admins' quorum approved it and the delay passed,
    /// the vault signs and serves TLS with it from the execution on. Then
    /// restart with it as --key and destroy the old one
    #[arg(long, value_name = "FILE")]
    pub next_key: Option<PathBuf>,
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
    /// MiB of upload bodies held in memory at once, over all clients (at
    /// least one largest body, 96 MiB); more wait, then get 503 and retry
    #[arg(long, default_value_t = holdfast_vault::server::BODY_BUDGET_MIB)]
    pub body_budget_mib: u32,
    /// Seconds between reclaims of expired snapshots and unreferenced packs
    #[arg(long, default_value_t = 3600)]
    pub reclaim_every_secs: u64,
    /// Shell command run on every alert, with the text in HOLDFAST_ALERT
    #[arg(long)]
    pub alert_cmd: Option<String>,
    /// Snapshots one client may commit per hour; more are refused and alerted
    #[arg(long, default_value_t = 120)]
    pub max_snapshots_per_hour: usize,
    /// How far (seconds) the clock may be ahead of the log's last entry at
    /// start before the vault stops believing it (reclaims then run on the
    /// anchored time)
    #[arg(long, default_value_t = 7 * 86_400)]
    pub max_clock_gap_secs: u64,
    /// How far (seconds) the clock may be ahead of the log's last entry at
    /// start before the vault holds it: it logs a clock hold and deletes
    /// nothing (no reclaim, no early deletion) until an admin quorum runs
    /// `holdfast propose ack-clock`. Smaller gaps count for deletions only
    /// as fast as the vault has been up
    #[arg(long, default_value_t = 6 * 3600)]
    pub clock_hold_after_secs: u64,
    /// Serve GET /metrics (Prometheus text) and GET / (a read-only
    /// dashboard) over plain HTTP on ADDR: a port alone binds 127.0.0.1
    /// (e.g. 9464 or 127.0.0.1:9464); nothing else is reachable there
    #[arg(long, value_name = "ADDR", value_parser = holdfast_vault::metrics::parse_http_addr)]
    pub http: Option<SocketAddr>,
}

/// glibc's malloc, left to itself, gives the vault's pool threads up to 8
/// arenas per core and raises its mmap threshold to the largest block freed
/// so far, so that upload bodies of every size are cut from the arenas
/// between long-lived state: in a 30-client soak the heap held about twice
/// its live bytes in fragments, and grew with every backup. The vault runs
/// with two arenas and a fixed threshold (blocks over 128 KiB are mapped
/// and given back whole when freed). Safe code cannot call `mallopt`, so
/// the process executes itself once more with `GLIBC_TUNABLES` set (left
/// alone when the operator set it); if that fails it runs untuned.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_malloc() {
    use std::os::unix::process::CommandExt;
    if std::env::var_os("GLIBC_TUNABLES").is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    let _failed = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(
            "GLIBC_TUNABLES",
            "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=131072",
        )
        .exec();
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_malloc() {}

pub fn run(c: VaultCommand) -> Result<ExitCode> {
    tune_malloc();
    let VaultCommand::Serve(a) = c;
    let key = util::load_key(&a.key)?;
    let identity = match (key.role, key.identity()) {
        (Role::Vault, Some(i)) => i.clone(),
        _ => bail!("{}: not a vault key", a.key.display()),
    };
    let next_identity = match &a.next_key {
        Some(p) => {
            let k = util::load_key(p)?;
            if k.config_id != key.config_id {
                bail!("{}: a vault key of another repository", p.display());
            }
            match (k.role, k.identity()) {
                (Role::Vault, Some(i)) if i.public() != identity.public() => Some(i.clone()),
                (Role::Vault, Some(_)) => bail!("--next-key is the same key as --key"),
                _ => bail!("{}: not a vault key", p.display()),
            }
        }
        None => None,
    };
    let (store, state_dir): (Box<dyn ObjectStore>, PathBuf) = if a.repo.starts_with("s3://") {
        let Some(state) = a.state else {
            bail!("an S3 repository needs --state DIR for the vault's log and records");
        };
        (Box::new(S3Store::open(&a.repo, false)?), state)
    } else if a.repo.contains("://") || a.repo.starts_with("bundle:") {
        bail!(
            "{}: the vault serves a directory or s3://BUCKET/PREFIX",
            a.repo
        );
    } else {
        let dir = LocalDir::open(&a.repo)
            .map_err(|_| anyhow::anyhow!("{}: no holdfast repository here", a.repo))?;
        let _ = dir.clean_tmp(Duration::from_secs(0));
        let marker = PathBuf::from(&a.repo).join("vault");
        let state = a.state.unwrap_or_else(|| marker.clone());
        // With its state elsewhere, the vault still leaves `vault/` in the
        // directory it serves: `prune` (which is for plain directories
        // only) must see that a vault keeps these snapshots under locks.
        if state != marker {
            std::fs::create_dir_all(&marker)
                .and_then(|()| {
                    std::fs::write(
                        marker.join("served"),
                        format!(
                            "served by a holdfast vault; its state is in {}\n",
                            state.display()
                        ),
                    )
                })
                .map_err(|e| anyhow::anyhow!("{}: {e}", marker.display()))?;
        }
        (Box::new(dir), state)
    };
    holdfast_vault::serve(ServeOptions {
        store,
        state_dir,
        config_id: key.config_id,
        identity,
        next_identity,
        listen: a.listen,
        vault: Options {
            quota_bytes: a.quota_mib.saturating_mul(1 << 20),
            rate: a.rate,
            burst: a.burst,
            alert_cmd: a.alert_cmd,
            max_snapshots_per_hour: a.max_snapshots_per_hour.max(1),
            max_clock_gap_secs: a.max_clock_gap_secs,
            clock_hold_after_secs: a.clock_hold_after_secs,
        },
        max_connections: a.max_connections.max(1),
        body_budget_mib: a.body_budget_mib,
        reclaim_every: Duration::from_secs(a.reclaim_every_secs.max(1)),
        http: a.http,
    })?;
    Ok(ExitCode::SUCCESS)
}
