"""Runs a list of SQL statements on one database, the same way in and out of process.

As a script (plain SQLite, run by Debian's python without the extension):
    python3 sqlscript.py DB [--page-size N] [--journal-mode M] [--checkpoint] < statements.json
In process (walrust loaded): run(conn, statements, page_size, journal_mode, checkpoint).

`statements` is a JSON list; each item is SQL text or [SQL, [params...]] where a param
{"blob": "<hex>"} is a BLOB. The connection is in autocommit mode, so transactions are the
statements' own BEGIN/COMMIT.
"""

import argparse
import json
import sqlite3
import sys


def _param(p):
    return bytes.fromhex(p["blob"]) if isinstance(p, dict) else p


def run(conn, statements, page_size=None, journal_mode=None, checkpoint=False):
    if page_size:
        conn.execute(f"PRAGMA page_size={int(page_size)}")
    if journal_mode:
        got = conn.execute(f"PRAGMA journal_mode={journal_mode}").fetchone()[0]
        assert got == journal_mode.lower(), f"journal_mode={journal_mode} gave {got}"
    for item in statements:
        if isinstance(item, str):
            conn.execute(item)
        else:
            sql, params = item
            conn.execute(sql, [_param(p) for p in params])
    if checkpoint:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("--page-size", type=int)
    parser.add_argument("--journal-mode")
    parser.add_argument("--checkpoint", action="store_true")
    args = parser.parse_args()
    conn = sqlite3.connect(args.db, isolation_level=None)
    run(conn, json.load(sys.stdin), args.page_size, args.journal_mode, args.checkpoint)
    conn.close()


if __name__ == "__main__":
    main()
