//! The upload pool: one scheduler thread that owns every database's upload state and its
//! timing, and at most `THREADS` pool threads that run the steps (docs/DESIGN.md, decision 15).
//!
//! The scheduler receives every message (commits, `walrust_sync()`, snapshots, takeovers,
//! finished steps), keeps each database's `Entry` while it is at rest, and hands an entry that
//! is due to a free pool thread; the thread runs one `worker::tick` (reads, level-0 upload,
//! snapshot, manifest write: blocking store calls) and sends the entry back. Messages for an
//! entry that is out wait in its slot and are applied when it comes back.
//!
//! What must always hold:
//! - An entry is on at most one thread at a time (it is moved there and back), so each
//!   database's steps, and its uploads in TXID order, stay strictly sequential.
//! - The number of threads never passes `THREADS`, whatever the number of databases; threads
//!   are started as they are first needed.
//! - One endpoint (an S3 endpoint, or one local directory) never occupies more than
//!   `PER_ENDPOINT` threads, so databases on other endpoints always have threads left when
//!   one endpoint hangs (a hung request holds its thread until the store's timeouts end it).
//! - The scheduler never touches the network: no replica, slow or not, can stall it. Its only
//!   I/O is the housekeeping poll of a database with nothing to do (`worker::quiet_poll`):
//!   one read of a record header in the local shadow log, instead of a pool thread's step.
//! - Compaction after a snapshot runs here too: one at a time per replica, at most
//!   `COMPACTIONS` at once and `COMPACTIONS_PER_ENDPOINT` per endpoint.
//! - Due entries are served first come first served; an entry at rest costs nothing until its
//!   timer (a heap, checked lazily against the entry's own `timer_at`) or a message.

use super::worker::{self, Entry};
use super::Msg;
use crate::clock::now_ms;
use crate::replication::Replication;
use flume::{Receiver, Sender};
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Pool threads at most. Steps are network-bound (a level-0 batch is two requests, a manifest
/// write two more every 10 to 60 s): at 30 ms per request, 1,000 databases committing about once a
/// second need about 1,000 × 2 × 30 ms = 60 thread-seconds per second on their endpoint. With
/// 64 (48 per endpoint) that was more than one endpoint could have, and the lag of 1,000
/// databases grew to 8 s (BENCHMARKS.md, "Many databases"); 128 (96 per endpoint) leave
/// headroom. Each idle thread costs its stack's touched pages (tens of KB), and a process with
/// few databases starts only the threads it uses.
pub(super) const THREADS: usize = 128;

/// Threads one endpoint may hold at once: a hung endpoint leaves the rest to the others.
const PER_ENDPOINT: usize = THREADS * 3 / 4;

/// Compactions at once (they may hold a replica's worth of pages in memory), and per endpoint
/// (so a hung endpoint leaves room for the others').
const COMPACTIONS: usize = 4;
const COMPACTIONS_PER_ENDPOINT: usize = 2;

/// The scheduler's longest sleep without news.
const IDLE_WAKE_MS: i64 = 1000;

/// A finished job, sent back to the scheduler.
pub(crate) struct Done {
    id: u64,
    endpoint: Arc<str>,
    /// The entry of a step; `None` for a compaction.
    entry: Option<Box<Entry>>,
}

enum Job {
    Step(u64, Arc<str>, Box<Entry>),
    Compact(u64, Arc<str>, Arc<Replication>),
}

struct Slot {
    /// `None` while the entry is on a pool thread.
    entry: Option<Box<Entry>>,
    repl: Arc<Replication>,
    endpoint: Arc<str>,
    /// Messages that came while the entry was out.
    inbox: Vec<Msg>,
    /// New records were announced while the entry was out.
    notified: bool,
    /// The entry is in `ready`.
    queued: bool,
    /// The time of this entry's live timer in `timers` (`i64::MAX`: none); others are stale.
    timer_at: i64,
    compact_wanted: bool,
    compacting: bool,
}

struct Pool {
    slots: HashMap<u64, Slot>,
    /// When entries at rest fall due: `(time, id)`, checked against `Slot::timer_at`.
    timers: BinaryHeap<Reverse<(i64, u64)>>,
    /// Entries due now, waiting for a thread, first come first served.
    ready: VecDeque<u64>,
    /// Replicas whose compaction is wanted.
    compactions: VecDeque<u64>,
    jobs: Sender<Job>,
    jobs_rx: Receiver<Job>,
    back: Sender<Msg>,
    threads: usize,
    busy: usize,
    per_endpoint: HashMap<Arc<str>, usize>,
    /// Compactions running, in all and by endpoint.
    compacting: HashMap<Arc<str>, usize>,
    compacting_all: usize,
}

/// The scheduler's loop; `back` is the sender of `rx`, for the pool threads' answers.
pub(super) fn run(rx: Receiver<Msg>, back: Sender<Msg>) {
    let (jobs, jobs_rx) = flume::unbounded();
    let mut pool = Pool {
        slots: HashMap::new(),
        timers: BinaryHeap::new(),
        ready: VecDeque::new(),
        compactions: VecDeque::new(),
        jobs,
        jobs_rx,
        back,
        threads: 0,
        busy: 0,
        per_endpoint: HashMap::new(),
        compacting: HashMap::new(),
        compacting_all: 0,
    };
    let mut wake = Duration::ZERO;
    loop {
        match rx.recv_timeout(wake) {
            Ok(msg) => {
                pool.on_msg(msg);
                while let Ok(msg) = rx.try_recv() {
                    pool.on_msg(msg);
                }
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => return,
        }
        let next = pool.schedule(now_ms());
        wake = Duration::from_millis((next - now_ms()).clamp(1, IDLE_WAKE_MS) as u64);
    }
}

/// The key that bounds one replica's share of the pool: an S3 endpoint (requests to one
/// server hang together), or the directory of a local replica.
fn endpoint_of(url: &str) -> Arc<str> {
    use crate::store::ReplicaUrl;
    let key = match ReplicaUrl::parse(url) {
        Ok(ReplicaUrl::S3(s3)) => match s3.endpoint {
            Some(ep) => format!("s3 {ep}"),
            None => format!("s3 bucket {}", s3.bucket),
        },
        _ => url.to_string(),
    };
    Arc::from(key)
}

impl Pool {
    fn on_msg(&mut self, msg: Msg) {
        let id = match &msg {
            Msg::Register(repl, _) => repl.id,
            Msg::Notify(id) | Msg::Compact(id) => *id,
            Msg::Sync { id, .. } | Msg::Snapshot { id, .. } | Msg::Takeover { id, .. } => *id,
            Msg::Done(_) => {
                let Msg::Done(done) = msg else { unreachable!() };
                return self.on_done(done);
            }
        };
        if let Msg::Register(repl, db) = &msg {
            if let std::collections::hash_map::Entry::Vacant(v) = self.slots.entry(id) {
                v.insert(Slot {
                    entry: Some(Box::new(Entry::new(repl.clone(), db.clone()))),
                    repl: repl.clone(),
                    endpoint: endpoint_of(&repl.url),
                    inbox: Vec::new(),
                    notified: false,
                    queued: false,
                    timer_at: i64::MAX,
                    compact_wanted: false,
                    compacting: false,
                });
            }
        }
        let Some(slot) = self.slots.get_mut(&id) else {
            return not_replicating(msg);
        };
        match (&msg, slot.entry.as_deref_mut()) {
            (Msg::Compact(_), _) => {
                if !std::mem::replace(&mut slot.compact_wanted, true) {
                    self.compactions.push_back(id);
                }
            }
            (Msg::Notify(_), None) => slot.notified = true,
            (_, None) => slot.inbox.push(msg),
            (_, Some(e)) => {
                worker::handle(e, msg);
                self.touch(id, now_ms());
            }
        }
    }

    fn on_done(&mut self, done: Done) {
        self.busy -= 1;
        release(&mut self.per_endpoint, &done.endpoint);
        if done.entry.is_none() {
            self.compacting_all -= 1;
            release(&mut self.compacting, &done.endpoint);
        }
        let Some(slot) = self.slots.get_mut(&done.id) else {
            return;
        };
        match done.entry {
            None => slot.compacting = false,
            Some(mut e) => {
                for msg in slot.inbox.drain(..) {
                    worker::handle(&mut e, msg);
                }
                if std::mem::take(&mut slot.notified) {
                    worker::notified(&mut e);
                }
                slot.entry = Some(e);
            }
        }
        self.settle(done.id, now_ms());
    }

    /// An entry at rest after a change: forgotten if idle, else queued or timed.
    fn settle(&mut self, id: u64, now: i64) {
        self.remove_if_idle(id);
        self.touch(id, now);
    }

    /// An entry at rest may fall due at another time: queue it, or set its timer.
    fn touch(&mut self, id: u64, now: i64) {
        let Some(slot) = self.slots.get_mut(&id) else {
            return;
        };
        let Some(e) = slot.entry.as_deref() else {
            return;
        };
        if slot.queued {
            return;
        }
        let at = worker::due_at(e);
        if at <= now {
            slot.queued = true;
            self.ready.push_back(id);
        } else if at < slot.timer_at {
            slot.timer_at = at;
            self.timers.push(Reverse((at, id)));
        }
    }

    /// Forgets an idle entry at rest (its uploader lock is released with it).
    fn remove_if_idle(&mut self, id: u64) {
        let Some(slot) = self.slots.get(&id) else {
            return;
        };
        let idle = slot.entry.as_deref().is_some_and(Entry::idle)
            && slot.inbox.is_empty()
            && !slot.queued
            && !slot.compacting
            && !slot.compact_wanted;
        if idle {
            self.slots.remove(&id);
        }
    }

    /// Moves entries whose timers are due to `ready`, hands ready entries and wanted
    /// compactions to free threads (first come first served, within each endpoint's share),
    /// and returns when the next timer falls due.
    fn schedule(&mut self, now: i64) -> i64 {
        while let Some(&Reverse((at, id))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            let Some(slot) = self.slots.get_mut(&id) else {
                continue;
            };
            if slot.timer_at != at {
                continue; // stale
            }
            slot.timer_at = i64::MAX;
            if slot.inbox.is_empty() {
                if let Some(e) = slot.entry.as_deref_mut() {
                    // Nothing to do: no thread for it (see `worker::quiet_poll`).
                    if worker::quiet_poll(e, now) {
                        self.touch(id, now);
                        continue;
                    }
                }
            }
            self.settle(id, now);
        }
        self.dispatch_compactions();
        self.dispatch_ready();
        self.timers
            .peek()
            .map_or(now + IDLE_WAKE_MS, |Reverse((at, _))| *at)
    }

    fn dispatch_ready(&mut self) {
        let mut waiting = VecDeque::new();
        while self.busy < THREADS {
            let Some(id) = self.ready.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            if !self.has_room(&slot.endpoint) {
                waiting.push_back(id); // its endpoint is full: a finished job wakes us
                continue;
            }
            let slot = self.slots.get_mut(&id).expect("looked up above");
            slot.queued = false;
            slot.timer_at = i64::MAX;
            let Some(e) = slot.entry.take() else {
                continue;
            };
            let job = Job::Step(id, slot.endpoint.clone(), e);
            self.dispatch(job);
        }
        waiting.append(&mut self.ready);
        self.ready = waiting;
    }

    fn dispatch_compactions(&mut self) {
        for _ in 0..self.compactions.len() {
            let Some(id) = self.compactions.pop_front() else {
                break;
            };
            let Some(slot) = self.slots.get(&id) else {
                continue;
            };
            let on_endpoint = self.compacting.get(&slot.endpoint).copied().unwrap_or(0);
            if slot.compacting
                || !self.has_room(&slot.endpoint)
                || self.compacting_all >= COMPACTIONS
                || on_endpoint >= COMPACTIONS_PER_ENDPOINT
            {
                self.compactions.push_back(id);
                continue;
            }
            let slot = self.slots.get_mut(&id).expect("looked up above");
            slot.compact_wanted = false;
            slot.compacting = true;
            self.compacting_all += 1;
            *self.compacting.entry(slot.endpoint.clone()).or_insert(0) += 1;
            let job = Job::Compact(id, slot.endpoint.clone(), slot.repl.clone());
            self.dispatch(job);
        }
    }

    fn has_room(&self, endpoint: &Arc<str>) -> bool {
        self.busy < THREADS && self.per_endpoint.get(endpoint).copied().unwrap_or(0) < PER_ENDPOINT
    }

    fn dispatch(&mut self, job: Job) {
        let endpoint = match &job {
            Job::Step(_, ep, _) | Job::Compact(_, ep, _) => ep.clone(),
        };
        if self.busy == self.threads && self.threads < THREADS && self.spawn() {
            self.threads += 1;
        }
        self.busy += 1;
        *self.per_endpoint.entry(endpoint).or_insert(0) += 1;
        let _ = self.jobs.send(job);
    }

    fn spawn(&self) -> bool {
        let jobs = self.jobs_rx.clone();
        let back = self.back.clone();
        std::thread::Builder::new()
            .name("walrust-upload".into())
            .spawn(move || work(jobs, back))
            .map_err(|err| {
                crate::log::warn(&format!(
                    "walrust: cannot start an upload thread ({err}); the running ones go on"
                ))
            })
            .is_ok()
    }
}

/// One fewer job of `endpoint` running.
fn release(counts: &mut HashMap<Arc<str>, usize>, endpoint: &Arc<str>) {
    if let Some(n) = counts.get_mut(endpoint) {
        *n -= 1;
        if *n == 0 {
            counts.remove(endpoint);
        }
    }
}

/// A pool thread: runs jobs and sends each back, whatever happened in it.
fn work(jobs: Receiver<Job>, back: Sender<Msg>) {
    for job in jobs.iter() {
        let done = match job {
            Job::Step(id, endpoint, mut e) => {
                let outcome =
                    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker::tick(&mut e)));
                if outcome.is_err() {
                    worker::fail(
                        &mut e,
                        "walrust: internal error in an upload thread (panic); will retry".into(),
                    );
                }
                Done {
                    id,
                    endpoint,
                    entry: Some(e),
                }
            }
            Job::Compact(id, endpoint, repl) => {
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compact(&repl)));
                Done {
                    id,
                    endpoint,
                    entry: None,
                }
            }
        };
        if back.send(Msg::Done(done)).is_err() {
            return;
        }
    }
}

/// Compaction and retention of one replica after a snapshot.
fn compact(repl: &Replication) {
    let opts = crate::compact::CompactOptions::new(repl.settings().retention)
        .with_tmp_dir(repl.shadow.tmp_dir());
    if let Err(e) = crate::compact::compact(
        repl.store.as_ref(),
        &opts,
        &crate::clock::SystemClock,
        false,
    ) {
        crate::log::warn(&format!(
            "walrust: compaction of {} after a snapshot failed: {e}",
            repl.url
        ));
    }
}

/// A request for a database this process does not replicate (any more).
fn not_replicating(msg: Msg) {
    let reply = match msg {
        Msg::Sync { reply, .. } | Msg::Snapshot { reply, .. } | Msg::Takeover { reply, .. } => {
            reply
        }
        _ => return,
    };
    let _ = reply.send(Err("walrust: this database is not replicating".into()));
}

#[cfg(test)]
mod tests {
    use super::endpoint_of;

    #[test]
    fn replicas_share_an_endpoint_by_s3_server_or_by_directory() {
        let a = endpoint_of("s3://bkt/one?endpoint=http://127.0.0.1:9000&region=us-east-1");
        let b = endpoint_of("s3://bkt/two?endpoint=http://127.0.0.1:9000&region=us-east-1");
        let c = endpoint_of("s3://bkt/one?endpoint=http://127.0.0.1:9001&region=us-east-1");
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(endpoint_of("s3://xxx/p"), endpoint_of("s3://xxx/q"));
        assert_ne!(endpoint_of("s3://xxx/p"), endpoint_of("s3://yyy/p"));
        assert_ne!(endpoint_of("/tmp/r1"), endpoint_of("/tmp/r2"));
    }
}
