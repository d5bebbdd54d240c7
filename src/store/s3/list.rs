//! Listing: `ListObjectsV2` pages followed through their continuation tokens, and the exact
//! times of `Times::Exact`, read from each file's `litestream-timestamp` metadata by HEAD
//! requests, a few at a time (Litestream runs up to 50). A listing that would never end (a
//! continuation token seen before, endless empty pages, more than `max_list_keys` keys) stops
//! with an error that says so.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use s3::command::Command;
use s3::serde_types::ListBucketResult;

use super::{S3Store, META_TIMESTAMP};
use crate::clock::parse_rfc3339;
use crate::store::{warn, FileInfo, FileKey, Layout, StoreError};

impl S3Store {
    /// Every object under `rel_prefix` (relative to the replica root): (relative key, size,
    /// LastModified in ms).
    pub(super) fn list_objects(
        &self,
        rel_prefix: &str,
    ) -> Result<Vec<(String, u64, i64)>, StoreError> {
        let prefix = &self.client.cfg.prefix;
        let full_prefix = if prefix.is_empty() {
            rel_prefix.to_string()
        } else {
            format!("{prefix}/{rel_prefix}")
        };
        let shown = if rel_prefix.is_empty() {
            "the replica".to_string()
        } else {
            rel_prefix.to_string()
        };
        let what = || self.what("listing", &shown);
        let bucket = self.client.bucket();
        let page_size = self.client.options().list_page_size.map(|n| n as usize);
        let max_keys = self.client.options().max_list_keys;
        let mut out = Vec::new();
        let mut pages = Pages::default();
        let mut token: Option<String> = None;
        loop {
            let cmd = Command::ListObjectsV2 {
                prefix: full_prefix.clone(),
                delimiter: None,
                continuation_token: token.clone(),
                start_after: None,
                max_keys: page_size,
            };
            let resp = self.client.send(&what, &bucket, "/", cmd)?;
            let resp = self.expect_ok(&what, resp)?;
            let (page, _): (ListBucketResult, _) = self.read_xml(&what, resp)?;
            let keys = page.contents.len();
            for obj in page.contents {
                let Some(rel) = Layout::strip_prefix(prefix, &obj.key) else {
                    warn(format_args!(
                        "skipping {} in {}: outside the replica's prefix",
                        obj.key, self.url
                    ));
                    continue;
                };
                let at = parse_rfc3339(&obj.last_modified).unwrap_or(0);
                out.push((rel.to_string(), obj.size, at));
            }
            if !page.is_truncated {
                return Ok(out);
            }
            let next = pages
                .next(page.next_continuation_token, keys, out.len(), max_keys)
                // A storage failure (exit 4 in the CLI), not a bad request.
                .map_err(|why| StoreError::Unavailable {
                    what: what(),
                    why: format!(
                        "{} answered a listing that never ends: it {why}; the listing was \
                         stopped, check that the endpoint is a working S3 API",
                        self.endpoint()
                    ),
                })?;
            token = Some(next);
        }
    }

    /// Replaces LastModified with each file's `litestream-timestamp`, HEADing a few files at a
    /// time. A file gone since the listing is dropped.
    pub(super) fn exact_times(&self, files: Vec<FileInfo>) -> Result<Vec<FileInfo>, StoreError> {
        if files.is_empty() {
            return Ok(files);
        }
        let bucket = self.client.bucket();
        let next = AtomicUsize::new(0);
        type Slot = Option<Result<Option<i64>, StoreError>>;
        let results: Mutex<Vec<Slot>> = Mutex::new((0..files.len()).map(|_| None).collect());
        let threads = self.client.options().head_concurrency.clamp(1, 64);
        std::thread::scope(|s| {
            for _ in 0..threads.min(files.len()) {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= files.len() {
                        return;
                    }
                    let r = self.head_timestamp(&bucket, &files[i].key);
                    let failed = r.is_err();
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(r);
                    if failed {
                        next.store(files.len(), Ordering::Relaxed); // stop the others
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(files.len());
        for (mut f, r) in files.into_iter().zip(results) {
            match r {
                Some(Ok(Some(ms))) => {
                    f.created_at_ms = ms;
                    out.push(f);
                }
                Some(Ok(None)) => out.push(f), // no metadata: LastModified stays
                Some(Err(StoreError::NotFound { .. })) => {} // deleted meanwhile
                Some(Err(e)) => return Err(e),
                None => {} // not reached: another HEAD failed first
            }
        }
        Ok(out)
    }

    /// The `litestream-timestamp` of one file; `None` if it has none that parses.
    fn head_timestamp(
        &self,
        bucket: &s3::Bucket,
        key: &FileKey,
    ) -> Result<Option<i64>, StoreError> {
        let rel = Layout::S3.file_key(key);
        let what = || self.what("reading the metadata of", &rel);
        let resp = self
            .client
            .send(&what, bucket, &self.object_key(&rel), Command::HeadObject)?;
        let resp = self.expect_ok(&what, resp)?;
        Ok(resp
            .header(&format!("x-amz-meta-{META_TIMESTAMP}"))
            .and_then(parse_rfc3339))
    }
}

/// How many truncated pages in a row may hold no key at all: S3 may return a few (deleted keys
/// skipped), a server that never stops does not.
const MAX_EMPTY_PAGES: u32 = 100;

/// What a listing has seen of its pages, to stop one that would never end: a continuation
/// token given twice (a loop), too many empty truncated pages, or more keys than allowed.
/// Tokens are remembered as hashes, so a server's huge tokens take no memory here.
#[derive(Default)]
struct Pages {
    seen: HashSet<u64>,
    empty_in_a_row: u32,
}

impl Pages {
    /// The token for the next page, after a truncated page of `keys` keys (`total` so far).
    fn next(
        &mut self,
        token: Option<String>,
        keys: usize,
        total: usize,
        max_keys: usize,
    ) -> Result<String, String> {
        let page = self.seen.len() + 1;
        let token = token.filter(|t| !t.is_empty()).ok_or_else(|| {
            format!("said page {page} of the listing is truncated but gave no continuation token")
        })?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        token.hash(&mut h);
        if !self.seen.insert(h.finish()) {
            return Err(format!(
                "gave a continuation token it had given before (page {page}): the listing \
                 loops"
            ));
        }
        self.empty_in_a_row = if keys == 0 {
            self.empty_in_a_row + 1
        } else {
            0
        };
        if self.empty_in_a_row >= MAX_EMPTY_PAGES {
            return Err(format!(
                "gave {MAX_EMPTY_PAGES} truncated pages in a row without a key (page {page})"
            ));
        }
        if total >= max_keys {
            return Err(format!(
                "listed {total} keys and says there are more, past the limit of {max_keys} \
                 keys per listing"
            ));
        }
        Ok(token)
    }
}

/// Whether `rel` is inside a level folder (`0000/`..`0009/` or any 4 hex digits): a key there
/// that does not parse deserves a warning; anything else under the prefix is not ours.
pub(super) fn in_level_folder(rel: &str) -> bool {
    rel.split_once('/').is_some_and(|(dir, _)| {
        dir.len() == 4 && dir.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_that_would_never_end_are_stopped() {
        let t = |s: &str| Some(s.to_string());
        let mut p = Pages::default();
        assert_eq!(p.next(t("a"), 5, 5, 100).unwrap(), "a");
        assert_eq!(p.next(t("b"), 5, 10, 100).unwrap(), "b");
        let e = p.next(t("a"), 5, 15, 100).unwrap_err();
        assert!(
            e.contains("continuation token it had given before (page 3)"),
            "{e}"
        );
        assert!(Pages::default().next(None, 1, 1, 100).is_err());
        assert!(Pages::default().next(t(""), 1, 1, 100).is_err());

        let mut p = Pages::default();
        for i in 0..MAX_EMPTY_PAGES - 1 {
            p.next(Some(i.to_string()), 0, 0, 100).unwrap();
        }
        let e = p.next(t("last"), 0, 0, 100).unwrap_err();
        assert!(e.contains("truncated pages in a row without a key"), "{e}");

        let e = Pages::default().next(t("x"), 100, 100, 100).unwrap_err();
        assert!(e.contains("past the limit of 100 keys"), "{e}");
    }

    #[test]
    fn only_level_folders_warrant_a_warning() {
        assert!(in_level_folder("0000/notes.txt"));
        assert!(in_level_folder("0009/x.ltx.tmp"));
        assert!(!in_level_folder("manifest.json"));
        assert!(!in_level_folder("generations/x"));
        assert!(!in_level_folder("sub/0000/x.ltx"));
    }
}
