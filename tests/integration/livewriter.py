"""The writer of test_live_replica.py: commits for a while at walrust_sync_interval=0 and
records what the database holds at each TXID.

    python3 livewriter.py --ext EXT --db DB --replica URL --log LOG --seconds S

Each commit inserts row n (ids 1, 2, ...: a blob that depends on n) and sets `meta.n` to n,
so the database at any commit is known from n alone. After each commit it appends
`<txid> <n>` to LOG (the TXID from walrust_status()). It takes a snapshot every 5 s
(walrust_snapshot_interval), so that retention has level-0 files to remove. At the end it
runs walrust_sync() and prints `synced <txid> <n>`.
"""

import argparse
import json
import sqlite3
import time
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    for a in ("--ext", "--db", "--replica", "--log"):
        p.add_argument(a, required=True)
    p.add_argument("--seconds", type=float, required=True)
    args = p.parse_args()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    params = {
        "walrust_replica": args.replica,
        "walrust_sync_interval": "0",
        "walrust_snapshot_interval": "5",
    }
    uri = "file:" + urllib.parse.quote(args.db, safe="/") + "?" + urllib.parse.urlencode(
        params, safe="/:"
    )
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=120)
    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    conn.execute("CREATE TABLE meta(k INTEGER PRIMARY KEY, n INTEGER)")
    conn.execute("INSERT INTO meta VALUES (1, 0)")
    conn.execute("SELECT walrust_sync('main', 120000)").fetchone()
    status = lambda: json.loads(conn.execute("SELECT walrust_status()").fetchone()[0])
    n = 0
    end = time.monotonic() + args.seconds
    with open(args.log, "w") as log:
        log.write(f"{status()['txid']} 0\n")
        while time.monotonic() < end:
            n += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t VALUES (?, zeroblob(200) || ?)", (n, str(n) * 20))
            conn.execute("UPDATE meta SET n = ? WHERE k = 1", (n,))
            conn.execute("COMMIT")
            log.write(f"{status()['txid']} {n}\n")
            log.flush()
            time.sleep(0.01)
    synced = conn.execute("SELECT walrust_sync('main', 120000)").fetchone()[0]
    print("synced", synced, n, flush=True)


if __name__ == "__main__":
    main()
