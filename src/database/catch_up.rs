//! What the uploader asks of a database from its own thread: whether the shadow log lacks a
//! commit that is in the WAL, and bringing it up to date under the WAL write lock that the
//! uploader took through its own connection (for a snapshot's point, or a marker record).

use super::{read_full, read_wal_header, Database};
use crate::capture::commit;
use crate::shadow::fingerprint;
use std::io;

impl Database {
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

    /// The log's last record vouches for the database file by its fingerprint
    /// (`commit::file_final`) and the WAL holds commits the log lacks
    /// (a power failure cut them from the log, or a writer without walrust made them): a
    /// checkpoint now would change the file, the log could no longer be shown to go on into
    /// this WAL, and a snapshot would stand in for those commits. They are caught up first.
    pub fn log_pinned_to_file(&self) -> bool {
        let pinned = |h: Option<&crate::shadow::Header>| h.is_some_and(commit::pinned_to_file);
        // What this process appended last, first: a cheap answer for a busy database.
        let known = self
            .lock()
            .appender
            .as_ref()
            .and_then(|a| a.last().copied());
        if known.is_some_and(|h| !pinned(Some(&h))) {
            return false;
        }
        let Some(repl) = self.replication() else {
            return false;
        };
        let last = crate::shadow::log::last_record(&repl.shadow.log_dir())
            .ok()
            .flatten();
        pinned(last.as_ref()) && self.needs_catch_up().unwrap_or(true)
    }

    /// If a connection of this process holds the WAL write lock, catches up under it (it
    /// cannot be released meanwhile: its release hook waits for the database's mutex) and
    /// says whether the log now holds every commit; `None` if none holds it.
    pub fn catch_up_if_writing(&self) -> Option<bool> {
        let mut st = self.lock();
        if !st.in_write_txn || st.replication.is_none() {
            return None;
        }
        Some(self.catch_up_in(&mut st))
    }

    /// `catch_up_if_writing` for a caller that holds the write lock through its own
    /// connection.
    pub fn catch_up_under_lock(&self) -> bool {
        let mut st = self.lock();
        st.replication.is_some() && self.catch_up_in(&mut st)
    }

    /// This process's group, then every commit of the WAL the log lacks; true if all went in.
    fn catch_up_in(&self, st: &mut super::DbState) -> bool {
        // The group first: from memory, not read back from the WAL.
        self.flush_group(st, false);
        let file = std::fs::File::open(self.wal_path()).ok();
        let mut read = |buf: &mut [u8], off: u64| read_full(file.as_ref(), buf, off);
        let hdr = read_wal_header(&mut read);
        let fp = || fingerprint(&self.path);
        let result = commit::catch_up(st.appender.as_mut().unwrap(), hdr.as_ref(), &mut read, &fp);
        let caught_up = result.is_ok() && st.group.is_empty();
        self.account(st, result);
        if caught_up {
            // Whatever a failed group append left in the WAL alone is in the log now.
            let r = st.replication.as_ref().unwrap();
            r.wal
                .group_since_ms
                .store(0, std::sync::atomic::Ordering::Release);
        }
        caught_up
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
        self.catch_up_in(&mut st);
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
