//! Streaming LTX decoder for v3 (and v1, delegated to `v1.rs`): header, then pages one at a time,
//! then `finish` reads the page index and trailer and checks the file checksum, that the index
//! matches the frames actually read, and the page rules of `page.rs`.
//!
//! Memory is constant in the file size: a 64 KiB read buffer, one compressed page and a digest
//! of the frames seen (the index is checked against it, not kept).
//!
//! Telling v1 from v3: both start with `LTX1` and no version is stored. v1 is chosen when the
//! header has the v1-only LZ4 flag, or when the header lacks the no-checksum flag (which every
//! Litestream file has and no v1 writer set) and the first page frame does not look like v3 (a v3
//! frame has page flags `00 01` and a plausible compressed size, or flags `00 00` and the LZ4
//! frame magic; an empty v3 page block starts with six zero bytes). A v1 page's data follows its
//! 4-byte page number directly, and SQLite pages essentially never begin like that.

use std::io::Read;

use super::checksum::{self, Digest, CRC64};
use super::header::{
    Header, Trailer, FLAG_NO_CHECKSUM, HEADER_SIZE, TRAILER_SIZE, V1_FLAG_COMPRESS_LZ4,
};
use super::index::read_uvarint;
use super::lz4frame::{self, LZ4_FRAME_MAGIC};
use super::page::{PageOrder, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE};
use super::source::Source;
use super::v1::V1;
use super::{truncated, Error};
use crate::types::PageNo;

pub struct Decoder<R: Read> {
    header: Header,
    inner: Inner<R>,
}

enum Inner<R: Read> {
    V3(V3<R>),
    V1(Box<V1<R>>),
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header (and looks at the first page frame to tell v1 from v3).
    pub fn new(r: R) -> Result<Self, Error> {
        let mut src = Source::new(r);
        let head = src.peek(HEADER_SIZE + 10)?.to_vec();
        let hb: &[u8; HEADER_SIZE] = head
            .get(..HEADER_SIZE)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| Error::Invalid(format!("file of {} bytes is truncated", head.len())))?;
        let mut header = Header::from_bytes(hb)?;
        // v1 files without database checksums were never written by LiteFS or `litetx`, so
        // the no-checksum flag alone means v3.
        let is_v1 = header.flags & V1_FLAG_COMPRESS_LZ4 != 0
            || (header.flags & FLAG_NO_CHECKSUM == 0
                && !looks_like_v3(&head[HEADER_SIZE..], header.page_size));
        if is_v1 {
            header.version = 1;
            header.validate()?;
            let v1 = V1::new(src, hb, &header)?;
            return Ok(Decoder {
                header,
                inner: Inner::V1(Box::new(v1)),
            });
        }
        header.validate()?;
        let mut skip = [0u8; HEADER_SIZE];
        src.read_exact(&mut skip).map_err(truncated)?;
        let mut digest = CRC64.digest();
        digest.update(hb);
        Ok(Decoder {
            inner: Inner::V3(V3 {
                src,
                digest,
                order: PageOrder::new(header.is_snapshot(), header.commit, header.page_size, true),
                page_size: header.page_size as usize,
                scratch: Vec::new(),
                done: false,
                frames: CRC64.digest(),
                frame_count: 0,
            }),
            header,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Decodes the next page into `buf` (resized to the page size) and returns its number, or
    /// `None` after the last page. Pages come in ascending order.
    pub fn next_page(&mut self, buf: &mut Vec<u8>) -> Result<Option<PageNo>, Error> {
        match &mut self.inner {
            Inner::V3(d) => d.next_page(buf),
            Inner::V1(d) => d.next_page(buf),
        }
    }

    /// Reads (and decodes) whatever is left, then verifies the page index, the trailer and the
    /// file checksum ([`Error::ChecksumMismatch`]), and that nothing follows the trailer.
    pub fn finish(self) -> Result<Trailer, Error> {
        match self.inner {
            Inner::V3(d) => d.finish(&self.header),
            Inner::V1(d) => (*d).finish(&self.header),
        }
    }
}

/// Checks a whole file: decodes every page (the file checksum covers decompressed data, so this
/// cannot skip decompression) and verifies everything `finish` does, in constant memory.
pub fn verify<R: Read>(r: R) -> Result<(Header, Trailer), Error> {
    let d = Decoder::new(r)?;
    let header = d.header().clone();
    let trailer = d.finish()?;
    Ok((header, trailer))
}

/// Decodes one v3 page frame fetched by a ranged read (see `read_page_index`): the page header,
/// size prefix and LZ4 block, or a legacy LZ4 frame. No checksum covers a lone frame.
pub fn decode_page_frame(frame: &[u8], page_size: u32, out: &mut Vec<u8>) -> Result<PageNo, Error> {
    let mut r = frame;
    let mut scratch = Vec::new();
    let mut ph = [0u8; PAGE_HEADER_SIZE];
    r.read_exact(&mut ph).map_err(truncated)?;
    let (pgno, flags) = parse_page_header(&ph)?;
    let pgno = pgno.ok_or_else(|| Error::Invalid("page frame is an end marker".into()))?;
    out.resize(page_size as usize, 0);
    read_page_data(&mut r, flags, out, &mut scratch)?;
    if !r.is_empty() {
        return Err(Error::Invalid("trailing bytes after the page frame".into()));
    }
    Ok(pgno)
}

fn looks_like_v3(peek: &[u8], page_size: u32) -> bool {
    if peek.len() < 10 || peek[..PAGE_HEADER_SIZE].iter().all(|&b| b == 0) {
        return true; // truncated (the v3 path reports it) or an empty v3 page block
    }
    let flags = u16::from_be_bytes([peek[4], peek[5]]);
    let size = u32::from_be_bytes(peek[6..10].try_into().unwrap()) as usize;
    match flags {
        PAGE_FLAG_SIZE => size > 0 && size <= max_block(page_size as usize),
        0 => peek[6..10] == LZ4_FRAME_MAGIC,
        _ => false,
    }
}

fn max_block(page_size: usize) -> usize {
    lz4_flex::block::get_maximum_output_size(page_size)
}

/// Page number (`None` for the end marker) and flags of a page header.
fn parse_page_header(ph: &[u8; PAGE_HEADER_SIZE]) -> Result<(Option<PageNo>, u16), Error> {
    let pgno = u32::from_be_bytes(ph[0..4].try_into().unwrap());
    let flags = u16::from_be_bytes([ph[4], ph[5]]);
    if flags & !PAGE_FLAG_SIZE != 0 {
        return Err(Error::Invalid(format!("invalid page flags 0x{flags:04x}")));
    }
    match (PageNo::new(pgno), flags) {
        (None, 0) => Ok((None, 0)),
        (None, _) => Err(Error::Invalid("page number 0".into())),
        (p, f) => Ok((p, f)),
    }
}

/// Reads the data part of a page frame into `out` (already page-sized). With the size flag,
/// returns the 4 size bytes so the caller can hash them.
fn read_page_data(
    r: &mut impl Read,
    flags: u16,
    out: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<Option<[u8; 4]>, Error> {
    if flags & PAGE_FLAG_SIZE == 0 {
        lz4frame::read_frame(r, out, scratch)?;
        return Ok(None);
    }
    let mut sb = [0u8; 4];
    r.read_exact(&mut sb).map_err(truncated)?;
    let size = u32::from_be_bytes(sb) as usize;
    if size == 0 || size > max_block(out.len()) {
        return Err(Error::Invalid(format!(
            "compressed page size {size} is invalid"
        )));
    }
    scratch.resize(size, 0);
    r.read_exact(scratch).map_err(truncated)?;
    let n = lz4_flex::block::decompress_into(scratch, out)
        .map_err(|e| Error::Invalid(format!("LZ4 block: {e}")))?;
    if n != out.len() {
        return Err(Error::Invalid(format!(
            "page decompressed to {n} bytes, expected {}",
            out.len()
        )));
    }
    Ok(Some(sb))
}

struct V3<R> {
    src: Source<R>,
    /// File checksum so far.
    digest: Digest,
    order: PageOrder,
    page_size: usize,
    scratch: Vec<u8>,
    done: bool,
    /// Digest of (pgno, offset, size) of every frame read, to compare with the page index.
    frames: Digest,
    frame_count: u64,
}

impl<R: Read> V3<R> {
    /// Position in the file (the header has been consumed through `src` too).
    fn offset(&self) -> u64 {
        self.src.consumed()
    }

    fn read_hashed(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        self.src.read_exact(buf).map_err(truncated)?;
        self.digest.update(buf);
        Ok(())
    }

    fn next_page(&mut self, buf: &mut Vec<u8>) -> Result<Option<PageNo>, Error> {
        if self.done {
            return Ok(None);
        }
        let offset = self.offset();
        let mut ph = [0u8; PAGE_HEADER_SIZE];
        self.read_hashed(&mut ph)?;
        let (pgno, flags) = parse_page_header(&ph)?;
        let Some(pgno) = pgno else {
            self.done = true;
            return Ok(None);
        };
        self.order.next(pgno)?;
        buf.resize(self.page_size, 0);
        if let Some(sb) = read_page_data(&mut self.src, flags, buf, &mut self.scratch)? {
            self.digest.update(&sb);
        }
        self.digest.update(buf);
        let size = self.offset() - offset;
        for v in [u64::from(pgno.get()), offset, size] {
            self.frames.update(&v.to_be_bytes());
        }
        self.frame_count += 1;
        Ok(Some(pgno))
    }

    fn read_varint(&mut self) -> Result<u64, Error> {
        read_uvarint(|| {
            let mut b = [0u8; 1];
            self.read_hashed(&mut b)?;
            Ok(b[0])
        })
    }

    fn finish(mut self, header: &Header) -> Result<Trailer, Error> {
        let mut page = Vec::new();
        while self.next_page(&mut page)?.is_some() {}

        // Page index: compared entry by entry (through a digest) with the frames read.
        let start = self.src.consumed();
        let mut listed = CRC64.digest();
        let mut listed_count = 0u64;
        loop {
            let pgno = self.read_varint()?;
            if pgno == 0 {
                break;
            }
            let offset = self.read_varint()?;
            let size = self.read_varint()?;
            for v in [pgno, offset, size] {
                listed.update(&v.to_be_bytes());
            }
            listed_count += 1;
        }
        let index_len = self.src.consumed() - start;
        let mut sb = [0u8; 8];
        self.read_hashed(&mut sb)?;

        let mut tb = [0u8; TRAILER_SIZE];
        self.src.read_exact(&mut tb).map_err(truncated)?;
        self.digest.update(&tb[..8]);
        let trailer = Trailer::from_bytes(&tb);
        let actual = checksum::flagged(self.digest);
        if actual != trailer.file_checksum {
            return Err(Error::ChecksumMismatch {
                expected: trailer.file_checksum,
                actual,
            });
        }

        if u64::from_be_bytes(sb) != index_len {
            return Err(Error::Invalid(format!(
                "page index size field {} does not match its {index_len} bytes",
                u64::from_be_bytes(sb)
            )));
        }
        if listed_count != self.frame_count || listed.finalize() != self.frames.finalize() {
            return Err(Error::Invalid(format!(
                "page index ({listed_count} entries) does not match the {} page frames",
                self.frame_count
            )));
        }
        trailer.validate(header)?;
        self.order.finish()?;
        if !self.src.peek(1)?.is_empty() {
            return Err(Error::Invalid("data after the trailer".into()));
        }
        Ok(trailer)
    }
}
