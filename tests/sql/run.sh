#!/usr/bin/env bash
# SQL golden tests (graft-style): every tests/sql/test_*.sql runs through the sqlite3 shell with
# walrust loaded; its output, then `SQLite Exit Code = N`, must equal test_*.sql.expected.
#
#   tests/sql/run.sh                    run all
#   tests/sql/run.sh test_status.sql    run some
#   UPDATE_EXPECTED=1 tests/sql/run.sh  rewrite the .expected files from the actual output
#                                       (review the diff before committing it)
#
# Each file runs in a fresh temporary directory, which is also the shell's working directory,
# so relative paths (`.open app.db`) land there. Before the run, `@TESTDIR@` in the script is
# replaced by that directory's absolute path (replica URLs must be absolute) and `@EXT@` by the
# extension's path; in the output both are replaced back, so expected files do not depend on
# the machine. The shell runs as `sqlite3 -echo -header -nullvalue NULL` (list mode, so no
# column is padded to a machine-dependent width), with stderr merged into stdout in order.
#
# Environment: WALRUST_EXT (extension path, suffix optional; default target/release/libwalrust),
# SQLITE3 (default /usr/bin/sqlite3), SQL_TEST_TIMEOUT (seconds per file, default 120).
# Every other WALRUST_* variable is removed from the shell's environment. Last line of output:
# `N passed, N failed`; the exit status is 0 only if nothing failed and something ran.
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
ext=${WALRUST_EXT:-$root/target/release/libwalrust}
ext=${ext%.so}
ext=${ext%.dylib}
sqlite=${SQLITE3:-/usr/bin/sqlite3}
per_test_timeout=${SQL_TEST_TIMEOUT:-120}

if [ $# -gt 0 ]; then
    files=()
    for f in "$@"; do files+=("$here/$(basename "$f")"); done
else
    files=("$here"/test_*.sql)
fi

clean_env=(env)
for var in $(compgen -e); do
    case "$var" in WALRUST_*) clean_env+=(-u "$var") ;; esac
done
clean_env+=(LC_ALL=C)  # `.system ls` sorts the same everywhere
clean_env+=(SQLITE3="$sqlite")  # for a script that runs a nested shell with `.system $SQLITE3`

passed=0
failed=0
failed_names=()
for sql in "${files[@]}"; do
    name=$(basename "$sql")
    if [ ! -f "$sql" ]; then
        echo "MISSING $name"
        failed=$((failed + 1)); failed_names+=("$name")
        continue
    fi
    expected="$sql.expected"
    dir=$(mktemp -d "${TMPDIR:-/tmp}/walrust-sql.XXXXXX")
    sed -e "s|@TESTDIR@|$dir|g" -e "s|@EXT@|$ext|g" "$sql" >"$dir/.script.sql"
    actual=$(
        cd "$dir" &&
        "${clean_env[@]}" timeout "$per_test_timeout" stdbuf -oL -eL \
            "$sqlite" -echo -header -nullvalue NULL -cmd ".load $ext" <"$dir/.script.sql" 2>&1
        echo "SQLite Exit Code = $?"
    )
    actual=${actual//"$dir"/@TESTDIR@}
    actual=${actual//"$ext"/@EXT@}
    if [ "${UPDATE_EXPECTED:-}" = 1 ]; then
        printf '%s\n' "$actual" >"$expected"
        echo "UPDATED $name"
        passed=$((passed + 1))
        rm -rf "$dir"
        continue
    fi
    if [ -f "$expected" ] && diff -u --label "$name.expected" --label "$name (actual)" \
            "$expected" <(printf '%s\n' "$actual") >"$dir/.diff"; then
        echo "ok      $name"
        passed=$((passed + 1))
        rm -rf "$dir"
    else
        echo "FAILED  $name"
        if [ -f "$expected" ]; then sed 's/^/    /' "$dir/.diff"; else echo "    no $name.expected"; fi
        echo "    (left in $dir)"
        failed=$((failed + 1)); failed_names+=("$name")
    fi
done

if [ $failed -gt 0 ]; then echo "failed: ${failed_names[*]}"; fi
echo "$passed passed, $failed failed"
[ $failed -eq 0 ] && [ $passed -gt 0 ]
