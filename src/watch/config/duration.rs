//! Go durations (`1s`, `500ms`, `1m30s`, `1.5h`, `168h`), as Litestream's settings are written.
//! What must hold: only what Go's `time.ParseDuration` accepts, without a sign, is read; a
//! bare number is refused but `0`.

/// The duration `text` says, in whole milliseconds (rounded); `None` if it is not one.
pub fn millis(text: &str) -> Option<u64> {
    let mut rest = text.trim();
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut ms = 0f64;
    while !rest.is_empty() {
        let n_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let n: f64 = rest[..n_end].parse().ok()?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "h" => 3_600_000.0,
            "m" => 60_000.0,
            "s" => 1_000.0,
            "ms" => 1.0,
            "us" | "µs" => 0.001,
            "ns" => 0.000_001,
            _ => return None,
        };
        ms += n * unit;
        rest = &rest[u_end..];
    }
    (ms < u64::MAX as f64 / 2.0).then(|| ms.round() as u64)
}

#[cfg(test)]
mod tests {
    use super::millis;

    #[test]
    fn go_durations_are_read_as_litestream_writes_them() {
        assert_eq!(millis("1s"), Some(1000));
        assert_eq!(millis("500ms"), Some(500));
        assert_eq!(millis("1m30s"), Some(90_000));
        assert_eq!(millis("1.5s"), Some(1500));
        assert_eq!(millis("168h"), Some(168 * 3_600_000));
        assert_eq!(millis("0"), Some(0));
        assert_eq!(millis("0s"), Some(0));
        for bad in ["1", "s", "1d", "-1s", "1 s", "", "1e9h"] {
            assert_eq!(millis(bad), None, "{bad}");
        }
    }
}
