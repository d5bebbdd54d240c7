-- walrust_version() returns the version as text, "0.<minor>.<patch>..." before 1.0 (SPEC 4).
SELECT walrust_version() LIKE '0.%' AS is_0_x, typeof(walrust_version()) AS type;
CREATE TEMP TABLE fns_before AS SELECT name, narg, enc, flags FROM pragma_function_list WHERE name LIKE 'walrust%';
-- Loading the extension again is harmless (SPEC 1): same functions, nothing registered twice.
.load @EXT@
SELECT count(DISTINCT name) AS functions FROM pragma_function_list WHERE name LIKE 'walrust%';
SELECT walrust_version() LIKE '0.%' AS still_0_x;
-- Exactly the functions of the first load, with the same arguments and flags.
SELECT (SELECT count(*) FROM pragma_function_list WHERE name LIKE 'walrust%') = (SELECT count(*) FROM fns_before) AS same_count,
       NOT EXISTS (SELECT name, narg, enc, flags FROM pragma_function_list WHERE name LIKE 'walrust%' EXCEPT SELECT * FROM fns_before) AS same_functions;
SELECT count(*) AS walrust_modules FROM pragma_module_list WHERE name LIKE 'walrust%';
-- One walrust VFS after two loads: one that registered another (wrapping the first) shows
-- twice in .vfslist (which writes to the terminal only, hence the nested shell, $SQLITE3).
.system $SQLITE3 -cmd ".load @EXT@" -cmd ".load @EXT@" :memory: .vfslist | grep -c zName.*walrust
-- A connection opened after the second load captures each commit once: one TXID per commit.
.open 'file:app.db?walrust_replica=file://@TESTDIR@/replica'
PRAGMA journal_mode = WAL;
CREATE TABLE t(x);
CREATE TEMP TABLE before AS SELECT json_extract(walrust_status(), '$.txid') AS txid;
INSERT INTO t VALUES (1);
INSERT INTO t VALUES (2);
SELECT json_extract(walrust_status(), '$.txid') - (SELECT txid FROM before) AS new_txids;
SELECT walrust_sync() = json_extract(walrust_status(), '$.txid') AS synced;
