//! walrust: continuous replication of SQLite to S3-compatible object storage, as a loadable
//! extension.
//!
//! Data flow, one module per stage:
//! `vfs` (capture committed transactions at xWrite; all FFI) → `shadow` (durable local queue) →
//! `upload` (batching, retries) → `ltx` (codec) → `store` (one narrow trait; `fs` and `s3`).
//! Reading back: `restore`, `compact`, `retention`. `sql` is a thin layer of SQL functions and
//! PRAGMAs over these.

pub mod clock;
pub mod ltx;
pub mod manifest;
pub mod restore;
pub mod store;
pub mod types;

pub use types::{Checksum, PageNo, Txid};
