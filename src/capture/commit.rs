//! From captured commits to shadow-log records, with the continuity proof that makes the log a
//! faithful copy of the database's history.
//!
//! Every record remembers where the WAL stood after it (`WalPos`). Before a transaction is
//! appended, the log's last position must lead straight to the transaction's first frame. If
//! frames were committed in between (by a process that died between writing the WAL and the
//! log, or one without walrust), they are read from the WAL, checksum chain verified, and
//! appended first. If the history cannot be proven (the WAL was restarted or replaced where
//! walrust could not see it), a `Resync` record tells the uploader to take a snapshot.
//! Everything here runs on SQLite's thread with the WAL write lock held: it touches local files
//! only, never the network.

use super::Committed;
use crate::clock;
use crate::shadow::log::Appender;
use crate::shadow::{Header, Kind, WalPos};
use crate::wal::{self, WalHeader};
use std::io;

/// Reads bytes of the `-wal` file at an offset; returns how many were read (short at EOF).
pub type WalRead<'a> = dyn FnMut(&mut [u8], u64) -> io::Result<usize> + 'a;

/// What `append_commit` and `catch_up` wrote.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub records: u32,
    pub bytes: u64,
    pub last_txid: u64,
    pub resync: bool,
}

impl Appended {
    /// One record of `bytes` with TXID `txid` (a `Resync` marker if `resync`).
    fn one(bytes: u64, txid: u64, resync: bool) -> Appended {
        Appended {
            records: 1,
            bytes,
            last_txid: txid,
            resync,
        }
    }

    fn add(&mut self, other: Appended) {
        self.records += other.records;
        self.bytes += other.bytes;
        self.last_txid = self.last_txid.max(other.last_txid);
        self.resync |= other.resync;
    }
}

fn next_txid(app: &Appender) -> u64 {
    app.next_txid()
}

fn marker(kind: Kind, txid: u64, pos: WalPos, fingerprint: (u64, i64)) -> Header {
    Header {
        kind,
        txid,
        page_size: 0,
        commit: 0,
        n_pages: 0,
        pos,
        timestamp_ms: clock::now_ms(),
        fingerprint,
        continued: false,
    }
}

/// Appends a record with no pages (a marker) and returns what it wrote.
pub fn append_marker(
    app: &mut Appender,
    kind: Kind,
    txid: u64,
    pos: WalPos,
    fp: (u64, i64),
) -> io::Result<Appended> {
    let bytes = app.append(marker(kind, txid, pos, fp), &mut |_, _| {
        unreachable!("markers have no pages")
    })?;
    Ok(Appended::one(bytes, txid, kind == Kind::Resync))
}

/// Appends one committed transaction, reading its page images from the WAL.
fn append_txn(app: &mut Appender, c: &Committed, wal: &mut WalRead) -> io::Result<Appended> {
    let txid = next_txid(app);
    let n_pages = c.pages.len() as u32;
    let header = txn_header(c, txid, n_pages, clock::now_ms(), false);
    let bytes = app.append(header, &mut |i, page| {
        let (pgno, frame) = c.pages[i];
        fill_page(c, frame, page, wal)?;
        Ok(pgno)
    })?;
    Ok(Appended::one(bytes, txid, false))
}

/// The record of commit `c` as TXID `txid`, with `n_pages` page images (0 for a continued
/// record of a group, whose pages are in the group's last).
fn txn_header(
    c: &Committed,
    txid: u64,
    n_pages: u32,
    timestamp_ms: i64,
    continued: bool,
) -> Header {
    Header {
        kind: Kind::Txn,
        txid,
        page_size: c.page_size,
        commit: c.commit,
        n_pages,
        pos: WalPos::At {
            salts: c.salts,
            frame: c.last,
        },
        timestamp_ms,
        fingerprint: (0, 0),
        continued,
    }
}

/// Copies the image `c` wrote in `frame` into `page`: kept at capture, or read from the WAL.
fn fill_page(c: &Committed, frame: u32, page: &mut [u8], wal: &mut WalRead) -> io::Result<()> {
    if let Some(image) = c
        .images
        .as_ref()
        .and_then(|img| img.get(frame, c.page_size))
    {
        page.copy_from_slice(image);
        return Ok(());
    }
    let off = wal::frame_offset(frame, c.page_size) + wal::FRAME_HEADER_SIZE;
    if wal(page, off)? < page.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "WAL frame vanished during capture",
        ));
    }
    Ok(())
}

/// The WAL position the log's last record leaves us at, if the current WAL continues it.
enum Continuity {
    /// Captured up to this frame of the current generation (0: nothing of it yet).
    From(u32),
    /// The history cannot be proven: a snapshot is needed.
    Unproven,
}

fn continuity(
    last: Option<&Header>,
    hdr: &WalHeader,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> Continuity {
    let Some(last) = last else {
        return Continuity::Unproven;
    };
    match last.pos {
        WalPos::At { salts, frame } if salts == hdr.salts => Continuity::From(frame),
        _ if file_final(last, fingerprint) => Continuity::From(0),
        _ => Continuity::Unproven,
    }
}

/// The log's last record vouches that the database file holds everything the log does, so a
/// WAL generation that does not continue the record's starts after it with nothing lost
/// between: it ended a generation (`Empty`; with the file's fingerprint then, when the file
/// was final), or it is a point where every frame up to it was checkpointed (`At`, with the
/// file's fingerprint then: `walrust watch` letting SQLite restart the WAL), and the file
/// still has that fingerprint. (Any later commit reaches the file only through a checkpoint,
/// which changes its fingerprint, before the WAL can start over.)
pub fn file_final(last: &Header, fingerprint: &dyn Fn() -> (u64, i64)) -> bool {
    match last.pos {
        WalPos::Empty => last.fingerprint == (0, 0) || last.fingerprint == fingerprint(),
        WalPos::At { .. } => last.fingerprint != (0, 0) && last.fingerprint == fingerprint(),
        WalPos::Unknown => false,
    }
}

/// Whether the log's last record ties it to the database file's fingerprint (see
/// `file_final`): a checkpoint that changes the file before the log has caught up with the
/// WAL breaks the proof.
pub fn pinned_to_file(last: &Header) -> bool {
    last.fingerprint != (0, 0) && last.pos != WalPos::Unknown
}

/// Appends every transaction committed in the WAL after the log's last position, or a `Resync`
/// when the position cannot be followed. `hdr` is the WAL's current header (None: the WAL is
/// empty or absent). Call with the WAL write lock held.
pub fn catch_up(
    app: &mut Appender,
    hdr: Option<&WalHeader>,
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> io::Result<Appended> {
    app.refresh()?;
    catch_up_refreshed(app, hdr, wal, fingerprint)
}

fn catch_up_refreshed(
    app: &mut Appender,
    hdr: Option<&WalHeader>,
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> io::Result<Appended> {
    let Some(hdr) = hdr else {
        let last = app.last().copied();
        return match last {
            Some(h) if file_final(&h, fingerprint) => Ok(Appended::default()),
            _ => append_marker(
                app,
                Kind::Resync,
                next_txid(app),
                WalPos::Empty,
                fingerprint(),
            ),
        };
    };
    let mut out = Appended::default();
    let after = match continuity(app.last(), hdr, fingerprint) {
        Continuity::From(frame) => frame,
        Continuity::Unproven => {
            let spans = wal::scan_commits(hdr, 0, wal)?;
            let pos = match spans.last() {
                Some(s) => WalPos::At {
                    salts: hdr.salts,
                    frame: s.last,
                },
                None => WalPos::At {
                    salts: hdr.salts,
                    frame: 0,
                },
            };
            return append_marker(app, Kind::Resync, next_txid(app), pos, (0, 0));
        }
    };
    for span in wal::scan_commits(hdr, after, wal)? {
        let frames = wal::frame_pgnos(hdr.page_size, span.first, span.last, wal)?;
        let c = Committed::from_frames(hdr, span.first, span.last, span.commit, frames);
        out.add(append_txn(app, &c, wal)?);
    }
    Ok(out)
}

/// True if the WAL holds commits after the log's `last` record, or the log cannot be proven
/// to continue into the current WAL: then `catch_up` (under the write lock) has work to do.
/// Reads only; needs no lock.
pub fn has_uncaptured(
    last: Option<&Header>,
    hdr: Option<&WalHeader>,
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> io::Result<bool> {
    let Some(hdr) = hdr else {
        return Ok(!last.is_some_and(|h| file_final(h, fingerprint)));
    };
    match continuity(last, hdr, fingerprint) {
        Continuity::From(frame) => Ok(!wal::scan_commits(hdr, frame, wal)?.is_empty()),
        Continuity::Unproven => Ok(true),
    }
}

/// Appends a transaction this process just committed, after any the log is missing.
pub fn append_commit(
    app: &mut Appender,
    hdr: &WalHeader,
    c: &Committed,
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> io::Result<Appended> {
    app.refresh()?;
    append_refreshed(app, hdr, c, wal, fingerprint)
}

/// Appends commits this process made under successive holds of the write lock, oldest first,
/// as one group: one write, one record and one TXID per commit, every page once (its newest
/// image, in the group's last record; the others are `continued`). `hdr` is the WAL's header
/// now: commits of an ended generation, and commits the log already holds (another process
/// caught them up from the WAL), are left out. If the rest does not follow the log's last
/// record, each is appended on its own, catching up what precedes it.
pub fn append_group(
    app: &mut Appender,
    hdr: &WalHeader,
    cs: &[Committed],
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> io::Result<Appended> {
    app.refresh()?;
    let live: Vec<&Committed> = cs
        .iter()
        .filter(|c| c.salts == hdr.salts && !logged(app, c))
        .collect();
    let Some(first) = live.first() else {
        return Ok(Appended::default());
    };
    let unbroken = live
        .windows(2)
        .all(|w| w[0].salts == w[1].salts && w[0].last + 1 == w[1].first);
    if live.len() == 1 || !unbroken || !follows(app, hdr, first, fingerprint) {
        let mut out = Appended::default();
        for c in live {
            if !logged(app, c) {
                out.add(append_refreshed(app, hdr, c, wal, fingerprint)?);
            }
        }
        return Ok(out);
    }
    app.stage()?;
    match append_staged_group(app, &live, wal) {
        Ok(out) => app.unstage().map(|()| out),
        Err(e) => {
            app.abandon_stage();
            Err(e)
        }
    }
}

fn append_staged_group(
    app: &mut Appender,
    cs: &[&Committed],
    wal: &mut WalRead,
) -> io::Result<Appended> {
    let (last, earlier) = cs.split_last().expect("a group has commits");
    let mut out = Appended::default();
    let now = clock::now_ms();
    for c in earlier {
        let txid = next_txid(app);
        let h = txn_header(c, txid, 0, now, true);
        let bytes = app.append(h, &mut |_, _| {
            unreachable!("a continued record has no pages")
        })?;
        out.add(Appended::one(bytes, txid, false));
    }
    // Each page once: its newest image in the group, none past the final size.
    let mut newest: std::collections::BTreeMap<u32, (usize, u32)> = Default::default();
    for (i, c) in cs.iter().enumerate() {
        for &(pgno, frame) in &c.pages {
            newest.insert(pgno, (i, frame));
        }
    }
    let pages: Vec<(u32, usize, u32)> = newest
        .into_iter()
        .filter(|&(pgno, _)| pgno <= last.commit)
        .map(|(pgno, (i, frame))| (pgno, i, frame))
        .collect();
    let txid = next_txid(app);
    let h = txn_header(last, txid, pages.len() as u32, now, false);
    let bytes = app.append(h, &mut |i, page| {
        let (pgno, c, frame) = pages[i];
        fill_page(cs[c], frame, page, wal)?;
        Ok(pgno)
    })?;
    out.add(Appended::one(bytes, txid, false));
    Ok(out)
}

/// The log's last position is at or past the commit's last frame, in its generation.
fn logged(app: &Appender, c: &Committed) -> bool {
    matches!(app.last().map(|h| h.pos), Some(WalPos::At { salts, frame }) if salts == c.salts && frame >= c.last)
}

/// The commit's first frame follows the log's last position.
fn follows(
    app: &Appender,
    hdr: &WalHeader,
    c: &Committed,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> bool {
    matches!(app.last().map(|h| h.pos), Some(WalPos::At { salts, frame }) if salts == c.salts && frame + 1 == c.first)
        || (c.first == 1
            && matches!(
                continuity(app.last(), hdr, fingerprint),
                Continuity::From(0)
            ))
}

fn append_refreshed(
    app: &mut Appender,
    hdr: &WalHeader,
    c: &Committed,
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
) -> io::Result<Appended> {
    let mut out = Appended::default();
    let contiguous = |app: &Appender| follows(app, hdr, c, fingerprint);
    if !contiguous(app) {
        // Commits before ours that the log lacks: recover them from the WAL (stopping before ours).
        let mut bounded = |buf: &mut [u8], off: u64| -> io::Result<usize> {
            if off >= wal::frame_offset(c.first, c.page_size) {
                return Ok(0);
            }
            wal(buf, off)
        };
        out.add(catch_up_refreshed(
            app,
            Some(hdr),
            &mut bounded,
            fingerprint,
        )?);
        if !contiguous(app) {
            let pos = WalPos::At {
                salts: c.salts,
                frame: c.first - 1,
            };
            out.add(append_marker(
                app,
                Kind::Resync,
                next_txid(app),
                pos,
                (0, 0),
            )?);
        }
    }
    out.add(append_txn(app, c, wal)?);
    Ok(out)
}

/// A snapshot's marker: the log's last TXID labels the database as it is now, so a marker
/// with a new TXID (at least `min_txid`, above every TXID of the log) is appended only when
/// the replica already has TXIDs at or past the last one. Call with the WAL write lock held,
/// after `catch_up`.
pub fn mark_at_least(
    app: &mut Appender,
    kind: Kind,
    min_txid: u64,
    page_size: u32,
    commit_pages: u32,
) -> io::Result<Appended> {
    let last = app.last().copied();
    if last.is_some_and(|h| h.txid >= min_txid) {
        return Ok(Appended::default());
    }
    let txid = app.next_txid().max(min_txid);
    let h = Header {
        kind,
        txid,
        page_size,
        commit: commit_pages,
        n_pages: 0,
        pos: last.map_or(WalPos::Empty, |h| h.pos),
        timestamp_ms: clock::now_ms(),
        fingerprint: last.map_or((0, 0), |h| h.fingerprint),
        continued: false,
    };
    let bytes = app.append(h, &mut |_, _| unreachable!("markers have no pages"))?;
    Ok(Appended::one(bytes, txid, kind == Kind::Resync))
}

/// Records that the current WAL generation ended with everything captured (the WAL is being
/// restarted, truncated or deleted). `fingerprint` is set when the database file is final.
pub fn end_generation(
    app: &mut Appender,
    hdr: Option<&WalHeader>,
    wal: &mut WalRead,
    fingerprint: &dyn Fn() -> (u64, i64),
    final_fingerprint: Option<(u64, i64)>,
) -> io::Result<Appended> {
    let mut out = catch_up(app, hdr, wal, fingerprint)?;
    let last = app.last().copied();
    let fp = final_fingerprint.unwrap_or((0, 0));
    if last.map(|h| (h.pos, h.fingerprint)) != Some((WalPos::Empty, fp)) {
        let txid = last.map_or(0, |h| h.txid);
        let bytes = app.append(
            marker(Kind::Position, txid, WalPos::Empty, fp),
            &mut |_, _| unreachable!(),
        )?;
        out.add(Appended::one(bytes, txid, false));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::Salts;

    const FILE: (u64, i64) = (8192, 1_700_000_000_123_456_789);
    const OLD: Salts = Salts(7, 9);

    fn last(pos: WalPos, fingerprint: (u64, i64)) -> Header {
        marker(Kind::Position, 5, pos, fingerprint)
    }

    fn wal(salts: Salts) -> WalHeader {
        WalHeader {
            page_size: 4096,
            salts,
            checksum: (0, 0),
            big_endian: false,
        }
    }

    fn from(last: &Header, salts: Salts, file: (u64, i64)) -> Option<u32> {
        match continuity(Some(last), &wal(salts), &|| file) {
            Continuity::From(f) => Some(f),
            Continuity::Unproven => None,
        }
    }

    #[test]
    fn a_release_point_with_the_files_fingerprint_leads_into_a_new_generation() {
        let at = WalPos::At {
            salts: OLD,
            frame: 40,
        };
        let released = last(at, FILE);
        assert_eq!(from(&released, OLD, FILE), Some(40));
        assert_eq!(from(&released, Salts(8, 3), FILE), Some(0));
        // The file changed since: something was checkpointed that the log may lack.
        assert_eq!(from(&released, Salts(8, 3), (8192, 1)), None);
        // A commit's position proves nothing about a new generation.
        let txn = last(at, (0, 0));
        assert_eq!(from(&txn, Salts(8, 3), FILE), None);
        assert_eq!(from(&txn, OLD, (1, 1)), Some(40));
        assert!(pinned_to_file(&released) && !pinned_to_file(&txn));
    }

    #[test]
    fn an_ended_generation_leads_into_the_next_while_the_file_is_unchanged() {
        assert_eq!(from(&last(WalPos::Empty, (0, 0)), OLD, FILE), Some(0));
        assert_eq!(from(&last(WalPos::Empty, FILE), OLD, FILE), Some(0));
        assert_eq!(from(&last(WalPos::Empty, FILE), OLD, (1, 1)), None);
        assert!(!file_final(&last(WalPos::Unknown, FILE), &|| FILE));
    }
}
