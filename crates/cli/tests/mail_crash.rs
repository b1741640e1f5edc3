//! `holdfast mail restore` killed with SIGKILL at random points, and run
//! into a full disk, with the real binary and real directories (issue 9).
//! After each: every live file is untouched, no message is twice in a
//! folder, nothing partial is in `cur/` or `new/`, anything else left over
//! is in `tmp/`; then a rerun completes exactly and a third writes 0.
//! The long run is `bench/chaos.py --only crash-mail`.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Path → (inode, size, mtime in ns, content hash).
type Files = BTreeMap<PathBuf, (u64, u64, i64, [u8; 32])>;

fn hash(p: &Path) -> [u8; 32] {
    *blake3::hash(&std::fs::read(p).unwrap()).as_bytes()
}

fn scan(root: &Path) -> Files {
    files(root)
        .into_iter()
        .map(|p| {
            let md = std::fs::symlink_metadata(&p).unwrap();
            let v = (
                md.ino(),
                md.len(),
                md.mtime() * 1_000_000_000 + md.mtime_nsec(),
                hash(&p),
            );
            (p, v)
        })
        .collect()
}

fn sub_of(p: &Path) -> &str {
    p.parent()
        .and_then(|d| d.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or("")
}

fn write_at(p: &Path, data: &[u8], mtime: i64) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    filetime::set_file_mtime(p, filetime::FileTime::from_unix_time(mtime, 0)).unwrap();
}

/// `users` Maildir++ mailboxes `uN/Maildir` (INBOX, Sent, Archive) with
/// `per` messages each, in `cur/` with flags and keyword letters or in
/// `new/`; a uidlist and keywords in INBOX; subscriptions. Every message's
/// bytes are distinct.
fn make_spool(root: &Path, users: usize, per: usize, r: &mut Rng) {
    for u in 0..users {
        let home = root.join(format!("u{u}/Maildir"));
        for f in ["", ".Sent", ".Archive"] {
            for s in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(home.join(f).join(s)).unwrap();
            }
        }
        std::fs::write(home.join("subscriptions"), b"Sent\nArchive\n").unwrap();
        std::fs::write(home.join("dovecot-keywords"), b"0 $Important\n1 Junk\n").unwrap();
        let mut uids = String::new();
        for i in 0..per {
            let folder = ["", "", ".Sent", ".Archive"][r.below(4) as usize];
            let mut msg = format!(
                "From: a@example.org\nTo: u{u}@example.org\nSubject: {i}\nMessage-ID: <{u}.{i}@crash>\n\n"
            )
            .into_bytes();
            let n = 200 + r.below(3000) as usize;
            msg.extend(r.text(n));
            if r.below(8) == 0 {
                msg.extend(r.bytes(30_000));
            }
            msg.push(b'\n');
            let t = 1_650_000_000 + (i * 613 + u) as i64;
            let base = format!("{t}.M{i}P{u}.mx1,S={}", msg.len());
            let p = if r.below(10) == 0 {
                home.join(folder).join("new").join(&base)
            } else {
                let flags = ["S", "RS", "Sa", "FSb", ""][r.below(5) as usize];
                home.join(folder).join(format!("cur/{base}:2,{flags}"))
            };
            write_at(&p, &msg, t);
            if folder.is_empty() {
                uids.push_str(&format!("{} :{base}\n", uids.lines().count() + 1));
            }
        }
        let head = format!("3 V1650000000 N{}\n", uids.lines().count() + 1);
        std::fs::write(home.join("dovecot-uidlist"), head + &uids).unwrap();
    }
}

/// The live side: each mailbox's INBOX with its own uidlist, 3 messages
/// since and a delivery in flight in `tmp/`; in odd mailboxes Sent is live
/// too (the other folders come back as a disaster restore).
fn make_live(target: &Path, users: usize, tag: &str) {
    for u in 0..users {
        let home = target.join(format!("u{u}/Maildir"));
        let folders: &[&str] = if u % 2 == 1 { &["", ".Sent"] } else { &[""] };
        for f in folders {
            let d = home.join(f);
            for s in ["cur", "new", "tmp"] {
                std::fs::create_dir_all(d.join(s)).unwrap();
            }
            std::fs::write(d.join("dovecot-uidlist"), b"3 V1700000000 N4\n").unwrap();
            for i in 0..3 {
                let m = format!("From: new@example.org\nSubject: since {i}\n\n{tag} {u}{f}\n");
                let p = if i == 0 {
                    d.join(format!("new/1700000000.M{i}.live,S={}", m.len()))
                } else {
                    d.join(format!("cur/1700000000.M{i}.live,S={}:2,S", m.len()))
                };
                write_at(&p, m.as_bytes(), 1_700_000_000 + i);
            }
        }
        write_at(
            &home.join("tmp/1700000001.M9.live"),
            b"From: half@example.org\n\npartly deliv",
            1_700_000_001,
        );
    }
}

/// What the snapshot holds: every file's hash (control files may come
/// back byte for byte) and each mailbox's message hashes.
struct Truth {
    all: BTreeSet<[u8; 32]>,
    msgs: BTreeMap<String, BTreeSet<[u8; 32]>>,
}

fn truth(spool: &Path) -> Truth {
    let mut t = Truth {
        all: BTreeSet::new(),
        msgs: BTreeMap::new(),
    };
    for p in files(spool) {
        let h = hash(&p);
        t.all.insert(h);
        if matches!(sub_of(&p), "cur" | "new") {
            let rel = p
                .strip_prefix(spool)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let user = rel.split('/').next().unwrap().to_string();
            assert!(t.msgs.entry(user).or_default().insert(h), "distinct bytes");
        }
    }
    t
}

/// The invariants after a killed or failed run (and, with `complete`,
/// after a finished one): see the module comment. Returns the problems.
fn check(
    target: &Path,
    before: &Files,
    want: &BTreeSet<[u8; 32]>,
    t: &Truth,
    complete: bool,
) -> Vec<String> {
    let now = scan(target);
    let mut bad = Vec::new();
    for (p, v) in before {
        if now.get(p) != Some(v) {
            bad.push(format!("(a) live file changed or gone: {}", p.display()));
        }
    }
    let mut folders: BTreeMap<PathBuf, Vec<[u8; 32]>> = BTreeMap::new();
    let mut seen: BTreeMap<[u8; 32], usize> = BTreeMap::new();
    for (p, &(_, size, _, h)) in &now {
        let sub = sub_of(p);
        if matches!(sub, "cur" | "new") {
            let folder = p.parent().unwrap().parent().unwrap().to_path_buf();
            folders.entry(folder).or_default().push(h);
        }
        if before.contains_key(p) {
            continue;
        }
        if matches!(sub, "cur" | "new") {
            if !want.contains(&h) {
                bad.push(format!("(c) not a whole snapshot message: {}", p.display()));
            }
            *seen.entry(h).or_default() += 1;
        } else if sub != "tmp"
            && !t.all.contains(&h)
            && !(p.file_name().is_some_and(|n| n == "maildirfolder") && size == 0)
        {
            bad.push(format!("(d) a leftover outside tmp/: {}", p.display()));
        }
    }
    for (d, hs) in &folders {
        if hs.iter().collect::<BTreeSet<_>>().len() != hs.len() {
            bad.push(format!("(b) a message twice in {}", d.display()));
        }
    }
    if complete {
        let off = want.iter().filter(|h| seen.get(*h) != Some(&1)).count();
        if off > 0 {
            bad.push(format!("{off} snapshot messages not there exactly once"));
        }
    }
    bad
}

fn restore_args<'a>(repo: &'a str, key: &'a str, path: &'a str, to: &'a str) -> Vec<&'a str> {
    vec![
        "mail", "restore", "--repo", repo, "--key", key, "latest", path, to, "--json",
    ]
}

fn json_of(o: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    })
}

/// Reruns after the fault: the first completes exactly, the second writes
/// 0; the invariants hold after each.
fn rerun_exact(
    w: &World,
    args: &[&str],
    target: &Path,
    before: &Files,
    want: &BTreeSet<[u8; 32]>,
    t: &Truth,
    what: &str,
) {
    let rep: serde_json::Value = serde_json::from_str(&w.ok(args)).unwrap();
    assert_eq!(
        rep["errors"].as_array().map(Vec::len),
        Some(0),
        "{what}: {rep}"
    );
    let bad = check(target, before, want, t, true);
    assert!(bad.is_empty(), "{what}, after the rerun: {bad:#?}");
    let third: serde_json::Value = serde_json::from_str(&w.ok(args)).unwrap();
    assert_eq!(third["written"], 0, "{what}: a third run wrote: {third}");
    let bad = check(target, before, want, t, true);
    assert!(bad.is_empty(), "{what}, after the third run: {bad:#?}");
}

const USERS: usize = 4;

fn world() -> (World, PathBuf, Truth) {
    let w = World::new();
    w.init();
    let spool = w.path("mailsrc");
    make_spool(&spool, USERS, 90, &mut Rng(0x6d61696c));
    w.backup(&[&spool]);
    let t = truth(&spool);
    (w, spool, t)
}

/// kill -9 of `mail restore` at random moments (a whole spool, one
/// mailbox, `--into-folder`, one worker or many), into live mailboxes.
#[test]
fn killed_mail_restore_leaves_live_files_and_reruns_exactly() {
    let (w, _spool, t) = world();
    let repo = w.repo();
    let key = w.key("restore");
    // How long a clean run takes (the second: the first also builds the
    // pack index): the kills land within that span.
    let mut span = 0.0;
    for i in 0..2 {
        let c = w.path(&format!("clean-{i}")).display().to_string();
        let t0 = Instant::now();
        w.ok(&restore_args(&repo, &key, "mailsrc", &c));
        span = t0.elapsed().as_secs_f64();
    }
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("clean run {span:.2} s; seed {seed}");
    let mut r = Rng(seed);
    let all: BTreeSet<[u8; 32]> = t.msgs.values().flatten().copied().collect();
    let mut mid = 0;
    for round in 0..6 {
        let target = w.path(&format!("live-{round}"));
        make_live(&target, USERS, &format!("round {round}"));
        let before = scan(&target);
        let (path, to, want) = match round % 3 {
            0 => ("mailsrc".to_string(), target.clone(), all.clone()),
            1 => {
                let u = r.below(USERS as u64);
                (
                    format!("mailsrc/u{u}/Maildir"),
                    target.join(format!("u{u}/Maildir")),
                    t.msgs[&format!("u{u}")].clone(),
                )
            }
            _ => ("mailsrc".to_string(), target.clone(), all.clone()),
        };
        let to_s = to.display().to_string();
        let mut args = restore_args(&repo, &key, &path, &to_s);
        if round % 3 == 2 {
            args.extend(["--into-folder", "Recovered"]);
        }
        if round % 2 == 1 {
            args.extend(["--parallel", "1"]);
        }
        let mut child = w
            .cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = span * 1.1 * (r.below(1000) as f64 / 1000.0);
        std::thread::sleep(Duration::from_secs_f64(wait));
        let landed = child.try_wait().unwrap().is_none();
        child.kill().unwrap();
        child.wait().unwrap();
        let placed = scan(&target)
            .keys()
            .filter(|p| !before.contains_key(*p) && matches!(sub_of(p), "cur" | "new"))
            .count();
        mid += usize::from(landed && placed > 0 && placed < want.len());
        let what = format!(
            "round {round} ({args:?}), killed after {wait:.2} s (landed {landed}), {placed} placed"
        );
        eprintln!("{what}");
        let bad = check(&target, &before, &want, &t, false);
        assert!(bad.is_empty(), "{what}: {bad:#?}");
        rerun_exact(&w, &args, &target, &before, &want, &t, &what);
    }
    eprintln!("{mid} of 6 kills landed while messages were being placed");
}

/// A full disk under the target: the restore stops with one clear line
/// and exit 3, live files untouched, nothing partial in cur/ or new/;
/// with room again, a rerun completes exactly.
#[test]
fn full_disk_stops_mail_restore_cleanly_and_a_rerun_completes() {
    let (w, _spool, t) = world();
    let mnt = w.path("small");
    let Some(_guard) = small_tmpfs(&mnt, "1m") else {
        eprintln!("cannot mount a small tmpfs here (not root?): full-disk test skipped");
        return;
    };
    let target = mnt.join("spool");
    make_live(&target, USERS, "full");
    let before = scan(&target);
    let all: BTreeSet<[u8; 32]> = t.msgs.values().flatten().copied().collect();
    let (repo, key) = (w.repo(), w.key("restore"));
    let to = target.display().to_string();
    let args = restore_args(&repo, &key, "mailsrc", &to);
    let o = w.run(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(
        err.contains("No space left on device") && err.contains("run the same command again"),
        "{err}"
    );
    let rep = json_of(&o);
    let written = rep["written"].as_u64().unwrap();
    assert!(written < all.len() as u64, "{rep}");
    let bad = check(&target, &before, &all, &t, false);
    assert!(bad.is_empty(), "on the full disk: {bad:#?}");
    let placed = scan(&target)
        .keys()
        .filter(|p| !before.contains_key(*p) && matches!(sub_of(p), "cur" | "new"))
        .count();
    assert_eq!(placed as u64, written, "the report counts what was placed");
    // Room again.
    let grown = std::process::Command::new("mount")
        .args(["-o", "remount,size=64m"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(grown.success());
    rerun_exact(&w, &args, &target, &before, &all, &t, "after the full disk");
}
