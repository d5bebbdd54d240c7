//! When an uploader writes its backlog of level-0 entries into `manifest.json`: what keeps the
//! manifest object's rewrites a small share of the LTX bytes (issue 15, item 4).
//!
//! Every write rewrites the whole manifest object (5 to 10 KB: the entries not yet sealed into
//! parts and the references to parts). Written every 10 s beside one-row batches of about
//! 4.3 KB a second, that alone was 25% of the LTX bytes, and every 60 s still 3 to 4%. So the
//! backlog is written once the LTX bytes it names are at least `LTX_PER_HEAD_BYTE` times the
//! size of the last manifest object written (its upkeep is then at most 2% of them), but no
//! sooner than `MIN_MS` and no later than `MAX_MS` after the last write; at once when someone
//! waits in `walrust_sync()` or the application closed the database (the uploader's `force`).
//! Measured by `cargo run --release --example manifest_upkeep 30` (BENCHMARKS.md).
//!
//! What must hold: nothing depends on how late an entry is written. The store's listing, not
//! the manifest, says which files exist; a file not named yet is restored and checked against
//! its LTX checksum, only its SHA-256 is not; compaction leaves it alone (docs/DESIGN.md,
//! decision 11); and an uploader that dies with a backlog resumes after the files it wrote
//! (`history::decide`).

use super::Entry;

/// The soonest the backlog is written again after a write.
pub const MIN_MS: i64 = 10_000;
/// The latest: an entry waits at most this long while its uploader runs (two minutes: at one
/// one-row batch a second, the object's rewrites are then about 2% of the LTX bytes).
pub const MAX_MS: i64 = 120_000;
/// The backlog is due once it names this many LTX bytes per byte of the last manifest object
/// (so that rewriting the object costs at most 2% of them).
pub const LTX_PER_HEAD_BYTE: u64 = 50;

/// The size assumed for a manifest object this uploader has not written yet (a replica with a
/// few parts). Assuming nothing made every database's first batch after a start rewrite the
/// manifest: with 1,000 databases starting together, twice the requests in the first
/// seconds of their writes, and 3 s of lag (BENCHMARKS.md, "Many databases").
pub const ASSUMED_HEAD_BYTES: u64 = 8 << 10;

/// Whether a backlog is due `age_ms` after the last write of a manifest object of
/// `head_bytes` (0: none written by this uploader yet).
pub fn backlog_due(backlog: &[Entry], age_ms: i64, head_bytes: u64) -> bool {
    if backlog.is_empty() || age_ms < MIN_MS {
        return false;
    }
    let head_bytes = if head_bytes == 0 {
        ASSUMED_HEAD_BYTES
    } else {
        head_bytes
    };
    let ltx: u64 = backlog.iter().map(|e| e.size).sum();
    age_ms >= MAX_MS || ltx >= head_bytes.saturating_mul(LTX_PER_HEAD_BYTE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FileInfo, FileKey, Layout};
    use crate::Txid;

    fn backlog(n: u64, size: u64) -> Vec<Entry> {
        (1..=n)
            .map(|t| {
                let key = FileKey::new(0, Txid::new(t).unwrap(), Txid::new(t).unwrap()).unwrap();
                let info = FileInfo {
                    key,
                    size,
                    created_at_ms: 0,
                };
                Entry::new(Layout::Fs, &info, "0123456789abcdef".into())
            })
            .collect()
    }

    #[test]
    fn small_batches_wait_up_to_two_minutes_and_large_ones_ten_seconds() {
        let head = 10_000;
        // One-row batches, one a second: 4.3 KB each, below 50 x 10 KB for two minutes.
        assert!(!backlog_due(&backlog(10, 4_300), 10_000, head));
        assert!(!backlog_due(&backlog(60, 4_300), 60_000, head));
        assert!(backlog_due(&backlog(120, 4_300), 120_000, head));
        // 400 KB named: due at the first chance.
        assert!(!backlog_due(&backlog(10, 50_000), 9_999, head));
        assert!(backlog_due(&backlog(10, 50_000), 10_000, head));
        // Nothing to write, or the first write of this uploader.
        assert!(!backlog_due(&[], 3_600_000, head));
        // The first write of this uploader: as for an object of 8 KB.
        assert!(!backlog_due(&backlog(10, 4_300), 10_000, 0));
        assert!(backlog_due(&backlog(10, 50_000), 10_000, 0));
        assert!(backlog_due(&backlog(1, 1), 120_000, 0));
    }
}
