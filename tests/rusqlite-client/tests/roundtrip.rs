//! walrust from a Rust application through rusqlite, with rusqlite's bundled SQLite (newer
//! than Debian's, which the other suites use): load the extension, replicate a few
//! transactions to a local-directory replica, `walrust_sync()`, restore with
//! `walrust_restore()`, and compare the restored database with the original row for row.
//!
//! The extension is `$WALRUST_EXT`, else `target/release/libwalrust` of the main crate
//! (`make build` first).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OpenFlags};

type Row = (i64, String, Vec<u8>);

fn extension() -> PathBuf {
    match std::env::var_os("WALRUST_EXT") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/libwalrust"),
    }
}

fn scratch_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("walrust-rusqlite-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn rows(conn: &Connection) -> Vec<Row> {
    let mut stmt = conn
        .prepare("SELECT id, name, data FROM t ORDER BY id")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap();
    rows.collect::<Result<_, _>>().unwrap()
}

fn one<T: rusqlite::types::FromSql>(conn: &Connection, sql: &str) -> T {
    conn.query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

#[test]
fn replicate_sync_restore_compare() {
    let dir = scratch_dir();
    let ext = extension();

    // Load once, into any connection: the VFS becomes the default and the functions are
    // registered on every connection opened afterwards (SPEC 1).
    let loader = Connection::open_in_memory().unwrap();
    unsafe {
        loader.load_extension_enable().unwrap();
        loader
            .load_extension(&ext, None::<&str>)
            .unwrap_or_else(|e| panic!("loading {}: {e}", ext.display()));
        loader.load_extension_disable().unwrap();
    }
    let version: String = one(&loader, "SELECT walrust_version()");
    assert!(version.starts_with("0."), "walrust_version() = {version:?}");

    let db = dir.join("app.db");
    let replica = format!("file://{}", dir.join("replica").display());
    let uri = format!("file:{}?walrust_replica={}", db.display(), replica);
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&uri, flags).unwrap();
    assert_eq!(one::<String>(&conn, "PRAGMA journal_mode=WAL"), "wal");

    conn.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)")
        .unwrap();
    for txn in 0..5u8 {
        let tx = conn.unchecked_transaction().unwrap();
        for i in 0..20usize {
            // Some rows larger than a page, so overflow pages are replicated too.
            let data =
                vec![txn.wrapping_mul(31).wrapping_add(i as u8); 97 * i * (txn as usize + 1)];
            tx.execute(
                "INSERT INTO t(name, data) VALUES (?1, ?2)",
                (format!("t{txn}-r{i}"), data),
            )
            .unwrap();
        }
        tx.commit().unwrap();
    }
    conn.execute("DELETE FROM t WHERE id % 7 = 0", []).unwrap();

    let synced: i64 = one(&conn, "SELECT walrust_sync()");
    let txid: i64 = one(&conn, "SELECT json_extract(walrust_status(), '$.txid')");
    assert_eq!(
        synced, txid,
        "walrust_sync() returns the uploaded TXID, the newest here"
    );

    let out = dir.join("restored.db");
    let restored: i64 = conn
        .query_row(
            "SELECT walrust_restore(?1, ?2)",
            (&replica, out.to_str().unwrap()),
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(restored, synced);

    let copy = Connection::open(&out).unwrap();
    assert_eq!(one::<String>(&copy, "PRAGMA integrity_check"), "ok");
    let (want, got) = (rows(&conn), rows(&copy));
    assert_eq!(want.len(), 5 * 20 - (5 * 20) / 7);
    assert!(
        want == got,
        "restored rows differ ({} vs {} rows)",
        want.len(),
        got.len()
    );

    drop(copy);
    drop(conn);
    std::fs::remove_dir_all(&dir).unwrap();
}
