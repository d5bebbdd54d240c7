//! Streaming LTX v3 encoder: header, then pages in ascending order, then `finish` writes the end
//! of the page block, the page index and the trailer. Bytes are what Go `ltx` v0.5.2 writes:
//! every page is an LZ4 block behind a size prefix (page flag 0x0001).
//!
//! Memory: one compression buffer plus the page index (a few bytes per page). An error from the
//! writer leaves the output unusable; drop it.

use std::io::Write;

use super::checksum::{self, Digest, CRC64};
use super::header::{check_post_apply, Header, Trailer};
use super::index::put_uvarint;
use super::page::{page_header_bytes, PageOrder, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE};
use super::{Error, VERSION};
use crate::types::{Checksum, PageNo};

pub struct Encoder<W: Write> {
    w: W,
    header: Header,
    digest: Digest,
    order: PageOrder,
    /// Bytes written so far: the offset of the next page frame.
    n: u64,
    compressed: Vec<u8>,
    /// Encoded page index entries, without terminator.
    index: Vec<u8>,
}

impl<W: Write> Encoder<W> {
    /// Validates `header` (it must be version 3) and writes it.
    pub fn new(mut w: W, header: Header) -> Result<Self, Error> {
        if header.version != VERSION {
            return Err(Error::Unsupported(format!(
                "encoding LTX version {} (only {VERSION} is written)",
                header.version
            )));
        }
        header.validate()?;
        let bytes = header.to_bytes();
        w.write_all(&bytes)?;
        let mut digest = CRC64.digest();
        digest.update(&bytes);
        let max = lz4_flex::block::get_maximum_output_size(header.page_size as usize);
        Ok(Encoder {
            w,
            order: PageOrder::new(header.is_snapshot(), header.commit, header.page_size, true),
            header,
            digest,
            n: bytes.len() as u64,
            compressed: vec![0; max],
            index: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Bytes written so far.
    pub fn bytes_written(&self) -> u64 {
        self.n
    }

    /// Pages written so far.
    pub fn page_count(&self) -> u32 {
        self.order.count()
    }

    /// Appends one page. Pages must ascend strictly, never be the lock page nor past `commit`,
    /// and a snapshot must receive every page `1..=commit` except the lock page.
    pub fn write_page(&mut self, pgno: PageNo, data: &[u8]) -> Result<(), Error> {
        if data.len() != self.header.page_size as usize {
            return Err(Error::Invalid(format!(
                "page {pgno} has {} bytes, expected {}",
                data.len(),
                self.header.page_size
            )));
        }
        self.order.next(pgno)?;

        let clen = lz4_flex::block::compress_into(data, &mut self.compressed)
            .map_err(|e| Error::Invalid(format!("compressing page {pgno}: {e}")))?;
        let hdr = page_header_bytes(pgno.get(), PAGE_FLAG_SIZE);
        let size = (clen as u32).to_be_bytes();
        self.w.write_all(&hdr)?;
        self.w.write_all(&size)?;
        self.w.write_all(&self.compressed[..clen])?;
        // The file checksum covers the uncompressed page, not the LZ4 bytes.
        self.digest.update(&hdr);
        self.digest.update(&size);
        self.digest.update(data);

        let frame = (PAGE_HEADER_SIZE + 4 + clen) as u64;
        put_uvarint(&mut self.index, u64::from(pgno.get()));
        put_uvarint(&mut self.index, self.n);
        put_uvarint(&mut self.index, frame);
        self.n += frame;
        Ok(())
    }

    /// Ends the page block, writes the page index and the trailer, flushes, and returns the
    /// writer with the trailer. `post_apply_checksum` must be `Checksum(0)` for a header with
    /// `FLAG_NO_CHECKSUM` (the default).
    pub fn finish(mut self, post_apply_checksum: Checksum) -> Result<(W, Trailer), Error> {
        self.order.finish()?;
        check_post_apply(&self.header, post_apply_checksum)?;

        let end = page_header_bytes(0, 0);
        self.index.push(0);
        let index_len = (self.index.len() as u64).to_be_bytes();
        let post = post_apply_checksum.0.to_be_bytes();
        for part in [&end[..], &self.index, &index_len, &post] {
            self.w.write_all(part)?;
            self.digest.update(part);
        }
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: checksum::flagged(self.digest),
        };
        self.w.write_all(&trailer.file_checksum.0.to_be_bytes())?;
        self.w.flush()?;
        Ok((self.w, trailer))
    }
}
