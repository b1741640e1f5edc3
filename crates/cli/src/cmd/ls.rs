use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_repo::snapshots::{Entry, walk, with_snapshot};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key
    #[arg(long)]
    pub key: PathBuf,
    #[command(flatten)]
    pub pick: crate::cmd::mail::Pick,
    /// An id, a prefix, `latest`, or a time (2026-11-20T12:00:00Z,
    /// 2026-11-20): the newest at or before it, by the vault's time
    pub snapshot: String,
    /// List only under these paths (as `ls` prints them, or as backed up:
    /// /var/mail/u7); the same as --path
    #[arg(value_name = "PATH")]
    pub under: Vec<String>,
    /// List only under this path, as `ls` prints it or as backed up
    /// (/var/mail/u7); repeatable
    #[arg(long)]
    pub path: Vec<String>,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

/// Columns: type, mode, owner (uid:gid as stored; names differ between
/// machines), size, mtime, path, and `-> target` for a symlink.
pub fn run(mut a: Args) -> Result<ExitCode> {
    a.path.append(&mut a.under);
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("ls")?;
    let id = a.pick.resolve(&repo, &key, &a.snapshot, &a.path)?;
    let mut want = Vec::new();
    if !a.path.is_empty() {
        let (_, secret) = key.require_restore("ls")?;
        let body = repo.open_body(&id, &repo.load_snapshot(&id)?, secret)?;
        for p in &a.path {
            want.push(
                holdfast_repo::repo::tree_path(&body, p)?
                    .join("/")
                    .into_bytes(),
            );
        }
    }
    // `a` is `b` or under it.
    let under = |a: &[u8], b: &[u8]| {
        b.is_empty() || a == b || (a.starts_with(b) && a.get(b.len()) == Some(&b'/'))
    };
    // Streamed: one directory per level in memory, lines as they come.
    let mut out = Out::new(a.json);
    with_snapshot(&repo, &key, &id, |reader, root| {
        walk(reader, root, &mut |e| {
            let shown = want.is_empty() || want.iter().any(|w| under(&e.path, w));
            if shown {
                out.entry(e);
            }
            // Descend where something wanted may lie below.
            Ok(shown || want.iter().any(|w| under(w, &e.path)))
        })
    })?;
    out.finish();
    Ok(ExitCode::SUCCESS)
}

/// A name for a terminal: control characters (a newline in a file name
/// would forge a line) shown escaped.
fn shown(b: &[u8]) -> String {
    let s = util::lossy(b);
    if !s.chars().any(char::is_control) {
        return s;
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Listing output, streamed to stdout (a closed pipe ends the process
/// quietly, as `util::out` does).
struct Out {
    w: std::io::BufWriter<std::io::Stdout>,
    json: bool,
    first: bool,
}

impl Out {
    fn new(json: bool) -> Self {
        Out {
            w: std::io::BufWriter::with_capacity(64 << 10, std::io::stdout()),
            json,
            first: true,
        }
    }

    fn put(&mut self, s: &str) {
        use std::io::Write;
        if let Err(e) = self.w.write_all(s.as_bytes())
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }

    fn entry(&mut self, e: &Entry) {
        if self.json {
            let mut v = serde_json::json!({
                "path": util::lossy(&e.path), "type": e.kind, "size": e.size,
                "mode": format!("{:04o}", e.mode), "mtime": util::time(e.mtime_s * 1_000_000_000),
                "uid": e.uid, "gid": e.gid,
            });
            if let Some(t) = &e.target {
                v["target"] = util::lossy(t).into();
            }
            let text = serde_json::to_string_pretty(&v).expect("JSON value serialises");
            let mut s = String::with_capacity(text.len() + 16);
            s.push_str(if self.first { "[\n" } else { ",\n" });
            for (i, line) in text.lines().enumerate() {
                if i > 0 {
                    s.push('\n');
                }
                s.push_str("  ");
                s.push_str(line);
            }
            self.put(&s);
        } else {
            let line = format!(
                "{:<7} {:04o} {:>11} {:>12} {}  {}{}\n",
                e.kind,
                e.mode,
                format!("{}:{}", e.uid, e.gid),
                e.size,
                util::time(e.mtime_s * 1_000_000_000),
                shown(&e.path),
                e.target
                    .as_ref()
                    .map(|t| format!(" -> {}", shown(t)))
                    .unwrap_or_default()
            );
            self.put(&line);
        }
        self.first = false;
    }

    fn finish(mut self) {
        use std::io::Write;
        if self.json {
            self.put(if self.first { "[]\n" } else { "\n]\n" });
        }
        if let Err(e) = self.w.flush()
            && e.kind() == std::io::ErrorKind::BrokenPipe
        {
            std::process::exit(0);
        }
    }
}
