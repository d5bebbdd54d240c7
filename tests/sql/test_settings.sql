-- Settings out of range are errors that give the range (SPEC 3, issue 13): nothing wraps.
.open app.db
PRAGMA walrust_snapshot_interval = 18446744073709552;
PRAGMA walrust_snapshot_interval;
PRAGMA walrust_sync_interval = 9223372036854775807;
PRAGMA walrust_sync_interval = -1;
PRAGMA walrust_sync_interval;
PRAGMA walrust_sync_interval = 86400000;
PRAGMA walrust_snapshot_interval = 0;
-- Retention: a tier not named keeps its default, 0 turns one off, empty or malformed is an error.
PRAGMA walrust_retention;
PRAGMA walrust_retention = 'daily=7';
PRAGMA walrust_retention = 'weekly=0';
PRAGMA walrust_retention = '';
PRAGMA walrust_retention = 'daily';
PRAGMA walrust_retention = 'daily=7,';
PRAGMA walrust_retention = 'yearly=1';
PRAGMA walrust_retention;
-- The same checks apply to URI parameters: the open fails with the PRAGMA's message.
.open file:uri.db?walrust_sync_interval=9223372036854775807
.open file:uri.db?walrust_retention=
