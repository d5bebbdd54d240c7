//! `heartbeat-url:` in the config file: `walrust watch` asks that URL (HTTP GET) once per
//! `heartbeat-interval` while every database it watches replicates, as Litestream 0.5.16+ does,
//! so that a health-check service (healthchecks.io, Uptime Kuma, ...) hears when it stops.
//!
//! What must hold: a ping goes out only when every watched database replicates (its last
//! attempt did not fail, its replica holds it, and no transaction has waited for the replica
//! longer than the interval), at most once per interval (a failed ping waits its interval too,
//! as Litestream's); pinging never holds up replication (its own thread, a bounded request);
//! and the URL's path, which is the health check's secret, is never written to the log.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use walrust::replication::Status;
use walrust::watch::config::heartbeat::{shown, Heartbeat};
use walrust::watch::Watched;

/// How often the databases are looked at (only their in-memory status).
const LOOK_EVERY: Duration = Duration::from_secs(1);
/// The longest a ping may take (Litestream's).
const PING_TIMEOUT: Duration = Duration::from_secs(30);

/// Starts the heartbeat's thread for the life of the process.
pub fn start(hb: Heartbeat, watched: Arc<Mutex<Vec<Arc<Watched>>>>) -> Result<(), String> {
    walrust::log::info(&format!(
        "heartbeat: GET {} every {} while every database replicates",
        shown(&hb.url),
        seconds(hb.interval_ms)
    ));
    std::thread::Builder::new()
        .name("walrust-heartbeat".into())
        .spawn(move || beat(&hb, &watched))
        .map(|_| ())
        .map_err(|e| format!("walrust: cannot start the heartbeat: {e}"))
}

fn beat(hb: &Heartbeat, watched: &Mutex<Vec<Arc<Watched>>>) {
    let interval = Duration::from_millis(hb.interval_ms);
    let (mut last_ping, mut said): (Option<Instant>, Option<String>) = (None, None);
    loop {
        std::thread::sleep(LOOK_EVERY);
        if last_ping.is_some_and(|t| t.elapsed() < interval) {
            continue;
        }
        let dbs: Vec<(String, Status)> = watched
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|w| (w.path.display().to_string(), w.repl.status()))
            .collect();
        let outcome = verdict(&dbs, walrust::clock::now_ms(), hb.interval_ms).and_then(|()| {
            last_ping = Some(Instant::now());
            ping(hb)
        });
        let line = match outcome {
            Ok(()) => format!("heartbeat: {} answered", shown(&hb.url)),
            Err(why) => why,
        };
        if said.as_deref() != Some(line.as_str()) {
            walrust::log::info(&line);
            said = Some(line);
        }
    }
}

fn ping(hb: &Heartbeat) -> Result<(), String> {
    let failed = |why: String| {
        format!(
            "heartbeat: GET {} failed: {why}; it is tried again in {} (check the URL and the \
             service)",
            shown(&hb.url),
            seconds(hb.interval_ms)
        )
    };
    match walrust::store::s3::get_status(&hb.url, PING_TIMEOUT) {
        Ok(code) if (200..300).contains(&code) => Ok(()),
        Ok(code) => Err(failed(format!("the server answered {code}"))),
        // (An error naming the request, a malformed URL's, must not show the path either.)
        Err(e) => Err(failed(e.replace(&hb.url, &shown(&hb.url)))),
    }
}

fn seconds(ms: u64) -> String {
    format!("{} s", ms / 1000)
}

/// `Ok` when every database replicates at `now_ms`; else the line saying which does not.
fn verdict(dbs: &[(String, Status)], now_ms: i64, interval_ms: u64) -> Result<(), String> {
    let withheld = |why: String| Err(format!("heartbeat withheld: {why}"));
    if dbs.is_empty() {
        return withheld("no database is watched yet".into());
    }
    for (db, s) in dbs {
        if s.last_error.is_some() {
            return withheld(format!(
                "{db} is failing to replicate (walrust status {db} says why)"
            ));
        }
        if s.uploaded_txid == 0 {
            return withheld(format!("{db} is not in its replica yet"));
        }
        // (A record without a transaction, such as the watch's note after its checkpoint,
        // waits for the next upload too; only transactions count.)
        let waiting = s.local_txid > s.uploaded_txid;
        if waiting
            && s.oldest_pending_ms
                .is_some_and(|t| now_ms.saturating_sub(t) >= interval_ms as i64)
        {
            return withheld(format!(
                "{db} has transactions that waited longer than {} for its replica",
                seconds(interval_ms)
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(f: impl FnOnce(&mut Status)) -> (String, Status) {
        let mut s = Status {
            uploaded_txid: 5,
            local_txid: 5,
            ..Status::default()
        };
        f(&mut s);
        ("/d/app.db".into(), s)
    }

    #[test]
    fn a_ping_needs_every_database_replicating() {
        let now = 1_000_000;
        assert_eq!(verdict(&[db(|_| {})], now, 60_000), Ok(()));
        let young = db(|s| {
            s.local_txid = 6;
            s.oldest_pending_ms = Some(now - 59_000)
        });
        let marker_only = db(|s| s.oldest_pending_ms = Some(now - 600_000));
        assert_eq!(
            verdict(&[db(|_| {}), young, marker_only], now, 60_000),
            Ok(())
        );
        let old = |s: &mut Status| {
            s.local_txid = 6;
            s.oldest_pending_ms = Some(now - 60_000)
        };
        let cases = [
            (
                db(|s| s.last_error = Some("x".into())),
                "is failing to replicate",
            ),
            (db(|s| s.uploaded_txid = 0), "is not in its replica yet"),
            (db(old), "waited longer than 60 s"),
        ];
        for (bad, why) in cases {
            let e = verdict(&[db(|_| {}), bad], now, 60_000).unwrap_err();
            assert!(
                e.starts_with("heartbeat withheld: /d/app.db") && e.contains(why),
                "{e}"
            );
        }
        assert!(verdict(&[], now, 60_000)
            .unwrap_err()
            .contains("no database"));
    }
}
