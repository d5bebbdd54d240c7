//! S3 replica compatibility with the real `litestream` 0.5.17, both ways, through s3s-fs:
//! - a replica walrust wrote through `S3Store` (snapshot, incrementals and a compaction built
//!   with the LTX encoder, indexed in `manifest.json`) restores with walrust's own `restore`
//!   and with `litestream restore`, latest, by `-txid` and by `-timestamp` (which Litestream
//!   answers from the `litestream-timestamp` metadata walrust wrote);
//! - a replica `litestream replicate` wrote to S3 restores with walrust's `restore` to the
//!   same content as the source.
//!
//! The litestream binary comes from `WALRUST_LITESTREAM`, else `<repo>/.venv/bin/litestream`;
//! s3s-fs as `common::s3` says. Without either, these tests fail (skip only with
//! `WALRUST_ALLOW_SKIP=1`).

mod common;
mod restore_support;
mod store_suite;

use common::tools::litestream;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::s3::{S3Server, ACCESS_KEY, REGION, SECRET_KEY};
use restore_support::{ten_txns, time_of, txid, Model};
use store_suite::{key, TempDir};
use walrust::clock::format_rfc3339_ms;
use walrust::ltx::{Encoder, Header};
use walrust::manifest::{self, Entry};
use walrust::restore::{restore, Target};
use walrust::store::s3::S3Store;
use walrust::store::{self, ReplicaUrl, Store, Times, WriteMeta};
use walrust::{Checksum, PageNo};

const PYTHON: &str = "/usr/bin/python3";

/// Encodes `level` `min..=max` of the model and writes it, with its manifest entry.
fn add(store: &dyn Store, m: &Model, scratch: &Path, level: u32, min: u64, max: u64) {
    let h = Header::new(
        m.page_size,
        m.commits[&max],
        txid(min),
        txid(max),
        time_of(max),
    );
    let src = scratch.join("encode.ltx");
    let mut enc = Encoder::new(File::create(&src).unwrap(), h).unwrap();
    for p in m.file_pages(min, max) {
        enc.write_page(PageNo::new(p).unwrap(), &m.page(max, p))
            .unwrap();
    }
    enc.finish(Checksum(0)).unwrap();
    let (sha, _) = manifest::sha256_64_file(&src).unwrap();
    let meta = WriteMeta {
        timestamp_ms: time_of(max),
        sha256: sha.clone(),
    };
    let info = store.write(&key(level, min, max), &src, &meta).unwrap();
    manifest::update(store, &[Entry::new(store.layout(), &info, sha)], &[]).unwrap();
}

/// Asserts `out` is the model's database as of `t`, page by page.
fn assert_db(m: &Model, out: &Path, t: u64) {
    let bytes = std::fs::read(out).unwrap();
    let ps = m.page_size as usize;
    assert_eq!(bytes.len(), m.commits[&t] as usize * ps, "size at TXID {t}");
    for (i, page) in bytes.chunks(ps).enumerate() {
        let p = i as u32 + 1;
        assert!(
            page == m.page(t, p).as_slice(),
            "page {p} differs from TXID {t}"
        );
    }
}

/// A Litestream config for one database replicated to `bucket/path` on `server`.
fn litestream_config(
    dir: &Path,
    db: &Path,
    server: &S3Server,
    bucket: &str,
    path: &str,
) -> PathBuf {
    let config = dir.join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      type: s3\n      bucket: {bucket}\n      \
             path: {path}\n      endpoint: {}\n      region: {REGION}\n      \
             force-path-style: true\n      sync-interval: 100ms\n",
            db.display(),
            server.endpoint()
        ),
    )
    .unwrap();
    config
}

fn litestream_cmd(bin: &Path) -> Command {
    let mut c = Command::new(bin);
    c.env_remove("AWS_CA_BUNDLE")
        .env("LITESTREAM_ACCESS_KEY_ID", ACCESS_KEY)
        .env("LITESTREAM_SECRET_ACCESS_KEY", SECRET_KEY)
        .stdin(Stdio::null());
    c
}

#[test]
fn walrust_and_litestream_restore_what_walrust_wrote_to_s3() {
    let Some(bin) = litestream() else { return };
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("ls-reads");
    let url = server.url("ls-reads", "apps/app.db");
    let store = store::open(&url).unwrap();
    let dir = TempDir::new("s3-ls-reads");
    let m = ten_txns();
    add(store.as_ref(), &m, dir.path(), 9, 1, 3);
    for (min, max) in [(4, 4), (5, 6), (7, 9), (10, 10)] {
        add(store.as_ref(), &m, dir.path(), 0, min, max);
    }
    add(store.as_ref(), &m, dir.path(), 1, 4, 9);
    let (man, _) = manifest::load(store.as_ref()).unwrap().unwrap();
    assert_eq!(man.files.len(), 6);
    assert_eq!(
        man.files[0].key,
        "0000/0000000000000004-0000000000000004.ltx"
    );

    // walrust's own restore over S3: latest, by TXID, and by time (exact times by HEAD).
    let out = dir.path().join("w-latest.db");
    restore(store.as_ref(), &out, Target::Latest)
        .unwrap()
        .commit()
        .unwrap();
    assert_db(&m, &out, 10);
    let out = dir.path().join("w-txid.db");
    let t = restore(store.as_ref(), &out, Target::Txid(txid(8))).unwrap();
    assert_eq!(t.txid(), txid(6));
    t.commit().unwrap();
    assert_db(&m, &out, 6);
    let out = dir.path().join("w-time.db");
    let t = restore(store.as_ref(), &out, Target::Time(time_of(9) + 500)).unwrap();
    assert_eq!(t.txid(), txid(9));
    t.commit().unwrap();
    assert_db(&m, &out, 9);

    // litestream restore, with the replica named by a config as TESTING.md says.
    let db = dir.path().join("app.db");
    let config = litestream_config(dir.path(), &db, &server, "ls-reads", "apps/app.db");
    let run = |out: &Path, extra: &[&str]| {
        let res = litestream_cmd(&bin)
            .arg("restore")
            .arg("-config")
            .arg(&config)
            .args(extra)
            .arg("-o")
            .arg(out)
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "litestream restore {extra:?} failed: {}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
    };
    let out = dir.path().join("ls-latest.db");
    run(&out, &[]);
    assert_db(&m, &out, 10);
    for t in [6u64, 9] {
        let out = dir.path().join(format!("ls-txid-{t}.db"));
        run(&out, &["-txid", &format!("{t:016x}")]);
        assert_db(&m, &out, t);
    }
    // The times are a minute apart and before the upload: only the metadata says them
    // (LastModified is the upload time). Litestream takes files created strictly before.
    for t in [6u64, 9] {
        let out = dir.path().join(format!("ls-time-{t}.db"));
        run(&out, &["-timestamp", &format_rfc3339_ms(time_of(t) + 1)]);
        assert_db(&m, &out, t);
    }
}

const CREATE: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
db.execute("PRAGMA journal_mode=WAL")
db.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body TEXT)")
db.execute("INSERT INTO t(body) VALUES ('first')")
"#;

const BATCH: &str = r#"
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None)
n = int(sys.argv[2])
for i in range(20):
    db.execute("INSERT INTO t(body) VALUES (?)", (("row %d %d " % (n, i)) * 40,))
db.execute("DELETE FROM t WHERE id % 7 = ?", (n % 7,))
"#;

const DUMP: &str = r#"
import sqlite3, sys
db = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True)
ok = db.execute("PRAGMA integrity_check").fetchone()[0]
print(ok)
print("\n".join(db.iterdump()))
"#;

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The `litestream replicate` process this test started, killed on drop.
struct Replicator(std::process::Child);

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn walrust_restores_what_litestream_replicated_to_s3() {
    let Some(bin) = litestream() else { return };
    let Some(server) = S3Server::start() else {
        return;
    };
    server.bucket("ls-writes");
    let dir = TempDir::new("s3-ls-writes");
    let db = dir.path().join("app.db");
    python(CREATE, &[db.to_str().unwrap()]);
    let config = litestream_config(dir.path(), &db, &server, "ls-writes", "replicas/app");
    let log_path = dir.path().join("litestream.log");
    let log = File::create(&log_path).unwrap();
    let _rep = Replicator(
        litestream_cmd(&bin)
            .args(["replicate", "-config"])
            .arg(&config)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let ReplicaUrl::S3(url) = ReplicaUrl::parse(&server.url("ls-writes", "replicas/app")).unwrap()
    else {
        unreachable!()
    };
    let store = S3Store::open(&url).unwrap();
    // Each batch, then wait (for the event, not a time) until walrust's restore of the newest
    // point shows it: the replica then has a restore point whose content the test knows.
    let mut attempt = 0;
    let mut states = Vec::new();
    for n in 1..=3 {
        python(BATCH, &[db.to_str().unwrap(), &n.to_string()]);
        let start = Instant::now();
        loop {
            // Read every time: Litestream writes to the source too (its own tables).
            let want = python(DUMP, &[db.to_str().unwrap()]);
            assert!(want.starts_with("ok\n"));
            attempt += 1;
            let out = dir.path().join(format!("restored-{attempt}.db"));
            let got = match restore(&store, &out, Target::Latest) {
                Ok(tmp) => {
                    tmp.commit().unwrap();
                    python(DUMP, &[out.to_str().unwrap()])
                }
                Err(e) => format!("{e}"),
            };
            if got == want {
                states.push(want);
                break;
            }
            // Only stops a hung test: nothing here asserts how long Litestream takes.
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "walrust's restore never matched the source after batch {n}; last result:\n{}\n\
                 litestream log:\n{}",
                got.lines().take(3).collect::<Vec<_>>().join("\n"),
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Litestream's objects are where SPEC 5 says, and every restore point from the first
    // snapshot on restores, by TXID and by time, to exactly what `litestream restore -txid`
    // gives for it (Litestream reading its own replica is the oracle). Each batch's state is
    // among them.
    let files = store.list(None, Times::Exact).unwrap();
    assert!(files.iter().any(|f| f.key.level == 9), "a snapshot");
    assert!(server.data().join("ls-writes/replicas/app/0009").is_dir());
    let snapshot = files
        .iter()
        .filter(|f| f.key.level == 9)
        .min_by_key(|f| f.key.max_txid)
        .unwrap();
    let oracle = |level: u32, t: u64| {
        let out = dir.path().join(format!("litestream-at-{level}-{t}.db"));
        let res = litestream_cmd(&bin)
            .arg("restore")
            .arg("-config")
            .arg(&config)
            .args(["-txid", &format!("{t:016x}"), "-o"])
            .arg(&out)
            .arg(&db)
            .output()
            .unwrap();
        assert!(
            res.status.success(),
            "litestream restore -txid {t} failed: {}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        );
        python(DUMP, &[out.to_str().unwrap()])
    };
    let mut seen = Vec::new();
    for f in files.iter().filter(|f| {
        (f.key.level == 0 || f.key.level == 9) && f.key.max_txid >= snapshot.key.max_txid
    }) {
        let t = f.key.max_txid.get();
        let want = oracle(f.key.level, t);
        assert!(
            want.starts_with("ok\n"),
            "litestream's restore at {t}: {want}"
        );
        let mut targets = vec![("txid", Target::Txid(f.key.max_txid))];
        // (A level-0 file written before the snapshot has no snapshot at or before its time.)
        if f.key.level == 0 && f.created_at_ms >= snapshot.created_at_ms {
            targets.push(("time", Target::Time(f.created_at_ms)));
        }
        for (name, target) in targets {
            let out = dir.path().join(format!("at-{name}-{}-{t}.db", f.key.level));
            let tmp = restore(&store, &out, target).unwrap();
            if name == "txid" {
                assert_eq!(tmp.txid(), f.key.max_txid);
            }
            tmp.commit().unwrap();
            assert!(
                python(DUMP, &[out.to_str().unwrap()]) == want,
                "walrust's restore by {name} at TXID {t} differs from litestream's"
            );
        }
        seen.push(want);
    }
    for (n, state) in states.iter().enumerate() {
        assert!(
            seen.contains(state),
            "the state after batch {} is no restore point",
            n + 1
        );
    }
}
