//! Keeps walrust's own moments with the WAL write lock from failing the application's writers.
//!
//! walrust's connections take SQLite's WAL write lock for moments: a snapshot fixing its point
//! when no commit came for a second, the shadow log catching up from the WAL after a crash, a
//! WAL recovery run by one of its reads. An application connection of the same process that
//! asks for the lock meanwhile gets `SQLITE_BUSY` from SQLite's VFS at once, and without a busy
//! timeout (the `sqlite3` shell's default, Tcl's) its statement fails with "database is
//! locked": a failure walrust alone caused. The gate records those holds, and the VFS lets an
//! application's request that met one wait for its end (at most `MAX_WAIT`) and try again.
//! Busy answers that walrust did not cause (another application connection, another process)
//! are returned at once, as without walrust.
//!
//! What must hold: a hold is announced before its lock request and withdrawn after its
//! release (or, by the thread that made it, after the request failed), so an application
//! request it made busy always sees it (held, or taken since the request began) and asks
//! again; one that a request of walrust's met only while asking in vain is answered busy, as
//! it would be without walrust; a thread never waits for a hold of its own; no wait outlasts
//! `MAX_WAIT`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

/// The longest an application's request for the write lock waits for walrust's holds: longer
/// than any of them lasts (a catch-up copies at most a WAL's worth of pages from the page
/// cache), short enough that a stuck one shows as `SQLITE_BUSY` rather than a hang.
pub const MAX_WAIT: Duration = Duration::from_secs(5);

#[derive(Default)]
pub struct WriterGate {
    /// The thread whose walrust connection is asking for the write lock (`false`) or holds
    /// it (`true`).
    holder: Mutex<Option<(ThreadId, bool)>>,
    released: Condvar,
    /// How many times walrust's connections got the lock: a request that began before one of
    /// them did and was busy was perhaps made busy by it, even if it is over now.
    taken: AtomicU64,
}

impl WriterGate {
    /// Read before an application's request for the write lock; passed to `wait` if it fails.
    fn ticket(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// A walrust connection on this thread is about to ask for the write lock. (walrust's
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

    /// Runs an application's request for the write lock (`ask`, true when busy) and, while it
    /// is busy because of walrust's own connection, waits for that to let go and asks again.
    /// Returns whether the last answer was busy.
    pub fn ask(&self, mut ask: impl FnMut() -> bool) -> bool {
        let mut ticket = self.ticket();
        if !ask() {
            return false;
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
                    "an application's write waited {} ms for walrust's connection (busy: {busy})",
                    waited.as_millis()
                )
            });
        }
        busy
    }

    /// An application's request for the write lock, begun at `ticket`, was busy. Waits while
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
        let g = WriterGate::default();
        let t = g.ticket();
        assert_eq!(g.wait(t, soon()), None);
    }

    #[test]
    fn a_hold_over_since_the_request_began_means_try_again() {
        let g = WriterGate::default();
        let t = g.ticket();
        g.asking();
        g.took();
        g.released();
        assert_eq!(g.wait(t, soon()), Some(t + 1));
    }

    #[test]
    fn walrust_asking_in_vain_made_nobody_busy() {
        let g = WriterGate::default();
        let t = g.ticket();
        g.asking();
        g.in_vain();
        assert_eq!(g.wait(t, soon()), None);
    }

    #[test]
    fn a_request_waits_for_the_hold_to_end() {
        let g = Arc::new(WriterGate::default());
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

    #[test]
    fn a_request_in_vain_leaves_the_hold_announced() {
        let g = Arc::new(WriterGate::default());
        g.asking();
        g.took();
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
    fn a_thread_never_waits_for_its_own_hold_nor_past_the_deadline() {
        let g = Arc::new(WriterGate::default());
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
