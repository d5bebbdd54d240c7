//! `manifest.json`: walrust's index of the LTX files it wrote to a replica.
//!
//! Owns: the JSON format (stable field names, a `version`), the SHA-256-truncated-to-64-bits
//! file hash and its streaming helpers, and `update`, the read-modify-conditional-write loop
//! that lets two writers add and remove entries without losing each other's.
//!
//! The manifest is an index, not the truth: the store's listing says which files exist. Restore
//! checks every entry against the listing (an entry without a file is an integrity error) and
//! every downloaded file against its entry's hash. So the writer's order is: make a file
//! durable, then add its entry; remove an entry, then delete its file. Compaction merges and
//! removes only files the manifest names: a file not named yet may be in an uploader's backlog
//! (docs/DESIGN.md, decision 11).
//!
//! Parts (`parts`): keeping the manifest current must not cost more as the replica ages (SPEC
//! 5), so a level's oldest entries are moved, 32 at a time, into immutable part objects under
//! `manifest/` that the manifest names with their own hash (see `parts`), packed at about 14
//! bytes an entry (`packed`); the manifest itself stays a few kilobytes. `load` returns every entry (parts read back and checked);
//! `load_head` only the manifest object, for its owner and newest TXID.
//!
//! Format (version 2; version 1 had no `history`/`generation`; version 3 adds `parts`, version
//! 4 packs the parts of entries):
//! ```json
//! {"version":2,"history":"5f0c3a9e1b2d4c6f","generation":1,"files":[{"key":"ltx/9/0000000000000001-0000000000000020.ltx","level":9,
//!   "min_txid":"0000000000000001","max_txid":"0000000000000020",
//!   "created_at":"2026-11-28T10:49:56.123Z","size":4242,"sha256":"9f86d081884c7d65"}]}
//! ```
//! `key` is relative to the replica root (the directory or bucket prefix), in the store's
//! layout. Entries are sorted by (level, min_txid, max_txid); one entry per file.

pub mod cadence;
pub mod packed;
pub mod parts;

pub use parts::PARTS_DIR;

use std::io::{self, Read, Write};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::history::{HistoryId, Owner};
use crate::store::{ETag, FileInfo, FileKey, Layout, Store, StoreError, MANIFEST_KEY};
use crate::Txid;

/// The format version this walrust writes. A manifest with a higher version is not rewritten.
/// Version 2 added the owner (`history`, `generation`): a walrust that knows only version 1
/// refuses to rewrite it, so it cannot drop the owner. Version 3 added parts; version 4 writes
/// parts of entries packed (`packed`), which a walrust that knows only version 3 cannot read.
pub const VERSION: u32 = 4;

/// The version written while a manifest has no parts: walrust releases that know version 2
/// can still rewrite it.
const VERSION_WITHOUT_PARTS: u32 = 2;

/// How many times `update` re-reads and retries after losing a conditional write.
const UPDATE_ATTEMPTS: u32 = 50;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub version: u32,
    /// Whose history the replica holds (see `history`); absent in version 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<HistoryId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u64>,
    /// Parts holding older entries (`parts`): after `load`, already read into `files`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<parts::PartRef>,
    #[serde(default)]
    pub files: Vec<Entry>,
    /// Set anew by each sweep of unnamed parts (`parts::sweep_unnamed`), so that the sweep's
    /// write changes the manifest's version even on a store whose ETag is the content's hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<String>,
    /// Files a compaction stopped naming and has not deleted yet (their keys, as in
    /// `Entry::key`): a compaction killed in between leaves them here, and the next run
    /// deletes them instead of leaving them unnamed for good (`compact`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removing: Vec<String>,
}

/// One file walrust wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub key: String,
    pub level: u32,
    #[serde(with = "txid_hex")]
    pub min_txid: Txid,
    #[serde(with = "txid_hex")]
    pub max_txid: Txid,
    /// The LTX header timestamp, ms since the epoch; RFC 3339 in the JSON.
    #[serde(rename = "created_at", with = "rfc3339")]
    pub created_at_ms: i64,
    pub size: u64,
    /// `sha256_64` of the file's bytes.
    pub sha256: String,
}

impl Entry {
    /// The entry for a file just written (`info` as `Store::write` returned it).
    pub fn new(layout: Layout, info: &FileInfo, sha256: String) -> Entry {
        Entry {
            key: layout.file_key(&info.key),
            level: info.key.level,
            min_txid: info.key.min_txid,
            max_txid: info.key.max_txid,
            created_at_ms: info.created_at_ms,
            size: info.size,
            sha256,
        }
    }

    /// `None` if the level or range is impossible (a hand-edited manifest).
    pub fn file_key(&self) -> Option<FileKey> {
        FileKey::new(self.level, self.min_txid, self.max_txid)
    }
}

impl Manifest {
    pub fn new() -> Manifest {
        Manifest {
            version: VERSION_WITHOUT_PARTS,
            history: None,
            generation: None,
            parts: Vec::new(),
            files: Vec::new(),
            sweep: None,
            removing: Vec::new(),
        }
    }

    /// The replica's owner, if the manifest names one.
    pub fn owner(&self) -> Option<Owner> {
        Some(Owner {
            history: self.history?,
            generation: self.generation?,
        })
    }

    pub fn set_owner(&mut self, o: Owner) {
        self.history = Some(o.history);
        self.generation = Some(o.generation);
    }

    /// The newest TXID any entry or part names (0 for none).
    pub fn max_txid(&self) -> u64 {
        let files = self.files.iter().map(|e| e.max_txid.get());
        let parts = self.parts.iter().map(|p| p.max_txid.get());
        files.chain(parts).max().unwrap_or(0)
    }

    /// Parses and checks a manifest body.
    pub fn parse(body: &[u8]) -> Result<Manifest, StoreError> {
        let invalid = |why: String| StoreError::Invalid {
            what: format!("reading {MANIFEST_KEY}"),
            why,
        };
        let m: Manifest = serde_json::from_slice(body).map_err(|e| {
            invalid(format!(
                "it is not a valid walrust manifest ({e}); move it aside: the replica's files \
                 stay restorable without it"
            ))
        })?;
        if let Some(bad) = m
            .files
            .iter()
            .find(|e| e.file_key().is_none() || !is_hex16(&e.sha256))
        {
            return Err(invalid(format!(
                "entry {} has an impossible level, TXID range or sha256; move the manifest aside",
                bad.key
            )));
        }
        if let Some(bad) = m.parts.iter().find(|p| !p.plausible()) {
            return Err(invalid(format!(
                "part {:?} has an impossible key, level, TXID range or sha256; move the manifest aside",
                bad.key
            )));
        }
        Ok(m)
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec(self).expect("a manifest always serializes");
        v.push(b'\n');
        v
    }

    pub fn get(&self, key: &FileKey) -> Option<&Entry> {
        self.files
            .binary_search_by_key(key, |e| e.file_key().expect("checked at parse"))
            .ok()
            .map(|i| &self.files[i])
    }

    /// Adds (or replaces) entries and removes others, keeping the order.
    pub fn apply(&mut self, add: &[Entry], remove: &[FileKey]) {
        self.files
            .retain(|e| !remove.contains(&e.file_key().expect("checked at parse")));
        for a in add {
            let k = a.file_key().expect("entries are built from file keys");
            match self
                .files
                .binary_search_by_key(&k, |e| e.file_key().expect("checked at parse"))
            {
                Ok(i) => self.files[i] = a.clone(),
                Err(i) => self.files.insert(i, a.clone()),
            }
        }
    }
}

fn is_hex16(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Reads the manifest with every entry, its parts read back and checked (`parts::expand`);
/// `None` if the replica has none.
pub fn load(store: &dyn Store) -> Result<Option<(Manifest, ETag)>, StoreError> {
    parts::load_full(store)
}

/// Reads the manifest object alone: its owner, inline entries and part references.
pub fn load_head(store: &dyn Store) -> Result<Option<(Manifest, ETag)>, StoreError> {
    match store.get_manifest()? {
        None => Ok(None),
        Some(obj) => Ok(Some((Manifest::parse(&obj.body)?, obj.etag))),
    }
}

/// Adds `add` and removes `remove` with a conditional write, re-reading and retrying when
/// another writer got there first, so neither loses the other's entries. Returns the manifest
/// object as written (the entries of its parts are not read: `load` reads them). Whoever owns the replica stays its owner (compaction, tests).
pub fn update(
    store: &dyn Store,
    add: &[Entry],
    remove: &[FileKey],
) -> Result<Manifest, StoreError> {
    update_as(store, Expect::Any, add, remove).map(|(m, _)| m)
}

/// What a writer keeps of its own manifest write: the version it made (so that a later `HEAD`
/// finding it unchanged proves nobody wrote since) and the object's size (`cadence`).
#[derive(Clone, Debug)]
pub struct Written {
    pub version: ETag,
    pub bytes: u64,
}

impl Written {
    pub fn of(m: &Manifest, version: ETag) -> Written {
        Written {
            version,
            bytes: m.to_json().len() as u64,
        }
    }
}

/// Whose manifest an update may change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Anyone's (compaction, which adds and removes files without writing history).
    Any,
    /// Only this owner's: anything else is `StoreError::NotOwner`, and nothing is written.
    Owner(Owner),
    /// Claim the replica for this owner: it must have no owner yet, or be this history's
    /// previous generation (a takeover).
    Claim(Owner),
}

/// `update` with an ownership check (see `Expect`); returns the manifest as written and its
/// version.
pub fn update_as(
    store: &dyn Store,
    expect: Expect,
    add: &[Entry],
    remove: &[FileKey],
) -> Result<(Manifest, ETag), StoreError> {
    update_then(store, expect, add, remove, &|_| {})
}

/// Stops naming `keys` and lists them in `removing`, in one write: the files are deleted next
/// (`removed` then says so), and if that never happens the next compaction does it.
pub fn unname_for_removal(store: &dyn Store, keys: &[FileKey]) -> Result<Manifest, StoreError> {
    let names: Vec<String> = keys.iter().map(|k| store.layout().file_key(k)).collect();
    let add_names = |m: &mut Manifest| {
        for n in &names {
            if !m.removing.contains(n) {
                m.removing.push(n.clone());
            }
        }
    };
    update_then(store, Expect::Any, &[], keys, &add_names).map(|(m, _)| m)
}

/// The files `names` (from `removing`) are deleted: no longer listed there.
pub fn removed(store: &dyn Store, names: &[String]) -> Result<(), StoreError> {
    let drop_names = |m: &mut Manifest| m.removing.retain(|n| !names.contains(n));
    update_then(store, Expect::Any, &[], &[], &drop_names).map(|_| ())
}

fn update_then(
    store: &dyn Store,
    expect: Expect,
    add: &[Entry],
    remove: &[FileKey],
    finish: &dyn Fn(&mut Manifest),
) -> Result<(Manifest, ETag), StoreError> {
    for attempt in 0..UPDATE_ATTEMPTS {
        let (mut m, etag) = match load_head(store)? {
            Some((m, etag)) => (m, Some(etag)),
            None => (Manifest::new(), None),
        };
        if m.version > VERSION {
            return Err(StoreError::Invalid {
                what: format!("updating {MANIFEST_KEY} in {}", store.describe()),
                why: format!(
                    "it has format version {}, newer than this walrust's {VERSION}; upgrade \
                     walrust",
                    m.version
                ),
            });
        }
        check_owner(store, &m, expect)?;
        if let Expect::Claim(o) = expect {
            m.set_owner(o);
        }
        let mut edit = parts::Edit::default();
        match edit.apply(store, &mut m, add, remove) {
            Ok(()) => {}
            // A part this edit needed went away: another writer changed the manifest.
            Err(StoreError::NotFound { .. }) => {
                edit.abandon(store);
                backoff(attempt);
                continue;
            }
            Err(e) => {
                edit.abandon(store);
                return Err(e);
            }
        }
        finish(&mut m);
        m.version = if m.parts.is_empty() {
            VERSION_WITHOUT_PARTS
        } else {
            VERSION
        };
        match store.put_manifest(&m.to_json(), etag.as_ref()) {
            Ok(new) => {
                edit.commit(store);
                return Ok((m, new));
            }
            Err(StoreError::Conflict { .. }) => {
                edit.abandon(store);
                backoff(attempt)
            }
            // Any other failure may have come after the store took the write (an answer lost
            // on the way back): the parts it names stay, at worst as leftovers.
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Conflict {
        what: format!(
            "updating {MANIFEST_KEY} in {} ({UPDATE_ATTEMPTS} attempts)",
            store.describe()
        ),
    })
}

fn check_owner(store: &dyn Store, m: &Manifest, expect: Expect) -> Result<(), StoreError> {
    let found = m.owner();
    let ok = match expect {
        Expect::Any => true,
        Expect::Owner(o) => found == Some(o),
        Expect::Claim(o) => match found {
            None => true,
            Some(f) => f.history == o.history && f.generation + 1 == o.generation,
        },
    };
    if ok {
        return Ok(());
    }
    Err(StoreError::NotOwner {
        what: format!("updating {MANIFEST_KEY} in {}", store.describe()),
        found,
    })
}

/// Sleeps a little longer each attempt, with jitter so two losers do not collide again.
fn backoff(attempt: u32) {
    let jitter = (std::process::id() as u64)
        .wrapping_mul(31)
        .wrapping_add(crate::clock::now_ms() as u64)
        % 5;
    let ms = (1u64 << attempt.min(6)) + jitter;
    std::thread::sleep(Duration::from_millis(ms));
}

/// Checks a file read back from the store: all the bytes the listing promised, and the hash
/// `manifest.json` recorded for it (if it names the file). The message says what differs.
pub fn check_read(
    listed_size: u64,
    expected_sha: Option<&str>,
    sha: &str,
    size: u64,
) -> Result<(), String> {
    if size != listed_size {
        return Err(format!(
            "read {size} bytes but the store lists {listed_size}"
        ));
    }
    match expected_sha {
        Some(want) if sha != want => Err(format!(
            "its SHA-256 is {sha} but manifest.json says {want}; the file was changed after walrust wrote it"
        )),
        _ => Ok(()),
    }
}

/// SHA-256 of `bytes`, truncated to its first 64 bits, as 16 lower-case hex digits.
pub fn sha256_64(bytes: &[u8]) -> String {
    let mut h = Hasher64::new();
    h.update(bytes);
    h.finish()
}

/// Streaming `sha256_64`; also a `Write` sink.
#[derive(Clone, Default)]
pub struct Hasher64(Sha256);

impl Hasher64 {
    pub fn new() -> Hasher64 {
        Hasher64(Sha256::new())
    }

    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }

    pub fn finish(self) -> String {
        let digest = self.0.finalize();
        digest[..8].iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl Write for Hasher64 {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher64,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> HashingReader<R> {
        HashingReader {
            inner,
            hasher: Hasher64::new(),
            bytes: 0,
        }
    }

    /// Reads whatever is left, then returns (`sha256_64`, total bytes read).
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        Ok((self.hasher.finish(), self.bytes))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// `sha256_64` and size of a local file, streamed.
pub fn sha256_64_file(path: &Path) -> io::Result<(String, u64)> {
    HashingReader::new(std::fs::File::open(path)?).finish()
}

mod txid_hex {
    use super::Txid;
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Txid, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(t)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Txid, D::Error> {
        let s = String::deserialize(d)?;
        Txid::parse_hex(&s).ok_or_else(|| D::Error::custom(format!("bad TXID {s:?}")))
    }
}

mod rfc3339 {
    use crate::clock::{format_rfc3339_ms, parse_rfc3339};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_rfc3339_ms(*ms))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        parse_rfc3339(&s).ok_or_else(|| D::Error::custom(format!("bad time {s:?}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An entry of a file at `level` covering `min..=max` (for the tests of `parts` too).
    pub(super) fn entry(level: u32, min: u64, max: u64) -> Entry {
        let key = FileKey::new(level, Txid::new(min).unwrap(), Txid::new(max).unwrap()).unwrap();
        let info = FileInfo {
            key,
            size: 100 + max,
            created_at_ms: 1_795_862_996_123,
        };
        Entry::new(Layout::Fs, &info, sha256_64(&max.to_be_bytes()))
    }

    #[test]
    fn sha256_64_is_the_first_eight_bytes_of_sha256() {
        // SHA-256("abc") = ba7816bf8f01cfea 414140de5dae2223 ...
        assert_eq!(sha256_64(b"abc"), "ba7816bf8f01cfea");
        let mut r = HashingReader::new(&b"abc"[..]);
        let mut first = [0u8; 1];
        r.read_exact(&mut first).unwrap();
        assert_eq!(r.finish().unwrap(), ("ba7816bf8f01cfea".to_string(), 3));
    }

    #[test]
    fn json_has_stable_field_names() {
        let mut m = Manifest::new();
        m.apply(&[entry(9, 1, 0x20)], &[]);
        let json = String::from_utf8(m.to_json()).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"version\":2,\"files\":[{{\"key\":\"ltx/9/0000000000000001-0000000000000020.ltx\",\
                 \"level\":9,\"min_txid\":\"0000000000000001\",\"max_txid\":\"0000000000000020\",\
                 \"created_at\":\"2026-11-28T10:49:56.123Z\",\"size\":132,\"sha256\":\"{}\"}}]}}\n",
                sha256_64(&0x20u64.to_be_bytes())
            )
        );
        assert_eq!(Manifest::parse(json.as_bytes()).unwrap(), m);
    }

    #[test]
    fn apply_keeps_order_replaces_and_removes() {
        let mut m = Manifest::new();
        m.apply(&[entry(0, 3, 4), entry(9, 1, 2), entry(0, 1, 2)], &[]);
        let keys: Vec<_> = m.files.iter().map(|e| e.file_key().unwrap()).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        let mut replaced = entry(0, 3, 4);
        replaced.size = 1;
        m.apply(&[replaced], &[entry(9, 1, 2).file_key().unwrap()]);
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.get(&entry(0, 3, 4).file_key().unwrap()).unwrap().size, 1);
        assert!(m.get(&entry(9, 1, 2).file_key().unwrap()).is_none());
    }

    #[test]
    fn parse_rejects_garbage_with_advice() {
        let e = Manifest::parse(b"{not json").unwrap_err().to_string();
        assert!(e.contains("move it aside"), "{e}");
        let bad = br#"{"version":1,"files":[{"key":"k","level":12,"min_txid":"0000000000000001",
            "max_txid":"0000000000000001","created_at":"2026-01-01T00:00:00Z","size":1,
            "sha256":"0123456789abcdef"}]}"#;
        assert!(Manifest::parse(bad).is_err());
        // Unknown fields from a later minor version are tolerated.
        let extra = br#"{"version":1,"files":[],"writer":"x"}"#;
        assert!(Manifest::parse(extra).is_ok());
    }
}
