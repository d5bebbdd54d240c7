//! POSIX calls for `walrust watch`, the sidecar that runs without SQLite: fcntl record locks
//! (the locks SQLite's unix VFS takes on the database and `-shm` files, see `watch::shm`),
//! waiting for SIGINT/SIGTERM, and (Linux) inotify, to wake when a WAL changes.
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

/// The signal `wait_for_termination` also returns when a child process ended.
pub const CHILD_ENDED: i32 = libc::SIGCHLD;

fn termination_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        set
    }
}

/// Blocks SIGINT, SIGTERM and SIGCHLD in the calling thread and every thread it spawns
/// afterwards, so that [`wait_for_termination`] receives them. Call before any thread is
/// started. A child process inherits them blocked: see [`unblock_termination_signals_in`].
pub fn block_termination_signals() -> io::Result<()> {
    let set = termination_set();
    // SAFETY: pthread_sigmask reads the set we own; the old mask is not asked for.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits until SIGINT, SIGTERM or SIGCHLD ([`CHILD_ENDED`]) arrives (they must be blocked);
/// returns its number.
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

/// Has `cmd`'s process start with the signals [`block_termination_signals`] blocks unblocked
/// (a child inherits the blocked set, and Rust's `Command` keeps it): an application the watch
/// runs must receive the SIGTERM passed on to it.
pub fn unblock_termination_signals_in(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let set = termination_set();
    // SAFETY: the hook runs in the child between fork and exec, where only async-signal-safe
    // calls are allowed: pthread_sigmask is one, and it reads only the set copied in.
    unsafe {
        cmd.pre_exec(move || {
            let rc = libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            if rc != 0 {
                return Err(io::Error::from_raw_os_error(rc));
            }
            Ok(())
        });
    }
}

/// Sends signal `sig` to the process `pid` (a child of ours, to pass on a SIGTERM).
pub fn send_signal(pid: u32, sig: i32) -> io::Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| io::Error::other("no such process id"))?;
    // SAFETY: kill takes plain integers; no memory is shared.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// One inotify instance (Linux): watches directories and reports the names of the entries
/// that changed in them, for `walrust watch` to wake when a WAL changes instead of polling.
#[cfg(target_os = "linux")]
pub struct Inotify {
    fd: std::os::fd::OwnedFd,
}

/// One change inotify reported: the watch it came from and the entry's name (empty for the
/// directory itself); `overflow` when the kernel dropped events (assume anything changed).
#[cfg(target_os = "linux")]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub watch: i32,
    pub name: std::ffi::OsString,
    pub overflow: bool,
}

#[cfg(target_os = "linux")]
impl Inotify {
    /// A new non-blocking, close-on-exec inotify descriptor.
    pub fn new() -> io::Result<Inotify> {
        use std::os::fd::FromRawFd;
        // SAFETY: inotify_init1 takes flags only and returns a new descriptor or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a descriptor we just opened and own alone.
        Ok(Inotify {
            fd: unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches the entries of directory `dir` for writes, creation, deletion and renames.
    /// Returns the watch number that `Change::watch` carries.
    pub fn watch_dir(&self, dir: &std::path::Path) -> io::Result<i32> {
        use std::os::unix::ffi::OsStrExt;
        let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL in the path"))?;
        let mask = libc::IN_MODIFY
            | libc::IN_CLOSE_WRITE
            | libc::IN_CREATE
            | libc::IN_DELETE
            | libc::IN_MOVED_TO
            | libc::IN_MOVED_FROM;
        // SAFETY: the descriptor is open (owned) and `c` is a NUL-terminated path we own.
        let wd = unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), c.as_ptr(), mask) };
        if wd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(wd)
    }

    /// Waits at most `timeout` for changes, then returns every change queued (none on a
    /// timeout or an interrupted wait).
    pub fn wait(&self, timeout: std::time::Duration) -> io::Result<Vec<Change>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().min(i32::MAX as u128) as libc::c_int;
        // SAFETY: poll reads and writes the one `pollfd` we own, for one descriptor we own.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::Interrupted => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        let mut out = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: read writes at most `buf.len()` bytes into the buffer we own.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(out),
                    _ => Err(e),
                };
            }
            if n == 0 {
                return Ok(out);
            }
            parse_changes(&buf[..n as usize], &mut out);
        }
    }
}

/// Decodes `struct inotify_event` records (wd, mask, cookie, len, then `len` bytes of
/// NUL-padded name), in the machine's byte order.
#[cfg(target_os = "linux")]
fn parse_changes(mut b: &[u8], out: &mut Vec<Change>) {
    use std::os::unix::ffi::OsStrExt;
    while b.len() >= 16 {
        let word = |at: usize| u32::from_ne_bytes(b[at..at + 4].try_into().unwrap());
        let (wd, mask, len) = (word(0) as i32, word(4), word(12) as usize);
        let end = (16 + len).min(b.len());
        let raw = &b[16..end];
        let name = &raw[..raw.iter().position(|&c| c == 0).unwrap_or(raw.len())];
        out.push(Change {
            watch: wd,
            name: std::ffi::OsStr::from_bytes(name).to_owned(),
            overflow: mask & libc::IN_Q_OVERFLOW != 0,
        });
        b = &b[end..];
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn inotify_reports_a_write_and_a_creation_by_name() {
        let dir = std::env::temp_dir().join(format!("walrust-inotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ino = Inotify::new().unwrap();
        let wd = ino.watch_dir(&dir).unwrap();
        assert!(ino.wait(Duration::from_millis(0)).unwrap().is_empty());
        std::fs::write(dir.join("a.db-wal"), b"x").unwrap();
        let got = ino.wait(Duration::from_secs(5)).unwrap();
        assert!(!got.is_empty());
        assert!(got
            .iter()
            .all(|c| c.watch == wd && c.name == "a.db-wal" && !c.overflow));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
