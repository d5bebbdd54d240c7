-- walrust_status() on a replicating database: a JSON object with at least the keys SPEC 4
-- lists (an implementation may add more; this test looks only at these).
.open 'file:app.db?walrust_replica=file://@TESTDIR@/replica'
PRAGMA journal_mode = WAL;
CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT);
INSERT INTO t(v) VALUES ('a'), ('b');
INSERT INTO t(v) VALUES ('c');
SELECT walrust_sync() > 0 AS synced;
SELECT json_valid(walrust_status()) AS valid, json_type(walrust_status()) AS type;
SELECT key, type FROM json_each(walrust_status()) WHERE key IN ('replica', 'txid', 'uploaded_txid', 'pending_txns', 'pending_bytes', 'lag_ms', 'last_error', 'last_upload_at') ORDER BY key;
-- Right after walrust_sync() with no new commits: everything is uploaded and healthy.
SELECT json_extract(s, '$.replica') AS replica,
       json_extract(s, '$.uploaded_txid') = json_extract(s, '$.txid') AS all_uploaded,
       json_extract(s, '$.pending_txns') AS pending_txns,
       json_extract(s, '$.pending_bytes') AS pending_bytes,
       json_extract(s, '$.last_upload_at') GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9]*' AS rfc3339
  FROM (SELECT walrust_status() AS s);
-- walrust_sync() returns the uploaded TXID, which is the local txid here.
SELECT walrust_sync() = json_extract(walrust_status(), '$.txid') AS sync_returns_txid;
-- Every commit gets the next TXID (SPEC 5).
CREATE TEMP TABLE before AS SELECT json_extract(walrust_status(), '$.txid') AS txid;
INSERT INTO t(v) VALUES ('d');
INSERT INTO t(v) VALUES ('e');
SELECT json_extract(walrust_status(), '$.txid') - (SELECT txid FROM before) AS new_txids;
-- The schema argument names the database, as in walrust_status('main').
SELECT json_extract(walrust_status('main'), '$.replica') AS replica;
