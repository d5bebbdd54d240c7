//! Leftovers of killed processes: walrust's temporary files (LTX files being built, spare log
//! segments, files being written into a local-directory replica, a compaction's spool files)
//! that a process killed mid-write never removed. They are recognised by name (`names`: each
//! carries its creator's PID) and removed when replication of a database starts (also from
//! the system's temporary directory, where a full shadow directory sends LTX files) and before
//! `walrust compact` runs, so that repeated crashes cannot fill the disk.
//!
//! Must never: remove a file a live process may still use (`liveness`: its creator is alive,
//! or it is locked, or, where liveness cannot be told, it changed recently), or a file that
//! is not walrust's temporary file.

mod liveness;
pub mod names;

use std::path::{Path, PathBuf};

use crate::shadow::ShadowDir;
use crate::store::ReplicaUrl;
use names::Pid;

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Removed {
    pub files: u64,
    pub bytes: u64,
}

/// At the start of replication: the shadow directory, its `tmp/` and `log/`, the replica if
/// it is a local directory, and (once per process) the system's temporary directory.
pub fn at_replication_start(shadow: &ShadowDir, replica_url: &str) -> Removed {
    let mut r = Removed::default();
    sweep(&shadow.tmp_dir(), names::shadow_tmp, &mut r);
    sweep(&shadow.log_dir(), names::spare, &mut r);
    sweep(&shadow.root, names::state_tmp, &mut r);
    sweep_replica(replica_url, &mut r);
    report(r, &shadow.root.display().to_string());
    let mut t = Removed::default();
    sweep_system_tmp_once(&mut t);
    report(t, &std::env::temp_dir().display().to_string());
    Removed {
        files: r.files + t.files,
        bytes: r.bytes + t.bytes,
    }
}

/// LTX files built in the system's temporary directory when a shadow directory was full
/// (`upload::batch::with_room`), by processes of any database: looked for once per process
/// (a busy temporary directory is not read again for each of many databases).
fn sweep_system_tmp_once(r: &mut Removed) {
    static DONE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !DONE.swap(true, std::sync::atomic::Ordering::AcqRel) {
        sweep(&std::env::temp_dir(), names::shadow_tmp, r);
    }
}

/// Before a compaction of `replica_url` that spools in `temp_dir`: both.
pub fn before_compaction(replica_url: &str, temp_dir: &Path) -> Removed {
    let mut r = Removed::default();
    sweep(temp_dir, names::compaction, &mut r);
    sweep_replica(replica_url, &mut r);
    report(r, replica_url);
    r
}

fn report(r: Removed, place: &str) {
    if r.files > 0 {
        crate::log::warn(&format!(
            "walrust: removed {} temporary files ({} bytes) that killed processes left, for {place}",
            r.files, r.bytes
        ));
    }
}

/// A local-directory replica's root (the manifest's temporary files), level folders and the
/// folders of the manifest's parts.
fn sweep_replica(url: &str, r: &mut Removed) {
    if let Ok(ReplicaUrl::Dir(root)) = ReplicaUrl::parse(url) {
        for dir in replica_dirs(&root) {
            sweep(&dir, names::replica_tmp, r);
        }
        for dir in subdirs(&root.join(crate::manifest::PARTS_DIR)) {
            sweep(&dir, names::part_tmp, r);
        }
    }
}

fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir).map_or_else(
        |_| Vec::new(),
        |entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        },
    )
}

fn replica_dirs(root: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![root.to_path_buf()];
    dirs.extend(subdirs(&root.join("ltx")));
    dirs
}

/// Removes the files of `dir` that `recognise` names and that no live process uses. A folder
/// that cannot be read is skipped: this is housekeeping, never a reason to fail.
fn sweep(dir: &Path, recognise: fn(&str) -> Option<Pid>, r: &mut Removed) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(recognise) else {
            continue;
        };
        let path = entry.path();
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_file()
            && liveness::is_leftover(&path, pid)
            && std::fs::remove_file(&path).is_ok()
        {
            r.files += 1;
            r.bytes += meta.len();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PID no process has (above Linux's largest).
    const DEAD: u32 = 4_194_304 + 99;

    #[test]
    fn leftovers_of_dead_processes_go_and_nothing_else_does() {
        let root = std::env::temp_dir().join(format!("walrust-cleanup-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let shadow = ShadowDir::create(root.join("app.db-walrust")).unwrap();
        let replica = root.join("replica");
        std::fs::create_dir_all(replica.join("ltx/0")).unwrap();
        std::fs::create_dir_all(replica.join("manifest/0")).unwrap();
        let part = "manifest/0/0000000000000001-0000000000000010-00000000000000aa.wmp";
        let me = std::process::id();
        let ltx = "0000000000000001-0000000000000002.ltx";
        let dead = [
            shadow.tmp_dir().join(format!("{ltx}.{DEAD}.tmp")),
            shadow
                .tmp_dir()
                .join(format!("walrust-compact-{DEAD}-0.spool.tmp")),
            shadow.log_dir().join(format!("spare.tmp.{DEAD}")),
            replica.join(format!("ltx/0/{ltx}.{DEAD}-3.tmp")),
            replica.join(format!("manifest.json.{DEAD}-4.tmp")),
            replica.join(format!("{part}.{DEAD}-5.tmp")),
        ];
        let kept = [
            shadow.tmp_dir().join(format!("{ltx}.{me}.tmp")),
            shadow.log_dir().join(format!("spare.tmp.{me}")),
            shadow.log_dir().join("spare"),
            shadow.log_dir().join("0000000000000001.log"),
            replica.join(format!("ltx/0/{ltx}")),
            replica.join(format!("ltx/0/{ltx}.tmp")),
            replica.join(format!("ltx/0/{ltx}.{me}-0.tmp")),
            replica.join("manifest.json"),
            replica.join(part),
            replica.join(format!("{part}.{me}-1.tmp")),
            replica.join(format!("manifest/0/notes.txt.{DEAD}-1.tmp")),
        ];
        for p in dead.iter().chain(&kept) {
            std::fs::write(p, b"12345").unwrap();
        }
        let r = at_replication_start(&shadow, replica.to_str().unwrap());
        assert_eq!(
            r,
            Removed {
                files: 6,
                bytes: 30
            }
        );
        for p in &dead {
            assert!(!p.exists(), "{}", p.display());
        }
        for p in &kept {
            assert!(p.exists(), "{}", p.display());
        }

        // `walrust compact`: the temporary directory it spools in, and the replica.
        let temp = root.join("system-tmp");
        std::fs::create_dir_all(&temp).unwrap();
        let spool = temp.join(format!("walrust-compact-{DEAD}-7.merged.tmp"));
        let live_spool = temp.join(format!("walrust-compact-{me}-7.merged.tmp"));
        let other = temp.join(format!("{DEAD}.tmp"));
        let in_replica = replica.join(format!("ltx/0/{ltx}.{DEAD}-9.tmp"));
        for p in [&spool, &live_spool, &other, &in_replica] {
            std::fs::write(p, b"123").unwrap();
        }
        let r = before_compaction(&format!("file://{}", replica.display()), &temp);
        assert_eq!(r, Removed { files: 2, bytes: 6 });
        assert!(!spool.exists() && !in_replica.exists());
        assert!(live_spool.exists() && other.exists());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
