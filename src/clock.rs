//! Wall-clock time as milliseconds since the Unix epoch, and RFC 3339 text for it.
//!
//! Owns: `now_ms`, formatting (`2026-11-28T10:49:56.123Z`, always UTC, always three fractional
//! digits), parsing (any number of fractional digits, `Z` or `±hh:mm`), and the `Clock` trait
//! that lets tests set the time (to simulate months of snapshots in a second).
//!
//! The calendar math is the proleptic Gregorian "days from civil" algorithm, written here so the
//! library carries no date-time dependency. Years outside 0000–9999 are not representable in
//! RFC 3339 and are rejected by the parser; the formatter clamps nothing and is only given
//! times that came from a clock or an LTX header.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MS_PER_SEC: i64 = 1000;
const MS_PER_DAY: i64 = 86_400 * MS_PER_SEC;

/// The system time in milliseconds since the Unix epoch (negative before 1970).
pub fn now_ms() -> i64 {
    system_time_to_ms(SystemTime::now())
}

/// Converts a `SystemTime` to milliseconds since the epoch, rounding towards minus infinity.
pub fn system_time_to_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis().min(i64::MAX as u128) as i64,
        Err(e) => {
            let d = e.duration();
            let ms = d.as_millis().min(i64::MAX as u128) as i64;
            // -1.5 ms is -2 ms, not -1 ms.
            if d.as_nanos() % 1_000_000 == 0 {
                -ms
            } else {
                -ms - 1
            }
        }
    }
}

/// Converts milliseconds since the epoch to a `SystemTime`.
pub fn ms_to_system_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// A source of the current time. Everything that stamps or compares times takes a `&dyn Clock`
/// so that tests can drive it.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        now_ms()
    }
}

/// A clock that only moves when told to.
#[derive(Debug, Default)]
pub struct TestClock(AtomicI64);

impl TestClock {
    pub fn new(ms: i64) -> TestClock {
        TestClock(AtomicI64::new(ms))
    }

    pub fn set(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms` and returns the new time.
    pub fn advance(&self, ms: i64) -> i64 {
        self.0.fetch_add(ms, Ordering::SeqCst) + ms
    }
}

impl Clock for TestClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (month 1–12, day 1–31).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (m as i64 + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d as i64 - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The inverse of `days_from_civil`: (year, month 1–12, day 1–31).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

fn is_leap(y: i64) -> bool {
    (y % 4 == 0 && y % 100 != 0) || y % 400 == 0
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap(y) => 29,
        _ => 28,
    }
}

/// Formats as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC, millisecond precision).
pub fn format_rfc3339_ms(ms: i64) -> String {
    let days = ms.div_euclid(MS_PER_DAY);
    let rem = ms.rem_euclid(MS_PER_DAY);
    let (y, mo, d) = civil_from_days(days);
    let secs = rem / MS_PER_SEC;
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        y,
        mo,
        d,
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        rem % MS_PER_SEC
    )
}

/// Parses an RFC 3339 date-time (`2026-11-28T10:49:56Z`, `...56.123456789+02:00`) into
/// milliseconds since the epoch. Fractional digits past milliseconds are truncated. `t`/`z`
/// and a space for the `T` are accepted, as RFC 3339 allows; nothing else is.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |at: usize, len: usize| -> Option<i64> {
        let digits = b.get(at..at + len)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(digits.iter().fold(0i64, |n, d| n * 10 + (d - b'0') as i64))
    };
    let expect = |at: usize, c: &[u8]| b.get(at).is_some_and(|x| c.contains(x));

    let year = num(0, 4)?;
    if !expect(4, b"-") || !expect(7, b"-") || !expect(10, b"Tt ") {
        return None;
    }
    let month = num(5, 2)? as u32;
    let day = num(8, 2)? as u32;
    if !expect(13, b":") || !expect(16, b":") {
        return None;
    }
    let (hour, min, sec) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return None;
    }
    // A leap second (:60) is accepted and counts as the first millisecond of the next minute.
    if hour > 23 || min > 59 || sec > 60 {
        return None;
    }

    let mut at = 19;
    let mut frac_ms = 0i64;
    if expect(at, b".") {
        at += 1;
        let start = at;
        while b.get(at).is_some_and(u8::is_ascii_digit) {
            if at - start < 3 {
                frac_ms = frac_ms * 10 + (b[at] - b'0') as i64;
            }
            at += 1;
        }
        let n = at - start;
        if n == 0 {
            return None;
        }
        for _ in n..3 {
            frac_ms *= 10;
        }
    }

    let offset_min = match b.get(at) {
        Some(b'Z' | b'z') if at + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if at + 6 == b.len() && expect(at + 3, b":") => {
            let (oh, om) = (num(at + 1, 2)?, num(at + 4, 2)?);
            if oh > 23 || om > 59 {
                return None;
            }
            let m = oh * 60 + om;
            if sign == b'-' {
                -m
            } else {
                m
            }
        }
        _ => return None,
    };

    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec - offset_min * 60;
    Some(secs * MS_PER_SEC + frac_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            format_rfc3339_ms(1_795_862_996_123),
            "2026-11-28T10:49:56.123Z"
        );
        assert_eq!(
            format_rfc3339_ms(951_782_400_000),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_fractions_and_offsets() {
        let t = 1_795_862_996_123;
        assert_eq!(parse_rfc3339("2026-11-28T10:49:56.123Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-28T10:49:56.123456789Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-28t10:49:56.1239z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-28 10:49:56.123Z"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-28T10:49:56Z"), Some(t - 123));
        assert_eq!(parse_rfc3339("2026-11-28T10:49:56.1Z"), Some(t - 23));
        assert_eq!(parse_rfc3339("2026-11-28T12:49:56.123+02:00"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-28T05:19:56.123-05:30"), Some(t));
        assert_eq!(parse_rfc3339("2026-11-28T10:49:56.123-00:00"), Some(t));
    }

    #[test]
    fn rejects_malformed_text() {
        for s in [
            "",
            "2026-11-28",
            "2026-11-28T10:49:56",
            "2026-11-28T10:49:56.Z",
            "2026-13-01T00:00:00Z",
            "2026-02-29T00:00:00Z",
            "2026-11-31T00:00:00Z",
            "2026-11-28T24:00:00Z",
            "2026-11-28T10:60:00Z",
            "2026-11-28T10:49:56+0200",
            "2026-11-28T10:49:56+02:00 ",
            "2026-11-28T10:49:56ZZ",
            "+026-11-28T10:49:56Z",
            "2026-11-28T10:49:5xZ",
        ] {
            assert_eq!(parse_rfc3339(s), None, "{s:?}");
        }
        assert!(parse_rfc3339("2024-02-29T00:00:00Z").is_some());
    }

    #[test]
    fn round_trips_every_day_for_four_centuries() {
        // Noon on each day from 1900 to 2300, plus a millisecond remainder.
        let start = days_from_civil(1900, 1, 1);
        let end = days_from_civil(2300, 1, 1);
        for day in start..end {
            let ms = day * MS_PER_DAY + 12 * 3_600_000 + (day.rem_euclid(1000));
            assert_eq!(parse_rfc3339(&format_rfc3339_ms(ms)), Some(ms));
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn test_clock_moves_only_when_told() {
        let c = TestClock::new(1000);
        assert_eq!(c.now_ms(), 1000);
        assert_eq!(c.advance(500), 1500);
        c.set(7);
        assert_eq!(c.now_ms(), 7);
        assert!(SystemClock.now_ms() > 1_700_000_000_000);
    }

    #[test]
    fn system_time_conversion_floors() {
        let t = UNIX_EPOCH - Duration::from_micros(1500);
        assert_eq!(system_time_to_ms(t), -2);
        assert_eq!(system_time_to_ms(ms_to_system_time(-2)), -2);
        assert_eq!(system_time_to_ms(ms_to_system_time(1234)), 1234);
    }
}
