#!/usr/bin/env bash
# What `make bench` needs beyond the test environment (scripts/setup-test-env.sh): the project
# venv (Debian's python, litestream 0.5.17) and matplotlib in it, for the plots. Idempotent.
# /usr/bin/time (GNU time, for peak RSS of restores) comes from the `time` Debian package.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/.venv
say() { echo "bench/setup: $*"; }

if [ ! -x "$venv/bin/python" ] || [ ! -x "$venv/bin/litestream" ]; then
    "$root/scripts/setup-test-env.sh" --venv
fi
if ! "$venv/bin/python" -c 'import matplotlib' 2>/dev/null; then
    say "pip installing matplotlib into $venv (plots for BENCHMARKS.md)"
    "$venv/bin/python" -m pip install -q 'matplotlib>=3.6,<4'
fi
if [ ! -x /usr/bin/time ]; then
    say "installing GNU time (peak RSS of restore processes)"
    if [ "$(id -u)" = 0 ]; then apt-get install -y -q time || { apt-get update -q && apt-get install -y -q time; }
    else sudo apt-get install -y -q time; fi
fi
say "ready: $("$venv/bin/python" -c 'import matplotlib; print("matplotlib", matplotlib.__version__)'), litestream $("$venv/bin/litestream" version)"
