//! Codec-level tests: round trips, corruption, truncation, page rules, v1 and legacy frames.

use std::io::Cursor;

use super::*;
use crate::types::{lock_page, Checksum, PageNo};

fn t(v: u64) -> Txid {
    Txid::new(v).unwrap()
}

fn p(n: u32) -> PageNo {
    PageNo::new(n).unwrap()
}

/// A page whose content depends on its number, partly compressible.
fn page(pgno: u32, size: u32) -> Vec<u8> {
    let mut x = pgno.wrapping_mul(2_654_435_761);
    (0..size)
        .map(|i| {
            if i % 4 == 0 {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
            }
            if i < size / 2 {
                (x >> (8 * (i % 4))) as u8
            } else {
                (pgno % 7) as u8
            }
        })
        .collect()
}

fn encode(header: Header, pages: &[(u32, Vec<u8>)]) -> Vec<u8> {
    let mut enc = Encoder::new(Vec::new(), header).unwrap();
    for (n, data) in pages {
        enc.write_page(p(*n), data).unwrap();
    }
    enc.finish(Checksum(0)).unwrap().0
}

type Pages = Vec<(u32, Vec<u8>)>;

fn decode_all(bytes: &[u8]) -> Result<(Header, Pages, Trailer), Error> {
    let mut d = Decoder::new(bytes)?;
    let mut out = Vec::new();
    let mut buf = Vec::new();
    while let Some(n) = d.next_page(&mut buf)? {
        out.push((n.get(), buf.clone()));
    }
    let h = d.header().clone();
    Ok((h, out, d.finish()?))
}

fn snapshot_pages(commit: u32, size: u32) -> Pages {
    (1..=commit).map(|n| (n, page(n, size))).collect()
}

#[test]
fn round_trips_every_page_size() {
    for shift in 9..=16 {
        let size = 1u32 << shift;
        let h = Header::new(size, 5, Txid::ONE, t(3), 1_700_000_000_000);
        let pages = snapshot_pages(5, size);
        let bytes = encode(h.clone(), &pages);
        let (h2, got, trailer) = decode_all(&bytes).unwrap();
        assert_eq!(h2, h);
        assert_eq!(got, pages, "page size {size}");
        assert_eq!(trailer.post_apply_checksum, Checksum(0));
        assert_eq!(trailer.file_checksum.0 & CHECKSUM_FLAG, CHECKSUM_FLAG);
        assert_eq!(verify(&bytes[..]).unwrap(), (h, trailer));
    }
}

#[test]
fn layout_matches_the_v3_format() {
    let h = Header::new(512, 3, t(4), t(4), 7);
    let bytes = encode(h, &[(2, vec![0u8; 512])]);
    assert_eq!(&bytes[0..8], b"LTX1\0\0\0\x02");
    // Page frame at offset 100: pgno 2, flags 0x0001, compressed size, LZ4 block.
    assert_eq!(&bytes[100..106], &[0, 0, 0, 2, 0, 1]);
    let clen = u32::from_be_bytes(bytes[106..110].try_into().unwrap()) as usize;
    let after = 110 + clen;
    assert_eq!(&bytes[after..after + 6], &[0; 6]);
    // Index: pgno 2, offset 100, size 10+clen, terminator; then its length as u64.
    let index = &bytes[after + 6..bytes.len() - 24];
    assert_eq!(index, &[2, 100, (10 + clen) as u8, 0]);
    assert_eq!(
        &bytes[bytes.len() - 24..bytes.len() - 16],
        &4u64.to_be_bytes()
    );
    let idx = read_page_index(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(idx.len(), 1);
    let e = idx[0];
    let mut out = Vec::new();
    let frame = &bytes[e.offset as usize..(e.offset + e.size) as usize];
    assert_eq!(decode_page_frame(frame, 512, &mut out).unwrap(), p(2));
    assert_eq!(out, vec![0u8; 512]);
}

#[test]
fn incremental_with_checksums_round_trips() {
    let mut h = Header::new(4096, 9, t(5), t(8), 1);
    h.flags = 0;
    h.pre_apply_checksum = Checksum(CHECKSUM_FLAG | 0x1234);
    let pages = vec![(2, page(2, 4096)), (9, page(9, 4096))];
    let mut enc = Encoder::new(Vec::new(), h.clone()).unwrap();
    for (n, d) in &pages {
        enc.write_page(p(*n), d).unwrap();
    }
    let post = Checksum(CHECKSUM_FLAG | 0x99);
    let (bytes, trailer) = enc.finish(post).unwrap();
    let (h2, got, t2) = decode_all(&bytes).unwrap();
    assert_eq!((h2, got, t2), (h, pages, trailer));
    assert_eq!(trailer.post_apply_checksum, post);
}

#[test]
fn every_corrupted_byte_is_caught() {
    let h = Header::new(512, 4, Txid::ONE, t(2), 99);
    let bytes = encode(h, &snapshot_pages(4, 512));
    for i in 0..bytes.len() {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        match decode_all(&bad) {
            Err(e) => assert!(e.is_integrity(), "{i}: {e}"),
            Ok(_) => panic!("corruption at byte {i} not detected"),
        }
    }
}

#[test]
fn content_corruption_is_a_checksum_mismatch() {
    let h = Header::new(4096, 2, Txid::ONE, t(1), 0);
    let mut bytes = encode(h, &snapshot_pages(2, 4096));
    let n = bytes.len();
    bytes[n - 1] ^= 1; // the stored file checksum itself
    assert!(matches!(
        decode_all(&bytes),
        Err(Error::ChecksumMismatch { .. })
    ));
    bytes[n - 1] ^= 1;
    bytes[33] ^= 1; // timestamp: valid header, wrong checksum
    assert!(matches!(
        decode_all(&bytes),
        Err(Error::ChecksumMismatch { .. })
    ));
}

#[test]
fn truncated_files_are_invalid() {
    let h = Header::new(1024, 3, Txid::ONE, t(1), 0);
    let bytes = encode(h, &snapshot_pages(3, 1024));
    for cut in [0, 10, 99, 100, 105, 200, bytes.len() - 30, bytes.len() - 1] {
        let e = decode_all(&bytes[..cut]).unwrap_err();
        assert!(e.is_integrity(), "cut at {cut}: {e}");
    }
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode_all(&longer).unwrap_err().is_integrity());
}

#[test]
fn encoder_enforces_page_rules() {
    let snap = Header::new(4096, 3, Txid::ONE, t(1), 0);
    let mut e = Encoder::new(Vec::new(), snap.clone()).unwrap();
    e.write_page(p(2), &page(2, 4096)).unwrap_err();
    e.write_page(p(1), &page(1, 4096)).unwrap();
    e.write_page(p(2), &page(2, 100)).unwrap_err();
    e.write_page(p(2), &page(2, 4096)).unwrap();
    assert!(e.finish(Checksum(0)).is_err(), "snapshot missing page 3");

    let inc = Header::new(4096, 10, t(2), t(2), 0);
    let mut e = Encoder::new(Vec::new(), inc).unwrap();
    e.write_page(p(5), &page(5, 4096)).unwrap();
    e.write_page(p(5), &page(5, 4096)).unwrap_err();
    e.write_page(p(4), &page(4, 4096)).unwrap_err();
    e.write_page(p(11), &page(11, 4096)).unwrap_err();
    e.write_page(p(10), &page(10, 4096)).unwrap();
    e.finish(Checksum(CHECKSUM_FLAG)).unwrap_err(); // no-checksum file
    let mut bad = snap;
    bad.version = 1;
    assert!(matches!(
        Encoder::new(Vec::new(), bad),
        Err(Error::Unsupported(_))
    ));
}

#[test]
fn lock_page_is_skipped_near_one_gibibyte() {
    // 64 KiB pages put the lock page at 16385. An incremental around it (synthetic page numbers,
    // commit past the boundary) round-trips, and the lock page itself is refused both ways.
    let size = 65536;
    let lock = lock_page(size);
    let h = Header::new(size, lock + 3, t(7), t(7), 0);
    let pages = vec![
        (lock - 1, page(lock - 1, size)),
        (lock + 1, page(lock + 1, size)),
        (lock + 3, page(lock + 3, size)),
    ];
    let bytes = encode(h.clone(), &pages);
    assert_eq!(decode_all(&bytes).unwrap().1, pages);
    let mut e = Encoder::new(Vec::new(), h).unwrap();
    e.write_page(p(lock), &page(lock, size)).unwrap_err();

    // Patch a page number in an encoded file to the lock page: the decoder refuses it even
    // before checking the checksum.
    let mut bad = bytes.clone();
    bad[100..104].copy_from_slice(&lock.to_be_bytes());
    let e = decode_all(&bad).unwrap_err();
    assert!(
        matches!(&e, Error::Invalid(m) if m.contains("lock page")),
        "{e}"
    );
}

#[test]
fn file_names_round_trip_strictly() {
    let name = file_name(Txid::ONE, t(0xabc));
    assert_eq!(name, "0000000000000001-0000000000000abc.ltx");
    assert_eq!(parse_file_name(&name), Some((Txid::ONE, t(0xabc))));
    for bad in [
        "0000000000000001-0000000000000ABC.ltx",
        "0000000000000001-0000000000000abc.ltx.tmp",
        "000000000000001-0000000000000abc.ltx",
        "0000000000000000-0000000000000001.ltx",
        "0000000000000002-0000000000000001.ltx",
        "0000000000000001_0000000000000abc.ltx",
        "+000000000000001-0000000000000abc.ltx",
        "0000000000000001-0000000000000abc",
    ] {
        assert_eq!(parse_file_name(bad), None, "{bad}");
    }
}

#[test]
fn reads_legacy_frame_pages() {
    // Litestream 0.5.0-0.5.15 wrote v3 page frames without the size flag: page header with
    // flags 0, then an LZ4 frame. The checksum covers header + decompressed data as usual.
    let size = 4096u32;
    let h = Header::new(size, 4, t(3), t(3), 5);
    let pages = [(2u32, page(2, size)), (4, page(4, size))];
    let mut file = h.to_bytes().to_vec();
    let mut digest = checksum::CRC64.digest();
    digest.update(&file);
    let mut index = Vec::new();
    for (n, data) in &pages {
        let offset = file.len() as u64;
        let ph = page::page_header_bytes(*n, 0);
        file.extend_from_slice(&ph);
        file.extend_from_slice(&lz4frame::write_frame(data));
        digest.update(&ph);
        digest.update(data);
        for v in [u64::from(*n), offset, file.len() as u64 - offset] {
            index::put_uvarint(&mut index, v);
        }
    }
    index.push(0);
    let tail = [
        &[0u8; 6][..],
        &index,
        &(index.len() as u64).to_be_bytes(),
        &[0u8; 8],
    ]
    .concat();
    digest.update(&tail);
    file.extend_from_slice(&tail);
    file.extend_from_slice(&checksum::flagged(digest).0.to_be_bytes());

    let (h2, got, _) = decode_all(&file).unwrap();
    assert_eq!(h2.version, 3);
    assert_eq!(got, pages.to_vec());
}

fn v1_file(compress: bool, snapshot: bool) -> (Vec<u8>, Pages) {
    let flags = if compress {
        litetx::HeaderFlags::COMPRESS_LZ4
    } else {
        litetx::HeaderFlags::empty()
    };
    let (min, pre, pages) = if snapshot {
        (1, None, snapshot_pages(3, 4096))
    } else {
        let pages = vec![(1, page(1, 4096)), (3, page(3, 4096))];
        (4, Some(litetx::Checksum::new(77)), pages)
    };
    let header = litetx::Header {
        flags,
        page_size: litetx::PageSize::new(4096).unwrap(),
        commit: litetx::PageNum::new(3).unwrap(),
        min_txid: litetx::TXID::new(min).unwrap(),
        max_txid: litetx::TXID::new(6).unwrap(),
        timestamp: std::time::UNIX_EPOCH + std::time::Duration::from_millis(1_600_000_000_000),
        pre_apply_checksum: pre,
    };
    let mut buf = Vec::new();
    let mut enc = litetx::Encoder::new(&mut buf, &header).unwrap();
    for (n, d) in &pages {
        enc.encode_page(litetx::PageNum::new(*n).unwrap(), d)
            .unwrap();
    }
    enc.finish(litetx::Checksum::new(88)).unwrap();
    (buf, pages)
}

#[test]
fn reads_v1_files_from_litetx() {
    for compress in [false, true] {
        for snapshot in [false, true] {
            let (bytes, pages) = v1_file(compress, snapshot);
            let (h, got, trailer) = decode_all(&bytes).unwrap();
            assert_eq!(h.version, 1, "compress={compress} snapshot={snapshot}");
            assert_eq!(h.flags & 1, u32::from(compress));
            assert_eq!(h.timestamp_ms, 1_600_000_000_000);
            assert_eq!(h.is_snapshot(), snapshot);
            assert_eq!(got, pages);
            assert_eq!(trailer.post_apply_checksum, Checksum(CHECKSUM_FLAG | 88));
            verify(&bytes[..]).unwrap();

            // Flip a byte inside the last page's data (uncompressed) or the frame (compressed).
            let mut bad = bytes.clone();
            let at = bad.len() - 16 - 200;
            bad[at] ^= 0x10;
            let e = decode_all(&bad).unwrap_err();
            assert!(e.is_integrity(), "{e}");
            let mut bad = bytes.clone();
            let n = bad.len();
            bad[n - 1] ^= 1;
            match decode_all(&bad).unwrap_err() {
                Error::ChecksumMismatch { expected, actual } => {
                    assert_ne!(expected, actual);
                    assert_eq!(expected.0 ^ 1, actual.0);
                }
                e => panic!("{e}"),
            }
            let e = decode_all(&bytes[..bytes.len() - 5]).unwrap_err();
            assert!(e.is_integrity(), "{e}");
        }
    }
}

#[test]
fn streams_a_large_file_through_a_reader() {
    // 3000 pages of 4 KiB through a non-slice reader: constant buffers, correct offsets.
    let size = 4096;
    let h = Header::new(size, 3000, Txid::ONE, t(9), 0);
    let mut enc = Encoder::new(Vec::new(), h).unwrap();
    for n in 1..=3000 {
        enc.write_page(p(n), &page(n, size)).unwrap();
    }
    let (bytes, _) = enc.finish(Checksum(0)).unwrap();
    let mut d = Decoder::new(std::io::BufReader::with_capacity(1000, Cursor::new(&bytes))).unwrap();
    let mut buf = Vec::new();
    for n in 1..=3000 {
        assert_eq!(d.next_page(&mut buf).unwrap(), Some(p(n)));
        if n % 997 == 0 {
            assert_eq!(buf, page(n, size));
        }
    }
    d.finish().unwrap();
    let idx = read_page_index(&mut Cursor::new(&bytes)).unwrap();
    assert_eq!(idx.len(), 3000);
    let e = idx[1234];
    let mut out = Vec::new();
    let frame = &bytes[e.offset as usize..(e.offset + e.size) as usize];
    assert_eq!(decode_page_frame(frame, size, &mut out).unwrap(), e.pgno);
    assert_eq!(out, page(e.pgno.get(), size));
}

#[test]
fn finish_without_reading_pages_still_verifies() {
    let h = Header::new(4096, 3, Txid::ONE, t(1), 0);
    let mut bytes = encode(h, &snapshot_pages(3, 4096));
    Decoder::new(&bytes[..]).unwrap().finish().unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    assert!(Decoder::new(&bytes[..]).unwrap().finish().is_err());
}
