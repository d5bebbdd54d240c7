#!/usr/bin/env bash
# Evidence for tests/sqlite-wal/README.md ("walcrash3 and readers"), with no walrust at all:
# walcrash3.test's second part with one reader connection in the crashing process, once as
# SQLite writes by default (powersafe overwrite: expect integrity-check failures) and once
# with psow=0 (WAL commits padded to a sector: expect none). Needs the testfixture that
# tests/sqlite-wal/run.sh builds. READER_CRASH_N iterations each (default 500).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
work=${SQLITE_WAL_DIR:-$here/../../target/sqlite-wal}
src=$(ls -d "$work"/src/sqlite3-*/ | head -n 1)
[ -x "$work/build/testfixture" ] || { echo "reader-crash: run tests/sqlite-wal/run.sh first"; exit 1; }
cp "$here/walcrash3-reader.test" "$src/test/"
for psow in 1 0; do
    run=$work/run/reader-crash-psow$psow
    rm -rf "$run" && mkdir -p "$run"
    (cd "$run" && env -u WALRUST_TESTFIXTURE_EXT READER_CRASH_PSOW=$psow \
        "$work/build/testfixture" "$src/test/walcrash3-reader.test" >out.log 2>&1)
    echo "psow=$psow: $(grep -E '^[0-9]+ errors out of' "$run/out.log" | sed 's/ on .*//')"
done
