//! `state.json` in the shadow directory: what has been uploaded, shared by every process that
//! opens the database. Written by the process holding the uploader lock, atomically
//! (temporary file, fsync, rename), and created once by the first process to replicate the
//! database (never over an existing one); read by anyone.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub version: u32,
    /// The replica URL in use (never with credentials).
    pub replica: String,
    /// Every TXID up to this one is durable in the replica.
    pub uploaded_txid: u64,
    pub uploaded_at_ms: i64,
    /// The shadow-log position after the last uploaded record.
    pub cursor_seq: u64,
    pub cursor_offset: u64,
    /// The last upload error, cleared by the next successful upload.
    pub last_error: Option<String>,
    /// The replica history this database continues (SPEC 6), once it has claimed or adopted
    /// it; `None` before its first upload.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<crate::history::Owner>,
    /// Written by restore beside its output: the database is the replica's newest state at
    /// this TXID, and may continue its history from there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restored_txid: Option<u64>,
    /// A takeover claimed the replica for `owner`; its snapshot is still to be taken.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub takeover: bool,
}

impl State {
    /// What the ownership rule needs to know (`history::decide`).
    pub fn local_view(&self) -> crate::history::LocalView {
        crate::history::LocalView {
            owner: self.owner,
            uploaded_txid: self.uploaded_txid,
            restored_txid: self.restored_txid,
            takeover: self.takeover,
        }
    }
}

pub fn read(path: &Path) -> io::Result<Option<State>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", path.display()),
            )
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces `state.json` atomically: a temporary file of this process's own
/// (`state.json.<pid>-<n>.tmp`, so that two processes writing at once never rename each
/// other's), synced, then renamed into place.
pub fn write(path: &Path, state: &State) -> io::Result<()> {
    let tmp = write_tmp(path, state)?;
    fs::rename(&tmp, path).inspect_err(|_| {
        let _ = fs::remove_file(&tmp);
    })
}

/// Writes `state.json` only if there is none: false when another process got there first
/// (its state, maybe an uploader's progress, is never overwritten).
pub fn write_new(path: &Path, state: &State) -> io::Result<bool> {
    let tmp = write_tmp(path, state)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

fn write_tmp(path: &Path, state: &State) -> io::Result<PathBuf> {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("json.{}-{n}.tmp", std::process::id()));
    let written = (|| {
        let mut f: File = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
        f.sync_data()
    })();
    match written {
        Ok(()) => Ok(tmp),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(e)
        }
    }
}
