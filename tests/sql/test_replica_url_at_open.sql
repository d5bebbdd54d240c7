-- A bad replica URL in the URI fails the open with the message PRAGMA walrust_replica gives,
-- instead of opening the database unreplicated (issue 13).
.open app.db
PRAGMA journal_mode = WAL;
PRAGMA walrust_replica = 'relative/replica';
PRAGMA walrust_replica = 's3://';
.open file:bad.db?walrust_replica=relative/replica
.open file:bad.db?walrust_replica=s3://
-- A good one opens and replicates.
.open file:good.db?walrust_replica=file://@TESTDIR@/replica
PRAGMA journal_mode = WAL;
CREATE TABLE t(x);
SELECT walrust_sync() > 0 AS synced;
-- An empty URL on a replicating database does not stop its replication, and says how to stop.
PRAGMA walrust_replica = '';
