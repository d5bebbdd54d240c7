//! Restore from a local-directory replica built with the LTX encoder: a model database goes
//! through ten transactions (growing, shrinking, growing again), and the replica holds a
//! snapshot, incrementals and a level-1 compaction of them. Every restore is compared page by
//! page with the model's state at the TXID restore says it reached.

mod store_suite;

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use store_suite::{key, TempDir};
use walrust::ltx::{DatabaseChecksum, Encoder, Header, FLAG_NO_CHECKSUM};
use walrust::manifest::{self, Entry};
use walrust::restore::{restore, temp_path, ErrorKind, RestoreError, Target};
use walrust::store::{fs::FsStore, FileKey, Store, WriteMeta};
use walrust::types::lock_page;
use walrust::{Checksum, PageNo, Txid};

const T0: i64 = 1_795_862_996_123;

fn time_of(txid: u64) -> i64 {
    T0 + txid as i64 * 60_000
}

fn txid(n: u64) -> Txid {
    Txid::new(n).unwrap()
}

/// Page contents that do not compress, so sizes are realistic.
fn page_bytes(pgno: u32, txid: u64, page_size: u32) -> Vec<u8> {
    let mut x = (pgno as u64) << 32 ^ txid ^ 0x9e37_79b9_7f4a_7c15;
    (0..page_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A model database: its pages after every transaction, and what each transaction touched.
struct Model {
    page_size: u32,
    states: BTreeMap<u64, BTreeMap<u32, Vec<u8>>>,
    commits: BTreeMap<u64, u32>,
    touched: BTreeMap<u64, Vec<u32>>,
}

impl Model {
    /// Runs `txns`: (pages written, database size after) for TXIDs 1, 2, ...
    fn run(page_size: u32, txns: &[(&[u32], u32)]) -> Model {
        let mut m = Model {
            page_size,
            states: BTreeMap::new(),
            commits: BTreeMap::new(),
            touched: BTreeMap::new(),
        };
        let mut state: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
        for (i, (pages, commit)) in txns.iter().enumerate() {
            let t = i as u64 + 1;
            state.retain(|&p, _| p <= *commit);
            for &p in pages.iter() {
                state.insert(p, page_bytes(p, t, page_size));
            }
            m.states.insert(t, state.clone());
            m.commits.insert(t, *commit);
            m.touched.insert(t, pages.to_vec());
        }
        m
    }

    /// The page as of `t` (zeros where never written).
    fn page(&self, t: u64, p: u32) -> Vec<u8> {
        self.states[&t]
            .get(&p)
            .cloned()
            .unwrap_or_else(|| vec![0; self.page_size as usize])
    }

    fn checksum(&self, t: u64) -> Checksum {
        let mut c = DatabaseChecksum::new(self.page_size);
        for p in 1..=self.commits[&t] {
            c.toggle(PageNo::new(p).unwrap(), &self.page(t, p));
        }
        c.value()
    }

    /// The pages an LTX file for `min..=max` holds: every page for a snapshot, else those
    /// written in the range that are still in the database at `max`.
    fn file_pages(&self, min: u64, max: u64) -> Vec<u32> {
        let commit = self.commits[&max];
        let lock = lock_page(self.page_size);
        if min == 1 {
            return (1..=commit).filter(|&p| p != lock).collect();
        }
        let mut ps: Vec<u32> = (min..=max)
            .flat_map(|t| self.touched[&t].iter().copied())
            .filter(|&p| p <= commit)
            .collect();
        ps.sort();
        ps.dedup();
        ps
    }
}

/// A replica under construction, with a manifest, in a temp directory.
struct Replica {
    dir: TempDir,
    store: FsStore,
    model: Model,
}

impl Replica {
    fn new(name: &str, model: Model) -> Replica {
        let dir = TempDir::new(name);
        let store = FsStore::new(dir.path().join("replica")).unwrap();
        Replica { dir, store, model }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("replica")
    }

    fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Encodes `level` `min..=max`; with `checksums`, the header carries database checksums.
    fn add(&self, level: u32, min: u64, max: u64, checksums: bool) -> FileKey {
        let m = &self.model;
        let mut h = Header::new(
            m.page_size,
            m.commits[&max],
            txid(min),
            txid(max),
            time_of(max),
        );
        if checksums {
            h.flags &= !FLAG_NO_CHECKSUM;
            if min > 1 {
                h.pre_apply_checksum = m.checksum(min - 1);
            }
        }
        let src = self.dir.path().join("encode.ltx");
        let mut enc = Encoder::new(File::create(&src).unwrap(), h).unwrap();
        for p in m.file_pages(min, max) {
            enc.write_page(PageNo::new(p).unwrap(), &m.page(max, p))
                .unwrap();
        }
        let post = if checksums {
            m.checksum(max)
        } else {
            Checksum(0)
        };
        enc.finish(post).unwrap();

        let k = key(level, min, max);
        let (sha, _) = manifest::sha256_64_file(&src).unwrap();
        let meta = WriteMeta {
            timestamp_ms: time_of(max),
            sha256: sha.clone(),
        };
        let info = self.store.write(&k, &src, &meta).unwrap();
        manifest::update(
            &self.store,
            &[Entry::new(self.store.layout(), &info, sha)],
            &[],
        )
        .unwrap();
        k
    }

    fn file_path(&self, k: &FileKey) -> PathBuf {
        self.root().join(self.store.layout().file_key(k))
    }

    /// Restores and commits, returning the TXID reached.
    fn restore_to(&self, out: &Path, target: Target) -> Result<Txid, RestoreError> {
        restore(&self.store, out, target)?.commit()
    }

    /// Asserts `out` is the model's database as of `t`, page by page.
    fn assert_db(&self, out: &Path, t: u64) {
        let m = &self.model;
        let bytes = std::fs::read(out).unwrap();
        let ps = m.page_size as usize;
        assert_eq!(
            bytes.len(),
            m.commits[&t] as usize * ps,
            "database size at TXID {t}"
        );
        for (i, page) in bytes.chunks(ps).enumerate() {
            let p = i as u32 + 1;
            assert!(
                page == m.page(t, p).as_slice(),
                "page {p} differs from TXID {t}"
            );
        }
    }
}

/// Ten transactions: grow to 7 pages, shrink to 4 at TXID 7, grow to 6 again.
fn ten_txns() -> Model {
    Model::run(
        4096,
        &[
            (&[1, 2, 3, 4], 4),
            (&[2, 5], 5),
            (&[1], 5),
            (&[3], 5),
            (&[6, 7], 7),
            (&[1], 7),
            (&[2], 4),
            (&[4], 4),
            (&[5, 6], 6),
            (&[1], 6),
        ],
    )
}

/// Snapshot 1-3, incrementals 4, 5-6, 7-9, 10, and a level-1 compaction 4-9.
fn standard_replica(name: &str, checksums: bool) -> Replica {
    let r = Replica::new(name, ten_txns());
    r.add(9, 1, 3, checksums);
    for (min, max) in [(4, 4), (5, 6), (7, 9), (10, 10)] {
        r.add(0, min, max, checksums);
    }
    r.add(1, 4, 9, checksums);
    r
}

fn assert_nothing_at(out: &Path) {
    assert!(!out.exists(), "{} exists", out.display());
    assert!(!temp_path(out).exists(), "the temp file was left behind");
}

#[test]
fn restores_latest_by_txid_and_by_time() {
    let r = standard_replica("restore-targets", false);

    let out = r.out("latest.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(10));
    r.assert_db(&out, 10);
    assert!(!temp_path(&out).exists());

    // TXID targets stop at the newest restore point at or before them.
    for (target, reached) in [
        (3, 3),
        (4, 4),
        (5, 4),
        (6, 6),
        (8, 6),
        (9, 9),
        (10, 10),
        (99, 10),
    ] {
        let out = r.out(&format!("txid-{target}.db"));
        assert_eq!(
            r.restore_to(&out, Target::Txid(txid(target))).unwrap(),
            txid(reached)
        );
        r.assert_db(&out, reached);
    }

    // Time targets take restore points committed at or before them.
    for (at, reached) in [
        (time_of(9), 9),
        (time_of(9) - 1, 6),
        (time_of(3), 3),
        (time_of(10) + 86_400_000, 10),
    ] {
        let out = r.out(&format!("time-{at}.db"));
        let tmp = restore(&r.store, &out, Target::Time(at)).unwrap();
        assert_eq!(tmp.txid(), txid(reached));
        assert_eq!(tmp.timestamp_ms(), time_of(reached));
        assert_eq!(tmp.page_size(), 4096);
        tmp.commit().unwrap();
        r.assert_db(&out, reached);
    }

    let e = r
        .restore_to(&r.out("early.db"), Target::Time(time_of(3) - 1))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NothingToRestore);
    assert!(
        e.to_string().starts_with("walrust: nothing to restore: "),
        "{e}"
    );
    let e = r
        .restore_to(&r.out("early.db"), Target::Txid(txid(2)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NothingToRestore);
    assert_nothing_at(&r.out("early.db"));
}

#[test]
fn verifies_database_checksums_when_files_carry_them() {
    let r = standard_replica("restore-checksums", true);
    let out = r.out("latest.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(10));
    r.assert_db(&out, 10);
    let out = r.out("six.db");
    assert_eq!(r.restore_to(&out, Target::Txid(txid(8))).unwrap(), txid(6));
    r.assert_db(&out, 6);

    // An incremental from another history: valid on its own, wrong for this chain.
    let other = Replica::new("restore-checksums-other", {
        let mut m = ten_txns();
        m.states.get_mut(&3).unwrap().insert(1, vec![7; 4096]);
        m
    });
    let k = other.add(0, 4, 4, true);
    std::fs::copy(other.file_path(&k), r.file_path(&k)).unwrap();
    r.store.delete(&[key(1, 4, 9)]).unwrap();
    manifest::update(&r.store, &[], &[key(1, 4, 9), k]).unwrap();
    let out = r.out("other.db");
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("another history"), "{e}");
    assert_nothing_at(&out);
}

#[test]
fn a_flipped_byte_is_an_integrity_error_and_leaves_nothing() {
    let r = standard_replica("restore-flip", false);
    let k = key(0, 10, 10);
    let path = r.file_path(&k);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let out = r.out("flipped.db");
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert_eq!(e.kind().exit_code(), 5);
    assert!(e.to_string().starts_with("walrust: integrity error"), "{e}");
    assert!(
        e.to_string()
            .contains("000000000000000a-000000000000000a.ltx"),
        "names the file: {e}"
    );
    assert_nothing_at(&out);

    // The damage is after TXID 9: restoring up to there still works.
    assert_eq!(r.restore_to(&out, Target::Txid(txid(9))).unwrap(), txid(9));
    r.assert_db(&out, 9);
}

#[test]
fn a_manifest_hash_mismatch_is_an_integrity_error() {
    let r = standard_replica("restore-manifest-sha", false);
    let (m, _) = manifest::load(&r.store).unwrap().unwrap();
    let mut e = m.get(&key(9, 1, 3)).unwrap().clone();
    e.sha256 = "0123456789abcdef".into();
    manifest::update(&r.store, &[e], &[]).unwrap();

    let out = r.out("sha.db");
    let err = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(
        err.to_string()
            .contains("manifest.json says 0123456789abcdef"),
        "{err}"
    );
    assert_nothing_at(&out);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let r = standard_replica("restore-missing", false);
    // Deleted behind walrust's back: the manifest still names it.
    r.store.delete(&[key(0, 5, 6), key(1, 4, 9)]).unwrap();
    let out = r.out("missing.db");
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(
        e.to_string()
            .contains("manifest.json names ltx/0/0000000000000005"),
        "{e}"
    );
    assert_nothing_at(&out);

    // Without a manifest entry, the hole in the TXIDs is what gives it away.
    manifest::update(&r.store, &[], &[key(0, 5, 6), key(1, 4, 9)]).unwrap();
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(e.to_string().contains("has a gap"), "{e}");
    assert!(e.to_string().contains("reach TXID 0000000000000004"), "{e}");
    assert_nothing_at(&out);
    assert_eq!(r.restore_to(&out, Target::Txid(txid(4))).unwrap(), txid(4));
}

#[test]
fn refuses_existing_outputs_and_empty_replicas() {
    let r = standard_replica("restore-refuse", false);
    let out = r.out("exists.db");
    std::fs::write(&out, b"precious").unwrap();
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    let out = r.out("busy.db");
    std::fs::write(temp_path(&out), b"other restore").unwrap();
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(std::fs::read(temp_path(&out)).unwrap(), b"other restore");

    let e = r
        .restore_to(&r.out("no/such/dir/x.db"), Target::Latest)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);

    for url in [
        r.dir.path().join("empty").display().to_string(),
        r.dir.path().join("never-created").display().to_string(),
    ] {
        std::fs::create_dir_all(r.dir.path().join("empty")).unwrap();
        let store = walrust::store::open(&url).unwrap();
        let e = restore(store.as_ref(), &r.out("e.db"), Target::Latest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NothingToRestore);
        assert_eq!(e.kind().exit_code(), 3);
        assert_nothing_at(&r.out("e.db"));
    }
}

#[test]
fn the_temp_file_is_removed_unless_committed() {
    let r = standard_replica("restore-guard", false);
    let out = r.out("guard.db");
    let tmp = restore(&r.store, &out, Target::Latest).unwrap();
    assert_eq!(tmp.path(), temp_path(&out));
    assert!(tmp.path().exists());
    assert!(!out.exists());
    drop(tmp);
    assert_nothing_at(&out);

    let tmp = restore(&r.store, &out, Target::Latest).unwrap();
    std::fs::write(&out, b"appeared meanwhile").unwrap();
    let e = tmp.commit().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(std::fs::read(&out).unwrap(), b"appeared meanwhile");
    assert!(!temp_path(&out).exists());
}

#[test]
fn streams_large_files_and_prefetches_many_small_ones() {
    // A 6 MiB snapshot (streamed, not prefetched) and 40 small incrementals (prefetched).
    let mut txns: Vec<(Vec<u32>, u32)> = vec![((1..=1536).collect(), 1536)];
    for t in 2..=41u32 {
        txns.push((vec![t, 1536 + t], 1536 + t));
    }
    let refs: Vec<(&[u32], u32)> = txns.iter().map(|(p, c)| (p.as_slice(), *c)).collect();
    let r = Replica::new("restore-large", Model::run(4096, &refs));
    r.add(9, 1, 1, false);
    for t in 2..=41 {
        r.add(0, t, t, false);
    }
    let out = r.out("large.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(41));
    r.assert_db(&out, 41);
}

#[test]
fn the_lock_page_stays_zero_past_one_gibibyte() {
    // 64 KiB pages: the lock page is 16385. The temp file is sparse, so this is cheap.
    let ps = 65536;
    let lock = lock_page(ps);
    let r = Replica::new(
        "restore-lock-page",
        Model::run(ps, &[(&[1, 2], 2), (&[2, lock - 1, lock + 1], lock + 1)]),
    );
    r.add(9, 1, 1, false);
    r.add(0, 2, 2, false);
    let out = r.out("big.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(2));
    let f = File::open(&out).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (lock as u64 + 1) * ps as u64);
    use std::os::unix::fs::FileExt;
    let mut page = vec![0u8; ps as usize];
    for p in [1, 2, 3, lock - 1, lock, lock + 1] {
        f.read_exact_at(&mut page, (p as u64 - 1) * ps as u64)
            .unwrap();
        assert!(page == r.model.page(2, p), "page {p}");
    }
}
