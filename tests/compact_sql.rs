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
    let out = Command::new(shell)
        .arg("-batch")
        .arg("-noheader")
        .arg("-cmd")
        .arg(format!(".load {}", extension().display()))
        .arg(":memory:")
        .arg(sql)
        .env_remove("WALRUST_REPLICA_ROOT")
        .env_remove("WALRUST_RETENTION")
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

    // A dry run, then the real thing. The SQL functions use the system clock, so what they
    // remove depends on the day the test runs; they agree with each other, and the newest
    // restore point restores, either way.
    let (ok, out, err) = run(&shell, &format!("SELECT walrust_compact('{url}', 1);"));
    assert!(ok, "{err}");
    let dry: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(r.store.list(None, Times::Listed).unwrap(), files);
    let (ok, out, err) = run(&shell, &format!("SELECT walrust_compact('{url}');"));
    assert!(ok, "{err}");
    let done: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["removed"], dry["removed"]);
    assert_eq!(
        done["created"].as_array().unwrap().len(),
        dry["created"].as_array().unwrap().len()
    );
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
