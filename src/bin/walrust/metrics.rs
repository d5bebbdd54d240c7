//! `addr:` in the config file (or `--addr`): the watched databases' replication as Prometheus
//! metrics at `http://ADDR/metrics`, under the names Litestream 0.5 serves at the same address
//! (so dashboards and alerts written for it keep working), plus walrust's own for the replica.
//!
//! What must hold: serving never holds up replication (its own thread, one request at a time,
//! a short timeout on each client); a scrape reads only what the watch already keeps (file
//! sizes, counters, the replication status), never the replica.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use walrust::watch::Watched;

/// How long a client may take to send its request or read the answer.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest request read.
const MAX_REQUEST: usize = 8192;

/// Binds `addr` (Go's `:PORT` is every interface, as Litestream reads it) and serves from a
/// thread of its own for the life of the process; the error is the line to say.
pub fn serve(addr: &str, watched: Arc<Mutex<Vec<Arc<Watched>>>>) -> Result<(), String> {
    let bind = match addr.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => addr.to_string(),
    };
    let cannot = |e: std::io::Error| {
        format!(
            "walrust: cannot serve metrics on {addr}: {e}; replicating without them (choose \
             another address, addr:)"
        )
    };
    let listener = TcpListener::bind(&bind).map_err(cannot)?;
    let at = listener.local_addr().map_or(bind, |a| a.to_string());
    walrust::log::info(&format!("serving metrics at http://{at}/metrics"));
    std::thread::Builder::new()
        .name("walrust-metrics".into())
        .spawn(move || {
            for client in listener.incoming().flatten() {
                let _ = answer(client, &watched);
            }
        })
        .map_err(cannot)?;
    Ok(())
}

fn answer(mut client: TcpStream, watched: &Mutex<Vec<Arc<Watched>>>) -> std::io::Result<()> {
    client.set_read_timeout(Some(CLIENT_TIMEOUT))?;
    client.set_write_timeout(Some(CLIENT_TIMEOUT))?;
    let request = read_head(&mut client)?;
    let target = request.split_whitespace().take(2).collect::<Vec<_>>();
    let (status, body) = match target.as_slice() {
        ["GET", path] if path.split('?').next() == Some("/metrics") => {
            let now = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
            ("200 OK", render(&now))
        }
        ["GET", _] => (
            "404 Not Found",
            "not found: metrics are at /metrics\n".into(),
        ),
        _ => ("405 Method Not Allowed", "only GET /metrics\n".into()),
    };
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The request line and headers (up to the blank line, or `MAX_REQUEST` bytes).
fn read_head(client: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST {
        let n = client.read(&mut buf)?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// One metric family: name, type, help, and a value per database.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Watched) -> f64,
}

const FAMILIES: &[Family] = &[
    Family {
        name: "litestream_db_size",
        kind: "gauge",
        help: "The current size of the database file, in bytes.",
        value: |w| file_size(&w.path),
    },
    Family {
        name: "litestream_wal_size",
        kind: "gauge",
        help: "The current size of the WAL file, in bytes.",
        value: |w| file_size(&w.wal_path()),
    },
    Family {
        name: "litestream_txid",
        kind: "gauge",
        help: "The newest TXID copied from the WAL into the shadow log.",
        value: |w| w.repl.status().local_txid as f64,
    },
    Family {
        name: "litestream_sync_count",
        kind: "counter",
        help: "Looks at the WAL that copied what it held into the shadow log.",
        value: |w| w.polls.load(Ordering::Relaxed) as f64,
    },
    Family {
        name: "litestream_sync_error_count",
        kind: "counter",
        help: "Looks at the WAL that failed (to copy, or to checkpoint).",
        value: |w| w.poll_errors.load(Ordering::Relaxed) as f64,
    },
    Family {
        name: "walrust_replica_txid",
        kind: "gauge",
        help: "The newest TXID the replica holds.",
        value: |w| w.repl.status().uploaded_txid as f64,
    },
    Family {
        name: "walrust_replica_lag_seconds",
        kind: "gauge",
        help: "How long the oldest transaction not yet in the replica has waited (0: none).",
        value: |w| lag_seconds(&w.repl.status()),
    },
    Family {
        name: "walrust_replica_pending_bytes",
        kind: "gauge",
        help: "Bytes of the shadow log not yet in the replica.",
        value: |w| w.repl.status().pending_bytes as f64,
    },
    Family {
        name: "walrust_replica_error",
        kind: "gauge",
        help: "1 while the last attempt to replicate failed (walrust status says why).",
        value: |w| f64::from(u8::from(w.repl.status().last_error.is_some())),
    },
    Family {
        name: "walrust_replica_last_upload_timestamp_seconds",
        kind: "gauge",
        help: "When the replica last took an upload, in seconds since the epoch (0: not yet).",
        value: |w| {
            w.repl
                .status()
                .last_upload_at_ms
                .map_or(0.0, |ms| ms as f64 / 1000.0)
        },
    },
];

/// The text exposition format: every family, one line per database labelled `db`.
fn render(watched: &[Arc<Watched>]) -> String {
    let mut out = String::new();
    for f in FAMILIES {
        let _ = writeln!(
            out,
            "# HELP {} {}\n# TYPE {} {}",
            f.name, f.help, f.name, f.kind
        );
        for w in watched {
            let db = label(&w.path.to_string_lossy());
            let _ = writeln!(out, "{}{{db=\"{db}\"}} {}", f.name, (f.value)(w));
        }
    }
    out
}

/// A label value as the format escapes it.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn file_size(p: &std::path::Path) -> f64 {
    std::fs::metadata(p).map_or(0.0, |m| m.len() as f64)
}

fn lag_seconds(s: &walrust::replication::Status) -> f64 {
    s.oldest_pending_ms.map_or(0.0, |t| {
        (walrust::clock::now_ms() - t).max(0) as f64 / 1000.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("/a \"b\"\\c\nd"), "/a \\\"b\\\"\\\\c\\nd");
    }

    #[test]
    fn every_family_has_its_help_and_type() {
        let text = render(&[]);
        for f in FAMILIES {
            assert!(
                text.contains(&format!("# TYPE {} {}\n", f.name, f.kind)),
                "{text}"
            );
        }
        assert_eq!(text.lines().count(), 2 * FAMILIES.len());
    }
}
