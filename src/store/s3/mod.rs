//! A replica in an S3 bucket (AWS, or any S3-compatible server), laid out as Litestream's `s3`
//! backend lays it out, so that `litestream restore` reads what walrust writes and back.
//!
//! - Files: `<prefix>/<level:04x>/<min:016x>-<max:016x>.ltx` (`Layout::S3`), each with the
//!   metadata `litestream-timestamp` (the LTX header time, RFC 3339 as Go's `RFC3339Nano`
//!   writes it) and `walrust-sha256`. A PUT (or the completion of a multipart upload) makes a
//!   whole object visible at once, so readers never see part of a file.
//! - Files up to `S3Options::part_size` go up in one PUT; larger ones in parts of that size.
//!   Every request body streams from the local file through ureq's send buffer (its SHA-256
//!   and MD5, which sign it, are computed by reading it once beforehand), so memory holds
//!   neither the file nor a part, whatever their size (`http::FileBody`). A failed
//!   multipart upload is aborted (best effort; a bucket lifecycle rule that aborts incomplete
//!   uploads catches what a crash leaves).
//! - Listing pages through `ListObjectsV2` with continuation tokens. `Times::Listed` uses
//!   LastModified (the upload time); `Times::Exact` HEADs each file for its
//!   `litestream-timestamp`, a few at a time, falling back to LastModified where it is missing,
//!   as Litestream does.
//! - Reads stream the response body; a range is an HTTP `Range` request.
//! - `manifest.json`'s version is its ETag, and `put_manifest` is a conditional PUT
//!   (`If-None-Match: *` to create, `If-Match: <etag>` to replace); `412`/`409` are `Conflict`.
//!   AWS S3 evaluates those atomically; some S3-compatible servers do not (s3s-fs checks, then
//!   writes, so two concurrent writers can both pass). Writers in one process are therefore
//!   also serialized per replica here, which makes the check exact for them whatever the
//!   server; across processes it is as good as the server's.
//!
//! Relevant code: `config` (endpoint, region, credentials, timeouts), `http` (signing with
//! rust-s3, sending with ureq, TLS roots), `errors` (what a failure means to the user),
//! `list` (pages, exact times), `upload` (single and multipart PUTs).
//!
//! Must never: put a credential in a message, `describe()` or `Debug` output; follow a key
//! outside the replica's prefix or one that does not parse as an LTX name (those are skipped);
//! leave a partial object under a final key.

mod config;
mod errors;
mod http;
mod list;
mod minrate;
mod retry;
mod upload;

use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::ops::Range;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use s3::command::Command;
use s3::serde_types::{DeleteObjectsRequest, DeleteObjectsResult, ObjectIdentifier};
use ureq::http::{HeaderMap, HeaderName, HeaderValue};

pub use config::{S3Options, MIN_PART_SIZE};
pub use http::get_status;
pub use minrate::MinRate;

use self::http::{read_body, Client, Resp};
use super::{
    warn, ETag, FileInfo, FileKey, FileReader, Layout, ManifestObject, S3Url, Store, StoreError,
    Times, WriteMeta, MANIFEST_KEY,
};
use crate::clock::format_rfc3339_ms;

/// Litestream's metadata key for the LTX header time.
pub const META_TIMESTAMP: &str = "litestream-timestamp";
/// walrust's metadata key for `manifest::sha256_64` of the file.
pub const META_SHA256: &str = "walrust-sha256";
/// S3's limit of keys per DeleteObjects request.
const DELETE_BATCH: usize = 1000;
/// S3's limit of parts per multipart upload.
const MAX_PARTS: u64 = 10_000;
/// The most of a listing or other XML answer that is read into memory.
const XML_MAX: u64 = 32 << 20;
/// How many times one part is sent before the upload fails.
const PART_ATTEMPTS: u32 = 3;

const OCTET_STREAM: &str = "application/octet-stream";

/// An S3 replica.
pub struct S3Store {
    client: Client,
    url: String,
    /// Serializes this process's conditional writes of this replica's manifest.
    manifest_lock: Arc<Mutex<()>>,
}

impl fmt::Debug for S3Store {
    /// The URL only: the client holds credentials.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Store").field("url", &self.url).finish()
    }
}

/// The lock shared by every store of one replica in this process.
fn manifest_lock_for(key: String) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<String, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    locks.entry(key).or_default().clone()
}

/// `ms` as Go's `time.Time.Format(time.RFC3339Nano)` writes a UTC time: no trailing zeros in
/// the fraction, and no fraction at all when it is zero.
pub fn format_go_rfc3339_nano(ms: i64) -> String {
    let s = format_rfc3339_ms(ms);
    let (head, frac) = s
        .trim_end_matches('Z')
        .split_once('.')
        .expect("format_rfc3339_ms writes milliseconds");
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{head}Z")
    } else {
        format!("{head}.{frac}Z")
    }
}

impl S3Store {
    /// A store for `url` with default options. Reads the environment and credentials now, but
    /// does not contact the server.
    pub fn open(url: &S3Url) -> Result<S3Store, StoreError> {
        S3Store::with_options(url, S3Options::default())
    }

    pub fn with_options(url: &S3Url, opts: S3Options) -> Result<S3Store, StoreError> {
        let shown = url.to_string();
        if opts.part_size < MIN_PART_SIZE {
            return Err(StoreError::Invalid {
                what: format!("opening {shown}"),
                why: format!("the part size must be at least {MIN_PART_SIZE} bytes"),
            });
        }
        let cfg = config::resolve(url)?;
        let lock_key = format!("{}\n{}\n{}", cfg.endpoint, cfg.bucket, cfg.prefix);
        Ok(S3Store {
            client: Client::new(cfg, opts, &shown)?,
            url: shown,
            manifest_lock: manifest_lock_for(lock_key),
        })
    }

    /// The endpoint in use, after the environment was consulted.
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.client.cfg.region
    }

    /// The object key of a path relative to the replica root.
    fn object_key(&self, rel: &str) -> String {
        Layout::join(&self.client.cfg.prefix, rel)
    }

    fn file_object_key(&self, key: &FileKey) -> String {
        self.object_key(&Layout::S3.file_key(key))
    }

    fn what(&self, verb: &str, rel: &str) -> String {
        format!("{verb} {rel} in {}", self.url)
    }

    fn expect_ok(&self, what: &dyn Fn() -> String, resp: Resp) -> Result<Resp, StoreError> {
        if resp.is_success() {
            Ok(resp)
        } else {
            Err(self.client.http_error(what, resp))
        }
    }

    /// A download's body, failing if it trickles (`S3Options::min_read_rate`).
    fn streamed(&self, resp: Resp) -> impl Read + Send + 'static {
        let rate = self.client.options().min_read_rate;
        minrate::MinRateReader::new(resp.body.into_reader(), rate)
    }

    fn read_xml<T: serde::de::DeserializeOwned>(
        &self,
        what: &dyn Fn() -> String,
        resp: Resp,
    ) -> Result<(T, String), StoreError> {
        let bytes = read_body(resp.body, XML_MAX).map_err(|e| self.client.body_error(what, e))?;
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let parsed = quick_xml::de::from_str(&text).map_err(|e| StoreError::Invalid {
            what: what(),
            why: format!(
                "{} answered something that is not S3 XML ({e}); check that the endpoint is \
                 an S3 API",
                self.endpoint()
            ),
        })?;
        Ok((parsed, text))
    }
}

impl S3Store {
    fn put_file(
        &self,
        key: &FileKey,
        src: &Path,
        meta: &WriteMeta,
        create_only: bool,
    ) -> Result<FileInfo, StoreError> {
        let rel = Layout::S3.file_key(key);
        let what = || self.what("writing", &rel);
        let local = |e: io::Error| StoreError::Io {
            what: format!("{} from {}", what(), src.display()),
            source: e,
        };
        let input = File::open(src).map_err(local)?;
        let size = input.metadata().map_err(local)?.len();
        let object = self.object_key(&rel);
        if size <= self.client.options().part_size as u64 {
            self.put_small(&what, &object, input, size, meta, create_only)?;
        } else {
            // Conditional completion is not universal among S3 servers: check first.
            if create_only && self.exists(&object, &what)? {
                return Err(StoreError::Conflict {
                    what: format!("{}: a file of that name exists", what()),
                });
            }
            self.put_multipart(&what, &object, input, size, meta)?;
        }
        Ok(FileInfo {
            key: *key,
            size,
            created_at_ms: meta.timestamp_ms,
        })
    }

    fn exists(&self, object: &str, what: &dyn Fn() -> String) -> Result<bool, StoreError> {
        let bucket = self.client.bucket();
        let resp = self
            .client
            .send(what, &bucket, object, Command::HeadObject)?;
        if resp.status == 404 {
            return Ok(false);
        }
        self.expect_ok(what, resp).map(|_| true)
    }
}

impl Store for S3Store {
    fn describe(&self) -> String {
        self.url.clone()
    }

    fn layout(&self) -> Layout {
        Layout::S3
    }

    fn list(&self, level: Option<u32>, times: Times) -> Result<Vec<FileInfo>, StoreError> {
        let rel_prefix = match level {
            Some(l) => format!("{}/", Layout::S3.level_dir(l)),
            None => String::new(),
        };
        let mut out = Vec::new();
        for (rel, size, at) in self.list_objects(&rel_prefix)? {
            match Layout::S3.parse_file_key(&rel) {
                Some(key) if level.is_none_or(|l| l == key.level) => out.push(FileInfo {
                    key,
                    size,
                    created_at_ms: at,
                }),
                Some(_) => {}
                None if list::in_level_folder(&rel) => warn(format_args!(
                    "skipping {rel} in {}: not an LTX file name",
                    self.url
                )),
                None => {} // manifest.json, or not walrust's
            }
        }
        out.sort_by_key(|f| f.key);
        if times == Times::Exact {
            out = self.exact_times(out)?;
        }
        Ok(out)
    }

    fn read(&self, key: &FileKey, range: Option<Range<u64>>) -> Result<FileReader, StoreError> {
        let rel = Layout::S3.file_key(key);
        let what = || self.what("reading", &rel);
        let cmd = match &range {
            None => Command::GetObject,
            Some(r) if r.start >= r.end => return Ok(Box::new(io::empty())),
            Some(r) => Command::GetObjectRange {
                start: r.start,
                end: Some(r.end - 1),
            },
        };
        let bucket = self.client.bucket();
        let resp = self
            .client
            .send(&what, &bucket, &self.object_key(&rel), cmd)?;
        match (resp.status, &range) {
            (416, Some(_)) => Ok(Box::new(io::empty())), // the range starts past the end
            (200, Some(r)) => {
                // The server ignored the range: skip to it.
                let mut reader = self.streamed(resp);
                io::copy(&mut (&mut reader).take(r.start), &mut io::sink()).map_err(|e| {
                    StoreError::Unavailable {
                        what: what(),
                        why: e.to_string(),
                    }
                })?;
                Ok(Box::new(reader.take(r.end - r.start)))
            }
            (200 | 206, _) => Ok(Box::new(self.streamed(resp))),
            _ => Err(self.client.http_error(&what, resp)),
        }
    }

    fn write(&self, key: &FileKey, src: &Path, meta: &WriteMeta) -> Result<FileInfo, StoreError> {
        self.put_file(key, src, meta, false)
    }

    fn create(&self, key: &FileKey, src: &Path, meta: &WriteMeta) -> Result<FileInfo, StoreError> {
        self.put_file(key, src, meta, true)
    }

    fn delete(&self, keys: &[FileKey]) -> Result<(), StoreError> {
        let bucket = self.client.bucket();
        for batch in keys.chunks(DELETE_BATCH) {
            let what = || {
                self.what(
                    "deleting",
                    &format!("{} files from {}", batch.len(), batch[0]),
                )
            };
            let data = DeleteObjectsRequest {
                objects: batch
                    .iter()
                    .map(|k| ObjectIdentifier::new(self.file_object_key(k)))
                    .collect(),
                quiet: true,
            };
            let resp = self
                .client
                .send(&what, &bucket, "/", Command::DeleteObjects { data })?;
            let resp = self.expect_ok(&what, resp)?;
            let (result, _): (DeleteObjectsResult, _) = self.read_xml(&what, resp)?;
            if let Some(e) = result.errors.iter().find(|e| e.code != "NoSuchKey") {
                let why = self.client.scrub(&format!("{}: {}", e.code, e.message));
                return Err(if e.code == "AccessDenied" {
                    StoreError::Auth { what: what(), why }
                } else {
                    StoreError::Unavailable {
                        what: what(),
                        why: format!("{} did not delete {} ({why})", self.endpoint(), e.key),
                    }
                });
            }
        }
        Ok(())
    }

    fn manifest_version(&self) -> Result<Option<ETag>, StoreError> {
        let what = || self.what("reading the version of", MANIFEST_KEY);
        let bucket = self.client.bucket();
        let resp = self.client.send(
            &what,
            &bucket,
            &self.object_key(MANIFEST_KEY),
            Command::HeadObject,
        )?;
        if resp.status == 404 {
            return Ok(None);
        }
        let resp = self.expect_ok(&what, resp)?;
        Ok(resp.header("etag").map(|e| ETag(e.to_string())))
    }

    fn get_manifest(&self) -> Result<Option<ManifestObject>, StoreError> {
        let what = || self.what("reading", MANIFEST_KEY);
        let bucket = self.client.bucket();
        let resp = self.client.send(
            &what,
            &bucket,
            &self.object_key(MANIFEST_KEY),
            Command::GetObject,
        )?;
        if resp.status == 404 {
            // A missing manifest is normal; a missing bucket is not.
            let e = self.client.read_error(resp);
            return match e.code.as_str() {
                "NoSuchBucket" => Err(self.client.map_error(&what, &e)),
                _ => Ok(None),
            };
        }
        let resp = self.expect_ok(&what, resp)?;
        let etag = resp.header("etag").map(str::to_string);
        let body = read_body(resp.body, XML_MAX).map_err(|e| self.client.body_error(&what, e))?;
        let etag = etag.ok_or_else(|| StoreError::Invalid {
            what: what(),
            why: format!(
                "{} gave no ETag; walrust needs ETags for conditional writes",
                self.endpoint()
            ),
        })?;
        Ok(Some(ManifestObject {
            body,
            etag: ETag(etag),
        }))
    }

    fn put_manifest(&self, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
        let what = || self.what("writing", MANIFEST_KEY);
        let mut headers = HeaderMap::new();
        let (name, value) = match expected {
            None => ("if-none-match", "*"),
            Some(ETag(e)) => ("if-match", e.as_str()),
        };
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).map_err(|_| StoreError::Invalid {
                what: what(),
                why: "the expected ETag is not a valid header value".into(),
            })?,
        );
        let _serial = self.manifest_lock.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = self.client.bucket();
        let cmd = Command::PutObject {
            content: body,
            content_type: "application/json",
            custom_headers: Some(headers),
            multipart: None,
        };
        let resp = self
            .client
            .send(&what, &bucket, &self.object_key(MANIFEST_KEY), cmd)?;
        let resp = self.expect_ok(&what, resp)?;
        match resp.header("etag") {
            Some(e) => Ok(ETag(e.to_string())),
            None => Err(StoreError::Invalid {
                what: what(),
                why: format!(
                    "{} gave no ETag; walrust needs ETags for conditional writes",
                    self.endpoint()
                ),
            }),
        }
    }

    fn put_part(&self, rel: &str, body: &[u8]) -> Result<(), StoreError> {
        let what = || self.what("writing", rel);
        let bucket = self.client.bucket();
        let cmd = Command::PutObject {
            content: body,
            content_type: if rel.ends_with(".json") {
                "application/json"
            } else {
                OCTET_STREAM
            },
            custom_headers: None,
            multipart: None,
        };
        let resp = self
            .client
            .send(&what, &bucket, &self.object_key(rel), cmd)?;
        self.expect_ok(&what, resp).map(|_| ())
    }

    fn get_part(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
        let what = || self.what("reading", rel);
        let bucket = self.client.bucket();
        let resp = self
            .client
            .send(&what, &bucket, &self.object_key(rel), Command::GetObject)?;
        if resp.status == 404 {
            return Err(StoreError::NotFound { what: what() });
        }
        let resp = self.expect_ok(&what, resp)?;
        read_body(resp.body, XML_MAX).map_err(|e| self.client.body_error(&what, e))
    }

    fn list_parts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let found = self.list_objects(crate::manifest::PARTS_DIR)?;
        Ok(found.into_iter().map(|(rel, _, at)| (rel, at)).collect())
    }

    fn delete_parts(&self, rels: &[String]) -> Result<(), StoreError> {
        let bucket = self.client.bucket();
        for rel in rels {
            let what = || self.what("deleting", rel);
            let resp =
                self.client
                    .send(&what, &bucket, &self.object_key(rel), Command::DeleteObject)?;
            if resp.status != 404 {
                self.expect_ok(&what, resp)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::parse_rfc3339;

    #[test]
    fn timestamps_are_written_as_go_writes_rfc3339_nano() {
        let t = 1_795_862_996_123;
        assert_eq!(format_go_rfc3339_nano(t), "2026-11-28T10:49:56.123Z");
        assert_eq!(format_go_rfc3339_nano(t - 3), "2026-11-28T10:49:56.12Z");
        assert_eq!(format_go_rfc3339_nano(t - 23), "2026-11-28T10:49:56.1Z");
        assert_eq!(format_go_rfc3339_nano(t - 123), "2026-11-28T10:49:56Z");
        for ms in [t, t - 3, t - 123, 0] {
            assert_eq!(parse_rfc3339(&format_go_rfc3339_nano(ms)), Some(ms));
        }
    }
}
