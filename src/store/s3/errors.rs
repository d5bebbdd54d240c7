//! What a failed request means to the user: transport failures and S3 error answers become
//! `StoreError`s whose one line says the cause and what to do (which variable to check, that a
//! bucket must be created, which region to set). A server's own message is kept only after
//! every credential is scrubbed out of it, and only its first 300 characters.

use std::io;
use std::time::Duration;

use super::config::S3Options;
use super::http::{Client, Resp, ERROR_BODY_MAX};
use crate::store::StoreError;

impl Client {
    pub(super) fn failure(&self, what: &dyn Fn() -> String, f: Failure) -> StoreError {
        match f {
            Failure::Sign(why) => StoreError::Invalid {
                what: what(),
                why: format!("cannot build the request ({})", self.scrub(&why)),
            },
            Failure::Cut(why) | Failure::Down(why) => StoreError::Unavailable {
                what: what(),
                why: format!("{}: {}", self.endpoint(), self.scrub(&why)),
            },
            Failure::Local(source) => StoreError::Io {
                what: what(),
                source,
            },
        }
    }

    /// The error for an answer whose body could not be read whole (a timeout, a cut, or a
    /// body past its size limit).
    pub fn body_error(&self, what: &dyn Fn() -> String, e: io::Error) -> StoreError {
        let why = match e.get_ref().and_then(|x| x.downcast_ref::<ureq::Error>()) {
            Some(ureq::Error::BodyExceedsLimit(limit)) => format!(
                "the answer is larger than the {limit} bytes walrust reads; check that the \
                 endpoint is an S3 API"
            ),
            Some(u) => match classify(clone_ureq(u), self.options()) {
                Failure::Cut(w) | Failure::Down(w) | Failure::Sign(w) => w,
                Failure::Local(io) => io.to_string(),
            },
            None => e.to_string(),
        };
        StoreError::Unavailable {
            what: what(),
            why: format!(
                "reading the answer of {}: {}",
                self.endpoint(),
                self.scrub(&why)
            ),
        }
    }

    /// The error for a response that is not what the caller expected.
    pub fn http_error(&self, what: &dyn Fn() -> String, resp: Resp) -> StoreError {
        let e = self.read_error(resp);
        self.map_error(what, &e)
    }

    /// Reads the status, code and message of an error response (its body bounded).
    pub fn read_error(&self, resp: Resp) -> HttpError {
        let status = resp.status;
        let region_hint = resp.header("x-amz-bucket-region").map(str::to_string);
        let text = if matches!(status, 204 | 304) {
            String::new()
        } else {
            resp.body
                .into_with_config()
                .limit(ERROR_BODY_MAX)
                .lossy_utf8(true)
                .read_to_string()
                .unwrap_or_default()
        };
        let code = xml_field(&text, "Code").unwrap_or_default();
        let message = self.scrub(&xml_field(&text, "Message").unwrap_or_default());
        HttpError {
            status,
            code,
            message: message.chars().take(300).collect(),
            region_hint,
        }
    }

    pub fn map_error(&self, what: &dyn Fn() -> String, e: &HttpError) -> StoreError {
        let HttpError {
            status,
            code,
            message,
            region_hint,
        } = e;
        let status = *status;
        let said = if code.is_empty() {
            format!("HTTP {status}")
        } else if message.is_empty() {
            format!("HTTP {status} {code}")
        } else {
            format!("HTTP {status} {code}: {message}")
        };
        let region_fix = |r: &str| {
            format!(
                "the bucket is in region {r}, not {}; add region={r} to the replica URL or set \
                 AWS_REGION={r}",
                self.cfg.region
            )
        };
        match (status, code.as_str()) {
            (404, "NoSuchBucket") => StoreError::NotFound {
                what: format!(
                    "{}: the bucket {} does not exist at {}; create the bucket, or correct its \
                     name in the replica URL",
                    what(),
                    self.cfg.bucket,
                    self.endpoint()
                ),
            },
            (404, _) => StoreError::NotFound { what: what() },
            (412, _) | (409, "ConditionalRequestConflict") => StoreError::Conflict { what: what() },
            (401 | 403, _) => StoreError::Auth {
                what: what(),
                why: match code.as_str() {
                    "SignatureDoesNotMatch" => "the server computed another signature: the \
                        secret key is wrong; check AWS_SECRET_ACCESS_KEY"
                        .into(),
                    "InvalidAccessKeyId" => "the server does not know this access key; check \
                        AWS_ACCESS_KEY_ID"
                        .into(),
                    "ExpiredToken" | "TokenRefreshRequired" => "the session token has \
                        expired; renew AWS_SESSION_TOKEN"
                        .into(),
                    "InvalidToken" => "the session token is not valid; check \
                        AWS_SESSION_TOKEN"
                        .into(),
                    "RequestTimeTooSkewed" => "this machine's clock is more than 15 minutes \
                        off the server's; fix the clock (NTP)"
                        .into(),
                    "" => format!("HTTP {status}"),
                    _ => said.clone(),
                },
            },
            (301 | 307 | 400, _) if region_hint.is_some() => StoreError::Invalid {
                what: what(),
                why: region_fix(region_hint.as_deref().unwrap_or_default()),
            },
            (301, _) => StoreError::Invalid {
                what: what(),
                why: format!(
                    "{said}: the bucket is in another region; set region= in the replica URL \
                     or AWS_REGION"
                ),
            },
            (408 | 429 | 500..=599, _) => StoreError::Unavailable {
                what: what(),
                why: format!("{} answered {said}", self.endpoint()),
            },
            _ => StoreError::Invalid {
                what: what(),
                why: format!("{} answered {said}", self.endpoint()),
            },
        }
    }
}

/// An error answer: the status, S3's error code and message (scrubbed of credentials), and
/// the bucket's region when the server says it.
#[derive(Debug)]
pub struct HttpError {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub region_hint: Option<String>,
}

/// A transport failure, before it becomes a `StoreError`.
pub(super) enum Failure {
    /// The request could not be built or signed.
    Sign(String),
    /// The connection was cut mid-request: worth one more try.
    Cut(String),
    /// Refused, unresolvable, timed out, TLS: not retried here.
    Down(String),
    /// The local file that the body streams from could not be read: not the server's fault,
    /// and not retried.
    Local(io::Error),
}

pub(super) fn classify(e: ureq::Error, opts: &S3Options) -> Failure {
    use ureq::Timeout as T;
    let secs = |d: Duration| d.as_secs_f64();
    match e {
        ureq::Error::Timeout(t) => {
            let (limit, phase) = match t {
                T::Resolve | T::Connect => (opts.connect_timeout, "connecting"),
                T::RecvResponse => (opts.response_timeout, "waiting for the response"),
                T::Global => {
                    return Failure::Down(format!(
                        "the request took longer than {} s in all; the server may be hung or \
                         overloaded",
                        secs(opts.request_timeout)
                    ))
                }
                T::PerRead => (opts.io_timeout, "receiving"),
                T::PerWrite | T::SendBody | T::SendRequest => (opts.io_timeout, "sending"),
                _ => (opts.io_timeout, "waiting"),
            };
            Failure::Down(format!(
                "no progress for {} s while {phase}; the server may be hung or overloaded",
                secs(limit)
            ))
        }
        ureq::Error::HostNotFound => {
            Failure::Down("the host name does not resolve; check the endpoint".into())
        }
        ureq::Error::ConnectionFailed => Failure::Down("cannot connect".into()),
        ureq::Error::Io(io) => match io.kind() {
            io::ErrorKind::ConnectionRefused => {
                Failure::Down("connection refused; is the server running?".into())
            }
            io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                Failure::Down(format!("timed out ({io})"))
            }
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof
            | io::ErrorKind::NotConnected => Failure::Cut(format!("connection lost ({io})")),
            _ if io.to_string().contains("lookup address") => {
                Failure::Down("the host name does not resolve; check the endpoint".into())
            }
            _ => Failure::Down(tls_hint(io.to_string())),
        },
        ureq::Error::Tls(why) => Failure::Down(tls_hint(format!("TLS: {why}"))),
        other => Failure::Down(tls_hint(other.to_string())),
    }
}

/// The variants `body_error` tells apart, rebuilt (`ureq::Error` is not `Clone`).
fn clone_ureq(e: &ureq::Error) -> ureq::Error {
    match e {
        ureq::Error::Timeout(t) => ureq::Error::Timeout(*t),
        ureq::Error::Io(io) => ureq::Error::Io(io::Error::new(io.kind(), io.to_string())),
        other => ureq::Error::Io(io::Error::other(other.to_string())),
    }
}

/// Adds what to do to a certificate failure (rustls reports them through several variants).
fn tls_hint(s: String) -> String {
    let l = s.to_ascii_lowercase();
    if l.contains("certificate") || l.contains("tls") || l.contains("handshake") {
        format!(
            "TLS failed ({s}); if the endpoint's certificate comes from a private CA, set \
             AWS_CA_BUNDLE to the CA's PEM file"
        )
    } else {
        s
    }
}

/// The text of the first `<name>` element (S3 error documents are flat and small).
pub fn xml_field(text: &str, name: &str) -> Option<String> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)? + open.len();
    let end = start + text[start..].find(&close)?;
    Some(unescape(&text[start..end]))
}

fn unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_documents_yield_their_fields() {
        let doc = "<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>The \
                   bucket &amp; stuff</Message></Error>";
        assert_eq!(xml_field(doc, "Code").as_deref(), Some("NoSuchBucket"));
        assert_eq!(
            xml_field(doc, "Message").as_deref(),
            Some("The bucket & stuff")
        );
        assert_eq!(xml_field(doc, "Key"), None);
    }
}
