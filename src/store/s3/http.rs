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
//! server fails a request within `S3Options`' bounds instead of holding the upload thread; a
//! request whose answer is read whole (listing, HEAD, manifest, delete) also has a total
//! timeout (`request_timeout`), so a server that dribbles its answer cannot hold it either.
//! One retry, at once, after a connection is cut mid-request (a pooled connection the server
//! had closed); answers 429, 5xx and `SlowDown` (and further cuts) are retried
//! `S3Options::retries` times with exponential backoff (`retry`); none after a timeout or a
//! refused connection, and none for the completion of a multipart upload, whose repetition is
//! not harmless. Beyond that it is the caller's retry policy (the upload thread backs off).
//!
//! A PUT of a local file (a whole small file, or one part of a multipart upload) streams its
//! body from the file (`FileBody`): its SHA-256 and MD5 are computed first by reading the file
//! region through one small buffer, the request is signed with them, and ureq then reads the
//! region again straight into its own send buffer. Memory holds neither the file nor a part,
//! whatever their size. rust-s3 can only sign a body it holds in memory, so for these requests
//! it builds the headers for an empty body and walrust replaces the three that describe the
//! body (`content-length`, `x-amz-content-sha256`, `content-md5`) and signs them again with
//! rust-s3's SigV4 functions.
//!
//! Must never: put a credential in an error (server messages are scrubbed of them), follow a
//! redirect, read an unbounded error body into memory, or read a request body into memory
//! whole.

use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::Mac as _;
use s3::command::{Command, HttpMethod};
use s3::request::blocking::AttoRequest;
use s3::request::Request as _;
use s3::signing;
use s3::{Bucket, Region};
use sha2::{Digest as _, Sha256};
use ureq::http::header::{AUTHORIZATION, CONTENT_LENGTH, DATE};
use ureq::http::{self, HeaderMap, HeaderName, HeaderValue};
use ureq::tls::{Certificate, RootCerts, TlsConfig};
use ureq::{Agent, Body, SendBody};

use super::config::{load_credentials, secrets_of, Resolved, S3Options};
pub use super::errors::xml_field;
use super::errors::{classify, Failure};
use super::retry;
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

/// The buffer that a `FileBody`'s digests are computed through.
const DIGEST_BUF: usize = 64 << 10;

/// A request body that is `len` bytes of a local file from `offset`, sent by streaming them
/// from the file. The digests that sign the request are computed when it is made, by reading
/// the region once through a small buffer; the region is read again for each send, so a
/// request can be repeated.
pub struct FileBody<'f> {
    file: &'f File,
    offset: u64,
    len: u64,
    /// Hex SHA-256: `x-amz-content-sha256`, and part of the signature.
    sha256: String,
    /// Base64 MD5: `content-md5`, which S3 checks too.
    md5: String,
}

impl<'f> FileBody<'f> {
    /// Reads the region once for its digests. Fails if the file ends before the region does.
    pub fn new(file: &'f File, offset: u64, len: u64) -> io::Result<FileBody<'f>> {
        let mut sha = Sha256::new();
        let mut md5 = md5::Context::new();
        let mut buf = vec![0u8; len.min(DIGEST_BUF as u64) as usize];
        let mut region = FileRegion::new(file, offset, len);
        loop {
            let n = region.read(&mut buf)?;
            if n == 0 {
                break;
            }
            sha.update(&buf[..n]);
            md5.consume(&buf[..n]);
        }
        Ok(FileBody {
            file,
            offset,
            len,
            sha256: hex(&sha.finalize()),
            md5: base64::engine::general_purpose::STANDARD.encode(md5.finalize().0),
        })
    }

    /// The body's length in bytes.
    pub fn size(&self) -> u64 {
        self.len
    }

    fn reader(&self) -> FileRegion<'f> {
        FileRegion::new(self.file, self.offset, self.len)
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Reads `len` bytes of a file from `offset` (positioned reads: the file's cursor is not
/// used, so any number of regions of one file can be read in turn). A file that ends before
/// the region does is an error, not a short body. The first error is also kept in `failed`,
/// so that a failure to read the local file while ureq sends it is reported as that, not as
/// a transport failure.
struct FileRegion<'f> {
    file: &'f File,
    pos: u64,
    end: u64,
    failed: Option<io::Error>,
}

impl<'f> FileRegion<'f> {
    fn new(file: &'f File, offset: u64, len: u64) -> FileRegion<'f> {
        FileRegion {
            file,
            pos: offset,
            end: offset + len,
            failed: None,
        }
    }

    fn read_some(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = (buf.len() as u64).min(self.end - self.pos) as usize;
        if want == 0 {
            return Ok(0);
        }
        loop {
            match self.file.read_at(&mut buf[..want], self.pos) {
                Ok(0) => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the local file ends at byte {}, before byte {}: it changed size \
                             during the upload",
                            self.pos, self.end
                        ),
                    ))
                }
                Ok(n) => {
                    self.pos += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }
}

impl Read for FileRegion<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_some(buf).map_err(|e| {
            let copy = io::Error::new(e.kind(), e.to_string());
            self.failed.get_or_insert(e);
            copy
        })
    }
}

/// The headers of a request whose body is `body`: rust-s3's headers for the same command
/// with an empty body, with the three that describe the body replaced and the request
/// signed again (SigV4, as rust-s3 signs: every header but `date` is signed).
fn sign_for_file(req: &AttoRequest<'_>, body: &FileBody<'_>) -> Result<HeaderMap, String> {
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let url = req.url().map_err(|x| e(&x))?;
    let mut headers = req.headers().map_err(|x| e(&x))?;
    let date = headers.remove(DATE);
    headers.remove(AUTHORIZATION);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len));
    headers.insert(
        HeaderName::from_static("x-amz-content-sha256"),
        HeaderValue::from_str(&body.sha256).map_err(|x| e(&x))?,
    );
    headers.insert(
        HeaderName::from_static("content-md5"),
        HeaderValue::from_str(&body.md5).map_err(|x| e(&x))?,
    );
    let bucket = req.bucket;
    if let Some(secret) = bucket.secret_key().map_err(|x| e(&x))? {
        let access = bucket
            .access_key()
            .map_err(|x| e(&x))?
            .ok_or("a secret key without an access key")?;
        let region = bucket.region();
        let at = &req.datetime;
        let verb = req.command.http_verb().to_string();
        let canonical =
            signing::canonical_request(&verb, &url, &headers, &body.sha256).map_err(|x| e(&x))?;
        let to_sign = signing::string_to_sign(at, &region, &canonical).map_err(|x| e(&x))?;
        let key = signing::signing_key(at, &secret, &region, "s3").map_err(|x| e(&x))?;
        let mut mac = hmac::Hmac::<Sha256>::new_from_slice(&key).map_err(|x| e(&x))?;
        mac.update(to_sign.as_bytes());
        let signature = hex(&mac.finalize().into_bytes());
        let auth = signing::authorization_header(
            &access,
            at,
            &region,
            &signing::signed_header_string(&headers),
            &signature,
        )
        .map_err(|x| e(&x))?;
        headers.insert(
            AUTHORIZATION,
            HeaderValue::from_str(&auth).map_err(|x| e(&x))?,
        );
    }
    if let Some(date) = date {
        headers.insert(DATE, date);
    }
    Ok(headers)
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

/// One GET of `url`, its status when the server answers: the sidecar's heartbeat
/// (`walrust watch`), the one request walrust sends outside a store. The same client as the S3
/// requests' (the system's TLS roots), redirects followed as Go's client follows them, `timeout`
/// for the whole request.
pub fn get_status(url: &str, timeout: Duration) -> Result<u16, String> {
    let tls = TlsConfig::builder().root_certs(root_certs(None)?).build();
    let agent: Agent = Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(10)
        .user_agent(concat!("walrust/", env!("CARGO_PKG_VERSION")))
        .timeout_global(Some(timeout))
        .tls_config(tls)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(answer) => Ok(answer.status().as_u16()),
        Err(ureq::Error::Timeout(_)) => Err(format!("no answer within {} s", timeout.as_secs())),
        Err(e) => Err(e.to_string()),
    }
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
        // As many as the upload pool may use at once on one endpoint (`upload::pool`: 96 of
        // its 128 threads), so concurrent uploads reuse their connections instead of reopening.
        .max_idle_connections(256)
        .max_idle_connections_per_host(96)
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
        self.send_with(what, bucket, path, command, None)
    }

    /// `send` for a `PutObject` (whole, or a part) whose body streams from `body`; the
    /// command's own `content` must be empty. A failure to read the local file is `Io`.
    pub fn send_file(
        &self,
        what: &dyn Fn() -> String,
        bucket: &Bucket,
        path: &str,
        command: Command<'_>,
        body: &FileBody<'_>,
    ) -> Result<Resp, StoreError> {
        debug_assert!(
            matches!(command, Command::PutObject { content, .. } if content.is_empty()),
            "send_file takes a PutObject without content"
        );
        self.send_with(what, bucket, path, command, Some(body))
    }

    fn send_with(
        &self,
        what: &dyn Fn() -> String,
        bucket: &Bucket,
        path: &str,
        command: Command<'_>,
        file: Option<&FileBody<'_>>,
    ) -> Result<Resp, StoreError> {
        let retry_safe = !matches!(command, Command::CompleteMultipartUpload { .. });
        let mut attempt = 0;
        loop {
            attempt += 1;
            let more = retry_safe && attempt <= self.opts.retries;
            match self.send_once(bucket, path, command.clone(), file) {
                // Most likely a pooled connection the server had closed: again at once.
                Err(Failure::Cut(_)) if retry_safe && attempt == 1 => {}
                Err(Failure::Cut(_)) if more => self.back_off(attempt, None),
                Err(f) => return Err(self.failure(what, f)),
                Ok(r) if more && retry::is_transient(r.status) => {
                    let after = retry::retry_after(r.header("retry-after"));
                    drop(r); // the connection is not reused: its body was not read
                    self.back_off(attempt, after);
                }
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

    /// Waits before attempt `attempt + 1`.
    fn back_off(&self, attempt: u32, retry_after: Option<Duration>) {
        std::thread::sleep(retry::delay(self.opts.retry_base, attempt, retry_after));
    }

    fn send_once(
        &self,
        bucket: &Bucket,
        path: &str,
        command: Command<'_>,
        file: Option<&FileBody<'_>>,
    ) -> Result<Resp, Failure> {
        let sign_err = |e: s3::error::S3Error| Failure::Sign(format!("{e}"));
        let req = AttoRequest::new(bucket, path, command).map_err(sign_err)?;
        let url = req.url().map_err(sign_err)?;
        let headers = match file {
            None => req.headers().map_err(sign_err)?,
            Some(f) => sign_for_file(&req, f).map_err(Failure::Sign)?,
        };
        let method = match req.command.http_verb() {
            HttpMethod::Get => http::Method::GET,
            HttpMethod::Head => http::Method::HEAD,
            HttpMethod::Put => http::Method::PUT,
            HttpMethod::Post => http::Method::POST,
            HttpMethod::Delete => http::Method::DELETE,
        };
        let mut builder = http::Request::builder().method(method).uri(url.as_str());
        if let Some(h) = builder.headers_mut() {
            h.extend(headers);
        }
        let built = |e: http::Error| Failure::Sign(format!("{e}"));
        let result = match file {
            Some(f) => {
                // The body streams from the file into ureq's send buffer.
                let mut region = f.reader();
                let request = builder
                    .body(SendBody::from_reader(&mut region))
                    .map_err(built)?;
                let result = self.agent.run(request);
                if let Some(e) = region.failed.take() {
                    return Err(Failure::Local(e));
                }
                result
            }
            None => {
                let owned;
                let body: &[u8] = match &req.command {
                    Command::PutObject { content, .. } => content,
                    Command::CompleteMultipartUpload { .. } | Command::DeleteObjects { .. } => {
                        owned = req.request_body().map_err(sign_err)?;
                        &owned
                    }
                    _ => &[],
                };
                let request = builder.body(body).map_err(built)?;
                if matches!(
                    req.command,
                    Command::GetObject | Command::GetObjectRange { .. }
                ) {
                    self.agent.run(request) // streamed by the caller: per-read timeouts
                } else {
                    let whole = self.opts.request_timeout;
                    let request = self
                        .agent
                        .configure_request(request)
                        .timeout_global(Some(whole))
                        .build();
                    self.agent.run(request)
                }
            }
        };
        match result {
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

    /// A file in the temp dir holding `bytes`, removed on drop.
    struct Scratch(std::path::PathBuf, File);

    impl Scratch {
        fn new(name: &str, bytes: &[u8]) -> Scratch {
            let p = std::env::temp_dir()
                .join(format!("walrust-http-{name}-{}.bin", std::process::id()));
            std::fs::write(&p, bytes).unwrap();
            let f = File::open(&p).unwrap();
            Scratch(p, f)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn test_bucket(token: Option<&str>) -> Bucket {
        let creds = s3::creds::Credentials::new(
            Some("AKIDEXAMPLE"),
            Some("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            token,
            None,
            None,
        )
        .unwrap();
        let region = Region::Custom {
            region: "eu-west-1".into(),
            endpoint: "http://127.0.0.1:9000".into(),
        };
        Bucket::new("bkt", region, creds)
            .unwrap()
            .with_path_style()
            .with_extra_headers({
                let mut h = HeaderMap::new();
                h.insert(
                    "x-amz-meta-walrust-sha256",
                    "0123456789abcdef".parse().unwrap(),
                );
                h
            })
            .unwrap()
    }

    fn sorted(h: &HeaderMap) -> Vec<(String, String)> {
        let mut v: Vec<_> = h
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        v.sort();
        v
    }

    /// A body streamed from a file region is signed exactly as rust-s3 signs the same bytes
    /// held in memory (which S3 accepts): same length, digests and signature, for a whole PUT
    /// with metadata and a multipart part, with and without a session token.
    #[test]
    fn a_streamed_body_is_signed_as_the_same_bytes_in_memory() {
        let bytes: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let file = Scratch::new("sign", &bytes);
        let upload_id = "upload-1";
        for token in [None, Some("session-token")] {
            let bucket = test_bucket(token);
            for (range, part) in [
                (0..bytes.len(), None),
                (70_000..200_001, Some(3)),
                (5..5, None),
            ] {
                let content = &bytes[range.clone()];
                let command = |content| Command::PutObject {
                    content,
                    content_type: "application/octet-stream",
                    custom_headers: Some({
                        let mut h = HeaderMap::new();
                        h.insert(
                            "x-amz-meta-litestream-timestamp",
                            "2026-01-01T00:00:00Z".parse().unwrap(),
                        );
                        h
                    }),
                    multipart: part.map(|n| s3::command::Multipart::new(n, upload_id)),
                };
                let in_memory =
                    AttoRequest::new(&bucket, "/app/0000/x.ltx", command(content)).unwrap();
                let mut streamed =
                    AttoRequest::new(&bucket, "/app/0000/x.ltx", command(&[])).unwrap();
                streamed.datetime = in_memory.datetime;
                let body =
                    FileBody::new(&file.1, range.start as u64, content.len() as u64).unwrap();
                let expected = in_memory.headers().unwrap();
                let got = sign_for_file(&streamed, &body).unwrap();
                assert_eq!(
                    sorted(&got),
                    sorted(&expected),
                    "range {range:?} part {part:?}"
                );
                assert_eq!(streamed.url().unwrap(), in_memory.url().unwrap());
                // And the reader yields exactly those bytes.
                let mut sent = Vec::new();
                body.reader().read_to_end(&mut sent).unwrap();
                assert_eq!(sent, content);
            }
        }
    }

    #[test]
    fn a_file_shorter_than_its_region_is_an_error_not_a_short_body() {
        let file = Scratch::new("short", &[7u8; 1000]);
        let e = FileBody::new(&file.1, 900, 200).err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(
            e.to_string().contains("changed size during the upload"),
            "{e}"
        );

        // A file that shrinks after its digests were taken: the send reads an error, kept
        // for the caller.
        let body = FileBody::new(&file.1, 0, 1000).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file.0)
            .unwrap()
            .set_len(500)
            .unwrap();
        let mut r = body.reader();
        assert!(io::copy(&mut r, &mut io::sink()).is_err());
        assert!(r.failed.is_some());
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
