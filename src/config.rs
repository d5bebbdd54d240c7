//! Settings (SPEC section 3): parsed from a PRAGMA, a URI parameter, or a `WALRUST_<NAME>`
//! environment variable, in that order of precedence over the defaults. Bad values are errors
//! that name the setting, the value and what is accepted.

use std::path::PathBuf;

/// The settings' names, as PRAGMAs and URI parameters.
pub const NAMES: [&str; 8] = [
    "walrust_sync_interval",
    "walrust_snapshot_interval",
    "walrust_retention",
    "walrust_compact_after_snapshot",
    "walrust_shadow_dir",
    "walrust_checkpoint",
    "walrust_close_timeout",
    "walrust_shadow_warn_bytes",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckpointMode {
    Background,
    App,
}

/// GFS tiers of snapshots to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub hourly: u32,
    pub daily: u32,
    pub weekly: u32,
    pub monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            hourly: 24,
            daily: 7,
            weekly: 12,
            monthly: 12,
        }
    }
}

impl Retention {
    /// `tier=count[,tier=count...]` (SPEC 3): a tier not named keeps its default, `0` turns it
    /// off. Empty, a part that is not `tier=count`, an unknown or repeated tier, or a count
    /// that is not a whole number up to `MAX_TIER_COUNT` are errors.
    pub fn parse(s: &str) -> Result<Retention, String> {
        if s.trim().is_empty() {
            return Err("it is empty; name at least one tier, e.g. daily=7".into());
        }
        let mut r = Retention::default();
        let mut seen: Vec<&str> = Vec::new();
        for part in s.split(',').map(str::trim) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not tier=count"))?;
            let (k, v) = (k.trim(), v.trim());
            let n = parse_in_range(v, 0, MAX_TIER_COUNT as u64)
                .map_err(|range| format!("the count '{v}' of {k} is not {range}"))?
                as u32;
            if seen.contains(&k) {
                return Err(format!("the tier {k} is named twice"));
            }
            let slot = match k {
                "hourly" => &mut r.hourly,
                "daily" => &mut r.daily,
                "weekly" => &mut r.weekly,
                "monthly" => &mut r.monthly,
                other => {
                    return Err(format!(
                        "unknown tier '{other}' (hourly, daily, weekly, monthly)"
                    ))
                }
            };
            *slot = n;
            seen.push(k);
        }
        Ok(r)
    }
}

/// The most snapshots one retention tier may keep.
pub const MAX_TIER_COUNT: u32 = 100_000;
/// The longest `walrust_sync_interval`: one day, in ms.
pub const MAX_SYNC_INTERVAL_MS: u64 = 86_400_000;
/// The longest `walrust_snapshot_interval`: one year, in s.
pub const MAX_SNAPSHOT_INTERVAL_S: u64 = 366 * 86_400;

/// `walrust_shadow_warn_bytes` by default: 1 GiB.
pub const DEFAULT_SHADOW_WARN_BYTES: u64 = 1 << 30;
/// The largest `walrust_shadow_warn_bytes`: 1 PiB.
pub const MAX_SHADOW_WARN_BYTES: u64 = 1 << 50;
/// `walrust_close_timeout` at most an hour.
pub const MAX_CLOSE_TIMEOUT_MS: u64 = 3_600_000;

/// A whole number in `min..=max`; the error is the range, for the caller's message.
fn parse_in_range(v: &str, min: u64, max: u64) -> Result<u64, String> {
    let range = format!("a whole number from {min} to {max}");
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(range),
    }
}

impl std::fmt::Display for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "hourly={},daily={},weekly={},monthly={}",
            self.hourly, self.daily, self.weekly, self.monthly
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub sync_interval_ms: u64,
    pub snapshot_interval_s: u64,
    pub retention: Retention,
    pub compact_after_snapshot: bool,
    pub shadow_dir: Option<PathBuf>,
    pub checkpoint: CheckpointMode,
    /// How long the last close of a replicating database in a process may wait to upload
    /// what is pending (SPEC 6, nothing stranded); 0 does not wait.
    pub close_timeout_ms: u64,
    /// Past this many bytes of shadow log, `walrust_status()` and standard error say so; `0`
    /// never warns. Nothing is ever dropped.
    pub shadow_warn_bytes: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            sync_interval_ms: 1000,
            snapshot_interval_s: 3600,
            retention: Retention::default(),
            compact_after_snapshot: false,
            shadow_dir: None,
            checkpoint: CheckpointMode::Background,
            close_timeout_ms: 10_000,
            shadow_warn_bytes: DEFAULT_SHADOW_WARN_BYTES,
        }
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "on" | "true" | "yes" => Some(true),
        "0" | "off" | "false" | "no" => Some(false),
        _ => None,
    }
}

impl Settings {
    /// Defaults overridden by `WALRUST_<NAME>` environment variables; bad values are reported
    /// and ignored (there is no statement to fail).
    pub fn from_env() -> Settings {
        let mut s = Settings::default();
        for name in NAMES {
            let var = name.to_ascii_uppercase();
            if let Ok(v) = std::env::var(&var) {
                if let Err(e) = s.set(name, &v) {
                    crate::log::warn(&format!("ignoring {var}: {e}"));
                }
            }
        }
        s
    }

    /// The first `WALRUST_<NAME>` variable whose value is not valid, as the error an open
    /// fails with (the same text a PRAGMA gives, naming the variable).
    pub fn env_error() -> Option<String> {
        NAMES.iter().find_map(|name| {
            let var = name.to_ascii_uppercase();
            let v = std::env::var(&var).ok()?;
            let e = Settings::default().set(name, &v).err()?;
            let rest = e.strip_prefix("walrust: ").unwrap_or(&e);
            Some(format!("walrust: {var}: {rest}"))
        })
    }

    /// Sets one setting by name. Returns an error for an unknown name or a bad value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        let bad = |what: &str| format!("walrust: {name} = '{value}' is not valid: expected {what}");
        match name {
            "walrust_sync_interval" => {
                self.sync_interval_ms = parse_in_range(v, 0, MAX_SYNC_INTERVAL_MS)
                    .map_err(|r| bad(&format!("milliseconds, {r} (0 uploads at once)")))?
            }
            "walrust_snapshot_interval" => {
                self.snapshot_interval_s = parse_in_range(v, 0, MAX_SNAPSHOT_INTERVAL_S)
                    .map_err(|r| bad(&format!("seconds, {r} (0 disables scheduled snapshots)")))?
            }
            "walrust_retention" => {
                self.retention = Retention::parse(v).map_err(|e| {
                    bad(&format!(
                        "tier=count pairs like hourly=24,daily=7,weekly=12,monthly=12 (a tier \
                         not named keeps its default, 0 turns it off), but {e}"
                    ))
                })?
            }
            "walrust_compact_after_snapshot" => {
                self.compact_after_snapshot = parse_bool(v).ok_or_else(|| bad("on or off"))?
            }
            "walrust_shadow_dir" => {
                let p = PathBuf::from(v);
                if !p.is_absolute() {
                    return Err(bad("an absolute directory path"));
                }
                self.shadow_dir = Some(p);
            }
            "walrust_checkpoint" => {
                self.checkpoint = match v.to_ascii_lowercase().as_str() {
                    "background" => CheckpointMode::Background,
                    "app" => CheckpointMode::App,
                    _ => return Err(bad("background or app")),
                }
            }
            "walrust_close_timeout" => {
                self.close_timeout_ms = parse_in_range(v, 0, MAX_CLOSE_TIMEOUT_MS)
                    .map_err(|r| bad(&format!("milliseconds, {r} (0 does not wait)")))?
            }
            "walrust_shadow_warn_bytes" => {
                self.shadow_warn_bytes = parse_in_range(v, 0, MAX_SHADOW_WARN_BYTES)
                    .map_err(|r| bad(&format!("bytes, {r} (0 never warns)")))?
            }
            _ => return Err(format!("walrust: unknown setting {name}")),
        }
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<String> {
        Some(match name {
            "walrust_sync_interval" => self.sync_interval_ms.to_string(),
            "walrust_snapshot_interval" => self.snapshot_interval_s.to_string(),
            "walrust_retention" => self.retention.to_string(),
            "walrust_compact_after_snapshot" => (if self.compact_after_snapshot {
                "on"
            } else {
                "off"
            })
            .to_string(),
            "walrust_shadow_dir" => self
                .shadow_dir
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            "walrust_checkpoint" => (match self.checkpoint {
                CheckpointMode::Background => "background",
                CheckpointMode::App => "app",
            })
            .to_string(),
            "walrust_close_timeout" => self.close_timeout_ms.to_string(),
            "walrust_shadow_warn_bytes" => self.shadow_warn_bytes.to_string(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse_and_print() {
        let mut s = Settings::default();
        s.set("walrust_sync_interval", "250").unwrap();
        s.set("walrust_retention", "hourly=2, daily=1").unwrap();
        s.set("walrust_checkpoint", "APP").unwrap();
        assert_eq!(s.get("walrust_sync_interval").unwrap(), "250");
        assert_eq!(
            s.get("walrust_retention").unwrap(),
            "hourly=2,daily=1,weekly=12,monthly=12"
        );
        assert!(s
            .set("walrust_sync_interval", "soon")
            .unwrap_err()
            .starts_with("walrust: "));
        assert!(s.set("walrust_shadow_dir", "relative").is_err());
    }

    fn error_of(name: &str, value: &str) -> String {
        let mut s = Settings::default();
        let before = s.clone();
        let e = s.set(name, value).unwrap_err();
        assert_eq!(s, before, "a bad value must change nothing");
        assert!(e.starts_with("walrust: "), "{e}");
        e
    }

    #[test]
    fn intervals_out_of_range_are_errors_that_give_the_range() {
        // 18446744073709552 s * 1000 would wrap to about 0.4 s.
        let e = error_of("walrust_snapshot_interval", "18446744073709552");
        assert!(e.contains("from 0 to 31622400"), "{e}");
        // i64::MAX ms used to turn negative, i.e. "upload at once".
        let e = error_of("walrust_sync_interval", "9223372036854775807");
        assert!(e.contains("from 0 to 86400000"), "{e}");
        for bad in ["-1", "1.5", "", "18446744073709551616"] {
            error_of("walrust_sync_interval", bad);
            error_of("walrust_snapshot_interval", bad);
        }
        let mut s = Settings::default();
        s.set("walrust_sync_interval", "86400000").unwrap();
        s.set("walrust_snapshot_interval", "31622400").unwrap();
        s.set("walrust_snapshot_interval", "0").unwrap();
        s.set("walrust_shadow_warn_bytes", "0").unwrap();
        let e = error_of("walrust_shadow_warn_bytes", "1125899906842625");
        assert!(e.contains("from 0 to 1125899906842624"), "{e}");
        assert_eq!(
            (s.sync_interval_ms, s.snapshot_interval_s),
            (MAX_SYNC_INTERVAL_MS, 0)
        );
    }

    #[test]
    fn retention_tiers_not_named_keep_their_defaults() {
        let r = |v: &str| Retention::parse(v).unwrap().to_string();
        assert_eq!(r("daily=7"), "hourly=24,daily=7,weekly=12,monthly=12");
        assert_eq!(r("daily=0"), "hourly=24,daily=0,weekly=12,monthly=12");
        assert_eq!(
            r(" hourly = 1 , monthly=0"),
            "hourly=1,daily=7,weekly=12,monthly=0"
        );
        assert_eq!(
            r("hourly=0,daily=0,weekly=0,monthly=0"),
            "hourly=0,daily=0,weekly=0,monthly=0"
        );
    }

    #[test]
    fn empty_or_malformed_retention_is_an_error() {
        for (bad, says) in [
            ("", "it is empty"),
            ("   ", "it is empty"),
            ("daily", "'daily' is not tier=count"),
            ("daily=7,", "'' is not tier=count"),
            ("daily=7,,weekly=1", "'' is not tier=count"),
            (
                "daily=-1",
                "the count '-1' of daily is not a whole number from 0 to 100000",
            ),
            ("daily=many", "the count 'many' of daily"),
            ("daily=4294967296", "from 0 to 100000"),
            ("yearly=1", "unknown tier 'yearly'"),
            ("daily=1,daily=2", "the tier daily is named twice"),
        ] {
            let e = error_of("walrust_retention", bad);
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains("a tier not named keeps its default"), "{e}");
        }
    }
}
