//! Shared pieces of the command line: opening repositories and keys,
//! passphrases, progress, output that survives a closed pipe.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use holdfast_core::merkle::Checkpoint;
use holdfast_core::vaultlog::split_log;
use holdfast_repo::keys::Key;
use holdfast_repo::logview::LogEntries;
use holdfast_repo::{Backend, Progress, Repository};
use holdfast_store::{BundleSet, Kind, LocalDir, S3Store, StoreError, VaultBackend, read_regular};
use zeroize::Zeroizing;

pub const EXIT_PARTIAL: u8 = 3;
pub const EXIT_DAMAGE: u8 = 4;

/// The largest vault log read from a replica or bundle directory.
const MAX_LOG: u64 = 4 << 30;

/// Connects to a vault as the holder of `key`; the last checkpoint this
/// user verified is kept in the cache directory.
fn connect_vault(repo: &str, key: &Key) -> Result<VaultBackend> {
    let id = key
        .identity()
        .ok_or_else(|| anyhow!("this key cannot sign requests to a vault"))?
        .clone();
    Ok(VaultBackend::connect(
        repo,
        id,
        key.config_id,
        &checkpoint_dir(),
    )?)
}

/// Opens the backend a REPO argument names, as the holder of `key`.
pub fn backend(repo: &str, key: &Key) -> Result<Arc<dyn Backend>> {
    if repo.starts_with("https://") {
        return Ok(Arc::new(connect_vault(repo, key)?));
    }
    if repo.starts_with("http://") {
        bail!("{repo}: the vault is only reached over https://");
    }
    if let Some(spec) = repo.strip_prefix("bundle:") {
        let set = BundleSet::open(spec)?;
        bases_given(spec)?;
        return Ok(Arc::new(set));
    }
    if repo.starts_with("s3://") {
        return Ok(Arc::new(S3Store::open(repo, false)?));
    }
    // Temp files of crashed writers are cleaned by the first write, never
    // by a command that only reads (the directory may be a hostile copy).
    let b = LocalDir::open(repo).map_err(|_| anyhow!("{repo}: no holdfast repository here"))?;
    Ok(Arc::new(b))
}

/// An incremental bundle read without the bundles it was made `--since`
/// would fail on every object they hold: refused at once, naming them.
/// Bundles are matched by directory name (media get mounted elsewhere); a
/// renamed base still passes when as many earlier bundles are given.
fn bases_given(spec: &str) -> Result<()> {
    let dirs: Vec<&str> = spec.split(',').filter(|s| !s.is_empty()).collect();
    let name = |p: &str| {
        Path::new(p)
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default()
    };
    for (i, d) in dirs.iter().enumerate() {
        let Ok(raw) = read_regular(&Path::new(d).join("manifest.json"), 1 << 30) else {
            continue; // BundleSet and verify report it
        };
        let Ok(m) = serde_json::from_slice::<serde_json::Value>(&raw) else {
            continue;
        };
        let since: Vec<String> = m["since"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        let earlier = &dirs[..i];
        let missing: Vec<&String> = since
            .iter()
            .filter(|s| !earlier.iter().any(|e| name(e) == name(s)))
            .collect();
        if !missing.is_empty() && earlier.len() < since.len() {
            let chain: Vec<&str> = missing
                .iter()
                .map(|s| s.as_str())
                .chain(earlier.iter().copied())
                .chain(std::iter::once(*d))
                .collect();
            bail!(
                "bundle {d} is incremental: it holds only what {} lacked; give {} first, \
                 oldest first: --repo bundle:{}",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                if missing.len() == 1 { "it" } else { "them" },
                chain.join(",")
            );
        }
    }
    Ok(())
}

/// `--passphrase-file` (or `HOLDFAST_PASSPHRASE_FILE`, through clap), set
/// once by `main` before any command runs.
static PASSPHRASE_FILE: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

pub fn set_passphrase_file(p: Option<PathBuf>) {
    if let Some(p) = p {
        let _ = PASSPHRASE_FILE.set(p);
    }
}

/// The largest passphrase file read.
const MAX_PASSPHRASE_FILE: u64 = 64 * 1024;

fn usage(msg: impl Into<String>) -> holdfast_repo::Error {
    holdfast_repo::Error::Usage(msg.into())
}

/// The first line of `bytes`, without its line ending; never empty.
fn first_line(bytes: &[u8], from: &str) -> holdfast_repo::Result<Zeroizing<String>> {
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let s = std::str::from_utf8(line).map_err(|_| usage(format!("{from}: not UTF-8")))?;
    if s.is_empty() {
        return Err(usage(format!("{from}: empty passphrase")));
    }
    Ok(Zeroizing::new(s.to_string()))
}

/// The passphrase from a file: its first line.
pub fn passphrase_from_file(path: &Path) -> holdfast_repo::Result<Zeroizing<String>> {
    use std::io::Read;
    let from = format!("passphrase file {}", path.display());
    let f = std::fs::File::open(path).map_err(|e| usage(format!("{from}: {e}")))?;
    let mut buf = Zeroizing::new(Vec::new());
    f.take(MAX_PASSPHRASE_FILE)
        .read_to_end(&mut buf)
        .map_err(|e| usage(format!("{from}: {e}")))?;
    first_line(&buf, &from)
}

/// The passphrase a command prints (first line of its stdout), as restic's
/// `--password-command`: it may prompt on the terminal itself (stdin and
/// stderr are the caller's); its output is never shown.
fn passphrase_from_command(cmd: &str) -> holdfast_repo::Result<Zeroizing<String>> {
    let from = "HOLDFAST_PASSPHRASE_COMMAND";
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdout(std::process::Stdio::piped())
        .output()
        .map_err(|e| usage(format!("{from}: cannot run it: {e}")))?;
    let stdout = Zeroizing::new(out.stdout);
    if !out.status.success() {
        return Err(usage(format!("{from} failed ({})", out.status)));
    }
    first_line(&stdout, from)
}

/// [`passphrase`], saying first what it is for when it will be asked on
/// the terminal (no file, command or variable gives it).
pub fn passphrase_for(what: &str, confirm: bool) -> holdfast_repo::Result<Zeroizing<String>> {
    let given = PASSPHRASE_FILE.get().is_some()
        || std::env::var_os("HOLDFAST_PASSPHRASE_COMMAND").is_some_and(|c| !c.is_empty())
        || std::env::var_os("HOLDFAST_PASSPHRASE").is_some();
    if !given && std::io::stdin().is_terminal() {
        eprintln!("passphrase for {what}:");
    }
    passphrase(confirm)
}

/// The passphrase of restore and admin keys, from exactly one of:
/// `--passphrase-file`/`HOLDFAST_PASSPHRASE_FILE`,
/// `HOLDFAST_PASSPHRASE_COMMAND`, `HOLDFAST_PASSPHRASE`; else the terminal.
/// Two of them set at once is refused rather than guessed between.
pub fn passphrase(confirm: bool) -> holdfast_repo::Result<Zeroizing<String>> {
    let file = PASSPHRASE_FILE.get();
    let command = std::env::var("HOLDFAST_PASSPHRASE_COMMAND")
        .ok()
        .filter(|c| !c.is_empty());
    let direct = std::env::var("HOLDFAST_PASSPHRASE")
        .ok()
        .map(Zeroizing::new);
    let given = usize::from(file.is_some())
        + usize::from(command.is_some())
        + usize::from(direct.is_some());
    if given > 1 {
        return Err(usage(
            "more than one passphrase source is set: use one of --passphrase-file \
             (HOLDFAST_PASSPHRASE_FILE), HOLDFAST_PASSPHRASE_COMMAND, HOLDFAST_PASSPHRASE",
        ));
    }
    if let Some(f) = file {
        return passphrase_from_file(f);
    }
    if let Some(c) = command {
        return passphrase_from_command(&c);
    }
    if let Some(p) = direct {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(holdfast_repo::Error::Usage(
            "a passphrase is needed: give --passphrase-file (HOLDFAST_PASSPHRASE_FILE), \
             HOLDFAST_PASSPHRASE_COMMAND or HOLDFAST_PASSPHRASE, or run on a terminal"
                .into(),
        ));
    }
    let p = Zeroizing::new(
        rpassword::prompt_password("holdfast passphrase: ")
            .map_err(|e| holdfast_repo::Error::Usage(format!("reading passphrase: {e}")))?,
    );
    if confirm {
        let again = Zeroizing::new(
            rpassword::prompt_password("again: ")
                .map_err(|e| holdfast_repo::Error::Usage(format!("reading passphrase: {e}")))?,
        );
        if *p != *again {
            return Err(holdfast_repo::Error::Usage("passphrases differ".into()));
        }
    }
    Ok(p)
}

/// A new passphrase for `key`: the first line of `file`, else asked twice
/// on the terminal. Never from the environment, which holds the old one.
pub fn new_passphrase(file: Option<&Path>, key: &Path) -> Result<Zeroizing<String>> {
    let p = match file {
        Some(f) => passphrase_from_file(f)?,
        None => {
            if !std::io::stdin().is_terminal() {
                bail!(
                    "the new passphrase is needed: give --new-passphrase-file FILE, or run on a terminal"
                );
            }
            eprintln!("new passphrase for {}:", key.display());
            let p = Zeroizing::new(rpassword::prompt_password("new passphrase: ")?);
            let again = Zeroizing::new(rpassword::prompt_password("again: ")?);
            if *p != *again {
                bail!("passphrases differ");
            }
            p
        }
    };
    if p.chars().count() < 8 {
        bail!("a passphrase must be at least 8 characters");
    }
    Ok(p)
}

pub fn load_key(path: &Path) -> Result<Key> {
    if let Some(shares) = crate::shares_arg::shares_for(path) {
        return Ok(holdfast_repo::keys::load_shares(shares, |_| {
            passphrase(false)
        })?);
    }
    let key = Key::load(path, || passphrase(false))?;
    if key.config_id == crate::cmd::key::UNBOUND {
        bail!(
            "{}: this admin key is not tied to a repository yet: run `holdfast key bind --key {} \
             --config ID` with the config id init printed",
            path.display(),
            path.display()
        );
    }
    Ok(key)
}

/// Opens REPO with KEY: the config must be the one the key pins.
/// After a backup through a vault: its snapshot must be in the vault's
/// signed log (in a checkpoint that extends the one this client held),
/// added by this client and dated as the vault's clock may be from this
/// machine's (at most 10 minutes behind it, 7 days ahead). Otherwise the vault host took it without logging it, and could
/// log it later, out of time (to fake a burst) or never: tampering (exit 4).
pub fn check_logged(
    url: &str,
    key: &Key,
    repo: &Repository,
    snapshot: &holdfast_core::ObjectId,
) -> Result<()> {
    use holdfast_core::vaultlog::{Entry, Event};
    // The connection the command opened the vault with, if it did.
    let opened = OPENED_VAULT
        .lock()
        .unwrap()
        .as_ref()
        .filter(|(u, _)| u == url)
        .map(|(_, v)| v.clone());
    let v = match opened {
        Some(v) => v,
        None => Arc::new(connect_vault(url, key)?),
    };
    let cp = v.sync_checkpoint()?;
    let me = key.identity().map(|i| i.public());
    let mut found = None;
    let mut look = |e: &[u8]| {
        if found.is_some() {
            return;
        }
        if let Ok(e) = Entry::decode(e)
            && let Event::SnapshotAdded {
                snapshot: s,
                client,
                ..
            } = e.event
            && s == *snapshot
            && Some(client) == me
        {
            found = Some(e.time_ns);
        }
    };
    // Only the entries after those the command read: appended to the
    // client's copy of the log (checked against the new checkpoint's root),
    // or fetched.
    match repo.log.as_ref().map(|l| &l.entries) {
        Some(LogEntries::File(lf)) if lf.verified() => {
            let mut lf = lf.clone();
            let n = lf.extend(&v, &cp, &mut look)?;
            debug_logcache(lf.len() - n, n, None);
        }
        entries => {
            let from = entries.map_or(0, |e| e.len());
            for e in v.log_entries(from, cp.size)? {
                look(&e);
            }
        }
    }
    let now = holdfast_repo::now_ns();
    const NS: i64 = 1_000_000_000;
    match found {
        None => Err(holdfast_repo::Error::Tamper(format!(
            "the vault accepted snapshot {} but its signed log does not hold it",
            snapshot.short()
        ))
        .into()),
        // The vault takes a snapshot whose client time is at most 10 min
        // ahead of its clock or 7 days behind it: its log time must fall
        // in the same span around this machine's clock.
        Some(t) if t < now - 660 * NS || t > now + 7 * 86_400 * NS + 60 * NS => {
            Err(holdfast_repo::Error::Tamper(format!(
                "the vault logged snapshot {} dated {} s from this machine's clock",
                snapshot.short(),
                (t - now) / 1_000_000_000
            ))
            .into())
        }
        Some(_) => Ok(()),
    }
}

/// A plain directory repository's lock, `DIR/lock` (an advisory `flock`):
/// `backup` holds it shared from before it lists the packs until its
/// snapshot is written, `prune` holds it exclusively, so a prune never
/// deletes a pack that a running backup reuses. The kernel releases it when
/// the process ends, however it ends. `None` for other repositories, or
/// when the lock file can be neither created nor opened.
pub fn dir_lock(repo: &str, exclusive: bool) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::OpenOptionsExt;
    if repo.contains("://") || repo.starts_with("bundle:") || !Path::new(repo).is_dir() {
        return Ok(None);
    }
    let path = Path::new(repo).join("lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
        .or_else(|_| std::fs::File::open(&path));
    let Ok(f) = f else {
        return Ok(None);
    };
    if exclusive {
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => {
                bail!("{repo}: a backup is writing to this repository; prune when it has finished")
            }
            Err(std::fs::TryLockError::Error(e)) => bail!("{}: {e}", path.display()),
        }
    } else {
        match f.try_lock_shared() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => {
                eprintln!("holdfast: waiting for a prune of {repo} to finish");
                f.lock_shared()
                    .map_err(|e| anyhow!("{}: {e}", path.display()))?;
                Ok(Some(f))
            }
            Err(std::fs::TryLockError::Error(e)) => bail!("{}: {e}", path.display()),
        }
    }
}

pub fn open(repo: &str, key: &Path) -> Result<(Repository, Key)> {
    if repo.starts_with("https://") {
        let (_, r, k) = open_vault(repo, key)?;
        return Ok((r, k));
    }
    let key = load_key(key)?;
    let backend = backend(repo, &key)?;
    same_repository(backend.as_ref(), &key)?;
    let mut r = Repository::open(backend, &key)?;
    if let Some((entries, cp)) = local_log(repo)? {
        attach_log(&mut r, entries, &cp);
    }
    Ok((r, key))
}

/// Set when a log read by this process broke a rule: the command then
/// exits 4 whatever else it did.
pub static LOG_TAMPERED: AtomicBool = AtomicBool::new(false);

/// Folds the vault's log into `r` (so `latest` and every listing use the
/// vault's time) and reports what the fold found, once.
fn attach_log(r: &mut Repository, entries: impl Into<LogEntries>, cp: &Checkpoint) {
    r.attach_log(entries, cp);
    let problems = r.log_problems();
    if !problems.is_empty() {
        for p in problems {
            eprintln!("holdfast: TAMPERING DETECTED in the vault's log: {p}");
        }
        LOG_TAMPERED.store(true, Ordering::Relaxed);
    }
}

/// The log of a vault, replica or bundle directory (`vault/`), if any.
pub fn local_log(repo: &str) -> Result<Option<(Vec<Vec<u8>>, Checkpoint)>> {
    if repo.starts_with("s3://") {
        return Ok(None);
    }
    let dir = match repo.strip_prefix("bundle:") {
        Some(spec) => PathBuf::from(spec.split(',').next_back().unwrap_or("")),
        None => PathBuf::from(repo),
    }
    .join("vault");
    // A received bundle or replica is untrusted: regular files of bounded
    // size only; anything else there (a symlink, a FIFO) is damage, exit 4.
    let read = |name: &str, max: u64| match read_regular(&dir.join(name), max) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(
            holdfast_repo::Error::Corrupt(format!("{}/{name}: {e}", dir.display())),
        ),
        Err(e) => Err(holdfast_repo::Error::Io {
            path: dir.join(name).display().to_string(),
            source: e,
        }),
    };
    let (Some(raw), Some(cp)) = (read("log", MAX_LOG)?, read("checkpoint", 4096)?) else {
        return Ok(None);
    };
    let cp = Checkpoint::decode(&cp)
        .map_err(|e| holdfast_repo::Error::Corrupt(format!("{}/checkpoint: {e}", dir.display())))?;
    let entries = split_log(&raw).0.into_iter().map(|e| e.to_vec()).collect();
    Ok(Some((entries, cp)))
}

/// A key given with the wrong --repo is a wrong argument (exit 1), not
/// tampering: refused here when REPO holds a well-formed config that does
/// not list this key at all. Anything else that is not the pinned config
/// (altered, damaged) is left to [`Repository::open`], which calls it
/// tampering.
fn same_repository(backend: &dyn Backend, key: &Key) -> holdfast_repo::Result<()> {
    match backend.get_pinned(Kind::Config, "config", &key.config_id) {
        Err(StoreError::Corrupt { .. }) => {}
        _ => return Ok(()),
    }
    let Ok(found) = backend.get(Kind::Config, "config") else {
        return Ok(());
    };
    match key.wrong_repository(&backend.location(), &found) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Opens a vault repository (REPO must be https://…), keeping the typed
/// client for vault-only calls (governance, log).
pub fn open_vault(repo: &str, key: &Path) -> Result<(Arc<VaultBackend>, Repository, Key)> {
    if !repo.starts_with("https://") {
        bail!("{repo}: this command talks to a vault: give --repo https://HOST:PORT");
    }
    let key = load_key(key)?;
    let v = Arc::new(connect_vault(repo, &key)?);
    let mut r = Repository::open(v.clone(), &key)?;
    let cp = v.sync_checkpoint()?;
    // The client's verified copy of the log: only entries after it are
    // fetched; the fold streams it from its file.
    let dir = log_cache_dir(&key, &v);
    match holdfast_repo::logcache::sync(&dir, &v, &cp)? {
        Some((lf, got)) => {
            debug_logcache(got.cached, got.fetched, Some(got.fetched_bytes));
            attach_log(&mut r, lf, &cp);
        }
        // Another command with this key holds the copy: read the log as
        // without one.
        None => {
            let entries = v.log_entries(0, cp.size)?;
            debug_logcache(0, entries.len() as u64, None);
            attach_log(&mut r, entries, &cp);
        }
    }
    *OPENED_VAULT.lock().unwrap() = Some((repo.to_string(), v.clone()));
    Ok((v, r, key))
}

/// The vault this process opened (`open_vault`), for `check_logged` to
/// reuse its connection.
static OPENED_VAULT: std::sync::Mutex<Option<(String, Arc<VaultBackend>)>> =
    std::sync::Mutex::new(None);

/// Where the client keeps its copy of a vault's log: one per repository
/// (config id) and client key, in the cache directory.
fn log_cache_dir(key: &Key, v: &VaultBackend) -> PathBuf {
    cache_dir(None).join("vault-log").join(format!(
        "{}-{}",
        &key.config_id.to_hex()[..16],
        holdfast_core::id::hex(&v.identity().public()[..8])
    ))
}

/// With `HOLDFAST_DEBUG_LOGCACHE` set: how many log entries came from the
/// client's copy and how many from the vault (one line on stderr).
fn debug_logcache(cached: u64, fetched: u64, bytes: Option<u64>) {
    if std::env::var_os("HOLDFAST_DEBUG_LOGCACHE").is_some() {
        eprintln!(
            "holdfast: log cache: {cached} entries cached, {fetched} fetched{}",
            bytes.map_or(String::new(), |b| format!(" ({b} bytes)"))
        );
    }
}

/// `--repo` and `--key` of every command (options, not positionals) take
/// `HOLDFAST_REPO` and `HOLDFAST_KEY` when not given; the command line wins.
pub fn with_env_defaults(cmd: clap::Command) -> clap::Command {
    cmd.mut_args(|a| match a.get_long() {
        Some("repo") if !a.is_positional() => a.env("HOLDFAST_REPO"),
        Some("key") if !a.is_positional() => a.env("HOLDFAST_KEY"),
        _ => a,
    })
    .mut_subcommands(with_env_defaults)
}

pub fn cache_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os("HOLDFAST_CACHE_DIR").map(PathBuf::from))
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("holdfast")))
        .or_else(|| std::env::var_os("HOME").map(|d| PathBuf::from(d).join(".cache/holdfast")))
        .unwrap_or_else(|| PathBuf::from(".holdfast-cache"))
}

pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// `--progress-interval SECS` (or `HOLDFAST_PROGRESS_INTERVAL`), set once
/// by `main`: without a terminal, a progress line every so often.
static PROGRESS_INTERVAL: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();

pub fn set_progress_interval(secs: Option<u64>) {
    if let Some(s) = secs.filter(|s| *s > 0) {
        let _ = PROGRESS_INTERVAL.set(Duration::from_secs(s));
    }
}

/// One progress line for logs: done of total, rate, and time left.
fn progress_line(what: &str, unit: &str, p: &Progress, elapsed: Duration) -> String {
    let (done, total) = (
        p.bytes_done.load(Ordering::Relaxed),
        p.bytes_total.load(Ordering::Relaxed),
    );
    let (fd, ft) = (
        p.files_done.load(Ordering::Relaxed),
        p.files_total.load(Ordering::Relaxed),
    );
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001);
    // No total (standard input): what was read so far.
    let of = if total > 0 || done == 0 {
        format!(" of {}", bytes(total))
    } else {
        String::new()
    };
    let mut line = format!(
        "holdfast {what}: {}{of}, {fd}/{ft} {unit}, {}/s",
        bytes(done),
        bytes(rate as u64)
    );
    if total > 0 {
        line.push_str(&format!(
            " ({:.0} %)",
            100.0 * done.min(total) as f64 / total as f64
        ));
        if rate > 0.0 && done < total {
            let left = Duration::from_secs(((total - done) as f64 / rate) as u64);
            line.push_str(&format!(", about {} left", human_duration(left)));
        }
    }
    line
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, s / 60 % 60),
    }
}

/// Draws a progress bar (with the time left) on a terminal while `f` runs;
/// without one, prints a line to stderr every `--progress-interval`, or
/// nothing.
pub fn with_progress<T>(what: &str, f: impl FnOnce(&Progress) -> T) -> T {
    let progress = Arc::new(Progress::default());
    // What the file counters count.
    let unit = match what {
        "verify" => "packs",
        "replica pull" => "snapshots",
        _ => "files",
    };
    let tty = std::io::stderr().is_terminal();
    let every = PROGRESS_INTERVAL.get().copied();
    if !tty && every.is_none() {
        return f(&progress);
    }
    let done = Arc::new(AtomicBool::new(false));
    let t = {
        let (p, done, what) = (progress.clone(), done.clone(), what.to_string());
        std::thread::spawn(move || {
            let start = std::time::Instant::now();
            if let (false, Some(every)) = (tty, every) {
                let mut next = start + every;
                while !done.load(Ordering::Relaxed) {
                    if std::time::Instant::now() >= next {
                        eprintln!("{}", progress_line(&what, unit, &p, start.elapsed()));
                        next += every;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                // And where it ended, for the log.
                eprintln!(
                    "{}, done in {}",
                    progress_line(&what, unit, &p, start.elapsed()),
                    human_duration(start.elapsed())
                );
                return;
            }
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} {{prefix}} {unit}, {{eta}} left"
                ))
                .unwrap()
                .progress_chars("=> "),
            );
            bar.set_message(what);
            while !done.load(Ordering::Relaxed) {
                bar.set_length(p.bytes_total.load(Ordering::Relaxed));
                bar.set_position(p.bytes_done.load(Ordering::Relaxed));
                bar.set_prefix(format!(
                    "{}/{}",
                    p.files_done.load(Ordering::Relaxed),
                    p.files_total.load(Ordering::Relaxed)
                ));
                std::thread::sleep(Duration::from_millis(100));
            }
            bar.finish_and_clear();
        })
    };
    let r = f(&progress);
    done.store(true, Ordering::Relaxed);
    let _ = t.join();
    r
}

/// Writes a line to stdout; a closed pipe ends the program quietly.
pub fn out(line: impl AsRef<str>) {
    let mut o = std::io::stdout().lock();
    if let Err(e) = writeln!(o, "{}", line.as_ref())
        && e.kind() == std::io::ErrorKind::BrokenPipe
    {
        std::process::exit(0);
    }
}

/// One `PROBLEM …` line per problem, on stdout.
pub fn print_problems(problems: &[String]) {
    for p in problems {
        out(format!("PROBLEM {p}"));
    }
}

/// Exit status of a check: 0 without problems; else one line on stderr and
/// status 4 (damage or tampering detected).
pub fn problems_exit(what: &str, problems: &[String]) -> ExitCode {
    if problems.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("holdfast: {what} found {} problem(s)", problems.len());
    ExitCode::from(EXIT_DAMAGE)
}

pub fn json(v: &serde_json::Value) {
    out(serde_json::to_string_pretty(v).expect("JSON value serialises"));
}

pub fn time(ns: i64) -> String {
    holdfast_repo::repo::fmt_time(ns)
}

pub fn bytes(n: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
    }
}

pub fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The exit status an error keeps to the end: 4 for damage or tampering
/// found in the repository, 1 for everything else (a wrong argument or key,
/// this machine's I/O, the network, a damaged local record). Decided by the
/// error's kind, never by its text.
pub fn exit_code_for(e: &anyhow::Error) -> ExitCode {
    let damage = e.chain().find_map(|c| {
        c.downcast_ref::<holdfast_repo::Error>()
            .map(|r| r.is_damage())
            .or_else(|| c.downcast_ref::<StoreError>().map(|s| s.is_damage()))
            .or_else(|| {
                c.downcast_ref::<holdfast_vault::VaultError>()
                    .map(|v| matches!(v, holdfast_vault::VaultError::Tamper(_)))
            })
    });
    if damage == Some(true) {
        ExitCode::from(EXIT_DAMAGE)
    } else {
        ExitCode::FAILURE
    }
}

/// The state directory where each key's held vault checkpoint is kept.
pub fn checkpoint_dir() -> PathBuf {
    cache_dir(None).join("checkpoints")
}

/// The error and its causes on one line.
pub fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    for c in e.chain().skip(1) {
        let c = c.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
    }
    s.replace('\n', " ")
}
