//! The replica: one narrow `Store` trait over where LTX files and `manifest.json` live.
//!
//! Owns: the trait, the value types that cross it (`FileKey`, `FileInfo`, `WriteMeta`, `ETag`),
//! `StoreError`, replica URL parsing (`url`), the one key builder (`layout`), `open(url)`, and
//! bounded concurrent downloads consumed in order (`fetch`, for restore, verify, compaction).
//! Implementations: `fs` (a local directory) and `s3` (a bucket): listing hides pagination,
//! reads take a byte range, writes carry object metadata, and the manifest has a conditional
//! write.
//!
//! Must never: put credentials in a message, a key or `describe()`; follow a key that does not
//! parse as an LTX name under the replica's prefix (such keys are skipped with a warning); leave
//! a partial file visible under a final key.

pub mod fetch;
pub mod fs;
pub mod layout;
pub mod s3;
pub mod url;

use std::fmt;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

pub use layout::{Layout, MANIFEST_KEY};
pub use url::{ReplicaUrl, S3Url};

use crate::Txid;

/// Level of full snapshots. Level 0 holds incrementals; 1–8 hold compactions.
pub const SNAPSHOT_LEVEL: u32 = 9;
/// The highest level a replica has.
pub const MAX_LEVEL: u32 = SNAPSHOT_LEVEL;

/// Which LTX file: its level and TXID range. Always `min_txid <= max_txid`, `level <= 9`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FileKey {
    pub level: u32,
    pub min_txid: Txid,
    pub max_txid: Txid,
}

impl FileKey {
    pub fn new(level: u32, min_txid: Txid, max_txid: Txid) -> Option<FileKey> {
        (level <= MAX_LEVEL && min_txid <= max_txid).then_some(FileKey {
            level,
            min_txid,
            max_txid,
        })
    }
}

impl fmt::Display for FileKey {
    /// `level 9 0000000000000001-0000000000000020`: how messages name a file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "level {} {}-{}",
            self.level, self.min_txid, self.max_txid
        )
    }
}

/// One LTX file as the store lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    pub key: FileKey,
    pub size: u64,
    /// When the newest transaction in the file was committed (the LTX header's timestamp), in
    /// ms since the epoch, as far as the listing knows it (see `Times`).
    pub created_at_ms: i64,
}

/// How exact `FileInfo::created_at_ms` must be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Times {
    /// Whatever the listing gives cheaply (S3: LastModified, the upload time).
    Listed,
    /// The LTX header timestamp the file was written with (S3: one HEAD per file for the
    /// `litestream-timestamp` metadata). Restore by time asks for this.
    Exact,
}

/// What a write records beside the bytes (S3 object metadata; file mtime on `fs`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteMeta {
    /// The LTX header's timestamp, ms since the epoch (`litestream-timestamp`).
    pub timestamp_ms: i64,
    /// `manifest::sha256_64` of the file's bytes, 16 hex digits (`walrust-sha256`).
    pub sha256: String,
}

/// An opaque version of `manifest.json` (an S3 ETag; a content hash on `fs`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ETag(pub String);

/// `manifest.json` as read, with the version a conditional write must match.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestObject {
    pub body: Vec<u8>,
    pub etag: ETag,
}

/// A streaming reader over (part of) an LTX file.
pub type FileReader = Box<dyn Read + Send>;

/// Where a replica's files live. Implementations are cheap to share (`Arc<dyn Store>`) and
/// safe to call from several threads at once.
pub trait Store: Send + Sync {
    /// The replica URL, canonical and without credentials: what messages and status print.
    fn describe(&self) -> String;

    /// How this store names its keys (for `manifest.json` entries).
    fn layout(&self) -> Layout;

    /// The LTX files of one level, or of every level with `None`, sorted by key (level, then
    /// min TXID, then max TXID). A missing replica lists as empty. Pagination is the
    /// implementation's business.
    fn list(&self, level: Option<u32>, times: Times) -> Result<Vec<FileInfo>, StoreError>;

    /// Streams a file's bytes, or the `range` of them. `NotFound` if it does not exist.
    fn read(&self, key: &FileKey, range: Option<Range<u64>>) -> Result<FileReader, StoreError>;

    /// Stores the local file `src` under `key`, atomically: readers see the old state or the
    /// whole new file, never part of it. Overwrites an existing file of the same key. A store
    /// may move `src` itself into place rather than copy it: it may be gone afterwards.
    fn write(&self, key: &FileKey, src: &Path, meta: &WriteMeta) -> Result<FileInfo, StoreError>;

    /// Like `write`, but only if no file of that key exists: `Conflict` otherwise. So that one
    /// writer never replaces another's file (SPEC 6, one history per replica). Where the store
    /// cannot make this atomic (S3 multipart uploads), it checks first.
    fn create(&self, key: &FileKey, src: &Path, meta: &WriteMeta) -> Result<FileInfo, StoreError>;

    /// Deletes files; ones already gone are not an error. Callers remove files from
    /// `manifest.json` before deleting them, so that restore never sees an entry without a file
    /// for longer than the two steps take.
    fn delete(&self, keys: &[FileKey]) -> Result<(), StoreError>;

    /// The current version of `manifest.json` without its body (`None`: there is none): cheap
    /// enough to ask before every upload batch.
    fn manifest_version(&self) -> Result<Option<ETag>, StoreError>;

    /// Reads `manifest.json`, `None` if there is none.
    fn get_manifest(&self) -> Result<Option<ManifestObject>, StoreError>;

    /// Writes `manifest.json` if its current version is `expected` (`None`: only if it does
    /// not exist), and returns the new version. `StoreError::Conflict` if another writer got
    /// there first: read it again, merge, retry (`manifest::update` does).
    fn put_manifest(&self, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError>;

    /// Writes one of `manifest.json`'s parts: an immutable object at `rel` (a key relative to
    /// the replica root, under `manifest/`), atomically. Part names are never reused.
    fn put_part(&self, rel: &str, body: &[u8]) -> Result<(), StoreError>;

    /// Reads a part; `NotFound` if it does not exist.
    fn get_part(&self, rel: &str) -> Result<Vec<u8>, StoreError>;

    /// Deletes parts; ones already gone are not an error.
    fn delete_parts(&self, rels: &[String]) -> Result<(), StoreError>;

    /// Every part in the replica, named or not: (key relative to the replica root, last
    /// modified in ms since the epoch). For the sweep of parts no manifest names.
    fn list_parts(&self) -> Result<Vec<(String, i64)>, StoreError>;
}

/// Why a store operation failed. `Display` is one line: what failed, why, and what to do; no
/// variant ever holds a credential.
#[derive(Debug)]
pub enum StoreError {
    NotFound {
        what: String,
    },
    Auth {
        what: String,
        why: String,
    },
    Unavailable {
        what: String,
        why: String,
    },
    Conflict {
        what: String,
    },
    /// `manifest.json` names another owner than the writer expected (SPEC 6: one history per
    /// replica). `found` is the owner it names, if any.
    NotOwner {
        what: String,
        found: Option<crate::history::Owner>,
    },
    Io {
        what: String,
        source: io::Error,
    },
    /// Bad input or a bad object: `why` says what to do about it.
    Invalid {
        what: String,
        why: String,
    },
}

impl StoreError {
    /// Wraps an I/O error, turning "not found" into `NotFound`.
    pub fn io(what: impl Into<String>, source: io::Error) -> StoreError {
        let what = what.into();
        if source.kind() == io::ErrorKind::NotFound {
            StoreError::NotFound { what }
        } else {
            StoreError::Io { what, source }
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // A `what` that says itself what is missing and what to do (after `; `: a missing
            // bucket) gets no generic advice, which is about files that vanish.
            StoreError::NotFound { what } if what.contains("; ") => f.write_str(what),
            StoreError::NotFound { what } => write!(
                f,
                "{what}: not found; check the replica URL, or retry if a compaction was running"
            ),
            // A `why` that already names the variable to check is the whole advice.
            StoreError::Auth { what, why } if why.contains("AWS_") => {
                write!(f, "{what}: access denied: {why}")
            }
            StoreError::Auth { what, why } => write!(
                f,
                "{what}: access denied ({why}); check AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) and the bucket's policy"
            ),
            StoreError::Unavailable { what, why } => write!(
                f,
                "{what}: the store is unreachable ({why}); check the endpoint and the network, \
                 then retry"
            ),
            StoreError::Conflict { what } => write!(
                f,
                "{what}: another writer changed it at the same moment; read it again and retry"
            ),
            StoreError::NotOwner { what, found } => match found {
                Some(o) => write!(
                    f,
                    "{what}: the replica now holds {o}, not this database's history"
                ),
                None => write!(f, "{what}: the replica has no owner recorded"),
            },
            StoreError::Io { what, source } => write!(
                f,
                "{what}: {source}; check the directory's permissions and free space"
            ),
            StoreError::Invalid { what, why } => write!(f, "{what}: {why}"),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            StoreError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Opens the replica a URL names. An S3 store reads its settings and credentials from the
/// environment now, without contacting the server.
pub fn open(url: &str) -> Result<Arc<dyn Store>, StoreError> {
    match ReplicaUrl::parse(url)? {
        ReplicaUrl::Dir(path) => Ok(Arc::new(fs::FsStore::new(path)?)),
        ReplicaUrl::S3(s3) => Ok(Arc::new(s3::S3Store::open(&s3)?)),
    }
}

/// Reports a store anomaly that is skipped rather than failed (a stray key, an unparsable
/// name). Goes to stderr with the `walrust: warning:` prefix until the crate has a logger.
pub(crate) fn warn(msg: fmt::Arguments<'_>) {
    eprintln!("walrust: warning: {msg}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_accepts_directories_and_s3() {
        let s = open("/nonexistent/walrust/replica").unwrap();
        assert_eq!(s.describe(), "file:///nonexistent/walrust/replica");
        assert!(open("relative/dir").is_err());
        // S3 depends on the credentials in the environment, which every test of this process
        // shares: each case runs `open_s3_in_a_child` in a child with an environment of its own.
        for case in ["with credentials", "without credentials"] {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap());
            child
                .args([
                    "--exact",
                    "store::tests::open_s3_in_a_child",
                    "--test-threads=1",
                ])
                .env_clear()
                .env("WALRUST_STORE_TEST_CASE", case)
                .env("HOME", "/nonexistent/walrust-home"); // no ~/.aws/credentials
            if case == "with credentials" {
                child
                    .env("AWS_ACCESS_KEY_ID", "AKIDTEST")
                    .env("AWS_SECRET_ACCESS_KEY", "secret-test");
            }
            let out = child.output().unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{case}: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Opening an S3 store does not contact the server: with credentials it succeeds; without
    /// them it fails with a message that says where they are looked for. Does nothing unless
    /// `open_accepts_directories_and_s3` runs it with `WALRUST_STORE_TEST_CASE`.
    #[test]
    fn open_s3_in_a_child() {
        let Ok(case) = std::env::var("WALRUST_STORE_TEST_CASE") else {
            return;
        };
        let opened = open("s3://bkt/app?region=eu-west-1");
        match case.as_str() {
            "with credentials" => {
                let s = opened.unwrap();
                assert_eq!(s.describe(), "s3://bkt/app?region=eu-west-1");
                assert_eq!(s.layout(), Layout::S3);
            }
            "without credentials" => {
                let e = opened.err().expect("opened without credentials");
                assert!(e.to_string().contains("AWS_ACCESS_KEY_ID"), "{e}");
            }
            other => panic!("unknown case {other}"),
        }
    }

    #[test]
    fn file_keys_are_validated() {
        let (a, b) = (Txid::new(1).unwrap(), Txid::new(2).unwrap());
        assert!(FileKey::new(0, a, b).is_some());
        assert!(FileKey::new(0, b, a).is_none());
        assert!(FileKey::new(10, a, b).is_none());
        assert_eq!(
            FileKey::new(9, a, b).unwrap().to_string(),
            "level 9 0000000000000001-0000000000000002"
        );
    }

    #[test]
    fn errors_read_as_one_line_with_advice() {
        let e = StoreError::io("reading x", io::Error::new(io::ErrorKind::NotFound, "gone"));
        assert!(matches!(e, StoreError::NotFound { .. }));
        assert!(e.to_string().starts_with("reading x: not found; check"));
        let e = StoreError::io("writing y", io::Error::other("disk full"));
        assert_eq!(
            e.to_string(),
            "writing y: disk full; check the directory's permissions and free space"
        );
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn advice_is_given_once_and_only_where_it_applies() {
        let e = StoreError::NotFound {
            what: "listing s3://b/app: the bucket b does not exist at http://h; create the \
                   bucket, or correct its name in the replica URL"
                .into(),
        };
        let msg = e.to_string();
        assert!(
            !msg.contains("compaction") && msg.ends_with("replica URL"),
            "{msg}"
        );
        let e = StoreError::Auth {
            what: "listing s3://b/app".into(),
            why: "the secret key is wrong; check AWS_SECRET_ACCESS_KEY".into(),
        };
        let msg = e.to_string();
        assert_eq!(msg.matches("AWS_SECRET_ACCESS_KEY").count(), 1, "{msg}");
        assert!(
            msg.starts_with("listing s3://b/app: access denied: the secret"),
            "{msg}"
        );
        let e = StoreError::Auth {
            what: "listing s3://b/app".into(),
            why: "HTTP 403 AccessDenied".into(),
        };
        assert!(e.to_string().contains("bucket's policy"));
    }
}
