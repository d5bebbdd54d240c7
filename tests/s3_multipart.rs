//! A 40 MB file through the S3 store: uploaded in parts, read back streaming and by range,
//! byte for byte, with the metadata set on the multipart object, and with memory bounded by a
//! part, not the file. One test in its own binary, so that the process's peak memory is this
//! test's.

mod common;
mod store_suite;

use std::io::Read;
use std::time::Instant;

use common::s3::{peak_rss, reset_peak_rss, S3Server};
use store_suite::{key, TempDir};
use walrust::manifest::{sha256_64, Hasher64};
use walrust::store::s3::{S3Options, S3Store};
use walrust::store::{ReplicaUrl, Store, Times, WriteMeta};

const LEN: usize = 40 << 20;
const PART: usize = 8 << 20;

fn pattern_file(path: &std::path::Path) -> String {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Hasher64::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 16];
    for _ in 0..LEN / chunk.len() {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        f.write_all(&chunk).unwrap();
        h.update(&chunk);
    }
    f.flush().unwrap();
    h.finish()
}

#[test]
fn a_40_mb_file_round_trips_in_parts_with_bounded_memory() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("big");
    let ReplicaUrl::S3(url) = ReplicaUrl::parse(&server.url("big", "db")).unwrap() else {
        unreachable!()
    };
    let store = S3Store::with_options(
        &url,
        S3Options {
            part_size: PART,
            ..S3Options::default()
        },
    )
    .unwrap();
    let dir = TempDir::new("s3-multipart");
    let src = dir.path().join("snapshot.ltx");
    let sha = pattern_file(&src);
    let ts = 1_795_862_996_123;
    let k = key(9, 1, 0x40);

    let reset = reset_peak_rss();
    let before = peak_rss();
    let start = Instant::now();
    let info = store
        .write(
            &k,
            &src,
            &WriteMeta {
                timestamp_ms: ts,
                sha256: sha.clone(),
            },
        )
        .unwrap();
    let up = start.elapsed();
    assert_eq!(info.size, LEN as u64);

    // Streamed back through a hasher: nothing holds the whole object.
    let start = Instant::now();
    let mut r = store.read(&k, None).unwrap();
    let mut h = Hasher64::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut got = 0usize;
    loop {
        let n = r.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
        got += n;
    }
    let down = start.elapsed();
    assert_eq!(got, LEN);
    assert_eq!(h.finish(), sha, "the object differs from the file");
    let after = peak_rss();

    // A range across a part boundary.
    let mut part = Vec::new();
    store
        .read(&k, Some(PART as u64 - 10..PART as u64 + 10))
        .unwrap()
        .read_to_end(&mut part)
        .unwrap();
    let whole = std::fs::read(&src).unwrap();
    assert_eq!(part, &whole[PART - 10..PART + 10]);
    assert_eq!(sha256_64(&whole), sha);
    drop(whole);

    // The metadata went on the multipart object, and s3s-fs assembled all five parts.
    let listed = store.list(Some(9), Times::Exact).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].size, listed[0].created_at_ms), (LEN as u64, ts));
    let on_disk = server
        .data()
        .join("big/db/0009/0000000000000001-0000000000000040.ltx");
    assert_eq!(std::fs::metadata(on_disk).unwrap().len(), LEN as u64);

    let mb = LEN as f64 / 1e6;
    eprintln!(
        "40 MB multipart: upload {:.1} MB/s ({:.2} s), streamed download {:.1} MB/s ({:.2} s)",
        mb / up.as_secs_f64(),
        up.as_secs_f64(),
        mb / down.as_secs_f64(),
        down.as_secs_f64()
    );
    if let (true, Some(before), Some(after)) = (reset, before, after) {
        let grew = after.saturating_sub(before);
        eprintln!(
            "peak RSS grew by {:.1} MiB during upload + download (part size {} MiB)",
            grew as f64 / (1 << 20) as f64,
            PART >> 20
        );
        assert!(
            grew < (LEN as u64) * 3 / 4,
            "memory grew by {grew} bytes for a {LEN}-byte file: is it buffered whole?"
        );
    } else {
        eprintln!("peak RSS could not be reset here; memory bound not checked");
    }
}
