//! `--key SHARE --key SHARE …`: a command that needs the restore key may
//! take M shares of it instead, so that the whole key never touches disk.
//!
//! clap takes one `--key` per command. Before parsing, repeated `--key`
//! values that are all key shares are folded into the first one, and the
//! whole list is kept here; loading that key then combines the shares in
//! memory (`util::load_key`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

static SHARES: OnceLock<Vec<PathBuf>> = OnceLock::new();

/// The arguments with repeated share `--key`s folded into one.
pub fn fold(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let args: Vec<OsString> = args.into_iter().collect();
    // (index of the flag, index of its value or None when `--key=V`, value)
    let mut keys: Vec<(usize, Option<usize>, PathBuf)> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--key" && i + 1 < args.len() {
            keys.push((i, Some(i + 1), PathBuf::from(&args[i + 1])));
            i += 2;
            continue;
        }
        if let Some(v) = a.strip_prefix("--key=") {
            keys.push((i, None, PathBuf::from(v)));
        }
        i += 1;
    }
    if keys.len() < 2
        || !keys
            .iter()
            .all(|(_, _, p)| holdfast_repo::keys::is_share_file(p))
    {
        return args;
    }
    let _ = SHARES.set(keys.iter().map(|(_, _, p)| p.clone()).collect());
    let mut drop = Vec::new();
    for (flag, value, _) in &keys[1..] {
        drop.push(*flag);
        drop.extend(value);
    }
    args.into_iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(i))
        .map(|(_, a)| a)
        .collect()
}

/// The shares given with `path` among them, if several were.
pub fn shares_for(path: &Path) -> Option<&'static [PathBuf]> {
    SHARES
        .get()
        .filter(|s| s.iter().any(|p| p == path))
        .map(|s| s.as_slice())
}
