//! `manifest.json`'s parts: what keeps the manifest's upkeep from growing with the replica's
//! age (SPEC 5).
//!
//! Every manifest write rewrites the manifest object, so it must stay small: once 16 entries of
//! a level wait in it, the oldest 16 move into a part, an immutable object under
//! `manifest/<level>/` (packed, `packed`) that the manifest names by key, TXID range, entry
//! count, size and SHA-256. Eight parts of one level and size are merged into one eight times
//! larger, up to 8,192 entries (about 115 KB); past that, eight parts are named by a JSON index
//! part instead of copied. So the manifest object names at most seven parts per level and size
//! (a few dozen references in all, a logarithm of the replica's age), and each entry is
//! written about five times in its life, at about 14 bytes each time.
//!
//! What must hold: an entry is either in the manifest object or in exactly one part it names
//! (an entry in the object wins over a part's of the same key); a part is written, under a
//! name never used before, before the manifest that names it, and deleted only after a
//! manifest that no longer names it is written. A reader that finds a named part gone read
//! the manifest just before a writer replaced it, and reads the manifest again; a writer that
//! loses the conditional write deletes the parts it wrote for it.

use super::{is_hex16, packed, sha256_64, Entry, Manifest, VERSION};
use crate::history::HistoryId;
use crate::store::{ETag, FileKey, Store, StoreError, MANIFEST_KEY, SNAPSHOT_LEVEL};
use crate::Txid;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Where parts live, relative to the replica root.
pub const PARTS_DIR: &str = "manifest/";
/// Whether a file under `PARTS_DIR` named so is a part (packed or JSON), not a temporary file.
pub fn is_part_name(name: &str) -> bool {
    name.ends_with(".wmp") || name.ends_with(".json")
}

/// A level's entries in the manifest object are sealed into a part once this many wait (16: each
/// inline entry costs ~230 bytes of the object at every write, a reference ~195).
#[cfg(not(test))]
pub const PART_ENTRIES: usize = 16;
/// Parts of one level and size merged at once.
#[cfg(not(test))]
const FANOUT: usize = 8;
// Small in unit tests, so that a few hundred entries reach every kind of part.
#[cfg(test)]
pub const PART_ENTRIES: usize = 4;
#[cfg(test)]
const FANOUT: usize = 4;
/// No merge of entries makes a part larger than this (8,192 entries, about 115 KB); past it,
/// parts are merged into index parts that name them.
const MAX_PART_ENTRIES: usize = PART_ENTRIES * FANOUT * FANOUT * FANOUT;
/// Parts sealed by one update at most, so that the first update of a large manifest written
/// before parts existed spreads its work over several updates.
const SEALS_PER_UPDATE: usize = 32;
/// A part nothing names is deleted once it is this old (see `sweep_unnamed`).
pub const SWEEP_AGE_MS: i64 = 3_600_000;
/// How many times a reader reads the manifest again when a part it names is gone.
const LOAD_ATTEMPTS: u32 = 5;

/// The manifest's reference to a part.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartRef {
    pub key: String,
    pub level: u32,
    #[serde(with = "super::txid_hex")]
    pub min_txid: Txid,
    #[serde(with = "super::txid_hex")]
    pub max_txid: Txid,
    pub count: usize,
    pub size: u64,
    pub sha256: String,
}

/// A part object's body: entries, or (an index part) references to smaller parts.
#[derive(Serialize, Deserialize)]
struct Body {
    version: u32,
    level: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    files: Vec<Entry>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    parts: Vec<PartRef>,
}

/// How deep index parts may nest (a manifest is data: a loop must not hang a reader).
const MAX_DEPTH: u32 = 8;

impl PartRef {
    /// Whether the file `k` may be one of this part's entries.
    fn covers(&self, k: &FileKey) -> bool {
        self.level == k.level && self.min_txid <= k.min_txid && k.max_txid <= self.max_txid
    }

    /// A reference that could have been written by walrust (checked when a manifest is parsed).
    pub(super) fn plausible(&self) -> bool {
        self.key.starts_with(PARTS_DIR)
            && !self.key.split('/').any(|c| c.is_empty() || c == "..")
            && self.level <= SNAPSHOT_LEVEL
            && self.min_txid <= self.max_txid
            && self.count > 0
            && is_hex16(&self.sha256)
    }

    /// How many merges made it: 0 for a sealed part of `PART_ENTRIES`.
    fn tier(&self) -> u32 {
        let mut t = 0;
        let mut cap = PART_ENTRIES;
        while self.count > cap {
            cap *= FANOUT;
            t += 1;
        }
        t
    }
}

fn key_of(e: &Entry) -> FileKey {
    e.file_key().expect("checked at parse")
}

/// Every entry under a part, index parts read through.
fn read(store: &dyn Store, r: &PartRef) -> Result<Vec<Entry>, StoreError> {
    read_within(store, r, 0)
}

fn read_within(store: &dyn Store, r: &PartRef, depth: u32) -> Result<Vec<Entry>, StoreError> {
    let b = read_body(store, r)?;
    if b.parts.is_empty() {
        return Ok(b.files);
    }
    if depth >= MAX_DEPTH {
        return Err(StoreError::Invalid {
            what: format!("reading {} (a part of {MANIFEST_KEY})", r.key),
            why: format!("its index parts nest too deep; move {MANIFEST_KEY} aside"),
        });
    }
    let mut out = Vec::with_capacity(r.count);
    for child in &b.parts {
        out.extend(read_within(store, child, depth + 1)?);
    }
    Ok(out)
}

/// Reads one part object and checks it against its reference. A packed part (`packed`, how
/// parts of entries are written) comes back as a body of entries; a JSON one (index parts,
/// and parts of entries as the first releases wrote them) as it is.
fn read_body(store: &dyn Store, r: &PartRef) -> Result<Body, StoreError> {
    let body = store.get_part(&r.key)?;
    let damaged = |why: &str| StoreError::Invalid {
        what: format!(
            "reading {} (a part of {MANIFEST_KEY}) in {}",
            r.key,
            store.describe()
        ),
        why: format!(
            "{why}; move {MANIFEST_KEY} aside: the replica's files stay restorable without it"
        ),
    };
    if body.len() as u64 != r.size || sha256_64(&body) != r.sha256 {
        return Err(damaged("its size or SHA-256 is not what the manifest says"));
    }
    let b: Body = if packed::is_packed(&body) {
        let files = packed::decode(&body, r.level, store.layout())
            .ok_or_else(|| damaged("it is not a packed part of its level"))?;
        Body {
            version: VERSION,
            level: r.level,
            files,
            parts: Vec::new(),
        }
    } else {
        serde_json::from_slice(&body).map_err(|_| damaged("it is not valid JSON"))?
    };
    let fits = |e: &Entry| e.file_key().is_some_and(|k| r.covers(&k)) && is_hex16(&e.sha256);
    let inside = |c: &PartRef| {
        c.plausible() && c.level == r.level && r.min_txid <= c.min_txid && c.max_txid <= r.max_txid
    };
    let count = b.files.len() + b.parts.iter().map(|c| c.count).sum::<usize>();
    if count != r.count || !b.files.iter().all(fits) || !b.parts.iter().all(inside) {
        return Err(damaged("its entries are not the ones the manifest says"));
    }
    Ok(b)
}

/// Writes `entries` (of one level, sorted) as a new packed part.
fn write(store: &dyn Store, level: u32, entries: Vec<Entry>) -> Result<PartRef, StoreError> {
    let min_txid = entries
        .iter()
        .map(|e| e.min_txid)
        .min()
        .expect("a part has entries");
    let max_txid = entries
        .iter()
        .map(|e| e.max_txid)
        .max()
        .expect("a part has entries");
    let key = format!(
        "{PARTS_DIR}{level}/{min_txid}-{max_txid}-{:016x}.wmp",
        HistoryId::random().0
    );
    let body = packed::encode(level, &entries);
    put(store, key, level, (min_txid, max_txid), entries.len(), body)
}

/// Writes an index part naming `children` (of one level, sorted).
fn write_index(store: &dyn Store, children: Vec<PartRef>) -> Result<PartRef, StoreError> {
    let level = children[0].level;
    let min_txid = children.iter().map(|c| c.min_txid).min().unwrap();
    let max_txid = children.iter().map(|c| c.max_txid).max().unwrap();
    let key = format!(
        "{PARTS_DIR}{level}/{min_txid}-{max_txid}-{:016x}.json",
        HistoryId::random().0
    );
    let count = children.iter().map(|c| c.count).sum();
    let body = Body {
        version: VERSION,
        level,
        files: Vec::new(),
        parts: children,
    };
    let body = serde_json::to_vec(&body).expect("a part always serializes");
    put(store, key, level, (min_txid, max_txid), count, body)
}

fn put(
    store: &dyn Store,
    key: String,
    level: u32,
    (min_txid, max_txid): (Txid, Txid),
    count: usize,
    body: Vec<u8>,
) -> Result<PartRef, StoreError> {
    store.put_part(&key, &body)?;
    Ok(PartRef {
        key,
        level,
        min_txid,
        max_txid,
        count,
        size: body.len() as u64,
        sha256: sha256_64(&body),
    })
}

/// The manifest with every entry: its parts read into `files`.
pub(super) fn load_full(store: &dyn Store) -> Result<Option<(Manifest, ETag)>, StoreError> {
    let mut attempt = 0;
    loop {
        let Some((mut m, etag)) = super::load_head(store)? else {
            return Ok(None);
        };
        match expand(store, &mut m) {
            Ok(()) => return Ok(Some((m, etag))),
            // A writer replaced the part after we read the manifest: read it again.
            Err(StoreError::NotFound { .. }) if attempt + 1 < LOAD_ATTEMPTS => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

fn expand(store: &dyn Store, m: &mut Manifest) -> Result<(), StoreError> {
    let refs = m.parts.clone();
    for got in read_many(store, &refs) {
        insert_older(m, got?);
    }
    Ok(())
}

/// Parts a reader fetches at once. Read one after the other, the 13 parts of a replica of
/// 1,000 level-0 files took 0.9 s of a 3 s restore through a 30 ms proxy.
const READ_THREADS: usize = 16;

/// `read` of every reference, several at once; the results in the references' order.
fn read_many(store: &dyn Store, refs: &[PartRef]) -> Vec<Result<Vec<Entry>, StoreError>> {
    if refs.len() <= 1 {
        return refs.iter().map(|r| read(store, r)).collect();
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    type Slot = std::sync::Mutex<Option<Result<Vec<Entry>, StoreError>>>;
    let slots: Vec<Slot> = refs.iter().map(|_| Default::default()).collect();
    std::thread::scope(|s| {
        for _ in 0..READ_THREADS.min(refs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(r) = refs.get(i) else { break };
                let got = read(store, r);
                *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(got);
            });
        }
    });
    slots
        .into_iter()
        .map(|m| {
            m.into_inner()
                .unwrap_or_else(|e| e.into_inner())
                .expect("every reference was read")
        })
        .collect()
}

/// Adds a part's entries to the manifest object's, where it has none of the same key.
fn insert_older(m: &mut Manifest, entries: Vec<Entry>) {
    let newer: BTreeSet<FileKey> = m.files.iter().map(key_of).collect();
    m.files
        .extend(entries.into_iter().filter(|e| !newer.contains(&key_of(e))));
    m.files.sort_by_key(key_of);
}

/// One manifest update's work on parts: the parts it wrote (deleted if the update is lost)
/// and the ones it stopped naming (deleted once it is written).
#[derive(Default)]
pub(super) struct Edit {
    written: Vec<String>,
    dropped: Vec<String>,
}

impl Edit {
    /// Adds and removes entries in `m` (the manifest object as read), then seals and merges.
    pub(super) fn apply(
        &mut self,
        store: &dyn Store,
        m: &mut Manifest,
        add: &[Entry],
        remove: &[FileKey],
    ) -> Result<(), StoreError> {
        let touched: Vec<FileKey> = add
            .iter()
            .map(key_of)
            .chain(remove.iter().copied())
            .collect();
        self.rewrite_touched(store, m, &touched)?;
        m.apply(add, remove);
        self.seal(store, m)?;
        self.merge(store, m)
    }

    /// Parts that may hold an entry being replaced or removed are read back: what stays of
    /// them is written as one new part, or kept in the manifest object if it is small.
    fn rewrite_touched(
        &mut self,
        store: &dyn Store,
        m: &mut Manifest,
        touched: &[FileKey],
    ) -> Result<(), StoreError> {
        let mut hit = take_touched(m, touched);
        // Index parts open up into their children, until the touched ones hold entries.
        for _ in 0..MAX_DEPTH {
            let Some(i) = hit.iter().position(|p| p.count > MAX_PART_ENTRIES) else {
                break;
            };
            let index = hit.remove(i);
            let b = read_body(store, &index)?;
            if b.parts.is_empty() {
                hit.push(index); // a part of entries this large is not written, but read it
                break;
            }
            self.dropped.push(index.key);
            m.parts.extend(b.parts);
            hit.extend(take_touched(m, touched));
        }
        for p in hit {
            let rest: Vec<Entry> = read(store, &p)?
                .into_iter()
                .filter(|e| !touched.contains(&key_of(e)))
                .collect();
            self.dropped.push(p.key.clone());
            if rest.len() >= PART_ENTRIES {
                let r = write(store, p.level, rest)?;
                self.written.push(r.key.clone());
                m.parts.push(r);
            } else {
                insert_older(m, rest);
            }
        }
        sort_parts(m);
        Ok(())
    }

    /// Moves the oldest `PART_ENTRIES` entries of a level into a part while that many wait.
    fn seal(&mut self, store: &dyn Store, m: &mut Manifest) -> Result<(), StoreError> {
        for _ in 0..SEALS_PER_UPDATE {
            let Some(level) = fullest_level(m) else {
                break;
            };
            let at = m.files.iter().position(|e| e.level == level).unwrap();
            let chunk: Vec<Entry> = m.files.drain(at..at + PART_ENTRIES).collect();
            let r = write(store, level, chunk)?;
            self.written.push(r.key.clone());
            m.parts.push(r);
        }
        sort_parts(m);
        Ok(())
    }

    /// Merges the `FANOUT` oldest parts of a level and tier into one while there are that
    /// many. Bounded per update like sealing, but above the rate at which one update can seal
    /// parts (`SEALS_PER_UPDATE`, and the merges they cascade into), so that parts never pile
    /// up in the manifest object (one merge per update did, once an update sealed more than
    /// `FANOUT - 1` parts).
    fn merge(&mut self, store: &dyn Store, m: &mut Manifest) -> Result<(), StoreError> {
        for _ in 0..SEALS_PER_UPDATE {
            if !self.merge_one(store, m)? {
                break;
            }
        }
        Ok(())
    }

    /// One merge, if there is one to do.
    fn merge_one(&mut self, store: &dyn Store, m: &mut Manifest) -> Result<bool, StoreError> {
        let Some(group) = mergeable(m) else {
            return Ok(false);
        };
        let total: usize = group.iter().map(|p| p.count).sum();
        if total > MAX_PART_ENTRIES {
            // An index part: the children stay, named by it instead of by the manifest.
            let r = write_index(store, group.clone())?;
            self.written.push(r.key.clone());
            m.parts.retain(|p| !group.contains(p));
            m.parts.push(r);
            sort_parts(m);
            return Ok(true);
        }
        let mut entries = Vec::new();
        for p in &group {
            entries.extend(read(store, p)?);
        }
        entries.sort_by_key(key_of);
        let r = write(store, group[0].level, entries)?;
        self.written.push(r.key.clone());
        m.parts.retain(|p| !group.contains(p));
        self.dropped.extend(group.into_iter().map(|p| p.key));
        m.parts.push(r);
        sort_parts(m);
        Ok(true)
    }

    /// The manifest naming the new parts was written: the replaced ones go.
    pub(super) fn commit(self, store: &dyn Store) {
        let _ = store.delete_parts(&self.dropped);
    }

    /// The manifest was not written: the parts made for it go.
    pub(super) fn abandon(&mut self, store: &dyn Store) {
        let _ = store.delete_parts(&std::mem::take(&mut self.written));
        self.dropped.clear();
    }
}

/// Parts no manifest names are garbage once old enough: a writer killed between writing its
/// parts and the manifest naming them, or a failed delete of parts a manifest stopped naming.
/// A writer names the parts it writes within one manifest write (seconds, a minute at worst
/// with retries), so a part younger than `min_age_ms` may be about to be named and is kept.
///
/// A writer paused longer than that (a suspended machine, a stopped process) between its parts
/// and its manifest write could still name them when it resumes, since its write is
/// conditional only on the manifest's version. So before deleting anything the sweep writes
/// the manifest again, conditionally, with a new `sweep` token: every such pending write then
/// fails, and its writer starts over from the new manifest, which names none of the parts
/// deleted. Returns how many parts were deleted. A part the manifest names but that cannot be
/// read, or a manifest changed under the sweep, ends it without deleting anything.
pub fn sweep_unnamed(store: &dyn Store, now_ms: i64, min_age_ms: i64) -> Result<usize, StoreError> {
    let Some((mut m, etag)) = super::load_head(store)? else {
        return Ok(0);
    };
    let mut named = BTreeSet::new();
    for r in &m.parts {
        match name_all(store, r, 0, &mut named) {
            Ok(()) => {}
            Err(StoreError::NotFound { .. }) => return Ok(0),
            Err(e) => return Err(e),
        }
    }
    let unnamed: Vec<String> = store
        .list_parts()?
        .into_iter()
        .filter(|(key, modified)| !named.contains(key) && now_ms - modified >= min_age_ms)
        .map(|(key, _)| key)
        .collect();
    if unnamed.is_empty() {
        return Ok(0);
    }
    m.sweep = Some(format!("{:016x}", HistoryId::random().0));
    match store.put_manifest(&m.to_json(), Some(&etag)) {
        Ok(_) => {}
        Err(StoreError::Conflict { .. }) => return Ok(0), // a writer was busy: next time
        Err(e) => return Err(e),
    }
    store.delete_parts(&unnamed)?;
    Ok(unnamed.len())
}

/// Adds `r`'s key, and those of the parts an index part names, to `named`.
fn name_all(
    store: &dyn Store,
    r: &PartRef,
    depth: u32,
    named: &mut BTreeSet<String>,
) -> Result<(), StoreError> {
    named.insert(r.key.clone());
    // Only an index part names others; it alone holds more than a part of entries may.
    if r.count <= MAX_PART_ENTRIES || depth >= MAX_DEPTH {
        return Ok(());
    }
    for child in read_body(store, r)?.parts {
        name_all(store, &child, depth + 1, named)?;
    }
    Ok(())
}

/// Takes out of `m` the parts that may hold one of `touched`.
fn take_touched(m: &mut Manifest, touched: &[FileKey]) -> Vec<PartRef> {
    let (hit, kept): (Vec<PartRef>, Vec<PartRef>) = std::mem::take(&mut m.parts)
        .into_iter()
        .partition(|p| touched.iter().any(|k| p.covers(k)));
    m.parts = kept;
    hit
}

fn sort_parts(m: &mut Manifest) {
    m.parts
        .sort_by_key(|p| (p.level, p.min_txid, p.max_txid, p.key.clone()));
}

/// The level with the most entries in the manifest object, if it has `PART_ENTRIES` or more.
fn fullest_level(m: &Manifest) -> Option<u32> {
    let mut best: Option<(usize, u32)> = None;
    let mut i = 0;
    while i < m.files.len() {
        let level = m.files[i].level;
        let n = m.files[i..].iter().take_while(|e| e.level == level).count();
        if n >= PART_ENTRIES && best.is_none_or(|(b, _)| n > b) {
            best = Some((n, level));
        }
        i += n;
    }
    best.map(|(_, level)| level)
}

/// `FANOUT` parts of one level and tier below the largest size, oldest first, if there are
/// that many.
fn mergeable(m: &Manifest) -> Option<Vec<PartRef>> {
    let mut groups: std::collections::BTreeMap<(u32, u32), Vec<PartRef>> = Default::default();
    for p in &m.parts {
        groups
            .entry((p.level, p.tier()))
            .or_default()
            .push(p.clone());
    }
    groups
        .into_values()
        .find(|g| g.len() >= FANOUT)
        .map(|g| g.into_iter().take(FANOUT).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::tests::entry;
    use crate::manifest::{self, Expect};

    fn store() -> (std::path::PathBuf, std::sync::Arc<dyn Store>) {
        let dir = std::env::temp_dir().join(format!(
            "walrust-parts-{}-{:x}",
            std::process::id(),
            HistoryId::random().0
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let s = crate::store::open(&format!("file://{}", dir.display())).unwrap();
        (dir, s)
    }

    fn part_files(dir: &std::path::Path) -> usize {
        walk(&dir.join("manifest"))
    }

    fn walk(d: &std::path::Path) -> usize {
        let Ok(rd) = std::fs::read_dir(d) else {
            return 0;
        };
        rd.map(|e| e.unwrap().path())
            .map(|p| if p.is_dir() { walk(&p) } else { 1 })
            .sum()
    }

    /// How many part objects the manifest names, directly or through index parts.
    fn reachable(s: &dyn Store, parts: &[PartRef]) -> usize {
        parts
            .iter()
            .map(|p| 1 + reachable(s, &read_body(s, p).unwrap().parts))
            .sum()
    }

    /// One level-0 entry per batch, as an uploader adds them, `n` batches after `from`.
    fn upload(s: &dyn Store, from: u64, n: u64) {
        for t in from..from + n {
            manifest::update(s, &[entry(0, t, t)], &[]).unwrap();
        }
    }

    /// Files a compaction stops naming stay listed in `removing` through other writers'
    /// updates until it says they are deleted.
    #[test]
    fn files_being_removed_are_listed_until_removed() {
        let (dir, s) = store();
        upload(&*s, 1, 3);
        let gone = [key_of(&entry(0, 1, 1)), key_of(&entry(0, 2, 2))];
        let m = manifest::unname_for_removal(&*s, &gone).unwrap();
        let names: Vec<String> = gone.iter().map(|k| s.layout().file_key(k)).collect();
        assert_eq!(m.removing, names);
        assert_eq!(m.files.len(), 1);
        upload(&*s, 4, 1); // an uploader's write keeps the list
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert_eq!(head.removing, names);
        manifest::removed(&*s, &names[..1]).unwrap();
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert_eq!(head.removing, names[1..]);
        manifest::removed(&*s, &names).unwrap();
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert!(head.removing.is_empty());
        assert!(!String::from_utf8(head.to_json())
            .unwrap()
            .contains("removing"));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_sweep_deletes_old_unnamed_parts_and_nothing_named_or_young() {
        let (dir, s) = store();
        manifest::update(&*s, &[entry(9, 1, 1)], &[]).unwrap();
        upload(&*s, 2, 5000); // index parts too: their children are named through them
        let named = part_files(&dir);
        assert_eq!(
            named,
            reachable(&*s, &manifest::load_head(&*s).unwrap().unwrap().0.parts)
        );
        // A writer killed between its parts and its manifest: two parts nothing names.
        let orphan = write(&*s, 0, vec![entry(0, 9000, 9000)]).unwrap();
        write(&*s, 0, vec![entry(0, 9001, 9001)]).unwrap();
        let now = crate::clock::now_ms();
        // Young: they may be about to be named.
        assert_eq!(sweep_unnamed(&*s, now, 3_600_000).unwrap(), 0);
        assert_eq!(part_files(&dir), named + 2);
        // A writer that wrote the first of them and was then paused for hours still holds the
        // manifest's version it read.
        let (_, seen_by_paused_writer) = manifest::load_head(&*s).unwrap().unwrap();
        // An hour later they go, and only they.
        assert_eq!(sweep_unnamed(&*s, now + 3_700_000, 3_600_000).unwrap(), 2);
        // The sweep wrote the manifest anew first: the paused writer's conditional write,
        // which would name a deleted part, now fails, and it starts over.
        let resumed = s.put_manifest(b"{}", Some(&seen_by_paused_writer));
        assert!(
            matches!(resumed, Err(StoreError::Conflict { .. })),
            "{resumed:?}"
        );
        assert_eq!(part_files(&dir), named);
        assert!(s.get_part(&orphan.key).is_err());
        let (all, _) = manifest::load(&*s).unwrap().unwrap();
        assert_eq!(all.files.len(), 5001);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn the_manifest_object_stays_small_and_load_sees_every_entry() {
        let (dir, s) = store();
        manifest::update(&*s, &[entry(9, 1, 1)], &[]).unwrap();
        upload(&*s, 2, 5000);
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert!(head.files.len() < PART_ENTRIES, "{}", head.files.len());
        assert!(
            head.parts.len() <= 8 * (FANOUT - 1),
            "{} parts",
            head.parts.len()
        );
        assert!(
            head.parts.iter().any(|p| p.count > MAX_PART_ENTRIES),
            "index parts"
        );
        assert_eq!(head.version, VERSION);
        assert_eq!(head.max_txid(), 5001);
        let body = s.get_manifest().unwrap().unwrap().body;
        assert!(body.len() < 16 << 10, "{} bytes", body.len());
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        let keys: Vec<_> = full.files.iter().map(key_of).collect();
        let mut want: Vec<Entry> = (2..5002).map(|t| entry(0, t, t)).collect();
        want.push(entry(9, 1, 1));
        assert_eq!(keys, want.iter().map(key_of).collect::<Vec<_>>());
        assert_eq!(
            full.get(&key_of(&entry(0, 77, 77))),
            Some(&entry(0, 77, 77))
        );
        // Merged and replaced parts were deleted: only the named ones remain.
        assert_eq!(part_files(&dir), reachable(&*s, &head.parts));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_json_part_as_version_3_wrote_it_is_read_and_replaced_packed() {
        let (dir, s) = store();
        let old: Vec<Entry> = (1..=2 * PART_ENTRIES as u64)
            .map(|t| entry(0, t, t))
            .collect();
        let body = Body {
            version: 3,
            level: 0,
            files: old.clone(),
            parts: Vec::new(),
        };
        let key = format!("{PARTS_DIR}0/old-part.json");
        let r = put(
            &*s,
            key.clone(),
            0,
            (old[0].min_txid, old[old.len() - 1].max_txid),
            old.len(),
            serde_json::to_vec(&body).unwrap(),
        )
        .unwrap();
        let mut m = Manifest::new();
        m.version = 3;
        m.parts.push(r);
        s.put_manifest(&m.to_json(), None).unwrap();
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        assert_eq!(full.files, old);
        // Removing one of its entries rewrites what stays of it, packed.
        manifest::update(&*s, &[], &[key_of(&old[0])]).unwrap();
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert_eq!(head.version, VERSION);
        assert!(s.get_part(&key).is_err(), "the JSON part was replaced");
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        assert_eq!(full.files, old[1..]);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn updates_that_seal_many_parts_at_once_do_not_pile_parts_up() {
        // A manifest written every two minutes at one batch a second gets 120 entries an
        // update: more parts sealed than one merge took away, when merges were one an update.
        let (dir, s) = store();
        let per_update = (PART_ENTRIES * (FANOUT + 2)) as u64;
        let mut t = 1;
        for _ in 0..40 {
            let batch: Vec<Entry> = (t..t + per_update).map(|x| entry(0, x, x)).collect();
            manifest::update(&*s, &batch, &[]).unwrap();
            t += per_update;
        }
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        let mut per_tier = std::collections::BTreeMap::<u32, usize>::new();
        for p in &head.parts {
            *per_tier.entry(p.tier()).or_default() += 1;
        }
        assert!(per_tier.values().all(|&n| n < FANOUT), "{per_tier:?}");
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        assert_eq!(full.files.len() as u64, t - 1);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn removing_entries_rewrites_the_parts_that_held_them() {
        let (dir, s) = store();
        upload(&*s, 1, 600);
        // Compaction merges 1..=300 into one level-1 file and removes them.
        let gone: Vec<FileKey> = (1..=300).map(|t| key_of(&entry(0, t, t))).collect();
        manifest::update(&*s, &[entry(1, 1, 300)], &[]).unwrap();
        manifest::update(&*s, &[], &gone).unwrap();
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        let keys: Vec<_> = full.files.iter().map(key_of).collect();
        let mut want: Vec<FileKey> = (301..=600).map(|t| key_of(&entry(0, t, t))).collect();
        want.push(key_of(&entry(1, 1, 300)));
        assert_eq!(keys, want);
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert_eq!(part_files(&dir), reachable(&*s, &head.parts));
        // Re-adding a sealed entry replaces it.
        let mut again = entry(0, 400, 400);
        again.size = 1;
        manifest::update(&*s, &[again.clone()], &[]).unwrap();
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        assert_eq!(full.get(&key_of(&again)), Some(&again));
        assert_eq!(full.files.len(), want.len());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn removing_entries_under_an_index_part_opens_it() {
        let (dir, s) = store();
        for b in 0..200u64 {
            let batch: Vec<Entry> = (1..=10).map(|i| entry(0, b * 10 + i, b * 10 + i)).collect();
            manifest::update(&*s, &batch, &[]).unwrap();
        }
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert!(
            head.parts.iter().any(|p| p.count > MAX_PART_ENTRIES),
            "index parts"
        );
        let gone: Vec<FileKey> = (100..=1500).map(|t| key_of(&entry(0, t, t))).collect();
        manifest::update(&*s, &[entry(1, 100, 1500)], &gone).unwrap();
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        let keys: Vec<_> = full.files.iter().map(key_of).collect();
        let mut want: Vec<FileKey> = (1..100)
            .chain(1501..=2000)
            .map(|t| key_of(&entry(0, t, t)))
            .collect();
        want.push(key_of(&entry(1, 100, 1500)));
        assert_eq!(keys, want);
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert_eq!(part_files(&dir), reachable(&*s, &head.parts));
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A store whose manifest writes land but whose answers are lost on the way back.
    struct LostAnswers<'a>(&'a dyn Store);

    impl Store for LostAnswers<'_> {
        fn describe(&self) -> String {
            self.0.describe()
        }
        fn layout(&self) -> crate::store::Layout {
            self.0.layout()
        }
        fn list(
            &self,
            l: Option<u32>,
            t: crate::store::Times,
        ) -> Result<Vec<crate::store::FileInfo>, StoreError> {
            self.0.list(l, t)
        }
        fn read(
            &self,
            k: &FileKey,
            r: Option<std::ops::Range<u64>>,
        ) -> Result<crate::store::FileReader, StoreError> {
            self.0.read(k, r)
        }
        fn write(
            &self,
            k: &FileKey,
            p: &std::path::Path,
            m: &crate::store::WriteMeta,
        ) -> Result<crate::store::FileInfo, StoreError> {
            self.0.write(k, p, m)
        }
        fn create(
            &self,
            k: &FileKey,
            p: &std::path::Path,
            m: &crate::store::WriteMeta,
        ) -> Result<crate::store::FileInfo, StoreError> {
            self.0.create(k, p, m)
        }
        fn delete(&self, k: &[FileKey]) -> Result<(), StoreError> {
            self.0.delete(k)
        }
        fn manifest_version(&self) -> Result<Option<ETag>, StoreError> {
            self.0.manifest_version()
        }
        fn get_manifest(&self) -> Result<Option<crate::store::ManifestObject>, StoreError> {
            self.0.get_manifest()
        }
        fn put_manifest(&self, body: &[u8], expected: Option<&ETag>) -> Result<ETag, StoreError> {
            self.0.put_manifest(body, expected)?;
            Err(StoreError::Unavailable {
                what: "writing manifest.json".into(),
                why: "the answer was lost".into(),
            })
        }
        fn put_part(&self, rel: &str, body: &[u8]) -> Result<(), StoreError> {
            self.0.put_part(rel, body)
        }
        fn get_part(&self, rel: &str) -> Result<Vec<u8>, StoreError> {
            self.0.get_part(rel)
        }
        fn list_parts(&self) -> Result<Vec<(String, i64)>, StoreError> {
            self.0.list_parts()
        }

        fn delete_parts(&self, rels: &[String]) -> Result<(), StoreError> {
            self.0.delete_parts(rels)
        }
    }

    #[test]
    fn a_manifest_write_whose_answer_is_lost_keeps_the_parts_it_names() {
        let (dir, s) = store();
        upload(&*s, 1, 3);
        let lossy = LostAnswers(&*s);
        let batch: Vec<Entry> = (4..=40).map(|t| entry(0, t, t)).collect();
        assert!(manifest::update(&lossy, &batch, &[]).is_err());
        // The write landed: every part it names is there, and every entry loads.
        let (full, _) = manifest::load(&*s).unwrap().unwrap();
        assert_eq!(full.files.len(), 40);
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert!(!head.parts.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_damaged_or_missing_part_is_an_error_that_says_what_to_do() {
        let (dir, s) = store();
        upload(&*s, 1, 100);
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        let part = dir.join(&head.parts[0].key);
        let mut bytes = std::fs::read(&part).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&part, &bytes).unwrap();
        let e = manifest::load(&*s).unwrap_err().to_string();
        assert!(e.contains("move manifest.json aside"), "{e}");
        std::fs::remove_file(&part).unwrap();
        assert!(matches!(
            manifest::load(&*s),
            Err(StoreError::NotFound { .. })
        ));
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_owner_check_still_fences_an_update() {
        let (dir, s) = store();
        upload(&*s, 1, 70);
        let o = crate::history::Owner::new_history();
        manifest::update_as(&*s, Expect::Claim(o), &[], &[]).unwrap();
        let other = crate::history::Owner::new_history();
        let e = manifest::update_as(&*s, Expect::Owner(other), &[entry(0, 71, 71)], &[]);
        assert!(matches!(e, Err(StoreError::NotOwner { .. })));
        let (head, _) = manifest::load_head(&*s).unwrap().unwrap();
        assert_eq!(head.owner(), Some(o));
        assert_eq!(
            part_files(&dir),
            head.parts.len(),
            "a refused update leaves no part"
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
