//! Settings (SPEC section 3): parsed from a PRAGMA, a URI parameter, or a `WALRUST_<NAME>`
//! environment variable, in that order of precedence over the defaults. Bad values are errors
//! that name the setting, the value and what is accepted.

use std::path::PathBuf;

/// The settings' names, as PRAGMAs and URI parameters.
pub const NAMES: [&str; 7] = [
    "walrust_sync_interval",
    "walrust_snapshot_interval",
    "walrust_retention",
    "walrust_compact_after_snapshot",
    "walrust_shadow_dir",
    "walrust_checkpoint",
    "walrust_close_timeout",
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
    pub fn parse(s: &str) -> Result<Retention, String> {
        let mut r = Retention {
            hourly: 0,
            daily: 0,
            weekly: 0,
            monthly: 0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| format!("'{part}' is not tier=count"))?;
            let n: u32 = v
                .trim()
                .parse()
                .map_err(|_| format!("'{v}' is not a count"))?;
            match k.trim() {
                "hourly" => r.hourly = n,
                "daily" => r.daily = n,
                "weekly" => r.weekly = n,
                "monthly" => r.monthly = n,
                other => {
                    return Err(format!(
                        "unknown tier '{other}' (hourly, daily, weekly, monthly)"
                    ))
                }
            }
        }
        Ok(r)
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

    /// Sets one setting by name. Returns an error for an unknown name or a bad value.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let v = value.trim();
        let bad = |what: &str| format!("walrust: {name} = '{value}' is not valid: expected {what}");
        match name {
            "walrust_sync_interval" => {
                self.sync_interval_ms = v.parse().map_err(|_| bad("milliseconds (0 or more)"))?
            }
            "walrust_snapshot_interval" => {
                self.snapshot_interval_s = v
                    .parse()
                    .map_err(|_| bad("seconds (0 disables scheduled snapshots)"))?
            }
            "walrust_retention" => {
                self.retention = Retention::parse(v)
                    .map_err(|e| format!("{}: {e}", bad("hourly=N,daily=N,weekly=N,monthly=N")))?
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
                self.close_timeout_ms = v
                    .parse()
                    .map_err(|_| bad("milliseconds (0 does not wait)"))?
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
            "hourly=2,daily=1,weekly=0,monthly=0"
        );
        assert!(s
            .set("walrust_sync_interval", "soon")
            .unwrap_err()
            .starts_with("walrust: "));
        assert!(s.set("walrust_shadow_dir", "relative").is_err());
    }
}
