//! A shadow log that keeps growing (the replica is down or uploads cannot keep up) is said out
//! loud: past `walrust_shadow_warn_bytes` (1 GiB by default, `0` never), `walrust_status()`
//! carries a `warning`, and one line goes to standard error when the log crosses the limit
//! (again only after it fell below). Nothing is ever dropped: every commit stays in the log
//! until it is uploaded, whatever its size.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use crate::replication::Replication;

/// How often the checkpoint thread measures a database's shadow log.
const CHECK_EVERY_MS: i64 = 5_000;

/// Per database: whether the warning was printed, and when to measure next.
#[derive(Debug, Default)]
pub struct Watch {
    warned: AtomicBool,
    next_check_ms: AtomicI64,
}

/// Bytes of the log's segments (`*.seg`) on disk; the spare segment is not log.
pub fn log_bytes(log_dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(log_dir) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(|n| n.ends_with(".seg")))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

/// The warning for a log of `bytes` past `limit` (`0`: none).
fn message(repl: &Replication, bytes: u64, limit: u64) -> Option<String> {
    if limit == 0 || bytes <= limit {
        return None;
    }
    let why = repl
        .status()
        .last_error
        .map(|e| format!(" (last error: {})", e.trim_start_matches("walrust: ")))
        .unwrap_or_default();
    Some(format!(
        "walrust: the shadow log of {} holds {bytes} bytes not yet uploaded, past \
         walrust_shadow_warn_bytes = {limit}: the replica is unreachable or uploads are too \
         slow{why}; nothing is dropped, but the disk may fill: fix the replica, or raise the \
         setting",
        repl.db_path.display()
    ))
}

/// What `walrust_status()` shows in `warning`.
pub fn warning(repl: &Replication) -> Option<String> {
    let limit = repl.settings().shadow_warn_bytes;
    if limit == 0 {
        return None;
    }
    message(repl, log_bytes(&repl.shadow.log_dir()), limit)
}

/// Called often by a background thread: every few seconds measures the log, and prints the
/// warning once when it crosses the limit. Returns whether it printed.
pub fn check(repl: &Replication, now_ms: i64) -> bool {
    let w = &repl.growth;
    if now_ms < w.next_check_ms.load(Ordering::Relaxed) {
        return false;
    }
    w.next_check_ms
        .store(now_ms + CHECK_EVERY_MS, Ordering::Relaxed);
    match warning(repl) {
        Some(msg) if !w.warned.swap(true, Ordering::Relaxed) => {
            crate::log::warn(&msg);
            true
        }
        Some(_) => false,
        None => {
            w.warned.store(false, Ordering::Relaxed);
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;
    use crate::shadow::ShadowDir;

    #[test]
    fn the_warning_is_in_the_status_and_printed_once_per_crossing() {
        let root = std::env::temp_dir().join(format!("walrust-growth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let shadow = ShadowDir::create(root.join("app.db-walrust")).unwrap();
        let store = crate::store::open(root.join("replica").to_str().unwrap()).unwrap();
        let settings = Settings {
            shadow_warn_bytes: 1000,
            ..Settings::default()
        };
        let repl = Replication::new(root.join("app.db"), shadow.clone(), store, settings);
        let seg = |n: u64, len: usize| {
            std::fs::write(shadow.log_dir().join(format!("{n:016x}.seg")), vec![0; len]).unwrap()
        };
        seg(1, 600);
        std::fs::write(shadow.log_dir().join("spare"), vec![0; 5000]).unwrap();
        assert_eq!(log_bytes(&shadow.log_dir()), 600);
        assert_eq!(warning(&repl), None);
        assert!(!check(&repl, 0));

        seg(2, 600);
        repl.set_error(Some("walrust: the replica is down".into()));
        let w = warning(&repl).unwrap();
        assert!(w.starts_with("walrust: the shadow log of "), "{w}");
        assert!(w.contains("holds 1200 bytes"), "{w}");
        assert!(w.contains("walrust_shadow_warn_bytes = 1000"), "{w}");
        assert!(w.contains("(last error: the replica is down)"), "{w}");
        assert!(!check(&repl, 1), "measured at most every few seconds");
        assert!(check(&repl, CHECK_EVERY_MS), "printed when crossing");
        assert!(!check(&repl, 2 * CHECK_EVERY_MS), "and only once");

        std::fs::remove_file(shadow.log_dir().join(format!("{:016x}.seg", 2))).unwrap();
        assert!(!check(&repl, 3 * CHECK_EVERY_MS));
        seg(3, 600);
        assert!(
            check(&repl, 4 * CHECK_EVERY_MS),
            "again after falling below"
        );

        *repl.settings.lock().unwrap() = Settings {
            shadow_warn_bytes: 0,
            ..Settings::default()
        };
        assert_eq!(warning(&repl), None, "0 never warns");
        std::fs::remove_dir_all(&root).unwrap();
    }
}
