//! When replication starts, and with what settings: URI parameters and `WALRUST_*` at open,
//! `PRAGMA walrust_*`, and a shadow directory whose `state.json` already names a replica.
//! What must hold: one history per database (a database replicates to one replica; asking for
//! another fails with a message saying how to start over), and a bad setting fails the open or
//! the PRAGMA instead of running unreplicated.

use super::{is_wal_mode, Database, DbState, PragmaOutcome};
use crate::config::{self, Settings};
use crate::replication::Replication;
use crate::shadow::log::Appender;
use crate::shadow::{ShadowDir, State};
use std::io;
use std::path::Path;
use std::sync::Arc;

impl Database {
    pub(super) fn configure_from_open(&self, uri: &dyn Fn(&str) -> Option<String>) {
        let mut st = self.lock();
        if st.settings.is_none() {
            st.conflict = Settings::env_error(); // a bad WALRUST_<NAME> fails the open
        }
        let mut settings = st.settings.clone().unwrap_or_else(Settings::from_env);
        for name in config::NAMES {
            if let Some(v) = uri(name) {
                if let Err(e) = settings.set(name, &v) {
                    st.conflict = Some(e);
                }
            }
        }
        st.settings = Some(settings.clone());
        let asked = uri_replica(uri).or_else(|| env_replica(&self.path));
        if let Some(Err(e)) = asked.as_deref().map(crate::store::open) {
            // Fails the open as the PRAGMA would fail, instead of running unreplicated.
            st.conflict = Some(cannot_replicate(&self.path, &e));
            return;
        }
        let shadow = ShadowDir::path_for(&self.path, settings.shadow_dir.as_deref());
        // A restore's record (SPEC 6) is used only when the same replica is asked for again.
        let recorded = crate::shadow::state::read(&shadow.join("state.json"))
            .ok()
            .flatten()
            .filter(|s| s.owner.is_some() || s.restored_txid.is_none())
            .map(|s| s.replica);
        let in_use = st
            .replication
            .as_ref()
            .map(|r| r.url.clone())
            .or(recorded.filter(|r| !r.is_empty()));
        match (asked, in_use) {
            (Some(a), Some(u)) if !same_replica(&a, &u) => {
                st.conflict = Some(conflict_message(&self.path, &u, &a));
            }
            (Some(a), None) => st.wanted = Some(a),
            (_, Some(u)) if st.replication.is_none() => st.wanted = Some(u),
            _ => {}
        }
    }

    /// Starts the replication asked for at open, now that the database is in WAL mode.
    pub(super) fn start_wanted(&self) {
        let mut st = self.lock();
        if st.replication.is_some() {
            return;
        }
        if let Some(url) = st.wanted.take() {
            if let Err(e) = self.start_locked(&mut st, &url) {
                crate::log::error(&e);
                st.problem = Some(e);
            }
        }
    }

    fn start_locked(&self, st: &mut DbState, url: &str) -> Result<Arc<Replication>, String> {
        let settings = st.settings.clone().unwrap_or_else(Settings::from_env);
        let store = crate::store::open(url).map_err(|e| cannot_replicate(&self.path, &e))?;
        let described = store.describe();
        let root = ShadowDir::path_for(&self.path, settings.shadow_dir.as_deref());
        let mut state = crate::shadow::state::read(&root.join("state.json"))
            .map_err(|e| unreadable_state(&self.path, &root, &e))?
            .unwrap_or_default();
        if state.owner.is_none()
            && state.restored_txid.is_some()
            && !same_replica(&state.replica, &described)
        {
            // Restored from another replica: this copy starts a history of its own.
            let _ = std::fs::remove_dir_all(&root);
            state = State::default();
        }
        let shadow = ShadowDir::create(root.clone())
            .map_err(|e| format!("walrust: cannot create the shadow directory {}: {e}; check permissions and free space", root.display()))?;
        if !state.replica.is_empty() && !same_replica(&state.replica, &described) {
            return Err(conflict_message(&self.path, &state.replica, &described));
        }
        if state.replica.is_empty() {
            state = record_replica(&shadow, state, &described)?;
            if !same_replica(&state.replica, &described) {
                return Err(conflict_message(&self.path, &state.replica, &described));
            }
        }
        crate::cleanup::at_replication_start(&shadow, &described);
        let repl = Arc::new(Replication::new(
            self.path.clone(),
            shadow.clone(),
            store,
            settings,
        ));
        st.appender = Some(
            Appender::new(shadow.log_dir())
                .with_floor(state.uploaded_txid)
                .with_floor_source(shadow.floor_source()),
        );
        st.replication = Some(repl.clone());
        st.problem = None;
        crate::upload::register(repl.clone(), self);
        crate::checkpoint::register(self);
        Ok(repl)
    }

    /// `PRAGMA walrust_replica = url`: starts replication now (the database must be in WAL mode).
    fn set_replica(
        &self,
        url: &str,
        read_main: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> PragmaOutcome {
        let mut st = self.lock();
        if let Some(r) = &st.replication {
            return if same_replica(&r.url, url) {
                PragmaOutcome::Value(Some(r.url.clone()))
            } else {
                PragmaOutcome::Error(conflict_message(&self.path, &r.url, url))
            };
        }
        if !is_wal_mode(read_main) {
            return PragmaOutcome::Error(format!(
                "walrust: cannot replicate {}: it is not in WAL mode; run PRAGMA journal_mode=WAL first",
                self.path.display()
            ));
        }
        match self.start_locked(&mut st, url) {
            // A value, not nothing: some drivers (Python's) fail on a result without a name.
            Ok(r) => PragmaOutcome::Value(Some(r.url.clone())),
            Err(e) => PragmaOutcome::Error(e),
        }
    }

    /// Handles `PRAGMA walrust_*` (read with `value == None`).
    pub fn pragma(
        &self,
        name: &str,
        value: Option<&str>,
        read_main: &mut dyn FnMut(&mut [u8], u64) -> io::Result<usize>,
    ) -> PragmaOutcome {
        let name = name.to_ascii_lowercase();
        if name == "walrust_replica" {
            return match value {
                Some(v) => self.set_replica(v.trim(), read_main),
                None => PragmaOutcome::Value(self.replication().map(|r| r.url.clone())),
            };
        }
        if !config::NAMES.contains(&name.as_str()) {
            return PragmaOutcome::NotOurs;
        }
        let mut st = self.lock();
        let mut settings = st.settings.clone().unwrap_or_else(Settings::from_env);
        if let Some(v) = value {
            if let Err(e) = settings.set(&name, v) {
                return PragmaOutcome::Error(e);
            }
            if let Some(r) = &st.replication {
                *r.settings.lock().unwrap() = settings.clone();
                crate::upload::wake(r);
            }
            st.settings = Some(settings.clone());
        }
        PragmaOutcome::Value(settings.get(&name))
    }
}

/// The `walrust_replica` URI parameter. SQLite ends a URI parameter at `&`, so an s3:// URL
/// written as is (`walrust_replica=s3://b/p?endpoint=URL&force_path_style=true`) arrives cut
/// there, its later query parameters taken for URI parameters of their own: the ones an
/// s3:// URL takes are put back, as the user meant. (`%26` for `&` works too.)
fn uri_replica(uri: &dyn Fn(&str) -> Option<String>) -> Option<String> {
    let mut url = uri("walrust_replica")?;
    if url.trim_start().starts_with("s3://") {
        for key in ["endpoint", "region", "force_path_style"] {
            if let Some(value) = uri(key) {
                url.push(if url.contains('?') { '&' } else { '?' });
                url.push_str(&format!("{key}={value}"));
            }
        }
    }
    Some(url)
}

fn env_replica(db: &Path) -> Option<String> {
    let root = std::env::var("WALRUST_REPLICA_ROOT")
        .ok()
        .filter(|r| !r.is_empty())?;
    let name = db.file_name()?.to_string_lossy().to_string();
    Some(crate::store::url::under_root(&root, &name))
}

pub use crate::store::url::same_replica;

/// Why a replica URL cannot be used, as the PRAGMA and an open with it both say.
fn cannot_replicate(db: &Path, e: &crate::store::StoreError) -> String {
    format!("walrust: cannot replicate {}: {e}", db.display())
}

/// A shadow directory whose `state.json` cannot be read: walrust writes it atomically, so it
/// is someone else's file, or unreadable to this user; or no directory at all.
fn unreadable_state(db: &Path, root: &Path, e: &std::io::Error) -> String {
    let state = root.join("state.json");
    if root.exists() && !root.is_dir() {
        return format!(
            "walrust: cannot replicate {}: its shadow directory's path {} holds a file; move it \
             away",
            db.display(),
            root.display()
        );
    }
    // `state::read` names the file in its own errors.
    let cause = e.to_string();
    let cause = cause
        .strip_prefix(&format!("{}: ", state.display()))
        .unwrap_or(&cause);
    format!(
        "walrust: cannot replicate {}: {} cannot be read ({cause}); check its permissions, or if \
         it is not walrust's, move {} away to start over",
        db.display(),
        state.display(),
        root.display()
    )
}

pub(crate) fn conflict_message(db: &Path, in_use: &str, asked: &str) -> String {
    if asked.trim().is_empty() {
        return format!(
            "walrust: {} replicates to {in_use}, and an empty replica URL does not stop that; to stop replicating it, close it in every process and remove its shadow directory ({}-walrust)",
            db.display(),
            db.display()
        );
    }
    format!(
        "walrust: {} already replicates to {in_use}, not {asked}; open it with the same replica, or remove its shadow directory ({}-walrust) to start over with the new one",
        db.display(),
        db.display()
    )
}

/// Records the replica URL in a `state.json` that names none. The first process to replicate
/// the database creates the file; one that finds it created meanwhile (another process
/// opening at the same instant, or its uploader) takes what is there, never overwriting it.
pub(crate) fn record_replica(
    shadow: &ShadowDir,
    state: State,
    described: &str,
) -> Result<State, String> {
    let cannot = |e: std::io::Error| {
        format!(
            "walrust: cannot write {}: {e}; check the directory's permissions and free space",
            shadow.state_path().display()
        )
    };
    let wanted = State {
        version: 1,
        replica: described.to_string(),
        ..state
    };
    let existing = shadow.read_state().ok().flatten();
    match existing {
        Some(found) if !found.replica.is_empty() => Ok(found),
        Some(_) => shadow.write_state(&wanted).map(|_| wanted).map_err(cannot),
        None => match shadow.create_state(&wanted).map_err(cannot)? {
            true => Ok(wanted),
            false => Ok(shadow.state_or_default()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::uri_replica;

    fn from(params: &[(&str, &str)]) -> Option<String> {
        let lookup = |k: &str| {
            params
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        };
        uri_replica(&lookup)
    }

    #[test]
    fn an_s3_query_cut_by_the_uri_is_put_back() {
        let cut = [
            (
                "walrust_replica",
                "s3://bkt/app?endpoint=http://127.0.0.1:9000",
            ),
            ("force_path_style", "true"),
            ("region", "auto"),
        ];
        assert_eq!(
            from(&cut).as_deref(),
            Some("s3://bkt/app?endpoint=http://127.0.0.1:9000&region=auto&force_path_style=true")
        );
        // Only an s3:// URL takes them; a whole URL is left as it is.
        let dir = [("walrust_replica", "file:///r"), ("region", "x")];
        assert_eq!(from(&dir).as_deref(), Some("file:///r"));
        assert_eq!(from(&[("region", "x")]), None);
    }
}
