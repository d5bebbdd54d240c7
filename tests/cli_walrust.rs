//! The `walrust` binary: every subcommand's help, and the exit codes of SPEC section 7: 0
//! success, 2 usage, 3 nothing to restore, 4 storage error, 5 integrity error. Also that it
//! links no SQLite, and the extension carries none.

mod compact_support;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use compact_support::*;
use walrust::clock::format_rfc3339_ms;

fn walrust(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_walrust"))
        .args(args)
        .env_remove("WALRUST_RETENTION")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn replica() -> Rep {
    let mut r = Rep::new("cli", 512);
    r.model.commit(&[1, 2, 3, 4], 4, T0);
    r.snapshot(T0);
    for i in 1..=12 {
        r.txn(&[(i % 4) as u32 + 1], 4 + (i / 4) as u32, T0 + i * 60 * SEC);
    }
    r.flush();
    r
}

fn url(r: &Rep) -> String {
    format!("file://{}", r.root().display())
}

fn out_path(r: &Rep, name: &str) -> String {
    r.dir.path().join(name).display().to_string()
}

#[test]
fn help_and_usage_errors() {
    for args in [
        &["--help"][..],
        &["help"],
        &["help", "compact"],
        &["--version"],
    ] {
        let o = walrust(args);
        assert_eq!(code(&o), 0, "{args:?}: {}", text(&o.stderr));
    }
    for cmd in ["restore", "list", "verify", "compact"] {
        let o = walrust(&[cmd, "--help"]);
        assert_eq!(code(&o), 0);
        assert!(text(&o.stdout).starts_with(&format!("Usage: walrust {cmd}")));
    }
    let help = text(&walrust(&["restore", "-h"]).stdout);
    assert!(
        help.contains("PRAGMA integrity_check") && help.contains("LTX"),
        "{help}"
    );

    // A malformed command line: the message, then where the usage is.
    for args in [
        &[][..],
        &["frobnicate"],
        &["restore", "file:///x"],
        &["restore", "file:///x", "-o"],
        &[
            "restore",
            "file:///x",
            "-o",
            "/o.db",
            "--txid",
            "3",
            "--timestamp",
            "2026-01-01T00:00:00Z",
        ],
        &["list"],
        &["list", "file:///x", "file:///y"],
        &["verify", "file:///x", "--fast"],
        &["compact", "file:///x", "--dry-run=yes"],
    ] {
        let o = walrust(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert!(err.starts_with("walrust: ") && !err.starts_with("walrust: walrust"));
        assert!(err.contains("Usage:"), "{args:?}");
    }
    // A bad value: exit 2 and one line that says what to do, not the usage text.
    for (args, says) in [
        (
            &["restore", "file:///x", "-o", "/tmp/o.db", "--txid", "soon"][..],
            "not a TXID",
        ),
        (
            &["restore", "file:///x", "-o", "/tmp/o.db", "--txid", "0"],
            "not a TXID",
        ),
        (
            &[
                "restore",
                "file:///x",
                "-o",
                "/tmp/o.db",
                "--timestamp",
                "yesterday",
            ],
            "RFC 3339",
        ),
        (
            &["compact", "file:///x", "--retention", "hourly=many"],
            "not valid",
        ),
    ] {
        let o = walrust(args);
        assert_eq!(code(&o), 2, "{args:?}: {}", text(&o.stderr));
        let err = text(&o.stderr);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("walrust: ") && err.contains(says), "{err}");
    }
    // The output path without -o: say so.
    let o = walrust(&["restore", "file:///x", "out.db"]);
    assert_eq!(code(&o), 2);
    assert!(
        text(&o.stderr).starts_with("walrust: restore takes the output path with -o"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn restores_by_latest_txid_and_time() {
    let r = replica();
    let last = r.model.last();
    let out = out_path(&r, "latest.db");
    let o = walrust(&["restore", &url(&r), "-o", &out]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(text(&o.stdout).contains(&format!("TXID {} ({last}", txid(last))));
    assert!(std::fs::read(&out).unwrap() == r.model.db_bytes(last));

    for (arg, want) in [("7", 7), ("0x8", 8), ("0000000000000009", 9)] {
        let out = out_path(&r, &format!("txid-{arg}.db"));
        let o = walrust(&[
            "restore",
            r.root().to_str().unwrap(),
            "-o",
            &out,
            "--txid",
            arg,
        ]);
        assert_eq!(code(&o), 0, "{}", text(&o.stderr));
        assert!(std::fs::read(&out).unwrap() == r.model.db_bytes(want));
    }
    let out = out_path(&r, "time.db");
    let at = format_rfc3339_ms(r.model.times[5] + 30 * SEC);
    let o = walrust(&["restore", &url(&r), "--output", &out, "--timestamp", &at]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == r.model.db_bytes(5));

    // Never over an existing file: exit 2, one line with one prefix, no usage text.
    let o = walrust(&["restore", &url(&r), "-o", &out]);
    assert_eq!(code(&o), 2, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.starts_with("walrust: restore failed: ") && err.contains("already exists"));
    assert_eq!(err.lines().count(), 1, "{err}");

    let o = walrust(&["list", &url(&r)]);
    assert_eq!(code(&o), 0);
    let listing = text(&o.stdout);
    assert_eq!(listing.lines().count(), 1 + 13 + 2, "{listing}");
    assert!(listing.contains(&format!("newest restore point: TXID {}", txid(last))));

    let o = walrust(&["verify", &url(&r)]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["files_checked"], 13);

    let o = walrust(&["compact", &url(&r), "--dry-run"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let dry: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dry["dry_run"], true);
    // A planned file has no size yet, under "created" and "kept" alike; every other file has.
    let planned: Vec<&serde_json::Value> = dry["created"].as_array().unwrap().iter().collect();
    assert!(!planned.is_empty(), "{dry}");
    for f in planned
        .iter()
        .copied()
        .chain(dry["kept"].as_array().unwrap())
    {
        let is_planned = planned.iter().any(|p| p["key"] == f["key"]);
        assert_eq!(f["size"].is_null(), is_planned, "{f}");
    }
    let o = walrust(&["compact", &url(&r), "--retention", "hourly=24,daily=2"]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let done: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["retention"], "hourly=24,daily=2,weekly=12,monthly=12");
    let out = out_path(&r, "after-compact.db");
    assert_eq!(code(&walrust(&["restore", &url(&r), "-o", &out])), 0);
    assert!(std::fs::read(&out).unwrap() == r.model.db_bytes(last));
}

#[test]
fn status_of_a_path_that_names_nothing_says_so() {
    let dir = TempDir::new("cli-status");
    let typo = dir.path().join("no-such.db");
    let o = walrust(&["status", typo.to_str().unwrap()]);
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("does not exist") && out.contains("check the path"),
        "{out}"
    );
    // A database that exists but never replicated says that instead.
    std::fs::write(&typo, b"").unwrap();
    let out = text(&walrust(&["status", typo.to_str().unwrap()]).stdout);
    assert!(out.contains("has never replicated"), "{out}");
}

#[test]
fn nothing_to_restore_is_3() {
    let empty = TempDir::new("cli-empty");
    let missing = empty.path().join("never-written");
    for u in [empty.path(), missing.as_path()] {
        let out = empty.path().join("out.db");
        let o = walrust(&["restore", u.to_str().unwrap(), "-o", out.to_str().unwrap()]);
        assert_eq!(code(&o), 3, "{}", text(&o.stderr));
        assert!(text(&o.stderr).starts_with("walrust: nothing to restore"));
        assert_eq!(code(&walrust(&["verify", u.to_str().unwrap()])), 3);
        assert_eq!(code(&walrust(&["compact", u.to_str().unwrap()])), 3);
        // A mistyped URL never looks like a healthy, empty replica.
        let o = walrust(&["list", u.to_str().unwrap()]);
        assert_eq!(code(&o), 3, "{}", text(&o.stderr));
        assert!(o.stdout.is_empty());
        assert!(text(&o.stderr).starts_with("walrust: nothing to list"));
    }
    // A target before the first snapshot.
    let r = replica();
    let mut late = Rep::new("cli-late", 512);
    late.model.commit(&[1], 1, T0);
    late.model.commit(&[1], 1, T0 + SEC);
    late.snapshot(T0 + SEC);
    late.flush();
    let out = out_path(&r, "early.db");
    let o = walrust(&["restore", &url(&late), "-o", &out, "--txid", "1"]);
    assert_eq!(code(&o), 3, "{}", text(&o.stderr));
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_start_script_restores_only_onto_a_new_disk() {
    // `litestream restore -if-db-not-exists -if-replica-exists`, as walrust spells it.
    let flags = ["--if-db-not-exists", "--if-replica-exists"];
    let r = replica();
    let out = out_path(&r, "app.db");
    let o = walrust(&[&["restore", &url(&r), "-o", &out][..], &flags].concat());
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(std::fs::read(&out).unwrap() == r.model.db_bytes(r.model.last()));

    // The database is there: nothing restored, nothing touched, exit 0.
    std::fs::write(&out, b"the application's own").unwrap();
    let o = walrust(&[&["restore", &url(&r), "-o", &out][..], &flags].concat());
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert_eq!(
        text(&o.stdout),
        format!("{out} exists: nothing restored (--if-db-not-exists)\n")
    );
    assert_eq!(std::fs::read(&out).unwrap(), b"the application's own");

    // A first start: the replica holds nothing yet.
    let empty = TempDir::new("cli-first-start");
    let out = empty.path().join("app.db");
    let (u, o) = (empty.path().to_str().unwrap(), out.to_str().unwrap());
    let run = walrust(&[&["restore", u, "-o", o][..], &flags].concat());
    assert_eq!(code(&run), 0, "{}", text(&run.stderr));
    assert!(
        text(&run.stdout).starts_with("nothing restored (--if-replica-exists): nothing to restore")
    );
    assert_eq!(text(&run.stdout).lines().count(), 1);
    assert!(!out.exists());
    // Without the flag, the same is exit 3; with only the other flag, too.
    assert_eq!(
        code(&walrust(&["restore", u, "-o", o, "--if-db-not-exists"])),
        3
    );
}

#[test]
fn storage_errors_are_4() {
    let r = replica();
    let out = out_path(&r, "out.db");
    // A replica whose level-0 folder is not a folder cannot be listed.
    let broken = TempDir::new("cli-broken");
    std::fs::create_dir_all(broken.path().join("ltx")).unwrap();
    std::fs::write(broken.path().join("ltx/0"), b"not a directory").unwrap();
    let b = broken.path().to_str().unwrap();
    for args in [
        &["restore", b, "-o", &out][..],
        &["list", b],
        &["verify", b],
        &["compact", b],
    ] {
        let o = walrust(args);
        assert_eq!(code(&o), 4, "{args:?}: {}", text(&o.stderr));
    }
    // URLs that do not open: a file as the replica, S3 (not built yet), a malformed S3 URL.
    let file = r.dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    for u in [
        file.to_str().unwrap(),
        "s3://bucket/app",
        "s3://AKIA:hunter2@bucket/app",
        "relative/dir",
    ] {
        let o = walrust(&["restore", u, "-o", &out]);
        assert_eq!(code(&o), 4, "{u}: {}", text(&o.stderr));
        assert!(!text(&o.stderr).contains("hunter2"));
        assert_eq!(code(&walrust(&["list", u])), 4, "{u}");
    }
    assert!(!Path::new(&out).exists());
}

#[test]
fn a_flipped_byte_is_5() {
    let r = replica();
    let files = level_files(&r.store, 0);
    let path = r
        .root()
        .join(walrust::store::Layout::Fs.file_key(&files[3].key));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[110] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let out = out_path(&r, "damaged.db");
    let o = walrust(&["restore", &url(&r), "-o", &out]);
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.starts_with("walrust: integrity error"));
    // The advice names the restore point before the damaged file.
    let before = files[3].key.min_txid.get() - 1;
    assert!(
        err.contains(&format!("restore to TXID {before} or before")),
        "{err}"
    );
    assert!(!Path::new(&out).exists());
    assert!(!Path::new(&format!("{out}.tmp-walrust")).exists());

    let o = walrust(&["verify", &url(&r)]);
    assert_eq!(code(&o), 5);
    assert!(text(&o.stderr).starts_with("walrust: integrity error"));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["damaged"].as_array().unwrap().len(), 1);

    let o = walrust(&["compact", &url(&r)]);
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    // Restores before the damage still work.
    let out = out_path(&r, "before.db");
    assert_eq!(
        code(&walrust(&["restore", &url(&r), "-o", &out, "--txid", "4"])),
        0
    );
}

#[test]
fn a_damaged_only_snapshot_does_not_suggest_an_earlier_txid() {
    let mut r = Rep::new("cli-one-snapshot", 512);
    r.model.commit(&[1, 2, 3], 3, T0);
    r.snapshot(T0);
    r.flush();
    let snap = level_files(&r.store, 9);
    let path = r
        .root()
        .join(walrust::store::Layout::Fs.file_key(&snap[0].key));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[110] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    let out = out_path(&r, "out.db");
    let o = walrust(&["restore", &url(&r), "-o", &out]);
    assert_eq!(code(&o), 5, "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.starts_with("walrust: integrity error"), "{err}");
    assert!(err.contains("walrust_snapshot()"), "{err}");
    assert!(!err.contains("before it"), "{err}");
}

#[test]
fn a_closed_pipe_ends_the_listing_quietly() {
    let r = replica();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // like `| head` that has already exited
    let o = Command::new(env!("CARGO_BIN_EXE_walrust"))
        .args(["list", &url(&r)])
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", text(&o.stderr));
    assert!(o.stderr.is_empty(), "{}", text(&o.stderr));
}

#[test]
fn the_readme_documents_the_command_a_newcomer_meets() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    for needle in [
        "walrust compact URL [--dry-run] [--retention",
        "AWS_ENDPOINT_URL_S3",
        "or just `/absolute/dir`",
        "five commits within a second are usually one\n  restore point",
        "`-shm` files",
    ] {
        assert!(readme.contains(needle), "README.md lacks {needle:?}");
    }
    // Every exit code the help names has a row in the README's table.
    let help = text(&walrust(&["--help"]).stdout);
    assert!(help.contains("Exit codes:"), "{help}");
    for code in 0..=5 {
        assert!(
            readme.contains(&format!("\n| {code} | ")),
            "README.md lacks exit code {code}"
        );
    }
}

/// Runs `cmd` (nm, ldd) on `file`; its standard output. Fails the test if it cannot run.
fn inspect(cmd: &str, args: &[&str], file: &Path) -> String {
    let o = Command::new(cmd)
        .args(args)
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{cmd} {}: {e} (binutils and libc-bin are needed)",
                file.display()
            )
        });
    assert!(
        o.status.success(),
        "{cmd} {args:?} {} failed: {}",
        file.display(),
        text(&o.stderr)
    );
    text(&o.stdout)
}

/// Names of the symbols `nm` lists as defined in `file` (`-D`: the dynamic table).
fn defined_symbols(file: &Path, dynamic: bool) -> Vec<String> {
    let args: &[&str] = if dynamic {
        &["-D", "--defined-only"]
    } else {
        &["--defined-only"]
    };
    inspect("nm", args, file)
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// The extension cargo built beside this test binary (the crate is also a cdylib).
fn extension() -> std::path::PathBuf {
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    [deps, deps.parent().unwrap()]
        .iter()
        .map(|d| d.join("libwalrust.so"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("libwalrust.so not found near {}", exe.display()))
}

/// SPEC 1 and 7: the binary needs no SQLite and the extension never carries a second copy of
/// it. A statically linked SQLite defines `sqlite3_*` functions (`nm --defined-only`); a
/// dynamically linked one shows in `ldd`. Each listing must be non-empty and name something known to be there, so a
/// tool that prints nothing cannot pass.
#[test]
fn neither_the_binary_nor_the_extension_carries_sqlite() {
    let bin = Path::new(env!("CARGO_BIN_EXE_walrust"));
    let symbols = defined_symbols(bin, false);
    assert!(
        symbols.iter().any(|s| s == "main"),
        "nm found no `main` in {}: stripped? ({} symbols)",
        bin.display(),
        symbols.len()
    );
    let sqlite: Vec<&String> = symbols
        .iter()
        .filter(|s| s.starts_with("sqlite3") && *s != "sqlite3_walrust_init")
        .collect();
    assert!(sqlite.is_empty(), "the binary defines {sqlite:?}");
    let libs = inspect("ldd", &[], bin);
    assert!(libs.contains("libc.so"), "ldd shows no libc: {libs}");
    assert!(!libs.contains("sqlite"), "{libs}");

    let ext = extension();
    assert!(
        defined_symbols(&ext, true).contains(&"sqlite3_walrust_init".to_string()),
        "nm -D finds no exported entry point in {}",
        ext.display()
    );
    // The whole symbol table, local symbols too: a bundled SQLite's functions are not exported
    // from a cdylib, but they are defined in it.
    let symbols = defined_symbols(&ext, false);
    let sqlite: Vec<&String> = symbols
        .iter()
        .filter(|s| s.starts_with("sqlite3") && *s != "sqlite3_walrust_init")
        .collect();
    assert!(sqlite.is_empty(), "the extension defines {sqlite:?}");
    let libs = inspect("ldd", &[], &ext);
    assert!(libs.contains("libc.so"), "ldd shows no libc: {libs}");
    assert!(!libs.contains("sqlite"), "{libs}");
}
