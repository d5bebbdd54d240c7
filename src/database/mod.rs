//! The extension's per-database wiring: one `Database` per database file per process, shared
//! by every connection of the process to that file. It owns the capture state and the
//! shadow-log appender of a database and ties its stages together.
//!
//! - this file: the registry (`lookup`, `get_or_create`) and what other threads read of a
//!   database (settings, status, paths);
//! - `start`: deciding when replication starts (URI parameter, PRAGMA, environment, or a shadow
//!   directory that already names a replica) and the `walrust_*` PRAGMAs;
//! - `hooks`: what the VFS's callbacks call (open, WAL writes, syncs, locks, deletion), where
//!   WAL writes become shadow-log records through `capture`;
//! - `catch_up`: what the uploader asks under the WAL write lock it took itself.
//!
//! Edges: `vfs::ffi` calls the hooks (the callback boundary); this module calls `capture`,
//! `wal`, `shadow`, `replication`, `upload`, `checkpoint`, `config`, `store`, `cleanup`, and of
//! `vfs` only `MainFile` (a leaf of `vfs::ffi`, re-exported for the snapshot), never the callbacks.
//! `upload`, `checkpoint` and `sql` reach a database through here, never through `vfs`; `watch`
//! (no SQLite, no `Database`) uses only `conflict_message` and `record_replica`.
//! What must hold: a hook never fails the application's I/O and never waits on the network; a
//! database with no replica configured gets no capture, no files, no threads.

mod catch_up;
mod hooks;
mod lock_gate;
mod start;

pub use hooks::{before_delete, open_main, open_wal, SyncAhead};
pub use lock_gate::{without_waiting, LockGate};
pub(crate) use start::{conflict_message, record_replica};

use crate::capture::{Capture, Committed};
use crate::config::Settings;
use crate::replication::Replication;
use crate::shadow::log::Appender;
pub use crate::vfs::MainFile;
use crate::wal::{self, WalHeader};
use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// Which connection's `-wal` file handle a call came through (each connection opens its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalHandle(pub usize);

/// What an open file is to walrust.
pub enum Role {
    /// A main database file; `AppFile` is set for the application's connections (not
    /// walrust's own).
    Main(Arc<Database>, Option<AppFile>),
    Wal(Arc<Database>),
    Other,
}

/// Counts an application connection's main file for as long as it is open.
pub struct AppFile(Arc<Database>);

impl Drop for AppFile {
    fn drop(&mut self) {
        // While the count still says open, so the uploader may take a snapshot if one is due.
        if self.0.app_files.load(std::sync::atomic::Ordering::Acquire) == 1 {
            self.0.before_last_close();
        }
        let before = self
            .0
            .app_files
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        if before > 1 {
            // Another connection opened while this one closed: not the last close after all.
            self.0.seal(false);
        }
    }
}

pub enum PragmaOutcome {
    /// Not a walrust PRAGMA: let SQLite handle it.
    NotOurs,
    Value(Option<String>),
    Error(String),
}

static DATABASES: Lazy<Mutex<HashMap<PathBuf, Weak<Database>>>> =
    Lazy::new(|| Mutex::new(HashMap::new()));

pub struct Database {
    pub path: PathBuf,
    state: Mutex<DbState>,
    /// Main files of the application's connections open now. walrust's own connections do not
    /// count: when this drops to zero they close, and the database is forgotten.
    app_files: std::sync::atomic::AtomicUsize,
    /// The application's last connection is past its wait for walrust's connections
    /// (`wait_for_internal_connections`): walrust opens no new one (`may_open`), since
    /// the close no longer waits for it. Cleared by an open, or when the close turns out not to
    /// be the last.
    sealed: std::sync::atomic::AtomicBool,
    /// An application connection has read this database since the first of the open ones
    /// opened (`first_open_ms`): SQLite's WAL index was then valid, recovered if it had to be
    /// (`Database::recovery_pending`).
    app_read: std::sync::atomic::AtomicBool,
    first_open_ms: std::sync::atomic::AtomicI64,
    /// walrust's own holds of the WAL write lock, for the application's writers to wait out.
    writer_gate: LockGate,
    /// walrust's own holds of the checkpointer lock, for the application's checkpoints to
    /// wait out.
    checkpointer_gate: LockGate,
}

/// How long walrust leaves the first read after an open to the application: see
/// `Database::recovery_pending`.
const RECOVERY_GRACE_MS: i64 = 2000;

/// `RECOVERY_GRACE_MS`, or what a test set (`failpoint::millis`).
fn recovery_grace_ms() -> i64 {
    crate::failpoint::millis("recovery.grace").map_or(RECOVERY_GRACE_MS, |ms| ms as i64)
}

#[derive(Default)]
struct DbState {
    capture: Capture,
    appender: Option<Appender>,
    replication: Option<Arc<Replication>>,
    /// A replica asked for before the database was in WAL mode.
    wanted: Option<String>,
    settings: Option<Settings>,
    /// Why replication is not running although it was asked for.
    problem: Option<String>,
    /// An open that asked for a different replica than the one in use.
    conflict: Option<String>,
    /// The WAL was deleted while the database stayed open (`PRAGMA journal_mode=DELETE`):
    /// replication is paused until a `-wal` file is opened again.
    left_wal: bool,
    /// A connection of this process holds the WAL write lock.
    in_write_txn: bool,
    /// A commit seen at xWrite, appended when the write lock is released: only then has SQLite
    /// published it in the WAL index, so a process that dies before that leaves no phantom
    /// transaction in the log.
    pending: Option<Committed>,
    /// Commits of earlier holds of the write lock not in the log yet, appended together
    /// (`hooks::group_pending`). They are in the WAL meanwhile, which no restart, truncation or
    /// deletion can lose before a hook of this process appends them, or another process's
    /// catch-up copies them from the WAL (the group then finds them logged and leaves them).
    group: Vec<Committed>,
    group_bytes: usize,
    /// Some commit of the group was made durable by SQLite's WAL sync (`log_owes_sync`).
    group_sync: bool,
    /// When the last commit was released: commits that follow each other within
    /// `GROUP_GAP` are grouped, others appended at once.
    last_release: Option<std::time::Instant>,
    /// The WAL handle (one per connection) that wrote the pending commit.
    pending_writer: WalHandle,
    /// That handle synced the WAL for the pending commit (`synchronous=FULL`).
    pending_sync: bool,
    /// Records of commits whose WAL SQLite synced (`synchronous=FULL`) are in the log, not yet
    /// synced. The commit path adds no fsync: the WAL holds those commits durably until its
    /// generation ends, and the log is synced then (`sync_log_at_generation_end`), before
    /// the WAL is restarted, truncated or deleted.
    log_owes_sync: bool,
    /// Without shared-memory locks (`locking_mode=EXCLUSIVE`) a commit is appended as soon as
    /// its frame is written: the handle that wrote it, until its WAL sync (if any) came.
    appended_unsynced: Option<WalHandle>,
    /// The `-wal` file, for reading pending commits' pages (no locks live on it).
    wal_file: Option<std::fs::File>,
    /// The application's last connection in this process is closing (since it asked for the
    /// EXCLUSIVE lock, or since its file's close), and until when the close may wait for
    /// walrust (`walrust_close_timeout`). Cleared when the application opens the database again,
    /// or takes the write lock (the EXCLUSIVE lock was asked for by a journal-mode change).
    closing: Option<std::time::Instant>,
}

/// The database a path names, if this process has it open. Each thread remembers the last one
/// it found: the WAL hook asks at every commit, and a byte-equal path names the same open
/// database as the registry would (one live `Database` per path), without its lock and hash.
pub fn lookup(path: &Path) -> Option<Arc<Database>> {
    thread_local! {
        static RECENT: std::cell::RefCell<Weak<Database>> = const { std::cell::RefCell::new(Weak::new()) };
    }
    let recent = RECENT.with(|r| r.borrow().upgrade());
    if let Some(db) = recent.filter(|d| d.path.as_os_str() == path.as_os_str()) {
        return Some(db);
    }
    let found = DATABASES.lock().unwrap().get(path).and_then(Weak::upgrade);
    if let Some(db) = &found {
        RECENT.with(|r| *r.borrow_mut() = Arc::downgrade(db));
    }
    found
}

fn get_or_create(path: &Path) -> Arc<Database> {
    let mut map = DATABASES.lock().unwrap();
    if let Some(db) = map.get(path).and_then(Weak::upgrade) {
        return db;
    }
    map.retain(|_, w| w.strong_count() > 0);
    let db = Arc::new(Database {
        path: path.to_path_buf(),
        state: Mutex::new(DbState::default()),
        app_files: std::sync::atomic::AtomicUsize::new(0),
        sealed: std::sync::atomic::AtomicBool::new(false),
        app_read: std::sync::atomic::AtomicBool::new(false),
        first_open_ms: std::sync::atomic::AtomicI64::new(0),
        writer_gate: LockGate::new("the write lock"),
        checkpointer_gate: LockGate::new("the checkpointer lock"),
    });
    map.insert(path.to_path_buf(), Arc::downgrade(&db));
    db
}

/// The database header says WAL mode (read and write versions 2).
fn is_wal_mode(read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>) -> bool {
    let mut hdr = [0u8; 100];
    matches!(read(&mut hdr, 0), Ok(100)) && hdr[18] == 2 && hdr[19] == 2
}

fn read_wal_header(read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>) -> Option<WalHeader> {
    let mut b = [0u8; wal::HEADER_SIZE as usize];
    match read(&mut b, 0) {
        Ok(n) if n == b.len() => wal::parse_header(&b),
        _ => None,
    }
}

impl Database {
    /// The application's connections opened the database a moment ago and none has read it
    /// yet. The first connection to read a WAL database that no process has open runs WAL
    /// recovery, holding SQLite's recovery locks; another connection that reads meanwhile,
    /// without a busy timeout, fails with `SQLITE_BUSY_RECOVERY` ("database is locked"). An
    /// application reopening after a crash reads at once, so walrust's own connection, which
    /// would otherwise catch the shadow log up from the WAL at that very moment, waits: for
    /// the application's first read (its recovery), or `RECOVERY_GRACE_MS`, whichever first.
    pub fn recovery_pending(&self) -> bool {
        use std::sync::atomic::Ordering;
        !self.app_read.load(Ordering::Acquire)
            && crate::clock::now_ms() - self.first_open_ms.load(Ordering::Acquire)
                < recovery_grace_ms()
    }

    /// walrust's own holds of the WAL write lock in this process (`lock_gate`).
    pub fn writer_gate(&self) -> &LockGate {
        &self.writer_gate
    }

    /// walrust's own holds of the WAL checkpointer lock in this process (`lock_gate`): the
    /// checkpoint thread's passes.
    pub fn checkpointer_gate(&self) -> &LockGate {
        &self.checkpointer_gate
    }

    /// An application connection holds a read lock on the WAL index: it is valid.
    pub(crate) fn app_read_index(&self) {
        let r = &self.app_read;
        if !r.load(std::sync::atomic::Ordering::Relaxed) {
            r.store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// The application has this database open in this process.
    pub fn in_use(&self) -> bool {
        self.app_files.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// walrust may open a connection of its own to this database now: the application has it
    /// open, and no close of its last connection has stopped waiting for walrust. Called after
    /// `checkpoint::keep_away` counted the caller among the internal users: with the close's
    /// `seal` before its look at that count, either the close sees the caller and waits for it,
    /// or the caller sees the seal and opens nothing.
    pub fn may_open(&self) -> bool {
        self.in_use() && !self.sealed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// From now on walrust opens no connection of its own (`true`), or may again (`false`).
    pub(crate) fn seal(&self, sealed: bool) {
        self.sealed
            .store(sealed, std::sync::atomic::Ordering::SeqCst);
    }

    /// The application's last connection in this process is closing: upload what this process
    /// committed, and name in `manifest.json` every file it uploaded, waiting at most
    /// `walrust_close_timeout` (SPEC 6, nothing stranded). What is left is in the shadow log
    /// for the next process that opens the database. (A file left unnamed is still restored,
    /// but compaction and retention never touch it, and the next process names only files
    /// past the manifest's newest TXID: `upload::owner`.)
    ///
    /// Then no connection of walrust's outlives the application's last (within the same
    /// timeout): once the application has closed the database, its path may name another file.
    fn before_last_close(&self) {
        let Some(repl) = self.replication() else {
            return;
        };
        crate::log::trace(|| format!("last close of {} begins", self.path.display()));
        let deadline = self.close_begins(&repl, false);
        // The upload may need a snapshot (and its connection), even after the EXCLUSIVE
        // lock's wait sealed the database.
        self.seal(false);
        self.upload_before_close(&repl, deadline);
        self.seal(true);
        self.wait_for_internal_connections(&repl, deadline);
        crate::log::trace(|| {
            format!(
                "last close of {} waited (users {})",
                self.path.display(),
                repl.wal
                    .internal_users
                    .load(std::sync::atomic::Ordering::SeqCst)
            )
        });
        crate::failpoint::hit("close.waited");
    }

    fn upload_before_close(&self, repl: &Replication, deadline: std::time::Instant) {
        let timeout = repl.settings().close_timeout_ms;
        let status = repl.status();
        let done =
            status.local_txid <= status.uploaded_txid && status.unnamed == 0 && !self.grouped();
        if timeout == 0 || done {
            return;
        }
        let wait = deadline.saturating_duration_since(std::time::Instant::now());
        let Err(e) = crate::upload::sync(repl, status.local_txid, wait) else {
            return;
        };
        // A refusal was said already, in those words.
        if repl.status().last_error.as_deref() != Some(e.as_str()) {
            crate::log::warn(&format!(
                "{e} (at the last close of {}; walrust_close_timeout is {timeout} ms)",
                self.path.display()
            ));
        }
    }

    /// Waits, until `deadline`, for walrust's snapshots and catch-ups under way (their
    /// connections) to finish.
    fn wait_for_internal_connections(&self, repl: &Replication, deadline: std::time::Instant) {
        let users = &repl.wal.internal_users;
        while users.load(std::sync::atomic::Ordering::SeqCst) > 0
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The application's last connection is closing: from now on a snapshot fixes its point
    /// at once (no commit will come to fix it), and walrust's waits at this close end at the
    /// returned deadline. `fresh`: a new request (an EXCLUSIVE lock asked for) starts a new
    /// deadline; the file's close goes on with the one its lock request started.
    fn close_begins(&self, repl: &Replication, fresh: bool) -> std::time::Instant {
        let timeout = std::time::Duration::from_millis(repl.settings().close_timeout_ms);
        let mut st = self.lock();
        if fresh {
            st.closing = None;
        }
        *st.closing
            .get_or_insert_with(|| std::time::Instant::now() + timeout)
    }

    /// Commits of this process wait in a group in memory, not yet in the shadow log.
    pub fn grouped(&self) -> bool {
        self.replication().is_some_and(|r| {
            r.wal
                .group_since_ms
                .load(std::sync::atomic::Ordering::Acquire)
                != 0
        })
    }

    /// Whether the application's last connection in this process is closing (or closed).
    pub fn closing(&self) -> bool {
        self.lock().closing.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, DbState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wal_path(&self) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push("-wal");
        PathBuf::from(p)
    }

    /// The replication of this database, if it is running.
    pub fn replication(&self) -> Option<Arc<Replication>> {
        self.lock().replication.clone()
    }

    /// Where this process's appends to the shadow log have reached: (segment, offset).
    pub fn log_position(&self) -> Option<(u64, u64)> {
        self.lock().appender.as_ref()?.position()
    }

    /// Settings: the database's own (URI, PRAGMA) over the environment's.
    pub fn settings(&self) -> Settings {
        self.lock()
            .settings
            .clone()
            .unwrap_or_else(Settings::from_env)
    }

    /// Why replication is not running although it was asked for (for `walrust_status`).
    pub fn problem(&self) -> Option<String> {
        self.lock().problem.clone()
    }

    /// The replica asked for that waits for WAL mode, if any (for `walrust_status`).
    pub fn wanted_replica(&self) -> Option<String> {
        self.lock().wanted.clone()
    }

    /// Why replication is paused although it runs: the database left WAL mode.
    pub fn paused(&self) -> Option<String> {
        let st = self.lock();
        (st.replication.is_some() && st.left_wal).then(|| {
            format!(
                "walrust: replication of {} is paused: the database is not in WAL mode; run PRAGMA journal_mode=WAL to resume (a snapshot then brings the replica up to date)",
                self.path.display()
            )
        })
    }
}

/// Reads exactly `buf.len()` bytes at `off`, or reports 0 (short or absent file).
fn read_full(file: Option<&std::fs::File>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let Some(f) = file else { return Ok(0) };
    let mut n = 0;
    while n < buf.len() {
        match f.read_at(&mut buf[n..], off + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(if n == buf.len() { n } else { 0 })
}
