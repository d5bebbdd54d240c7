//! `walrust compact URL [--dry-run]`.

use walrust::clock::SystemClock;
use walrust::compact::{compact, CompactOptions};
use walrust::config::Retention;

use crate::{output, Args, Failure};

pub const HELP: &str = "\
Usage: walrust compact URL [--dry-run] [--retention hourly=N,daily=N,weekly=N,monthly=N]

Compacts the replica's incremental files into levels 1-3 (30 s, 5 min and 1 h, as Litestream
0.5 does), so that a restore reads few files however many transactions there were, then applies
retention and prints a JSON report of the files created, removed and kept.

Retention keeps the newest snapshot of each of the last N hours, days, weeks (from Monday) and
months (UTC), and always the newest snapshot; every restore point of the last `hourly` hours
stays exact to the transaction (with the snapshot it restores from). Files no kept restore
point needs are removed: first from manifest.json, then from the store. The default is
hourly=24,daily=7,weekly=12,monthly=12, or WALRUST_RETENTION when set.

Options:
  --dry-run           report what would be created and removed; change nothing
  --retention SPEC    the tiers to keep (overrides WALRUST_RETENTION)
  -h, --help          this help

Safe while a walrust process uploads to the replica, but do not run two compactions of one
replica at once (a database with walrust_compact_after_snapshot=on runs one after each
snapshot). Merges spool pages in TMPDIR (at most the database's size). Temporary files that
killed walrust processes left there and in a local-directory replica are removed first.

Exit codes: 0 done, 2 usage, 3 no LTX files at URL, 4 storage error, 5 integrity error (a
damaged file stops the run before anything is removed).
";

pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = Args::parse(args, &["--retention"], &["--dry-run"])?;
    a.expect_positional(&["URL"])?;
    let spec = match a.value(&["--retention"]) {
        Some(s) => Some(("--retention", s.to_string())),
        None => std::env::var("WALRUST_RETENTION")
            .ok()
            .map(|s| ("WALRUST_RETENTION", s)),
    };
    let retention = match spec {
        Some((from, s)) => Retention::parse(&s)
            .map_err(|e| Failure::invalid(format!("{from} = '{s}' is not valid: {e}")))?,
        None => Retention::default(),
    };
    let store = walrust::store::open(&a.positional[0]).map_err(Failure::store)?;
    if !a.has("--dry-run") {
        walrust::cleanup::before_compaction(&a.positional[0], &std::env::temp_dir());
    }
    let files = store
        .list(None, walrust::store::Times::Listed)
        .map_err(Failure::store)?;
    if files.is_empty() {
        return Err(Failure::new(
            3,
            format!(
                "walrust: nothing to compact: {} holds no LTX files; check the URL",
                store.describe()
            ),
        ));
    }
    let opts = CompactOptions::new(retention);
    let report = compact(store.as_ref(), &opts, &SystemClock, a.has("--dry-run"))
        .map_err(|e| Failure::new(e.exit_code(), e.to_string()))?;
    output::line(&serde_json::to_string_pretty(&report).expect("reports serialize"))
}
