//! `heartbeat-url` and `heartbeat-interval` at the file's top level, as Litestream 0.5.16+
//! reads them: a URL that `walrust watch` asks (HTTP GET) once per interval while every
//! database it watches replicates, so that a health-check service hears when it stops.
//!
//! What must hold: the URL is `http://` or `https://` and the interval at least a minute (five
//! minutes when not given), or the file is refused with its line, as Litestream refuses it; an
//! interval without a URL sends nothing and is said.

use super::duration;

/// Litestream's default interval.
pub const DEFAULT_INTERVAL_MS: u64 = 5 * 60_000;
/// Litestream's shortest interval.
pub const MIN_INTERVAL_MS: u64 = 60_000;

/// Where to ping and how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Heartbeat {
    pub url: String,
    pub interval_ms: u64,
}

/// The two keys as the file gives them (value, line).
#[derive(Default)]
pub struct Keys {
    pub url: Option<(String, usize)>,
    pub interval: Option<(String, usize)>,
}

impl Keys {
    /// The heartbeat the keys ask for (`None` without a URL) and a notice for an interval
    /// without one.
    pub fn read(self) -> Result<(Option<Heartbeat>, Option<String>), String> {
        let interval_ms = match &self.interval {
            None => DEFAULT_INTERVAL_MS,
            Some((text, no)) => duration::millis(text)
                .filter(|&ms| ms >= MIN_INTERVAL_MS)
                .ok_or_else(|| {
                    format!(
                        "line {no}: heartbeat-interval `{text}` is not a duration of at least 1m \
                         (such as 5m or 1h)"
                    )
                })?,
        };
        let Some((url, no)) = self.url else {
            let notice = self.interval.map(|(_, no)| {
                format!(
                    "line {no}: `heartbeat-interval` without `heartbeat-url`: no heartbeat is sent"
                )
            });
            return Ok((None, notice));
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(format!(
                "line {no}: heartbeat-url must be an http:// or https:// URL"
            ));
        }
        Ok((Some(Heartbeat { url, interval_ms }), None))
    }
}

/// The URL as walrust says it: scheme and host only (a health check's path is its secret).
pub fn shown(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = host.rsplit('@').next().unwrap_or(host);
    let more = if rest.len() > host.len() { "/…" } else { "" };
    format!("{scheme}://{host}{more}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(url: Option<&str>, interval: Option<&str>) -> Keys {
        Keys {
            url: url.map(|u| (u.to_string(), 3)),
            interval: interval.map(|i| (i.to_string(), 4)),
        }
    }

    #[test]
    fn a_url_pings_every_five_minutes_unless_told() {
        let (hb, notice) = keys(Some("https://hc.example/ping/abc"), None)
            .read()
            .unwrap();
        assert_eq!(hb.unwrap().interval_ms, 300_000);
        assert_eq!(notice, None);
        let (hb, _) = keys(Some("http://h/x"), Some("90s")).read().unwrap();
        assert_eq!(hb.unwrap().interval_ms, 90_000);
    }

    #[test]
    fn what_litestream_refuses_is_refused_with_its_line() {
        let e = keys(Some("ftp://h/x"), None).read().unwrap_err();
        assert!(e.starts_with("line 3: heartbeat-url"), "{e}");
        let e = keys(Some("http://h/x"), Some("30s")).read().unwrap_err();
        assert!(e.starts_with("line 4: heartbeat-interval `30s`"), "{e}");
        let e = keys(Some("http://h/x"), Some("5")).read().unwrap_err();
        assert!(e.contains("at least 1m"), "{e}");
    }

    #[test]
    fn an_interval_without_a_url_is_said() {
        let (hb, notice) = keys(None, Some("10m")).read().unwrap();
        assert_eq!(hb, None);
        assert!(notice
            .unwrap()
            .starts_with("line 4: `heartbeat-interval` without"));
        assert_eq!(keys(None, None).read().unwrap(), (None, None));
    }

    #[test]
    fn only_scheme_and_host_are_shown() {
        assert_eq!(
            shown("https://hc-ping.com/0a1b-secret"),
            "https://hc-ping.com/…"
        );
        assert_eq!(shown("http://user:pw@h:8080/x?y"), "http://h:8080/…");
        assert_eq!(shown("http://h:8080"), "http://h:8080");
    }
}
