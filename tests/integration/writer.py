"""A writer for the kill -9 tests: one numbered row per transaction, forever.

    python3 writer.py --db DB --seed N [--synchronous FULL] [--hold]
                      [--ext EXT --replica URL [--setting k=v ...]]

Prints `start <first id>` once the database is open, then each id after its COMMIT has
returned, flushing every line: an id on stdout is a transaction SQLite reported committed.
Without --ext it is plain SQLite (for checking the harness itself). With --hold it waits for a
line on its standard input after `start`, before its first transaction (so that a debugger
can attach first).
"""

import argparse
import os
import random
import sqlite3
import sys
import urllib.parse


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--db", required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--ext")
    parser.add_argument("--replica")
    parser.add_argument("--setting", action="append", default=[])
    parser.add_argument("--synchronous", default="NORMAL")
    parser.add_argument("--hold", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)

    params = {}
    if args.ext:
        loader = sqlite3.connect(":memory:")
        loader.enable_load_extension(True)
        loader.load_extension(args.ext)
        if args.replica:
            params["walrust_replica"] = args.replica
        for setting in args.setting:
            key, value = setting.split("=", 1)
            params[key if key.startswith("walrust_") else "walrust_" + key] = value
    uri = "file:" + urllib.parse.quote(os.path.abspath(args.db), safe="/")
    if params:
        uri += "?" + "&".join(
            f"{k}={urllib.parse.quote(v, safe='/:')}" for k, v in params.items()
        )
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={args.synchronous}")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS log(id INTEGER PRIMARY KEY, writer INTEGER, payload BLOB)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS counter(k TEXT PRIMARY KEY, n INTEGER)")
    next_id = conn.execute("SELECT coalesce(max(id), 0) + 1 FROM log").fetchone()[0]
    print("start", next_id, flush=True)
    if args.hold:
        sys.stdin.readline()
    pid = os.getpid()
    while True:
        # Mostly small rows, sometimes one that spills onto overflow pages.
        size = rng.choice([0, 10, 100, 1000]) if rng.random() < 0.9 else rng.randint(5000, 70000)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT INTO log VALUES (?, ?, ?)", (next_id, pid, rng.randbytes(size)))
        conn.execute(
            "INSERT INTO counter VALUES ('commits', 1) "
            "ON CONFLICT(k) DO UPDATE SET n = n + 1"
        )
        if next_id % 97 == 0:  # shrink an old row: frees overflow pages, keeps every id
            conn.execute("UPDATE log SET payload = x'00' WHERE id = ?", (next_id - 50,))
        conn.execute("COMMIT")
        sys.stdout.write(f"{next_id}\n")
        sys.stdout.flush()
        next_id += 1


if __name__ == "__main__":
    main()
