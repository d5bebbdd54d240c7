//! The tools the integration tests run that the project installs itself
//! (`scripts/setup-test-env.sh`): `litestream` 0.5.17, `s3s-fs`, the sqlite3 shell. A test that
//! needs one FAILS when it is missing. Only with `WALRUST_ALLOW_SKIP=1` does it skip instead,
//! and then it says so where `scripts/test.sh` counts it: a line
//! `WALRUST-SKIP: <test>: <why>` on the real standard error (past libtest's capture) and
//! appended to the file `$WALRUST_SKIP_LOG` when that is set.
#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};

/// The test's name as libtest gives it (the name of the thread running it).
fn test_name() -> String {
    std::thread::current()
        .name()
        .unwrap_or("unknown test")
        .to_string()
}

/// Whether a missing tool may skip a test instead of failing it (`WALRUST_ALLOW_SKIP=1`).
pub fn skips_allowed() -> bool {
    std::env::var_os("WALRUST_ALLOW_SKIP").is_some_and(|v| v == "1")
}

/// A test cannot run here because `why`. Panics (the test fails) unless skips are allowed;
/// then records the skip and returns, and the caller returns from the test.
pub fn cannot_run(why: &str) {
    let line = format!("WALRUST-SKIP: {}: {why}", test_name());
    if !skips_allowed() {
        panic!("{why} (set WALRUST_ALLOW_SKIP=1 to skip this test instead of failing it)");
    }
    let _ = writeln!(std::io::stderr(), "{line}");
    if let Some(log) = std::env::var_os("WALRUST_SKIP_LOG") {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("WALRUST_SKIP_LOG {}: {e}", Path::new(&log).display()));
        writeln!(f, "{line}").unwrap();
    }
}

/// An executable named `name` in a directory of `PATH`.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `litestream` 0.5.17: `WALRUST_LITESTREAM`, else the repository's `.venv/bin/litestream`
/// (what scripts/setup-test-env.sh installs), else `litestream` on `PATH`. `None` only when
/// it is missing and skips are allowed.
pub fn litestream() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/litestream");
    let found = match std::env::var_os("WALRUST_LITESTREAM") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => Some(venv.clone())
            .filter(|p| p.is_file())
            .or_else(|| on_path("litestream")),
    };
    if found.is_none() {
        cannot_run(&format!(
            "no litestream binary (not at {}, not on PATH, WALRUST_LITESTREAM unset or wrong): \
             run scripts/setup-test-env.sh",
            venv.display()
        ));
    }
    found
}

/// The sqlite3 shell: `SQLITE3`, else `/usr/bin/sqlite3`. `None` only when it is missing and
/// skips are allowed.
pub fn sqlite3() -> Option<PathBuf> {
    let p = PathBuf::from(std::env::var_os("SQLITE3").unwrap_or("/usr/bin/sqlite3".into()));
    if p.is_file() {
        return Some(p);
    }
    cannot_run(&format!(
        "no sqlite3 shell at {} (apt-get install sqlite3, or set SQLITE3)",
        p.display()
    ));
    None
}
