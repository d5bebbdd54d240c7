-- A newcomer's mistakes get one line each that starts with `walrust: `, names what is wrong
-- and says what to do (issue 17).
-- The replica in the URI but WAL mode forgotten: say so, not "set a replica".
.open 'file:app.db?walrust_replica=file://@TESTDIR@/replica'
CREATE TABLE t(x);
SELECT walrust_sync();
SELECT json_extract(walrust_status(), '$.last_error') AS last_error;
PRAGMA journal_mode = WAL;
INSERT INTO t VALUES (1), (2);
SELECT walrust_sync() > 0 AS synced;
-- Argument errors name the function and the argument.
SELECT walrust_sync('main', 'x');
SELECT walrust_sync('main', -1);
SELECT walrust_sync(7);
SELECT walrust_restore('file://@TESTDIR@/replica');
SELECT walrust_restore('file://@TESTDIR@/replica', 'r0.db', 'soon');
SELECT walrust_restore('file://@TESTDIR@/replica', 'r0.db', 0);
SELECT walrust_compact('file://@TESTDIR@/replica', 'yes');
-- A TXID as text, in the CLI's forms: decimal, 0x-hex, 16 hex digits.
SELECT walrust_restore('file://@TESTDIR@/replica', 'r1.db', '2') AS txid;
SELECT walrust_restore('file://@TESTDIR@/replica', 'r2.db', '0x2') AS txid;
SELECT walrust_restore('file://@TESTDIR@/replica', 'r3.db', '0000000000000002') AS txid;
-- A replica URL with nothing there never looks healthy.
SELECT walrust_verify('file://@TESTDIR@/no-such-replica');
SELECT walrust_compact('file://@TESTDIR@/no-such-replica');
SELECT walrust_compact('file://@TESTDIR@/no-such-replica', 1);
SELECT walrust_restore('file://@TESTDIR@/no-such-replica', 'r4.db');
SELECT json_extract(walrust_verify('file://@TESTDIR@/replica'), '$.ok') AS ok;
.system ls
