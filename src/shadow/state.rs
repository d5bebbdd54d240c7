//! `state.json` in the shadow directory: what has been uploaded, shared by every process that
//! opens the database. Written only by the process holding the uploader lock, atomically
//! (temporary file, fsync, rename); read by anyone.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

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

pub fn write(path: &Path, state: &State) -> io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let mut f: File = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&serde_json::to_vec_pretty(state).expect("state serializes"))?;
    f.sync_data()?;
    fs::rename(&tmp, path)
}
