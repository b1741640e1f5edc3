//! `backup --metrics-file PATH`: node-exporter textfile metrics about the
//! last backup run, for hosts whose Prometheus scrapes node_exporter's
//! textfile collector (`--collector.textfile.directory`).
//!
//! The mistake this avoids, common in backup exporters: a failed run must
//! not move the success timestamp. Each run reads the previous file, keeps
//! what only a success may change (the success time and the figures of the
//! last snapshot), and writes the whole file again atomically (temp file in
//! the same directory, fsync, rename, fsync of the directory), so the
//! collector never reads half a file and a crash leaves the old one.
//!
//! Every series carries `client`, the client key's identity name (a plain
//! host-like name, else `key-…` as on the vault): two backup jobs on one
//! host write two files without clashing series, and no label holds a path.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use holdfast_repo::backup::BackupReport;
use holdfast_repo::keys::Key;

/// The largest previous file read back.
const MAX_PREVIOUS: u64 = 64 * 1024;

/// Figures of a run that wrote a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub files: u64,
    pub files_read: u64,
    pub source_bytes: u64,
    pub new_bytes: u64,
    pub stored_bytes: u64,
    pub unreadable: u64,
}

impl From<&BackupReport> for Stats {
    fn from(r: &BackupReport) -> Self {
        Stats {
            files: r.files,
            files_read: r.files_read,
            source_bytes: r.bytes,
            new_bytes: r.new_bytes,
            stored_bytes: r.stored_bytes,
            unreadable: r.unreadable.len() as u64,
        }
    }
}

/// One backup run, from its start.
pub struct Attempt {
    path: PathBuf,
    client: Option<String>,
    started: f64,
    clock: Instant,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

impl Attempt {
    /// Starts timing. The client name comes from the key file (a client
    /// key has no passphrase; a key that cannot be read leaves the name of
    /// the previous file).
    pub fn start(path: PathBuf, key: &Path) -> Attempt {
        let client = Key::load(key, || {
            Err(holdfast_repo::Error::Usage("no passphrase here".into()))
        })
        .ok()
        .map(|k| {
            let public = k.identity().map(|i| i.public()).unwrap_or([0; 32]);
            holdfast_vault::metrics::client_label(&k.name, &public)
        });
        Attempt {
            path,
            client,
            started: unix_now(),
            clock: Instant::now(),
        }
    }

    /// Writes the file for a run that ended with `exit` (0 is the only
    /// success); `stats` when a snapshot was written.
    pub fn finish(self, exit: u8, stats: Option<&Stats>) -> std::io::Result<()> {
        let previous = read_previous(&self.path);
        let client = self
            .client
            .or_else(|| previous.client.clone())
            .unwrap_or_else(|| "unknown".into());
        let text = render(
            &client,
            &previous,
            Run {
                started: self.started,
                duration: self.clock.elapsed().as_secs_f64(),
                exit,
                stats,
            },
        );
        write_atomic(&self.path, text.as_bytes())
    }
}

/// Runs a backup (`f`, which fills in the figures once a snapshot is
/// written) and writes the metrics file for it, whatever happened. A file
/// that cannot be written fails a run that otherwise succeeded (a monitor
/// would only see it as stale); after a failed run it is one more line.
pub fn run(
    path: PathBuf,
    key: &Path,
    f: impl FnOnce(&mut Option<Stats>) -> anyhow::Result<std::process::ExitCode>,
) -> anyhow::Result<std::process::ExitCode> {
    let attempt = Attempt::start(path.clone(), key);
    let mut stats = None;
    let r = f(&mut stats);
    let code = match &r {
        Ok(c) if crate::util::LOG_TAMPERED.load(std::sync::atomic::Ordering::Relaxed) => {
            if *c == std::process::ExitCode::SUCCESS {
                crate::util::EXIT_DAMAGE
            } else {
                code_of(*c)
            }
        }
        Ok(c) => code_of(*c),
        Err(e) => code_of(crate::util::exit_code_for(e)),
    };
    match attempt.finish(code, stats.as_ref()) {
        Ok(()) => r,
        Err(e) if code == 0 => Err(anyhow::anyhow!(
            "backup done, but --metrics-file {}: {e}",
            path.display()
        )),
        Err(e) => {
            eprintln!("holdfast: --metrics-file {}: {e}", path.display());
            r
        }
    }
}

/// The number behind an exit code.
fn code_of(c: std::process::ExitCode) -> u8 {
    (0..=255u8)
        .find(|n| std::process::ExitCode::from(*n) == c)
        .unwrap_or(1)
}

struct Run<'a> {
    started: f64,
    duration: f64,
    exit: u8,
    stats: Option<&'a Stats>,
}

/// What the previous file said (values by metric name, and its client).
#[derive(Default)]
struct Previous {
    client: Option<String>,
    values: BTreeMap<String, f64>,
}

/// Reads the previous file: bounded, and anything it cannot parse is
/// ignored (a damaged file costs the kept values, never the run).
fn read_previous(path: &Path) -> Previous {
    let mut p = Previous::default();
    let Ok(f) = std::fs::File::open(path) else {
        return p;
    };
    let mut text = String::new();
    if f.take(MAX_PREVIOUS).read_to_string(&mut text).is_err() {
        return p;
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(v) = value.parse::<f64>() else {
            continue;
        };
        let name = series.split('{').next().unwrap_or("");
        if let Some(c) = series
            .split_once("client=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map(|(c, _)| c.to_string())
        {
            p.client.get_or_insert(c);
        }
        if name.starts_with("holdfast_backup_") && v.is_finite() {
            p.values.insert(name.to_string(), v);
        }
    }
    p
}

/// Metric name, help, and value (None: not written).
type Line = (&'static str, &'static str, Option<f64>);

fn render(client: &str, prev: &Previous, run: Run) -> String {
    let ok = run.exit == 0;
    let kept = |name: &str| prev.values.get(name).copied();
    let stat = |name: &str, f: fn(&Stats) -> u64| match run.stats {
        Some(s) => Some(f(s) as f64),
        None => kept(name),
    };
    let lines: [Line; 13] = [
        (
            "holdfast_backup_last_success_timestamp_seconds",
            "When the last backup that exited 0 finished (Unix seconds); a failed run keeps it",
            if ok {
                Some(run.started + run.duration)
            } else {
                kept("holdfast_backup_last_success_timestamp_seconds")
            },
        ),
        (
            "holdfast_backup_last_attempt_timestamp_seconds",
            "When the last backup run finished, whatever its outcome (Unix seconds)",
            Some(run.started + run.duration),
        ),
        (
            "holdfast_backup_last_snapshot_timestamp_seconds",
            "When the last run that wrote a snapshot finished (exit 0, 3 or 5) (Unix seconds)",
            if run.stats.is_some() {
                Some(run.started + run.duration)
            } else {
                kept("holdfast_backup_last_snapshot_timestamp_seconds")
            },
        ),
        (
            "holdfast_backup_last_exit_code",
            "Exit status of the last run (0 ok, 1 error, 3 unreadable files, 4 damage, 5 anomaly)",
            Some(f64::from(run.exit)),
        ),
        (
            "holdfast_backup_last_duration_seconds",
            "How long the last run took",
            Some(run.duration),
        ),
        (
            "holdfast_backup_failures_total",
            "Runs that did not exit 0, since this file was first written",
            Some(
                kept("holdfast_backup_failures_total").unwrap_or(0.0) + if ok { 0.0 } else { 1.0 },
            ),
        ),
        (
            "holdfast_backup_consecutive_failures",
            "Runs since the last success that did not exit 0",
            Some(if ok {
                0.0
            } else {
                kept("holdfast_backup_consecutive_failures").unwrap_or(0.0) + 1.0
            }),
        ),
        (
            "holdfast_backup_last_files",
            "Files in the last snapshot written",
            stat("holdfast_backup_last_files", |s| s.files),
        ),
        (
            "holdfast_backup_last_files_read",
            "Files the last snapshot had to read (the others were unchanged)",
            stat("holdfast_backup_last_files_read", |s| s.files_read),
        ),
        (
            "holdfast_backup_last_source_bytes",
            "Bytes of the files in the last snapshot written",
            stat("holdfast_backup_last_source_bytes", |s| s.source_bytes),
        ),
        (
            "holdfast_backup_last_new_bytes",
            "Bytes of new data the last snapshot found (before compression)",
            stat("holdfast_backup_last_new_bytes", |s| s.new_bytes),
        ),
        (
            "holdfast_backup_last_stored_bytes",
            "Bytes the last snapshot added to the repository (compressed, encrypted)",
            stat("holdfast_backup_last_stored_bytes", |s| s.stored_bytes),
        ),
        (
            "holdfast_backup_last_unreadable_files",
            "Files the last snapshot could not read",
            stat("holdfast_backup_last_unreadable_files", |s| s.unreadable),
        ),
    ];
    let mut out = String::new();
    for (name, help, value) in lines {
        let Some(v) = value else { continue };
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        let _ = writeln!(out, "{name}{{client=\"{client}\"}} {v}");
    }
    out
}

/// Temp file in the same directory → fsync → rename → fsync the directory.
fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("the metrics file needs a file name"))?;
    // node_exporter reads only *.prom: a temp name it skips.
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, name: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}{{")))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
    }

    #[test]
    fn a_failure_keeps_the_success_time_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("holdfast.prom");
        let stats = Stats {
            files: 10,
            source_bytes: 1000,
            ..Default::default()
        };
        let ok = render(
            "mx1",
            &read_previous(&path),
            Run {
                started: 1000.0,
                duration: 5.0,
                exit: 0,
                stats: Some(&stats),
            },
        );
        write_atomic(&path, ok.as_bytes()).unwrap();
        let bad = render(
            "mx1",
            &read_previous(&path),
            Run {
                started: 2000.0,
                duration: 1.0,
                exit: 1,
                stats: None,
            },
        );
        write_atomic(&path, bad.as_bytes()).unwrap();
        let t = std::fs::read_to_string(&path).unwrap();
        let v = |n| value(&t, n);
        assert_eq!(
            v("holdfast_backup_last_success_timestamp_seconds"),
            Some(1005.0)
        );
        assert_eq!(
            v("holdfast_backup_last_attempt_timestamp_seconds"),
            Some(2001.0)
        );
        assert_eq!(v("holdfast_backup_failures_total"), Some(1.0));
        assert_eq!(v("holdfast_backup_consecutive_failures"), Some(1.0));
        assert_eq!(v("holdfast_backup_last_exit_code"), Some(1.0));
        assert_eq!(v("holdfast_backup_last_source_bytes"), Some(1000.0));
        assert!(t.contains("{client=\"mx1\"}"));
        // No temp file left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
    }

    #[test]
    fn a_first_failure_writes_no_success_time() {
        let t = render(
            "mx1",
            &Previous::default(),
            Run {
                started: 1.0,
                duration: 1.0,
                exit: 1,
                stats: None,
            },
        );
        assert_eq!(
            value(&t, "holdfast_backup_last_success_timestamp_seconds"),
            None
        );
        assert_eq!(value(&t, "holdfast_backup_failures_total"), Some(1.0));
    }

    #[test]
    fn garbage_in_the_previous_file_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.prom");
        std::fs::write(
            &path,
            b"\xff\xfe garbage\nholdfast_backup_failures_total{client=\"a\"} NaN\n",
        )
        .unwrap();
        let p = read_previous(&path);
        assert!(p.values.is_empty());
    }
}
