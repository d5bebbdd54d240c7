//! `walrust list URL`.

use walrust::clock::format_rfc3339_ms;
use walrust::compact::{listing, load_manifest};
use walrust::restore::{choose, RestoreError, Target};
use walrust::settle::until_settled;

use crate::{output, Args, Failure};

pub const HELP: &str = "\
Usage: walrust list URL

Lists the replica's LTX files, one per line: level (0 incremental, 1-8 compactions, 9
snapshots), TXID range, size in bytes, and creation time (the time of the file's newest
transaction). The last line names the newest restore point.

Exit codes: 0 listed, 3 no LTX files at URL (a mistyped URL, or replication has not run),
4 storage error, 5 integrity error (a damaged manifest.json).
";

pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = Args::parse(args, &[], &[])?;
    a.expect_positional(&["URL"])?;
    let store = walrust::store::open(&a.positional[0]).map_err(Failure::store)?;
    let fail = |e: walrust::compact::CompactError| Failure::new(e.exit_code(), e.to_string());
    let manifest = load_manifest(store.as_ref()).map_err(fail)?;
    let mut first = Some(listing(store.as_ref(), manifest.as_ref()).map_err(fail)?);
    // A hole may be a writer's files appearing mid-listing: look again until it persists.
    let mut files = Vec::new();
    let chain = until_settled(|| {
        let look = match first.take() {
            Some(look) => look,
            None => load_manifest(store.as_ref())
                .and_then(|m| listing(store.as_ref(), m.as_ref()))
                .map_err(|e| {
                    let why = e.to_string();
                    RestoreError::new(e.kind(), why.trim_start_matches("walrust: "))
                })?,
        };
        files = look;
        choose(&files, Target::Latest, &store.describe())
    });
    if files.is_empty() {
        return Err(Failure::new(
            3,
            format!(
                "walrust: nothing to list: {} holds no LTX files; check the URL, or that replication has run",
                store.describe()
            ),
        ));
    }
    output::line(&format!(
        "{:>5}  {:16}  {:16}  {:>12}  created_at",
        "level", "min_txid", "max_txid", "size"
    ))?;
    for f in &files {
        output::line(&format!(
            "{:>5}  {}  {}  {:>12}  {}",
            f.key.level,
            f.key.min_txid,
            f.key.max_txid,
            f.size,
            format_rfc3339_ms(f.created_at_ms)
        ))?;
    }
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    output::line(&format!("{} file(s), {bytes} bytes", files.len()))?;
    match chain {
        Ok(chain) => {
            let last = chain.last().expect("a chain has a snapshot");
            output::line(&format!(
                "newest restore point: TXID {} ({}), {} file(s) to restore it",
                last.key.max_txid,
                format_rfc3339_ms(last.created_at_ms),
                chain.len()
            ))
        }
        // Listed all the same: the files are there, but none of them can be restored.
        Err(e) => {
            eprintln!("{e}");
            Ok(())
        }
    }
}
