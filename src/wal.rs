//! SQLite's WAL file format: the 32-byte header, 24-byte frame headers, and the cumulative
//! checksum that tells a committed frame from a stale one.
//!
//! Pure functions over bytes; nothing here does I/O except [`scan_commits`], which reads through
//! a caller-supplied `read_at` so it works on a file SQLite has open without touching its locks.
//! What must hold: a frame is only ever reported committed when its salts match the header and
//! the checksum chain from a known-good frame validates up to a frame whose commit field is set,
//! exactly the rule SQLite's own recovery uses.

pub const HEADER_SIZE: u64 = 32;
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC: u32 = 0x377f0682;

/// A WAL generation's identity: its header salts. Salt 1 grows by one at each restart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Salts(pub u32, pub u32);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalHeader {
    pub page_size: u32,
    pub salts: Salts,
    pub checksum: (u32, u32),
    pub big_endian: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// Database size in pages after this frame's transaction, on a commit frame; 0 otherwise.
    pub commit: u32,
    pub salts: Salts,
    pub checksum: (u32, u32),
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Parses and validates a WAL header (magic, version, page size, header checksum).
pub fn parse_header(b: &[u8]) -> Option<WalHeader> {
    if b.len() < HEADER_SIZE as usize {
        return None;
    }
    let magic = be32(b, 0);
    if magic & !1 != MAGIC || be32(b, 4) != 3007000 {
        return None;
    }
    let big_endian = magic & 1 == 1;
    let raw_size = be32(b, 8);
    let page_size = if raw_size == 1 { 65536 } else { raw_size };
    if !crate::types::is_valid_page_size(page_size) {
        return None;
    }
    let checksum = (be32(b, 24), be32(b, 28));
    if cksum(big_endian, &b[..24], (0, 0)) != checksum {
        return None;
    }
    Some(WalHeader {
        page_size,
        salts: Salts(be32(b, 16), be32(b, 20)),
        checksum,
        big_endian,
    })
}

pub fn parse_frame_header(b: &[u8]) -> FrameHeader {
    FrameHeader {
        pgno: be32(b, 0),
        commit: be32(b, 4),
        salts: Salts(be32(b, 8), be32(b, 12)),
        checksum: (be32(b, 16), be32(b, 20)),
    }
}

/// SQLite's WAL checksum: Fibonacci-weighted sums over pairs of 32-bit words.
pub fn cksum(big_endian: bool, data: &[u8], init: (u32, u32)) -> (u32, u32) {
    let (mut s0, mut s1) = init;
    for pair in data.chunks_exact(8) {
        let word = |i: usize| {
            let w: [u8; 4] = pair[i..i + 4].try_into().unwrap();
            if big_endian {
                u32::from_be_bytes(w)
            } else {
                u32::from_le_bytes(w)
            }
        };
        s0 = s0.wrapping_add(word(0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(4)).wrapping_add(s0);
    }
    (s0, s1)
}

/// Byte offset of 1-based frame `frame`'s header.
pub fn frame_offset(frame: u32, page_size: u32) -> u64 {
    HEADER_SIZE + (frame as u64 - 1) * (FRAME_HEADER_SIZE + page_size as u64)
}

/// What a write at `offset` of `len` bytes touches: a frame's header, its page data, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FramePart {
    Header(u32),
    Data(u32),
    Whole(u32),
}

pub fn classify_write(offset: u64, len: usize, page_size: u32) -> Option<FramePart> {
    if offset < HEADER_SIZE {
        return None;
    }
    let frame_size = FRAME_HEADER_SIZE + page_size as u64;
    let rel = offset - HEADER_SIZE;
    let frame = u32::try_from(rel / frame_size + 1).ok()?;
    match (rel % frame_size, len as u64) {
        (0, n) if n == FRAME_HEADER_SIZE => Some(FramePart::Header(frame)),
        (0, n) if n == frame_size => Some(FramePart::Whole(frame)),
        (off, n) if off == FRAME_HEADER_SIZE && n == page_size as u64 => {
            Some(FramePart::Data(frame))
        }
        _ => None,
    }
}

/// A transaction found in the WAL by [`scan_commits`]: frames `first..=last`, `last` a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommittedSpan {
    pub first: u32,
    pub last: u32,
    pub commit: u32,
}

/// Walks the WAL after frame `after` (0 = from the start), validating the checksum chain, and
/// returns every committed transaction it finds in order. Stops at the first frame that does not
/// validate. `after` must be a frame whose chain is trusted (a commit frame SQLite wrote).
pub fn scan_commits(
    header: &WalHeader,
    after: u32,
    read_at: &mut dyn FnMut(&mut [u8], u64) -> std::io::Result<usize>,
) -> std::io::Result<Vec<CommittedSpan>> {
    let ps = header.page_size;
    let mut chain = header.checksum;
    if after > 0 {
        let mut fh = [0u8; FRAME_HEADER_SIZE as usize];
        if read_at(&mut fh, frame_offset(after, ps))? < fh.len() {
            return Ok(Vec::new());
        }
        let h = parse_frame_header(&fh);
        if h.salts != header.salts {
            return Ok(Vec::new());
        }
        chain = h.checksum;
    }
    let mut buf = vec![0u8; FRAME_HEADER_SIZE as usize + ps as usize];
    let mut spans = Vec::new();
    let mut first = after + 1;
    let mut frame = after + 1;
    loop {
        if read_at(&mut buf, frame_offset(frame, ps))? < buf.len() {
            break;
        }
        let h = parse_frame_header(&buf);
        if h.salts != header.salts || h.pgno == 0 {
            break;
        }
        let c = cksum(header.big_endian, &buf[..8], chain);
        let c = cksum(header.big_endian, &buf[FRAME_HEADER_SIZE as usize..], c);
        if c != h.checksum {
            break;
        }
        chain = c;
        if h.commit != 0 {
            spans.push(CommittedSpan {
                first,
                last: frame,
                commit: h.commit,
            });
            first = frame + 1;
        }
        frame += 1;
    }
    Ok(spans)
}

/// Reads the page numbers of frames `first..=last` (their headers only).
pub fn frame_pgnos(
    page_size: u32,
    first: u32,
    last: u32,
    read_at: &mut dyn FnMut(&mut [u8], u64) -> std::io::Result<usize>,
) -> std::io::Result<Vec<(u32, u32)>> {
    let mut out = Vec::with_capacity((last + 1 - first) as usize);
    let mut fh = [0u8; FRAME_HEADER_SIZE as usize];
    for frame in first..=last {
        if read_at(&mut fh, frame_offset(frame, page_size))? < fh.len() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "short WAL frame",
            ));
        }
        out.push((frame, parse_frame_header(&fh).pgno));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a WAL image the way SQLite writes one, for tests.
    pub fn build_wal(page_size: u32, salts: Salts, frames: &[(u32, u32, u8)]) -> Vec<u8> {
        let mut w = vec![0u8; HEADER_SIZE as usize];
        w[0..4].copy_from_slice(&MAGIC.to_be_bytes());
        w[4..8].copy_from_slice(&3007000u32.to_be_bytes());
        w[8..12].copy_from_slice(&page_size.to_be_bytes());
        w[16..20].copy_from_slice(&salts.0.to_be_bytes());
        w[20..24].copy_from_slice(&salts.1.to_be_bytes());
        let c = cksum(false, &w[..24], (0, 0));
        w[24..28].copy_from_slice(&c.0.to_be_bytes());
        w[28..32].copy_from_slice(&c.1.to_be_bytes());
        let mut chain = c;
        for &(pgno, commit, fill) in frames {
            let mut f = vec![0u8; 24];
            f[0..4].copy_from_slice(&pgno.to_be_bytes());
            f[4..8].copy_from_slice(&commit.to_be_bytes());
            f[8..12].copy_from_slice(&salts.0.to_be_bytes());
            f[12..16].copy_from_slice(&salts.1.to_be_bytes());
            let data = vec![fill; page_size as usize];
            chain = cksum(false, &f[..8], chain);
            chain = cksum(false, &data, chain);
            f[16..20].copy_from_slice(&chain.0.to_be_bytes());
            f[20..24].copy_from_slice(&chain.1.to_be_bytes());
            w.extend_from_slice(&f);
            w.extend_from_slice(&data);
        }
        w
    }

    fn reader(w: &[u8]) -> impl FnMut(&mut [u8], u64) -> std::io::Result<usize> + '_ {
        move |buf, off| {
            let off = off as usize;
            if off >= w.len() {
                return Ok(0);
            }
            let n = buf.len().min(w.len() - off);
            buf[..n].copy_from_slice(&w[off..off + n]);
            Ok(n)
        }
    }

    #[test]
    fn finds_committed_spans_and_stops_at_uncommitted_tail() {
        let w = build_wal(
            512,
            Salts(7, 9),
            &[(1, 0, 1), (2, 2, 2), (3, 3, 3), (1, 0, 4)],
        );
        let h = parse_header(&w).unwrap();
        assert_eq!(h.page_size, 512);
        let spans = scan_commits(&h, 0, &mut reader(&w)).unwrap();
        assert_eq!(
            spans,
            vec![
                CommittedSpan {
                    first: 1,
                    last: 2,
                    commit: 2
                },
                CommittedSpan {
                    first: 3,
                    last: 3,
                    commit: 3
                }
            ]
        );
        let spans = scan_commits(&h, 2, &mut reader(&w)).unwrap();
        assert_eq!(
            spans,
            vec![CommittedSpan {
                first: 3,
                last: 3,
                commit: 3
            }]
        );
    }

    #[test]
    fn stale_frames_from_an_older_chain_do_not_validate() {
        let mut w = build_wal(512, Salts(7, 9), &[(1, 0, 1), (2, 2, 2), (3, 3, 3)]);
        // Frame 3 rewritten by a different transaction history: flip a data byte.
        let off = frame_offset(3, 512) as usize + 30;
        w[off] ^= 0xff;
        let h = parse_header(&w).unwrap();
        let spans = scan_commits(&h, 0, &mut reader(&w)).unwrap();
        assert_eq!(spans.len(), 1);
    }

    #[test]
    fn classifies_frame_writes() {
        assert_eq!(classify_write(32, 24, 4096), Some(FramePart::Header(1)));
        assert_eq!(classify_write(56, 4096, 4096), Some(FramePart::Data(1)));
        assert_eq!(
            classify_write(32 + 4120, 24, 4096),
            Some(FramePart::Header(2))
        );
        assert_eq!(classify_write(32, 4120, 4096), Some(FramePart::Whole(1)));
        assert_eq!(classify_write(0, 32, 4096), None);
    }
}
