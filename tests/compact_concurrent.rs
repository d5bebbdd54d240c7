//! Compaction racing an uploader: one thread commits transactions and uploads each as a level-0
//! file with its manifest entry (and a snapshot now and then), as the upload thread does, while
//! another compacts the replica over and over. After every compaction the newest restore point
//! reaches at least what was uploaded before it started; at the end every kept restore point
//! restores exactly and `verify` finds nothing wrong.

mod compact_support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use compact_support::*;
use walrust::clock::{Clock, TestClock};
use walrust::compact::{compact, verify, CompactOptions};
use walrust::config::Retention;
use walrust::manifest;
use walrust::restore::{plan, Target};
use walrust::store::{FileInfo, Store, Times};

const TXNS: u64 = 600;

#[test]
fn compaction_racing_uploads_never_loses_a_restore_point() {
    let r = Rep::new("race", 512);
    let scratch = r.scratch();
    let clock = TestClock::new(T0);
    let retention = Retention {
        hourly: 1,
        ..Retention::default()
    };
    let opts = CompactOptions::new(retention).with_tmp_dir(scratch.clone());
    let uploaded = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let store: &dyn Store = &r.store;

    let mut model = Model::new(512);
    model.commit(&[1, 2, 3, 4], 4, T0);
    let e = write_file(store, &model, &scratch, 9, 1, 1, T0);
    manifest::update(store, &[e], &[]).unwrap();
    uploaded.store(1, Ordering::SeqCst);

    let started = std::time::Instant::now();
    let (model, (runs, conflicts)) = std::thread::scope(|s| {
        let compactor = s.spawn(|| {
            let (mut runs, mut conflicts) = (0u32, 0u32);
            while !done.load(Ordering::SeqCst) {
                let before = uploaded.load(Ordering::SeqCst);
                match compact(store, &opts, &clock, false) {
                    Ok(report) => assert!(report.latest_txid.is_some()),
                    // Losing the manifest's conditional write to the uploader too many times in
                    // a row is a retry-later error: nothing was removed.
                    Err(e) if e.to_string().contains("another writer changed it") => conflicts += 1,
                    Err(e) => panic!("compaction run {runs}: {e}"),
                }
                let reached = plan(store, Target::Latest)
                    .unwrap_or_else(|e| panic!("after compaction run {runs}: {e}"))
                    .txid
                    .get();
                assert!(
                    reached >= before,
                    "run {runs}: reached {reached} < {before}"
                );
                runs += 1;
                // Let the uploader get ahead (not a timing assumption: any interleaving is fine).
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            (runs, conflicts)
        });
        let uploader = s.spawn(|| {
            let mut m = model;
            let up_scratch = scratch.join("uploader");
            std::fs::create_dir_all(&up_scratch).unwrap();
            for i in 1..=TXNS {
                let at = clock.advance(15 * SEC);
                let commit = 4 + (i / 200) as u32;
                let t = m.commit(&[(i % 4) as u32 + 1], commit, at);
                let e = write_file(store, &m, &up_scratch, 0, t, t, at);
                manifest::update(store, &[e], &[]).unwrap();
                uploaded.store(t, Ordering::SeqCst);
                // A real uploader writes the manifest at most once per sync interval (1 s);
                // back-to-back rewrites would starve the compactor's conditional writes.
                std::thread::sleep(std::time::Duration::from_millis(10));
                if i % 66 == 0 {
                    let e = write_file(store, &m, &up_scratch, 9, 1, t, at);
                    manifest::update(store, &[e], &[]).unwrap();
                }
            }
            done.store(true, Ordering::SeqCst);
            m
        });
        let m = uploader.join().unwrap();
        (m, compactor.join().unwrap())
    });
    eprintln!(
        "{runs} compaction runs ({conflicts} lost the manifest to the uploader) raced {TXNS} \
         uploads ({:.1} s)",
        started.elapsed().as_secs_f64()
    );
    assert!(runs - conflicts >= 2, "the compactor ran {runs} times");

    clock.advance(10 * 60 * SEC);
    let report = compact(store, &opts, &clock, false).unwrap();
    let last = model.last();
    assert_eq!(report.latest_txid, Some(txid(last).to_string()));
    let v = verify(store).unwrap();
    assert!(v.ok, "{:?}", v.problems);
    // Merges written by a run that then lost the manifest stay unindexed (harmless: the
    // listing is the truth); nothing the manifest names is missing.
    assert!(v.manifest.missing.is_empty());

    // Every kept restore point: the snapshots, each level-0 file of the last hour, the newest.
    let files = store.list(None, Times::Listed).unwrap();
    let window = clock.now_ms() - 3_600_000;
    let points: Vec<&FileInfo> = files
        .iter()
        .filter(|f| f.key.level == 9 || (f.key.level == 0 && f.created_at_ms >= window))
        .collect();
    assert!(points.len() > 200, "{} restore points", points.len());
    for f in &points {
        let t = f.key.max_txid.get();
        check_restore(store, &model, &scratch, Target::Txid(txid(t)), t);
    }
    check_restore(store, &model, &scratch, Target::Latest, last);
    eprintln!("checked in {:.1} s", started.elapsed().as_secs_f64());
    // Storage stays bounded: bases move forward an hour at a time, so nothing older than an
    // hour before the window is left (the run spans two and a half hours).
    let stale = files
        .iter()
        .filter(|f| f.key.level < 9 && f.created_at_ms < window - 3_600_000)
        .count();
    assert_eq!(
        stale, 0,
        "{stale} files of levels 0-8 older than the window's last hour"
    );
    let per_level: Vec<usize> = (0..=9)
        .map(|l| files.iter().filter(|f| f.key.level == l).count())
        .collect();
    eprintln!("files left per level 0-9: {per_level:?}");
}
