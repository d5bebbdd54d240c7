//! When a request is sent again: the answers that say "try later" (429, 5xx, S3's `SlowDown`,
//! which comes as 503) and how long to wait before the next attempt (exponential backoff with
//! jitter, or the server's `Retry-After`, never more than `MAX_DELAY`).

use std::time::Duration;

/// The longest wait between two attempts, whatever the server asks.
pub const MAX_DELAY: Duration = Duration::from_secs(10);

/// An answer that a later attempt may not get: throttling or a server-side failure.
pub fn is_transient(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// `Retry-After` in whole seconds (the HTTP-date form is ignored).
pub fn retry_after(header: Option<&str>) -> Option<Duration> {
    header?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The wait before attempt `attempt + 1`: `base * 2^(attempt-1)` plus up to half of that
/// again, or what the server asked for, at most `MAX_DELAY`.
pub fn delay(base: Duration, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(d) = retry_after {
        return d.min(MAX_DELAY);
    }
    let exp = base.saturating_mul(1 << attempt.saturating_sub(1).min(16));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as u64);
    let jitter = exp.as_nanos() as u64 / 2;
    let jitter = if jitter == 0 { 0 } else { nanos % jitter };
    (exp + Duration::from_nanos(jitter)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_server_errors_are_transient_client_errors_are_not() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_transient(s), "{s}");
        }
        for s in [200, 301, 400, 403, 404, 409, 412, 501] {
            assert!(!is_transient(s), "{s}");
        }
    }

    #[test]
    fn delays_grow_and_stay_bounded() {
        let base = Duration::from_millis(100);
        let d1 = delay(base, 1, None);
        assert!(d1 >= base && d1 <= base * 3 / 2, "{d1:?}");
        let d3 = delay(base, 3, None);
        assert!(d3 >= base * 4 && d3 <= base * 6, "{d3:?}");
        assert_eq!(delay(base, 40, None), MAX_DELAY);
        assert_eq!(
            delay(base, 1, retry_after(Some("2"))),
            Duration::from_secs(2)
        );
        assert_eq!(delay(base, 1, retry_after(Some("86400"))), MAX_DELAY);
        assert_eq!(retry_after(Some("Wed, 21 Oct 2015 07:28:00 GMT")), None);
    }
}
