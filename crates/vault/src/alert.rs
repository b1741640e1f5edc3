//! Alerts: every one goes to stderr at once; the `--alert-cmd` command is
//! run by one worker thread, one alert at a time, and waited for (so no
//! process is left unreaped, and a hanging command is killed after
//! [`CMD_TIMEOUT`]).
//!
//! Whoever can make the vault alert (an over-quota client, say) must not be
//! able to flood the people paged, nor the host's process table, so the
//! command sees:
//! * an alert identical to one sent less than [`WINDOW`] ago only as a count
//!   ("repeated N times"), once that window closes or the vault stops;
//! * at most [`MAX_PER_WINDOW`] lines per [`WINDOW`]; beyond that, one line
//!   "N alerts suppressed" as soon as the rate allows.
//!
//! The queue to the worker is bounded; alerts that do not fit are counted
//! as suppressed. Stderr always has every alert.
//!
//! Every alert is also counted by kind ([`KINDS`], a fixed set, for
//! `holdfast_alerts_total{kind}`) and the last [`RECENT`] are kept for the
//! dashboard, whatever the throttle let through to the command.

use std::collections::{HashMap, VecDeque};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Identical alerts within this window are counted, not repeated; and the
/// rate limit counts over it.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Command runs per [`WINDOW`].
pub const MAX_PER_WINDOW: usize = 30;
/// A command still running after this is killed.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(30);
/// Alerts waiting for the worker.
const QUEUE: usize = 1024;

enum Msg {
    Alert(String),
    Flush(SyncSender<()>),
}

/// The kinds alerts are counted by: a fixed set, so that a metric label
/// never carries alert text (which may name a client, a snapshot or a file).
pub const KINDS: [&str; 10] = [
    "tampering",
    "damage",
    "anomaly",
    "clock",
    "quota",
    "client_refused",
    "governance",
    "reclaim",
    "adoption",
    "other",
];
/// Alerts kept for the dashboard.
pub const RECENT: usize = 20;
/// Longest alert text kept for the dashboard.
const RECENT_TEXT: usize = 400;

/// The kind of an alert, from its text. The texts are the vault's own
/// (`state.rs`), so their first words are stable; anything new is "other"
/// until it is named here.
pub fn kind_of(msg: &str) -> &'static str {
    let has = |w: &str| msg.contains(w);
    if has("TAMPERING") || msg.starts_with("BUG:") {
        "tampering"
    } else if has("DAMAGE") {
        "damage"
    } else if has("ANOMALY") || has("anomal") {
        "anomaly"
    } else if msg.starts_with("CLOCK") {
        "clock"
    } else if has("storage quota") {
        "quota"
    } else if (msg.starts_with("client ") && (has("refused") || has("burst")))
        || has("sent a correctly signed request dated")
    {
        "client_refused"
    } else if has("proposal") || msg.starts_with("admin ") {
        "governance"
    } else if has("reclaim") || msg.starts_with("deleting ") || has("retention slot") {
        "reclaim"
    } else if has("adopted") || has("found on disk") || has("not logged; committed") {
        "adoption"
    } else {
        "other"
    }
}

/// One alert as the dashboard shows it.
#[derive(Clone, Debug)]
pub struct Recent {
    /// Wall-clock time it was raised (ns since the epoch).
    pub time_ns: i64,
    pub kind: &'static str,
    pub text: String,
}

/// Counts by kind and the last few alerts, shared by every clone.
#[derive(Default)]
struct Record {
    counts: [AtomicU64; KINDS.len()],
    recent: Mutex<VecDeque<Recent>>,
}

/// The handle that raises alerts; cheap to clone.
#[derive(Clone)]
pub struct Alerter {
    tx: Option<SyncSender<Msg>>,
    lost: Arc<AtomicU64>,
    record: Arc<Record>,
}

impl Alerter {
    /// Alerts to stderr and, if `cmd` is given, to `sh -c cmd` with the text
    /// in `HOLDFAST_ALERT`.
    pub fn new(cmd: Option<String>) -> Alerter {
        let lost = Arc::new(AtomicU64::new(0));
        let tx = cmd.map(|cmd| {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let lost = lost.clone();
            let spawned = std::thread::Builder::new()
                .name("holdfast-alert".into())
                .spawn(move || worker(cmd, rx, lost));
            if let Err(e) = spawned {
                eprintln!("holdfast vault: cannot start the alert worker: {e}");
            }
            tx
        });
        Alerter {
            tx,
            lost,
            record: Arc::default(),
        }
    }

    pub fn raise(&self, msg: &str) {
        eprintln!("holdfast vault ALERT: {msg}");
        let kind = kind_of(msg);
        if let Some(i) = KINDS.iter().position(|k| *k == kind) {
            self.record.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        {
            let mut r = self.record.recent.lock().unwrap_or_else(|p| p.into_inner());
            if r.len() == RECENT {
                r.pop_front();
            }
            let mut text: String = msg.chars().take(RECENT_TEXT).collect();
            if text.len() < msg.len() {
                text.push('…');
            }
            r.push_back(Recent {
                time_ns: crate::state::now_ns(),
                kind,
                text,
            });
        }
        if let Some(tx) = &self.tx
            && tx.try_send(Msg::Alert(msg.to_string())).is_err()
        {
            self.lost.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Sends what is pending (counts of repeated and suppressed alerts)
    /// now, whatever the rate; waits up to `wait` for the command. For a
    /// clean stop.
    pub fn flush(&self, wait: Duration) {
        if let Some(tx) = &self.tx {
            let (ack, done) = mpsc::sync_channel(1);
            if tx.try_send(Msg::Flush(ack)).is_ok() {
                let _ = done.recv_timeout(wait);
            }
        }
    }
}

impl Alerter {
    /// Alerts raised since start, by kind (every kind, zeros included).
    pub fn counts(&self) -> Vec<(&'static str, u64)> {
        KINDS
            .iter()
            .zip(self.record.counts.iter())
            .map(|(k, n)| (*k, n.load(Ordering::Relaxed)))
            .collect()
    }

    /// The last [`RECENT`] alerts, newest first.
    pub fn recent(&self) -> Vec<Recent> {
        let r = self.record.recent.lock().unwrap_or_else(|p| p.into_inner());
        r.iter().rev().cloned().collect()
    }
}

fn worker(cmd: String, rx: Receiver<Msg>, lost: Arc<AtomicU64>) {
    let mut t = Throttle::new(WINDOW, MAX_PER_WINDOW);
    loop {
        let msg = rx.recv_timeout(Duration::from_secs(1));
        t.suppressed += lost.swap(0, Ordering::Relaxed);
        let now = Instant::now();
        match msg {
            Ok(Msg::Alert(m)) => {
                for line in t.offer(&m, now) {
                    run(&cmd, &line);
                }
            }
            Ok(Msg::Flush(ack)) => {
                let mut lines = t.tick(now);
                lines.extend(t.drain());
                for line in lines {
                    run(&cmd, &line);
                }
                let _ = ack.try_send(());
            }
            Err(RecvTimeoutError::Timeout) => {
                for line in t.tick(now) {
                    run(&cmd, &line);
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                for line in t.drain() {
                    run(&cmd, &line);
                }
                return;
            }
        }
    }
}

/// Runs the command once and reaps it; kills it after [`CMD_TIMEOUT`].
fn run(cmd: &str, text: &str) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .env("HOLDFAST_ALERT", text)
        .stdin(Stdio::null())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            eprintln!("holdfast vault: alert command failed to start: {e}");
            return;
        }
    };
    let start = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                if !status.success() {
                    eprintln!("holdfast vault: alert command exited with {status}");
                }
                return;
            }
            Ok(None) if start.elapsed() < CMD_TIMEOUT => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => {
                eprintln!(
                    "holdfast vault: alert command still running after {} s: killed",
                    CMD_TIMEOUT.as_secs()
                );
                let _ = child.kill();
                let _ = child.wait();
                return;
            }
        }
    }
}

/// Which alerts the command sees: dedup within a window, a rate limit, and
/// the counts of what was held back. Pure, for tests.
struct Throttle {
    window: Duration,
    max: usize,
    /// Alert text → (when it was last sent, identical ones since).
    recent: HashMap<String, (Instant, u64)>,
    /// When each line in the current window was sent.
    sent: VecDeque<Instant>,
    /// Alerts dropped by the rate limit (or a full queue), not yet reported.
    suppressed: u64,
}

impl Throttle {
    fn new(window: Duration, max: usize) -> Throttle {
        Throttle {
            window,
            max,
            recent: HashMap::new(),
            sent: VecDeque::new(),
            suppressed: 0,
        }
    }

    fn room(&mut self, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            self.sent.pop_front();
        }
        self.sent.len() < self.max
    }

    fn repeated(&self, msg: &str, n: u64) -> String {
        format!(
            "(repeated {n} more time{} within {} s) {msg}",
            if n == 1 { "" } else { "s" },
            self.window.as_secs()
        )
    }

    fn suppressed_line(&self) -> String {
        format!(
            "{} alert{} suppressed (more than {} in {} s); see the vault's stderr",
            self.suppressed,
            if self.suppressed == 1 { "" } else { "s" },
            self.max,
            self.window.as_secs()
        )
    }

    /// Lines due now without a new alert: counts of repeats whose window
    /// closed, and the count of suppressed alerts once the rate allows.
    fn tick(&mut self, now: Instant) -> Vec<String> {
        let mut out = Vec::new();
        let mut closed: Vec<(String, u64)> = Vec::new();
        self.recent.retain(|m, (t, n)| {
            if now.duration_since(*t) < self.window {
                return true;
            }
            if *n > 0 {
                closed.push((m.clone(), *n));
            }
            false
        });
        closed.sort();
        for (m, n) in closed {
            if self.room(now) {
                self.sent.push_back(now);
                out.push(self.repeated(&m, n));
            } else {
                self.suppressed += n;
            }
        }
        if self.suppressed > 0 && self.room(now) {
            self.sent.push_back(now);
            out.push(self.suppressed_line());
            self.suppressed = 0;
        }
        out
    }

    /// Lines to send for a new alert (with any that fell due).
    fn offer(&mut self, msg: &str, now: Instant) -> Vec<String> {
        let mut out = self.tick(now);
        if let Some((_, n)) = self.recent.get_mut(msg) {
            *n += 1;
            return out;
        }
        if !self.room(now) {
            self.suppressed += 1;
            return out;
        }
        self.sent.push_back(now);
        self.recent.insert(msg.to_string(), (now, 0));
        out.push(msg.to_string());
        out
    }

    /// Every count still held, whatever the rate (at a stop).
    fn drain(&mut self) -> Vec<String> {
        let mut held: Vec<(String, u64)> = self
            .recent
            .drain()
            .filter(|(_, (_, n))| *n > 0)
            .map(|(m, (_, n))| (m, n))
            .collect();
        held.sort();
        let mut out: Vec<String> = held.iter().map(|(m, n)| self.repeated(m, *n)).collect();
        if self.suppressed > 0 {
            out.push(self.suppressed_line());
            self.suppressed = 0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_request_out_of_time_is_a_refused_client() {
        for who in ["client mx1", "admin alice"] {
            let m = format!(
                "{who} (key 0a1b2c3d) sent a correctly signed request dated 5256000 min from \
                 the vault's clock: refused (401)"
            );
            assert_eq!(kind_of(&m), "client_refused", "{m}");
        }
    }

    #[test]
    fn identical_alerts_are_counted_once_the_window_closes() {
        let mut t = Throttle::new(Duration::from_secs(60), 30);
        let t0 = Instant::now();
        assert_eq!(t.offer("quota", t0), vec!["quota".to_string()]);
        for i in 1..300 {
            assert!(t.offer("quota", t0 + Duration::from_millis(i)).is_empty());
        }
        assert!(t.tick(t0 + Duration::from_secs(59)).is_empty());
        let due = t.tick(t0 + Duration::from_secs(61));
        assert_eq!(due.len(), 1);
        assert!(due[0].contains("repeated 299 more times"), "{due:?}");
        // After the window, the same alert is sent again.
        assert_eq!(t.offer("quota", t0 + Duration::from_secs(62)).len(), 1);
    }

    #[test]
    fn distinct_alerts_are_rate_limited_then_counted() {
        let mut t = Throttle::new(Duration::from_secs(60), 30);
        let t0 = Instant::now();
        let mut sent = 0;
        for i in 0..100 {
            sent += t.offer(&format!("alert {i}"), t0).len();
        }
        assert_eq!(sent, 30);
        assert!(t.tick(t0 + Duration::from_secs(10)).is_empty());
        let due = t.tick(t0 + Duration::from_secs(60));
        assert_eq!(due, vec![t.suppressed_line_for(70)]);
    }

    #[test]
    fn drain_reports_everything_held() {
        let mut t = Throttle::new(Duration::from_secs(60), 1);
        let t0 = Instant::now();
        t.offer("a", t0);
        t.offer("a", t0);
        t.offer("b", t0);
        let out = t.drain();
        assert_eq!(out.len(), 2, "{out:?}");
        assert!(out[0].contains("repeated 1 more time within"));
        assert!(out[1].starts_with("1 alert suppressed"));
        assert!(t.drain().is_empty());
    }

    #[test]
    fn the_command_is_reaped_and_sees_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("alerts");
        let a = Alerter::new(Some(format!(
            "echo \"$HOLDFAST_ALERT\" >> {}",
            out.display()
        )));
        for _ in 0..50 {
            a.raise("disk on fire");
        }
        a.raise("other");
        a.flush(Duration::from_secs(10));
        let text = std::fs::read_to_string(&out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            vec![
                "disk on fire",
                "other",
                "(repeated 49 more times within 60 s) disk on fire"
            ]
        );
    }

    #[test]
    fn alerts_are_counted_by_kind_and_kept_for_the_dashboard() {
        let a = Alerter::new(None);
        a.raise("TAMPERING: 1 logged snapshot(s) missing from disk: ab12");
        a.raise("client 0a0b0c0d hit its storage quota");
        a.raise("admin 01020304 proposed removal of identity 0a0b (proposal ff00)");
        a.raise("something nobody named yet");
        for i in 0..(RECENT + 5) {
            a.raise(&format!(
                "reclaimed {i} expired snapshot(s) and 0 unreferenced pack(s)"
            ));
        }
        let counts: HashMap<_, _> = a.counts().into_iter().collect();
        assert_eq!(counts.len(), KINDS.len());
        assert_eq!(counts["tampering"], 1);
        assert_eq!(counts["quota"], 1);
        assert_eq!(counts["governance"], 1);
        assert_eq!(counts["other"], 1);
        assert_eq!(counts["reclaim"], RECENT as u64 + 5);
        let recent = a.recent();
        assert_eq!(recent.len(), RECENT);
        assert!(
            recent[0]
                .text
                .starts_with(&format!("reclaimed {} ", RECENT + 4))
        );
        assert_eq!(recent[0].kind, "reclaim");
    }

    impl Throttle {
        fn suppressed_line_for(&self, n: u64) -> String {
            format!(
                "{n} alerts suppressed (more than {} in {} s); see the vault's stderr",
                self.max,
                self.window.as_secs()
            )
        }
    }
}
