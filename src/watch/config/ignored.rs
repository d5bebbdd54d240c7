//! Litestream 0.5 settings that `walrust watch` accepts without using, each with what walrust
//! does instead. They tune how Litestream itself runs (its checkpoints, its compaction timers,
//! its logs); none changes what is replicated, where, or what a restore
//! returns. Each is reported once at start, naming its line: a setting dropped without a word
//! is worse than an error.
//!
//! What must hold: a setting that would change what reaches the replica or who can read it
//! (encryption, storage class, TLS verification, a command to run, a directory of databases,
//! a restore at start) is never in these lists: the parser reads it or refuses it.

/// Where a key stands in the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Top,
    Db,
    Replica,
}

const CHECKPOINTS: &str =
    "walrust watch checkpoints the WAL itself once it has copied the frames (--checkpoint)";
const S3_CLIENT: &str = "walrust's S3 client chooses its own request settings";

/// Settings of a replica, also allowed at the top level as defaults for every replica.
const REPLICA: &[(&str, &str)] = &[
    ("validation-interval", "walrust checks every checksum at restore and in `walrust verify`"),
    ("max-sync-ltx-files", "walrust batches what is pending into as few files as it can"),
    ("auto-recover", "walrust takes a new snapshot whenever its local state cannot prove the replica continues the database"),
    ("sign-payload", S3_CLIENT),
    ("require-content-md5", S3_CLIENT),
    ("part-size", S3_CLIENT),
    ("concurrency", S3_CLIENT),
    ("retention-check-interval", "walrust applies retention after each snapshot"),
    ("name", "walrust replicates a database to one replica, which needs no name"),
];

const TOP: &[(&str, &str)] = &[
    ("socket", "walrust watch has no control socket"),
    ("mcp-addr", "walrust watch has no MCP server"),
    (
        "logging",
        "walrust watch writes one line per event to standard error",
    ),
    (
        "levels",
        "walrust compacts into Litestream's default levels (30s, 5m, 1h)",
    ),
    (
        "l0-retention",
        "walrust removes level-0 files by the snapshot retention only",
    ),
    (
        "l0-retention-check-interval",
        "walrust removes level-0 files by the snapshot retention only",
    ),
    (
        "verify-compaction",
        "walrust checks every compaction's restore points before it removes a file",
    ),
    (
        "validation",
        "walrust checks every checksum at restore and in `walrust verify`",
    ),
    (
        "shutdown-sync-timeout",
        "at SIGTERM walrust watch uploads what is pending for up to 60 s",
    ),
    (
        "shutdown-sync-interval",
        "at SIGTERM walrust watch uploads what is pending for up to 60 s",
    ),
];

const DB: &[(&str, &str)] = &[
    (
        "meta-path",
        "walrust keeps its local state in DB-walrust (or under --shadow-dir)",
    ),
    (
        "meta-dir",
        "walrust keeps its local state in DB-walrust (or under --shadow-dir)",
    ),
    (
        "monitor-interval",
        "walrust watch is woken by each change to the WAL, and looks at least once a second",
    ),
    ("checkpoint-interval", CHECKPOINTS),
    ("min-checkpoint-page-count", CHECKPOINTS),
    ("truncate-page-n", CHECKPOINTS),
    (
        "max-sync-wal-bytes",
        "walrust copies every committed frame, whatever the WAL's size",
    ),
    (
        "busy-timeout",
        "walrust watch takes SQLite's locks without waiting and tries again",
    ),
];

/// What walrust does instead of `key` at `level`, if walrust accepts it without using it.
pub fn instead(key: &str, level: Level) -> Option<&'static str> {
    let lists: &[&[(&str, &str)]] = match level {
        Level::Top => &[TOP, REPLICA],
        Level::Db => &[DB],
        Level::Replica => &[REPLICA],
    };
    lists
        .iter()
        .flat_map(|l| l.iter())
        .find(|(k, _)| *k == key)
        .map(|(_, why)| *why)
}

/// The line reported at start for `key` at line `no`.
pub fn notice(key: &str, no: usize, why: &str) -> String {
    format!("line {no}: `{key}` is Litestream's own and not used: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_settings_of_how_litestream_runs_are_accepted_unused() {
        assert!(instead("part-size", Level::Top).is_some());
        assert!(instead("part-size", Level::Replica).is_some());
        assert!(instead("logging", Level::Replica).is_none());
        assert!(instead("busy-timeout", Level::Db).is_some());
        for refused in [
            "age",
            "sse-kms-key-id",
            "storage-class",
            "skip-verify",
            "exec",
            "dir",
            "restore-if-db-not-exists",
            "retention",
            "snapshot",
            "snapshot-interval",
        ] {
            for level in [Level::Top, Level::Db, Level::Replica] {
                assert!(instead(refused, level).is_none(), "{refused}");
            }
        }
    }
}
