//! Retention locks (SPEC G3), on the vault's clock, never shortened.
//!
//! **At commit** ([`commit_lock`]) a snapshot received at `t` is locked
//! until `t + keep_within`, and at least until the smallest enabled period
//! (day, week, month, year) that holds `t` has closed: until then it may
//! still become that period's keeper.
//!
//! **When a period closes** ([`slot_locks`]) the vault chooses its keeper
//! per client: the *last* snapshot of the period that references at least
//! half as much stored data as the largest one of the period (a near-empty
//! or wiping snapshot never takes a slot), and extends its lock to the start
//! of the period N periods later. A stolen client key can no longer take the
//! long slots by posting first after each boundary: it would have to post
//! last, with as much data as the genuine backups, which then stays pinned.
//! Readers also keep every client's last few snapshots whatever their age
//! (`logstate::KEEP_LAST`).
//!
//! [`lock_until`] is the earlier rule (first snapshot of each period at
//! commit), kept for the golden test of the calendar arithmetic.
//!
//! Under the earlier rule, a snapshot received at time `t` is locked until
//! the latest of:
//!
//! * `t + keep_within`;
//! * for each period kind (UTC day, ISO week starting Monday, calendar month,
//!   calendar year) with a count N > 0: if it is the first snapshot of its
//!   client in that period, the start of the period N periods later — that
//!   is, for as long as its period is one of the N most recent.
//!
//! Because a lock is fixed at write time from the vault's clock and can only
//! be extended, a later burst of bad snapshots (ransomware, T4) can never age
//! out the healthy ones before them, and a client's own clock (backdating)
//! plays no part.

use crate::format::Retention;

const NS: i64 = 1_000_000_000;
const DAY: i64 = 86_400;

/// Days since 1970-01-01 → (year, month 1-12, day 1-31). Howard Hinnant's
/// algorithm, valid for the whole i64 day range used here.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) → days since 1970-01-01.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Period {
    Day,
    Week,
    Month,
    Year,
}

/// Start (in days since the epoch) of the period holding `day`, and of the
/// period `n` periods later.
fn period_bounds(p: Period, day: i64, n: u32) -> (i64, i64) {
    match p {
        Period::Day => (day, day + n as i64),
        Period::Week => {
            // 1970-01-01 was a Thursday; Monday-based weeks.
            let start = day - (day + 3).rem_euclid(7);
            (start, start + 7 * n as i64)
        }
        Period::Month => {
            let (y, m, _) = civil_from_days(day);
            let months = y * 12 + (m as i64 - 1) + n as i64;
            (
                days_from_civil(y, m, 1),
                days_from_civil(months.div_euclid(12), (months.rem_euclid(12) + 1) as u32, 1),
            )
        }
        Period::Year => {
            let (y, _, _) = civil_from_days(day);
            (
                days_from_civil(y, 1, 1),
                days_from_civil(y + n as i64, 1, 1),
            )
        }
    }
}

/// The lock-until time (ns) of a snapshot received at `t_ns` by a client
/// whose earlier snapshots were received at `earlier_ns` (vault clock).
pub fn lock_until(policy: &Retention, t_ns: i64, earlier_ns: &[i64]) -> i64 {
    let day = t_ns.div_euclid(NS * DAY);
    let mut lock = t_ns.saturating_add(
        (policy.keep_within_secs.min(i64::MAX as u64 / 2) as i64).saturating_mul(NS),
    );
    for (p, n) in [
        (Period::Day, policy.daily),
        (Period::Week, policy.weekly),
        (Period::Month, policy.monthly),
        (Period::Year, policy.yearly),
    ] {
        if n == 0 {
            continue;
        }
        let (start, end) = period_bounds(p, day, n);
        let first = !earlier_ns
            .iter()
            .any(|&e| e <= t_ns && period_bounds(p, e.div_euclid(NS * DAY), 1).0 == start);
        if first {
            lock = lock.max(end.saturating_mul(DAY * NS));
        }
    }
    lock
}

fn keep_ns(policy: &Retention) -> i64 {
    (policy
        .keep_within_secs
        .min(i64::MAX as u64 / (2 * NS as u64)) as i64)
        .saturating_mul(NS)
}

fn enabled(policy: &Retention) -> impl Iterator<Item = (Period, u32)> {
    [
        (Period::Day, policy.daily),
        (Period::Week, policy.weekly),
        (Period::Month, policy.monthly),
        (Period::Year, policy.yearly),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
}

/// The lock a snapshot received at `t_ns` gets at commit.
pub fn commit_lock(policy: &Retention, t_ns: i64) -> i64 {
    let day = t_ns.div_euclid(NS * DAY);
    let mut lock = t_ns.saturating_add(keep_ns(policy));
    if let Some((p, _)) = enabled(policy).next() {
        let (_, end) = period_bounds(p, day, 1);
        lock = lock.max(end.saturating_mul(DAY * NS));
    }
    lock
}

/// One live snapshot of one client, as the vault sees it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate<T> {
    pub id: T,
    /// The vault's time when it was committed.
    pub time_ns: i64,
    /// Stored bytes it references (packs it lists).
    pub bytes: u64,
    /// Flagged as an anomaly: never a keeper.
    pub flagged: bool,
}

/// Keepers of the periods that have closed by `now_ns`, with the lock each
/// must have: (id, lock until). Only locks still in the future are given.
/// `snaps` are one client's live snapshots.
pub fn slot_locks<T: Copy + Ord>(
    policy: &Retention,
    snaps: &[Candidate<T>],
    now_ns: i64,
) -> Vec<(T, i64)> {
    use std::collections::BTreeMap;
    let mut out: BTreeMap<T, i64> = BTreeMap::new();
    for (p, n) in enabled(policy) {
        // period start (days) -> members
        let mut groups: BTreeMap<i64, Vec<&Candidate<T>>> = BTreeMap::new();
        for s in snaps {
            let (start, _) = period_bounds(p, s.time_ns.div_euclid(NS * DAY), 1);
            groups.entry(start).or_default().push(s);
        }
        for (start, members) in groups {
            let (_, end) = period_bounds(p, start, 1);
            if end.saturating_mul(DAY * NS) > now_ns {
                continue; // still open
            }
            let until = period_bounds(p, start, n).1.saturating_mul(DAY * NS);
            if until <= now_ns {
                continue;
            }
            let max = members
                .iter()
                .filter(|s| !s.flagged)
                .map(|s| s.bytes)
                .max()
                .unwrap_or(0);
            let keeper = members
                .iter()
                .filter(|s| !s.flagged && s.bytes.saturating_mul(2) >= max)
                .max_by_key(|s| (s.time_ns, s.id));
            if let Some(k) = keeper {
                let e = out.entry(k.id).or_insert(until);
                *e = (*e).max(until);
            }
        }
    }
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3600 * NS;
    const D: i64 = DAY * NS;

    fn policy(keep_days: u64, d: u32, w: u32, m: u32, y: u32) -> Retention {
        Retention {
            keep_within_secs: keep_days * 86_400,
            daily: d,
            weekly: w,
            monthly: m,
            yearly: y,
        }
    }

    #[test]
    fn calendar_round_trip() {
        for z in (-800_000..800_000).step_by(997) {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2026, 11, 27), 20_784);
        // 2026-11-23 was a Monday.
        assert_eq!(
            period_bounds(Period::Week, 20_784, 1).0,
            days_from_civil(2026, 11, 23)
        );
        assert_eq!(
            period_bounds(Period::Month, 20_784, 3).1,
            days_from_civil(2027, 2, 1)
        );
    }

    #[test]
    fn first_of_period_gets_the_long_lock() {
        let p = policy(2, 7, 0, 0, 0);
        let t0 = days_from_civil(2026, 11, 27) * D + 10 * H;
        // First of the day: kept until 7 days after the day began.
        assert_eq!(
            lock_until(&p, t0, &[]),
            (days_from_civil(2026, 11, 27) + 7) * D
        );
        // Second that day: only keep_within.
        assert_eq!(lock_until(&p, t0 + H, &[t0]), t0 + H + 2 * D);
        // First of the next day again.
        assert_eq!(
            lock_until(&p, t0 + D, &[t0, t0 + H]),
            (days_from_civil(2026, 11, 28) + 7) * D
        );
    }

    #[test]
    fn months_and_years() {
        let p = policy(0, 0, 0, 12, 7);
        let t = days_from_civil(2026, 3, 15) * D;
        assert_eq!(lock_until(&p, t, &[]), days_from_civil(2033, 1, 1) * D);
        let earlier = [days_from_civil(2026, 1, 2) * D];
        assert_eq!(lock_until(&p, t, &earlier), days_from_civil(2027, 3, 1) * D);
    }

    /// Golden: a year of snapshots every 8 hours under the default policy;
    /// how many are still locked at the end never changes silently.
    #[test]
    fn golden_year_of_snapshots() {
        let p = Retention::DEFAULT;
        let start = days_from_civil(2026, 1, 1) * D;
        let mut times = Vec::new();
        let mut locks = Vec::new();
        for i in 0..(365 * 3) {
            let t = start + i * 8 * H;
            locks.push(lock_until(&p, t, &times));
            times.push(t);
        }
        let end = *times.last().unwrap();
        let alive = locks.iter().filter(|l| **l > end).count();
        // Ends 2026-12-31 16:00. keep_within: the last 14 days × 3 = 42
        // (the daily firsts are among them). Weekly: firsts of the 8 weeks
        // starting Nov 9 … Dec 28; those of Nov 9 – Dec 14 are older than
        // 14 days: +6. Monthly: the firsts of all 12 months of 2026: +12.
        // Yearly: 2026's first is January's. 42 + 6 + 12 = 60.
        assert_eq!(alive, GOLDEN_ALIVE, "alive snapshots changed");
        // Locks never depend on later snapshots: recomputing an early lock
        // with the whole history before it gives the same answer.
        assert_eq!(lock_until(&p, times[10], &times[..10]), locks[10]);
    }
    const GOLDEN_ALIVE: usize = 60;

    fn c(id: u32, t: i64, bytes: u64) -> Candidate<u32> {
        Candidate {
            id,
            time_ns: t,
            bytes,
            flagged: false,
        }
    }

    #[test]
    fn commit_lock_holds_until_the_period_closes() {
        let p = policy(0, 7, 0, 0, 0);
        let t = days_from_civil(2026, 11, 27) * D + 10 * H;
        assert_eq!(commit_lock(&p, t), days_from_civil(2026, 11, 28) * D);
        let p = policy(2, 0, 0, 0, 0);
        assert_eq!(commit_lock(&p, t), t + 2 * D);
    }

    /// Issue 8 C: a junk snapshot posted just after each boundary took
    /// every long slot. Now the last one of the period with real data does.
    #[test]
    fn junk_first_after_the_boundary_takes_no_slot() {
        let p = policy(0, 7, 4, 0, 0);
        let d0 = days_from_civil(2026, 11, 23) * D; // a Monday
        let mut snaps = Vec::new();
        for day in 0..7 {
            snaps.push(c(day * 10, d0 + day as i64 * D + 60 * NS, 10)); // junk, 00:01
            snaps.push(c(day * 10 + 1, d0 + day as i64 * D + 2 * H, 1000)); // genuine
            snaps.push(c(day * 10 + 2, d0 + day as i64 * D + 23 * H, 10)); // junk, late
        }
        let now = d0 + 7 * D + H;
        let locks = slot_locks(&p, &snaps, now);
        let ids: Vec<u32> = locks.iter().map(|(i, _)| *i).collect();
        // Day 0's 7-day slot has just run out.
        assert_eq!(ids, vec![11, 21, 31, 41, 51, 61]);
        // The week's keeper is Sunday's genuine one, until 4 weeks on.
        let (_, l) = locks.iter().find(|(i, _)| *i == 61).unwrap();
        assert_eq!(*l, d0 + 28 * D);
        // Flagged snapshots never keep a slot.
        let mut flagged = snaps.clone();
        for s in &mut flagged {
            if s.id % 10 == 1 {
                s.flagged = true;
            }
        }
        let locks = slot_locks(&p, &flagged, now);
        assert!(locks.iter().all(|(i, _)| i % 10 != 1));
    }

    #[test]
    fn open_periods_and_expired_slots_give_nothing() {
        let p = policy(0, 2, 0, 0, 0);
        let d0 = days_from_civil(2026, 11, 23) * D;
        let snaps = vec![c(1, d0 + H, 5), c(2, d0 + 5 * D + H, 5)];
        // Day 0's slot ran out (2 days), day 5 is still open.
        assert!(slot_locks(&p, &snaps, d0 + 5 * D + 2 * H).is_empty());
        assert_eq!(slot_locks(&p, &snaps, d0 + D + H), vec![(1, d0 + 2 * D)]);
    }
}
