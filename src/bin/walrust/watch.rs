//! `walrust watch DB... --replica URL | --replica-root URL | --config FILE`: the sidecar (SPEC
//! section 7). The
//! work is in the library (`walrust::watch`); this file parses flags, runs the poll loop and
//! waits for SIGINT/SIGTERM.

use crate::exec::App;
use crate::waiting::{self, Waiting};
use crate::{Args, Failure};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use walrust::config::{CheckpointMode, Settings};
use walrust::watch::{self, wake, Watched};

pub const HELP: &str = "\
Usage: walrust watch (DB... (--replica URL | --replica-root URL) | --config FILE)
       [--sync-interval MS] [--snapshot-interval S] [--retention SPEC]
       [--compact-after-snapshot] [--checkpoint background|off] [--shadow-dir DIR]
       [--restore-if-db-not-exists] [--exec CMD] [--addr ADDR]

Replicates databases whose applications do not load the walrust extension, into the same
replica format with the same promises, until SIGINT or SIGTERM; then uploads what is pending
and exits. --replica names the replica of one database; --replica-root URL replicates each
DB to URL/<file name>. It shares the shadow directory (DB-walrust) and the one-uploader rule
with processes that load the extension on the same database; a second watch of the same
database is refused.

--config FILE (or Litestream's -config FILE; with no DB and no --config, $LITESTREAM_CONFIG
or /etc/litestream.yml, as Litestream reads them) reads the databases from Litestream's YAML
format (the flags above apply to
all of them; a replica's own sync-interval, to its database, over --sync-interval):

    dbs:
      - path: /path/to/app.db
        replicas:            # or `replica:` with the replica under it
          - url: s3://bucket/app
            sync-interval: 1s
      - path: /path/to/other.db
        replica:             # Litestream's fields instead of url:
          type: s3           # or file, with path: DIR
          bucket: bucket
          path: other
          endpoint: https://s3.example.com   # region:, force-path-style: true
      - dir: /data/tenants   # every SQLite file under it whose name matches pattern:
        pattern: \"*.db\"
        recursive: true      # in subdirectories too
        watch: true          # and those created while the watch runs
        replica:
          url: s3://bucket/tenants   # each to s3://bucket/tenants/<its path under dir>

One replica per database. The file's top level may set bucket, endpoint, region,
force-path-style, sync-interval and the access key (access-key-id, secret-access-key) for
every replica; one watch uses one access key. `snapshot:` with interval: and retention: (at
the top, or under a database) sets the snapshot interval and keeps every restore point of
the retention (hourly=N for N hours, other tiers off, applied after each snapshot);
`retention: enabled: false` removes nothing. Litestream's settings of how it runs itself
(logging, levels, monitor-interval, part-size, ...) are named at start as unused;
any other key is refused with its line number. $VAR and ${VAR} in values are expanded.

--checkpoint background (the default): the watch checkpoints the WAL itself (SQLite's
PASSIVE checkpoint) once it has copied the frames, so the application's own checkpoints find
nothing left to do and its commits stay fast. --checkpoint off leaves checkpoints to the
application. Either way the watch holds a read slot of SQLite's WAL index so that no
checkpoint restarts the WAL past a frame it has not copied, and lets it go once everything
is copied and checkpointed.

--restore-if-db-not-exists (or `restore-if-db-not-exists: true` under a database in the
file): a DB that is missing is first restored from its replica's newest restore point, as
Litestream's replicate does, and then watched, continuing the replica's history (with no
restore point in the replica either, it is a first start).

--exec CMD (or `exec: CMD` at the file's top level), as Litestream's -exec: once the
databases are watched (or waited for), runs CMD (split into words as a shell would, without
one) with the watch's standard output and error, and stops when it exits; SIGINT or SIGTERM
sent to the watch is passed on to CMD, and the watch stops once CMD has exited. Either way
it then uploads what is pending. CMD failing is exit 1, the message giving its status.

--addr ADDR (or `addr: ADDR` at the file's top level; `:PORT` is every interface): serves
the watched databases' replication as Prometheus metrics at http://ADDR/metrics, under
Litestream's names (litestream_db_size, litestream_wal_size, litestream_txid,
litestream_sync_count, litestream_sync_error_count) and walrust's own (walrust_replica_txid,
walrust_replica_lag_seconds, walrust_replica_pending_bytes, walrust_replica_error,
walrust_replica_last_upload_timestamp_seconds). An address it cannot listen on is said in
one line, and the databases are replicated without metrics (as Litestream does).

heartbeat-url: URL (with heartbeat-interval:, 5m unless given, at least 1m) at the file's top
level, as Litestream's: a GET of URL once per interval while every watched database
replicates (no failure, in its replica, nothing waiting longer than the interval); else the
ping is withheld and the watch says which database holds it back.

A DB that does not exist yet (or is still empty) is waited for, as Litestream does: it is
watched from the first look that finds it in WAL mode (the application creates it and runs
PRAGMA journal_mode=WAL). A DB that exists in another journal mode at start is an error.

Exit codes: 0 stopped with everything uploaded, 1 cannot start (not in WAL mode, watched
already, shadow directory), 2 usage (or a --config FILE it cannot read or refuses), 4 the
pending transactions could not be uploaded before stopping (they stay in the shadow
directory for the next run).
";

/// A hidden setting for the tests: the safety-net poll's interval while inotify works (ms).
const FALLBACK_ENV: &str = "WALRUST_WATCH_FALLBACK_MS";
/// How long the final upload may take at shutdown.
const FINISH_TIMEOUT: Duration = Duration::from_secs(60);

pub fn run(args: &[String]) -> Result<(), Failure> {
    let a = Args::parse(
        args,
        &[
            "--replica",
            "--replica-root",
            "--sync-interval",
            "--snapshot-interval",
            "--retention",
            "--checkpoint",
            "--shadow-dir",
            "--config",
            "-config",
            "--exec",
            "-exec",
            "--addr",
        ],
        &["--compact-after-snapshot", "--restore-if-db-not-exists"],
    )?;
    let Listed {
        dbs,
        exec: file_exec,
        addr: file_addr,
        heartbeat,
        dirs,
    } = databases(&a)?;
    let exec = a
        .value(&["--exec", "-exec"])
        .map(str::to_string)
        .or(file_exec);
    let addr = a.value(&["--addr"]).map(str::to_string).or(file_addr);
    // The application's environment is the one the watch was given, before the config's key.
    let app_env: Vec<_> = std::env::vars_os().collect();
    // A `dir:` that holds no database yet has its replica's key too.
    use_credentials(&dbs.iter().chain(&dirs).cloned().collect::<Vec<_>>())?;
    let settings = settings(&a)?;
    if let Some(file) = config_file(&a) {
        say_what_is_kept(&file, &dbs, &settings);
    }
    walrust::vfs::ffi::posix::block_termination_signals()
        .map_err(|e| Failure::new(1, format!("cannot block SIGINT/SIGTERM: {e}")))?;
    // An address it cannot listen on is said, and replication goes on without metrics, as
    // Litestream does: monitoring must never be why nothing is replicated.
    let watched: Arc<Mutex<Vec<Arc<Watched>>>> = Arc::default();
    if let Some(addr) = addr.as_deref().filter(|a| !a.is_empty()) {
        if let Err(e) = crate::metrics::serve(addr, watched.clone()) {
            walrust::log::error(&e);
        }
    }
    if let Some(hb) = heartbeat {
        crate::heartbeat::start(hb, watched.clone()).map_err(|e| Failure::new(1, e))?;
    }
    let mut waiting: Vec<Waiting> = Vec::new();
    for db in dbs {
        if db.restore_if_missing || a.has("--restore-if-db-not-exists") {
            crate::restore::before_watch(&db.url, &db.path)?;
        }
        let (settings, Db { path, url, .. }) = (settings_of(&settings, &db), db);
        if !waiting::there(&path) {
            waiting.push(Waiting::new(&path, &url, settings).map_err(|e| Failure::new(1, e))?);
            continue;
        }
        let w = watch::start(&path, &url, settings).map_err(|e| Failure::new(1, e))?;
        say_watching(&w);
        watched.lock().unwrap_or_else(|e| e.into_inner()).push(w);
    }
    let dirs: Vec<_> = dirs
        .into_iter()
        .map(|d| (settings_of(&settings, &d), d))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (stop, watched) = (stop.clone(), watched.clone());
        std::thread::spawn(move || poll_loop(&watched, waiting, dirs, &stop))
    };
    // The application (--exec) starts once every database is watched or waited for.
    let app_failure = match exec.as_deref().map(|c| App::start(c, &app_env)) {
        None => {
            let sig = wait_for_stop_signal();
            walrust::log::info(&format!(
                "signal {sig}: uploading what is pending, then stopping"
            ));
            None
        }
        Some(Err(f)) => Some(f),
        Some(Ok(mut app)) => {
            let (_, ended) = app.wait();
            walrust::log::info("the application exited: uploading what is pending, then stopping");
            app.failure(&ended)
        }
    };
    stop.store(true, Ordering::Release);
    let _ = poller.join();
    let watched = watched.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut failed = None;
    for w in &watched {
        match w.finish(FINISH_TIMEOUT) {
            Ok(txid) => walrust::log::info(&format!(
                "stopped watching {}: TXID {txid} uploaded",
                w.path.display()
            )),
            Err(e) => failed = Some(e),
        }
    }
    match (app_failure, failed) {
        (Some(app), Some(e)) => {
            walrust::log::error(&e);
            Err(app)
        }
        (Some(app), None) => Err(app),
        (None, Some(e)) => Err(Failure::new(4, e)),
        (None, None) => Ok(()),
    }
}

/// The file's settings for this database, over the flags' for all.
fn settings_of(flags: &Settings, db: &Db) -> Settings {
    let mut settings = flags.clone();
    if let Some(ms) = db.sync_interval_ms {
        settings.sync_interval_ms = ms;
    }
    db.snapshots.apply(&mut settings);
    settings
}

/// Waits for SIGINT or SIGTERM (without an application, no child's end concerns the watch).
fn wait_for_stop_signal() -> i32 {
    loop {
        let sig = walrust::vfs::ffi::posix::wait_for_termination();
        if sig != walrust::vfs::ffi::posix::CHILD_ENDED {
            return sig;
        }
    }
}

fn say_watching(w: &Watched) {
    walrust::log::info(&format!(
        "watching {}, replicating to {} (TXID {} uploaded; {})",
        w.path.display(),
        w.repl.url,
        w.repl.status().uploaded_txid,
        snapshot_policy(&w.repl.settings())
    ));
}

/// Polls every database whenever the waker says (a change, or the fallback interval), starts
/// watching each awaited database once it is in WAL mode (and each that appears in a `dir:`
/// with `watch: true`), and says when uploads stop or start working again.
fn poll_loop(
    watched: &Mutex<Vec<Arc<Watched>>>,
    mut waiting: Vec<Waiting>,
    dirs: Vec<(Settings, Db)>,
    stop: &AtomicBool,
) {
    let fallback = std::env::var(FALLBACK_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(wake::FALLBACK, Duration::from_millis);
    let list = |m: &Mutex<Vec<Arc<Watched>>>| m.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut paths: Vec<PathBuf> = list(watched).iter().map(|w| w.path.clone()).collect();
    paths.extend(waiting.iter().map(|w| w.path.clone()));
    // Real paths: a `path:` entry that a `dir:` also covers is not watched twice.
    let real = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    let mut known: std::collections::HashSet<PathBuf> = paths.iter().map(real).collect();
    let mut scanned = std::time::Instant::now();
    let paths: Vec<&std::path::Path> = paths.iter().map(PathBuf::as_path).collect();
    let (mut waker, why) = wake::Waker::new(&paths, fallback);
    if let Some(why) = why {
        walrust::log::warn(&why);
    }
    let mut failing: std::collections::HashMap<PathBuf, bool> = Default::default();
    while !stop.load(Ordering::Acquire) {
        if !dirs.is_empty() && scanned.elapsed() >= wake::FALLBACK {
            scanned = std::time::Instant::now();
            for found in look_again(&dirs, &mut known) {
                waker.add(&found.path);
                waiting.push(found);
            }
            for gone in removed_from_dirs(watched, &dirs) {
                known.remove(&gone.path);
                failing.remove(&gone.path);
                let _ = std::thread::Builder::new()
                    .name("walrust-finish".into())
                    .spawn(move || say_removed(&gone));
            }
        }
        waiting.retain_mut(|db| match db.try_start() {
            Some(w) => {
                say_watching(&w);
                watched.lock().unwrap_or_else(|e| e.into_inner()).push(w);
                false
            }
            None => true,
        });
        for w in list(watched) {
            w.poll();
            let now_failing = w.repl.status().last_error.is_some();
            if failing.insert(w.path.clone(), now_failing) == Some(true) && !now_failing {
                walrust::log::info(&format!(
                    "{} replicates to {} again",
                    w.path.display(),
                    w.repl.url
                ));
            }
        }
        if let Some(why) = waker.wait(stop) {
            walrust::log::warn(&why);
        }
    }
}

/// The databases that appeared in the `dir:` entries with `watch: true` since their last look.
fn look_again(
    dirs: &[(Settings, Db)],
    known: &mut std::collections::HashSet<PathBuf>,
) -> Vec<Waiting> {
    let mut new = Vec::new();
    for (settings, entry) in dirs {
        let scan = entry.dir.as_ref().expect("a dir: entry");
        let Ok(found) = watch::config::find(&entry.path, scan) else {
            continue; // the directory is read again at the next look
        };
        for db in found.iter().map(|p| found_db(entry, p)) {
            if known.insert(db.path.clone()) {
                walrust::log::info(&format!(
                    "{} appeared in {}: it is watched once in WAL mode",
                    db.path.display(),
                    entry.path.display()
                ));
                match Waiting::quiet(&db.path, &db.url, settings.clone()) {
                    Ok(w) => new.push(w),
                    Err(e) => walrust::log::error(&e),
                }
            }
        }
    }
    new
}

/// The watched databases that were in a `dir:` with `watch: true` and are gone from it (a
/// tenant removed), taken off the watch as Litestream takes them off. A database named by
/// `path:` stays watched (its absence is an error the user hears of).
fn removed_from_dirs(
    watched: &Mutex<Vec<Arc<Watched>>>,
    dirs: &[(Settings, Db)],
) -> Vec<Arc<Watched>> {
    let covered = |w: &Arc<Watched>| {
        dirs.iter().any(|(_, e)| {
            let scan = e.dir.as_ref().expect("a dir: entry");
            watch::config::covers(&e.path, scan, &w.path).is_some()
        })
    };
    let mut list = watched.lock().unwrap_or_else(|e| e.into_inner());
    let (gone, kept) = list
        .drain(..)
        .partition(|w| std::fs::symlink_metadata(&w.path).is_err() && covered(w));
    *list = kept;
    gone
}

/// Uploads what a removed database still had pending, and says so (its own thread: a slow
/// store must not hold up the other databases).
fn say_removed(w: &Watched) {
    match w.finish(FINISH_TIMEOUT) {
        Ok(txid) => walrust::log::info(&format!(
            "{} was removed from its directory: no longer watched (its replica keeps it, up to TXID {txid}); created again, it is watched again",
            w.path.display()
        )),
        Err(e) => walrust::log::error(&e),
    }
}

/// What `dir:` entries find now, in their place, and the entries with `watch: true` (their
/// directory canonical), to look again while the watch runs.
fn expand_dirs(dbs: Vec<Db>) -> Result<(Vec<Db>, Vec<Db>), Failure> {
    let (mut out, mut dirs) = (Vec::new(), Vec::new());
    for db in dbs {
        let Some(scan) = db.dir.clone() else {
            out.push(db);
            continue;
        };
        let cannot = |e: std::io::Error| {
            Failure::invalid(format!(
                "cannot look for databases in {}: {e}",
                db.path.display()
            ))
        };
        let dir = std::fs::canonicalize(&db.path).map_err(cannot)?;
        let found = watch::config::find(&dir, &scan).map_err(cannot)?;
        if found.is_empty() && !scan.watch {
            return Err(Failure::invalid(format!(
                "no SQLite database in {} matches `{}`; add `watch: true` to its entry to replicate those created later",
                dir.display(),
                scan.pattern
            )));
        }
        walrust::log::info(&format!(
            "{}: {} database(s) match `{}`{}",
            dir.display(),
            found.len(),
            scan.pattern,
            if scan.watch {
                "; others are watched as they appear"
            } else {
                ""
            }
        ));
        let entry = Db { path: dir, ..db };
        out.extend(found.iter().map(|p| found_db(&entry, p)));
        if scan.watch {
            dirs.push(entry);
        }
    }
    Ok((out, dirs))
}

/// A database `entry` (a `dir:`) found at `path`, with its own replica.
fn found_db(entry: &Db, path: &Path) -> Db {
    let rel = path.strip_prefix(&entry.path).unwrap_or(path);
    Db {
        path: path.to_path_buf(),
        url: watch::config::replica_for(&entry.url, rel),
        dir: None,
        ..entry.clone()
    }
}

/// The databases and their replicas' URLs: from --config FILE, or DB... and --replica(-root).
/// Two databases with one replica (two files of one name under --replica-root) are refused
/// here: the replica holds one history, so the second would be refused at its first upload.
fn databases(a: &Args) -> Result<Listed, Failure> {
    let listed = listed_databases(a)?;
    let dbs = &listed.dbs;
    let real = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    for (i, Db { path: db, .. }) in dbs.iter().enumerate() {
        if let Some(Db { path: other, .. }) = dbs[..i].iter().find(|o| real(&o.path) == real(db)) {
            return Err(Failure::invalid(format!(
                "{} is named twice ({} and {}): name each database once",
                real(db).display(),
                other.display(),
                db.display()
            )));
        }
    }
    for (i, Db { path: db, url, .. }) in dbs.iter().enumerate() {
        let same = |o: &&Db| walrust::store::url::same_replica(&o.url, url);
        if let Some(Db { path: other, .. }) = dbs[..i].iter().find(same) {
            return Err(Failure::invalid(format!(
                "{} and {} would share the replica {}: a replica holds one database's history; give each its own (--replica-root names replicas by file name)",
                other.display(),
                db.display(),
                url
            )));
        }
    }
    Ok(listed)
}

/// The access key pair the config file names, made this process's (before any thread
/// starts), for every replica: the S3 store reads its credentials from the environment, so
/// one `walrust watch` has one set. Replicas naming different sets, or some none, are refused.
pub fn use_credentials(dbs: &[Db]) -> Result<(), Failure> {
    let Some(first) = dbs.iter().find_map(|d| d.credentials.as_ref()) else {
        return Ok(());
    };
    if dbs.iter().any(|d| d.credentials.as_ref() != Some(first)) {
        return Err(Failure::invalid(
            "the config file names more than one access key for its replicas (or none for some); one walrust watch uses one: run one per key",
        ));
    }
    for name in [
        "LITESTREAM_ACCESS_KEY_ID",
        "LITESTREAM_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
    ] {
        std::env::remove_var(name);
    }
    std::env::set_var("AWS_ACCESS_KEY_ID", &first.id);
    std::env::set_var("AWS_SECRET_ACCESS_KEY", &first.secret);
    Ok(())
}

/// A database to watch, its replica, and its own upload interval (from `--config`), if any.
type Db = watch::config::DbConfig;

/// When snapshots are taken and what is removed, as the start line says it.
fn snapshot_policy(s: &Settings) -> String {
    let every = match s.snapshot_interval_s {
        0 => "no scheduled snapshots".to_string(),
        n => format!("a snapshot every {n} s"),
    };
    if s.compact_after_snapshot {
        format!("{every}, then compaction and retention {}", s.retention)
    } else {
        format!("{every}, nothing removed")
    }
}

/// Litestream removes what is older than its retention (24 h unless the file says otherwise);
/// walrust removes nothing unless told. A file that says nothing of retention, with no flag
/// that does, is told so at start.
fn say_what_is_kept(file: &str, dbs: &[Db], settings: &Settings) {
    if settings.compact_after_snapshot || dbs.iter().all(|d| d.snapshots.names_removal()) {
        return;
    }
    walrust::log::info(&format!(
        "{file} sets no snapshot retention: the replicas keep every snapshot and transaction \
         (Litestream would remove what is older than 24h); set `snapshot:` `retention: 24h` \
         in the file, or pass --compact-after-snapshot"
    ));
}

/// Litestream's config file when none is named.
const DEFAULT_CONFIG: &str = "/etc/litestream.yml";

/// The config file to read: `--config FILE` (or Litestream's `-config`); with no database
/// named either, Litestream's default, `$LITESTREAM_CONFIG` or else `/etc/litestream.yml` if
/// it exists, so that a service that ran `litestream replicate` runs `walrust watch` as it is.
fn config_file(a: &Args) -> Option<String> {
    if let Some(file) = a.value(&["--config", "-config"]) {
        return Some(file.to_string());
    }
    if !a.positional.is_empty() || a.value(&["--replica", "--replica-root"]).is_some() {
        return None;
    }
    std::env::var("LITESTREAM_CONFIG")
        .ok()
        .filter(|v| !v.is_empty())
        .or_else(|| {
            Path::new(DEFAULT_CONFIG)
                .exists()
                .then(|| DEFAULT_CONFIG.to_string())
        })
}

/// What the command line or the config file lists.
struct Listed {
    dbs: Vec<Db>,
    /// The file's `exec:` command.
    exec: Option<String>,
    /// The file's `addr:` (metrics).
    addr: Option<String>,
    /// The file's `heartbeat-url:` and `heartbeat-interval:`.
    heartbeat: Option<watch::config::heartbeat::Heartbeat>,
    /// The file's `dir:` entries with `watch: true`.
    dirs: Vec<Db>,
}

/// The databases, and the file's `exec:` command, `addr:` and heartbeat if it has them.
fn listed_databases(a: &Args) -> Result<Listed, Failure> {
    let Some(file) = config_file(a) else {
        if a.positional.is_empty() {
            return Err(Failure::usage(format!(
                "name at least one database: walrust watch DB... or walrust watch --config FILE \
                 (with neither, $LITESTREAM_CONFIG or {DEFAULT_CONFIG} is read, as Litestream \
                 reads them)"
            )));
        }
        let urls = replica_urls(a)?;
        let paths = a.positional.iter().map(PathBuf::from);
        let dbs = paths
            .zip(urls)
            .map(|(path, url)| Db {
                path,
                url,
                sync_interval_ms: None,
                credentials: None,
                snapshots: Default::default(),
                restore_if_missing: false,
                dir: None,
            })
            .collect();
        return Ok(Listed {
            dbs,
            exec: None,
            addr: None,
            heartbeat: None,
            dirs: Vec::new(),
        });
    };
    if !a.positional.is_empty() || a.value(&["--replica", "--replica-root"]).is_some() {
        return Err(Failure::usage(
            "--config FILE names the databases and their replicas; give no DB, --replica or --replica-root with it",
        ));
    }
    if a.value(&["--config", "-config"]).is_none() {
        walrust::log::info(&format!(
            "reading {file}: no database or --config named (Litestream's default config)"
        ));
    }
    let config = watch::config::load(Path::new(&file)).map_err(Failure::invalid)?;
    for notice in &config.notices {
        walrust::log::info(&format!("{file} {notice}"));
    }
    let (dbs, dirs) = expand_dirs(config.dbs)?;
    Ok(Listed {
        dbs,
        exec: config.exec,
        addr: config.addr,
        heartbeat: config.heartbeat,
        dirs,
    })
}

fn replica_urls(a: &Args) -> Result<Vec<String>, Failure> {
    match (a.value(&["--replica"]), a.value(&["--replica-root"])) {
        (Some(_), Some(_)) => Err(Failure::usage("give --replica or --replica-root, not both")),
        (None, None) => Err(Failure::usage(
            "name the replica: --replica URL or --replica-root URL",
        )),
        (Some(u), None) if a.positional.len() == 1 => Ok(vec![u.to_string()]),
        (Some(_), None) => Err(Failure::usage(
            "--replica names the replica of one database; use --replica-root URL for several",
        )),
        (None, Some(root)) => a
            .positional
            .iter()
            .map(|db| {
                let name = PathBuf::from(db)
                    .file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .ok_or_else(|| Failure::usage(format!("{db} is not a file name")))?;
                Ok(walrust::store::url::under_root(root, &name))
            })
            .collect(),
    }
}

fn settings(a: &Args) -> Result<Settings, Failure> {
    let mut s = Settings::from_env();
    let pairs = [
        ("--sync-interval", "walrust_sync_interval"),
        ("--snapshot-interval", "walrust_snapshot_interval"),
        ("--retention", "walrust_retention"),
        ("--shadow-dir", "walrust_shadow_dir"),
    ];
    for (flag, name) in pairs {
        if let Some(v) = a.value(&[flag]) {
            s.set(name, v)
                .map_err(|e| Failure::invalid(format!("{flag}: {e}")))?;
        }
    }
    if a.has("--compact-after-snapshot") {
        s.compact_after_snapshot = true;
    }
    s.checkpoint = match a.value(&["--checkpoint"]) {
        None | Some("background") => CheckpointMode::Background,
        Some("off") | Some("app") => CheckpointMode::App,
        Some(other) => {
            return Err(Failure::invalid(format!(
                "--checkpoint {other}: say background (the watch checkpoints what it copied) or off (the application's checkpoints only)"
            )))
        }
    };
    Ok(s)
}
