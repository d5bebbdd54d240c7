//! Where an S3 replica is and how to talk to it: the replica URL's query, then the standard AWS
//! environment, then defaults. The URL wins over the environment.
//!
//! - endpoint: `?endpoint=`, else `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL`, else AWS
//!   (`https://s3.<region>.amazonaws.com`).
//! - region: `?region=`, else `AWS_REGION`, else `AWS_DEFAULT_REGION`, else `us-east-1`.
//! - addressing: path-style whenever an endpoint is given (S3-compatible servers expect it),
//!   with `?force_path_style=true`, or for a bucket name with dots (a virtual host would not
//!   match AWS's wildcard certificate); virtual-hosted otherwise.
//! - credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`), else
//!   the `AWS_PROFILE` (or `default`) section of `AWS_SHARED_CREDENTIALS_FILE` or
//!   `~/.aws/credentials`. They live in memory only, are reloaded after an authentication
//!   failure and every few minutes (so a rotated profile file is picked up), and never reach a
//!   message: `Resolved` has no credentials in it, and `Debug` of the store prints the URL.
//! - TLS roots: the system store, plus the PEM certificates of `AWS_CA_BUNDLE` when set;
//!   Mozilla's roots (built in) only if the system has none.
//!
//! Must never: accept an endpoint with `user:secret@` in it, or read credentials from the URL.

use std::path::PathBuf;
use std::time::Duration;

use s3::creds::Credentials;

use super::super::{S3Url, StoreError};

/// Tunables of one S3 store. `Default` is what `store::open` uses.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct S3Options {
    /// Establishing a connection (DNS, TCP and TLS).
    pub connect_timeout: Duration,
    /// No progress while sending or receiving for this long fails the request.
    pub io_timeout: Duration,
    /// From the end of the request to the response headers.
    pub response_timeout: Duration,
    /// Files larger than this are uploaded in parts of this size (or larger, so that no file
    /// needs more than 10,000 parts). At least 5 MiB, as S3 requires of every part but the
    /// last. It does not set how much memory an upload takes: bodies stream from the file.
    pub part_size: usize,
    /// `max-keys` of each listing request; `None` lets the server choose (1000 on AWS).
    pub list_page_size: Option<u32>,
    /// How many HEAD requests run at once when a listing needs exact times.
    pub head_concurrency: usize,
    /// The whole of a request whose answer is read into memory (a listing page, a HEAD, the
    /// manifest, a delete, a multipart initiation or completion), body included: a server
    /// that dribbles its answer fails it after this long. Streaming reads and file uploads
    /// are bounded by `io_timeout` per read or write instead (they may be long).
    pub request_timeout: Duration,
    /// How many more times a request is sent after the server answered 429, 5xx or
    /// `SlowDown` (or the connection was cut), waiting `retry_base`, then twice as long each
    /// time (with jitter, at most 10 s, or the server's `Retry-After` up to that).
    pub retries: u32,
    pub retry_base: Duration,
    /// A streamed download (an LTX file) whose average rate falls below this after its grace
    /// period fails: a server that trickles a byte at a time cannot hold a restore forever.
    pub min_read_rate: super::minrate::MinRate,
    /// The most keys one listing collects before it stops with an error: a server that keeps
    /// saying "truncated" cannot make memory grow without bound.
    pub max_list_keys: usize,
}

/// The smallest part S3 accepts (but for the last).
pub const MIN_PART_SIZE: usize = 5 << 20;

impl Default for S3Options {
    fn default() -> S3Options {
        S3Options {
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(60),
            part_size: 8 << 20,
            list_page_size: None,
            head_concurrency: 8,
            request_timeout: Duration::from_secs(120),
            retries: 4,
            retry_base: Duration::from_millis(200),
            max_list_keys: 5_000_000,
            min_read_rate: super::minrate::MinRate {
                bytes_per_sec: 16 << 10,
                grace: Duration::from_secs(60),
            },
        }
    }
}

/// The replica's settings after the environment is consulted. Holds no credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub bucket: String,
    pub prefix: String,
    /// `scheme://host[:port][/path]`, without a trailing slash.
    pub endpoint: String,
    /// Whether the endpoint is AWS's default rather than one the user gave.
    pub endpoint_is_aws: bool,
    pub region: String,
    pub path_style: bool,
    /// `AWS_PROFILE`, if set.
    pub profile: Option<String>,
    /// `AWS_CA_BUNDLE`, if set.
    pub ca_bundle: Option<PathBuf>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn invalid(what: &str, why: String) -> StoreError {
    StoreError::Invalid {
        what: what.to_string(),
        why,
    }
}

/// Checks an endpoint from the environment as strictly as one in the URL.
fn check_endpoint(var: &str, v: &str) -> Result<String, StoreError> {
    let what = format!("the endpoint in {var}");
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"))
        .ok_or_else(|| invalid(&what, "it must start with http:// or https://".into()))?;
    let host = rest.split('/').next().unwrap_or("");
    if host.contains('@') {
        return Err(invalid(
            &what,
            "credentials are not accepted in an endpoint; set AWS_ACCESS_KEY_ID and \
             AWS_SECRET_ACCESS_KEY instead"
                .into(),
        ));
    }
    if host.is_empty() {
        return Err(invalid(&what, "it has no host".into()));
    }
    Ok(v.trim_end_matches('/').to_string())
}

/// Fills in what the URL leaves out from the environment.
pub fn resolve(url: &S3Url) -> Result<Resolved, StoreError> {
    let (endpoint, from_user) = match &url.endpoint {
        Some(e) => (Some(e.clone()), true),
        None => match (env("AWS_ENDPOINT_URL_S3"), env("AWS_ENDPOINT_URL")) {
            (Some(e), _) => (Some(check_endpoint("AWS_ENDPOINT_URL_S3", e.trim())?), true),
            (None, Some(e)) => (Some(check_endpoint("AWS_ENDPOINT_URL", e.trim())?), true),
            (None, None) => (None, false),
        },
    };
    let region = url
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    if !region
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(invalid(
            "the region in AWS_REGION",
            "it must look like us-east-1".into(),
        ));
    }
    let endpoint = match endpoint {
        Some(e) => e,
        None if region.starts_with("cn-") => format!("https://s3.{region}.amazonaws.com.cn"),
        None => format!("https://s3.{region}.amazonaws.com"),
    };
    Ok(Resolved {
        bucket: url.bucket.clone(),
        prefix: url.prefix.clone(),
        path_style: url.force_path_style || from_user || url.bucket.contains('.'),
        endpoint,
        endpoint_is_aws: !from_user,
        region,
        profile: env("AWS_PROFILE"),
        ca_bundle: env("AWS_CA_BUNDLE").map(PathBuf::from),
    })
}

/// Reads the credentials from the environment or the profile file. The error says where they
/// were looked for, never what was found.
pub fn load_credentials(profile: Option<&str>) -> Result<Credentials, String> {
    if let Some(pair) = key_pair(&env) {
        let (id, secret, token) = pair?;
        return Credentials::new(Some(&id), Some(&secret), None, token.as_deref(), None)
            .map_err(|_| "the AWS credentials could not be used".to_string());
    }
    let section = profile.unwrap_or("default");
    Credentials::from_profile(Some(section)).map_err(|_| {
        let file =
            env("AWS_SHARED_CREDENTIALS_FILE").unwrap_or_else(|| "~/.aws/credentials".into());
        format!(
            "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or put a \
             [{section}] section with aws_access_key_id and aws_secret_access_key in {file} \
             (AWS_PROFILE chooses the section)"
        )
    })
}

/// Access key id, secret and session token.
type KeyPair = (String, String, Option<String>);

/// An access key pair from the environment (id, secret, session token): Litestream's
/// `LITESTREAM_ACCESS_KEY_ID` and `LITESTREAM_SECRET_ACCESS_KEY` first, as Litestream reads
/// them (so its deployments' environments work unchanged), then AWS's with
/// `AWS_SESSION_TOKEN`. `None`: neither pair is set; an error: half of one is.
fn key_pair(env: &dyn Fn(&str) -> Option<String>) -> Option<Result<KeyPair, String>> {
    for prefix in ["LITESTREAM", "AWS"] {
        let (id_name, secret_name) = (
            format!("{prefix}_ACCESS_KEY_ID"),
            format!("{prefix}_SECRET_ACCESS_KEY"),
        );
        match (env(&id_name), env(&secret_name)) {
            (Some(id), Some(secret)) => {
                let token = (prefix == "AWS")
                    .then(|| env("AWS_SESSION_TOKEN"))
                    .flatten();
                return Some(Ok((id, secret, token)));
            }
            (Some(_), None) => {
                return Some(Err(format!(
                    "{id_name} is set but {secret_name} is not; set both"
                )))
            }
            (None, Some(_)) => {
                return Some(Err(format!(
                    "{secret_name} is set but {id_name} is not; set both"
                )))
            }
            (None, None) => {}
        }
    }
    None
}

/// The credential strings, for scrubbing them out of anything a server echoes back.
pub fn secrets_of(c: &Credentials) -> Vec<String> {
    [
        &c.access_key,
        &c.secret_key,
        &c.session_token,
        &c.security_token,
    ]
    .into_iter()
    .flatten()
    .filter(|s| s.len() >= 4)
    .cloned()
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> S3Url {
        match crate::store::ReplicaUrl::parse(s).unwrap() {
            crate::store::ReplicaUrl::S3(u) => u,
            _ => unreachable!(),
        }
    }

    #[test]
    fn litestreams_key_pair_is_read_first_then_awss() {
        let pair = |vars: &[(&str, &str)]| {
            let vars: Vec<(String, String)> = vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            key_pair(&|name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
        };
        let aws = [
            ("AWS_ACCESS_KEY_ID", "A"),
            ("AWS_SECRET_ACCESS_KEY", "a"),
            ("AWS_SESSION_TOKEN", "t"),
        ];
        let lit = [
            ("LITESTREAM_ACCESS_KEY_ID", "L"),
            ("LITESTREAM_SECRET_ACCESS_KEY", "l"),
        ];
        let both: Vec<_> = aws.iter().chain(lit.iter()).copied().collect();
        let some = |id: &str, secret: &str, token: Option<&str>| {
            Some(Ok((
                id.to_string(),
                secret.to_string(),
                token.map(String::from),
            )))
        };
        assert_eq!(pair(&aws), some("A", "a", Some("t")));
        assert_eq!(pair(&lit), some("L", "l", None));
        assert_eq!(pair(&both), some("L", "l", None));
        assert_eq!(pair(&[]), None);
        let half = pair(&[("LITESTREAM_ACCESS_KEY_ID", "L")]);
        assert!(
            matches!(&half, Some(Err(e)) if e.contains("LITESTREAM_SECRET_ACCESS_KEY is not")),
            "{half:?}"
        );
    }

    // The environment is process-wide: these assertions only use the URL's own settings,
    // which win over any AWS_* variable the test runner happens to have.
    #[test]
    fn the_url_wins_and_an_endpoint_means_path_style() {
        let r = resolve(&url(
            "s3://bkt/app?endpoint=http://127.0.0.1:9000&region=eu-west-3",
        ))
        .unwrap();
        assert_eq!(r.endpoint, "http://127.0.0.1:9000");
        assert_eq!(r.region, "eu-west-3");
        assert!(r.path_style);
        assert!(!r.endpoint_is_aws);
        assert_eq!((r.bucket.as_str(), r.prefix.as_str()), ("bkt", "app"));
    }

    #[test]
    fn env_endpoints_are_checked_like_url_ones() {
        assert!(check_endpoint("AWS_ENDPOINT_URL", "localhost:9000").is_err());
        let e = check_endpoint("AWS_ENDPOINT_URL", "http://AKIA:hunter2@host")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(
            check_endpoint("AWS_ENDPOINT_URL", "https://minio:9000/").unwrap(),
            "https://minio:9000"
        );
    }

    #[test]
    fn secrets_are_collected_for_scrubbing() {
        let c =
            Credentials::new(Some("AKIAEXAMPLE"), Some("s3cr3t-key"), None, None, None).unwrap();
        assert_eq!(secrets_of(&c), ["AKIAEXAMPLE", "s3cr3t-key"]);
    }
}
