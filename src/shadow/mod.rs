//! The shadow directory: walrust's durable local queue of committed transactions, beside the
//! database (`<db>-walrust/`, 0700, files 0600).
//!
//! It owns the shadow log (`log/`, append-only segments of records, see [`log`]), `state.json`
//! (what is uploaded, see [`state`]), `upload.lock` (held by the one process that uploads; the
//! operating system releases it when that process dies) and `tmp/` (LTX files being built).
//! What must always hold: a transaction SQLite reported committed is in the log before the commit
//! returns; nothing is removed from the log before it is durable in the replica; and nothing
//! here ever waits for the network.

pub mod log;
pub mod record;
pub mod restored;
pub mod state;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use record::{Header, Kind, WalPos};
pub use state::State;

/// Size and modification time (ns) of a file: changes when anyone writes it. `(0, 0)` if it
/// cannot be read.
pub fn fingerprint(path: &Path) -> (u64, i64) {
    use std::os::unix::fs::MetadataExt;
    match fs::metadata(path) {
        Ok(m) => (m.len(), m.mtime() * 1_000_000_000 + m.mtime_nsec()),
        Err(_) => (0, 0),
    }
}

/// Paths of one database's shadow directory.
/// See `ShadowDir::ensure_reserve`.
const RESERVE: &str = "reserve";
const RESERVE_BYTES: usize = 64 << 10;
/// A full disk (`io::ErrorKind::StorageFull`).
const ENOSPC: i32 = 28;

#[derive(Clone, Debug)]
pub struct ShadowDir {
    pub root: PathBuf,
}

impl ShadowDir {
    /// Creates the directory tree (owner-only) if needed.
    pub fn create(root: PathBuf) -> io::Result<ShadowDir> {
        let mut b = fs::DirBuilder::new();
        b.recursive(true).mode(0o700);
        b.create(&root)?;
        b.create(root.join("log"))?;
        b.create(root.join("tmp"))?;
        let dir = ShadowDir { root };
        dir.ensure_reserve();
        Ok(dir)
    }

    /// Keeps `reserve` (a few zero blocks) in the directory, if there is room: space that a
    /// log which filled the disk gives back so that `state.json` can still record the upload
    /// that frees the log's space (`write_state`).
    pub fn ensure_reserve(&self) {
        let path = self.root.join(RESERVE);
        if path.exists() {
            return;
        }
        let zeros = vec![0u8; RESERVE_BYTES];
        let written = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| io::Write::write_all(&mut f, &zeros));
        match written {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                let _ = fs::remove_file(&path); // no room: no reserve, rather than half of one
            }
            _ => {}
        }
    }

    /// The default location: `<db>-walrust` beside the database, or `<dir>/<db name>-walrust`.
    pub fn path_for(db: &Path, dir_setting: Option<&Path>) -> PathBuf {
        let name = format!(
            "{}-walrust",
            db.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default()
        );
        match dir_setting {
            Some(dir) => dir.join(name),
            None => db.with_file_name(name),
        }
    }

    pub fn log_dir(&self) -> PathBuf {
        self.root.join("log")
    }

    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }

    pub fn state_path(&self) -> PathBuf {
        self.root.join("state.json")
    }

    pub fn read_state(&self) -> io::Result<Option<State>> {
        state::read(&self.state_path())
    }

    /// Reads `state.json`'s uploaded TXID afresh each time: the appender's floor when the log
    /// has no record left to number from (`log::Appender::refresh`).
    pub fn floor_source(&self) -> log::FloorSource {
        let path = self.state_path();
        Box::new(move || state::read(&path).ok().flatten().map(|s| s.uploaded_txid))
    }

    /// `state.json`, or the state of a database that never uploaded when there is none (or
    /// it cannot be read: the uploader then checks the replica from scratch).
    pub fn state_or_default(&self) -> State {
        self.read_state().ok().flatten().unwrap_or_default()
    }

    pub fn write_state(&self, s: &State) -> io::Result<()> {
        match state::write(&self.state_path(), s) {
            // The disk is full (the log filled it while uploads lagged): the reserve makes
            // room for this one write, and is written again once trimming frees space.
            Err(e)
                if e.raw_os_error() == Some(ENOSPC)
                    && fs::remove_file(self.root.join(RESERVE)).is_ok() =>
            {
                state::write(&self.state_path(), s)
            }
            other => other,
        }
    }

    /// Creates `state.json` unless it exists; false if it did.
    pub fn create_state(&self, s: &State) -> io::Result<bool> {
        state::write_new(&self.state_path(), s)
    }

    /// Takes the uploader lock if no other process holds it. The lock lasts as long as the
    /// returned file is open, and dies with the process.
    pub fn try_lock_uploader(&self) -> io::Result<Option<File>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.root.join("upload.lock"))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(f)),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}
