//! Background checkpoints (`walrust_checkpoint=background`, the default for a replicating
//! database): the application's commits no longer pay for checkpoints; one thread per process
//! runs them on its own connections.
//!
//! Policy, as Litestream's: PASSIVE once the WAL holds 1000 frames, and again each time it has
//! grown another 1000 (so each pass syncs a bounded amount of WAL); past 8000 frames (a PASSIVE
//! checkpoint cannot catch up with a writer that never pauses) the committing connection runs
//! SQLite's own checkpoint, which finds most frames already copied (so Litestream's TRUNCATE at
//! 121359 frames is never needed); and a PASSIVE checkpoint when a database has been idle for a
//! moment, so the next write starts the WAL over from its beginning. When commits sync the WAL
//! (`synchronous=FULL`, SQLite's default) the committing connection checkpoints at 1000
//! frames, as SQLite alone does, and this thread runs only the idle pass (see
//! `INLINE_FRAMES`). The commit path only stores the WAL size in atomics and wakes this thread
//! when a threshold is crossed. What must hold: a checkpoint never runs ahead of capture (every
//! committed frame is in the shadow log before SQLite reports the commit, and the WAL is read
//! once more before any restart or truncation; while appends fail, as on a full disk, walrust
//! checkpoints nothing: `WalActivity::log_behind`); S3 trouble never stops checkpoints (this
//! thread never touches the network); SQLite's checkpointer lock keeps checkpoints of several
//! processes from overlapping.

use crate::clock::now_ms;
use crate::database::{self, Database};
use flume::Sender;
use once_cell::sync::Lazy;
use rusqlite::Connection;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

pub const PASSIVE_FRAMES: u32 = 1000;
/// Under sustained writes a PASSIVE checkpoint from another connection never catches up with
/// the writer and the WAL never restarts; past this many frames (33 MB at 4 KiB pages) the
/// committing connection runs SQLite's own checkpoint, which then has little left to copy. Its
/// WAL sync is what the application waits for: at 4000 frames it cost 12% of a writer's time
/// that never pauses, at 8000 about half that (see BENCHMARKS.md).
///
/// When commits sync the WAL (`synchronous=FULL`, SQLite's default) the committing connection
/// checkpoints at `PASSIVE_FRAMES`, as SQLite alone does, and the thread's PASSIVE passes are
/// not asked for. There each commit waits for an `fdatasync`, and what costs is disk work
/// overlapping it: a WAL that grows past its old size (each `fdatasync` then commits the
/// file's metadata too) and the thread's own syncs of the WAL and the database while commits
/// wait for theirs. Measured with `bench/ab_commit.sh OLD NEW FULL 8` (one-row commits, 3 s
/// rounds, two runs): at 2,000 frames with the thread's passes at 1,000, 0.885x and 0.855x
/// plain SQLite (medians); at 1,000 inline and no passes, 0.945x and 0.90x. Bulk commits
/// (1,000 rows) were unchanged (0.74x and 0.75x). At 8,000 frames it had been 0.63-0.80x.
/// At NORMAL the thread's passes pay (the inline checkpoint's sync is what a commit would
/// wait for): 8,000 stays.
pub const INLINE_FRAMES: u32 = 8 * PASSIVE_FRAMES;
/// While shadow-log appends fail (a full shadow directory), walrust checkpoints nothing, so
/// that the commits the log lacks stay in the WAL until space returns and an append catches
/// them up. Past this many frames (256 MB of WAL at 4 KiB pages) the committing connection
/// checkpoints anyway: the WAL must not grow without bound, and the replica then resyncs
/// with a snapshot once the log works again (nothing committed is lost: it is in the
/// database).
pub const BEHIND_FRAMES: u32 = 64 * PASSIVE_FRAMES;
/// A database with no commit for this long is idle.
const IDLE_MS: i64 = 1000;
/// How often idle databases are looked at.
const POLL: Duration = Duration::from_millis(250);

/// After `release`, the checkpoint connection stays closed this long, so that the application
/// connection that asked takes its EXCLUSIVE lock first.
const RELEASE_HOLD_MS: i64 = 2000;
/// How long `release` waits for the thread to close its connection.
const RELEASE_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Register(Weak<Database>),
    Wake,
    /// Close the connection to this database now, then answer.
    Release(std::path::PathBuf, Sender<()>),
}

static CHANNEL: Lazy<Sender<Msg>> = Lazy::new(|| {
    let (tx, rx) = flume::bounded::<Msg>(1024);
    std::thread::Builder::new()
        .name("walrust-checkpoint".into())
        .spawn(move || run(rx))
        .expect("spawn the walrust checkpoint thread");
    tx
});

/// A database started replicating: watch its WAL.
pub fn register(db: &Database) {
    if let Some(db) = database::lookup(&db.path) {
        let _ = CHANNEL.send(Msg::Register(Arc::downgrade(&db)));
    }
}

/// Closes this thread's connection to the database at `path` and keeps it closed for a
/// moment; returns once it is closed (or after `RELEASE_WAIT`, if the thread is stuck). For an
/// application connection about to take the EXCLUSIVE lock (see
/// `Database::before_exclusive_lock`), which an open connection of walrust's would refuse.
pub fn release(path: &Path) {
    let (tx, rx) = flume::bounded(1);
    if CHANNEL.send(Msg::Release(path.to_path_buf(), tx)).is_ok() {
        let _ = rx.recv_timeout(RELEASE_WAIT);
    }
}

/// Called from the WAL hook after each commit. Returns false when SQLite's default behaviour
/// should apply (not replicating, or `walrust_checkpoint=app`).
pub fn on_commit(path: &Path, frames: u32) -> bool {
    let Some(repl) = database::lookup(path).and_then(|db| db.replication()) else {
        return false;
    };
    if !repl.background_checkpoints() {
        // SQLite's own checkpoints (`walrust_checkpoint=app`); the thread still needs to know
        // the database is busy, to keep its files and its spare segment (see `step`).
        note_commit(&repl);
        return false;
    }
    let synced = repl.wal.commits_synced.load(Ordering::Relaxed);
    let inline = if synced {
        PASSIVE_FRAMES
    } else {
        INLINE_FRAMES
    };
    if repl.wal.log_behind.load(Ordering::Acquire) && frames < BEHIND_FRAMES {
        // The shadow log could not take the last commits: they are in the WAL alone, which
        // must not restart. It grows until an append succeeds (or up to `BEHIND_FRAMES`).
        return true;
    }
    if frames >= inline {
        // At FULL, SQLite's own point; otherwise the checkpoint thread has not caught up with
        // this writer (it never pauses for the thread to win the locks): let this commit run
        // SQLite's own PASSIVE checkpoint, which finds most frames already copied, so the WAL
        // restarts and stays bounded.
        return false;
    }
    repl.wal.frames.store(frames, Ordering::Relaxed);
    note_commit(&repl);
    let since = repl.wal.checkpointed_at.load(Ordering::Relaxed);
    let grown = frames < since || frames - since >= PASSIVE_FRAMES;
    if frames >= PASSIVE_FRAMES && grown && !repl.wal.signaled.swap(true, Ordering::AcqRel) {
        // A full queue only delays a checkpoint; the next poll catches up.
        let _ = CHANNEL.try_send(Msg::Wake);
    }
    true
}

/// Runs SQLite's own checkpoint (`checkpoint`) for a committing connection whose commit
/// `on_commit` did not handle. When commits sync the WAL (`synchronous=FULL`) the log owes a
/// sync before the WAL restarts, which the next write does once this checkpoint completes; a
/// second thread runs that sync now, beside the checkpoint's own writes and syncs, instead of
/// after them on the application's thread (bulk commits at FULL spent 6% of their time there).
///
/// It never waits for the checkpoint thread's pass (`database::without_waiting`): met busy,
/// it is tried again at the next commit, as SQLite's own automatic checkpoint is.
pub fn sqlite_checkpoint(path: Option<&Path>, checkpoint: impl FnOnce()) {
    database::without_waiting(|| checkpoint_beside_log_sync(path, checkpoint))
}

fn checkpoint_beside_log_sync(path: Option<&Path>, checkpoint: impl FnOnce()) {
    let db = path.and_then(database::lookup);
    let Some((db, ahead)) = db.and_then(|db| db.log_sync_ahead().map(|a| (db, a))) else {
        return checkpoint();
    };
    let synced = std::thread::scope(|s| {
        let syncer = std::thread::Builder::new()
            .name("walrust-sync".into())
            .spawn_scoped(s, || ahead.sync());
        checkpoint();
        // A thread that could not start, or panicked, synced nothing: the restart syncs.
        syncer.ok().and_then(|h| h.join().ok()).unwrap_or(false)
    });
    if synced {
        db.log_synced_ahead(ahead);
    }
}

/// A commit happened now: the database is not idle, and its next idle pass is due.
fn note_commit(repl: &crate::replication::Replication) {
    repl.wal.last_commit_ms.store(now_ms(), Ordering::Relaxed);
    repl.wal.idle_done.store(false, Ordering::Relaxed);
    repl.wal.files_released.store(false, Ordering::Relaxed);
}

struct Entry {
    db: Weak<Database>,
    conn: Option<Connection>,
    /// No connection is opened before this time (see `release`).
    hold_until_ms: i64,
}

fn run(rx: flume::Receiver<Msg>) {
    let mut dbs: Vec<Entry> = Vec::new();
    loop {
        match rx.recv_timeout(POLL) {
            Ok(Msg::Register(db)) => dbs.push(Entry {
                db,
                conn: None,
                hold_until_ms: 0,
            }),
            Ok(Msg::Release(path, reply)) => {
                for e in dbs.iter_mut() {
                    if let Some(d) = e.db.upgrade().filter(|d| d.path == path) {
                        close(e, d.replication().as_deref());
                        e.hold_until_ms = now_ms() + RELEASE_HOLD_MS;
                    }
                }
                let _ = reply.send(());
                continue;
            }
            Ok(Msg::Wake) | Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        for e in dbs.iter_mut() {
            if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| step(e))).is_err() {
                crate::log::error(
                    "walrust: internal error in the checkpoint thread (panic); will retry",
                );
                close_known(e);
            }
        }
        // An entry whose application connections are gone has closed its own (in `step`).
        dbs.retain(|e| e.db.strong_count() > 0 || e.conn.is_some());
    }
}

fn step(e: &mut Entry) {
    let Some(db) = e.db.upgrade().filter(|d| d.in_use()) else {
        close_known(e);
        return;
    };
    let Some(repl) = db.replication() else { return };
    let _ = crate::growth::check(&repl, now_ms());
    // While the application's last connection closes, this thread's stays closed: SQLite's
    // close must find the database to itself (`Database::before_exclusive_lock`), and after it
    // an open would make the `-wal` and `-shm` files again.
    if now_ms() < e.hold_until_ms
        || db.closing()
        || db.paused().is_some()
        || repl.wal.internal_users.load(Ordering::SeqCst) > 0
        || repl.wal.log_behind.load(Ordering::Acquire)
    {
        close(e, Some(&repl));
        return;
    }
    crate::log::trace(|| {
        format!(
            "checkpoint poll {}: {} frames",
            db.path.display(),
            repl.wal.frames.load(Ordering::Relaxed)
        )
    });
    let w = &repl.wal;
    let frames = w.frames.load(Ordering::Relaxed);
    let last_commit_ms = w.last_commit_ms.load(Ordering::Relaxed);
    let idle = now_ms() - last_commit_ms >= IDLE_MS;
    // Only PASSIVE here: it never blocks the application. (A WAL past INLINE_FRAMES is
    // checkpointed by the committing connection itself, see `on_commit`.)
    let mode = "PASSIVE";
    let idle_pass_due = idle && !w.idle_done.load(Ordering::Relaxed);
    if idle && !w.files_released.load(Ordering::Relaxed) && db.release_idle_files() {
        w.files_released.store(true, Ordering::Relaxed);
    }
    if !repl.background_checkpoints() {
        // `walrust_checkpoint=app`: the application's connections checkpoint, as SQLite alone
        // does, and this thread never (not even the idle pass: the WAL files must evolve as
        // they would without walrust).
        close(e, Some(&repl));
        // Idle: the spare is let go once (`idle_done`, unused otherwise in this mode, is reset
        // by the next commit), not looked for at every poll of every idle database.
        if !idle || !w.idle_done.swap(true, Ordering::Relaxed) {
            keep_spare(&db, &repl.shadow.log_dir(), idle);
        }
        return;
    }
    if frames < PASSIVE_FRAMES && !idle_pass_due {
        // No pass due (at FULL the committing connection checkpoints), but a busy log still
        // gets its spare segment.
        if !idle {
            keep_spare(&db, &repl.shadow.log_dir(), false);
        }
        return;
    }
    if idle_pass_due && wal_is_empty(&db) {
        // Nothing to copy (a database opened and not written): no connection is opened, so
        // an idle database costs no descriptors or cache for it.
        w.idle_done.store(true, Ordering::Relaxed);
        close(e, Some(&repl));
        keep_spare(&db, &repl.shadow.log_dir(), true);
        return;
    }
    keep_spare(&db, &repl.shadow.log_dir(), idle_pass_due);
    if db.log_pinned_to_file() {
        // Commits the log lacks, after a record that vouches for the database file: into the
        // log before a checkpoint changes the file (the uploader's catch-up may not have run
        // yet, as right after an open). Our connection is closed first: the catch-up's own
        // connection waits for it (`keep_away`).
        close(e, Some(&repl));
        if !crate::upload::Source::catch_up(&*db) {
            return; // busy: at the next poll
        }
    }
    if e.conn.is_none() {
        // Announced before it is opened, and given up if a snapshot or catch-up came first
        // (see `keep_away`).
        w.ckpt_conn_open.store(true, Ordering::SeqCst);
        if w.internal_users.load(Ordering::SeqCst) > 0 {
            close(e, Some(&repl));
            return;
        }
        match crate::upload::snapshot::open_internal(&db) {
            Ok(c) => e.conn = Some(c),
            Err(err) => {
                w.ckpt_conn_open.store(false, Ordering::SeqCst);
                crate::log::warn(&format!(
                    "walrust: background checkpoint of {} skipped: {err}",
                    db.path.display()
                ));
                return;
            }
        }
    }
    let conn = e.conn.as_ref().unwrap();
    // PASSIVE never waits for anyone; a checkpoint a reader blocks is retried at the next poll.
    let _ = conn.busy_timeout(Duration::ZERO);
    let done = checkpoint(conn, mode);
    crate::log::trace(|| {
        format!(
            "checkpoint {mode} of {} at {frames} frames: done {done}",
            db.path.display()
        )
    });
    if idle {
        // A reader kept it from finishing: try again at the next poll. (Never TRUNCATE here:
        // it rewrites the WAL header, which fails with SQLITE_BUSY_SNAPSHOT any application
        // transaction that read before and writes after; RESTART and PASSIVE do not.)
        // A commit during the pass (past what it copied) leaves its own idle pass due: looked
        // at again after the store, as the commit stores its time before it clears the flag
        // (`note_commit`). (Were one missed anyway, the WAL would only wait for the next
        // commit's pass.)
        let commit_since = || w.last_commit_ms.load(Ordering::SeqCst) != last_commit_ms;
        let idle_done = done && !commit_since();
        w.idle_done.store(idle_done, Ordering::SeqCst);
        if idle_done && commit_since() {
            w.idle_done.store(false, Ordering::SeqCst);
        }
        if done {
            // Idle and checkpointed: the connection (its cache, its schema) is opened again
            // when writes come back.
            close(e, Some(&repl));
        }
    }
    // Wake again once the WAL has grown another PASSIVE_FRAMES past this checkpoint; one a
    // reader blocks is retried then, or at the next poll.
    w.checkpointed_at.store(frames, Ordering::Relaxed);
    w.signaled.store(false, Ordering::Release);
    if done {
        // Everything is in the database file; until the next commit there is nothing to do.
        let _ = w
            .frames
            .compare_exchange(frames, 0, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Closes the thread's connection to a database and says so (`WalActivity::ckpt_conn_open`).
fn close(e: &mut Entry, repl: Option<&crate::replication::Replication>) {
    e.conn = None;
    if let Some(r) = repl {
        r.wal.ckpt_conn_open.store(false, Ordering::SeqCst);
    }
}

/// `close` for an entry whose replication is not at hand (its application connections are
/// closing, or a step panicked): a flag left saying "open" would make every `keep_away` of the
/// database wait its whole `KEEP_AWAY_WAIT`, at the application's close among others.
fn close_known(e: &mut Entry) {
    let repl = e.db.upgrade().and_then(|d| d.replication());
    close(e, repl.as_deref());
}

/// Keeps the checkpoint thread's connection to a database closed while it lives.
///
/// SQLite's unix VFS cannot close a descriptor of a database file while this process holds
/// POSIX locks on it (the application's connection always does, in WAL mode): it keeps the
/// descriptor pending and reuses it for the next open with the same flags. So walrust's own
/// connections leave as many pending descriptors per database as it ever had open at once.
/// A snapshot or a catch-up takes this guard before it opens its connection, and waits (up to
/// `KEEP_AWAY_WAIT`) for the checkpoint thread to close its own: walrust then never has two
/// connections of its own to a database, and an idle database written since it was opened
/// holds one pending descriptor, not four. Waiting longer would only cost a descriptor, never
/// correctness.
pub struct KeepAway<'a>(&'a crate::replication::WalActivity);

const KEEP_AWAY_WAIT: Duration = Duration::from_secs(2);

pub fn keep_away(repl: &crate::replication::Replication) -> KeepAway<'_> {
    let w = &repl.wal;
    w.internal_users.fetch_add(1, Ordering::SeqCst);
    if w.ckpt_conn_open.load(Ordering::SeqCst) {
        let _ = CHANNEL.try_send(Msg::Wake);
        let deadline = std::time::Instant::now() + KEEP_AWAY_WAIT;
        while w.ckpt_conn_open.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    KeepAway(w)
}

impl Drop for KeepAway<'_> {
    fn drop(&mut self) {
        self.0.internal_users.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A busy database gets a spare shadow-log segment written ahead (see `shadow::log`): the commit
/// that rolls the log then overwrites cached pages instead of extending a new file. It is
/// written here, off the commit path, once the current segment is half full; an idle database
/// gives its spare back.
fn keep_spare(db: &Database, log_dir: &Path, idle: bool) {
    use crate::shadow::log;
    if idle {
        log::drop_spare(log_dir);
        return;
    }
    if db
        .log_position()
        .is_some_and(|(_, end)| end >= log::ROLL_BYTES / 2)
    {
        if let Err(e) = log::prepare_spare(log_dir) {
            crate::log::trace(|| format!("spare segment not written: {e}"));
        }
    }
}

/// The WAL holds no frame (absent, or a header alone).
fn wal_is_empty(db: &Database) -> bool {
    std::fs::metadata(db.wal_path()).map_or(true, |m| m.len() <= crate::wal::HEADER_SIZE)
}

/// Runs one checkpoint; true when every WAL frame was copied into the database.
fn checkpoint(conn: &Connection, mode: &str) -> bool {
    let sql = format!("PRAGMA wal_checkpoint({mode})");
    match conn.query_row(&sql, [], |r| {
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
