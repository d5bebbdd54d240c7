//! The shadow log on disk: numbered segment files of records, appended by whichever process
//! commits, read by whichever process uploads.
//!
//! Rules that keep several processes safe without a lock of our own:
//! - Only a process holding SQLite's WAL write lock appends, cuts a torn tail, or starts a new
//!   segment. Appends go to the newest segment only.
//! - A segment is sealed by a `Roll` record before the next one is created, so a process holding a
//!   stale file handle sees the seal and moves on.
//! - Readers never modify anything and stop at the first incomplete or invalid record.
//! - The uploader deletes only sealed segments whose every record is uploaded.
//! - A file's length says nothing: a segment may start as a `spare` (zeros written ahead of time
//!   by the upload thread, so that appends overwrite allocated, cached pages instead of extending
//!   a file, which costs the commit about twice as much). The log ends at the first record that
//!   is not complete, checksummed and tagged with its segment's number. An appender looking at a
//!   segment for the first time cuts everything after that point (a torn tail, or pages a power
//!   failure left out of order); after that it only probes past its own end for records of other
//!   processes, without a `stat`.

use super::record::{self, Header, Kind, HEADER_LEN, TRAILER_LEN};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment is sealed once it grows past this size.
pub const ROLL_BYTES: u64 = 8 << 20;
/// Appends are written in chunks of at most this many bytes.
const WRITE_CHUNK: usize = 1 << 20;

fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.seg")
}

/// Segment numbers present in the log directory, ascending.
pub fn list_segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let name = name.to_string_lossy();
        if let Some(hex) = name.strip_suffix(".seg") {
            if let Ok(seq) = u64::from_str_radix(hex, 16) {
                seqs.push(seq);
            }
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(segment_name(seq))
}

fn open_segment(dir: &Path, seq: u64, create: bool) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(create)
        .mode(0o600)
        .open(segment_path(dir, seq))
}

/// A complete, checksummed record found in a segment.
#[derive(Clone, Debug)]
pub struct RecordRef {
    pub header: Header,
    pub seq: u64,
    pub offset: u64,
    pub pgnos: Vec<u32>,
}

impl RecordRef {
    /// File offset of the i-th page image in this record's segment.
    pub fn page_data_offset(&self, i: usize) -> u64 {
        self.offset + HEADER_LEN as u64 + i as u64 * (4 + self.header.page_size as u64) + 4
    }
}

/// What is at an offset of a segment.
enum Found {
    Record(RecordRef),
    /// A header of this segment whose record is incomplete or fails its checksum: a torn tail
    /// (or damage). Holds the offset where that record would end.
    Torn(u64),
    /// No header of this segment: the end of the log (zeros, or the end of the file).
    Nothing,
}

/// A record that fails its checksum with a complete record after it: the log was damaged
/// there (a crash tears only the last record of a log; a power failure that kept later pages
/// and lost earlier ones, or a disk that damages files, does this), and cutting it loses the
/// records that follow. Says where, if so. (Their commits are still in the WAL or the
/// database file, caught up from there or covered by a snapshot with new TXIDs: nothing is
/// lost, but the operator should know.)
fn damage_at(file: &File, seq: u64, at: u64, found: &Found) -> io::Result<Option<String>> {
    let (what, next) = match *found {
        Found::Torn(next) => match probe(file, seq, next, u64::MAX)? {
            Found::Record(r) => ("fails its checksum", r),
            _ => return Ok(None),
        },
        // Bytes that are no header where the log should end: a damaged header, whose
        // length cannot be trusted, so the next record is looked for by its magic.
        Found::Nothing if !zeros_at(file, at)? => match record_after(file, seq, at + 1)? {
            Some(r) => ("has an unreadable header", r),
            None => return Ok(None),
        },
        _ => return Ok(None),
    };
    Ok(Some(format!(
        "the record at byte {at} of shadow-log segment {seq} {what}, and records follow it \
         (TXID {} first): the log was damaged (by a power failure or the disk), not torn at \
         its end by a crash",
        next.header.txid
    )))
}

/// Whether a header's worth of bytes at `at` is all zeros, or the file ends before them: the
/// log's clean end.
fn zeros_at(file: &File, at: u64) -> io::Result<bool> {
    let mut b = [0u8; HEADER_LEN];
    match file.read_exact_at(&mut b, at) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(true),
        Err(e) => Err(e),
        Ok(()) => Ok(b.iter().all(|&x| x == 0)),
    }
}

/// The first valid record of segment `seq` starting at or after `from`, found by its magic.
/// Read only after damage: the rest of the segment, a chunk at a time.
fn record_after(file: &File, seq: u64, from: u64) -> io::Result<Option<RecordRef>> {
    const CHUNK: usize = 1 << 20;
    let magic = record::MAGIC;
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    loop {
        let n = read_up_to(file, &mut buf, at)?;
        if n < magic.len() {
            return Ok(None);
        }
        for i in 0..=n - magic.len() {
            if &buf[i..i + magic.len()] == magic {
                if let Found::Record(r) = probe(file, seq, at + i as u64, u64::MAX)? {
                    return Ok(Some(r));
                }
            }
        }
        // The last bytes again: a magic may straddle two chunks.
        at += (n - magic.len() + 1) as u64;
    }
}

fn read_up_to(file: &File, buf: &mut [u8], at: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], at + n as u64)? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Reads and validates the record at `offset` of segment `seq`, or `None` if there is no
/// complete, valid record there. `len` bounds the read (`u64::MAX`: up to the end of the file).
pub fn read_record(file: &File, seq: u64, offset: u64, len: u64) -> io::Result<Option<RecordRef>> {
    Ok(match probe(file, seq, offset, len)? {
        Found::Record(r) => Some(r),
        Found::Torn(_) | Found::Nothing => None,
    })
}

fn probe(file: &File, seq: u64, offset: u64, len: u64) -> io::Result<Found> {
    if offset.saturating_add((HEADER_LEN + TRAILER_LEN) as u64) > len {
        return Ok(Found::Nothing);
    }
    let mut hb = [0u8; HEADER_LEN];
    match file.read_exact_at(&mut hb, offset) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Found::Nothing),
        r => r?,
    }
    let Some(header) = Header::decode(&hb, seq) else {
        return Ok(Found::Nothing);
    };
    let end = offset.saturating_add(header.total_len());
    if end > len {
        return Ok(Found::Torn(end));
    }
    match read_body(file, seq, offset, header, &hb) {
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Found::Torn(end)),
        Ok(Some(r)) => Ok(Found::Record(r)),
        Ok(None) => Ok(Found::Torn(end)),
        Err(e) => Err(e),
    }
}

fn read_body(
    file: &File,
    seq: u64,
    offset: u64,
    header: Header,
    hb: &[u8; HEADER_LEN],
) -> io::Result<Option<RecordRef>> {
    let slot = 4 + header.page_size as usize;
    let mut pgnos = Vec::with_capacity(header.n_pages as usize);
    let mut digest = record::Digest::new();
    digest.update(hb);
    let total = header.total_len() as usize;
    if total <= WRITE_CHUNK {
        // The common case, a small transaction: one read for body and trailer.
        let mut rest = vec![0u8; total - HEADER_LEN];
        file.read_exact_at(&mut rest, offset + HEADER_LEN as u64)?;
        let (body, tb) = rest.split_at(total - HEADER_LEN - TRAILER_LEN);
        digest.update(body);
        pgnos.extend(
            body.chunks_exact(slot)
                .map(|s| u32::from_be_bytes(s[..4].try_into().unwrap())),
        );
        if !record::trailer_matches(tb, digest.finalize(), header.total_len()) {
            return Ok(None);
        }
        return Ok(Some(RecordRef {
            header,
            seq,
            offset,
            pgnos,
        }));
    }
    let per_chunk = (WRITE_CHUNK / slot.max(1)).max(1);
    let mut buf = vec![0u8; per_chunk.min(header.n_pages as usize).max(1) * slot];
    let mut at = offset + HEADER_LEN as u64;
    let mut left = header.n_pages as usize;
    while left > 0 {
        let n = left.min(per_chunk);
        let chunk = &mut buf[..n * slot];
        file.read_exact_at(chunk, at)?;
        digest.update(chunk);
        for s in chunk.chunks_exact(slot) {
            pgnos.push(u32::from_be_bytes(s[..4].try_into().unwrap()));
        }
        at += chunk.len() as u64;
        left -= n;
    }
    let mut tb = [0u8; TRAILER_LEN];
    file.read_exact_at(&mut tb, at)?;
    if !record::trailer_matches(&tb, digest.finalize(), header.total_len()) {
        return Ok(None);
    }
    Ok(Some(RecordRef {
        header,
        seq,
        offset,
        pgnos,
    }))
}

struct OpenSegment {
    seq: u64,
    /// Shared with `sync`, which runs without the database's lock.
    file: Arc<File>,
    /// End of the last valid record we know of.
    end: u64,
    /// Everything after `end` has been cut or is known not to be a record: later refreshes
    /// only probe for other processes' appends.
    checked: bool,
}

/// Appends records. One per database per process; callers hold SQLite's WAL write lock.
pub struct Appender {
    dir: PathBuf,
    seg: Option<OpenSegment>,
    last: Option<Header>,
    /// Reused between appends: the commit path allocates nothing in the common case.
    buf: Vec<u8>,
    page: Vec<u8>,
    /// Segments this appender wrote since the last `files_to_sync` (or `forget_unsynced`):
    /// numbers, not handles, so that a sealed segment the uploader deletes frees its space.
    unsynced: Vec<u64>,
    /// A segment file was created (or renamed into place) since the last `files_to_sync`:
    /// its directory entry survives a power failure only once the directory is synced.
    dir_unsynced: bool,
    /// Counts the writes and creations that `unsynced` and `dir_unsynced` stand for: a sync
    /// started from `sync_ahead` covers the debt only if this has not moved meanwhile.
    changes: u64,
    /// Where the segment stood when its file was let go (`release_file`): reopened there,
    /// already checked, so an idle database holds no descriptor for its log.
    released: Option<(u64, u64)>,
    /// The newest TXID known to be in the replica when this appender started (`state.json`).
    /// A log whose newest record is older lost its tail (a power failure at
    /// `synchronous=NORMAL`, segments deleted by hand): its history is unknown, and TXIDs go on
    /// past this one, never reusing a TXID the replica has.
    floor: u64,
    /// Reads the newest TXID `state.json` says the replica holds, when the log has no record
    /// left to number from (see `refresh`).
    floor_source: Option<FloorSource>,
    /// While a group is staged (`stage`): its bytes, where they go, and what `last` was.
    staged: Option<Staged>,
    /// What `refresh` cut that a crash cannot explain (`damage_at`), until `take_damage`.
    damage: Option<String>,
}

/// Records built in memory, written by `Appender::unstage` with one `pwrite`.
struct Staged {
    buf: Vec<u8>,
    start: u64,
    last_before: Option<Header>,
}

/// Where `Appender::refresh` learns the replica's newest TXID: `state.json`, read afresh.
pub type FloorSource = Box<dyn Fn() -> Option<u64> + Send>;

impl Appender {
    pub fn new(dir: PathBuf) -> Appender {
        Appender {
            dir,
            seg: None,
            last: None,
            buf: Vec::new(),
            page: Vec::new(),
            unsynced: Vec::new(),
            dir_unsynced: false,
            changes: 0,
            released: None,
            floor: 0,
            floor_source: None,
            staged: None,
            damage: None,
        }
    }

    /// See `floor_source`.
    pub fn with_floor_source(mut self, source: FloorSource) -> Appender {
        self.floor_source = Some(source);
        self
    }

    /// See `floor`.
    pub fn with_floor(mut self, floor: u64) -> Appender {
        self.floor = floor;
        self
    }

    /// No record is left before an empty newest segment: the uploader trimmed the sealed
    /// segments once it had uploaded them, and it wrote `state.json` before it trimmed. So
    /// `state.json`, read now, holds their newest TXID; the floor given at start may be older
    /// (a process that started right after a roll, whose uploader then uploaded and trimmed
    /// what its predecessor had appended), and numbering from it would give a new transaction
    /// a TXID the replica already has.
    fn raise_floor_from_state(&mut self) {
        if let Some(txid) = self.floor_source.as_ref().and_then(|f| f()) {
            self.floor = self.floor.max(txid);
        }
    }

    /// The TXID the next transaction gets.
    pub fn next_txid(&self) -> u64 {
        self.last.map_or(0, |h| h.txid).max(self.floor) + 1
    }

    /// The segment being appended to and where its records end, as of the last append.
    pub fn position(&self) -> Option<(u64, u64)> {
        self.seg.as_ref().map(|s| (s.seq, s.end)).or(self.released)
    }

    /// Lets go of the segment's file (the database went idle); the next append or `refresh`
    /// opens it again where it stood. What it knows stays true meanwhile: records before its
    /// end never change, and other processes' appends are probed for past it, as always.
    pub fn release_file(&mut self) {
        if let Some(seg) = self.seg.take() {
            self.released = Some((seg.seq, seg.end));
        }
    }

    /// Opens the segment let go by `release_file`, unless it is gone (sealed by another
    /// process, then uploaded and deleted): then the newest one is looked at afresh.
    fn reopen_released(&mut self) -> io::Result<bool> {
        let Some((seq, end)) = self.released.take() else {
            return Ok(false);
        };
        match open_segment(&self.dir, seq, false) {
            Ok(file) => {
                self.seg = Some(OpenSegment {
                    seq,
                    file: Arc::new(file),
                    end,
                    checked: true,
                });
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => {
                self.released = Some((seq, end));
                Err(e)
            }
        }
    }

    /// The newest record (never a `Roll`), as of the last `refresh`; `None` when the log is
    /// empty or lost its tail (behind `floor`): then nothing in it can prove where the database's
    /// history stands, and the next append is a `Resync`.
    pub fn last(&self) -> Option<&Header> {
        self.last.as_ref().filter(|h| h.txid >= self.floor)
    }

    /// Damage `refresh` found and cut (once): for the operator, since a crash does not explain
    /// it.
    pub fn take_damage(&mut self) -> Option<String> {
        self.damage.take()
    }

    /// Brings our view of the log up to date with what other processes appended, and cuts off a
    /// torn tail left by a process that died mid-append.
    pub fn refresh(&mut self) -> io::Result<()> {
        loop {
            if self.seg.is_none() && !self.reopen_released()? {
                self.open_newest()?;
            }
            let seg = self.seg.as_mut().unwrap();
            let len = match seg.checked {
                false => seg.file.metadata()?.len(),
                true => u64::MAX,
            };
            let mut rolled = false;
            // Where the log stands after its last complete record (a group counts once its
            // last record is there).
            let mut complete = (seg.end, self.last);
            let end = loop {
                match probe(&seg.file, seg.seq, seg.end, len)? {
                    Found::Record(rec) => {
                        seg.end += rec.header.total_len();
                        if rec.header.kind == Kind::Roll {
                            rolled = true;
                            break Found::Nothing;
                        }
                        self.last = Some(rec.header);
                        if !rec.header.continued {
                            complete = (seg.end, self.last);
                        }
                    }
                    other => break other,
                }
            };
            if rolled {
                // Never after an incomplete group (groups are sealed whole), but its records
                // would not count.
                self.last = complete.1;
                let sealed = seg.seq;
                self.follow_roll(sealed)?;
                continue;
            }
            // A group whose last record is missing (torn by a crash): its commits are still
            // in the WAL, and the next append catches them up from there.
            let torn_group = seg.end != complete.0;
            if torn_group {
                (seg.end, self.last) = complete;
            }
            let cut = match seg.checked {
                false => seg.end < len,
                true => matches!(end, Found::Torn(_)) || torn_group,
            };
            if cut && !seg.checked {
                // Kept until taken: a later segment's first look finding none leaves it.
                if let Some(found) = damage_at(&seg.file, seg.seq, seg.end, &end)? {
                    self.damage = Some(found);
                }
            }
            if cut {
                seg.file.set_len(seg.end)?;
            }
            let (first_look, seq) = (!seg.checked, seg.seq);
            seg.checked = true;
            if first_look && self.last.is_none() {
                // A segment with no record yet (a process died right after a roll): the log's
                // newest record is in a sealed segment before it. Not knowing it would number
                // the next transaction as if the log were empty.
                self.last = last_record_before(&self.dir, seq)?;
                if self.last.is_none() {
                    self.raise_floor_from_state();
                }
            }
            return Ok(());
        }
    }

    fn open_newest(&mut self) -> io::Result<()> {
        let seqs = list_segments(&self.dir)?;
        let seq = seqs.last().copied().unwrap_or(1);
        if seqs.len() >= 2 && seqs[seqs.len() - 2] == seq - 1 {
            seal_if_open(&self.dir, seq - 1)?;
        }
        let file = Arc::new(open_segment(&self.dir, seq, true)?);
        self.note_dir_unsynced();
        self.seg = Some(OpenSegment {
            seq,
            file,
            end: 0,
            checked: false,
        });
        Ok(())
    }

    /// A sealed segment's successor is the next number; create it if its creator died first.
    fn follow_roll(&mut self, sealed: u64) -> io::Result<()> {
        let file = Arc::new(open_segment(&self.dir, sealed + 1, true)?);
        self.note_dir_unsynced();
        self.seg = Some(OpenSegment {
            seq: sealed + 1,
            file,
            end: 0,
            checked: false,
        });
        Ok(())
    }

    /// Appends one record. `fill(i, page)` must write the i-th page image (ascending page numbers)
    /// into `page` and return its page number. Returns the record's length in bytes.
    /// Call `refresh` first, under the same hold of the WAL write lock: appends of other
    /// processes are looked for there, once per commit, not once per record.
    pub fn append(
        &mut self,
        header: Header,
        fill: &mut dyn FnMut(usize, &mut [u8]) -> io::Result<u32>,
    ) -> io::Result<u64> {
        if self.seg.is_none() {
            self.refresh()?;
        }
        // A group never spans segments: `stage` rolls before it starts.
        if self.staged.is_none() && self.seg.as_ref().is_some_and(|s| s.end >= ROLL_BYTES) {
            self.roll()?;
        }
        let seg = self.seg.as_mut().expect("refresh opens a segment");
        let total = header.total_len();
        let mut digest = record::Digest::new();
        let mut buf = std::mem::take(&mut self.buf);
        let mut page = std::mem::take(&mut self.page);
        buf.clear();
        buf.extend_from_slice(&header.encode(seg.seq));
        page.resize(header.page_size as usize * (header.n_pages > 0) as usize, 0);
        let mut at = seg.end;
        let result = (|| {
            for i in 0..header.n_pages as usize {
                let pgno = fill(i, &mut page)?;
                buf.extend_from_slice(&pgno.to_be_bytes());
                buf.extend_from_slice(&page);
                if buf.len() >= WRITE_CHUNK && self.staged.is_none() {
                    digest.update(&buf);
                    seg.file.write_all_at(&buf, at)?;
                    at += buf.len() as u64;
                    buf.clear();
                }
            }
            digest.update(&buf);
            buf.extend_from_slice(&record::encode_trailer(digest.finalize(), total));
            match self.staged.as_mut() {
                Some(st) => {
                    st.buf.extend_from_slice(&buf);
                    Ok(())
                }
                None => seg.file.write_all_at(&buf, at),
            }
        })();
        if buf.capacity() <= 2 * WRITE_CHUNK {
            self.buf = buf;
            self.page = page;
        }
        result?;
        seg.end += total;
        let seq = seg.seq;
        self.note_unsynced(seq);
        self.last = Some(header);
        Ok(total)
    }

    /// Starts a group: the records appended until `unstage` are built in memory and written
    /// together. Rolls first if the segment is full, so that a group lies in one segment.
    pub fn stage(&mut self) -> io::Result<()> {
        if self.seg.is_none() {
            self.refresh()?;
        }
        if self.seg.as_ref().is_some_and(|s| s.end >= ROLL_BYTES) {
            self.roll()?;
        }
        let start = self.seg.as_ref().expect("refresh opens a segment").end;
        self.staged = Some(Staged {
            buf: Vec::new(),
            start,
            last_before: self.last,
        });
        Ok(())
    }

    /// Writes the staged group. On failure none of it counts: the log's end and last record
    /// go back to where they stood before it.
    pub fn unstage(&mut self) -> io::Result<()> {
        let Some(st) = self.staged.take() else {
            return Ok(());
        };
        if st.buf.is_empty() {
            return Ok(());
        }
        let seg = self.seg.as_mut().expect("a staged group has a segment");
        if let Err(e) = seg.file.write_all_at(&st.buf, st.start) {
            seg.end = st.start;
            self.last = st.last_before;
            return Err(e);
        }
        Ok(())
    }

    /// Drops the staged group unwritten: the log's end and last record go back to where they
    /// stood before it.
    pub fn abandon_stage(&mut self) {
        if let Some(st) = self.staged.take() {
            if let Some(seg) = self.seg.as_mut() {
                seg.end = st.start;
            }
            self.last = st.last_before;
        }
    }

    fn roll(&mut self) -> io::Result<()> {
        let seg = self.seg.take().expect("open segment");
        let buf = roll_record(self.last.map_or(0, |h| h.txid), seg.seq);
        seg.file.write_all_at(&buf, seg.end)?;
        self.note_unsynced(seg.seq);
        let next = seg.seq + 1;
        let path = segment_path(&self.dir, next);
        // Only a holder of the write lock creates segments, and the next one cannot exist yet
        // unless a process died right after creating it (then it is looked at first).
        let existed = path.exists();
        if !existed {
            // The spare's zeros are never a record: nothing needs cutting.
            let _ = fs::rename(self.dir.join(SPARE), &path);
        }
        let file = Arc::new(open_segment(&self.dir, next, true)?);
        self.note_dir_unsynced();
        crate::failpoint::hit("log.rolled");
        self.seg = Some(OpenSegment {
            seq: next,
            file,
            end: 0,
            checked: !existed,
        });
        Ok(())
    }

    fn note_unsynced(&mut self, seq: u64) {
        self.changes += 1;
        if !self.unsynced.contains(&seq) {
            self.unsynced.push(seq);
        }
    }

    /// The segment files holding records appended since the last call, and their directory
    /// if a segment was created since: syncing them (`sync_files`) makes every record
    /// appended so far durable. A sealed segment is opened again by its number; one the
    /// uploader deleted meanwhile needs no sync (its records are in the replica).
    pub fn files_to_sync(&mut self) -> Vec<Arc<File>> {
        let files = self.unsynced_files();
        self.settle();
        files
    }

    /// What `files_to_sync` would return, leaving the debt in place, and a mark for
    /// `synced_ahead`: a sync of these files run elsewhere settles the debt only if nothing
    /// was appended or created meanwhile.
    pub fn sync_ahead(&self) -> (Vec<Arc<File>>, u64) {
        (self.unsynced_files(), self.changes)
    }

    /// The files of a `sync_ahead` taken at `mark` were synced: the debt is settled unless
    /// the log changed since. Returns whether it was.
    pub fn synced_ahead(&mut self, mark: u64) -> bool {
        if self.changes != mark {
            return false;
        }
        self.settle();
        true
    }

    /// What `unsynced_files` returned is synced. A directory whose new segment has no record
    /// yet stays owed: it is synced with that segment's first records.
    fn settle(&mut self) {
        if !self.unsynced.is_empty() {
            self.dir_unsynced = false;
        }
        self.unsynced.clear();
    }

    fn unsynced_files(&self) -> Vec<Arc<File>> {
        let mut files = Vec::with_capacity(self.unsynced.len() + 1);
        for &seq in &self.unsynced {
            match &self.seg {
                Some(open) if open.seq == seq => files.push(open.file.clone()),
                _ => match File::open(segment_path(&self.dir, seq)) {
                    Ok(f) => files.push(Arc::new(f)),
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => crate::log::error(&format!(
                        "walrust: cannot open shadow-log segment {seq:016x} to sync it: {e}; committed transactions may not survive a power failure once the WAL is checkpointed"
                    )),
                },
            }
        }
        if !self.unsynced.is_empty() && self.dir_unsynced {
            // Last: on a journalling filesystem the segments' syncs have usually committed the
            // new name already, and this one finds nothing left to do.
            match File::open(&self.dir) {
                Ok(d) => files.push(Arc::new(d)),
                Err(e) => crate::log::error(&format!(
                    "walrust: cannot open the shadow-log directory {} to sync it: {e}; committed transactions may not survive a power failure once the WAL is checkpointed",
                    self.dir.display()
                )),
            }
        }
        files
    }

    /// Forgets what was appended without syncing it (`synchronous=NORMAL`: the log is left
    /// to the page cache).
    pub fn forget_unsynced(&mut self) {
        self.unsynced.clear();
        self.dir_unsynced = false;
    }

    fn note_dir_unsynced(&mut self) {
        self.changes += 1;
        self.dir_unsynced = true;
    }
}

/// The `Roll` record that seals segment `seq`, whose last record has `txid`.
fn roll_record(txid: u64, seq: u64) -> Vec<u8> {
    let roll = Header {
        kind: Kind::Roll,
        txid,
        page_size: 0,
        commit: 0,
        n_pages: 0,
        pos: record::WalPos::Unknown,
        timestamp_ms: 0,
        fingerprint: (0, 0),
        continued: false,
    };
    let mut digest = record::Digest::new();
    let hb = roll.encode(seq);
    digest.update(&hb);
    let mut buf = hb.to_vec();
    buf.extend_from_slice(&record::encode_trailer(digest.finalize(), roll.total_len()));
    buf
}

/// Seals segment `seq` if it has a successor but lost its `Roll` record (a power failure
/// wrote the successor's pages before this one's tail): readers follow a segment only past
/// its own `Roll`, and would otherwise never reach the successor. Its valid records are kept;
/// whatever follows them is cut. Called by an appender (under the WAL write lock).
fn seal_if_open(dir: &Path, seq: u64) -> io::Result<()> {
    let file = match open_segment(dir, seq, false) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()), // trimmed meanwhile
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let (mut at, mut end, mut last) = (0, 0, 0);
    while let Some(rec) = read_record(&file, seq, at, len)? {
        if rec.header.kind == Kind::Roll {
            return Ok(());
        }
        at += rec.header.total_len();
        if !rec.header.continued {
            (end, last) = (at, rec.header.txid);
        }
    }
    file.set_len(end)?;
    file.write_all_at(&roll_record(last, seq), end)?;
    file.sync_data()
}

/// The newest record in the log (never a `Roll`), read without modifying anything: safe
/// without the WAL write lock. A torn tail is simply not counted.
pub fn last_record(dir: &Path) -> io::Result<Option<Header>> {
    last_record_before(dir, u64::MAX)
}

/// As `last_record`, looking only at segments numbered below `below`.
fn last_record_before(dir: &Path, below: u64) -> io::Result<Option<Header>> {
    let seqs = list_segments(dir)?;
    for &seq in seqs.iter().rev().filter(|&&s| s < below) {
        let file = match File::open(segment_path(dir, seq)) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let (mut at, mut last) = (0, None);
        while let Some(rec) = read_record(&file, seq, at, len)? {
            at += rec.header.total_len();
            if rec.header.kind != Kind::Roll && !rec.header.continued {
                last = Some(rec.header);
            }
        }
        if last.is_some() {
            return Ok(last);
        }
    }
    Ok(None)
}

/// Whether a record (or at least its header) lies at `cursor`: the cheap look of an uploader
/// with nothing to do, one read of a few bytes. True when it cannot tell (no such segment, a
/// read error): the caller then reads the log properly.
pub fn record_at(dir: &Path, cursor: Cursor) -> bool {
    if cursor.seq == 0 {
        return true;
    }
    let Ok(file) = File::open(segment_path(dir, cursor.seq)) else {
        return true;
    };
    let mut hb = [0u8; HEADER_LEN];
    match file.read_exact_at(&mut hb, cursor.offset) {
        Ok(()) => Header::decode(&hb, cursor.seq).is_some(),
        Err(e) => e.kind() != io::ErrorKind::UnexpectedEof,
    }
}

/// Where a reader stands: the next record to read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cursor {
    pub seq: u64,
    pub offset: u64,
}

/// Reads complete records in order, across segments. Never writes.
pub struct Reader {
    dir: PathBuf,
    open: Option<(u64, File)>,
}

impl Reader {
    pub fn new(dir: PathBuf) -> Reader {
        Reader { dir, open: None }
    }

    fn file(&mut self, seq: u64) -> io::Result<&File> {
        if self.open.as_ref().map(|(s, _)| *s) != Some(seq) {
            let f = File::open(segment_path(&self.dir, seq))?;
            self.open = Some((seq, f));
        }
        Ok(&self.open.as_ref().unwrap().1)
    }

    /// Every complete record from `cursor` on (Roll records are followed, not returned), and the
    /// cursor after the last one. A cursor at seq 0 starts at the oldest segment.
    pub fn read_from(&mut self, cursor: Cursor) -> io::Result<(Vec<RecordRef>, Cursor)> {
        self.read_at_most(cursor, usize::MAX)
    }

    /// As `read_from`, but stops after `limit` records (the cursor then names the next one).
    pub fn read_at_most(
        &mut self,
        mut cursor: Cursor,
        limit: usize,
    ) -> io::Result<(Vec<RecordRef>, Cursor)> {
        let seqs = list_segments(&self.dir)?;
        // A segment that was trimmed (or a successor not created yet): start at the next one.
        if cursor.seq == 0 || !seqs.contains(&cursor.seq) {
            match seqs.iter().find(|&&s| s >= cursor.seq) {
                Some(&s) if s != cursor.seq => cursor = Cursor { seq: s, offset: 0 },
                Some(_) => {}
                None => return Ok((Vec::new(), cursor)),
            }
        }
        let mut out = Vec::new();
        loop {
            let file = match self.file(cursor.seq) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) => return Err(e),
            };
            let len = file.metadata()?.len();
            let mut sealed = false;
            // Records are returned up to the end of a group only (past `limit` if need be):
            // a group's pages are in its last record.
            let mut complete = (out.len(), cursor);
            while out.len() < limit || out.last().is_some_and(|r: &RecordRef| r.header.continued) {
                let Some(rec) = read_record(file, cursor.seq, cursor.offset, len)? else {
                    break;
                };
                cursor.offset += rec.header.total_len();
                if rec.header.kind == Kind::Roll {
                    sealed = true;
                    break;
                }
                let done = !rec.header.continued;
                out.push(rec);
                if done {
                    complete = (out.len(), cursor);
                }
            }
            // A group not complete yet (being written, or torn by a crash and about to be
            // cut): it is read again from its start next time. (Before a Roll it never is.)
            out.truncate(complete.0);
            if !sealed {
                cursor = complete.1;
            }
            // Only the segment's own Roll record says it is complete: its successor can appear
            // while we read, before the last records of this one are visible to us.
            if !sealed {
                break;
            }
            cursor = Cursor {
                seq: cursor.seq + 1,
                offset: 0,
            };
        }
        Ok((out, cursor))
    }

    /// Lets go of the open segment's file (nothing waits to be read); reading opens it again.
    pub fn release_file(&mut self) {
        self.open = None;
    }

    /// Reads one page image of a record.
    pub fn read_page(&mut self, rec: &RecordRef, i: usize, buf: &mut [u8]) -> io::Result<()> {
        let off = rec.page_data_offset(i);
        self.file(rec.seq)?.read_exact_at(buf, off)
    }
}

/// Makes durable every record in the segments numbered `from` to `upto` that still exist (a
/// trimmed one is in the replica). The uploader calls it before the replica or `state.json`
/// relies on those records: a power failure then never cuts the log below either.
pub fn sync_segments(dir: &Path, from: u64, upto: u64) -> io::Result<()> {
    for seq in list_segments(dir)?
        .into_iter()
        .filter(|s| (from..=upto).contains(s))
    {
        match File::open(segment_path(dir, seq)) {
            Ok(f) => f.sync_data()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    if from < upto {
        // A segment was created since the last sync: its directory entry too (last, as in
        // `Appender::files_to_sync`).
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Syncs the files `Appender::files_to_sync` returned.
pub fn sync_files(files: &[Arc<File>]) -> io::Result<()> {
    files.iter().try_for_each(|f| f.sync_data())
}

/// A segment's worth of zeros written ahead of time, renamed into place at the next roll.
const SPARE: &str = "spare";
const SPARE_BYTES: u64 = ROLL_BYTES + WRITE_CHUNK as u64;

/// Writes the spare segment if there is none: called by the upload thread once the newest
/// segment is half full, so that the commit that rolls finds allocated, cached pages.
/// Returns whether it wrote one.
pub fn prepare_spare(dir: &Path) -> io::Result<bool> {
    let path = dir.join(SPARE);
    if path.exists() {
        return Ok(false);
    }
    // Each process writes its own file: a name shared by two processes' checkpoint threads
    // would let one of them go on writing zeros into a file the other already renamed into
    // place, over records an appender had written there. `create_new`: never an old inode.
    let tmp = dir.join(format!("spare.tmp.{}", std::process::id()));
    let _ = fs::remove_file(&tmp); // left by an earlier process with this pid that died
    let written = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let _ = file.try_lock(); // held until renamed: `cleanup` leaves a locked file alone
        let zeros = vec![0u8; 64 << 10];
        let mut at = 0;
        while at < SPARE_BYTES {
            file.write_all_at(&zeros, at)?;
            at += zeros.len() as u64;
        }
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        // A full disk, say: the spare is only an optimisation, and must not hold space that
        // the database and the log itself need.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(true)
}

/// Removes the spare (a database that stopped writing should not keep one).
pub fn drop_spare(dir: &Path) {
    let _ = fs::remove_file(dir.join(SPARE));
}

/// Deletes sealed segments older than `cursor.seq` (everything in them has been read and
/// uploaded). The newest segment is never deleted.
pub fn trim_before(dir: &Path, cursor: Cursor) -> io::Result<usize> {
    let seqs = list_segments(dir)?;
    let newest = seqs.last().copied().unwrap_or(0);
    let mut n = 0;
    for seq in seqs {
        if seq < cursor.seq && seq < newest {
            fs::remove_file(segment_path(dir, seq))?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shadow::record::WalPos;

    /// A fresh directory for one test, removed when the test ends (pass or fail).
    struct TmpDir(PathBuf);

    impl std::ops::Deref for TmpDir {
        type Target = PathBuf;
        fn deref(&self) -> &PathBuf {
            &self.0
        }
    }

    impl Drop for TmpDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn tmpdir(name: &str) -> TmpDir {
        let d = std::env::temp_dir().join(format!("walrust-log-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        TmpDir(d)
    }

    fn txn(txid: u64, n: u32) -> Header {
        Header {
            kind: Kind::Txn,
            txid,
            page_size: 512,
            commit: 10,
            n_pages: n,
            pos: WalPos::Unknown,
            timestamp_ms: 1,
            fingerprint: (0, 0),
            continued: false,
        }
    }

    fn append(a: &mut Appender, txid: u64, n: u32) {
        a.refresh().unwrap();
        a.append(txn(txid, n), &mut |i, p| {
            p.fill(txid as u8);
            Ok(i as u32 + 1)
        })
        .unwrap();
    }

    #[test]
    fn an_empty_segment_after_a_trimmed_one_numbers_past_what_the_state_recorded() {
        let d = tmpdir("trimmed-floor");
        let mut a = Appender::new(d.clone());
        for txid in 1..=3 {
            append(&mut a, txid, 1);
        }
        a.roll().unwrap();
        // The uploader uploaded 1..=3, wrote state.json, and trimmed the sealed segment.
        assert_eq!(trim_before(&d, Cursor { seq: 2, offset: 0 }).unwrap(), 1);
        // A process that started before that, with an older state.json (floor 0).
        let mut stale = Appender::new(d.clone());
        stale.refresh().unwrap();
        assert_eq!(
            stale.next_txid(),
            1,
            "without a source the TXIDs would repeat"
        );
        let mut b = Appender::new(d.clone()).with_floor_source(Box::new(|| Some(3)));
        b.refresh().unwrap();
        assert_eq!(b.next_txid(), 4);
    }

    fn continued(txid: u64) -> Header {
        Header {
            n_pages: 0,
            continued: true,
            ..txn(txid, 0)
        }
    }

    /// Records 1 (alone), then the group 2, 3, 4 (pages in 4), written with one write.
    fn log_with_a_group(d: &Path) -> Appender {
        let mut a = Appender::new(d.to_path_buf());
        append(&mut a, 1, 1);
        a.refresh().unwrap();
        a.stage().unwrap();
        for txid in 2..=3 {
            a.append(continued(txid), &mut |_, _| unreachable!())
                .unwrap();
        }
        a.append(txn(4, 2), &mut |i, p| {
            p.fill(4);
            Ok(i as u32 + 1)
        })
        .unwrap();
        a.unstage().unwrap();
        a
    }

    /// `log_with_a_group` whose group lost its last record (a crash tore the write); returns
    /// the segment's number.
    fn log_with_a_torn_group(d: &Path) -> u64 {
        let a = log_with_a_group(d);
        let (seq, end) = a.position().unwrap();
        drop(a);
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(d, seq))
            .unwrap();
        f.set_len(end - txn(4, 2).total_len()).unwrap();
        seq
    }

    fn txids(recs: &[RecordRef]) -> Vec<u64> {
        recs.iter().map(|r| r.header.txid).collect()
    }

    #[test]
    fn a_group_is_read_whole_even_past_the_limit() {
        let d = tmpdir("group-read");
        log_with_a_group(&d);
        let mut r = Reader::new(d.clone());
        let (recs, cur) = r.read_at_most(Cursor { seq: 1, offset: 0 }, 2).unwrap();
        assert_eq!(
            txids(&recs),
            vec![1, 2, 3, 4],
            "a limit inside a group reads to its end"
        );
        assert!(recs[1].header.continued && !recs[3].header.continued);
        assert_eq!(recs[3].pgnos, vec![1, 2]);
        let (more, _) = r.read_at_most(cur, 10).unwrap();
        assert!(more.is_empty());
        assert_eq!(last_record(&d).unwrap().unwrap().txid, 4);
    }

    #[test]
    fn a_group_torn_by_a_crash_is_never_read_and_is_cut() {
        let d = tmpdir("group-torn");
        log_with_a_torn_group(&d);
        let mut r = Reader::new(d.clone());
        let (recs, cur) = r.read_at_most(Cursor { seq: 1, offset: 0 }, 10).unwrap();
        assert_eq!(
            txids(&recs),
            vec![1],
            "a group without its last record is not read"
        );
        assert_eq!(last_record(&d).unwrap().unwrap().txid, 1);
        // The next appender cuts the group and numbers on from the last complete record.
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        assert_eq!(b.next_txid(), 2);
        append(&mut b, 2, 1);
        let (recs, _) = r.read_at_most(cur, 10).unwrap();
        assert_eq!(txids(&recs), vec![2]);
        assert!(!recs[0].header.continued);
    }

    #[test]
    fn an_abandoned_group_leaves_the_log_as_it_was() {
        let d = tmpdir("group-abandoned");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 1);
        let before = a.position();
        a.stage().unwrap();
        a.append(continued(2), &mut |_, _| unreachable!()).unwrap();
        a.abandon_stage();
        assert_eq!(a.position(), before);
        assert_eq!(a.next_txid(), 2);
        append(&mut a, 2, 1);
        let (recs, _) = Reader::new(d.clone())
            .read_at_most(Cursor { seq: 1, offset: 0 }, 10)
            .unwrap();
        assert_eq!(txids(&recs), vec![1, 2]);
    }

    #[test]
    fn sealing_a_segment_drops_a_torn_group() {
        let d = tmpdir("group-seal");
        let seq = log_with_a_torn_group(&d);
        seal_if_open(&d, seq).unwrap();
        let (recs, cur) = Reader::new(d.clone())
            .read_at_most(Cursor { seq: 1, offset: 0 }, 10)
            .unwrap();
        assert_eq!(txids(&recs), vec![1]);
        assert_eq!(
            cur,
            Cursor { seq: 2, offset: 0 },
            "the roll record follows record 1"
        );
    }

    /// Writes `h`'s header (no body) at the end of segment 1, as a process that died
    /// mid-append leaves it; returns the segment and where the header went.
    fn header_at_end(d: &Path, h: Header) -> (File, u64) {
        let path = segment_path(d, 1);
        let end = fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&h.encode(1), end).unwrap();
        (f, end)
    }

    #[test]
    fn appends_are_read_back_and_torn_tails_cut() {
        let d = tmpdir("torn");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 2);
        append(&mut a, 2, 1);
        // Simulate a process dying mid-append: half a record at the end.
        header_at_end(&d, txn(3, 4));
        let mut r = Reader::new(d.clone());
        let (recs, cur) = r.read_from(Cursor::default()).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.header.txid).collect::<Vec<_>>(),
            vec![1, 2]
        );
        assert_eq!(recs[0].pgnos, vec![1, 2]);
        // Another appender (another process) cuts the torn tail and continues.
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        assert_eq!(b.last().unwrap().txid, 2);
        append(&mut b, 3, 1);
        let (recs, _) = r.read_from(cur).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.header.txid).collect::<Vec<_>>(),
            vec![3]
        );
        // The first appender sees the other's append.
        a.refresh().unwrap();
        assert_eq!(a.last().unwrap().txid, 3);
        let mut page = vec![0u8; 512];
        r.read_page(&recs[0], 0, &mut page).unwrap();
        assert!(page.iter().all(|&b| b == 3));
    }

    /// A log of three records (TXIDs 1-3): its directory, its segment open for reading and
    /// writing, and where the second record starts.
    fn three_records(name: &str) -> (TmpDir, File, u64) {
        let d = tmpdir(name);
        let mut a = Appender::new(d.clone());
        for txid in 1..=3 {
            append(&mut a, txid, 2);
        }
        let second = Reader::new(d.clone())
            .read_from(Cursor::default())
            .unwrap()
            .0[1]
            .offset;
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(&d, 1))
            .unwrap();
        (d, f, second)
    }

    #[test]
    fn a_damaged_record_is_told_from_a_torn_tail() {
        // A torn tail (half a record at the end) is cut without a word.
        let d = tmpdir("damage-torn");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 2);
        header_at_end(&d, txn(2, 4));
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        assert_eq!(b.last().unwrap().txid, 1);
        assert_eq!(b.take_damage(), None);

        // A flipped byte in a record with complete records after it is damage.
        let (d, f, second) = three_records("damage-flip");
        let at = second + HEADER_LEN as u64 + 100; // in its first page image
        let mut byte = [0u8];
        f.read_exact_at(&mut byte, at).unwrap();
        f.write_all_at(&[byte[0] ^ 0xFF], at).unwrap();
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        assert_eq!(b.last().unwrap().txid, 1);
        let damage = b.take_damage().expect("damage reported");
        assert!(
            damage.contains(&format!("byte {second} of shadow-log segment 1")),
            "{damage}"
        );
        assert!(damage.contains("TXID 3 first"), "{damage}");
        assert_eq!(b.take_damage(), None, "said once");

        // A damaged header (its length cannot be trusted) with records after it: the next
        // record is found by its magic.
        let (d, f, second) = three_records("damage-header");
        f.write_all_at(b"XXXX", second).unwrap(); // its magic
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        assert_eq!(b.last().unwrap().txid, 1);
        let damage = b.take_damage().expect("damage reported");
        assert!(damage.contains("unreadable header"), "{damage}");
        assert!(damage.contains("TXID 3 first"), "{damage}");

        // Half a header at the end, nothing after it: a torn tail, said nothing of.
        let d = tmpdir("damage-half-header");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 2);
        let end = a.position().unwrap().1;
        let f = OpenOptions::new()
            .write(true)
            .open(segment_path(&d, 1))
            .unwrap();
        f.write_all_at(&[0xAB; HEADER_LEN / 2], end).unwrap();
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        assert_eq!(b.last().unwrap().txid, 1);
        assert_eq!(b.take_damage(), None);
    }

    #[test]
    fn a_released_segment_is_reopened_where_it_stood() {
        let d = tmpdir("release");
        let mut a = Appender::new(d.clone());
        let mut b = Appender::new(d.clone());
        append(&mut a, 1, 2);
        a.release_file();
        assert_eq!(a.position(), Some((1, a.position().unwrap().1)));
        // Another process appends while the file is let go: the reopened appender finds it.
        b.refresh().unwrap();
        append(&mut b, 2, 1);
        append(&mut a, 3, 1);
        let txids = |d: &Path| {
            let (recs, _) = Reader::new(d.to_path_buf())
                .read_from(Cursor::default())
                .unwrap();
            recs.iter().map(|r| r.header.txid).collect::<Vec<_>>()
        };
        assert_eq!(txids(&d), vec![1, 2, 3]);
        // The let-go segment was sealed by another process and deleted once uploaded: the
        // appender goes on in the newest segment, after the other's records.
        a.release_file();
        b.refresh().unwrap();
        let mut per = 3;
        while b.position().unwrap().1 < ROLL_BYTES {
            per += 1;
            append(&mut b, per, 400);
        }
        append(&mut b, per + 1, 1); // rolls into segment 2
        assert_eq!(list_segments(&d).unwrap(), vec![1, 2]);
        fs::remove_file(segment_path(&d, 1)).unwrap();
        append(&mut a, per + 2, 1);
        assert_eq!(a.position().unwrap().0, 2);
        assert_eq!(txids(&d), vec![per + 1, per + 2]);
    }

    #[test]
    fn rolls_segments_and_readers_follow() {
        let d = tmpdir("roll");
        let mut a = Appender::new(d.clone());
        let mut b = Appender::new(d.clone());
        let per = (ROLL_BYTES / (516 * 400)) + 2;
        for t in 1..=per {
            append(&mut a, t, 400);
        }
        b.refresh().unwrap();
        append(&mut b, per + 1, 1); // rolls
        append(&mut a, per + 2, 1); // must follow the roll
        assert_eq!(list_segments(&d).unwrap(), vec![1, 2]);
        let mut r = Reader::new(d.clone());
        let (recs, cur) = r.read_from(Cursor::default()).unwrap();
        let txids: Vec<u64> = recs.iter().map(|r| r.header.txid).collect();
        assert_eq!(txids, (1..=per + 2).collect::<Vec<_>>());
        assert_eq!(cur.seq, 2);
        assert_eq!(trim_before(&d, cur).unwrap(), 1);
        assert_eq!(list_segments(&d).unwrap(), vec![2]);
    }

    #[test]
    fn a_created_segment_has_its_directory_synced_with_its_records() {
        let is_dir = |f: &Arc<File>| f.metadata().unwrap().is_dir();
        let d = tmpdir("dirsync");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 1);
        let first = a.files_to_sync();
        assert_eq!(
            first.iter().filter(|f| is_dir(f)).count(),
            1,
            "segment 1 was created"
        );
        append(&mut a, 2, 1);
        assert!(
            !a.files_to_sync().iter().any(is_dir),
            "no segment created since"
        );
        let per = ROLL_BYTES / (516 * 400) + 1;
        for t in 3..=per + 3 {
            append(&mut a, t, 400);
        }
        let files = a.files_to_sync();
        assert_eq!(list_segments(&d).unwrap(), vec![1, 2]);
        assert_eq!(files.len(), 3, "both segments and their directory");
        sync_files(&files).unwrap();
        sync_segments(&d, 1, 2).unwrap();
    }

    #[test]
    fn a_sync_ahead_settles_the_debt_only_if_nothing_was_appended_meanwhile() {
        let d = tmpdir("ahead");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 1);
        let (files, mark) = a.sync_ahead();
        assert_eq!(files.len(), 2, "the new segment and its directory");
        append(&mut a, 2, 1);
        sync_files(&files).unwrap();
        assert!(
            !a.synced_ahead(mark),
            "TXID 2 came after the files were taken"
        );
        assert_eq!(a.sync_ahead().0.len(), 2, "still owed, directory included");
        let (files, mark) = a.sync_ahead();
        sync_files(&files).unwrap();
        assert!(a.synced_ahead(mark));
        assert!(a.files_to_sync().is_empty(), "nothing owed any more");
        append(&mut a, 3, 1);
        assert_eq!(a.sync_ahead().0.len(), 1, "the segment, not its directory");
    }

    #[test]
    fn a_roll_takes_the_spare_and_its_zeros_never_pass_for_records() {
        let d = tmpdir("spare");
        let mut a = Appender::new(d.clone());
        // Records of 400 pages: the segment passes ROLL_BYTES with the last of these, and the
        // next append rolls.
        let per = ROLL_BYTES / (516 * 400) + 1;
        for t in 1..=per {
            append(&mut a, t, 400);
        }
        assert_eq!(list_segments(&d).unwrap(), vec![1]);
        assert!(prepare_spare(&d).unwrap());
        assert!(!prepare_spare(&d).unwrap(), "one spare at a time");
        append(&mut a, per + 1, 1); // rolls into the spare
        assert!(!d.join(SPARE).exists());
        assert_eq!(
            fs::metadata(segment_path(&d, 2)).unwrap().len(),
            SPARE_BYTES
        );
        append(&mut a, per + 2, 2);
        let mut r = Reader::new(d.clone());
        let (recs, cur) = r.read_from(Cursor::default()).unwrap();
        let txids: Vec<u64> = recs.iter().map(|r| r.header.txid).collect();
        assert_eq!(txids, (1..=per + 2).collect::<Vec<_>>());
        assert_eq!(last_record(&d).unwrap().unwrap().txid, per + 2);
        // Another process follows the roll: its first look cuts the zeros after the records,
        // and appends after ours.
        let mut b = Appender::new(d.clone());
        append(&mut b, per + 3, 1);
        assert!(fs::metadata(segment_path(&d, 2)).unwrap().len() < SPARE_BYTES);
        let (recs, _) = r.read_from(cur).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.header.txid).collect::<Vec<_>>(),
            vec![per + 3]
        );
        // The first appender probes past its end (no stat) and sees that append.
        a.refresh().unwrap();
        assert_eq!(a.last().unwrap().txid, per + 3);
        drop_spare(&d);
    }

    #[test]
    fn a_segment_that_lost_its_roll_record_is_sealed_so_readers_reach_its_successor() {
        let d = tmpdir("lost-roll");
        let mut a = Appender::new(d.clone());
        let per = ROLL_BYTES / (516 * 400) + 1;
        for t in 1..=per {
            append(&mut a, t, 400);
        }
        append(&mut a, per + 1, 1); // rolls
        assert_eq!(list_segments(&d).unwrap(), vec![1, 2]);
        drop(a);
        // A power failure kept segment 2's record but not segment 1's tail (Roll, last record).
        let first = File::open(segment_path(&d, 1)).unwrap();
        let len = first.metadata().unwrap().len();
        let (mut end, mut prev) = (0, 0);
        while let Some(r) = read_record(&first, 1, end, len).unwrap() {
            if r.header.kind == Kind::Roll {
                break;
            }
            prev = end;
            end += r.header.total_len();
        }
        OpenOptions::new()
            .write(true)
            .open(segment_path(&d, 1))
            .unwrap()
            .set_len(prev)
            .unwrap();
        let stuck = Reader::new(d.clone())
            .read_from(Cursor::default())
            .unwrap()
            .0;
        assert_eq!(
            stuck.len() as u64,
            per - 1,
            "without the seal a reader stops at segment 1"
        );
        let mut b = Appender::new(d.clone());
        b.refresh().unwrap();
        append(&mut b, per + 2, 1);
        let (recs, _) = Reader::new(d.clone()).read_from(Cursor::default()).unwrap();
        let txids: Vec<u64> = recs.iter().map(|r| r.header.txid).collect();
        let mut want: Vec<u64> = (1..per).collect();
        want.extend([per + 1, per + 2]);
        assert_eq!(txids, want);
    }

    #[test]
    fn a_process_that_died_right_after_a_roll_leaves_the_numbering_to_the_sealed_segment() {
        let d = tmpdir("died-after-roll");
        let mut a = Appender::new(d.clone());
        let per = ROLL_BYTES / (516 * 400) + 1;
        for t in 1..=per {
            append(&mut a, t, 400);
        }
        assert!(prepare_spare(&d).unwrap());
        a.roll().unwrap(); // sealed, the spare renamed into place, then killed
        drop(a);
        assert_eq!(list_segments(&d).unwrap(), vec![1, 2]);
        let mut b = Appender::new(d.clone()).with_floor(per - 20);
        b.refresh().unwrap();
        assert_eq!(b.last().map(|h| h.txid), Some(per));
        assert_eq!(
            b.next_txid(),
            per + 1,
            "a TXID of the sealed segment reused"
        );
        append(&mut b, per + 1, 1);
        let (recs, _) = Reader::new(d.clone()).read_from(Cursor::default()).unwrap();
        let txids: Vec<u64> = recs.iter().map(|r| r.header.txid).collect();
        assert_eq!(txids, (1..=per + 1).collect::<Vec<_>>());
    }

    #[test]
    fn reads_stop_at_a_limit_and_resume_across_a_roll() {
        let d = tmpdir("limit");
        let mut a = Appender::new(d.clone());
        let per = ROLL_BYTES / (516 * 400) + 1;
        for t in 1..=per + 3 {
            append(&mut a, t, 400);
        }
        let mut r = Reader::new(d.clone());
        let mut cursor = Cursor::default();
        let mut txids = Vec::new();
        loop {
            let (recs, next) = r.read_at_most(cursor, 7).unwrap();
            assert!(recs.len() <= 7);
            if recs.is_empty() {
                break;
            }
            txids.extend(recs.iter().map(|r| r.header.txid));
            cursor = next;
        }
        assert_eq!(txids, (1..=per + 3).collect::<Vec<_>>());
        assert_eq!(cursor.seq, 2);
    }

    #[test]
    fn a_torn_record_past_a_known_end_is_cut() {
        let d = tmpdir("torn-probe");
        let mut a = Appender::new(d.clone());
        append(&mut a, 1, 1);
        // A process that died mid-append left a header of this segment and half a body.
        let (f, end) = header_at_end(&d, txn(2, 3));
        f.write_all_at(&[7u8; 1000], end + HEADER_LEN as u64)
            .unwrap();
        a.refresh().unwrap();
        assert_eq!(fs::metadata(segment_path(&d, 1)).unwrap().len(), end);
        // A header of another segment (a recycled file's old content) is not a record.
        f.write_all_at(&txn(2, 3).encode(5), end).unwrap();
        a.refresh().unwrap();
        assert_eq!(a.last().unwrap().txid, 1);
        append(&mut a, 2, 1);
        let (recs, _) = Reader::new(d.clone()).read_from(Cursor::default()).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.header.txid).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }
}
