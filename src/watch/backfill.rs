//! The sidecar's own checkpoint (`walrust watch --checkpoint background`): SQLite's PASSIVE
//! checkpoint (`walCheckpoint` in SQLite's `wal.c`), done without SQLite, bounded by what the
//! shadow log already holds.
//!
//! Steps, as SQLite takes them: the CKPT lock (one checkpointer at a time); `mxSafeFrame`, the
//! highest frame no reader still needs from the WAL alone (a reader holding READ(i) at mark `y`
//! limits it to `y`; a free slot's mark is moved up); READ(0) exclusive (no reader may read the
//! database file alone while its pages change); the WAL synced; for each page, its newest frame
//! up to `mxFrame`, copied into the database file if that frame is at or below `mxSafeFrame`
//! (a page rewritten later is copied by a later checkpoint, and no reader reads the older
//! version from the database file meanwhile); the database file truncated to the commit's size
//! when everything is copied; the database file synced; then `nBackfill`.
//!
//! What must hold: no page is written from a frame above `limit` (not in the shadow log yet) or
//! above a held read mark; `nBackfill` moves only after the database file is synced; our own
//! read slot is never locked exclusive (a POSIX lock would silently convert our shared hold);
//! nothing runs without a live WAL index (DMS joined) or while the WAL's salts moved.

use super::shm::{read_lock, IndexHeader, WalIndex, CKPT_LOCK, NREADER, READMARK_NOT_USED};
use crate::vfs::ffi::posix::{self, Lock};
use crate::wal;
use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// What a checkpoint did: frames `(from, to]` are now in the database file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backfilled {
    pub from: u32,
    pub to: u32,
    pub pages: usize,
}

/// Holds a lock byte of the `-shm` file exclusively until dropped.
struct Held<'a> {
    shm: &'a File,
    byte: u64,
}

impl<'a> Held<'a> {
    fn try_take(shm: &'a File, byte: u64) -> io::Result<Option<Held<'a>>> {
        Ok(posix::set_lock(shm, Lock::Exclusive, byte, 1)?.then_some(Held { shm, byte }))
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let _ = posix::set_lock(self.shm, Lock::Unlock, self.byte, 1);
    }
}

impl WalIndex {
    /// A PASSIVE checkpoint of the frames up to `limit` (the last frame of the current WAL
    /// generation the shadow log holds). `Ok(None)`: nothing to do, or busy (another
    /// checkpointer, a reader of the database file alone, a WAL restarted meanwhile): the next
    /// poll tries again.
    pub fn checkpoint(
        &self,
        db: &File,
        wal_file: &File,
        limit: u32,
    ) -> io::Result<Option<Backfilled>> {
        if !self.joined() {
            return Ok(None);
        }
        let Some(_ckpt) = Held::try_take(self.shm(), CKPT_LOCK)? else {
            return Ok(None);
        };
        let Some(hdr) = self.header()? else {
            return Ok(None);
        };
        let from = self.ckpt()?.n_backfill;
        let safe = self.safe_frame(&hdr, limit.min(hdr.mx_frame))?;
        if from >= safe {
            return Ok(None);
        }
        let Some(_read0) = Held::try_take(self.shm(), read_lock(0))? else {
            return Ok(None);
        };
        if self.header()?.map(|h| h.salts) != Some(hdr.salts) {
            return Ok(None);
        }
        self.set_backfill_attempted(safe)?;
        wal_file.sync_data()?;
        let newest = newest_frames(wal_file, &hdr, from)?;
        let mut pages = 0;
        let mut buf = vec![0u8; hdr.page_size as usize];
        for (&pgno, &frame) in &newest {
            if frame > safe || pgno > hdr.n_page {
                continue;
            }
            let at = wal::frame_offset(frame, hdr.page_size) + wal::FRAME_HEADER_SIZE;
            wal_file.read_exact_at(&mut buf, at)?;
            db.write_all_at(&buf, (pgno as u64 - 1) * hdr.page_size as u64)?;
            pages += 1;
        }
        if self
            .header()?
            .is_some_and(|h| h.mx_frame == safe && h.salts == hdr.salts)
        {
            db.set_len(hdr.n_page as u64 * hdr.page_size as u64)?;
        }
        db.sync_all()?;
        self.set_backfill(safe)?;
        Ok(Some(Backfilled {
            from,
            to: safe,
            pages,
        }))
    }

    /// `mxSafeFrame`: `upto`, lowered to the mark of every READ(i) (i >= 1) a reader holds
    /// below it; a slot nobody holds gets its mark moved (slot 1 to `upto`, others unused), as
    /// SQLite does, so that a reader arriving later does not hold the checkpoint back.
    fn safe_frame(&self, hdr: &IndexHeader, upto: u32) -> io::Result<u32> {
        let mut safe = upto;
        for i in 1..NREADER {
            let y = self.ckpt()?.marks[i];
            if safe <= y {
                continue;
            }
            if Some(i) == self.slot() {
                safe = y; // our own hold: never lock it exclusive
                continue;
            }
            match Held::try_take(self.shm(), read_lock(i))? {
                Some(_held) => {
                    let mark = if i == 1 { safe } else { READMARK_NOT_USED };
                    self.write_mark(i, mark)?;
                }
                None => safe = y,
            }
        }
        debug_assert!(safe <= hdr.mx_frame);
        Ok(safe)
    }
}

/// For every page written in frames `(from, hdr.mx_frame]`, its newest frame. Every frame up to
/// `mxFrame` belongs to the current generation (SQLite publishes no other); the salts are
/// checked anyway, and a mismatch stops the checkpoint before it writes anything.
fn newest_frames(wal_file: &File, hdr: &IndexHeader, from: u32) -> io::Result<BTreeMap<u32, u32>> {
    let mut newest = BTreeMap::new();
    let mut fh = [0u8; wal::FRAME_HEADER_SIZE as usize];
    for frame in from + 1..=hdr.mx_frame {
        wal_file.read_exact_at(&mut fh, wal::frame_offset(frame, hdr.page_size))?;
        let h = wal::parse_frame_header(&fh);
        if h.salts != hdr.salts || h.pgno == 0 {
            return Err(io::Error::other(format!(
                "WAL frame {frame} does not belong to the generation its index describes"
            )));
        }
        newest.insert(h.pgno, frame);
    }
    Ok(newest)
}
