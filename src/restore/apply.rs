//! Writes a plan's files, in order, into the restore's temporary file, checking each one.
//!
//! Pages stream from the decoder to `(pgno - 1) * page_size`; after each file the database is
//! cut (or extended) to that file's commit size. Nothing is buffered but one page (two while a
//! database checksum is tracked). The decoder enforces the page rules (ascending, within the
//! commit size, never the lock page, a snapshot complete) and the file checksum; this adds the
//! chain's rules: names match headers, the chain starts with a snapshot and has no hole, one
//! page size, sizes and SHA-256s match the listing and the manifest, and, for files that carry
//! database checksums, the pre- and post-apply checksums match the database being built.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{ErrorKind, Plan, RestoreError};
use crate::ltx::{self, DatabaseChecksum, Decoder};
use crate::manifest::HashingReader;
use crate::store::{fetch, FileInfo, Layout, Store};
use crate::types::lock_page;
use crate::{PageNo, Txid};

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
    /// The database checksum so far, while every file carries one.
    sum: Option<DatabaseChecksum>,
    page: Vec<u8>,
    scratch: Vec<u8>,
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
        sum: None,
        page: Vec::new(),
        scratch: Vec::new(),
    };
    fetch::in_order(store, &plan.files, |i, reader| {
        let info = &plan.files[i];
        let reader = reader?;
        let expected = plan
            .manifest
            .as_ref()
            .and_then(|m| m.get(&info.key))
            .map(|e| e.sha256.as_str());
        db.apply(info, reader, expected)?;
        crate::failpoint::hit("restore.file_applied");
        Ok::<(), RestoreError>(())
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

    /// What to do about a damaged file: restore to the restore point before it, when the chain
    /// has one; a damaged snapshot at its start has none in this chain.
    fn advice(&self, info: &FileInfo) -> String {
        match self.txid {
            Some(end) => format!("restore to TXID {} or before", end.get()),
            None => format!(
                "it is the snapshot this restore starts from: restore to a TXID before {} if \
                 `walrust list` shows an older snapshot, else take a new snapshot from the \
                 database (SELECT walrust_snapshot())",
                info.key.max_txid.get()
            ),
        }
    }

    fn ltx_error(&self, info: &FileInfo, e: ltx::Error) -> RestoreError {
        let name = self.name(info);
        let advice = self.advice(info);
        match e {
            ltx::Error::Io(e) => RestoreError::new(
                ErrorKind::Storage,
                format!("reading {name}: {e}; check the store, then retry"),
            ),
            ltx::Error::Invalid(why) => {
                RestoreError::integrity(format!("{name} is not a valid LTX file ({why}); {advice}"))
            }
            ltx::Error::ChecksumMismatch { expected, actual } => RestoreError::integrity(format!(
                "{name}: LTX checksum mismatch (file says {expected}, content gives {actual}); \
                 the file is damaged: {advice}"
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
            None if !h.is_snapshot() => {
                return Err(bad("the chain does not start with a full snapshot".into()))
            }
            Some(end) if h.min_txid.get() > end.get() + 1 => {
                return Err(bad(format!("it does not continue TXID {end}")))
            }
            _ => {}
        }
        if self.page_size == 0 {
            self.page_size = h.page_size;
        } else if h.page_size != self.page_size {
            return Err(bad(format!(
                "page size {} differs from the snapshot's {}",
                h.page_size, self.page_size
            )));
        }

        // The rolling database checksum is tracked while every file from the snapshot on
        // carries one (LiteFS, LTX v1); Litestream and walrust files do not.
        let tracked = !h.no_checksum() && (self.txid.is_none() || self.sum.is_some());
        if !tracked {
            self.sum = None;
        } else if self.txid.is_none() {
            self.sum = Some(DatabaseChecksum::new(self.page_size));
        } else if self.txid.map(|t| t.get() + 1) == Some(h.min_txid.get()) {
            let have = self.sum.expect("tracked").value();
            if h.pre_apply_checksum != have {
                return Err(bad(format!(
                    "it applies to a database with checksum {}, but the chain so far gives {have};                      it belongs to another history",
                    h.pre_apply_checksum
                )));
            }
        }

        let old_pages = self.pages;
        let mut fill_from = old_pages + 1; // first page past the old end not yet accounted for
        while let Some(pgno) = dec
            .next_page(&mut self.page)
            .map_err(|e| self.ltx_error(info, e))?
        {
            let p = pgno.get();
            if self.sum.is_some() {
                if p <= old_pages {
                    self.read_page(p)?;
                    self.toggle_scratch(p);
                } else {
                    self.toggle_zero_pages(fill_from..p);
                    fill_from = p + 1;
                }
                let sum = self.sum.as_mut().expect("tracked");
                sum.toggle(pgno, &self.page);
            }
            self.write_page(p)?;
        }
        let trailer = dec.finish().map_err(|e| self.ltx_error(info, e))?;

        let (sha, size) = hashed
            .finish()
            .map_err(|e| self.ltx_error(info, ltx::Error::Io(e)))?;
        crate::manifest::check_read(info.size, expected_sha, &sha, size).map_err(bad)?;

        if self.sum.is_some() {
            // Pages cut off by a smaller commit leave the database; pages a larger commit adds
            // without writing them are zeros.
            for p in h.commit + 1..=old_pages {
                self.read_page(p)?;
                self.toggle_scratch(p);
            }
            self.toggle_zero_pages(fill_from.max(old_pages + 1)..h.commit + 1);
            let have = self.sum.expect("tracked").value();
            if trailer.post_apply_checksum != have {
                return Err(bad(format!(
                    "the database after it should have checksum {}, but has {have}",
                    trailer.post_apply_checksum
                )));
            }
        }

        self.file
            .set_len(h.commit as u64 * self.page_size as u64)
            .map_err(|e| self.local_io(e))?;
        self.pages = h.commit;
        self.txid = Some(h.max_txid);
        self.timestamp_ms = h.timestamp_ms;
        Ok(())
    }

    fn offset(&self, p: u32) -> u64 {
        (p as u64 - 1) * self.page_size as u64
    }

    fn write_page(&self, p: u32) -> Result<(), RestoreError> {
        self.file
            .write_all_at(&self.page, self.offset(p))
            .map_err(|e| self.local_io(e))
    }

    /// Reads page `p` of the temp file into `self.scratch`.
    fn read_page(&mut self, p: u32) -> Result<(), RestoreError> {
        self.scratch.resize(self.page_size as usize, 0);
        let off = self.offset(p);
        self.file
            .read_exact_at(&mut self.scratch, off)
            .map_err(|e| self.local_io(e))
    }

    fn toggle_scratch(&mut self, p: u32) {
        let pgno = PageNo::new(p).expect("page numbers start at 1");
        if let Some(sum) = self.sum.as_mut() {
            sum.toggle(pgno, &self.scratch);
        }
    }

    fn toggle_zero_pages(&mut self, pages: std::ops::Range<u32>) {
        if pages.is_empty() {
            return;
        }
        self.scratch.clear();
        self.scratch.resize(self.page_size as usize, 0);
        for p in pages {
            self.toggle_scratch(p);
        }
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
