//! The S3 store against a real S3 server (s3s-fs, started per test): the shared store suite,
//! plus what only S3 has: the object layout and metadata, paginated listings, batched deletes,
//! errors a user can act on (and that never carry a secret), and a server that dies or hangs.

mod common;
mod store_suite;

use std::time::{Duration, Instant};

use common::s3::{wait_for, S3Server, SECRET_KEY};
use store_suite::{key, put, run_all, TempDir};
use walrust::store::s3::{S3Options, S3Store};
use walrust::store::{self, FileKey, ReplicaUrl, S3Url, Store, StoreError, Times};

fn s3_url(url: &str) -> S3Url {
    match ReplicaUrl::parse(url).unwrap() {
        ReplicaUrl::S3(u) => u,
        other => panic!("not an S3 URL: {other:?}"),
    }
}

fn open(server: &S3Server, bucket: &str, prefix: &str) -> S3Store {
    S3Store::open(&s3_url(&server.url(bucket, prefix))).unwrap()
}

fn open_with(server: &S3Server, bucket: &str, prefix: &str, opts: S3Options) -> S3Store {
    S3Store::with_options(&s3_url(&server.url(bucket, prefix)), opts).unwrap()
}

/// Asserts a message is one line and holds no credential.
fn assert_clean(msg: &str) {
    assert!(!msg.contains('\n'), "not one line: {msg}");
    assert!(!msg.contains(SECRET_KEY), "the secret leaked: {msg}");
    assert!(
        !msg.contains("walrust-test-ak"),
        "the access key leaked: {msg}"
    );
    assert!(!msg.contains("hunter2"), "a secret leaked: {msg}");
}

#[test]
fn s3_store_passes_the_store_suite() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("suite");
    run_all(&open(&server, "suite", "tenants/app.db"));
    // At the bucket root too, where keys have no prefix.
    server.bucket("suite-root");
    run_all(&open(&server, "suite-root", ""));
}

#[test]
fn s3_store_opens_from_the_url_and_shows_no_credentials() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("bkt");
    let url = server.url("bkt", "a/b");
    let s = store::open(&url).unwrap();
    assert_eq!(
        s.describe(),
        format!(
            "s3://bkt/a/b?endpoint={}&region=us-east-1",
            server.endpoint()
        )
    );
    assert_eq!(s.layout(), store::Layout::S3);
    let direct = open(&server, "bkt", "a/b");
    let debug = format!("{direct:?}");
    assert_clean(&debug);
    assert!(debug.contains("s3://bkt/a/b"), "{debug}");
}

#[test]
fn s3_store_lays_out_objects_as_litestream_does() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("lay");
    let store = open(&server, "lay", "db");
    let scratch = TempDir::new("s3-layout");
    let ts = 1_795_862_996_120;
    put(&store, scratch.path(), key(9, 1, 0x2a), b"snap", ts);
    put(&store, scratch.path(), key(0, 0x2b, 0x2b), b"inc", ts + 1);
    let data = server.data().join("lay/db");
    assert!(data
        .join("0009/0000000000000001-000000000000002a.ltx")
        .is_file());
    assert!(data
        .join("0000/000000000000002b-000000000000002b.ltx")
        .is_file());
    // The metadata, as s3s-fs keeps it beside the objects: the time exactly as Go's
    // RFC3339Nano writes it (Litestream parses it with that layout), and the file's hash.
    let mut all_meta = String::new();
    for entry in std::fs::read_dir(server.data()).unwrap() {
        let p = entry.unwrap().path();
        if p.to_string_lossy().ends_with(".metadata.json") {
            all_meta += &std::fs::read_to_string(&p).unwrap();
        }
    }
    assert!(
        all_meta.contains(r#""litestream-timestamp":"2026-11-28T10:49:56.12Z""#),
        "{all_meta}"
    );
    assert!(
        all_meta.contains(&format!(
            r#""walrust-sha256":"{}""#,
            walrust::manifest::sha256_64(b"snap")
        )),
        "{all_meta}"
    );
    // The time comes back from the object's metadata, not from the upload time.
    let listed = store.list(Some(9), Times::Exact).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].created_at_ms, ts);
    let listed = store.list(Some(9), Times::Listed).unwrap();
    assert!(
        (listed[0].created_at_ms - walrust::clock::now_ms()).abs() < 60_000,
        "Listed times are LastModified"
    );

    // Stray objects are skipped: other names in a level folder (with a warning), anything
    // outside the level folders, and other levels' spellings.
    std::fs::write(data.join("0000/notes.txt"), b"x").unwrap();
    std::fs::create_dir_all(data.join("generations/0000")).unwrap();
    std::fs::write(
        data.join("generations/0000/0000000000000001-0000000000000001.ltx"),
        b"x",
    )
    .unwrap();
    std::fs::create_dir_all(data.join("000a")).unwrap();
    std::fs::write(
        data.join("000a/0000000000000001-0000000000000001.ltx"),
        b"x",
    )
    .unwrap();
    let keys: Vec<FileKey> = store
        .list(None, Times::Listed)
        .unwrap()
        .iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(keys, [key(0, 0x2b, 0x2b), key(9, 1, 0x2a)]);
}

#[test]
fn listings_page_through_continuation_tokens() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("pages");
    let scratch = TempDir::new("s3-pages");
    let opts = S3Options {
        list_page_size: Some(7),
        ..S3Options::default()
    };
    let small = open_with(&server, "pages", "p", opts);
    for n in 1..=50u64 {
        put(&small, scratch.path(), key(0, n, n), b"x", n as i64);
    }
    put(&small, scratch.path(), key(9, 1, 50), b"snapshot", 50);
    let all = small.list(None, Times::Exact).unwrap();
    assert_eq!(all.len(), 51);
    assert!(all.windows(2).all(|w| w[0].key < w[1].key), "sorted");
    assert_eq!(all[49].created_at_ms, 50);
    assert_eq!(small.list(Some(0), Times::Listed).unwrap().len(), 50);
}

#[test]
fn more_than_a_thousand_files_list_and_delete_in_batches() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("many");
    let store = open(&server, "many", "big");
    let scratch = TempDir::new("s3-many");
    let n = 1_100u64;
    let start = Instant::now();
    for i in 1..=n {
        put(&store, scratch.path(), key(0, i, i), b"l0", i as i64);
    }
    let put_time = start.elapsed();
    let listed = store.list(Some(0), Times::Listed).unwrap();
    assert_eq!(listed.len(), n as usize, "the server pages at 1000 keys");
    assert_eq!(listed.last().unwrap().key, key(0, n, n));
    // Exact times for all of them: 1,100 HEADs, a few at a time.
    let start = Instant::now();
    let exact = store.list(Some(0), Times::Exact).unwrap();
    let head_time = start.elapsed();
    assert!(exact
        .iter()
        .all(|f| f.created_at_ms == f.key.min_txid.get() as i64));
    // One call deletes them all: two DeleteObjects requests of at most 1000 keys.
    let keys: Vec<FileKey> = listed.iter().map(|f| f.key).collect();
    store.delete(&keys).unwrap();
    assert!(store.list(None, Times::Listed).unwrap().is_empty());
    eprintln!(
        "1100 small PUTs in {:.2} s, 1100 HEADs (exact times) in {:.2} s",
        put_time.as_secs_f64(),
        head_time.as_secs_f64()
    );
}

#[test]
fn a_wrong_secret_is_an_auth_error_naming_the_variable() {
    // The store holds the test process's secret; this server expects another.
    let Some(server) = S3Server::start_with_keys("walrust-test-ak", "hunter2-other-secret") else {
        return;
    };
    server.bucket("auth");
    let store = open(&server, "auth", "x");
    for e in [
        store.list(None, Times::Listed).unwrap_err(),
        store.get_manifest().unwrap_err(),
        store.read(&key(0, 1, 1), None).err().unwrap(),
    ] {
        let msg = e.to_string();
        assert!(matches!(e, StoreError::Auth { .. }), "{e:?}");
        eprintln!("wrong secret: {msg}");
        assert_eq!(msg.matches("AWS_SECRET_ACCESS_KEY").count(), 1, "{msg}");
        assert_clean(&msg);
        assert_clean(&format!("{e:?}"));
    }
    let scratch = TempDir::new("s3-auth");
    std::fs::write(scratch.path().join("f"), b"x").unwrap();
    let meta = walrust::store::WriteMeta {
        timestamp_ms: 1,
        sha256: "0000000000000000".into(),
    };
    let e = store
        .write(&key(0, 1, 1), &scratch.path().join("f"), &meta)
        .unwrap_err();
    assert!(matches!(e, StoreError::Auth { .. }), "{e:?}");
    assert_clean(&e.to_string());
}

#[test]
fn an_unknown_access_key_is_an_auth_error_naming_the_variable() {
    let Some(server) = S3Server::start_with_keys("someone-else", SECRET_KEY) else {
        return;
    };
    server.bucket("auth");
    let e = open(&server, "auth", "x")
        .list(None, Times::Listed)
        .unwrap_err();
    assert!(matches!(e, StoreError::Auth { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("AWS_ACCESS_KEY_ID"), "{msg}");
    assert_clean(&msg);
}

#[test]
fn a_missing_bucket_says_to_create_it() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = open(&server, "no-such-bucket", "app");
    // (s3s-fs answers a GET in a missing bucket with NoSuchKey, so only the listing can tell;
    // AWS says NoSuchBucket to both, and `get_manifest` maps that to this same error.)
    let e = store.list(None, Times::Listed).unwrap_err();
    assert!(matches!(e, StoreError::NotFound { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("create the bucket"), "{msg}");
    assert!(!msg.contains("compaction"), "{msg}");
    assert!(msg.contains("no-such-bucket"), "{msg}");
    assert_clean(&msg);
    eprintln!("missing bucket: {msg}");
    // A missing replica in an existing bucket is simply empty.
    server.bucket("exists");
    let store = open(&server, "exists", "app");
    assert!(store.list(None, Times::Listed).unwrap().is_empty());
    assert!(store.get_manifest().unwrap().is_none());
}

#[test]
fn a_closed_port_is_unavailable() {
    common::s3::set_test_env();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // the listener is dropped: nothing listens there now
    let url = format!("s3://bkt/app?endpoint=http://127.0.0.1:{port}&region=us-east-1");
    let store = store::open(&url).unwrap();
    let e = store.list(None, Times::Listed).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains("connection refused"), "{msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
    assert_clean(&msg);

    // A host that does not resolve.
    let store =
        store::open("s3://bkt/app?endpoint=http://walrust-no-such-host.invalid:9000").unwrap();
    let e = store.get_manifest().unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("resolve"), "{e}");
}

#[test]
fn malformed_urls_are_refused_with_what_to_write() {
    common::s3::set_test_env();
    for (url, says) in [
        ("s3://", "no bucket"),
        ("s3://Bad_Bucket!/x", "not a valid bucket"),
        ("s3://bkt/p?endpoint=localhost:9000", "http://"),
        ("s3://AKIA:hunter2@bkt/p", "credentials are not accepted"),
        (
            "s3://bkt/p?endpoint=http://AKIA:hunter2@h:1",
            "credentials are not accepted",
        ),
        ("s3://bkt/p?regoin=us-east-1", "unknown parameter"),
    ] {
        let e = store::open(url).err().unwrap();
        assert!(matches!(e, StoreError::Invalid { .. }), "{url}: {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(says), "{url}: {msg}");
        assert_clean(&msg);
    }
}

/// The server dies while a 40 MB file streams to it in one PUT: the write fails cleanly (no
/// success, an `Unavailable` error in one line without secrets); after a restart on the same
/// port and data the same store works again. Arranged, not timed: the server is frozen
/// (SIGSTOP) before the upload, killed once it holds 64 KiB of the body unread, so the
/// upload cannot have finished.
#[test]
fn a_server_that_dies_mid_upload_fails_cleanly_then_recovers() {
    let Some(mut server) = S3Server::start() else {
        return;
    };
    server.bucket("outage");
    // A part size above the file's: one streaming PUT, whose body is what the server holds.
    let opts = S3Options {
        part_size: 64 << 20,
        ..S3Options::default()
    };
    let store = open_with(&server, "outage", "db", opts);
    let scratch = TempDir::new("s3-outage");
    let big = scratch.path().join("big.ltx");
    write_pattern(&big, 40 << 20);
    let meta = walrust::store::WriteMeta {
        timestamp_ms: 7,
        sha256: "0000000000000000".into(),
    };
    put(&store, scratch.path(), key(0, 1, 1), b"before", 1);

    server.pause();
    let outcome = std::thread::scope(|s| {
        let h = s.spawn(|| store.write(&key(9, 1, 2), &big, &meta));
        // 64 KiB: far more than the request's headers, less than a socket buffer holds.
        wait_for("64 KiB of the body sent to the frozen server", || {
            server.unread_bytes() >= 64 << 10
        });
        server.stop(); // SIGKILL, frozen: it never read the rest, never answered
        h.join().unwrap()
    });
    let e = outcome.expect_err("the upload succeeded, yet the server never read its body");
    assert!(
        matches!(e, StoreError::Unavailable { .. }),
        "expected Unavailable, got {e:?}"
    );
    assert_clean(&e.to_string());
    let e = store.list(None, Times::Listed).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");

    server.restart();
    let keys: Vec<FileKey> = store
        .list(None, Times::Listed)
        .unwrap()
        .iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(keys, [key(0, 1, 1)], "the failed upload left an object");
    store.write(&key(9, 1, 2), &big, &meta).unwrap();
    let keys: Vec<FileKey> = store
        .list(None, Times::Listed)
        .unwrap()
        .iter()
        .map(|f| f.key)
        .collect();
    assert_eq!(keys, [key(0, 1, 1), key(9, 1, 2)]);
}

/// A frozen server (SIGSTOP) accepts connections and never answers: every kind of request
/// fails with the configured timeout's error instead of hanging (the test would hang), then
/// works once it wakes.
#[test]
fn a_hung_server_times_out_then_recovers() {
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("hung");
    let opts = S3Options {
        connect_timeout: Duration::from_secs(2),
        io_timeout: Duration::from_secs(2),
        response_timeout: Duration::from_secs(2),
        ..S3Options::default()
    };
    let store = open_with(&server, "hung", "db", opts);
    let scratch = TempDir::new("s3-hung");
    put(&store, scratch.path(), key(0, 1, 1), b"one", 1);

    server.pause();
    let e = store.list(None, Times::Listed).unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(e.to_string().contains("no progress for 2 s"), "{e}");
    let meta = walrust::store::WriteMeta {
        timestamp_ms: 2,
        sha256: "0000000000000000".into(),
    };
    std::fs::write(scratch.path().join("two"), b"two").unwrap();
    let e = store
        .write(&key(0, 2, 2), &scratch.path().join("two"), &meta)
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e:?}");
    assert!(store.get_manifest().is_err());

    server.resume();
    store
        .write(&key(0, 2, 2), &scratch.path().join("two"), &meta)
        .unwrap();
    assert_eq!(store.list(None, Times::Listed).unwrap().len(), 2);
}

/// Writes `len` bytes of a pattern that does not compress, without holding them in memory.
pub fn write_pattern(path: &std::path::Path, len: usize) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut chunk = vec![0u8; 1 << 16];
    let mut left = len;
    while left > 0 {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    f.flush().unwrap();
}
