//! Reading a replica that is being written: look again before calling anything damage.
//!
//! A reader (restore, verify, list, compaction) lists the replica and reads `manifest.json`,
//! then reads files. Writers change the replica meanwhile, and no store lists atomically: a
//! local directory is read entry by entry (ext4 returns entries in hash order, so a listing
//! taken while files are created can hold a file and miss the one created just before it), an
//! S3 listing comes in pages, and a compaction may delete a listed file before it is read. So
//! a hole in the chain, a manifest entry without its file, or a file gone when read may be the
//! replica moving, not damage. An S3 server may also answer 5xx for a moment (s3s-fs answers
//! 500 to a listing while files are deleted under it; S3 asks clients to retry 5xx).
//!
//! First, readers list with `list_stable`: two listings, the second kept up to the newest TXID
//! of the first, which removes the holes of files created while a listing ran (under a writer
//! at `walrust_sync_interval=0` on S3 nearly every single listing had one). Then the rule:
//! whatever problem is left is *doubtful*. The reader looks again from scratch (a new
//! manifest, a new listing, a new plan) after a short pause, and reports the problem only when
//! the same one comes back `CONFIRM` times in a row: a file that was being created when the
//! first listing ran is complete before the next listing starts, and a file a compaction
//! deleted has its replacement listed first (levels are listed in ascending order, and a
//! compaction writes the higher level before it deletes the lower). A problem that keeps
//! changing for `ATTEMPTS` looks is reported as a storage error ("retry when quieter"), never
//! as an integrity error. An unavailable store, or a file not found, is looked at again up to
//! `ATTEMPTS` times (about 5 s in all), then reported as it is. Problems that a new look
//! cannot change (a checksum mismatch, a damaged manifest) are reported at once.

use std::fmt::Display;
use std::time::Duration;

use crate::store::{FileInfo, Store, StoreError, Times};

/// How many times a reader looks at the replica before giving up on a problem that keeps
/// changing.
pub const ATTEMPTS: usize = 10;
/// How many looks in a row must find the same problem before it is reported as damage.
pub const CONFIRM: usize = 3;
/// The pause before the second look; it doubles for each look after, up to `MAX_PAUSE_MS`.
const FIRST_PAUSE_MS: u64 = if cfg!(test) { 1 } else { 50 };
const MAX_PAUSE_MS: u64 = if cfg!(test) { 2 } else { 1000 };

/// An error that may come from writers changing the replica while it was read.
pub trait Doubt: Display + Sized {
    /// Whether another look at the replica may not find it again.
    fn doubtful(&self) -> bool;
    /// A doubtful store failure (unavailable, not found): looked at again however often it
    /// repeats, and after the last look reported as it is.
    fn transient(&self) -> bool {
        false
    }
    /// The error to report when `ATTEMPTS` looks each found a different problem; `self` is the
    /// last one.
    fn unsettled(self, attempts: usize) -> Self;
}

/// Runs `look` until it succeeds, fails for sure, or finds the same doubtful problem `CONFIRM`
/// times in a row (then that problem is the result). Each call must read the replica afresh.
pub fn until_settled<T, E: Doubt>(mut look: impl FnMut() -> Result<T, E>) -> Result<T, E> {
    let mut last: Option<String> = None;
    let mut streak = 0;
    let mut pause = FIRST_PAUSE_MS;
    for attempt in 1..=ATTEMPTS {
        let e = match look() {
            Ok(v) => return Ok(v),
            Err(e) if !e.doubtful() => return Err(e),
            Err(e) => e,
        };
        let text = e.to_string();
        streak = if last.as_deref() == Some(text.as_str()) && !e.transient() {
            streak + 1
        } else {
            1
        };
        if streak >= CONFIRM || (attempt == ATTEMPTS && e.transient()) {
            return Err(e);
        }
        if attempt == ATTEMPTS {
            return Err(e.unsettled(ATTEMPTS));
        }
        crate::log::trace(|| format!("looking at the replica again: {text}"));
        last = Some(text);
        std::thread::sleep(Duration::from_millis(pause));
        pause = (pause * 2).min(MAX_PAUSE_MS);
    }
    unreachable!("the loop returns on its last attempt")
}

/// A listing with no hole made by files created while it ran: the store is listed twice, and
/// the second listing is kept up to the newest TXID of the first. Every file the first one
/// holds, and every file an uploader created before it (uploaders create the files of a
/// history in TXID order), existed when the second began, so the second holds them (or, for
/// one a compaction removed, the file that replaced it, which is listed first). Files past
/// that TXID were being created during the second listing and are left for the next look.
pub fn list_stable(
    store: &dyn Store,
    level: Option<u32>,
    times: Times,
) -> Result<Vec<FileInfo>, StoreError> {
    // Only its TXIDs count: the cheap times will do (no HEAD per file on S3).
    let first = store.list(level, Times::Listed)?;
    let Some(newest) = first.iter().map(|f| f.key.max_txid).max() else {
        return Ok(first);
    };
    let mut second = store.list(level, times)?;
    second.retain(|f| f.key.max_txid <= newest);
    Ok(second)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt;

    #[derive(Debug, PartialEq)]
    enum E {
        Sure(&'static str),
        Maybe(u32),
        Unsettled(u32, usize),
        Flaky,
    }

    impl fmt::Display for E {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{self:?}")
        }
    }

    impl Doubt for E {
        fn doubtful(&self) -> bool {
            matches!(self, E::Maybe(_) | E::Flaky)
        }
        fn transient(&self) -> bool {
            matches!(self, E::Flaky)
        }
        fn unsettled(self, attempts: usize) -> E {
            match self {
                E::Maybe(n) => E::Unsettled(n, attempts),
                e => e,
            }
        }
    }

    #[test]
    fn a_passing_problem_is_looked_past() {
        let mut n = 0;
        let r = until_settled(|| {
            n += 1;
            if n < 3 {
                Err(E::Maybe(n))
            } else {
                Ok(n)
            }
        });
        assert_eq!(r, Ok(3));
    }

    #[test]
    fn a_persistent_problem_is_confirmed_and_a_sure_one_reported_at_once() {
        let mut n = 0;
        let r: Result<(), E> = until_settled(|| {
            n += 1;
            Err(E::Maybe(7))
        });
        assert_eq!((r, n), (Err(E::Maybe(7)), CONFIRM));
        let mut n = 0;
        let r: Result<(), E> = until_settled(|| {
            n += 1;
            Err(E::Sure("x"))
        });
        assert_eq!((r, n), (Err(E::Sure("x")), 1));
    }

    #[test]
    fn a_problem_that_keeps_changing_is_unsettled() {
        let mut n = 0;
        let r: Result<(), E> = until_settled(|| {
            n += 1;
            Err(E::Maybe(n))
        });
        assert_eq!(r, Err(E::Unsettled(ATTEMPTS as u32, ATTEMPTS)));
    }

    #[test]
    fn a_flaky_store_is_tried_every_time_then_reported_as_it_is() {
        let mut n = 0;
        let r: Result<(), E> = until_settled(|| {
            n += 1;
            Err(E::Flaky)
        });
        assert_eq!((r, n), (Err(E::Flaky), ATTEMPTS));
    }
}
