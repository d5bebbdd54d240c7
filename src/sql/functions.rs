//! `walrust_sync`, `walrust_snapshot`, `walrust_restore`.

use super::args;
use super::err;
use super::status::{database, not_replicating, replication_now, schema_arg};
use crate::restore::{self, Target};
use crate::types::Txid;
use rusqlite::functions::Context;
use rusqlite::types::ValueRef;
use std::path::Path;
use std::time::Duration;

/// How long `walrust_sync()` waits when no timeout is given.
const DEFAULT_SYNC_TIMEOUT_MS: i64 = 30_000;
/// How long `walrust_snapshot()` waits when no timeout is given (SPEC 4).
const DEFAULT_SNAPSHOT_TIMEOUT_MS: i64 = 30_000;

/// The optional `timeout_ms` argument at `i` of function `f`.
fn timeout_arg(ctx: &Context<'_>, i: usize, default: i64, f: &str) -> rusqlite::Result<Duration> {
    let ms = args::non_negative(ctx, i, f, "timeout_ms")?.unwrap_or(default);
    Ok(Duration::from_millis(ms as u64))
}

fn replication(
    ctx: &Context<'_>,
    schema: &str,
) -> rusqlite::Result<std::sync::Arc<crate::replication::Replication>> {
    let db = database(ctx, schema)?;
    if db.recovery_pending() {
        // The caller waits for the uploader, which leaves the WAL's recovery to the
        // application's first read: this call is that read.
        crate::vfs::ffi::read_through_caller(ctx, schema);
    }
    if let Some(why) = db.paused() {
        // Commits made outside WAL mode were not captured: no TXID can claim them.
        return Err(err(why));
    }
    replication_now(ctx, schema, &db).ok_or_else(|| err(not_replicating(&db)))
}

pub(super) fn walrust_sync(ctx: &Context<'_>) -> rusqlite::Result<i64> {
    let schema = schema_arg(ctx, 0, "walrust_sync")?;
    let timeout = timeout_arg(ctx, 1, DEFAULT_SYNC_TIMEOUT_MS, "walrust_sync")?;
    let repl = replication(ctx, &schema)?;
    // Every transaction in the shadow log, whichever process of ours or others committed it.
    let in_log = crate::shadow::log::last_record(&repl.shadow.log_dir())
        .ok()
        .flatten()
        .map_or(0, |h| h.txid);
    let target = repl.status().local_txid.max(in_log);
    crate::upload::sync(&repl, target, timeout)
        .map(|t| t as i64)
        .map_err(err)
}

pub(super) fn walrust_snapshot(ctx: &Context<'_>) -> rusqlite::Result<i64> {
    let schema = schema_arg(ctx, 0, "walrust_snapshot")?;
    let timeout = timeout_arg(ctx, 1, DEFAULT_SNAPSHOT_TIMEOUT_MS, "walrust_snapshot")?;
    let repl = replication(ctx, &schema)?;
    crate::upload::snapshot(&repl, timeout)
        .map(|t| t as i64)
        .map_err(err)
}

/// `walrust_takeover([schema])`: this database becomes the replica's history (SPEC 6).
pub(super) fn walrust_takeover(ctx: &Context<'_>) -> rusqlite::Result<i64> {
    let schema = schema_arg(ctx, 0, "walrust_takeover")?;
    let repl = replication(ctx, &schema)?;
    crate::upload::takeover(&repl, Duration::from_secs(600))
        .map(|t| t as i64)
        .map_err(err)
}

fn parse_target(ctx: &Context<'_>) -> rusqlite::Result<Target> {
    if ctx.len() < 3 {
        return Ok(Target::Latest);
    }
    let bad = |what: String| {
        err(format!(
            "walrust_restore: target (argument 3) is {what}; give a TXID ({}; as an integer or text) or an RFC 3339 time like 2026-11-28T10:49:56.123Z",
            crate::types::TXID_FORMS
        ))
    };
    match ctx.get_raw(2) {
        ValueRef::Null => Ok(Target::Latest),
        ValueRef::Integer(n) => Txid::new(n.max(0) as u64)
            .map(Target::Txid)
            .ok_or_else(|| bad(format!("the integer {n}"))),
        ValueRef::Text(t) => {
            let s = String::from_utf8_lossy(t);
            Txid::parse_user(&s)
                .map(Target::Txid)
                .or_else(|| crate::clock::parse_rfc3339(&s).map(Target::Time))
                .ok_or_else(|| bad(format!("text '{s}'")))
        }
        _ => Err(bad("neither an integer nor text".into())),
    }
}

pub(super) fn walrust_restore(ctx: &Context<'_>) -> rusqlite::Result<i64> {
    const F: &str = "walrust_restore";
    let url = args::required_text(ctx, 0, F, "replica_url")?;
    let out = args::required_text(ctx, 1, F, "output_path")?;
    let target = parse_target(ctx)?;
    let store = crate::store::open(&url).map_err(|e| err(e.to_string()))?;
    let temp = restore::restore(store.as_ref(), Path::new(&out), target)
        .map_err(|e| err(e.to_string()))?;
    integrity_check(temp.path())?;
    let txid = temp.commit().map_err(|e| err(e.to_string()))?;
    Ok(txid.get() as i64)
}

/// Opens the restored file read-only and immutable (no -wal/-shm beside it) and runs
/// `PRAGMA integrity_check`. `walrust_internal` keeps the temporary file from ever replicating
/// (`WALRUST_REPLICA_ROOT` would otherwise give it a replica and a shadow directory).
fn integrity_check(path: &Path) -> rusqlite::Result<()> {
    use rusqlite::{Connection, OpenFlags};
    let uri = format!(
        "file:{}?immutable=1&walrust_internal=1",
        crate::upload::snapshot::uri_escape(&path.to_string_lossy())
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(&uri, flags).map_err(|e| {
        err(format!(
            "integrity error: cannot open the restored database: {e}"
        ))
    })?;
    let result: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(|e| {
            err(format!(
                "integrity error: PRAGMA integrity_check failed on the restored database: {e}"
            ))
        })?;
    if result != "ok" {
        return Err(err(format!(
            "integrity error: PRAGMA integrity_check on the restored database says: {result}"
        )));
    }
    Ok(())
}
