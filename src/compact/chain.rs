//! How far a chain of files reaches, computed the way `restore::choose` builds a chain but in
//! linear time, for retention's decisions and checks and for `verify`'s per-snapshot chains.

use crate::store::{FileInfo, SNAPSHOT_LEVEL};
use crate::Txid;

/// How far a chain gets: see `reach`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reach<'a> {
    /// The last TXID the chain reaches.
    pub end: Txid,
    /// Files of levels 0–8 it applies.
    pub files: usize,
    /// The first file past a hole, if the chain stops short of one.
    pub beyond: Option<&'a FileInfo>,
}

/// How far the files of levels 0–8 in `lower` (sorted by min TXID, then max) carry a chain
/// that has reached `from`, using only the `eligible` ones (those a restore target allows).
/// Greedy as `restore::choose` is (each step takes the file that starts at or before the next
/// TXID and reaches furthest), so it reaches the same end, in time linear in the number of files.
pub(crate) fn reach<'a>(
    lower: &[&'a FileInfo],
    from: Txid,
    eligible: impl Fn(&FileInfo) -> bool,
) -> Reach<'a> {
    let mut r = Reach {
        end: from,
        files: 0,
        beyond: None,
    };
    let mut i = 0;
    let mut best: Option<Txid> = None;
    loop {
        while i < lower.len() && lower[i].key.min_txid.get() <= r.end.get() + 1 {
            if eligible(lower[i]) {
                best = best.max(Some(lower[i].key.max_txid));
            }
            i += 1;
        }
        match best {
            Some(b) if b > r.end => {
                r.end = b;
                r.files += 1;
            }
            _ => break,
        }
    }
    r.beyond = lower[i..].iter().copied().find(|f| eligible(f));
    r
}

/// The files of levels 0–8, sorted for `reach`.
pub(crate) fn lower_levels(files: &[FileInfo]) -> Vec<&FileInfo> {
    let mut lower: Vec<&FileInfo> = files
        .iter()
        .filter(|f| f.key.level < SNAPSHOT_LEVEL)
        .collect();
    lower.sort_by_key(|f| (f.key.min_txid, f.key.max_txid));
    lower
}
