-- walrust_snapshot([schema [, timeout_ms]]) waits at most timeout_ms, 30 s by default (SPEC 4),
-- when the replica cannot be written; the error says so and why.
.open app.db
PRAGMA journal_mode = WAL;
PRAGMA walrust_replica = 'file://@TESTDIR@/replica';
CREATE TABLE t(x);
SELECT walrust_sync() > 0 AS synced;
SELECT walrust_snapshot('main', -1);
-- The replica directory becomes a file: every upload fails from now on.
.system rm -rf replica && touch replica
SELECT walrust_snapshot();
