#!/usr/bin/env bash
# Evidence for tests/sqlite-wal/README.md ("A second source of readers"): walcrash3.test's
# second part alone (10,000 crashes of a child process), with walrust loaded and replicating
# as run.sh runs it, WALRUST_TRACE=1 on, repeated PART2_RUNS times (default 1). A failed
# check keeps the files it found in fail/ of that run; each run prints its result line and how
# many iterations' children opened a connection of walrust's own ("internal open"). Needs the
# testfixture that tests/sqlite-wal/run.sh builds.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${SQLITE_WAL_DIR:-$root/target/sqlite-wal}
ext=$(realpath "${WALRUST_EXT:-$root/target/release/libwalrust.so}")
src=$(ls -d "$work"/src/sqlite3-*/ | head -n 1)
[ -x "$work/build/testfixture" ] || { echo "walcrash3-part2: run tests/sqlite-wal/run.sh first"; exit 1; }
cp "$here/tester-walrust.tcl" "$src/test/tester-walrust.tcl"
# Part 1 out; part 2's check keeps the files it found when it fails.
python3 - "$src/test/walcrash3.test" "$src/test/walcrash3-part2.test" <<'PY'
import sys
s = open(sys.argv[1]).read()
head = s[:s.index("db close\ntestvfs tvfs")]
part2 = s[s.index("catch { db close }\nforcedelete test.db"):]
old = """    sqlite3 db test.db
    execsql { PRAGMA integrity_check } 
  } {ok}"""
new = """    sqlite3 db test.db
    set r [execsql { PRAGMA integrity_check } ]
    if {$r ne "ok"} {
      file mkdir fail
      foreach f [glob -nocomplain test.db* crash.tcl] { catch { file copy -force $f fail/ } }
    }
    set r
  } {ok}"""
assert old in part2, "walcrash3.test changed: update walcrash3-part2.sh"
open(sys.argv[2], "w").write(head + part2.replace(old, new))
PY
for k in $(seq 1 "${PART2_RUNS:-1}"); do
    run=$work/run/walcrash3-part2-$k
    rm -rf "$run" && mkdir -p "$run"
    (cd "$run" && WALRUST_TRACE=1 WALRUST_LOG=off WALRUST_TESTFIXTURE_EXT="$ext" \
        WALRUST_REPLICA_ROOT="$run/replicas" \
        "$work/build/testfixture" "$src/test/walcrash3-part2.test" >out.log 2>trace.log)
    echo "run $k: $(grep -E '^[0-9]+ errors out of' "$run/out.log" | sed 's/ on .*//')," \
        "children with a connection of walrust's own: $(grep -c 'internal open' "$run/out.log")"
done
