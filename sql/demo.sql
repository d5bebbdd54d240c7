-- walrust in two minutes: replicate a database to a local directory, restore it, compare.
--
--   make demo                 (builds, then runs this through the sqlite3 shell)
--   sqlite3 -cmd '.load ./target/release/libwalrust' < sql/demo.sql
--
-- Everything happens in /tmp/walrust-demo, which is deleted first. No account, no network.
.bail on
.headers on
.mode box

.print '1. A fresh /tmp/walrust-demo.'
.system rm -rf /tmp/walrust-demo && mkdir -p /tmp/walrust-demo

.print '2. Open app.db with its replica in the URI, and switch it to WAL (replication needs WAL).'
.open 'file:/tmp/walrust-demo/app.db?walrust_replica=file:///tmp/walrust-demo/replica'
PRAGMA journal_mode = WAL;

.print '3. Write: a table, 300 rows in three transactions, then an update.'
CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);
INSERT INTO notes(body) SELECT 'note ' || value FROM generate_series(1, 100);
INSERT INTO notes(body) SELECT 'note ' || value FROM generate_series(101, 200);
INSERT INTO notes(body) SELECT 'note ' || value FROM generate_series(201, 300);
UPDATE notes SET body = body || ' (edited)' WHERE id % 10 = 0;

.print '4. walrust_sync(): wait until all of it is in the replica. Returns the TXID uploaded.'
SELECT walrust_sync() AS uploaded_txid;
.print '   Why 6 for 5 statements: every commit gets the next TXID, and TXID 1 is the database as'
.print '   walrust found it when replication began (here empty), which the first snapshot holds.'
.print '   CREATE TABLE is TXID 2, the three INSERTs 3-5, the UPDATE 6.'

.print '5. The replica: LTX files laid out as Litestream 0.5 lays them out.'
.system cd /tmp/walrust-demo/replica && find . -type f | sort
.print '   ltx/9/: the first snapshot, a full copy of the database; ltx/0/: the upload batches after'
.print '   it. Each file name is the range of TXIDs it holds.'
.print '   manifest.json: the index walrust keeps of the files it wrote (TXIDs, size, SHA-256).'
.print '   manifest.json.lock: an empty file whose lock serialises rewrites of manifest.json in a'
.print '   local-directory replica (S3 uses a conditional write instead); restores ignore it.'

.print '6. walrust_restore(): rebuild the database from the replica alone, into a new file.'
SELECT walrust_restore('file:///tmp/walrust-demo/replica', '/tmp/walrust-demo/restored.db') AS restored_txid;

.print '7. Both databases hold the same rows.'
ATTACH '/tmp/walrust-demo/restored.db' AS restored;
SELECT (SELECT count(*) FROM main.notes) AS rows_in_app_db,
       (SELECT count(*) FROM restored.notes) AS rows_in_restored_db,
       (SELECT count(*) FROM (SELECT * FROM main.notes EXCEPT SELECT * FROM restored.notes)) AS rows_that_differ;
DETACH restored;

.print '8. walrust_status(): where replication stands (uploader: this process is the one that'
.print '   uploads; several processes may write one database, and one of them uploads).'
SELECT key,
       CASE WHEN type IN ('true', 'false') THEN iif(value, 'yes', 'no')
            WHEN type = 'null' THEN 'none'
            ELSE value END AS value
  FROM json_each(walrust_status());
