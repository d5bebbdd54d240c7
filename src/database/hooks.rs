//! The hooks the VFS's callbacks (`vfs::ffi`) call: a file opened or about to be deleted, WAL
//! writes, syncs and truncations, the WAL write lock taken and released, the EXCLUSIVE lock.
//! Committed transactions go from `capture` into the shadow log here, on SQLite's thread.
//! What must hold: a hook never fails the application's I/O (a failed append is reported and
//! left for the next append's catch-up) and never waits on the network.

use super::{get_or_create, is_wal_mode, lookup, read_full, read_wal_header};
use super::{AppFile, Database, DbState, Role, WalHandle};
use crate::capture::{commit, Appended, Capture};
use crate::replication::Replication;
use crate::shadow::{fingerprint, WalPos};
use crate::wal;
use std::io;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Commits released within this of the one before are grouped (see `group_pending`); slower
/// ones are appended at their release.
const GROUP_GAP: Duration = Duration::from_millis(1);
/// A group is appended once it holds this many commits, this many page bytes, or its oldest
/// commit is this old (at the next release, or by the uploader if none comes).
const GROUP_MAX: usize = 64;
const GROUP_BYTES: usize = 512 << 10;
/// Only small commits are grouped: a larger one gains nothing from it (its pages are mostly
/// its own, and one `pwrite` is little next to its size), and holding its images costs memory
/// and cache (bulk commits of 28 pages ran 7% slower grouped, with 12 MB more memory).
const GROUP_COMMIT_PAGES: usize = 16;
use crate::replication::GROUP_MS;
/// With a shorter sync interval than this, commits are not grouped: the uploader would take
/// the write lock to append young groups.
const GROUP_MIN_SYNC_INTERVAL_MS: u64 = 50;

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
    let before = db
        .app_files
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    if before == 0 {
        // The first of the application's connections: none has read yet
        // (`Database::recovery_pending`).
        db.app_read.store(false, Ordering::Release);
        db.first_open_ms
            .store(crate::clock::now_ms(), Ordering::Release);
    }
    db.seal(false);
    db.lock().closing = None;
    let app = AppFile(db.clone());
    db.configure_from_open(uri);
    if is_wal_mode(read) {
        db.lock().left_wal = false;
        db.start_wanted();
    }
    Role::Main(db, Some(app))
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

impl Database {
    /// An application connection is taking the EXCLUSIVE lock on the database file: SQLite does
    /// so to leave WAL mode and when its last connection closes (to checkpoint and delete the
    /// WAL). Either fails with SQLITE_BUSY while any other connection has the database open,
    /// so walrust's checkpoint connection closes first, as if walrust were not there. Only when
    /// the asking connection is the application's only one in this process: with others open
    /// the lock fails anyway, and a pool that closes connections often must not keep the
    /// checkpoint thread away.
    ///
    /// A snapshot or catch-up in flight holds a connection too, or is about to: the lock would
    /// fail, and the last close would leave the WAL behind, with commits the database file
    /// lacks. It is let finish first (a snapshot now fixes its point at once instead of
    /// waiting for a commit), within the close's timeout (`walrust_close_timeout`).
    pub fn before_exclusive_lock(&self) {
        let only = self.app_files.load(std::sync::atomic::Ordering::Acquire) <= 1;
        let Some(repl) = self.replication().filter(|_| only) else {
            return;
        };
        crate::log::trace(|| format!("exclusive lock on {} asked", self.path.display()));
        let deadline = self.close_begins(&repl, true);
        crate::checkpoint::release(&self.path);
        // SQLite's close (or journal-mode change) needs the database to itself once this wait
        // is over: no connection of walrust's may open after it.
        self.seal(true);
        self.wait_for_internal_connections(&repl, deadline);
    }

    /// Takes the error an open recorded (a replica conflict), for the auto-extension to raise.
    pub fn take_conflict(&self) -> Option<String> {
        self.lock().conflict.take()
    }

    pub fn wal_opened(&self, read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>) {
        let mut st = self.lock();
        if st.replication.is_some() {
            if let Some(h) = read_wal_header(read) {
                st.capture.adopt_header(h);
            }
        }
    }

    /// A connection of this process took the WAL write lock (`app`: one of the application's).
    pub fn write_lock_taken(&self, app: bool) {
        let mut st = self.lock();
        if app {
            // Writing again: whatever asked for the EXCLUSIVE lock was not the last close (a
            // `PRAGMA journal_mode` another process's connection made fail).
            st.closing = None;
            self.seal(false);
        }
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
            self.group_pending(&mut st);
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

    /// At the write lock's release: the commit joins the group, which is appended now unless
    /// commits are coming fast (released within `GROUP_GAP` of each other) and it is still
    /// small and young. Grouped, each page is written to the log once per group instead of
    /// once per commit.
    fn group_pending(&self, st: &mut DbState) {
        let Some(c) = st.pending.take() else {
            return;
        };
        let sync = std::mem::take(&mut st.pending_sync);
        let Some(repl) = st.replication.clone() else {
            return;
        };
        repl.wal.commits_synced.store(sync, Ordering::Relaxed);
        let now = Instant::now();
        let burst = st
            .last_release
            .is_some_and(|t| now.duration_since(t) < GROUP_GAP);
        st.last_release = Some(now);
        let small = c.images.is_some() && c.pages.len() <= GROUP_COMMIT_PAGES;
        crate::failpoint::hit("commit.grouping");
        if st
            .group
            .last()
            .is_some_and(|prev| prev.salts != c.salts || prev.last + 1 != c.first)
        {
            // Another process committed between (or the WAL started over): a group is a run
            // of frames with nothing between, so the one before goes in first. (The commit in
            // between is caught up from the WAL before this one is appended.)
            self.flush_group(st, false);
        }
        let follows = match st.group.last() {
            Some(prev) => prev.salts == c.salts && prev.last + 1 == c.first,
            None => match st.appender.as_ref().and_then(|a| a.last()).map(|h| h.pos) {
                Some(WalPos::At { salts, frame }) => salts == c.salts && frame + 1 == c.first,
                // The WAL started over after the log's last record.
                Some(WalPos::Empty) => c.first == 1,
                _ => false,
            },
        };
        let counted = repl.wal.grouped.load(Ordering::Relaxed);
        let grouped = if follows && (st.group.is_empty() || counted > 0) {
            counted + 1
        } else {
            0
        };
        st.group_bytes += c.pages.len() * c.page_size as usize;
        st.group.push(c);
        st.group_sync |= sync;
        let since = repl.wal.group_since_ms.load(Ordering::Relaxed);
        let now_ms = crate::clock::now_ms();
        let wait = burst
            && small
            && st.group.len() < GROUP_MAX
            && st.group_bytes < GROUP_BYTES
            && (since == 0 || now_ms - since < GROUP_MS)
            && repl.settings.lock().unwrap().sync_interval_ms >= GROUP_MIN_SYNC_INTERVAL_MS;
        if !wait {
            self.flush_group(st, true);
            return;
        }
        repl.wal.grouped.store(grouped, Ordering::Release);
        if since == 0 && repl.wal.group_begins(now_ms) {
            // The uploader appends the group if no release comes to do it.
            crate::upload::notify(&repl);
        }
    }

    /// Appends the commit waiting for the write lock's release, if any, after the group.
    /// Nothing is synced here, whatever `synchronous` says: see `log_owes_sync`.
    fn flush_pending(&self, st: &mut DbState) {
        if let Some(c) = st.pending.take() {
            let sync = std::mem::take(&mut st.pending_sync);
            if let Some(r) = st.replication.as_ref() {
                r.wal.commits_synced.store(sync, Ordering::Relaxed);
            }
            st.group_bytes += c.pages.len() * c.page_size as usize;
            st.group.push(c);
            st.group_sync |= sync;
        }
        self.flush_group(st, false);
    }

    /// Appends the group, if any, with the WAL's header read afresh (so that commits of a
    /// generation another process ended meanwhile, and caught up, are left out); but for one
    /// commit appended at its own release (`at_release`), where nobody can have written since
    /// it, and our header is the WAL's.
    pub(super) fn flush_group(&self, st: &mut DbState, at_release: bool) {
        if st.group.is_empty() {
            return;
        }
        let group = std::mem::take(&mut st.group);
        let sync = std::mem::take(&mut st.group_sync);
        st.group_bytes = 0;
        if let Some(r) = st.replication.as_ref() {
            // Counted by `account` from here on (never twice: a status may lag a moment).
            r.wal.grouped.store(0, Ordering::Release);
        }
        if st.wal_file.is_none() {
            st.wal_file = std::fs::File::open(self.wal_path()).ok();
        }
        let file = st.wal_file.take();
        let mut read = |buf: &mut [u8], off: u64| read_full(file.as_ref(), buf, off);
        let hdr = match (st.capture.header(), group.as_slice()) {
            // One commit appended at its own release: nobody can have written since.
            (Some(h), [c]) if at_release && h.salts == c.salts => Some(*h),
            _ => read_wal_header(&mut read),
        };
        let Some(hdr) = hdr else {
            // The commits stay in the WAL; the next append's catch-up recovers them.
            let err = io::Error::other("the WAL header could not be read");
            st.wal_file = file;
            for c in group {
                st.capture.recycle(c.images);
            }
            self.account(st, Err(err));
            return;
        };
        let fp = || fingerprint(&self.path);
        let result =
            commit::append_group(st.appender.as_mut().unwrap(), &hdr, &group, &mut read, &fp);
        st.wal_file = file;
        for c in group {
            st.capture.recycle(c.images);
        }
        let appended = result.is_ok();
        self.account(st, result);
        self.owe_sync(st, sync);
        if appended {
            // After `account` made their TXIDs the status's: a `walrust_sync()` waiting for
            // the group reads them once this says the group is in (`upload::worker`). A failed
            // append leaves it set: the commits are in the WAL only, until a catch-up.
            let r = st.replication.as_ref().unwrap();
            r.wal.group_since_ms.store(0, Ordering::Release);
        }
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
    /// SQLite made durable are only in the log from now on, so the log is synced first. When
    /// commits are synced (`synchronous=FULL`) so is the record just appended that says the
    /// generation ended: after a power failure, it is what lets the next open copy the new
    /// generation's commits from the WAL instead of taking a snapshot. (A sync run beside the
    /// checkpoint, `log_sync_ahead`, may have settled the commits already; then this one
    /// writes only that record.)
    fn sync_log_at_generation_end(&self, st: &mut DbState) {
        let full = st
            .replication
            .as_ref()
            .is_some_and(|r| r.wal.commits_synced.load(Ordering::Relaxed));
        if !std::mem::take(&mut st.log_owes_sync) && !full {
            return;
        }
        let Some(files) = st.appender.as_mut().map(|a| a.files_to_sync()) else {
            return;
        };
        SyncDue(files).run(st.replication.as_deref());
    }

    /// The log files the commits SQLite made durable are owed, for a sync run while a
    /// committing connection checkpoints (`checkpoint::sqlite_checkpoint`), whose restart of
    /// the WAL would otherwise wait for it. The debt stays until `log_synced_ahead` settles it.
    pub fn log_sync_ahead(&self) -> Option<SyncAhead> {
        let st = self.lock();
        if !st.log_owes_sync {
            return None;
        }
        let (files, mark) = st.appender.as_ref()?.sync_ahead();
        Some(SyncAhead { files, mark })
    }

    /// The files of `ahead` were synced: the log owes nothing more, unless it was appended
    /// to since (then the WAL's generation end syncs it, as always).
    pub fn log_synced_ahead(&self, ahead: SyncAhead) {
        let mut st = self.lock();
        if st.log_owes_sync
            && st
                .appender
                .as_mut()
                .is_some_and(|a| a.synced_ahead(ahead.mark))
        {
            st.log_owes_sync = false;
        }
    }

    /// Before a WAL write: a new header means a new generation; settle the old one first.
    pub fn before_wal_write(
        &self,
        off: u64,
        data: &[u8],
        read: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) {
        if off != 0 {
            return; // a frame: only a header write starts a generation (no lock taken)
        }
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
            if st.pending.is_some() {
                self.flush_pending(&mut st);
            }
            st.pending = Some(c);
            st.pending_writer = writer;
            return;
        }
        // No shared-memory locks (locking_mode=EXCLUSIVE): nobody else can write, append now
        // (after any group of commits made before the mode changed).
        self.flush_group(&mut st, false);
        let hdr = *st.capture.header().expect("a commit implies a header");
        let fp = || fingerprint(&self.path);
        let result = commit::append_commit(st.appender.as_mut().unwrap(), &hdr, &c, read, &fp);
        st.capture.recycle(c.images);
        st.appended_unsynced = Some(writer);
        self.account(&mut st, result);
    }

    /// Records an append's outcome. A failure is reported and left for the next append's
    /// catch-up to repair from the WAL; it never fails the application's commit.
    pub(super) fn account(&self, st: &mut DbState, result: io::Result<Appended>) {
        let repl = st.replication.as_ref().unwrap();
        if let Some(damage) = st.appender.as_mut().and_then(|a| a.take_damage()) {
            repl.log_damaged(&damage);
        }
        // A failed append leaves commits in the WAL alone: no checkpoint may let SQLite
        // restart it until an append succeeds (which catches them up first).
        repl.wal
            .log_behind
            .store(result.is_err(), std::sync::atomic::Ordering::Release);
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

    /// SQLite synced the WAL (`ok`), or failed to. With a commit pending, that is `synchronous=FULL` (or EXTRA)
    /// making the commit durable: the log owes a sync before this WAL generation ends
    /// (`log_owes_sync`); the commit itself waits for no other fsync. Otherwise it is a
    /// checkpoint's sync (`synchronous=NORMAL` syncs nothing else), and the log is left to the
    /// page cache: see "Durability" in README.md. `handle` tells the committing connection's
    /// sync from another connection's (the checkpoint thread's, say) that happens to come
    /// while a commit is pending.
    /// If the sync failed and a commit of that handle is pending, SQLite did not publish it
    /// (it reports the error, and the next writer reuses the frames): it never becomes a
    /// record, so no restore can return a transaction the application was told failed.
    pub fn wal_synced(&self, handle: WalHandle, ok: bool) {
        let mut st = self.lock();
        if !ok {
            if st.pending.is_some() && st.pending_writer == handle {
                if let Some(c) = st.pending.take() {
                    st.capture.unpublished(&c);
                    st.capture.recycle(c.images);
                }
                st.pending_sync = false;
            }
            return;
        }
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
    /// Returns false when a commit is under way (try again later).
    pub fn release_idle_files(&self) -> bool {
        let mut st = self.lock();
        if st.in_write_txn || st.pending.is_some() || !st.group.is_empty() {
            return false;
        }
        st.wal_file = None;
        if let Some(app) = st.appender.as_mut() {
            app.release_file();
        }
        true
    }
}

/// Shadow-log files that must be synced before a WAL generation ends.
struct SyncDue(Vec<Arc<std::fs::File>>);

/// The log's owed files and the mark they were taken at (`Database::log_sync_ahead`).
pub struct SyncAhead {
    files: Vec<Arc<std::fs::File>>,
    mark: u64,
}

impl SyncAhead {
    /// Syncs the files: true once every one is on disk.
    pub fn sync(&self) -> bool {
        crate::shadow::log::sync_files(&self.files).is_ok()
    }
}

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
