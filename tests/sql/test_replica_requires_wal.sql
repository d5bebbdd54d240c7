-- PRAGMA walrust_replica needs journal_mode=WAL (SPEC 2). On a rollback-journal database it is
-- an error that says so, and nothing is created: no replica, no shadow directory.
.open app.db
CREATE TABLE t(x);
INSERT INTO t VALUES (1);
PRAGMA journal_mode;
PRAGMA walrust_replica = 'file://@TESTDIR@/replica';
.system ls
-- The database is untouched and still usable.
PRAGMA journal_mode;
INSERT INTO t VALUES (2);
SELECT count(*) AS n FROM t;
-- After switching to WAL the same PRAGMA turns replication on; reading it returns the URL.
PRAGMA journal_mode = WAL;
PRAGMA walrust_replica = 'file://@TESTDIR@/replica';
PRAGMA walrust_replica;
INSERT INTO t VALUES (3);
SELECT walrust_sync() > 0 AS synced;
SELECT json_extract(walrust_status(), '$.replica') AS replica;
.system ls
