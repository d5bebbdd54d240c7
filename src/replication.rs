//! One database's replication, shared by the capture hooks (`database`, which append to its
//! shadow log) and the upload thread (which drains it): the shadow directory, the store, the
//! settings, and the counters `walrust_status()` reports.

use crate::capture::Appended;
use crate::config::Settings;
use crate::shadow::ShadowDir;
use crate::store::Store;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// What `walrust_status()` reports, kept current by the VFS and the uploader.
#[derive(Clone, Debug, Default)]
pub struct Status {
    /// Newest TXID this process appended to (or saw in) the shadow log.
    pub local_txid: u64,
    pub uploaded_txid: u64,
    pub pending_bytes: u64,
    /// Commit time of the oldest transaction not yet uploaded.
    pub oldest_pending_ms: Option<i64>,
    pub last_error: Option<String>,
    /// The last thing walrust recovered from on its own that a user may want to know (a shadow
    /// log that lost its tail, say), with what it did about it.
    pub notice: Option<String>,
    pub last_upload_at_ms: Option<i64>,
    /// This process holds the uploader lock.
    pub uploading: bool,
    /// Files this process uploaded that `manifest.json` does not name yet (the backlog that
    /// `manifest::cadence` holds back): the last close waits for them to be named too.
    pub unnamed: usize,
}

/// A group of commits is appended at the application's first release of the write lock once
/// it is this old (ms) (`database::hooks`)...
pub const GROUP_MS: i64 = 5;
/// ...and by the uploader once it is this old: the application stopped committing
/// (`upload::worker`). Under a steady stream of commits the uploader never takes the lock.
pub const GROUP_STALL_MS: i64 = 4 * GROUP_MS;

pub struct Replication {
    pub id: u64,
    pub db_path: PathBuf,
    pub shadow: ShadowDir,
    /// The replica URL, without credentials.
    pub url: String,
    pub store: Arc<dyn Store>,
    pub settings: Mutex<Settings>,
    status: Mutex<Status>,
    /// Set when the upload thread has been told about new records and has not read them yet:
    /// commits wake it once per batch, not once per commit.
    notified: AtomicBool,
    pub wal: WalActivity,
    /// A snapshot waiting for the application's next commit (see `upload::snapshot::take`).
    pub handoff: Mutex<Option<crate::upload::snapshot::Handoff>>,
    /// Whether the shadow log's size was reported (`growth`).
    pub growth: crate::growth::Watch,
}

/// What the checkpoint thread needs to know about the WAL, updated by every commit with
/// atomics only (no lock, no allocation on the commit path).
#[derive(Default)]
pub struct WalActivity {
    /// Frames in the WAL after the last commit.
    pub frames: AtomicU32,
    pub last_commit_ms: AtomicI64,
    /// The checkpoint thread was woken and has not run since.
    pub signaled: AtomicBool,
    /// The WAL size the checkpoint thread's last checkpoint started from: under sustained
    /// writes it runs again once the WAL has grown `PASSIVE_FRAMES` past it, so each pass
    /// copies and syncs a bounded amount and the committing connection's own checkpoint (see
    /// `checkpoint::on_commit`) finds almost nothing left to do.
    pub checkpointed_at: AtomicU32,
    /// An idle checkpoint ran since the last commit.
    pub idle_done: AtomicBool,
    /// The last commit synced the WAL (`synchronous=FULL` or EXTRA; true before any commit).
    pub commits_synced: AtomicBool,
    /// The database's files were let go since the last commit (`release_idle_files`).
    pub files_released: AtomicBool,
    /// The last append to the shadow log failed (a full or failing disk): commits are in the
    /// WAL alone, so walrust checkpoints nothing until an append succeeds. A checkpoint would
    /// let SQLite restart the WAL over them, and the log could then only resync with a
    /// snapshot, which a full shadow directory may never have room for.
    pub log_behind: AtomicBool,
    /// When the oldest commit of a group not appended yet was made (`database::hooks`), 0
    /// when there is none: the uploader appends a group that waited `GROUP_MS`.
    pub group_since_ms: AtomicI64,
    /// A group began since the uploader last looked, and the uploader was told
    /// (`group_begins`, `look_at_group`): the groups that follow wake no thread.
    pub group_told: AtomicBool,
    /// How many commits of that group follow the log's last record with nothing between
    /// them (0 when another process's commit came in between): the TXIDs they will get are
    /// the log's next ones, which `walrust_status()` reports as committed.
    pub grouped: std::sync::atomic::AtomicU64,
    /// The checkpoint thread has (or is opening) a connection to the database.
    pub ckpt_conn_open: AtomicBool,
    /// Snapshots and catch-ups under way that keep the checkpoint thread's connection closed
    /// (`checkpoint::keep_away`).
    pub internal_users: std::sync::atomic::AtomicU32,
}

impl WalActivity {
    /// The application's thread begins a group at `now_ms`: true when the uploader must be
    /// told, which is once between two of its looks at the group (`look_at_group`), not at
    /// every group: the message asks for a look within the sync interval, and that look sees
    /// every group begun before it. The application sets `group_since_ms` before it takes
    /// the turn, the uploader clears the turn before it reads `group_since_ms`: either the
    /// look sees this group, or this group finds the turn free and sends the message.
    pub fn group_begins(&self, now_ms: i64) -> bool {
        self.group_since_ms.store(now_ms, Ordering::SeqCst);
        !self.group_told.swap(true, Ordering::SeqCst)
    }

    /// The uploader looks at the group now (each tick and quiet poll, before anything else
    /// there reads `group_since_ms`): returns when the oldest commit of a group waiting in
    /// memory was made, 0 if none.
    pub fn look_at_group(&self) -> i64 {
        self.group_told.store(false, Ordering::SeqCst);
        self.group_since_ms.load(Ordering::SeqCst)
    }
}

impl Replication {
    pub fn new(
        db_path: PathBuf,
        shadow: ShadowDir,
        store: Arc<dyn Store>,
        settings: Settings,
    ) -> Replication {
        let url = store.describe();
        let uploaded = shadow
            .read_state()
            .ok()
            .flatten()
            .map_or(0, |s| s.uploaded_txid);
        let status = Status {
            uploaded_txid: uploaded,
            local_txid: uploaded,
            ..Status::default()
        };
        Replication {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            db_path,
            shadow,
            url,
            store,
            settings: Mutex::new(settings),
            status: Mutex::new(status),
            notified: AtomicBool::new(false),
            wal: WalActivity {
                // SQLite's default (FULL) until a commit says otherwise.
                commits_synced: AtomicBool::new(true),
                // Opening counts as activity: the first idle checkpoint comes a second after
                // the open, not at once, while the application's first statements run (they
                // may have to recover the WAL index after a crash, which walrust's connection
                // would otherwise race them for: SQLITE_BUSY for a connection without a busy
                // timeout).
                last_commit_ms: AtomicI64::new(crate::clock::now_ms()),
                ..Default::default()
            },
            handoff: Mutex::new(None),
            growth: Default::default(),
        }
    }

    pub fn settings(&self) -> Settings {
        self.settings.lock().unwrap().clone()
    }

    pub fn status(&self) -> Status {
        self.status.lock().unwrap().clone()
    }

    pub fn update_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut self.status.lock().unwrap())
    }

    /// The VFS appended records to the shadow log. Returns true when the upload thread should
    /// be woken (the first append since it last read the log).
    pub fn appended(&self, a: Appended) -> bool {
        self.update_status(|s| {
            s.local_txid = s.local_txid.max(a.last_txid);
            s.pending_bytes += a.bytes;
            s.oldest_pending_ms.get_or_insert_with(crate::clock::now_ms);
        });
        !self.notified.swap(true, Ordering::AcqRel)
    }

    /// The upload thread is about to read the log: the next append wakes it again.
    pub fn reading(&self) {
        self.notified.store(false, Ordering::Release);
    }

    pub fn background_checkpoints(&self) -> bool {
        self.settings.lock().unwrap().checkpoint == crate::config::CheckpointMode::Background
    }

    pub fn set_error(&self, e: Option<String>) {
        self.update_status(|s| s.last_error = e);
    }

    /// The shadow log was found damaged and cut (`shadow::log::Appender::take_damage`): one
    /// line on standard error and the `notice` of `walrust_status()`. Nothing is lost (the
    /// commits are caught up from the WAL, or a snapshot with new TXIDs covers them), but the
    /// disk under the log damages files.
    pub fn log_damaged(&self, damage: &str) {
        let msg = format!(
            "walrust: {damage} ({}); its commits are caught up from the WAL or covered by a \
             snapshot with new TXIDs; unless a power failure explains it, check the disk",
            self.shadow.root.display()
        );
        crate::log::warn(&msg);
        self.update_status(|s| s.notice = Some(msg));
    }
}
