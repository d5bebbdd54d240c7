//! Full snapshots: every page of the database as of one TXID, as a level-9 LTX file.
//!
//! Consistency without blocking writers for long: with the WAL write lock held (by the
//! application's next commit, or for an instant by the snapshot's own connection) the shadow
//! log is brought up to date and the snapshot's TXID fixed; the reader connection's read
//! transaction is opened at that point (`fix_point`, `fix_point_alone`); the lock is released
//! and the pages are streamed from that read view, through the reader's own file handle: the
//! newest WAL frame of each page up to the captured position, else the database file. While the read
//! transaction is open SQLite cannot restart the WAL, and a checkpoint can only copy frames this
//! view already includes, so what we read is exactly the database at that TXID.

use super::batch::{put_with_manifest, with_room, HashingWriter, TempFile};
use crate::database::Database;
use crate::ltx::{self, Encoder};
use crate::manifest::Hasher64;
use crate::replication::Replication;
use crate::shadow::{Kind, WalPos};
use crate::store::FileKey;
use crate::types::{PageNo, Txid};
use crate::wal;
use rusqlite::config::DbConfig;
use rusqlite::{Connection, OpenFlags};
use std::collections::HashMap;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// Opens a connection of walrust's own to the database (not counted as the application's, and
/// never configuring replication).
pub fn open_internal(db: &Database) -> Result<Connection, String> {
    let uri = format!(
        "file:{}?walrust_internal=1",
        uri_escape(&db.path.to_string_lossy())
    );
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_URI
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    crate::log::trace(|| {
        format!(
            "internal open of {} (in use {}, may open {})",
            db.path.display(),
            db.in_use(),
            db.may_open()
        )
    });
    let conn = Connection::open_with_flags(&uri, flags)
        .map_err(|e| format!("cannot open {}: {e}", db.path.display()))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    // Closing must never checkpoint and delete the WAL: when no application connection holds
    // its lock yet (one just opened, before its first read), SQLite's close of the last
    // connection would, and replication would pause as if the database had left WAL mode.
    conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, true)
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// Escapes a path for a `file:` URI, so that `?`, `#`, `%`, `&` and `=` in it stay part of
/// the path.
pub(crate) fn uri_escape(p: &str) -> String {
    let mut out = String::with_capacity(p.len());
    for b in p.bytes() {
        match b {
            b'?' | b'#' | b'%' | b'&' | b'=' => out.push_str(&format!("%{b:02X}")),
            _ => out.push(b as char),
        }
    }
    out
}

/// Runs `f` while an internal connection holds the WAL write lock.
pub fn with_write_lock<T>(
    db: &Database,
    busy: Duration,
    f: impl FnOnce(&Connection) -> Result<T, String>,
) -> Result<T, String> {
    let repl = db.replication().ok_or("not replicating")?;
    let _alone = crate::checkpoint::keep_away(&repl);
    if !db.may_open() {
        return Err(format!("{} is closed", db.path.display()));
    }
    let conn = open_internal(db)?;
    let opened = inode(&db.path);
    conn.busy_timeout(busy).map_err(|e| e.to_string())?;
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("cannot lock {} for writing: {e}", db.path.display()))?;
    crate::failpoint::hit("internal.write_locked");
    let out = f(&conn);
    let _ = conn.execute_batch("ROLLBACK");
    close_internal(db, conn, opened);
    out
}

/// Where a snapshot's read view was fixed: its TXID, the WAL position of that TXID, and the
/// database's page size and page count in that view.
#[derive(Clone, Copy)]
pub struct Point {
    pub txid: u64,
    pub pos: WalPos,
    pub page_size: u32,
    pub pages: u32,
}

/// With the WAL write lock held (by an internal connection, or by the application's committing
/// thread): opens `reader`'s read transaction, brings the shadow log up to date and fixes the
/// snapshot's TXID. Nothing can commit in between, so the read view is exactly that TXID.
pub fn fix_point(db: &Database, reader: &Connection, min_txid: u64) -> Result<Point, String> {
    // Never wait here: the write lock is held (perhaps by the application's own commit).
    let _ = reader.busy_timeout(Duration::ZERO);
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(|e| format!("cannot start the snapshot's read transaction: {e}"))?;
    point_here(db, reader, min_txid)
}

/// With the write lock held and `reader` in a transaction: brings the shadow log up to date,
/// appends the snapshot's marker and says where the reader's view stands.
fn point_here(db: &Database, reader: &Connection, min_txid: u64) -> Result<Point, String> {
    let page_size: u32 = reader
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let pages: u32 = reader
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let marker = Some((Kind::Snapshot, min_txid, page_size, pages));
    let (txid, pos) = db
        .catch_up_locked(marker)
        .map_err(|e| format!("cannot update the shadow log: {e}"))?;
    Ok(Point {
        txid,
        pos,
        page_size,
        pages,
    })
}

/// Without a commit to fix the point (`fix_point` at the application's commit), the reader
/// fixes it alone, with one connection: it takes the write lock (`BEGIN IMMEDIATE`), brings
/// the shadow log up to date and fixes the TXID, lets the lock go, and opens its read
/// transaction. `PRAGMA data_version` changes when another connection commits, so an
/// unchanged value proves the read view is the point fixed under the lock; otherwise a commit
/// came in between and `None` is returned (the next commit, or the next attempt, fixes it).
/// A second connection holding the lock while the reader opened its view would do the same
/// with one more descriptor (see `checkpoint::keep_away`).
pub fn fix_point_alone(
    db: &Database,
    reader: &Connection,
    min_txid: u64,
) -> Result<Option<Point>, String> {
    reader
        .busy_timeout(Duration::from_secs(5))
        .map_err(|e| e.to_string())?;
    reader
        .execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("cannot lock {} for writing: {e}", db.path.display()))?;
    crate::failpoint::hit("internal.write_locked");
    let fixed = data_version(reader).and_then(|v| Ok((v, point_here(db, reader, min_txid)?)));
    let _ = reader.execute_batch("ROLLBACK");
    let (version, point) = fixed?;
    crate::failpoint::hit("snapshot.alone_unlocked");
    let _ = reader.busy_timeout(Duration::ZERO);
    reader
        .execute_batch("BEGIN; SELECT count(*) FROM sqlite_schema;")
        .map_err(|e| format!("cannot start the snapshot's read transaction: {e}"))?;
    if data_version(reader)? != version {
        let _ = reader.execute_batch("ROLLBACK");
        return Ok(None);
    }
    Ok(Some(point))
}

fn data_version(conn: &Connection) -> Result<i64, String> {
    conn.query_row("PRAGMA data_version", [], |r| r.get(0))
        .map_err(|e| format!("cannot read the data version: {e}"))
}

/// Takes a snapshot. With `fresh_txid_above = Some(n)` the snapshot gets a TXID greater than
/// `n` (after a divergence, or onto an empty replica); otherwise it carries the log's last
/// TXID. Returns the snapshot's TXID.
///
/// Fixing the point needs the write lock for an instant. If the application is writing, its
/// next commit does it while it holds the lock anyway (`Database::write_lock_releasing`), so no
/// writer ever waits on walrust and no busy-timeout-less connection sees SQLITE_BUSY; an
/// internal connection takes the lock only when no commit came for a second.
pub fn take(
    db: &Database,
    repl: &Replication,
    fresh_txid_above: Option<u64>,
    owner: Option<crate::history::Owner>,
) -> Result<Taken, Error> {
    let min_txid = fresh_txid_above.map_or(1, |n| n + 1);
    crate::failpoint::hit("snapshot.begins");
    let _alone = crate::checkpoint::keep_away(repl);
    // Once the application's last connection has closed, the path may name another database
    // (deleted and made again): walrust opens a database only while the application has it
    // open, and the application's close waits for this connection (`before_exclusive_lock`)
    // unless it stopped waiting before this one counted itself in (`Database::may_open`).
    if !db.may_open() {
        return Err(Error::Closed);
    }
    let reader = open_internal(db)?;
    let opened = inode(&db.path);
    let (tx, rx) = flume::bounded(1);
    *repl.handoff.lock().unwrap() = Some(Handoff {
        reader,
        min_txid,
        reply: tx,
    });
    crate::log::trace(|| format!("snapshot of {} waits for a commit", db.path.display()));
    // Wait for a commit to fix the point; without one for a second, or at once if the
    // application is closing the database (no commit will come, and its close waits for this
    // snapshot: `Database::before_exclusive_lock`), fix it alone. A commit that could not fix
    // it puts the request back, so look again each second.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut alone_at = Instant::now() + ALONE_AFTER;
    let answer = loop {
        if let Ok(a) = rx.recv_timeout(CLOSING_POLL) {
            break a;
        }
        if Instant::now() < alone_at && !db.closing() {
            continue;
        }
        alone_at = Instant::now() + ALONE_AFTER;
        let taken = repl.handoff.lock().unwrap().take();
        if let Some(h) = taken {
            crate::log::trace(|| "snapshot takes the write lock itself".to_string());
            match fix_point_alone(db, &h.reader, h.min_txid) {
                Ok(Some(point)) => break Ok((h.reader, point)),
                // A commit came in between: the next one fixes the point.
                Ok(None) => *repl.handoff.lock().unwrap() = Some(h),
                Err(e) => break Err(e),
            }
        }
        if Instant::now() > deadline {
            return Err(Error::Other(
                "the snapshot's read point could not be fixed within a minute; will retry".into(),
            ));
        }
    };
    let (reader, point) = answer?;
    let expect = owner.map_or(crate::manifest::Expect::Any, crate::manifest::Expect::Owner);
    let result = match fresh_txid_above {
        None => named_already(repl, owner, point.txid).transpose(),
        Some(_) => None,
    }
    .unwrap_or_else(|| stream(db, &reader, repl, expect, &point));
    let _ = reader.execute_batch("ROLLBACK");
    close_internal(db, reader, opened);
    result
}

/// The replica's snapshot at `txid`, if its manifest names one: nothing was committed since
/// (a database idle through its snapshot interval, `walrust_snapshot()` called twice), so that
/// snapshot is this one, and a new file could not take its name anyway (files are never
/// replaced). Costs one read of the manifest object per snapshot, against a whole database's
/// upload.
fn named_already(
    repl: &Replication,
    owner: Option<crate::history::Owner>,
    txid: u64,
) -> Result<Option<Taken>, Error> {
    let Some(key) =
        Txid::new(txid).and_then(|t| FileKey::new(crate::store::SNAPSHOT_LEVEL, Txid::ONE, t))
    else {
        return Ok(None);
    };
    let store = repl.store.as_ref();
    let unreadable =
        |e: crate::store::StoreError| Error::Other(format!("cannot read the manifest: {e}"));
    let Some((head, version)) = crate::manifest::load_head(store).map_err(unreadable)? else {
        return Ok(None);
    };
    if owner.is_some() && head.owner() != owner {
        return Err(Error::NotOwner(head.owner()));
    }
    // The newest entries are in the manifest object; older ones in parts, read only when one
    // of snapshot entries spans that TXID.
    let in_a_part = head.parts.iter().any(|p| {
        p.level == crate::store::SNAPSHOT_LEVEL
            && p.min_txid <= key.max_txid
            && key.max_txid <= p.max_txid
    });
    let named = head.get(&key).is_some()
        || in_a_part
            && matches!(crate::manifest::load(store).map_err(unreadable)?,
                        Some((m, v)) if v == version && m.get(&key).is_some());
    Ok(named.then(|| Taken {
        txid: key.max_txid,
        manifest: crate::manifest::Written::of(&head, version),
    }))
}

/// How long a snapshot waits for the application's next commit to fix its point before it
/// fixes it alone, and how often it looks whether the application is closing meanwhile.
const ALONE_AFTER: Duration = Duration::from_secs(1);
const CLOSING_POLL: Duration = Duration::from_millis(10);

/// Closes a connection of walrust's own (`open_internal`). If the application's last
/// connection is closing meanwhile (and waits for this one: `Database::before_last_close`), it
/// closes as SQLite's last connection would: it checkpoints and deletes the `-wal` and `-shm`
/// files its own open made again after the application's close deleted them, so that no WAL
/// is left beside a database the application closed. (If a connection still holds the
/// database, SQLite keeps them, as always.)
///
/// Never once the application's close is over (its wait ran out): SQLite deletes those files
/// by name, and the path may name another database by then. Nor if the path names another
/// file than the one the connection opened (`opened`, its inode then).
fn close_internal(db: &Database, conn: Connection, opened: Option<u64>) {
    crate::log::trace(|| {
        format!(
            "internal close of {} (closing {}, in use {})",
            db.path.display(),
            db.closing(),
            db.in_use()
        )
    });
    if db.closing() && db.in_use() && opened.is_some() && inode(&db.path) == opened {
        let _ = conn.set_db_config(DbConfig::SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, false);
    }
    drop(conn);
}

fn inode(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// Why a snapshot failed: the same reasons as any upload.
pub use super::batch::Error;

/// A snapshot uploaded: its TXID, and its manifest write (the uploader's fence goes on from
/// its version, so the next batch needs no read of the manifest).
#[derive(Debug)]
pub struct Taken {
    pub txid: Txid,
    pub manifest: crate::manifest::Written,
}

/// A snapshot waiting for the application's next commit to fix its point.
pub struct Handoff {
    pub reader: Connection,
    pub min_txid: u64,
    pub reply: flume::Sender<Result<(Connection, Point), String>>,
}

/// Called by the committing thread with the write lock still held. If the point cannot be
/// fixed at once (the WAL index is being rebuilt, say), the request goes back for a later
/// commit or for the uploader's own attempt; the commit never waits.
pub fn serve_handoff(db: &Database, repl: &Replication, h: Handoff) {
    match fix_point(db, &h.reader, h.min_txid) {
        Ok(p) => {
            let _ = h.reply.send(Ok((h.reader, p)));
        }
        Err(e) => {
            crate::log::trace(|| format!("snapshot point not fixed at a commit: {e}"));
            let _ = h.reader.execute_batch("ROLLBACK");
            let mut slot = repl.handoff.lock().unwrap();
            if slot.is_none() {
                *slot = Some(h);
            }
        }
    }
}
fn stream(
    db: &Database,
    reader: &Connection,
    repl: &Replication,
    expect: crate::manifest::Expect,
    point: &Point,
) -> Result<Taken, Error> {
    let Point {
        txid,
        pos,
        page_size,
        pages,
    } = *point;
    let txid = Txid::new(txid).ok_or("a snapshot needs a TXID above 0")?;
    let wal_file = std::fs::File::open(db.wal_path()).ok();
    let upto = match pos {
        WalPos::At { salts, frame } => Some((salts, frame)),
        _ => None,
    };
    let in_wal = match &wal_file {
        Some(f) => wal_overlay(f, upto, page_size)?,
        None => HashMap::new(),
    };
    // Through the reader's own handle: no descriptor beyond the connection's (see
    // `checkpoint::keep_away` for why that matters).
    let dbfile = crate::database::MainFile::of(reader).map_err(|e| e.to_string())?;
    let mut read = |pgno: u32, buf: &mut [u8]| -> Result<(), String> {
        match (in_wal.get(&pgno), &wal_file) {
            (Some(&off), Some(f)) => f
                .read_exact_at(buf, off)
                .map_err(|e| format!("cannot read the WAL: {e}")),
            _ => {
                if dbfile
                    .read_at(buf, (pgno as u64 - 1) * page_size as u64)
                    .map_err(|e| e.to_string())?
                    == 0
                {
                    buf.fill(0);
                }
                Ok(())
            }
        }
    };
    // Every page is in the file: the read transaction ends before the upload, which may take
    // long (a large database, a slow store), and while it lasts no checkpoint can copy a frame
    // past the snapshot's point (the WAL would grow under a busy writer meanwhile).
    let mut read_all = || {
        reader
            .execute_batch("ROLLBACK")
            .map_err(|e| format!("cannot end the snapshot's read transaction: {e}"))
    };
    stream_pages(
        repl,
        expect,
        txid,
        (page_size, pages),
        &mut read,
        &mut read_all,
    )
}

/// Where the newest frame of each page up to frame `upto.1` of the WAL generation `upto.0`
/// lies in the WAL file: page number to the byte offset of its data. Fails when the WAL no
/// longer holds that generation.
pub fn wal_overlay(
    wal_file: &std::fs::File,
    upto: Option<(wal::Salts, u32)>,
    page_size: u32,
) -> Result<HashMap<u32, u64>, Error> {
    let mut in_wal: HashMap<u32, u64> = HashMap::new();
    let Some((salts, frame)) = upto.filter(|&(_, f)| f > 0) else {
        return Ok(in_wal);
    };
    let mut read = |buf: &mut [u8], off: u64| -> std::io::Result<usize> {
        wal_file
            .read_exact_at(buf, off)
            .map(|_| buf.len())
            .or(Ok(0))
    };
    let mut hb = [0u8; wal::HEADER_SIZE as usize];
    let hdr = (read(&mut hb, 0).unwrap_or(0) == hb.len())
        .then(|| wal::parse_header(&hb))
        .flatten()
        .filter(|h| h.salts == salts && h.page_size == page_size)
        .ok_or("the WAL changed under the snapshot; will retry")?;
    for (fr, pgno) in
        wal::frame_pgnos(hdr.page_size, 1, frame, &mut read).map_err(|e| e.to_string())?
    {
        in_wal.insert(
            pgno,
            wal::frame_offset(fr, page_size) + wal::FRAME_HEADER_SIZE,
        );
    }
    Ok(in_wal)
}

/// Reads page `n` (1-based) of the database being streamed into the buffer.
pub type ReadPage<'a> = dyn FnMut(u32, &mut [u8]) -> Result<(), String> + 'a;

/// Streams pages `1..=pages` (each read by `read_page`) into a level-9 LTX file at `txid`,
/// calls `read_all` once every page is read (which lets the read view go, or fails the
/// snapshot before anything is uploaded), then uploads the file with its manifest entry. Both
/// snapshot sources (the extension's, the sidecar's) end here. The file is built in the shadow
/// directory or, when that disk is full (a database larger than the room left beside it), in
/// the system's temporary directory, as a batch is (`batch::with_room`).
pub fn stream_pages(
    repl: &Replication,
    expect: crate::manifest::Expect,
    txid: Txid,
    (page_size, pages): (u32, u32),
    read_page: &mut ReadPage,
    read_all: &mut dyn FnMut() -> Result<(), String>,
) -> Result<Taken, Error> {
    let max = txid;
    let ts = crate::clock::now_ms();
    let header = ltx::Header::new(page_size, pages, Txid::ONE, max, ts);
    let (tmp, sha) = with_room(&repl.shadow.tmp_dir(), &mut |dir: &std::path::Path| {
        build_snapshot(dir, header.clone(), read_page)
    })?;
    read_all()?;
    let key = FileKey::new(crate::store::SNAPSHOT_LEVEL, Txid::ONE, max).unwrap();
    let store = repl.store.as_ref();
    let manifest = match put_with_manifest(store, expect, &key, &tmp.path, ts, sha) {
        Err(Error::Exists(k)) => match adopt_identical(store, expect, &k, &tmp.path)? {
            Some(written) => written,
            None => return Err(Error::Exists(k)),
        },
        other => other?,
    };
    Ok(Taken {
        txid: max,
        manifest,
    })
}

/// Builds the snapshot file of `header` (pages `1..=header.commit`) in `dir`; returns it with
/// its SHA-256.
fn build_snapshot(
    dir: &std::path::Path,
    header: ltx::Header,
    read_page: &mut ReadPage,
) -> Result<(TempFile, String), Error> {
    let name = ltx::file_name(header.min_txid, header.max_txid);
    let (tmp, file) = TempFile::create(dir, &name)
        .map_err(|e| format!("cannot create a temporary file in {}: {e}", dir.display()))?;
    let writer = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Hasher64::new(),
        written: 0,
    };
    let local = |e: &dyn std::fmt::Display| super::batch::local_write_error(&tmp.path, e);
    let (page_size, pages) = (header.page_size, header.commit);
    let mut enc = Encoder::new(writer, header).map_err(|e| local(&e))?;
    let lock_page = crate::types::lock_page(page_size);
    let mut buf = vec![0u8; page_size as usize];
    for pgno in 1..=pages {
        if pgno == lock_page {
            continue;
        }
        read_page(pgno, &mut buf)?;
        enc.write_page(PageNo::new(pgno).unwrap(), &buf)
            .map_err(|e| local(&e))?;
    }
    let (mut writer, _) = enc
        .finish(crate::types::Checksum(0))
        .map_err(|e| local(&e))?;
    writer.flush().map_err(|e| local(&e))?;
    let HashingWriter { hasher, .. } = writer;
    Ok((tmp, hasher.finish()))
}

/// The snapshot file at `key` exists already but the manifest does not name it: a process
/// was killed between the file's upload and the manifest's write, and nothing was committed
/// since. If it holds exactly the pages of ours (`ours`, the local file just built; only the
/// header's time differs), and its checksums hold, the manifest names it now. Reads the whole
/// file once; this happens only after such a kill.
fn adopt_identical(
    store: &dyn crate::store::Store,
    expect: crate::manifest::Expect,
    key: &FileKey,
    ours: &std::path::Path,
) -> Result<Option<crate::manifest::Written>, Error> {
    let reader = store
        .read(key, None)
        .map_err(|e| format!("cannot read {key}: {e}"))?;
    let mut hashing = crate::manifest::HashingReader::new(std::io::BufReader::new(reader));
    let created_at_ms = {
        let local = std::fs::File::open(ours)
            .map_err(|e| format!("cannot reopen {}: {e}", ours.display()))?;
        let mut mine =
            ltx::Decoder::new(std::io::BufReader::new(local)).map_err(|e| e.to_string())?;
        let Ok(mut theirs) = ltx::Decoder::new(&mut hashing) else {
            return Ok(None);
        };
        if !same_pages(&mut mine, &mut theirs) {
            return Ok(None);
        }
        let ts = theirs.header().timestamp_ms;
        if theirs.finish().is_err() {
            return Ok(None); // damaged: left for verify and compaction to report
        }
        ts
    };
    let (sha256, size) = hashing
        .finish()
        .map_err(|e| format!("cannot read {key}: {e}"))?;
    let info = crate::store::FileInfo {
        key: *key,
        size,
        created_at_ms,
    };
    let entry = crate::manifest::Entry::new(store.layout(), &info, sha256);
    match crate::manifest::update_as(store, expect, &[entry], &[]) {
        Ok((m, version)) => Ok(Some(crate::manifest::Written::of(&m, version))),
        Err(crate::store::StoreError::NotOwner { found, .. }) => Err(Error::NotOwner(found)),
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// Whether two LTX files describe the same database: same page size, size and TXID range,
/// and page for page the same contents.
fn same_pages<A: std::io::Read, B: std::io::Read>(
    a: &mut ltx::Decoder<A>,
    b: &mut ltx::Decoder<B>,
) -> bool {
    let (ha, hb) = (a.header(), b.header());
    if (ha.page_size, ha.commit, ha.min_txid, ha.max_txid)
        != (hb.page_size, hb.commit, hb.min_txid, hb.max_txid)
    {
        return false;
    }
    let (mut pa, mut pb) = (Vec::new(), Vec::new());
    loop {
        match (a.next_page(&mut pa), b.next_page(&mut pb)) {
            (Ok(None), Ok(None)) => return true,
            (Ok(Some(x)), Ok(Some(y))) if x == y && pa == pb => continue,
            _ => return false,
        }
    }
}
