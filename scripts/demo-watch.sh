#!/usr/bin/env bash
# `make demo-watch`: `walrust watch`, the sidecar, replicates a database that a plain sqlite3
# shell writes (no extension loaded) to a local directory; then SIGTERM stops it (it uploads
# what is pending first), `walrust restore` rebuilds the database from the replica, and the
# restored rows are shown beside the original's.
#
# WALRUST_CLI (default target/release/walrust), SQLITE3 (default /usr/bin/sqlite3);
# WALRUST_DEMO_DIR (default /tmp/walrust-demo-watch, deleted first) moves everything elsewhere.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cli=${WALRUST_CLI:-$root/target/release/walrust}
sqlite=${SQLITE3:-/usr/bin/sqlite3}
demo=${WALRUST_DEMO_DIR:-/tmp/walrust-demo-watch}
case "$demo" in
    /*) ;;
    *) echo "demo-watch: WALRUST_DEMO_DIR must be an absolute path, not $demo" >&2; exit 2 ;;
esac
if [ ! -x "$sqlite" ]; then
    echo "demo-watch: no sqlite3 shell at $sqlite (apt-get install sqlite3)" >&2
    exit 1
fi
if [ ! -x "$cli" ]; then
    echo "demo-watch: no walrust command at $cli; run cargo build --release first" >&2
    exit 1
fi
rm -rf "$demo" && mkdir -p "$demo"
db=$demo/app.db
replica=file://$demo/replica

echo "1. A database in WAL mode, made by the plain sqlite3 shell (walrust is not loaded):"
echo "   $sqlite $db 'PRAGMA journal_mode=WAL; CREATE TABLE notes(...)'"
"$sqlite" "$db" "PRAGMA journal_mode=WAL; CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL);" >/dev/null

echo
echo "2. The sidecar beside it (its log goes to $demo/watch.log):"
echo "   walrust watch $db --replica $replica --sync-interval 100 &"
echo "   Its first snapshot is TXID 1, the database as it found it; each commit then gets the next."
"$cli" watch "$db" --replica "$replica" --sync-interval 100 2>"$demo/watch.log" &
watch_pid=$!
trap 'kill "$watch_pid" 2>/dev/null || true' EXIT
# Wait for its first snapshot (TXID 1: the database as the watch found it).
for _ in $(seq 100); do
    "$cli" status "$db" 2>/dev/null | grep -q '"uploaded_txid":[1-9]' && break
    sleep 0.1
done

echo
echo "3. The application writes: one sqlite3 shell, 300 rows in three transactions a moment"
echo "   apart, then an update and a delete."
"$sqlite" "$db" <<'SQL'
.bail on
INSERT INTO notes(body) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100) SELECT 'note ' || i FROM n;
.system sleep 0.3
INSERT INTO notes(body) WITH RECURSIVE n(i) AS (SELECT 101 UNION ALL SELECT i + 1 FROM n WHERE i < 200) SELECT 'note ' || i FROM n;
.system sleep 0.3
INSERT INTO notes(body) WITH RECURSIVE n(i) AS (SELECT 201 UNION ALL SELECT i + 1 FROM n WHERE i < 300) SELECT 'note ' || i FROM n;
.system sleep 0.3
UPDATE notes SET body = body || ' (edited)' WHERE id % 10 = 0;
DELETE FROM notes WHERE id > 290;
SQL
sleep 0.5
echo
echo "4. walrust status $db (read from the shadow directory $db-walrust/):"
"$cli" status "$db"

echo
echo "5. Stop the sidecar with SIGTERM: it copies and uploads what is pending, then exits 0."
kill -TERM "$watch_pid"
wait "$watch_pid"
trap - EXIT
sed 's/^/   /' "$demo/watch.log"

echo
echo "6. walrust list $replica:"
"$cli" list "$replica"

echo
echo "7. walrust restore $replica -o $demo/restored.db:"
"$cli" restore "$replica" -o "$demo/restored.db"

echo
echo "8. The restored rows, beside the application's database:"
query="SELECT count(*) AS rows, sum(body LIKE '%(edited)') AS edited, max(id) AS last FROM notes"
echo "   restored: $("$sqlite" "$demo/restored.db" "$query")"
echo "   original: $("$sqlite" "$db" "$query")"
"$sqlite" -box "$demo/restored.db" "SELECT * FROM notes ORDER BY id DESC LIMIT 3"
if [ "$("$sqlite" "$demo/restored.db" 'SELECT group_concat(id || body) FROM notes')" != \
     "$("$sqlite" "$db" 'SELECT group_concat(id || body) FROM notes')" ]; then
    echo "demo-watch: the restored database differs from the original" >&2
    exit 1
fi
echo
echo "demo-watch: done, the restored database has the same rows. Files are in $demo."
