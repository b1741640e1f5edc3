//! `holdfast find`: files whose name matches a pattern, across snapshots.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use holdfast_repo::snapshots::{entries, list, with_snapshot};

use crate::util;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    pub repo: String,
    /// The restore key (names are encrypted)
    #[arg(long)]
    pub key: PathBuf,
    /// Shell-style patterns (`*`, `?`): a pattern without `/` is matched
    /// against each file name, one with `/` against the whole path as `ls`
    /// prints it; a file matching any of them is listed
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Only these clients' snapshots (repeat, or separate with commas)
    #[arg(long = "client", value_name = "NAME", value_delimiter = ',')]
    pub clients: Vec<String>,
    /// Only snapshots taken on this host (repeatable)
    #[arg(long = "host", value_name = "HOST")]
    pub hosts: Vec<String>,
    /// Only snapshots carrying this tag (`backup --tag`); repeatable: each
    /// must be there
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only these snapshots (an id or a unique prefix; repeatable)
    #[arg(long = "snapshot", value_name = "ID")]
    pub snapshots: Vec<String>,
    /// Match letters regardless of case
    #[arg(long, short = 'i')]
    pub ignore_case: bool,
    /// Print one JSON array of objects
    #[arg(long)]
    pub json: bool,
}

/// Does `text` match the shell-style `pat` (`*` any run, `?` any one)?
/// Iterative with one backtrack point: linear in practice, never
/// exponential.
fn glob(pat: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pat.len() && (pat[p] == b'?' || pat[p] == text[t]) {
            p += 1;
            t += 1;
        } else if p < pat.len() && pat[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|c| *c == b'*')
}

pub fn run(a: Args) -> Result<ExitCode> {
    let (repo, key) = util::open(&a.repo, &a.key)?;
    key.require_restore("find")?;
    let fold = |b: &[u8]| {
        if a.ignore_case {
            b.to_ascii_lowercase()
        } else {
            b.to_vec()
        }
    };
    let patterns: Vec<(bool, Vec<u8>)> = a
        .patterns
        .iter()
        .map(|p| (p.contains('/'), fold(p.trim_start_matches('/').as_bytes())))
        .collect();
    let matches = |path: &[u8]| {
        let path = fold(path);
        let name = path.rsplit(|b| *b == b'/').next().unwrap_or(&path);
        patterns
            .iter()
            .any(|(whole, p)| glob(p, if *whole { &path } else { name }))
    };
    let (mut snaps, mut errors) = list(&repo, &key)?;
    snaps.retain(|s| {
        (a.clients.is_empty() || a.clients.contains(&s.client))
            && (a.hosts.is_empty()
                || s.body
                    .as_ref()
                    .is_some_and(|b| a.hosts.contains(&b.hostname)))
            && a.tags
                .iter()
                .all(|t| s.body.as_ref().is_some_and(|b| b.tags.contains(t)))
            && (a.snapshots.is_empty()
                || a.snapshots
                    .iter()
                    .any(|p| !p.is_empty() && s.id.to_hex().starts_with(&p.to_lowercase())))
    });
    for p in &a.snapshots {
        if !snaps
            .iter()
            .any(|s| s.id.to_hex().starts_with(&p.to_lowercase()))
        {
            anyhow::bail!("no snapshot {p:?} among those listed");
        }
    }
    let mut found = Vec::new();
    let (mut total, mut in_snaps) = (0usize, 0usize);
    for s in &snaps {
        // One snapshot's entries at a time.
        let list = match with_snapshot(&repo, &key, &s.id, entries) {
            Ok(l) => l,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
        let hits: Vec<_> = list.into_iter().filter(|e| matches(&e.path)).collect();
        if hits.is_empty() {
            continue;
        }
        in_snaps += 1;
        total += hits.len();
        if a.json {
            for e in hits {
                found.push(serde_json::json!({
                    "snapshot": s.id.to_hex(),
                    "time": util::time(s.time_ns),
                    "client": s.client,
                    "path": util::lossy(&e.path),
                    "kind": e.kind,
                    "size": e.size,
                    "mtime": util::time(e.mtime_s.saturating_mul(1_000_000_000)),
                }));
            }
            continue;
        }
        util::out(format!(
            "snapshot {}  {}  {}{}",
            &s.id.to_hex()[..16],
            util::time(s.time_ns),
            s.client,
            s.body
                .as_ref()
                .map(|b| format!("  {}", b.hostname))
                .unwrap_or_default()
        ));
        for e in hits {
            util::out(format!(
                "  {:<7}  {:>10}  {}  {}",
                e.kind,
                util::bytes(e.size),
                util::time(e.mtime_s.saturating_mul(1_000_000_000)),
                util::lossy(&e.path)
            ));
        }
    }
    if a.json {
        util::json(&serde_json::Value::Array(found));
    } else {
        util::out(format!(
            "{total} match{} in {in_snaps} of {} snapshot{}",
            if total == 1 { "" } else { "es" },
            snaps.len(),
            if snaps.len() == 1 { "" } else { "s" }
        ));
    }
    for e in &errors {
        eprintln!("holdfast: {e}");
    }
    Ok(if errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(util::EXIT_DAMAGE)
    })
}

#[cfg(test)]
mod tests {
    use super::glob;

    #[test]
    fn globs() {
        assert!(glob(b"*.pdf", b"invoice.pdf"));
        assert!(!glob(b"*.pdf", b"invoice.pdf.txt"));
        assert!(glob(b"in?oice*", b"invoice.pdf"));
        assert!(glob(b"*", b""));
        assert!(glob(b"a*b*c", b"axxbyyc"));
        assert!(!glob(b"a*b*c", b"axxbyy"));
        assert!(glob(b"data/*/cur/*", b"data/u1/cur/m1"));
    }
}
