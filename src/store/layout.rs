//! The one place that turns (level, TXID range) into an object key and back.
//!
//! Every store implementation calls this; none formats a key itself. Litestream lays out its
//! backends differently (its S3 client inlines a `%04x` level in four places) and walrust
//! follows it per backend:
//!
//! - `Fs`: `ltx/<level in decimal>/<min:016x>-<max:016x>.ltx`
//! - `S3`: `<level as %04x>/<min:016x>-<max:016x>.ltx`
//!
//! and `manifest.json` beside them in both. Keys here are relative to the replica's root (the
//! directory, or the bucket prefix); `join`/`strip_prefix` add and remove the prefix. A key that
//! does not parse back is not ours: callers skip it with a warning and never follow it.

use super::FileKey;
use crate::ltx;

/// Name of walrust's index of the files it wrote, at the root of every replica.
pub const MANIFEST_KEY: &str = "manifest.json";

/// How a backend names its LTX files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Litestream's `file` backend: `ltx/<level>/<name>`.
    Fs,
    /// Litestream's `s3` backend: `<level:04x>/<name>`.
    S3,
}

impl Layout {
    /// The folder of one level, relative to the replica root, without a trailing slash.
    pub fn level_dir(self, level: u32) -> String {
        match self {
            Layout::Fs => format!("ltx/{level}"),
            Layout::S3 => format!("{level:04x}"),
        }
    }

    /// The key of an LTX file, relative to the replica root.
    pub fn file_key(self, key: &FileKey) -> String {
        format!(
            "{}/{}",
            self.level_dir(key.level),
            ltx::file_name(key.min_txid, key.max_txid)
        )
    }

    /// Parses a key relative to the replica root; `None` for anything `file_key` would not
    /// have produced (other files, other levels' spellings, `..`, temp files).
    pub fn parse_file_key(self, rel: &str) -> Option<FileKey> {
        let (dir, name) = rel.rsplit_once('/')?;
        let level = match self {
            Layout::Fs => {
                let digits = dir.strip_prefix("ltx/")?;
                // Decimal without leading zeros, as Go's strconv.Itoa writes it.
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || (digits.len() > 1 && digits.starts_with('0'))
                {
                    return None;
                }
                digits.parse::<u32>().ok()?
            }
            Layout::S3 => {
                if dir.len() != 4 || !dir.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return None;
                }
                u32::from_str_radix(dir, 16).ok()?
            }
        };
        let (min, max) = ltx::parse_file_name(name)?;
        FileKey::new(level, min, max)
    }

    /// `prefix/rel`, or `rel` when the prefix is empty.
    pub fn join(prefix: &str, rel: &str) -> String {
        if prefix.is_empty() {
            rel.to_string()
        } else {
            format!("{prefix}/{rel}")
        }
    }

    /// The part of a full key under `prefix`, or `None` if the key is outside it.
    pub fn strip_prefix<'a>(prefix: &str, full: &'a str) -> Option<&'a str> {
        if prefix.is_empty() {
            return Some(full);
        }
        full.strip_prefix(prefix)?.strip_prefix('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::SNAPSHOT_LEVEL;
    use crate::Txid;

    fn key(level: u32, min: u64, max: u64) -> FileKey {
        FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap()
    }

    #[test]
    fn builds_litestream_keys_per_backend() {
        let k = key(SNAPSHOT_LEVEL, 1, 0x2a);
        assert_eq!(
            Layout::Fs.file_key(&k),
            "ltx/9/0000000000000001-000000000000002a.ltx"
        );
        assert_eq!(
            Layout::S3.file_key(&k),
            "0009/0000000000000001-000000000000002a.ltx"
        );
        assert_eq!(Layout::Fs.level_dir(0), "ltx/0");
        assert_eq!(Layout::S3.level_dir(1), "0001");
    }

    #[test]
    fn parses_back_only_what_it_builds() {
        for layout in [Layout::Fs, Layout::S3] {
            for k in [key(0, 1, 1), key(3, 5, 9), key(9, 1, u64::MAX)] {
                assert_eq!(layout.parse_file_key(&layout.file_key(&k)), Some(k));
            }
        }
        for bad in [
            "ltx/0/0000000000000001-0000000000000001.ltx.tmp",
            "ltx/00/0000000000000001-0000000000000001.ltx",
            "ltx/10/0000000000000001-0000000000000001.ltx",
            "ltx/0/../0000000000000001-0000000000000001.ltx",
            "ltx/0/0000000000000002-0000000000000001.ltx",
            "0000/0000000000000001-0000000000000001.ltx",
            "manifest.json",
        ] {
            assert_eq!(Layout::Fs.parse_file_key(bad), None, "{bad}");
        }
        for bad in [
            "ltx/0/0000000000000001-0000000000000001.ltx",
            "000A/0000000000000001-0000000000000001.ltx",
            "0010/0000000000000001-0000000000000001.ltx",
            "x/0000/0000000000000001-0000000000000001.ltx",
        ] {
            assert_eq!(Layout::S3.parse_file_key(bad), None, "{bad}");
        }
    }

    #[test]
    fn prefixes_join_and_strip() {
        assert_eq!(Layout::join("", "manifest.json"), "manifest.json");
        assert_eq!(Layout::join("a/b", "0000/x"), "a/b/0000/x");
        assert_eq!(Layout::strip_prefix("a/b", "a/b/0000/x"), Some("0000/x"));
        assert_eq!(Layout::strip_prefix("a/b", "a/bc/0000/x"), None);
        assert_eq!(Layout::strip_prefix("a/b", "other/0000/x"), None);
        assert_eq!(Layout::strip_prefix("", "0000/x"), Some("0000/x"));
    }
}
