//! A replica in a local directory, laid out as Litestream's `file` backend lays it out, so that
//! `litestream restore` reads what walrust writes and the other way round.
//!
//! - Files: `<dir>/ltx/<level>/<min>-<max>.ltx`. A write goes to a uniquely named `*.tmp` in the
//!   same folder, is fsynced, renamed over the final name (or, for `create`, hard-linked to it,
//!   which fails if the name exists), and the folder is fsynced: a reader sees the old state or
//!   the whole file. Temp names end in `.tmp`, which the listing skips, as Litestream's does.
//!   When the source lies on the replica's filesystem (the shadow directory beside a local
//!   replica), the source itself is fsynced and moved into place instead (renamed, or for
//!   `create` hard-linked and unlinked): no copy, and the same guarantees.
//! - Created time: the file's mtime is set to the LTX header timestamp, as Litestream's file
//!   backend does (it reads `ModTime` back as `CreatedAt`), so `litestream restore -timestamp`
//!   and walrust's restore by time agree on this replica.
//! - `manifest.json` at the root; its version (`ETag`) is its inode, size and mtime (every write
//!   renames a new file into place, so one `stat` tells a change), and a conditional
//!   write holds an exclusive lock on `manifest.json.lock` around read, compare, write; it waits
//!   at most 30 s for another process's lock, then fails (the caller retries later), so that a
//!   lock held for good stalls only this replica's writes, never a thread for good.
//! - Folders are created 0700 and files 0600.
//!
//! Must never: follow a symlink or any entry that is not a regular file with an LTX name (they
//! are skipped with a warning).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{
    warn, ETag, FileInfo, FileKey, FileReader, Layout, ManifestObject, ReplicaUrl, Store,
    StoreError, Times, WriteMeta, MANIFEST_KEY, MAX_LEVEL,
};
use crate::clock::{ms_to_system_time, system_time_to_ms};

const LOCK_NAME: &str = "manifest.json.lock";

/// A local-directory replica.
#[derive(Debug)]
pub struct FsStore {
    root: PathBuf,
    url: String,
}

impl FsStore {
    /// A store rooted at the absolute directory `root`, which is created on the first write.
    pub fn new(root: PathBuf) -> Result<FsStore, StoreError> {
        let url = ReplicaUrl::Dir(root.clone()).to_string();
        if !root.is_absolute() {
            return Err(StoreError::Invalid {
                what: format!("replica {url}"),
                why: "the directory must be an absolute path".into(),
            });
        }
        match fs::metadata(&root) {
            Ok(m) if !m.is_dir() => {
                return Err(StoreError::Invalid {
                    what: format!("replica {url}"),
                    why: "it exists and is not a directory; give a directory".into(),
                })
            }
            _ => {}
        }
        Ok(FsStore { root, url })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path_of(&self, key: &FileKey) -> PathBuf {
        self.root.join(Layout::Fs.file_key(key))
    }

    fn what(&self, verb: &str, key: &FileKey) -> String {
        format!("{verb} {} in {}", Layout::Fs.file_key(key), self.url)
    }

    fn list_level(&self, level: u32, out: &mut Vec<FileInfo>) -> Result<(), StoreError> {
        let rel_dir = Layout::Fs.level_dir(level);
        let dir = self.root.join(&rel_dir);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StoreError::io(
                    format!("listing {rel_dir} in {}", self.url),
                    e,
                ))
            }
        };
        for entry in entries {
            let entry = entry
                .map_err(|e| StoreError::io(format!("listing {rel_dir} in {}", self.url), e))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                warn(format_args!(
                    "skipping a non-UTF-8 name in {rel_dir} in {}",
                    self.url
                ));
                continue;
            };
            if name.ends_with(".tmp") {
                continue; // a write in progress, ours or Litestream's
            }
            let rel = format!("{rel_dir}/{name}");
            let Some(key) = Layout::Fs.parse_file_key(&rel) else {
                warn(format_args!(
                    "skipping {rel} in {}: not an LTX file name",
                    self.url
                ));
                continue;
            };
            // `DirEntry::metadata` does not follow symlinks.
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // deleted meanwhile
                Err(e) => return Err(StoreError::io(format!("reading {rel} in {}", self.url), e)),
            };
            if !meta.is_file() {
                warn(format_args!(
                    "skipping {rel} in {}: not a regular file",
                    self.url
                ));
                continue;
            }
            let created_at_ms = meta.modified().map(system_time_to_ms).unwrap_or(0);
            out.push(FileInfo {
                key,
                size: meta.len(),
                created_at_ms,
            });
        }
        Ok(())
    }

    /// Creates `dir` (0700) and its missing parents, fsyncing each parent that gained an entry.
    fn ensure_dir(&self, dir: &Path) -> io::Result<()> {
        if dir.is_dir() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut d = dir;
        while !d.exists() {
            missing.push(d.to_path_buf());
            match d.parent() {
                Some(p) => d = p,
                None => break,
            }
        }
        DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
        for m in missing.iter().rev() {
            if let Some(parent) = m.parent() {
                fsync_dir(parent)?;
            }
        }
        Ok(())
    }
}

static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// A temp name beside `final_path` that no other writer (thread or process) uses.
fn temp_path(final_path: &Path) -> PathBuf {
    let n = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    let mut name = final_path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    final_path.with_file_name(name)
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Writes `fill`'s output to a temp file beside `dest`, fsyncs, puts it into place and fsyncs
/// the folder. In place means renamed over `dest`, or with `exclusive` hard-linked to it, which
/// fails with `AlreadyExists` if `dest` exists. The temp file is removed on every path.
fn write_atomic(
    dest: &Path,
    exclusive: bool,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> io::Result<u64> {
    let tmp = temp_path(dest);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let _ = f.try_lock(); // held until renamed: `cleanup` leaves a locked file alone
        fill(&mut f)?;
        f.sync_all()?;
        let size = f.metadata()?.len();
        if exclusive {
            fs::hard_link(&tmp, dest)?;
            fs::remove_file(&tmp)?;
        } else {
            fs::rename(&tmp, dest)?;
        }
        drop(f);
        Ok(size)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    fsync_dir(dest.parent().unwrap_or(Path::new("/")))?;
    result
}

/// Moves `src` itself into place at `dest` (as `write_atomic` puts a copy there: fsynced,
/// renamed over `dest` or, with `exclusive`, hard-linked to it, then the folder fsynced) when
/// `src` lies on the same filesystem and has no other name; `src` is gone afterwards, so a
/// caller that writes that path again makes a new file, never changes the stored one. `None`
/// when it cannot (another filesystem, links refused): the caller copies. Saves the uploader
/// a copy of every file it stores.
fn move_into_place(
    src: &Path,
    dest: &Path,
    exclusive: bool,
    mtime: std::time::SystemTime,
) -> io::Result<Option<u64>> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let f = File::open(src)?;
    let m = f.metadata()?;
    if !m.is_file() || m.nlink() != 1 || m.dev() != fs::metadata(dir)?.dev() {
        return Ok(None);
    }
    f.set_permissions(fs::Permissions::from_mode(0o600))?;
    f.set_modified(mtime)?;
    f.sync_all()?;
    if exclusive {
        match fs::hard_link(src, dest) {
            Ok(()) => fs::remove_file(src)?,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Err(e),
            Err(_) => return Ok(None),
        }
    } else if fs::rename(src, dest).is_err() {
        return Ok(None);
    }
    fsync_dir(dir)?;
    Ok(Some(m.len()))
}

/// A version of `manifest.json` that changes with every write: each write renames a new file
/// (a new inode) into place. Cheap: one `stat`, whatever the manifest's size.
/// How long a manifest write waits for `manifest.json.lock` (held only around one read, compare
/// and write by a healthy writer). A process that keeps it longer fails this replica's write,
/// which its uploader retries later, instead of holding an upload thread for good.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Takes `f`'s exclusive lock, waiting at most `wait`; `Err(None)` when it stayed taken.
fn lock_within(f: &File, wait: std::time::Duration) -> Result<(), Option<io::Error>> {
    let deadline = std::time::Instant::now() + wait;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(std::time::Duration::from_millis(50));
            }
            Err(fs::TryLockError::WouldBlock) => return Err(None),
            Err(fs::TryLockError::Error(e)) => return Err(Some(e)),
        }
    }
}

fn version_of(m: &fs::Metadata) -> ETag {
    use std::os::unix::fs::MetadataExt;
    ETag(format!(
        "{:x}-{:x}-{:x}.{:x}",
        m.ino(),
        m.len(),
        m.mtime(),
        m.mtime_nsec()
    ))
}

impl FsStore {
    fn put_file(
        &self,
        key: &FileKey,
        src: &Path,
        meta: &WriteMeta,
        exclusive: bool,
    ) -> Result<FileInfo, StoreError> {
        let dest = self.path_of(key);
        let what = || self.what("writing", key);
        let mut input = File::open(src).map_err(|e| StoreError::Io {
            what: format!("{} from {}", what(), src.display()),
            source: e,
        })?;
        self.ensure_dir(dest.parent().expect("file keys have a folder"))
            .map_err(|e| StoreError::Io {
                what: what(),
                source: e,
            })?;
        let mtime = ms_to_system_time(meta.timestamp_ms);
        let moved = move_into_place(src, &dest, exclusive, mtime);
        let size = match moved {
            Ok(Some(size)) => Ok(size),
            Ok(None) => write_atomic(&dest, exclusive, |f| {
                io::copy(&mut input, f)?;
                // After the copy, which would otherwise bump it. Litestream reads this back as the
                // file's creation time.
                f.set_modified(mtime)
            }),
            Err(e) => Err(e),
        }
        .map_err(|e| match e.kind() {
            io::ErrorKind::AlreadyExists => StoreError::Conflict {
                what: format!("{}: a file of that name exists", what()),
            },
            _ => StoreError::Io {
                what: what(),
                source: e,
            },
        })?;
        Ok(FileInfo {
            key: *key,
            size,
            created_at_ms: meta.timestamp_ms,
        })
    }
}

/// The `.json` files under `dir` (a writer's temporary files end otherwise), with their
/// modification times, as keys relative to `root`.
fn list_parts_under(root: &Path, dir: &Path, out: &mut Vec<(String, i64)>) -> io::Result<()> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let meta = match entry.metadata() {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            list_parts_under(root, &path, out)?;
        } else if crate::manifest::parts::is_part_name(&path.to_string_lossy()) {
            let rel = path.strip_prefix(root).expect("under the root");
            let modified = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_millis() as i64);
            out.push((rel.to_string_lossy().into_owned(), modified));
        }
    }
    Ok(())
}

impl Store for FsStore {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn layout(&self) -> Layout {
        Layout::Fs
    }

    fn list(&self, level: Option<u32>, _times: Times) -> Result<Vec<FileInfo>, StoreError> {
        let mut out = Vec::new();
        match level {
            Some(l) => self.list_level(l, &mut out)?,
            None => {
                for l in 0..=MAX_LEVEL {
                    self.list_level(l, &mut out)?;
                }
            }
        }
        out.sort_by_key(|f| f.key);
        Ok(out)
    }

    fn read(&self, key: &FileKey, range: Option<Range<u64>>) -> Result<FileReader, StoreError> {
        let path = self.path_of(key);
        let what = || self.what("reading", key);
        let meta = fs::symlink_metadata(&path).map_err(|e| StoreError::io(what(), e))?;
        if !meta.is_file() {
            return Err(StoreError::Invalid {
                what: what(),
                why: "it is not a regular file (a symlink?); walrust does not follow it".into(),
            });
        }
        let mut f = File::open(&path).map_err(|e| StoreError::io(what(), e))?;
        match range {
            None => Ok(Box::new(f)),
            Some(r) => {
                f.seek(SeekFrom::Start(r.start))
                    .map_err(|e| StoreError::io(what(), e))?;
                Ok(Box::new(f.take(r.end.saturating_sub(r.start))))
            }
        }
    }

    fn write(&self, key: &FileKey, src: &Path, meta: &WriteMeta) -> Result<FileInfo, StoreError> {
        self.put_file(key, src, meta, false)
    }

    fn create(&self, key: &FileKey, src: &Path, meta: &WriteMeta) -> Result<FileInfo, StoreError> {
        self.put_file(key, src, meta, true)
    }

    fn delete(&self, keys: &[FileKey]) -> Result<(), StoreError> {
        let mut touched: Vec<PathBuf> = Vec::new();
        for key in keys {
            let path = self.path_of(key);
            match fs::remove_file(&path) {
                Ok(()) => {
                    let dir = path
                        .parent()
                        .expect("file keys have a folder")
                        .to_path_buf();
                    if !touched.contains(&dir) {
                        touched.push(dir);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        what: self.what("deleting", key),
                        source: e,
                    })
                }
            }
        }
        for dir in touched {
            fsync_dir(&dir).map_err(|e| StoreError::Io {
                what: format!("syncing {} after deleting", dir.display()),
                source: e,
            })?;
        }
        Ok(())
    }

    fn manifest_version(&self) -> Result<Option<ETag>, StoreError> {
        match fs::metadata(self.root.join(MANIFEST_KEY)) {
            Ok(m) => Ok(Some(version_of(&m))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                what: format!("reading {MANIFEST_KEY} in {}", self.url),
                source: e,
            }),
        }
    }

    fn get_manifest(&self) -> Result<Option<ManifestObject>, StoreError> {
        let read = || -> io::Result<(Vec<u8>, ETag)> {
            let mut f = File::open(self.root.join(MANIFEST_KEY))?;
            let etag = version_of(&f.metadata()?);
            let mut body = Vec::new();
            f.read_to_end(&mut body)?;
            Ok((body, etag))
        };
        match read() {
            Ok((body, etag)) => Ok(Some(ManifestObject { body, etag })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io {
                what: format!("reading {MANIFEST_KEY} in {}", self.url),
                source: e,
            }),
        }
    }

    fn put_manifest(&self, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        let what = || format!("writing {MANIFEST_KEY} in {}", self.url);
        let io_err = |e| StoreError::Io {
            what: what(),
            source: e,
        };
        self.ensure_dir(&self.root).map_err(io_err)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.root.join(LOCK_NAME))
            .map_err(io_err)?;
        lock_within(&lock, LOCK_WAIT).map_err(|e| match e {
            Some(e) => io_err(e),
            None => StoreError::Invalid {
                what: what(),
                why: format!(
                    "{LOCK_NAME} has been locked by another process for {} s; retrying later \
                     (if no walrust process writes this replica, find the one holding it with \
                     `fuser {}`)",
                    LOCK_WAIT.as_secs(),
                    self.root.join(LOCK_NAME).display()
                ),
            },
        })?;
        // The lock is released when `lock` is dropped, on every path out of here.
        let current = self.get_manifest()?.map(|m| m.etag);
        if current.as_ref() != expected {
            return Err(StoreError::Conflict { what: what() });
        }
        let path = self.root.join(MANIFEST_KEY);
        write_atomic(&path, false, |f| f.write_all(body)).map_err(io_err)?;
        let meta = fs::metadata(&path).map_err(io_err)?;
        Ok(version_of(&meta))
    }

    fn put_part(&self, rel: &str, body: &[u8]) -> Result<(), StoreError> {
        let path = self.part_path(rel)?;
        let io_err = |e| StoreError::Io {
            what: format!("writing {rel} in {}", self.url),
            source: e,
        };
        self.ensure_dir(path.parent().expect("parts live in a folder"))
            .map_err(io_err)?;
        write_atomic(&path, true, |f| f.write_all(body)).map_err(io_err)?;
        Ok(())
    }

    fn get_part(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        let path = self.part_path(rel)?;
        fs::read(&path).map_err(|e| StoreError::io(format!("reading {rel} in {}", self.url), e))
    }

    fn list_parts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let mut out = Vec::new();
        let top = self.root.join(crate::manifest::PARTS_DIR);
        list_parts_under(&self.root, &top, &mut out).map_err(|e| {
            StoreError::io(format!("listing the manifest's parts in {}", self.url), e)
        })?;
        Ok(out)
    }

    fn delete_parts(&self, rels: &[String]) -> Result<(), StoreError> {
        for rel in rels {
            let path = self.part_path(rel)?;
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(StoreError::Io {
                        what: format!("deleting {rel} in {}", self.url),
                        source: e,
                    })
                }
            }
        }
        Ok(())
    }
}

impl FsStore {
    /// The local path of a manifest part: only plain names under `manifest/`, never a path
    /// that leaves the replica (a manifest is data someone else may have written).
    fn part_path(&self, rel: &str) -> Result<PathBuf, StoreError> {
        let plain = rel.starts_with(crate::manifest::PARTS_DIR)
            && rel
                .split('/')
                .all(|c| !c.is_empty() && c != "." && c != "..");
        if !plain {
            return Err(StoreError::Invalid {
                what: format!("reading manifest.json in {}", self.url),
                why: format!("it names a part {rel:?} outside manifest/; move manifest.json aside"),
            });
        }
        Ok(self.root.join(rel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_are_unique_and_skipped_by_listing() {
        let a = temp_path(Path::new("/r/ltx/0/x.ltx"));
        let b = temp_path(Path::new("/r/ltx/0/x.ltx"));
        assert_ne!(a, b);
        assert!(a.to_str().unwrap().ends_with(".tmp"));
        assert_eq!(a.parent(), Some(Path::new("/r/ltx/0")));
    }

    /// A stored file is the source's bytes with the header's time and mode 0600, whether the
    /// source was moved into place (then gone: writing its path again makes a new file) or
    /// copied (a source with a second name).
    #[test]
    fn a_source_is_moved_or_copied_into_place_alike() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = std::env::temp_dir().join(format!("walrust-fs-move-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let store = FsStore::new(dir.join("replica")).unwrap();
        let meta = WriteMeta {
            timestamp_ms: 1_700_000_000_123,
            sha256: String::new(),
        };
        for (n, second_name) in [(1, false), (2, true)] {
            let src = dir.join(format!("src{n}"));
            let write_src = |text: &str| {
                fs::write(&src, text).unwrap();
                fs::set_permissions(&src, fs::Permissions::from_mode(0o644)).unwrap();
            };
            write_src(&format!("file {n}"));
            if second_name {
                fs::hard_link(&src, dir.join(format!("other{n}"))).unwrap();
            }
            let ino = fs::metadata(&src).unwrap().ino();
            let t = crate::types::Txid::new(n).unwrap();
            let key = FileKey::new(0, t, t).unwrap();
            let info = store.create(&key, &src, &meta).unwrap();
            let dest = store.path_of(&key);
            let d = fs::metadata(&dest).unwrap();
            assert_eq!(
                d.ino() == ino,
                !second_name,
                "moved only without a second name"
            );
            assert_eq!(src.exists(), second_name, "a moved source is gone");
            assert_eq!(fs::read_to_string(&dest).unwrap(), format!("file {n}"));
            assert_eq!(info.size, d.len());
            assert_eq!(d.mode() & 0o777, 0o600);
            assert_eq!(system_time_to_ms(d.modified().unwrap()), meta.timestamp_ms);
            write_src("again");
            assert_eq!(fs::read_to_string(&dest).unwrap(), format!("file {n}"));
            let again = store.create(&key, &src, &meta).unwrap_err();
            assert!(matches!(again, StoreError::Conflict { .. }), "{again}");
            store.write(&key, &src, &meta).unwrap(); // replaces, by name
            assert_eq!(fs::read_to_string(&dest).unwrap(), "again");
            let names = fs::read_dir(dest.parent().unwrap()).unwrap().count();
            assert_eq!(names, n as usize, "no temp file left");
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_a_file_as_root() {
        let e = FsStore::new(PathBuf::from("/proc/self/status")).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
        assert!(FsStore::new(PathBuf::from("rel")).is_err());
    }
}
