//! Taking part in SQLite's WAL-index locking without SQLite, as one more reader of the
//! database would (SQLite's `wal.c`, unix VFS `os_unix.c`).
//!
//! The `-shm` file starts with two copies of the 48-byte `WalIndexHdr` (native byte order;
//! `mxFrame` at 16, `nPage` at 20, the salts as the WAL header's raw bytes at 32, a checksum
//! over the first 40 bytes at 40), then `WalCkptInfo` at 96: `nBackfill`, `aReadMark[5]` (100..120)
//! and the lock bytes at 120: WRITE=120, CKPT=121, RECOVER=122, READ(0..4)=123..127, and the
//! "dead man switch" DMS=128 that every live connection holds shared.
//!
//! What the sidecar relies on, in SQLite's own rules:
//! - A writer restarts the WAL (frames overwritten from the start) only with READ(1..4) all
//!   locked exclusive (`walRestartLog`, and RESTART/TRUNCATE checkpoints): a shared lock on any
//!   READ(i), i >= 1, forbids it. A checkpoint never copies frames past `aReadMark[i]` of a
//!   READ(i) held shared (`walCheckpoint`'s `mxSafeFrame`), so the database file holds no page
//!   newer than the mark.
//! - A connection closing takes an EXCLUSIVE lock on the database file before its final
//!   checkpoint, and then ignores the WAL-index locks and deletes the WAL: a SHARED lock on the
//!   database file (which every open SQLite connection in WAL mode holds) forbids that.
//! - The first connection to find DMS unlocked truncates the `-shm` file and rebuilds it. The
//!   sidecar therefore only joins (holds DMS shared) while another process holds it: it never
//!   makes a stale index look live, and it never rebuilds one.
//!
//! What must hold: one open descriptor per file for the process's life (POSIX locks die with
//! any close); a read mark is only ever set to the header's `mxFrame` under an exclusive lock
//! on its byte, as SQLite does.

use crate::vfs::ffi::posix::{self, Lock};
use crate::wal::{self, Salts};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

const LOCK_BASE: u64 = 120;
const WRITE_LOCK: u64 = LOCK_BASE;
pub(super) const CKPT_LOCK: u64 = LOCK_BASE + 1;
const DMS: u64 = LOCK_BASE + 8;
pub(super) fn read_lock(i: usize) -> u64 {
    LOCK_BASE + 3 + i as u64
}
pub(super) const NREADER: usize = 5;
/// The mark of a read slot no reader uses.
pub(super) const READMARK_NOT_USED: u32 = 0xffff_ffff;
const HDR: usize = 48;
const CKPT: usize = 96;
const MARKS: usize = 100;
/// `nBackfillAttempted`, after the marks and the 8 lock bytes.
const BACKFILL_ATTEMPTED: usize = 128;

// The database file's lock bytes (os_unix.c).
const PENDING_BYTE: u64 = 0x4000_0000;
const SHARED_FIRST: u64 = PENDING_BYTE + 2;
const SHARED_SIZE: u64 = 510;

/// The WAL index's header, as SQLite last published it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHeader {
    /// Last committed frame of the current WAL generation (0: none).
    pub mx_frame: u32,
    /// Database size in pages after that commit (0 when the WAL has no frames).
    pub n_page: u32,
    pub page_size: u32,
    pub salts: Salts,
    raw: [u8; HDR],
}

/// The checkpoint information: frames copied into the database file, and the read marks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CkptInfo {
    pub n_backfill: u32,
    pub marks: [u32; NREADER],
}

fn ne32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Parses the first 96 bytes of a `-shm` file: both copies equal, initialised, checksum right.
pub fn parse_header(b: &[u8]) -> Option<IndexHeader> {
    if b.len() < 2 * HDR || b[..HDR] != b[HDR..2 * HDR] || b[12] == 0 || ne32(b, 0) != 3007000 {
        return None;
    }
    let native_big = cfg!(target_endian = "big");
    if wal::cksum(native_big, &b[..40], (0, 0)) != (ne32(b, 40), ne32(b, 44)) {
        return None;
    }
    let sz = u16::from_ne_bytes([b[14], b[15]]) as u32;
    Some(IndexHeader {
        mx_frame: ne32(b, 16),
        n_page: ne32(b, 20),
        page_size: (sz & 0xfe00) + ((sz & 1) << 16),
        salts: Salts(be32(b, 32), be32(b, 36)),
        raw: b[..HDR].try_into().unwrap(),
    })
}

/// Takes the SHARED lock on a database file the way SQLite's unix VFS does (a shared lock on
/// the PENDING byte while taking the shared range). False: a connection holds or wants
/// EXCLUSIVE now.
pub fn lock_db_shared(db: &File) -> io::Result<bool> {
    if !posix::set_lock(db, Lock::Shared, PENDING_BYTE, 1)? {
        return Ok(false);
    }
    let got = posix::set_lock(db, Lock::Shared, SHARED_FIRST, SHARED_SIZE);
    posix::set_lock(db, Lock::Unlock, PENDING_BYTE, 1)?;
    got
}

/// One process's hold on a database's WAL index (`-shm`).
pub struct WalIndex {
    shm: File,
    joined: bool,
    slot: Option<usize>,
    write: bool,
}

impl WalIndex {
    /// Opens the `-shm` file (None if it does not exist: no connection has used WAL mode).
    pub fn open(path: &std::path::Path) -> io::Result<Option<WalIndex>> {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Ok(shm) => Ok(Some(WalIndex {
                shm,
                joined: false,
                slot: None,
                write: false,
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Joins the live index: holds DMS shared, only while another process does. False: no
    /// live connection (the index may be stale; SQLite rebuilds it at the next open).
    pub fn join(&mut self) -> io::Result<bool> {
        if self.joined {
            return Ok(true);
        }
        if !posix::is_locked_by_other(&self.shm, Lock::Exclusive, DMS, 1)? {
            return Ok(false);
        }
        self.joined = posix::set_lock(&self.shm, Lock::Shared, DMS, 1)?;
        Ok(self.joined)
    }

    /// The inode of the open `-shm` file (to notice one deleted and created anew).
    pub fn inode(&self) -> io::Result<u64> {
        use std::os::unix::fs::MetadataExt;
        Ok(self.shm.metadata()?.ino())
    }

    pub fn joined(&self) -> bool {
        self.joined
    }

    /// The published header, or None while it is being written or rebuilt.
    pub fn header(&self) -> io::Result<Option<IndexHeader>> {
        let mut b = [0u8; 2 * HDR];
        match self.shm.read_exact_at(&mut b, 0) {
            Ok(()) => Ok(parse_header(&b)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn ckpt(&self) -> io::Result<CkptInfo> {
        let mut b = [0u8; MARKS + 4 * NREADER - CKPT];
        self.shm.read_exact_at(&mut b, CKPT as u64)?;
        let mut marks = [0u32; NREADER];
        for (i, m) in marks.iter_mut().enumerate() {
            *m = ne32(&b, 4 + 4 * i);
        }
        Ok(CkptInfo {
            n_backfill: ne32(&b, 0),
            marks,
        })
    }

    /// SQLite's WAL write lock, without waiting. False: a writer holds it.
    pub fn try_write(&mut self) -> io::Result<bool> {
        if !self.write {
            self.write = posix::set_lock(&self.shm, Lock::Exclusive, WRITE_LOCK, 1)?;
        }
        Ok(self.write)
    }

    pub fn release_write(&mut self) -> io::Result<()> {
        if self.write {
            posix::set_lock(&self.shm, Lock::Unlock, WRITE_LOCK, 1)?;
            self.write = false;
        }
        Ok(())
    }

    /// The READ(i) slot held, if any.
    pub fn slot(&self) -> Option<usize> {
        self.slot
    }

    fn set_mark(&self, i: usize, mark: u32) -> io::Result<()> {
        self.shm
            .write_all_at(&mark.to_ne_bytes(), (MARKS + 4 * i) as u64)
    }

    /// The `-shm` file, for the checkpoint's locks (`backfill`).
    pub(super) fn shm(&self) -> &File {
        &self.shm
    }

    /// Sets READ(i)'s mark; the caller holds READ(i) exclusive.
    pub(super) fn write_mark(&self, i: usize, mark: u32) -> io::Result<()> {
        self.set_mark(i, mark)
    }

    /// Publishes `nBackfill`; the caller holds CKPT and READ(0), with the database file synced.
    pub(super) fn set_backfill(&self, frame: u32) -> io::Result<()> {
        self.shm.write_all_at(&frame.to_ne_bytes(), CKPT as u64)
    }

    pub(super) fn set_backfill_attempted(&self, frame: u32) -> io::Result<()> {
        self.shm
            .write_all_at(&frame.to_ne_bytes(), BACKFILL_ATTEMPTED as u64)
    }

    /// Holds a READ(i) slot (i >= 1) whose mark is at most `hdr.mx_frame`, preferring one at
    /// exactly `mx_frame` (as `walTryBeginRead`). The slot held before is kept until the new
    /// one is, so the WAL can never restart in between. False: every slot is busy (the old
    /// one, if any, is still held).
    pub fn hold_read(&mut self, hdr: &IndexHeader) -> io::Result<bool> {
        self.hold_read_moving(hdr, false)
    }

    /// As `hold_read`, but moves to another slot when one is free, letting the old one go:
    /// a checkpointer waiting to lock our old slot (to move its mark) then gets it.
    pub fn move_read(&mut self, hdr: &IndexHeader) -> io::Result<bool> {
        self.hold_read_moving(hdr, true)
    }

    fn hold_read_moving(&mut self, hdr: &IndexHeader, moving: bool) -> io::Result<bool> {
        let mx = hdr.mx_frame;
        if let Some(j) = self.slot.filter(|_| !moving) {
            // Move our own mark forward if no one else shares the slot (upgrade, write,
            // downgrade: the byte is never unlocked).
            if posix::set_lock(&self.shm, Lock::Exclusive, read_lock(j), 1)? {
                self.set_mark(j, mx)?;
                posix::set_lock(&self.shm, Lock::Shared, read_lock(j), 1)?;
                return self.still(hdr);
            }
        }
        for _ in 0..5 {
            let ck = self.ckpt()?;
            let mut best: Option<(usize, u32)> = None;
            for i in 1..NREADER {
                let m = ck.marks[i];
                if Some(i) != self.slot && m <= mx && best.is_none_or(|(_, b)| m > b) {
                    best = Some((i, m));
                }
            }
            if best.is_none_or(|(_, m)| m < mx) {
                for i in (1..NREADER).filter(|&i| Some(i) != self.slot) {
                    if posix::set_lock(&self.shm, Lock::Exclusive, read_lock(i), 1)? {
                        self.set_mark(i, mx)?;
                        posix::set_lock(&self.shm, Lock::Shared, read_lock(i), 1)?;
                        return self.switch_to(i, hdr);
                    }
                }
            }
            let Some((i, m)) = best else {
                break;
            };
            if !posix::set_lock(&self.shm, Lock::Shared, read_lock(i), 1)? {
                continue;
            }
            if self.ckpt()?.marks[i] != m {
                posix::set_lock(&self.shm, Lock::Unlock, read_lock(i), 1)?;
                continue;
            }
            return self.switch_to(i, hdr);
        }
        match self.slot {
            Some(_) if moving => self.hold_read_moving(hdr, false),
            slot => Ok(slot.is_some()),
        }
    }

    /// Slot `i` is held shared now: let the old one go.
    fn switch_to(&mut self, i: usize, hdr: &IndexHeader) -> io::Result<bool> {
        if let Some(j) = self.slot.replace(i) {
            posix::set_lock(&self.shm, Lock::Unlock, read_lock(j), 1)?;
        }
        self.still(hdr)
    }

    /// True when the header did not move while the slot was taken (else the mark may be
    /// above a restarted WAL's frames: the caller looks again).
    fn still(&self, hdr: &IndexHeader) -> io::Result<bool> {
        Ok(self.header()?.is_some_and(|h| h.raw == hdr.raw))
    }

    /// Lets the read slot go (the WAL may restart from now on).
    pub fn release_read(&mut self) -> io::Result<()> {
        if let Some(j) = self.slot.take() {
            posix::set_lock(&self.shm, Lock::Unlock, read_lock(j), 1)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    //! Against a real WAL database held open by Debian's /usr/bin/python3 (its own SQLite).
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

    const SCRIPT: &str = r#"
import sqlite3, sys
c = sqlite3.connect(sys.argv[1], timeout=0.2, isolation_level=None)
for line in sys.stdin:
    line = line.strip()
    if line == "close":
        c.close(); print("closed", flush=True); continue
    try:
        print(repr(c.execute(line).fetchall()), flush=True)
    except Exception as e:
        print("ERR " + str(e), flush=True)
"#;

    /// An application: a Python process with one connection, answering one line per statement.
    struct App {
        child: Child,
        stdin: ChildStdin,
        stdout: BufReader<ChildStdout>,
    }

    impl App {
        fn open(db: &std::path::Path) -> App {
            let mut child = Command::new("/usr/bin/python3")
                .args(["-c", SCRIPT])
                .arg(db)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .expect("/usr/bin/python3 runs");
            let stdin = child.stdin.take().unwrap();
            let stdout = BufReader::new(child.stdout.take().unwrap());
            App {
                child,
                stdin,
                stdout,
            }
        }

        fn sql(&mut self, stmt: &str) -> String {
            writeln!(self.stdin, "{stmt}").unwrap();
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            line.trim().to_string()
        }
    }

    impl Drop for App {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    struct Db {
        _dir: tempdir::Dir,
        path: std::path::PathBuf,
    }

    mod tempdir {
        pub struct Dir(pub std::path::PathBuf);
        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.0);
            }
        }
    }

    /// A WAL database with a table and `rows` single-row transactions, checkpoints off.
    fn setup(name: &str, rows: usize) -> (Db, App) {
        let dir = std::env::temp_dir().join(format!("walrust-shm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite");
        let mut app = App::open(&path);
        assert_eq!(app.sql("PRAGMA journal_mode=WAL"), "[('wal',)]");
        app.sql("PRAGMA wal_autocheckpoint=0");
        app.sql("CREATE TABLE t(x)");
        for i in 0..rows {
            assert_eq!(app.sql(&format!("INSERT INTO t VALUES ({i})")), "[]");
        }
        (
            Db {
                _dir: tempdir::Dir(dir),
                path,
            },
            app,
        )
    }

    fn with_suffix(p: &std::path::Path, s: &str) -> std::path::PathBuf {
        let mut o = p.as_os_str().to_owned();
        o.push(s);
        o.into()
    }

    fn wal_len(db: &Db) -> u64 {
        std::fs::metadata(with_suffix(&db.path, "-wal")).map_or(0, |m| m.len())
    }

    fn joined(db: &Db) -> WalIndex {
        let mut ix = WalIndex::open(&with_suffix(&db.path, "-shm"))
            .unwrap()
            .expect("the -shm file exists");
        assert!(ix.join().unwrap(), "a live connection holds DMS");
        ix
    }

    #[test]
    fn header_says_what_the_wal_holds() {
        let (db, _app) = setup("header", 10);
        let ix = joined(&db);
        let hdr = ix.header().unwrap().expect("a valid header");
        let wal = std::fs::read(with_suffix(&db.path, "-wal")).unwrap();
        let whdr = wal::parse_header(&wal).unwrap();
        assert_eq!(hdr.page_size, whdr.page_size);
        assert_eq!(hdr.salts, whdr.salts);
        let frames = (wal.len() as u64 - wal::HEADER_SIZE) / (wal::FRAME_HEADER_SIZE + 4096);
        assert_eq!(hdr.mx_frame as u64, frames);
        assert_eq!(hdr.n_page, 2);
        assert_eq!(ix.ckpt().unwrap().n_backfill, 0);
    }

    #[test]
    fn a_read_slot_stops_checkpoints_at_its_mark_and_forbids_a_restart() {
        let (db, mut app) = setup("slot", 5);
        let mut ix = joined(&db);
        let hdr = ix.header().unwrap().unwrap();
        assert!(ix.try_write().unwrap());
        assert!(ix.hold_read(&hdr).unwrap());
        ix.release_write().unwrap();
        let slot = ix.slot().unwrap();
        assert!(slot >= 1);
        assert_eq!(ix.ckpt().unwrap().marks[slot], hdr.mx_frame);
        for i in 0..5 {
            app.sql(&format!("INSERT INTO t VALUES ({i})"));
        }
        // PASSIVE copies only up to our mark; TRUNCATE cannot restart the WAL.
        let mark = hdr.mx_frame;
        let now = ix.header().unwrap().unwrap().mx_frame;
        assert!(now > mark);
        assert_eq!(
            app.sql("PRAGMA wal_checkpoint(PASSIVE)"),
            format!("[(0, {now}, {mark})]")
        );
        let before = wal_len(&db);
        let r = app.sql("PRAGMA wal_checkpoint(TRUNCATE)");
        assert!(r.starts_with("[(1,"), "{r}");
        assert_eq!(wal_len(&db), before);
        // Moved forward (still holding), then let go: the WAL can be truncated.
        assert!(ix.try_write().unwrap());
        let hdr = ix.header().unwrap().unwrap();
        assert!(ix.hold_read(&hdr).unwrap());
        ix.release_write().unwrap();
        assert_eq!(ix.ckpt().unwrap().marks[ix.slot().unwrap()], now);
        ix.release_read().unwrap();
        assert_eq!(app.sql("PRAGMA wal_checkpoint(TRUNCATE)"), "[(0, 0, 0)]");
        assert_eq!(wal_len(&db), 0);
    }

    #[test]
    fn the_write_lock_keeps_writers_out() {
        let (db, mut app) = setup("write", 1);
        let mut ix = joined(&db);
        assert!(ix.try_write().unwrap());
        assert!(app.sql("INSERT INTO t VALUES (1)").contains("locked"));
        ix.release_write().unwrap();
        assert_eq!(app.sql("INSERT INTO t VALUES (1)"), "[]");
    }

    #[test]
    fn a_shared_database_lock_keeps_the_wal_at_the_last_close() {
        let (db, mut app) = setup("close", 3);
        let file = std::fs::File::open(&db.path).unwrap();
        assert!(lock_db_shared(&file).unwrap());
        assert_eq!(app.sql("close"), "closed");
        assert!(
            wal_len(&db) > 0,
            "the WAL stays while a SHARED lock is held"
        );
        drop(file);
        let mut app = App::open(&db.path);
        app.sql("SELECT count(*) FROM t");
        assert_eq!(app.sql("close"), "closed");
        assert!(
            !with_suffix(&db.path, "-wal").exists(),
            "without it the last close deletes the WAL"
        );
    }

    #[test]
    fn no_live_connection_means_no_join() {
        let (db, mut app) = setup("dead", 1);
        let file = std::fs::File::open(&db.path).unwrap();
        assert!(lock_db_shared(&file).unwrap()); // keeps the -shm and WAL at close
        assert_eq!(app.sql("close"), "closed");
        let mut ix = WalIndex::open(&with_suffix(&db.path, "-shm"))
            .unwrap()
            .unwrap();
        assert!(!ix.join().unwrap());
    }

    // --- the sidecar's own checkpoint (backfill.rs) -------------------------------------------

    /// Holds a read slot at the index's `mxFrame`, as the watch does after copying.
    fn hold_at_head(ix: &mut WalIndex) -> IndexHeader {
        assert!(ix.try_write().unwrap());
        let hdr = ix.header().unwrap().unwrap();
        assert!(ix.hold_read(&hdr).unwrap());
        ix.release_write().unwrap();
        hdr
    }

    fn files(db: &Db) -> (std::fs::File, std::fs::File) {
        (
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&db.path)
                .unwrap(),
            std::fs::File::open(with_suffix(&db.path, "-wal")).unwrap(),
        )
    }

    /// What SQLite finds in a copy of the database file alone (no WAL): integrity, rows.
    fn file_alone(db: &Db) -> String {
        let copy = with_suffix(&db.path, "-alone");
        std::fs::copy(&db.path, &copy).unwrap();
        let out = Command::new("/usr/bin/python3")
            .args([
                "-c",
                "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); \
                 print(c.execute('PRAGMA integrity_check').fetchone()[0], \
                 c.execute('SELECT count(*), sum(x) FROM t').fetchone())",
            ])
            .arg(&copy)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn the_sidecar_checkpoint_leaves_a_complete_database_file() {
        let (db, mut app) = setup("ckpt", 30);
        app.sql("UPDATE t SET x = x + 1000 WHERE x < 10"); // pages rewritten in later frames
        let mut ix = joined(&db);
        let hdr = hold_at_head(&mut ix);
        let (dbf, walf) = files(&db);
        let done = ix.checkpoint(&dbf, &walf, hdr.mx_frame).unwrap().unwrap();
        assert_eq!((done.from, done.to), (0, hdr.mx_frame));
        assert_eq!(ix.ckpt().unwrap().n_backfill, hdr.mx_frame);
        // SQLite agrees everything is checkpointed, and the file alone holds every commit.
        let mx = hdr.mx_frame;
        assert_eq!(
            app.sql("PRAGMA wal_checkpoint(PASSIVE)"),
            format!("[(0, {mx}, {mx})]")
        );
        assert_eq!(file_alone(&db), "ok (30, 10435)");
        assert_eq!(
            ix.checkpoint(&dbf, &walf, mx).unwrap(),
            None,
            "nothing left"
        );
        // Once the slot goes, the application's writer restarts the WAL as usual.
        ix.release_read().unwrap();
        app.sql("INSERT INTO t VALUES (1)");
        assert!(ix.header().unwrap().unwrap().mx_frame < mx);
        assert_eq!(app.sql("PRAGMA integrity_check"), "[('ok',)]");
    }

    #[test]
    fn the_sidecar_checkpoint_stops_at_its_limit_and_at_a_reader() {
        let (db, mut app) = setup("limit", 10);
        let mut ix = joined(&db);
        let copied = hold_at_head(&mut ix);
        for i in 10..20 {
            app.sql(&format!("INSERT INTO t VALUES ({i})"));
        }
        let (dbf, walf) = files(&db);
        // Frames the log does not hold yet stay in the WAL only.
        let done = ix.checkpoint(&dbf, &walf, u32::MAX).unwrap().unwrap();
        assert_eq!(done.to, copied.mx_frame, "our own mark bounds it");
        let hdr = hold_at_head(&mut ix);
        // A reader in an older snapshot bounds it too.
        let mut reader = App::open(&db.path);
        reader.sql("BEGIN");
        assert_eq!(reader.sql("SELECT count(*) FROM t"), "[(20,)]");
        for i in 20..30 {
            app.sql(&format!("INSERT INTO t VALUES ({i})"));
        }
        let now = hold_at_head(&mut ix);
        let done = ix.checkpoint(&dbf, &walf, now.mx_frame).unwrap().unwrap();
        assert_eq!(done.to, hdr.mx_frame, "the reader's snapshot bounds it");
        assert_eq!(reader.sql("SELECT count(*) FROM t"), "[(20,)]");
        reader.sql("COMMIT");
        let done = ix.checkpoint(&dbf, &walf, now.mx_frame).unwrap().unwrap();
        assert_eq!(done.to, now.mx_frame);
        assert_eq!(file_alone(&db), "ok (30, 435)");
        assert_eq!(app.sql("PRAGMA integrity_check"), "[('ok',)]");
    }
}
