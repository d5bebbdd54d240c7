//! Level 0 never crosses a `Resync` (changes walrust did not see), wherever the uploader reads
//! it. A source may append to the shadow log while a snapshot streams (`walrust watch` polls
//! the WAL meanwhile): the records the uploader reads right after the snapshot go through the
//! same rule as any other, so a `Resync` among them brings a snapshot with a fresh TXID before
//! level 0 goes on. Before, they were taken in unchecked: level 0 either skipped the `Resync`'s
//! TXID (no restore point past it: seen in CI as "TXID gap in level 0: 1f8-28d then 28f-2f2")
//! or, when later commits were read with it, one level-0 file spanned it, and a restore to
//! a TXID inside that file returned pages of two different histories.
//!
//! The source is a stand-in for the database (it writes records and snapshot pages, nothing
//! of SQLite): what is tested is the uploader's reading of the log, one module.

mod compact_support;

use compact_support::{level_files, TempDir};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use walrust::capture::commit;
use walrust::config::Settings;
use walrust::history::Owner;
use walrust::manifest::Expect;
use walrust::replication::Replication;
use walrust::shadow::log::Appender;
use walrust::shadow::{Header, Kind, ShadowDir, State, WalPos};
use walrust::store::SNAPSHOT_LEVEL;
use walrust::upload::{self, snapshot, Source};
use walrust::wal::Salts;
use walrust::Txid;

const PAGE: u32 = 4096;

/// What a source appends to the log: a commit, or a `Resync`.
#[derive(Clone, Copy)]
enum Rec {
    Txn,
    Resync,
}

struct Fake {
    log: Mutex<Appender>,
    /// Appended by the next snapshot's catch-up, before it fixes its point (so it covers them).
    before_point: Mutex<Vec<Rec>>,
    /// Appended right after the next snapshot streamed, before the uploader reads again.
    after_snapshot: Mutex<Vec<Rec>>,
    /// TXIDs of the markers level 0 must not cross without a snapshot at or past them.
    barriers: Mutex<Vec<u64>>,
}

impl Fake {
    fn append(&self, recs: &[Rec]) {
        let mut app = self.log.lock().unwrap();
        for r in recs {
            app.refresh().unwrap();
            let txid = app.next_txid();
            let pos = WalPos::At {
                salts: Salts(1, 2),
                frame: txid as u32,
            };
            match r {
                Rec::Txn => {
                    let h = Header {
                        kind: Kind::Txn,
                        txid,
                        page_size: PAGE,
                        commit: 1,
                        n_pages: 1,
                        pos,
                        timestamp_ms: walrust::clock::now_ms(),
                        fingerprint: (0, 0),
                        continued: false,
                    };
                    app.append(h, &mut |_, page| {
                        page.fill(txid as u8);
                        Ok(1)
                    })
                    .unwrap();
                }
                Rec::Resync => {
                    commit::append_marker(&mut app, Kind::Resync, txid, pos, (0, 0)).unwrap();
                    self.barriers.lock().unwrap().push(txid);
                }
            }
        }
    }
}

impl Source for Fake {
    fn in_use(&self) -> bool {
        true
    }

    fn catch_up(&self) -> bool {
        true
    }

    fn snapshot(
        &self,
        repl: &Replication,
        fresh_txid_above: Option<u64>,
        owner: Option<Owner>,
    ) -> Result<snapshot::Taken, snapshot::Error> {
        let caught_up = std::mem::take(&mut *self.before_point.lock().unwrap());
        self.append(&caught_up);
        let txid = {
            let mut app = self.log.lock().unwrap();
            let min = fresh_txid_above.map_or(1, |n| n + 1);
            commit::mark_at_least(&mut app, Kind::Snapshot, min, PAGE, 1)
                .map_err(|e| e.to_string())?;
            app.last().unwrap().txid
        };
        let expect = owner.map_or(Expect::Any, Expect::Owner);
        let taken = snapshot::stream_pages(
            repl,
            expect,
            Txid::new(txid).unwrap(),
            (PAGE, 1),
            &mut |_, buf| {
                buf.fill(txid as u8);
                Ok(())
            },
            &mut || Ok(()),
        )?;
        let then = std::mem::take(&mut *self.after_snapshot.lock().unwrap());
        self.append(&then);
        Ok(taken)
    }
}

struct Setup {
    _dir: TempDir,
    repl: Arc<Replication>,
    fake: Arc<Fake>,
}

/// A new database with two commits in its log, and its uploader started: the replica's first
/// snapshot is at TXID 2.
fn setup(name: &str, after_first_snapshot: Vec<Rec>) -> Setup {
    let dir = TempDir::new(name);
    let (repl, fake) = start(&dir, &[Rec::Txn, Rec::Txn], after_first_snapshot, true);
    Setup {
        _dir: dir,
        repl,
        fake,
    }
}

/// A process's start: its source and uploader on the directory's database and shadow log.
fn start(
    dir: &TempDir,
    initial: &[Rec],
    after_first_snapshot: Vec<Rec>,
    first: bool,
) -> (Arc<Replication>, Arc<Fake>) {
    let db = dir.path().join("app.db");
    std::fs::write(&db, b"").unwrap();
    let url = format!("file://{}", dir.path().join("replica").display());
    let store = walrust::store::open(&url).unwrap();
    let shadow = ShadowDir::create(dir.path().join("app.db-walrust")).unwrap();
    if first {
        let state = State {
            version: 1,
            replica: store.describe(),
            ..State::default()
        };
        shadow.write_state(&state).unwrap();
    }
    let settings = Settings {
        sync_interval_ms: 20,
        ..Settings::default()
    };
    let fake = Arc::new(Fake {
        log: Mutex::new(Appender::new(shadow.log_dir())),
        before_point: Mutex::new(Vec::new()),
        after_snapshot: Mutex::new(after_first_snapshot),
        barriers: Mutex::new(Vec::new()),
    });
    fake.append(initial);
    let repl = Arc::new(Replication::new(db, shadow, store, settings));
    let weak: std::sync::Weak<dyn Source> = Arc::downgrade(&fake) as _;
    upload::register_source(repl.clone(), weak);
    (repl, fake)
}

/// Every level-0 file goes on from the one before it or from a snapshot, and none holds a
/// barrier's TXID (a `Resync`, an orphan snapshot marker) or goes on across one without a
/// snapshot at or past it.
fn assert_level0_respects(s: &Setup) {
    let snapshots = snapshot_txids(s);
    let level0: Vec<(u64, u64)> = level_files(s.repl.store.as_ref(), 0)
        .iter()
        .map(|f| (f.key.min_txid.get(), f.key.max_txid.get()))
        .collect();
    let barriers = s.fake.barriers.lock().unwrap().clone();
    let mut prev = 0;
    for &(min, max) in &level0 {
        assert!(
            min == prev + 1 || snapshots.contains(&(min - 1)),
            "level 0 goes from {prev} to {min}-{max} (snapshots {snapshots:?}, barriers {barriers:?})"
        );
        for &r in &barriers {
            assert!(
                !(min..=max).contains(&r),
                "level-0 file {min}-{max} spans the marker at {r} (snapshots {snapshots:?})"
            );
        }
        prev = max;
    }
    for &r in &barriers {
        assert!(
            snapshots.iter().any(|&t| t >= r),
            "no snapshot at or past the marker at {r} (snapshots {snapshots:?}, level 0 {level0:?})"
        );
    }
}

fn snapshot_txids(s: &Setup) -> Vec<u64> {
    level_files(s.repl.store.as_ref(), SNAPSHOT_LEVEL)
        .iter()
        .map(|f| f.key.max_txid.get())
        .collect()
}

/// A replica with a snapshot at TXID 2 and level 0 from 3 to 3; returns the uploaded TXID.
fn snapshot_then_level0(name: &str) -> (Setup, u64) {
    let s = setup(name, Vec::new());
    sync(&s);
    s.fake.append(&[Rec::Txn]);
    let uploaded = sync(&s);
    assert_eq!((snapshot_txids(&s), uploaded), (vec![2], 3));
    (s, uploaded)
}

fn sync(s: &Setup) -> u64 {
    let last = s.fake.log.lock().unwrap().last().unwrap().txid;
    upload::sync(&s.repl, last, Duration::from_secs(30)).unwrap()
}

#[test]
fn a_resync_appended_while_a_snapshot_streams_brings_a_fresh_snapshot() {
    // Commits, a Resync and more commits land while the replica's first snapshot streams:
    // the uploader reads them all at once after it.
    use Rec::*;
    let s = setup("resync-after", vec![Txn, Txn, Txn, Resync, Txn, Txn, Txn]);
    sync(&s);
    s.fake.append(&[Txn, Txn]);
    let uploaded = sync(&s);
    assert_level0_respects(&s);
    assert_eq!(uploaded, s.fake.log.lock().unwrap().last().unwrap().txid);
}

#[test]
fn a_resync_read_last_after_a_snapshot_brings_a_fresh_snapshot() {
    // The log ends with the Resync when the uploader reads after the snapshot; the commits
    // after it come later (CI's case: level 0 went on past the Resync's TXID).
    use Rec::*;
    let s = setup("resync-last", vec![Txn, Txn, Resync]);
    sync(&s);
    s.fake.append(&[Txn, Txn, Txn]);
    sync(&s);
    s.fake.append(&[Txn]);
    sync(&s);
    assert_level0_respects(&s);
}

#[test]
fn a_resync_a_requested_snapshot_covers_ends_level0_below_it() {
    // `walrust_snapshot()` (no fresh TXID): its catch-up appends commits, a Resync and more
    // commits before it fixes its point. Level 0 goes on after the snapshot, not across the
    // Resync, and no second snapshot is needed.
    use Rec::*;
    let (s, _) = snapshot_then_level0("resync-covered");
    *s.fake.before_point.lock().unwrap() = vec![Txn, Resync, Txn];
    let taken = upload::snapshot(&s.repl, Duration::from_secs(30)).unwrap();
    s.fake.append(&[Txn, Txn]);
    sync(&s);
    assert_level0_respects(&s);
    assert_eq!(
        snapshot_txids(&s),
        vec![2, taken],
        "one snapshot at the start, the one asked for"
    );
}

#[test]
fn a_snapshot_marker_whose_snapshot_never_reached_the_replica_brings_one() {
    // A process appended a snapshot's marker (a new TXID) and died before the snapshot was
    // uploaded; the next one finds the marker in the log, past what the replica has. No
    // level-0 file carries its TXID: a snapshot at or past it must come before level 0 goes on.
    use Rec::*;
    let (s, uploaded) = snapshot_then_level0("orphan-marker");
    let shadow = s.repl.shadow.clone();
    drop(s.fake);
    drop(s.repl);
    // The uploader lets its lock go once its source is gone.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while shadow.try_lock_uploader().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the uploader kept its lock"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let marker = {
        let mut app = Appender::new(shadow.log_dir());
        app.refresh().unwrap();
        commit::mark_at_least(&mut app, Kind::Snapshot, uploaded + 1, PAGE, 1).unwrap();
        app.last().unwrap().txid
    };
    let (repl, fake) = start(&s._dir, &[], Vec::new(), false);
    fake.barriers.lock().unwrap().push(marker);
    fake.append(&[Txn, Txn]);
    let after = Setup {
        _dir: s._dir,
        repl,
        fake,
    };
    sync(&after);
    assert_level0_respects(&after);
}
