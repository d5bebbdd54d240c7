//! The local-directory store: the shared store suite, plus what only a directory has (file
//! modes, mtimes as Litestream reads them, stray entries skipped).

mod store_suite;

use std::os::unix::fs::{symlink, PermissionsExt};
use std::time::UNIX_EPOCH;

use store_suite::{key, put, run_all, TempDir};
use walrust::store::{self, fs::FsStore, Store, Times};

#[test]
fn fs_store_passes_the_store_suite() {
    let dir = TempDir::new("fs-suite");
    let store = FsStore::new(dir.path().join("replica")).unwrap();
    run_all(&store);
}

#[test]
fn fs_store_opens_from_both_url_forms() {
    let dir = TempDir::new("fs-url");
    let root = dir.path().join("r");
    let a = store::open(root.to_str().unwrap()).unwrap();
    let b = store::open(&format!("file://{}", root.display())).unwrap();
    assert_eq!(a.describe(), b.describe());
    assert_eq!(a.describe(), format!("file://{}", root.display()));
}

#[test]
fn fs_store_lays_out_files_as_litestream_does() {
    let dir = TempDir::new("fs-layout");
    let root = dir.path().join("r");
    let store = FsStore::new(root.clone()).unwrap();
    let ts = 1_795_862_996_123;
    put(&store, dir.path(), key(9, 1, 0x2a), b"snap", ts);
    let path = root.join("ltx/9/0000000000000001-000000000000002a.ltx");
    let meta = std::fs::metadata(&path).unwrap();
    // Litestream's file backend reads ModTime back as the file's creation time.
    let mtime = meta.modified().unwrap().duration_since(UNIX_EPOCH).unwrap();
    assert_eq!(mtime.as_millis() as i64, ts);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let dmode = std::fs::metadata(root.join("ltx/9"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dmode & 0o777, 0o700);
    // No temp file is left behind.
    let names: Vec<_> = std::fs::read_dir(root.join("ltx/9")).unwrap().collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn fs_store_skips_stray_entries_and_never_follows_symlinks() {
    let dir = TempDir::new("fs-stray");
    let root = dir.path().join("r");
    let store = FsStore::new(root.clone()).unwrap();
    put(&store, dir.path(), key(0, 1, 1), b"one", 1000);
    let l0 = root.join("ltx/0");
    std::fs::write(l0.join("notes.txt"), b"x").unwrap();
    std::fs::write(l0.join("0000000000000002-0000000000000002.ltx.tmp"), b"x").unwrap();
    std::fs::create_dir(l0.join("0000000000000003-0000000000000003.ltx")).unwrap();
    let outside = dir.path().join("secret");
    std::fs::write(&outside, b"secret").unwrap();
    symlink(&outside, l0.join("0000000000000004-0000000000000004.ltx")).unwrap();
    std::fs::create_dir_all(root.join("ltx/10")).unwrap();
    std::fs::write(
        root.join("ltx/10/0000000000000005-0000000000000005.ltx"),
        b"x",
    )
    .unwrap();

    let listed = store.list(None, Times::Listed).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].key, key(0, 1, 1));
    let e = store.read(&key(0, 4, 4), None).err().unwrap();
    assert!(e.to_string().contains("does not follow"), "{e}");
}
