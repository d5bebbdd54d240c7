//! POSIX calls for `walrust watch`, the sidecar that runs without SQLite: fcntl record locks
//! (the locks SQLite's unix VFS takes on the database and `-shm` files, see `watch::shm`) and
//! waiting for SIGINT/SIGTERM.
//!
//! What must hold: these are process-wide POSIX locks, so the caller keeps exactly one open
//! descriptor per locked file for as long as it holds locks (closing any descriptor of a file
//! drops every lock the process holds on it).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// A record lock's kind, as `fcntl` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    Shared,
    Exclusive,
    Unlock,
}

impl Lock {
    fn raw(self) -> libc::c_short {
        (match self {
            Lock::Shared => libc::F_RDLCK,
            Lock::Exclusive => libc::F_WRLCK,
            Lock::Unlock => libc::F_UNLCK,
        }) as libc::c_short
    }
}

fn flock(kind: Lock, start: u64, len: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value of it.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind.raw();
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl
}

/// Sets (or clears) a lock on bytes `start..start+len` without waiting. Returns false when
/// another process holds a conflicting lock.
pub fn set_lock(file: &File, kind: Lock, start: u64, len: u64) -> io::Result<bool> {
    let fl = flock(kind, start, len);
    // SAFETY: F_SETLK reads the `flock` we pass by pointer; the descriptor is open (borrowed).
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &fl as *const libc::flock) };
    if rc == 0 {
        return Ok(true);
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(err),
    }
}

/// Whether another process holds a lock on bytes `start..start+len` that would conflict with
/// `kind` (F_GETLK; takes nothing).
pub fn is_locked_by_other(file: &File, kind: Lock, start: u64, len: u64) -> io::Result<bool> {
    let mut fl = flock(kind, start, len);
    // SAFETY: F_GETLK writes into the `flock` we pass by pointer; the descriptor is open.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl as *mut libc::flock) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT and SIGTERM in the calling thread and every thread it spawns afterwards, so
/// that [`wait_for_termination`] receives them. Call before any thread is started.
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: pthread_sigmask reads the set we own; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGINT or SIGTERM arrives (they must be blocked); returns its number.
pub fn wait_for_termination() -> i32 {
    let set = termination_set();
    let mut sig: libc::c_int = 0;
    loop {
        // SAFETY: sigwait reads the set and writes the signal number into `sig`, both ours.
        let rc = unsafe { libc::sigwait(&set, &mut sig) };
        if rc == 0 {
            return sig;
        }
    }
}
