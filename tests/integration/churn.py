"""A writer that keeps walrust's temporary files busy, for kill -9 tests.

    python3 churn.py --ext EXT --db DB --replica URL

Commits 256 KiB random blobs at walrust_sync_interval=0 and asks for a snapshot every few
commits, so that at most moments a snapshot or level-0 file is being built in the shadow
directory's tmp/ or written into the replica. Prints `tick N` after each commit, forever.
"""

import argparse
import os
import sqlite3
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    for a in ("--ext", "--db", "--replica"):
        p.add_argument(a, required=True)
    args = p.parse_args()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    uri = "file:" + urllib.parse.quote(args.db, safe="/") + "?" + urllib.parse.urlencode(
        {"walrust_replica": args.replica, "walrust_sync_interval": "0"}, safe="/:"
    )
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=120)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE IF NOT EXISTS blobs(id INTEGER PRIMARY KEY, b BLOB)")
    n = 0
    while True:
        n += 1
        conn.execute("INSERT INTO blobs(b) VALUES (?)", (os.urandom(256 << 10),))
        conn.execute("DELETE FROM blobs WHERE id <= ?", (n - 60,))
        if n % 4 == 0:
            try:
                conn.execute("SELECT walrust_snapshot('main', 120000)").fetchone()
            except sqlite3.Error:
                pass
        print("tick", n, flush=True)


if __name__ == "__main__":
    main()
