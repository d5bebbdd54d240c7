//! Keeping a replica bounded and operable: compaction levels, GFS retention of snapshots, and
//! verification.
//!
//! Owns: the LTX merge (`merge`), which lower-level files are merged into which level
//! (`policy`), which files retention keeps (`retention`), `verify`, and `compact`, the one entry
//! point that runs them in a safe order against a live replica.
//!
//! `compact` works from one look at the replica: `manifest.json`, then the listing. When the
//! replica has a manifest, only the files it names (with their listed size) take part: an
//! uploader makes a file durable before naming it and names level-0 files in batches up to
//! 10 s later, in any process, so a file not named yet is never merged or removed; a later run
//! finds it named (docs/DESIGN.md, decision 11). Without a manifest (a Litestream replica) the
//! whole listing takes part. It only ever *adds* files (merges, written and then named) before
//! it *removes* any (unnamed first, then deleted). The restore points uploaders add chain onto
//! files retention always keeps (the latest restore point's chain). A hole or a file gone may be
//! writers changing the replica under the look: the run starts again from a new look, and
//! reports an integrity error only if the problem persists (`settle`). What it must never do:
//! remove a file the newest restore point's chain needs, a level-0 file no kept compaction or
//! snapshot covers, a snapshot a retention tier keeps, or a file of the exact-restore window;
//! merge a damaged file (every input's checksum is verified, and a failure stops the run before
//! anything is removed); or call SQLite (the `walrust` binary runs it with no SQLite at all).
//! Two compactions of one replica must not run at once (the uploader runs it in the process
//! holding the uploader lock; the CLI says so in its help).

mod chain;
pub mod merge;
pub mod policy;
pub mod retention;
pub mod verify;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

pub use crate::restore::ErrorKind;
pub(crate) use chain::{lower_levels, reach};
pub use retention::Decision;
pub use verify::{verify, VerifyReport};

use crate::clock::{format_rfc3339_ms, Clock};
use crate::config::Retention;
use crate::manifest::{self, Entry, Manifest};
use crate::settle::{list_stable, until_settled, Doubt};
use crate::store::{FileInfo, FileKey, Store, StoreError, Times, WriteMeta, SNAPSHOT_LEVEL};

/// How to compact and what to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompactOptions {
    /// GFS tiers of snapshots; the hourly tier's span is also the exact-restore window.
    pub retention: Retention,
    /// The interval of each compaction level from 1 up, in ms: level `n` merges the files of
    /// level `n - 1` whose times fall in one closed interval. At most 8 levels.
    pub level_intervals_ms: Vec<i64>,
    /// Where merges spool pages and encode their output; the system temp dir when `None`.
    pub tmp_dir: Option<PathBuf>,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions::new(Retention::default())
    }
}

impl CompactOptions {
    /// Litestream 0.5's default levels (30 s, 5 min, 1 h) with `retention`.
    pub fn new(retention: Retention) -> CompactOptions {
        CompactOptions {
            retention,
            level_intervals_ms: policy::DEFAULT_LEVEL_INTERVALS_MS.to_vec(),
            tmp_dir: None,
        }
    }

    pub fn with_tmp_dir(mut self, dir: PathBuf) -> CompactOptions {
        self.tmp_dir = Some(dir);
        self
    }
}

/// Why compaction or verification failed. `Display` is the whole user-facing message.
#[derive(Debug)]
pub struct CompactError {
    kind: ErrorKind,
    message: String,
    /// Writers changing the replica may have caused it: look again (`settle`).
    doubtful: bool,
}

impl CompactError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> CompactError {
        CompactError {
            kind,
            message: message.into(),
            doubtful: false,
        }
    }

    pub fn integrity(message: impl Into<String>) -> CompactError {
        CompactError::new(ErrorKind::Integrity, message)
    }

    /// An integrity problem of a listing (a hole in the TXIDs) that writers changing the
    /// replica mid-listing can cause: reported only if it persists (`settle`).
    pub fn doubtful_integrity(message: impl Into<String>) -> CompactError {
        CompactError {
            doubtful: true,
            ..CompactError::integrity(message)
        }
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The `walrust` binary's exit code for it (SPEC section 7).
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            // A replica URL that does not open is a storage problem for the CLI.
            ErrorKind::Invalid => 4,
            k => k.exit_code(),
        }
    }
}

impl fmt::Display for CompactError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            ErrorKind::Integrity => write!(f, "walrust: integrity error: {}", self.message),
            _ => write!(f, "walrust: {}", self.message),
        }
    }
}

impl std::error::Error for CompactError {}

impl From<StoreError> for CompactError {
    /// A file not found is doubtful: another compaction may have removed it after the listing; so
    /// is an unavailable store (an S3 5xx, which S3 asks clients to retry): both are looked at again.
    fn from(e: StoreError) -> CompactError {
        let kind = match e {
            StoreError::Invalid { .. } => ErrorKind::Invalid,
            _ => ErrorKind::Storage,
        };
        CompactError {
            doubtful: matches!(
                e,
                StoreError::NotFound { .. } | StoreError::Unavailable { .. }
            ),
            ..CompactError::new(kind, e.to_string())
        }
    }
}

impl Doubt for CompactError {
    fn doubtful(&self) -> bool {
        self.doubtful
    }

    fn transient(&self) -> bool {
        self.doubtful && self.kind == ErrorKind::Storage
    }

    fn unsettled(self, attempts: usize) -> CompactError {
        CompactError::new(
            ErrorKind::Storage,
            format!(
                "the replica kept changing while it was read ({attempts} attempts; the last \
                 problem: {}); retry when it is quieter",
                self.message
            ),
        )
    }
}

/// A file in a report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FileReport {
    /// The key relative to the replica root, in the store's layout.
    pub key: String,
    pub level: u32,
    pub min_txid: String,
    pub max_txid: String,
    /// `None` for a merge a dry run only plans.
    pub size: Option<u64>,
    pub created_at: String,
    /// Why it is kept (or removed), when there is more to say than its level.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl FileReport {
    pub fn new(store: &dyn Store, f: &FileInfo, reason: Option<String>) -> FileReport {
        FileReport {
            key: store.layout().file_key(&f.key),
            level: f.key.level,
            min_txid: f.key.min_txid.to_string(),
            max_txid: f.key.max_txid.to_string(),
            size: Some(f.size),
            created_at: format_rfc3339_ms(f.created_at_ms),
            reason,
        }
    }
}

/// What `compact` did, or with `dry_run` would do. Serializes to the JSON that
/// `walrust_compact()` and `walrust compact` print.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub replica: String,
    pub dry_run: bool,
    pub now: String,
    pub retention: String,
    /// The newest restore point, as 16 hex digits.
    pub latest_txid: Option<String>,
    /// Every restore point from this TXID on is kept (level-0 files newer than
    /// `now - hourly` hours and the files that chain them to a snapshot).
    pub exact_from_txid: Option<String>,
    pub created: Vec<FileReport>,
    pub removed: Vec<FileReport>,
    pub kept: Vec<FileReport>,
    pub bytes_written: u64,
    pub bytes_freed: u64,
}

/// Compacts levels 0–8 and applies retention (see the module doc and `policy`/`retention`).
/// With `dry_run`, reads the listing and reports what would be created and removed, changing
/// nothing. A run that meets what writers changing the replica may cause (a file gone, a hole)
/// starts again from a new look (`settle`); what it already merged is in the replica, named.
pub fn compact(
    store: &dyn Store,
    opts: &CompactOptions,
    clock: &dyn Clock,
    dry_run: bool,
) -> Result<Report, CompactError> {
    if opts.level_intervals_ms.len() >= SNAPSHOT_LEVEL as usize
        || opts.level_intervals_ms.iter().any(|&ms| ms <= 0)
    {
        return Err(CompactError::new(
            ErrorKind::Invalid,
            "compaction needs 1 to 8 levels, each with a positive interval",
        ));
    }
    until_settled(|| compact_once(store, opts, clock, dry_run))
}

fn compact_once(
    store: &dyn Store,
    opts: &CompactOptions,
    clock: &dyn Clock,
    dry_run: bool,
) -> Result<Report, CompactError> {
    let now = clock.now_ms();
    let url = store.describe();
    let work_dir = opts.tmp_dir.clone().unwrap_or_else(std::env::temp_dir);
    let manifest = load_manifest(store)?;
    if !dry_run {
        finish_removal(store, manifest.as_ref())?;
    }
    let mut files = listing(store, manifest.as_ref())?;
    // The whole listing is what restores see: no hole in it. Then only what the manifest
    // names: an uploader may be about to name the rest.
    retention::check_no_gap(&files, &url)?;
    if let Some(m) = &manifest {
        files.retain(|f| named(m, f));
    }

    // Files retention is about to remove are not worth merging.
    let before = retention::decide_part(&files, &opts.retention, now, &url)?;
    let skip_through = before.base.map(|b| b.key.max_txid);

    let mut created = Vec::new();
    let mut indexed = manifest.is_some();
    for (i, &interval) in opts.level_intervals_ms.iter().enumerate() {
        let level = i as u32 + 1;
        let src: Vec<FileInfo> = files
            .iter()
            .filter(|f| f.key.level == level - 1)
            .copied()
            .collect();
        let dst_max = files
            .iter()
            .filter(|f| f.key.level == level)
            .map(|f| f.key.max_txid)
            .max();
        let mut entries = Vec::new();
        for inputs in policy::plan_level(&src, dst_max, skip_through, interval, now) {
            let key = merge::output_key(level, &inputs);
            let info = if dry_run {
                FileInfo {
                    key,
                    size: 0,
                    created_at_ms: inputs[inputs.len() - 1].created_at_ms,
                }
            } else {
                let m = merge::merge(store, &inputs, manifest.as_ref(), &work_dir)?;
                let meta = WriteMeta {
                    timestamp_ms: m.header.timestamp_ms,
                    sha256: m.sha256.clone(),
                };
                let info = store.write(&key, m.file.path(), &meta)?;
                crate::failpoint::hit("compact.merged_written");
                entries.push(Entry::new(store.layout(), &info, m.sha256));
                info
            };
            created.push(info);
            files.push(info);
        }
        // Files are durable before the manifest names them.
        if !entries.is_empty() {
            manifest::update(store, &entries, &[])?;
            indexed = true;
        }
        files.sort_by_key(|f| f.key);
    }

    let decision = retention::decide_part(&files, &opts.retention, now, &url)?;
    if !dry_run && !decision.remove.is_empty() {
        let keys: Vec<FileKey> = decision.remove.iter().map(|f| f.key).collect();
        // Unindexed first, then deleted: a restore never sees an entry without its file for
        // longer than the two steps take. Every file removed was named when the run began, so
        // no uploader is about to name it. (A manifest created since the listing of a replica
        // that had none names only files newer than it, none of which is removed.)
        if indexed {
            manifest::unname_for_removal(store, &keys)?;
            crate::failpoint::hit("compact.unnamed");
            store.delete(&keys)?;
            let names: Vec<String> = keys.iter().map(|k| store.layout().file_key(k)).collect();
            manifest::removed(store, &names)?;
        } else {
            store.delete(&keys)?;
        }
    }
    if !dry_run && manifest.is_some() {
        // Garbage of killed writers; a failure leaves it for the next run. Parts' times are
        // the store's, so the wall clock judges their age, never a simulated one.
        let wall = crate::clock::now_ms();
        let _ = manifest::parts::sweep_unnamed(store, wall, manifest::parts::SWEEP_AGE_MS);
    }
    Ok(report(store, opts, now, dry_run, &created, &decision))
}

/// Deletes the files an earlier run stopped naming and was killed before it deleted (the
/// manifest lists them in `removing`), then says so in the manifest.
fn finish_removal(store: &dyn Store, manifest: Option<&Manifest>) -> Result<(), CompactError> {
    let Some(names) = manifest.map(|m| &m.removing).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let keys: Vec<FileKey> = names
        .iter()
        .filter_map(|n| store.layout().parse_file_key(n))
        .collect();
    store.delete(&keys)?;
    manifest::removed(store, names)?;
    Ok(())
}

fn report(
    store: &dyn Store,
    opts: &CompactOptions,
    now: i64,
    dry_run: bool,
    created: &[FileInfo],
    d: &Decision,
) -> Report {
    // A file a dry run only plans has no size yet, wherever the report names it.
    let planned = |f: &FileInfo| dry_run && created.iter().any(|c| c.key == f.key);
    let file_report = |f: &FileInfo, why: Option<String>| {
        let mut r = FileReport::new(store, f, why);
        if planned(f) {
            r.size = None;
        }
        r
    };
    let created_reports = created.iter().map(|f| file_report(f, None)).collect();
    Report {
        replica: store.describe(),
        dry_run,
        now: format_rfc3339_ms(now),
        retention: opts.retention.to_string(),
        latest_txid: d.latest.map(|t| t.to_string()),
        exact_from_txid: d.exact_from.map(|t| t.to_string()),
        created: created_reports,
        removed: d.remove.iter().map(|f| file_report(f, None)).collect(),
        kept: d
            .keep
            .iter()
            .map(|(f, why)| file_report(f, Some(why.to_string())))
            .collect(),
        bytes_written: if dry_run {
            0
        } else {
            created.iter().map(|f| f.size).sum()
        },
        bytes_freed: d.remove.iter().map(|f| f.size).sum(),
    }
}

/// Reads `manifest.json`; a damaged one is an integrity problem (restore treats it so).
pub fn load_manifest(store: &dyn Store) -> Result<Option<Manifest>, CompactError> {
    match manifest::load(store) {
        Ok(m) => Ok(m.map(|(m, _)| m)),
        Err(e @ StoreError::Invalid { .. }) => Err(CompactError::integrity(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// Every LTX file in the replica, sorted by key, with the best time known cheaply: the manifest's
/// (the LTX header's) when it indexes the file, the exact store time for snapshots (retention
/// goes by them), and the listing's otherwise.
pub fn listing(
    store: &dyn Store,
    manifest: Option<&Manifest>,
) -> Result<Vec<FileInfo>, CompactError> {
    let mut files = list_stable(store, None, Times::Listed)?;
    files.retain(|f| f.key.level != SNAPSHOT_LEVEL);
    files.extend(list_stable(store, Some(SNAPSHOT_LEVEL), Times::Exact)?);
    if let Some(m) = manifest {
        for f in &mut files {
            if let Some(e) = m.get(&f.key).filter(|e| e.size == f.size) {
                f.created_at_ms = e.created_at_ms;
            }
        }
    }
    files.sort_by_key(|f| f.key);
    Ok(files)
}

/// Whether the manifest names `f`, with its size: the files compaction may merge and remove.
fn named(m: &Manifest, f: &FileInfo) -> bool {
    m.get(&f.key).is_some_and(|e| e.size == f.size)
}

/// A local temporary file, removed when dropped.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    /// A new unique path in `dir` (the file is not created).
    pub fn new(dir: &Path, what: &str) -> Result<TempPath, CompactError> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        if !dir.is_dir() {
            return Err(CompactError::new(
                ErrorKind::Io,
                format!(
                    "the temporary directory {} does not exist; create it or set TMPDIR",
                    dir.display()
                ),
            ));
        }
        Ok(TempPath(dir.join(format!(
            "walrust-compact-{}-{}.{what}.tmp",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ))))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
