//! Replica compatibility with the real `litestream` 0.5.17, both ways:
//! - a replica walrust wrote (`FsStore`, with its `manifest.json` and lock file beside `ltx/`)
//!   restores with `litestream restore`, by default, by `-txid` and by `-timestamp` (which reads
//!   the mtimes `FsStore` sets), to the same bytes as the model;
//! - a replica `litestream replicate` wrote restores with walrust's `restore` to a database with
//!   the same content as the source, and at every restore point to what `litestream restore
//!   -txid` gives for it.
//!
//! The binary comes from `WALRUST_LITESTREAM`, else `<repo>/.venv/bin/litestream`, else PATH;
//! without it these tests fail (skip only with `WALRUST_ALLOW_SKIP=1`). Databases are made with
//! `/usr/bin/python3`.

mod common;
mod restore_support;
mod store_suite;

use common::tools::litestream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use restore_support::*;
use store_suite::TempDir;
use walrust::clock::format_rfc3339_ms;
use walrust::restore::{restore, Target};
use walrust::store;

const PYTHON: &str = "/usr/bin/python3";

fn litestream_restore(bin: &Path, replica: &Path, out: &Path, extra: &[&str]) {
    let res = Command::new(bin)
        .arg("restore")
        .args(extra)
        .arg("-o")
        .arg(out)
        .arg(format!("file://{}", replica.display()))
        .env_remove("AWS_CA_BUNDLE")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "litestream restore {extra:?} failed: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn litestream_restores_what_walrust_wrote() {
    let Some(bin) = litestream() else { return };
    let r = standard_replica("ls-reads-walrust", false);
    let root = r.root();

    let out = r.out("latest.db");
    litestream_restore(&bin, &root, &out, &[]);
    r.assert_db(&out, 10);

    for t in [6u64, 9] {
        let out = r.out(&format!("txid-{t}.db"));
        litestream_restore(&bin, &root, &out, &["-txid", &format!("{t:016x}")]);
        r.assert_db(&out, t);
    }

    // Litestream takes files created strictly before the timestamp; walrust at or before it.
    for t in [6u64, 9] {
        let out = r.out(&format!("time-{t}.db"));
        let at = format_rfc3339_ms(time_of(t) + 1);
        litestream_restore(&bin, &root, &out, &["-timestamp", &at]);
        r.assert_db(&out, t);
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

struct Replicator(std::process::Child);

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn walrust_restores_what_litestream_wrote() {
    let Some(bin) = litestream() else { return };
    let dir = TempDir::new("walrust-reads-ls");
    let (db, replica) = (dir.path().join("app.db"), dir.path().join("replica"));
    python(CREATE, &[db.to_str().unwrap()]);
    let config = dir.path().join("litestream.yml");
    std::fs::write(
        &config,
        format!(
            "dbs:\n  - path: {}\n    replica:\n      url: file://{}\n      sync-interval: 100ms\n",
            db.display(),
            replica.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("litestream.log")).unwrap();
    let _rep = Replicator(
        Command::new(&bin)
            .args(["replicate", "-config"])
            .arg(&config)
            .env_remove("AWS_CA_BUNDLE")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap(),
    );
    let store = store::open(replica.to_str().unwrap()).unwrap();
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
            let got = match restore(store.as_ref(), &out, Target::Latest) {
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
            let log =
                std::fs::read_to_string(dir.path().join("litestream.log")).unwrap_or_default();
            // Only stops a hung test: nothing here asserts how long Litestream takes.
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "walrust's restore never matched the source after batch {n}; last result:\n{}\n\
                 litestream log:\n{log}",
                got.lines().take(3).collect::<Vec<_>>().join("\n")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Every restore point on the way, by content: walrust's restore at the end of each file
    // from the first snapshot on equals `litestream restore -txid` of the same point
    // (Litestream reading its own replica is the oracle). Each batch's state is among them.
    let files = store.list(None, store::Times::Listed).unwrap();
    let first_snapshot = files
        .iter()
        .filter(|f| f.key.level == 9)
        .map(|f| f.key.max_txid)
        .min()
        .expect("litestream wrote a snapshot");
    let mut seen = Vec::new();
    for f in files
        .iter()
        .filter(|f| (f.key.level == 0 || f.key.level == 9) && f.key.max_txid >= first_snapshot)
    {
        let t = f.key.max_txid.get();
        let oracle = dir
            .path()
            .join(format!("litestream-at-{}-{t}.db", f.key.level));
        litestream_restore(&bin, &replica, &oracle, &["-txid", &format!("{t:016x}")]);
        let want = python(DUMP, &[oracle.to_str().unwrap()]);
        assert!(
            want.starts_with("ok\n"),
            "litestream's restore at {t}: {want}"
        );
        let out = dir.path().join(format!("at-{}-{t}.db", f.key.level));
        let tmp = restore(store.as_ref(), &out, Target::Txid(f.key.max_txid)).unwrap();
        assert_eq!(tmp.txid(), f.key.max_txid);
        tmp.commit().unwrap();
        assert!(
            python(DUMP, &[out.to_str().unwrap()]) == want,
            "walrust's restore at TXID {t} differs from litestream's"
        );
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
