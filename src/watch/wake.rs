//! When `walrust watch` looks at its databases again (docs/DESIGN.md, decision 14): at once
//! when inotify (Linux) says a database's file, its `-wal` or its `-shm` was written, created
//! or removed in its directory, then every `FAST` for `HOT` after the last such change (SQLite
//! publishes a commit in the WAL index, which inotify does not see, just after writing its
//! frames, and at synchronous=FULL after an fsync), and otherwise every `fallback` (1 s) as a
//! safety net. Without inotify (another OS, or no inotify instance or watch to be had) it
//! polls every `FAST`.
//!
//! What must hold: a change to a watched file never waits longer than `fallback` to be seen,
//! and never less than `FAST` after the previous look (a busy application's stream of writes
//! is looked at once per `FAST`, as the plain poll did); `stop` is seen within `STOP_CHECK`.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// The plain poll's interval, and the shortest time between two looks.
pub const FAST: Duration = Duration::from_millis(50);
/// The safety-net poll while inotify works.
pub const FALLBACK: Duration = Duration::from_secs(1);
/// How long after a change the loop keeps looking every `FAST`.
const HOT: Duration = Duration::from_secs(1);
/// How often a long wait checks `stop`.
const STOP_CHECK: Duration = Duration::from_millis(200);

pub struct Waker {
    #[cfg(target_os = "linux")]
    ino: Option<Inotify>,
    fallback: Duration,
    hot_until: Instant,
    last_look: Instant,
}

#[cfg(target_os = "linux")]
struct Inotify {
    fd: crate::vfs::ffi::posix::Inotify,
    /// (watch number, entry name) pairs that wake the loop.
    names: std::collections::HashSet<(i32, std::ffi::OsString)>,
}

impl Waker {
    /// Watches the directories of `dbs` (canonical paths). Returns the waker and, when it
    /// must fall back to the plain poll, why (one line for the log).
    pub fn new(dbs: &[&Path], fallback: Duration) -> (Waker, Option<String>) {
        let now = Instant::now();
        #[cfg(target_os = "linux")]
        let (ino, why) = match Inotify::new(dbs) {
            Ok(i) => (Some(i), None),
            Err(e) => (
                None,
                Some(format!(
                    "cannot watch the databases' directories with inotify ({e}); polling every {} ms",
                    FAST.as_millis()
                )),
            ),
        };
        #[cfg(not(target_os = "linux"))]
        let why = {
            let _ = dbs;
            None
        };
        let w = Waker {
            #[cfg(target_os = "linux")]
            ino,
            fallback: fallback.max(FAST),
            hot_until: now,
            last_look: now,
        };
        (w, why)
    }

    /// Watches one more database (canonical path), found after the start; without inotify
    /// it is polled as the others are.
    pub fn add(&mut self, db: &Path) {
        #[cfg(target_os = "linux")]
        if let Some(ino) = &mut self.ino {
            // Failing, it is looked at every `fallback`, as a safety net looks at any.
            let _ = ino.add(db);
        }
        #[cfg(not(target_os = "linux"))]
        let _ = db;
    }

    /// Whether inotify wakes the loop (else it polls every `FAST`).
    pub fn notified(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.ino.is_some();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Waits until the next look is due (or `stop` is set). Returns a line for the log when
    /// inotify stopped working (the loop then polls every `FAST`).
    pub fn wait(&mut self, stop: &AtomicBool) -> Option<String> {
        let mut said = None;
        let due = loop {
            let now = Instant::now();
            let due = if !self.notified() || now < self.hot_until {
                self.last_look + FAST
            } else {
                self.last_look + self.fallback
            };
            if now >= due || stop.load(Ordering::Acquire) {
                break now;
            }
            let chunk = (due - now).min(STOP_CHECK);
            match self.changed(chunk) {
                Ok(false) => {}
                Ok(true) => {
                    let now = Instant::now();
                    self.hot_until = now + HOT;
                    // Changes that come sooner than FAST after the last look wait for it
                    // (the kernel queues and merges them meanwhile).
                    let next = self.last_look + FAST;
                    if now < next {
                        std::thread::sleep(next - now);
                    }
                    break Instant::now();
                }
                Err(e) => said = Some(e),
            }
        };
        self.last_look = due;
        said
    }

    /// Waits at most `timeout` for a change to a watched file; sleeps without inotify.
    fn changed(&mut self, timeout: Duration) -> Result<bool, String> {
        #[cfg(target_os = "linux")]
        if let Some(ino) = &self.ino {
            return match ino.fd.wait(timeout) {
                Ok(changes) => Ok(changes
                    .into_iter()
                    .any(|c| c.overflow || ino.names.contains(&(c.watch, c.name)))),
                Err(e) => {
                    self.ino = None;
                    Err(format!(
                        "inotify failed ({e}); polling every {} ms",
                        FAST.as_millis()
                    ))
                }
            };
        }
        std::thread::sleep(timeout);
        Ok(false)
    }
}

#[cfg(target_os = "linux")]
impl Inotify {
    fn new(dbs: &[&Path]) -> std::io::Result<Inotify> {
        let mut ino = Inotify {
            fd: crate::vfs::ffi::posix::Inotify::new()?,
            names: std::collections::HashSet::new(),
        };
        for db in dbs {
            ino.add(db)?;
        }
        Ok(ino)
    }

    /// Wakes on changes to `db`, its `-wal` and its `-shm` (a directory already watched
    /// keeps its watch number).
    fn add(&mut self, db: &Path) -> std::io::Result<()> {
        let (Some(dir), Some(name)) = (db.parent(), db.file_name()) else {
            return Ok(());
        };
        let wd = self.fd.watch_dir(dir)?;
        for suffix in ["", "-wal", "-shm"] {
            let mut n = name.to_owned();
            n.push(suffix);
            self.names.insert((wd, n));
        }
        Ok(())
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_write_to_the_wal_wakes_before_the_fallback_and_other_files_do_not() {
        let dir = std::env::temp_dir().join(format!("walrust-wake-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("a.db");
        let (mut w, why) = Waker::new(&[&db], Duration::from_secs(3600));
        assert!(why.is_none() && w.notified(), "{why:?}");
        let stop = AtomicBool::new(false);
        std::thread::sleep(FAST);
        std::fs::write(dir.join("other.txt"), b"x").unwrap();
        assert!(!w.changed(Duration::from_millis(100)).unwrap());
        std::fs::write(dir.join("a.db-wal"), b"x").unwrap();
        // Returns (no hour-long wait) because the WAL changed.
        assert!(w.wait(&stop).is_none());
        assert!(w.hot_until > Instant::now());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_database_added_later_wakes_too() {
        let dir = std::env::temp_dir().join(format!("walrust-wake-add-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        let (mut w, _) = Waker::new(&[&dir.join("a.db")], Duration::from_secs(3600));
        std::fs::write(dir.join("sub/b.db-wal"), b"x").unwrap();
        assert!(!w.changed(Duration::from_millis(100)).unwrap());
        w.add(&dir.join("sub/b.db"));
        std::fs::write(dir.join("sub/b.db-wal"), b"y").unwrap();
        assert!(w.changed(Duration::from_secs(5)).unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn stop_ends_a_long_wait() {
        let (mut w, _) = Waker::new(&[], Duration::from_secs(3600));
        let stop = AtomicBool::new(true);
        w.wait(&stop);
    }
}
