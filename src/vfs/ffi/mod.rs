//! Every `unsafe` line of walrust lives under this module: the `walrust` VFS's C callbacks, the
//! extension entry point, a small handle for reading a database file through a connection's own
//! handle (`MainFile`), the POSIX calls of `walrust watch` (`posix`), and `schema_path`.
//!
//! Rules: every callback runs its body through [`guard`], which catches panics and turns them
//! into an SQLite error code (a panic must never unwind into C); callbacks only translate
//! pointers into safe values and call the safe hooks in `crate::database`; and a hook's failure
//! is never allowed to fail the application's I/O unless SQLite's own I/O failed. `MainFile`,
//! `posix` and `schema_path` are leaves: they call no walrust code outside this module (`MainFile`
//! only reads through a connection's file pointer), so `database`, `watch` and `sql` use them without a
//! cycle through the callbacks.

mod entry;
mod io;
mod methods;
pub mod posix;
mod raw;

pub use raw::MainFile;

use rusqlite::ffi;
use std::ffi::c_int;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Runs a callback body; a panic becomes `on_panic` (and a message on stderr).
fn guard<T>(on_panic: T, body: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(v) => v,
        Err(e) => {
            let msg = e
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| e.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            crate::log::error(&format!(
                "internal error (panic caught at the SQLite boundary): {msg}"
            ));
            on_panic
        }
    }
}

/// Error code for a panic in a callback that returns an SQLite result code.
const PANIC_RC: c_int = ffi::SQLITE_IOERR;

/// Reads a C string argument; `None` for NULL or invalid UTF-8.
unsafe fn cstr<'a>(p: *const std::ffi::c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    unsafe { std::ffi::CStr::from_ptr(p) }.to_str().ok()
}

/// Copies a Rust string into memory from `sqlite3_malloc`, as SQLite expects for messages and
/// PRAGMA results it will free.
unsafe fn sqlite_string(s: &str) -> *mut std::ffi::c_char {
    let p = unsafe { ffi::sqlite3_malloc(s.len() as c_int + 1) } as *mut u8;
    if !p.is_null() {
        unsafe {
            std::ptr::copy_nonoverlapping(s.as_ptr(), p, s.len());
            *p.add(s.len()) = 0;
        }
    }
    p as *mut std::ffi::c_char
}

pub use entry::sqlite3_walrust_init;

/// Reads `schema`'s header through the connection running an SQL function (SQLite allows
/// a function to run statements on its own connection): the application's first read after
/// an open, so WAL recovery, if the database needs it, runs now, under the caller's busy
/// timeout, instead of walrust's own connection waiting for it (`Database::recovery_pending`).
/// False if the read failed (busy, say): nothing else changes.
pub fn read_through_caller(ctx: &rusqlite::functions::Context<'_>, schema: &str) -> bool {
    let sql = format!("PRAGMA \"{}\".schema_version", schema.replace('"', "\"\""));
    // SAFETY: the connection outlives the function call that gave us `ctx`, and the
    // statement is finalized before this returns.
    let Ok(conn) = (unsafe { ctx.get_connection() }) else {
        return false;
    };
    conn.query_row(&sql, [], |r| r.get::<_, i64>(0)).is_ok()
}

/// The file behind `schema` ("main", "aux", ...) of the connection running an SQL function.
pub fn schema_path(
    ctx: &rusqlite::functions::Context<'_>,
    schema: &str,
) -> Option<std::path::PathBuf> {
    let schema = std::ffi::CString::new(schema).ok()?;
    unsafe {
        // SAFETY: the connection outlives the function call that gave us `ctx`; the returned
        // name is copied before the call ends.
        let conn = ctx.get_connection().ok()?;
        let p = ffi::sqlite3_db_filename(conn.handle(), schema.as_ptr());
        cstr(p)
            .filter(|s| !s.is_empty())
            .map(std::path::PathBuf::from)
    }
}
