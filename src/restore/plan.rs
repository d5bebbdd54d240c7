//! Which files a restore applies, and in what order.
//!
//! The newest snapshot (level 9) at or before the target, then a chain of files from levels
//! 0–8, each starting at or before the TXID after the chain's end and reaching past it. Among
//! the candidates the one that reaches furthest wins (so a compaction covering many incrementals
//! is one download instead of many), then the smaller one, then the higher level. The chain
//! stops at the newest restore point at or before the target; a file that would apply beyond a
//! hole in the TXIDs means a file is missing, which is an integrity error, not a shorter restore.
//!
//! Applying a file whose range starts before the chain's end is correct: it holds the newest
//! version of every page changed in its range, and a page it lacks did not change in its range.
//!
//! Before choosing, the listing is checked against `manifest.json`: every entry must be listed
//! with its size. The manifest is read first, then the listing: a file is durable before an
//! entry names it, and an entry is removed before its file is deleted, so an entry without its
//! file means a compaction ran between the two reads, or damage. That, and a hole in the chain
//! (a listing taken while files are created may hold a file and miss the one before it), are
//! doubtful: `plan` looks again and reports them only when they persist (`settle`).

use super::{ErrorKind, RestoreError, Target};
use crate::clock::format_rfc3339_ms;
use crate::manifest::{self, Manifest};
use crate::settle::{list_stable, until_settled};
use crate::store::{FileInfo, Store, StoreError, Times, SNAPSHOT_LEVEL};
use crate::Txid;

/// A checked restore plan.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The snapshot, then the chain, in apply order.
    pub files: Vec<FileInfo>,
    /// The restore point: the last file's max TXID.
    pub txid: Txid,
    /// The restore point's time: the last file's created time.
    pub timestamp_ms: i64,
    /// The manifest the listing was checked against, if the replica has one.
    pub manifest: Option<Manifest>,
    /// The replica URL, for messages.
    pub url: String,
}

/// Lists the replica, checks the listing against the manifest, and chooses the files, looking
/// again while what it finds may come from writers changing the replica.
pub fn plan(store: &dyn Store, target: Target) -> Result<Plan, RestoreError> {
    until_settled(|| plan_once(store, target))
}

/// One look: read the manifest, list, check, choose.
pub(super) fn plan_once(store: &dyn Store, target: Target) -> Result<Plan, RestoreError> {
    let times = match target {
        Target::Time(_) => Times::Exact,
        _ => Times::Listed,
    };
    let url = store.describe();
    let manifest = manifest::load(store)
        .map_err(manifest_error)?
        .map(|(m, _)| m);
    let files = list_stable(store, None, times)?;
    if let Some(problem) = manifest.as_ref().and_then(|m| first_mismatch(m, &files)) {
        return Err(RestoreError::doubtful_integrity(format!(
            "{problem} in {url}: a file was lost or replaced outside walrust; run `walrust \
             verify`, and restore to a TXID before the damage"
        )));
    }
    let chain = choose(&files, target, &url)?;
    let last = *chain.last().expect("choose returns at least a snapshot");
    Ok(Plan {
        files: chain,
        txid: last.key.max_txid,
        timestamp_ms: last.created_at_ms,
        manifest,
        url,
    })
}

fn manifest_error(e: StoreError) -> RestoreError {
    match e {
        StoreError::Invalid { .. } => RestoreError::integrity(e.to_string()),
        e => e.into(),
    }
}

/// The first manifest entry the listing contradicts, described.
fn first_mismatch(m: &Manifest, files: &[FileInfo]) -> Option<String> {
    for e in &m.files {
        let key = e.file_key().expect("checked at parse");
        match files.binary_search_by_key(&key, |f| f.key) {
            Err(_) => return Some(format!("manifest.json names {} but it is missing", e.key)),
            Ok(i) if files[i].size != e.size => {
                return Some(format!(
                    "{} is {} bytes but manifest.json says {}",
                    e.key, files[i].size, e.size
                ))
            }
            Ok(_) => {}
        }
    }
    None
}

/// Chooses the snapshot and chain for `target` from a listing sorted by key.
pub fn choose(
    files: &[FileInfo],
    target: Target,
    url: &str,
) -> Result<Vec<FileInfo>, RestoreError> {
    let eligible = |f: &FileInfo| match target {
        Target::Latest => true,
        Target::Txid(t) => f.key.max_txid <= t,
        Target::Time(ms) => f.created_at_ms <= ms,
    };
    let nothing = |m: String| RestoreError::new(ErrorKind::NothingToRestore, m);
    if files.is_empty() {
        return Err(nothing(format!(
            "{url} holds no LTX files; check the URL, or that replication has run"
        )));
    }
    let snapshots = files.iter().filter(|f| f.key.level == SNAPSHOT_LEVEL);
    let Some(oldest) = snapshots
        .clone()
        .min_by_key(|f| (f.key.max_txid, f.created_at_ms))
    else {
        return Err(nothing(format!(
            "{url} holds no snapshot (level {SNAPSHOT_LEVEL}); take one with walrust_snapshot()"
        )));
    };
    let Some(snapshot) = snapshots
        .filter(|f| eligible(f))
        .max_by_key(|f| (f.key.max_txid, f.created_at_ms))
    else {
        return Err(nothing(format!(
            "{url} has no snapshot at or before {target}; the oldest ends at TXID {} ({})",
            oldest.key.max_txid,
            format_rfc3339_ms(oldest.created_at_ms)
        )));
    };

    let mut chain = vec![*snapshot];
    let mut end = snapshot.key.max_txid;
    let incremental = |f: &&FileInfo| f.key.level < SNAPSHOT_LEVEL && eligible(f);
    loop {
        let next_txid = end.get().saturating_add(1);
        let best = files
            .iter()
            .filter(incremental)
            .filter(|f| f.key.min_txid.get() <= next_txid && f.key.max_txid > end)
            .max_by(|a, b| {
                a.key
                    .max_txid
                    .cmp(&b.key.max_txid)
                    .then(b.size.cmp(&a.size))
                    .then(a.key.level.cmp(&b.key.level))
            });
        match best {
            Some(f) => {
                chain.push(*f);
                end = f.key.max_txid;
            }
            None => break,
        }
    }

    let next_txid = end.get().saturating_add(1);
    if let Some(beyond) = files
        .iter()
        .filter(incremental)
        .filter(|f| f.key.min_txid.get() > next_txid)
        .min_by_key(|f| f.key.min_txid)
    {
        return Err(RestoreError::doubtful_integrity(format!(
            "{url} has a gap: its files reach TXID {end}, but the next one ({}) starts at TXID \
             {}; a file is missing. Restore to TXID {end} or earlier, or take a new snapshot",
            beyond.key, beyond.key.min_txid
        )));
    }
    Ok(chain)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::FileKey;

    fn f(level: u32, min: u64, max: u64) -> FileInfo {
        FileInfo {
            key: FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap(),
            size: 100 * (max - min + 1),
            created_at_ms: 1000 * max as i64,
        }
    }

    fn keys(chain: &[FileInfo]) -> Vec<(u32, u64, u64)> {
        chain
            .iter()
            .map(|f| (f.key.level, f.key.min_txid.get(), f.key.max_txid.get()))
            .collect()
    }

    fn sorted(mut v: Vec<FileInfo>) -> Vec<FileInfo> {
        v.sort_by_key(|f| f.key);
        v
    }

    fn txid(n: u64) -> Target {
        Target::Txid(Txid::new(n).unwrap())
    }

    #[test]
    fn prefers_compactions_and_stops_at_restore_points() {
        let files = sorted(vec![
            f(9, 1, 3),
            f(0, 4, 4),
            f(0, 5, 6),
            f(0, 7, 9),
            f(0, 10, 10),
            f(1, 4, 9),
        ]);
        let c = choose(&files, Target::Latest, "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 3), (1, 4, 9), (0, 10, 10)]);
        let c = choose(&files, txid(8), "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 3), (0, 4, 4), (0, 5, 6)]);
        let c = choose(&files, txid(9), "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 3), (1, 4, 9)]);
        let c = choose(&files, Target::Time(6_500), "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 3), (0, 4, 4), (0, 5, 6)]);
        let c = choose(&files, txid(3), "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 3)]);
    }

    #[test]
    fn uses_the_newest_eligible_snapshot_and_overlapping_compactions() {
        let files = sorted(vec![
            f(9, 1, 3),
            f(9, 1, 8),
            f(2, 1, 12),
            f(0, 9, 12),
            f(0, 13, 13),
        ]);
        let c = choose(&files, Target::Latest, "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 8), (0, 9, 12), (0, 13, 13)]);
        let c = choose(&files, txid(7), "u").unwrap();
        assert_eq!(keys(&c), [(9, 1, 3)]);
    }

    #[test]
    fn a_gap_is_an_integrity_error_and_nothing_is_nothing() {
        let files = sorted(vec![f(9, 1, 3), f(0, 4, 4), f(0, 6, 6)]);
        let e = choose(&files, Target::Latest, "file:///r").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Integrity);
        assert!(e.to_string().contains("reach TXID 0000000000000004"), "{e}");
        // Up to the hole, restore works.
        assert_eq!(keys(&choose(&files, txid(5), "u").unwrap()).len(), 2);

        let e = choose(&[], Target::Latest, "file:///r").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NothingToRestore);
        let e = choose(&[f(0, 1, 1)], Target::Latest, "u").unwrap_err();
        assert!(e.to_string().contains("no snapshot"), "{e}");
        let e = choose(&[f(9, 1, 5)], txid(4), "u").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NothingToRestore);
        assert!(
            e.to_string()
                .contains("oldest ends at TXID 0000000000000005"),
            "{e}"
        );
    }
}
