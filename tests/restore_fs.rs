//! Restore from a local-directory replica built with the LTX encoder (`restore_support`): every
//! restore is compared page by page with the model's state at the TXID restore says it reached.

mod restore_support;
mod store_suite;

use std::fs::File;

use restore_support::*;
use store_suite::key;
use walrust::manifest;
use walrust::restore::{restore, temp_path, ErrorKind, Target};
use walrust::store::Store;
use walrust::types::lock_page;

#[test]
fn restores_latest_by_txid_and_by_time() {
    let r = standard_replica("restore-targets", false);

    let out = r.out("latest.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(10));
    r.assert_db(&out, 10);
    assert!(!temp_path(&out).exists());

    // TXID targets stop at the newest restore point at or before them.
    for (target, reached) in [
        (3, 3),
        (4, 4),
        (5, 4),
        (6, 6),
        (8, 6),
        (9, 9),
        (10, 10),
        (99, 10),
    ] {
        let out = r.out(&format!("txid-{target}.db"));
        assert_eq!(
            r.restore_to(&out, Target::Txid(txid(target))).unwrap(),
            txid(reached)
        );
        r.assert_db(&out, reached);
    }

    // Time targets take restore points committed at or before them.
    for (at, reached) in [
        (time_of(9), 9),
        (time_of(9) - 1, 6),
        (time_of(3), 3),
        (time_of(10) + 86_400_000, 10),
    ] {
        let out = r.out(&format!("time-{at}.db"));
        let tmp = restore(&r.store, &out, Target::Time(at)).unwrap();
        assert_eq!(tmp.txid(), txid(reached));
        assert_eq!(tmp.timestamp_ms(), time_of(reached));
        assert_eq!(tmp.page_size(), 4096);
        tmp.commit().unwrap();
        r.assert_db(&out, reached);
    }

    let e = r
        .restore_to(&r.out("early.db"), Target::Time(time_of(3) - 1))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NothingToRestore);
    assert!(
        e.to_string().starts_with("walrust: nothing to restore: "),
        "{e}"
    );
    let e = r
        .restore_to(&r.out("early.db"), Target::Txid(txid(2)))
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NothingToRestore);
    assert_nothing_at(&r.out("early.db"));
}

#[test]
fn verifies_database_checksums_when_files_carry_them() {
    let r = standard_replica("restore-checksums", true);
    let out = r.out("latest.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(10));
    r.assert_db(&out, 10);
    let out = r.out("six.db");
    assert_eq!(r.restore_to(&out, Target::Txid(txid(8))).unwrap(), txid(6));
    r.assert_db(&out, 6);

    // An incremental from another history: valid on its own, wrong for this chain.
    let other = Replica::new("restore-checksums-other", {
        let mut m = ten_txns();
        m.states.get_mut(&3).unwrap().insert(1, vec![7; 4096]);
        m
    });
    let k = other.add(0, 4, 4, true);
    std::fs::copy(other.file_path(&k), r.file_path(&k)).unwrap();
    r.store.delete(&[key(1, 4, 9)]).unwrap();
    manifest::update(&r.store, &[], &[key(1, 4, 9), k]).unwrap();
    let out = r.out("other.db");
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(e.to_string().contains("another history"), "{e}");
    assert_nothing_at(&out);
}

#[test]
fn a_flipped_byte_is_an_integrity_error_and_leaves_nothing() {
    let r = standard_replica("restore-flip", false);
    let k = key(0, 10, 10);
    let path = r.file_path(&k);
    let mut bytes = std::fs::read(&path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    let out = r.out("flipped.db");
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert_eq!(e.kind().exit_code(), 5);
    assert!(e.to_string().starts_with("walrust: integrity error"), "{e}");
    assert!(
        e.to_string()
            .contains("000000000000000a-000000000000000a.ltx"),
        "names the file: {e}"
    );
    assert_nothing_at(&out);

    // The damage is after TXID 9: restoring up to there still works.
    assert_eq!(r.restore_to(&out, Target::Txid(txid(9))).unwrap(), txid(9));
    r.assert_db(&out, 9);
}

#[test]
fn a_manifest_hash_mismatch_is_an_integrity_error() {
    let r = standard_replica("restore-manifest-sha", false);
    let (m, _) = manifest::load(&r.store).unwrap().unwrap();
    let mut e = m.get(&key(9, 1, 3)).unwrap().clone();
    e.sha256 = "0123456789abcdef".into();
    manifest::update(&r.store, &[e], &[]).unwrap();

    let out = r.out("sha.db");
    let err = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Integrity);
    assert!(
        err.to_string()
            .contains("manifest.json says 0123456789abcdef"),
        "{err}"
    );
    assert_nothing_at(&out);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let r = standard_replica("restore-missing", false);
    // Deleted behind walrust's back: the manifest still names it.
    r.store.delete(&[key(0, 5, 6), key(1, 4, 9)]).unwrap();
    let out = r.out("missing.db");
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(
        e.to_string()
            .contains("manifest.json names ltx/0/0000000000000005"),
        "{e}"
    );
    assert_nothing_at(&out);

    // Without a manifest entry, the hole in the TXIDs is what gives it away.
    manifest::update(&r.store, &[], &[key(0, 5, 6), key(1, 4, 9)]).unwrap();
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(e.to_string().contains("has a gap"), "{e}");
    assert!(e.to_string().contains("reach TXID 0000000000000004"), "{e}");
    assert_nothing_at(&out);
    assert_eq!(r.restore_to(&out, Target::Txid(txid(4))).unwrap(), txid(4));
}

#[test]
fn refuses_existing_outputs_and_empty_replicas() {
    let r = standard_replica("restore-refuse", false);
    let out = r.out("exists.db");
    std::fs::write(&out, b"precious").unwrap();
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("already exists"), "{e}");
    assert_eq!(std::fs::read(&out).unwrap(), b"precious");

    // A WAL or journal left by a database that was at the path: SQLite would apply it to the
    // restored file.
    for leftover in ["-wal", "-journal"] {
        let out = r.out(&format!("left{leftover}.db"));
        let left = format!("{}{leftover}", out.display());
        std::fs::write(&left, b"an earlier database's").unwrap();
        let e = r.restore_to(&out, Target::Latest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Invalid);
        assert!(e.to_string().contains(&left), "{e}");
        assert!(!out.exists() && !temp_path(&out).exists());
        std::fs::remove_file(&left).unwrap();
        r.restore_to(&out, Target::Latest).unwrap();
    }

    // The temp file of a restore that runs (it holds the file's lock) is left alone and this
    // restore refused; once no restore holds it (one that was killed), it is removed and the
    // restore goes on.
    let out = r.out("busy.db");
    std::fs::write(temp_path(&out), b"other restore").unwrap();
    let held = std::fs::File::open(temp_path(&out)).unwrap();
    held.lock().unwrap();
    let e = r.restore_to(&out, Target::Latest).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert!(e.to_string().contains("another restore"), "{e}");
    assert_eq!(std::fs::read(temp_path(&out)).unwrap(), b"other restore");
    drop(held);
    r.restore_to(&out, Target::Latest).unwrap();
    assert!(out.exists() && !temp_path(&out).exists());

    let e = r
        .restore_to(&r.out("no/such/dir/x.db"), Target::Latest)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);

    for url in [
        r.dir.path().join("empty").display().to_string(),
        r.dir.path().join("never-created").display().to_string(),
    ] {
        std::fs::create_dir_all(r.dir.path().join("empty")).unwrap();
        let store = walrust::store::open(&url).unwrap();
        let e = restore(store.as_ref(), &r.out("e.db"), Target::Latest).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NothingToRestore);
        assert_eq!(e.kind().exit_code(), 3);
        assert_nothing_at(&r.out("e.db"));
    }
}

#[test]
fn the_temp_file_is_removed_unless_committed() {
    let r = standard_replica("restore-guard", false);
    let out = r.out("guard.db");
    let tmp = restore(&r.store, &out, Target::Latest).unwrap();
    assert_eq!(tmp.path(), temp_path(&out));
    assert!(tmp.path().exists());
    assert!(!out.exists());
    drop(tmp);
    assert_nothing_at(&out);

    let tmp = restore(&r.store, &out, Target::Latest).unwrap();
    std::fs::write(&out, b"appeared meanwhile").unwrap();
    let e = tmp.commit().unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    assert_eq!(std::fs::read(&out).unwrap(), b"appeared meanwhile");
    assert!(!temp_path(&out).exists());
}

#[test]
fn restores_a_6_mib_snapshot_then_40_small_incrementals() {
    // A 6 MiB snapshot and 40 small incrementals: the restore reaches the newest TXID with the
    // model's bytes. How the files are fetched (the large one streamed, the small ones
    // prefetched) cannot be seen from here; this test checks only the result.
    let mut txns: Vec<(Vec<u32>, u32)> = vec![((1..=1536).collect(), 1536)];
    for t in 2..=41u32 {
        txns.push((vec![t, 1536 + t], 1536 + t));
    }
    let refs: Vec<(&[u32], u32)> = txns.iter().map(|(p, c)| (p.as_slice(), *c)).collect();
    let r = Replica::new("restore-large", Model::run(4096, &refs));
    r.add(9, 1, 1, false);
    for t in 2..=41 {
        r.add(0, t, t, false);
    }
    let out = r.out("large.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(41));
    r.assert_db(&out, 41);
}

#[test]
fn the_lock_page_stays_zero_past_one_gibibyte() {
    // 64 KiB pages: the lock page is 16385. The temp file is sparse, so this is cheap.
    let ps = 65536;
    let lock = lock_page(ps);
    let r = Replica::new(
        "restore-lock-page",
        Model::run(ps, &[(&[1, 2], 2), (&[2, lock - 1, lock + 1], lock + 1)]),
    );
    r.add(9, 1, 1, false);
    r.add(0, 2, 2, false);
    let out = r.out("big.db");
    assert_eq!(r.restore_to(&out, Target::Latest).unwrap(), txid(2));
    let f = File::open(&out).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (lock as u64 + 1) * ps as u64);
    use std::os::unix::fs::FileExt;
    let mut page = vec![0u8; ps as usize];
    for p in [1, 2, 3, lock - 1, lock, lock + 1] {
        f.read_exact_at(&mut page, (p as u64 - 1) * ps as u64)
            .unwrap();
        assert!(page == r.model.page(2, p), "page {p}");
    }
}
