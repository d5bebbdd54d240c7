//! `walrust takeover DB [--replica URL]`.

use crate::{Args, Failure};
use std::path::{Path, PathBuf};
use walrust::shadow::{ShadowDir, State};

pub const HELP: &str = "\
Usage: walrust takeover DB [--replica URL] [--shadow-dir DIR]

Makes the database DB the history of its replica (SPEC section 6): records a new generation
of the replica's history in its manifest.json, so that the database that wrote the replica
until now is refused from then on, and marks DB's shadow directory so that the next process
that opens DB through walrust starts the generation with a snapshot whose TXID is past every
TXID the replica holds. Use it after restoring a copy to an older point, or to move a replica
to another copy of the database. The replica is the one DB already replicates to, or URL.

Exit codes: 0 done, 1 the shadow directory cannot be written, 2 usage (no replica known),
4 storage error.
";

pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = Args::parse(args, &["--replica", "--shadow-dir"], &[])?;
    a.expect_positional(&["DB"])?;
    let db = PathBuf::from(&a.positional[0]);
    if !db.is_file() {
        return Err(Failure::usage(format!(
            "{} is not a database file; give the path of the database to take the replica over with",
            db.display()
        )));
    }
    let root = ShadowDir::path_for(&db, a.value(&["--shadow-dir"]).map(Path::new));
    let mut state = walrust::shadow::state::read(&root.join("state.json"))
        .map_err(|e| Failure::new(1, format!("walrust: cannot read {}: {e}", root.display())))?
        .unwrap_or_default();
    let url = match (a.value(&["--replica"]), state.replica.as_str()) {
        (Some(u), _) => u.to_string(),
        (None, "") => {
            return Err(Failure::usage(format!(
                "{} has never replicated; name the replica with --replica URL",
                db.display()
            )))
        }
        (None, recorded) => recorded.to_string(),
    };
    let store = walrust::store::open(&url).map_err(Failure::store)?;
    if !state.replica.is_empty()
        && !walrust::store::url::same_replica(&state.replica, &store.describe())
    {
        return Err(Failure::usage(format!(
            "{} replicates to {}, not {}; remove {} first to move it to another replica",
            db.display(),
            state.replica,
            store.describe(),
            root.display()
        )));
    }
    let (owner, max) =
        walrust::upload::claim_next_generation(store.as_ref()).map_err(|e| Failure::new(4, e))?;
    let shadow = ShadowDir::create(root.clone())
        .map_err(|e| Failure::new(1, format!("walrust: cannot create {}: {e}", root.display())))?;
    state = State {
        version: 1,
        replica: store.describe(),
        owner: Some(owner),
        takeover: true,
        restored_txid: None,
        last_error: None,
        uploaded_txid: state.uploaded_txid.max(max),
        ..state
    };
    shadow
        .write_state(&state)
        .map_err(|e| Failure::new(1, format!("walrust: cannot write {}: {e}", root.display())))?;
    println!(
        "{} now holds the history of {} ({owner}); the next process that opens it through walrust takes a snapshot past TXID {max}",
        store.describe(),
        db.display()
    );
    Ok(())
}
