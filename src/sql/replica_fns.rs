//! SQL over a replica URL rather than a database: `walrust_verify(url)`,
//! `walrust_compact(url [, dry_run])`, and the table-valued `walrust_files(url)`.
//!
//! All three reach outside the database, so they are `SQLITE_DIRECTONLY`: the functions through
//! their flags, the virtual table through `sqlite3_vtab_config(SQLITE_VTAB_DIRECTONLY)` in its
//! xConnect (rusqlite's `VTabConnection::config`), so a view or trigger in a crafted database
//! cannot call them ("unsafe use of virtual table"). `walrust_files` is eponymous-only: it exists
//! in every schema without `CREATE VIRTUAL TABLE`, and cannot be created under another name.

use std::borrow::Cow;
use std::ffi::{c_int, CStr};
use std::marker::PhantomData;

use rusqlite::functions::Context;
use rusqlite::types::ValueRef;
use rusqlite::vtab::{
    self, Filters, IndexConstraintOp, IndexInfo, Module, VTab, VTabConfig, VTabConnection,
    VTabCursor,
};
use rusqlite::Connection;

use super::err;
use crate::clock::{format_rfc3339_ms, SystemClock};
use crate::compact::{self, CompactOptions};
use crate::config::Settings;
use crate::store::{self, FileInfo, Store};

/// The virtual tables walrust registers, as `pragma_module_list` shows them.
pub const MODULES: [&str; 1] = ["walrust_files"];

fn open_store(ctx: &Context<'_>, func: &str) -> rusqlite::Result<std::sync::Arc<dyn Store>> {
    let url = super::args::required_text(ctx, 0, func, "replica_url")?;
    store::open(&url).map_err(|e| err(e.to_string()))
}

/// A replica with no LTX files is an error, as in the CLI (exit 3): a mistyped URL must never
/// look like a healthy replica.
fn nothing_at(store: &dyn Store, what: &str) -> rusqlite::Error {
    err(format!(
        "nothing to {what}: {} holds no LTX files; check the URL, or that replication has run",
        store.describe()
    ))
}

pub(super) fn walrust_verify(ctx: &Context<'_>) -> rusqlite::Result<String> {
    let store = open_store(ctx, "walrust_verify")?;
    let report = compact::verify(store.as_ref()).map_err(|e| err(e.to_string()))?;
    if report.files_checked == 0 && report.manifest.missing.is_empty() {
        return Err(nothing_at(store.as_ref(), "verify"));
    }
    let report = report.into_result().map_err(|e| err(e.to_string()))?;
    Ok(serde_json::to_string(&report).expect("reports serialize"))
}

pub(super) fn walrust_compact(ctx: &Context<'_>) -> rusqlite::Result<String> {
    let store = open_store(ctx, "walrust_compact")?;
    let listed = store
        .list(None, store::Times::Listed)
        .map_err(|e| err(e.to_string()))?;
    if listed.is_empty() {
        return Err(nothing_at(store.as_ref(), "compact"));
    }
    let dry_run = match ctx.len() {
        0 | 1 => false,
        _ => match ctx.get_raw(1) {
            ValueRef::Null => false,
            ValueRef::Integer(n) => n != 0,
            _ => {
                return Err(err(
                    "walrust_compact: dry_run (argument 2) must be 0 or 1 (false or true)",
                ))
            }
        },
    };
    let opts = options_for(ctx, store.as_ref());
    let report = compact::compact(store.as_ref(), &opts, &SystemClock, dry_run)
        .map_err(|e| err(e.to_string()))?;
    Ok(serde_json::to_string(&report).expect("reports serialize"))
}

/// The retention of the connection's main database when it replicates to this replica (and
/// its shadow directory for temporary files), else the process default (`WALRUST_RETENTION`).
fn options_for(ctx: &Context<'_>, store: &dyn Store) -> CompactOptions {
    let repl = crate::vfs::ffi::schema_path(ctx, "main")
        .and_then(|p| crate::database::lookup(&p))
        .and_then(|db| db.replication())
        .filter(|r| r.url == store.describe());
    match repl {
        Some(r) => {
            let opts = CompactOptions::new(r.settings().retention);
            let tmp = r.shadow.tmp_dir();
            if tmp.is_dir() {
                opts.with_tmp_dir(tmp)
            } else {
                opts
            }
        }
        None => CompactOptions::new(Settings::from_env().retention),
    }
}

/// Registers `walrust_files`.
pub(super) fn register_files(conn: &Connection) -> rusqlite::Result<()> {
    const MODULE: Module<'static, FilesTab> = Module::eponymous_only_module();
    conn.create_module(c"walrust_files", &MODULE, None)
}

const COL_URL: c_int = 5;

#[repr(C)]
struct FilesTab {
    /// Base class; must be first.
    base: vtab::sqlite3_vtab,
}

unsafe impl<'vtab> VTab<'vtab> for FilesTab {
    type Aux = ();
    type Cursor = FilesCursor<'vtab>;

    fn connect(
        db: &mut VTabConnection,
        _aux: Option<&()>,
        _module_name: &[u8],
        _database_name: &[u8],
        _table_name: &[u8],
        _args: &[&[u8]],
    ) -> rusqlite::Result<(Cow<'static, CStr>, FilesTab)> {
        db.config(VTabConfig::DirectOnly)?;
        let schema = c"CREATE TABLE x(level INTEGER, min_txid INTEGER, max_txid INTEGER, \
                       size INTEGER, created_at TEXT, url HIDDEN)";
        Ok((
            Cow::Borrowed(schema),
            FilesTab {
                base: vtab::sqlite3_vtab::default(),
            },
        ))
    }

    fn best_index(&self, info: &mut IndexInfo) -> rusqlite::Result<bool> {
        let url = info.constraints().position(|c| {
            c.column() == COL_URL
                && c.is_usable()
                && c.operator() == IndexConstraintOp::SQLITE_INDEX_CONSTRAINT_EQ
        });
        match url {
            Some(i) => {
                let mut usage = info.constraint_usage(i);
                usage.set_argv_index(1);
                usage.set_omit(true);
                info.set_idx_num(1);
                info.set_estimated_cost(1000.0);
            }
            // Filter explains that the URL is missing; a plan must still exist.
            None => info.set_estimated_cost(1e12),
        }
        Ok(true)
    }

    fn open(&'vtab mut self) -> rusqlite::Result<FilesCursor<'vtab>> {
        Ok(FilesCursor {
            base: vtab::sqlite3_vtab_cursor::default(),
            url: String::new(),
            rows: Vec::new(),
            i: 0,
            phantom: PhantomData,
        })
    }
}

#[repr(C)]
struct FilesCursor<'vtab> {
    /// Base class; must be first.
    base: vtab::sqlite3_vtab_cursor,
    url: String,
    rows: Vec<FileInfo>,
    i: usize,
    phantom: PhantomData<&'vtab FilesTab>,
}

unsafe impl VTabCursor for FilesCursor<'_> {
    fn filter(
        &mut self,
        idx_num: c_int,
        _idx_str: Option<&str>,
        args: &Filters<'_>,
    ) -> rusqlite::Result<()> {
        if idx_num != 1 || args.is_empty() {
            return Err(err(
                "walrust_files needs a replica URL: SELECT * FROM walrust_files('s3://bucket/db')",
            ));
        }
        let url: String = args
            .get(0)
            .map_err(|_| err("walrust_files: the replica URL must be text"))?;
        let store = store::open(&url).map_err(|e| err(e.to_string()))?;
        let manifest = compact::load_manifest(store.as_ref()).map_err(|e| err(e.to_string()))?;
        self.rows =
            compact::listing(store.as_ref(), manifest.as_ref()).map_err(|e| err(e.to_string()))?;
        self.url = url;
        self.i = 0;
        Ok(())
    }

    fn next(&mut self) -> rusqlite::Result<()> {
        self.i += 1;
        Ok(())
    }

    fn eof(&self) -> bool {
        self.i >= self.rows.len()
    }

    fn column(&self, ctx: &mut vtab::Context, col: c_int) -> rusqlite::Result<()> {
        let f = &self.rows[self.i];
        match col {
            0 => ctx.set_result(&f.key.level),
            1 => ctx.set_result(&(f.key.min_txid.get() as i64)),
            2 => ctx.set_result(&(f.key.max_txid.get() as i64)),
            3 => ctx.set_result(&(f.size as i64)),
            4 => ctx.set_result(&format_rfc3339_ms(f.created_at_ms)),
            _ => ctx.set_result(&self.url),
        }
    }

    fn rowid(&self) -> rusqlite::Result<i64> {
        Ok(self.i as i64 + 1)
    }
}
