#!/usr/bin/env bash
# Runs the test suites in order, each one even if an earlier one failed, then prints each
# runner's closing line. Exit status 0 only if every suite ran and passed; "no tests ran"
# (pytest's exit 5, a runner that printed no result) counts as a failure.
#
#   scripts/test.sh                          unit, sql, py, rusqlite, sqlite-wal
#   scripts/test.sh sql py                   some of them
#   scripts/test.sh py -k pitr               one suite, extra arguments for its runner
#
# A test that needs a tool the project installs (litestream, s3s-fs, the sqlite3 shell) fails
# when it is missing. With WALRUST_ALLOW_SKIP=1 it skips instead, and the summary counts every
# skip: cargo tests append a `WALRUST-SKIP: <test>: <why>` line to $WALRUST_SKIP_LOG (set here,
# one file per suite; tests/common/tools.rs), pytest counts its own (`N skipped`).
#
# `make test` calls this after building the extension and setting up the environment.
# The extension is $WALRUST_EXT, default $CARGO_TARGET_DIR (or target)/release/libwalrust.so.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target_dir=${CARGO_TARGET_DIR:-$root/target}
case "$(uname -s)" in Darwin) suffix=dylib ;; *) suffix=so ;; esac
ext=${WALRUST_EXT:-$target_dir/release/libwalrust.$suffix}
suite_timeout=${TEST_SUITE_TIMEOUT:-1800}  # only stops a hung suite

suites=()
extra=()
for arg in "$@"; do
    case "$arg" in
        unit | sql | py | rusqlite | sqlite-wal) [ ${#extra[@]} -eq 0 ] && suites+=("$arg") || extra+=("$arg") ;;
        *) extra+=("$arg") ;;
    esac
done
[ ${#suites[@]} -gt 0 ] || suites=(unit sql py rusqlite sqlite-wal)
if [ ${#extra[@]} -gt 0 ] && [ ${#suites[@]} -ne 1 ]; then
    echo "test.sh: extra arguments need exactly one suite" >&2
    exit 2
fi

logs=$(mktemp -d "${TMPDIR:-/tmp}/walrust-test-logs.XXXXXX")
summary=()
failed=0
total_skips=0

command_for() {
    case "$1" in
        unit) echo cargo test --no-fail-fast ;;
        sql) echo tests/sql/run.sh ;;
        py) echo .venv/bin/python -m pytest ;;
        rusqlite) echo cargo test --manifest-path tests/rusqlite-client/Cargo.toml ;;
        sqlite-wal) echo tests/sqlite-wal/run.sh ;;
    esac
}

# How many tests of a suite skipped: the WALRUST-SKIP lines of the cargo suites, pytest's own
# count (its closing line says `N skipped`).
skips_of() {
    local name=$1 log=$2
    case "$name" in
        unit | rusqlite) cat "$logs/$name.skips" 2>/dev/null | grep -c '^WALRUST-SKIP: ' || true ;;
        py) closing_lines "$name" "$log" | grep -oE '[0-9]+ skipped' | grep -oE '[0-9]+' || echo 0 ;;
        *) echo 0 ;;
    esac
}

closing_lines() {
    local name=$1 log=$2
    case "$name" in
        unit | rusqlite) grep -E '^test result:' "$log" || tail -n 1 "$log" ;;
        *) grep -v '^[[:space:]]*$' "$log" | tail -n 1 ;;
    esac
}

# The lines of a failed suite's log that say what failed: the sql files' diffs, pytest's
# FAILED/ERROR lines, the failing test names of cargo, the sqlite-wal files and their `!` lines.
failure_lines() {
    local name=$1 log=$2
    case "$name" in
        sql) grep -E '^(FAILED  |failed: |    )' "$log" ;;
        py) grep -E '^(FAILED|ERROR) ' "$log" ;;
        unit | rusqlite) grep -E '^(test .* FAILED|---- .* stdout ----|thread .* panicked)' "$log" ;;
        sqlite-wal) grep -E '^(sqlite-wal: .*FAILED|    )' "$log" | cut -c1-400 ;;
    esac
}

for name in "${suites[@]}"; do
    log=$logs/$name.log
    read -r -a cmd <<<"$(command_for "$name")"
    cmd+=("${extra[@]}")
    echo
    echo "=== $name: ${cmd[*]}"
    case "$name" in
        unit)
            WALRUST_SKIP_LOG=$logs/$name.skips timeout "$suite_timeout" "${cmd[@]}" 2>&1 | tee "$log"
            ;;
        rusqlite)
            WALRUST_SKIP_LOG=$logs/$name.skips \
            WALRUST_EXT=$ext CARGO_TARGET_DIR=$target_dir/rusqlite-client \
                timeout "$suite_timeout" "${cmd[@]}" 2>&1 | tee "$log"
            ;;
        *)
            WALRUST_EXT=$ext timeout "$suite_timeout" "${cmd[@]}" 2>&1 | tee "$log"
            ;;
    esac
    rc=${PIPESTATUS[0]}
    verdict=ok
    if [ "$rc" -ne 0 ]; then
        verdict="FAILED (exit $rc)"
        [ "$rc" -eq 124 ] && verdict="FAILED (timed out after ${suite_timeout}s)"
        [ "$name" = py ] && [ "$rc" -eq 5 ] && verdict="FAILED (pytest collected no tests)"
        failed=1
    elif [ -z "$(closing_lines "$name" "$log")" ]; then
        verdict="FAILED (no result line)"
        failed=1
    fi
    skips=$(skips_of "$name" "$log")
    total_skips=$((total_skips + skips))
    summary+=("$(printf '%-9s %s, %s skipped' "$name" "$verdict" "$skips")")
    while IFS= read -r line; do summary+=("          $line"); done < <(closing_lines "$name" "$log")
    if [ "$rc" -ne 0 ]; then
        # CI shows only the end of the output: what failed goes in the summary.
        while IFS= read -r line; do summary+=("          $line"); done \
            < <(failure_lines "$name" "$log" | head -n 60)
    fi
    if [ -f "$logs/$name.skips" ]; then
        while IFS= read -r line; do summary+=("          $line"); done <"$logs/$name.skips"
    fi
done

echo
echo "=== summary (logs in $logs)"
printf '%s\n' "${summary[@]}"
if [ "$total_skips" -gt 0 ]; then
    echo "=== $total_skips test(s) SKIPPED (WALRUST_ALLOW_SKIP=${WALRUST_ALLOW_SKIP:-unset}): a skipped test proved nothing"
fi
if [ $failed -ne 0 ]; then
    echo "=== FAILED"
    exit 1
fi
echo "=== all passed"
