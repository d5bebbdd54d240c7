//! A fake S3 endpoint on 127.0.0.1 for hostile or broken server behaviour only (anything a
//! real server does is tested against s3s-fs). It speaks just enough HTTP/1.1: it reads a
//! request's head and `content-length` body, records it, and answers as its `Mode` says.
//! Requests are not authenticated; a test reads what arrived (`requests()`) to check what
//! walrust sent (headers, addressing).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers.
#[derive(Clone, Debug)]
pub enum Mode {
    /// Every listing page (other requests are answered as `Ok`) is truncated, holds `keys_per_page` keys, and its continuation
    /// tokens cycle through `cycle` values (a loop); `cycle == 0`: a new token every page
    /// (a runaway listing).
    Tokens { cycle: usize, keys_per_page: usize },
    /// Waits this long before answering anything.
    Slow(Duration),
    /// Sends the head of a 200 answer, then one byte of body per interval, forever.
    Dribble(Duration),
    /// Reads requests and never answers.
    Never,
    /// A 200 answer whose body is this many bytes of spaces, sent as fast as it is read.
    Huge(usize),
    /// Answers `status` with S3 error `code` to the first `times` requests, then as `Ok`.
    FailThenOk {
        times: usize,
        status: u16,
        code: &'static str,
    },
    /// A well-behaved, empty bucket: listings are empty, PUTs succeed, GETs are 404.
    Ok,
}

/// One request as it arrived.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct FakeS3 {
    pub port: u16,
    log: Arc<Mutex<Vec<Request>>>,
}

struct Shared {
    mode: Mode,
    log: Arc<Mutex<Vec<Request>>>,
    served: AtomicUsize,
}

impl FakeS3 {
    /// Listens on a free port of 127.0.0.1; one thread per connection, for the life of the
    /// test process.
    pub fn start(mode: Mode) -> FakeS3 {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            mode,
            log: log.clone(),
            served: AtomicUsize::new(0),
        });
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let shared = shared.clone();
                std::thread::spawn(move || serve(stream, &shared));
            }
        });
        FakeS3 { port, log }
    }

    /// A replica URL in bucket `bkt` at this server.
    pub fn url(&self, prefix: &str) -> String {
        format!(
            "s3://bkt/{prefix}?endpoint=http://127.0.0.1:{}&region=us-east-1",
            self.port
        )
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, shared: &Shared) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut out = stream;
    while let Some(req) = read_request(&mut reader) {
        shared.log.lock().unwrap().push(req.clone());
        let n = shared.served.fetch_add(1, Ordering::SeqCst);
        if !answer(&mut out, &req, n, &shared.mode) {
            return;
        }
    }
}

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let (method, target) = (parts.next()?.to_string(), parts.next()?.to_string());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap_or(0));
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some(Request {
        method,
        target,
        headers,
    })
}

/// Answers one request; false when the connection must close.
fn answer(out: &mut TcpStream, req: &Request, n: usize, mode: &Mode) -> bool {
    match mode {
        Mode::Never => {
            std::thread::sleep(Duration::from_secs(3600));
            false
        }
        Mode::Huge(len) => {
            let head = format!("HTTP/1.1 200 OK\r\ncontent-length: {len}\r\n\r\n");
            let chunk = vec![b' '; 64 << 10];
            let mut left = *len;
            let mut ok = out.write_all(head.as_bytes()).is_ok();
            while ok && left > 0 {
                let n = left.min(chunk.len());
                ok = out.write_all(&chunk[..n]).is_ok();
                left -= n;
            }
            false
        }
        Mode::Slow(d) => {
            std::thread::sleep(*d);
            ok(out, req)
        }
        Mode::Dribble(every) => {
            let _ = out.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100000000\r\n\r\n");
            while out.write_all(b" ").is_ok() {
                std::thread::sleep(*every);
            }
            false
        }
        Mode::FailThenOk {
            times,
            status,
            code,
        } if n < *times => {
            let body = format!("<Error><Code>{code}</Code><Message>try later</Message></Error>");
            send(out, *status, &[], &body)
        }
        Mode::Tokens {
            cycle,
            keys_per_page,
        } if req.target.contains("list-type=2") => {
            let token = if *cycle == 0 { n } else { n % cycle };
            let keys: String = (0..*keys_per_page)
                .map(|k| {
                    format!(
                        "<Contents><Key>app/0000/{:016x}-{:016x}.ltx</Key><Size>1</Size>\
                         <LastModified>2026-01-01T00:00:00.000Z</LastModified></Contents>",
                        n * 1000 + k + 1,
                        n * 1000 + k + 1
                    )
                })
                .collect();
            let body = format!(
                "<ListBucketResult><Name>bkt</Name><Prefix>app/</Prefix>\
                 <KeyCount>{keys_per_page}</KeyCount><MaxKeys>1000</MaxKeys>\
                 <IsTruncated>true</IsTruncated>{keys}\
                 <NextContinuationToken>token-{token}</NextContinuationToken>\
                 </ListBucketResult>"
            );
            send(out, 200, &[], &body)
        }
        _ => ok(out, req),
    }
}

/// What a working, empty bucket answers.
fn ok(out: &mut TcpStream, req: &Request) -> bool {
    match req.method.as_str() {
        "GET" if req.target.contains("list-type=2") => send(
            out,
            200,
            &[],
            "<ListBucketResult><Name>bkt</Name><Prefix>app/</Prefix><KeyCount>0</KeyCount>\
             <MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated></ListBucketResult>",
        ),
        "HEAD" => send(out, 404, &[], ""),
        "GET" => send(
            out,
            404,
            &[],
            "<Error><Code>NoSuchKey</Code><Message>no such key</Message></Error>",
        ),
        _ => send(out, 200, &[("etag", "\"fake-etag\"")], ""),
    }
}

fn send(out: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &str) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} X\r\ncontent-length: {}\r\ncontent-type: application/xml\r\n",
        body.len()
    );
    for (k, v) in headers {
        head += &format!("{k}: {v}\r\n");
    }
    head += "\r\n";
    out.write_all(head.as_bytes()).is_ok() && out.write_all(body.as_bytes()).is_ok()
}
