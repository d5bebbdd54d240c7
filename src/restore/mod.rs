//! Restore: rebuild a database file from a replica, as of the latest restore point, a TXID or a
//! time.
//!
//! Owns: the restore plan (`plan`: which snapshot, then which chain of files), applying it
//! (`apply`: decode each LTX file and write its pages into a temporary sibling of the output),
//! and the two-step result `RestoredTemp`, whose
//! `commit()` puts the file in place. The SQL layer runs `PRAGMA integrity_check` on
//! `RestoredTemp::path()` between the two steps; the CLI commits directly.
//!
//! Must never: write anywhere but `output_path`, `<output_path>.tmp-walrust` and, once the file
//! is in place, the new shadow directory `<output_path>-walrust/` that lets the copy continue
//! the replica's history (`shadow::restored`; never one that exists already), and never to a
//! path derived from an object key; leave anything at `output_path` when a check fails; put a file
//! where a `-wal` or `-journal` of an earlier database would be applied to it; hold the
//! database in memory (pages stream from the store to the file; files download a few at a time
//! ahead of the one applied, `store::fetch`, and memory is bounded by its budget, not by the
//! database).
//!
//! Every file applied is checked: its LTX file checksum, its header against its name, its size
//! against the listing, and its SHA-256 against `manifest.json` when the manifest names it.
//! Errors are `RestoreError`s whose `Display` is the whole user-facing message, starting with
//! `walrust: ` (`walrust: integrity error` for a failed check): the SQL layer and the CLI print
//! it as is.

mod apply;
mod plan;

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

pub use plan::{choose, plan, Plan};

use crate::clock::format_rfc3339_ms;
use crate::settle::{until_settled, Doubt};
use crate::store::{Store, StoreError};
use crate::Txid;

/// What to restore to. Each stops at a restore point: the end of a file's TXID range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// The newest restore point in the replica.
    Latest,
    /// The newest restore point at or before this TXID.
    Txid(Txid),
    /// The newest restore point committed at or before this time (ms since the epoch).
    Time(i64),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Latest => f.write_str("the latest restore point"),
            Target::Txid(t) => write!(f, "TXID {t}"),
            Target::Time(ms) => f.write_str(&format_rfc3339_ms(*ms)),
        }
    }
}

/// What kind of failure, for the CLI's exit code and the SQL layer's error code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// No replica at the URL, no snapshot, or none at or before the target.
    NothingToRestore,
    /// A checksum, size or hash did not match, or the chain of files has a gap.
    Integrity,
    /// The store failed (network, permissions, a file vanished mid-restore).
    Storage,
    /// The request was wrong (output exists, bad URL).
    Invalid,
    /// Anything else, including local I/O on the output.
    Io,
}

impl ErrorKind {
    /// `walrust restore`'s exit code (SPEC section 7).
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::NothingToRestore => 3,
            ErrorKind::Integrity => 5,
            ErrorKind::Storage => 4,
            ErrorKind::Invalid => 2,
            ErrorKind::Io => 1,
        }
    }
}

#[derive(Debug)]
pub struct RestoreError {
    kind: ErrorKind,
    message: String,
    /// Writers changing the replica may have caused it: look again (`settle`).
    doubtful: bool,
}

impl RestoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> RestoreError {
        RestoreError {
            kind,
            message: message.into(),
            doubtful: false,
        }
    }

    pub fn integrity(message: impl Into<String>) -> RestoreError {
        RestoreError::new(ErrorKind::Integrity, message)
    }

    /// An integrity problem of the listing (a hole, an entry without its file) that a writer
    /// changing the replica mid-listing can cause: reported only if it persists (`settle`).
    pub fn doubtful_integrity(message: impl Into<String>) -> RestoreError {
        RestoreError {
            doubtful: true,
            ..RestoreError::integrity(message)
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the `walrust: ...:` prefix.
    pub fn detail(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for RestoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.kind {
            ErrorKind::Integrity => "walrust: integrity error: ",
            ErrorKind::NothingToRestore => "walrust: nothing to restore: ",
            _ => "walrust: restore failed: ",
        };
        write!(f, "{prefix}{}", self.message)
    }
}

impl std::error::Error for RestoreError {}

impl From<StoreError> for RestoreError {
    /// A file not found is doubtful: a compaction may have removed it after the listing; so is
    /// an unavailable store (an S3 5xx, which S3 asks clients to retry): both are looked at again.
    fn from(e: StoreError) -> RestoreError {
        let kind = match e {
            StoreError::Invalid { .. } => ErrorKind::Invalid,
            _ => ErrorKind::Storage,
        };
        RestoreError {
            doubtful: matches!(
                e,
                StoreError::NotFound { .. } | StoreError::Unavailable { .. }
            ),
            ..RestoreError::new(kind, e.to_string())
        }
    }
}

impl Doubt for RestoreError {
    fn doubtful(&self) -> bool {
        self.doubtful
    }

    fn transient(&self) -> bool {
        self.doubtful && self.kind == ErrorKind::Storage
    }

    fn unsettled(self, attempts: usize) -> RestoreError {
        RestoreError::new(
            ErrorKind::Storage,
            format!(
                "the replica kept changing while it was read ({attempts} attempts; the last \
                 problem: {}); retry when it is quieter",
                self.message
            ),
        )
    }
}

/// The temporary sibling a restore writes before renaming into place.
pub fn temp_path(output: &Path) -> PathBuf {
    let mut s = output.as_os_str().to_os_string();
    s.push(".tmp-walrust");
    PathBuf::from(s)
}

/// A restored, fully checked database in a temporary file beside its destination. `commit()`
/// moves it into place; dropping it uncommitted deletes it.
#[derive(Debug)]
pub struct RestoredTemp {
    /// Holds the temp file's lock until it is committed or removed (see `create_locked`).
    _lock: File,
    path: PathBuf,
    output: PathBuf,
    /// The replica restored from (`Store::describe`), recorded beside the output.
    replica: String,
    txid: Txid,
    page_size: u32,
    pages: u32,
    timestamp_ms: i64,
    committed: bool,
}

impl RestoredTemp {
    /// The temporary file (`<output>.tmp-walrust`), for checks before `commit()`. Open it
    /// read-only (e.g. `?mode=ro` or `immutable=1`) so SQLite leaves no `-wal`/`-shm` beside it.
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn output_path(&self) -> &Path {
        &self.output
    }

    /// The restore point reached: the last TXID applied.
    pub fn txid(&self) -> Txid {
        self.txid
    }

    pub fn page_size(&self) -> u32 {
        self.page_size
    }

    /// The database size in pages.
    pub fn pages(&self) -> u32 {
        self.pages
    }

    /// When the restore point's transaction was committed (ms since the epoch).
    pub fn timestamp_ms(&self) -> i64 {
        self.timestamp_ms
    }

    /// Moves the file to `output_path` without replacing anything that appeared there
    /// meanwhile, and fsyncs the folder. Returns the TXID restored to.
    pub fn commit(mut self) -> Result<Txid, RestoreError> {
        let io_err = |e: io::Error| {
            RestoreError::new(
                ErrorKind::Io,
                format!(
                    "moving {} to {}: {e}",
                    self.path.display(),
                    self.output.display()
                ),
            )
        };
        let exists = || {
            RestoreError::new(
                ErrorKind::Invalid,
                format!(
                    "{} appeared while restoring; it was left alone, remove it or choose another \
                     output path",
                    self.output.display()
                ),
            )
        };
        // (Looked at again: the restore may have taken minutes.)
        refuse_leftovers(&self.output)?;
        // A hard link fails if the destination exists, so nothing is ever overwritten.
        match fs::hard_link(&self.path, &self.output) {
            Ok(()) => fs::remove_file(&self.path).map_err(io_err)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(exists()),
            Err(_) => {
                // A filesystem without hard links: check, then rename.
                if fs::symlink_metadata(&self.output).is_ok() {
                    return Err(exists());
                }
                fs::rename(&self.path, &self.output).map_err(io_err)?;
            }
        }
        self.committed = true;
        let dir = parent_dir(&self.output);
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err)?;
        // So that the copy can continue the replica's history (SPEC 6). Not fatal: without it
        // the copy replicates like any other database.
        if let Err(e) =
            crate::shadow::restored::record(&self.output, &self.replica, self.txid.get())
        {
            crate::log::warn(&not_recorded(&self.output, &self.replica, e));
        }
        Ok(self.txid)
    }
}

impl Drop for RestoredTemp {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The one line a restore that could not record itself beside its output prints: why, and
/// what opening the copy with the same replica will then do.
fn not_recorded(output: &Path, replica: &str, e: crate::shadow::restored::NotRecorded) -> String {
    use crate::shadow::restored::{Found, NotRecorded};
    let out = output.display();
    let (dir, found) = match e {
        NotRecorded::Occupied { dir, found } => (dir, found),
        NotRecorded::Io(e) => {
            return format!(
                "walrust: restored {out}, but could not record the restore beside it ({e}); \
                 opened with {replica} the copy will be refused until walrust_takeover()"
            )
        }
    };
    let dir = dir.display();
    match found {
        Found::Replica(theirs) if crate::store::url::same_replica(&theirs, replica) => format!(
            "walrust: restored {out}; {dir} was already there, left by an earlier database at \
             that path, and names this replica: it was kept, and opened with {replica} the copy \
             continues that database's replication from a new snapshot"
        ),
        Found::Replica(theirs) => format!(
            "walrust: restored {out}, but {dir} was already there and names another replica \
             ({theirs}): it was kept, and opening the copy with {replica} is refused until it \
             is removed"
        ),
        Found::NoReplica => format!(
            "walrust: restored {out}, but {dir} was already there: it was kept, and opened with \
             {replica} the copy will be refused until walrust_takeover()"
        ),
        Found::Unreadable => format!(
            "walrust: restored {out}, but {dir} was already there and is not a walrust shadow \
             directory: it was kept, and the copy cannot replicate until it is moved away"
        ),
    }
}

fn parent_dir(p: &Path) -> &Path {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// Creates the temporary file `temp`, locked (`flock`) for as long as the restore holds it.
/// One left by a restore that was killed (unlocked) is removed first; `None` if another
/// restore holds it. After locking, the path must still name the new file: a restore that
/// found it before the lock was taken may have removed it, and then that one goes on. Where
/// the filesystem has no locks, a file left there is never taken for a dead restore's.
fn create_locked(temp: &Path) -> io::Result<Option<File>> {
    use std::fs::TryLockError;
    use std::os::unix::fs::MetadataExt;
    let mut removed = false;
    for _ in 0..2 {
        let created = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            // As SQLite creates a database: 0644 less the umask (README, "Restore").
            .mode(0o644)
            .open(temp);
        match created {
            Ok(f) => {
                match f.try_lock() {
                    Ok(()) => {}
                    Err(TryLockError::WouldBlock) => return Ok(None),
                    Err(TryLockError::Error(_)) => return Ok(Some(f)), // no locks here
                }
                let ino = f.metadata()?.ino();
                if !fs::metadata(temp).is_ok_and(|m| m.ino() == ino) {
                    return Ok(None);
                }
                if removed {
                    crate::log::warn(&format!(
                        "walrust: removed {}, left by a restore that was interrupted",
                        temp.display()
                    ));
                }
                return Ok(Some(f));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                let Ok(left) = File::open(temp) else {
                    continue; // gone meanwhile
                };
                if left.try_lock().is_err() {
                    return Ok(None);
                }
                fs::remove_file(temp)?;
                removed = true;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(None)
}

/// Restores `store` as of `target` into `<output>.tmp-walrust`, checking everything, and
/// returns the guard that commits it to `output`. `output` must not exist; its folder must.
pub fn restore(
    store: &dyn Store,
    output: &Path,
    target: Target,
) -> Result<RestoredTemp, RestoreError> {
    let invalid = |m: String| RestoreError::new(ErrorKind::Invalid, m);
    if let Some(why) = not_a_file_path(output) {
        return Err(invalid(why));
    }
    if fs::symlink_metadata(output).is_ok() {
        return Err(invalid(format!(
            "{} already exists; restore never overwrites: choose a new output path or move the \
             file away",
            output.display()
        )));
    }
    refuse_leftovers(output)?;
    let dir = parent_dir(output);
    if !dir.is_dir() {
        return Err(invalid(format!(
            "the folder {} does not exist; create it first",
            dir.display()
        )));
    }

    until_settled(|| restore_once(store, output, target))
}

/// Why `output` cannot name the file a restore writes, when it is what SQLite users write for
/// something else: nothing, `:memory:`, a `file:` URI, a folder.
fn not_a_file_path(output: &Path) -> Option<String> {
    let text = output.to_string_lossy();
    Some(if text.is_empty() {
        "the output path is empty: name the file to restore into".to_string()
    } else if text == ":memory:" {
        "the output path is ':memory:': restore writes a file; name one (and open or ATTACH it \
         afterwards)"
            .to_string()
    } else if text.starts_with("file:") {
        format!(
            "the output path {text} is a URI: give a plain path, such as {}",
            text.trim_start_matches("file:").trim_start_matches("//")
        )
    } else if text.ends_with('/') {
        format!("the output path {text} names a folder: name the file to restore into")
    } else {
        return None;
    })
}

/// A `-wal` or `-journal` file at the output path, left by a database that was there: SQLite
/// opening the restored file would apply it (nothing in either names the database it belongs
/// to), and the restore would read as that database's pages, integrity check and all.
fn refuse_leftovers(output: &Path) -> Result<(), RestoreError> {
    for suffix in ["-wal", "-journal"] {
        let mut left = output.as_os_str().to_owned();
        left.push(suffix);
        let left = PathBuf::from(left);
        if fs::symlink_metadata(&left).is_ok() {
            return Err(RestoreError::new(
                ErrorKind::Invalid,
                format!(
                    "{} exists, left by an earlier database at {}; SQLite would apply it to the \
                     restored file: remove it (and any -shm beside it) or choose another output \
                     path",
                    left.display(),
                    output.display()
                ),
            ));
        }
    }
    Ok(())
}

/// One look at the replica: plan, then apply into a new temporary file. A file that a
/// compaction removed after the listing fails it with a doubtful error; `restore` looks again.
fn restore_once(
    store: &dyn Store,
    output: &Path,
    target: Target,
) -> Result<RestoredTemp, RestoreError> {
    let invalid = |m: String| RestoreError::new(ErrorKind::Invalid, m);
    let plan = plan::plan_once(store, target)?;

    let temp = temp_path(output);
    let running = || {
        invalid(format!(
            "another restore to {} is running (it holds {}; if none is, remove that file); \
             wait for it or choose another output path",
            output.display(),
            temp.display()
        ))
    };
    let file = match create_locked(&temp) {
        Ok(Some(f)) => f,
        Ok(None) => return Err(running()),
        Err(e) => {
            return Err(RestoreError::new(
                ErrorKind::Io,
                format!("creating {}: {e}", temp.display()),
            ))
        }
    };
    let lock = file
        .try_clone()
        .map_err(|e| RestoreError::new(ErrorKind::Io, format!("{}: {e}", temp.display())))?;
    // From here on, dropping the guard (on any error) removes the temp file.
    let mut guard = RestoredTemp {
        _lock: lock,
        path: temp,
        output: output.to_path_buf(),
        replica: store.describe(),
        txid: plan.txid,
        page_size: 0,
        pages: 0,
        timestamp_ms: plan.timestamp_ms,
        committed: false,
    };
    let done = apply::run(store, &plan, file, &guard.path)?;
    guard.txid = done.txid;
    guard.page_size = done.page_size;
    guard.pages = done.pages;
    guard.timestamp_ms = done.timestamp_ms;
    Ok(guard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_spec() {
        let codes: Vec<i32> = [
            ErrorKind::NothingToRestore,
            ErrorKind::Integrity,
            ErrorKind::Storage,
            ErrorKind::Invalid,
            ErrorKind::Io,
        ]
        .iter()
        .map(|k| k.exit_code())
        .collect();
        assert_eq!(codes, [3, 5, 4, 2, 1]);
    }

    #[test]
    fn an_output_path_must_name_a_file() {
        for (p, says) in [
            ("", "is empty"),
            (":memory:", "restore writes a file"),
            ("file:/a/b.db", "such as /a/b.db"),
            ("file:///a/b.db", "such as /a/b.db"),
            ("/a/new/", "names a folder"),
        ] {
            let why = not_a_file_path(Path::new(p)).unwrap_or_default();
            assert!(why.contains(says), "{p:?}: {why}");
        }
        for p in ["b.db", "/a/b.db", "./x:memory:"] {
            assert_eq!(not_a_file_path(Path::new(p)), None, "{p}");
        }
    }

    #[test]
    fn messages_carry_the_walrust_prefix() {
        let e = RestoreError::integrity("x");
        assert_eq!(e.to_string(), "walrust: integrity error: x");
        let e: RestoreError = StoreError::NotFound { what: "y".into() }.into();
        assert_eq!(e.kind(), ErrorKind::Storage);
        assert!(e
            .to_string()
            .starts_with("walrust: restore failed: y: not found"));
        assert_eq!(
            temp_path(Path::new("/a/b.db")),
            Path::new("/a/b.db.tmp-walrust")
        );
    }
}
