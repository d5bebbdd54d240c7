//! What a restore leaves beside its output so that the restored database can continue the
//! replica's history (SPEC 6): a shadow directory whose `state.json` names the replica and the
//! TXID restored to, and whose log starts with a `Position` record at that TXID carrying the
//! restored file's fingerprint. Opened through walrust with the same replica, the database's
//! first commit is that TXID plus one, with no snapshot, as long as nobody wrote the file in
//! between (the fingerprint proves it) and the replica has not moved on (the uploader checks,
//! `history::decide`).

use super::log::Appender;
use super::{Header, Kind, ShadowDir, State, WalPos};
use std::io;
use std::path::{Path, PathBuf};

/// Why `record` wrote nothing.
#[derive(Debug)]
pub enum NotRecorded {
    /// Something is already at the shadow directory's path (a shadow directory a removed
    /// database left, or anything of the user's), and what it holds.
    Occupied {
        dir: PathBuf,
        found: Found,
    },
    Io(io::Error),
}

/// What an occupied shadow path holds.
#[derive(Debug)]
pub enum Found {
    /// A `state.json` naming this replica URL.
    Replica(String),
    /// A directory without a `state.json` that names a replica.
    NoReplica,
    /// Something walrust cannot read as a shadow directory (a file, a damaged `state.json`).
    Unreadable,
}

impl From<io::Error> for NotRecorded {
    fn from(e: io::Error) -> Self {
        NotRecorded::Io(e)
    }
}

/// Records the restore of `db` from `replica` at `txid`. A directory already at that path is
/// never touched: the record is not written, and the caller says so.
pub fn record(db: &Path, replica: &str, txid: u64) -> Result<(), NotRecorded> {
    let root = ShadowDir::path_for(db, None);
    if std::fs::symlink_metadata(&root).is_ok() {
        let found = match super::state::read(&root.join("state.json")) {
            _ if !root.is_dir() => Found::Unreadable,
            Ok(Some(s)) if !s.replica.is_empty() => Found::Replica(s.replica),
            Ok(_) => Found::NoReplica,
            Err(_) => Found::Unreadable,
        };
        return Err(NotRecorded::Occupied { dir: root, found });
    }
    let shadow = ShadowDir::create(root)?;
    let mut log = Appender::new(shadow.log_dir());
    log.refresh()?;
    let marker = Header {
        kind: Kind::Position,
        txid,
        page_size: 0,
        commit: 0,
        n_pages: 0,
        pos: WalPos::Empty,
        timestamp_ms: crate::clock::now_ms(),
        fingerprint: super::fingerprint(db),
        continued: false,
    };
    log.append(marker, &mut |_, _| unreachable!("a marker has no pages"))?;
    super::log::sync_files(&log.files_to_sync())?;
    shadow.write_state(&State {
        version: 1,
        replica: replica.to_string(),
        uploaded_txid: txid,
        restored_txid: Some(txid),
        ..State::default()
    })?;
    Ok(())
}
