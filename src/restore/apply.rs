//! Writes a plan's files, in order, into the restore's temporary file, checking each one.
//!
//! Pages stream from the decoder to `(pgno - 1) * page_size`; after each file the database is
//! cut (or extended) to that file's commit size. Nothing is buffered but one page.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{fetch, ErrorKind, Plan, RestoreError};
use crate::ltx::{self, Decoder};
use crate::manifest::HashingReader;
use crate::store::{FileInfo, Layout, Store};
use crate::types::{is_valid_page_size, lock_page};
use crate::Txid;

/// What `run` restored.
pub(super) struct Done {
    pub txid: Txid,
    pub page_size: u32,
    pub pages: u32,
    pub timestamp_ms: i64,
}

struct Db<'a> {
    file: File,
    path: &'a Path,
    url: &'a str,
    layout: Layout,
    page_size: u32,
    pages: u32,
    txid: Option<Txid>,
    timestamp_ms: i64,
    page: Vec<u8>,
}

/// Applies every file of `plan` to `file` (the temp file at `path`) and fsyncs it.
pub(super) fn run(
    store: &dyn Store,
    plan: &Plan,
    file: File,
    path: &Path,
) -> Result<Done, RestoreError> {
    let mut db = Db {
        file,
        path,
        url: &plan.url,
        layout: store.layout(),
        page_size: 0,
        pages: 0,
        txid: None,
        timestamp_ms: 0,
        page: Vec::new(),
    };
    fetch::in_order(store, &plan.files, |i, reader| {
        let info = &plan.files[i];
        let expected = plan
            .manifest
            .as_ref()
            .and_then(|m| m.get(&info.key))
            .map(|e| e.sha256.as_str());
        db.apply(info, reader, expected)
    })?;
    db.finish()
}

impl Db<'_> {
    fn name(&self, info: &FileInfo) -> String {
        format!("{} in {}", self.layout.file_key(&info.key), self.url)
    }

    fn local_io(&self, e: std::io::Error) -> RestoreError {
        RestoreError::new(
            ErrorKind::Io,
            format!(
                "writing {}: {e}; check free space and permissions",
                self.path.display()
            ),
        )
    }

    fn ltx_error(&self, info: &FileInfo, e: ltx::Error) -> RestoreError {
        let name = self.name(info);
        match e {
            ltx::Error::Io(e) => RestoreError::new(
                ErrorKind::Storage,
                format!("reading {name}: {e}; check the store, then retry"),
            ),
            ltx::Error::Invalid(why) => RestoreError::integrity(format!(
                "{name} is not a valid LTX file ({why}); restore to a TXID before it"
            )),
            ltx::Error::ChecksumMismatch { expected, actual } => RestoreError::integrity(format!(
                "{name}: LTX checksum mismatch (file says {expected}, content gives {actual}); \
                 the file is damaged: restore to a TXID before it"
            )),
            ltx::Error::Unsupported(what) => RestoreError::new(
                ErrorKind::Io,
                format!("{name} uses {what}, which this walrust cannot read; upgrade walrust"),
            ),
        }
    }

    fn apply(
        &mut self,
        info: &FileInfo,
        reader: impl Read,
        expected_sha: Option<&str>,
    ) -> Result<(), RestoreError> {
        let name = self.name(info);
        let bad = |why: String| RestoreError::integrity(format!("{name}: {why}"));
        let mut hashed = HashingReader::new(reader);
        let mut dec = Decoder::new(&mut hashed).map_err(|e| self.ltx_error(info, e))?;
        let h = dec.header().clone();

        if (h.min_txid, h.max_txid) != (info.key.min_txid, info.key.max_txid) {
            return Err(bad(format!(
                "its header covers TXIDs {}-{}, not what its name says",
                h.min_txid, h.max_txid
            )));
        }
        match self.txid {
            None if h.min_txid != Txid::ONE => {
                return Err(bad("the chain does not start with a full snapshot".into()))
            }
            Some(end) if h.min_txid.get() > end.get() + 1 => {
                return Err(bad(format!("it does not continue TXID {end}")))
            }
            _ => {}
        }
        if !is_valid_page_size(h.page_size) {
            return Err(bad(format!("page size {} is impossible", h.page_size)));
        }
        if self.page_size == 0 {
            self.page_size = h.page_size;
        } else if h.page_size != self.page_size {
            return Err(bad(format!(
                "page size {} differs from the snapshot's {}",
                h.page_size, self.page_size
            )));
        }
        if h.commit == 0 {
            return Err(bad("its database size is 0 pages".into()));
        }

        let ps = self.page_size as u64;
        let lock = lock_page(self.page_size);
        while let Some(pgno) = dec
            .next_page(&mut self.page)
            .map_err(|e| self.ltx_error(info, e))?
        {
            if pgno.get() > h.commit {
                return Err(bad(format!(
                    "page {pgno} is past its database size of {} pages",
                    h.commit
                )));
            }
            if self.page.len() as u64 != ps {
                return Err(bad(format!("page {pgno} has {} bytes", self.page.len())));
            }
            if pgno.get() == lock {
                continue; // SQLite never stores data there; `finish` zeroes it.
            }
            self.file
                .write_all_at(&self.page, (pgno.get() as u64 - 1) * ps)
                .map_err(|e| self.local_io(e))?;
        }
        dec.finish().map_err(|e| self.ltx_error(info, e))?;

        let (sha, size) = hashed
            .finish()
            .map_err(|e| self.ltx_error(info, ltx::Error::Io(e)))?;
        if size != info.size {
            return Err(bad(format!(
                "read {size} bytes but the store lists {}",
                info.size
            )));
        }
        if let Some(want) = expected_sha {
            if sha != want {
                return Err(bad(format!(
                    "its SHA-256 is {sha} but manifest.json says {want}; the file was changed \
                     after walrust wrote it"
                )));
            }
        }

        self.file
            .set_len(h.commit as u64 * ps)
            .map_err(|e| self.local_io(e))?;
        self.pages = h.commit;
        self.txid = Some(h.max_txid);
        self.timestamp_ms = h.timestamp_ms;
        Ok(())
    }

    fn finish(self) -> Result<Done, RestoreError> {
        let ps = self.page_size as u64;
        let lock = lock_page(self.page_size);
        if self.pages >= lock {
            // Already a hole (zeros) unless something wrote there; make sure.
            self.file
                .write_all_at(&vec![0u8; ps as usize], (lock as u64 - 1) * ps)
                .map_err(|e| self.local_io(e))?;
        }
        self.file.sync_all().map_err(|e| self.local_io(e))?;
        Ok(Done {
            txid: self.txid.expect("a plan has at least one file"),
            page_size: self.page_size,
            pages: self.pages,
            timestamp_ms: self.timestamp_ms,
        })
    }
}
