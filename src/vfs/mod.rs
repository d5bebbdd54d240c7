//! Capture at the source: the `walrust` VFS wraps the process's default VFS and watches every
//! write SQLite makes to a `-wal` file, turning WAL frames into committed transactions that are
//! appended to the shadow log before the commit returns.
//!
//! `ffi/` holds every `unsafe` line of the crate (C callbacks, the extension entry point);
//! `database` holds the safe hooks those callbacks call; `capture` and `commit` are the pure
//! logic of recognising commits and proving the log's continuity; SQLite's WAL format is
//! `crate::wal`.
//! What must hold: the VFS never fails or delays the application's I/O for replication's sake,
//! and never touches the network.

pub mod capture;
pub mod commit;
pub mod database;
pub mod ffi;

pub use ffi::RawFile;
