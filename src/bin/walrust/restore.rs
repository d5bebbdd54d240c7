//! `walrust restore URL -o OUT [--txid N | --timestamp T] [--if-db-not-exists]
//! [--if-replica-exists]`, and the restore `walrust watch` runs before watching a database that
//! is not there (`restore-if-db-not-exists`).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use walrust::clock::{format_rfc3339_ms, parse_rfc3339};
use walrust::restore::{self, ErrorKind, Target};
use walrust::Txid;

use crate::{output, Args, Failure};

pub const HELP: &str = "\
Usage: walrust restore URL -o OUT [--txid N | --timestamp T] [--if-db-not-exists]
                        [--if-replica-exists]
       walrust restore --config FILE DB [-o OUT] [...]

Rebuilds the database from the replica at URL into OUT, which must not exist. Without a
target, restores the newest restore point. A restore point is the end of an uploaded batch or
a snapshot; a target stops at the newest restore point at or before it.

Options:
  -o, --output OUT    where to write the database (its folder must exist)
  --txid N            the newest restore point at or before TXID N: decimal, 0x-prefixed hex,
                      or 16 hex digits as in LTX file names
  --timestamp T       the newest restore point committed at or before T (RFC 3339, e.g.
                      2026-11-28T10:49:56.123Z)
  --if-db-not-exists  when OUT exists, restore nothing and exit 0 (as Litestream's
                      -if-db-not-exists: a container's start script restores only on a new disk)
  --if-replica-exists when the replica holds no restore point (or none at or before the
                      target), restore nothing and exit 0 (a first start)
  --config FILE       restore DB, as the Litestream config FILE names it (its replica, its
                      access key; under a `dir:` entry, the replica the watch gives it), into
                      DB itself unless -o names another path
  -h, --help          this help

Litestream's spellings work too (-if-db-not-exists, -if-replica-exists, -txid, -timestamp,
-config), so that `litestream restore -if-db-not-exists -if-replica-exists -config FILE DB`
in a start script runs as it is with `walrust` in its place.

The database is written to OUT.tmp-walrust and renamed to OUT only after every file's LTX
checksum, size and manifest SHA-256 have passed. Unlike walrust_restore() in SQL, this command
has no SQLite and cannot run PRAGMA integrity_check on the result: it relies on the LTX
checksums. Run `sqlite3 OUT 'PRAGMA integrity_check'` for that check.

Exit codes: 0 restored, 2 usage (or OUT exists), 3 nothing to restore, 4 storage error,
5 integrity error (nothing is left at OUT).
";

/// Progress appears on stderr (a terminal only) once a restore has run this long.
const PROGRESS_AFTER: Duration = Duration::from_millis(700);

pub fn run(args: &[String]) -> Result<(), Failure> {
    // Litestream's single-dash spellings too, so that a start script moves by its binary name.
    let a = Args::parse(
        args,
        &[
            "-o",
            "--output",
            "--txid",
            "-txid",
            "--timestamp",
            "-timestamp",
            "--config",
            "-config",
        ],
        &[
            "--if-db-not-exists",
            "-if-db-not-exists",
            "--if-replica-exists",
            "-if-replica-exists",
        ],
    )?;
    let has = |name: &str| a.has(&format!("-{name}")) || a.has(&format!("--{name}"));
    let (if_db_not_exists, if_replica_exists) = (has("if-db-not-exists"), has("if-replica-exists"));
    let (url, out) = match a.value(&["--config", "-config"]) {
        Some(file) => from_config(&a, file)?,
        None => from_url(&a)?,
    };
    let out = out.as_str();
    let target = match (
        a.value(&["--txid", "-txid"]),
        a.value(&["--timestamp", "-timestamp"]),
    ) {
        (Some(_), Some(_)) => {
            return Err(Failure::usage("give --txid or --timestamp, not both"));
        }
        (Some(t), None) => Target::Txid(parse_txid(t)?),
        (None, Some(t)) => Target::Time(parse_rfc3339(t).ok_or_else(|| {
            Failure::invalid(format!(
                "--timestamp {t} is not an RFC 3339 time like 2026-11-28T10:49:56.123Z"
            ))
        })?),
        (None, None) => Target::Latest,
    };
    let out = PathBuf::from(out);
    if if_db_not_exists && std::fs::symlink_metadata(&out).is_ok() {
        return output::line(&format!(
            "{} exists: nothing restored (--if-db-not-exists)",
            out.display()
        ));
    }
    let store = walrust::store::open(&url).map_err(Failure::store)?;

    let done = AtomicBool::new(false);
    let result = std::thread::scope(|s| {
        if std::io::stderr().is_terminal() {
            s.spawn(|| progress(&restore::temp_path(&out), &done));
        }
        let r = restore::restore(store.as_ref(), &out, target).and_then(|t| {
            let (ts, pages, ps) = (t.timestamp_ms(), t.pages(), t.page_size());
            t.commit().map(|txid| (txid, ts, pages, ps))
        });
        done.store(true, Ordering::SeqCst);
        r
    });
    match result {
        Ok((txid, ts, pages, page_size)) => output::line(&format!(
            "restored {} to TXID {txid} ({}, committed {}): {pages} pages of {page_size} bytes",
            out.display(),
            txid.get(),
            format_rfc3339_ms(ts)
        )),
        Err(e) if e.kind() == ErrorKind::NothingToRestore && if_replica_exists => {
            output::line(&format!(
                "nothing restored (--if-replica-exists): {}",
                e.to_string().trim_start_matches("walrust: ")
            ))
        }
        Err(e) => Err(Failure::new(e.kind().exit_code(), e.to_string())),
    }
}

/// `walrust restore URL -o OUT`: the replica's URL and the output path.
fn from_url(a: &Args) -> Result<(String, String), Failure> {
    if a.positional.len() == 2 && a.value(&["-o", "--output"]).is_none() {
        return Err(Failure::usage(format!(
            "restore takes the output path with -o: walrust restore {} -o {}",
            a.positional[0], a.positional[1]
        )));
    }
    a.expect_positional(&["URL"])?;
    let out = a.value(&["-o", "--output"]).ok_or_else(|| {
        Failure::usage(
            "restore needs -o OUT (or --config FILE DB, to restore a database a Litestream \
             config names, into its own path)",
        )
    })?;
    Ok((a.positional[0].clone(), out.to_string()))
}

/// `walrust restore --config FILE DB [-o OUT]` (Litestream's `restore -config FILE DB`): the
/// replica the file names for DB, and DB itself as the output unless -o says otherwise. The
/// file's access key, if it names one, is the restore's.
fn from_config(a: &Args, file: &str) -> Result<(String, String), Failure> {
    a.expect_positional(&["DB"])?;
    let config = walrust::watch::config::load(Path::new(file)).map_err(Failure::invalid)?;
    let wanted = &a.positional[0];
    let same = |p: &Path| {
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        abs(p) == abs(Path::new(wanted))
            || matches!((std::fs::canonicalize(p), std::fs::canonicalize(wanted)), (Ok(x), Ok(y)) if x == y)
    };
    // A database a `dir:` entry covers is restored from the replica the watch names for it
    // (Litestream's restore knows only `path:` entries).
    let under_dir = |d: &walrust::watch::config::DbConfig| {
        let rel = walrust::watch::config::covers(&d.path, d.dir.as_ref()?, Path::new(wanted))?;
        Some(walrust::watch::config::DbConfig {
            path: PathBuf::from(wanted),
            url: walrust::watch::config::replica_for(&d.url, &rel),
            dir: None,
            ..d.clone()
        })
    };
    let db = (config.dbs.iter())
        .find(|d| d.dir.is_none() && same(&d.path))
        .cloned()
        .or_else(|| config.dbs.iter().find_map(under_dir))
        .ok_or_else(|| Failure::invalid(format!("{file} names no database at {wanted}")))?;
    crate::watch::use_credentials(std::slice::from_ref(&db))?;
    let out = a
        .value(&["-o", "--output"])
        .map_or_else(|| db.path.to_string_lossy().to_string(), str::to_string);
    Ok((db.url, out))
}

/// Before `walrust watch` starts on `db` (`restore-if-db-not-exists`, as Litestream's
/// `replicate` does it): when nothing is at `db`, restores the newest restore point of `url`
/// there, which also records that the database continues the replica's history; a replica with
/// no restore point is a first start (the watch then waits for the application to create the
/// database). Each outcome is one line on standard error.
pub fn before_watch(url: &str, db: &Path) -> Result<(), Failure> {
    if std::fs::symlink_metadata(db).is_ok() {
        return Ok(());
    }
    let cannot = |e: String| {
        Failure::new(
            1,
            format!(
                "restore-if-db-not-exists: {} is missing and cannot be restored from {url}: {}",
                db.display(),
                e.trim_start_matches("walrust: ")
            ),
        )
    };
    let store = walrust::store::open(url).map_err(|e| cannot(e.to_string()))?;
    match restore::restore(store.as_ref(), db, Target::Latest).and_then(|t| t.commit()) {
        Ok(txid) => walrust::log::info(&format!(
            "restored {} from {url} to TXID {} before watching it (restore-if-db-not-exists)",
            db.display(),
            txid.get()
        )),
        // A first start: the watch waits for the application to create the database.
        Err(e) if e.kind() == ErrorKind::NothingToRestore => walrust::log::info(&format!(
            "{} is missing and {url} holds no restore point yet: a first start \
             (restore-if-db-not-exists)",
            db.display()
        )),
        Err(e) => return Err(cannot(e.to_string())),
    }
    Ok(())
}

fn parse_txid(s: &str) -> Result<Txid, Failure> {
    Txid::parse_user(s).ok_or_else(|| {
        Failure::invalid(format!(
            "--txid {s} is not a TXID ({}); see `walrust list URL` for the restore points",
            walrust::types::TXID_FORMS
        ))
    })
}

/// Shows how much of the database has been written, on one redrawn stderr line, until `done`.
fn progress(temp: &Path, done: &AtomicBool) {
    let start = Instant::now();
    let mut shown = false;
    while !done.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
        let elapsed = start.elapsed();
        if elapsed < PROGRESS_AFTER {
            continue;
        }
        // Gone once the restore renames it into place: nothing more to show.
        let Ok(bytes) = std::fs::metadata(temp).map(|m| m.len()) else {
            continue;
        };
        let mib = bytes as f64 / (1024.0 * 1024.0);
        let rate = mib / elapsed.as_secs_f64();
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rrestoring: {mib:.1} MiB written in {:.0} s ({rate:.1} MiB/s)   ",
            elapsed.as_secs_f64()
        );
        let _ = err.flush();
        shown = true;
    }
    if shown {
        let _ = write!(std::io::stderr(), "\r{:60}\r", "");
    }
}
