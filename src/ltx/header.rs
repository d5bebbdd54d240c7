//! The fixed-size frames of an LTX file: the 100-byte header and the 16-byte trailer.
//!
//! All integers are big-endian. Header layout (offsets in bytes):
//! `0` magic `LTX1`, `4` flags, `8` page size, `12` commit (database size in pages after the
//! file is applied), `16` min TXID, `24` max TXID, `32` timestamp (ms since the Unix epoch),
//! `40` pre-apply checksum, `48` WAL offset, `56` WAL size, `64` WAL salt 1, `68` WAL salt 2,
//! `72` node ID, `80..100` reserved (zero).
//! Trailer: `0` post-apply checksum, `8` file checksum.

use super::checksum::CHECKSUM_FLAG;
use super::Error;
use crate::types::{is_valid_page_size, lock_page, Checksum, Txid};

/// The first four bytes of every LTX file, of every version.
pub const MAGIC: &[u8; 4] = b"LTX1";
pub const HEADER_SIZE: usize = 100;
pub const TRAILER_SIZE: usize = 16;

/// Header flag: the file carries no pre/post-apply database checksums (both are zero).
/// Litestream 0.5 sets it on every file it writes, and so does walrust by default.
pub const FLAG_NO_CHECKSUM: u32 = 1 << 1;

/// Header flag of LTX v1 only: the whole page block is one LZ4 frame.
pub(crate) const V1_FLAG_COMPRESS_LZ4: u32 = 1 << 0;

/// The header of an LTX file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// 3 for the current format, 1 when a v1 (LiteFS, `litetx`) file was decoded. Not stored in
    /// the file: both share the magic `LTX1`.
    pub version: u32,
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after this file is applied. 0 only for a deleted database.
    pub commit: u32,
    pub min_txid: Txid,
    pub max_txid: Txid,
    /// Milliseconds since the Unix epoch: when the newest transaction in the file committed.
    pub timestamp_ms: i64,
    /// Database checksum before the file is applied; zero for snapshots and with
    /// [`FLAG_NO_CHECKSUM`].
    pub pre_apply_checksum: Checksum,
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

impl Header {
    /// A v3 header without database checksums, as Litestream writes them. WAL fields and node ID
    /// are zero; set them afterwards if known.
    pub fn new(
        page_size: u32,
        commit: u32,
        min_txid: Txid,
        max_txid: Txid,
        timestamp_ms: i64,
    ) -> Header {
        Header {
            version: super::VERSION,
            flags: FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp_ms,
            pre_apply_checksum: Checksum(0),
            wal_offset: 0,
            wal_size: 0,
            wal_salt1: 0,
            wal_salt2: 0,
            node_id: 0,
        }
    }

    /// A snapshot holds every page of the database; by definition its range starts at TXID 1.
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == Txid::ONE
    }

    /// True if the file carries no database checksums.
    pub fn no_checksum(&self) -> bool {
        self.flags & FLAG_NO_CHECKSUM != 0
    }

    /// The page number SQLite never stores data on (the page holding byte 2^30).
    pub fn lock_page(&self) -> u32 {
        lock_page(self.page_size)
    }

    /// Checks the rules the Go `ltx` package (v0.5.2) enforces in `Header.Validate`.
    pub fn validate(&self) -> Result<(), Error> {
        let allowed_flags = match self.version {
            super::VERSION => FLAG_NO_CHECKSUM,
            1 => FLAG_NO_CHECKSUM | V1_FLAG_COMPRESS_LZ4,
            v => return Err(Error::Unsupported(format!("LTX version {v}"))),
        };
        if self.flags & !allowed_flags != 0 {
            return Err(invalid(format!(
                "invalid header flags 0x{:08x}",
                self.flags
            )));
        }
        if !is_valid_page_size(self.page_size) {
            return Err(invalid(format!("invalid page size {}", self.page_size)));
        }
        if self.min_txid > self.max_txid {
            return Err(invalid(format!(
                "transaction ids out of order: {}-{}",
                self.min_txid, self.max_txid
            )));
        }
        if self.wal_offset < 0 || self.wal_size < 0 {
            return Err(invalid("negative WAL offset or size".into()));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err(invalid("WAL salt set without a WAL offset".into()));
        }
        if self.wal_size != 0 && self.wal_offset == 0 {
            return Err(invalid("WAL size set without a WAL offset".into()));
        }
        let pre = self.pre_apply_checksum.0;
        if self.is_snapshot() {
            if pre != 0 {
                return Err(invalid("snapshot with a pre-apply checksum".into()));
            }
        } else if self.no_checksum() {
            if pre != 0 {
                return Err(invalid(
                    "pre-apply checksum set with the no-checksum flag".into(),
                ));
            }
        } else if pre & CHECKSUM_FLAG == 0 {
            return Err(invalid("missing or malformed pre-apply checksum".into()));
        }
        Ok(())
    }

    /// The 100 header bytes. Reserved bytes are zero.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.get().to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.get().to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.0.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses the 100 header bytes as version 3, without [`Header::validate`]. Fails on a wrong
    /// magic or a zero TXID.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Result<Header, Error> {
        if &b[0..4] != MAGIC {
            return Err(invalid(format!(
                "not an LTX file (magic {:02x?})",
                &b[0..4]
            )));
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        let txid_at = |i: usize, what: &str| {
            Txid::new(u64_at(i)).ok_or_else(|| invalid(format!("{what} transaction id is zero")))
        };
        Ok(Header {
            version: super::VERSION,
            flags: u32_at(4),
            page_size: u32_at(8),
            commit: u32_at(12),
            min_txid: txid_at(16, "minimum")?,
            max_txid: txid_at(24, "maximum")?,
            timestamp_ms: u64_at(32) as i64,
            pre_apply_checksum: Checksum(u64_at(40)),
            wal_offset: u64_at(48) as i64,
            wal_size: u64_at(56) as i64,
            wal_salt1: u32_at(64),
            wal_salt2: u32_at(68),
            node_id: u64_at(72),
        })
    }
}

/// The last 16 bytes of an LTX file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trailer {
    /// Database checksum after the file is applied; zero with [`FLAG_NO_CHECKSUM`].
    pub post_apply_checksum: Checksum,
    /// CRC-64/ISO of the file's logical content (see `checksum.rs`), with bit 63 set.
    pub file_checksum: Checksum,
}

impl Trailer {
    pub fn to_bytes(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.0.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.0.to_be_bytes());
        b
    }

    pub fn from_bytes(b: &[u8; TRAILER_SIZE]) -> Trailer {
        Trailer {
            post_apply_checksum: Checksum(u64::from_be_bytes(b[0..8].try_into().unwrap())),
            file_checksum: Checksum(u64::from_be_bytes(b[8..16].try_into().unwrap())),
        }
    }

    /// The rules of Go `ltx` `Trailer.Validate`.
    pub fn validate(&self, header: &Header) -> Result<(), Error> {
        check_post_apply(header, self.post_apply_checksum)?;
        if self.file_checksum.0 & CHECKSUM_FLAG == 0 {
            return Err(invalid("missing or malformed file checksum".into()));
        }
        Ok(())
    }
}

/// The post-apply checksum must be zero without database checksums, and flagged with them.
pub(crate) fn check_post_apply(header: &Header, post: Checksum) -> Result<(), Error> {
    if header.no_checksum() {
        if post.0 != 0 {
            return Err(invalid(
                "post-apply checksum set with the no-checksum flag".into(),
            ));
        }
    } else if post.0 & CHECKSUM_FLAG == 0 {
        return Err(invalid("missing or malformed post-apply checksum".into()));
    } else if header.commit == 0 && post.0 != CHECKSUM_FLAG {
        return Err(invalid(
            "post-apply checksum of an empty database must be empty".into(),
        ));
    }
    Ok(())
}

fn invalid(msg: String) -> Error {
    Error::Invalid(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn txid(v: u64) -> Txid {
        Txid::new(v).unwrap()
    }

    fn sample() -> Header {
        Header {
            version: 3,
            flags: FLAG_NO_CHECKSUM,
            page_size: 4096,
            commit: 7,
            min_txid: txid(5),
            max_txid: txid(9),
            timestamp_ms: 1_700_000_000_123,
            pre_apply_checksum: Checksum(0),
            wal_offset: 32,
            wal_size: 4120,
            wal_salt1: 0xdead_beef,
            wal_salt2: 0x0102_0304,
            node_id: 42,
        }
    }

    #[test]
    fn header_round_trips_through_bytes() {
        let h = sample();
        let b = h.to_bytes();
        assert_eq!(&b[0..4], b"LTX1");
        assert_eq!(&b[4..8], &[0, 0, 0, 2]);
        assert_eq!(&b[8..12], &[0, 0, 0x10, 0]);
        assert!(b[80..].iter().all(|&x| x == 0));
        assert_eq!(Header::from_bytes(&b).unwrap(), h);
        h.validate().unwrap();
    }

    #[test]
    fn header_rejects_bad_magic_and_zero_txid() {
        let mut b = sample().to_bytes();
        b[0] = b'X';
        assert!(matches!(Header::from_bytes(&b), Err(Error::Invalid(_))));
        let mut b = sample().to_bytes();
        b[16..24].fill(0);
        assert!(matches!(Header::from_bytes(&b), Err(Error::Invalid(_))));
    }

    #[test]
    fn validate_follows_go_rules() {
        let ok = sample();
        let bad = |f: &dyn Fn(&mut Header)| {
            let mut h = ok.clone();
            f(&mut h);
            h.validate().unwrap_err()
        };
        bad(&|h| h.flags = 1);
        bad(&|h| h.page_size = 1000);
        bad(&|h| h.page_size = 131072);
        bad(&|h| h.min_txid = txid(10));
        bad(&|h| h.wal_offset = -1);
        bad(&|h| h.wal_offset = 0);
        bad(&|h| h.pre_apply_checksum = Checksum(CHECKSUM_FLAG | 1));
        bad(&|h| {
            h.flags = 0;
            h.pre_apply_checksum = Checksum(1);
        });
        bad(&|h| {
            h.min_txid = Txid::ONE;
            h.flags = 0;
            h.pre_apply_checksum = Checksum(CHECKSUM_FLAG | 1);
        });
        assert!(matches!(bad(&|h| h.version = 2), Error::Unsupported(_)));
        let mut with_sums = ok.clone();
        with_sums.flags = 0;
        with_sums.pre_apply_checksum = Checksum(CHECKSUM_FLAG | 1);
        with_sums.validate().unwrap();
        let mut v1 = ok.clone();
        v1.version = 1;
        v1.flags = V1_FLAG_COMPRESS_LZ4 | FLAG_NO_CHECKSUM;
        v1.validate().unwrap();
    }

    #[test]
    fn trailer_rules() {
        let h = sample();
        let t = Trailer {
            post_apply_checksum: Checksum(0),
            file_checksum: Checksum(CHECKSUM_FLAG | 5),
        };
        assert_eq!(Trailer::from_bytes(&t.to_bytes()), t);
        t.validate(&h).unwrap();
        let mut bad = t;
        bad.file_checksum = Checksum(5);
        bad.validate(&h).unwrap_err();
        let mut bad = t;
        bad.post_apply_checksum = Checksum(CHECKSUM_FLAG);
        bad.validate(&h).unwrap_err();
    }
}
