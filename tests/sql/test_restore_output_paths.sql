-- walrust_restore's output_path names a file: what SQLite users write for something else is
-- refused in one line before anything is read or written (an empty path used to fail after the
-- whole restore, "moving .tmp-walrust to : No such file"; ':memory:' made a file of that name).
.open 'file:app.db?walrust_replica=file://@TESTDIR@/replica'
PRAGMA journal_mode = WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES (1);
SELECT walrust_sync() > 0 AS synced;
SELECT walrust_restore('file://@TESTDIR@/replica', '');
SELECT walrust_restore('file://@TESTDIR@/replica', ':memory:');
SELECT walrust_restore('file://@TESTDIR@/replica', 'file:copy.db');
SELECT walrust_restore('file://@TESTDIR@/replica', 'new/');
SELECT walrust_restore('file://@TESTDIR@/replica', 'copy.db') > 0 AS restored;
.system ls
