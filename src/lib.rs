//! walrust: continuous replication of SQLite to S3-compatible object storage, as a loadable
//! extension.
//!
//! Data flow, one module per stage:
//! `vfs` (the VFS; all FFI) → `database` (per-database wiring: the hooks the VFS calls) →
//! `capture` (committed transactions from WAL writes; SQLite's WAL format is `wal`) → `shadow`
//! (durable local queue) → `upload` (batching, retries) → `ltx` (codec) → `store` (one narrow
//! trait; `fs` and `s3`). Reading back: `restore`. `sql` is a thin layer of SQL functions over
//! these; `replication` holds one database's running stages.

pub mod capture;
pub mod checkpoint;
pub mod cleanup;
pub mod clock;
pub mod compact;
pub mod config;
pub mod database;
pub mod failpoint;
pub mod growth;
pub mod history;
pub mod log;
pub mod ltx;
pub mod manifest;
pub mod replication;
pub mod restore;
pub mod settle;
pub mod shadow;
pub mod sql;
pub mod store;
pub mod types;
pub mod upload;
pub mod vfs;
pub mod wal;
pub mod watch;

pub use types::{Checksum, PageNo, Txid};
