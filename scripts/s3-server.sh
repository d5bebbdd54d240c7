#!/usr/bin/env bash
# A real S3 server for tests: s3s-fs (SigV4-checking, objects on disk) on 127.0.0.1.
#
#   scripts/s3-server.sh start [STATE_DIR]   start it; print KEY=VALUE lines (see below)
#   scripts/s3-server.sh stop  [STATE_DIR]   stop it and delete STATE_DIR
#   scripts/s3-server.sh env   [STATE_DIR]   print the KEY=VALUE lines of a running server
#
# STATE_DIR defaults to /tmp/walrust-s3. It holds the pid, the log, the printed settings and,
# under data/, the objects: every subdirectory of data/ is a bucket. `start` creates the bucket
# named by $WALRUST_TEST_S3_BUCKET (default "walrust-test").
#
# The printed lines can be eval'ed in a shell:  eval "$(scripts/s3-server.sh start)"
#   export AWS_ENDPOINT_URL_S3=http://127.0.0.1:PORT   AWS_ACCESS_KEY_ID=...   ...
set -euo pipefail

cmd=${1:-}
state=${2:-/tmp/walrust-s3}
bucket=${WALRUST_TEST_S3_BUCKET:-walrust-test}
access_key=walrust-test-ak
secret_key=walrust-test-sk

find_s3s_fs() {
    if command -v s3s-fs >/dev/null 2>&1; then command -v s3s-fs; return; fi
    if [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then echo "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs"; return; fi
    echo "s3-server.sh: s3s-fs not found; run scripts/setup-test-env.sh" >&2
    exit 1
}

free_port() {
    # Ask the kernel for a free port. Another process may take it before s3s-fs binds it;
    # start() retries on a different port if so.
    local py
    for py in /usr/bin/python3 python3; do
        if command -v "$py" >/dev/null 2>&1; then
            "$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
            return
        fi
    done
    echo $(( 20000 + RANDOM % 20000 ))
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

print_env() {
    local port=$1
    cat <<ENV
export AWS_ENDPOINT_URL_S3=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=$access_key
export AWS_SECRET_ACCESS_KEY=$secret_key
export AWS_REGION=us-east-1
export WALRUST_TEST_S3_BUCKET=$bucket
export WALRUST_TEST_S3_PORT=$port
export WALRUST_TEST_S3_DATA=$state/data
ENV
}

start() {
    local bin port pid attempt i
    bin=$(find_s3s_fs)
    if [ -f "$state/pid" ] && kill -0 "$(cat "$state/pid")" 2>/dev/null; then
        echo "s3-server.sh: already running (pid $(cat "$state/pid")); stop it first" >&2
        exit 1
    fi
    mkdir -p "$state/data/$bucket"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        # setsid: its own process group, so the caller's Ctrl-C or job control leaves it alone
        # and `stop` ends exactly this process.
        setsid "$bin" --host 127.0.0.1 --port "$port" \
            --access-key "$access_key" --secret-key "$secret_key" "$state/data" \
            >"$state/log" 2>&1 </dev/null &
        pid=$!
        echo "$pid" >"$state/pid"
        for i in $(seq 1 100); do
            if ! kill -0 "$pid" 2>/dev/null; then break; fi
            if port_open "$port"; then
                print_env "$port" | tee "$state/env"
                return 0
            fi
            sleep 0.1
        done
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        echo "s3-server.sh: s3s-fs did not come up on port $port (attempt $attempt):" >&2
        tail -5 "$state/log" >&2 || true
    done
    exit 1
}

stop() {
    local pid i
    if [ -f "$state/pid" ]; then
        pid=$(cat "$state/pid")
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid"
            for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -9 "$pid" 2>/dev/null || true
        fi
    fi
    # Only delete what start() made.
    if [ -f "$state/pid" ] || [ -d "$state/data" ]; then
        rm -rf "$state"
    fi
}

case "$cmd" in
    start) start ;;
    stop) stop ;;
    env) cat "$state/env" ;;
    *) echo "usage: $0 start|stop|env [STATE_DIR]" >&2; exit 2 ;;
esac
