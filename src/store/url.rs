//! Replica URLs: `file:///abs/dir`, `/abs/dir`, and
//! `s3://bucket/prefix?endpoint=URL&region=R&force_path_style=true`.
//!
//! Parsing is strict: a relative path, an unknown scheme or query parameter, or credentials
//! written into the URL are errors that say what to write instead. Error messages quote only the
//! offending piece, never the whole URL, so a secret pasted into one is not echoed to a log.
//! `Display` gives the canonical URL, which never holds credentials (they are refused here).

use std::fmt;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;

use super::StoreError;

/// A parsed replica URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReplicaUrl {
    /// A local directory (absolute, without a trailing slash unless it is `/`).
    Dir(PathBuf),
    S3(S3Url),
}

/// The parts of an `s3://` replica URL. Credentials are not among them: they come from the
/// standard AWS environment when the S3 store connects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Url {
    pub bucket: String,
    /// Key prefix without leading or trailing `/`; empty for the bucket root.
    pub prefix: String,
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub force_path_style: bool,
}

fn invalid(why: impl Into<String>) -> StoreError {
    StoreError::Invalid {
        what: "replica URL".into(),
        why: why.into(),
    }
}

const CREDENTIALS: &str = "credentials are not accepted inside a replica URL; remove the \
    `user:secret@` part and set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)";

impl ReplicaUrl {
    pub fn parse(s: &str) -> Result<ReplicaUrl, StoreError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(invalid(
                "it is empty; use s3://BUCKET/PREFIX or file:///absolute/dir",
            ));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            return parse_s3(rest).map(ReplicaUrl::S3);
        }
        if let Some(rest) = s.strip_prefix("file:") {
            return parse_file(rest);
        }
        if let Some((scheme, _)) = s.split_once("://") {
            if !scheme.is_empty() && scheme.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(invalid(format!(
                    "the scheme `{scheme}` is not supported; use s3://BUCKET/PREFIX or \
                     file:///absolute/dir"
                )));
            }
        }
        if !s.starts_with('/') {
            return Err(invalid(format!(
                "`{s}` is a relative path; give an absolute directory (/abs/dir or \
                 file:///abs/dir)"
            )));
        }
        Ok(ReplicaUrl::Dir(clean_dir(PathBuf::from(s))))
    }
}

fn clean_dir(p: PathBuf) -> PathBuf {
    let bytes = p.as_os_str().as_bytes();
    let trimmed = bytes.len() - bytes.iter().rev().take_while(|&&b| b == b'/').count();
    if trimmed == 0 {
        return PathBuf::from("/");
    }
    PathBuf::from(std::ffi::OsString::from_vec(bytes[..trimmed].to_vec()))
}

fn parse_file(rest: &str) -> Result<ReplicaUrl, StoreError> {
    if rest.contains(['?', '#']) {
        return Err(invalid(
            "a file:// URL takes no query or fragment; percent-encode `?` and `#` in the path",
        ));
    }
    let path = if let Some(after) = rest.strip_prefix("//") {
        let (host, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        if !host.is_empty() && host != "localhost" {
            return Err(invalid(
                "a file:// URL names a directory on this machine: write file:///absolute/dir \
                 (three slashes)",
            ));
        }
        path
    } else {
        rest
    };
    if !path.starts_with('/') {
        return Err(invalid(
            "a file: URL needs an absolute path, as in file:///absolute/dir",
        ));
    }
    let bytes = percent_decode(path).ok_or_else(|| invalid("bad %-escape in the path"))?;
    Ok(ReplicaUrl::Dir(clean_dir(PathBuf::from(
        std::ffi::OsString::from_vec(bytes),
    ))))
}

fn parse_s3(rest: &str) -> Result<S3Url, StoreError> {
    let (before_query, query) = match rest.split_once('?') {
        Some((a, q)) => (a, Some(q)),
        None => (rest, None),
    };
    if before_query.contains('#') || query.is_some_and(|q| q.contains('#')) {
        return Err(invalid("an s3:// URL takes no #fragment"));
    }
    let (bucket, path) =
        before_query.split_at(before_query.find('/').unwrap_or(before_query.len()));
    if bucket.contains('@') {
        return Err(invalid(CREDENTIALS));
    }
    if bucket.is_empty() {
        return Err(invalid("no bucket; write s3://BUCKET/PREFIX"));
    }
    let bucket_ok = (3..=63).contains(&bucket.len())
        && bucket
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_'))
        && bucket.as_bytes()[0].is_ascii_alphanumeric();
    if !bucket_ok {
        return Err(invalid(format!(
            "`{bucket}` is not a valid bucket name (3-63 lower-case letters, digits, `.` or `-`)"
        )));
    }
    let decoded = percent_decode(path).ok_or_else(|| invalid("bad %-escape in the prefix"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| invalid("the prefix is not valid UTF-8"))?;
    let prefix = decoded.trim_matches('/').to_string();
    if !prefix.is_empty()
        && prefix
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(invalid(
            "the prefix has an empty, `.` or `..` segment; write it as a/b/c",
        ));
    }

    let mut url = S3Url {
        bucket: bucket.to_string(),
        prefix,
        endpoint: None,
        region: None,
        force_path_style: false,
    };
    let mut seen = Vec::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_decode(v)
            .and_then(|v| String::from_utf8(v).ok())
            .ok_or_else(|| invalid(format!("bad %-escape in the value of `{k}`")))?;
        if seen.contains(&k) {
            return Err(invalid(format!("`{k}` is given twice")));
        }
        seen.push(k);
        match k {
            "endpoint" => url.endpoint = Some(parse_endpoint(&v)?),
            "region" => {
                if v.is_empty()
                    || !v
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return Err(invalid("`region` must look like us-east-1"));
                }
                url.region = Some(v);
            }
            "force_path_style" => {
                url.force_path_style = match v.as_str() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    _ => return Err(invalid("`force_path_style` must be true or false")),
                }
            }
            _ => {
                return Err(invalid(format!(
                    "unknown parameter `{}`; s3:// URLs take endpoint, region and \
                     force_path_style",
                    k.chars().take(40).collect::<String>()
                )))
            }
        }
    }
    Ok(url)
}

fn parse_endpoint(v: &str) -> Result<String, StoreError> {
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| invalid("`endpoint` must start with http:// or https://"))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.contains('@') {
        return Err(invalid(CREDENTIALS));
    }
    if host.is_empty() {
        return Err(invalid("`endpoint` has no host"));
    }
    Ok(v.trim_end_matches('/').to_string())
}

fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Percent-encodes everything except unreserved characters and the listed extra bytes.
fn percent_encode(bytes: &[u8], keep: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            write!(f, "{}", b as char)?;
        } else {
            write!(f, "%{b:02X}")?;
        }
    }
    Ok(())
}

impl fmt::Display for ReplicaUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplicaUrl::Dir(p) => {
                f.write_str("file://")?;
                percent_encode(p.as_os_str().as_bytes(), b"/", f)
            }
            ReplicaUrl::S3(u) => write!(f, "{u}"),
        }
    }
}

impl fmt::Display for S3Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            f.write_str("/")?;
            percent_encode(self.prefix.as_bytes(), b"/", f)?;
        }
        let mut sep = '?';
        if let Some(e) = &self.endpoint {
            write!(f, "{sep}endpoint=")?;
            percent_encode(e.as_bytes(), b":/", f)?;
            sep = '&';
        }
        if let Some(r) = &self.region {
            write!(f, "{sep}region={r}")?;
            sep = '&';
        }
        if self.force_path_style {
            write!(f, "{sep}force_path_style=true")?;
        }
        Ok(())
    }
}

/// The replica of the database file `name` under a replica root (`WALRUST_REPLICA_ROOT`,
/// `walrust watch --replica-root`): the root's path with `/name` appended, before an s3://
/// URL's query (`?endpoint=...` stays a query), and escaped so that parsing gives `name` back.
/// A bare `/abs/dir` root is a path taken as written, so the name is appended as it is.
pub fn under_root(root: &str, name: &str) -> String {
    let root = root.trim();
    if !(root.starts_with("s3://") || root.starts_with("file:")) {
        return format!("{}/{name}", root.trim_end_matches('/'));
    }
    let (path, query) = match root.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (root, None),
    };
    let mut out = format!("{}/", path.trim_end_matches('/'));
    for c in name.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Two replica URLs name the same replica: equal once parsed, so that the ways of writing one
/// (`/a b/`, `file:///a%20b`; an s3:// prefix with or without its slashes, its query in any
/// order) are one replica. Different endpoints or regions are different replicas. URLs that do
/// not parse are compared as written, less trailing slashes and `file://`.
pub fn same_replica(a: &str, b: &str) -> bool {
    if let (Ok(x), Ok(y)) = (ReplicaUrl::parse(a), ReplicaUrl::parse(b)) {
        return x == y;
    }
    let norm = |s: &str| {
        let s = s.trim().trim_end_matches('/');
        s.strip_prefix("file://").unwrap_or(s).to_string()
    };
    norm(a) == norm(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_replica_written_several_ways_is_the_same_replica() {
        for (a, b) in [
            ("/r/a b/", "file:///r/a%20b"),
            ("file://localhost/r", "/r"),
            (
                "s3://bkt/p/?region=eu-west-1&endpoint=http://h:9000/",
                "s3://bkt//p?endpoint=http://h:9000&region=eu-west-1",
            ),
        ] {
            assert!(same_replica(a, b), "{a} {b}");
        }
        for (a, b) in [
            ("/r/a", "/r/b"),
            ("s3://bkt/p", "s3://bkt/p?region=eu-west-1"),
            (
                "s3://bkt/p?endpoint=http://h:1",
                "s3://bkt/p?endpoint=http://h:2",
            ),
        ] {
            assert!(!same_replica(a, b), "{a} {b}");
        }
    }

    #[test]
    fn a_name_under_a_root_goes_in_the_path_not_the_query() {
        let s3 = |u: &str| match ReplicaUrl::parse(u).unwrap() {
            ReplicaUrl::S3(s) => s,
            other => panic!("{other:?}"),
        };
        let root = "s3://bkt/tenants/?endpoint=http://127.0.0.1:9000&force_path_style=true";
        let u = s3(&under_root(root, "app.db"));
        assert_eq!(u.prefix, "tenants/app.db");
        assert_eq!(u.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert!(u.force_path_style);
        assert_eq!(s3(&under_root("s3://bkt", "a b.db")).prefix, "a b.db");
        for name in ["odd%20?#.db", "plain.db"] {
            assert_eq!(
                ReplicaUrl::parse(&under_root("file:///r/", name)).unwrap(),
                dir(&format!("/r/{name}"))
            );
            assert_eq!(
                ReplicaUrl::parse(&under_root("/r", name)).unwrap(),
                dir(&format!("/r/{name}"))
            );
        }
    }

    fn dir(s: &str) -> ReplicaUrl {
        ReplicaUrl::Dir(PathBuf::from(s))
    }

    fn err(s: &str) -> String {
        ReplicaUrl::parse(s).unwrap_err().to_string()
    }

    #[test]
    fn parses_local_directories() {
        assert_eq!(
            ReplicaUrl::parse("/var/backups/app").unwrap(),
            dir("/var/backups/app")
        );
        assert_eq!(
            ReplicaUrl::parse("/var/backups/app/").unwrap(),
            dir("/var/backups/app")
        );
        assert_eq!(ReplicaUrl::parse("file:///var/b").unwrap(), dir("/var/b"));
        assert_eq!(
            ReplicaUrl::parse("file://localhost/var/b").unwrap(),
            dir("/var/b")
        );
        assert_eq!(ReplicaUrl::parse("file:/var/b").unwrap(), dir("/var/b"));
        assert_eq!(ReplicaUrl::parse("file:///a%20b").unwrap(), dir("/a b"));
        assert_eq!(ReplicaUrl::parse("/").unwrap(), dir("/"));
        assert_eq!(dir("/a b/c").to_string(), "file:///a%20b/c");
    }

    #[test]
    fn rejects_relative_and_odd_local_urls() {
        assert!(err("backups/app").contains("relative path"));
        assert!(err("./app").contains("relative path"));
        assert!(err("file:backups").contains("absolute path"));
        assert!(err("file://host/dir").contains("three slashes"));
        assert!(err("file:///a?b").contains("no query"));
        assert!(err("gs://bucket/p").contains("`gs` is not supported"));
        assert!(err("").contains("empty"));
    }

    #[test]
    fn parses_s3_urls() {
        let u = ReplicaUrl::parse(
            "s3://my-bucket/tenants/app/?endpoint=http%3A%2F%2Flocalhost%3A9000&region=us-east-1\
             &force_path_style=true",
        )
        .unwrap();
        let ReplicaUrl::S3(s3) = &u else { panic!() };
        assert_eq!(s3.bucket, "my-bucket");
        assert_eq!(s3.prefix, "tenants/app");
        assert_eq!(s3.endpoint.as_deref(), Some("http://localhost:9000"));
        assert_eq!(s3.region.as_deref(), Some("us-east-1"));
        assert!(s3.force_path_style);
        assert_eq!(
            u.to_string(),
            "s3://my-bucket/tenants/app?endpoint=http://localhost:9000&region=us-east-1\
             &force_path_style=true"
        );
        let root = ReplicaUrl::parse("s3://bkt").unwrap();
        assert_eq!(root.to_string(), "s3://bkt");
    }

    #[test]
    fn rejects_bad_s3_urls_without_echoing_secrets() {
        let e = err("s3://AKIA:hunter2@bucket/p");
        assert!(e.contains("credentials are not accepted"), "{e}");
        assert!(!e.contains("hunter2") && !e.contains("AKIA"));
        let e = err("s3://bucket/p?endpoint=https://AKIA:hunter2@host");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(err("s3:///p").contains("no bucket"));
        assert!(err("s3://B/p").contains("not a valid bucket"));
        assert!(err("s3://bkt/a//b").contains("empty"));
        assert!(err("s3://bkt/a/../b").contains("`..`"));
        assert!(err("s3://bkt/p?sse=1").contains("unknown parameter `sse`"));
        assert!(err("s3://bkt/p?region=a&region=b").contains("twice"));
        assert!(err("s3://bkt/p?endpoint=localhost:9000").contains("http://"));
        assert!(err("s3://bkt/p?force_path_style=yes").contains("true or false"));
    }
}
