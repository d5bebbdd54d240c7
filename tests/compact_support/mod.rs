//! Builds replicas for the compaction tests: a model database whose page images follow from
//! (page number, TXID that wrote it), so its state at any TXID is cheap to keep; LTX files of any
//! level and range encoded from it with the encoder and written through `FsStore` with their
//! `manifest.json` entries; and a check that restores a target and compares every byte.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use walrust::ltx::{Encoder, Header};
use walrust::manifest::{self, Entry};
use walrust::restore::{self, Target};
use walrust::store::{fs::FsStore, FileInfo, FileKey, Store, WriteMeta};
use walrust::types::lock_page;
use walrust::{Checksum, PageNo, Txid};

/// 2026-11-28T00:00:00Z, a Saturday.
pub const T0: i64 = 1_795_824_000_000;
pub const SEC: i64 = 1000;
pub const HOUR: i64 = 3_600_000;
pub const DAY: i64 = 24 * HOUR;

pub fn txid(n: u64) -> Txid {
    Txid::new(n).unwrap()
}

pub fn key(level: u32, min: u64, max: u64) -> FileKey {
    FileKey::new(level, txid(min), txid(max)).unwrap()
}

/// Where test directories go: `WALRUST_TEST_TMP`, else `/dev/shm` when it is there (tens of
/// thousands of fsyncs are not what these tests are about), else the system temp dir.
pub fn test_tmp() -> PathBuf {
    if let Some(p) = std::env::var_os("WALRUST_TEST_TMP") {
        return PathBuf::from(p);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// A directory under `test_tmp()`, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let p = test_tmp().join(format!(
            "walrust-ctest-{name}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Page contents that do not compress, distinct per (page, writer).
pub fn page_bytes(pgno: u32, writer: u64, page_size: u32) -> Vec<u8> {
    let mut x = ((pgno as u64) << 40) ^ writer ^ 0x9e37_79b9_7f4a_7c15;
    (0..page_size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A model database: after each TXID, its size and which TXID last wrote each page.
pub struct Model {
    pub page_size: u32,
    /// Indexed by TXID; entry 0 is the empty database.
    pub commits: Vec<u32>,
    pub versions: Vec<BTreeMap<u32, u64>>,
    pub touched: Vec<Vec<u32>>,
    pub times: Vec<i64>,
}

impl Model {
    pub fn new(page_size: u32) -> Model {
        Model {
            page_size,
            commits: vec![0],
            versions: vec![BTreeMap::new()],
            touched: vec![Vec::new()],
            times: vec![0],
        }
    }

    pub fn last(&self) -> u64 {
        self.commits.len() as u64 - 1
    }

    /// Commits a transaction writing `pages` and leaving `commit` pages; as SQLite does, a
    /// database that grows writes its new pages. Returns the TXID.
    pub fn commit(&mut self, pages: &[u32], commit: u32, time: i64) -> u64 {
        let t = self.commits.len() as u64;
        let prev = *self.commits.last().unwrap();
        let lock = lock_page(self.page_size);
        let mut ps: Vec<u32> = pages.to_vec();
        if commit > prev {
            ps.extend(prev + 1..=commit);
        }
        ps.retain(|&p| p <= commit && p != lock);
        ps.sort();
        ps.dedup();
        let mut v = self.versions.last().unwrap().clone();
        v.retain(|&p, _| p <= commit);
        for &p in &ps {
            v.insert(p, t);
        }
        self.commits.push(commit);
        self.versions.push(v);
        self.touched.push(ps);
        self.times.push(time);
        t
    }

    pub fn page(&self, t: u64, p: u32) -> Vec<u8> {
        match self.versions[t as usize].get(&p) {
            Some(&w) => page_bytes(p, w, self.page_size),
            None => vec![0; self.page_size as usize],
        }
    }

    /// The pages an LTX file for `min..=max` holds: all of them for a snapshot, else those
    /// written in the range that are still in the database at `max`.
    pub fn file_pages(&self, min: u64, max: u64) -> Vec<u32> {
        let commit = self.commits[max as usize];
        let lock = lock_page(self.page_size);
        if min == 1 {
            return (1..=commit).filter(|&p| p != lock).collect();
        }
        let mut ps: Vec<u32> = (min..=max)
            .flat_map(|t| self.touched[t as usize].iter().copied())
            .filter(|&p| p <= commit)
            .collect();
        ps.sort();
        ps.dedup();
        ps
    }

    /// The database file as of `t`.
    pub fn db_bytes(&self, t: u64) -> Vec<u8> {
        let mut out = Vec::new();
        for p in 1..=self.commits[t as usize] {
            out.extend(self.page(t, p));
        }
        out
    }
}

/// Encodes `level` `min..=max` from the model, stamped `time`, writes it to `store` and returns
/// its manifest entry (not yet in the manifest).
pub fn write_file(
    store: &dyn Store,
    model: &Model,
    scratch: &Path,
    level: u32,
    min: u64,
    max: u64,
    time: i64,
) -> Entry {
    let h = Header::new(
        model.page_size,
        model.commits[max as usize],
        txid(min),
        txid(max),
        time,
    );
    let src = scratch.join(format!("encode-{min}-{max}.ltx"));
    let mut enc = Encoder::new(BufWriter::new(File::create(&src).unwrap()), h).unwrap();
    for p in model.file_pages(min, max) {
        enc.write_page(PageNo::new(p).unwrap(), &model.page(max, p))
            .unwrap();
    }
    enc.finish(Checksum(0)).unwrap();
    let (sha, _) = manifest::sha256_64_file(&src).unwrap();
    let meta = WriteMeta {
        timestamp_ms: time,
        sha256: sha.clone(),
    };
    let info = store.write(&key(level, min, max), &src, &meta).unwrap();
    let _ = std::fs::remove_file(&src); // a store may have moved it into place
    Entry::new(store.layout(), &info, sha)
}

/// A replica in a temp directory, with its model.
pub struct Rep {
    pub dir: TempDir,
    pub store: FsStore,
    pub model: Model,
    pending: Vec<Entry>,
}

impl Rep {
    pub fn new(name: &str, page_size: u32) -> Rep {
        let dir = TempDir::new(name);
        std::fs::create_dir_all(dir.path().join("scratch")).unwrap();
        let store = FsStore::new(dir.path().join("replica")).unwrap();
        Rep {
            dir,
            store,
            model: Model::new(page_size),
            pending: Vec::new(),
        }
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("replica")
    }

    pub fn scratch(&self) -> PathBuf {
        self.dir.path().join("scratch")
    }

    /// Writes a file; its manifest entry waits for `flush` (one manifest write for many files).
    pub fn put(&mut self, level: u32, min: u64, max: u64, time: i64) {
        let e = write_file(
            &self.store,
            &self.model,
            &self.scratch(),
            level,
            min,
            max,
            time,
        );
        self.pending.push(e);
    }

    pub fn flush(&mut self) {
        manifest::update(&self.store, &std::mem::take(&mut self.pending), &[]).unwrap();
    }

    /// Commits a transaction at `time` and uploads it as one level-0 file.
    pub fn txn(&mut self, pages: &[u32], commit: u32, time: i64) -> u64 {
        let t = self.model.commit(pages, commit, time);
        self.put(0, t, t, time);
        t
    }

    /// A snapshot of the newest state, stamped `time`.
    pub fn snapshot(&mut self, time: i64) {
        let t = self.model.last();
        self.put(9, 1, t, time);
    }
}

/// Restores `target` from `store` and checks that it reaches `want` and equals the model's
/// database there, byte for byte.
pub fn check_restore(store: &dyn Store, model: &Model, scratch: &Path, target: Target, want: u64) {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let out = scratch.join(format!(
        "restored-{}.db",
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let got = restore::restore(store, &out, target)
        .unwrap_or_else(|e| panic!("restoring {target}: {e}"))
        .commit()
        .unwrap();
    assert_eq!(got, txid(want), "restoring {target}");
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        bytes == model.db_bytes(want),
        "restoring {target}: the database differs from the model at TXID {want}"
    );
    std::fs::remove_file(&out).unwrap();
}

/// The files of one level.
pub fn level_files(store: &dyn Store, level: u32) -> Vec<FileInfo> {
    store
        .list(Some(level), walrust::store::Times::Listed)
        .unwrap()
}
