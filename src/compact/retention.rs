//! Which files a replica keeps: GFS tiers of snapshots, an exact-restore window, and the files
//! that chain them together. Pure: works on a listing, touches no store.
//!
//! Restore points kept:
//! - **Snapshots of the GFS tiers.** For each tier (hourly, daily, weekly, monthly), the newest
//!   snapshot (by its time in the replica) in each of the last N calendar periods in UTC,
//!   counting the current one: hours, days, weeks starting on Monday, months. A snapshot newer
//!   than `now` is kept (the clock is behind the replica's). The newest snapshot is always kept.
//! - **Every restore point of the exact-restore window**: the end of every level-0 file newer
//!   than `now - hourly` hours (by its time in the replica). For them, the *base* is kept too:
//!   the newest snapshot at or before the window's oldest restore point, by TXID and by time,
//!   which is older than the hourly tier reaches; and so that a later run finds the base it
//!   needs, the newest snapshot of every clock hour the window overlaps (one more hour than the
//!   hourly tier). Where the lower levels have a hole in their TXIDs after the base (a fresh
//!   snapshot after the database diverged), the first snapshot past the hole is kept, so that
//!   the points after it still restore.
//! - **The newest restore point**, whose chain is never touched.
//!
//! Files kept: those snapshots; every file of levels 0–8 that ends after the base (they chain
//! the window, and the newest restore point, to the base); nothing else. So between the older
//! GFS snapshots a restore can reach the snapshots themselves, not the transactions between them.
//! Independently of all that, a level-0 file is only removed when a kept file of a higher level
//! covers its range, and the decision is checked before it is returned: the newest restore
//! point, and the window's oldest by TXID and by time, must reach the same TXID as before.

use std::collections::BTreeMap;

use super::{lower_levels, reach, CompactError};
use crate::clock::format_rfc3339_ms;
use crate::config::Retention;
use crate::restore::ErrorKind;
use crate::store::{FileInfo, FileKey, SNAPSHOT_LEVEL};
use crate::Txid;

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 24 * HOUR_MS;

/// What to keep, what to remove, and the restore points that holds.
#[derive(Clone, Debug, Default)]
pub struct Decision {
    /// Kept files, sorted by key, each with why.
    pub keep: Vec<(FileInfo, String)>,
    /// Files to remove, sorted by key.
    pub remove: Vec<FileInfo>,
    /// The snapshot the exact-restore window (and everything newer) chains from.
    pub base: Option<FileInfo>,
    /// The newest restore point.
    pub latest: Option<Txid>,
    /// The oldest restore point of the exact-restore window.
    pub exact_from: Option<Txid>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    Hourly,
    Daily,
    Weekly,
    Monthly,
}

impl Tier {
    /// The period `ms` falls in, numbered so that consecutive periods differ by one.
    fn period(self, ms: i64) -> i64 {
        match self {
            Tier::Hourly => ms.div_euclid(HOUR_MS),
            Tier::Daily => ms.div_euclid(DAY_MS),
            // 1970-01-01 was a Thursday: shifting by 3 days starts weeks on Monday.
            Tier::Weekly => (ms.div_euclid(DAY_MS) + 3).div_euclid(7),
            Tier::Monthly => {
                let s = format_rfc3339_ms(ms);
                let y: i64 = s[..4].parse().unwrap_or(0);
                let m: i64 = s[5..7].parse().unwrap_or(1);
                y * 12 + m - 1
            }
        }
    }

    /// How a kept snapshot's reason names the period.
    fn label(self, ms: i64) -> String {
        let s = format_rfc3339_ms(ms);
        match self {
            Tier::Hourly => format!("hourly {}", &s[..13]),
            Tier::Daily => format!("daily {}", &s[..10]),
            Tier::Weekly => {
                let monday = (self.period(ms) * 7 - 3) * DAY_MS;
                format!("weekly from {}", &format_rfc3339_ms(monday)[..10])
            }
            Tier::Monthly => format!("monthly {}", &s[..7]),
        }
    }
}

/// The newest snapshot (by time, then TXID) of each of `tier`'s periods `from..=to`.
fn newest_per_period(
    snapshots: &[FileInfo],
    tier: Tier,
    from: i64,
    to: i64,
) -> BTreeMap<i64, &FileInfo> {
    let mut newest: BTreeMap<i64, &FileInfo> = BTreeMap::new();
    for s in snapshots {
        let p = tier.period(s.created_at_ms);
        if from <= p && p <= to {
            let e = newest.entry(p).or_insert(s);
            if (s.created_at_ms, s.key.max_txid) > (e.created_at_ms, e.key.max_txid) {
                *e = s;
            }
        }
    }
    newest
}

/// The snapshots the GFS tiers keep, each with the tiers that keep it. `snapshots` are level-9
/// files; times are their `created_at_ms`.
pub fn gfs(snapshots: &[FileInfo], r: &Retention, now_ms: i64) -> BTreeMap<FileKey, Vec<String>> {
    let mut keep: BTreeMap<FileKey, Vec<String>> = BTreeMap::new();
    for (tier, n) in [
        (Tier::Hourly, r.hourly),
        (Tier::Daily, r.daily),
        (Tier::Weekly, r.weekly),
        (Tier::Monthly, r.monthly),
    ] {
        let current = tier.period(now_ms);
        for s in newest_per_period(snapshots, tier, current - n as i64 + 1, current).values() {
            keep.entry(s.key)
                .or_default()
                .push(tier.label(s.created_at_ms));
        }
    }
    for s in snapshots.iter().filter(|s| s.created_at_ms > now_ms) {
        keep.entry(s.key)
            .or_default()
            .push("newer than now (is the clock behind?)".into());
    }
    keep
}

/// Decides what `files` (the whole listing, sorted by key) keeps under `r` at `now_ms`.
pub fn decide(
    files: &[FileInfo],
    r: &Retention,
    now_ms: i64,
    url: &str,
) -> Result<Decision, CompactError> {
    check_no_gap(files, url)?;
    decide_part(files, r, now_ms, url)
}

/// A hole in the chain from the newest snapshot of `files` (a whole listing) is an integrity
/// error (doubtful: a listing taken while files are created may show one, see `settle`).
pub fn check_no_gap(files: &[FileInfo], url: &str) -> Result<(), CompactError> {
    let Some(newest) = files
        .iter()
        .filter(|f| f.key.level == SNAPSHOT_LEVEL)
        .max_by_key(|s| (s.key.max_txid, s.created_at_ms))
    else {
        return Ok(());
    };
    let chain = reach(&lower_levels(files), newest.key.max_txid, |_| true);
    match chain.beyond {
        Some(next) => Err(CompactError::doubtful_integrity(format!(
            "{url} has a gap: its files reach TXID {}, but the next one ({}) starts at TXID {}; \
             a file is missing. Nothing was removed; run `walrust verify`",
            chain.end, next.key, next.key.min_txid
        ))),
        None => Ok(()),
    }
}

/// `decide` for a part of a listing that `check_no_gap` passed as a whole: the files the
/// manifest names. A hole in the part (files not named yet fill it) ends the newest restore
/// point the decision knows of; every file of the part past it is kept (it ends after the base).
pub fn decide_part(
    files: &[FileInfo],
    r: &Retention,
    now_ms: i64,
    url: &str,
) -> Result<Decision, CompactError> {
    let snapshots: Vec<FileInfo> = files
        .iter()
        .filter(|f| f.key.level == SNAPSHOT_LEVEL)
        .copied()
        .collect();
    if snapshots.is_empty() {
        // Nothing to restore from yet: keep everything until a snapshot exists.
        let keep = files
            .iter()
            .map(|f| (*f, "no snapshot yet".to_string()))
            .collect();
        return Ok(Decision {
            keep,
            ..Decision::default()
        });
    }
    let lower = lower_levels(files);
    let newest = *snapshots
        .iter()
        .max_by_key(|s| (s.key.max_txid, s.created_at_ms))
        .expect("there are snapshots");
    let latest = reach(&lower, newest.key.max_txid, |_| true).end;

    let mut why: BTreeMap<FileKey, Vec<String>> = gfs(&snapshots, r, now_ms);
    let mut add = |k: FileKey, reason: &str| why.entry(k).or_default().push(reason.into());
    add(newest.key, "newest snapshot");

    let window_start = (r.hourly > 0).then(|| now_ms - r.hourly as i64 * HOUR_MS);
    let in_window =
        |f: &FileInfo| f.key.level == 0 && window_start.is_some_and(|w| f.created_at_ms >= w);
    // The window's oldest restore point, and when it was committed.
    let oldest_point = files
        .iter()
        .filter(|f| in_window(f))
        .min_by_key(|f| f.key.max_txid)
        .map(|f| (f.key.max_txid, f.created_at_ms));
    // The newest snapshot a restore to it, by TXID or by time, starts from.
    let base = match oldest_point {
        Some((r0, t0)) => snapshots
            .iter()
            .filter(|s| s.key.max_txid <= r0 && s.created_at_ms <= t0)
            .max_by_key(|s| (s.key.max_txid, s.created_at_ms))
            .or_else(|| {
                snapshots
                    .iter()
                    .min_by_key(|s| (s.key.max_txid, s.created_at_ms))
            }),
        None => Some(&newest),
    }
    .copied()
    .expect("there are snapshots");
    if oldest_point.is_some() {
        add(base.key, "base of the exact-restore window");
    }
    // The newest snapshot of each hour the window overlaps: as the window moves on, each
    // becomes its base in turn (the hourly tier keeps all but the oldest of these already).
    if let Some(w) = window_start {
        let hours = newest_per_period(
            &snapshots,
            Tier::Hourly,
            Tier::Hourly.period(w),
            Tier::Hourly.period(now_ms),
        );
        for s in hours.values() {
            why.entry(s.key)
                .or_insert_with(|| vec!["next base of the exact-restore window".into()]);
        }
    }
    for s in bridges(&lower, &snapshots, base.key.max_txid) {
        why.entry(s)
            .or_default()
            .push("restores past a hole in the TXIDs".into());
    }

    let mut d = Decision {
        base: Some(base),
        latest: Some(latest),
        exact_from: oldest_point.map(|(r0, _)| r0.max(base.key.max_txid)),
        ..Decision::default()
    };
    for f in files {
        let reason = if f.key.level == SNAPSHOT_LEVEL {
            why.get(&f.key).map(|w| w.join(", "))
        } else if in_window(f) {
            Some("exact-restore window".into())
        } else if f.key.max_txid > base.key.max_txid {
            Some("after the base snapshot".into())
        } else {
            None
        };
        match reason {
            Some(w) => d.keep.push((*f, w)),
            None => d.remove.push(*f),
        }
    }
    keep_uncovered_level0(&mut d);
    check(files, &d, oldest_point, url)?;
    Ok(d)
}

/// Snapshots that restores need to get past holes in the lower levels' TXIDs after `from`: for
/// each hole, the oldest snapshot that reaches its end.
fn bridges(lower: &[&FileInfo], snapshots: &[FileInfo], from: Txid) -> Vec<FileKey> {
    let mut out = Vec::new();
    let mut end = from;
    for f in lower.iter().copied() {
        if f.key.max_txid <= end {
            continue;
        }
        let hole_end = f.key.min_txid.get() - 1;
        if hole_end > end.get() {
            let bridge = snapshots
                .iter()
                .filter(|s| s.key.max_txid.get() >= hole_end)
                .min_by_key(|s| (s.key.max_txid, s.created_at_ms));
            if let Some(s) = bridge {
                out.push(s.key);
                end = end.max(s.key.max_txid);
            }
        }
        end = end.max(f.key.max_txid);
    }
    out
}

/// Keeps every level-0 file that no kept file of a higher level covers (belt and braces: the
/// rules above never remove one).
fn keep_uncovered_level0(d: &mut Decision) {
    let covers: Vec<FileKey> = d
        .keep
        .iter()
        .map(|(f, _)| f.key)
        .filter(|k| k.level > 0)
        .collect();
    let covered = |k: &FileKey| {
        covers
            .iter()
            .any(|c| c.min_txid <= k.min_txid && k.max_txid <= c.max_txid)
    };
    let (stay, go): (Vec<FileInfo>, Vec<FileInfo>) = d
        .remove
        .iter()
        .partition(|f| f.key.level == 0 && !covered(&f.key));
    d.remove = go;
    for f in stay {
        d.keep.push((f, "no compaction covers it yet".into()));
    }
    d.keep.sort_by_key(|(f, _)| f.key);
}

/// Refuses a decision under which the newest restore point, or the window's oldest (by TXID
/// and by time), would no longer restore to the same TXID.
fn check(
    files: &[FileInfo],
    d: &Decision,
    oldest_point: Option<(Txid, i64)>,
    url: &str,
) -> Result<(), CompactError> {
    let kept: Vec<FileInfo> = d.keep.iter().map(|(f, _)| *f).collect();
    // The TXID a restore reaches with `fs`, when `ok` says which files the target allows.
    let end = |fs: &[FileInfo], ok: &dyn Fn(&FileInfo) -> bool| {
        let snapshot = fs
            .iter()
            .filter(|f| f.key.level == SNAPSHOT_LEVEL && ok(f))
            .max_by_key(|s| (s.key.max_txid, s.created_at_ms))?;
        Some(reach(&lower_levels(fs), snapshot.key.max_txid, ok).end)
    };
    type Allows = Box<dyn Fn(&FileInfo) -> bool>;
    let mut targets: Vec<(String, Allows)> = vec![("the newest".into(), Box::new(|_| true))];
    if let Some((r0, t0)) = oldest_point {
        targets.push((
            format!("TXID {r0}"),
            Box::new(move |f| f.key.max_txid <= r0),
        ));
        targets.push((
            format_rfc3339_ms(t0),
            Box::new(move |f| f.created_at_ms <= t0),
        ));
    }
    for (name, ok) in &targets {
        let before = end(files, ok.as_ref());
        if before.is_some() && end(&kept, ok.as_ref()) != before {
            return Err(CompactError::new(
                ErrorKind::Io,
                format!(
                    "internal error: retention would change the restore point {name} of {url}; \
                     nothing was removed. Please report this"
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    fn at(s: &str) -> i64 {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn periods_are_utc_hours_days_weeks_from_monday_and_months() {
        let w = |s| Tier::Weekly.period(at(s));
        assert_eq!(w("2026-11-23T00:00:00Z"), w("2026-11-29T23:59:59Z"));
        assert_eq!(w("2026-11-22T23:59:59Z") + 1, w("2026-11-23T00:00:00Z"));
        let m = |s| Tier::Monthly.period(at(s));
        assert_eq!(m("2026-11-30T23:59:59Z") + 1, m("2026-12-01T00:00:00Z"));
        assert_eq!(m("2026-12-31T23:59:59Z") + 1, m("2027-01-01T00:00:00Z"));
        let d = |s| Tier::Daily.period(at(s));
        assert_eq!(d("2026-11-28T00:00:00Z"), d("2026-11-28T23:59:59.999Z"));
        assert_eq!(
            Tier::Weekly.label(at("2026-11-28T10:00:00Z")),
            "weekly from 2026-11-23"
        );
        assert_eq!(
            Tier::Hourly.label(at("2026-11-28T10:49:56Z")),
            "hourly 2026-11-28T10"
        );
    }

    #[test]
    fn default_tiers_over_fourteen_months_of_hourly_snapshots() {
        let start = at("2025-09-01T00:30:00Z");
        let now = at("2026-11-28T10:49:56Z");
        let snapshots: Vec<FileInfo> = (0..)
            .map(|h| start + h * HOUR_MS)
            .take_while(|&t| t <= now)
            .enumerate()
            .map(|(i, t)| FileInfo {
                key: FileKey::new(9, Txid::ONE, Txid::new(i as u64 + 1).unwrap()).unwrap(),
                size: 1,
                created_at_ms: t,
            })
            .collect();
        let keep = gfs(&snapshots, &Retention::default(), now);
        let labels: Vec<&String> = keep.values().flatten().collect();
        let count = |tier: &str| labels.iter().filter(|l| l.starts_with(tier)).count();
        assert_eq!(
            (
                count("hourly"),
                count("daily"),
                count("weekly"),
                count("monthly")
            ),
            (24, 7, 12, 12)
        );
        // The newest snapshot is every tier's newest; days end at 23:30, months on their last
        // day, weeks on Sundays.
        let newest = snapshots.last().unwrap().key;
        assert_eq!(keep[&newest].len(), 4);
        let time_of = |k: &FileKey| snapshots[k.max_txid.get() as usize - 1].created_at_ms;
        for (k, why) in &keep {
            let s = format_rfc3339_ms(time_of(k));
            if *k != newest && why.iter().any(|w| w.starts_with("daily")) {
                assert!(s.ends_with("T23:30:00.000Z"), "{s}");
            }
        }
        assert!(keep
            .keys()
            .any(|k| format_rfc3339_ms(time_of(k)) == "2025-12-31T23:30:00.000Z"));
        assert!(!keep
            .keys()
            .any(|k| format_rfc3339_ms(time_of(k)).as_str() < "2025-12-01"));
        // 24 hourly + 5 more daily (today's is the newest, yesterday's 23:30 an hourly one) + 10
        // more weekly (this week's is the newest, last Sunday a daily one) + 11 more monthly.
        assert_eq!(keep.len(), 24 + 5 + 10 + 11, "{:?}", labels);
    }
}
