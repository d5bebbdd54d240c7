//! `walrust verify` / `walrust_verify()`: reads every file of a replica and checks it, and checks
//! that the files chain together.
//!
//! Per file: the LTX file checksum (which needs every page decompressed), the page rules and the
//! page index (all checked by `ltx::verify`, streaming, in constant memory), that the header's
//! TXIDs match the name, that the bytes read match the listed size, and the SHA-256 in
//! `manifest.json` when it indexes the file. Files download a few at a time ahead of the one
//! being checked (`store::fetch`); the checks run one file at a time, in listing order. Per replica: every manifest entry has its file with
//! its size; the chain from each snapshot towards the newest restore point (a hole is reported:
//! retention removes what older snapshots would need to reach it, by design); the newest restore
//! point's chain, which must have no hole.
//!
//! `VerifyReport::ok` is false on any damaged file, manifest mismatch or hole in the newest
//! chain; callers turn that into an error starting `walrust: integrity error`. A file that a
//! concurrent compaction deleted while verify ran is skipped, not reported. A manifest entry
//! without its file, a missing snapshot or a hole in the newest chain may be writers changing
//! the replica under the listing: verify looks again (a new manifest and listing) and reports
//! them only when they persist (`settle`); the files it reads are those of its first look.

use serde::Serialize;

use super::{listing, load_manifest, lower_levels, reach, CompactError, ErrorKind};
use crate::ltx;
use crate::manifest::{HashingReader, Manifest};
use crate::settle::{until_settled, Doubt};
use crate::store::{fetch, FileInfo, FileReader, Layout, Store, StoreError, SNAPSHOT_LEVEL};
use crate::Txid;

#[derive(Clone, Debug, Default, Serialize)]
pub struct VerifyReport {
    pub replica: String,
    pub ok: bool,
    pub files_checked: usize,
    pub bytes: u64,
    /// The newest TXID any file reaches.
    pub latest_txid: Option<String>,
    /// From each snapshot, newest first: how far its chain of files reaches.
    pub chains: Vec<Chain>,
    pub manifest: ManifestCheck,
    /// Files whose bytes fail a check.
    pub damaged: Vec<Damaged>,
    /// Every reason `ok` is false, one line each.
    pub problems: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Chain {
    pub snapshot: String,
    pub from_txid: String,
    pub reaches_txid: String,
    /// Files of levels 0–8 the chain applies.
    pub files: usize,
    pub reaches_latest: bool,
    /// Where the chain stops short, if files exist beyond it.
    pub gap: Option<Gap>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Gap {
    pub after_txid: String,
    pub next_file: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ManifestCheck {
    pub present: bool,
    pub entries: usize,
    /// Entries whose file is not in the listing.
    pub missing: Vec<String>,
    pub size_mismatch: Vec<String>,
    pub sha_mismatch: Vec<String>,
    /// Files the manifest does not name (written by Litestream, or by an upload that stopped
    /// before indexing them): not a problem.
    pub unindexed: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Damaged {
    pub key: String,
    pub error: String,
}

impl VerifyReport {
    /// `Ok(self)` if nothing is wrong, else the integrity error that sums it up.
    pub fn into_result(self) -> Result<VerifyReport, CompactError> {
        if self.ok {
            return Ok(self);
        }
        let n = self.problems.len();
        let mut msg = self.problems[..n.min(3)].join("; ");
        if n > 3 {
            msg.push_str(&format!("; and {} more", n - 3));
        }
        Err(CompactError::integrity(format!(
            "{msg} (in {}); restore to a TXID before the damage, or take a new snapshot",
            self.replica
        )))
    }
}

/// Checks every file and the chains (see the module doc). Errors only when the store fails (a
/// failure that may pass, a file gone or a store unavailable, starts it again: `settle`), or
/// when the replica kept changing under every look.
pub fn verify(store: &dyn Store) -> Result<VerifyReport, CompactError> {
    until_settled(|| verify_once(store))
}

fn verify_once(store: &dyn Store) -> Result<VerifyReport, CompactError> {
    let url = store.describe();
    let layout = store.layout();
    let manifest = load_manifest(store)?;
    let mut files = listing(store, manifest.as_ref())?;
    let mut r = VerifyReport {
        replica: url.clone(),
        ..VerifyReport::default()
    };

    let mut vanished = Vec::new();
    // Downloads run a few files ahead (`store::fetch`); the checks run here, in listing order.
    fetch::in_order(store, &files, |i, reader| {
        let f = &files[i];
        let name = layout.file_key(&f.key);
        let expected_sha = manifest
            .as_ref()
            .and_then(|m| m.get(&f.key))
            .map(|e| &e.sha256);
        match check_file(store, f, reader, expected_sha.map(|s| s.as_str()))? {
            Check::Ok(bytes) => r.bytes += bytes,
            Check::Vanished => {
                vanished.push(f.key);
                return Ok(());
            }
            Check::ShaMismatch(why) => {
                r.problems.push(format!("{name}: {why}"));
                r.manifest.sha_mismatch.push(name.clone());
            }
            Check::Damaged(why) => {
                r.problems.push(format!("{name}: {why}"));
                r.damaged.push(Damaged {
                    key: name.clone(),
                    error: why,
                });
            }
        }
        r.files_checked += 1;
        Ok::<(), CompactError>(())
    })?;
    if r.files_checked == 0 && !vanished.is_empty() {
        // Every file listed was gone when read (a compaction replaced them all meanwhile):
        // nothing was verified, so look at the replica again rather than report it empty.
        return Err(CompactError::from(StoreError::NotFound {
            what: format!("the {} files listed in {url}", vanished.len()),
        }));
    }
    files.retain(|f| !vanished.contains(&f.key));

    // How the files fit together, from this look; where it finds a problem, from new looks
    // until the problem persists (writers may have changed the replica under the listing).
    let mut first = Some((manifest, files));
    let shape = until_settled(|| {
        let (m, files) = match first.take() {
            Some(look) => look,
            None => {
                let m = load_manifest(store).map_err(Look::Store)?;
                let files = listing(store, m.as_ref()).map_err(Look::Store)?;
                (m, files)
            }
        };
        let shape = shape_of(m.as_ref(), &files, layout);
        match shape.problems.is_empty() {
            true => Ok(shape),
            false => Err(Look::Problems(Box::new(shape))),
        }
    });
    let shape = match shape {
        Ok(s) => s,
        Err(Look::Problems(s)) => *s,
        Err(Look::Store(e)) => return Err(e),
    };
    r.manifest.present = shape.manifest.present;
    r.manifest.entries = shape.manifest.entries;
    r.manifest.missing = shape.manifest.missing;
    r.manifest.size_mismatch = shape.manifest.size_mismatch;
    r.manifest.unindexed = shape.manifest.unindexed;
    r.latest_txid = shape.latest_txid;
    r.chains = shape.chains;
    r.problems.extend(shape.problems);
    r.ok = r.problems.is_empty();
    Ok(r)
}

/// One look at how the files fit together: the parts of a report that do not read files.
#[derive(Default)]
struct Shape {
    manifest: ManifestCheck,
    latest_txid: Option<String>,
    chains: Vec<Chain>,
    problems: Vec<String>,
}

/// A look that found problems (maybe writers', see `settle`), or a store that failed.
enum Look {
    Problems(Box<Shape>),
    Store(CompactError),
}

impl std::fmt::Display for Look {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Look::Problems(s) => f.write_str(&s.problems.join("; ")),
            Look::Store(e) => e.fmt(f),
        }
    }
}

impl Doubt for Look {
    fn doubtful(&self) -> bool {
        match self {
            Look::Problems(_) => true,
            Look::Store(e) => e.doubtful(),
        }
    }

    fn transient(&self) -> bool {
        matches!(self, Look::Store(e) if e.transient())
    }

    fn unsettled(self, attempts: usize) -> Look {
        let last = match self {
            Look::Problems(s) => s.problems.join("; "),
            Look::Store(e) => e.to_string(),
        };
        Look::Store(CompactError::new(
            ErrorKind::Storage,
            format!(
                "the replica kept changing while it was read ({attempts} attempts; the last \
                 problem: {last}); retry when it is quieter"
            ),
        ))
    }
}

/// Every manifest entry against the listing, and the chains.
fn shape_of(manifest: Option<&Manifest>, files: &[FileInfo], layout: Layout) -> Shape {
    let mut r = Shape::default();
    if let Some(m) = manifest {
        r.manifest.present = true;
        r.manifest.entries = m.files.len();
        for e in &m.files {
            let key = e.file_key().expect("checked at parse");
            match files.binary_search_by_key(&key, |f| f.key) {
                Err(_) => {
                    r.problems
                        .push(format!("manifest.json names {} but it is missing", e.key));
                    r.manifest.missing.push(e.key.clone());
                }
                Ok(i) if files[i].size != e.size => {
                    r.problems.push(format!(
                        "{} is {} bytes but manifest.json says {}",
                        e.key, files[i].size, e.size
                    ));
                    r.manifest.size_mismatch.push(e.key.clone());
                }
                _ => {}
            }
        }
        r.manifest.unindexed = files
            .iter()
            .filter(|f| m.get(&f.key).is_none())
            .map(|f| layout.file_key(&f.key))
            .collect();
    }

    let latest = files.iter().map(|f| f.key.max_txid).max();
    r.latest_txid = latest.map(|t| t.to_string());
    r.chains = chains(files, latest, layout);
    let newest = files
        .iter()
        .filter(|f| f.key.level == SNAPSHOT_LEVEL)
        .max_by_key(|s| (s.key.max_txid, s.created_at_ms));
    match newest {
        None if !files.is_empty() => r
            .problems
            .push("no snapshot (level 9): nothing can be restored".into()),
        None => {}
        Some(s) => {
            let lower = lower_levels(files);
            let chain = reach(&lower, s.key.max_txid, |_| true);
            if let Some(next) = chain.beyond {
                r.problems.push(format!(
                    "the newest restore point's chain has a gap: its files reach TXID {}, \
                     but the next one ({}) starts at TXID {}; a file is missing",
                    chain.end,
                    layout.file_key(&next.key),
                    next.key.min_txid
                ));
            }
        }
    }
    r
}

enum Check {
    Ok(u64),
    Vanished,
    ShaMismatch(String),
    Damaged(String),
}

fn check_file(
    store: &dyn Store,
    f: &FileInfo,
    reader: Result<FileReader, StoreError>,
    expected_sha: Option<&str>,
) -> Result<Check, CompactError> {
    let reader = match reader {
        Ok(r) => r,
        Err(StoreError::NotFound { .. }) if !still_listed(store, f)? => return Ok(Check::Vanished),
        Err(e) => return Err(e.into()),
    };
    let mut hashed = HashingReader::new(reader);
    let header = match ltx::verify(&mut hashed) {
        Ok((h, _)) => h,
        Err(ltx::Error::Io(e)) => {
            return Err(CompactError::new(
                crate::restore::ErrorKind::Storage,
                format!("reading {}: {e}; check the store, then retry", f.key),
            ))
        }
        Err(e) => return Ok(Check::Damaged(e.to_string())),
    };
    let (sha, size) = hashed.finish().map_err(|e| {
        CompactError::new(
            crate::restore::ErrorKind::Storage,
            format!("reading {}: {e}", f.key),
        )
    })?;
    if (header.min_txid, header.max_txid) != (f.key.min_txid, f.key.max_txid) {
        return Ok(Check::Damaged(format!(
            "its header covers TXIDs {}-{}, not what its name says",
            header.min_txid, header.max_txid
        )));
    }
    if size != f.size {
        return Ok(Check::Damaged(format!(
            "read {size} bytes but the store lists {}",
            f.size
        )));
    }
    match expected_sha {
        Some(want) if want != sha => Ok(Check::ShaMismatch(format!(
            "its SHA-256 is {sha} but manifest.json says {want}"
        ))),
        _ => Ok(Check::Ok(size)),
    }
}

fn still_listed(store: &dyn Store, f: &FileInfo) -> Result<bool, CompactError> {
    let level = store.list(Some(f.key.level), crate::store::Times::Listed)?;
    Ok(level.iter().any(|g| g.key == f.key))
}

/// The chain from each snapshot, newest first (`reach`: greedy like `restore::choose`).
fn chains(files: &[FileInfo], latest: Option<Txid>, layout: Layout) -> Vec<Chain> {
    let lower = lower_levels(files);
    let snapshots = files.iter().rev().filter(|f| f.key.level == SNAPSHOT_LEVEL);
    snapshots
        .map(|s| {
            let r = reach(&lower, s.key.max_txid, |_| true);
            Chain {
                snapshot: layout.file_key(&s.key),
                from_txid: s.key.max_txid.to_string(),
                reaches_txid: r.end.to_string(),
                files: r.files,
                reaches_latest: Some(r.end) == latest,
                gap: r.beyond.map(|next| Gap {
                    after_txid: r.end.to_string(),
                    next_file: layout.file_key(&next.key),
                }),
            }
        })
        .collect()
}
