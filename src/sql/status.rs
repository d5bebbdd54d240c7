//! `walrust_status([schema])`: a JSON object describing one database's replication.

use super::err;
use crate::clock::{format_rfc3339_ms, now_ms};
use rusqlite::functions::Context;
use serde_json::{json, Value};

pub(super) fn schema_arg(ctx: &Context<'_>, i: usize) -> rusqlite::Result<String> {
    if ctx.len() > i {
        let s: Option<String> = ctx.get(i)?;
        Ok(s.unwrap_or_else(|| "main".into()))
    } else {
        Ok("main".into())
    }
}

pub(super) fn database(
    ctx: &Context<'_>,
    schema: &str,
) -> rusqlite::Result<std::sync::Arc<crate::vfs::database::Database>> {
    let path = crate::vfs::ffi::schema_path(ctx, schema).ok_or_else(|| {
        err(format!(
            "no database file for schema '{schema}' (in-memory or temporary)"
        ))
    })?;
    crate::vfs::database::lookup(&path).ok_or_else(|| {
        err(format!(
            "{} was not opened through the walrust VFS; load walrust before opening the database",
            path.display()
        ))
    })
}

pub(super) fn walrust_status(ctx: &Context<'_>) -> rusqlite::Result<String> {
    let schema = schema_arg(ctx, 0)?;
    let db = database(ctx, &schema)?;
    let Some(repl) = db.replication() else {
        let why = db.problem().unwrap_or_else(|| {
            "no replica configured (walrust_replica URI parameter, PRAGMA walrust_replica, or WALRUST_REPLICA_ROOT), or the database is not in WAL mode yet".into()
        });
        let v = json!({
            "database": db.path.display().to_string(),
            "replica": Value::Null, "txid": 0, "uploaded_txid": 0, "pending_txns": 0,
            "pending_bytes": 0, "lag_ms": 0, "last_error": why, "last_upload_at": Value::Null, "warning": Value::Null,
        });
        return Ok(v.to_string());
    };
    let s = repl.status();
    let txid = s.local_txid.max(s.uploaded_txid);
    let v = json!({
        "database": db.path.display().to_string(),
        "replica": repl.url,
        "txid": txid,
        "uploaded_txid": s.uploaded_txid,
        "pending_txns": txid.saturating_sub(s.uploaded_txid),
        "pending_bytes": s.pending_bytes,
        "lag_ms": s.oldest_pending_ms.map_or(0, |t| (now_ms() - t).max(0)),
        "last_error": s.last_error,
        "notice": s.notice,
        "last_upload_at": s.last_upload_at_ms.map(format_rfc3339_ms),
        "uploader": s.uploading,
        "warning": crate::shadow::growth::warning(&repl),
    });
    Ok(v.to_string())
}
