//! `walrust watch`: replication of a database whose application does not load walrust, from a
//! separate process that links no SQLite (docs/DESIGN.md, decision 14).
//!
//! Each poll copies the commits the WAL holds past the shadow log's last position into the
//! log, with the same continuity proof and the same `Appender` as the extension's recovery path
//! (`capture::commit::catch_up`), under SQLite's WAL write lock (so appends never race an
//! extension process's), bounded by the WAL index's `mxFrame` (what SQLite itself has
//! published as committed). The upload thread (`upload`) then uploads the log exactly as for
//! the extension; this module is its `Source` for catch-ups and snapshots.
//!
//! Never missing a frame (see `shm`): the sidecar holds a SHARED lock on the database file (so
//! no closing connection deletes the WAL) and a READ(i) slot of the WAL index at or below what
//! it copied (so no writer restarts the WAL). It lets the slot go only when the WAL index says
//! every frame is copied into the log *and* checkpointed into the database file, noting the
//! database file's fingerprint first, in the log (so a watch started after this one dies
//! knows it too); when it next sees a new WAL generation, the unchanged fingerprint proves
//! nothing was committed and checkpointed in between, so the log goes on into the new
//! generation; otherwise the log gets a `Resync` and the uploader a snapshot.
//! What must hold: every record appended is a commit SQLite published, in order; the slot is
//! never released while a published frame is not in the log; nothing here waits on the
//! network.

pub mod backfill;
pub mod config;
pub mod shm;
pub mod wake;

use crate::capture::{commit, Appended};
use crate::config::{CheckpointMode, Settings};
use crate::replication::Replication;
use crate::shadow::log::Appender;
use crate::shadow::{fingerprint, Kind, ShadowDir, State, WalPos};
use crate::types::Txid;
use crate::upload::snapshot::{self, Error};
use crate::wal::{self, Salts, WalHeader};
use shm::{IndexHeader, WalIndex};
use std::fs::File;
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A writer that never pauses still gets its WAL checkpointed every this many frames (SQLite's
/// own automatic checkpoint threshold).
const CHECKPOINT_FRAMES: u32 = 1000;

/// How long a snapshot waits for SQLite's write lock to fix its point before it gives up (the
/// uploader retries).
const SNAPSHOT_LOCK_WAIT: Duration = Duration::from_secs(10);

/// One watched database.
pub struct Watched {
    pub path: PathBuf,
    pub repl: Arc<Replication>,
    inner: Mutex<Inner>,
    running: AtomicBool,
    /// Polls that copied (and checkpointed) without an error, and those that failed: the
    /// metrics' `litestream_sync_count` and `litestream_sync_error_count`.
    pub polls: AtomicU64,
    pub poll_errors: AtomicU64,
    /// `watch.lock` in the shadow directory: one `walrust watch` per database.
    _watch_lock: File,
}

struct Inner {
    appender: Appender,
    /// The database file, open once for the process's life (POSIX locks die with any close).
    db: File,
    db_shared: bool,
    index: Option<WalIndex>,
    /// The read slot was let go with everything copied and checkpointed (see module doc).
    released: Option<Released>,
    /// The WAL position the last `checkpoint` saw copied (a writer paused if it is unchanged).
    ckpt_seen: Option<(Salts, u32)>,
    /// The last poll's error, said once.
    said: Option<String>,
}

#[derive(Clone, Debug)]
struct Released {
    salts: Salts,
    frame: u32,
    fp: (u64, i64),
    /// Commits not yet in the log, copied from the WAL into memory when the slot had to go
    /// without the write lock (see `release_holding`); appended under the next write lock.
    held: Option<Held>,
}

/// A copy of WAL bytes: the header, and `bytes` from offset `start` (frame `from`'s header on,
/// so the checksum chain can be followed from the log's position `from`).
#[derive(Clone, Debug)]
struct Held {
    from: u32,
    header: [u8; wal::HEADER_SIZE as usize],
    start: u64,
    bytes: Vec<u8>,
}

impl Held {
    fn read(&self, buf: &mut [u8], off: u64) -> usize {
        let end = off + buf.len() as u64;
        if end <= wal::HEADER_SIZE {
            buf.copy_from_slice(&self.header[off as usize..end as usize]);
        } else if off >= self.start && end <= self.start + self.bytes.len() as u64 {
            let o = (off - self.start) as usize;
            buf.copy_from_slice(&self.bytes[o..o + buf.len()]);
        } else {
            return 0;
        }
        buf.len()
    }
}

/// The most WAL bytes `release_holding` copies into memory. Beside a writer at full speed the
/// write lock is rarely free, so the log falls far behind: at 256 MiB the watch's peak RSS
/// was 118-177 MiB (bench/sidecar.py, NORMAL), at 32 MiB 9-18 MiB with the same rate; past
/// it the slot stays until the log catches up under the write lock.
const MAX_HELD: u64 = 32 << 20;

fn suffixed(p: &Path, s: &str) -> PathBuf {
    let mut o = p.as_os_str().to_owned();
    o.push(s);
    PathBuf::from(o)
}

/// Reads exactly `buf.len()` bytes at `off`, or reports 0 (short or absent file).
fn read_full(file: Option<&File>, buf: &mut [u8], off: u64) -> io::Result<usize> {
    let Some(f) = file else { return Ok(0) };
    match f.read_exact_at(buf, off) {
        Ok(()) => Ok(buf.len()),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e),
    }
}

fn wal_header(file: Option<&File>) -> Option<WalHeader> {
    let mut b = [0u8; wal::HEADER_SIZE as usize];
    match read_full(file, &mut b, 0) {
        Ok(n) if n == b.len() => wal::parse_header(&b),
        _ => None,
    }
}

/// "relative to the working directory D" for a relative `db`: a relative path is taken from
/// the working directory (as Litestream takes a config's), and messages say which one, since
/// a config file is often written elsewhere.
pub fn relative_to(db: &Path) -> Option<String> {
    let cwd = std::env::current_dir().ok().filter(|_| db.is_relative())?;
    Some(format!(
        "relative to the working directory {}",
        cwd.display()
    ))
}

/// Starts watching `db` (which must be in WAL mode): sets up the shadow directory and
/// `state.json` as the extension does, and registers with the upload thread.
pub fn start(db: &Path, url: &str, settings: Settings) -> Result<Arc<Watched>, String> {
    let path = std::fs::canonicalize(db).map_err(|e| {
        let from = relative_to(db).map_or(String::new(), |r| format!(" ({r})"));
        format!("walrust: cannot watch {}{from}: {e}", db.display())
    })?;
    let file = open_in_wal_mode(&path)
        .map_err(|why| format!("walrust: cannot watch {}: {why}", path.display()))?;
    let store = crate::store::open(url)
        .map_err(|e| format!("walrust: cannot replicate {}: {e}", path.display()))?;
    let described = store.describe();
    let root = ShadowDir::path_for(&path, settings.shadow_dir.as_deref());
    let shadow = ShadowDir::create(root.clone()).map_err(|e| {
        format!(
            "walrust: cannot create the shadow directory {}: {e}; check permissions and free space",
            root.display()
        )
    })?;
    let watch_lock = lock_watch(&shadow, &path)?;
    let mut state: State = shadow.state_or_default();
    if !state.replica.is_empty() && !crate::store::url::same_replica(&state.replica, &described) {
        return Err(crate::database::conflict_message(
            &path,
            &state.replica,
            &described,
        ));
    }
    if state.replica.is_empty() {
        state = crate::database::record_replica(&shadow, state, &described)?;
    }
    crate::cleanup::at_replication_start(&shadow, &described);
    let repl = Arc::new(Replication::new(
        path.clone(),
        shadow.clone(),
        store,
        settings,
    ));
    let watched = Arc::new(Watched {
        path: path.clone(),
        repl: repl.clone(),
        inner: Mutex::new(Inner {
            appender: Appender::new(shadow.log_dir())
                .with_floor(state.uploaded_txid)
                .with_floor_source(shadow.floor_source()),
            db: file,
            db_shared: false,
            index: None,
            released: None,
            ckpt_seen: None,
            said: None,
        }),
        running: AtomicBool::new(true),
        polls: AtomicU64::new(0),
        poll_errors: AtomicU64::new(0),
        _watch_lock: watch_lock,
    });
    watched.poll();
    let weak = Arc::downgrade(&watched);
    crate::upload::register_source(repl, weak);
    Ok(watched)
}

/// The database file at `path`, if it is an SQLite database in WAL mode; else what it is.
fn open_in_wal_mode(path: &Path) -> Result<File, String> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open it: {e}"))?;
    let mut head = [0u8; 100];
    if file.read_exact_at(&mut head, 0).is_err() || head[18] != 2 || head[19] != 2 {
        return Err(
            "it is not an SQLite database in WAL mode; run PRAGMA journal_mode=WAL on it first"
                .into(),
        );
    }
    Ok(file)
}

fn lock_watch(shadow: &ShadowDir, db: &Path) -> Result<File, String> {
    use std::os::unix::fs::OpenOptionsExt;
    let p = shadow.root.join("watch.lock");
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&p)
        .map_err(|e| format!("walrust: cannot open {}: {e}", p.display()))?;
    match f.try_lock() {
        Ok(()) => Ok(f),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "walrust: {} is already watched by another `walrust watch` (it holds {}); stop that one first",
            db.display(),
            p.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            Err(format!("walrust: cannot lock {}: {e}", p.display()))
        }
    }
}

impl Watched {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn wal_path(&self) -> PathBuf {
        suffixed(&self.path, "-wal")
    }

    /// Copies what the WAL holds past the shadow log into it (one poll of the watch loop).
    pub fn poll(&self) {
        let mut st = self.lock();
        let mut result = self.poll_locked(&mut st).map_err(|e| {
            format!(
                "walrust: cannot copy the WAL of {} into the shadow log: {e}; will retry",
                self.path.display()
            )
        });
        if let Some(ix) = st.index.as_mut() {
            let _ = ix.release_write();
        }
        if result.is_ok() {
            result = self.checkpoint(&mut st).map_err(|e| {
                format!(
                    "walrust: cannot checkpoint the WAL of {} into the database file: {e}; every frame stays in the WAL, will retry (or run with --checkpoint off)",
                    self.path.display()
                )
            });
        }
        let counter = match result {
            Ok(()) => &self.polls,
            Err(_) => &self.poll_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        match result {
            // The look's own error ends with it (an upload's stays until an upload succeeds).
            Ok(()) => {
                if let Some(said) = st.said.take() {
                    self.repl.update_status(|s| {
                        if s.last_error.as_deref() == Some(said.as_str()) {
                            s.last_error = None;
                        }
                    });
                }
            }
            Err(msg) => {
                if st.said.as_deref() != Some(msg.as_str()) {
                    crate::log::error(&msg);
                    st.said = Some(msg.clone());
                }
                self.repl.set_error(Some(msg));
            }
        }
    }

    /// `--checkpoint background`: checkpoints the frames the log holds (`backfill`), without
    /// SQLite's write lock (the application's commits go on meanwhile), when the writer paused
    /// since the last poll or `CHECKPOINT_FRAMES` wait; then lets the read slot go if
    /// everything is copied and checkpointed, so that the next commit restarts the WAL.
    fn checkpoint(&self, st: &mut Inner) -> io::Result<()> {
        if self.repl.settings().checkpoint != CheckpointMode::Background {
            return Ok(());
        }
        let Some(ix) = st
            .index
            .as_ref()
            .filter(|ix| ix.joined() && ix.slot().is_some())
        else {
            return Ok(());
        };
        let Some(hdr) = ix.header()? else {
            return Ok(());
        };
        let copied = match st.appender.last().map(|h| h.pos) {
            Some(WalPos::At { salts, frame }) if salts == hdr.salts => frame,
            _ => return Ok(()),
        };
        let seen = st.ckpt_seen.replace((hdr.salts, copied));
        let backlog = copied.saturating_sub(ix.ckpt()?.n_backfill);
        let paused = seen == Some((hdr.salts, copied));
        if backlog == 0 || (!paused && backlog < CHECKPOINT_FRAMES) {
            return Ok(());
        }
        let wal_file = File::open(self.wal_path())?;
        if ix.checkpoint(&st.db, &wal_file, copied)?.is_some() {
            self.maybe_release(st, false)?;
        }
        Ok(())
    }

    /// Stops: a last copy of the WAL, then waits (at most `timeout`) until the replica has
    /// everything in the shadow log. Returns the uploaded TXID.
    pub fn finish(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            self.poll();
            let holding = self
                .lock()
                .released
                .as_ref()
                .is_some_and(|r| r.held.is_some());
            if !holding || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Some(why) = self.uncopied() {
            self.running.store(false, Ordering::Release);
            return Err(why);
        }
        let last = crate::shadow::log::last_record(&self.repl.shadow.log_dir())
            .ok()
            .flatten()
            .map_or(0, |h| h.txid);
        let target = last.max(self.repl.status().local_txid);
        let out = if target > self.repl.status().uploaded_txid {
            crate::upload::sync(&self.repl, target, timeout)
        } else {
            Ok(self.repl.status().uploaded_txid)
        };
        self.running.store(false, Ordering::Release);
        out
    }

    /// Why commits SQLite published are not all in the shadow log now, if they are not.
    fn uncopied(&self) -> Option<String> {
        let mut st = self.lock();
        let st = &mut *st;
        let ix = st.index.as_ref().filter(|ix| ix.joined())?;
        let hdr = ix.header().ok().flatten()?;
        let _ = st.appender.refresh();
        let held = st.released.as_ref().is_some_and(|r| r.held.is_some());
        (held || !log_at(&st.appender, &hdr)).then(|| {
            format!(
                "walrust: the last commits of {} are still only in its WAL (SQLite's write lock stayed busy); the next `walrust watch` copies them",
                self.path.display()
            )
        })
    }

    /// Takes the database file's SHARED lock and joins the WAL index when a connection is live.
    fn ensure_locks(&self, st: &mut Inner) -> io::Result<()> {
        self.follow_the_file(st)?;
        if !st.db_shared {
            st.db_shared = shm::lock_db_shared(&st.db)?;
        }
        let shm_path = suffixed(&self.path, "-shm");
        let replaced = match (&st.index, std::fs::metadata(&shm_path)) {
            (Some(ix), Ok(m)) => ix.inode()? != m.ino(),
            (Some(_), Err(_)) => true,
            (None, _) => false,
        };
        if replaced {
            st.index = None;
            st.released = None;
        }
        if st.index.is_none() {
            st.index = WalIndex::open(&shm_path)?;
            // A database replaced between the look above and this open would pair the new
            // file's WAL index with the old file: look again (it lets the index go if so).
            self.follow_the_file(st)?;
        }
        if st.db_shared {
            if let Some(ix) = st.index.as_mut() {
                ix.join()?;
            }
        }
        Ok(())
    }

    /// Keeps the watch on the file at its path. A database deleted and created again (a tenant
    /// reset, a backup copied into place) is another file: the old one, still open here, must
    /// never take the new WAL's frames (the watch's checkpoint would copy them into a file
    /// nobody reads, and SQLite would then restart the WAL over them) nor give a snapshot its
    /// pages. So the new file is opened in its place, with everything tied to the old one
    /// (its lock, the WAL index, the proof of a released slot) let go; the log's continuity
    /// check then finds the new WAL unproven and the uploader takes a snapshot. A path with no
    /// file is an error until one is there again.
    fn follow_the_file(&self, st: &mut Inner) -> io::Result<()> {
        let held = st.db.metadata()?;
        let at_path =
            match std::fs::metadata(&self.path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the database file is gone (deleted or moved); its replica keeps what it had, \
                     and replication resumes if the database is created again",
                )),
                Err(e) => return Err(e),
            };
        if (at_path.dev(), at_path.ino()) == (held.dev(), held.ino()) {
            return Ok(());
        }
        let file = open_in_wal_mode(&self.path).map_err(|why| {
            io::Error::other(format!(
                "the database file is another file now (deleted and created again), and {why}"
            ))
        })?;
        crate::log::info(&format!(
            "walrust: {} is another file than the one watched (deleted and created again): \
             watching the new one, from a new snapshot",
            self.path.display()
        ));
        st.index = None;
        st.released = None;
        st.ckpt_seen = None;
        st.db_shared = false;
        st.db = file; // the old one's lock goes with it
        Ok(())
    }

    fn poll_locked(&self, st: &mut Inner) -> io::Result<()> {
        self.ensure_locks(st)?;
        let joined = st.index.as_ref().is_some_and(|ix| ix.joined());
        if !joined {
            return self.unjoined_catch_up(st);
        }
        let ix = st.index.as_ref().unwrap();
        let Some(hdr) = ix.header()? else {
            return Ok(()); // being rebuilt: look again at the next poll
        };
        if let Some(r) = &st.released {
            if hdr.salts == r.salts && hdr.mx_frame == r.frame && r.held.is_none() {
                return Ok(());
            }
        } else if ix.slot().is_some() {
            st.appender.refresh()?;
            // Busy: a RESTART or TRUNCATE checkpoint may wait for the slot (below).
            if log_at(&st.appender, &hdr) && self.maybe_release(st, false)? {
                return Ok(());
            }
        }
        if !st.index.as_mut().unwrap().try_write()? {
            // A writer is at work (its commit is protected by our slot), or a RESTART or
            // TRUNCATE checkpoint holds the write lock and waits for our slot to go.
            // Keep our mark at mxFrame (so checkpoints copy everything) on another slot (so
            // a checkpointer waiting for ours gets it), then, once all is checkpointed, copy
            // what the log lacks into memory and let the WAL restart.
            if st.released.is_none() && st.index.as_ref().unwrap().slot().is_some() {
                st.index.as_mut().unwrap().move_read(&hdr)?;
                self.release_holding(st)?;
            }
            return Ok(());
        }
        self.capture_locked(st, true).map(|_| ())
    }

    /// With the WAL write lock held: proves a new generation continues the log (if the slot
    /// was let go), appends what the log lacks up to `mxFrame`, and holds a read slot at
    /// `mxFrame`. Returns the header it worked from.
    fn capture_locked(&self, st: &mut Inner, may_release: bool) -> io::Result<IndexHeader> {
        let ix = st.index.as_ref().unwrap();
        let hdr = ix
            .header()?
            .ok_or_else(|| io::Error::other("the WAL index header is not valid"))?;
        st.appender.refresh()?;
        if let Some(damage) = st.appender.take_damage() {
            self.repl.log_damaged(&damage);
        }
        if let Some(r) = st.released.take() {
            if let Some(held) = &r.held {
                let at = WalPos::At {
                    salts: r.salts,
                    frame: held.from,
                };
                if st.appender.last().is_some_and(|h| h.pos == at) {
                    let whdr = wal::parse_header(&held.header);
                    let mut read = |buf: &mut [u8], off: u64| Ok(held.read(buf, off));
                    let fp = || fingerprint(&self.path);
                    let a = commit::catch_up(&mut st.appender, whdr.as_ref(), &mut read, &fp)?;
                    self.account(a);
                }
            }
            let last = st.appender.last().copied();
            // (Not needed when the release point is in the log with the fingerprint.)
            let at_release = last.filter(|h| {
                h.fingerprint != r.fp
                    && h.pos
                        == WalPos::At {
                            salts: r.salts,
                            frame: r.frame,
                        }
            });
            if hdr.salts != r.salts && fingerprint(&self.path) == r.fp {
                if let Some(h) = at_release {
                    // The old generation ended where the log did (see module doc).
                    let a = commit::append_marker(
                        &mut st.appender,
                        Kind::Position,
                        h.txid,
                        WalPos::Empty,
                        r.fp,
                    )?;
                    self.account(a);
                }
            }
        }
        let wal_file = File::open(self.wal_path()).ok();
        let limit = match hdr.mx_frame {
            0 => 0,
            n => wal::frame_offset(n + 1, hdr.page_size),
        };
        let mut read = |buf: &mut [u8], off: u64| -> io::Result<usize> {
            if off + buf.len() as u64 > limit {
                return Ok(0);
            }
            read_full(wal_file.as_ref(), buf, off)
        };
        let whdr = match hdr.mx_frame {
            0 => None,
            _ => match wal_header(wal_file.as_ref()).filter(|h| h.salts == hdr.salts) {
                Some(h) => Some(h),
                None => return Err(io::Error::other("the WAL does not match its index")),
            },
        };
        let fp = || fingerprint(&self.path);
        let a = commit::catch_up(&mut st.appender, whdr.as_ref(), &mut read, &fp)?;
        self.account(a);
        let ix = st.index.as_mut().unwrap();
        if !ix.hold_read(&hdr)? {
            return Err(io::Error::other(
                "no read slot of the WAL index is free (SQLite allows 4 readers at different points)",
            ));
        }
        if may_release {
            self.maybe_release(st, true)?;
        }
        Ok(hdr)
    }

    /// Lets the read slot go when every published frame is in the log and checkpointed, so
    /// that SQLite may restart the WAL (see module doc). `locked`: the caller holds the WAL
    /// write lock; otherwise it is taken for the release's append (not for the sync after
    /// it), and false is returned (the slot kept, for the next poll) if a writer or a
    /// checkpointer holds it.
    fn maybe_release(&self, st: &mut Inner, locked: bool) -> io::Result<bool> {
        if !self.releasable(st)? {
            return Ok(true);
        }
        let noted = if locked {
            self.note_release(st)?
        } else {
            if !st.index.as_mut().unwrap().try_write()? {
                return Ok(false);
            }
            let noted = self.note_release(st);
            st.index.as_mut().unwrap().release_write()?;
            noted?
        };
        if let Some((hdr, fp)) = noted {
            self.let_go(st, &hdr, fp)?;
        }
        Ok(true)
    }

    fn releasable(&self, st: &mut Inner) -> io::Result<bool> {
        Ok(checkpointed(st.index.as_ref().unwrap(), &self.path)?
            .is_some_and(|(hdr, _)| log_at(&st.appender, &hdr)))
    }

    /// Under the write lock: if the slot may go, writes the release point into the log (a
    /// `Position` record at the last frame, with the database file's fingerprint, read
    /// first), so that a watch started after this one dies can still prove that the next
    /// WAL generation follows the log (`commit::file_final`).
    fn note_release(&self, st: &mut Inner) -> io::Result<Option<(IndexHeader, (u64, i64))>> {
        st.appender.refresh()?;
        let Some((hdr, fp)) = checkpointed(st.index.as_ref().unwrap(), &self.path)? else {
            return Ok(None);
        };
        let Some(last) = st.appender.last().copied() else {
            return Ok(None);
        };
        if !log_at(&st.appender, &hdr) {
            return Ok(None);
        }
        if last.fingerprint != fp {
            let a =
                commit::append_marker(&mut st.appender, Kind::Position, last.txid, last.pos, fp)?;
            self.account(a);
        }
        Ok(Some((hdr, fp)))
    }

    /// Lets the slot go at the release point `note_release` wrote. (Commits made meanwhile,
    /// after the write lock went, are in the same generation: the slot kept them from a
    /// checkpoint and a restart until now, and the next look copies them.)
    fn let_go(&self, st: &mut Inner, hdr: &IndexHeader, fp: (u64, i64)) -> io::Result<()> {
        // What the log holds must survive a power failure once the WAL can restart.
        crate::shadow::log::sync_files(&st.appender.files_to_sync())?;
        st.index.as_mut().unwrap().release_read()?;
        st.released = Some(Released {
            salts: hdr.salts,
            frame: hdr.mx_frame,
            fp,
            held: None,
        });
        Ok(())
    }

    /// Without the write lock, when everything published is checkpointed (a RESTART or
    /// TRUNCATE checkpoint waits for our slot while holding the write lock): copies the
    /// commits the log lacks into memory, then lets the slot go. They are appended under the
    /// next write lock (`capture_locked`); if the process dies first, the log cannot follow
    /// the new WAL generation and the uploader takes a snapshot (never a silent loss).
    fn release_holding(&self, st: &mut Inner) -> io::Result<()> {
        let Some((hdr, fp)) = checkpointed(st.index.as_ref().unwrap(), &self.path)? else {
            return Ok(());
        };
        st.appender.refresh()?;
        let from = match st.appender.last().map(|h| h.pos) {
            Some(WalPos::At { salts, frame }) if salts == hdr.salts && frame <= hdr.mx_frame => {
                frame
            }
            _ => return Ok(()),
        };
        let ps = hdr.page_size;
        let start = if from > 0 {
            wal::frame_offset(from, ps)
        } else {
            wal::HEADER_SIZE
        };
        let end = wal::frame_offset(hdr.mx_frame + 1, ps);
        if end - start > MAX_HELD {
            return Ok(());
        }
        let wal_file = File::open(self.wal_path())?;
        let mut header = [0u8; wal::HEADER_SIZE as usize];
        wal_file.read_exact_at(&mut header, 0)?;
        if wal::parse_header(&header).map(|h| h.salts) != Some(hdr.salts) {
            return Ok(());
        }
        let mut bytes = vec![0u8; (end - start) as usize];
        wal_file.read_exact_at(&mut bytes, start)?;
        st.index.as_mut().unwrap().release_read()?;
        st.released = Some(Released {
            salts: hdr.salts,
            frame: hdr.mx_frame,
            fp,
            held: Some(Held {
                from,
                header,
                start,
                bytes,
            }),
        });
        Ok(())
    }

    /// No connection is live (or the `-shm` file is missing): read the WAL as it is. Nothing
    /// writes it until a connection opens, and that one rebuilds the index first.
    fn unjoined_catch_up(&self, st: &mut Inner) -> io::Result<()> {
        st.released = None;
        let wal_file = File::open(self.wal_path()).ok();
        let mut read = |buf: &mut [u8], off: u64| read_full(wal_file.as_ref(), buf, off);
        let hdr = wal_header(wal_file.as_ref());
        let fp = || fingerprint(&self.path);
        let last = crate::shadow::log::last_record(&self.repl.shadow.log_dir())?;
        if !commit::has_uncaptured(last.as_ref(), hdr.as_ref(), &mut read, &fp)? {
            return Ok(());
        }
        if let Some(ix) = st.index.as_mut() {
            if !ix.try_write()? {
                return Ok(());
            }
        }
        let a = commit::catch_up(&mut st.appender, hdr.as_ref(), &mut read, &fp)?;
        self.account(a);
        Ok(())
    }

    fn account(&self, a: Appended) {
        if a.records > 0 && self.repl.appended(a) {
            crate::upload::notify(&self.repl);
        }
    }

    /// Fixes a snapshot's point under the write lock and streams it (see `Source::snapshot`).
    fn take_snapshot(
        &self,
        repl: &Replication,
        min_txid: u64,
        expect: crate::manifest::Expect,
    ) -> Result<snapshot::Taken, Error> {
        // Wait for the write lock without holding our own mutex, so that polls go on (a
        // TRUNCATE checkpoint holding the write lock waits for our read slot to go).
        let deadline = Instant::now() + SNAPSHOT_LOCK_WAIT;
        let mut st = loop {
            let mut st = self.lock();
            self.ensure_locks(&mut st)
                .map_err(|e| Error::Other(e.to_string()))?;
            let got = match st.index.as_mut() {
                Some(ix) => ix.try_write().map_err(|e| Error::Other(e.to_string()))?,
                None => true,
            };
            if got {
                break st;
            }
            drop(st);
            self.poll();
            if Instant::now() > deadline {
                return Err(Error::Other(
                    "SQLite's WAL write lock stayed busy for 10 s; will retry".into(),
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = self.snapshot_locked(&mut st, repl, min_txid, expect);
        if let Some(ix) = st.index.as_mut() {
            let _ = ix.release_write();
        }
        out
    }

    fn snapshot_locked(
        &self,
        st: &mut Inner,
        repl: &Replication,
        min_txid: u64,
        expect: crate::manifest::Expect,
    ) -> Result<snapshot::Taken, Error> {
        let err = |e: io::Error| Error::Other(e.to_string());
        self.ensure_locks(st).map_err(err)?;
        let joined = st.index.as_ref().is_some_and(|ix| ix.joined());
        let (upto, geometry) = if joined {
            let hdr = self.capture_locked(st, false).map_err(err)?;
            let upto = (hdr.mx_frame > 0).then_some((hdr.salts, hdr.mx_frame));
            let geometry =
                (hdr.mx_frame > 0 && hdr.n_page > 0).then_some((hdr.page_size, hdr.n_page));
            (upto, geometry)
        } else {
            self.unjoined_catch_up(st).map_err(err)?;
            (self.unjoined_point(st).map_err(err)?, None)
        };
        let (page_size, pages) = match geometry {
            Some(g) => g,
            None => db_geometry(&st.db, upto, &self.wal_path()).map_err(err)?,
        };
        let a = commit::mark_at_least(&mut st.appender, Kind::Snapshot, min_txid, page_size, pages)
            .map_err(err)?;
        self.account(a);
        let txid = st.appender.last().map_or(0, |h| h.txid);
        let txid = Txid::new(txid).ok_or("the shadow log is empty after a catch-up")?;
        // The point is fixed: writers may go on (our read slot keeps the view).
        if let Some(ix) = st.index.as_mut() {
            ix.release_write().map_err(err)?;
        }
        let fp_before = fingerprint(&self.path);
        let wal_file = File::open(self.wal_path()).ok();
        let overlay = match &wal_file {
            Some(f) => snapshot::wal_overlay(f, upto, page_size)?,
            None if upto.is_some() => return Err("the WAL vanished under the snapshot".into()),
            None => Default::default(),
        };
        let db = &st.db;
        let mut read = |pgno: u32, buf: &mut [u8]| -> Result<(), String> {
            match (overlay.get(&pgno), &wal_file) {
                (Some(&off), Some(f)) => f
                    .read_exact_at(buf, off)
                    .map_err(|e| format!("cannot read the WAL: {e}")),
                _ => {
                    if read_full(Some(db), buf, (pgno as u64 - 1) * page_size as u64)
                        .map_err(|e| e.to_string())?
                        == 0
                    {
                        buf.fill(0);
                    }
                    Ok(())
                }
            }
        };
        // Checked before anything is uploaded: a file read while it changed is never named.
        // (A live index keeps the view through the watch's read slot, held anyway.)
        let mut read_all = || match !joined && fingerprint(&self.path) != fp_before {
            true => Err(
                "the database changed under the snapshot (a connection opened); will retry"
                    .to_string(),
            ),
            false => Ok(()),
        };
        let geometry = (page_size, pages);
        let out = snapshot::stream_pages(repl, expect, txid, geometry, &mut read, &mut read_all)?;
        crate::log::info(&format!(
            "walrust: snapshot of {} at TXID {} uploaded to {}",
            self.path.display(),
            out.txid.get(),
            repl.url
        ));
        Ok(out)
    }

    /// Without a live index: the log's position, if the WAL still holds it.
    fn unjoined_point(&self, st: &mut Inner) -> io::Result<Option<(Salts, u32)>> {
        st.appender.refresh()?;
        let wal_file = File::open(self.wal_path()).ok();
        let hdr = wal_header(wal_file.as_ref());
        Ok(match (st.appender.last().map(|h| h.pos), hdr) {
            (Some(WalPos::At { salts, frame }), Some(h)) if h.salts == salts && frame > 0 => {
                Some((salts, frame))
            }
            _ => None,
        })
    }
}

/// The index's header and the database file's fingerprint, when every published frame is
/// checkpointed into the database file. Read in this order: the header says all is copied
/// (SQLite sets `nBackfill` after its database writes and sync), then the fingerprint, then
/// the header again, unchanged. A commit after that must be checkpointed before any restart
/// can lose it, and that changes the fingerprint.
fn checkpointed(ix: &WalIndex, db: &Path) -> io::Result<Option<(IndexHeader, (u64, i64))>> {
    let all_copied = |ix: &WalIndex| -> io::Result<Option<IndexHeader>> {
        let Some(hdr) = ix.header()? else {
            return Ok(None);
        };
        let done = hdr.mx_frame > 0 && ix.ckpt()?.n_backfill == hdr.mx_frame;
        Ok(done.then_some(hdr))
    };
    let Some(hdr) = all_copied(ix)? else {
        return Ok(None);
    };
    let fp = fingerprint(db);
    Ok((all_copied(ix)? == Some(hdr)).then_some((hdr, fp)))
}

/// The log's last record is at the index's last commit (or both are at an empty generation).
fn log_at(app: &Appender, hdr: &IndexHeader) -> bool {
    match app.last().map(|h| h.pos) {
        Some(WalPos::At { salts, frame }) => salts == hdr.salts && frame == hdr.mx_frame,
        Some(WalPos::Empty) => hdr.mx_frame == 0,
        _ => false,
    }
}

/// Page size and page count of the database as of `upto` (the commit frame's size) or, with
/// no WAL frames, of the database file itself.
fn db_geometry(db: &File, upto: Option<(Salts, u32)>, wal_path: &Path) -> io::Result<(u32, u32)> {
    let mut h = [0u8; 100];
    db.read_exact_at(&mut h, 0)?;
    let raw = u16::from_be_bytes([h[16], h[17]]) as u32;
    let page_size = if raw == 1 { 65536 } else { raw };
    if let Some((_, frame)) = upto {
        let wal_file = File::open(wal_path)?;
        let mut fh = [0u8; wal::FRAME_HEADER_SIZE as usize];
        wal_file.read_exact_at(&mut fh, wal::frame_offset(frame, page_size))?;
        let commit = wal::parse_frame_header(&fh).commit;
        if commit > 0 {
            return Ok((page_size, commit));
        }
    }
    let in_header = u32::from_be_bytes(h[28..32].try_into().unwrap());
    let valid = h[24..28] == h[92..96] && in_header > 0;
    let pages = if valid {
        in_header
    } else {
        (db.metadata()?.len() / page_size as u64) as u32
    };
    Ok((page_size, pages))
}

impl crate::upload::Source for Watched {
    fn in_use(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    fn catch_up(&self) -> bool {
        self.poll();
        true
    }

    fn snapshot(
        &self,
        repl: &Replication,
        fresh_txid_above: Option<u64>,
        owner: Option<crate::history::Owner>,
    ) -> Result<snapshot::Taken, Error> {
        let min_txid = fresh_txid_above.map_or(1, |n| n + 1);
        let expect = owner.map_or(crate::manifest::Expect::Any, crate::manifest::Expect::Owner);
        self.take_snapshot(repl, min_txid, expect)
    }
}
