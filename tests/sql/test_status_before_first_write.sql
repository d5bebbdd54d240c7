-- Right after PRAGMA journal_mode=WAL on a new database, before anything is read or written:
-- the file is in WAL mode, but SQLite opens the WAL (where replication starts) only at the
-- first read. walrust_status() used to report "it is not in WAL mode; run PRAGMA
-- journal_mode=WAL" then, to a user who had just done so; it now does that read itself.
.open 'file:app.db?walrust_replica=file://@TESTDIR@/replica'
PRAGMA journal_mode = WAL;
SELECT json_extract(s, '$.replica') AS replica, json_extract(s, '$.last_error') AS last_error
  FROM (SELECT walrust_status() AS s);
SELECT walrust_sync() >= 0 AS synced;
-- The same through walrust_snapshot() on a second new database.
ATTACH 'file:other.db?walrust_replica=file://@TESTDIR@/other' AS other;
PRAGMA other.journal_mode = WAL;
SELECT walrust_snapshot('other') > 0 AS snapshot;
-- Not in WAL mode: still the error that says what to do.
.open 'file:plain.db?walrust_replica=file://@TESTDIR@/plain'
CREATE TABLE t(x);
SELECT json_extract(walrust_status(), '$.last_error') AS last_error;
