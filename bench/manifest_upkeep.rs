//! Manifest upkeep as a replica ages (issue 15, item 4): bytes written for `manifest.json` and
//! its parts per hour, on day 1 and on day 30 of a simulated clock, beside the LTX bytes of the
//! same hour.
//!
//! The workload is the uploader's at one level-0 batch per second: the backlog of new entries
//! goes into the manifest when `manifest::cadence` says it is due (`manifest::update`, as the
//! upload thread does), a snapshot entry every hour, no compaction (walrust's default). The store is an in-memory
//! `Store` that counts the bytes of every write; nothing but the manifest code is exercised.
//!
//!     cargo run --release --example manifest_upkeep [DAYS] [LTX_BYTES_PER_BATCH]
//!
//! LTX_BYTES_PER_BATCH (default 4,300: one 4 KiB page and the LTX header and trailer, a
//! one-row transaction per batch) is each entry's size: larger batches make the backlog due
//! sooner (every 10 s at most).

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Mutex;
use walrust::manifest::{self, cadence, Entry};
use walrust::store::{
    ETag, FileInfo, FileKey, FileReader, Layout, ManifestObject, Store, StoreError, Times,
    WriteMeta,
};
use walrust::types::Txid;

#[derive(Default)]
struct Memory {
    objects: Mutex<HashMap<String, Vec<u8>>>,
    version: Mutex<u64>,
    /// Bytes written since the last `take_written`: the manifest object's, the parts'.
    written: Mutex<(u64, u64)>,
}

impl Memory {
    fn take_written(&self) -> (u64, u64) {
        std::mem::take(&mut *self.written.lock().unwrap())
    }

    fn count_head(&self, n: usize) {
        self.written.lock().unwrap().0 += n as u64;
    }

    fn count_part(&self, n: usize) {
        self.written.lock().unwrap().1 += n as u64;
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
        self.count_head(body.len());
        self.objects
            .lock()
            .unwrap()
            .insert("manifest.json".into(), body.to_vec());
        let mut v = self.version.lock().unwrap();
        *v += 1;
        Ok(ETag(v.to_string()))
    }
    fn put_part(&self, rel: &str, body: &[u8]) -> Result<(), StoreError> {
        self.count_part(body.len());
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

fn entry(level: u32, min: u64, max: u64, at_ms: i64, size: u64) -> Entry {
    let key = FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap();
    let info = FileInfo {
        key,
        size,
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
    manifest::update(&store, &[entry(9, 1, 1, start_ms, ltx_per_batch)], &[]).unwrap();
    let (mut backlog, mut written_ms, mut head_bytes) = (Vec::new(), start_ms, 0);
    // Per hour, averaged over the day; the worst hour of the day beside it.
    println!(
        "day  manifest B/h  (manifest.json    parts)  LTX bytes/h  ratio (avg)  worst hour  \
         manifest.json  parts"
    );
    let (mut day_bytes, mut worst_hour) = ((0u64, 0u64), 0u64);
    for hour in 0..days * 24 {
        for second in 0..3600u64 {
            let now = start_ms + ((hour * 3600 + second) * 1000) as i64;
            txid += 1;
            backlog.push(entry(0, txid, txid, now, ltx_per_batch));
            if cadence::backlog_due(&backlog, now - written_ms, head_bytes) {
                let m = manifest::update(&store, &backlog, &[]).unwrap();
                head_bytes = m.to_json().len() as u64;
                written_ms = now;
                backlog.clear();
            }
        }
        let snap_at = start_ms + (((hour + 1) * 3600) * 1000) as i64;
        manifest::update(&store, &[entry(9, 1, txid, snap_at, ltx_per_batch)], &[]).unwrap();
        let (head_written, parts_written) = store.take_written();
        day_bytes.0 += head_written;
        day_bytes.1 += parts_written;
        worst_hour = worst_hour.max(head_written + parts_written);
        if hour % 24 != 23 {
            continue;
        }
        let day = hour / 24 + 1;
        let (head_day, parts_day) = std::mem::take(&mut day_bytes);
        let worst = std::mem::take(&mut worst_hour);
        if day == 1 || day == days || day % 10 == 0 {
            let head = store.get_manifest().unwrap().unwrap();
            let m = manifest::Manifest::parse(&head.body).unwrap();
            let ltx = 3600 * ltx_per_batch;
            let per_hour = (head_day + parts_day) / 24;
            println!(
                "{day:>3}  {per_hour:>13}  ({:>13}  {:>7})  {ltx:>11}  {:>9.1}%  {:>9.1}%  \
                 {:>13}  {:>5}",
                head_day / 24,
                parts_day / 24,
                100.0 * per_hour as f64 / ltx as f64,
                100.0 * worst as f64 / ltx as f64,
                head.body.len(),
                m.parts.len()
            );
        }
    }
}
