//! One shadow-log record: a fixed header, the pages of a committed transaction, and a trailer.
//!
//! Layout (all integers big-endian):
//! ```text
//! header  (80 bytes) magic "WRS1", kind, txid, page size, commit, page count, WAL position,
//!                    segment tag, commit time, database fingerprint, body length
//! body    (n × (4 + page size)) page number, page image; ascending page numbers
//! trailer (16 bytes) checksum of header+body, total record length, magic "WRSE"
//! ```
//! A record counts only when all its bytes are present, the checksum matches, and its segment tag
//! (the low 32 bits of the segment's number) is that of the file it is read from: segment files
//! are recycled, and what a file held in its earlier life never passes for a record of its new
//! one. Anything else at the end of a segment is a torn tail or old content, which the next
//! appender overwrites or cuts off. The trailer is written last, so a reader never mistakes a
//! record still being written for a complete one.

use crate::wal::Salts;

pub const HEADER_LEN: usize = 80;
pub const TRAILER_LEN: usize = 16;
pub(crate) const MAGIC: &[u8; 4] = b"WRS1";
const MAGIC_END: &[u8; 4] = b"WRSE";

/// The record checksum: SQLite's own WAL checksum scheme (Fibonacci-weighted sums) widened to
/// 64-bit words. It exists to tell a torn or stale tail from a complete record, like SQLite's,
/// and runs at memory speed: a commit pays a few hundred nanoseconds for it, where CRC-64
/// cost several microseconds per page.
#[derive(Clone, Default)]
pub struct Digest {
    s0: u64,
    s1: u64,
    carry: [u8; 8],
    carried: usize,
}

impl Digest {
    pub fn new() -> Digest {
        Digest::default()
    }

    fn word(&mut self, w: u64) {
        self.s0 = self.s0.wrapping_add(w).wrapping_add(self.s1);
        self.s1 = self.s1.wrapping_add(self.s0.rotate_left(17));
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        if self.carried > 0 {
            let n = (8 - self.carried).min(bytes.len());
            self.carry[self.carried..self.carried + n].copy_from_slice(&bytes[..n]);
            self.carried += n;
            bytes = &bytes[n..];
            if self.carried < 8 {
                return;
            }
            self.word(u64::from_le_bytes(self.carry));
            self.carried = 0;
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(u64::from_le_bytes(w.try_into().unwrap()));
        }
        let rest = words.remainder();
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
    }

    pub fn finalize(mut self) -> u64 {
        if self.carried > 0 {
            self.carry[self.carried..].fill(0);
            let n = self.carried as u64;
            self.word(u64::from_le_bytes(self.carry) ^ (n << 56));
        }
        self.s0 ^ self.s1.rotate_left(32)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A committed SQLite transaction with its pages.
    Txn = 1,
    /// A snapshot was taken at this TXID: an empty transaction, the chain stays contiguous.
    Snapshot = 2,
    /// Changes happened that walrust did not see: the replica needs a snapshot at or after this
    /// TXID, and level 0 cannot cross it.
    Resync = 3,
    /// The WAL position changed without a transaction (the WAL was checkpointed and deleted).
    /// Carries the TXID of the record before it.
    Position = 4,
    /// This segment is sealed; appends continue in the next segment.
    Roll = 5,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Txn,
            2 => Kind::Snapshot,
            3 => Kind::Resync,
            4 => Kind::Position,
            5 => Kind::Roll,
            _ => return None,
        })
    }
}

/// Where the WAL stood after a record: the last captured commit frame of a WAL generation, or
/// an empty WAL (deleted or truncated after a full checkpoint), or unknown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalPos {
    Unknown,
    Empty,
    At { salts: Salts, frame: u32 },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    pub txid: u64,
    pub page_size: u32,
    /// Database size in pages after this record (0 when unknown).
    pub commit: u32,
    pub n_pages: u32,
    pub pos: WalPos,
    pub timestamp_ms: i64,
    /// Size and mtime (ns) of the database file, on `Position` records written after a full
    /// checkpoint; lets the next process prove nobody wrote the file in between.
    pub fingerprint: (u64, i64),
    /// A `Txn` of a group of commits appended together whose pages are all in the group's
    /// last record (the one not continued). A run of continued records without that last
    /// record (a group torn by a crash) is no part of the log: `log` cuts it and readers
    /// never return it.
    pub continued: bool,
}

impl Header {
    pub fn body_len(&self) -> u64 {
        self.n_pages as u64 * (4 + self.page_size as u64)
    }

    pub fn total_len(&self) -> u64 {
        (HEADER_LEN + TRAILER_LEN) as u64 + self.body_len()
    }

    /// The header as written into segment `seq`.
    pub fn encode(&self, seq: u64) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[44..48].copy_from_slice(&segment_tag(seq).to_be_bytes());
        b[0..4].copy_from_slice(MAGIC);
        b[4] = self.kind as u8;
        b[5] = self.continued as u8;
        b[8..16].copy_from_slice(&self.txid.to_be_bytes());
        b[16..20].copy_from_slice(&self.page_size.to_be_bytes());
        b[20..24].copy_from_slice(&self.commit.to_be_bytes());
        b[24..28].copy_from_slice(&self.n_pages.to_be_bytes());
        let (pk, s1, s2, fr) = match self.pos {
            WalPos::Unknown => (0u32, 0, 0, 0),
            WalPos::Empty => (2, 0, 0, 0),
            WalPos::At { salts, frame } => (1, salts.0, salts.1, frame),
        };
        b[28..32].copy_from_slice(&pk.to_be_bytes());
        b[32..36].copy_from_slice(&s1.to_be_bytes());
        b[36..40].copy_from_slice(&s2.to_be_bytes());
        b[40..44].copy_from_slice(&fr.to_be_bytes());
        b[48..56].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[56..64].copy_from_slice(&self.fingerprint.0.to_be_bytes());
        b[64..72].copy_from_slice(&self.fingerprint.1.to_be_bytes());
        b[72..80].copy_from_slice(&self.body_len().to_be_bytes());
        b
    }

    /// Decodes a header read from segment `seq`; `None` if it is not one written there.
    pub fn decode(b: &[u8], seq: u64) -> Option<Header> {
        if b.len() < HEADER_LEN || &b[0..4] != MAGIC {
            return None;
        }
        let u32_at = |i: usize| u32::from_be_bytes(b[i..i + 4].try_into().unwrap());
        if u32_at(44) != segment_tag(seq) {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().unwrap());
        let pos = match u32_at(28) {
            0 => WalPos::Unknown,
            1 => WalPos::At {
                salts: Salts(u32_at(32), u32_at(36)),
                frame: u32_at(40),
            },
            2 => WalPos::Empty,
            _ => return None,
        };
        let h = Header {
            kind: Kind::from_u8(b[4])?,
            txid: u64_at(8),
            page_size: u32_at(16),
            commit: u32_at(20),
            n_pages: u32_at(24),
            pos,
            timestamp_ms: u64_at(48) as i64,
            fingerprint: (u64_at(56), u64_at(64) as i64),
            continued: match b[5] {
                0 => false,
                1 if b[4] == Kind::Txn as u8 => true,
                _ => return None,
            },
        };
        if h.n_pages > 0 && !crate::types::is_valid_page_size(h.page_size) {
            return None;
        }
        (u64_at(72) == h.body_len()).then_some(h)
    }
}

/// What ties a record to the segment it was written into.
fn segment_tag(seq: u64) -> u32 {
    seq as u32
}

pub fn encode_trailer(crc: u64, total_len: u64) -> [u8; TRAILER_LEN] {
    let mut t = [0u8; TRAILER_LEN];
    t[0..8].copy_from_slice(&crc.to_be_bytes());
    t[8..12].copy_from_slice(&(total_len as u32).to_be_bytes());
    t[12..16].copy_from_slice(MAGIC_END);
    t
}

/// Checks a trailer against the checksum computed over the record's header and body.
pub fn trailer_matches(t: &[u8], crc: u64, total_len: u64) -> bool {
    t.len() == TRAILER_LEN
        && &t[12..16] == MAGIC_END
        && t[0..8] == crc.to_be_bytes()
        && t[8..12] == (total_len as u32).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_does_not_depend_on_how_bytes_are_split() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i * 7 + 3) as u8).collect();
        let mut whole = Digest::new();
        whole.update(&data);
        let mut parts = Digest::new();
        for chunk in data.chunks(13) {
            parts.update(chunk);
        }
        let a = whole.finalize();
        assert_eq!(a, parts.finalize());
        let mut flipped = data.clone();
        flipped[500] ^= 1;
        let mut d = Digest::new();
        d.update(&flipped);
        assert_ne!(a, d.finalize());
        let mut shorter = Digest::new();
        shorter.update(&data[..999]);
        assert_ne!(a, shorter.finalize());
    }

    #[test]
    fn header_round_trips() {
        let h = Header {
            kind: Kind::Txn,
            txid: 42,
            page_size: 4096,
            commit: 10,
            n_pages: 3,
            pos: WalPos::At {
                salts: Salts(1, 2),
                frame: 9,
            },
            timestamp_ms: 1_700_000_000_123,
            fingerprint: (0, 0),
            continued: false,
        };
        assert_eq!(Header::decode(&h.encode(7), 7), Some(h));
        assert_eq!(h.total_len(), 80 + 16 + 3 * 4100);
        let mut bad = h.encode(7);
        bad[0] = b'X';
        assert_eq!(Header::decode(&bad, 7), None);
        // The same bytes in a recycled file are not a record of its new segment.
        assert_eq!(Header::decode(&h.encode(7), 9), None);
    }
}
