//! The `holdfast` command: argument parsing and output only. Everything it
//! does lives in `holdfast-repo`.
//!
//! Exit status: 0 success; 1 error (one line on stderr); 3 partial success
//! (snapshot written or restore done, but some files could not be read or
//! written — they are listed); 4 damage or tampering detected.

mod cmd;
mod metrics_file;
mod shares_arg;
mod util;

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "holdfast",
    version,
    about = "Deduplicating, end-to-end encrypted backups that survive the attacker who owns every server",
    long_about = None,
    after_help = "REPO is a directory (the embedded default), https://HOST:PORT (a vault), \
s3://BUCKET/PREFIX or bundle:DIR[,DIR...] (offline bundles, oldest first). SNAPSHOT is an id, \
a unique prefix, or `latest`: the newest by the vault's time (never a client's clock) of one \
client, named with --client when several have snapshots.\nPassphrase-protected keys \
(restore, admin) read --passphrase-file (HOLDFAST_PASSPHRASE_FILE), HOLDFAST_PASSPHRASE_COMMAND \
or HOLDFAST_PASSPHRASE, else ask on the terminal. --repo and --key default to HOLDFAST_REPO \
and HOLDFAST_KEY; HOLDFAST_CACHE_DIR moves the cache.\nExit status: 0 ok, \
1 error, 3 partial (files listed), 4 damage or tampering detected."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Read the passphrase of restore and admin keys from the first line
    /// of FILE
    #[arg(
        long,
        global = true,
        env = "HOLDFAST_PASSPHRASE_FILE",
        value_name = "FILE"
    )]
    passphrase_file: Option<std::path::PathBuf>,
    /// Without a terminal (cron, systemd), print a progress line to stderr
    /// every SECS seconds
    #[arg(
        long,
        global = true,
        env = "HOLDFAST_PROGRESS_INTERVAL",
        value_name = "SECS"
    )]
    progress_interval: Option<u64>,
    /// Start from this chain of vault keys: a `….vaultkeys` file copied
    /// from the state directory of a reader that synced after a vault key
    /// rotation (a new or reinstalled reader then refuses the old key)
    #[arg(long, global = true, env = "HOLDFAST_VAULT_KEYS", value_name = "FILE")]
    vault_keys: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create a repository and write one key file per role into KEYDIR
    Init(cmd::init::Args),
    /// Back up files and directories (needs a client key)
    Backup(cmd::backup::Args),
    /// List snapshots (details need the restore key)
    Snapshots(cmd::snapshots::Args),
    /// List the files in a snapshot (needs the restore key): type, mode,
    /// owner (uid:gid as stored), size, mtime, path, `-> target` for a
    /// symlink
    Ls(cmd::ls::Args),
    /// Compare two snapshots (needs the restore key)
    Diff(cmd::diff::Args),
    /// Restore a snapshot into a new directory (needs the restore key)
    Restore(cmd::restore::Args),
    /// Check the repository; --read-data reads and checks every byte
    Verify(cmd::verify::Args),
    /// Manage identities
    #[command(subcommand)]
    Key(cmd::key::KeyCommand),
    /// Run the vault
    #[command(subcommand)]
    Vault(cmd::vault::VaultCommand),
    /// Propose a destructive change (needs quorum, then a veto window)
    Propose(cmd::govern::ProposeArgs),
    /// Approve a proposal (admin key)
    Approve(cmd::govern::VoteArgs),
    /// Veto a proposal (any one admin stops it)
    Veto(cmd::govern::VoteArgs),
    /// List proposals and their status
    Proposals(cmd::govern::ListArgs),
    /// Extend a snapshot's retention lock (admin key; never shortens)
    Lock(cmd::govern::LockArgs),
    /// Check the whole vault log against the repository (auditor key)
    Audit(cmd::audit::Args),
    /// Where this key's history stands, compared with replicas, bundles or
    /// another party's checkpoint (a vault showing two histories: exit 4)
    Status(cmd::status::Args),
    /// Write a self-contained (optionally incremental) bundle for offline media
    Export(cmd::export::Args),
    /// Pull replicas: copies the vault cannot reach
    #[command(subcommand)]
    Replica(cmd::replica::ReplicaCommand),
    /// The vault checkpoint this key last verified (kept in the cache dir)
    #[command(subcommand)]
    Checkpoint(CheckpointCommand),
    /// Mail: list Maildirs in a snapshot, restore them into live
    /// mailboxes (nothing live changes), export as mbox
    #[command(subcommand)]
    Mail(cmd::mail::MailCommand),
    /// A restore drill: restore a sample (or all) into scratch, verify every
    /// byte, measure the rate; exit 4 when anything fails to verify
    Drill(cmd::drill::Args),
    /// Mount every snapshot read-only (FUSE): snapshots/, by-client/,
    /// by-host/; each byte checked against its id when read
    Mount(cmd::mount::Args),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell)
    Completion(cmd::completion::Args),
    /// What the repository holds per client: snapshots, stored bytes, dedup
    Stats(cmd::stats::Args),
    /// Files whose name matches a pattern, in every snapshot (restore key)
    Find(cmd::find::Args),
    /// Print the manual page, or write one per subcommand with --dir
    Man(cmd::man::Args),
    /// What the retention policy keeps and when each lock ends; changes
    /// nothing. Retention is forget+prune: the vault reclaims a snapshot
    /// once its lock has passed (alias: forget)
    #[command(alias = "forget")]
    Retention(cmd::retention::Args),
    /// Remove what the retention policy no longer keeps from a plain
    /// directory repository that never had a vault (admin key; no quorum:
    /// there is no vault and no lock). Never on a vault, replica or bundle
    Prune(cmd::retention::PruneArgs),
}

#[derive(Subcommand)]
enum CheckpointCommand {
    /// Show the held checkpoint
    Show(CheckpointArgs),
    /// Move the held checkpoint aside (kept as evidence): the next contact
    /// trusts the vault's current log as a first contact does. Only when
    /// this machine lost or damaged it, or after a documented recovery of
    /// the vault; never to silence a rollback you cannot explain.
    Forget(CheckpointArgs),
}

#[derive(clap::Args)]
struct CheckpointArgs {
    /// The key whose checkpoint it is (a passphrase-protected key asks for
    /// its passphrase: the file is named after the key's public identity)
    #[arg(long)]
    key: std::path::PathBuf,
}

fn checkpoint(c: CheckpointCommand) -> anyhow::Result<ExitCode> {
    let (forget, a) = match c {
        CheckpointCommand::Show(a) => (false, a),
        CheckpointCommand::Forget(a) => (true, a),
    };
    let key = util::load_key(&a.key)?;
    let public = key
        .identity()
        .ok_or_else(|| anyhow::anyhow!("this key never talks to a vault"))?
        .public();
    let path = holdfast_store::VaultBackend::checkpoint_path(
        &util::checkpoint_dir(),
        &key.config_id,
        &public,
    );
    if forget {
        match holdfast_store::VaultBackend::forget_checkpoint(&path) {
            Ok(Some(aside)) => util::out(format!(
                "forgot {}: kept as {}; the next contact with the vault is a first contact",
                path.display(),
                aside.display()
            )),
            Ok(None) => util::out(format!("no checkpoint held at {}", path.display())),
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        }
        return Ok(ExitCode::SUCCESS);
    }
    match holdfast_store::VaultBackend::read_held_checkpoint(&path, &key.config_id, None)? {
        Some(cp) => util::out(format!(
            "{}: size {}, root {}, vault time {}",
            path.display(),
            cp.size,
            holdfast_core::id::hex(&cp.root),
            util::time(cp.time_ns)
        )),
        None => util::out(format!("no checkpoint held at {}", path.display())),
    }
    Ok(ExitCode::SUCCESS)
}

fn main() -> ExitCode {
    // A wrong argument exits 1 like every other bad input (clap's own
    // default is 2); --help and --version exit 0.
    let cli = match util::with_env_defaults(<Cli as clap::CommandFactory>::command())
        .try_get_matches_from(shares_arg::fold(std::env::args_os()))
        .and_then(|m| <Cli as clap::FromArgMatches>::from_arg_matches(&m))
    {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(u8::from(e.use_stderr()));
        }
    };
    util::set_passphrase_file(cli.passphrase_file);
    util::set_progress_interval(cli.progress_interval);
    holdfast_store::VaultBackend::seed_vault_keys(cli.vault_keys);
    let r = match cli.command {
        Command::Init(a) => cmd::init::run(a),
        Command::Backup(a) => cmd::backup::run(a),
        Command::Snapshots(a) => cmd::snapshots::run(a),
        Command::Ls(a) => cmd::ls::run(a),
        Command::Diff(a) => cmd::diff::run(a),
        Command::Restore(a) => cmd::restore::run(a),
        Command::Verify(a) => cmd::verify::run(a),
        Command::Key(k) => cmd::key::run(k),
        Command::Vault(v) => cmd::vault::run(v),
        Command::Propose(a) => cmd::govern::propose(a),
        Command::Approve(a) => cmd::govern::vote(a, holdfast_core::governance::VoteKind::Approve),
        Command::Veto(a) => cmd::govern::vote(a, holdfast_core::governance::VoteKind::Veto),
        Command::Proposals(a) => cmd::govern::list(a),
        Command::Lock(a) => cmd::govern::lock(a),
        Command::Audit(a) => cmd::audit::run(a),
        Command::Status(a) => cmd::status::run(a),
        Command::Replica(c) => cmd::replica::run(c),
        Command::Export(a) => cmd::export::run(a),
        Command::Checkpoint(c) => checkpoint(c),
        Command::Mail(c) => cmd::mail::run(c),
        Command::Drill(a) => cmd::drill::run(a),
        Command::Mount(a) => cmd::mount::run(a),
        Command::Stats(a) => cmd::stats::run(a),
        Command::Find(a) => cmd::find::run(a),
        Command::Retention(a) => cmd::retention::run(a),
        Command::Prune(a) => cmd::retention::prune(a),
        Command::Man(a) => cmd::man::run(
            a,
            util::with_env_defaults(<Cli as clap::CommandFactory>::command()),
        ),
        Command::Completion(a) => cmd::completion::run(
            a,
            util::with_env_defaults(<Cli as clap::CommandFactory>::command()),
        ),
    };
    for n in holdfast_repo::take_notes() {
        eprintln!("holdfast: note: {n}");
    }
    match r {
        Ok(code) if code == ExitCode::SUCCESS && util::LOG_TAMPERED.load(Ordering::Relaxed) => {
            ExitCode::from(util::EXIT_DAMAGE)
        }
        Ok(code) => code,
        Err(e) => {
            let code = util::exit_code_for(&e);
            eprintln!("holdfast: {}", util::one_line(&e));
            code
        }
    }
}
