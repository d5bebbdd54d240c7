//! Compaction levels: after 10,000 transactions (one level-0 file each), a restore of the newest
//! state reads a few dozen files, equals the model, and `litestream restore` 0.5.17 agrees; every
//! restore point of the exact-restore window still restores exactly; a dry run changes nothing.

mod common;
mod compact_support;

use common::tools::litestream;
use std::process::{Command, Stdio};
use std::time::Instant;

use compact_support::*;
use walrust::clock::TestClock;
use walrust::compact::{compact, CompactOptions};
use walrust::config::Retention;
use walrust::restore::{plan, Target};
use walrust::store::Store;

const TXNS: u64 = 10_000;

/// `txns` transactions, 2 s apart, after a snapshot (TXID 1): 5.5 hours of level-0 files for
/// 10,000 of them.
fn busy_replica(txns: u64) -> Rep {
    let mut r = Rep::new("levels", 512);
    let pages: Vec<u32> = (1..=40).collect();
    r.model.commit(&pages, 40, T0);
    r.snapshot(T0);
    for i in 1..=txns {
        // Touch a few pages; now and then grow or shrink the database.
        let commit = 40 + (i / 1000) as u32 - if i % 997 == 0 { 3 } else { 0 };
        let a = (i * 7 % 40) as u32 + 1;
        let b = (i * 13 % 45) as u32 + 1;
        r.txn(&[a, b], commit, T0 + i as i64 * 2 * SEC);
    }
    r.flush();
    r
}

#[test]
fn ten_thousand_transactions_restore_from_a_few_dozen_files() {
    let started = Instant::now();
    let r = busy_replica(TXNS);
    eprintln!(
        "built the replica in {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let last = r.model.last();
    let scratch = r.scratch();
    let before = plan(&r.store, Target::Latest).unwrap().files.len();
    assert_eq!(before as u64, TXNS + 1);

    let end = T0 + TXNS as i64 * 2 * SEC;
    let clock = TestClock::new(end + 5 * SEC);
    let opts = CompactOptions::new(Retention::default()).with_tmp_dir(scratch.clone());

    // A dry run plans and changes nothing.
    let listing = |s: &dyn Store| s.list(None, walrust::store::Times::Listed).unwrap();
    let files_before = listing(&r.store);
    let dry = compact(&r.store, &opts, &clock, true).unwrap();
    assert!(dry.dry_run && !dry.created.is_empty());
    assert!(dry.created.iter().all(|f| f.size.is_none()));
    assert_eq!(listing(&r.store), files_before);

    let started = Instant::now();
    let report = compact(&r.store, &opts, &clock, false).unwrap();
    let took = started.elapsed();
    assert_eq!(report.created.len(), dry.created.len());
    assert!(
        report.removed.is_empty(),
        "everything is in the 24 h window"
    );
    let per_level: Vec<usize> = (1..=3).map(|l| level_files(&r.store, l).len()).collect();
    let chain = plan(&r.store, Target::Latest).unwrap();
    eprintln!(
        "compacted {TXNS} level-0 files in {:.2} s into {per_level:?} files at levels 1-3; a \
         restore of the newest state reads {} files",
        took.as_secs_f64(),
        chain.files.len()
    );
    assert!(chain.files.len() <= 40, "{} files", chain.files.len());
    check_restore(&r.store, &r.model, &scratch, Target::Latest, last);

    // Every restore point is still exact (level-0 files stay for the hourly tier's span).
    for t in (2..=last).step_by(997).chain([last - 1, 1]) {
        check_restore(&r.store, &r.model, &scratch, Target::Txid(txid(t)), t);
    }
    check_restore(
        &r.store,
        &r.model,
        &scratch,
        Target::Time(T0 + 4321 * 2 * SEC + 999),
        4322,
    );

    // A second run finds nothing more to do.
    let again = compact(&r.store, &opts, &clock, false).unwrap();
    assert!(again.created.is_empty() && again.removed.is_empty());

    if let Some(bin) = litestream() {
        let out = scratch.join("litestream.db");
        let res = Command::new(bin)
            .arg("restore")
            .arg("-o")
            .arg(&out)
            .arg(format!("file://{}", r.root().display()))
            .env_remove("AWS_CA_BUNDLE")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "litestream restore: {}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        assert!(std::fs::read(&out).unwrap() == r.model.db_bytes(last));
    }
}

#[test]
fn retention_then_removes_what_the_window_no_longer_needs() {
    let txns = 2000;
    let mut r = busy_replica(txns);
    let last = r.model.last();
    let scratch = r.scratch();
    // A snapshot at the end, then two days later: the window (24 h) holds nothing of this, and
    // both snapshots fall on one day, so only the newest snapshot stays.
    let end = T0 + txns as i64 * 2 * SEC;
    r.snapshot(end);
    r.flush();
    let clock = TestClock::new(end + 2 * DAY);
    let opts = CompactOptions::new(Retention::default()).with_tmp_dir(scratch.clone());
    let report = compact(&r.store, &opts, &clock, false).unwrap();
    assert!(
        report.created.is_empty(),
        "nothing retention removes is merged first"
    );
    let left = r.store.list(None, walrust::store::Times::Listed).unwrap();
    let keys: Vec<_> = left.iter().map(|f| f.key).collect();
    assert_eq!(keys, [key(9, 1, last)]);
    assert_eq!(report.removed.len() as u64, txns + 1);
    assert_eq!(
        report.bytes_freed,
        report.removed.iter().map(|f| f.size.unwrap()).sum::<u64>()
    );
    let (m, _) = walrust::manifest::load(&r.store).unwrap().unwrap();
    assert_eq!(m.files.len(), 1, "the removed files left the manifest");
    check_restore(&r.store, &r.model, &scratch, Target::Latest, last);
    let e = walrust::restore::restore(
        &r.store,
        &scratch.join("x.db"),
        Target::Txid(txid(last - 1)),
    )
    .unwrap_err();
    assert_eq!(e.kind(), walrust::restore::ErrorKind::NothingToRestore);
}
