//! `holdfast mail ls|restore|export` and `holdfast drill`, with the real
//! binary, real directories, a real vault, and a real Dovecot read over
//! IMAP (tests/dovecot).

mod common;
mod dovecot;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::*;
use dovecot::Dovecot;

/// Writes a message with a correct `,S=` into a Maildir folder's `cur/`
/// (with `flags`) or `new/`, with the given mtime (INTERNALDATE).
fn put_msg(folder: &Path, base: &str, flags: Option<&str>, msg: &[u8], mtime: i64) -> PathBuf {
    for s in ["cur", "new", "tmp"] {
        std::fs::create_dir_all(folder.join(s)).unwrap();
    }
    let name = match flags {
        Some(f) => format!("cur/{base},S={}:2,{f}", msg.len()),
        None => format!("new/{base},S={}", msg.len()),
    };
    let p = folder.join(name);
    std::fs::write(&p, msg).unwrap();
    filetime::set_file_mtime(&p, filetime::FileTime::from_unix_time(mtime, 0)).unwrap();
    p
}

fn message(id: &str, subject: &str, r: &mut Rng) -> Vec<u8> {
    let mut m = format!(
        "From: a@example.org\r\nTo: u@example.org\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n\r\n"
    )
    .into_bytes();
    let n = 300 + r.below(3000) as usize;
    m.extend(r.text(n));
    // Lines an mbox must quote, and a long random part for some.
    m.extend(b"\r\nFrom the desk of\r\n>From quoted\r\n");
    if r.below(4) == 0 {
        m.extend(r.bytes(20_000));
    }
    m.extend(b"\r\n");
    m
}

/// A spool of `users` Maildir++ mailboxes: INBOX (cur and new), Sent,
/// Archive.2024; distinct mtimes. Returns Message-IDs by (user, folder).
fn make_spool(
    spool: &Path,
    users: &[&str],
    per: usize,
    seed: u64,
) -> BTreeMap<(String, String), Vec<String>> {
    let mut r = Rng(seed | 1);
    let mut ids = BTreeMap::new();
    for (ui, u) in users.iter().enumerate() {
        let home = spool.join(u);
        for (fi, (folder, dir)) in [
            ("INBOX", ""),
            ("Sent", ".Sent"),
            ("Archive.2024", ".Archive.2024"),
        ]
        .into_iter()
        .enumerate()
        {
            let fd = home.join(dir);
            let n = if fi == 0 { per } else { per / 2 };
            for i in 0..n {
                let id = format!("m{seed}.{u}.{fi}.{i}@example.org");
                let msg = message(&id, &format!("{folder} {i}"), &mut r);
                let t = 1_700_000_000 + (ui * 100_000 + fi * 10_000 + i * 97) as i64;
                let flags = if i % 5 == 4 { None } else { Some("S") };
                put_msg(&fd, &format!("{t}.M{i}P{ui}{fi}.old"), flags, &msg, t);
                ids.entry((u.to_string(), folder.to_string()))
                    .or_insert_with(Vec::new)
                    .push(id);
            }
            if fi > 0 {
                std::fs::write(fd.join("maildirfolder"), b"").unwrap();
            }
        }
        std::fs::write(home.join("subscriptions"), b"Sent\nArchive.2024\n").unwrap();
    }
    ids
}

/// Path → (inode, content hash) of every file under `root` except
/// Dovecot's own indexes, uidlist and UIDVALIDITY counter (which Dovecot
/// itself rewrites while it delivers); the uidlist's header is checked
/// apart.
fn manifest(root: &Path) -> BTreeMap<PathBuf, (u64, [u8; 32])> {
    files(root)
        .into_iter()
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            let in_tmp = p
                .strip_prefix(root)
                .unwrap()
                .components()
                .any(|c| c.as_os_str() == "tmp");
            // Dovecot's own state, which Dovecot rewrites in place.
            let dovecots = n.starts_with("dovecot.") || n.starts_with("dovecot-uidvalidity");
            !dovecots && n != "dovecot-uidlist" && !in_tmp
        })
        .map(|p| {
            let md = std::fs::metadata(&p).unwrap();
            let h = *blake3::hash(&std::fs::read(&p).unwrap()).as_bytes();
            (p, (md.ino(), h))
        })
        .collect()
}

fn mail_restore(
    w: &World,
    repo: &str,
    snap: &str,
    path: &str,
    target: &Path,
    extra: &[&str],
) -> serde_json::Value {
    let key = w.key("restore");
    let t = target.display().to_string();
    let mut args = vec![
        "mail", "restore", "--repo", repo, "--key", &key, snap, path, &t, "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(&w.ok(&args)).unwrap()
}

fn uidlist_header(p: &Path) -> (u32, u32) {
    let s = std::fs::read_to_string(p).unwrap();
    let head = s.lines().next().unwrap().to_string();
    let field = |k: char| -> u32 {
        head.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.parse().ok()))
            .unwrap()
    };
    (field('V'), field('N'))
}

const FOLDERS: [&str; 3] = ["INBOX", "Sent", "Archive.2024"];

/// The morning after: a spool backed up, wiped; new empty mailboxes take
/// new mail (dovecot-lda) while `mail restore` runs. Nothing live changes,
/// every delivery is there, the history is back exactly once with its
/// INTERNALDATE, flags, keywords (by name) and size; UIDVALIDITY kept;
/// Dovecot logs nothing about unexpunged or duplicate messages; a second
/// run writes nothing.
#[test]
fn morning_after_with_dovecot() {
    if dovecot::skip() {
        return;
    }
    let w = World::new();
    w.init();
    let users = ["alice", "bob", "carol"];
    let dv = Dovecot::start(&w.path("dc"), &users);
    let spool = dv.spool();
    // INBOX holds more than the first pass's 100 messages: it is restored
    // in two walks over the spool, under fresh names each time.
    make_spool(&spool, &users, 130, 7);
    dv.chown(&spool);
    // Dovecot indexes the mailboxes and keeps flags and keywords: keyword
    // letters in the backup are $Important=a, Junk=b.
    let mut before: BTreeMap<(String, String), dovecot::FolderView> = BTreeMap::new();
    for u in users {
        let mut c = dv.imap(u);
        for f in FOLDERS {
            c.folder(f);
        }
        c.ok("SELECT INBOX");
        c.ok("UID STORE 1,3 +FLAGS ($Important)");
        c.ok("UID STORE 2,3,5 +FLAGS (Junk \\Flagged)");
        c.ok("UID STORE 4 +FLAGS (\\Answered \\Seen)");
        c.ok("SELECT Sent");
        c.ok("UID STORE 2 +FLAGS (Junk)");
        for f in FOLDERS {
            before.insert((u.into(), f.into()), c.folder(f));
        }
        c.ok("LOGOUT");
    }
    assert!(
        before[&("alice".into(), "INBOX".into())].msgs[2]
            .flags
            .contains("Junk")
    );
    let snap = w.backup(&[&spool])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();

    // Everything lost; new mailboxes take new mail at once. Keywords are
    // set there in the other order: Junk=a, $Important=b.
    std::fs::remove_dir_all(&spool).unwrap();
    std::fs::create_dir_all(&spool).unwrap();
    dv.chown(&spool);
    let mut r = Rng(99);
    let mut live_ids: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for u in users {
        let id = format!("new0.{u}@example.org");
        dv.deliver(u, None, &message(&id, "after", &mut r));
        live_ids.entry(u.into()).or_default().push(id);
        let mut c = dv.imap(u);
        c.ok("SELECT INBOX");
        c.ok("UID STORE 1 +FLAGS (Junk)");
        c.ok("UID STORE 1 +FLAGS ($Important)");
        c.ok("LOGOUT");
    }
    assert!(
        std::fs::read_to_string(spool.join("alice/dovecot-keywords"))
            .unwrap()
            .starts_with("0 Junk\n1 $Important"),
        "the live folder must letter keywords differently from the backup"
    );
    let live_before: BTreeMap<String, (u32, u32)> = users
        .iter()
        .map(|u| {
            (
                u.to_string(),
                uidlist_header(&spool.join(u).join("dovecot-uidlist")),
            )
        })
        .collect();
    let kept = manifest(&spool);
    assert!(!kept.is_empty());

    // Restore the spool (by its absolute path) while mail keeps arriving.
    let key = w.key("restore");
    let repo = w.repo();
    let sp = spool.display().to_string();
    let child = w
        .cmd(&[
            "mail", "restore", "--repo", &repo, "--key", &key, &snap, &sp, &sp, "--json",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    for k in 1..=3 {
        for u in users {
            let id = format!("new{k}.{u}@example.org");
            dv.deliver(u, None, &message(&id, "during", &mut r));
            live_ids.entry(u.into()).or_default().push(id);
        }
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "mail restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rep: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let total: usize = before.values().map(|v| v.msgs.len()).sum();
    assert_eq!(rep["written"], total as u64, "{rep}");
    assert_eq!(rep["mailboxes"], 3);
    assert!(rep["bytes_read"].as_u64().unwrap() > 0);
    first_pass_reported(&rep);

    // Nothing live changed: same paths, inodes and bytes.
    let now = manifest(&spool);
    for (p, v) in &kept {
        assert_eq!(now.get(p), Some(v), "live file {} changed", p.display());
    }
    for u in users {
        let (v0, n0) = live_before[u];
        let (v1, n1) = uidlist_header(&spool.join(u).join("dovecot-uidlist"));
        assert_eq!(v1, v0, "UIDVALIDITY of {u} changed");
        assert!(n1 >= n0, "next UID of {u} went down");
    }
    // What a client sees: the history once, every new message, with the
    // same INTERNALDATE, flags, keywords by name and size.
    for u in users {
        let mut c = dv.imap(u);
        for f in FOLDERS {
            let after = c.folder(f);
            let mut seen = BTreeSet::new();
            for m in &after.msgs {
                assert!(
                    seen.insert(m.message_id.clone()),
                    "{u}/{f}: {} twice",
                    m.message_id
                );
            }
            let old = &before[&(u.to_string(), f.to_string())];
            let am = after.by_message_id();
            for m in &old.msgs {
                let got = am
                    .get(&m.message_id)
                    .unwrap_or_else(|| panic!("{u}/{f}: {} missing", m.message_id));
                assert_eq!(
                    (&got.flags, &got.internaldate, got.size),
                    (&m.flags, &m.internaldate, m.size),
                    "{u}/{f}: {} differs",
                    m.message_id
                );
            }
            let mut expect = old.msgs.len();
            if f == "INBOX" {
                for id in &live_ids[u] {
                    assert!(
                        am.contains_key(&format!("<{}>", id.to_ascii_lowercase())),
                        "{u}: delivery {id} missing"
                    );
                }
                expect += live_ids[u].len();
            }
            assert_eq!(
                after.msgs.len(),
                expect,
                "{u}/{f}: restored set is not snapshot + live"
            );
        }
        c.ok("LOGOUT");
    }
    let log = dv.log();
    for bad in [
        "unexpunged",
        "duplicate",
        "Duplicate",
        "reappeared",
        "Error",
        "Panic",
    ] {
        assert!(!log.contains(bad), "dovecot logged {bad:?}:\n{log}");
    }
    // A second run writes nothing.
    let again = mail_restore(&w, &repo, &snap, &sp, &spool, &[]);
    assert_eq!(again["written"], 0, "{again}");
    assert_eq!(again["skipped"], total as u64, "{again}");
}

/// `mail restore` of a spool reports when every mailbox had its newest
/// 100 INBOX messages (the first pass), no later than the whole run.
fn first_pass_reported(rep: &serde_json::Value) {
    let first = rep["inbox_newest_done_secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("no inbox_newest_done_secs: {rep}"));
    let all = rep["seconds"].as_f64().unwrap();
    assert!(first > 0.0 && first <= all, "{rep}");
    let every_inbox = rep["all_inboxes_seconds"].as_f64().unwrap();
    assert!(every_inbox <= all, "{rep}");
}

/// Disaster restore into an empty target: UIDVALIDITY and every UID →
/// message mapping are what IMAP showed before the wipe.
#[test]
fn disaster_restore_keeps_uids_with_dovecot() {
    if dovecot::skip() {
        return;
    }
    let w = World::new();
    w.init();
    let users = ["dave", "erin"];
    let dv = Dovecot::start(&w.path("dc"), &users);
    let spool = dv.spool();
    // INBOX over the first pass's 100: its newest 100 come back in the
    // first walk under their own names, the uidlist with the rest.
    make_spool(&spool, &users, 130, 11);
    dv.chown(&spool);
    let mut before = BTreeMap::new();
    for u in users {
        let mut c = dv.imap(u);
        for f in FOLDERS {
            c.folder(f);
        }
        c.ok("SELECT INBOX");
        c.ok("UID STORE 1:4 +FLAGS (\\Seen Work)");
        // Expunge one: UIDs are no longer dense.
        c.ok("UID STORE 2 +FLAGS (\\Deleted)");
        c.ok("EXPUNGE");
        for f in FOLDERS {
            before.insert((u, f), c.folder(f));
        }
        c.ok("LOGOUT");
    }
    let snap = w.backup(&[&spool])["snapshot"]
        .as_str()
        .unwrap()
        .to_string();
    // The snapshot's INBOX files, newest first (the first pass takes the
    // first 100 of each), and every other message file.
    let mut first: Vec<PathBuf> = Vec::new();
    let mut rest: Vec<PathBuf> = Vec::new();
    for u in users {
        let home = spool.join(u);
        let mut inbox: Vec<(i64, PathBuf)> = files(&home)
            .into_iter()
            .filter_map(|p| {
                let rel = p.strip_prefix(&home).unwrap().to_path_buf();
                let top = rel.components().next()?.as_os_str().to_owned();
                if top == "cur" || top == "new" {
                    Some((std::fs::metadata(&p).unwrap().mtime(), rel))
                } else {
                    let msg = rel.components().count() == 3
                        && rel
                            .components()
                            .nth(1)
                            .is_some_and(|c| c.as_os_str() == "cur" || c.as_os_str() == "new");
                    if msg {
                        rest.push(Path::new(u).join(rel));
                    }
                    None
                }
            })
            .collect();
        assert_eq!(inbox.len(), 130 - 1, "{u}: INBOX less the expunged one");
        inbox.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
        for (i, (_, rel)) in inbox.into_iter().enumerate() {
            if i < 100 { &mut first } else { &mut rest }.push(Path::new(u).join(rel));
        }
    }
    std::fs::remove_dir_all(&spool).unwrap();
    // One mailbox at a time (--parallel 1): without a first pass over
    // the spool, dave's other folders would be placed before erin's INBOX.
    let rep = mail_restore(&w, &w.repo(), &snap, "mail", &spool, &["--parallel", "1"]);
    assert!(rep["control_files"].as_u64().unwrap() >= 6, "{rep}");
    assert_eq!(rep["folders_uids_kept"], 6, "{rep}");
    first_pass_reported(&rep);
    // Placing a file (a rename) sets its ctime: every mailbox's newest
    // 100 INBOX messages were in place before any other message.
    let ctime = |rel: &PathBuf| {
        let p = spool.join(rel);
        // Dovecot has not run since: names and places are the snapshot's.
        let md = std::fs::metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        (md.ctime(), md.ctime_nsec())
    };
    let last_first = first.iter().map(ctime).max().unwrap();
    let (early, t) = rest
        .iter()
        .map(|p| (p, ctime(p)))
        .min_by_key(|x| x.1)
        .unwrap();
    assert!(
        last_first <= t,
        "{} placed before the first pass ended",
        early.display()
    );
    assert_eq!(first.len(), 200);
    assert!(rest.len() > 200);
    for u in users {
        let mut c = dv.imap(u);
        for f in FOLDERS {
            let after = c.folder(f);
            let old = &before[&(u, f)];
            assert_eq!(after.uidvalidity, old.uidvalidity, "{u}/{f}: UIDVALIDITY");
            assert_eq!(
                after.msgs, old.msgs,
                "{u}/{f}: UID → message, flags, dates, sizes"
            );
        }
        c.ok("LOGOUT");
    }
    let log = dv.log();
    for bad in ["unexpunged", "duplicate", "reappeared", "Error", "Panic"] {
        assert!(!log.contains(bad), "dovecot logged {bad:?}:\n{log}");
    }
}

/// Without Dovecot: `mail ls`, `--dry-run`, `--into-folder`, `--folder`,
/// one mailbox out of a spool (bytes read reported and small), LAYOUT=fs,
/// time-based SNAPSHOT, --host/--path filters, absolute --path for
/// `restore` and `ls`.
#[test]
fn mail_options_on_real_directories() {
    let w = World::new();
    w.init();
    let src = w.path("var/mail");
    let users: Vec<String> = (0..8).map(|i| format!("user{i}")).collect();
    let u: Vec<&str> = users.iter().map(String::as_str).collect();
    make_spool(&src, &u, 40, 3);
    // One mailbox in Dovecot's LAYOUT=fs.
    let fsbox = src.join("fsuser");
    let mut r = Rng(5);
    put_msg(
        &fsbox,
        "1.M1.a",
        Some("S"),
        &message("fs1@x", "i", &mut r),
        1_600_000_000,
    );
    put_msg(
        &fsbox.join("Work"),
        "2.M2.a",
        Some("F"),
        &message("fs2@x", "w", &mut r),
        1_600_000_100,
    );
    put_msg(
        &fsbox.join("Work/Old"),
        "3.M3.a",
        None,
        &message("fs3@x", "o", &mut r),
        1_600_000_200,
    );
    let first = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let (repo, key) = (w.repo(), w.key("restore"));

    // mail ls: every mailbox, with folders, counts, bytes, newest.
    let ls: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "mail", "ls", "--repo", &repo, "--key", &key, &first, "--json",
    ]))
    .unwrap();
    assert_eq!(ls.len(), 9);
    let u0 = ls.iter().find(|m| m["path"] == "mail/user0").unwrap();
    assert_eq!(u0["messages"], 80);
    assert_eq!(u0["layout"], "maildir++");
    let names: Vec<&str> = u0["folders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["INBOX", "Archive.2024", "Sent"]);
    let fsl = ls.iter().find(|m| m["path"] == "mail/fsuser").unwrap();
    assert_eq!(fsl["layout"], "fs");
    assert_eq!(fsl["messages"], 3);
    // The absolute path as backed up names the same mailbox.
    let abs = src.join("user3").display().to_string();
    let one: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&[
        "mail", "ls", "--repo", &repo, "--key", &key, &first, &abs, "--json",
    ]))
    .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0]["path"], "mail/user3");

    // --dry-run writes nothing and counts.
    let target = w.path("live");
    std::fs::create_dir_all(&target).unwrap();
    let dry = mail_restore(&w, &repo, &first, "mail", &target, &["--dry-run"]);
    assert_eq!(dry["written"], 8 * 80 + 3);
    assert_eq!(
        std::fs::read_dir(&target).unwrap().count(),
        0,
        "dry run wrote"
    );

    // One mailbox out of the spool reads a fraction of the repository.
    let stored: u64 = files(&w.path("repo"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let mb_bytes: u64 = files(&src.join("user3"))
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum();
    let single = mail_restore(&w, &repo, &first, &abs, &target.join("user3"), &[]);
    assert_eq!(single["written"], 80);
    // One mailbox is restored in one pass: no first pass to report.
    assert!(single["inbox_newest_done_secs"].is_null(), "{single}");
    let read = single["bytes_read"].as_u64().unwrap();
    assert!(
        read > 0 && read < stored / 3,
        "read {read} of {stored} stored for one mailbox of {mb_bytes}"
    );
    // Every file back with its bytes and mtime (modes are the mail
    // user's: 0600).
    let got = digest(&target.join("user3"));
    let want = digest(&src.join("user3"));
    let mut n = 0;
    for (p, item) in &want {
        if let Item::File {
            mtime,
            data_hash,
            size,
            ..
        } = item
        {
            match got.get(p) {
                Some(Item::File {
                    mtime: m,
                    data_hash: h,
                    size: s,
                    ..
                }) => {
                    assert_eq!(
                        (m, h, s),
                        (mtime, data_hash, size),
                        "{}",
                        String::from_utf8_lossy(p)
                    )
                }
                other => panic!("{}: {other:?}", String::from_utf8_lossy(p)),
            }
            n += 1;
        }
    }
    assert_eq!(n, 83, "80 messages, subscriptions, 2 maildirfolder");

    // --into-folder: a live mailbox gets everything under Recovered.
    let live = target.join("user5");
    let mut r = Rng(77);
    put_msg(
        &live,
        "9.M9.live",
        Some("S"),
        &message("live@x", "live", &mut r),
        1_800_000_000,
    );
    std::fs::write(live.join("dovecot-uidlist"), b"3 V42 N2\n1 :9.M9.live\n").unwrap();
    let kept = manifest(&live);
    let into = mail_restore(
        &w,
        &repo,
        &first,
        "mail/user5",
        &live,
        &["--into-folder", "Recovered"],
    );
    assert_eq!(into["written"], 80, "{into}");
    assert_eq!(
        files(&live.join(".Recovered/cur")).len() + files(&live.join(".Recovered/new")).len(),
        40
    );
    assert_eq!(files(&live.join(".Recovered.Sent/cur")).len(), 16);
    assert!(live.join(".Recovered/maildirfolder").exists());
    assert_eq!(
        files(&live.join("cur")).len(),
        1,
        "INBOX of the live mailbox untouched"
    );
    let now = manifest(&live);
    for (p, v) in &kept {
        assert_eq!(now.get(p), Some(v));
    }
    // Fresh names with a correct S=, mtimes kept.
    for p in files(&live.join(".Recovered/cur")) {
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        let s: u64 = n
            .split(",S=")
            .nth(1)
            .unwrap()
            .split([',', ':'])
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(s, std::fs::metadata(&p).unwrap().len(), "{n}");
        assert!(!n.contains(".old"), "old base name reused: {n}");
    }
    // A folder that is a symbolic link is not followed (a mail user
    // pointing it elsewhere): that folder fails, exit 3, nothing written
    // there; the other folders are restored.
    let elsewhere = w.path("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let victim = target.join("user7");
    std::fs::create_dir_all(&victim).unwrap();
    std::os::unix::fs::symlink(&elsewhere, victim.join(".Sent")).unwrap();
    let t7 = victim.display().to_string();
    let o = w.run(&[
        "mail",
        "restore",
        "--repo",
        &repo,
        "--key",
        &key,
        &first,
        "mail/user7",
        &t7,
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("symbolic link"));
    assert_eq!(
        std::fs::read_dir(&elsewhere).unwrap().count(),
        0,
        "wrote through a symlink"
    );
    assert_eq!(
        files(&victim.join("cur")).len() + files(&victim.join("new")).len(),
        40
    );
    // --folder: only Sent.
    let only = mail_restore(
        &w,
        &repo,
        &first,
        "mail/user6",
        &target.join("user6"),
        &["--folder", "Sent"],
    );
    assert_eq!(only["written"], 20);
    assert!(!target.join("user6/cur").exists() || files(&target.join("user6/cur")).is_empty());
    // LAYOUT=fs restored as it was.
    mail_restore(
        &w,
        &repo,
        &first,
        "mail/fsuser",
        &target.join("fsuser"),
        &[],
    );
    assert_eq!(files(&target.join("fsuser/Work/Old/new")).len(), 1);

    // A second snapshot later; a time between the two picks the first.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let snaps = w.snapshots();
    // Printed to the second: the end of that second.
    let t1 = snaps[0]["time"]
        .as_str()
        .unwrap()
        .replace('Z', ".999999999Z");
    mail_day(&src, 4);
    let second = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let ls_at = |spec: &str, extra: &[&str]| -> String {
        let mut a = vec!["ls", "--repo", &repo, "--key", &key, spec, "--json"];
        a.extend_from_slice(extra);
        let v: Vec<serde_json::Value> = serde_json::from_str(&w.ok(&a)).unwrap();
        v.iter()
            .map(|e| e["path"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    let new_file = "day4.0.0.mx1";
    assert!(
        !ls_at(&t1, &[]).contains(new_file),
        "time {t1} chose the second snapshot"
    );
    assert!(ls_at("latest", &[]).contains(new_file));
    assert!(ls_at("2099-01-01", &[]).contains(new_file));
    let o = w.run(&["ls", "--repo", &repo, "--key", &key, "2000-01-01"]);
    assert_eq!(o.status.code(), Some(1));
    // --host and --path filters; absolute --path for ls.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    assert!(ls_at("latest", &["--host", &host]).contains(new_file));
    let o = w.run(&[
        "ls",
        "--repo",
        &repo,
        "--key",
        &key,
        "latest",
        "--host",
        "no-such-host",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let only_u1 = ls_at(
        "latest",
        &["--path", &src.join("user1").display().to_string()],
    );
    assert!(
        only_u1.lines().all(|l| l.starts_with("mail/user1")),
        "{only_u1}"
    );
    assert!(only_u1.contains("mail/user1/cur"));
    // restore with two absolute --path: both, and nothing else.
    let out = w.path("two");
    let t = out.display().to_string();
    let p1 = src.join("user1/.Sent").display().to_string();
    let p2 = src.join("user2").display().to_string();
    w.ok(&[
        "restore", "--repo", &repo, "--key", &key, "latest", &t, "--path", &p1, "--path", &p2,
    ]);
    assert_eq!(
        digest(&out.join("mail/user1/.Sent")),
        digest(&src.join("user1/.Sent"))
    );
    assert_eq!(digest(&out.join("mail/user2")), digest(&src.join("user2")));
    assert_eq!(std::fs::read_dir(out.join("mail")).unwrap().count(), 2);
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        1,
        "staging left behind"
    );
}

/// mbox export: one file per folder; parsing it back gives every message
/// byte for byte (bodies with `From ` and `>From ` lines).
#[test]
fn mbox_export_round_trip() {
    let w = World::new();
    w.init();
    let src = w.path("spool");
    make_spool(&src, &["zed"], 12, 21);
    let snap = w.backup(&[&src])["snapshot"].as_str().unwrap().to_string();
    let out = w.path("mbox");
    let o = w.ok(&[
        "mail",
        "export",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("restore"),
        &snap,
        "spool/zed",
        "--mbox",
        out.to_str().unwrap(),
    ]);
    assert!(o.contains("exported 24 messages"), "{o}");
    for (folder, dir) in [
        ("INBOX", ""),
        ("Sent", ".Sent"),
        ("Archive.2024", ".Archive.2024"),
    ] {
        let mbox = std::fs::read(out.join(format!("{folder}.mbox"))).unwrap();
        assert!(
            mbox.windows(16).any(|w| w == b"\n>From the desk "),
            "From line not quoted"
        );
        let back = holdfast_repo::mail::mbox::parse(&mbox);
        let mut orig: Vec<(i64, Vec<u8>)> = ["cur", "new"]
            .iter()
            .flat_map(|s| files(&src.join("zed").join(dir).join(s)))
            .map(|p| {
                (
                    std::fs::metadata(&p).unwrap().mtime(),
                    std::fs::read(&p).unwrap(),
                )
            })
            .collect();
        orig.sort();
        let orig: Vec<Vec<u8>> = orig.into_iter().map(|(_, b)| b).collect();
        assert_eq!(back.len(), orig.len(), "{folder}");
        assert!(back == orig, "{folder}: the round trip changed a message");
    }
    // Never over an existing file.
    let o = w.run(&[
        "mail",
        "export",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("restore"),
        &snap,
        "spool/zed",
        "--mbox",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3));
}

fn drill(w: &World, repo: &str, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let key = w.key("restore");
    let hist = w.path("drill-history.jsonl").display().to_string();
    let mut a = vec![
        "drill",
        "--repo",
        repo,
        "--key",
        &key,
        "--json",
        "--history",
        &hist,
    ];
    a.extend_from_slice(extra);
    let o = w.run(&a);
    let v = serde_json::from_slice(&o.stdout).unwrap_or(serde_json::Value::Null);
    (
        o.status.code(),
        v,
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// `drill` passes on a vault, a replica and a bundle, records each run in
/// its history, and exits 4 after one flipped byte in a pack.
#[test]
fn drill_on_vault_replica_bundle_and_a_flipped_byte() {
    let w = World::new();
    w.init();
    let src = w.path("spool");
    make_spool(&src, &["a1", "a2", "a3", "a4"], 15, 31);
    let vault = w.start_vault(&[]);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    let (code, v, err) = drill(&w, &vault.url, &["--sample", "2"]);
    assert_eq!(code, Some(0), "{err}");
    let run = &v["run"];
    assert_eq!(run["mailboxes"], 2);
    assert_eq!(run["mailboxes_total"], 4);
    assert!(run["verified"].as_u64().unwrap() >= 2 * 30);
    assert!(run["mb_per_s"].as_f64().unwrap() > 0.0);
    assert!(run["files_per_s"].as_f64().unwrap() > 0.0);
    assert!(run["first_inbox_seconds"].as_f64().is_some());
    assert!(run["projected_full_seconds"].as_f64().unwrap() > 0.0);

    let replica = w.path("replica");
    w.ok(&[
        "replica",
        "pull",
        "--from",
        &vault.url,
        "--key",
        &w.key("replica"),
        "--into",
        replica.to_str().unwrap(),
    ]);
    let bundle = w.path("bundle");
    w.ok(&[
        "export",
        "--repo",
        &vault.url,
        "--key",
        &w.key("replica"),
        "--to",
        bundle.to_str().unwrap(),
    ]);
    let (code, v, err) = drill(&w, replica.to_str().unwrap(), &["--full"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["run"]["full"], true);
    assert_eq!(v["run"]["mailboxes"], 4);
    let (code, v, err) = drill(&w, &format!("bundle:{}", bundle.display()), &["--full"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        v["history"].as_array().unwrap().len(),
        3,
        "every run recorded"
    );

    // One flipped byte in a pack of the replica: the drill fails, exit 4.
    let packs: Vec<PathBuf> = files(&replica)
        .into_iter()
        .filter(|p| {
            p.to_string_lossy().contains("/packs/") || p.to_string_lossy().contains("/pack/")
        })
        .collect();
    assert!(!packs.is_empty(), "no packs in {}", replica.display());
    let big = packs
        .iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut b = std::fs::read(big).unwrap();
    let at = b.len() / 2;
    b[at] ^= 0x01;
    std::fs::write(big, b).unwrap();
    let (code, v, err) = drill(&w, replica.to_str().unwrap(), &["--full"]);
    assert_eq!(code, Some(4), "{err}");
    assert_eq!(v["run"]["ok"], false);
    assert!(err.contains("DRILL FAILED"), "{err}");
}

/// Through a vault with two mail servers: `latest` alone is refused as
/// ambiguous; `--client`, a time (the vault's), and a path held by one
/// server's snapshots only each choose the right snapshot; `mail restore`
/// over the vault reads whole packs once and writes the mailbox.
#[test]
fn choosing_among_servers_through_a_vault() {
    let w = World::new();
    let keys = w.path("keys").display().to_string();
    w.ok(&[
        "init",
        &w.repo(),
        "--keys",
        &keys,
        "--client",
        "mx1",
        "--client",
        "mx2",
    ]);
    let vault = w.start_vault(&[]);
    let url = vault.url.clone();
    let (k1, k2) = (w.key("client"), w.key("client-mx2"));
    let s1 = w.path("mx1/mail");
    let s2 = w.path("mx2/spool");
    make_spool(&s1, &["ann"], 10, 41);
    make_spool(&s2, &["ben"], 10, 42);
    let first = backup_via(&w, &url, &k1, &s1);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    backup_via(&w, &url, &k2, &s2);
    let mut r = Rng(8);
    put_msg(
        &s1.join("ann"),
        "2000000000.M1.late",
        Some("S"),
        &message("late@x", "late", &mut r),
        2_000_000_000,
    );
    let second = backup_via(&w, &url, &k1, &s1);
    let key = w.key("restore");
    let list = |args: &[&str]| -> (Option<i32>, Vec<serde_json::Value>) {
        let mut a = vec!["mail", "ls", "--repo", &url, "--key", &key, "--json"];
        a.extend_from_slice(args);
        let o = w.run(&a);
        (
            o.status.code(),
            serde_json::from_slice(&o.stdout).unwrap_or_default(),
        )
    };
    let (code, _) = list(&["latest"]);
    assert_eq!(code, Some(1), "latest with two servers must be refused");
    let (code, v) = list(&["latest", "--client", "mx1"]);
    assert_eq!(code, Some(0));
    assert_eq!(v[0]["path"], "mail/ann");
    assert_eq!(v[0]["messages"], 21);
    // The vault's time of the first snapshot, to the end of its second.
    let snaps = w.snapshots();
    let t = snaps
        .iter()
        .find(|s| s["id"].as_str() == Some(first.as_str()))
        .unwrap_or_else(|| panic!("{first} not in {snaps:?}"))["time"]
        .as_str()
        .unwrap()
        .replace('Z', ".999999999Z");
    let (code, v) = list(&[&t, "--client", "mx1"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        v[0]["messages"], 20,
        "the time chose {second} instead of {first}"
    );
    // A path only mx2 backed up chooses mx2's snapshot without --client.
    let abs = s2.join("ben").display().to_string();
    let (code, v) = list(&["latest", &abs]);
    assert_eq!(code, Some(0));
    assert_eq!(v[0]["path"], "spool/ben");
    let target = w.path("restored/ben");
    let rep = mail_restore(&w, &url, "latest", &abs, &target, &[]);
    assert_eq!(rep["written"], 20, "{rep}");
    assert_eq!(
        files(&target.join("cur")).len() + files(&target.join("new")).len(),
        10
    );
}
