//! Uploading: a bounded pool per process, whatever the number of databases, fed over one flume
//! channel (`pool`: a scheduler thread and at most `pool::THREADS` upload threads;
//! docs/DESIGN.md, decision 15).
//!
//! For each replicating database it holds (or waits for) the shadow directory's uploader lock,
//! reads new records from the shadow log, and every `walrust_sync_interval` uploads them as one
//! level-0 LTX file; it takes snapshots at start (when the replica is empty or has diverged),
//! on schedule and on request; it answers `walrust_sync()` callers once their transactions are
//! durable in the replica. Failures are retried with exponential backoff and jitter, per
//! database, and reported in `walrust_status()`; they never reach the application's writes.
//! What must hold: a record is trimmed from the shadow log only after the file holding it and
//! the manifest naming it are durable, and `state.json` never claims more than the replica has;
//! different databases upload concurrently, but one database's steps never overlap (its state
//! is on one thread at a time), and a slow, hung or locked replica holds at most its own
//! database's step and a bounded share of the pool.

pub mod batch;
mod owner;
pub use owner::claim_next_generation;
mod pool;
pub mod snapshot;
mod worker;

use crate::database::Database;
use crate::replication::Replication;
use flume::{Receiver, Sender};
use once_cell::sync::Lazy;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// Where the uploader gets what the shadow log alone cannot give: the database's current
/// pages for a snapshot, and the commits still only in the WAL. The extension's `Database`
/// (through SQLite connections of its own) and `walrust watch` (through the WAL index, without
/// SQLite) are the two sources.
pub trait Source: Send + Sync {
    /// Someone still has the database open for writing (an application connection, or the
    /// sidecar running): this process keeps its uploader lock and may take snapshots.
    fn in_use(&self) -> bool;
    /// Appends to the shadow log every commit it lacks, if that can be done without waiting
    /// (a busy WAL write lock means its holder captures its own commit). True when the log
    /// holds every commit the WAL held when it looked (nothing was missing, or it caught up).
    fn catch_up(&self) -> bool;
    /// The application opened the database a moment ago and has not read it yet: walrust's
    /// own connections leave it the WAL recovery (`Database::recovery_pending`).
    fn recovery_pending(&self) -> bool {
        false
    }
    /// The shadow log holds every commit: none waits in a group in memory, none is in the
    /// WAL alone. False when unsure.
    fn all_captured(&self) -> bool {
        false
    }
    /// Takes a snapshot (see `snapshot::take` for the TXID rules).
    fn snapshot(
        &self,
        repl: &Replication,
        fresh_txid_above: Option<u64>,
        owner: Option<crate::history::Owner>,
    ) -> Result<snapshot::Taken, snapshot::Error>;
}

impl Source for Database {
    fn in_use(&self) -> bool {
        Database::in_use(self)
    }

    fn recovery_pending(&self) -> bool {
        Database::recovery_pending(self)
    }

    fn all_captured(&self) -> bool {
        !self.grouped() && matches!(self.needs_catch_up(), Ok(false))
    }

    fn catch_up(&self) -> bool {
        // Take the write lock only when a commit is really missing from the log (a process
        // died between its WAL write and its append, or holds it in a group); busy is fine
        // for the log, the writer holding the lock captures its own commit.
        // A group of this process's commits waiting in memory is appended (or, if another
        // process caught its commits up from the WAL meanwhile, let go) under the lock too.
        if self.grouped() || self.needs_catch_up().unwrap_or(true) {
            if let Some(done) = self.catch_up_if_writing() {
                // A connection of this process writes (`walrust_sync()` inside a write
                // transaction, say): under its lock, as a snapshot's handoff does.
                return done;
            }
            if self.recovery_pending() {
                return false; // as if busy: at a later look
            }
            return snapshot::with_write_lock(self, Duration::from_millis(200), |_| {
                Ok(self.catch_up_under_lock())
            })
            .unwrap_or(false);
        }
        true
    }

    fn snapshot(
        &self,
        repl: &Replication,
        fresh_txid_above: Option<u64>,
        owner: Option<crate::history::Owner>,
    ) -> Result<snapshot::Taken, snapshot::Error> {
        snapshot::take(self, repl, fresh_txid_above, owner)
    }
}

pub(crate) enum Msg {
    Register(Arc<Replication>, Weak<dyn Source>),
    /// New records in a database's shadow log.
    Notify(u64),
    /// Upload everything up to at least this TXID, then reply with the uploaded TXID.
    Sync {
        id: u64,
        txid: u64,
        reply: Sender<Result<u64, String>>,
    },
    Snapshot {
        id: u64,
        reply: Sender<Result<u64, String>>,
    },
    /// Make this database the replica's history (a new generation), then snapshot.
    Takeover {
        id: u64,
        reply: Sender<Result<u64, String>>,
    },
    /// Compact the replica (after a snapshot), on a pool thread.
    Compact(u64),
    /// A pool thread finished a job.
    Done(pool::Done),
}

struct Channel {
    tx: Sender<Msg>,
}

/// Commit notifications are dropped when this many are queued: the periodic tick catches up.
const QUEUE: usize = 4096;

static CHANNEL: Lazy<Channel> = Lazy::new(|| {
    let (tx, rx) = flume::bounded(QUEUE);
    let back = tx.clone();
    std::thread::Builder::new()
        .name("walrust-upload-sched".into())
        .spawn(move || pool::run(rx, back))
        .expect("spawn the walrust upload scheduler");
    Channel { tx }
});

fn send(msg: Msg) -> bool {
    CHANNEL.tx.send_timeout(msg, Duration::from_secs(1)).is_ok()
}

/// Starts uploading a database's shadow log.
pub fn register(repl: Arc<Replication>, db: &Database) {
    let weak: Weak<dyn Source> = match crate::database::lookup(&db.path) {
        Some(a) => Arc::downgrade(&a) as Weak<dyn Source>,
        None => Weak::<Database>::new(),
    };
    send(Msg::Register(repl, weak));
}

/// Starts uploading a database's shadow log for another source (`walrust watch`).
pub fn register_source(repl: Arc<Replication>, source: Weak<dyn Source>) {
    send(Msg::Register(repl, source));
}

/// Called on SQLite's thread after an append: never blocks.
pub fn notify(repl: &Replication) {
    let _ = CHANNEL.tx.try_send(Msg::Notify(repl.id));
}

/// Settings changed: look at the database again soon.
pub fn wake(repl: &Replication) {
    notify(repl)
}

/// Runs compaction and retention on the replica soon, on a pool thread, so uploads of every
/// database go on meanwhile.
pub fn compact_later(repl: Arc<Replication>) {
    let _ = CHANNEL.tx.try_send(Msg::Compact(repl.id));
}

/// Blocks until every transaction up to `txid` is in the replica, or `timeout` passes.
pub fn sync(repl: &Replication, txid: u64, timeout: Duration) -> Result<u64, String> {
    let (tx, rx) = flume::bounded(1);
    if !send(Msg::Sync {
        id: repl.id,
        txid,
        reply: tx,
    }) {
        return Err("walrust: the upload scheduler is not responding".into());
    }
    wait(rx, timeout, repl, "sync")
}

/// Takes a snapshot now; returns its TXID.
pub fn snapshot(repl: &Replication, timeout: Duration) -> Result<u64, String> {
    let (tx, rx) = flume::bounded(1);
    if !send(Msg::Snapshot {
        id: repl.id,
        reply: tx,
    }) {
        return Err("walrust: the upload scheduler is not responding".into());
    }
    wait(rx, timeout, repl, "snapshot")
}

/// `walrust_takeover()`: claims the replica's next generation and takes its snapshot; returns
/// the snapshot's TXID.
pub fn takeover(repl: &Replication, timeout: Duration) -> Result<u64, String> {
    let (tx, rx) = flume::bounded(1);
    if !send(Msg::Takeover {
        id: repl.id,
        reply: tx,
    }) {
        return Err("walrust: the upload scheduler is not responding".into());
    }
    wait(rx, timeout, repl, "takeover")
}

fn wait(
    rx: Receiver<Result<u64, String>>,
    timeout: Duration,
    repl: &Replication,
    what: &str,
) -> Result<u64, String> {
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => {
            let why = repl
                .status()
                .last_error
                .unwrap_or_else(|| "uploads are slower than the timeout".into());
            Err(format!(
                "walrust: {what} of {} timed out after {} ms: {}; committed transactions are safe in the shadow log and will be uploaded when the replica is reachable",
                repl.db_path.display(),
                timeout.as_millis(),
                why.strip_prefix("walrust: ").unwrap_or(&why)
            ))
        }
    }
}
