"""A writer process for the several-processes tests (SPEC 6).

    python3 procwriter.py --ext EXT --db DB --replica URL --tag T --count N [--sync]
                          [--hold-after K]

Creates table t if it does not exist, then commits N one-row transactions (every third in
BEGIN IMMEDIATE, the rest deferred autocommit; row i is (tag, i)), printing
`uploader <true|false>` now and then (walrust_status), then `done`. With --sync it runs
walrust_sync() before exiting and prints `synced <txid>`, then `uploader <true|false>`.

With --hold-after K it stops after K rows, prints `held`, and obeys its standard input, one
command a line: `status` prints `uploader <true|false>`; `go` writes the remaining rows.
"""

import argparse
import json
import sqlite3
import sys
import urllib.parse


def uploader(conn):
    status = json.loads(conn.execute("SELECT walrust_status()").fetchone()[0])
    if "uploader" not in status:  # not replicating: say why
        print("status", json.dumps(status), file=sys.stderr, flush=True)
    print("uploader", str(status.get("uploader")).lower(), flush=True)


def main():
    p = argparse.ArgumentParser()
    for a in ("--ext", "--db", "--replica", "--tag"):
        p.add_argument(a, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sync", action="store_true")
    p.add_argument("--sync-interval", default="50")
    p.add_argument("--hold-after", type=int)
    args = p.parse_args()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    uri = "file:" + urllib.parse.quote(args.db, safe="/") + "?" + urllib.parse.urlencode(
        {"walrust_replica": args.replica, "walrust_sync_interval": args.sync_interval}, safe="/:"
    )
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=120)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, tag TEXT, n INTEGER)")
    for i in range(args.count):
        if i == args.hold_after:
            print("held", flush=True)
            for line in sys.stdin:
                if line.strip() == "status":
                    uploader(conn)
                elif line.strip() == "go":
                    break
        if i % 3 == 0:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t(tag, n) VALUES (?, ?)", (args.tag, i))
            conn.execute("COMMIT")
        else:
            conn.execute("INSERT INTO t(tag, n) VALUES (?, ?)", (args.tag, i))
        if i % 200 == 0:
            uploader(conn)
    if args.sync:
        print("synced", conn.execute("SELECT walrust_sync('main', 120000)").fetchone()[0], flush=True)
        uploader(conn)
    print("done", flush=True)


if __name__ == "__main__":
    main()
