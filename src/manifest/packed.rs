//! The packed encoding of a part's entries: what keeps the manifest's upkeep a few percent of
//! the LTX bytes it indexes (issue 15, item 4).
//!
//! A JSON entry costs about 230 bytes and is written about five times in its life (inline in
//! the manifest object, then in each merge of its part), which is more than a one-page LTX
//! file it names. Packed, an entry costs about 14 bytes: a level's entries are sorted by TXID,
//! so each entry stores its distance from the previous one, its span, its time as a distance
//! from the previous entry's, its size, and the 8 bytes of its SHA-256 prefix. The key is not
//! stored: it is the store's layout applied to the level and TXID range, as `Entry::new` made
//! it.
//!
//! ```text
//! "WMP1"                      magic and encoding version
//! level, count                LEB128
//! count times:
//!   min_txid - previous min   LEB128 (the first: min_txid)
//!   max_txid - min_txid       LEB128
//!   created_at_ms - previous  zigzag LEB128 (the first: created_at_ms)
//!   size                      LEB128
//!   sha256_64                 8 bytes
//! ```
//!
//! What must hold: `decode(encode(entries)) == entries` for sorted entries of one level whose
//! keys are the layout's; decoding reads the whole body or fails, and never panics on bytes it
//! was not given by `encode` (a part's size and hash are checked before, but a reader must not
//! trust a store with its memory).

use super::Entry;
use crate::store::{FileKey, Layout};
use crate::Txid;

/// The first bytes of a packed part. A JSON part starts with `{`.
pub const MAGIC: &[u8; 4] = b"WMP1";

/// Whether `body` is a packed part (else a JSON one, as parts were first written).
pub fn is_packed(body: &[u8]) -> bool {
    body.starts_with(MAGIC)
}

/// Packs `entries`: all of `level`, sorted by TXID range, each with a 16-hex-digit `sha256`.
pub fn encode(level: u32, entries: &[Entry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + entries.len() * 16);
    out.extend_from_slice(MAGIC);
    put(&mut out, level as u64);
    put(&mut out, entries.len() as u64);
    let (mut prev_min, mut prev_at) = (0u64, 0i64);
    for e in entries {
        debug_assert_eq!(e.level, level, "a part holds one level");
        put(&mut out, e.min_txid.get() - prev_min);
        put(&mut out, e.max_txid.get() - e.min_txid.get());
        put(&mut out, zigzag(e.created_at_ms.wrapping_sub(prev_at)));
        put(&mut out, e.size);
        out.extend_from_slice(&hex16_bytes(&e.sha256));
        prev_min = e.min_txid.get();
        prev_at = e.created_at_ms;
    }
    out
}

/// Unpacks a part of `level` (the reference's) written by `encode`; `None` if the bytes are
/// not a whole, well-formed packed part of that level.
pub fn decode(body: &[u8], level: u32, layout: Layout) -> Option<Vec<Entry>> {
    let mut r = Reader(body.strip_prefix(MAGIC)?);
    if r.next()? != level as u64 {
        return None;
    }
    let count = usize::try_from(r.next()?).ok()?;
    // Each entry takes at least 12 bytes: a count larger than that is a lie, not a reason to
    // reserve memory.
    let mut out = Vec::with_capacity(count.min(r.0.len() / 12));
    let (mut prev_min, mut prev_at) = (0u64, 0i64);
    for _ in 0..count {
        let min = prev_min.checked_add(r.next()?)?;
        let max = min.checked_add(r.next()?)?;
        let at = prev_at.wrapping_add(unzigzag(r.next()?));
        let size = r.next()?;
        let sha = r.take(8)?;
        let key = FileKey::new(level, Txid::new(min)?, Txid::new(max)?)?;
        out.push(Entry {
            key: layout.file_key(&key),
            level,
            min_txid: key.min_txid,
            max_txid: key.max_txid,
            created_at_ms: at,
            size,
            sha256: sha.iter().map(|b| format!("{b:02x}")).collect(),
        });
        prev_min = min;
        prev_at = at;
    }
    r.0.is_empty().then_some(out)
}

fn put(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// The 8 bytes a 16-hex-digit SHA-256 prefix spells. Entries are checked when a manifest is
/// parsed and made by `sha256_64` otherwise, so anything else is a bug.
fn hex16_bytes(s: &str) -> [u8; 8] {
    assert!(super::is_hex16(s), "an entry's sha256 is 16 hex digits");
    let mut b = [0u8; 8];
    for (i, out) in b.iter_mut().enumerate() {
        *out = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    b
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    /// One LEB128 value of at most 64 bits.
    fn next(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().enumerate().take(10) {
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return None;
            }
            v |= bits << (7 * i);
            if b & 0x80 == 0 {
                self.0 = &self.0[i + 1..];
                return Some(v);
            }
        }
        None
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(level: u32, min: u64, max: u64, at: i64, layout: Layout) -> Entry {
        let key = FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap();
        let info = crate::store::FileInfo {
            key,
            size: 4000 + max % 1000,
            created_at_ms: at,
        };
        Entry::new(layout, &info, super::super::sha256_64(&max.to_be_bytes()))
    }

    #[test]
    fn entries_come_back_as_they_went_in_for_either_layout() {
        for layout in [Layout::Fs, Layout::S3] {
            let mut es = vec![
                entry(0, 1, 1, 1_800_000_000_000, layout),
                entry(0, 2, 40, 1_799_999_999_000, layout), // time may step back
                entry(0, 41, 41, 1_800_000_005_000, layout),
                entry(0, 1 << 40, (1 << 40) + 7, 1_800_000_005_001, layout),
                entry(0, u64::MAX - 1, u64::MAX, -5, layout),
            ];
            let body = encode(0, &es);
            assert!(is_packed(&body));
            assert_eq!(decode(&body, 0, layout), Some(es.clone()));
            es.truncate(0);
            assert_eq!(decode(&encode(9, &es), 9, layout), Some(es));
        }
    }

    #[test]
    fn a_packed_entry_costs_about_fourteen_bytes() {
        let es: Vec<Entry> = (1..=1000)
            .map(|t| entry(0, t, t, 1_800_000_000_000 + t as i64 * 1000, Layout::S3))
            .collect();
        let body = encode(0, &es);
        assert!(body.len() < 1000 * 15, "{} bytes", body.len());
    }

    #[test]
    fn bytes_that_are_not_a_whole_part_of_that_level_are_refused_without_panicking() {
        let es: Vec<Entry> = (1..=5)
            .map(|t| entry(3, t * 2, t * 2 + 1, t as i64, Layout::Fs))
            .collect();
        let body = encode(3, &es);
        assert_eq!(decode(&body, 4, Layout::Fs), None, "another level");
        for cut in 0..body.len() {
            assert_eq!(decode(&body[..cut], 3, Layout::Fs), None, "cut at {cut}");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(decode(&longer, 3, Layout::Fs), None, "trailing bytes");
        // Every single-byte change either decodes to something or is refused; none panics.
        for i in 0..body.len() {
            for b in [0u8, 0x7f, 0x80, 0xff] {
                let mut bad = body.clone();
                bad[i] = b;
                let _ = decode(&bad, 3, Layout::Fs);
            }
        }
        let mut huge = MAGIC.to_vec();
        huge.extend_from_slice(&[3, 0xff, 0xff, 0xff, 0xff, 0x0f]);
        assert_eq!(decode(&huge, 3, Layout::Fs), None, "a count it cannot hold");
        let overflow = [
            MAGIC.as_slice(),
            &[
                3, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01, 0, 0, 1,
            ],
        ]
        .concat();
        let _ = decode(&overflow, 3, Layout::Fs);
    }
}
