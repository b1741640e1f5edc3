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
    /// Number of admin keys [default: 3, or one per --admin-pub]
    #[arg(long)]
    pub admins: Option<u32>,
    /// An admin's public key file, made on the admin's own machine by
    /// `holdfast key new admin NAME --out FILE` (repeat per admin): no admin
    /// key is written here and no admin secret passes through init
    #[arg(long = "admin-pub", value_name = "FILE")]
    pub admin_pubs: Vec<PathBuf>,
    /// Admin approvals a destructive proposal needs
    #[arg(long, default_value_t = 2)]
    pub quorum: u32,
    /// Names of client identities (repeat, or separate with commas); the
    /// first gets client.key, others client-NAME.key
    #[arg(long = "client", default_value = "client", value_delimiter = ',')]
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
    /// A passphrase of its own for each admin key: one file per admin, in
    /// order (admin-1.key gets the first line of the first file, …);
    /// admin keys go to different people
    #[arg(long = "admin-passphrase-file", value_name = "FILE")]
    pub admin_passphrase_files: Vec<PathBuf>,
    /// The restore key's passphrase, from the first line of FILE (else the
    /// usual passphrase: --passphrase-file, HOLDFAST_PASSPHRASE…)
    #[arg(long, value_name = "FILE")]
    pub restore_passphrase_file: Option<PathBuf>,
}

/// A client name becomes a key file name and a metric label: a plain
/// host-like name only.
fn check_client_names(names: &[String]) -> Result<()> {
    check_names(names, "client")
}

/// Names of identities (`what`: client, admin): plain host-like names,
/// each once.
pub fn check_names(names: &[String], what: &str) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for n in names {
        let plain = !n.is_empty()
            && n.len() <= 64
            && !n.starts_with('.')
            && n.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !plain {
            bail!(
                "{what} name {n:?}: use letters, digits, '.', '_' and '-' (at most 64){}",
                if what == "client" {
                    ", one name per --client or separated by commas"
                } else {
                    ""
                }
            );
        }
        if !seen.insert(n.as_str()) {
            bail!("{what} name {n:?} given twice");
        }
    }
    Ok(())
}

/// What was on disk before `init`, so that a failed one takes away exactly
/// what it made and the retry finds the places as they were.
struct Undo {
    repo: Option<(PathBuf, bool)>,
    keys: PathBuf,
    keys_existed: bool,
    key_files_before: Vec<std::ffi::OsString>,
}

impl Undo {
    fn note(repo: Option<&str>, keys: &std::path::Path) -> Undo {
        let list = |d: &std::path::Path| -> Vec<std::ffi::OsString> {
            std::fs::read_dir(d)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
                .unwrap_or_default()
        };
        Undo {
            repo: repo.map(|r| {
                let p = PathBuf::from(r);
                let existed = p.symlink_metadata().is_ok();
                (p, existed)
            }),
            keys: keys.to_path_buf(),
            keys_existed: keys.symlink_metadata().is_ok(),
            key_files_before: list(keys),
        }
    }

    /// Removes what the failed init made: the key files that were not
    /// there, the keys directory if it was made, the repository directory
    /// (or, if it existed empty, what was made inside it).
    fn run(self) {
        if let Ok(rd) = std::fs::read_dir(&self.keys) {
            for e in rd.flatten() {
                if !self.key_files_before.contains(&e.file_name()) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if !self.keys_existed {
            let _ = std::fs::remove_dir(&self.keys);
        }
        match self.repo {
            Some((p, false)) => {
                let _ = std::fs::remove_dir_all(&p);
            }
            Some((p, true)) => {
                // It existed, so it was empty (LocalDir::create checks):
                // everything in it is ours.
                if let Ok(rd) = std::fs::read_dir(&p) {
                    for e in rd.flatten() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
            None => {}
        }
    }
}

pub fn run(a: Args) -> Result<ExitCode> {
    check_client_names(&a.clients)?;
    let s3 = a.repo.starts_with("s3://");
    if !s3 && (a.repo.contains("://") || a.repo.starts_with("bundle:")) {
        bail!(
            "{}: a repository is created in a directory or at s3://BUCKET/PREFIX",
            a.repo
        );
    }
    let admin_publics = a
        .admin_pubs
        .iter()
        .map(|f| crate::cmd::key::read_admin_pub(f))
        .collect::<Result<Vec<_>>>()?;
    let admins = match (a.admins, admin_publics.len()) {
        (None, 0) => 3,
        (None, n) => n as u32,
        (Some(k), 0) => k,
        (Some(k), n) if k as usize == n => k,
        (Some(k), n) => bail!("--admins {k} but {n} --admin-pub files: give one per admin"),
    };
    if !admin_publics.is_empty() {
        let names: Vec<String> = admin_publics.iter().map(|(n, _)| n.clone()).collect();
        check_names(&names, "admin")?;
        if let Some(n) = names.iter().find(|n| {
            a.clients.contains(n)
                || ["restore", "replica", "auditor", "vault"].contains(&n.as_str())
        }) {
            bail!("admin name {n:?} is taken by another identity");
        }
        if !a.admin_passphrase_files.is_empty() {
            bail!(
                "--admin-passphrase-file is for admin keys init writes; with --admin-pub it writes none"
            );
        }
    }
    let admin_pws = a
        .admin_passphrase_files
        .iter()
        .map(|f| util::passphrase_from_file(f))
        .collect::<holdfast_repo::Result<Vec<_>>>()?;
    if !admin_pws.is_empty() && admin_pws.len() != admins as usize {
        bail!(
            "{} --admin-passphrase-file for {} admins: give one per admin key",
            admin_pws.len(),
            admins
        );
    }
    let pw = match &a.restore_passphrase_file {
        Some(f) => util::passphrase_from_file(f)?,
        None => util::passphrase(true)?,
    };
    if pw.len() < 8 || admin_pws.iter().any(|p| p.len() < 8) {
        bail!("a passphrase must be at least 8 characters");
    }
    let local = !s3
        && std::fs::read_dir(&a.repo)
            .map(|mut d| d.next().is_none())
            .unwrap_or(true);
    let undo = Undo::note(local.then_some(a.repo.as_str()), &a.keys);
    match create(&a, s3, &pw, admins, &admin_publics).and_then(|id| {
        reseal_admins(&a.keys, &pw, &admin_pws)?;
        Ok(id)
    }) {
        Ok(id) => {
            util::out(format!(
                "created repository {} (config {}), keys in {}",
                a.repo,
                id.short(),
                a.keys.display()
            ));
            if admin_publics.is_empty() {
                util::out(
                    "keep restore.key and the admin keys offline; client.key goes on the backed-up server",
                );
            } else {
                util::out(format!(
                    "config id {}: give it to each admin ({}), who runs \
                     `holdfast key bind --key THEIR.key --config {}`; keep restore.key offline; \
                     client.key goes on the backed-up server",
                    id.to_hex(),
                    admin_publics
                        .iter()
                        .map(|(n, _)| n.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    id.to_hex()
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            // All or nothing: the config is written last, so a failure
            // left no repository, only the layout and keys made so far.
            undo.run();
            Err(e)
        }
    }
}

/// Gives each admin key its own passphrase: `init` sealed every key with
/// the restore passphrase; each admin-N.key is opened with it and sealed
/// again with its own, then put in place (write beside, rename, fsync).
fn reseal_admins(
    keys: &std::path::Path,
    common: &str,
    own: &[zeroize::Zeroizing<String>],
) -> Result<()> {
    for (i, pw) in own.iter().enumerate() {
        let path = keys.join(format!("admin-{}.key", i + 1));
        let key = holdfast_repo::keys::Key::load(&path, || {
            Ok(zeroize::Zeroizing::new(common.to_string()))
        })?;
        let kf = holdfast_core::keyfile::KeyFile::seal(
            key.role,
            &key.name,
            key.config_id,
            &key.secret,
            Some((pw.as_bytes(), InitOptions::default().kdf)),
        )
        .map_err(|e| anyhow::anyhow!("sealing {}: {e}", path.display()))?;
        let new = keys.join(format!("admin-{}.key.new", i + 1));
        let _ = std::fs::remove_file(&new);
        holdfast_repo::keys::write_key_file(&new, &kf)?;
        std::fs::rename(&new, &path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    }
    if !own.is_empty() {
        std::fs::File::open(keys)
            .and_then(|d| d.sync_all())
            .map_err(|e| anyhow::anyhow!("{}: {e}", keys.display()))?;
    }
    Ok(())
}

fn create(
    a: &Args,
    s3: bool,
    pw: &str,
    admins: u32,
    admin_publics: &[(String, [u8; 32])],
) -> Result<holdfast_core::ObjectId> {
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
        admins,
        admin_publics: admin_publics.to_vec(),
        quorum: a.quorum,
        clients: a.clients.clone(),
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
    Ok(init(backend.as_ref(), &a.keys, &opts, pw.as_bytes())?)
}
