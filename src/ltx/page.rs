//! Page frames and the rules on which pages a file may hold, shared by encoder and decoder.
//!
//! A v3 page frame is a 6-byte page header (page number u32, flags u16), then, with
//! [`PAGE_FLAG_SIZE`] (always set by Go `ltx` v0.5.2 and by us), a u32 compressed size and that
//! many bytes of one LZ4 *block*. Without the flag (Litestream 0.5.0–0.5.15, `ltx` v0.5.0/1) the
//! page is one LZ4 *frame* with no size prefix. A zero page header ends the page block.
//!
//! Page rules (Go `Encoder.EncodePage`): pages are in strictly ascending order, never the lock
//! page, never past `commit`; a snapshot holds exactly the pages `1..=commit` minus the lock page.

use super::Error;
use crate::types::{lock_page, PageNo};

pub const PAGE_HEADER_SIZE: usize = 6;
/// Page header flag: a u32 compressed size and an LZ4 block follow.
pub const PAGE_FLAG_SIZE: u16 = 1 << 0;

pub(crate) fn page_header_bytes(pgno: u32, flags: u16) -> [u8; PAGE_HEADER_SIZE] {
    let mut b = [0u8; PAGE_HEADER_SIZE];
    b[0..4].copy_from_slice(&pgno.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b
}

/// Tracks the pages of one file and rejects any page that breaks the rules.
#[derive(Debug)]
pub(crate) struct PageOrder {
    snapshot: bool,
    commit: u32,
    lock: u32,
    /// Whether pages past `commit` are an error (always for v3; v1 writers did not check).
    bounded: bool,
    prev: u32,
    count: u32,
}

impl PageOrder {
    pub(crate) fn new(snapshot: bool, commit: u32, page_size: u32, bounded: bool) -> PageOrder {
        PageOrder {
            snapshot,
            commit,
            lock: lock_page(page_size),
            bounded,
            prev: 0,
            count: 0,
        }
    }

    /// Accepts `pgno` as the next page, or says why it cannot be.
    pub(crate) fn next(&mut self, pgno: PageNo) -> Result<(), Error> {
        let n = pgno.get();
        if n == self.lock {
            return Err(Error::Invalid(format!("page {n} is the lock page")));
        }
        if self.bounded && n > self.commit {
            return Err(Error::Invalid(format!(
                "page {n} is past the commit size of {} pages",
                self.commit
            )));
        }
        if self.snapshot {
            let expected = if self.prev + 1 == self.lock {
                self.prev + 2
            } else {
                self.prev + 1
            };
            if n != expected {
                return Err(Error::Invalid(format!(
                    "snapshot pages must be consecutive from 1: page {n} after page {}",
                    self.prev
                )));
            }
        } else if n <= self.prev {
            return Err(Error::Invalid(format!(
                "pages out of order: page {n} after page {}",
                self.prev
            )));
        }
        self.prev = n;
        self.count += 1;
        Ok(())
    }

    /// At the end of the page block: a snapshot must have had every page.
    pub(crate) fn finish(&self) -> Result<(), Error> {
        if !self.snapshot {
            return Ok(());
        }
        let expected = self.commit - u32::from(self.lock <= self.commit);
        if self.count != expected {
            return Err(Error::Invalid(format!(
                "snapshot has {} pages, expected {expected} for a commit size of {} pages",
                self.count, self.commit
            )));
        }
        Ok(())
    }

    pub(crate) fn count(&self) -> u32 {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: u32) -> PageNo {
        PageNo::new(n).unwrap()
    }

    #[test]
    fn incremental_pages_ascend_strictly_and_stay_within_commit() {
        let mut o = PageOrder::new(false, 10, 4096, true);
        o.next(p(3)).unwrap();
        o.next(p(7)).unwrap();
        o.next(p(7)).unwrap_err();
        o.next(p(5)).unwrap_err();
        o.next(p(11)).unwrap_err();
        o.next(p(10)).unwrap();
        o.finish().unwrap();
        assert_eq!(o.count(), 3);
    }

    #[test]
    fn snapshot_needs_every_page_from_one() {
        let mut o = PageOrder::new(true, 3, 4096, true);
        o.next(p(2)).unwrap_err();
        o.next(p(1)).unwrap();
        o.next(p(3)).unwrap_err();
        o.next(p(2)).unwrap();
        o.finish().unwrap_err();
        o.next(p(3)).unwrap();
        o.finish().unwrap();
    }

    #[test]
    fn snapshot_skips_the_lock_page_at_one_gibibyte() {
        // 64 KiB pages: the lock page is 16385 (byte 2^30 lies in it).
        let lock = lock_page(65536);
        assert_eq!(lock, 16385);
        let mut o = PageOrder::new(true, lock + 2, 65536, true);
        for n in 1..lock {
            o.next(p(n)).unwrap();
        }
        o.next(p(lock)).unwrap_err();
        o.next(p(lock + 2)).unwrap_err();
        o.next(p(lock + 1)).unwrap();
        o.finish().unwrap_err();
        o.next(p(lock + 2)).unwrap();
        o.finish().unwrap();
        assert_eq!(o.count(), lock + 1);
    }

    #[test]
    fn incremental_never_holds_the_lock_page() {
        let lock = lock_page(65536);
        let mut o = PageOrder::new(false, lock + 5, 65536, true);
        o.next(p(lock - 1)).unwrap();
        o.next(p(lock)).unwrap_err();
        o.next(p(lock + 1)).unwrap();
    }
}
