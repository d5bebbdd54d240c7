// walrust loaded from Node through better-sqlite3 (which bundles its own, newer SQLite and does
// not take file: URIs): load it with db.loadExtension(), then set the replica by PRAGMA.
// Replicates, syncs, restores with walrust_restore(), and checks the restored rows.
//
//   node replicate.mjs EXTENSION DIR     (DIR: an empty directory; prints the uploaded TXID)
import assert from "node:assert/strict";
import path from "node:path";
import Database from "better-sqlite3";

const [ext, dir] = process.argv.slice(2);
const replica = `file://${path.join(dir, "replica")}`;

// Loading it through one connection makes it the default VFS for those opened afterwards.
new Database(":memory:").loadExtension(ext);

const db = new Database(path.join(dir, "app.db"));
assert.equal(db.pragma("journal_mode = WAL", { simple: true }), "wal");
db.pragma(`walrust_replica = '${replica}'`);
db.exec("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)");
const insert = db.prepare("INSERT INTO t(v) VALUES (?)");
db.transaction(() => {
  for (let i = 0; i < 100; i++) insert.run(`row ${i}`);
})();
const txid = db.prepare("SELECT walrust_sync()").pluck().get();
const status = JSON.parse(db.prepare("SELECT walrust_status()").pluck().get());
assert.equal(status.uploaded_txid, txid);
assert.equal(status.last_error, null);

const restored = path.join(dir, "restored.db");
const got = db.prepare("SELECT walrust_restore(?, ?)").pluck().get(replica, restored);
assert.equal(got, txid);
const copy = new Database(restored, { readonly: true });
assert.equal(copy.prepare("SELECT count(*) FROM t").pluck().get(), 100);
assert.equal(copy.pragma("integrity_check", { simple: true }), "ok");
copy.close();
db.close();
console.log(txid);
