//! Manifest upkeep as a replica ages (issue 15, item 4): bytes written for `manifest.json` and
//! its parts per hour, on day 1 and on day 30 of a simulated clock, beside the LTX bytes of the
//! same hour.
//!
//! The workload is the uploader's at one level-0 batch per second: every 10 s the manifest is
//! updated with the ten new entries (`manifest::update`, as the upload thread does), a
//! snapshot entry every hour, no compaction (walrust's default). The store is an in-memory
//! `Store` that counts the bytes of every write; nothing but the manifest code is exercised.
//!
//!     cargo run --release --example manifest_upkeep [DAYS] [LTX_BYTES_PER_BATCH]
//!
//! LTX_BYTES_PER_BATCH (default 4,300: one 4 KiB page and the LTX header and trailer, a
//! one-row transaction per batch) only scales the ratio printed.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use walrust::manifest::{self, Entry};
use walrust::store::{
    ETag, FileInfo, FileKey, FileReader, Layout, ManifestObject, Store, StoreError, Times,
    WriteMeta,
};
use walrust::types::Txid;

#[derive(Default)]
struct Memory {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    version: Mutex<u64>,
    written: Mutex<u64>,
}

impl Memory {
    fn take_written(&self) -> u64 {
        std::mem::take(&mut *self.written.lock().unwrap())
    }

    fn count(&self, n: usize) {
        *self.written.lock().unwrap() += n as u64;
    }
}

impl Store for Memory {
    fn describe(&self) -> String {
        "memory://bench".into()
    }
    fn layout(&self) -> Layout {
        Layout::Fs
    }
    fn list(&self, _: Option<u32>, _: Times) -> Result<Vec<FileInfo>, StoreError> {
        Ok(Vec::new())
    }
    fn read(&self, _: &FileKey, _: Option<Range<u64>>) -> Result<FileReader, StoreError> {
        unimplemented!("the manifest code reads no LTX file")
    }
    fn write(&self, _: &FileKey, _: &Path, _: &WriteMeta) -> Result<FileInfo, StoreError> {
        unimplemented!("the manifest code writes no LTX file")
    }
    fn create(&self, _: &FileKey, _: &Path, _: &WriteMeta) -> Result<FileInfo, StoreError> {
        unimplemented!("the manifest code writes no LTX file")
    }
    fn delete(&self, _: &[FileKey]) -> Result<(), StoreError> {
        Ok(())
    }
    fn manifest_version(&self) -> Result<Option<ETag>, StoreError> {
        Ok(Some(ETag(self.version.lock().unwrap().to_string())))
    }
    fn get_manifest(&self) -> Result<Option<ManifestObject>, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects.get("manifest.json").map(|body| ManifestObject {
            body: body.clone(),
            etag: ETag(self.version.lock().unwrap().to_string()),
        }))
    }
    fn put_manifest(&self, body: &[u8], _: Option<&ETag>) -> Result<ETag, StoreError> {
        self.count(body.len());
        self.objects
            .lock()
            .unwrap()
            .insert("manifest.json".into(), body.to_vec());
        let mut v = self.version.lock().unwrap();
        *v += 1;
        Ok(ETag(v.to_string()))
    }
    fn put_part(&self, rel: &str, body: &[u8]) -> Result<(), StoreError> {
        self.count(body.len());
        self.objects
            .lock()
            .unwrap()
            .insert(rel.into(), body.to_vec());
        Ok(())
    }
    fn get_part(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        self.objects
            .lock()
            .unwrap()
            .get(rel)
            .cloned()
            .ok_or(StoreError::NotFound { what: rel.into() })
    }
    fn delete_parts(&self, rels: &[String]) -> Result<(), StoreError> {
        let mut objects = self.objects.lock().unwrap();
        for r in rels {
            objects.remove(r);
        }
        Ok(())
    }
    fn list_parts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let objects = self.objects.lock().unwrap();
        Ok(objects
            .keys()
            .filter(|k| k.starts_with("manifest/"))
            .map(|k| (k.clone(), 0))
            .collect())
    }
}

fn entry(level: u32, min: u64, max: u64, at_ms: i64) -> Entry {
    let key = FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap();
    let info = FileInfo {
        key,
        size: 4300,
        created_at_ms: at_ms,
    };
    Entry::new(Layout::Fs, &info, manifest::sha256_64(&max.to_be_bytes()))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let days: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(30);
    let ltx_per_batch: u64 = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(4300);
    let store = Memory::default();
    let start_ms = 1_800_000_000_000i64;
    let mut txid = 1u64;
    manifest::update(&store, &[entry(9, 1, 1, start_ms)], &[]).unwrap();
    println!("day  manifest bytes/h  LTX bytes/h  ratio  manifest.json  parts");
    for hour in 0..days * 24 {
        for tick in 0..360u64 {
            let now = start_ms + ((hour * 3600 + tick * 10) * 1000) as i64;
            let batch: Vec<Entry> = (0..10)
                .map(|_| {
                    txid += 1;
                    entry(0, txid, txid, now)
                })
                .collect();
            manifest::update(&store, &batch, &[]).unwrap();
        }
        let snap_at = start_ms + (((hour + 1) * 3600) * 1000) as i64;
        manifest::update(&store, &[entry(9, 1, txid, snap_at)], &[]).unwrap();
        let written = store.take_written();
        let day = hour / 24 + 1;
        if hour % 24 == 23 && (day == 1 || day == days || day % 10 == 0) {
            let head = store.get_manifest().unwrap().unwrap();
            let m = manifest::Manifest::parse(&head.body).unwrap();
            let ltx = 3600 * ltx_per_batch;
            println!(
                "{day:>3}  {written:>16}  {ltx:>11}  {:>4.1}%  {:>13}  {:>5}",
                100.0 * written as f64 / ltx as f64,
                head.body.len(),
                m.parts.len()
            );
        }
    }
}
