-- walrust_restore(url, output_path) requires that output_path does not exist (SPEC 4).
.open 'file:app.db?walrust_replica=file://@TESTDIR@/replica'
PRAGMA journal_mode = WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES (1), (2), (3);
SELECT walrust_sync() > 0 AS synced;
-- Restoring over the live database is an error, and the database is untouched.
SELECT walrust_restore('file://@TESTDIR@/replica', 'app.db');
SELECT count(*) AS n FROM t;
PRAGMA integrity_check;
-- So is restoring over any other existing file, even an empty one; it stays as it was.
.system touch existing.db
SELECT walrust_restore('file://@TESTDIR@/replica', '@TESTDIR@/existing.db');
.system wc -c existing.db
-- A path that does not exist works and returns the TXID restored to (here the newest).
SELECT walrust_restore('file://@TESTDIR@/replica', '@TESTDIR@/restored.db') = json_extract(walrust_status(), '$.txid') AS restored_newest;
ATTACH 'restored.db' AS r;
SELECT count(*) AS n FROM r.t;
PRAGMA r.integrity_check;
DETACH r;
.system ls
