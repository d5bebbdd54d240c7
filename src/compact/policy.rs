//! Which files are merged into which level: Litestream 0.5's compaction levels, run on demand.
//!
//! Litestream compacts level `n - 1` into level `n` on a timer aligned to the level's interval
//! (`compaction_level.go`: 30 s, 5 min and 1 h for levels 1–3 by default; snapshots are level
//! 9), each time merging every file of level `n - 1` past the newest file of level `n`. walrust
//! runs compaction when asked (after a snapshot, or from the CLI), so it gets the same shape from
//! the files' times instead of the timer: the files of level `n - 1` past level `n`'s newest are
//! cut into runs whose times fall in one interval of level `n` (aligned to the Unix epoch, as
//! Go's `Time.Truncate` aligns them), and each run whose interval has ended becomes one file of
//! level `n`. A run stops at a hole in the TXIDs; the first run whose interval is still open stops
//! the level (later files would leave a hole behind them). Levels are planned from 1 up in one
//! pass, so a level sees the files just merged into the one below it.
//!
//! The result: a restore of the newest state reads the snapshot, then at most one file per
//! ended hour, per ended 5 minutes of the current hour, per ended 30 s of the current 5 minutes,
//! and the level-0 files of the current 30 s, however many transactions there were.

use crate::store::FileInfo;
use crate::Txid;

/// Litestream 0.5's default intervals of levels 1, 2 and 3, in ms.
pub const DEFAULT_LEVEL_INTERVALS_MS: [i64; 3] = [30_000, 5 * 60_000, 60 * 60_000];

/// The runs of `src` (the files of the level below, sorted by key) to merge into a level whose
/// newest file ends at `dst_max`. Files ending at or before `skip_through` are left out:
/// retention removes them. Each run continues the previous file's TXIDs (or overlaps them and
/// reaches past), so `merge::merge` accepts it.
pub fn plan_level(
    src: &[FileInfo],
    dst_max: Option<Txid>,
    skip_through: Option<Txid>,
    interval_ms: i64,
    now_ms: i64,
) -> Vec<Vec<FileInfo>> {
    let ended = |bucket: i64| (bucket + 1).saturating_mul(interval_ms) <= now_ms;
    let mut runs = Vec::new();
    let mut run: Vec<FileInfo> = Vec::new();
    let mut bucket = 0i64;
    for f in src {
        if dst_max.is_some_and(|m| f.key.min_txid <= m)
            || skip_through.is_some_and(|s| f.key.max_txid <= s)
        {
            continue;
        }
        let b = f.created_at_ms.div_euclid(interval_ms);
        if let Some(last) = run.last() {
            let end = last.key.max_txid;
            if f.key.max_txid <= end {
                continue; // covered by a file already in the run
            }
            if f.key.min_txid.get() <= end.get() + 1 && b == bucket {
                run.push(*f);
                continue;
            }
            if !ended(bucket) {
                return runs;
            }
            runs.push(std::mem::take(&mut run));
        }
        run.push(*f);
        bucket = b;
    }
    if !run.is_empty() && ended(bucket) {
        runs.push(run);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileKey;

    const MIN: i64 = 60_000;

    fn f(min: u64, max: u64, at: i64) -> FileInfo {
        FileInfo {
            key: FileKey::new(0, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap(),
            size: 10,
            created_at_ms: at,
        }
    }

    fn ranges(runs: &[Vec<FileInfo>]) -> Vec<(u64, u64, usize)> {
        runs.iter()
            .map(|r| {
                let (a, b) = (r[0].key.min_txid.get(), r[r.len() - 1].key.max_txid.get());
                (a, b, r.len())
            })
            .collect()
    }

    #[test]
    fn cuts_runs_at_interval_boundaries_and_stops_at_the_open_one() {
        // One file every 20 s from t = 0 s: 5-minute runs of 15 files.
        let src: Vec<_> = (1..=40).map(|t| f(t, t, (t as i64 - 1) * 20_000)).collect();
        let runs = plan_level(&src, None, None, 5 * MIN, 13 * MIN);
        assert_eq!(ranges(&runs), [(1, 15, 15), (16, 30, 15)]);
        // Level already holds 1-15: start after it.
        let runs = plan_level(&src, Txid::new(15), None, 5 * MIN, 15 * MIN);
        assert_eq!(ranges(&runs), [(16, 30, 15), (31, 40, 10)]);
        // Nothing ended yet.
        assert!(plan_level(&src, None, None, 5 * MIN, 4 * MIN).is_empty());
    }

    #[test]
    fn holes_and_overlaps_and_skipped_files() {
        // 4-4 and 4-5 overlap (two writers); 6-7 is missing.
        let src = vec![
            f(1, 3, 0),
            f(4, 4, 1000),
            f(4, 5, 1000),
            f(8, 9, 2000),
            f(10, 10, 3000),
        ];
        let runs = plan_level(&src, None, None, MIN, MIN);
        assert_eq!(ranges(&runs), [(1, 5, 3), (8, 10, 2)]);
        let runs = plan_level(&src, None, Txid::new(5), MIN, MIN);
        assert_eq!(ranges(&runs), [(8, 10, 2)]);
    }
}
