//! A 40 MB file through the S3 store: uploaded in parts, read back streaming and by range,
//! byte for byte, with the metadata set on the multipart object; and a file just under the part
//! size in one PUT. Neither upload holds its file or a part in memory: the body is streamed from
//! the file, so the process's peak memory grows by far less than a part. One test in its own
//! binary, so that the process's peak memory is this test's.

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
/// A single PUT: just under the part size.
const SMALL: usize = PART - (1 << 20);
/// The most an upload may add to the peak memory: half a part, far more than the streaming
/// buffers (ureq's 128 KiB, a 64 KiB hashing buffer), far less than a part held whole.
const UPLOAD_MEMORY_MAX: u64 = PART as u64 / 2;

/// URL-safe base64 without padding, as s3s-fs names its per-object files.
fn base64url(s: &str) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let n = chunk.iter().fold(0u32, |n, &b| n << 8 | b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// Runs `f` and returns how much it raised the peak RSS, if the peak can be reset here.
fn peak_growth(f: impl FnOnce()) -> Option<u64> {
    let reset = reset_peak_rss();
    let before = peak_rss();
    f();
    match (reset, before, peak_rss()) {
        (true, Some(before), Some(after)) => Some(after.saturating_sub(before)),
        _ => None,
    }
}

fn check_upload_memory(what: &str, grew: Option<u64>) {
    match grew {
        Some(grew) => {
            eprintln!(
                "{what}: peak RSS grew by {:.2} MiB (part size {} MiB)",
                mib(grew),
                PART >> 20
            );
            assert!(
                grew < UPLOAD_MEMORY_MAX,
                "{what}: memory grew by {grew} bytes: is the body buffered whole?"
            );
        }
        None => eprintln!("peak RSS could not be reset here; memory bound not checked"),
    }
}

/// Reads an object back through a hasher: its length and `sha256_64`.
fn read_hashed(store: &S3Store, k: &walrust::store::FileKey) -> (usize, String) {
    let mut r = store.read(k, None).unwrap();
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
    (got, h.finish())
}

fn pattern_file(path: &std::path::Path, len: usize) -> String {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Hasher64::new();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 16];
    for _ in 0..len / chunk.len() {
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
    let ts = 1_795_862_996_123;

    // One PUT, streamed from the file.
    let small = dir.path().join("small.ltx");
    let small_sha = pattern_file(&small, SMALL);
    let ks = key(0, 1, 1);
    let meta = WriteMeta {
        timestamp_ms: ts,
        sha256: small_sha.clone(),
    };
    let grew = peak_growth(|| {
        let info = store.write(&ks, &small, &meta).unwrap();
        assert_eq!(info.size, SMALL as u64);
    });
    check_upload_memory(&format!("{} MiB single PUT", SMALL >> 20), grew);
    assert_eq!(
        read_hashed(&store, &ks),
        (SMALL, small_sha),
        "the object differs from the file"
    );

    let src = dir.path().join("snapshot.ltx");
    let sha = pattern_file(&src, LEN);
    let k = key(9, 1, 0x40);

    let mut up = std::time::Duration::ZERO;
    let grew = peak_growth(|| {
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
        up = start.elapsed();
        assert_eq!(info.size, LEN as u64);
    });
    check_upload_memory(&format!("{} MB multipart upload", LEN >> 20), grew);

    // Streamed back through a hasher: nothing holds the whole object.
    let reset = reset_peak_rss();
    let before = peak_rss();
    let start = Instant::now();
    let (got, got_sha) = read_hashed(&store, &k);
    let down = start.elapsed();
    assert_eq!(got, LEN);
    assert_eq!(got_sha, sha, "the object differs from the file");
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
    // It was a multipart upload of five parts, and the small file one PUT: s3s-fs gives a
    // completed multipart upload the ETag `<md5 of the parts' md5s>-<number of parts>`, a PUT
    // the plain MD5 of its body, and keeps each object's ETag in a file of its own.
    let etag = |key: &str| -> String {
        let info = server.data().join(format!(
            ".bucket-{}.object-{}.internal.json",
            base64url("big"),
            base64url(key)
        ));
        let text = std::fs::read_to_string(&info).unwrap_or_else(|e| {
            panic!("s3s-fs keeps no ETag for {key} at {}: {e}", info.display())
        });
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["e_tag"]
            .as_str()
            .unwrap_or_else(|| panic!("no e_tag in {text}"))
            .to_string()
    };
    let big_etag = etag("db/0009/0000000000000001-0000000000000040.ltx");
    assert!(
        big_etag.ends_with(&format!("-{}", LEN.div_ceil(PART))),
        "the 40 MB file was not uploaded in {} parts: ETag {big_etag}",
        LEN.div_ceil(PART)
    );
    let small_etag = etag("db/0000/0000000000000001-0000000000000001.ltx");
    assert!(
        !small_etag.contains('-'),
        "the small file went up in parts: ETag {small_etag}"
    );

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
            "peak RSS grew by {:.2} MiB during the streamed download",
            mib(grew)
        );
        assert!(
            grew < (LEN as u64) * 3 / 4,
            "memory grew by {grew} bytes for a {LEN}-byte file: is it buffered whole?"
        );
    } else {
        eprintln!("peak RSS could not be reset here; memory bound not checked");
    }
}
