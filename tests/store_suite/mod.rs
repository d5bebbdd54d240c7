//! One test body for every `Store` implementation (Litestream's `RunWithReplicaClient` idea):
//! `run_all(&store)` takes a store over an empty replica and exercises the whole trait. Each
//! backend's test file (`store_fs.rs`, later `store_s3.rs`) calls it.
#![allow(dead_code)]

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use walrust::manifest::{self, Entry};
use walrust::store::{FileInfo, FileKey, Store, StoreError, Times, WriteMeta};
use walrust::Txid;

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "walrust-test-{name}-{}-{}",
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

pub fn key(level: u32, min: u64, max: u64) -> FileKey {
    FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap()
}

/// Writes `bytes` to a local file and stores it under `k`.
pub fn put(store: &dyn Store, scratch: &Path, k: FileKey, bytes: &[u8], ts: i64) -> FileInfo {
    let src = scratch.join("upload.ltx");
    std::fs::write(&src, bytes).unwrap();
    let meta = WriteMeta {
        timestamp_ms: ts,
        sha256: manifest::sha256_64(bytes),
    };
    store.write(&k, &src, &meta).unwrap()
}

fn read_all(store: &dyn Store, k: &FileKey, range: Option<std::ops::Range<u64>>) -> Vec<u8> {
    let mut v = Vec::new();
    store.read(k, range).unwrap().read_to_end(&mut v).unwrap();
    v
}

pub fn run_all(store: &dyn Store) {
    let scratch = TempDir::new("suite-scratch");
    lists_writes_and_reads(store, scratch.path());
    deletes_in_batches(store, scratch.path());
    manifest_writes_are_conditional(store);
    concurrent_manifest_updates_lose_nothing(store);
}

fn lists_writes_and_reads(store: &dyn Store, scratch: &Path) {
    assert!(store.list(None, Times::Listed).unwrap().is_empty());
    assert!(store.get_manifest().unwrap().is_none());

    let t0 = 1_795_862_996_123;
    let body: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    let a = put(store, scratch, key(9, 1, 3), &body, t0);
    assert_eq!((a.size, a.created_at_ms), (5000, t0));
    put(store, scratch, key(0, 4, 4), b"four", t0 + 1000);
    put(store, scratch, key(0, 5, 9), b"five to nine", t0 + 5000);
    put(store, scratch, key(1, 4, 9), b"compacted", t0 + 5000);

    let all = store.list(None, Times::Exact).unwrap();
    let keys: Vec<FileKey> = all.iter().map(|f| f.key).collect();
    assert_eq!(
        keys,
        [key(0, 4, 4), key(0, 5, 9), key(1, 4, 9), key(9, 1, 3)]
    );
    assert_eq!(all[1].size, 12);
    assert_eq!(
        all[1].created_at_ms,
        t0 + 5000,
        "created time is the LTX timestamp"
    );
    assert_eq!(all[3].created_at_ms, t0);
    let l0 = store.list(Some(0), Times::Listed).unwrap();
    assert_eq!(l0.len(), 2);
    assert!(store.list(Some(5), Times::Listed).unwrap().is_empty());

    assert_eq!(read_all(store, &key(9, 1, 3), None), body);
    assert_eq!(
        read_all(store, &key(9, 1, 3), Some(100..110)),
        &body[100..110]
    );
    assert_eq!(
        read_all(store, &key(9, 1, 3), Some(4990..6000)),
        &body[4990..]
    );
    assert!(read_all(store, &key(9, 1, 3), Some(7000..8000)).is_empty());

    // Overwriting a key replaces the whole file.
    put(store, scratch, key(0, 4, 4), b"FOUR!", t0 + 1000);
    assert_eq!(read_all(store, &key(0, 4, 4), None), b"FOUR!");

    match store.read(&key(0, 0x77, 0x78), None) {
        Err(StoreError::NotFound { what }) => assert!(what.contains("0000000000000077")),
        other => panic!("expected NotFound, got {:?}", other.map(|_| ())),
    }
}

fn deletes_in_batches(store: &dyn Store, _scratch: &Path) {
    store
        .delete(&[key(0, 4, 4), key(1, 4, 9), key(0, 100, 100)])
        .unwrap();
    let keys: Vec<FileKey> = store
        .list(None, Times::Listed)
        .unwrap()
        .iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(keys, [key(0, 5, 9), key(9, 1, 3)]);
    store.delete(&[key(0, 5, 9), key(9, 1, 3)]).unwrap();
    assert!(store.list(None, Times::Listed).unwrap().is_empty());
    store.delete(&[]).unwrap();
}

fn manifest_writes_are_conditional(store: &dyn Store) {
    let v1 = store
        .put_manifest(b"{\"version\":1,\"files\":[]}", None)
        .unwrap();
    assert!(matches!(
        store.put_manifest(b"{}", None),
        Err(StoreError::Conflict { .. })
    ));
    let got = store.get_manifest().unwrap().unwrap();
    assert_eq!(got.etag, v1);
    assert_eq!(got.body, b"{\"version\":1,\"files\":[]}");
    let v2 = store
        .put_manifest(b"{\"version\":1,\"files\":[] }", Some(&v1))
        .unwrap();
    assert_ne!(v1, v2);
    let e = store.put_manifest(b"{}", Some(&v1)).unwrap_err();
    assert!(matches!(e, StoreError::Conflict { .. }));
    assert!(e.to_string().contains("manifest.json"), "{e}");
    assert_eq!(store.get_manifest().unwrap().unwrap().etag, v2);
}

fn concurrent_manifest_updates_lose_nothing(store: &dyn Store) {
    const PER_THREAD: u64 = 25;
    std::thread::scope(|s| {
        for t in 0..2u64 {
            s.spawn(move || {
                for i in 0..PER_THREAD {
                    let n = 1000 + t * PER_THREAD + i;
                    let info = FileInfo {
                        key: key(0, n, n),
                        size: n,
                        created_at_ms: n as i64,
                    };
                    let e =
                        Entry::new(store.layout(), &info, manifest::sha256_64(&n.to_be_bytes()));
                    manifest::update(store, &[e], &[]).unwrap();
                }
            });
        }
    });
    let (m, _) = manifest::load(store).unwrap().unwrap();
    assert_eq!(m.files.len(), 2 * PER_THREAD as usize);

    // Removal goes through the same loop.
    let gone: Vec<FileKey> = (1000..1010).map(|n| key(0, n, n)).collect();
    manifest::update(store, &[], &gone).unwrap();
    let (m, _) = manifest::load(store).unwrap().unwrap();
    assert_eq!(m.files.len(), 2 * PER_THREAD as usize - 10);
    assert!(m.get(&key(0, 1000, 1000)).is_none());
    assert!(m.get(&key(0, 1010, 1010)).is_some());
}
