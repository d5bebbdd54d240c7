//! Litestream's snapshot settings, read into walrust's: `snapshot:` with `interval` and
//! `retention` at the file's top level or under a database (the database's win), Litestream
//! 0.3's `snapshot-interval` and `retention` on a replica (which Litestream 0.5 no longer reads;
//! walrust does what they say, over the others), and the top level's `retention:` with
//! `enabled: false` (Litestream then removes nothing, and neither does walrust).
//!
//! Litestream keeps every restore point of the last `retention`; walrust's equivalent is an
//! exact-restore window of that many hours, rounded up (`hourly=N`, the other GFS tiers off),
//! applied after each snapshot (`walrust_compact_after_snapshot`). What must hold: a duration
//! the file gives is never shortened, and a database the file gives no retention keeps
//! walrust's own setting (the flags').

use super::{duration, scalar, Node};
use crate::config::{Retention, Settings, MAX_SNAPSHOT_INTERVAL_S, MAX_TIER_COUNT};

const HOUR_MS: u64 = 3_600_000;

/// What the file says of one database's snapshots; `None`: it says nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshots {
    /// Seconds between snapshots (`0`: none on a schedule, as in walrust).
    pub interval_s: Option<u64>,
    /// Hours of restore points to keep.
    pub retention_hours: Option<u32>,
    /// `retention: enabled:` at the top level.
    pub removal: Option<bool>,
}

impl Snapshots {
    /// Reads a `snapshot:` block (its `interval` and `retention`).
    pub(super) fn read_block(
        &mut self,
        value: Node,
        no: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let Node::Map(entries, _) = value else {
            return Err(format!(
                "line {no}: `snapshot:` needs `interval:` or `retention:` indented under it"
            ));
        };
        for (key, value, no) in entries {
            if !self.take("interval", &key, value, no, env)? {
                return Err(format!(
                    "line {no}: `{key}` is not a snapshot setting (interval, retention)"
                ));
            }
        }
        Ok(())
    }

    /// Takes a replica's `snapshot-interval` or `retention` (Litestream 0.3); false for
    /// another key.
    pub(super) fn take_replica_key(
        &mut self,
        key: &str,
        value: Node,
        no: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<bool, String> {
        self.take("snapshot-interval", key, value, no, env)
    }

    /// Takes the interval (named `interval_key` where it stands) or the retention; false for
    /// another key.
    fn take(
        &mut self,
        interval_key: &str,
        key: &str,
        value: Node,
        no: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<bool, String> {
        if key == interval_key {
            self.interval_s = Some(interval(&scalar(value, no, env)?, no)?);
        } else if key == "retention" {
            self.retention_hours = Some(hours(&scalar(value, no, env)?, no)?);
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The top level's `retention:` block: `enabled: true|false`.
    pub(super) fn read_removal(
        &mut self,
        value: Node,
        no: usize,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(), String> {
        let Node::Map(entries, _) = value else {
            return Err(format!(
                "line {no}: `retention:` here needs `enabled: true` or `enabled: false` under it \
                 (a snapshot's retention goes under `snapshot:`)"
            ));
        };
        for (key, value, no) in entries {
            if key != "enabled" {
                return Err(format!(
                    "line {no}: `{key}` is not a retention setting (enabled)"
                ));
            }
            self.removal = Some(super::boolean(value, no, env)?);
        }
        Ok(())
    }

    /// These settings, with `under`'s where these say nothing.
    pub fn over(self, under: Snapshots) -> Snapshots {
        Snapshots {
            interval_s: self.interval_s.or(under.interval_s),
            retention_hours: self.retention_hours.or(under.retention_hours),
            removal: self.removal.or(under.removal),
        }
    }

    /// Whether the file says what is removed from the replica: a retention, or nothing.
    pub fn names_removal(&self) -> bool {
        self.retention_hours.is_some() || self.removal == Some(false)
    }

    /// Puts what the file says into `s`, over the flags.
    pub fn apply(&self, s: &mut Settings) {
        if let Some(interval) = self.interval_s {
            s.snapshot_interval_s = interval;
        }
        if let Some(hourly) = self.retention_hours {
            s.retention = Retention {
                hourly,
                daily: 0,
                weekly: 0,
                monthly: 0,
            };
            s.compact_after_snapshot = true;
        }
        if self.removal == Some(false) {
            s.compact_after_snapshot = false;
        }
    }
}

fn interval(text: &str, no: usize) -> Result<u64, String> {
    duration::millis(text)
        .map(|ms| ms.div_ceil(1000))
        .filter(|&s| s <= MAX_SNAPSHOT_INTERVAL_S)
        .ok_or_else(|| {
            format!(
                "line {no}: interval `{text}` is not a duration such as 1h or 24h (at most 8784h)"
            )
        })
}

fn hours(text: &str, no: usize) -> Result<u32, String> {
    duration::millis(text)
        .filter(|&ms| ms > 0)
        .map(|ms| ms.div_ceil(HOUR_MS))
        .filter(|&h| h <= MAX_TIER_COUNT as u64)
        .map(|h| h as u32)
        .ok_or_else(|| {
            format!(
                "line {no}: retention `{text}` is not a duration such as 24h or 168h (more than 0)"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retention_keeps_whole_hours_of_restore_points_and_compacts() {
        assert_eq!(hours("24h", 3), Ok(24));
        assert_eq!(hours("90m", 3), Ok(2));
        assert_eq!(hours("1s", 3), Ok(1));
        assert!(hours("0s", 3)
            .unwrap_err()
            .starts_with("line 3: retention `0s`"));
        assert_eq!(interval("1h", 3), Ok(3600));
        assert_eq!(interval("1500ms", 3), Ok(2));
        assert!(interval("9000h", 3).is_err());

        let mut s = Settings::default();
        let file = Snapshots {
            interval_s: Some(600),
            retention_hours: Some(168),
            removal: None,
        };
        file.apply(&mut s);
        assert_eq!(s.snapshot_interval_s, 600);
        assert_eq!(
            s.retention,
            Retention::parse("hourly=168,daily=0,weekly=0,monthly=0").unwrap()
        );
        assert!(s.compact_after_snapshot);

        let off = Snapshots {
            removal: Some(false),
            ..Snapshots::default()
        };
        off.over(file).apply(&mut s);
        assert!(!s.compact_after_snapshot);

        let mut untouched = Settings::default();
        Snapshots::default().apply(&mut untouched);
        assert_eq!(
            untouched.snapshot_interval_s,
            Settings::default().snapshot_interval_s
        );
        assert!(!untouched.compact_after_snapshot);
    }
}
