//! The LTX file codec: the only code that knows LTX bytes. It owns the header and trailer
//! (`header.rs`), page frames and page rules (`page.rs`), checksums (`checksum.rs`), the page
//! index (`index.rs`), the streaming [`Encoder`] and [`Decoder`], and reading LTX v1 (`v1.rs`).
//! It does no I/O of its own beyond the `Read`/`Write` it is handed, and knows nothing of
//! stores, levels or SQLite.
//!
//! What must hold:
//! - Files we write are byte-for-byte what Go `github.com/superfly/ltx` v0.5.2 (the version in
//!   Litestream 0.5.17) writes for the same header and pages: 100-byte header, page frames with
//!   a 6-byte header (flag 0x0001) + u32 size + LZ4 block, a zero page header, the varint page
//!   index, the 16-byte trailer. `tests/ltx_compat.rs` checks this against the real binary both
//!   ways.
//! - We write `FLAG_NO_CHECKSUM` by default (as Litestream does): no database checksums, but
//!   the file checksum is always there and always verified on decode.
//! - Decoding streams in constant memory, and every decoded file has had its file checksum, page
//!   index, page order and trailer checked by [`Decoder::finish`] before anyone may trust it.
//!   Callers must not commit anything built from a file's pages before `finish` returns `Ok`.
//! - Pages ascend strictly, never include the lock page (the page holding byte 2^30; for 64 KiB
//!   pages it is 16385, for 4 KiB 262145), never exceed `commit`, and a snapshot (min TXID 1)
//!   holds every page `1..=commit` except the lock page. Restore writes zeros for the lock page.
//!
//! What `litestream restore` (0.5.17) needs from a replica, from its source (`replica.go`
//! `CalcRestorePlan`/`Restore`, `ltx` `Compactor`, `Decoder.DecodeDatabaseTo`):
//! - Files are found by *name* only (`<min>-<max>.ltx` per level directory; anything else is
//!   ignored). Restore points are file ends: `-txid N` uses only files with `max <= N` and fails
//!   ("transaction not available") unless the chain ends exactly at `N`. The plan is the newest level-9 snapshot at or before the target, then, from all
//!   levels 0–8 together, repeatedly the file that is contiguous with what it has
//!   (`min <= current_max + 1`) and reaches the highest max TXID. Level 0 does not have to start
//!   right after the snapshot as long as some level continues the chain; with no snapshot, a
//!   chain whose first file starts at TXID 1 works too.
//! - A plain restore (no `-txid`/`-timestamp`) fails with "non-contiguous ltx files" if any
//!   level still has a file starting beyond `current_max + 1` (a gap); files wholly at or below
//!   `current_max` are skipped.
//! - The chosen files are merged by the `ltx` Compactor: headers must be contiguous by the same
//!   rule and have equal page sizes; the newest version of each page wins; the result must
//!   start at TXID 1 and hold every page `1..=commit` of the *last* file except the lock page,
//!   so the snapshot plus incrementals together must cover the database.
//! - Every file's checksum is verified and its page index is parsed (but not used) during
//!   restore; the header timestamp of the last file becomes the restored timestamp.
//! - Timestamps: `-timestamp` compares the *store's* creation time (`CreatedAt`), not the header:
//!   for `file://` replicas the file's mtime (Litestream sets it to the header timestamp with
//!   `Chtimes`), for S3 the `LastModified` or the `litestream-timestamp` metadata. A restore by
//!   time takes files with `CreatedAt` strictly before the target.

mod checksum;
mod decoder;
mod encoder;
mod header;
mod index;
mod lz4frame;
mod page;
mod source;
mod v1;

#[cfg(test)]
mod tests;

use std::fmt;
use std::io;

use crate::types::Txid;

pub use checksum::{page_checksum, DatabaseChecksum, CHECKSUM_FLAG};
pub use decoder::{decode_page_frame, verify, Decoder};
pub use encoder::Encoder;
pub use header::{Header, Trailer, FLAG_NO_CHECKSUM, HEADER_SIZE, MAGIC, TRAILER_SIZE};
pub use index::{parse_page_index, read_page_index, PageIndexEntry};
pub use page::{PAGE_FLAG_SIZE, PAGE_HEADER_SIZE};

/// The LTX format version written (Go `ltx.Version`).
pub const VERSION: u32 = 3;

/// Errors of the codec. `Invalid` and `ChecksumMismatch` mean the bytes are bad (an integrity
/// problem); `Io` means reading or writing failed; `Unsupported` means a valid file we cannot
/// handle.
#[derive(Debug)]
pub enum Error {
    Io(io::Error),
    Invalid(String),
    ChecksumMismatch {
        expected: crate::types::Checksum,
        actual: crate::types::Checksum,
    },
    Unsupported(String),
}

impl Error {
    /// True if the file's bytes are bad, as opposed to the I/O failing.
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Invalid(_) | Error::ChecksumMismatch { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io(e) => write!(f, "ltx: i/o error: {e}"),
            Error::Invalid(m) => write!(f, "ltx: invalid file: {m}"),
            Error::ChecksumMismatch { expected, actual } => write!(
                f,
                "ltx: file checksum mismatch: trailer says {expected}, content gives {actual}"
            ),
            Error::Unsupported(m) => write!(f, "ltx: unsupported: {m}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// Maps a short read inside a file to `Invalid` (the file is cut off); other errors stay `Io`.
pub(crate) fn truncated(e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::UnexpectedEof {
        Error::Invalid("file is truncated".into())
    } else {
        Error::Io(e)
    }
}

/// `<min:016x>-<max:016x>.ltx`, the name of a file in every level and store.
pub fn file_name(min: Txid, max: Txid) -> String {
    format!("{min}-{max}.ltx")
}

/// The strict inverse of [`file_name`]: exactly 16 lower-case hex digits each side, non-zero,
/// `min <= max`. Anything else (upper case, `.tmp` files, other lengths) is not an LTX name.
pub fn parse_file_name(name: &str) -> Option<(Txid, Txid)> {
    let rest = name.strip_suffix(".ltx")?;
    let (a, b) = rest.split_once('-')?;
    let lower = |s: &str| s.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    if !lower(a) || !lower(b) {
        return None;
    }
    let (min, max) = (Txid::parse_hex(a)?, Txid::parse_hex(b)?);
    (min <= max).then_some((min, max))
}
