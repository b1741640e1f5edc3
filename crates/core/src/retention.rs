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

    /// Golden: a year of snapshots every 8 hours under the default policy,
    /// run as the vault runs it (commit lock, then the keepers of each
    /// closed period, then reclaim of what expired); how many are alive at
    /// the end never changes silently.
    #[test]
    fn golden_year_of_snapshots() {
        let p = Retention::DEFAULT;
        let start = days_from_civil(2026, 1, 1) * D;
        // (id, time, lock)
        let mut live: Vec<(u32, i64, i64)> = Vec::new();
        for i in 0..(365 * 3) {
            let t = start + i as i64 * 8 * H;
            let cands: Vec<Candidate<u32>> = live.iter().map(|s| c(s.0, s.1, 100)).collect();
            for (id, until) in slot_locks(&p, &cands, t) {
                let s = live.iter_mut().find(|s| s.0 == id).unwrap();
                s.2 = s.2.max(until);
            }
            live.retain(|s| s.2 > t);
            live.push((i, t, commit_lock(&p, t)));
        }
        // Ends 2026-12-31 16:00. keep_within: the last 14 days × 3 = 42 (the
        // daily keepers, 16:00 of each day, are among them). Weekly: the
        // Sundays 16:00 of the closed weeks starting Nov 9 … Dec 21; those
        // of Nov 15 … Dec 13 are older than 14 days: +5. Monthly: the last
        // of each closed month, Jan … Nov: +11. Yearly: 2026 is still open.
        assert_eq!(live.len(), GOLDEN_ALIVE, "alive snapshots changed");
    }
    const GOLDEN_ALIVE: usize = 58;

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
