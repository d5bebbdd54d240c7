//! Which file names are walrust's temporary files, and which process made each: every one
//! carries its creator's PID. Anything else (Litestream's `.tmp` files, the user's files) is
//! never recognised.
//!
//! - `<db>-walrust/tmp/<min>-<max>.ltx.<pid>.tmp`: an LTX file being built (`upload::batch`);
//!   in the system's temporary directory when the shadow directory is full.
//! - `<db>-walrust/state.json.<pid>-<n>.tmp`: `state.json` being replaced (`shadow::state`).
//! - `<db>-walrust/log/spare.tmp.<pid>`: a spare log segment being written (`shadow::log`).
//! - a local-directory replica's `<name>.<pid>-<n>.tmp`: a file being written (`store::fs`):
//!   an LTX file, `manifest.json`, or a part of it under `manifest/<level>/`.
//! - `walrust-compact-<pid>-<n>.<what>.tmp` in the temporary directory of a compaction (the
//!   system's for `walrust compact`, the shadow directory's `tmp/` otherwise).

/// A process ID as written in a temporary file's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pid(pub u32);

fn digits(s: &str) -> Option<u32> {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// `<min:016x>-<max:016x>.ltx.<pid>.tmp` in the shadow directory's `tmp/`, or a compaction's
/// spool file there.
pub fn shadow_tmp(name: &str) -> Option<Pid> {
    compaction(name).or_else(|| {
        let rest = name.strip_suffix(".tmp")?;
        let (ltx, pid) = rest.rsplit_once('.')?;
        let stem = ltx.strip_suffix(".ltx")?;
        let (a, b) = stem.split_once('-')?;
        let hex16 = |s: &str| s.len() == 16 && s.bytes().all(|c| c.is_ascii_hexdigit());
        (hex16(a) && hex16(b)).then_some(())?;
        digits(pid).map(Pid)
    })
}

/// `state.json.<pid>-<n>.tmp` in the shadow directory (`shadow::state`).
pub fn state_tmp(name: &str) -> Option<Pid> {
    let tag = name.strip_prefix("state.json.")?.strip_suffix(".tmp")?;
    let (pid, n) = tag.split_once('-')?;
    digits(n)?;
    digits(pid).map(Pid)
}

/// `spare.tmp.<pid>` in the shadow log's folder.
pub fn spare(name: &str) -> Option<Pid> {
    digits(name.strip_prefix("spare.tmp.")?).map(Pid)
}

/// `<final name>.<pid>-<n>.tmp` in a local-directory replica (an LTX file or the manifest).
pub fn replica_tmp(name: &str) -> Option<Pid> {
    let rest = name.strip_suffix(".tmp")?;
    let (final_name, tag) = rest.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    (!final_name.is_empty() && digits(n).is_some()).then_some(())?;
    let ours = final_name.ends_with(".ltx") || final_name == "manifest.json";
    ours.then(|| digits(pid).map(Pid)).flatten()
}

/// `<part name>.<pid>-<n>.tmp` in a local-directory replica's `manifest/<level>/` folder: a
/// part of the manifest being written (`manifest::parts`).
pub fn part_tmp(name: &str) -> Option<Pid> {
    let rest = name.strip_suffix(".tmp")?;
    let (final_name, tag) = rest.rsplit_once('.')?;
    let (pid, n) = tag.split_once('-')?;
    digits(n)?;
    crate::manifest::parts::is_part_name(final_name)
        .then(|| digits(pid).map(Pid))
        .flatten()
}

/// `walrust-compact-<pid>-<n>.<what>.tmp`: a compaction's spool or merged file.
pub fn compaction(name: &str) -> Option<Pid> {
    let rest = name
        .strip_prefix("walrust-compact-")?
        .strip_suffix(".tmp")?;
    let (ids, _what) = rest.split_once('.')?;
    let (pid, n) = ids.split_once('-')?;
    digits(n)?;
    digits(pid).map(Pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walrusts_temporary_names_give_their_pid() {
        let ltx = "0000000000000001-00000000000000ff.ltx";
        assert_eq!(shadow_tmp(&format!("{ltx}.4242.tmp")), Some(Pid(4242)));
        assert_eq!(shadow_tmp("walrust-compact-77-3.spool.tmp"), Some(Pid(77)));
        assert_eq!(spare("spare.tmp.981"), Some(Pid(981)));
        assert_eq!(state_tmp("state.json.981-0.tmp"), Some(Pid(981)));
        assert_eq!(replica_tmp(&format!("{ltx}.12-0.tmp")), Some(Pid(12)));
        assert_eq!(replica_tmp("manifest.json.12-5.tmp"), Some(Pid(12)));
        assert_eq!(compaction("walrust-compact-5-0.merged.tmp"), Some(Pid(5)));
    }

    #[test]
    fn other_names_are_never_recognised() {
        for name in [
            "0000000000000001-00000000000000ff.ltx",
            "0000000000000001-00000000000000ff.ltx.tmp", // Litestream's
            "0000000000000001-00000000000000ff.ltx.x.tmp",
            "notes.4242.tmp",
            "spare",
            "spare.tmp.",
            "spare.tmp.12a",
            "state.json.tmp",
            "app.db.12-0.tmp",
            "walrust-compact-x-0.spool.tmp",
            "walrust-compact-1.spool.tmp",
        ] {
            assert_eq!(shadow_tmp(name), None, "{name}");
            assert_eq!(spare(name), None, "{name}");
            assert_eq!(replica_tmp(name), None, "{name}");
            assert_eq!(compaction(name), None, "{name}");
        }
    }
}
