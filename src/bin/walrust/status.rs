//! `walrust status DB`: what `walrust_status()` says, read from the shadow directory
//! (`state.json` and the shadow log), for databases replicated by the sidecar or the
//! extension alike. Reads only; takes no lock a replicating process needs for long.

use crate::{output, Args, Failure};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use walrust::shadow::log::{self, Cursor, Reader};
use walrust::shadow::ShadowDir;

pub const HELP: &str = "\
Usage: walrust status DB [--shadow-dir DIR]

Prints one JSON object, as walrust_status() returns it, from DB's shadow directory: the
replica, the newest TXID in the shadow log (txid), the newest in the replica (uploaded_txid),
what is pending, the last upload error, and whether a process uploads now (uploader) and a
`walrust watch` watches DB (watched).

Exit codes: 0 printed, 1 the shadow directory cannot be read, 2 usage.
";

/// Why there is nothing to report; a path that names nothing at all is said to, since a typo
/// in a monitoring script would otherwise read as a database waiting for its replica.
fn never_replicated(db: &Path, root: &Path) -> String {
    let state = root.join("state.json");
    if std::fs::symlink_metadata(db).is_err() {
        return format!(
            "walrust: {} does not exist (nor {}): check the path",
            db.display(),
            state.display()
        );
    }
    format!(
        "walrust: {} has never replicated (no {})",
        db.display(),
        state.display()
    )
}

pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = Args::parse(args, &["--shadow-dir"], &[])?;
    a.expect_positional(&["DB"])?;
    let db = PathBuf::from(&a.positional[0]);
    let root = ShadowDir::path_for(&db, a.value(&["--shadow-dir"]).map(Path::new));
    let cannot = |e: std::io::Error| {
        Failure::new(1, format!("walrust: cannot read {}: {e}", root.display()))
    };
    let Some(state) = walrust::shadow::state::read(&root.join("state.json")).map_err(cannot)?
    else {
        let v = json!({
            "database": db.display().to_string(), "replica": Value::Null, "txid": 0,
            "uploaded_txid": 0, "pending_txns": 0, "pending_bytes": 0, "lag_ms": 0,
            "last_error": never_replicated(&db, &root),
            "last_upload_at": Value::Null,
        });
        return output::line(&v.to_string());
    };
    let shadow = ShadowDir { root: root.clone() };
    let log_dir = shadow.log_dir();
    let last = log::last_record(&log_dir).map_err(cannot)?;
    let txid = last.map_or(0, |h| h.txid).max(state.uploaded_txid);
    let cursor = Cursor {
        seq: state.cursor_seq,
        offset: state.cursor_offset,
    };
    let oldest = Reader::new(log_dir.clone())
        .read_at_most(cursor, 1)
        .ok()
        .and_then(|(recs, _)| recs.first().map(|r| r.header.timestamp_ms));
    let v = json!({
        "database": db.display().to_string(),
        "replica": state.replica,
        "txid": txid,
        "uploaded_txid": state.uploaded_txid,
        "pending_txns": txid.saturating_sub(state.uploaded_txid),
        "pending_bytes": pending_bytes(&log_dir, cursor),
        "lag_ms": oldest.filter(|_| txid > state.uploaded_txid).map_or(0, |t| (walrust::clock::now_ms() - t).max(0)),
        "last_error": state.last_error,
        "last_upload_at": (state.uploaded_at_ms > 0).then(|| walrust::clock::format_rfc3339_ms(state.uploaded_at_ms)),
        "uploader": is_held(&root.join("upload.lock")),
        "watched": is_held(&root.join("watch.lock")),
    });
    output::line(&v.to_string())
}

/// Bytes of the shadow log after the uploader's cursor.
fn pending_bytes(dir: &Path, cursor: Cursor) -> u64 {
    let Ok(segs) = log::list_segments(dir) else {
        return 0;
    };
    segs.iter()
        .filter(|&&s| s >= cursor.seq)
        .filter_map(|&s| {
            let len = std::fs::metadata(log::segment_path(dir, s)).ok()?.len();
            Some(if s == cursor.seq {
                len.saturating_sub(cursor.offset)
            } else {
                len
            })
        })
        .sum()
}

/// Whether some process holds the lock file (tried and let go at once).
fn is_held(path: &Path) -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    {
        Ok(f) => matches!(f.try_lock(), Err(std::fs::TryLockError::WouldBlock)),
        Err(_) => false,
    }
}
