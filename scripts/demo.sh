#!/usr/bin/env bash
# `make demo`: runs sql/demo.sql through the sqlite3 shell with walrust loaded, then, when
# Litestream is installed (.venv, from scripts/setup-test-env.sh), restores the same replica
# with `litestream restore` to show the replica is Litestream's format.
#
# WALRUST_DEMO_DIR (default /tmp/walrust-demo, deleted first) moves everything elsewhere, so that
# a test can run the demo without touching another run's files.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
ext=${WALRUST_EXT:-$root/target/release/libwalrust.so}
sqlite=${SQLITE3:-/usr/bin/sqlite3}
demo=${WALRUST_DEMO_DIR:-/tmp/walrust-demo}
case "$demo" in
    /*) ;;
    *) echo "demo: WALRUST_DEMO_DIR must be an absolute path, not $demo" >&2; exit 2 ;;
esac

if [ ! -x "$sqlite" ]; then
    echo "demo: no sqlite3 shell at $sqlite (apt-get install sqlite3, or scripts/setup-test-env.sh)" >&2
    exit 1
fi
echo "demo: $sqlite -cmd '.load $ext' < sql/demo.sql"
echo
sed "s|/tmp/walrust-demo|$demo|g" "$root/sql/demo.sql" | "$sqlite" -cmd ".load $ext"

litestream=$root/.venv/bin/litestream
if [ -x "$litestream" ]; then
    echo
    echo "9. And Litestream $("$litestream" version) restores the same replica:"
    echo "   litestream restore -o $demo/litestream.db file://$demo/replica"
    env -u AWS_CA_BUNDLE "$litestream" restore -o "$demo/litestream.db" "file://$demo/replica"
    echo "   rows: $("$sqlite" "$demo/litestream.db" 'SELECT count(*) FROM notes')"
fi
echo
echo "demo: done. Files are in $demo."
