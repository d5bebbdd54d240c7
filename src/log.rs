//! walrust's one place for messages to the operator: a line on standard error, starting with
//! `walrust: `. Repeats of a message are suppressed for a minute so that a replica that stays
//! down does not flood the application's logs. A repeat is the same message, or, for messages
//! logged with a kind (`error_kind`: an upload to one replica), the same kind and the same
//! message once its numbers (TXID ranges, sizes) are masked. `WALRUST_LOG=off` silences
//! everything. Callers never pass credentials here (URLs are printed without them).

use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::sync::Mutex;

static LAST: Lazy<Mutex<Limiter>> = Lazy::new(|| Mutex::new(Limiter::default()));
const REPEAT_MS: i64 = 60_000;

/// When each message key was last printed.
#[derive(Default)]
struct Limiter {
    last: HashMap<String, i64>,
}

impl Limiter {
    /// Whether a message with this key may be printed at `now` (and records it if so).
    fn admit(&mut self, key: String, now: i64) -> bool {
        if self.last.get(&key).is_some_and(|&t| now - t < REPEAT_MS) {
            return false;
        }
        if self.last.len() > 1000 {
            self.last.clear();
        }
        self.last.insert(key, now);
        true
    }
}

/// The message with every word that holds a digit (a TXID, a count, a time) replaced by `#`,
/// so that the same failure about other transactions is the same kind of message.
fn mask_numbers(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.bytes().any(|b| b.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in msg.chars() {
        if c.is_ascii_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

fn enabled() -> bool {
    !matches!(
        std::env::var("WALRUST_LOG").as_deref(),
        Ok("off") | Ok("0") | Ok("none")
    )
}

fn emit(level: &str, key: String, msg: &str) {
    if !enabled() {
        return;
    }
    let now = crate::clock::now_ms();
    if !LAST
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .admit(key, now)
    {
        return;
    }
    let msg = msg.strip_prefix("walrust: ").unwrap_or(msg);
    eprintln!("walrust: {level}{msg}");
}

pub fn error(msg: &str) {
    emit("error: ", msg.to_string(), msg);
}

/// An error that repeats with other numbers in it (each failed upload names its TXID range):
/// printed at most once a minute per `kind` (e.g. the replica's URL) and masked message.
pub fn error_kind(kind: &str, msg: &str) {
    emit("error: ", format!("{kind}\n{}", mask_numbers(msg)), msg);
}

/// An event worth a person's attention that is not a problem (`walrust watch`: started,
/// snapshot taken, uploads recovered): one line, never rate-limited.
pub fn info(msg: &str) {
    let msg = msg.strip_prefix("walrust: ").unwrap_or(msg);
    eprintln!("walrust: {msg}");
}

pub fn warn(msg: &str) {
    emit("warning: ", msg.to_string(), msg);
}

static TRACE: Lazy<bool> = Lazy::new(|| std::env::var_os("WALRUST_TRACE").is_some());

/// Background-thread decisions, for debugging (`WALRUST_TRACE=1`). Never on the commit path.
/// Each line names the process, the time (milliseconds, modulo 100 s) and the thread
/// (`app` for the application's), so that the lines of several processes can be ordered.
pub fn trace(msg: impl FnOnce() -> String) {
    if *TRACE {
        let t = std::thread::current();
        eprintln!(
            "walrust: trace [{} {} {}] {}",
            std::process::id(),
            crate::clock::now_ms() % 100_000,
            t.name().unwrap_or("app"),
            msg()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_masked_words_kept() {
        assert_eq!(
            mask_numbers("upload of TXIDs 0000000000000003-00000000000000cc failed: 503 Slow Down"),
            "upload of TXIDs #-# failed: # Slow Down"
        );
    }

    #[test]
    fn repeats_of_a_kind_are_limited_whatever_their_txids() {
        let mut l = Limiter::default();
        let key = |kind: &str, m: &str| format!("{kind}\n{}", mask_numbers(m));
        let a = "walrust: upload to s3://b/app failed: TXIDs 0000000000000003-0000000000000004: HTTP 503";
        let b = "walrust: upload to s3://b/app failed: TXIDs 0000000000000005-0000000000000009: HTTP 503";
        assert!(l.admit(key("s3://b/app", a), 0));
        assert!(!l.admit(key("s3://b/app", b), 1_000));
        // Another replica, or another failure, is another kind.
        assert!(l.admit(key("s3://b/other", b), 1_000));
        assert!(l.admit(key("s3://b/app", "walrust: access denied"), 1_000));
        // After a minute it is printed again.
        assert!(l.admit(key("s3://b/app", b), REPEAT_MS + 1));
        // Without a kind, the exact message is the key.
        assert!(l.admit(a.to_string(), 0));
        assert!(l.admit(b.to_string(), 0));
        assert!(!l.admit(b.to_string(), 1));
    }
}
