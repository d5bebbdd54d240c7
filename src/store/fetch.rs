//! Bounded concurrent downloads, consumed strictly in the order given: how restore, verify and
//! compaction read many files without paying one round trip per file.
//!
//! `THREADS` worker threads read small files (incrementals, compactions) whole into memory,
//! ahead of the one the caller is consuming; the caller gets each file's reader in list order,
//! on its own thread, so whatever it does with them (apply pages in TXID order, check, merge)
//! stays sequential. Files larger than `INLINE_MAX` (snapshots, typically) are not prefetched:
//! the consuming thread streams them itself when their turn comes.
//!
//! Must always hold: memory holds at most `BUDGET` bytes of prefetched files (counted by their
//! listed size from the moment a download starts) and at most `WINDOW` files, besides the one
//! being consumed; a failed download is handed to
//! the caller at that file's turn, as the store reported it (so a file that vanished is still
//! `NotFound`); a worker that panics never leaves the caller waiting; when the caller stops
//! (done, failed, or its function panicked), workers start no new download and the function
//! returns (or the panic goes on) only after every worker has exited.

use std::collections::BTreeMap;
use std::io::{self, Cursor, Read};
use std::sync::{Condvar, Mutex, MutexGuard};

use super::{FileInfo, FileReader, Store, StoreError};

/// Download threads. They mostly wait on the network, so the number in flight is what counts:
/// a chain of 1,000 level-0 files through a 30 ms proxy (about 50 ms a request with the server
/// and proxy on this 2-core machine) restored in 1.5–2 s with 32 and 3.5–4.7 s with 16; more
/// would mostly add connections (the S3 agent keeps 16 idle ones per host, `s3::http`, and
/// opens the others for the restore) while the consuming thread, which decodes and writes every
/// page, becomes the limit. They exist only while one restore, verify or merge runs.
pub const THREADS: usize = 32;
/// How many files past the one being consumed may be downloading or downloaded.
const WINDOW: usize = 4 * THREADS;
/// Files up to this size are prefetched whole; larger ones stream.
const INLINE_MAX: u64 = 4 << 20;
/// The most bytes of prefetched files held at once.
const BUDGET: u64 = 32 << 20;

#[derive(Default)]
struct State {
    /// The next index a worker should look at.
    next: usize,
    /// Files before this index have been consumed.
    consumed: usize,
    /// Bytes of files downloading or downloaded and not yet consumed.
    held: u64,
    ready: BTreeMap<usize, Result<Vec<u8>, StoreError>>,
    /// The caller is done (finished or failed): workers stop.
    stop: bool,
    /// A worker died; the caller must not wait for it.
    worker_died: bool,
}

struct Shared<'a> {
    store: &'a dyn Store,
    files: &'a [FileInfo],
    state: Mutex<State>,
    cv: Condvar,
}

fn prefetched(f: &FileInfo) -> bool {
    f.size <= INLINE_MAX
}

impl Shared<'_> {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'g>(&self, g: MutexGuard<'g, State>) -> MutexGuard<'g, State> {
        self.cv.wait(g).unwrap_or_else(|e| e.into_inner())
    }

    /// The next file this worker should download, or `None` when there is none left.
    fn claim(&self) -> Option<usize> {
        let mut st = self.lock();
        loop {
            while st.next < self.files.len() && !prefetched(&self.files[st.next]) {
                st.next += 1;
            }
            if st.stop || st.next >= self.files.len() {
                return None;
            }
            let size = self.files[st.next].size;
            // Files are claimed in order, so the one the caller waits for is never held up:
            // when nothing is held, the next file is always allowed, whatever its size.
            let fits = st.held == 0 || st.held + size <= BUDGET;
            if st.next < st.consumed + WINDOW && fits {
                st.next += 1;
                st.held += size;
                return Some(st.next - 1);
            }
            st = self.wait(st);
        }
    }

    fn worker(&self) {
        // Tells the caller if this thread unwinds, so it never waits on a dead worker.
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
        while let Some(i) = self.claim() {
            let info = &self.files[i];
            let result = self.store.read(&info.key, None).and_then(|mut r| {
                let mut buf = Vec::with_capacity(info.size as usize);
                r.read_to_end(&mut buf)
                    .map_err(|e| StoreError::io(format!("downloading {}", info.key), e))?;
                Ok(buf)
            });
            self.lock().ready.insert(i, result);
            self.cv.notify_all();
        }
    }

    /// The reader for file `i`, waiting for its prefetch if it has one.
    fn take(&self, i: usize) -> Result<FileReader, StoreError> {
        let info = &self.files[i];
        if !prefetched(info) {
            return self.store.read(&info.key, None);
        }
        let mut st = self.lock();
        loop {
            if let Some(r) = st.ready.remove(&i) {
                return Ok(Box::new(Cursor::new(r?)));
            }
            if st.worker_died {
                return Err(StoreError::Io {
                    what: format!("downloading {}", info.key),
                    source: io::Error::other(
                        "a download thread crashed; see the panic message above",
                    ),
                });
            }
            st = self.wait(st);
        }
    }

    fn consumed(&self, i: usize) {
        let mut st = self.lock();
        st.consumed = i + 1;
        if prefetched(&self.files[i]) {
            st.held -= self.files[i].size;
        }
        self.cv.notify_all();
    }
}

/// Calls `each(i, reader)` for every file in order, on this thread, while up to `THREADS`
/// threads download the next small files. `each` gets the store's error for a file that could
/// not be read, at that file's turn. Stops at the first error `each` returns.
pub fn in_order<E>(
    store: &dyn Store,
    files: &[FileInfo],
    mut each: impl FnMut(usize, Result<FileReader, StoreError>) -> Result<(), E>,
) -> Result<(), E> {
    let shared = Shared {
        store,
        files,
        state: Mutex::new(State::default()),
        cv: Condvar::new(),
    };
    let prefetchable = files.iter().filter(|f| prefetched(f)).count();
    // Stops the workers however the caller leaves, also by a panic in `each`: the scope waits
    // for every worker, and one waiting for room in the window would wait forever.
    struct StopOnExit<'s, 'a>(&'s Shared<'a>);
    impl Drop for StopOnExit<'_, '_> {
        fn drop(&mut self) {
            self.0.lock().stop = true;
            self.0.cv.notify_all();
        }
    }
    std::thread::scope(|s| {
        // Before the workers start: a failed spawn (a process at its thread limit) panics too.
        let _stop = StopOnExit(&shared);
        for _ in 0..THREADS.min(prefetchable) {
            s.spawn(|| shared.worker());
        }
        for i in 0..files.len() {
            let reader = shared.take(i);
            // Released before `each` runs, so the next downloads start meanwhile.
            shared.consumed(i);
            each(i, reader)?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::fs::FsStore;
    use crate::store::{FileKey, WriteMeta};
    use crate::Txid;

    struct Dir(std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn key(i: u64) -> FileKey {
        FileKey::new(0, Txid::new(i + 1).unwrap(), Txid::new(i + 1).unwrap()).unwrap()
    }

    /// A store holding `sizes.len()` level-0 files, file `i` filled with byte `i`, except those
    /// in `missing` (listed, never written).
    fn store_with(name: &str, sizes: &[u64], missing: &[usize]) -> (Dir, FsStore, Vec<FileInfo>) {
        let dir =
            Dir(std::env::temp_dir().join(format!("walrust-fetch-{name}-{}", std::process::id())));
        let _ = std::fs::remove_dir_all(&dir.0);
        std::fs::create_dir_all(&dir.0).unwrap();
        let store = FsStore::new(dir.0.join("replica")).unwrap();
        let src = dir.0.join("src");
        let mut files = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let info = FileInfo {
                key: key(i as u64),
                size,
                created_at_ms: 0,
            };
            if !missing.contains(&i) {
                std::fs::write(&src, vec![i as u8; size as usize]).unwrap();
                let meta = WriteMeta {
                    timestamp_ms: 0,
                    sha256: "0".repeat(16),
                };
                store.write(&info.key, &src, &meta).unwrap();
            }
            files.push(info);
        }
        (dir, store, files)
    }

    #[test]
    fn every_file_arrives_whole_and_in_order_small_or_streamed() {
        let mut sizes: Vec<u64> = (0..300).map(|i| 1 + (i * 37) % 5000).collect();
        sizes[150] = INLINE_MAX + 1; // streamed by the consumer, not prefetched
        let (_dir, store, files) = store_with("order", &sizes, &[]);
        let mut seen = Vec::new();
        in_order(&store, &files, |i, r| {
            let mut buf = Vec::new();
            r?.read_to_end(&mut buf).unwrap();
            assert_eq!(buf.len() as u64, sizes[i], "file {i}");
            assert!(
                buf.iter().all(|&b| b == i as u8),
                "file {i} has another's bytes"
            );
            seen.push(i);
            Ok::<(), StoreError>(())
        })
        .unwrap();
        assert_eq!(seen, (0..300).collect::<Vec<_>>());
    }

    /// A panic in the caller's function comes back to the caller; the workers, some waiting
    /// for room in the window, stop instead of keeping it waiting for them.
    #[test]
    fn a_panic_in_the_callers_function_stops_the_workers() {
        let sizes = vec![100; 2 * WINDOW];
        let (_dir, store, files) = store_with("panic", &sizes, &[]);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                in_order(&store, &files, |i, _| {
                    assert!(i < 3, "a bug in the caller");
                    Ok::<(), StoreError>(())
                })
            }));
            let _ = tx.send(r.is_err());
        });
        let answered = rx.recv_timeout(std::time::Duration::from_secs(30));
        assert_eq!(answered, Ok(true), "in_order hung after a panic");
    }

    #[test]
    fn a_missing_file_is_not_found_at_its_turn_and_stops_the_rest() {
        let sizes = vec![100; 200];
        let (_dir, store, files) = store_with("missing", &sizes, &[10]);
        let mut seen = Vec::new();
        let err = in_order(&store, &files, |i, r| {
            seen.push(i);
            r.map(|_| ())
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::NotFound { .. }), "{err}");
        assert_eq!(seen, (0..=10).collect::<Vec<_>>());
    }
}
