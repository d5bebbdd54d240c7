//! The `walrust` VFS: it wraps the process's default VFS and sees every write SQLite makes to a
//! `-wal` file, so committed transactions reach the shadow log before the commit returns.
//!
//! Only the FFI lives here: `ffi/` holds every `unsafe` line of the crate (the sqlite3_vfs and
//! io_methods callbacks, the extension entry point, `MainFile`, the POSIX calls of `walrust
//! watch`, `schema_path` for SQL functions). The callbacks translate pointers into safe values
//! and call the hooks of `crate::database` (the callback boundary); recognising commits is
//! `crate::capture`, SQLite's WAL format `crate::wal`.
//!
//! Edges: `vfs::ffi`'s callbacks call `database`, `checkpoint` (the WAL hook) and `sql`
//! (registering functions); the leaves `MainFile`, `ffi::posix` and `ffi::schema_path` call
//! nothing outside `vfs::ffi` and are used by `database`, `watch` and `sql`. Nothing of `upload`,
//! `checkpoint`, `capture`, `shadow` or `replication` imports `vfs`.
//! What must hold: the VFS never fails or delays the application's I/O for replication's sake,
//! and never touches the network.

pub mod ffi;

pub use ffi::MainFile;
