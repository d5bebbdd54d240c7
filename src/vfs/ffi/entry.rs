//! The extension entry point, `sqlite3_walrust_init` (SQLite derives the name from
//! `libwalrust.so`), and the auto-extension hook that gives every later connection the SQL
//! functions.

use super::guard;
use rusqlite::{ffi, Connection};
use std::ffi::{c_char, c_int};
/// Called by SQLite when the library is loaded. Registers the VFS (as the default), the SQL
/// functions on this connection and, through an auto-extension, on every connection opened
/// later; asks SQLite to keep the library loaded for the life of the process.
///
/// # Safety
/// Called by SQLite with a valid connection handle and API routines table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_walrust_init(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    p_api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || unsafe {
        Connection::extension_init2(db, pz_err_msg, p_api, init)
    })
}

fn init(conn: Connection) -> rusqlite::Result<bool> {
    super::methods::register().map_err(rusqlite::Error::ModuleError)?;
    // Every load, not once: `sqlite3_shutdown` forgets auto-extensions, and a load after
    // the next `sqlite3_initialize` must bring them back. SQLite keeps one registration of an
    // entry point however often it is given.
    unsafe {
        // SAFETY: the signature matches what sqlite3_auto_extension calls.
        let entry: unsafe extern "C" fn() = std::mem::transmute(auto_entry as *const ());
        ffi::sqlite3_auto_extension(Some(entry));
    }
    crate::sql::register_all(&conn)?;
    install_wal_hook(&conn);
    Ok(true)
}

/// Replaces SQLite's automatic-checkpoint hook on a connection with walrust's: for a database
/// replicating with `walrust_checkpoint=background` the commit only tells the checkpoint thread
/// how large the WAL is; for every other database it does exactly what SQLite's default hook
/// does (a PASSIVE checkpoint once the WAL holds 1000 frames). `PRAGMA wal_autocheckpoint`
/// replaces this hook with SQLite's own, as it always does.
fn install_wal_hook(conn: &Connection) {
    unsafe { install_wal_hook_raw(conn.handle()) }
}

/// # Safety
/// `db` is a live connection handle; called on its thread (or with its mutex held).
pub(super) unsafe fn install_wal_hook_raw(db: *mut ffi::sqlite3) {
    // SAFETY: the hook and its (null) argument live for the life of the process.
    unsafe { ffi::sqlite3_wal_hook(db, Some(wal_hook), std::ptr::null_mut()) };
}

/// SQLite's default for `wal_autocheckpoint`.
const DEFAULT_AUTOCHECKPOINT: c_int = 1000;

unsafe extern "C" fn wal_hook(
    _arg: *mut std::ffi::c_void,
    db: *mut ffi::sqlite3,
    schema: *const c_char,
    frames: c_int,
) -> c_int {
    guard(ffi::SQLITE_OK, || unsafe {
        let path = super::cstr(ffi::sqlite3_db_filename(db, schema));
        let handled = path.is_some_and(|p| {
            crate::checkpoint::on_commit(std::path::Path::new(p), frames.max(0) as u32)
        });
        if !handled && frames >= DEFAULT_AUTOCHECKPOINT {
            crate::checkpoint::sqlite_checkpoint(path.map(std::path::Path::new), || {
                ffi::sqlite3_wal_checkpoint(db, schema);
            });
        }
        ffi::SQLITE_OK
    })
}

/// Runs for each connection opened after the load: SQL functions, and the check that this
/// connection did not ask for a replica other than the one its database already uses.
unsafe extern "C" fn auto_entry(
    db: *mut ffi::sqlite3,
    pz_err_msg: *mut *mut c_char,
    _api: *const ffi::sqlite3_api_routines,
) -> c_int {
    guard(ffi::SQLITE_ERROR, || unsafe {
        let conn = match Connection::from_handle(db) {
            Ok(c) => c,
            Err(_) => return ffi::SQLITE_ERROR,
        };
        let result = crate::sql::on_connection_open(&conn);
        if result.is_ok() {
            install_wal_hook(&conn);
        }
        match result {
            Ok(()) => ffi::SQLITE_OK,
            Err(msg) => {
                if !pz_err_msg.is_null() {
                    *pz_err_msg = super::sqlite_string(&msg);
                }
                ffi::SQLITE_ERROR
            }
        }
    })
}
