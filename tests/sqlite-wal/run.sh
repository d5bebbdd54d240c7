#!/usr/bin/env bash
# SQLite's own WAL tests, run with walrust loaded and replicating every database they open.
#
#   tests/sqlite-wal/run.sh                      the default files (see FILES below)
#   tests/sqlite-wal/run.sh wal.test walcrash2.test   the named ones
#
# SQLite's source tree comes from Debian (`apt-get source sqlite3`, the version of the
# system's libsqlite3; scripts/setup-test-env.sh enables deb-src for it), and its test program,
# testfixture, is built once with walrust_init.c compiled in as SQLITE_EXTRA_INIT: every
# testfixture process, the children that crash tests and multi-process tests start included,
# loads $WALRUST_EXT before it opens anything, and WALRUST_REPLICA_ROOT gives every database in
# WAL mode a replica. tester-walrust.tcl (sourced at the end of SQLite's tester.tcl) gives a
# database that a test deletes and creates again a fresh shadow directory and replica, as a
# new database at a new URL would have, and saves and restores the replica with the files a
# test saves and restores (README.md here: why walcrash3 needs that).
#
# A file passes when SQLite's harness reports "0 errors out of N tests". Its exit status is
# not used: the harness also fails a run that ends with a file open, and walrust's checkpoint
# thread may still have its connection to the database open then (it closes it within a
# second of the application's last close).
#
# Work directory: $SQLITE_WAL_DIR, default target/sqlite-wal (source, build, one run
# directory per file with its output in out.log).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=${SQLITE_WAL_DIR:-$root/target/sqlite-wal}
ext=${WALRUST_EXT:-$root/target/release/libwalrust.so}
file_timeout=${SQLITE_WAL_TIMEOUT:-1800}

# The files issue 14 names (walcrash*, walthread, wal.test), all run by default, with walrust's
# defaults (background checkpoints); each passes (2026-12-06, with every
# process's log off). walcrash3 takes 9 of the 15 minutes, as it does without walrust (a child
# process per test).
FILES=(walthread.test walcrash.test walcrash2.test walcrash3.test walcrash4.test wal.test)

say() { echo "sqlite-wal: $*"; }

if [ ! -f "$ext" ]; then
    say "no extension at $ext (make build, or set WALRUST_EXT)"; exit 1
fi
ext=$(realpath "$ext")  # each file runs in a directory of its own

source_tree() {
    local src
    src=$(ls -d "$work"/src/sqlite3-*/ 2>/dev/null | head -n 1)
    if [ -n "$src" ] && [ -f "$src/test/tester.tcl" ]; then
        echo "${src%/}"; return
    fi
    mkdir -p "$work/src"
    say "downloading SQLite's source tree (apt-get source sqlite3)" >&2
    (cd "$work/src" && apt-get source --download-only -q sqlite3 >/dev/null 2>&1) || {
        say "apt-get source sqlite3 failed: enable deb-src (scripts/setup-test-env.sh does)" >&2
        return 1
    }
    local tarball
    tarball=$(ls "$work"/src/sqlite3_*.orig.tar.* | grep -v -- '-www' | head -n 1)
    tar -C "$work/src" -xf "$tarball" || return 1
    src=$(ls -d "$work"/src/sqlite3-*/ | head -n 1)
    echo "${src%/}"
}

# Appends our hook to SQLite's tester.tcl once.
patch_tester() {
    local src=$1
    cp "$here/tester-walrust.tcl" "$src/test/tester-walrust.tcl"
    if ! grep -q 'tester-walrust.tcl' "$src/test/tester.tcl"; then
        printf '\nsource [file join [file dirname [info script]] tester-walrust.tcl]\n' \
            >>"$src/test/tester.tcl"
    fi
}

# Builds testfixture unless the one there was built from this walrust_init.c.
build_testfixture() {
    local src=$1 bld=$work/build stamp
    stamp=$(sha256sum "$here/walrust_init.c" | cut -c1-16)
    if [ -x "$bld/testfixture" ] && [ "$(cat "$bld/stamp" 2>/dev/null)" = "$stamp" ]; then
        return 0
    fi
    rm -rf "$bld" && mkdir -p "$bld"
    say "building testfixture (about a minute)"
    (cd "$bld" && "$src/configure" --with-tcl=/usr/lib/tcl8.6 >configure.log 2>&1) || {
        say "configure failed (is tcl-dev installed?): $bld/configure.log"; return 1
    }
    cp "$here/walrust_init.c" "$bld/"
    # SQLite's own testfixture flags (Makefile.in), plus the extra init.
    local flags="-DSQLITE_TEST=1 -DSQLITE_CRASH_TEST=1 -DTCLSH_INIT_PROC=sqlite3TestInit"
    flags+=" -DSQLITE_SERVER=1 -DSQLITE_PRIVATE= -DSQLITE_CORE -DBUILD_sqlite"
    flags+=" -DSQLITE_SERIES_CONSTRAINT_VERIFY=1 -DSQLITE_DEFAULT_PAGE_SIZE=1024"
    flags+=" -DSQLITE_ENABLE_STMTVTAB -DSQLITE_ENABLE_DBPAGE_VTAB -DSQLITE_ENABLE_BYTECODE_VTAB"
    flags+=" -DSQLITE_CKSUMVFS_STATIC -DSQLITE_EXTRA_INIT=walrust_testfixture_init"
    (cd "$bld" && make -j2 testfixture TESTFIXTURE_FLAGS="$flags" \
        TESTFIXTURE_SRC1="sqlite3.c walrust_init.c" >make.log 2>&1) || {
        say "building testfixture failed: $bld/make.log"; return 1
    }
    echo "$stamp" >"$bld/stamp"
}

src=$(source_tree) || exit 1
patch_tester "$src"
build_testfixture "$src" || exit 1

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
    files=("${FILES[@]}")
fi
failed=0
total=0
for f in "${files[@]}"; do
    run=$work/run/${f%.test}
    rm -rf "$run" && mkdir -p "$run"
    start=$(date +%s)
    # WALRUST_LOG=off: SQLite's multi-process tests take any line a child testfixture writes
    # on standard error for its failure (Tcl's close of a pipe raises it).
    (cd "$run" && WALRUST_LOG="${WALRUST_LOG:-off}" WALRUST_TESTFIXTURE_EXT="$ext" \
        WALRUST_REPLICA_ROOT="$run/replicas" \
        timeout "$file_timeout" "$work/build/testfixture" "$src/test/$f" >out.log 2>&1)
    rc=$?
    line=$(grep -E '^[0-9]+ errors out of [0-9]+ tests' "$run/out.log" | tail -n 1)
    secs=$(($(date +%s) - start))
    # walrust must have been there: a file whose commits walrust never captured proves
    # nothing (SQLite's harness re-initialises SQLite, which once left walrust out of every
    # test unnoticed). Short tests may end before any upload; a shadow log must exist.
    segs=$(find "$run" -path '*-walrust/log/*.seg' 2>/dev/null | wc -l)
    ltx=$(find "$run/replicas" -name '*.ltx' 2>/dev/null | wc -l)
    if grep -q '^walrust_testfixture_init: cannot load' "$run/out.log"; then
        line=$(grep -m1 '^walrust_testfixture_init: cannot load' "$run/out.log")
    elif [ "$segs" -eq 0 ]; then
        line="walrust captured nothing: no shadow-log segment under $run"
    fi
    if [[ "$line" =~ ^0\ errors\ out\ of\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt 0 ]; then
        total=$((total + BASH_REMATCH[1]))
        say "$f: ok (${line%% on *}, $ltx LTX files uploaded, ${secs}s)"
    else
        failed=1
        [ $rc -eq 124 ] && line="timed out after ${file_timeout}s"
        say "$f: FAILED (${line:-no result line, exit $rc}, ${secs}s): $run/out.log"
        grep -E '^(!|Error)' "$run/out.log" | head -n 20 | sed 's/^/    /'
    fi
done
if [ $failed -ne 0 ]; then
    say "FAILED"; exit 1
fi
say "test result: ok. ${#files[@]} files, $total tests, 0 errors"
