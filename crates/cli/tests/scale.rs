//! `backup` at scale (issue 10): a 200,000-file spool made here is backed
//! up by the real binary — first run, unchanged re-run, lost cache — and
//! each run's peak RSS, read from wait4's rusage of the child, must stay
//! under the bound; the lost-cache run must upload nothing. Time is not
//! asserted.

mod common;

use std::path::Path;

use common::*;

/// The target is 96 MiB at a million files (release build); nothing the
/// backup holds grows with the file count, so 200,000 files in a debug
/// build must fit well under it.
const BOUND_KIB: u64 = 96 * 1024;
/// What doubling the files from 100,000 to 200,000 may add: the target
/// allows 16 MiB from 100,000 to 1,000,000 files (18 bytes a file); this
/// allows 8 MiB for 100,000 more (80 bytes a file), the rest being the
/// allocator's noise. Both runs are past every fixed-size buffer.
const GROWTH_KIB: u64 = 8 * 1024;

const MAILBOXES: usize = 400;
const PER_BOX: usize = 500;

/// One measured backup; its JSON report and peak RSS.
fn backup(w: &World, what: &str, src: &Path) -> (serde_json::Value, u64) {
    let (repo, key, src) = (w.repo(), w.key("client"), src.display().to_string());
    let t = std::time::Instant::now();
    let (o, kib) = measured(
        w,
        &["backup", "--repo", &repo, "--key", &key, "--json", &src],
    );
    assert!(
        o.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    eprintln!(
        "{what}: peak RSS {:.1} MiB, {:.1} s",
        kib as f64 / 1024.0,
        t.elapsed().as_secs_f64()
    );
    assert!(
        kib < BOUND_KIB,
        "{what}: peak RSS {kib} KiB over {BOUND_KIB} KiB"
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    (v[0].clone(), kib)
}

/// Mailboxes `first..first + boxes` of messages (cur/ and new/, a sent
/// folder) of about `size` bytes: a unique header, then a slice of a text.
fn make_spool(root: &Path, first: usize, boxes: usize, size: usize) {
    let mut r = Rng(0x5ca1_e000 + (first * 1000 + boxes) as u64);
    let text = r.text(1 << 20);
    for b in first..first + boxes {
        let mb = root.join(format!("u{b:03}"));
        for d in ["cur", "new", "tmp", ".Sent/cur", ".Sent/new"] {
            std::fs::create_dir_all(mb.join(d)).unwrap();
        }
        for m in 0..PER_BOX {
            let dir = match m % 10 {
                0 => "new",
                1 | 2 => ".Sent/cur",
                _ => "cur",
            };
            let mut msg =
                format!("From: a{}@example.org\nSubject: {b}/{m}\n\n", r.below(999)).into_bytes();
            let n = size / 2 + r.below(size as u64) as usize;
            let at = r.below((text.len() - n) as u64) as usize;
            msg.extend_from_slice(&text[at..at + n]);
            let info = if dir.ends_with("new") { "" } else { ":2,S" };
            let name = format!("{}.M{m}.mx{info}", 1_700_000_000 + m);
            std::fs::write(mb.join(dir).join(name), msg).unwrap();
        }
    }
}

fn packs(w: &World) -> usize {
    std::fs::read_dir(w.path("repo").join("packs"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn backup_memory_stays_bounded_at_200k_files_and_a_lost_cache_uploads_nothing() {
    // A small spool first: a damaged cache is ignored and rebuilt, nothing
    // is uploaded again, and the snapshot restores byte for byte.
    let small = World::new();
    small.init();
    let src = small.path("spool");
    make_spool(&src, 0, 4, 30_000);
    let (r, _) = backup(&small, "first backup, 2,000 files", &src);
    assert_eq!(r["files"], 2_000);
    let cache = std::fs::read_dir(small.path("cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "cache"))
        .expect("a cache file");
    let mut b = std::fs::read(&cache).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x10;
    std::fs::write(&cache, &b).unwrap();
    let before = packs(&small);
    let (r, _) = backup(&small, "damaged cache, 2,000 files", &src);
    assert_eq!(r["files_read"], 2_000, "a damaged cache is not trusted");
    assert_eq!(r["packs_written"], 0, "{r}");
    assert_eq!(packs(&small), before);
    let (r, _) = backup(&small, "after the rebuild", &src);
    assert_eq!(r["files_read"], 0, "the rebuilt cache is used: {r}");
    let out = small.path("out");
    small.restore("latest", &out);
    assert_eq!(digest(&out.join("spool")), digest(&src));

    // 200,000 files in two halves; the first half alone is backed up in
    // another repository, to measure what the second half adds.
    let w = World::new();
    w.init();
    let src = w.path("spool");
    let half = MAILBOXES / 2;
    make_spool(&src.join("a"), 0, half, 300);
    make_spool(&src.join("b"), half, half, 300);
    let total = (MAILBOXES * PER_BOX) as u64;
    let (r, half_kib) = {
        let h = World::new();
        h.init();
        backup(&h, "first backup, 100,000 files", &src.join("a"))
    };
    assert_eq!(r["files"], total / 2);

    let (r, kib) = backup(&w, "first backup, 200,000 files", &src);
    assert_eq!(r["files"], total);
    assert_eq!(r["files_read"], total);
    assert!(
        kib < half_kib + GROWTH_KIB,
        "first backup grew {} KiB from 100,000 to 200,000 files",
        kib - half_kib.min(kib)
    );

    let (r, _) = backup(&w, "unchanged re-run", &src);
    assert_eq!(r["files"], total);
    assert_eq!(r["files_read"], 0, "{r}");
    assert_eq!(r["packs_written"], 0, "{r}");

    // The cache is lost: every file is read again, nothing is uploaded.
    std::fs::remove_dir_all(w.path("cache")).unwrap();
    let before = packs(&w);
    let (r, _) = backup(&w, "lost cache", &src);
    assert_eq!(r["files"], total);
    assert_eq!(r["files_read"], total);
    assert_eq!(r["new_blobs"], 0, "{r}");
    assert_eq!(r["packs_written"], 0, "{r}");
    assert_eq!(packs(&w), before, "no new pack after a lost cache");
    // And the cache it wrote is good for the next run.
    let (r, _) = backup(&w, "after the lost cache", &src);
    assert_eq!(r["files_read"], 0, "{r}");
}
