//! `walrust watch` on a database that does not exist yet: a sidecar often starts before its
//! application has created the database (containers started together, a first deployment on a
//! new disk). As Litestream does, the watch then waits for it, and starts watching it once it
//! is an SQLite database in WAL mode. What must hold: a database is watched from the first look
//! that finds it in WAL mode, whatever it held before (the watch's first snapshot covers it);
//! a database that exists, is not empty and is not in WAL mode at the watch's start is not
//! waited for (that is an error the user must fix, as before), nor is one that cannot be read.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use walrust::config::Settings;
use walrust::watch::{self, Watched};

/// Whether `path` names a file with at least a database header's first bytes: else the
/// watch waits for it. A file that cannot be opened for another reason than its absence (its
/// permissions) counts as there, so that the watch says what is wrong instead of waiting.
pub fn there(path: &Path) -> bool {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) => return e.kind() != std::io::ErrorKind::NotFound,
    };
    let mut head = [0u8; 20];
    file.read_exact_at(&mut head, 0).is_ok()
}

/// A database the watch waits for, with what it needs to start watching it.
pub struct Waiting {
    /// Absolute: its folder canonical, for the waker's directory watch.
    pub path: PathBuf,
    url: String,
    settings: Settings,
    /// The last thing said about it, not to say it again every look.
    said: Option<String>,
}

impl Waiting {
    /// Starts waiting for `db`, and says so; fails (one line) when its folder does not exist.
    pub fn new(db: &Path, url: &str, settings: Settings) -> Result<Waiting, String> {
        let w = Waiting::quiet(db, url, settings)?;
        // A mistyped path waits too: say which file, and from where a relative one was taken.
        let from = walrust::watch::relative_to(db)
            .map_or(String::new(), |r| format!(" ({} {r})", db.display()));
        walrust::log::info(&format!(
            "waiting for {}{from} to be created in WAL mode; it is watched from then on",
            w.path.display()
        ));
        Ok(w)
    }

    /// `new`, without a word (the caller says why it waits).
    pub fn quiet(db: &Path, url: &str, settings: Settings) -> Result<Waiting, String> {
        let dir = match db.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let dir = std::fs::canonicalize(&dir).map_err(|e| {
            format!(
                "walrust: cannot watch {}: its folder {}: {e}",
                db.display(),
                dir.display()
            )
        })?;
        let name = db
            .file_name()
            .ok_or_else(|| format!("walrust: cannot watch {}: not a file name", db.display()))?;
        let path = dir.join(name);
        Ok(Waiting {
            path,
            url: url.to_string(),
            settings,
            said: None,
        })
    }

    /// One look: the database, watched, once it is there and its watch starts (in WAL mode;
    /// until then each new reason it does not is said once).
    pub fn try_start(&mut self) -> Option<Arc<Watched>> {
        if !there(&self.path) {
            return None;
        }
        let why = match watch::start(&self.path, &self.url, self.settings.clone()) {
            Ok(w) => return Some(w),
            Err(e) => format!("{} (trying again)", e.trim_start_matches("walrust: ")),
        };
        if self.said.as_ref() != Some(&why) {
            walrust::log::warn(&why);
            self.said = Some(why);
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_waited_for_until_it_holds_a_header() {
        let dir = std::env::temp_dir().join(format!("walrust-waiting-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("a.db");
        let _ = std::fs::remove_file(&db);
        assert!(!there(&db));
        std::fs::write(&db, b"").unwrap();
        assert!(
            !there(&db),
            "SQLite writes an opened database's header at its first write"
        );
        std::fs::write(&db, [0u8; 100]).unwrap();
        assert!(there(&db));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
