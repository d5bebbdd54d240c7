//! The LTX merge (`compact::merge`): newest page image wins, pages past the final commit are
//! dropped, a page cut off and regrown without a write becomes zeros, the lock page is never
//! written, the header is what Litestream's compactor writes, and a damaged input fails the merge.

mod compact_support;

use std::fs::File;
use std::io::BufWriter;

use compact_support::*;
use walrust::compact::merge::{merge, output_key};
use walrust::compact::ErrorKind;
use walrust::ltx::{Decoder, Encoder, Header, FLAG_NO_CHECKSUM};
use walrust::manifest::{self, Entry};
use walrust::restore::Target;
use walrust::store::{FileInfo, Store, WriteMeta};
use walrust::{Checksum, PageNo};

fn listed(store: &dyn Store, level: u32) -> Vec<FileInfo> {
    level_files(store, level)
}

/// Merges `inputs`, stores the result at `level` (with its manifest entry) and returns it.
fn merge_into(r: &Rep, level: u32, inputs: &[FileInfo]) -> (Header, FileInfo) {
    let m = merge(&r.store, inputs, None, &r.scratch()).unwrap();
    let meta = WriteMeta {
        timestamp_ms: m.header.timestamp_ms,
        sha256: m.sha256.clone(),
    };
    let info = r
        .store
        .write(&output_key(level, inputs), m.file.path(), &meta)
        .unwrap();
    assert_eq!(info.size, m.size);
    manifest::update(
        &r.store,
        &[Entry::new(r.store.layout(), &info, m.sha256)],
        &[],
    )
    .unwrap();
    (m.header, info)
}

/// The pages of a stored LTX file, decoded and checked.
fn pages_of(store: &dyn Store, info: &FileInfo) -> Vec<(u32, Vec<u8>)> {
    let mut dec = Decoder::new(store.read(&info.key, None).unwrap()).unwrap();
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(p) = dec.next_page(&mut buf).unwrap() {
        out.push((p.get(), buf.clone()));
    }
    dec.finish().unwrap();
    out
}

#[test]
fn merged_file_restores_like_its_inputs() {
    let mut r = Rep::new("merge-model", 512);
    let t = |s: i64| T0 + s * SEC;
    r.model.commit(&[1, 2, 3, 4], 4, t(1));
    r.snapshot(t(1));
    r.txn(&[2], 4, t(2));
    r.txn(&[3, 4], 6, t(3)); // grows: writes 5 and 6 too
    r.txn(&[1, 5], 6, t(4));
    r.txn(&[2], 3, t(5)); // shrinks: 4-6 go
    r.txn(&[3], 5, t(6)); // grows again: 4 and 5 are written
    r.txn(&[1], 5, t(7));
    r.flush();

    let inputs = listed(&r.store, 0);
    let (h, info) = merge_into(&r, 1, &inputs[1..5]); // TXIDs 3-6
    assert_eq!((h.min_txid, h.max_txid), (txid(3), txid(6)));
    assert_eq!(h.commit, r.model.commits[6]);
    assert_eq!(h.timestamp_ms, t(6));
    assert_eq!(h.flags, FLAG_NO_CHECKSUM);
    assert_eq!(info.created_at_ms, t(6));
    // Newest image of each page written in 3-6 that survives at 6.
    let pages = pages_of(&r.store, &info);
    let want: Vec<u32> = r.model.file_pages(3, 6);
    assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), want);
    for (p, data) in &pages {
        assert!(*data == r.model.page(6, *p), "page {p}");
    }

    // Restores through the merged file reach every file end they could before.
    let scratch = r.scratch();
    for (target, want) in [(6, 6), (7, 7), (2, 2), (4, 4)] {
        check_restore(
            &r.store,
            &r.model,
            &scratch,
            Target::Txid(txid(target)),
            want,
        );
    }
    let plan = walrust::restore::plan(&r.store, Target::Txid(txid(6))).unwrap();
    assert_eq!(plan.files.len(), 3, "snapshot, level-0 2-2, the merge 3-6");

    // Merging merges (any levels) works the same.
    let (_, all) = merge_into(&r, 2, &[inputs[0], info, inputs[5]]);
    assert_eq!(all.key, key(2, 2, 7));
    check_restore(&r.store, &r.model, &scratch, Target::Latest, 7);
    assert_eq!(
        walrust::restore::plan(&r.store, Target::Latest)
            .unwrap()
            .files
            .len(),
        2
    );
}

/// Hand-encodes an incremental file.
fn put_raw(r: &Rep, min: u64, commit: u32, pages: &[(u32, Vec<u8>)], page_size: u32) -> FileInfo {
    let h = Header::new(page_size, commit, txid(min), txid(min), T0 + min as i64);
    let src = r.scratch().join("raw.ltx");
    let mut enc = Encoder::new(BufWriter::new(File::create(&src).unwrap()), h).unwrap();
    for (p, data) in pages {
        enc.write_page(PageNo::new(*p).unwrap(), data).unwrap();
    }
    enc.finish(Checksum(0)).unwrap();
    let meta = WriteMeta {
        timestamp_ms: T0 + min as i64,
        sha256: manifest::sha256_64_file(&src).unwrap().0,
    };
    r.store.write(&key(0, min, min), &src, &meta).unwrap()
}

#[test]
fn a_page_cut_off_and_regrown_without_a_write_is_zeros_like_in_a_restore() {
    let r = Rep::new("merge-regrow", 512);
    let ps = 512;
    let full: Vec<(u32, Vec<u8>)> = (1..=3).map(|p| (p, page_bytes(p, 1, ps))).collect();
    // The snapshot: three pages. Then page 3 rewritten, the database cut to 2 pages, then back
    // to 3 pages with only page 1 written (SQLite would write page 3; a merge must not care).
    let h = Header::new(ps, 3, txid(1), txid(1), T0 + 1);
    let src = r.scratch().join("snap.ltx");
    let mut enc = Encoder::new(File::create(&src).unwrap(), h).unwrap();
    for (p, d) in &full {
        enc.write_page(PageNo::new(*p).unwrap(), d).unwrap();
    }
    enc.finish(Checksum(0)).unwrap();
    let meta = WriteMeta {
        timestamp_ms: T0 + 1,
        sha256: manifest::sha256_64_file(&src).unwrap().0,
    };
    r.store.write(&key(9, 1, 1), &src, &meta).unwrap();
    let a = put_raw(&r, 2, 3, &[(3, page_bytes(3, 2, ps))], ps);
    let b = put_raw(&r, 3, 2, &[], ps);
    let c = put_raw(&r, 4, 3, &[(1, page_bytes(1, 4, ps))], ps);

    let one_by_one = r.scratch().join("seq.db");
    walrust::restore::restore(&r.store, &one_by_one, Target::Latest)
        .unwrap()
        .commit()
        .unwrap();
    let (h, merged) = merge_into(&r, 1, &[a, b, c]);
    assert_eq!(h.commit, 3);
    let pages = pages_of(&r.store, &merged);
    assert_eq!(pages.len(), 2);
    assert_eq!(pages[0], (1, page_bytes(1, 4, ps)));
    assert_eq!(pages[1], (3, vec![0; ps as usize]));
    std::fs::remove_file(
        r.store
            .root()
            .join("ltx/0/0000000000000002-0000000000000002.ltx"),
    )
    .unwrap();
    let via_merge = r.scratch().join("merged.db");
    walrust::restore::restore(&r.store, &via_merge, Target::Latest)
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(
        std::fs::read(&one_by_one).unwrap(),
        std::fs::read(&via_merge).unwrap()
    );
}

#[test]
fn the_lock_page_is_never_written() {
    let r = Rep::new("merge-lock", 65536);
    let ps = 65536;
    let lock = walrust::types::lock_page(ps); // 16385
    let a = put_raw(
        &r,
        2,
        lock + 3,
        &[
            (lock - 1, page_bytes(lock - 1, 2, ps)),
            (lock + 1, page_bytes(lock + 1, 2, ps)),
        ],
        ps,
    );
    let b = put_raw(&r, 3, lock - 2, &[], ps);
    let c = put_raw(
        &r,
        4,
        lock + 3,
        &[(lock + 3, page_bytes(lock + 3, 4, ps))],
        ps,
    );
    let (h, merged) = merge_into(&r, 1, &[a, b, c]);
    assert_eq!(h.commit, lock + 3);
    let got: Vec<(u32, bool)> = pages_of(&r.store, &merged)
        .into_iter()
        .map(|(p, d)| (p, d.iter().all(|&x| x == 0)))
        .collect();
    // Cut to lock-2 by b: lock-1 and everything above is zeros again, but the lock page.
    assert_eq!(
        got,
        [
            (lock - 1, true),
            (lock + 1, true),
            (lock + 2, true),
            (lock + 3, false)
        ]
    );
}

#[test]
fn a_damaged_input_fails_the_merge() {
    let mut r = Rep::new("merge-damage", 512);
    r.model.commit(&[1, 2], 2, T0);
    r.snapshot(T0);
    for i in 1..=3 {
        r.txn(&[1], 2, T0 + i * SEC);
    }
    r.flush();
    let inputs = listed(&r.store, 0);

    // A flipped byte in a page: the LTX checksum catches it.
    let path = r.root().join(r.store.layout().file_key(&inputs[1].key));
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[150] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();
    let e = merge(&r.store, &inputs, None, &r.scratch()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity, "{e}");
    assert!(
        e.to_string().starts_with("walrust: integrity error: "),
        "{e}"
    );
    bytes[150] ^= 0x40;
    std::fs::write(&path, &bytes).unwrap();

    // A file that is valid LTX but not what the manifest says.
    let (m, _) = manifest::load(&r.store).unwrap().unwrap();
    assert!(merge(&r.store, &inputs, Some(&m), &r.scratch()).is_ok());
    let mut entry = m.get(&inputs[2].key).unwrap().clone();
    entry.sha256 = "0123456789abcdef".into();
    let m2 = {
        let mut m2 = m.clone();
        m2.apply(&[entry], &[]);
        m2
    };
    let e = merge(&r.store, &inputs, Some(&m2), &r.scratch()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Integrity);
    assert!(e.to_string().contains("SHA-256"), "{e}");

    // Inputs that do not continue each other are refused.
    let e = merge(&r.store, &[inputs[0], inputs[2]], None, &r.scratch()).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Invalid);
    // Nothing is left in the scratch directory but what the test put there.
    let left: Vec<_> = std::fs::read_dir(r.scratch())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("walrust-compact-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
