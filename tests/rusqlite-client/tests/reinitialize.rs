//! An application that shuts SQLite down and initialises it again (to change its
//! configuration, say), then loads walrust again, keeps replicating. `sqlite3_shutdown()`
//! forgets every auto-extension and the next `sqlite3_initialize()` makes the OS's VFS the
//! default again, so new connections would bypass walrust, and nothing of theirs would be
//! captured, without a word; walrust's next load puts its VFS back as the default and its
//! auto-extension back. (A file of its own: shutting SQLite down is process-wide.)

use std::ffi::CStr;
use std::path::{Path, PathBuf};

use rusqlite::{ffi, Connection, OpenFlags};

fn extension() -> PathBuf {
    match std::env::var_os("WALRUST_EXT") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/release/libwalrust"),
    }
}

/// Loads walrust through a connection that is closed right after: walrust stays loaded.
fn load(ext: &Path) {
    let loader = Connection::open_in_memory().unwrap();
    unsafe {
        loader.load_extension_enable().unwrap();
        loader
            .load_extension(ext, None::<&str>)
            .unwrap_or_else(|e| panic!("loading {}: {e}", ext.display()));
    }
}

fn default_vfs() -> String {
    // SAFETY: the default VFS and its name live as long as the process.
    unsafe { CStr::from_ptr((*ffi::sqlite3_vfs_find(std::ptr::null())).zName) }
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_load_after_sqlite_is_initialised_again_makes_walrust_the_default_again() {
    let ext = extension();
    load(&ext);
    assert_eq!(default_vfs(), "walrust");
    // SAFETY: no connection is open (the loader is closed), as sqlite3_shutdown requires.
    unsafe {
        assert_eq!(ffi::sqlite3_shutdown(), ffi::SQLITE_OK);
        assert_eq!(ffi::sqlite3_initialize(), ffi::SQLITE_OK);
    }
    assert_ne!(
        default_vfs(),
        "walrust",
        "SQLite made its own VFS the default again"
    );
    load(&ext);
    assert_eq!(
        default_vfs(),
        "walrust",
        "the load after it made walrust the default again"
    );

    let dir = std::env::temp_dir().join(format!("walrust-reinit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let replica = format!("file://{}", dir.join("replica").display());
    let uri = format!(
        "file:{}?walrust_replica={replica}",
        dir.join("app.db").display()
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(&uri, flags).unwrap();
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .unwrap();
    conn.execute_batch("CREATE TABLE t(x); INSERT INTO t VALUES (1), (2);")
        .unwrap();
    // The SQL functions reached this connection through the auto-extension, and its commits
    // were captured through the VFS.
    let synced: i64 = conn
        .query_row("SELECT walrust_sync()", [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("walrust_sync(): {e}"));
    assert!(
        synced >= 2,
        "walrust_sync() = {synced}: the schema and the rows are uploaded"
    );
    drop(conn);
    std::fs::remove_dir_all(&dir).unwrap();
}
