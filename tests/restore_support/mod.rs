//! Builds local-directory replicas for restore tests: a model database goes through
//! transactions (growing, shrinking, growing again), and the replica gets snapshots,
//! incrementals and compactions of it, encoded with the LTX encoder, written through `FsStore`
//! and indexed in `manifest.json`. Restores are compared page by page with the model.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crate::store_suite::{key, TempDir};
use walrust::ltx::{DatabaseChecksum, Encoder, Header, FLAG_NO_CHECKSUM};
use walrust::manifest::{self, Entry};
use walrust::restore::{restore, temp_path, RestoreError, Target};
use walrust::store::{fs::FsStore, FileKey, Store, WriteMeta};
use walrust::types::lock_page;
use walrust::{Checksum, PageNo, Txid};

pub const T0: i64 = 1_795_862_996_123;

pub fn time_of(txid: u64) -> i64 {
    T0 + txid as i64 * 60_000
}

pub fn txid(n: u64) -> Txid {
    Txid::new(n).unwrap()
}

/// Page contents that do not compress, so sizes are realistic.
pub fn page_bytes(pgno: u32, txid: u64, page_size: u32) -> Vec<u8> {
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
pub struct Model {
    pub page_size: u32,
    pub states: BTreeMap<u64, BTreeMap<u32, Vec<u8>>>,
    pub commits: BTreeMap<u64, u32>,
    pub touched: BTreeMap<u64, Vec<u32>>,
}

impl Model {
    /// Runs `txns`: (pages written, database size after) for TXIDs 1, 2, ...
    pub fn run(page_size: u32, txns: &[(&[u32], u32)]) -> Model {
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
    pub fn page(&self, t: u64, p: u32) -> Vec<u8> {
        self.states[&t]
            .get(&p)
            .cloned()
            .unwrap_or_else(|| vec![0; self.page_size as usize])
    }

    pub fn checksum(&self, t: u64) -> Checksum {
        let mut c = DatabaseChecksum::new(self.page_size);
        for p in 1..=self.commits[&t] {
            c.toggle(PageNo::new(p).unwrap(), &self.page(t, p));
        }
        c.value()
    }

    /// The pages an LTX file for `min..=max` holds: every page for a snapshot, else those
    /// written in the range that are still in the database at `max`.
    pub fn file_pages(&self, min: u64, max: u64) -> Vec<u32> {
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
pub struct Replica {
    pub dir: TempDir,
    pub store: FsStore,
    pub model: Model,
}

impl Replica {
    pub fn new(name: &str, model: Model) -> Replica {
        let dir = TempDir::new(name);
        let store = FsStore::new(dir.path().join("replica")).unwrap();
        Replica { dir, store, model }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("replica")
    }

    pub fn out(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Encodes `level` `min..=max`; with `checksums`, the header carries database checksums.
    pub fn add(&self, level: u32, min: u64, max: u64, checksums: bool) -> FileKey {
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

    pub fn file_path(&self, k: &FileKey) -> PathBuf {
        self.root().join(self.store.layout().file_key(k))
    }

    /// Restores and commits, returning the TXID reached.
    pub fn restore_to(&self, out: &Path, target: Target) -> Result<Txid, RestoreError> {
        restore(&self.store, out, target)?.commit()
    }

    /// Asserts `out` is the model's database as of `t`, page by page.
    pub fn assert_db(&self, out: &Path, t: u64) {
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
pub fn ten_txns() -> Model {
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
pub fn standard_replica(name: &str, checksums: bool) -> Replica {
    let r = Replica::new(name, ten_txns());
    r.add(9, 1, 3, checksums);
    for (min, max) in [(4, 4), (5, 6), (7, 9), (10, 10)] {
        r.add(0, min, max, checksums);
    }
    r.add(1, 4, 9, checksums);
    r
}

pub fn assert_nothing_at(out: &Path) {
    assert!(!out.exists(), "{} exists", out.display());
    assert!(!temp_path(out).exists(), "the temp file was left behind");
}
