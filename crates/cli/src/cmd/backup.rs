use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Result, anyhow, bail};
use holdfast_repo::backup::{BackupOptions, backup};

use crate::util;

/// `backup` found an anomaly (SPEC G8); the snapshot is written.
pub const EXIT_ANOMALY: u8 = 5;

/// How a snapshot was judged, as `backup --json` and `snapshots --json`
/// name it ("checked").
pub fn checked_name(c: holdfast_core::format::Checked) -> &'static str {
    match c {
        holdfast_core::format::Checked::Compared => "compared",
        holdfast_core::format::Checked::NoBaseline => "no_baseline",
        holdfast_core::format::Checked::Off => "off",
    }
}

#[derive(clap::Args)]
pub struct Args {
    /// Repository
    #[arg(long)]
    pub repo: String,
    /// Client key
    #[arg(long)]
    pub key: PathBuf,
    /// Files and directories to back up; each is stored under its last
    /// path component. One that does not exist is skipped with a warning
    /// and the run exits 3, as long as another one exists
    #[arg(required_unless_present_any = ["files_from", "stdin"])]
    pub paths: Vec<PathBuf>,
    /// Read more paths to back up from FILE, one per line (empty lines and
    /// lines starting with # are skipped; `-` reads standard input); repeatable
    #[arg(long = "files-from", value_name = "FILE")]
    pub files_from: Vec<PathBuf>,
    /// Back up standard input as one file, streamed (never held whole in
    /// memory), e.g. `pg_dump db | holdfast backup --stdin --stdin-filename
    /// db.sql`; it restores like any file. Each name keeps its own cache,
    /// so a dump is compared with the previous dump of that name
    #[arg(long, conflicts_with_all = ["paths", "files_from"])]
    pub stdin: bool,
    /// The file name standard input is stored under (no '/'; default
    /// `stdin`); recorded as the path /NAME
    #[arg(long, value_name = "NAME")]
    pub stdin_filename: Option<String>,
    /// Label the snapshot (repeatable); stored encrypted in the snapshot,
    /// shown by `snapshots`, and chosen by `--tag` in `snapshots`,
    /// `restore`, `ls` and `drill` (restore key). UTF-8, up to 128 bytes, no
    /// comma or control character
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Walk and read everything as a backup would and report what it would
    /// add (files new and changed, bytes new, packs), but write nothing:
    /// no pack, no snapshot, no cache update. Exits as the backup would
    #[arg(long, conflicts_with = "metrics_file")]
    pub dry_run: bool,
    /// Glob of paths to leave out (matches the full path or the file name); repeatable
    #[arg(long = "exclude")]
    pub excludes: Vec<String>,
    /// Read more --exclude globs from FILE, one per line (empty lines and
    /// lines starting with # are skipped); repeatable
    #[arg(long = "exclude-file", value_name = "FILE")]
    pub exclude_files: Vec<PathBuf>,
    /// Do not cross into other file systems
    #[arg(long)]
    pub one_file_system: bool,
    /// Do not compare with the previous snapshot (no anomaly detection), to
    /// measure detection's overhead. The snapshot records that it was not
    /// checked (`snapshots` shows it) and the volume baseline skips the run
    #[arg(long)]
    pub no_detect: bool,
    /// Host name recorded in the snapshot
    #[arg(long)]
    pub host: Option<String>,
    /// Where the local cache of sent files lives (default ~/.cache/holdfast)
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Write node-exporter textfile metrics about this run to PATH (e.g.
    /// /var/lib/prometheus/node-exporter/holdfast.prom), atomically; a
    /// failed run never moves the last success time
    #[arg(long, value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,
}

pub fn run(a: Args) -> Result<ExitCode> {
    let Some(path) = a.metrics_file.clone() else {
        return run_backup(a, &mut None);
    };
    let key = a.key.clone();
    crate::metrics_file::run(path, &key, |stats| run_backup(a, stats))
}

/// The largest --files-from or --exclude-file read.
const MAX_LIST_FILE: u64 = 64 << 20;

/// The lines of a list file (`-`: standard input), without empty lines and
/// `#` comments; names are bytes, as file names are.
fn list_lines(path: &Path) -> Result<Vec<Vec<u8>>> {
    use std::io::Read;
    let mut buf = Vec::new();
    let r = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_LIST_FILE)
            .read_to_end(&mut buf)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_LIST_FILE).read_to_end(&mut buf))
    };
    r.map_err(|e| anyhow!("{}: {e}", path.display()))?;
    if buf.len() as u64 >= MAX_LIST_FILE {
        bail!(
            "{}: larger than {} MiB",
            path.display(),
            MAX_LIST_FILE >> 20
        );
    }
    Ok(buf
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| !l.is_empty() && !l.starts_with(b"#"))
        .map(<[u8]>::to_vec)
        .collect())
}

fn run_backup(a: Args, stats: &mut Option<crate::metrics_file::Stats>) -> Result<ExitCode> {
    let mut paths = a.paths;
    for f in &a.files_from {
        paths.extend(
            list_lines(f)?
                .into_iter()
                .map(|l| PathBuf::from(std::ffi::OsString::from_vec(l))),
        );
    }
    if a.stdin_filename.is_some() && !a.stdin {
        // (clap's `requires` counts a flag's default as present.)
        bail!("--stdin-filename names standard input: give --stdin too");
    }
    if a.stdin && std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        bail!(
            "--stdin reads standard input, which is a terminal: pipe the data in (pg_dump db | holdfast backup --stdin ...)"
        );
    }
    if paths.is_empty() && !a.stdin {
        bail!("nothing to back up: no path given and --files-from listed none");
    }
    let mut tags: Vec<String> = Vec::new();
    for t in a.tags {
        if let Some(why) = holdfast_core::format::tag_problem(&t) {
            bail!("--tag {t:?}: {why}");
        }
        if !tags.contains(&t) {
            tags.push(t);
        }
    }
    let mut excludes = a.excludes;
    for f in &a.exclude_files {
        for l in list_lines(f)? {
            let l = String::from_utf8(l)
                .map_err(|_| anyhow!("{}: a pattern is not UTF-8", f.display()))?;
            let t = l.trim();
            if !t.is_empty() {
                excludes.push(t.to_string());
            }
        }
    }
    // Held until the snapshot is written (a prune waits for it).
    let _lock = util::dir_lock(&a.repo, false)?;
    let (repo, key) = util::open(&a.repo, &a.key)?;
    let mut opts = BackupOptions {
        paths,
        excludes,
        one_file_system: a.one_file_system,
        hostname: a.host.unwrap_or_else(util::hostname),
        cache_dir: util::cache_dir(a.cache_dir),
        detect: !a.no_detect,
        tags: tags.clone(),
        stdin: a
            .stdin
            .then(|| a.stdin_filename.unwrap_or_else(|| "stdin".into())),
        dry_run: a.dry_run,
    };
    // A path that does not exist (and never held files this client backed
    // up: that is a wipe, which backup itself reports) is left out when
    // others remain: the rest is backed up, and the run exits 3.
    let mut missing: Vec<String> = Vec::new();
    let r = loop {
        match util::with_progress("backup", |p| backup(&repo, &key, &opts, p)) {
            Err(holdfast_repo::Error::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound && opts.paths.len() > 1 =>
            {
                let at = opts.paths.iter().position(|p| {
                    std::path::absolute(p).is_ok_and(|abs| abs.display().to_string() == path)
                });
                let Some(at) = at else {
                    return Err(holdfast_repo::Error::Io { path, source }.into());
                };
                eprintln!("holdfast: warning: {path}: no such file or directory; not backed up");
                opts.paths.remove(at);
                missing.push(path);
            }
            Err(holdfast_repo::Error::Io { path, source })
                if source.kind() == std::io::ErrorKind::NotFound && !missing.is_empty() =>
            {
                missing.push(path);
                bail!(
                    "nothing to back up: no path given exists ({})",
                    missing.join(", ")
                );
            }
            r => break r?,
        }
    };
    if r.dry_run {
        return dry_run_report(&r, &missing, &tags, a.json);
    }
    *stats = Some((&r).into());
    if a.repo.starts_with("https://") {
        util::check_logged(&a.repo, &key, &repo, &r.snapshot)?;
    }
    if a.json {
        // "id" as in every listing; "snapshot" kept for scripts that used it.
        util::json(&serde_json::json!([{
            "id": r.snapshot.to_hex(),
            "snapshot": r.snapshot.to_hex(),
            "missing": missing,
            "tags": tags,
            "files": r.files, "dirs": r.dirs, "bytes": r.bytes,
            "files_new": r.files_new, "files_changed": r.files_changed,
            "files_read": r.files_read, "new_blobs": r.new_blobs,
            "new_bytes": r.new_bytes, "stored_bytes": r.stored_bytes,
            "packs_written": r.packs_written,
            "checked": checked_name(r.judgement.checked),
            "anomalies": r.findings.iter().map(|f| serde_json::json!({"signal": f.signal.name(), "count": f.count, "detail": f.detail})).collect::<Vec<_>>(),
            "unreadable": r.unreadable.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
        }]));
    } else {
        util::out(format!(
            "snapshot {} saved: {} files, {} dirs, {}; read {} files, {} new in {} blobs, {} stored in {} packs",
            r.snapshot.short(),
            r.files,
            r.dirs,
            util::bytes(r.bytes),
            r.files_read,
            util::bytes(r.new_bytes),
            r.new_blobs,
            util::bytes(r.stored_bytes),
            r.packs_written
        ));
    }
    if a.no_detect {
        eprintln!(
            "holdfast: --no-detect: snapshot {} was not checked for anomalies, and says so",
            r.snapshot.short()
        );
    }
    for f in &r.findings {
        eprintln!("ANOMALY {}: {} ({})", f.signal.name(), f.detail, f.count);
        if let Some((_, ex)) = r.examples.iter().find(|(s, _)| *s == f.signal) {
            for p in ex {
                eprintln!("  e.g. {}", p.display());
            }
        }
    }
    if !r.findings.is_empty() {
        for (p, e) in &r.unreadable {
            eprintln!("unreadable: {}: {e}", p.display());
        }
        eprintln!(
            "holdfast: snapshot {} written and flagged: {} anomaly signal(s); the previous snapshots are untouched",
            r.snapshot.short(),
            r.findings.len()
        );
        return Ok(ExitCode::from(EXIT_ANOMALY));
    }
    if r.unreadable.is_empty() && missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    if r.unreadable.is_empty() {
        eprintln!(
            "holdfast: snapshot {} written without {} missing path(s): {}",
            r.snapshot.short(),
            missing.len(),
            missing.join(", ")
        );
        return Ok(ExitCode::from(util::EXIT_PARTIAL));
    }
    for (p, e) in &r.unreadable {
        eprintln!("unreadable: {}: {e}", p.display());
    }
    eprintln!(
        "holdfast: snapshot {} written, but {} file(s) could not be read{}",
        r.snapshot.short(),
        r.unreadable.len(),
        if missing.is_empty() {
            String::new()
        } else {
            format!(" and {} path(s) were missing", missing.len())
        }
    );
    Ok(ExitCode::from(util::EXIT_PARTIAL))
}

/// `--dry-run`: what the backup would have added; nothing was stored. The
/// exit status is the one the backup would have had.
fn dry_run_report(
    r: &holdfast_repo::backup::BackupReport,
    missing: &[String],
    tags: &[String],
    json: bool,
) -> Result<ExitCode> {
    if json {
        util::json(&serde_json::json!([{
            "dry_run": true,
            "id": null, "snapshot": null,
            "missing": missing,
            "tags": tags,
            "files": r.files, "dirs": r.dirs, "bytes": r.bytes,
            "files_read": r.files_read,
            "files_new": r.files_new, "files_changed": r.files_changed,
            "new_blobs": r.new_blobs, "new_bytes": r.new_bytes,
            "stored_bytes": r.stored_bytes, "packs_written": r.packs_written,
            "anomalies": r.findings.iter().map(|f| serde_json::json!({"signal": f.signal.name(), "count": f.count, "detail": f.detail})).collect::<Vec<_>>(),
            "unreadable": r.unreadable.iter().map(|(p, e)| serde_json::json!({"path": p.display().to_string(), "error": e})).collect::<Vec<_>>(),
        }]));
    } else {
        util::out(format!(
            "dry run: would add {} new and {} changed files ({} new in {} blobs, {} to store in {} packs) to a snapshot of {} files, {} dirs, {}; nothing was written",
            r.files_new,
            r.files_changed,
            util::bytes(r.new_bytes),
            r.new_blobs,
            util::bytes(r.stored_bytes),
            r.packs_written,
            r.files,
            r.dirs,
            util::bytes(r.bytes),
        ));
    }
    for f in &r.findings {
        eprintln!(
            "ANOMALY (would be flagged) {}: {} ({})",
            f.signal.name(),
            f.detail,
            f.count
        );
    }
    for (p, e) in &r.unreadable {
        eprintln!("unreadable: {}: {e}", p.display());
    }
    if !r.findings.is_empty() {
        return Ok(ExitCode::from(EXIT_ANOMALY));
    }
    if r.unreadable.is_empty() && missing.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    Ok(ExitCode::from(util::EXIT_PARTIAL))
}
