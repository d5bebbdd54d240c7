//! Turns the stream of writes SQLite makes to a `-wal` file into committed transactions.
//!
//! One `Capture` per database per process, shared by its connections (only one of them holds
//! the WAL write lock at a time). It keeps frame and page numbers, and the page images SQLite
//! writes while the transaction stays under `IMAGE_LIMIT`; a larger transaction's pages are read
//! back from the WAL at commit, so it costs a few bytes per frame. What must hold: a
//! transaction is reported exactly once, when the page image of its commit frame has been
//! written; frames of rolled-back transactions (never followed by a commit), and frames beyond
//! the commit frame, are never reported; and pages rewritten in place within a transaction are
//! reported with their final contents.
//!
//! `commit` turns those transactions into shadow-log records. The module depends on nothing above
//! `shadow`: only `wal` (the format), `shadow` (the log it appends to) and `clock`. It is
//! driven by `database` (the extension's hooks at xWrite) and by `watch` (the sidecar, which
//! reads the WAL instead of seeing its writes); it never calls back into either.

pub mod commit;

pub use commit::Appended;

use crate::wal::{self, FramePart, Salts, WalHeader};

/// A committed transaction found in the WAL: the frames that hold its pages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Committed {
    pub salts: Salts,
    pub page_size: u32,
    /// First and last (commit) frame of the transaction.
    pub first: u32,
    pub last: u32,
    /// Database size in pages after the transaction.
    pub commit: u32,
    /// (page number, frame holding its final image), ascending page numbers, none past `commit`.
    pub pages: Vec<(u32, u32)>,
    /// The page images as SQLite wrote them (frame → offset), when the transaction was small
    /// enough to keep them: then nothing is read back from the WAL.
    pub images: Option<Images>,
}

/// Page images of one transaction, by frame: one buffer, and (frame, offset) sorted by frame.
/// A transaction of a few pages looks its images up in a few comparisons; the buffers go back
/// to the `Capture` after the append (`recycle`), so the commit path does not allocate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Images {
    bytes: Vec<u8>,
    at: Vec<(u32, usize)>,
}

impl Images {
    pub fn get(&self, frame: u32, page_size: u32) -> Option<&[u8]> {
        let i = self.at.binary_search_by_key(&frame, |&(f, _)| f).ok()?;
        let o = self.at[i].1;
        self.bytes.get(o..o + page_size as usize)
    }

    fn put(&mut self, frame: u32, data: &[u8]) {
        match self.at.binary_search_by_key(&frame, |&(f, _)| f) {
            Ok(i) => {
                let o = self.at[i].1;
                self.bytes[o..o + data.len()].copy_from_slice(data);
            }
            Err(i) => {
                self.at.insert(i, (frame, self.bytes.len()));
                self.bytes.extend_from_slice(data);
            }
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.at.clear();
    }
}

/// Transactions whose page images exceed this are read back from the WAL at commit instead.
const IMAGE_LIMIT: usize = 1 << 20;

impl Committed {
    /// Builds the page list from (frame, pgno) pairs in frame order: the last frame of a page wins.
    pub fn from_frames(
        hdr: &WalHeader,
        first: u32,
        last: u32,
        commit: u32,
        frames: impl IntoIterator<Item = (u32, u32)>,
    ) -> Committed {
        let mut pages: Vec<(u32, u32)> = frames
            .into_iter()
            .filter(|&(frame, pgno)| (first..=last).contains(&frame) && pgno <= commit)
            .map(|(frame, pgno)| (pgno, frame))
            .collect();
        // Stable: for each page, its frames stay in frame order; keep the last.
        pages.sort_by_key(|&(pgno, _)| pgno);
        pages.reverse();
        pages.dedup_by_key(|&mut (pgno, _)| pgno);
        pages.reverse();
        Committed {
            salts: hdr.salts,
            page_size: hdr.page_size,
            first,
            last,
            commit,
            pages,
            images: None,
        }
    }
}

/// Image buffers kept for reuse (a group of commits holds one each until it is appended).
const SPARE_IMAGES: usize = 64;

#[derive(Default)]
pub struct Capture {
    spare_images: Vec<Images>,
    header: Option<WalHeader>,
    /// (frame, page number) of the frames written since the write lock was taken, by frame; a
    /// frame written again (in place, or after a savepoint rollback) keeps its newest page.
    frames: Vec<(u32, u32)>,
    /// The commit frame whose header is written and whose page image is not yet.
    pending_commit: Option<(u32, u32)>,
    /// The newest commit frame this process captured in the current WAL generation.
    last_commit: u32,
    /// Page images of the open transaction; `None` once it outgrew `IMAGE_LIMIT`.
    images: Option<Images>,
}

impl Capture {
    pub fn header(&self) -> Option<&WalHeader> {
        self.header.as_ref()
    }

    /// Adopts the header of a WAL that already exists (read at open, or after another process
    /// restarted the WAL).
    pub fn adopt_header(&mut self, h: WalHeader) {
        if self.header.map(|o| o.salts) != Some(h.salts) {
            self.last_commit = 0;
        }
        self.header = Some(h);
    }

    /// A connection of this process took the WAL write lock: a new write transaction starts.
    pub fn on_write_lock(&mut self) {
        self.frames.clear();
        self.pending_commit = None;
        self.reset_images();
    }

    /// Starts keeping images again, reusing the buffers of the last transaction.
    fn reset_images(&mut self) {
        match &mut self.images {
            Some(img) => img.clear(),
            None => self.images = Some(self.spare_images.pop().unwrap_or_default()),
        }
    }

    /// Takes back the image buffers of a commit that has been appended, for the next one.
    pub fn recycle(&mut self, images: Option<Images>) {
        let unused = self
            .images
            .as_ref()
            .is_some_and(|i| i.at.is_empty() && i.bytes.capacity() == 0);
        let Some(mut img) = images else {
            return;
        };
        img.clear();
        if unused {
            self.images = Some(img);
        } else if self.spare_images.len() < SPARE_IMAGES {
            // Commits appended as a group each held their own buffers.
            self.spare_images.push(img);
        }
    }

    fn record_frame(&mut self, frame: u32, pgno: u32) {
        match self.frames.last() {
            Some(&(f, _)) if f < frame => self.frames.push((frame, pgno)),
            None => self.frames.push((frame, pgno)),
            _ => match self.frames.binary_search_by_key(&frame, |&(f, _)| f) {
                Ok(i) => self.frames[i].1 = pgno,
                Err(i) => self.frames.insert(i, (frame, pgno)),
            },
        }
    }

    fn keep_image(&mut self, frame: u32, data: &[u8]) {
        let full = match &mut self.images {
            Some(img) => {
                img.put(frame, data);
                img.bytes.len() > IMAGE_LIMIT
            }
            None => false,
        };
        if full {
            self.images = None;
        }
    }

    /// SQLite failed to sync the WAL for the commit `c` (the last this process captured): the
    /// commit was never published, and the next transaction writes its frames again.
    pub fn unpublished(&mut self, c: &Committed) {
        if self.last_commit == c.last && self.header.map(|h| h.salts) == Some(c.salts) {
            self.last_commit = c.first - 1;
        }
    }

    /// Called before a write to the WAL reaches the disk. Returns the new header when this write
    /// starts a new WAL generation; the caller must settle the old one before letting it through.
    pub fn header_write(&self, offset: u64, data: &[u8]) -> Option<WalHeader> {
        if offset != 0 || data.len() < wal::HEADER_SIZE as usize {
            return None;
        }
        wal::parse_header(data)
    }

    /// Records that a new WAL generation started with header `h`.
    pub fn start_generation(&mut self, h: WalHeader) {
        self.header = Some(h);
        self.frames.clear();
        self.pending_commit = None;
        self.last_commit = 0;
        self.reset_images();
    }

    /// Called after a write to the WAL succeeded. `reread_header` reads the WAL header from the
    /// file, for when another process started a generation we did not see.
    pub fn after_write(
        &mut self,
        offset: u64,
        data: &[u8],
        reread_header: &mut dyn FnMut() -> Option<WalHeader>,
    ) -> Option<Committed> {
        if offset == 0 {
            return None;
        }
        let mut hdr = match self.header {
            Some(h) => h,
            None => {
                let h = reread_header()?;
                self.adopt_header(h);
                h
            }
        };
        let part = wal::classify_write(offset, data.len(), hdr.page_size)?;
        let (frame, commit_done) = match part {
            FramePart::Header(frame) | FramePart::Whole(frame) => {
                let fh = wal::parse_frame_header(data);
                if fh.salts != hdr.salts {
                    hdr = reread_header().filter(|h| h.salts == fh.salts)?;
                    self.adopt_header(hdr);
                }
                if frame <= self.last_commit {
                    return None; // checksums rewritten after our own commit
                }
                self.record_frame(frame, fh.pgno);
                if matches!(part, FramePart::Whole(_)) {
                    self.keep_image(frame, &data[wal::FRAME_HEADER_SIZE as usize..]);
                }
                if fh.commit == 0 {
                    return None;
                }
                self.pending_commit = Some((frame, fh.commit));
                (frame, matches!(part, FramePart::Whole(_)))
            }
            FramePart::Data(frame) => {
                self.keep_image(frame, data);
                (frame, true)
            }
        };
        let (commit_frame, commit) = self
            .pending_commit
            .filter(|&(f, _)| f == frame && commit_done)?;
        self.pending_commit = None;
        let first = self.frames.first().map_or(commit_frame, |&(f, _)| f);
        self.last_commit = commit_frame;
        let mut c =
            Committed::from_frames(&hdr, first, commit_frame, commit, self.frames.drain(..));
        // The images go with the commit; the next transaction starts a fresh set.
        c.images = self.images.take();
        self.images = Some(Images::default());
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr() -> WalHeader {
        WalHeader {
            page_size: 512,
            salts: Salts(5, 6),
            checksum: (0, 0),
            big_endian: false,
        }
    }

    fn frame_header(pgno: u32, commit: u32) -> Vec<u8> {
        let mut f = vec![0u8; 24];
        f[0..4].copy_from_slice(&pgno.to_be_bytes());
        f[4..8].copy_from_slice(&commit.to_be_bytes());
        f[8..12].copy_from_slice(&5u32.to_be_bytes());
        f[12..16].copy_from_slice(&6u32.to_be_bytes());
        f
    }

    fn write_frame(c: &mut Capture, frame: u32, pgno: u32, commit: u32) -> Option<Committed> {
        let off = wal::frame_offset(frame, 512);
        assert!(c
            .after_write(off, &frame_header(pgno, commit), &mut || None)
            .is_none());
        c.after_write(off + 24, &[0u8; 512], &mut || None)
    }

    #[test]
    fn commit_reports_final_frame_per_page_and_ignores_rollback() {
        let mut c = Capture::default();
        c.start_generation(hdr());
        c.on_write_lock();
        // A rolled-back transaction spills frames 1..=3.
        for (f, p) in [(1, 7), (2, 8), (3, 9)] {
            assert!(write_frame(&mut c, f, p, 0).is_none());
        }
        // The next transaction starts at frame 1 again, rewrites page 2, commits at frame 2.
        c.on_write_lock();
        assert!(write_frame(&mut c, 1, 2, 0).is_none());
        let got = write_frame(&mut c, 2, 3, 10).unwrap();
        assert_eq!((got.first, got.last, got.commit), (1, 2, 10));
        assert_eq!(got.pages, vec![(2, 1), (3, 2)]);
        // Checksum rewrites of frames already committed are ignored.
        assert!(c
            .after_write(wal::frame_offset(2, 512), &frame_header(3, 10), &mut || {
                None
            })
            .is_none());
    }

    #[test]
    fn a_commit_whose_sync_failed_is_written_again() {
        let mut c = Capture::default();
        c.start_generation(hdr());
        c.on_write_lock();
        write_frame(&mut c, 1, 2, 0);
        let failed = write_frame(&mut c, 2, 3, 10).unwrap();
        c.unpublished(&failed);
        // The next transaction reuses frames 1 and 2: they are its own, not checksum rewrites.
        c.on_write_lock();
        write_frame(&mut c, 1, 4, 0);
        let got = write_frame(&mut c, 2, 5, 10).unwrap();
        assert_eq!((got.first, got.last), (1, 2));
        assert_eq!(got.pages, vec![(4, 1), (5, 2)]);
    }

    #[test]
    fn pages_past_the_new_size_are_dropped() {
        let mut c = Capture::default();
        c.start_generation(hdr());
        c.on_write_lock();
        write_frame(&mut c, 1, 9, 0);
        let got = write_frame(&mut c, 2, 1, 3).unwrap();
        assert_eq!(got.pages, vec![(1, 2)]);
    }
}
