//! LTX v1 reading (LiteFS, the `litetx` crate, Go `ltx` before v0.4), through `litetx`'s
//! streaming decoder.
//!
//! v1 differs from v3: 4-byte page headers, no page index, and, with header flag 0x1, the whole
//! page block (headers, data and end marker) is a single LZ4 frame. Its file checksum is the
//! CRC-64/ISO of the header, the *decompressed* page block and the post-apply checksum.
//!
//! `litetx` only reports "mismatch" without values, so this module also computes the checksum
//! itself and taps the last 16 bytes of the stream (the trailer) to report both sides.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use super::checksum::{self, Digest, CRC64};
use super::header::{Header, Trailer, FLAG_NO_CHECKSUM, HEADER_SIZE, TRAILER_SIZE};
use super::page::PageOrder;
use super::source::Source;
use super::Error;
use crate::types::{Checksum, PageNo};

type LtxDecoder<R> = litetx::Decoder<'static, Tap<Source<R>>>;

pub(crate) struct V1<R: Read> {
    dec: LtxDecoder<R>,
    tail: Arc<Mutex<Tail>>,
    digest: Digest,
    order: PageOrder,
    page_size: usize,
    done: bool,
}

impl<R: Read> V1<R> {
    /// `src` must still be positioned at the start of the file.
    pub(crate) fn new(
        src: Source<R>,
        header_bytes: &[u8; HEADER_SIZE],
        header: &Header,
    ) -> Result<V1<R>, Error> {
        if header.flags & FLAG_NO_CHECKSUM != 0 {
            return Err(Error::Unsupported(
                "LTX v1 files without database checksums".into(),
            ));
        }
        let tail = Arc::new(Mutex::new(Tail::default()));
        let tap = Tap {
            inner: src,
            tail: tail.clone(),
        };
        let (dec, _) = litetx::Decoder::new(tap).map_err(from_litetx)?;
        let mut digest = CRC64.digest();
        digest.update(header_bytes);
        Ok(V1 {
            dec,
            tail,
            digest,
            order: PageOrder::new(header.is_snapshot(), header.commit, header.page_size, false),
            page_size: header.page_size as usize,
            done: false,
        })
    }

    pub(crate) fn next_page(&mut self, buf: &mut Vec<u8>) -> Result<Option<PageNo>, Error> {
        if self.done {
            return Ok(None);
        }
        buf.resize(self.page_size, 0);
        let Some(n) = self.dec.decode_page(buf).map_err(from_litetx)? else {
            self.done = true;
            self.digest.update(&[0u8; 4]);
            return Ok(None);
        };
        let pgno = PageNo::new(n.into_inner()).expect("litetx page numbers are non-zero");
        self.order.next(pgno)?;
        self.digest.update(&pgno.get().to_be_bytes());
        self.digest.update(buf);
        Ok(Some(pgno))
    }

    pub(crate) fn finish(mut self, header: &Header) -> Result<Trailer, Error> {
        let mut page = Vec::new();
        while self.next_page(&mut page)?.is_some() {}
        let V1 {
            dec,
            tail,
            mut digest,
            order,
            ..
        } = self;
        let result = dec.finish();
        let stored = tail.lock().unwrap().bytes();
        let trailer = Trailer::from_bytes(&stored);
        digest.update(&stored[..8]);
        let actual = checksum::flagged(digest);
        match result {
            Ok(t) => {
                let t = Trailer {
                    post_apply_checksum: Checksum(t.post_apply_checksum.into_inner()),
                    file_checksum: Checksum(t.file_checksum.into_inner()),
                };
                if t != trailer || actual != trailer.file_checksum {
                    return Err(Error::Invalid(
                        "v1 trailer is not at the end of the file".into(),
                    ));
                }
            }
            Err(litetx::DecodeError::FileChecksumMismatch) => {
                return Err(Error::ChecksumMismatch {
                    expected: trailer.file_checksum,
                    actual,
                });
            }
            Err(e) => return Err(from_litetx(e)),
        }
        trailer.validate(header)?;
        order.finish()?;
        Ok(trailer)
    }
}

/// Maps a `litetx` error to ours, keeping its chain of causes in the message.
fn from_litetx(e: litetx::DecodeError) -> Error {
    let mut io_kind = None;
    let mut msg = e.to_string();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(c) = cause {
        if let Some(ioe) = c.downcast_ref::<io::Error>() {
            io_kind = Some(ioe.kind());
        }
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cause = c.source();
    }
    if let litetx::DecodeError::Read(ioe) = &e {
        io_kind = Some(ioe.kind());
    }
    match io_kind {
        Some(io::ErrorKind::UnexpectedEof) => {
            Error::Invalid(format!("v1 file is truncated ({msg})"))
        }
        Some(kind) => Error::Io(io::Error::new(kind, format!("v1: {msg}"))),
        None => Error::Invalid(format!("v1: {msg}")),
    }
}

/// The last 16 bytes that went through a [`Tap`].
#[derive(Default)]
struct Tail {
    buf: [u8; TRAILER_SIZE],
    len: usize,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        if data.len() >= TRAILER_SIZE {
            self.buf.copy_from_slice(&data[data.len() - TRAILER_SIZE..]);
            self.len = TRAILER_SIZE;
            return;
        }
        let keep = (TRAILER_SIZE - data.len()).min(self.len);
        self.buf.copy_within(self.len - keep..self.len, 0);
        self.buf[keep..keep + data.len()].copy_from_slice(data);
        self.len = keep + data.len();
    }

    fn bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut out = [0u8; TRAILER_SIZE];
        out[TRAILER_SIZE - self.len..].copy_from_slice(&self.buf[..self.len]);
        out
    }
}

/// Passes reads through and records the last bytes read.
struct Tap<R> {
    inner: R,
    tail: Arc<Mutex<Tail>>,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(out)?;
        self.tail.lock().unwrap().push(&out[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::Tail;

    #[test]
    fn tail_keeps_the_last_sixteen_bytes() {
        let data: Vec<u8> = (0..40u8).collect();
        for chunk in [1usize, 3, 7, 16, 17, 40] {
            let mut t = Tail::default();
            for c in data.chunks(chunk) {
                t.push(c);
            }
            assert_eq!(t.bytes(), data[24..], "chunk {chunk}");
        }
    }
}
