//! One `Database` per database file per process: the safe side of the VFS. The FFI callbacks in
//! `vfs::ffi` call these hooks; every connection of the process to the same file shares one.
//!
//! It owns the capture state and the shadow-log appender, and decides when replication starts
//! (URI parameter, PRAGMA, environment, or a shadow directory that already names a replica).
//! What must hold: a hook never fails the application's I/O and never waits on the network; a
//! database with no replica configured gets no capture, no files, no threads.

use crate::capture::{commit, Appended, Capture};
use crate::config::{self, Settings};
use crate::replication::Replication;
use crate::shadow::log::Appender;
use crate::shadow::{ShadowDir, State};
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
        self.0
            .app_files
            .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
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
    pending: Option<crate::capture::Committed>,
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
}

pub use crate::shadow::fingerprint;

/// The database a path names, if this process has it open.
pub fn lookup(path: &Path) -> Option<Arc<Database>> {
    DATABASES.lock().unwrap().get(path).and_then(Weak::upgrade)
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
    });
    map.insert(path.to_path_buf(), Arc::downgrade(&db));
    db
}

/// A main database file was opened. `uri` reads the open's URI parameters.
/// A main database file was opened. `uri` reads the open's URI parameters, `read` the file.
/// A database already in WAL mode starts replicating now (if a replica is configured).
pub fn open_main(
    path: &str,
    uri: &dyn Fn(&str) -> Option<String>,
    read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
) -> Role {
    let db = get_or_create(Path::new(path));
    if uri("walrust_internal").is_some() {
        return Role::Main(db, None);
    }
    db.app_files
        .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    let app = AppFile(db.clone());
    db.configure_from_open(uri);
    if is_wal_mode(read) {
        db.lock().left_wal = false;
        db.start_wanted();
    }
    Role::Main(db, Some(app))
}

/// The database header says WAL mode (read and write versions 2).
fn is_wal_mode(read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>) -> bool {
    let mut hdr = [0u8; 100];
    matches!(read(&mut hdr, 0), Ok(100)) && hdr[18] == 2 && hdr[19] == 2
}

/// A `-wal` file was opened: the database is in WAL mode, so replication asked for starts now.
pub fn open_wal(path: &str) -> Role {
    let Some(db_path) = path.strip_suffix("-wal") else {
        return Role::Other;
    };
    match lookup(Path::new(db_path)) {
        Some(db) => {
            db.lock().left_wal = false;
            db.start_wanted();
            Role::Wal(db)
        }
        None => Role::Other,
    }
}

/// SQLite is about to delete a file. For a `-wal` file (the last connection closed after a full
/// checkpoint) the log records that the database file now holds everything.
pub fn before_delete(path: &str) {
    let Some(db_path) = path.strip_suffix("-wal") else {
        return;
    };
    if let Some(db) = lookup(Path::new(db_path)) {
        db.wal_deleting(Path::new(path));
    }
}

fn read_wal_header(read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>) -> Option<WalHeader> {
    let mut b = [0u8; wal::HEADER_SIZE as usize];
    match read(&mut b, 0) {
        Ok(n) if n == b.len() => wal::parse_header(&b),
        _ => None,
    }
}

impl Database {
    /// The application has this database open in this process.
    pub fn in_use(&self) -> bool {
        self.app_files.load(std::sync::atomic::Ordering::Acquire) > 0
    }

    /// The application's last connection in this process is closing: upload what this process
    /// committed, waiting at most `walrust_close_timeout` (SPEC 6, nothing stranded). What is
    /// left is in the shadow log for the next process that opens the database.
    fn before_last_close(&self) {
        let Some(repl) = self.replication() else {
            return;
        };
        let timeout = repl.settings().close_timeout_ms;
        let status = repl.status();
        if timeout == 0 || status.local_txid <= status.uploaded_txid {
            return;
        }
        let wait = std::time::Duration::from_millis(timeout);
        let Err(e) = crate::upload::sync(&repl, status.local_txid, wait) else {
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

    fn lock(&self) -> MutexGuard<'_, DbState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The database file, opened for reading through the wrapped VFS (see `RawFile`: a
    /// `std::fs::File` would drop the application's POSIX locks when closed).
    pub fn open_file_readonly(&self) -> io::Result<crate::vfs::RawFile> {
        crate::vfs::RawFile::open_db_readonly(&self.path)
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

    /// An application connection is taking the EXCLUSIVE lock on the database file: SQLite does
    /// so to leave WAL mode and when its last connection closes (to checkpoint and delete the
    /// WAL). Either fails with SQLITE_BUSY while any other connection has the database open,
    /// so walrust's checkpoint connection closes first, as if walrust were not there. Only when
    /// the asking connection is the application's only one in this process: with others open
    /// the lock fails anyway, and a pool that closes connections often must not keep the
    /// checkpoint thread away.
    pub fn before_exclusive_lock(&self) {
        let only = self.app_files.load(std::sync::atomic::Ordering::Acquire) <= 1;
        if only && self.replication().is_some() {
            crate::checkpoint::release(&self.path);
        }
    }

    /// Takes the error an open recorded (a replica conflict), for the auto-extension to raise.
    pub fn take_conflict(&self) -> Option<String> {
        self.lock().conflict.take()
    }

    fn configure_from_open(&self, uri: &dyn Fn(&str) -> Option<String>) {
        let mut st = self.lock();
        if st.settings.is_none() {
            st.conflict = Settings::env_error(); // a bad WALRUST_<NAME> fails the open
        }
        let mut settings = st.settings.clone().unwrap_or_else(Settings::from_env);
        for name in config::NAMES {
            if let Some(v) = uri(name) {
                if let Err(e) = settings.set(name, &v) {
                    st.conflict = Some(e);
                }
            }
        }
        st.settings = Some(settings.clone());
        let asked = uri("walrust_replica").or_else(|| env_replica(&self.path));
        if let Some(Err(e)) = asked.as_deref().map(crate::store::open) {
            // Fails the open as the PRAGMA would fail, instead of running unreplicated.
            st.conflict = Some(cannot_replicate(&self.path, &e));
            return;
        }
        let shadow = ShadowDir::path_for(&self.path, settings.shadow_dir.as_deref());
        // A restore's record (SPEC 6) is used only when the same replica is asked for again.
        let recorded = crate::shadow::state::read(&shadow.join("state.json"))
            .ok()
            .flatten()
            .filter(|s| s.owner.is_some() || s.restored_txid.is_none())
            .map(|s| s.replica);
        let in_use = st
            .replication
            .as_ref()
            .map(|r| r.url.clone())
            .or(recorded.filter(|r| !r.is_empty()));
        match (asked, in_use) {
            (Some(a), Some(u)) if !same_replica(&a, &u) => {
                st.conflict = Some(conflict_message(&self.path, &u, &a));
            }
            (Some(a), None) => st.wanted = Some(a),
            (_, Some(u)) if st.replication.is_none() => st.wanted = Some(u),
            _ => {}
        }
    }

    /// Starts the replication asked for at open, now that the database is in WAL mode.
    fn start_wanted(&self) {
        let mut st = self.lock();
        if st.replication.is_some() {
            return;
        }
        if let Some(url) = st.wanted.take() {
            if let Err(e) = self.start_locked(&mut st, &url) {
                crate::log::error(&e);
                st.problem = Some(e);
            }
        }
    }

    fn start_locked(&self, st: &mut DbState, url: &str) -> Result<Arc<Replication>, String> {
        let settings = st.settings.clone().unwrap_or_else(Settings::from_env);
        let store = crate::store::open(url).map_err(|e| cannot_replicate(&self.path, &e))?;
        let described = store.describe();
        let root = ShadowDir::path_for(&self.path, settings.shadow_dir.as_deref());
        let mut state = crate::shadow::state::read(&root.join("state.json"))
            .ok()
            .flatten()
            .unwrap_or_default();
        if state.owner.is_none()
            && state.restored_txid.is_some()
            && !same_replica(&state.replica, &described)
        {
            // Restored from another replica: this copy starts a history of its own.
            let _ = std::fs::remove_dir_all(&root);
            state = State::default();
        }
        let shadow = ShadowDir::create(root.clone())
            .map_err(|e| format!("walrust: cannot create the shadow directory {}: {e}; check permissions and free space", root.display()))?;
        if !state.replica.is_empty() && !same_replica(&state.replica, &described) {
            return Err(conflict_message(&self.path, &state.replica, &described));
        }
        if state.replica.is_empty() {
            state = record_replica(&shadow, state, &described)?;
            if !same_replica(&state.replica, &described) {
                return Err(conflict_message(&self.path, &state.replica, &described));
            }
        }
        crate::cleanup::at_replication_start(&shadow, &described);
        let repl = Arc::new(Replication::new(
            self.path.clone(),
            shadow.clone(),
            store,
            settings,
        ));
        st.appender = Some(Appender::new(shadow.log_dir()).with_floor(state.uploaded_txid));
        st.replication = Some(repl.clone());
        st.problem = None;
        crate::upload::register(repl.clone(), self);
        crate::checkpoint::register(self);
        Ok(repl)
    }

    /// `PRAGMA walrust_replica = url`: starts replication now (the database must be in WAL mode).
    fn set_replica(
        &self,
        url: &str,
        read_main: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> PragmaOutcome {
        let mut st = self.lock();
        if let Some(r) = &st.replication {
            return if same_replica(&r.url, url) {
                PragmaOutcome::Value(Some(r.url.clone()))
            } else {
                PragmaOutcome::Error(conflict_message(&self.path, &r.url, url))
            };
        }
        if !is_wal_mode(read_main) {
            return PragmaOutcome::Error(format!(
                "walrust: cannot replicate {}: it is not in WAL mode; run PRAGMA journal_mode=WAL first",
                self.path.display()
            ));
        }
        match self.start_locked(&mut st, url) {
            // A value, not nothing: some drivers (Python's) fail on a result without a name.
            Ok(r) => PragmaOutcome::Value(Some(r.url.clone())),
            Err(e) => PragmaOutcome::Error(e),
        }
    }

    /// Handles `PRAGMA walrust_*` (read with `value == None`).
    pub fn pragma(
        &self,
        name: &str,
        value: Option<&str>,
        read_main: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> PragmaOutcome {
        let name = name.to_ascii_lowercase();
        if name == "walrust_replica" {
            return match value {
                Some(v) => self.set_replica(v.trim(), read_main),
                None => PragmaOutcome::Value(self.replication().map(|r| r.url.clone())),
            };
        }
        if !config::NAMES.contains(&name.as_str()) {
            return PragmaOutcome::NotOurs;
        }
        let mut st = self.lock();
        let mut settings = st.settings.clone().unwrap_or_else(Settings::from_env);
        if let Some(v) = value {
            if let Err(e) = settings.set(&name, v) {
                return PragmaOutcome::Error(e);
            }
            if let Some(r) = &st.replication {
                *r.settings.lock().unwrap() = settings.clone();
                crate::upload::wake(r);
            }
            st.settings = Some(settings.clone());
        }
        PragmaOutcome::Value(settings.get(&name))
    }

    pub fn wal_opened(&self, read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>) {
        let mut st = self.lock();
        if st.replication.is_some() {
            if let Some(h) = read_wal_header(read) {
                st.capture.adopt_header(h);
            }
        }
    }

    pub fn write_lock_taken(&self) {
        let mut st = self.lock();
        if st.replication.is_some() {
            st.capture.on_write_lock();
            st.in_write_txn = true;
        }
    }

    /// A connection of this process is about to release the WAL write lock: its commit, now
    /// published in the WAL index, goes into the log before anyone else can write.
    pub fn write_lock_releasing(&self) {
        let repl = {
            let mut st = self.lock();
            st.in_write_txn = false;
            self.flush_pending(&mut st);
            st.replication.clone()
        };
        // A snapshot that could not get the write lock fixes its point here, while this
        // thread still holds it.
        if let Some(repl) = repl {
            let handoff = repl.handoff.lock().unwrap().take();
            if let Some(h) = handoff {
                crate::upload::snapshot::serve_handoff(self, &repl, h);
            }
        }
    }

    /// Appends the commit waiting for the write lock's release, if any. Nothing is synced
    /// here, whatever `synchronous` says: see `log_owes_sync`.
    fn flush_pending(&self, st: &mut DbState) {
        let Some(c) = st.pending.take() else {
            return;
        };
        let sync = std::mem::take(&mut st.pending_sync);
        if let Some(r) = st.replication.as_ref() {
            r.wal
                .commits_synced
                .store(sync, std::sync::atomic::Ordering::Relaxed);
        }
        if st.wal_file.is_none() {
            st.wal_file = std::fs::File::open(self.wal_path()).ok();
        }
        let file = st.wal_file.take();
        let mut read = |buf: &mut [u8], off: u64| read_full(file.as_ref(), buf, off);
        let hdr = match st.capture.header() {
            Some(h) if h.salts == c.salts => *h,
            _ => match read_wal_header(&mut read) {
                Some(h) => h,
                None => {
                    // The commit stays in the WAL; the next append's catch-up recovers it.
                    let err = io::Error::other("the WAL header could not be read");
                    st.wal_file = file;
                    self.account(st, Err(err));
                    return;
                }
            },
        };
        let fp = || fingerprint(&self.path);
        let result = commit::append_commit(st.appender.as_mut().unwrap(), &hdr, &c, &mut read, &fp);
        st.wal_file = file;
        st.capture.recycle(c.images);
        self.account(st, result);
        self.owe_sync(st, sync);
    }

    /// After an append: a commit SQLite made durable (`synced`) puts the log in debt until
    /// the WAL generation ends. Without such a commit (`synchronous=NORMAL`) the log is left
    /// to the page cache, as the WAL is: its handles are let go.
    fn owe_sync(&self, st: &mut DbState, synced: bool) {
        st.log_owes_sync |= synced;
        if !st.log_owes_sync {
            st.appender.as_mut().unwrap().forget_unsynced();
        }
    }

    /// The WAL generation is ending (restart, truncation, deletion): the commits of it that
    /// SQLite made durable are only in the log from now on, so the log is synced first.
    fn sync_log_at_generation_end(&self, st: &mut DbState) {
        if !std::mem::take(&mut st.log_owes_sync) {
            return;
        }
        let files = st.appender.as_mut().unwrap().files_to_sync();
        SyncDue(files).run(st.replication.as_deref());
    }

    /// Before a WAL write: a new header means a new generation; settle the old one first.
    pub fn before_wal_write(
        &self,
        off: u64,
        data: &[u8],
        read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) {
        let mut st = self.lock();
        if st.replication.is_none() {
            return;
        }
        let Some(new) = st.capture.header_write(off, data) else {
            return;
        };
        self.flush_pending(&mut st);
        let old = read_wal_header(read);
        if old.map(|h| h.salts) != Some(new.salts) {
            let fp = || fingerprint(&self.path);
            let result = commit::end_generation(
                st.appender.as_mut().unwrap(),
                old.as_ref(),
                read,
                &fp,
                None,
            );
            self.account(&mut st, result);
            self.sync_log_at_generation_end(&mut st);
        }
        st.capture.start_generation(new);
    }

    /// After a WAL write: a completed commit is appended to the shadow log.
    pub fn after_wal_write(
        &self,
        writer: WalHandle,
        off: u64,
        data: &[u8],
        read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) {
        let mut st = self.lock();
        if st.replication.is_none() {
            return;
        }
        let mut reread = || read_wal_header(&mut *read);
        let Some(c) = st.capture.after_write(off, data, &mut reread) else {
            return;
        };
        if st.in_write_txn {
            // A second commit under one lock: the first goes in first.
            self.flush_pending(&mut st);
            st.pending = Some(c);
            st.pending_writer = writer;
            return;
        }
        // No shared-memory locks (locking_mode=EXCLUSIVE): nobody else can write, append now.
        let hdr = *st.capture.header().expect("a commit implies a header");
        let fp = || fingerprint(&self.path);
        let result = commit::append_commit(st.appender.as_mut().unwrap(), &hdr, &c, read, &fp);
        st.capture.recycle(c.images);
        st.appended_unsynced = Some(writer);
        self.account(&mut st, result);
    }

    /// Records an append's outcome. A failure is reported and left for the next append's
    /// catch-up to repair from the WAL; it never fails the application's commit.
    fn account(&self, st: &mut DbState, result: io::Result<Appended>) {
        let repl = st.replication.as_ref().unwrap();
        match result {
            Ok(a) if a.records > 0 => {
                if repl.appended(a) {
                    crate::upload::notify(repl);
                }
            }
            Ok(_) => {}
            Err(e) => {
                let msg = format!(
                    "walrust: cannot append to the shadow log in {}: {e}; the transaction is still in the WAL and will be captured on the next commit",
                    repl.shadow.root.display()
                );
                crate::log::error(&msg);
                repl.set_error(Some(msg));
            }
        }
    }

    /// SQLite synced the WAL. With a commit pending, that is `synchronous=FULL` (or EXTRA)
    /// making the commit durable: the log owes a sync before this WAL generation ends
    /// (`log_owes_sync`); the commit itself waits for no other fsync. Otherwise it is a
    /// checkpoint's sync (`synchronous=NORMAL` syncs nothing else), and the log is left to the
    /// page cache: see "Durability" in README.md. `handle` tells the committing connection's
    /// sync from another connection's (the checkpoint thread's, say) that happens to come
    /// while a commit is pending.
    pub fn wal_synced(&self, handle: WalHandle) {
        let mut st = self.lock();
        if st.pending.is_some() && st.pending_writer == handle {
            st.pending_sync = true;
            return;
        }
        // locking_mode=EXCLUSIVE appends at the commit frame, before SQLite syncs the WAL
        // for it: this sync, from the same connection, is the commit's.
        if st.appended_unsynced != Some(handle) || st.appender.is_none() {
            return;
        }
        st.appended_unsynced = None;
        self.owe_sync(&mut st, true);
    }

    pub fn before_wal_truncate(
        &self,
        size: u64,
        read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) {
        if size >= wal::HEADER_SIZE {
            return;
        }
        let mut st = self.lock();
        if st.replication.is_none() {
            return;
        }
        self.flush_pending(&mut st);
        let hdr = read_wal_header(read);
        let fp = || fingerprint(&self.path);
        let result =
            commit::end_generation(st.appender.as_mut().unwrap(), hdr.as_ref(), read, &fp, None);
        self.account(&mut st, result);
        self.sync_log_at_generation_end(&mut st);
        st.capture = Capture::default();
    }

    fn wal_deleting(&self, wal_path: &Path) {
        let mut st = self.lock();
        if st.replication.is_none() {
            return;
        }
        self.flush_pending(&mut st);
        st.wal_file = None;
        // Leaving WAL mode (at a last close the database is forgotten right after).
        st.left_wal = true;
        let Ok(file) = std::fs::File::open(wal_path) else {
            self.sync_log_at_generation_end(&mut st);
            return;
        };
        let mut read = |buf: &mut [u8], off: u64| read_full(Some(&file), buf, off);
        let hdr = read_wal_header(&mut read);
        let fp = || fingerprint(&self.path);
        let final_fp = Some(fingerprint(&self.path));
        let result = commit::end_generation(
            st.appender.as_mut().unwrap(),
            hdr.as_ref(),
            &mut read,
            &fp,
            final_fp,
        );
        self.account(&mut st, result);
        self.sync_log_at_generation_end(&mut st);
        st.capture = Capture::default();
    }

    /// The database went idle: its WAL read-back handle and shadow-log segment are let go, so
    /// that an idle database holds no descriptor of walrust's beyond the uploader's lock. The
    /// next commit opens them again.
    pub fn release_idle_files(&self) {
        let mut st = self.lock();
        if st.in_write_txn || st.pending.is_some() {
            return;
        }
        st.wal_file = None;
        if let Some(app) = st.appender.as_mut() {
            app.release_file();
        }
    }

    /// Whether `catch_up_locked` would find work: read-only, no lock taken, so the uploader
    /// only takes the write lock when a commit really is missing from the log.
    pub fn needs_catch_up(&self) -> io::Result<bool> {
        let Some(repl) = self.replication() else {
            return Ok(false);
        };
        let last = crate::shadow::log::last_record(&repl.shadow.log_dir())?;
        let file = std::fs::File::open(self.wal_path()).ok();
        let mut read = |buf: &mut [u8], off: u64| read_full(file.as_ref(), buf, off);
        let hdr = read_wal_header(&mut read);
        let fp = || fingerprint(&self.path);
        commit::has_uncaptured(last.as_ref(), hdr.as_ref(), &mut read, &fp)
    }

    /// Under the WAL write lock (the caller holds it through its own connection): appends every
    /// transaction the log lacks, then, if `marker` is given, a marker record with a TXID of at
    /// least `min_txid`. Returns the last TXID in the log and the WAL position.
    pub fn catch_up_locked(
        &self,
        marker: Option<(crate::shadow::Kind, u64, u32, u32)>,
    ) -> io::Result<(u64, crate::shadow::WalPos)> {
        let mut st = self.lock();
        let Some(_) = st.replication else {
            return Err(io::Error::other("not replicating"));
        };
        let wal_path = self.wal_path();
        let file = std::fs::File::open(&wal_path).ok();
        let mut read = |buf: &mut [u8], off: u64| read_full(file.as_ref(), buf, off);
        let hdr = read_wal_header(&mut read);
        let fp = || fingerprint(&self.path);
        let result = commit::catch_up(st.appender.as_mut().unwrap(), hdr.as_ref(), &mut read, &fp);
        self.account(&mut st, result);
        if let Some((kind, min_txid, page_size, commit_pages)) = marker {
            let app = st.appender.as_mut().unwrap();
            let a = commit::mark_at_least(app, kind, min_txid, page_size, commit_pages)?;
            self.account(&mut st, Ok(a));
        }
        let last = st.appender.as_ref().unwrap().last().copied();
        Ok((
            last.map_or(0, |h| h.txid),
            last.map_or(crate::shadow::WalPos::Unknown, |h| h.pos),
        ))
    }
}

/// Shadow-log files that must be synced before a WAL generation ends.
struct SyncDue(Vec<Arc<std::fs::File>>);

impl SyncDue {
    fn run(self, repl: Option<&Replication>) {
        if self.0.is_empty() {
            return;
        }
        if let Err(e) = crate::shadow::log::sync_files(&self.0) {
            let msg = format!(
                "walrust: cannot sync the shadow log: {e}; committed transactions may not \
                 survive a power failure until it can"
            );
            crate::log::error(&msg);
            if let Some(r) = repl {
                r.set_error(Some(msg));
            }
        }
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

fn env_replica(db: &Path) -> Option<String> {
    let root = std::env::var("WALRUST_REPLICA_ROOT")
        .ok()
        .filter(|r| !r.is_empty())?;
    let name = db.file_name()?.to_string_lossy().to_string();
    Some(format!("{}/{}", root.trim_end_matches('/'), name))
}

pub use crate::store::url::same_replica;

/// Why a replica URL cannot be used, as the PRAGMA and an open with it both say.
fn cannot_replicate(db: &Path, e: &crate::store::StoreError) -> String {
    format!("walrust: cannot replicate {}: {e}", db.display())
}

pub(crate) fn conflict_message(db: &Path, in_use: &str, asked: &str) -> String {
    format!(
        "walrust: {} already replicates to {in_use}, not {asked}; open it with the same replica, or remove its shadow directory ({}-walrust) to start over with the new one",
        db.display(),
        db.display()
    )
}

/// Records the replica URL in a `state.json` that names none. The first process to replicate
/// the database creates the file; one that finds it created meanwhile (another process
/// opening at the same instant, or its uploader) takes what is there, never overwriting it.
pub(crate) fn record_replica(
    shadow: &ShadowDir,
    state: State,
    described: &str,
) -> Result<State, String> {
    let cannot = |e: std::io::Error| {
        format!(
            "walrust: cannot write {}: {e}; check the directory's permissions and free space",
            shadow.state_path().display()
        )
    };
    let wanted = State {
        version: 1,
        replica: described.to_string(),
        ..state
    };
    let existing = shadow.read_state().ok().flatten();
    match existing {
        Some(found) if !found.replica.is_empty() => Ok(found),
        Some(_) => shadow.write_state(&wanted).map(|_| wanted).map_err(cannot),
        None => match shadow.create_state(&wanted).map_err(cannot)? {
            true => Ok(wanted),
            false => Ok(shadow.state_or_default()),
        },
    }
}
