//! Whether a temporary file may still be in use: its creator (the PID in its name) is alive,
//! or some process holds a lock on it (walrust's writers lock the temporary files they write,
//! which also covers a process in another PID namespace sharing the directory), or, where
//! process liveness cannot be checked, it changed recently.

use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::Duration;

use super::names::Pid;

/// Without a way to tell whether a process lives, a file this recent is left alone.
const UNKNOWN_PID_MIN_AGE: Duration = Duration::from_secs(600);

/// Whether process `pid` exists: `None` where this cannot be told (no `/proc`).
pub fn pid_alive(pid: Pid) -> Option<bool> {
    if pid.0 == std::process::id() {
        return Some(true);
    }
    if !Path::new("/proc/self").exists() {
        return None;
    }
    Some(Path::new("/proc").join(pid.0.to_string()).exists())
}

/// Some process holds a lock on the file (or it cannot be opened to tell).
fn locked(path: &Path) -> bool {
    let Ok(f) = File::open(path) else {
        return true;
    };
    match f.try_lock() {
        Ok(()) => false, // released when `f` closes
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false, // the file system has no locks: the PID decides
    }
}

fn changed_recently(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_none_or(|age| age < UNKNOWN_PID_MIN_AGE)
}

/// Whether `path`, written by `pid`, is a leftover that may be removed.
pub fn is_leftover(path: &Path, pid: Pid) -> bool {
    match pid_alive(pid) {
        Some(true) => false,
        Some(false) => !locked(path),
        None => !locked(path) && !changed_recently(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_process_or_a_lock_keeps_a_file() {
        let dir = std::env::temp_dir().join(format!("walrust-liveness-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("f.tmp");
        std::fs::write(&path, b"x").unwrap();
        assert!(!is_leftover(&path, Pid(std::process::id())));
        // A PID that is not running (the kernel's maximum is below 2^22 on Linux).
        let dead = Pid(4_194_304 + 17);
        assert_eq!(pid_alive(dead), Some(false));
        assert!(is_leftover(&path, dead));
        let holder = File::open(&path).unwrap();
        holder.lock().unwrap();
        assert!(!is_leftover(&path, dead), "a locked file is in use");
        drop(holder);
        assert!(is_leftover(&path, dead));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
