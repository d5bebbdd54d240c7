//! Compaction and retention leave alone the files `manifest.json` does not name yet (issue 13
//! item 1): an uploader names level-0 files in batches, seconds after it made them durable,
//! and a snapshot is named at once. Retention that would remove everything the newest snapshot
//! covers removes the named level-0 files and older snapshots, but not the unnamed ones; once
//! they are named, the replica restores and verifies, and a later run removes them.

mod compact_support;

use compact_support::*;
use walrust::clock::TestClock;
use walrust::compact::{compact, verify, CompactOptions};
use walrust::config::Retention;
use walrust::manifest;
use walrust::restore::Target;

/// Keeps only the newest snapshot, with no exact-restore window.
const NOTHING: Retention = Retention {
    hourly: 0,
    daily: 0,
    weekly: 0,
    monthly: 0,
};

fn keys(r: &Rep, level: u32) -> Vec<(u64, u64)> {
    level_files(&r.store, level)
        .iter()
        .map(|f| (f.key.min_txid.get(), f.key.max_txid.get()))
        .collect()
}

#[test]
fn files_the_manifest_does_not_name_are_neither_merged_nor_removed() {
    let mut r = Rep::new("unnamed", 512);
    let scratch = r.scratch();
    r.model.commit(&[1, 2, 3], 3, T0);
    r.snapshot(T0);
    for t in 2..=10u64 {
        r.txn(&[1, (t % 3 + 2) as u32], 3, T0 + t as i64 * SEC);
    }
    r.flush();
    // Uploaded but still in the uploader's backlog: durable, not named.
    let mut backlog = Vec::new();
    for t in 11..=15u64 {
        let at = T0 + t as i64 * SEC;
        let t = r.model.commit(&[1, (t % 3 + 2) as u32], 3, at);
        backlog.push(write_file(&r.store, &r.model, &scratch, 0, t, t, at));
    }
    // A snapshot is named at once.
    let s = write_file(&r.store, &r.model, &scratch, 9, 1, 15, T0 + 16 * SEC);
    manifest::update(&r.store, &[s], &[]).unwrap();

    let clock = TestClock::new(T0 + 2 * HOUR);
    let opts = CompactOptions::new(NOTHING).with_tmp_dir(scratch.clone());
    let report = compact(&r.store, &opts, &clock, false).unwrap();
    assert!(!report.removed.is_empty(), "{report:?}");
    assert_eq!(keys(&r, 9), [(1, 15)]);
    assert_eq!(
        keys(&r, 0),
        (11..=15).map(|t| (t, t)).collect::<Vec<_>>(),
        "only the unnamed level-0 files are left"
    );
    assert!(
        keys(&r, 1).iter().all(|&(_, max)| max <= 10),
        "an unnamed file was merged"
    );

    // The uploader writes its backlog: every entry has its file.
    manifest::update(&r.store, &backlog, &[]).unwrap();
    check_restore(&r.store, &r.model, &scratch, Target::Latest, 15);
    let v = verify(&r.store).unwrap();
    assert!(v.ok, "{:?}", v.problems);

    // Named now, they go the way of the others.
    compact(&r.store, &opts, &clock, false).unwrap();
    assert!(keys(&r, 0).is_empty());
    check_restore(&r.store, &r.model, &scratch, Target::Latest, 15);
    assert!(verify(&r.store).unwrap().ok);
}

#[test]
fn a_hole_in_the_named_files_that_unnamed_files_fill_is_not_damage() {
    // A restored copy continued the history after files its predecessor uploaded but never
    // named: the manifest names files on both sides of them.
    let mut r = Rep::new("unnamed-hole", 512);
    let scratch = r.scratch();
    r.model.commit(&[1, 2, 3], 3, T0);
    r.snapshot(T0);
    for t in 2..=5u64 {
        r.txn(&[1, 2], 3, T0 + t as i64 * SEC);
    }
    r.flush();
    for t in 6..=8u64 {
        let at = T0 + t as i64 * SEC;
        let t = r.model.commit(&[1, 3], 3, at);
        write_file(&r.store, &r.model, &scratch, 0, t, t, at);
    }
    for t in 9..=12u64 {
        r.txn(&[2, 3], 3, T0 + t as i64 * SEC);
    }
    r.flush();

    let clock = TestClock::new(T0 + 2 * HOUR);
    let opts = CompactOptions::new(NOTHING).with_tmp_dir(scratch.clone());
    compact(&r.store, &opts, &clock, false).unwrap();
    assert!(
        (6..=8).all(|t| keys(&r, 0).contains(&(t, t))),
        "{:?}",
        keys(&r, 0)
    );
    check_restore(&r.store, &r.model, &scratch, Target::Latest, 12);
    check_restore(&r.store, &r.model, &scratch, Target::Txid(txid(7)), 7);
}
