//! `walrust_files`, `walrust_verify` and `walrust_compact` through the real sqlite3 shell with
//! the extension loaded (the crate's rusqlite is a loadable extension: no Connection can be
//! opened from a test process). Without `/usr/bin/sqlite3` (or `SQLITE3`) they fail
//! (skip only with `WALRUST_ALLOW_SKIP=1`: common/tools.rs).

mod common;
mod compact_support;

use common::tools::sqlite3;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use compact_support::*;
use walrust::store::{Store, Times};

/// The extension cargo built beside this test binary.
fn extension() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    for dir in [deps, deps.parent().unwrap()] {
        let p = dir.join("libwalrust.so");
        if p.is_file() {
            return dir.join("libwalrust");
        }
    }
    panic!("libwalrust.so not found near {}", exe.display());
}

/// Runs `sql` in the shell with walrust loaded; returns (success, stdout, stderr).
fn run(shell: &PathBuf, sql: &str) -> (bool, String, String) {
    run_with(shell, sql, None)
}

/// `run`, with `WALRUST_RETENTION` set to `retention` when given.
fn run_with(shell: &PathBuf, sql: &str, retention: Option<&str>) -> (bool, String, String) {
    let mut cmd = Command::new(shell);
    if let Some(r) = retention {
        cmd.env("WALRUST_RETENTION", r);
    }
    if retention.is_none() {
        cmd.env_remove("WALRUST_RETENTION");
    }
    let out = cmd
        .arg("-batch")
        .arg("-noheader")
        .arg("-cmd")
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .arg(sql)
        .env_remove("WALRUST_REPLICA_ROOT")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn replica() -> Rep {
    let mut r = Rep::new("sql", 512);
    r.model.commit(&[1, 2, 3], 3, T0);
    r.snapshot(T0);
    for i in 1..=20 {
        r.txn(&[(i % 3) as u32 + 1], 3, T0 + i * 10 * SEC);
    }
    r.flush();
    r
}

#[test]
fn files_verify_and_compact_from_sql() {
    let Some(shell) = sqlite3() else { return };
    let r = replica();
    let url = format!("file://{}", r.root().display());

    let (ok, out, err) = run(
        &shell,
        &format!(
            "SELECT level, min_txid, max_txid, size, created_at FROM walrust_files('{url}') \
             ORDER BY level DESC, min_txid LIMIT 2;"
        ),
    );
    assert!(ok, "{err}");
    let files = r.store.list(None, Times::Listed).unwrap();
    let snap = files.iter().find(|f| f.key.level == 9).unwrap();
    let first = files.iter().find(|f| f.key.level == 0).unwrap();
    assert_eq!(
        out,
        format!(
            "9|1|1|{}|2026-11-28T00:00:00.000Z\n0|2|2|{}|2026-11-28T00:00:10.000Z\n",
            snap.size, first.size
        )
    );
    let (ok, out, _) = run(
        &shell,
        &format!("SELECT count(*), sum(level = 0) FROM walrust_files('{url}');"),
    );
    assert!(ok);
    assert_eq!(out, "21|20\n");
    let (ok, _, err) = run(&shell, "SELECT * FROM walrust_files;");
    assert!(
        !ok && err.contains("walrust_files needs a replica URL"),
        "{err}"
    );

    let (ok, out, err) = run(&shell, &format!("SELECT walrust_verify('{url}');"));
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ok"], true);
    assert_eq!(v["files_checked"], 21);

    // A newer snapshot, then a dry run and the real thing with every GFS tier off: only the
    // newest snapshot is kept, whatever day the test runs (the SQL functions use the system
    // clock), so the old snapshot must go. The dry run names it and removes nothing; the real
    // run removes exactly what the dry run named, and the newest restore point restores.
    let mut r = r;
    r.snapshot(T0 + 300 * SEC);
    r.flush();
    let files = r.store.list(None, Times::Listed).unwrap();
    let old_snapshot = "ltx/9/0000000000000001-0000000000000001.ltx";
    let retention = Some("hourly=0,daily=0,weekly=0,monthly=0");
    let compact = |dry_run: bool| {
        let sql = format!("SELECT walrust_compact('{url}', {});", dry_run as u8);
        let (ok, out, err) = run_with(&shell, &sql, retention);
        assert!(ok, "{err}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let keys = |v: &serde_json::Value, what: &str| -> Vec<String> {
        v[what]
            .as_array()
            .unwrap_or_else(|| panic!("no {what} in {v}"))
            .iter()
            .map(|f| f["key"].as_str().unwrap().to_string())
            .collect()
    };
    let dry = compact(true);
    assert_eq!(dry["dry_run"], true);
    let would_remove = keys(&dry, "removed");
    assert!(
        would_remove.iter().any(|k| k == old_snapshot),
        "the dry run would not remove the old snapshot: {would_remove:?}"
    );
    assert_eq!(
        r.store.list(None, Times::Listed).unwrap(),
        files,
        "the dry run changed the replica"
    );
    let done = compact(false);
    assert_eq!(done["dry_run"], false);
    assert_eq!(keys(&done, "removed"), would_remove);
    assert_eq!(keys(&done, "created"), keys(&dry, "created"));
    for k in &would_remove {
        assert!(
            !r.root().join(k).exists(),
            "{k} was reported removed but is still there"
        );
    }
    for k in keys(&done, "created") {
        assert!(
            r.root().join(&k).exists(),
            "{k} was reported created but is not there"
        );
    }
    check_restore(
        &r.store,
        &r.model,
        &r.scratch(),
        walrust::restore::Target::Latest,
        r.model.last(),
    );

    // A flipped byte: verify fails with an integrity error.
    let victim = r
        .store
        .list(Some(9), Times::Listed)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let path = r.root().join(r.store.layout().file_key(&victim.key));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[120] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let (ok, _, err) = run(&shell, &format!("SELECT walrust_verify('{url}');"));
    assert!(!ok);
    assert!(err.contains("walrust: integrity error"), "{err}");
}

#[test]
fn replica_functions_are_direct_only() {
    let Some(shell) = sqlite3() else { return };
    let (ok, out, err) = run(
        &shell,
        "SELECT name, (flags & 0x80000) != 0 FROM pragma_function_list \
         WHERE name IN ('walrust_compact', 'walrust_verify') ORDER BY 1; \
         SELECT name FROM pragma_module_list WHERE name LIKE 'walrust%';",
    );
    assert!(ok, "{err}");
    assert_eq!(out, "walrust_compact|1\nwalrust_verify|1\nwalrust_files\n");
    for (view, what) in [
        (
            "SELECT walrust_verify('file:///nonexistent')",
            "walrust_verify()",
        ),
        (
            "SELECT walrust_compact('file:///nonexistent')",
            "walrust_compact()",
        ),
        (
            "SELECT * FROM walrust_files('file:///nonexistent')",
            "virtual table \"walrust_files\"",
        ),
    ] {
        let (ok, _, err) = run(
            &shell,
            &format!("CREATE VIEW v AS {view}; SELECT * FROM v;"),
        );
        assert!(!ok);
        assert!(err.contains(&format!("unsafe use of {what}")), "{err}");
    }
}
