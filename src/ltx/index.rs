//! The page index: after the page block, one entry per page in ascending page order, each three
//! unsigned LEB128 varints (page number, absolute offset of the page frame in the file, frame size
//! including its header and size prefix), then a zero varint, then a big-endian u64 giving the
//! byte length of the entries plus terminator. The trailer follows.
//!
//! Litestream reads it to fetch single pages with ranged reads (its VFS and `FetchPageIndex`);
//! its restore path parses it but does not use it. [`read_page_index`] is the ranged-read helper.

use std::io::{Read, Seek, SeekFrom};

use super::header::{HEADER_SIZE, TRAILER_SIZE};
use super::Error;
use crate::types::PageNo;

/// Where one page frame lies in an LTX file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageIndexEntry {
    pub pgno: PageNo,
    /// Offset of the page header from the start of the file.
    pub offset: u64,
    /// Size of the whole frame: page header, size prefix and compressed data.
    pub size: u64,
}

pub(crate) fn put_uvarint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// Reads one varint a byte at a time through `next_byte`, with Go `binary.ReadUvarint`'s
/// overflow rule (at most 10 bytes, the tenth at most 1).
pub(crate) fn read_uvarint(mut next_byte: impl FnMut() -> Result<u8, Error>) -> Result<u64, Error> {
    let mut v = 0u64;
    for i in 0..10 {
        let b = next_byte()?;
        if b < 0x80 {
            if i == 9 && b > 1 {
                break;
            }
            return Ok(v | (u64::from(b) << (7 * i)));
        }
        v |= u64::from(b & 0x7f) << (7 * i);
    }
    Err(Error::Invalid("page index varint overflows 64 bits".into()))
}

/// Parses the page index entries from `bytes` (entries, then the zero terminator, nothing else).
pub fn parse_page_index(bytes: &[u8]) -> Result<Vec<PageIndexEntry>, Error> {
    let mut pos = 0usize;
    let mut next = || {
        let b = *bytes
            .get(pos)
            .ok_or_else(|| Error::Invalid("page index is truncated".into()))?;
        pos += 1;
        Ok(b)
    };
    let mut out = Vec::new();
    loop {
        let pgno = read_uvarint(&mut next)?;
        if pgno == 0 {
            break;
        }
        let offset = read_uvarint(&mut next)?;
        let size = read_uvarint(&mut next)?;
        let pgno = u32::try_from(pgno)
            .ok()
            .and_then(PageNo::new)
            .ok_or_else(|| Error::Invalid(format!("page index entry for page {pgno}")))?;
        if out.last().is_some_and(|e: &PageIndexEntry| e.pgno >= pgno) {
            return Err(Error::Invalid("page index is not in page order".into()));
        }
        out.push(PageIndexEntry { pgno, offset, size });
    }
    if pos != bytes.len() {
        return Err(Error::Invalid("trailing bytes after the page index".into()));
    }
    Ok(out)
}

/// Reads just the page index of a seekable v3 LTX file (the trailer and the index, nothing
/// else). Checksums are not verified: that needs the whole file ([`super::verify`]).
pub fn read_page_index<R: Read + Seek>(r: &mut R) -> Result<Vec<PageIndexEntry>, Error> {
    let len = r.seek(SeekFrom::End(0))?;
    let tail = (TRAILER_SIZE + 8) as u64;
    if len < (HEADER_SIZE + 6 + 1) as u64 + tail {
        return Err(Error::Invalid(format!("file of {len} bytes is too short")));
    }
    r.seek(SeekFrom::Start(len - tail))?;
    let mut size = [0u8; 8];
    r.read_exact(&mut size)?;
    let size = u64::from_be_bytes(size);
    if size == 0 || size > len - tail - HEADER_SIZE as u64 {
        return Err(Error::Invalid(format!("page index size {size} is invalid")));
    }
    r.seek(SeekFrom::Start(len - tail - size))?;
    let mut bytes = vec![0u8; size as usize];
    r.read_exact(&mut bytes)?;
    parse_page_index(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_like_go() {
        for v in [0u64, 1, 127, 128, 300, 16384, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            put_uvarint(&mut buf, v);
            let mut it = buf.iter();
            let got = read_uvarint(|| Ok(*it.next().unwrap())).unwrap();
            assert_eq!(got, v);
            assert!(it.next().is_none());
        }
        let mut buf = Vec::new();
        put_uvarint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        let over = [0xffu8; 11];
        let mut it = over.iter();
        read_uvarint(|| Ok(*it.next().unwrap())).unwrap_err();
    }

    #[test]
    fn parse_rejects_disorder_and_trailing_bytes() {
        let mut b = Vec::new();
        for (p, o, s) in [(1u64, 100u64, 20u64), (3, 120, 30)] {
            put_uvarint(&mut b, p);
            put_uvarint(&mut b, o);
            put_uvarint(&mut b, s);
        }
        b.push(0);
        let idx = parse_page_index(&b).unwrap();
        assert_eq!(idx.len(), 2);
        assert_eq!(idx[1].offset, 120);
        let mut extra = b.clone();
        extra.push(0);
        parse_page_index(&extra).unwrap_err();
        parse_page_index(&b[..b.len() - 1]).unwrap_err();
        let mut swapped = Vec::new();
        for p in [3u64, 1] {
            put_uvarint(&mut swapped, p);
            put_uvarint(&mut swapped, 1);
            put_uvarint(&mut swapped, 1);
        }
        swapped.push(0);
        parse_page_index(&swapped).unwrap_err();
    }
}
