//! walrust's one place for messages to the operator: a line on standard error, starting with
//! `walrust: `. Repeats of the same message are suppressed for a minute so that a replica that
//! stays down does not flood the application's logs. `WALRUST_LOG=off` silences everything.
//! Callers never pass credentials here (URLs are printed without them).

use once_cell::sync::Lazy;
use std::collections::HashMap;
use std::sync::Mutex;

static LAST: Lazy<Mutex<HashMap<String, i64>>> = Lazy::new(|| Mutex::new(HashMap::new()));
const REPEAT_MS: i64 = 60_000;

fn enabled() -> bool {
    !matches!(
        std::env::var("WALRUST_LOG").as_deref(),
        Ok("off") | Ok("0") | Ok("none")
    )
}

fn emit(level: &str, msg: &str) {
    if !enabled() {
        return;
    }
    let now = crate::clock::now_ms();
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if last.get(msg).is_some_and(|&t| now - t < REPEAT_MS) {
        return;
    }
    if last.len() > 1000 {
        last.clear();
    }
    last.insert(msg.to_string(), now);
    let msg = msg.strip_prefix("walrust: ").unwrap_or(msg);
    eprintln!("walrust: {level}{msg}");
}

pub fn error(msg: &str) {
    emit("error: ", msg);
}

pub fn warn(msg: &str) {
    emit("warning: ", msg);
}

static TRACE: Lazy<bool> = Lazy::new(|| std::env::var_os("WALRUST_TRACE").is_some());

/// Background-thread decisions, for debugging (`WALRUST_TRACE=1`). Never on the commit path.
pub fn trace(msg: impl FnOnce() -> String) {
    if *TRACE {
        eprintln!("walrust: trace [{}] {}", std::process::id(), msg());
    }
}
