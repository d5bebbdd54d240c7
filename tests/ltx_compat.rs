//! Golden tests of `walrust::ltx` against the real `litestream` 0.5.17 binary, both ways:
//! - `litestream replicate` writes a replica; every file it wrote decodes with our `Decoder`
//!   (checksums, page index, page rules), and applying snapshot + level-0 files with plain file
//!   writes reproduces the source database byte for byte (and `litestream restore`'s output).
//! - our `Encoder` writes a snapshot and incrementals (growing and shrinking the database);
//!   `litestream restore` restores them exactly, by default, by `-txid` and by `-timestamp`, and
//!   refuses a gap in level 0 the way `mod.rs` documents.
//! - the committed fixtures (tests/fixtures/ltx/) decode and apply without the binary.
//!
//! The binary comes from `WALRUST_LITESTREAM`, else `<repo>/.venv/bin/litestream`, else PATH;
//! without it the binary tests fail (skip only with `WALRUST_ALLOW_SKIP=1`). Databases are made
//! with Debian's `/usr/bin/python3` (`sqlite3` module) and inspected with `/usr/bin/sqlite3`.
//! `WALRUST_UPDATE_FIXTURES=1` regenerates the fixtures from a fresh litestream run.

mod common;
use common::tools::litestream;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use walrust::ltx::{self, Decoder, Encoder, Header};
use walrust::{Checksum, PageNo, Txid};

const PYTHON: &str = "/usr/bin/python3";
const SQLITE3: &str = "/usr/bin/sqlite3";

/// A unique directory under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let n = N.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!(
            "walrust-ltx-{tag}-{}-{n}-{nanos}",
            std::process::id()
        ));
        fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn python(script: &str, args: &[&str]) {
    run(Command::new(PYTHON).arg("-c").arg(script).args(args));
}

/// `.dump` of a database, opened immutable so that no -wal/-shm is created or read.
fn dump(db: &Path) -> String {
    run(Command::new(SQLITE3)
        .arg(format!("file:{}?immutable=1", db.display()))
        .arg(".dump"))
}

const CREATE: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute(f"pragma page_size={int(sys.argv[2])}")
c.execute("pragma journal_mode=wal")
c.execute("create table t(id integer primary key, k text, v blob)")
c.execute("create index t_k on t(k)")
c.execute("insert into t(k, v) values('first', zeroblob(10))")
"#;

/// Several transactions: small rows, overflow blobs (2-3 pages), updates, a delete.
const BATCH: &str = r#"
import random, sqlite3, sys
db, ps, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
random.seed(seed)
c = sqlite3.connect(db, isolation_level=None)
for i in range(4):
    c.execute("begin")
    c.execute("insert into t(k, v) values(?, ?)", (f"k{seed}-{i}", random.randbytes(ps * 2 + 100 * i)))
    c.execute("insert into t(k, v) values(?, ?)", (f"s{seed}-{i}", b"x" * 50))
    c.execute("update t set k = k || 'u' where id % 3 = ?", (i % 3,))
    if i == 3:
        c.execute("delete from t where id % 5 = 0")
    c.execute("commit")
"#;

const SHRINK: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("delete from t where id % 2 = 0")
c.execute("vacuum")
"#;

const CHECKPOINT: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
busy, _, _ = c.execute("pragma wal_checkpoint(TRUNCATE)").fetchone()
assert busy == 0, "checkpoint blocked"
"#;

/// Decodes a whole file (pages in memory; test databases are small), checking everything.
fn read_ltx(path: &Path) -> (Header, BTreeMap<u32, Vec<u8>>) {
    let mut d = Decoder::new(fs::File::open(path).unwrap()).unwrap();
    let mut pages = BTreeMap::new();
    let mut buf = Vec::new();
    while let Some(n) = d.next_page(&mut buf).unwrap() {
        pages.insert(n.get(), buf.clone());
    }
    let header = d.header().clone();
    d.finish()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (header, pages)
}

/// Applies LTX files in order onto a new database file with plain writes; each file is fully
/// verified before any of its pages is written.
fn apply(files: &[PathBuf], out: &Path) {
    let _ = fs::remove_file(out);
    let mut db = Vec::<u8>::new();
    let mut prev_max = 0u64;
    for f in files {
        let (h, pages) = read_ltx(f);
        assert!(
            h.min_txid.get() <= prev_max + 1,
            "gap before {}",
            f.display()
        );
        prev_max = h.max_txid.get();
        let ps = h.page_size as usize;
        db.resize(h.commit as usize * ps, 0);
        for (n, data) in pages {
            if n <= h.commit {
                db[(n as usize - 1) * ps..n as usize * ps].copy_from_slice(&data);
            }
        }
    }
    fs::write(out, db).unwrap();
}

/// All `.ltx` files under `levels` (a file:// replica's `ltx/` directory): (level, path), by
/// level then name.
fn replica_files(levels: &Path) -> Vec<(u32, PathBuf)> {
    let mut out = Vec::new();
    for level in 0..=9 {
        let Ok(rd) = fs::read_dir(levels.join(level.to_string())) else {
            continue;
        };
        for e in rd {
            let p = e.unwrap().path();
            if ltx::parse_file_name(p.file_name().unwrap().to_str().unwrap()).is_some() {
                out.push((level, p));
            }
        }
    }
    out.sort();
    out
}

fn range_of(p: &Path) -> (u64, u64) {
    let (a, b) = ltx::parse_file_name(p.file_name().unwrap().to_str().unwrap()).unwrap();
    (a.get(), b.get())
}

/// The newest snapshot, then level-0 files continuing it: what a simple restore applies.
fn restore_chain(levels: &Path) -> Option<Vec<PathBuf>> {
    let files = replica_files(levels);
    let snap = files
        .iter()
        .filter(|(l, _)| *l == 9)
        .map(|(_, p)| p)
        .next_back()?;
    let mut chain = vec![snap.clone()];
    let mut max = range_of(snap).1;
    for (_, p) in files.iter().filter(|(l, _)| *l == 0) {
        let (a, b) = range_of(p);
        if b > max && a <= max + 1 {
            chain.push(p.clone());
            max = b;
        }
    }
    Some(chain)
}

struct Replicator {
    child: Child,
    log: PathBuf,
}

impl Replicator {
    fn start(bin: &Path, dir: &TempDir, db: &Path, replica: &Path) -> Replicator {
        let config = dir.path("litestream.yml");
        fs::write(
            &config,
            format!(
                "dbs:\n  - path: {}\n    replica:\n      url: file://{}\n      sync-interval: 100ms\n",
                db.display(),
                replica.display()
            ),
        )
        .unwrap();
        let log = dir.path("litestream.log");
        let out = fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .args(["replicate", "-config"])
            .arg(&config)
            .env_remove("AWS_CA_BUNDLE")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Replicator { child, log }
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Replicator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_for(what: &str, rep: &Replicator, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for {what}; litestream log:\n{}",
            rep.log()
        );
        sleep(Duration::from_millis(250));
    }
}

fn litestream_restore(
    bin: &Path,
    replica: &Path,
    out: &Path,
    extra: &[&str],
) -> Result<(), String> {
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
    if res.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&res.stdout),
            String::from_utf8_lossy(&res.stderr)
        ))
    }
}

fn replicate_then_decode(page_size: u32) {
    let Some(bin) = litestream() else { return };
    let dir = TempDir::new(&format!("replicate-{page_size}"));
    let (db, replica) = (dir.path("app.db"), dir.path("replica"));
    let levels = replica.join("ltx");
    let ps = page_size.to_string();
    python(CREATE, &[db.to_str().unwrap(), &ps]);

    let rep = Replicator::start(&bin, &dir, &db, &replica);
    wait_for("the first snapshot", &rep, Duration::from_secs(30), || {
        restore_chain(&levels).is_some()
    });
    for seed in 1..=3 {
        python(BATCH, &[db.to_str().unwrap(), &ps, &seed.to_string()]);
        sleep(Duration::from_millis(1200)); // separate level-0 files
    }
    let probe = dir.path("probe.db");
    let want = run(Command::new(SQLITE3).arg(&db).arg(".dump"));
    wait_for(
        "litestream to catch up",
        &rep,
        Duration::from_secs(30),
        || {
            restore_chain(&levels).is_some_and(|c| {
                apply(&c, &probe);
                dump(&probe) == want
            })
        },
    );
    drop(rep);

    // Every file litestream wrote decodes and matches its name; Litestream's own flags.
    let files = replica_files(&levels);
    assert!(
        files.iter().filter(|(l, _)| *l == 0).count() >= 3,
        "{files:?}"
    );
    for (level, f) in &files {
        let (h, trailer) = ltx::verify(fs::File::open(f).unwrap()).unwrap();
        assert_eq!(
            (h.min_txid.get(), h.max_txid.get()),
            range_of(f),
            "{}",
            f.display()
        );
        assert_eq!(
            (h.version, h.flags, h.page_size),
            (3, ltx::FLAG_NO_CHECKSUM, page_size)
        );
        assert_eq!(trailer.post_apply_checksum, Checksum(0));
        if *level == 9 {
            assert!(h.is_snapshot(), "{}", f.display());
        }
        let idx = ltx::read_page_index(&mut fs::File::open(f).unwrap()).unwrap();
        let (_, pages) = read_ltx(f);
        let listed: Vec<u32> = idx.iter().map(|e| e.pgno.get()).collect();
        assert_eq!(listed, pages.keys().copied().collect::<Vec<_>>());
    }

    // Applied chain == checkpointed source, byte for byte, and == litestream's own restore.
    python(CHECKPOINT, &[db.to_str().unwrap()]);
    let applied = dir.path("applied.db");
    apply(&restore_chain(&levels).unwrap(), &applied);
    assert!(
        fs::read(&applied).unwrap() == fs::read(&db).unwrap(),
        "applied != source"
    );
    let restored = dir.path("restored.db");
    litestream_restore(&bin, &replica, &restored, &[]).unwrap();
    assert!(
        fs::read(&restored).unwrap() == fs::read(&db).unwrap(),
        "restore != source"
    );

    if page_size == 512 && std::env::var_os("WALRUST_UPDATE_FIXTURES").is_some() {
        update_fixtures(&bin, &levels, &dir);
    }
}

#[test]
fn litestream_replica_decodes_page_size_512() {
    replicate_then_decode(512);
}

#[test]
fn litestream_replica_decodes_page_size_4096() {
    replicate_then_decode(4096);
}

#[test]
fn litestream_replica_decodes_page_size_65536() {
    replicate_then_decode(65536);
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ltx")
}

/// Copies the snapshot and the next two level-0 files of a litestream replica into
/// tests/fixtures/ltx/, with `expected.db` restored from just those files by litestream.
fn update_fixtures(bin: &Path, levels: &Path, dir: &TempDir) {
    let chain = restore_chain(levels).unwrap();
    assert!(chain.len() >= 3, "{chain:?}");
    let fixtures = fixtures_dir();
    let mini = dir.path("fixture-replica");
    for level in ["9", "0"] {
        let _ = fs::remove_dir_all(fixtures.join(level));
    }
    for (i, f) in chain[..3].iter().enumerate() {
        let rel = Path::new(if i == 0 { "9" } else { "0" }).join(f.file_name().unwrap());
        for root in [&fixtures, &mini.join("ltx")] {
            fs::create_dir_all(root.join(rel.parent().unwrap())).unwrap();
            fs::copy(f, root.join(&rel)).unwrap();
        }
    }
    let expected = fixtures.join("expected.db");
    let _ = fs::remove_file(&expected);
    litestream_restore(bin, &mini, &expected, &[]).unwrap();
    eprintln!("fixtures updated in {}", fixtures.display());
}

#[test]
fn litestream_fixtures_decode_and_apply() {
    // Runs without the binary: files litestream 0.5.17 wrote, and its restore of them.
    let fixtures = fixtures_dir();
    let files = replica_files(&fixtures);
    assert_eq!(files.len(), 3, "{files:?}");
    assert_eq!(files.iter().filter(|(l, _)| *l == 9).count(), 1);
    let chain = restore_chain(&fixtures).unwrap();
    assert_eq!(chain.len(), 3);
    for f in &chain {
        let bytes = fs::read(f).unwrap();
        let (h, _) = ltx::verify(&bytes[..]).unwrap();
        assert_eq!(
            (h.version, h.flags, h.page_size),
            (3, ltx::FLAG_NO_CHECKSUM, 512)
        );
        assert_eq!((h.min_txid.get(), h.max_txid.get()), range_of(f));
        // Random access through the page index agrees with streaming.
        let (_, pages) = read_ltx(f);
        let idx = ltx::read_page_index(&mut std::io::Cursor::new(&bytes)).unwrap();
        assert_eq!(idx.len(), pages.len());
        let mut out = Vec::new();
        for e in idx {
            let frame = &bytes[e.offset as usize..(e.offset + e.size) as usize];
            assert_eq!(
                ltx::decode_page_frame(frame, 512, &mut out).unwrap(),
                e.pgno
            );
            assert_eq!(&out, &pages[&e.pgno.get()]);
        }
        // A flipped byte anywhere in the file is an integrity error.
        for at in [
            0,
            40,
            101,
            bytes.len() / 2,
            bytes.len() - 20,
            bytes.len() - 1,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x08;
            let e = ltx::verify(&bad[..]).unwrap_err();
            assert!(e.is_integrity(), "{} byte {at}: {e}", f.display());
        }
    }
    let dir = TempDir::new("fixtures");
    let applied = dir.path("applied.db");
    apply(&chain, &applied);
    assert!(fs::read(applied).unwrap() == fs::read(fixtures.join("expected.db")).unwrap());
}

/// The pages of a database file, by number.
fn db_pages(bytes: &[u8], page_size: u32) -> Vec<&[u8]> {
    assert_eq!(bytes.len() % page_size as usize, 0);
    bytes.chunks(page_size as usize).collect()
}

/// Writes an LTX file into `replica/ltx/<level>/`, with its mtime at the header timestamp as
/// Litestream's file backend does (restore by time reads the mtime).
fn put_ltx(replica: &Path, level: u32, header: Header, pages: &[(u32, &[u8])]) {
    let dir = replica.join(format!("ltx/{level}"));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(ltx::file_name(header.min_txid, header.max_txid));
    let ts = header.timestamp_ms as u64;
    let mut enc = Encoder::new(fs::File::create(&path).unwrap(), header).unwrap();
    for (n, data) in pages {
        enc.write_page(PageNo::new(*n).unwrap(), data).unwrap();
    }
    let (f, _) = enc.finish(Checksum(0)).unwrap();
    f.set_modified(UNIX_EPOCH + Duration::from_millis(ts))
        .unwrap();
}

fn snapshot(replica: &Path, db: &[u8], ps: u32, max: u64, ts: i64) {
    let pages = db_pages(db, ps);
    let list: Vec<(u32, &[u8])> = (1..).zip(pages.iter().copied()).collect();
    let h = Header::new(ps, list.len() as u32, Txid::ONE, txid(max), ts);
    put_ltx(replica, 9, h, &list);
}

/// An incremental file taking `old` to `new`: the pages that differ or are new.
fn incremental(
    replica: &Path,
    level: u32,
    old: &[u8],
    new: &[u8],
    ps: u32,
    range: (u64, u64),
    ts: i64,
) {
    let (old, new) = (db_pages(old, ps), db_pages(new, ps));
    let changed: Vec<(u32, &[u8])> = (1..)
        .zip(new.iter().copied())
        .filter(|(n, p)| old.get(*n as usize - 1) != Some(p))
        .collect();
    assert!(!changed.is_empty());
    let h = Header::new(ps, new.len() as u32, txid(range.0), txid(range.1), ts);
    put_ltx(replica, level, h, &changed);
}

fn txid(n: u64) -> Txid {
    Txid::new(n).unwrap()
}

fn our_files_restore_with_litestream(page_size: u32) {
    let Some(bin) = litestream() else { return };
    let dir = TempDir::new(&format!("encode-{page_size}"));
    let db = dir.path("src.db");
    let (dbs, ps) = (db.to_str().unwrap(), page_size.to_string());
    python(CREATE, &[dbs, &ps]);
    let mut versions = Vec::new();
    for step in [BATCH, BATCH, SHRINK] {
        let seed = (versions.len() + 1).to_string();
        python(step, &[dbs, &ps, &seed]);
        python(CHECKPOINT, &[dbs]);
        versions.push(fs::read(&db).unwrap());
    }
    let [v1, v2, v3] = &versions[..] else {
        unreachable!()
    };
    assert!(
        v2.len() > v1.len() && v3.len() < v2.len(),
        "grow then shrink"
    );

    // 2023-11-14T22:13:20Z, +10 s, +20 s.
    let t0 = 1_700_000_000_000i64;
    let replica = dir.path("replica");
    snapshot(&replica, v1, page_size, 1, t0);
    incremental(&replica, 0, v1, v2, page_size, (2, 2), t0 + 10_000);
    incremental(&replica, 0, v2, v3, page_size, (3, 3), t0 + 20_000);
    let check = |name: &str, extra: &[&str], want: &Vec<u8>| {
        let out = dir.path(name);
        litestream_restore(&bin, &replica, &out, extra).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(fs::read(&out).unwrap() == *want, "{name} differs");
    };
    check("latest.db", &[], v3);
    check("txid2.db", &["-txid", "0000000000000002"], v2);
    check("txid1.db", &["-txid", "0000000000000001"], v1);
    check("time.db", &["-timestamp", "2023-11-14T22:13:35Z"], v2);

    // A gap in level 0 is refused, not restored around.
    let gap = dir.path("gap");
    snapshot(&gap, v1, page_size, 1, t0);
    incremental(&gap, 0, v2, v3, page_size, (3, 3), t0 + 20_000);
    let err = litestream_restore(&bin, &gap, &dir.path("gap.db"), &[]).unwrap_err();
    assert!(err.contains("non-contiguous"), "{err}");

    // Another level may continue the chain: snapshot at 9, then 2-3 at level 1 only.
    let multi = dir.path("multi");
    snapshot(&multi, v1, page_size, 1, t0);
    incremental(&multi, 1, v1, v3, page_size, (2, 3), t0 + 20_000);
    let out = dir.path("multi.db");
    litestream_restore(&bin, &multi, &out, &[]).unwrap();
    assert!(
        fs::read(&out).unwrap() == *v3,
        "multi-level restore differs"
    );
}

#[test]
fn litestream_restores_our_files_page_size_512() {
    our_files_restore_with_litestream(512);
}

#[test]
fn litestream_restores_our_files_page_size_4096() {
    our_files_restore_with_litestream(4096);
}

#[test]
fn litestream_restores_our_files_page_size_65536() {
    our_files_restore_with_litestream(65536);
}
