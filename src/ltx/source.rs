//! A buffered reader for the decoder that can look ahead without consuming (to tell LTX v1 from
//! v3) and counts the bytes it hands out (page frame offsets for the page index check).
//! Its buffer is fixed, so decoding memory does not grow with the file.

use std::io::{self, Read};

const BUF_SIZE: usize = 64 * 1024;

pub(crate) struct Source<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Bytes consumed through `Read` so far.
    consumed: u64,
}

impl<R: Read> Source<R> {
    pub(crate) fn new(inner: R) -> Source<R> {
        Source {
            inner,
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            start: 0,
            end: 0,
            consumed: 0,
        }
    }

    pub(crate) fn consumed(&self) -> u64 {
        self.consumed
    }

    /// Returns up to `n` upcoming bytes without consuming them; fewer only at end of input.
    pub(crate) fn peek(&mut self, n: usize) -> io::Result<&[u8]> {
        assert!(n <= BUF_SIZE);
        if self.end - self.start < n {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            while self.end < n {
                match self.inner.read(&mut self.buf[self.end..]) {
                    Ok(0) => break,
                    Ok(k) => self.end += k,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(&self.buf[self.start..self.end.min(self.start + n)])
    }
}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            if out.len() >= BUF_SIZE {
                let k = self.inner.read(out)?;
                self.consumed += k as u64;
                return Ok(k);
            }
            self.start = 0;
            self.end = self.inner.read(&mut self.buf)?;
        }
        let k = out.len().min(self.end - self.start);
        out[..k].copy_from_slice(&self.buf[self.start..self.start + k]);
        self.start += k;
        self.consumed += k as u64;
        Ok(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out at most 3 bytes per read, to exercise refills.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            let k = out.len().min(3).min(self.0.len());
            out[..k].copy_from_slice(&self.0[..k]);
            self.0 = &self.0[k..];
            Ok(k)
        }
    }

    #[test]
    fn peek_does_not_consume_and_reads_see_everything() {
        let data: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut s = Source::new(Trickle(&data));
        assert_eq!(s.peek(10).unwrap(), &data[..10]);
        let mut first = [0u8; 4];
        s.read_exact(&mut first).unwrap();
        assert_eq!(first, data[..4]);
        assert_eq!(s.peek(7).unwrap(), &data[4..11]);
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, &data[4..]);
        assert_eq!(s.consumed(), data.len() as u64);
        assert!(s.peek(5).unwrap().is_empty());
    }
}
