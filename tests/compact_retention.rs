//! GFS retention driven by a test clock: months of hourly snapshots (and a transaction every
//! hour), compacted every few hours. The snapshots left are exactly the GFS tiers' (computed here
//! independently, from calendar windows), plus the newest and the exact-restore window's base;
//! every kept restore point restores exactly.

mod common;
mod compact_support;

use common::tools::litestream;
use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use compact_support::*;
use walrust::clock::{format_rfc3339_ms, parse_rfc3339, TestClock};
use walrust::compact::{compact, CompactOptions};
use walrust::config::Retention;
use walrust::restore::Target;
use walrust::store::{FileInfo, Store, Times};

const RETENTION: Retention = Retention {
    hourly: 6,
    daily: 5,
    weekly: 3,
    monthly: 2,
};

/// The start of the month `back` months before the one `ms` is in.
fn month_start(ms: i64, back: i64) -> i64 {
    let s = format_rfc3339_ms(ms);
    let (y, m): (i64, i64) = (s[..4].parse().unwrap(), s[5..7].parse().unwrap());
    let n = y * 12 + (m - 1) - back;
    parse_rfc3339(&format!("{:04}-{:02}-01T00:00:00Z", n / 12, n % 12 + 1)).unwrap()
}

/// The windows `[start, end)` of each tier's last N periods, newest first.
fn windows(now: i64) -> Vec<(i64, i64)> {
    let mut w = Vec::new();
    let hour = now - now.rem_euclid(HOUR);
    for i in 0..RETENTION.hourly as i64 {
        w.push((hour - i * HOUR, hour - i * HOUR + HOUR));
    }
    let day = now - now.rem_euclid(DAY);
    for i in 0..RETENTION.daily as i64 {
        w.push((day - i * DAY, day - i * DAY + DAY));
    }
    // 1970-01-01 was a Thursday, three days after a Monday.
    let monday = day - ((day / DAY + 3) % 7) * DAY;
    for i in 0..RETENTION.weekly as i64 {
        w.push((monday - i * 7 * DAY, monday - (i - 1) * 7 * DAY));
    }
    for i in 0..RETENTION.monthly as i64 {
        w.push((month_start(now, i), month_start(now, i - 1)));
    }
    w
}

/// What retention must keep of `snapshots` (every snapshot ever taken) at `now`, given the
/// level-0 files' times.
fn expected(snapshots: &[FileInfo], level0: &[FileInfo], now: i64) -> BTreeSet<u64> {
    let mut keep = BTreeSet::new();
    for (start, end) in windows(now) {
        if let Some(s) = snapshots
            .iter()
            .filter(|s| start <= s.created_at_ms && s.created_at_ms < end)
            .max_by_key(|s| s.created_at_ms)
        {
            keep.insert(s.key.max_txid.get());
        }
    }
    keep.insert(
        snapshots
            .iter()
            .map(|s| s.key.max_txid.get())
            .max()
            .unwrap(),
    );
    let window = now - RETENTION.hourly as i64 * HOUR;
    let oldest = level0
        .iter()
        .filter(|f| f.created_at_ms >= window)
        .min_by_key(|f| f.key.max_txid);
    // The newest snapshot of each clock hour the window overlaps (the next bases).
    let mut hour = window - window.rem_euclid(HOUR);
    while hour <= now {
        if let Some(s) = snapshots
            .iter()
            .filter(|s| hour <= s.created_at_ms && s.created_at_ms < hour + HOUR)
            .max_by_key(|s| s.created_at_ms)
        {
            keep.insert(s.key.max_txid.get());
        }
        hour += HOUR;
    }
    if let Some(r0) = oldest {
        // The snapshot a restore to it starts from, by TXID and by time.
        let base = snapshots
            .iter()
            .filter(|s| s.key.max_txid <= r0.key.max_txid && s.created_at_ms <= r0.created_at_ms)
            .map(|s| s.key.max_txid.get())
            .max()
            .unwrap();
        keep.insert(base);
    }
    keep
}

#[test]
fn months_of_hourly_snapshots_keep_exactly_the_gfs_tiers() {
    let mut r = Rep::new("gfs", 512);
    let scratch = r.scratch();
    let clock = TestClock::new(T0);
    let opts = CompactOptions::new(RETENTION).with_tmp_dir(scratch.clone());
    let mut snapshots: Vec<FileInfo> = Vec::new();
    let mut level0: Vec<FileInfo> = Vec::new();
    r.model.commit(&[1, 2, 3], 3, T0);

    let hours = 75 * 24;
    for h in 0..hours {
        let at = T0 + h * HOUR;
        r.snapshot(at);
        let t = r.model.last();
        snapshots.push(FileInfo {
            key: key(9, 1, t),
            size: 0,
            created_at_ms: at,
        });
        let at = at + 20 * 60 * SEC;
        let commit = 3 + (h % 5) as u32;
        let t = r.txn(&[(h % 3) as u32 + 1], commit, at);
        level0.push(FileInfo {
            key: key(0, t, t),
            size: 0,
            created_at_ms: at,
        });
        r.flush();
        if h % 6 == 5 {
            clock.set(at + 17 * 60 * SEC);
            compact(&r.store, &opts, &clock, false).unwrap();
        }
    }
    let now = clock.advance(HOUR / 2);
    let report = compact(&r.store, &opts, &clock, false).unwrap();
    assert_eq!(report.latest_txid, Some(txid(r.model.last()).to_string()));

    let kept: BTreeSet<u64> = level_files(&r.store, 9)
        .iter()
        .map(|f| f.key.max_txid.get())
        .collect();
    let want = expected(&snapshots, &level0, now);
    assert_eq!(kept, want);
    // It is 00:07 on Thursday 2027-02-11: 5 hourly (this hour has no snapshot yet), 3 more
    // daily (today has none; yesterday's newest is the newest), 1 more weekly (Sunday
    // 2027-01-31, also January's newest), 0 more monthly, and the window's base: the window
    // starts at 18:07, its oldest transaction committed at 18:20, and a restore to that time
    // starts from the 18:00 snapshot, one hour before the hourly tier (it is also the newest of
    // 18:00-19:00, the one hour the window overlaps beyond the hourly tier).
    assert_eq!(format_rfc3339_ms(now), "2027-02-11T00:07:00.000Z");
    assert_eq!(kept.len(), 5 + 3 + 1 + 1, "{kept:?}");

    // Every kept restore point restores exactly: snapshots, the window, the newest.
    for &t in &kept {
        check_restore(&r.store, &r.model, &scratch, Target::Txid(txid(t)), t);
    }
    let window = now - RETENTION.hourly as i64 * HOUR;
    let in_window: Vec<&FileInfo> = level0
        .iter()
        .filter(|f| f.created_at_ms >= window)
        .collect();
    assert_eq!(in_window.len(), 6);
    for f in in_window {
        let t = f.key.max_txid.get();
        check_restore(&r.store, &r.model, &scratch, Target::Txid(txid(t)), t);
        check_restore(
            &r.store,
            &r.model,
            &scratch,
            Target::Time(f.created_at_ms),
            t,
        );
    }
    check_restore(&r.store, &r.model, &scratch, Target::Latest, r.model.last());

    // `litestream restore` agrees, on the newest state, an old snapshot and a window point.
    if let Some(bin) = litestream() {
        for (args, t) in [
            (vec![], r.model.last()),
            (vec!["-txid".to_string(), txid(1560).to_string()], 1560),
            (vec!["-txid".to_string(), txid(1797).to_string()], 1797),
        ] {
            let out = scratch.join(format!("litestream-{t}.db"));
            let res = Command::new(&bin)
                .arg("restore")
                .args(&args)
                .arg("-o")
                .arg(&out)
                .arg(format!("file://{}", r.root().display()))
                .env_remove("AWS_CA_BUNDLE")
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert!(
                res.status.success(),
                "litestream restore {args:?}: {}",
                String::from_utf8_lossy(&res.stderr)
            );
            assert!(
                std::fs::read(&out).unwrap() == r.model.db_bytes(t),
                "{args:?}"
            );
        }
    }

    // Storage is bounded: the snapshots, and lower-level files since the base only.
    let all = r.store.list(None, Times::Listed).unwrap();
    let lower = all.iter().filter(|f| f.key.level < 9).count();
    assert!(lower < 40, "{lower} files of levels 0-8 left");
    let (m, _) = walrust::manifest::load(&r.store).unwrap().unwrap();
    assert_eq!(
        m.files.len(),
        all.len(),
        "the manifest names exactly what is left"
    );
}

#[test]
fn a_dry_run_reports_what_retention_would_remove() {
    let mut r = Rep::new("gfs-dry", 512);
    r.model.commit(&[1], 1, T0);
    for h in 0..30 {
        r.snapshot(T0 + h * HOUR);
        r.txn(&[1], 1, T0 + h * HOUR + 60 * SEC);
    }
    r.flush();
    let clock = TestClock::new(T0 + 30 * HOUR);
    let opts = CompactOptions::new(RETENTION).with_tmp_dir(r.scratch());
    let before = r.store.list(None, Times::Listed).unwrap();
    let dry = compact(&r.store, &opts, &clock, true).unwrap();
    assert_eq!(r.store.list(None, Times::Listed).unwrap(), before);
    let real = compact(&r.store, &opts, &clock, false).unwrap();
    let keys =
        |v: &[walrust::compact::FileReport]| v.iter().map(|f| f.key.clone()).collect::<Vec<_>>();
    assert_eq!(keys(&dry.removed), keys(&real.removed));
    assert_eq!(dry.bytes_freed, real.bytes_freed);
    assert!(dry.bytes_freed > 0);
    let json = serde_json::to_value(&real).unwrap();
    for field in [
        "created",
        "removed",
        "kept",
        "bytes_freed",
        "latest_txid",
        "exact_from_txid",
    ] {
        assert!(json.get(field).is_some(), "{field}");
    }
    let snap = &json["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["level"] == 9)
        .unwrap();
    assert!(snap["reason"].as_str().unwrap().contains("daily"), "{snap}");
}
