//! One database's upload state (`Entry`) and its step (`tick`): read the shadow log, upload a
//! level-0 batch, snapshot, write the manifest, record progress (see `upload` for the rules).
//!
//! A step runs on a pool thread and blocks on the store; `pool` guarantees an entry is stepped
//! by one thread at a time, so nothing here is shared between threads except through
//! `Replication` (status, settings) and the store. `handle`, `notified` and `due_at` run on
//! the scheduler: they must never block or do I/O. `walrust_takeover()` is served at the start
//! of the next step (it writes the manifest), not in `handle`.

use super::{batch, owner, Msg, Source};
use crate::clock::now_ms;
use crate::replication::Replication;
use crate::shadow::log::{self, Cursor, Reader, RecordRef};
use crate::shadow::{Kind, State};
use flume::Sender;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

type Reply = Sender<Result<u64, String>>;

pub(crate) struct Entry {
    pub(super) repl: Arc<Replication>,
    db: Weak<dyn Source>,
    /// The uploader lock, while this process holds it.
    lock: Option<File>,
    pub(super) reader: Reader,
    pub(super) read_cursor: Cursor,
    /// The log is durable up to here (`sync_log`).
    log_synced: Cursor,
    /// Where the last record read from the log lies, and its TXID: the next one's must be above
    /// it (see `note_order`).
    pub(super) last_read: Option<((u64, u64), u64)>,
    /// Records read from the log and not yet known to be in the replica.
    pending: Vec<RecordRef>,
    /// The newest TXID a restore of the replica's newest state returns.
    pub(super) uploaded: u64,
    /// The newest TXID level 0 (with the levels compacted from it) reaches: level-0 uploads go
    /// on from here, so that they stay contiguous through snapshots.
    pub(super) level0: u64,
    pub(super) replica_checked: bool,
    /// The replica's owner this database continues (`history`), once checked.
    pub(super) owner: Option<crate::history::Owner>,
    /// The version of `manifest.json` last seen to name `owner` (see `owner::fence`).
    pub(super) manifest_version: Option<crate::store::ETag>,
    /// Why this database may not upload to its replica (`owner::refuse`): nothing is uploaded,
    /// and every `walrust_sync()` gets this error.
    pub(super) refused: Option<String>,
    /// A snapshot with a new TXID above this one is needed before any level-0 upload.
    pub(super) fresh_snapshot_above: Option<u64>,
    /// The TXID of the replica's newest snapshot as this process knows it: its own last one,
    /// or the one `manifest.json` named at the TXID uploading resumed from (0: none known).
    pub(super) last_snapshot_txid: u64,
    next_snapshot_ms: i64,
    pub(super) snapshot_requested: bool,
    retry_at_ms: i64,
    failures: u32,
    force: bool,
    catch_up: bool,
    /// `walrust_sync()` callers: the TXID each waits for, and whether it still waits for a
    /// catch-up (every commit made before the call, in a group of some process or in the
    /// WAL alone, is in the log only after one: then its TXID is the log's newest).
    waiters: Vec<(u64, Reply, bool)>,
    snapshot_waiters: Vec<Reply>,
    /// `walrust_takeover()` callers, served at the start of the next step.
    takeovers: Vec<Reply>,
    /// When the last step began.
    last_tick_ms: i64,
    /// When the entry next needs a look: the oldest unsent commit plus the sync interval, or
    /// the housekeeping poll.
    next_tick_ms: i64,
    /// Manifest entries of uploaded level-0 files not yet written to `manifest.json`, when it
    /// was last written, and the size of the object written then (`manifest::cadence`).
    pub(super) manifest_backlog: Vec<crate::manifest::Entry>,
    manifest_written_ms: i64,
    manifest_head_bytes: u64,
    /// The last read stopped at `BATCH_RECORDS`: the log holds more, upload and read again.
    batch_full: bool,
}

impl Entry {
    pub(super) fn new(repl: Arc<Replication>, db: Weak<dyn Source>) -> Entry {
        let interval = repl.settings().snapshot_interval_s as i64 * 1000;
        Entry {
            reader: Reader::new(repl.shadow.log_dir()),
            repl,
            db,
            lock: None,
            read_cursor: Cursor::default(),
            log_synced: Cursor::default(),
            last_read: None,
            pending: Vec::new(),
            uploaded: 0,
            level0: 0,
            replica_checked: false,
            owner: None,
            manifest_version: None,
            refused: None,
            fresh_snapshot_above: None,
            last_snapshot_txid: 0,
            next_snapshot_ms: if interval > 0 {
                now_ms() + interval
            } else {
                i64::MAX
            },
            snapshot_requested: false,
            retry_at_ms: 0,
            failures: 0,
            force: false,
            catch_up: true,
            waiters: Vec::new(),
            snapshot_waiters: Vec::new(),
            takeovers: Vec::new(),
            last_tick_ms: i64::MIN,
            next_tick_ms: 0,
            manifest_backlog: Vec::new(),
            manifest_written_ms: now_ms(),
            manifest_head_bytes: 0,
            batch_full: false,
        }
    }

    /// Nothing left for this process to do: no application connection, and either nothing
    /// pending or a snapshot needed (which only a process with the database open can take: let
    /// one of those have the uploader lock).
    pub(super) fn idle(&self) -> bool {
        !self.db.upgrade().is_some_and(|d| d.in_use())
            && self.manifest_backlog.is_empty()
            && (self.pending.is_empty() || self.fresh_snapshot_above.is_some())
            && self.waiters.is_empty()
            && self.snapshot_waiters.is_empty()
            && self.takeovers.is_empty()
    }
}

/// The most shadow-log records a batch holds in memory (~150 bytes each). A one-second batch of
/// a writer committing 35k small transactions a second held them all; past this many, the
/// batch is uploaded as it is and the rest of the log read at once after.
const BATCH_RECORDS: usize = 16_384;

/// Without news, each database is looked at this often (uploader takeover, other processes'
/// commits, scheduled snapshots).
const POLL_MS: i64 = 1000;

/// Someone waits (`walrust_sync()`, a snapshot) and the last step could not answer (another
/// process uploads, or nothing to snapshot from): look again this often.
const ASKED_POLL_MS: i64 = 50;

/// When this entry next needs a step (`pool` runs it then, on a free thread).
pub(super) fn due_at(e: &Entry) -> i64 {
    if !e.takeovers.is_empty() {
        return i64::MIN;
    }
    let asked = e.force || e.snapshot_requested || !e.waiters.is_empty();
    let mut at = e.next_tick_ms;
    if asked {
        at = at.min(e.last_tick_ms.saturating_add(ASKED_POLL_MS));
    }
    at.max(e.retry_at_ms)
}

/// The housekeeping poll of a database with nothing to do, answered on the scheduler without
/// a pool thread (with thousands of idle databases, handing each to a thread every second was
/// most of their cost): true when nothing is asked of it, nothing waits in memory, no
/// snapshot or retry is due, and no record follows the cursor in the log (one small read,
/// which is how other processes' commits are seen). Then the next look is a poll later.
pub(super) fn quiet_poll(e: &mut Entry, now: i64) -> bool {
    let group_since = e.repl.wal.look_at_group();
    let nothing_asked = e.takeovers.is_empty()
        && e.waiters.is_empty()
        && e.snapshot_waiters.is_empty()
        && !e.force
        && !e.catch_up
        && !e.snapshot_requested
        && !e.batch_full;
    let nothing_held = e.pending.is_empty()
        && group_since == 0
        && e.manifest_backlog.is_empty()
        && e.fresh_snapshot_above.is_none()
        && e.failures == 0
        && e.refused.is_none();
    let settled = e.lock.is_some()
        && e.replica_checked
        && now < e.next_snapshot_ms
        && e.repl.status().local_txid <= e.level0
        && e.db.upgrade().is_some_and(|d| d.in_use());
    let quiet = nothing_asked
        && nothing_held
        && settled
        && !log::record_at(&e.repl.shadow.log_dir(), e.read_cursor);
    if quiet {
        e.next_tick_ms = now + POLL_MS;
    }
    quiet
}

/// Applies a message for this entry (on the pool's scheduler: never blocks, no I/O).
pub(super) fn handle(e: &mut Entry, msg: Msg) {
    match msg {
        Msg::Register(..) => {
            e.force = true;
            e.last_tick_ms = i64::MIN;
        }
        Msg::Notify(_) => notified(e),
        Msg::Sync { txid, reply, .. } => {
            e.waiters.push((txid, reply, true));
            e.force = true;
            e.catch_up = true;
            e.retry_at_ms = 0;
            e.last_tick_ms = i64::MIN;
        }
        Msg::Takeover { reply, .. } => e.takeovers.push(reply),
        Msg::Snapshot { reply, .. } => {
            e.snapshot_waiters.push(reply);
            e.snapshot_requested = true;
            e.retry_at_ms = 0;
            e.last_tick_ms = i64::MIN;
        }
        Msg::Compact(_) | Msg::Done(_) => {}
    }
}

/// New records in the log: upload them within the sync interval.
pub(super) fn notified(e: &mut Entry) {
    let interval = e.repl.settings().sync_interval_ms as i64;
    e.next_tick_ms = e.next_tick_ms.min(now_ms() + interval);
}

/// `walrust_takeover()`: become the uploader, claim the replica's next generation and ask for
/// the snapshot that starts it (the reply waits for that snapshot).
fn take_over(e: &mut Entry, reply: Reply) {
    if e.lock.is_none() && !take_lock(e) {
        let _ = reply.send(Err(format!(
            "walrust: another process uploads {}; run walrust_takeover() there, or close it first",
            e.repl.db_path.display()
        )));
        return;
    }
    if !e.replica_checked {
        // Where the log stands, before the snapshot decides its TXID.
        if let Err(err) = owner::settle_cursor(e, e.uploaded) {
            let _ = reply.send(Err(err));
            return;
        }
    }
    match owner::take_over(e) {
        Ok(()) => {
            e.snapshot_waiters.push(reply);
            e.retry_at_ms = 0;
        }
        Err(err) => {
            let _ = reply.send(Err(err));
        }
    }
}

pub(super) fn fail(e: &mut Entry, err: String) {
    e.failures += 1;
    let base = 100i64 << e.failures.min(8);
    let jitter = (now_ms() ^ (e.repl.id as i64 * 7919)).rem_euclid(base / 2 + 1);
    e.retry_at_ms = now_ms() + base.min(30_000) + jitter;
    crate::log::error_kind(&e.repl.url, &err);
    e.repl.set_error(Some(err));
}

/// One step of one database, on a pool thread, when `due_at` says (the pool never runs two
/// steps of one entry at once).
pub(super) fn tick(e: &mut Entry) {
    for reply in std::mem::take(&mut e.takeovers) {
        take_over(e, reply);
    }
    let now = now_ms();
    e.last_tick_ms = now;
    settle_group(e, now);
    if now < e.retry_at_ms {
        return;
    }
    e.next_tick_ms = now + POLL_MS;
    let since = e.repl.wal.look_at_group();
    if since != 0 {
        e.next_tick_ms = e
            .next_tick_ms
            .min(since + crate::replication::GROUP_STALL_MS);
    }
    if e.lock.is_none() && !take_lock(e) {
        // Nothing to upload here while another process does: look again at the poll.
        e.force = false;
        follow_other_uploader(e);
        return;
    }
    if let Some(why) = &e.refused {
        for (_, w, _) in e.waiters.drain(..) {
            let _ = w.send(Err(why.clone()));
        }
        for w in e.snapshot_waiters.drain(..) {
            let _ = w.send(Err(why.clone()));
        }
        e.pending.clear();
        return;
    }
    crate::log::trace(|| {
        format!(
            "tick {} uploaded {} cursor {:?} pending {}",
            e.repl.db_path.display(),
            e.uploaded,
            e.read_cursor,
            e.pending.len()
        )
    });
    let stepped = step(e, now);
    note_unnamed(e);
    if let Err(err) = stepped {
        fail(e, err);
        return;
    }
    e.failures = 0;
    answer_waiters(e);
    if e.batch_full {
        e.next_tick_ms = now;
    }
    if let Some(oldest) = e.pending.iter().find(|r| r.header.txid > e.level0) {
        let due = oldest.header.timestamp_ms + e.repl.settings().sync_interval_ms as i64;
        e.next_tick_ms = e.next_tick_ms.min(due);
    }
}

/// Tries to become this database's uploader; loads where the last one stopped.
fn take_lock(e: &mut Entry) -> bool {
    match e.repl.shadow.try_lock_uploader() {
        Ok(Some(f)) => {
            let st = e.repl.shadow.state_or_default();
            e.lock = Some(f);
            e.uploaded = st.uploaded_txid;
            e.read_cursor = Cursor {
                seq: st.cursor_seq,
                offset: st.cursor_offset,
            };
            e.last_read = None;
            e.pending.clear();
            e.replica_checked = false;
            e.refused = None;
            e.catch_up = true;
            e.repl.update_status(|s| {
                s.uploading = true;
                s.uploaded_txid = st.uploaded_txid;
            });
            true
        }
        Ok(None) => false,
        Err(err) => {
            fail(
                e,
                format!(
                    "walrust: cannot take the uploader lock in {}: {err}",
                    e.repl.shadow.root.display()
                ),
            );
            false
        }
    }
}

/// A group of this process's commits waits in memory (`database::hooks`): appended by the
/// application's next release of the write lock, or here, under the write lock, once it is
/// `GROUP_STALL_MS` old. A `walrust_sync()` caller waits for a catch-up (whichever process
/// uploads): commits made before its call may be in a group, of this process or another, or
/// in the WAL alone; after the catch-up its TXID is the log's newest.
fn settle_group(e: &mut Entry, now: i64) {
    let since = e.repl.wal.group_since_ms.load(Ordering::Acquire);
    let wanted = e.waiters.iter().any(|w| w.2);
    let stalled = since != 0 && now - since >= crate::replication::GROUP_STALL_MS;
    if !wanted && !stalled {
        return;
    }
    // With the database closed nothing of this process is in memory any more.
    let caught_up = e.db.upgrade().is_none_or(|db| db.catch_up());
    if caught_up {
        e.catch_up = false; // the step need not look again
    }
    if wanted && caught_up {
        let local = e.repl.status().local_txid;
        for w in e.waiters.iter_mut().filter(|w| w.2) {
            w.0 = w.0.max(local);
            w.2 = false;
        }
        e.force = true;
    }
}

/// Another process uploads: report its progress and answer our waiters from `state.json`.
fn follow_other_uploader(e: &mut Entry) {
    if let Ok(Some(st)) = e.repl.shadow.read_state() {
        e.uploaded = st.uploaded_txid;
        e.repl.update_status(|s| {
            s.uploaded_txid = st.uploaded_txid;
            s.last_error = st.last_error.clone();
            if st.uploaded_txid >= s.local_txid {
                s.pending_bytes = 0;
                s.oldest_pending_ms = None;
            }
        });
        answer_waiters(e);
    }
    if !e.db.upgrade().is_some_and(|d| d.in_use()) {
        e.pending.clear();
        for (_, w, _) in e.waiters.drain(..) {
            let _ = w.send(Err(
                "walrust: the database was closed before its transactions were uploaded".into(),
            ));
        }
    }
}

fn answer_waiters(e: &mut Entry) {
    // Refused during this step (a manifest write found a new owner): the batch just uploaded
    // is in no restore of the newest state, so nothing may be acknowledged.
    if let Some(why) = &e.refused {
        for (_, w, _) in e.waiters.drain(..) {
            let _ = w.send(Err(why.clone()));
        }
        return;
    }
    let uploaded = e.uploaded;
    e.waiters.retain(|(txid, w, grouped)| {
        if !*grouped && *txid <= uploaded {
            let _ = w.send(Ok(uploaded));
            false
        } else {
            !w.is_disconnected()
        }
    });
}

fn step(e: &mut Entry, now: i64) -> Result<(), String> {
    let db = e.db.upgrade().filter(|d| d.in_use());
    if !e.replica_checked {
        owner::settle_cursor(e, e.uploaded)?;
        owner::check_replica(e)?;
        if e.refused.is_some() {
            return Ok(());
        }
    }
    // A snapshot with a fresh TXID is coming anyway (its point catches the log up, at a
    // commit of the application's if there is one): no need to take the write lock here.
    if e.catch_up && e.fresh_snapshot_above.is_some() {
        e.catch_up = false;
    }
    // While the application's first read may be recovering the WAL the catch-up waits
    // (`Database::recovery_pending`), and so does the rest of the step: it reads the log,
    // which may still lack commits that only the WAL holds.
    if e.catch_up && db.as_ref().is_some_and(|db| db.recovery_pending()) {
        return Ok(());
    }
    if e.catch_up {
        e.catch_up = false;
        if let Some(db) = db.as_ref() {
            db.catch_up();
        }
    }
    e.repl.reading();
    let room = BATCH_RECORDS.saturating_sub(e.pending.len());
    let (recs, cursor) = e.reader.read_at_most(e.read_cursor, room).map_err(|err| {
        format!(
            "walrust: cannot read the shadow log in {}: {err}",
            e.repl.shadow.root.display()
        )
    })?;
    e.read_cursor = cursor;
    let got_records = !recs.is_empty();
    // This process appended records the cursor does not reach: the log was cut below it (a
    // crash lost its unsynced tail after the cursor was recorded). Find where it goes on.
    if !got_records
        && e.pending.is_empty()
        && e.repl.status().local_txid > e.level0
        && owner::settle_cursor(e, e.level0)?
    {
        e.next_tick_ms = now;
    }
    // The log may hold more: upload this batch now and come back at once for the rest.
    e.batch_full = recs.len() >= room;
    for r in recs {
        take_in(e, r);
    }
    let mut snapshot_due =
        e.fresh_snapshot_above.is_some() || e.snapshot_requested || now >= e.next_snapshot_ms;
    if snapshot_due
        && e.fresh_snapshot_above.is_none()
        && !e.snapshot_requested
        && db
            .as_ref()
            .is_some_and(|db| unchanged_since_snapshot(e, db.as_ref()))
    {
        crate::log::trace(|| {
            format!(
                "nothing committed since the snapshot at {} of {}: the timer starts over",
                e.last_snapshot_txid, e.repl.url
            )
        });
        after_snapshot(e);
        snapshot_due = false;
    }
    if snapshot_due {
        if let Some(db) = &db {
            if e.fresh_snapshot_above.is_none() {
                upload_pending(e, true)?;
            }
            // The snapshot is named at once: the files before it first, or a process killed
            // after the snapshot left them unnamed for good (its successor names only files
            // past the manifest's newest TXID, see `owner::check_replica`).
            write_manifest(e, true)?;
            if !owner::fence(e)? {
                return Ok(());
            }
            let txid = match db.snapshot(&e.repl, e.fresh_snapshot_above, e.owner) {
                Ok(taken) => {
                    // Our own write: the next batch's fence needs no read of the manifest.
                    e.manifest_version = Some(taken.manifest.version);
                    e.manifest_head_bytes = taken.manifest.bytes;
                    taken.txid.get()
                }
                Err(super::snapshot::Error::NotOwner(found)) => {
                    owner::lost(e, found);
                    return Ok(());
                }
                // Closed meanwhile: the log keeps what is pending for the next open.
                Err(super::snapshot::Error::Closed) => return Ok(()),
                Err(err) => {
                    return Err(format!("walrust: snapshot to {} failed: {err}", e.repl.url))
                }
            };
            if e.fresh_snapshot_above.is_some() {
                // A new TXID: level 0 goes on after it (the only gap it ever has).
                e.level0 = txid;
            } else {
                // The level-0 batch up to the snapshot's TXID follows at once.
                e.force = true;
            }
            e.fresh_snapshot_above = None;
            e.snapshot_requested = false;
            e.last_snapshot_txid = txid;
            e.uploaded = e.uploaded.max(txid);
            e.repl
                .update_status(|s| s.last_upload_at_ms = Some(now_ms()));
            after_snapshot(e);
            for w in e.snapshot_waiters.drain(..) {
                let _ = w.send(Ok(txid));
            }
            // Records up to the snapshot are in it; read the marker the snapshot appended.
            let room = BATCH_RECORDS.saturating_sub(e.pending.len());
            let (recs, cursor) = e
                .reader
                .read_at_most(e.read_cursor, room)
                .map_err(|err| err.to_string())?;
            e.batch_full |= recs.len() >= room;
            e.read_cursor = cursor;
            // A `Resync` the snapshot covers (appended while its point was fixed): level 0
            // goes on after the snapshot, never across the `Resync`.
            if recs
                .iter()
                .any(|r| r.header.kind == Kind::Resync && r.header.txid <= txid)
            {
                e.level0 = e.level0.max(txid);
            }
            for r in recs {
                take_in(e, r);
            }
            persist(e)?;
        }
    }
    if e.fresh_snapshot_above.is_none() {
        let due = e.force
            || e.batch_full
            || e.pending
                .iter()
                .find(|r| r.header.txid > e.level0)
                .is_some_and(|r| {
                    r.header.timestamp_ms + e.repl.settings().sync_interval_ms as i64 <= now
                });
        if due {
            upload_pending(e, false)?;
            e.force = false;
        }
    }
    // At once when someone waits in walrust_sync() or the application closed the database;
    // else when `manifest::cadence` says so. (Writing it whenever the log went quiet made a database
    // committing less than once a second read and rewrite the manifest after every batch.)
    write_manifest(e, db.is_none() || !e.waiters.is_empty())?;
    if e.pending.is_empty() {
        // Caught up: an idle database holds no descriptor for its log.
        e.reader.release_file();
    }
    Ok(())
}

/// Nothing was committed since this process's last snapshot, in this process or another: the
/// snapshot the timer asks for would be that one (`snapshot::named_already`), at the cost of
/// a connection, an instant of the WAL write lock (which a writer without a busy timeout in
/// another process meets as "database is locked") and a read of the manifest.
fn unchanged_since_snapshot(e: &Entry, db: &dyn Source) -> bool {
    let last = e.last_snapshot_txid;
    last != 0
        && e.uploaded <= last
        && e.pending.is_empty()
        && !e.batch_full
        && e.repl.status().local_txid <= last
        && db.all_captured()
}

/// After a snapshot, or a timer's snapshot that nothing committed made needed: the timer
/// starts over, and compaction (or, without it, the sweep of unnamed parts) runs as after
/// every snapshot, so an idle replica's retention goes on.
fn after_snapshot(e: &mut Entry) {
    let interval = e.repl.settings().snapshot_interval_s as i64 * 1000;
    e.next_snapshot_ms = if interval > 0 {
        now_ms() + interval
    } else {
        i64::MAX
    };
    if e.repl.settings().compact_after_snapshot {
        super::compact_later(e.repl.clone());
    } else {
        sweep_parts(e);
    }
}

/// Deletes the manifest's parts that no manifest names (see `manifest::parts::sweep_unnamed`),
/// once per snapshot: compaction does it too, but runs only when asked for. A failure only
/// leaves garbage for the next time.
fn sweep_parts(e: &Entry) {
    let store = e.repl.store.as_ref();
    match crate::manifest::parts::sweep_unnamed(
        store,
        now_ms(),
        crate::manifest::parts::SWEEP_AGE_MS,
    ) {
        Ok(0) => {}
        Ok(n) => {
            crate::log::trace(|| format!("swept {n} unnamed manifest parts of {}", e.repl.url))
        }
        Err(err) => crate::log::trace(|| {
            format!(
                "sweep of unnamed manifest parts of {} failed: {err}",
                e.repl.url
            )
        }),
    }
}

/// Takes a record read from the log into the pending batch, wherever it was read (a source
/// may append while a snapshot streams). Level 0 cannot go on past two kinds of marker, so a
/// snapshot with a fresh TXID comes first: a `Resync` past level 0 (changes walrust did not
/// see), and a `Snapshot` marker past what this uploader knows the replica has (its snapshot
/// never reached the replica: the process taking it died, and no level-0 file carries its
/// TXID).
fn take_in(e: &mut Entry, r: RecordRef) {
    let unbridged = match r.header.kind {
        Kind::Resync => r.header.txid > e.level0,
        Kind::Snapshot => r.header.txid > e.level0.max(e.uploaded),
        _ => false,
    };
    if unbridged {
        e.fresh_snapshot_above = Some(e.fresh_snapshot_above.unwrap_or(0).max(e.uploaded));
    }
    note_order(e, &r);
    e.pending.push(r);
}

/// Each transaction in the log has the TXID after its predecessor's. A log that skips numbers
/// (records lost in a power failure) or goes back (a bug, a log edited by hand) cannot say
/// what changed: a snapshot with a TXID above every number seen covers it, so the replica
/// stays whole.
fn note_order(e: &mut Entry, r: &RecordRef) {
    let at = (r.seq, r.offset);
    let txid = r.header.txid;
    let prev = e.last_read.replace((at, txid));
    let Some((prev_at, prev_txid)) = prev else {
        return;
    };
    // Read again after the cursor moved back (a re-read, not a new record); a `Position`
    // record carries the TXID of the record before it; markers (`Snapshot`, `Resync`) may
    // skip numbers; a transaction follows its predecessor.
    let in_order = at <= prev_at
        || match r.header.kind {
            Kind::Txn => txid == prev_txid + 1,
            Kind::Position => txid >= prev_txid,
            _ => txid > prev_txid,
        };
    if in_order {
        return;
    }
    e.last_read = Some((at, prev_txid.max(txid)));
    let what = if txid > prev_txid {
        "lost the transactions between them"
    } else {
        "numbers them out of order"
    };
    eprintln!(
        "walrust: warning: the shadow log of {} goes from TXID {prev_txid} to {txid}: it {what}; taking a snapshot above both so that the replica stays whole",
        e.repl.shadow.root.display(),
    );
    let above = e
        .fresh_snapshot_above
        .unwrap_or(0)
        .max(e.uploaded)
        .max(prev_txid)
        .max(txid);
    e.fresh_snapshot_above = Some(above);
}

/// Uploads pending transactions as one level-0 file (if any), then records progress.
fn upload_pending(e: &mut Entry, before_snapshot: bool) -> Result<(), String> {
    let fresh: Vec<RecordRef> = e
        .pending
        .iter()
        .filter(|r| r.header.txid > e.level0)
        .cloned()
        .collect();
    if fresh.iter().any(|r| r.header.kind == Kind::Txn) && !owner::fence(e)? {
        return Ok(());
    }
    if !fresh.is_empty() {
        sync_log(e)?;
    }
    let tmp = e.repl.shadow.tmp_dir();
    match batch::upload_level0(&fresh, &mut e.reader, &tmp, e.repl.store.as_ref()) {
        Ok(Some(up)) => {
            e.level0 = up.max.get();
            e.uploaded = e.uploaded.max(e.level0);
            e.manifest_backlog.push(up.entry);
            // At once: a snapshot waiter answered later in this step may close the database.
            note_unnamed(e);
            e.repl
                .update_status(|s| s.last_upload_at_ms = Some(now_ms()));
        }
        Ok(None) => {}
        Err(batch::Error::Exists(key)) => {
            // Another writer has a file of this name: whose, the manifest says.
            if owner::fence(e)? {
                return Err(format!(
                    "walrust: upload to {} failed: {key} exists already and this database did not record writing it; will check again",
                    e.repl.url
                ));
            }
            return Ok(());
        }
        Err(err) => return Err(format!("walrust: upload to {} failed: {err}", e.repl.url)),
    }
    if !before_snapshot || fresh.is_empty() {
        persist(e)?;
    }
    Ok(())
}

/// Writes the manifest backlog if it is due (`manifest::cadence`; `force`: now, for
/// `walrust_sync()` and when the application closed the database). An entry not written yet
/// (the process died first) only means that file's SHA-256 is not checked at restore; its LTX
/// checksum still is. Compaction never merges or removes a file the manifest does not name, so
/// the backlog's files are safe until it is written (docs/DESIGN.md, decision 11).
fn write_manifest(e: &mut Entry, force: bool) -> Result<(), String> {
    let age = now_ms() - e.manifest_written_ms;
    let due =
        crate::manifest::cadence::backlog_due(&e.manifest_backlog, age, e.manifest_head_bytes);
    if e.manifest_backlog.is_empty() || !(force || due) {
        return Ok(());
    }
    let Some(me) = e.owner else {
        return Ok(());
    };
    let expect = crate::manifest::Expect::Owner(me);
    match crate::manifest::update_as(e.repl.store.as_ref(), expect, &e.manifest_backlog, &[]) {
        Ok((written, version)) => {
            crate::failpoint::hit("upload.manifest_written");
            e.manifest_version = Some(version);
            e.manifest_head_bytes = written.to_json().len() as u64;
        }
        Err(crate::store::StoreError::NotOwner { found, .. }) => {
            owner::lost(e, found);
            return Ok(());
        }
        Err(err) => {
            return Err(format!(
                "walrust: cannot update manifest.json in {}: {err}",
                e.repl.url
            ))
        }
    }
    e.manifest_backlog.clear();
    e.manifest_written_ms = now_ms();
    Ok(())
}

/// Tells the status how many uploaded files the manifest does not name yet: the last close
/// waits for them (`Status::unnamed`).
fn note_unnamed(e: &Entry) {
    let unnamed = e.manifest_backlog.len();
    e.repl.update_status(|s| s.unnamed = unnamed);
}

/// Syncs the log up to the read cursor, before the replica gets records read from it or
/// `state.json` records the cursor, when commits sync the WAL (`synchronous=FULL`, SQLite's
/// default): the commit path leaves the log to the page cache (the WAL holds each commit until
/// the log is synced), and a power failure must not leave the log short of what the replica
/// or the cursor assume, or a snapshot would stand in for commits the WAL kept. One
/// `fdatasync` per upload, on this thread. At `synchronous=NORMAL` the WAL can lose its tail
/// too: a log cut below the cursor is noticed and a snapshot follows (`owner::settle_cursor`),
/// and uploaded segments are deleted without ever being written to disk.
fn sync_log(e: &mut Entry) -> Result<(), String> {
    if e.log_synced == e.read_cursor || !e.repl.wal.commits_synced.load(Ordering::Relaxed) {
        return Ok(());
    }
    let from = e.log_synced.seq.min(e.read_cursor.seq);
    log::sync_segments(&e.repl.shadow.log_dir(), from, e.read_cursor.seq).map_err(|err| {
        format!(
            "walrust: cannot sync the shadow log in {}: {err}; will retry",
            e.repl.shadow.root.display()
        )
    })?;
    e.log_synced = e.read_cursor;
    Ok(())
}

/// Writes progress to `state.json` and trims what is uploaded from the shadow log.
fn persist(e: &mut Entry) -> Result<(), String> {
    let all_done = e.pending.iter().all(|r| r.header.txid <= e.level0);
    let mut st: State = e.repl.shadow.state_or_default();
    st.version = 1;
    st.replica = e.repl.url.clone();
    st.uploaded_txid = e.uploaded;
    st.uploaded_at_ms = now_ms();
    st.last_error = None;
    if all_done {
        sync_log(e)?;
        st.cursor_seq = e.read_cursor.seq;
        st.cursor_offset = e.read_cursor.offset;
    }
    owner::save_state(e, &st)?;
    crate::failpoint::hit("upload.state_written");
    if all_done {
        e.pending.clear();
        if log::trim_before(&e.repl.shadow.log_dir(), e.read_cursor).is_ok_and(|n| n > 0) {
            e.repl.shadow.ensure_reserve();
        }
        crate::failpoint::hit("upload.trimmed");
    }
    let uploaded = e.uploaded;
    e.repl.update_status(|s| {
        s.uploaded_txid = uploaded;
        s.local_txid = s.local_txid.max(uploaded);
        s.last_error = None;
        if all_done {
            s.pending_bytes = 0;
            s.oldest_pending_ms = None;
        }
    });
    Ok(())
}
