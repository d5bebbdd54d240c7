//! The hooks the VFS's callbacks (`vfs::ffi`) call: a file opened or about to be deleted, WAL
//! writes, syncs and truncations, the WAL write lock taken and released, the EXCLUSIVE lock.
//! Committed transactions go from `capture` into the shadow log here, on SQLite's thread.
//! What must hold: a hook never fails the application's I/O (a failed append is reported and
//! left for the next append's catch-up) and never waits on the network.

use super::{get_or_create, is_wal_mode, lookup, read_full, read_wal_header};
use super::{AppFile, Database, DbState, Role, WalHandle};
use crate::capture::{commit, Appended, Capture};
use crate::replication::Replication;
use crate::shadow::fingerprint;
use crate::wal;
use std::io;
use std::path::Path;
use std::sync::Arc;

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
    pub(super) fn account(&self, st: &mut DbState, result: io::Result<Appended>) {
        let repl = st.replication.as_ref().unwrap();
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
        if st.in_write_txn || st.pending.is_some() {
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
