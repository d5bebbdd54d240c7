//! Bounded concurrent downloads for restore, consumed strictly in plan order.
//!
//! A few worker threads read small files (incrementals, compactions) whole into memory, at most
//! `WINDOW` files ahead of the one being applied, so a chain of many small objects is not paid
//! for in round trips one at a time. Files larger than `INLINE_MAX` (snapshots, typically) are
//! not prefetched: the applying thread streams them itself. Memory is therefore bounded by
//! `WINDOW * INLINE_MAX`, whatever the database's size.

use std::collections::BTreeMap;
use std::io::{Cursor, Read};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::RestoreError;
use crate::store::{FileInfo, FileReader, Store, StoreError};

/// Download threads.
const THREADS: usize = 3;
/// How many files past the one being applied may be held in memory.
const WINDOW: usize = 4;
/// Files up to this size are prefetched whole; larger ones stream.
const INLINE_MAX: u64 = 4 << 20;

#[derive(Default)]
struct State {
    /// The next index a worker should look at.
    next: usize,
    /// Files before this index have been applied.
    applied: usize,
    ready: BTreeMap<usize, Result<Vec<u8>, StoreError>>,
    /// The applier is done (finished or failed): workers stop.
    stop: bool,
    /// A worker died; the applier must not wait for it.
    worker_died: bool,
}

struct Shared<'a> {
    store: &'a dyn Store,
    files: &'a [FileInfo],
    state: Mutex<State>,
    cv: Condvar,
}

impl Shared<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn worker(&self) {
        // Tells the applier if this thread unwinds, so it never waits on a dead worker.
        struct OnPanic<'s, 'a>(&'s Shared<'a>);
        impl Drop for OnPanic<'_, '_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    self.0.lock().worker_died = true;
                    self.0.cv.notify_all();
                }
            }
        }
        let _guard = OnPanic(self);
        loop {
            let i = {
                let mut st = self.lock();
                loop {
                    while st.next < self.files.len() && self.files[st.next].size > INLINE_MAX {
                        st.next += 1;
                    }
                    if st.stop || st.next >= self.files.len() {
                        return;
                    }
                    if st.next < st.applied + WINDOW {
                        break;
                    }
                    st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                st.next += 1;
                st.next - 1
            };
            let info = &self.files[i];
            let result = self.store.read(&info.key, None).and_then(|mut r| {
                let mut buf = Vec::with_capacity(info.size as usize);
                r.read_to_end(&mut buf).map_err(|e| StoreError::Io {
                    what: format!("downloading {}", info.key),
                    source: e,
                })?;
                Ok(buf)
            });
            self.lock().ready.insert(i, result);
            self.cv.notify_all();
        }
    }

    /// The reader for file `i`, waiting for its prefetch if it has one.
    fn take(&self, i: usize) -> Result<FileReader, RestoreError> {
        let info = &self.files[i];
        if info.size > INLINE_MAX {
            return Ok(self.store.read(&info.key, None)?);
        }
        let mut st = self.lock();
        loop {
            if let Some(r) = st.ready.remove(&i) {
                return Ok(Box::new(Cursor::new(r?)));
            }
            if st.worker_died {
                return Err(RestoreError::new(
                    super::ErrorKind::Io,
                    "a download thread crashed; see the panic message above",
                ));
            }
            st = self.cv.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// Calls `apply(i, reader)` for each file in order while up to `THREADS` threads fetch the
/// next small files. Stops at the first error.
pub(super) fn in_order(
    store: &dyn Store,
    files: &[FileInfo],
    mut apply: impl FnMut(usize, FileReader) -> Result<(), RestoreError>,
) -> Result<(), RestoreError> {
    let shared = Shared {
        store,
        files,
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
    };
    let prefetchable = files.iter().filter(|f| f.size <= INLINE_MAX).count();
    std::thread::scope(|s| {
        for _ in 0..THREADS.min(prefetchable) {
            s.spawn(|| shared.worker());
        }
        let result = (|| {
            for i in 0..files.len() {
                let reader = shared.take(i)?;
                apply(i, reader)?;
                shared.lock().applied = i + 1;
                shared.cv.notify_all();
            }
            Ok(())
        })();
        shared.lock().stop = true;
        shared.cv.notify_all();
        result
    })
}
