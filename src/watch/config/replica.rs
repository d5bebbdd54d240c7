//! One database's replica in a Litestream configuration file: its URL, written as `url:` or as
//! Litestream's fields for one (`type: s3` with `bucket`, `path`, `endpoint`, `region`,
//! `force-path-style`; `type: file` with `path`), its `sync-interval` and its access key; and
//! the file's top-level defaults for them (`Defaults`, Litestream 0.5's global settings).
//!
//! What must hold: the URL returned parses as a walrust replica URL (`store::url`), and a field
//! walrust would not honour is an error naming its line, never ignored. An access key pair
//! (`access-key-id`, `secret-access-key`) is read whole or refused.

use super::{scalar, unused, KeyPair, Level, Node, Snapshots};
use crate::config::MAX_SYNC_INTERVAL_MS;
use crate::store::url::ReplicaUrl;

/// A replica of the file: its URL, and the database's upload interval and the replica's access
/// key if the file sets them.
#[derive(Debug)]
pub struct Replica {
    pub url: String,
    pub sync_interval_ms: Option<u64>,
    pub credentials: Option<KeyPair>,
    /// Litestream 0.3's `snapshot-interval` and `retention`, when the replica has them.
    pub snapshots: Snapshots,
}

/// A field's value and line.
type Field = Option<(String, usize)>;

#[derive(Default)]
struct Fields {
    url: Field,
    kind: Field,
    bucket: Field,
    path: Field,
    endpoint: Field,
    region: Field,
    force_path_style: Field,
    access_key_id: Field,
    secret_access_key: Field,
}

const ALLOWED: &str = "url, type, bucket, path, endpoint, region, force-path-style, \
    sync-interval, access-key-id, secret-access-key, snapshot-interval and retention in a replica";

/// What the file's top level sets for every replica (Litestream's global replica settings):
/// `bucket` (for a replica given by `type:`), `endpoint`, `region`, `force-path-style` (for
/// an s3 replica that sets none of its own), `sync-interval`, and the access key pair.
#[derive(Default)]
pub struct Defaults {
    fields: Fields,
    sync_interval_ms: Option<u64>,
}

impl Defaults {
    /// Takes a top-level key if it is one of these; false if it is not.
    pub fn take(
        &mut self,
        key: &str,
        value: Node,
        no: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<bool, String> {
        read_key(
            &mut self.fields,
            &mut self.sync_interval_ms,
            (key, value, no),
            env,
            false,
        )
    }

    pub fn credentials(&self) -> Result<Option<KeyPair>, String> {
        key_pair(&self.fields.access_key_id, &self.fields.secret_access_key)
    }
}

impl Fields {
    /// The field `key` names: one a replica and the file's top level share, or (`in_replica`)
    /// `url`, `type` or `path`.
    fn slot(&mut self, key: &str, in_replica: bool) -> Option<&mut Field> {
        Some(match key {
            "bucket" => &mut self.bucket,
            "endpoint" => &mut self.endpoint,
            "region" => &mut self.region,
            "force-path-style" => &mut self.force_path_style,
            "access-key-id" => &mut self.access_key_id,
            "secret-access-key" => &mut self.secret_access_key,
            "url" if in_replica => &mut self.url,
            "type" if in_replica => &mut self.kind,
            "path" if in_replica => &mut self.path,
            _ => return None,
        })
    }
}

/// Reads one `key: value` (at line `no`) into `f` or `sync_interval_ms`; false if the key is
/// none of theirs.
fn read_key(
    f: &mut Fields,
    sync_interval_ms: &mut Option<u64>,
    (key, value, no): (&str, Node, usize),
    env: &dyn Fn(&str) -> Option<String>,
    in_replica: bool,
) -> Result<bool, String> {
    if key == "sync-interval" {
        *sync_interval_ms = Some(sync_interval(&scalar(value, no, env)?, no)?);
        return Ok(true);
    }
    let Some(slot) = f.slot(key, in_replica) else {
        return Ok(false);
    };
    *slot = Some((scalar(value, no, env)?, no));
    Ok(true)
}

pub fn parse(
    value: Node,
    no: usize,
    env: &dyn Fn(&str) -> Option<String>,
    defaults: &Defaults,
    notices: &mut Vec<String>,
) -> Result<Replica, String> {
    let Node::Map(entries, at) = value else {
        return Err(format!(
            "line {no}: a replica needs `url: ...` indented under it"
        ));
    };
    let mut f = Fields::default();
    let (mut sync_interval_ms, mut snapshots) = (None, Snapshots::default());
    for (key, value, no) in entries {
        if matches!(key.as_str(), "snapshot-interval" | "retention") {
            snapshots.take_replica_key(&key, value, no, env)?;
        } else if !read_key(&mut f, &mut sync_interval_ms, (&key, value, no), env, true)? {
            notices.push(unused(&key, no, Level::Replica, ALLOWED)?);
        }
    }
    let own_key = key_pair(&f.access_key_id, &f.secret_access_key)?;
    Ok(Replica {
        url: url(&f, &defaults.fields, at)?,
        sync_interval_ms: sync_interval_ms.or(defaults.sync_interval_ms),
        credentials: own_key.or(defaults.credentials()?),
        snapshots,
    })
}

/// An access key pair from `access-key-id` and `secret-access-key` (a replica's, or the file's
/// top-level ones): both or neither.
fn key_pair(id: &Field, secret: &Field) -> Result<Option<KeyPair>, String> {
    match (id, secret) {
        (Some((id, _)), Some((secret, _))) => Ok(Some(KeyPair {
            id: id.clone(),
            secret: secret.clone(),
        })),
        (Some((_, no)), None) => Err(format!(
            "line {no}: `access-key-id` without `secret-access-key`; give both"
        )),
        (None, Some((_, no))) => Err(format!(
            "line {no}: `secret-access-key` without `access-key-id`; give both"
        )),
        (None, None) => Ok(None),
    }
}

/// The replica's URL: `url:` as written, or built from the fields and the file's defaults for
/// them (and checked).
fn url(f: &Fields, defaults: &Fields, at: usize) -> Result<String, String> {
    let options = |f: &Fields| {
        [
            ("endpoint", f.endpoint.clone()),
            ("region", f.region.clone()),
            ("force_path_style", f.force_path_style.clone()),
        ]
    };
    let mut url = match (&f.url, &f.kind) {
        (Some((_, no)), Some(_)) => {
            return Err(format!(
                "line {no}: give the replica as `url:` or as `type:` with its fields, not both"
            ))
        }
        (Some((u, _)), None) => {
            if let Some((_, no)) = f.bucket.as_ref().or(f.path.as_ref()) {
                return Err(format!(
                    "line {no}: the bucket and path are part of the `url:`; give one or the other"
                ));
            }
            u.clone()
        }
        (None, Some((kind, no))) => from_fields(kind, *no, f, defaults)?,
        (None, None) => return Err(format!("line {at}: this replica has no `url:` or `type:`")),
    };
    let written = url.clone();
    for (name, v) in options(f) {
        let Some((value, no)) = v else { continue };
        if !url.starts_with("s3://") {
            return Err(format!(
                "line {no}: `{}` is for an s3 replica",
                name.replace('_', "-")
            ));
        }
        add_query(&mut url, name, &value);
    }
    // The file's defaults fill in what neither the replica's fields nor its URL say.
    for ((name, default), (_, own)) in options(defaults).into_iter().zip(options(f)) {
        let Some((value, _)) = default else { continue };
        if own.is_none() && url.starts_with("s3://") && !query_names(&url, name) {
            add_query(&mut url, name, &value);
        }
    }
    if url == written && f.kind.is_none() {
        return Ok(written);
    }
    let line = f.url.as_ref().or(f.kind.as_ref()).map_or(at, |(_, no)| *no);
    ReplicaUrl::parse(&url)
        .map(|u| u.to_string())
        .map_err(|e| format!("line {line}: {e}"))
}

fn add_query(url: &mut String, name: &str, value: &str) {
    url.push(if url.contains('?') { '&' } else { '?' });
    url.push_str(&format!("{name}={}", escape(value, b":/")));
}

/// The URL's query sets `name`.
fn query_names(url: &str, name: &str) -> bool {
    url.split_once('?')
        .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(name)))
}

fn from_fields(kind: &str, no: usize, f: &Fields, defaults: &Fields) -> Result<String, String> {
    match kind {
        "s3" => {
            let (bucket, _) = f
                .bucket
                .as_ref()
                .or(defaults.bucket.as_ref())
                .ok_or(format!("line {no}: an s3 replica needs `bucket:`"))?;
            let path = f.path.as_ref().map_or("", |(p, _)| p.as_str());
            Ok(format!("s3://{bucket}/{}", escape(path, b"/")))
        }
        "file" => {
            if let Some((_, no)) = &f.bucket {
                return Err(format!("line {no}: `bucket` is for an s3 replica"));
            }
            let (path, _) = f
                .path
                .as_ref()
                .ok_or(format!("line {no}: a file replica needs `path:`"))?;
            // Relative to the working directory, as Litestream takes it.
            let abs = std::path::absolute(path)
                .map_err(|e| format!("line {no}: cannot make {path} absolute: {e}"))?;
            let abs = abs.to_string_lossy();
            Ok(format!("file://{}", escape(&abs, b"/")))
        }
        other => Err(format!(
            "line {no}: walrust replicates to `s3` or `file`, not `{other}`"
        )),
    }
}

/// Percent-encodes all but unreserved bytes and `keep`.
pub(super) fn escape(s: &str, keep: &[u8]) -> String {
    let mut out = String::new();
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `sync-interval`, a Go duration (`1s`, `500ms`, `1m30s`, `1.5s`) as Litestream writes it, in ms.
fn sync_interval(text: &str, no: usize) -> Result<u64, String> {
    super::duration::millis(text)
        .filter(|&ms| ms <= MAX_SYNC_INTERVAL_MS)
        .ok_or_else(|| {
            format!(
                "line {no}: sync-interval `{text}` is not a duration such as 1s, 500ms or 1m (at most 24h)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sync_interval_is_a_go_duration_of_at_most_a_day() {
        let ms = |t: &str| sync_interval(t, 7);
        assert_eq!(ms("1s"), Ok(1000));
        assert_eq!(ms("500ms"), Ok(500));
        assert_eq!(ms("1m30s"), Ok(90_000));
        assert_eq!(ms("1.5s"), Ok(1500));
        assert_eq!(ms("0"), Ok(0));
        assert_eq!(ms("0s"), Ok(0));
        for bad in ["1", "s", "1d", "-1s", "25h", "1 s", ""] {
            let e = ms(bad).expect_err(bad);
            assert!(e.starts_with("line 7: sync-interval"), "{e}");
        }
    }

    #[test]
    fn escaping_keeps_what_a_url_path_may_hold() {
        assert_eq!(escape("a b/c?d%", b"/"), "a%20b/c%3Fd%25");
        assert_eq!(escape("http://h:9000", b":/"), "http://h:9000");
    }
}
