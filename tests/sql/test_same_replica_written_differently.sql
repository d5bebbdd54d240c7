-- One replica written several ways is one replica: the PRAGMA and a later open with the URL
-- written otherwise (a trailing slash, a bare path for file://, %20 for a space) are not
-- refused as "another replica". A different directory still is.
.open app.db
PRAGMA journal_mode = WAL;
CREATE TABLE t(x);
PRAGMA walrust_replica = 'file://@TESTDIR@/my%20replica';
PRAGMA walrust_replica = '@TESTDIR@/my replica/';
INSERT INTO t VALUES (1);
SELECT walrust_sync() > 0 AS synced;
.open 'file:app.db?walrust_replica=file://@TESTDIR@/my%2520replica/'
SELECT json_extract(walrust_status(), '$.last_error') AS last_error;
PRAGMA walrust_replica = '@TESTDIR@/other';
