//! Keeps walrust's own moments with SQLite's WAL locks from failing the application's
//! requests for them: the write lock, and the checkpointer lock.
//!
//! walrust's connections take SQLite's WAL write lock for moments: a snapshot fixing its point
//! when no commit came for a second, the shadow log catching up from the WAL after a crash, a
//! WAL recovery run by one of its reads. An application connection of the same process that
//! asks for the lock meanwhile gets `SQLITE_BUSY` from SQLite's VFS at once, and without a busy
//! timeout (the `sqlite3` shell's default, Tcl's) its statement fails with "database is
//! locked": a failure walrust alone caused. Likewise the checkpoint thread holds the
//! checkpointer lock for each of its PASSIVE passes, and SQLite answers an application's
//! checkpoint that meets it `SQLITE_BUSY` without calling any busy handler: `PRAGMA
//! wal_checkpoint(TRUNCATE)` would report busy and leave the WAL as it was, where SQLite alone
//! would have checkpointed. One gate per lock records those holds, and the VFS lets an
//! application's request that met one wait for its end (at most `MAX_WAIT`) and try again.
//! Busy answers that walrust did not cause (another application connection, another process)
//! are returned at once, as without walrust. walrust's own automatic checkpoint, run on a
//! committing connection (`checkpoint::sqlite_checkpoint`), does not wait: it is retried at the
//! next commit, as before.
//!
//! What must hold: a hold is announced before its lock request and withdrawn after its
//! release (or, by the thread that made it, after the request failed), so an application
//! request it made busy always sees it (held, or taken since the request began) and asks
//! again; one that a request of walrust's met only while asking in vain is answered busy, as
//! it would be without walrust; a thread never waits for a hold of its own; no wait outlasts
//! `MAX_WAIT`; a hold never waits for an application's lock (the write lock's holders take
//! nothing more; a PASSIVE pass never waits), so no wait is a deadlock.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The longest an application's request waits for walrust's holds: longer than any of them
/// lasts (a catch-up copies at most a WAL's worth of pages from the page cache; a PASSIVE pass
/// copies and syncs a few thousand frames), short enough that a stuck one shows as
/// `SQLITE_BUSY` rather than a hang.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

thread_local! {
    /// Set while this thread runs a lock request that must not wait (`without_waiting`).
    static NO_WAIT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with this thread's lock requests answered as SQLite answers them, busy at once:
/// for walrust's own automatic checkpoint on a committing connection, which is tried again at
/// the next commit and must not hold that commit up behind the checkpoint thread's pass.
pub fn without_waiting<R>(f: impl FnOnce() -> R) -> R {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            NO_WAIT.with(|c| c.set(self.0));
        }
    }
    let _reset = Reset(NO_WAIT.with(|c| c.replace(true)));
    f()
}

pub struct LockGate {
    /// Which lock, for traces.
    lock: &'static str,
    /// The thread whose walrust connection is asking for the lock (`false`) or holds it
    /// (`true`).
    holder: Mutex<Option<(ThreadId, bool)>>,
    released: Condvar,
    /// How many times walrust's connections got the lock: a request that began before one of
    /// them did and was busy was perhaps made busy by it, even if it is over now.
    taken: AtomicU64,
}

impl LockGate {
    pub fn new(lock: &'static str) -> Self {
        LockGate {
            lock,
            holder: Mutex::new(None),
            released: Condvar::new(),
            taken: AtomicU64::new(0),
        }
    }

    /// Read before an application's request for the write lock; passed to `wait` if it fails.
    fn ticket(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// A walrust connection on this thread is about to ask for the lock. (walrust's
    /// connections take it one at a time, `checkpoint::keep_away`; should two ever ask at
    /// once, the first announcement stands until its own thread withdraws it.)
    pub fn asking(&self) {
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        if holder.is_none() {
            *holder = Some((std::thread::current().id(), false));
        }
    }

    /// The walrust connection got the lock (after `asking`).
    pub fn took(&self) {
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        *holder = Some((std::thread::current().id(), true));
        self.taken.fetch_add(1, Ordering::AcqRel);
    }

    /// The walrust connection on this thread did not get the lock it asked for: its
    /// announcement (if it is still the one standing) is withdrawn.
    pub fn in_vain(&self) {
        let me = std::thread::current().id();
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        if *holder == Some((me, false)) {
            *holder = None;
            self.released.notify_all();
        }
    }

    /// The walrust connection that held the lock let it go.
    pub fn released(&self) {
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        *holder = None;
        self.released.notify_all();
    }

    /// Runs an application's request for the lock (`ask`, true when busy) and, while it is
    /// busy because of walrust's own connection, waits for that to let go and asks again
    /// (unless the request is walrust's automatic checkpoint, `without_waiting`). Returns
    /// whether the last answer was busy.
    pub fn ask(&self, mut ask: impl FnMut() -> bool) -> bool {
        let mut ticket = self.ticket();
        if !ask() {
            return false;
        }
        if NO_WAIT.with(Cell::get) {
            return true;
        }
        let began = Instant::now();
        let mut busy = true;
        while busy {
            match self.wait(ticket, began + MAX_WAIT) {
                Some(t) => ticket = t,
                None => break,
            }
            busy = ask();
        }
        let waited = began.elapsed();
        if waited >= Duration::from_millis(1) {
            crate::log::trace(|| {
                format!(
                    "an application's request for {} waited {} ms for walrust's connection (busy: {busy})",
                    self.lock,
                    waited.as_millis()
                )
            });
        }
        busy
    }

    /// An application's request for the lock, begun at `ticket`, was busy. Waits while
    /// a walrust connection holds the lock or asks for it, then returns the ticket to try
    /// again with if one held it meanwhile or got it since the request began; `None` when the
    /// busy answer was not walrust's doing, or its hold outlasted `deadline`: return it.
    fn wait(&self, ticket: u64, deadline: Instant) -> Option<u64> {
        let me = std::thread::current().id();
        let mut holder = self.holder.lock().unwrap_or_else(|e| e.into_inner());
        let mut held_meanwhile = false;
        while let Some((t, held)) = *holder {
            let now = Instant::now();
            if t == me || now >= deadline {
                return None;
            }
            held_meanwhile |= held;
            holder = self
                .released
                .wait_timeout(holder, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        let taken = self.taken.load(Ordering::Acquire);
        (held_meanwhile || taken != ticket).then_some(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn a_busy_answer_walrust_did_not_cause_is_returned_at_once() {
        let g = LockGate::new("a lock");
        let t = g.ticket();
        assert_eq!(g.wait(t, soon()), None);
    }

    #[test]
    fn a_hold_over_since_the_request_began_means_try_again() {
        let g = LockGate::new("a lock");
        let t = g.ticket();
        g.asking();
        g.took();
        g.released();
        assert_eq!(g.wait(t, soon()), Some(t + 1));
    }

    #[test]
    fn walrust_asking_in_vain_made_nobody_busy() {
        let g = LockGate::new("a lock");
        let t = g.ticket();
        g.asking();
        g.in_vain();
        assert_eq!(g.wait(t, soon()), None);
    }

    #[test]
    fn a_request_waits_for_the_hold_to_end() {
        let g = Arc::new(LockGate::new("a lock"));
        let (tx, rx) = std::sync::mpsc::channel();
        let h = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.asking();
                g.took();
                tx.send(()).unwrap();
                std::thread::sleep(Duration::from_millis(50));
                g.released();
            })
        };
        rx.recv().unwrap();
        let t = g.ticket(); // the request began after walrust got the lock
        assert_eq!(g.wait(t, soon()), Some(t));
        assert!(g.holder.lock().unwrap().is_none());
        h.join().unwrap();
    }

    /// A gate whose lock this thread's walrust connection holds.
    fn held() -> Arc<LockGate> {
        let g = Arc::new(LockGate::new("a lock"));
        g.asking();
        g.took();
        g
    }

    #[test]
    fn a_request_in_vain_leaves_the_hold_announced() {
        let g = held();
        let other = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.asking(); // asks in vain while this thread holds the lock
                g.in_vain();
                g.holder.lock().unwrap().map(|(_, held)| held)
            })
        };
        assert_eq!(other.join().unwrap(), Some(true));
        g.released();
        assert!(g.holder.lock().unwrap().is_none());
    }

    #[test]
    fn a_request_without_waiting_is_answered_busy_at_once() {
        let g = held();
        let other = {
            let g = g.clone();
            std::thread::spawn(move || {
                let mut asked = 0;
                let busy = without_waiting(|| {
                    g.ask(|| {
                        asked += 1;
                        true
                    })
                });
                (busy, asked, NO_WAIT.with(Cell::get))
            })
        };
        assert_eq!(other.join().unwrap(), (true, 1, false));
        g.released();
    }

    #[test]
    fn a_thread_never_waits_for_its_own_hold_nor_past_the_deadline() {
        let g = Arc::new(LockGate::new("a lock"));
        g.asking();
        assert_eq!(g.wait(g.ticket(), soon()), None);
        let other = {
            let g = g.clone();
            std::thread::spawn(move || {
                g.wait(g.ticket(), Instant::now() + Duration::from_millis(20))
            })
        };
        assert_eq!(other.join().unwrap(), None);
    }
}
