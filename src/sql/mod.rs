//! The SQL surface: a thin layer of functions over the stages (SPEC section 4). PRAGMAs are
//! handled through the VFS (`vfs::ffi` calls `database::Database::pragma`), since SQLite hands
//! unknown PRAGMAs to the database file.
//!
//! `register_all` registers every function on a connection; the functions that act or reach
//! outside the database are `SQLITE_DIRECTONLY`, so a trigger or view in a crafted database
//! cannot call them. Every error is an SQL error whose message starts with `walrust: `.

mod args;
mod functions;
mod replica_fns;
mod status;

pub use replica_fns::MODULES;

use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;

/// The functions walrust registers, as `pragma_function_list` shows them.
pub const FUNCTIONS: [&str; 8] = [
    "walrust_compact",
    "walrust_restore",
    "walrust_snapshot",
    "walrust_status",
    "walrust_sync",
    "walrust_takeover",
    "walrust_verify",
    "walrust_version",
];

fn pure() -> FunctionFlags {
    FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS
}

fn direct() -> FunctionFlags {
    FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DIRECTONLY
}

pub fn register_all(conn: &Connection) -> rusqlite::Result<()> {
    conn.create_scalar_function(
        "walrust_version",
        0,
        pure() | FunctionFlags::SQLITE_DETERMINISTIC,
        |_| Ok(env!("CARGO_PKG_VERSION").to_string()),
    )?;
    conn.create_scalar_function("walrust_status", -1, pure(), status::walrust_status)?;
    conn.create_scalar_function("walrust_sync", -1, direct(), functions::walrust_sync)?;
    conn.create_scalar_function(
        "walrust_snapshot",
        -1,
        direct(),
        functions::walrust_snapshot,
    )?;
    conn.create_scalar_function("walrust_restore", -1, direct(), functions::walrust_restore)?;
    conn.create_scalar_function(
        "walrust_takeover",
        -1,
        direct(),
        functions::walrust_takeover,
    )?;
    conn.create_scalar_function("walrust_verify", 1, direct(), replica_fns::walrust_verify)?;
    conn.create_scalar_function(
        "walrust_compact",
        -1,
        direct(),
        replica_fns::walrust_compact,
    )?;
    replica_fns::register_files(conn)?;
    Ok(())
}

/// Runs for every connection opened after the extension was loaded. An error fails the open
/// with its message (a replica conflict).
pub fn on_connection_open(conn: &Connection) -> Result<(), String> {
    if let Some(path) = conn.path().filter(|p| !p.is_empty()) {
        if let Some(db) = crate::database::lookup(std::path::Path::new(path)) {
            if let Some(msg) = db.take_conflict() {
                return Err(msg);
            }
        }
    }
    register_all(conn).map_err(|e| format!("walrust: cannot register SQL functions: {e}"))
}

/// An SQL function's error: the message is shown as is.
#[derive(Debug)]
pub struct SqlError(pub String);

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SqlError {}

pub(crate) fn err(msg: impl Into<String>) -> rusqlite::Error {
    let msg = msg.into();
    let msg = if msg.starts_with("walrust: ") {
        msg
    } else {
        format!("walrust: {msg}")
    };
    rusqlite::Error::UserFunctionError(Box::new(SqlError(msg)))
}
