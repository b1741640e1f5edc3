//! Detection (SPEC G8, T4; issue 11), end to end with the real binary, real
//! directories and a real vault on 127.0.0.1: what the client finds at
//! backup time (exit 5, findings in the signed snapshot, shown by
//! `snapshots`), what the vault finds without trusting the client, and the
//! lock hold that keeps the last healthy snapshot through a burst of bad ones.

mod common;

use std::path::Path;

use common::*;

#[allow(dead_code)] // used by the vault tests below
/// Runs `backup --json` and returns (exit code, report, stderr).
fn backup(w: &World, repo: &str, src: &Path) -> (i32, serde_json::Value, String) {
    let o = w.run(&[
        "backup",
        "--repo",
        repo,
        "--key",
        &w.key("client"),
        "--json",
        src.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    let v: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {stderr}"));
    (o.status.code().unwrap_or(-1), v[0].clone(), stderr)
}

fn signals(v: &serde_json::Value) -> Vec<String> {
    v["anomalies"]
        .as_array()
        .unwrap_or_else(|| panic!("no anomalies array in {v}"))
        .iter()
        .map(|a| a["signal"].as_str().unwrap().to_string())
        .collect()
}

/// Every message file of a spool.
fn messages(root: &Path) -> Vec<std::path::PathBuf> {
    files(root)
        .into_iter()
        .filter(|p| {
            p.parent()
                .and_then(|d| d.file_name())
                .is_some_and(|n| n == "cur" || n == "new")
        })
        .collect()
}

fn snapshot<'a>(list: &'a [serde_json::Value], id: &str) -> &'a serde_json::Value {
    list.iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("snapshot {id} not listed"))
}

#[test]
fn normal_mail_days_exit_0_with_no_anomalies() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 4, 30, 11);
    let (code, first, _) = backup(&w, &w.repo(), &src);
    assert_eq!(code, 0);
    assert_eq!(signals(&first), Vec::<String>::new());
    for day in 1..=3 {
        // New mail, flag renames, a deletion per third user; and a move
        // from new/ to cur/ of yesterday's mail, as a client reading it.
        for u in files(&src)
            .iter()
            .filter(|p| p.parent().unwrap().ends_with("new"))
        {
            let to = u
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("cur")
                .join(format!("{}:2,S", u.file_name().unwrap().to_str().unwrap()));
            std::fs::rename(u, to).unwrap();
        }
        mail_day(&src, day);
        let (code, v, err) = backup(&w, &w.repo(), &src);
        assert_eq!(code, 0, "day {day}: {err}");
        assert_eq!(signals(&v), Vec::<String>::new(), "day {day}");
    }
    let list = w.snapshots();
    assert_eq!(list.len(), 4);
    let first_id = first["snapshot"].as_str().unwrap();
    for s in &list {
        assert_eq!(s["anomalies"], serde_json::json!([]));
        // The first backup had nothing to compare with: not "checked".
        let first = s["id"] == first_id;
        assert_eq!(s["checked_for_anomalies"], !first, "{s}");
        assert_eq!(s["checked"], if first { "no_baseline" } else { "compared" });
        // A local repository judges with the defaults, and says so.
        assert_eq!(s["thresholds"]["new_extension"], 20, "{s}");
        assert_eq!(s["thresholds"]["deletions"], 100, "{s}");
    }
}

/// `backup --no-detect` (for measuring detection's overhead) compares
/// nothing and exits 0 even on an encrypted burst, but the snapshot records
/// that it was not checked, and `snapshots` shows it; a lost cache is no
/// baseline either. The next normal backup compares again.
#[test]
fn no_detect_and_lost_caches_are_recorded_as_not_checked() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 2, 20, 13);
    assert_eq!(backup(&w, &w.repo(), &src).0, 0);
    let victims: Vec<_> = messages(&src).into_iter().take(5).collect();
    let mut r = Rng(5);
    for p in &victims {
        let n = std::fs::metadata(p).unwrap().len() as usize;
        std::fs::write(p, r.bytes(n)).unwrap();
    }
    let o = w.run(&[
        "backup",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        "--json",
        "--no-detect",
        src.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(err.contains("was not checked"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["checked"], "off");
    let off_id = v[0]["snapshot"].as_str().unwrap().to_string();
    // A lost cache: no baseline.
    let o = w.run(&[
        "backup",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        "--cache-dir",
        w.path("fresh-cache").to_str().unwrap(),
        "--json",
        src.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let lost_id = bad_report(&o)["snapshot"].as_str().unwrap().to_string();
    let list = w.snapshots();
    let off = snapshot(&list, &off_id);
    assert_eq!(off["checked_for_anomalies"], false);
    assert_eq!(off["checked"], "off");
    assert_eq!(off["anomalies"], serde_json::json!([]));
    let lost = snapshot(&list, &lost_id);
    assert_eq!(lost["checked_for_anomalies"], false);
    assert_eq!(lost["checked"], "no_baseline");
    let text = w.ok(&["snapshots", "--repo", &w.repo(), "--key", &w.key("auditor")]);
    let line = text
        .lines()
        .find(|l| l.starts_with(&off_id[..16]))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("not checked (--no-detect)"), "{text}");
    // The client's cache moved on with the unchecked run: detection resumes
    // from it at the next backup.
    for p in &victims {
        let n = std::fs::metadata(p).unwrap().len() as usize;
        std::fs::write(p, r.bytes(n)).unwrap();
    }
    let (code, v, err) = backup(&w, &w.repo(), &src);
    assert_eq!(code, 5, "{err}");
    assert!(signals(&v).contains(&"in_place".to_string()));
}

#[test]
fn wiped_spool_exits_5_and_the_snapshot_is_flagged() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 4, 9, 21);
    assert_eq!(backup(&w, &w.repo(), &src).0, 0);
    // Every user's mailbox removed: 36 messages, now 0.
    for e in std::fs::read_dir(&src).unwrap() {
        std::fs::remove_dir_all(e.unwrap().path()).unwrap();
    }
    let (code, v, err) = backup(&w, &w.repo(), &src);
    assert_eq!(code, 5, "{err}");
    assert_eq!(signals(&v), vec!["wipe"]);
    assert_eq!(v["anomalies"][0]["count"], 36);
    assert!(err.contains("ANOMALY wipe"), "{err}");
    // The snapshot is written (it is the evidence), and says so.
    let id = v["snapshot"].as_str().unwrap();
    let list = w.snapshots();
    assert_eq!(list.len(), 2);
    assert_eq!(signals(snapshot(&list, id)), vec!["wipe"]);
    // Any key reads the findings (they are in the signed clear part).
    let o = w.ok(&["snapshots", "--repo", &w.repo(), "--key", &w.key("auditor")]);
    assert!(o.contains("ANOMALY: wipe (36)"), "{o}");
    // The spool root itself gone after a healthy backup: a wipe too, not
    // an error.
    let w2 = World::new();
    w2.init();
    let src2 = w2.path("mail");
    make_maildir(&src2, 2, 9, 22);
    assert_eq!(backup(&w2, &w2.repo(), &src2).0, 0);
    std::fs::remove_dir_all(&src2).unwrap();
    let (code, v, err) = backup(&w2, &w2.repo(), &src2);
    assert_eq!(code, 5, "{err}");
    assert_eq!(signals(&v), vec!["wipe"]);
    assert!(
        v["anomalies"][0]["detail"]
            .as_str()
            .unwrap()
            .contains("missing")
    );
    // A path never backed up that does not exist is still an error.
    let o = w.run(&[
        "backup",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("client"),
        w.path("typo").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn encrypted_burst_in_place_exits_5() {
    let w = World::new();
    w.init();
    let src = w.path("mail");
    make_maildir(&src, 3, 20, 31);
    let (code, first, _) = backup(&w, &w.repo(), &src);
    assert_eq!(code, 0);
    let healthy_id = first["snapshot"].as_str().unwrap().to_string();
    // Ransomware rewrites one user's messages in place with noise.
    let mut r = Rng(77);
    let victims: Vec<_> = messages(&src)
        .into_iter()
        .filter(|p| p.starts_with(src.join("user001")))
        .collect();
    assert!(victims.len() >= 10);
    for p in &victims {
        let n = std::fs::metadata(p).unwrap().len() as usize;
        std::fs::write(p, r.bytes(n)).unwrap();
    }
    let (code, v, err) = backup(&w, &w.repo(), &src);
    assert_eq!(code, 5, "{err}");
    let s = signals(&v);
    for want in ["in_place", "entropy", "not_mail"] {
        assert!(s.contains(&want.to_string()), "{want} missing from {s:?}");
    }
    let in_place = &v["anomalies"][0];
    assert_eq!(in_place["count"], victims.len());
    // No path leaves the client in the clear.
    assert!(!v["anomalies"].to_string().contains("user001"));
    assert!(
        err.contains("user001"),
        "local report names examples: {err}"
    );
    // `latest` skips the flagged snapshot, with a note, and restores the
    // healthy state; the flagged one can still be named by id.
    let reference = w.path("healthy");
    w.restore(&healthy_id[..12], &reference);
    let healthy = digest(&reference.join("mail"));
    let out = w.path("latest");
    let o = w.run(&[
        "restore",
        "--repo",
        &w.repo(),
        "--key",
        &w.key("restore"),
        "latest",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let note = String::from_utf8_lossy(&o.stderr);
    assert!(note.contains("skipped 1 newer snapshot"), "{note}");
    assert_eq!(
        digest(&out.join("mail")),
        healthy,
        "latest restored the encrypted state"
    );
    let bad = v["snapshot"].as_str().unwrap();
    let out2 = w.path("named");
    w.restore(&bad[..12], &out2);
    assert_eq!(digest(&out2.join("mail")), digest(&src));
}

fn now_ns() -> i64 {
    holdfast_repo::now_ns()
}

const DAY_NS: i64 = 86_400 * 1_000_000_000;

/// Snapshots through the vault, as the auditor sees them (any key reads
/// findings and the vault's flags).
fn listed(w: &World, url: &str) -> Vec<serde_json::Value> {
    let out = w.ok(&[
        "snapshots",
        "--repo",
        url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]);
    serde_json::from_str(&out).unwrap()
}

fn by_vault(s: &serde_json::Value) -> Vec<String> {
    s["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["by"] == "vault")
        .map(|a| a["signal"].as_str().unwrap().to_string())
        .collect()
}

fn bad_report(o: &std::process::Output) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    v[0].clone()
}

/// A stolen client key, used from another machine (no cache, so the client
/// side has no baseline and reports nothing), posts an empty snapshot. The
/// vault flags it from what it stores (the pack sizes it recorded), not
/// from anything the client says; the flag is in the log for every reader;
/// the last healthy snapshot's lock is extended by the vault key.
#[test]
fn stolen_key_empty_snapshot_is_flagged_by_the_vault_and_the_healthy_one_held() {
    let w = World::new();
    w.init();
    let alerts = w.path("alerts");
    let mut v = w.start_vault(&[
        "--alert-cmd",
        &format!("echo \"$HOLDFAST_ALERT\" >> {}", alerts.display()),
    ]);
    let url = v.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 4, 20, 41);
    let (code, _, err) = backup(&w, &url, &src);
    assert_eq!(code, 0, "{err}");
    mail_day(&src, 1);
    let (code, good, err) = backup(&w, &url, &src);
    assert_eq!(code, 0, "{err}");
    let healthy = good["snapshot"].as_str().unwrap().to_string();
    let before = listed(&w, &url);
    let lock0 = snapshot(&before, &healthy)["locked_until_ns"]
        .as_i64()
        .unwrap();
    assert!(before.iter().all(|s| by_vault(s).is_empty()));

    // The thief: same key, its own cache, a directory with one note in it
    // (nothing it could share with the stored data).
    let empty = w.path("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("README"), b"your mail is gone\n").unwrap();
    let o = w.run(&[
        "backup",
        "--repo",
        &url,
        "--key",
        &w.key("client"),
        "--cache-dir",
        w.path("thief-cache").to_str().unwrap(),
        "--json",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "the client side cannot tell");
    let bad: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let bad = bad[0]["snapshot"].as_str().unwrap().to_string();
    assert_eq!(signals(&bad_report(&o)), Vec::<String>::new());

    let after = listed(&w, &url);
    assert_eq!(by_vault(snapshot(&after, &bad)), vec!["shrink"]);
    assert!(by_vault(snapshot(&after, &healthy)).is_empty());
    // The healthy one is held for 30 days from now, by the vault.
    let lock1 = snapshot(&after, &healthy)["locked_until_ns"]
        .as_i64()
        .unwrap();
    assert!(lock1 > lock0, "lock not extended");
    assert!(lock1 >= now_ns() + 29 * DAY_NS, "held too briefly");
    // The suspect is kept for forensics too.
    let lock_bad = snapshot(&after, &bad)["locked_until_ns"].as_i64().unwrap();
    assert!(lock_bad >= now_ns() + 29 * DAY_NS);
    // Alerted (stderr and the alert hook).
    let log = v.stderr();
    assert!(log.contains("ANOMALY") && log.contains("shrink"), "{log}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let hook = std::fs::read_to_string(&alerts).unwrap_or_default();
    assert!(hook.contains("held the last healthy snapshot"), "{hook}");
    // `status` counts it.
    let o = w.ok(&[
        "status",
        "--repo",
        &url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]);
    let st: serde_json::Value = serde_json::from_str(&o).unwrap();
    assert_eq!(st[0]["flagged_snapshots"], 1, "{st}");
    // Every reader folds the flag and the extension: the audit is clean.
    let o = w.run(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(
        o.status.success(),
        "audit: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // And a restart re-reads the flags from the log.
    v.stop();
    let v2 = w.start_vault(&[]);
    let again = listed(&w, &v2.url);
    assert_eq!(by_vault(snapshot(&again, &bad)), vec!["shrink"]);
}

/// The client's own findings reach the vault (signed in the snapshot): it
/// flags the snapshot and holds the last healthy one. Then a burst of bad
/// snapshots outlives every original lock: the snapshot before the healthy
/// one is reclaimed (the control), the held one is not.
#[test]
fn last_healthy_snapshot_survives_a_burst_past_its_original_lock() {
    let w = World::new();
    w.init_with(&short_retention("2"));
    let v = w.start_vault(&["--reclaim-every-secs", "1"]);
    let url = v.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 3, 15, 51);
    let (code, older, err) = backup(&w, &url, &src);
    assert_eq!(code, 0, "{err}");
    let older = older["snapshot"].as_str().unwrap().to_string();
    mail_day(&src, 1);
    let (code, good, err) = backup(&w, &url, &src);
    assert_eq!(code, 0, "{err}");
    let healthy = good["snapshot"].as_str().unwrap().to_string();

    // The attack: ransomware keeps rewriting one user's mail in place; at
    // each run the client says so (exit 5) and the vault flags it from the
    // signed findings: five bad snapshots in a row.
    let victims: Vec<_> = messages(&src)
        .into_iter()
        .filter(|p| p.starts_with(src.join("user001")))
        .collect();
    let mut r = Rng(99);
    let mut bad = Vec::new();
    for _ in 0..5 {
        for p in &victims {
            let n = std::fs::metadata(p).unwrap().len() as usize;
            std::fs::write(p, r.bytes(n)).unwrap();
        }
        let (code, b, err) = backup(&w, &url, &src);
        assert_eq!(code, 5, "{err}");
        assert!(signals(&b).contains(&"in_place".to_string()));
        bad.push(b["snapshot"].as_str().unwrap().to_string());
    }
    let l = listed(&w, &url);
    for b in &bad {
        assert_eq!(by_vault(snapshot(&l, b)), vec!["client_reported"], "{b}");
    }

    // Every original lock (2 s) passes; the vault reclaims every second.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
        let l = listed(&w, &url);
        if !l.iter().any(|s| s["id"] == older) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the unheld older snapshot was never reclaimed: {}",
            v.stderr()
        );
    }
    let l = listed(&w, &url);
    let h = snapshot(&l, &healthy);
    assert!(h["locked_until_ns"].as_i64().unwrap() >= now_ns() + 29 * DAY_NS);
    assert!(by_vault(h).is_empty());
    // The restore key still restores the healthy state.
    let out = w.path("restored");
    restore_via(&w, &url, &healthy, &out);
    assert!(!files(&out).is_empty());
}

/// More than 30 snapshots from one client in an hour is a burst: the vault
/// flags the ones past the threshold itself (no client finding involved)
/// and holds the last healthy one.
#[test]
fn a_burst_of_snapshots_is_flagged_by_the_vault() {
    let w = World::new();
    w.init();
    let v = w.start_vault(&[]);
    let url = v.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 3, 61);
    let mut ids = Vec::new();
    for _ in 0..32 {
        let (code, r, err) = backup(&w, &url, &src);
        assert_eq!(code, 0, "{err}");
        ids.push(r["snapshot"].as_str().unwrap().to_string());
    }
    let l = listed(&w, &url);
    for (i, id) in ids.iter().enumerate() {
        let want: Vec<String> = if i >= 30 {
            vec!["burst".into()]
        } else {
            vec![]
        };
        assert_eq!(by_vault(snapshot(&l, id)), want, "snapshot {i}");
    }
    let held = snapshot(&l, &ids[29])["locked_until_ns"].as_i64().unwrap();
    assert!(held >= now_ns() + 29 * DAY_NS);
    assert!(v.stderr().contains("burst"));
}

fn pending(w: &World, url: &str, what: &str) -> String {
    let out = w.ok(&[
        "proposals",
        "--repo",
        url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    list.iter()
        .find(|p| p["action"].as_str().is_some_and(|a| a.contains(what)))
        .unwrap_or_else(|| panic!("no proposal for {what}: {out}"))["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A false alarm is acknowledged by the admin quorum, not by the vault or
/// one admin: lifting a snapshot's flags is a proposal (quorum, delay,
/// veto), after which `latest` may choose it; a threshold is raised by at
/// most 5 points per proposal, and every change is in the log, which the
/// audit accepts.
#[test]
fn the_quorum_lifts_a_false_alarm_and_raises_thresholds_in_small_steps() {
    let w = World::new();
    w.init_with(&["--delay-secs", "1"]);
    let v = w.start_vault(&[]);
    let url = v.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 1, 3, 62);
    let mut ids = Vec::new();
    for _ in 0..32 {
        let (code, r, err) = backup(&w, &url, &src);
        assert_eq!(code, 0, "{err}");
        ids.push(r["snapshot"].as_str().unwrap().to_string());
    }
    let restore_latest = |n: &str| {
        let out = w.path(n);
        let o = w.run(&[
            "restore",
            "--repo",
            &url,
            "--key",
            &w.key("restore"),
            "latest",
            out.to_str().unwrap(),
        ]);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    assert!(restore_latest("r1").contains("skipped 2"));
    let (a1, a2) = (w.key("admin-1"), w.key("admin-2"));

    // One admin cannot lift a flag: it takes a second approval and the delay.
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "lift-flags",
        &ids[31][..12],
    ]);
    let lift = pending(&w, &url, "lifting");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert!(
        restore_latest("r2").contains("skipped 2"),
        "lifted by one admin"
    );
    w.ok(&["approve", "--repo", &url, "--key", &a2, &lift[..12]]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    let e = restore_latest("r3");
    assert!(
        !e.contains("skipped"),
        "latest still skips the lifted one: {e}"
    );
    let l = listed(&w, &url);
    assert!(by_vault(snapshot(&l, &ids[31])).is_empty());
    assert_eq!(by_vault(snapshot(&l, &ids[30])), vec!["burst".to_string()]);

    // Thresholds: more than 5 points up is refused before any vote.
    let o = w.run(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "threshold",
        "burst",
        "100",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at most 5 points"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = w.run(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "threshold",
        "volume",
        "3",
    ]);
    assert_eq!(o.status.code(), Some(1));
    w.ok(&[
        "propose",
        "--repo",
        &url,
        "--key",
        &a1,
        "threshold",
        "burst",
        "35",
    ]);
    let raise = pending(&w, &url, "burst threshold");
    w.ok(&["approve", "--repo", &url, "--key", &a2, &raise[..12]]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    // Every reader folds the lift and the threshold: the audit is clean.
    let o = w.run(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    // With 35 allowed per hour, the next four snapshots are not a burst
    // (33..=35 in the hour), the one after is.
    let mut flagged = Vec::new();
    for _ in 0..4 {
        let (code, r, err) = backup(&w, &url, &src);
        assert_eq!(code, 0, "{err}");
        let id = r["snapshot"].as_str().unwrap().to_string();
        flagged.push(!by_vault(snapshot(&listed(&w, &url), &id)).is_empty());
    }
    assert_eq!(flagged, vec![false, false, false, true]);
}

/// Renames `n` messages (not yet renamed) to `.EXT`, keeping their content:
/// a borderline new_extension (more than 20 files) and nothing else.
fn rename_to(src: &Path, n: usize, ext: &str) {
    let mut all: Vec<_> = messages(src)
        .into_iter()
        .filter(|p| !p.to_string_lossy().contains(".lock"))
        .collect();
    all.sort();
    assert!(all.len() >= n);
    for p in all.into_iter().take(n) {
        let mut to = p.clone().into_os_string();
        to.push(format!(".{ext}"));
        std::fs::rename(&p, to).unwrap();
    }
}

/// The client's thresholds are the quorum's to set, in the log the client
/// verifies: 25 messages renamed to a new extension exit 5 (more than 20);
/// one admin's proposal to raise the threshold to 25 changes nothing until
/// a second admin approves it (and more than 5 points is refused outright);
/// then the same borderline rename passes, and the snapshot records the
/// thresholds it was judged with.
#[test]
fn a_quorum_raised_client_threshold_lets_a_borderline_case_pass_one_admin_cannot() {
    let w = World::new();
    w.init_with(&["--delay-secs", "1"]);
    let v = w.start_vault(&[]);
    let url = v.url.clone();
    let src = w.path("mail");
    make_maildir(&src, 3, 40, 71);
    let (code, _, err) = backup(&w, &url, &src);
    assert_eq!(code, 0, "{err}");
    rename_to(&src, 25, "lockx");
    let (code, r, err) = backup(&w, &url, &src);
    assert_eq!(code, 5, "{err}");
    assert_eq!(signals(&r), vec!["new_extension"]);

    let (a1, a2) = (w.key("admin-1"), w.key("admin-2"));
    let propose = |to: &str| {
        w.run(&[
            "propose",
            "--repo",
            &url,
            "--key",
            &a1,
            "threshold",
            "new_extension",
            to,
        ])
    };
    let o = propose("26");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("at most 5 points"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = propose("25");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let raise = pending(&w, &url, "new_extension threshold");
    // One admin alone: past the delay, still the default.
    std::thread::sleep(std::time::Duration::from_secs(3));
    rename_to(&src, 25, "locky");
    let (code, r, err) = backup(&w, &url, &src);
    assert_eq!(code, 5, "one admin raised a threshold: {err}");
    let id = r["snapshot"].as_str().unwrap().to_string();
    assert_eq!(
        snapshot(&listed(&w, &url), &id)["thresholds"]["new_extension"],
        20
    );

    // The second approval: executed after the delay, folded by the client.
    w.ok(&["approve", "--repo", &url, "--key", &a2, &raise[..12]]);
    std::thread::sleep(std::time::Duration::from_secs(4));
    rename_to(&src, 25, "lockz");
    let (code, r, err) = backup(&w, &url, &src);
    assert_eq!(code, 0, "{err}");
    assert_eq!(signals(&r), Vec::<String>::new());
    let id = r["snapshot"].as_str().unwrap().to_string();
    let l = listed(&w, &url);
    let s = snapshot(&l, &id);
    assert_eq!(s["thresholds"]["new_extension"], 25, "{s}");
    assert_eq!(s["checked"], "compared");
    let text = w.ok(&["snapshots", "--repo", &url, "--key", &w.key("auditor")]);
    assert!(
        text.contains("judged with thresholds new_extension 25"),
        "{text}"
    );
    // 26 files are still more than 25.
    rename_to(&src, 26, "lockw");
    let (code, r, err) = backup(&w, &url, &src);
    assert_eq!(code, 5, "{err}");
    assert_eq!(signals(&r), vec!["new_extension"]);
    // The change is in the log every reader folds: the audit is clean.
    let o = w.run(&["audit", "--repo", &url, "--key", &w.key("auditor")]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A correctly signed request dated far from the vault's clock (a stolen
/// client key on a host with a wrong clock) is refused (401) and alerted,
/// once per key per period; an unsigned or wrongly signed one is refused
/// without an alert (anyone can send those).
#[test]
fn a_signed_request_outside_the_time_window_is_refused_and_alerted() {
    use holdfast_core::request::Auth;
    use std::io::Write;
    let w = World::new();
    w.init();
    let alerts = w.path("alerts");
    let v = w.start_vault(&[
        "--alert-cmd",
        &format!("echo \"$HOLDFAST_ALERT\" >> {}", alerts.display()),
    ]);
    let addr = vault_addr(&v.url);
    let client = load_key(&w.key("client")).identity().unwrap().clone();
    let stranger = holdfast_core::crypto::Identity::generate().unwrap();
    let ten_years = 10 * 365 * DAY_NS;
    let send = |auth: &Auth, path: &str| {
        let mut s = tls_from("127.0.0.1".parse().unwrap(), addr).unwrap();
        let mut head =
            format!("GET {path} HTTP/1.1\r\nhost: holdfast-vault\r\ncontent-length: 0\r\n");
        for (k, val) in auth.headers() {
            head.push_str(&format!("{k}: {val}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).unwrap();
        s.flush().unwrap();
        let (status, body) = read_response(&mut s).unwrap();
        (status, String::from_utf8_lossy(&body).to_string())
    };
    let path = "/v1/objects/snapshots";
    let count = |log: &str| log.matches("sent a correctly signed request dated").count();
    // Nobody's key, and the client's key with a bad signature: no alert.
    let a = Auth::sign(&stranger, "GET", path, now_ns() + ten_years, b"").unwrap();
    assert_eq!(send(&a, path).0, 401);
    let mut a = Auth::sign(&client, "GET", path, now_ns() + ten_years, b"").unwrap();
    a.signature[3] ^= 1;
    let (status, msg) = send(&a, path);
    assert_eq!(status, 401);
    assert!(msg.contains("bad request signature"), "{msg}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(count(&v.stderr()), 0, "{}", v.stderr());
    // The client's key, correctly signed, ten years ahead: 401 and alerted.
    let a = Auth::sign(&client, "GET", path, now_ns() + ten_years, b"").unwrap();
    let (status, msg) = send(&a, path);
    assert_eq!(status, 401);
    assert!(msg.contains("outside the allowed window"), "{msg}");
    // Its retries are refused too, and not alerted again.
    for _ in 0..3 {
        let a = Auth::sign(&client, "GET", path, now_ns() - ten_years, b"").unwrap();
        assert_eq!(send(&a, path).0, 401);
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = v.stderr();
    assert_eq!(count(&log), 1, "{log}");
    assert!(log.contains("client client"), "names the key: {log}");
    let hook = std::fs::read_to_string(&alerts).unwrap_or_default();
    assert_eq!(count(&hook), 1, "{hook}");
    // Nothing was stored, and a client with a true clock is served.
    let src = w.path("mail");
    make_maildir(&src, 1, 3, 9);
    let (code, _, err) = backup(&w, &v.url, &src);
    assert_eq!(code, 0, "{err}");
}
