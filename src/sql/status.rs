//! `walrust_status([schema])`: a JSON object describing one database's replication.

use super::err;
use crate::clock::{format_rfc3339_ms, now_ms};
use rusqlite::functions::Context;
use serde_json::{json, Value};

/// The schema argument (`main` when absent or NULL) of `func`.
pub(super) fn schema_arg(ctx: &Context<'_>, i: usize, func: &str) -> rusqlite::Result<String> {
    Ok(super::args::text(ctx, i, func, "schema")?.unwrap_or_else(|| "main".into()))
}

/// Why a database the application opened does not replicate, in the user's terms.
pub(super) fn not_replicating(db: &crate::database::Database) -> String {
    if let Some(p) = db.problem() {
        return p;
    }
    // Printed in its canonical form, which never holds credentials.
    let wanted = db.wanted_replica().map(|u| {
        crate::store::url::ReplicaUrl::parse(&u)
            .map_or_else(|_| "its replica".to_string(), |u| u.to_string())
    });
    match wanted {
        Some(url) => format!(
            "walrust: {} does not replicate to {url} yet: it is not in WAL mode; run PRAGMA journal_mode=WAL",
            db.path.display()
        ),
        None => format!(
            "walrust: {} is not replicating: no replica is set; set one with PRAGMA walrust_replica = 'file:///dir' (or s3://...), the walrust_replica URI parameter, or WALRUST_REPLICA_ROOT, on a WAL-mode database",
            db.path.display()
        ),
    }
}

/// The database's replication, started first if it only waits for the connection's first
/// read: with a replica set on a database in WAL mode, replication starts when SQLite opens the
/// WAL, at the first read or write (after `PRAGMA journal_mode=WAL` on a new database, say),
/// and this call is that read.
pub(super) fn replication_now(
    ctx: &Context<'_>,
    schema: &str,
    db: &crate::database::Database,
) -> Option<std::sync::Arc<crate::replication::Replication>> {
    if db.replication().is_none() && db.wanted_replica().is_some() && db.problem().is_none() {
        crate::vfs::ffi::read_through_caller(ctx, schema);
    }
    db.replication()
}

pub(super) fn database(
    ctx: &Context<'_>,
    schema: &str,
) -> rusqlite::Result<std::sync::Arc<crate::database::Database>> {
    let path = crate::vfs::ffi::schema_path(ctx, schema).ok_or_else(|| {
        err(format!(
            "no database file for schema '{schema}' (in-memory or temporary)"
        ))
    })?;
    crate::database::lookup(&path).ok_or_else(|| {
        err(format!(
            "{} was not opened through the walrust VFS; load walrust before opening the database",
            path.display()
        ))
    })
}

pub(super) fn walrust_status(ctx: &Context<'_>) -> rusqlite::Result<String> {
    let schema = schema_arg(ctx, 0, "walrust_status")?;
    let db = database(ctx, &schema)?;
    let Some(repl) = replication_now(ctx, &schema, &db) else {
        let why = not_replicating(&db);
        let v = json!({
            "database": db.path.display().to_string(),
            "replica": Value::Null, "txid": 0, "uploaded_txid": 0, "pending_txns": 0,
            "pending_bytes": 0, "lag_ms": 0, "last_error": why, "last_upload_at": Value::Null, "warning": Value::Null,
        });
        return Ok(v.to_string());
    };
    let s = repl.status();
    let grouped = repl.wal.grouped.load(std::sync::atomic::Ordering::Acquire);
    let txid = (s.local_txid + grouped).max(s.uploaded_txid);
    let v = json!({
        "database": db.path.display().to_string(),
        "replica": repl.url,
        "txid": txid,
        "uploaded_txid": s.uploaded_txid,
        "pending_txns": txid.saturating_sub(s.uploaded_txid),
        "pending_bytes": s.pending_bytes,
        "lag_ms": s.oldest_pending_ms.map_or(0, |t| (now_ms() - t).max(0)),
        "last_error": db.paused().or(s.last_error),
        "notice": s.notice,
        "last_upload_at": s.last_upload_at_ms.map(format_rfc3339_ms),
        "uploader": s.uploading,
        "warning": crate::growth::warning(&repl),
    });
    Ok(v.to_string())
}
