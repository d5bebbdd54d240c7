#!/usr/bin/env bash
# A/B of the commit path: plain SQLite and two builds of the extension, small one-row
# transactions (KIND=bulk: 1,000 rows each), rounds of 3 s (ROUND_SECONDS=N) interleaved so that a
# busy machine slows all three alike.
# Prints each round's rates and the ratios to plain SQLite of that round (the plain rate is
# printed too: a faster machine moves every ratio).
#
#   [KIND=bulk] [ROUND_SECONDS=4] bench/ab_commit.sh OLD_DIR NEW_DIR [FULL|NORMAL] [ROUNDS]
#
# OLD_DIR and NEW_DIR each hold a libwalrust.so (SQLite derives the entry point from the file
# name, so keep that name), e.g. a build of an older commit copied to /tmp/old/.
set -euo pipefail
old=$1 new=$2 sync=${3:-FULL} rounds=${4:-5} kind=${KIND:-small} seconds=${ROUND_SECONDS:-3}
work=$(mktemp -d "${TMPDIR:-/tmp}/walrust-ab.XXXXXX")
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "$0")" && pwd)
rate() {  # variant dir -> transactions per second
    local v=$1 d=$work/$1 extra=()
    rm -rf "$d" && mkdir -p "$d"
    case $v in
        old) extra=(--ext "$old/libwalrust.so" --replica "file://$d/replica") ;;
        new) extra=(--ext "$new/libwalrust.so" --replica "file://$d/replica") ;;
    esac
    /usr/bin/python3 "$here/workload.py" write --db "$d/app.db" --kind "$kind" --sync "$sync" \
        --seconds "$seconds" "${extra[@]}" | /usr/bin/python3 -c 'import json,sys; print(round(json.load(sys.stdin)["tps"]))'
}
echo "synchronous=$sync, $kind transactions, $rounds interleaved rounds of $seconds s"
for r in $(seq 1 "$rounds"); do
    p=$(rate plain) o=$(rate old) n=$(rate new)
    awk -v r="$r" -v p="$p" -v o="$o" -v n="$n" \
        'BEGIN { printf "round %d: plain %d tx/s, old %d (%.2fx), new %d (%.2fx)\n", r, p, o, o / p, n, n / p }'
done
