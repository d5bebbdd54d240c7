//! The transport under `S3Store`: rust-s3 builds and signs each request (SigV4 headers, the
//! URL, XML bodies), ureq sends it.
//!
//! Why not rust-s3's own sync client (attohttpc): it opens a new connection (and TLS
//! handshake) for every request, cannot take extra root certificates (`AWS_CA_BUNDLE`),
//! enforces timeouts with a watchdog thread per request, only streams a download into a
//! `Write`, follows redirects with the signed headers, and sleeps seconds between its own
//! retries. ureq keeps a pool of keep-alive connections shared by every store in the process
//! (SPEC 6: databases share connections to the store), has connect, per-read, per-write and
//! response timeouts, and gives the body as an owned `Read`.
//!
//! Every request has a connect timeout and per-read/per-write inactivity timeouts, so a hung
//! server fails a request within `S3Options`' bounds instead of holding the upload thread. One
//! retry, at once, after a connection is cut mid-request (a pooled connection the server had
//! closed); none after a timeout or a refused connection, and none for the completion of a
//! multipart upload, whose repetition is not harmless. Everything else is the caller's retry
//! policy (the upload thread backs off).
//!
//! Must never: put a credential in an error (server messages are scrubbed of them), follow a
//! redirect, or read an unbounded error body into memory.

use std::io::{self, Read};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use s3::command::{Command, HttpMethod};
use s3::request::blocking::AttoRequest;
use s3::request::Request as _;
use s3::{Bucket, Region};
use ureq::http::{self, HeaderMap};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body};

use super::config::{load_credentials, secrets_of, Resolved, S3Options};
pub use super::errors::xml_field;
use super::errors::{classify, Failure};
use crate::store::StoreError;

/// How long loaded credentials are used before the environment or profile file is read again.
const CREDENTIALS_TTL: Duration = Duration::from_secs(300);
/// The most of an error response's body that is read.
pub(super) const ERROR_BODY_MAX: u64 = 64 << 10;

struct Creds {
    bucket: Arc<Bucket>,
    loaded: Instant,
    /// A request was refused: read the credentials again before the next one.
    stale: bool,
    secrets: Vec<String>,
}

/// One replica's connection settings and credentials, over the process's shared agent.
pub struct Client {
    agent: Agent,
    pub cfg: Resolved,
    opts: S3Options,
    creds: Mutex<Creds>,
}

/// A response with any status; `ok()` turns the unexpected ones into errors.
pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Body,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

fn make_bucket(cfg: &Resolved, creds: s3::creds::Credentials) -> Result<Arc<Bucket>, String> {
    let region = Region::Custom {
        region: cfg.region.clone(),
        endpoint: cfg.endpoint.clone(),
    };
    let bucket = Bucket::new(&cfg.bucket, region, creds)
        .map_err(|e| format!("cannot set up the S3 client: {e}"))?;
    Ok(Arc::from(if cfg.path_style {
        bucket.with_path_style()
    } else {
        bucket
    }))
}

/// The roots that verify `https` endpoints: the system's, plus `AWS_CA_BUNDLE`'s.
fn root_certs(bundle: Option<&std::path::Path>) -> Result<RootCerts, String> {
    static SYSTEM: OnceLock<Vec<Certificate<'static>>> = OnceLock::new();
    let system = SYSTEM.get_or_init(|| {
        rustls_native_certs::load_native_certs()
            .certs
            .into_iter()
            .map(|c| Certificate::from_der(c.as_ref()).to_owned())
            .collect()
    });
    let mut certs = system.clone();
    if let Some(path) = bundle {
        let pem = std::fs::read(path).map_err(|e| {
            format!(
                "AWS_CA_BUNDLE={} cannot be read ({e}); fix the path or unset it",
                path.display()
            )
        })?;
        let before = certs.len();
        for item in ureq::tls::parse_pem(&pem) {
            if let Ok(ureq::tls::PemItem::Certificate(c)) = item {
                certs.push(c);
            }
        }
        if certs.len() == before {
            return Err(format!(
                "AWS_CA_BUNDLE={} holds no PEM certificate; fix the file or unset it",
                path.display()
            ));
        }
    }
    Ok(if certs.is_empty() {
        // No system store (a minimal container): Mozilla's roots, built in.
        RootCerts::WebPki
    } else {
        RootCerts::new_with_certs(&certs)
    })
}

/// The agent for these options and CA bundle: one per distinct pair in the process, so that
/// every store with the same settings shares its pool of connections.
fn shared_agent(opts: &S3Options, bundle: Option<&std::path::Path>) -> Result<Agent, String> {
    type Key = (Duration, Duration, Duration, Option<std::path::PathBuf>);
    static AGENTS: OnceLock<Mutex<Vec<(Key, Agent)>>> = OnceLock::new();
    let key: Key = (
        opts.connect_timeout,
        opts.io_timeout,
        opts.response_timeout,
        bundle.map(|p| p.to_path_buf()),
    );
    let mut agents = AGENTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some((_, a)) = agents.iter().find(|(k, _)| *k == key) {
        return Ok(a.clone());
    }
    let tls = TlsConfig::builder().root_certs(root_certs(bundle)?).build();
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(concat!("walrust/", env!("CARGO_PKG_VERSION")))
        .timeout_resolve(Some(opts.connect_timeout))
        .timeout_connect(Some(opts.connect_timeout))
        .timeout_per_read(Some(opts.io_timeout))
        .timeout_per_write(Some(opts.io_timeout))
        .timeout_recv_response(Some(opts.response_timeout))
        .max_idle_connections(64)
        .max_idle_connections_per_host(16)
        .tls_config(tls)
        .build()
        .into();
    agents.push((key, agent.clone()));
    Ok(agent)
}

impl Client {
    pub fn new(cfg: Resolved, opts: S3Options, url: &str) -> Result<Client, StoreError> {
        let what = format!("opening {url}");
        let creds = load_credentials(cfg.profile.as_deref()).map_err(|why| StoreError::Auth {
            what: what.clone(),
            why,
        })?;
        let secrets = secrets_of(&creds);
        let bucket = make_bucket(&cfg, creds).map_err(|why| StoreError::Invalid {
            what: what.clone(),
            why,
        })?;
        let agent =
            shared_agent(&opts, cfg.ca_bundle.as_deref()).map_err(|why| StoreError::Invalid {
                what: what.clone(),
                why,
            })?;
        Ok(Client {
            agent,
            cfg,
            opts,
            creds: Mutex::new(Creds {
                bucket,
                loaded: Instant::now(),
                stale: false,
                secrets,
            }),
        })
    }

    pub fn options(&self) -> &S3Options {
        &self.opts
    }

    /// The signing bucket, with credentials reloaded when they are old.
    pub fn bucket(&self) -> Arc<Bucket> {
        let mut c = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        if c.stale || c.loaded.elapsed() > CREDENTIALS_TTL {
            self.reload(&mut c);
        }
        c.bucket.clone()
    }

    fn reload(&self, c: &mut Creds) {
        c.loaded = Instant::now();
        c.stale = false;
        if let Ok(creds) = load_credentials(self.cfg.profile.as_deref()) {
            let secrets = secrets_of(&creds);
            if let Ok(b) = make_bucket(&self.cfg, creds) {
                c.bucket = b;
                c.secrets = secrets;
            }
        }
    }

    /// Replaces every credential in `s` (a server's message, a transport error).
    pub fn scrub(&self, s: &str) -> String {
        let c = self.creds.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = s.to_string();
        for secret in &c.secrets {
            out = out.replace(secret.as_str(), "[redacted]");
        }
        out
    }

    /// The endpoint for messages: `scheme://host[:port]`.
    pub fn endpoint(&self) -> &str {
        &self.cfg.endpoint
    }

    /// Signs and sends one request with `bucket` (the store's, or one carrying extra headers)
    /// and returns the response whatever its status. Transport failures are `Unavailable`.
    pub fn send(
        &self,
        what: &dyn Fn() -> String,
        bucket: &Bucket,
        path: &str,
        command: Command<'_>,
    ) -> Result<Resp, StoreError> {
        let retry_safe = !matches!(command, Command::CompleteMultipartUpload { .. });
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.send_once(bucket, path, command.clone()) {
                // Most likely a pooled connection the server had closed: once more.
                Err(Failure::Cut(_)) if retry_safe && attempt == 1 => {}
                Err(f) => return Err(self.failure(what, f)),
                Ok(r) => {
                    if matches!(r.status, 401 | 403) {
                        // Perhaps the credentials were rotated: read them again next time.
                        self.creds.lock().unwrap_or_else(|e| e.into_inner()).stale = true;
                    }
                    return Ok(r);
                }
            }
        }
    }

    fn send_once(
        &self,
        bucket: &Bucket,
        path: &str,
        command: Command<'_>,
    ) -> Result<Resp, Failure> {
        let sign_err = |e: s3::error::S3Error| Failure::Sign(format!("{e}"));
        let req = AttoRequest::new(bucket, path, command).map_err(sign_err)?;
        let url = req.url().map_err(sign_err)?;
        let headers = req.headers().map_err(sign_err)?;
        let method = match req.command.http_verb() {
            HttpMethod::Get => http::Method::GET,
            HttpMethod::Head => http::Method::HEAD,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Delete => http::Method::DELETE,
        };
        let owned;
        let body: &[u8] = match &req.command {
            Command::PutObject { content, .. } => content,
            Command::CompleteMultipartUpload { .. } | Command::DeleteObjects { .. } => {
                owned = req.request_body().map_err(sign_err)?;
                &owned
            }
            _ => &[],
        };
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        if let Some(h) = builder.headers_mut() {
            h.extend(headers);
        }
        let request = builder
            .body(body)
            .map_err(|e| Failure::Sign(format!("{e}")))?;
        match self.agent.run(request) {
            Ok(resp) => {
                let (parts, body) = resp.into_parts();
                Ok(Resp {
                    status: parts.status.as_u16(),
                    headers: parts.headers,
                    body,
                })
            }
            Err(e) => Err(classify(e, &self.opts)),
        }
    }
}

/// Reads a whole (small, expected) response body.
pub fn read_body(body: Body, limit: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    body.into_with_config()
        .limit(limit)
        .reader()
        .read_to_end(&mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ReplicaUrl, S3Url};

    fn url_of(replica: &str, key: &str) -> String {
        let ReplicaUrl::S3(u): ReplicaUrl = ReplicaUrl::parse(replica).unwrap() else {
            unreachable!()
        };
        let u: S3Url = u;
        let mut cfg = super::super::config::resolve(&u).unwrap();
        if u.endpoint.is_none() {
            // What resolve() gives without AWS_ENDPOINT_URL*, whatever this environment has.
            let region = u.region.clone().unwrap();
            cfg.endpoint = format!("https://s3.{region}.amazonaws.com");
            cfg.path_style = u.force_path_style || u.bucket.contains('.');
        }
        let creds =
            s3::creds::Credentials::new(Some("AKIDEXAMPLE"), Some("x"), None, None, None).unwrap();
        let bucket = make_bucket(&cfg, creds).unwrap();
        let req = AttoRequest::new(&bucket, key, Command::GetObject).unwrap();
        req.url().unwrap().to_string()
    }

    #[test]
    fn aws_is_virtual_hosted_and_endpoints_are_path_style() {
        assert_eq!(
            url_of("s3://bkt/app?region=eu-west-1", "app/manifest.json"),
            "https://bkt.s3.eu-west-1.amazonaws.com/app/manifest.json"
        );
        assert_eq!(
            url_of("s3://my.bkt/app?region=eu-west-1", "app/manifest.json"),
            "https://s3.eu-west-1.amazonaws.com/my.bkt/app/manifest.json"
        );
        assert_eq!(
            url_of(
                "s3://bkt/app?region=us-east-1&endpoint=http://127.0.0.1:9000",
                "app/0009/0000000000000001-0000000000000002.ltx"
            ),
            "http://127.0.0.1:9000/bkt/app/0009/0000000000000001-0000000000000002.ltx"
        );
    }

    #[test]
    fn unreadable_or_empty_ca_bundles_are_refused() {
        let e = root_certs(Some(std::path::Path::new("/nonexistent/ca.pem"))).unwrap_err();
        assert!(
            e.contains("AWS_CA_BUNDLE=/nonexistent/ca.pem cannot be read"),
            "{e}"
        );
        let e = root_certs(Some(std::path::Path::new("/proc/self/stat"))).unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
    }
}
