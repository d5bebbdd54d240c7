//! The LTX merge: several LTX files with contiguous (or overlapping) TXID ranges, of any levels,
//! become one file that restores to the same database as applying them in order.
//!
//! Semantics, as Litestream's `ltx` Compactor has them: the newest image of a page wins; pages
//! past the final commit are dropped; the lock page is never written; the output header takes
//! the page size and min TXID of the first input, the max TXID, commit and timestamp of the last,
//! and `FLAG_NO_CHECKSUM` (no database checksums; the file checksum is always there). One case
//! the Go compactor leaves out and this merge handles: a page cut off by a shrinking commit in
//! the middle of the run, then back inside a later, larger commit without being written again,
//! is zeros when the inputs are applied one by one (restore extends the file with zeros), so the
//! merged file carries a zero page for it. SQLite always writes the pages it grows into, so real
//! replicas do not have this case; the merge is exact either way.
//!
//! How, in bounded memory: the inputs are decoded one at a time, newest first. A page is kept
//! the first time it is seen (the newest image) unless a commit at or after its file cut it off;
//! kept pages are appended, uncompressed, to a local spool file, and a map remembers page number
//! → spool slot. Then the output is encoded in page order, reading each page back from the spool.
//! Every input's file checksum (and its size and manifest SHA-256) is verified before anything
//! is returned: a damaged input fails the merge, it is never laundered into a valid file.
//!
//! Bounds: memory is O(distinct pages) at about 16–24 bytes per page (the page map, plus the
//! encoder's varint page index), one page buffer and one decoder (a 64 KiB read buffer), never
//! the page images; inputs download a few at a time ahead of the one being decoded, within
//! `store::fetch`'s memory budget, whatever the number of inputs. Local disk:
//! the spool holds each distinct page once (at most the database's size), plus the output file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{CompactError, TempPath};
use crate::ltx::{self, Decoder, Encoder, Header};
use crate::manifest::{Hasher64, HashingReader, Manifest};
use crate::restore::ErrorKind;
use crate::store::{fetch, FileInfo, FileKey, FileReader, Store};
use crate::types::lock_page;
use crate::upload::batch::HashingWriter;
use crate::{Checksum, PageNo};

/// A merged file on local disk, ready to be written to the store.
#[derive(Debug)]
pub struct Merged {
    /// The encoded file; deleted when this is dropped.
    pub file: TempPath,
    pub header: Header,
    /// Bytes in the file.
    pub size: u64,
    /// `manifest::sha256_64` of the file.
    pub sha256: String,
    /// Pages written (zero pages included).
    pub pages: u32,
}

/// Merges `inputs` (in TXID order, each starting at or before the TXID after the previous one's
/// end and reaching past it) into a file under `work_dir`. Inputs that `manifest` names must
/// match its SHA-256; every input must match its listed size and its LTX checksum.
pub fn merge(
    store: &dyn Store,
    inputs: &[FileInfo],
    manifest: Option<&Manifest>,
    work_dir: &Path,
) -> Result<Merged, CompactError> {
    check_order(inputs)?;
    let url = store.describe();
    let spool_path = TempPath::new(work_dir, "spool")?;
    let spool = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(spool_path.path())
        .map_err(|e| local_io(&spool_path, e))?;

    let mut spooled = Spooled {
        pages: BTreeMap::new(),
        spool,
        spool_path: &spool_path,
        page_size: 0,
        floor: u32::MAX,
    };
    let mut last: Option<Header> = None;
    let mut first_min = None;
    // Newest first; downloads run a few files ahead (`store::fetch`), decoding stays in order.
    let newest_first: Vec<FileInfo> = inputs.iter().rev().copied().collect();
    fetch::in_order(store, &newest_first, |i, reader| {
        let info = &newest_first[i];
        let expected_sha = manifest
            .and_then(|m| m.get(&info.key))
            .map(|e| e.sha256.as_str());
        let reader = reader.map_err(CompactError::from)?;
        let h = spooled.add(store, info, reader, expected_sha, &url)?;
        if i == 0 {
            last = Some(h.clone());
        }
        first_min = Some(h.min_txid);
        Ok::<(), CompactError>(())
    })?;
    let last = last.expect("inputs are not empty");
    let header = Header::new(
        spooled.page_size,
        last.commit,
        first_min.expect("inputs are not empty"),
        last.max_txid,
        last.timestamp_ms,
    );
    spooled.encode(header, work_dir)
}

fn check_order(inputs: &[FileInfo]) -> Result<(), CompactError> {
    if inputs.is_empty() {
        return Err(CompactError::new(
            ErrorKind::Invalid,
            "merge needs at least one input",
        ));
    }
    for w in inputs.windows(2) {
        let (a, b) = (w[0].key, w[1].key);
        if b.level == crate::store::SNAPSHOT_LEVEL
            || b.min_txid.get() > a.max_txid.get() + 1
            || b.max_txid <= a.max_txid
        {
            return Err(CompactError::new(
                ErrorKind::Invalid,
                format!("cannot merge {a} then {b}: their TXID ranges do not continue each other"),
            ));
        }
    }
    Ok(())
}

fn local_io(path: &TempPath, e: std::io::Error) -> CompactError {
    CompactError::new(
        ErrorKind::Io,
        format!(
            "writing {}: {e}; check free space and permissions there (set the temporary \
             directory with TMPDIR)",
            path.path().display()
        ),
    )
}

/// The newest image of each page seen so far, in the spool.
struct Spooled<'a> {
    /// Page number → slot in the spool (slot × page size is its offset).
    pages: BTreeMap<u32, u32>,
    spool: File,
    spool_path: &'a TempPath,
    page_size: u32,
    /// The smallest commit among the inputs read so far (the newer ones): pages above it were
    /// cut off after the input being read, so its images of them are stale.
    floor: u32,
}

impl Spooled<'_> {
    /// Decodes one input (newer inputs were added before it) and spools the pages it wins.
    fn add(
        &mut self,
        store: &dyn Store,
        info: &FileInfo,
        reader: FileReader,
        expected_sha: Option<&str>,
        url: &str,
    ) -> Result<Header, CompactError> {
        let name = format!("{} in {url}", store.layout().file_key(&info.key));
        let mut hashed = HashingReader::new(reader);
        let mut dec = Decoder::new(&mut hashed).map_err(|e| ltx_error(&name, e))?;
        let h = dec.header().clone();
        let bad = |why: String| CompactError::integrity(format!("{name}: {why}"));
        if (h.min_txid, h.max_txid) != (info.key.min_txid, info.key.max_txid) {
            return Err(bad(format!(
                "its header covers TXIDs {}-{}, not what its name says",
                h.min_txid, h.max_txid
            )));
        }
        if self.page_size == 0 {
            self.page_size = h.page_size;
        } else if h.page_size != self.page_size {
            return Err(bad(format!(
                "page size {} differs from the next file's {}",
                h.page_size, self.page_size
            )));
        }
        self.floor = self.floor.min(h.commit);
        let mut buf = Vec::new();
        while let Some(pgno) = dec.next_page(&mut buf).map_err(|e| ltx_error(&name, e))? {
            let p = pgno.get();
            if p > self.floor || self.pages.contains_key(&p) {
                continue;
            }
            let slot = self.pages.len() as u32;
            self.spool
                .write_all_at(&buf, slot as u64 * self.page_size as u64)
                .map_err(|e| local_io(self.spool_path, e))?;
            self.pages.insert(p, slot);
        }
        dec.finish().map_err(|e| ltx_error(&name, e))?;
        let (sha, size) = hashed
            .finish()
            .map_err(|e| ltx_error(&name, ltx::Error::Io(e)))?;
        crate::manifest::check_read(info.size, expected_sha, &sha, size).map_err(bad)?;
        Ok(h)
    }

    /// Writes the output: spooled pages and zero pages for pages cut off and never rewritten,
    /// in page order.
    fn encode(self, header: Header, work_dir: &Path) -> Result<Merged, CompactError> {
        let out_path = TempPath::new(work_dir, "ltx")?;
        let file = File::create_new(out_path.path()).map_err(|e| local_io(&out_path, e))?;
        let writer = HashingWriter {
            inner: BufWriter::new(file),
            hasher: Hasher64::new(),
            written: 0,
        };
        let invalid = |e: ltx::Error| {
            CompactError::new(
                ErrorKind::Io,
                format!(
                    "encoding the merged file {}: {e}",
                    out_path.path().display()
                ),
            )
        };
        let mut enc = Encoder::new(writer, header.clone()).map_err(invalid)?;
        let ps = self.page_size as usize;
        let lock = lock_page(self.page_size);
        let zero = vec![0u8; ps];
        let mut page = vec![0u8; ps];
        // Pages above the smallest commit of the run and at or below the last one were cut
        // off at some point; those no input wrote afterwards are zeros.
        let mut next_zero = self.floor.saturating_add(1);
        let pages = self.pages.iter().map(|(&p, &slot)| (p, Some(slot)));
        for (p, slot) in pages.chain([(u32::MAX, None)]) {
            while next_zero < p && next_zero <= header.commit {
                if next_zero != lock {
                    let pgno = PageNo::new(next_zero).expect("above 0");
                    enc.write_page(pgno, &zero).map_err(invalid)?;
                }
                next_zero += 1;
            }
            let Some(slot) = slot else { break };
            next_zero = next_zero.max(p.saturating_add(1));
            self.spool
                .read_exact_at(&mut page, slot as u64 * ps as u64)
                .map_err(|e| local_io(self.spool_path, e))?;
            let pgno = PageNo::new(p).expect("decoded page numbers are not 0");
            enc.write_page(pgno, &page).map_err(invalid)?;
        }
        let pages = enc.page_count();
        let (mut writer, _trailer) = enc.finish(Checksum(0)).map_err(invalid)?;
        // No fsync: the store makes its own copy durable.
        writer.flush().map_err(|e| local_io(&out_path, e))?;
        Ok(Merged {
            file: out_path,
            header,
            size: writer.written,
            sha256: writer.hasher.finish(),
            pages,
        })
    }
}

fn ltx_error(name: &str, e: ltx::Error) -> CompactError {
    match e {
        ltx::Error::Io(e) => CompactError::new(
            ErrorKind::Storage,
            format!("reading {name}: {e}; check the store, then retry"),
        ),
        ltx::Error::Unsupported(what) => CompactError::new(
            ErrorKind::Io,
            format!("{name} uses {what}, which this walrust cannot read; upgrade walrust"),
        ),
        e => CompactError::integrity(format!(
            "{name} is damaged ({e}); nothing was compacted or removed. Run `walrust verify`"
        )),
    }
}

/// The key a merge of `inputs` into `level` gets.
pub fn output_key(level: u32, inputs: &[FileInfo]) -> FileKey {
    FileKey::new(
        level,
        inputs[0].key.min_txid,
        inputs[inputs.len() - 1].key.max_txid,
    )
    .expect("inputs ascend")
}
