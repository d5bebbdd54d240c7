"""A writer process for the several-processes tests (SPEC 6).

    python3 procwriter.py --ext EXT --db DB --replica URL --tag T --count N [--sync]

Commits N one-row transactions (every third in BEGIN IMMEDIATE, the rest deferred
autocommit), printing `uploader <true|false>` now and then (walrust_status), then `done`.
With --sync it runs walrust_sync() before exiting and prints `synced <txid>`.
"""

import argparse
import json
import sqlite3
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    for a in ("--ext", "--db", "--replica", "--tag"):
        p.add_argument(a, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--sync", action="store_true")
    p.add_argument("--sync-interval", default="50")
    args = p.parse_args()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    uri = "file:" + urllib.parse.quote(args.db, safe="/") + "?" + urllib.parse.urlencode(
        {"walrust_replica": args.replica, "walrust_sync_interval": args.sync_interval}, safe="/:"
    )
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=120)
    for i in range(args.count):
        if i % 3 == 0:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t(tag, n) VALUES (?, ?)", (args.tag, i))
            conn.execute("COMMIT")
        else:
            conn.execute("INSERT INTO t(tag, n) VALUES (?, ?)", (args.tag, i))
        if i % 200 == 0:
            status = json.loads(conn.execute("SELECT walrust_status()").fetchone()[0])
            print("uploader", str(status["uploader"]).lower(), flush=True)
    if args.sync:
        print("synced", conn.execute("SELECT walrust_sync('main', 120000)").fetchone()[0], flush=True)
    print("done", flush=True)


if __name__ == "__main__":
    main()
