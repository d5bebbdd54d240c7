//! Typed identifiers shared by every stage: transaction IDs, page numbers and LTX checksums.
//!
//! A `Txid` is never zero and is printed as 16 lower-case hex digits, the way LTX file names and
//! Litestream print it. A `PageNo` is never zero (SQLite numbers pages from 1). Parsing rejects
//! anything that `Display` would not have produced.

use std::fmt;
use std::num::{NonZeroU32, NonZeroU64};

/// A committed SQLite transaction's number on a replica. Strictly increasing, never reused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Txid(NonZeroU64);

impl Txid {
    pub const ONE: Txid = Txid(NonZeroU64::MIN);

    pub fn new(v: u64) -> Option<Txid> {
        NonZeroU64::new(v).map(Txid)
    }

    pub fn get(self) -> u64 {
        self.0.get()
    }

    pub fn next(self) -> Txid {
        Txid(self.0.checked_add(1).expect("TXID overflow"))
    }

    /// The TXID before this one, or `None` for TXID 1.
    pub fn prev(self) -> Option<Txid> {
        Txid::new(self.get() - 1)
    }

    /// Parses exactly 16 hex digits.
    pub fn parse_hex(s: &str) -> Option<Txid> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().and_then(Txid::new)
    }

    /// A TXID as a user types it, in the CLI's `--txid` and as text in `walrust_restore()`:
    /// decimal, `0x`-prefixed hex, or exactly 16 hex digits as in LTX file names.
    pub fn parse_user(s: &str) -> Option<Txid> {
        let s = s.trim();
        let v = if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            u64::from_str_radix(hex, 16).ok()
        } else if s.len() == 16 {
            return Txid::parse_hex(s);
        } else if s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse::<u64>().ok()
        } else {
            None
        };
        v.and_then(Txid::new)
    }
}

/// The forms `Txid::parse_user` accepts, for error messages.
pub const TXID_FORMS: &str = "1 or more: decimal, 0x-prefixed hex, or 16 hex digits";

impl fmt::Display for Txid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.get())
    }
}

/// A database page number (1-based).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PageNo(NonZeroU32);

impl PageNo {
    pub fn new(v: u32) -> Option<PageNo> {
        NonZeroU32::new(v).map(PageNo)
    }

    pub fn get(self) -> u32 {
        self.0.get()
    }

    /// SQLite never stores data on the page that holds the byte at offset 2^30 (the lock page).
    pub fn is_lock_page(self, page_size: u32) -> bool {
        self.get() == lock_page(page_size)
    }
}

impl fmt::Display for PageNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.get())
    }
}

/// The page number of SQLite's lock page for a page size.
pub fn lock_page(page_size: u32) -> u32 {
    (0x4000_0000 / page_size) + 1
}

/// An LTX CRC-64 checksum.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Checksum(pub u64);

impl fmt::Display for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Valid SQLite page sizes: powers of two from 512 to 65536.
pub fn is_valid_page_size(n: u32) -> bool {
    (512..=65536).contains(&n) && n.is_power_of_two()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn txid_round_trips_through_hex() {
        let t = Txid::new(0x1234).unwrap();
        assert_eq!(t.to_string(), "0000000000001234");
        assert_eq!(Txid::parse_hex("0000000000001234"), Some(t));
        assert_eq!(Txid::parse_hex("1234"), None);
        assert_eq!(Txid::parse_hex("0000000000000000"), None);
        assert_eq!(Txid::parse_hex("000000000000123g"), None);
    }

    #[test]
    fn lock_page_is_at_one_gibibyte() {
        assert_eq!(lock_page(4096), 262145);
        assert_eq!(lock_page(65536), 16385);
        assert!(PageNo::new(262145).unwrap().is_lock_page(4096));
    }
}
