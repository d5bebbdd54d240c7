//! `walrust list URL`.

use walrust::clock::format_rfc3339_ms;
use walrust::compact::{listing, load_manifest};
use walrust::restore::{choose, RestoreError, Target};
use walrust::settle::until_settled;

use crate::{Args, Failure};

pub const HELP: &str = "\
Usage: walrust list URL

Lists the replica's LTX files, one per line: level (0 incremental, 1-8 compactions, 9
snapshots), TXID range, size in bytes, and creation time (the time of the file's newest
transaction). The last line names the newest restore point.

Exit codes: 0 listed (an empty or missing replica lists no files), 4 storage error,
5 integrity error (a damaged manifest.json).
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
    println!(
        "{:>5}  {:16}  {:16}  {:>12}  created_at",
        "level", "min_txid", "max_txid", "size"
    );
    for f in &files {
        println!(
            "{:>5}  {}  {}  {:>12}  {}",
            f.key.level,
            f.key.min_txid,
            f.key.max_txid,
            f.size,
            format_rfc3339_ms(f.created_at_ms)
        );
    }
    let bytes: u64 = files.iter().map(|f| f.size).sum();
    let latest = match chain {
        Ok(chain) => {
            let last = chain.last().expect("a chain has a snapshot");
            format!(
                "newest restore point TXID {} ({}), {} file(s) to restore it",
                last.key.max_txid,
                format_rfc3339_ms(last.created_at_ms),
                chain.len()
            )
        }
        Err(e) => e.to_string(),
    };
    println!("{} file(s), {bytes} bytes; {latest}", files.len());
    Ok(())
}
