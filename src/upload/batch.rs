//! Turns shadow-log records into one level-0 LTX file and puts it in the replica.
//!
//! The file covers the records' TXID range; each page appears once, with its newest image, and
//! pages past the final database size are left out. Page images are streamed from the shadow
//! log into the encoder: memory holds only the page index, never the pages.

use crate::ltx::{self, Encoder};
use crate::manifest::{self, Entry, Hasher64};
use crate::shadow::log::{Reader, RecordRef};
use crate::shadow::Kind;
use crate::store::{FileKey, Store, StoreError, WriteMeta};
use crate::types::{PageNo, Txid};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// What one level-0 upload covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub min: Txid,
    pub max: Txid,
    pub bytes: u64,
    /// The file's manifest entry, for the caller to record (level-0 files are recorded in
    /// batches, see `upload::worker`).
    pub entry: Entry,
}

/// A writer that hashes what passes through (for the manifest's sha256).
pub struct HashingWriter<W: Write> {
    pub inner: W,
    pub hasher: Hasher64,
    pub written: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A temporary file in the shadow directory, removed when dropped. It stays locked while it
/// exists, so that `cleanup` never takes it for a dead process's leftover.
pub struct TempFile {
    pub path: PathBuf,
    _held: File,
}

impl TempFile {
    /// Always a new file: one left under this name (by an earlier process with this PID, as
    /// a restarted container's application has) may be linked into a local replica by now
    /// (`store::fs`), and opening it to write would change a stored file.
    pub fn create(dir: &Path, name: &str) -> io::Result<(TempFile, File)> {
        let path = dir.join(format!("{name}.{}.tmp", std::process::id()));
        let _ = fs::remove_file(&path);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)?;
        let _ = f.try_lock(); // best effort: the PID in the name protects it too
        let held = f.try_clone()?;
        Ok((TempFile { path, _held: held }, f))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

/// Why an upload failed.
#[derive(Debug)]
pub enum Error {
    /// A file of that name is in the replica already, and files are never replaced: another
    /// writer's, or ours from a run that died before recording it.
    Exists(FileKey),
    /// The owner check of a manifest write failed: the replica holds this owner now.
    NotOwner(Option<crate::history::Owner>),
    /// The application closed the database before a snapshot could open its connection:
    /// the path may name another file by now. The next open takes the snapshot.
    Closed,
    Other(String),
}

impl From<String> for Error {
    fn from(e: String) -> Error {
        Error::Other(e)
    }
}

impl From<&str> for Error {
    fn from(e: &str) -> Error {
        Error::Other(e.to_string())
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Exists(key) => write!(f, "{key} exists already"),
            Error::Closed => write!(f, "the database was closed before the snapshot began"),
            Error::NotOwner(Some(o)) => write!(f, "the replica now holds {o}"),
            Error::NotOwner(None) => write!(f, "the replica has no owner recorded"),
            Error::Other(e) => f.write_str(e),
        }
    }
}

/// Encodes `records` (already filtered to those not yet uploaded) as one level-0 file and
/// uploads it; its manifest entry is returned, not written. Returns `None` when the records
/// carry no transaction.
pub fn upload_level0(
    records: &[RecordRef],
    reader: &mut Reader,
    tmp_dir: &Path,
    store: &dyn Store,
) -> Result<Option<Uploaded>, Error> {
    let txns: Vec<&RecordRef> = records
        .iter()
        .filter(|r| r.header.kind == Kind::Txn)
        .collect();
    let (Some(first), Some(last)) = (txns.first(), txns.last()) else {
        return Ok(None);
    };
    let min = Txid::new(first.header.txid).ok_or("record with TXID 0")?;
    let max = Txid::new(last.header.txid).ok_or("record with TXID 0")?;
    let page_size = last.header.page_size;
    let commit = last.header.commit;
    let mut pages: BTreeMap<u32, (usize, usize)> = BTreeMap::new();
    for (ri, rec) in txns.iter().enumerate() {
        for (pi, &pgno) in rec.pgnos.iter().enumerate() {
            pages.insert(pgno, (ri, pi));
        }
    }
    let lock_page = crate::types::lock_page(page_size);
    pages.retain(|&pgno, _| pgno <= commit && pgno != lock_page);

    let (tmp, bytes, sha) = with_room(tmp_dir, &mut |dir: &Path| {
        build_level0(&txns, &pages, reader, dir, (page_size, commit, min, max))
    })?;
    let key = FileKey::new(0, min, max).unwrap();
    let entry = put(store, &key, &tmp.path, last.header.timestamp_ms, sha)?;
    crate::failpoint::hit("upload.level0_written");
    Ok(Some(Uploaded {
        min,
        max,
        bytes,
        entry,
    }))
}

/// How the OS words a full disk (`io::ErrorKind::StorageFull`) in the messages that reach here.
const ENOSPC: &str = "(os error 28)";

/// Runs `build` (which writes a temporary LTX file) in `tmp_dir`, the shadow directory's, or,
/// when that disk is full, in the system's temporary directory: so that the upload that frees
/// the log's space still happens when the log outgrew the disk while the replica lagged, and
/// a snapshot of a database larger than the room left beside it can still be built.
pub(super) fn with_room<T>(
    tmp_dir: &Path,
    build: &mut dyn FnMut(&Path) -> Result<T, Error>,
) -> Result<T, Error> {
    match build(tmp_dir) {
        Err(e) if e.to_string().contains(ENOSPC) => build(&std::env::temp_dir()).map_err(|again| {
            Error::from(format!(
                "{e}; and in the system's temporary directory: {again}"
            ))
        }),
        other => other,
    }
}

/// Builds the level-0 file of `txns` (newest image of each page in `pages`) in `dir`; returns
/// it with its size and SHA-256.
fn build_level0(
    txns: &[&RecordRef],
    pages: &BTreeMap<u32, (usize, usize)>,
    reader: &mut Reader,
    tmp_dir: &Path,
    (page_size, commit, min, max): (u32, u32, Txid, Txid),
) -> Result<(TempFile, u64, String), Error> {
    let last = txns.last().expect("a batch has transactions");
    let name = ltx::file_name(min, max);
    let (tmp, file) = TempFile::create(tmp_dir, &name).map_err(|e| {
        format!(
            "cannot create a temporary file in {}: {e}",
            tmp_dir.display()
        )
    })?;
    let writer = HashingWriter {
        inner: BufWriter::new(file),
        hasher: Hasher64::new(),
        written: 0,
    };
    let header = ltx::Header::new(page_size, commit, min, max, last.header.timestamp_ms);
    let local = |e: &dyn std::fmt::Display| local_write_error(&tmp.path, e);
    let mut enc = Encoder::new(writer, header).map_err(|e| local(&e))?;
    let mut buf = vec![0u8; page_size as usize];
    for (&pgno, &(ri, pi)) in pages {
        reader
            .read_page(txns[ri], pi, &mut buf)
            .map_err(|e| format!("cannot read the shadow log: {e}"))?;
        enc.write_page(PageNo::new(pgno).unwrap(), &buf)
            .map_err(|e| local(&e))?;
    }
    let (mut writer, _trailer) = enc
        .finish(crate::types::Checksum(0))
        .map_err(|e| local(&e))?;
    writer.flush().map_err(|e| local(&e))?;
    let HashingWriter {
        hasher,
        written: bytes,
        ..
    } = writer;
    let sha = hasher.finish();
    Ok((tmp, bytes, sha))
}

/// An LTX file is built in the shadow directory before it is uploaded: a failure to write it
/// (a full disk) is local, and the message must say where, not blame the replica.
pub(super) fn local_write_error(path: &Path, e: &dyn std::fmt::Display) -> String {
    format!(
        "cannot write {} (an LTX file built before its upload): {e}; free space there (the commits are safe in the shadow log)",
        path.display()
    )
}

/// Writes a finished LTX file to the store, then records it in the manifest as `expect`'s
/// owner; returns what the uploader keeps of that write.
pub fn put_with_manifest(
    store: &dyn Store,
    expect: manifest::Expect,
    key: &FileKey,
    path: &Path,
    timestamp_ms: i64,
    sha256: String,
) -> Result<manifest::Written, Error> {
    let entry = put(store, key, path, timestamp_ms, sha256)?;
    crate::failpoint::hit("snapshot.file_written");
    match manifest::update_as(store, expect, &[entry], &[]) {
        Ok((m, version)) => {
            crate::failpoint::hit("snapshot.manifest_written");
            Ok(manifest::Written::of(&m, version))
        }
        Err(StoreError::NotOwner { found, .. }) => Err(Error::NotOwner(found)),
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// Creates a finished LTX file in the store (never replacing one); returns its manifest entry.
fn put(
    store: &dyn Store,
    key: &FileKey,
    path: &Path,
    timestamp_ms: i64,
    sha256: String,
) -> Result<Entry, Error> {
    let meta = WriteMeta {
        timestamp_ms,
        sha256: sha256.clone(),
    };
    match store.create(key, path, &meta) {
        Ok(info) => Ok(Entry::new(store.layout(), &info, sha256)),
        Err(StoreError::Conflict { .. }) => match already_there(store, key, &sha256) {
            // An earlier attempt of ours got through before its answer was lost.
            Some(size) => Ok(Entry::new(
                store.layout(),
                &crate::store::FileInfo {
                    key: *key,
                    size,
                    created_at_ms: timestamp_ms,
                },
                sha256,
            )),
            None => Err(Error::Exists(*key)),
        },
        Err(e) => Err(Error::Other(e.to_string())),
    }
}

/// The size of the file at `key` if it holds exactly the bytes whose hash is `sha256`.
fn already_there(store: &dyn Store, key: &FileKey, sha256: &str) -> Option<u64> {
    let reader = store.read(key, None).ok()?;
    let (sha, size) = manifest::HashingReader::new(reader).finish().ok()?;
    (sha == sha256).then_some(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file left under a temp file's name, and linked elsewhere meanwhile (into a local
    /// replica), is never written through: the new temp file is a new file.
    #[test]
    fn a_temp_file_never_writes_into_one_left_under_its_name() {
        let dir = std::env::temp_dir().join(format!("walrust-tempfile-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let left = dir.join(format!("x.ltx.{}.tmp", std::process::id()));
        fs::write(&left, b"stored").unwrap();
        fs::hard_link(&left, dir.join("stored.ltx")).unwrap();
        let (tmp, mut f) = TempFile::create(&dir, "x.ltx").unwrap();
        assert_eq!(tmp.path, left);
        f.write_all(b"new").unwrap();
        assert_eq!(fs::read(dir.join("stored.ltx")).unwrap(), b"stored");
        assert_eq!(fs::read(&tmp.path).unwrap(), b"new");
        drop(tmp);
        fs::remove_dir_all(&dir).unwrap();
    }
}
