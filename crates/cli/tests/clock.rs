//! A jumped vault clock at restart brings no deletion forward (issue 14):
//! the real binary on 127.0.0.1, its clock moved by libfaketime.
//!
//! * restarted a day ahead with 1-hour locks and a 1 s reclaim interval:
//!   the vault logs a clock hold, alerts once, reclaims nothing, `audit`
//!   shows the hold; restarted again on the same clock it is still held;
//!   once an admin quorum acknowledges the clock (`propose ack-clock`,
//!   approval, delay) reclaims run;
//! * an acknowledgement whose proposer's clock is more than 15 min from the
//!   vault's is refused with one line.
//! * restarts on a clock spoofed a little more each time add up to a hold;
//! * a first start on a clock set back keeps adopted snapshots' locks whole;
//!   one a day ahead of them is held.

mod common;
use common::*;

use holdfast_core::governance::{Action, Proposal};

const FAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

fn jumped(by: &'static str) -> Vec<(&'static str, &'static str)> {
    assert!(
        std::path::Path::new(FAKETIME).exists(),
        "libfaketime is needed (apt-get install faketime)"
    );
    vec![
        ("LD_PRELOAD", FAKETIME),
        ("FAKETIME", by),
        ("DONT_FAKE_MONOTONIC", "1"),
    ]
}

/// `holdfast ARGS` on the jumped clock (a client whose clock agrees with
/// the vault's: a request more than 5 min off the vault's clock is refused).
fn on(w: &World, by: &'static str, args: &[&str]) -> std::process::Output {
    w.cmd(args).envs(jumped(by)).output().unwrap()
}

fn ok_on(w: &World, by: &'static str, args: &[&str]) -> String {
    let o = on(w, by, args);
    assert!(
        o.status.success(),
        "holdfast {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn audit(w: &World, by: &'static str, url: &str) -> serde_json::Value {
    let out = ok_on(
        w,
        by,
        &["audit", "--repo", url, "--key", &w.key("auditor"), "--json"],
    );
    serde_json::from_str::<serde_json::Value>(&out).unwrap()[0].clone()
}

#[test]
fn a_vault_restarted_a_day_ahead_deletes_nothing_until_the_quorum_acknowledges_its_clock() {
    let w = World::new();
    let mut opts = short_retention("3600");
    opts.extend(["--delay-secs", "1"]);
    w.init_with(&opts);
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let src = w.path("mail");
    make_maildir(&src, 2, 6, 71);
    for day in 0..5 {
        mail_day(&src, 80 + day);
        backup_via(&w, &vault.url, &w.key("client"), &src);
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    vault.stop();
    assert!(!vault.stderr().contains("reclaimed"), "{}", vault.stderr());

    // A day ahead (a spoofed NTP answer): every lock but the last three
    // snapshots' has passed by this clock. Nothing is reclaimed.
    let day = "+1d";
    let reclaim = ["--reclaim-every-secs", "1"];
    let mut vault = w.start_vault_env(&w.repo(), &reclaim, &jumped(day));
    wait_for("the clock hold's alert", || {
        vault.stderr().contains("CLOCK HELD")
    });
    std::thread::sleep(std::time::Duration::from_secs(4));
    let err = vault.stderr();
    assert!(
        !err.contains("reclaimed"),
        "reclaimed on a jumped clock: {err}"
    );
    assert_eq!(
        err.matches("CLOCK HELD").count(),
        1,
        "the hold is alerted once: {err}"
    );
    assert!(err.contains("holdfast propose ack-clock"), "{err}");
    let a = audit(&w, day, &vault.url);
    assert_eq!(a["live"], 5, "{a}");
    assert_eq!(a["reclaimed"], 0, "{a}");
    assert!(a["clock_held"]["entry"].as_u64().is_some(), "{a}");
    assert!(
        a["clock_held"]["gap_secs"].as_i64().unwrap() >= 86_000,
        "{a}"
    );
    assert_eq!(a["problems"].as_array().unwrap().len(), 0, "{a}");
    let text = ok_on(
        &w,
        day,
        &["audit", "--repo", &vault.url, "--key", &w.key("auditor")],
    );
    assert!(text.contains("CLOCK HELD since log entry"), "{text}");
    vault.stop();

    // Restarted on the same jumped clock: the gap to the log is small now,
    // but the hold is in the log.
    let mut vault = w.start_vault_env(&w.repo(), &reclaim, &jumped(day));
    wait_for("the held reclaim's alert", || {
        vault.stderr().contains("not reclaiming")
    });
    std::thread::sleep(std::time::Duration::from_secs(2));
    let err = vault.stderr();
    assert!(
        !err.contains("reclaimed"),
        "reclaimed after a restart: {err}"
    );
    assert_eq!(err.matches("CLOCK HELD").count(), 1, "{err}");
    assert_eq!(audit(&w, day, &vault.url)["live"], 5);

    // The acknowledgement: proposed and approved by admins whose clocks
    // agree with the vault's, then the delay.
    let url = vault.url.clone();
    let o = ok_on(
        &w,
        day,
        &[
            "propose",
            "ack-clock",
            "--repo",
            &url,
            "--key",
            &w.key("admin-1"),
        ],
    );
    assert!(o.contains("submitted"), "{o}");
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok_on(
        &w,
        day,
        &[
            "proposals",
            "--repo",
            &url,
            "--key",
            &w.key("auditor"),
            "--json",
        ],
    ))
    .unwrap();
    let pid = listed
        .iter()
        .find(|p| {
            p["action"]
                .as_str()
                .unwrap_or("")
                .contains("acknowledging the vault's clock")
        })
        .unwrap_or_else(|| panic!("the acknowledgement is not listed: {listed:?}"))["id"]
        .as_str()
        .unwrap()
        .to_string();
    let o = ok_on(
        &w,
        day,
        &["approve", "--repo", &url, "--key", &w.key("admin-2"), &pid],
    );
    assert!(o.contains("acknowledging the vault's clock"), "{o}");
    wait_for("the reclaim after the acknowledgement", || {
        vault.stderr().contains("reclaimed")
    });
    let a = audit(&w, day, &url);
    assert!(a["clock_held"].is_null(), "{a}");
    assert_eq!(a["live"], 3, "the last three stay: {a}");
    assert_eq!(a["reclaimed"], 2, "{a}");
    assert_eq!(a["problems"].as_array().unwrap().len(), 0, "{a}");
    vault.stop();
}

#[test]
fn an_acknowledgement_from_a_clock_15_minutes_off_the_vaults_is_refused() {
    let w = World::new();
    let mut opts = short_retention("3600");
    opts.extend(["--delay-secs", "1"]);
    w.init_with(&opts);
    let mut vault = w.start_vault(&[]);
    let src = w.path("mail");
    make_maildir(&src, 1, 4, 72);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    vault.stop();
    let admin = load_key(&w.key("admin-1"));
    let ack = |offset_secs: i64| {
        Proposal::new(
            admin.config_id,
            Action::AckClock,
            admin.identity().unwrap(),
            holdfast_repo::now_ns() + offset_secs * 1_000_000_000,
        )
        .unwrap()
        .encode()
    };

    // Not held: nothing to acknowledge.
    let vault = w.start_vault(&[]);
    let e = raw(&w, &vault.url, &w.key("admin-1"))
        .request("POST", "/v1/proposals", &ack(0), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not held"), "{e}");
    drop(vault);

    // Held (a bound of 1 s, passed while the vault was down).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let vault = w.start_vault(&["--clock-hold-after-secs", "1"]);
    wait_for("the clock hold", || vault.stderr().contains("CLOCK HELD"));
    let admin_raw = raw(&w, &vault.url, &w.key("admin-1"));
    for off in [-20 * 60, 16 * 60] {
        let e = admin_raw
            .request("POST", "/v1/proposals", &ack(off), None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("clock acknowledgement refused"), "{e}");
        assert!(e.contains("min"), "{e}");
        assert!(!e.trim().contains('\n'), "not one line: {e}");
    }
    // Within 15 min it is taken (and the log's fold agrees: audit clean).
    admin_raw
        .request("POST", "/v1/proposals", &ack(-10 * 60), None)
        .unwrap();
    let a: serde_json::Value = serde_json::from_str(&w.ok(&[
        "audit",
        "--repo",
        &vault.url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]))
    .unwrap();
    assert_eq!(a[0]["problems"].as_array().unwrap().len(), 0, "{a}");
    assert!(a[0]["clock_held"].is_object(), "{a}");
}

/// Restarts on a clock spoofed a little more each time (each gap under the
/// 6 h bound, entries dated on the believed clock in between) add up: the
/// vault measures each start's gap from the time deletions were credited
/// up to (`state/clock`), not from the last entry, so the second start is
/// held.
#[test]
fn restarts_on_a_clock_spoofed_a_little_more_each_time_add_up_to_a_hold() {
    let w = World::new();
    let mut opts = short_retention("3600");
    opts.extend(["--delay-secs", "1"]);
    w.init_with(&opts);
    let reclaim = ["--reclaim-every-secs", "1"];
    let mut vault = w.start_vault(&reclaim);
    let src = w.path("mail");
    make_maildir(&src, 1, 4, 73);
    backup_via(&w, &vault.url, &w.key("client"), &src);
    std::thread::sleep(std::time::Duration::from_secs(2));
    vault.stop();
    assert_eq!(
        std::fs::read(w.path("repo/vault/clock")).unwrap().len(),
        24,
        "the credited time and the unacknowledged gaps are recorded in the state directory"
    );

    // +5 h: under the bound, not held; a backup is dated 5 h ahead.
    let mut vault = w.start_vault_env(&w.repo(), &reclaim, &jumped("+5h"));
    mail_day(&src, 74);
    let o = on(
        &w,
        "+5h",
        &[
            "backup",
            "--repo",
            &vault.url,
            "--key",
            &w.key("client"),
            src.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::thread::sleep(std::time::Duration::from_secs(2));
    vault.stop();
    assert!(!vault.stderr().contains("CLOCK HELD"), "{}", vault.stderr());

    // +10 h: 5 h past the last entry, but 10 h past what deletions were
    // credited: held.
    let vault = w.start_vault_env(&w.repo(), &reclaim, &jumped("+10h"));
    wait_for("the hold of the second spoofed start", || {
        vault.stderr().contains("CLOCK HELD")
    });
    let a = audit(&w, "+10h", &vault.url);
    assert!(
        a["clock_held"]["gap_secs"].as_i64().unwrap() >= 10 * 3600 - 120,
        "{a}"
    );
}

#[test]
fn a_vault_first_started_on_a_clock_set_back_keeps_adopted_locks_whole() {
    // A directory repository with a backup made on the right clock, then
    // its first vault started 3 days behind: the adopted snapshot's lock
    // still runs an hour from its own signed time, and the vault's clock
    // starts there (alerted).
    let w = World::new();
    w.init_with(&short_retention("3600"));
    let src = w.path("mail");
    make_maildir(&src, 1, 3, 75);
    w.backup(&[&src]);
    let vault = w.start_vault_env(&w.repo(), &[], &jumped("-3d"));
    wait_for("the adoption's clock alert", || {
        vault.stderr().contains("newest snapshot's own time")
    });
    let out = w.ok(&[
        "snapshots",
        "--repo",
        &vault.url,
        "--key",
        &w.key("auditor"),
        "--json",
    ]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    assert_eq!(list.len(), 1, "{out}");
    let s = &list[0];
    let (t, lock) = (
        s["time_ns"].as_i64().unwrap(),
        s["locked_until_ns"].as_i64().unwrap(),
    );
    assert!(lock >= t + 3600 * 1_000_000_000, "lock shortened: {s}");
    assert!(s["vault_time_ns"].as_i64().unwrap() >= t, "{s}");
}

#[test]
fn a_vault_first_started_a_day_ahead_of_its_adopted_snapshots_is_held() {
    let w = World::new();
    w.init_with(&short_retention("3600"));
    let src = w.path("mail");
    make_maildir(&src, 1, 3, 76);
    w.backup(&[&src]);
    let vault = w.start_vault_env(&w.repo(), &[], &jumped("+1d"));
    wait_for("the first start's clock hold", || {
        vault.stderr().contains("CLOCK HELD")
    });
    assert!(
        vault.stderr().contains("newest adopted snapshot"),
        "{}",
        vault.stderr()
    );
    let a = audit(&w, "+1d", &vault.url);
    assert!(
        a["clock_held"]["gap_secs"].as_i64().unwrap() >= 86_000,
        "{a}"
    );
}

/// An acknowledgement proposed for one hold cannot cover a later jump: a
/// vault held a day ahead, its acknowledgement proposed and approved, then
/// restarted another day ahead before it ran, logs a new hold; the old
/// acknowledgement never runs and nothing is reclaimed.
#[test]
fn an_acknowledgement_proposed_before_a_further_jump_does_not_cover_it() {
    let w = World::new();
    let mut opts = short_retention("3600");
    opts.extend(["--delay-secs", "20"]);
    w.init_with(&opts);
    let mut vault = w.start_vault(&["--reclaim-every-secs", "1"]);
    let src = w.path("mail");
    make_maildir(&src, 2, 6, 72);
    for day in 0..5 {
        mail_day(&src, 90 + day);
        backup_via(&w, &vault.url, &w.key("client"), &src);
    }
    vault.stop();
    let reclaim = ["--reclaim-every-secs", "1"];
    let day = "+1d";
    let mut vault = w.start_vault_env(&w.repo(), &reclaim, &jumped(day));
    wait_for("the clock hold's alert", || {
        vault.stderr().contains("CLOCK HELD")
    });
    let url = vault.url.clone();
    let key = |n: &str| w.key(n);
    ok_on(
        &w,
        day,
        &[
            "propose",
            "ack-clock",
            "--repo",
            &url,
            "--key",
            &key("admin-1"),
        ],
    );
    let listed: Vec<serde_json::Value> = serde_json::from_str(&ok_on(
        &w,
        day,
        &[
            "proposals",
            "--repo",
            &url,
            "--key",
            &key("auditor"),
            "--json",
        ],
    ))
    .unwrap();
    let pid = listed[0]["id"].as_str().unwrap().to_string();
    ok_on(
        &w,
        day,
        &["approve", "--repo", &url, "--key", &key("admin-2"), &pid],
    );
    let first = audit(&w, day, &url)["clock_held"]["entry"]
        .as_u64()
        .unwrap();
    vault.stop();
    assert!(!vault.stderr().contains("EXECUTED"), "{}", vault.stderr());

    // Another day ahead before it ran: by this clock its delay is long
    // over, but this start added a day the quorum never saw.
    let later = "+2d";
    let mut vault = w.start_vault_env(&w.repo(), &reclaim, &jumped(later));
    wait_for("the second hold's alert", || {
        vault.stderr().contains("CLOCK HELD")
    });
    std::thread::sleep(std::time::Duration::from_secs(4));
    let err = vault.stderr();
    assert!(!err.contains("reclaimed"), "reclaimed: {err}");
    let a = audit(&w, later, &vault.url);
    assert_eq!(a["live"], 5, "{a}");
    // A new hold, logged after the acknowledgement's proposal.
    assert!(
        a["clock_held"]["entry"].as_u64().unwrap() > first,
        "{a} (first hold at entry {first})"
    );
    assert!(
        a["clock_held"]["gap_secs"].as_i64().unwrap() >= 86_000,
        "{a}"
    );
    vault.stop();
}

/// A snapshot dated a year ahead in a directory repository (a client's
/// spoofed clock before any vault existed) does not move a first vault's
/// clock: it is adopted and alerted, and a client with a right clock still
/// backs up through the vault (a vault a year ahead would refuse it).
#[test]
fn a_snapshot_dated_a_year_ahead_does_not_move_a_first_vaults_clock() {
    let w = World::new();
    w.init_with(&short_retention("3600"));
    let src = w.path("mail");
    make_maildir(&src, 1, 3, 76);
    let repo = w.repo();
    let key = w.key("client");
    ok_on(
        &w,
        "+365d",
        &[
            "backup",
            "--repo",
            &repo,
            "--key",
            &key,
            src.to_str().unwrap(),
        ],
    );
    let vault = w.start_vault(&[]);
    wait_for("the adoption's alert", || {
        vault.stderr().contains("do not move the vault's clock")
    });
    mail_day(&src, 77);
    backup_via(&w, &vault.url, &w.key("client"), &src);
}
