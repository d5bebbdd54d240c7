//! The uploader's side of "one history per replica" and "no silent stop" (SPEC 6): before a
//! process's first upload it decides, from the replica and `state.json`, whether this database
//! owns the replica and where uploading resumes; before each batch it checks, with one cheap
//! request, that nobody took the replica over meanwhile.
//!
//! What must hold: nothing of a database that does not continue the replica's history reaches
//! it; an uploader killed at any step is followed by one that resumes from the replica's own
//! state (no duplicate snapshot, no TXID gap); a shadow log that lost its tail is noticed, and
//! a fresh snapshot past everything the replica has follows.

use super::worker::Entry;
use crate::history::{self, Owner, Refusal, ReplicaView, Verdict};
use crate::manifest::{self, Expect, Manifest};
use crate::shadow::log::{self, Cursor};
use crate::shadow::Kind;
use crate::store::{FileInfo, StoreError, Times, SNAPSHOT_LEVEL};

/// Decides whether and from where this database uploads (`history::decide`).
pub(super) fn check_replica(e: &mut Entry) -> Result<(), String> {
    let repl = e.repl.clone();
    let store = repl.store.as_ref();
    let failed = |what: &str, err: StoreError| format!("walrust: cannot {what}: {err}");
    let files = store
        .list(None, Times::Listed)
        .map_err(|err| failed("list the replica", err))?;
    let manifest = manifest::load_head(store).map_err(|err| failed("read manifest.json", err))?;
    let mut view = ReplicaView {
        owner: manifest.as_ref().and_then(|(m, _)| m.owner()),
        max_txid: files
            .iter()
            .map(|f| f.key.max_txid.get())
            .max()
            .unwrap_or(0),
        has_files: !files.is_empty(),
    };
    let mut st = e.repl.shadow.state_or_default();
    let mut verdict = history::decide(&view, &st.local_view());
    if verdict == Verdict::Adopt {
        // A replica this database wrote before owners existed: record one, then decide as
        // its owner (continue, resume or snapshot).
        let o = Owner::new_history();
        if !claim_new_history(e, &mut st, o)? {
            return Ok(());
        }
        view.owner = Some(o);
        st.owner = Some(o);
        verdict = history::decide(&view, &st.local_view());
    }
    crate::log::trace(|| format!("{}: {verdict:?} ({view:?})", e.repl.db_path.display()));
    let owner = match verdict {
        Verdict::Refuse(r) => {
            refuse(e, &r);
            return Ok(());
        }
        Verdict::Claim | Verdict::Adopt => {
            let o = Owner::new_history();
            if !claim_new_history(e, &mut st, o)? {
                return Ok(());
            }
            e.fresh_snapshot_above = Some(view.max_txid.max(e.uploaded));
            o
        }
        Verdict::Continue if st.owner.is_none() => {
            // A restored copy continuing the history: a new generation fences off the
            // database it was restored from, should that one still be writing.
            let o = view
                .owner
                .expect("decide continues a restore only with an owner");
            let o = o.next_generation();
            if !claim(e, o)? {
                return Ok(());
            }
            e.uploaded = view.max_txid;
            e.level0 = e.uploaded;
            o
        }
        Verdict::Continue => {
            // state.json recorded every upload, but the process may have died before its
            // backlog of entries reached the manifest (`manifest::cadence` holds it up to two
            // minutes): name those files now, or compaction never touches them. Only the
            // level-0 files that continue the named chain and that state.json recorded: an old
            // primary's one batch after a takeover starts at or below the takeover snapshot's
            // TXID, which the manifest names, so it is left alone (decision 12).
            let named = manifest.as_ref().map_or(0, |(m, _)| m.max_txid());
            let recorded = st.uploaded_txid;
            name_unnamed(e, &files, |k| {
                k.level == 0 && k.min_txid.get() > named && k.max_txid.get() <= recorded
            })?;
            st.owner.expect("decide continues only its own history")
        }
        Verdict::Resume { replica_max } => {
            resume(e, replica_max, manifest.as_ref().map(|(m, _)| m), &files)?;
            st.owner.expect("decide resumes only its own history")
        }
        Verdict::Snapshot { above } => {
            e.fresh_snapshot_above = Some(above);
            st.owner.expect("decide snapshots only its own history")
        }
    };
    e.owner = Some(owner);
    // Level 0 goes on from where the incremental levels reach, so that it stays contiguous
    // through snapshots (a snapshot's TXID may be past the last level-0 file).
    let reach = incremental_reach(&files);
    e.level0 = if reach > 0 {
        reach.min(e.uploaded)
    } else {
        e.uploaded
    };
    if !e.manifest_backlog.is_empty() {
        manifest::update_as(store, Expect::Owner(owner), &e.manifest_backlog, &[])
            .map_err(|err| failed("update manifest.json", err))?;
        e.manifest_backlog.clear();
    }
    e.manifest_version = store.manifest_version().ok().flatten();
    if e.fresh_snapshot_above.is_none() && named_snapshot(manifest.as_ref(), e.uploaded) {
        // Uploading resumes at a snapshot's TXID: until something is committed, the
        // snapshot timer's snapshot would be that one (`worker::unchanged_since_snapshot`), in
        // a process that did not take it as in the one that did.
        e.last_snapshot_txid = e.uploaded;
    }
    st.owner = Some(owner);
    st.restored_txid = None;
    st.takeover = false;
    st.uploaded_txid = e.uploaded;
    st.replica = e.repl.url.clone();
    save_state(e, &st)?;
    e.replica_checked = true;
    Ok(())
}

/// Whether the manifest (its head object) names a snapshot at `txid`.
fn named_snapshot(manifest: Option<&(Manifest, crate::store::ETag)>, txid: u64) -> bool {
    let key = crate::Txid::new(txid)
        .and_then(|t| crate::store::FileKey::new(SNAPSHOT_LEVEL, crate::Txid::ONE, t));
    matches!((manifest, key), (Some((m, _)), Some(key)) if m.get(&key).is_some())
}

/// Writes `state.json`; the error names the file.
pub(super) fn save_state(e: &Entry, st: &crate::shadow::State) -> Result<(), String> {
    e.repl.shadow.write_state(st).map_err(|err| {
        format!(
            "walrust: cannot write {}: {err}",
            e.repl.shadow.state_path().display()
        )
    })
}

/// The newest TXID the incremental levels (0–8) reach: where level 0 goes on from.
fn incremental_reach(files: &[FileInfo]) -> u64 {
    files
        .iter()
        .filter(|f| f.key.level < SNAPSHOT_LEVEL)
        .map(|f| f.key.max_txid.get())
        .max()
        .unwrap_or(0)
}

/// Records `o` as the replica's owner; `false` (and the database refused) if another writer
/// got there first.
/// Claims the replica for a new history `o`, recorded in `state.json` first: an uploader
/// killed after the manifest names `o` and before it could say so would otherwise leave a
/// replica whose owner nobody knows, refused by every later process. Killed before the claim,
/// the next one finds the replica unclaimed and claims it afresh.
fn claim_new_history(
    e: &mut Entry,
    st: &mut crate::shadow::State,
    o: Owner,
) -> Result<bool, String> {
    st.owner = Some(o);
    if st.replica.is_empty() {
        st.replica = e.repl.url.clone();
    }
    save_state(e, st)?;
    let claimed = claim(e, o)?;
    if claimed {
        crate::failpoint::hit("upload.claimed");
    }
    Ok(claimed)
}

fn claim(e: &mut Entry, o: Owner) -> Result<bool, String> {
    match manifest::update_as(e.repl.store.as_ref(), Expect::Claim(o), &[], &[]) {
        Ok(_) => Ok(true),
        Err(StoreError::NotOwner { found, .. }) => {
            refuse(e, &Refusal::Foreign { theirs: found });
            Ok(false)
        }
        Err(err) => Err(format!(
            "walrust: cannot record this database as the owner of {}: {err}",
            e.repl.url
        )),
    }
}

/// The replica has files past what `state.json` recorded: an uploader wrote them and died
/// before it could say so. They came from this shadow log, so uploading goes on after them if
/// the log still holds their last transaction; if not, the log lost its tail, and a snapshot
/// past them follows. Either way they are named in the manifest: they hold commits of this
/// history (after a lost tail, the only copy of them), restorable by TXID, and compaction and
/// retention see only named files.
fn resume(
    e: &mut Entry,
    replica_max: u64,
    manifest: Option<&Manifest>,
    files: &[FileInfo],
) -> Result<(), String> {
    let named = manifest.map_or(0, Manifest::max_txid);
    name_unnamed(e, files, |k| k.max_txid.get() > named)?;
    if !log_holds(e, replica_max, files)? {
        notice(
            e,
            format!(
                "walrust: the shadow log of {} does not hold TXID {replica_max} as the replica has it: it lost records in a crash; a snapshot with new TXIDs follows",
                e.repl.db_path.display()
            ),
        );
        e.fresh_snapshot_above = Some(replica_max);
        return Ok(());
    }
    e.uploaded = replica_max;
    Ok(())
}

/// Files of this history the manifest does not name (uploaded, then the process died before it
/// named them), chosen by `ours`, go into the manifest backlog, each hashed by reading it back.
fn name_unnamed(
    e: &mut Entry,
    files: &[FileInfo],
    ours: impl Fn(&crate::store::FileKey) -> bool,
) -> Result<(), String> {
    for f in files.iter().filter(|f| ours(&f.key)) {
        e.manifest_backlog.push(entry_for(e, f)?);
    }
    Ok(())
}

/// A manifest entry for a file already in the replica, hashed by reading it back.
fn entry_for(e: &Entry, f: &FileInfo) -> Result<manifest::Entry, String> {
    let store = e.repl.store.as_ref();
    let reader = store
        .read(&f.key, None)
        .map_err(|err| format!("walrust: cannot read {} back: {err}", f.key))?;
    let (sha, _) = manifest::HashingReader::new(reader)
        .finish()
        .map_err(|err| format!("walrust: cannot read {} back: {err}", f.key))?;
    Ok(manifest::Entry::new(store.layout(), f, sha))
}

/// Whether the shadow log holds the transaction `txid` that the replica's newest files end
/// with, and not only a record of that TXID: after a power failure cut the log, this process
/// may have appended new commits under the TXIDs of lost ones before its uploader looked at
/// the replica. A level-0 file ending at `txid` names its commit's time (its LTX header's
/// timestamp), which the log's record must have too. A snapshot's header names when it was
/// encoded, after its point was fixed: the record it was taken at is no newer, and a commit
/// made after the process that took it died is.
fn log_holds(e: &mut Entry, txid: u64, files: &[FileInfo]) -> Result<bool, String> {
    crate::failpoint::hit("upload.resume_checking");
    let Some(record_ms) = log_record_time(e, txid)? else {
        return Ok(false);
    };
    let ending = |level: u32| {
        files
            .iter()
            .find(|f| f.key.max_txid.get() == txid && f.key.level == level)
    };
    if let Some(file) = ending(0) {
        return Ok(ltx_time(e, file)? == record_ms);
    }
    if let Some(file) = ending(SNAPSHOT_LEVEL) {
        return Ok(record_ms <= ltx_time(e, file)?);
    }
    Ok(true) // a compacted file ends there: its TXID is what it can check
}

/// The commit time of the log's record of `txid`, looked for from the uploader's cursor on.
fn log_record_time(e: &mut Entry, txid: u64) -> Result<Option<i64>, String> {
    let mut cursor = e.read_cursor;
    loop {
        let (recs, next) = e
            .reader
            .read_at_most(cursor, 4096)
            .map_err(|err| format!("walrust: cannot read the shadow log: {err}"))?;
        if let Some(r) = recs
            .iter()
            .find(|r| r.header.txid == txid && r.header.kind != Kind::Position)
        {
            return Ok(Some(r.header.timestamp_ms));
        }
        if recs.is_empty() || recs.iter().any(|r| r.header.txid > txid) {
            return Ok(None);
        }
        cursor = next;
    }
}

/// The timestamp in a replica file's LTX header (one ranged read of its first bytes).
fn ltx_time(e: &Entry, f: &FileInfo) -> Result<i64, String> {
    let failed = |err: String| format!("walrust: cannot read {}'s header: {err}", f.key);
    let mut reader = e
        .repl
        .store
        .read(&f.key, Some(0..crate::ltx::HEADER_SIZE as u64))
        .map_err(|err| failed(err.to_string()))?;
    let mut b = [0u8; crate::ltx::HEADER_SIZE];
    std::io::Read::read_exact(&mut reader, &mut b).map_err(|err| failed(err.to_string()))?;
    let header = crate::ltx::Header::from_bytes(&b).map_err(|err| failed(err.to_string()))?;
    Ok(header.timestamp_ms)
}

/// Makes the uploader's cursor (from `state.json`) point where the log goes on after the
/// uploaded TXID. If the log no longer has the records the cursor assumes (a power failure cut
/// its unsynced tail while `state.json` survived, or segments were removed), the cursor moves
/// to the first record past `done` (the TXID read and uploaded up to the cursor), or to the
/// log's end: the appender's next record there is a `Resync`, and a snapshot follows. Returns
/// whether the cursor had to move.
pub(super) fn settle_cursor(e: &mut Entry, done: u64) -> Result<bool, String> {
    let io = |err: std::io::Error| format!("walrust: cannot read the shadow log: {err}");
    // The log's newest record first, then the cursor's: a record an application appends in
    // between is then seen at the cursor too, never taken for records the cursor lost.
    let newest = log::last_record(&e.repl.shadow.log_dir()).map_err(io)?;
    let (first, _) = e.reader.read_at_most(e.read_cursor, 1).map_err(io)?;
    let ok = match first.first() {
        Some(r) if r.header.kind == Kind::Txn => r.header.txid == done + 1,
        Some(r) => r.header.txid >= done,
        None => newest.is_none_or(|h| h.txid <= done && !behind_cursor(e)),
    };
    if ok {
        return Ok(false);
    }
    let (all, end) = e.reader.read_from(Cursor::default()).map_err(io)?;
    e.last_read = None;
    e.read_cursor = all
        .iter()
        .find(|r| r.header.txid > done)
        .map_or(end, |r| Cursor {
            seq: r.seq,
            offset: r.offset,
        });
    notice(
        e,
        format!(
            "walrust: the shadow log of {} does not go on where the last upload stopped (TXID {done}): it lost records in a crash; a snapshot with new TXIDs follows",
            e.repl.db_path.display()
        ),
    );
    Ok(true)
}

/// The log's newest segment is older than the cursor's: everything at and after the cursor
/// is gone.
fn behind_cursor(e: &Entry) -> bool {
    log::list_segments(&e.repl.shadow.log_dir())
        .map(|s| s.last().is_some_and(|&last| last < e.read_cursor.seq))
        .unwrap_or(false)
}

/// Before a batch: has anyone changed the manifest since we last looked, and if so, is the
/// replica still ours? One `HEAD` (a `stat` on a directory) when nothing changed.
pub(super) fn fence(e: &mut Entry) -> Result<bool, String> {
    let Some(owner) = e.owner else {
        return Ok(true);
    };
    let store = e.repl.store.as_ref();
    let version = store
        .manifest_version()
        .map_err(|err| format!("walrust: cannot read manifest.json: {err}"))?;
    if version.is_some() && version == e.manifest_version {
        return Ok(true);
    }
    let found = manifest::load_head(store)
        .map_err(|err| format!("walrust: cannot read manifest.json: {err}"))?
        .and_then(|(m, _)| m.owner());
    if found == Some(owner) {
        e.manifest_version = version;
        return Ok(true);
    }
    lost(e, found);
    Ok(false)
}

/// Something walrust recovered from on its own: one line on stderr and `notice` in
/// `walrust_status()`.
fn notice(e: &Entry, msg: String) {
    crate::log::warn(&msg);
    e.repl.update_status(|s| s.notice = Some(msg));
}

/// A write found the replica owned by someone else: stop, and say who.
pub(super) fn lost(e: &mut Entry, found: Option<Owner>) {
    let ours = e.owner.expect("only an owner can lose the replica");
    let r = match found {
        Some(theirs) if theirs.history == ours.history && theirs.generation > ours.generation => {
            Refusal::Superseded { ours, theirs }
        }
        theirs => Refusal::Foreign { theirs },
    };
    refuse(e, &r);
}

/// Stops uploading this database for good (in this process) and says why everywhere a user
/// looks.
pub(super) fn refuse(e: &mut Entry, why: &Refusal) {
    let db = e.repl.db_path.display();
    let msg = format!(
        "walrust: {db} is not replicating to {}: {why}; its commits stay in the shadow log. \
         To make this database the replica's history run SELECT walrust_takeover() (or \
         walrust takeover {db}); to replicate it elsewhere remove {} and open it with another replica",
        e.repl.url,
        e.repl.shadow.root.display()
    );
    // Files uploaded since the last manifest write stay: with a store whose conditional
    // writes are not atomic, a name of ours may be the other writer's file. No restore of the
    // newest point chains through them (the owner's TXIDs are past them), and compaction
    // leaves files the manifest does not name alone.
    e.manifest_backlog.clear();
    crate::log::error(&msg);
    e.repl.set_error(Some(msg.clone()));
    if let Ok(Some(mut st)) = e.repl.shadow.read_state() {
        st.last_error = Some(msg.clone());
        let _ = e.repl.shadow.write_state(&st);
    }
    e.refused = Some(msg);
    e.replica_checked = true;
}

/// Claims the replica for the next generation of its history (a new history if it has none):
/// the first step of a takeover (SPEC 6). Returns the new owner and the newest TXID the replica
/// holds; the takeover's snapshot must have a TXID past it.
pub fn claim_next_generation(store: &dyn crate::store::Store) -> Result<(Owner, u64), String> {
    let failed = |what: &str, err: StoreError| format!("walrust: cannot {what}: {err}");
    for _ in 0..5 {
        let current = manifest::load_head(store)
            .map_err(|err| failed("read manifest.json", err))?
            .and_then(|(m, _)| m.owner());
        let next = current.map_or_else(Owner::new_history, Owner::next_generation);
        let files = store
            .list(None, Times::Listed)
            .map_err(|err| failed("list the replica", err))?;
        let max = files
            .iter()
            .map(|f| f.key.max_txid.get())
            .max()
            .unwrap_or(0);
        match manifest::update_as(store, Expect::Claim(next), &[], &[]) {
            Ok(_) => return Ok((next, max)),
            // Another takeover won the race: look again.
            Err(StoreError::NotOwner { .. }) => continue,
            Err(err) => return Err(failed("record the takeover in manifest.json", err)),
        }
    }
    Err(format!(
        "walrust: cannot take {} over: other takeovers keep changing its owner; retry",
        store.describe()
    ))
}

/// `walrust_takeover()` in this process: this database becomes the replica's history. The
/// snapshot that starts the new generation is requested; the caller waits for it.
pub(super) fn take_over(e: &mut Entry) -> Result<(), String> {
    let (owner, max) = claim_next_generation(e.repl.store.as_ref())?;
    let mut st = e.repl.shadow.state_or_default();
    st.owner = Some(owner);
    st.takeover = true;
    st.restored_txid = None;
    st.last_error = None;
    st.replica = e.repl.url.clone();
    save_state(e, &st)?;
    e.owner = Some(owner);
    e.refused = None;
    e.replica_checked = true;
    e.manifest_backlog.clear();
    e.manifest_version = e.repl.store.manifest_version().ok().flatten();
    e.fresh_snapshot_above = Some(max.max(e.uploaded));
    e.snapshot_requested = true;
    e.repl.set_error(None);
    crate::log::warn(&format!(
        "walrust: {} took {} over as {owner}; its snapshot starts past TXID {max}",
        e.repl.db_path.display(),
        e.repl.url
    ));
    Ok(())
}
