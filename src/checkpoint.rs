//! Background checkpoints (`walrust_checkpoint=background`, the default for a replicating
//! database): the application's commits no longer pay for checkpoints; one thread per process
//! runs them on its own connections.
//!
//! Policy, as Litestream's: PASSIVE once the WAL holds 1000 frames, TRUNCATE once it passes
//! 121359 frames, and when a database has been idle for a moment a PASSIVE checkpoint, then a
//! TRUNCATE (without waiting for readers) if the WAL file has grown large. What must hold: a
//! checkpoint never runs ahead of capture (every committed frame is in the shadow log before
//! SQLite reports the commit, and the WAL is read once more before any restart or truncation);
//! S3 trouble never stops checkpoints (this thread never touches the network); SQLite's
//! checkpointer lock keeps checkpoints of several processes from overlapping.

use crate::config::CheckpointMode;
use crate::vfs::database::{self, Database};
use flume::Sender;
use once_cell::sync::Lazy;
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Weak;
use std::time::{Duration, Instant};

pub const PASSIVE_FRAMES: u32 = 1000;
pub const TRUNCATE_FRAMES: u32 = 121_359;
/// A database with no commit for this long is idle.
const IDLE: Duration = Duration::from_millis(1000);
/// When idle, a WAL file larger than this is truncated (if no reader needs it).
const TRUNCATE_IDLE_BYTES: u64 = 64 << 20;

struct Commit {
    path: PathBuf,
    db: Weak<Database>,
    frames: u32,
}

static CHANNEL: Lazy<Sender<Commit>> = Lazy::new(|| {
    let (tx, rx) = flume::bounded::<Commit>(4096);
    std::thread::Builder::new()
        .name("walrust-checkpoint".into())
        .spawn(move || run(rx))
        .expect("spawn the walrust checkpoint thread");
    tx
});

/// Called from the WAL hook after each commit. Returns false when SQLite's default behaviour
/// should apply (not replicating, or `walrust_checkpoint=app`).
pub fn on_commit(path: &Path, frames: u32) -> bool {
    let Some(db) = database::lookup(path) else {
        return false;
    };
    if db.replication().is_none() || db.settings().checkpoint != CheckpointMode::Background {
        return false;
    }
    let commit = Commit {
        path: path.to_path_buf(),
        db: std::sync::Arc::downgrade(&db),
        frames,
    };
    // A full queue only delays a checkpoint; the next commit or the idle pass catches up.
    let _ = CHANNEL.try_send(commit);
    true
}

struct Entry {
    db: Weak<Database>,
    conn: Option<Connection>,
    frames: u32,
    last_commit: Instant,
    idle_done: bool,
}

fn run(rx: flume::Receiver<Commit>) {
    let mut dbs: HashMap<PathBuf, Entry> = HashMap::new();
    loop {
        match rx.recv_timeout(IDLE / 2) {
            Ok(c) => {
                let e = dbs.entry(c.path).or_insert_with(|| Entry {
                    db: c.db,
                    conn: None,
                    frames: 0,
                    last_commit: Instant::now(),
                    idle_done: true,
                });
                e.frames = c.frames;
                e.last_commit = Instant::now();
                e.idle_done = false;
                while let Ok(c) = rx.try_recv() {
                    if let Some(e) = dbs.get_mut(&c.path) {
                        e.frames = c.frames;
                        e.last_commit = Instant::now();
                        e.idle_done = false;
                    }
                }
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        for e in dbs.values_mut() {
            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(e)));
        }
        dbs.retain(|_, e| e.db.strong_count() > 0);
    }
}

fn step(e: &mut Entry) {
    let Some(db) = e.db.upgrade() else {
        e.conn = None;
        return;
    };
    let idle = e.last_commit.elapsed() >= IDLE;
    let mode = if e.frames >= TRUNCATE_FRAMES {
        "TRUNCATE"
    } else if e.frames >= PASSIVE_FRAMES || (idle && !e.idle_done) {
        "PASSIVE"
    } else {
        return;
    };
    if e.conn.is_none() {
        match crate::upload::snapshot::open_internal(&db) {
            Ok(c) => e.conn = Some(c),
            Err(err) => {
                crate::log::warn(&format!(
                    "walrust: background checkpoint of {} skipped: {err}",
                    db.path.display()
                ));
                return;
            }
        }
    }
    let conn = e.conn.as_ref().unwrap();
    let _ = conn.busy_timeout(Duration::from_millis(if mode == "TRUNCATE" {
        5000
    } else {
        0
    }));
    let done = checkpoint(conn, mode);
    e.frames = 0;
    if idle {
        e.idle_done = true;
        let wal_bytes = std::fs::metadata(db.wal_path())
            .map(|m| m.len())
            .unwrap_or(0);
        if done && wal_bytes > TRUNCATE_IDLE_BYTES {
            let _ = conn.busy_timeout(Duration::ZERO);
            checkpoint(conn, "TRUNCATE");
        }
    }
}

/// Runs one checkpoint; true when every WAL frame was copied into the database.
fn checkpoint(conn: &Connection, mode: &str) -> bool {
    match conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, i64>(1)?,
            r.get::<_, i64>(2)?,
        ))
    }) {
        Ok((busy, log, done)) => busy == 0 && log == done,
        Err(_) => false,
    }
}
