#!/usr/bin/python3
"""How much one upload raises the application's peak memory.

Writes bulk transactions (1,000 rows each, as bench/workload.py's bulk kind) into a WAL
database with walrust loaded and a long sync interval, so that they pile up into one batch;
then resets the process's peak RSS (VmHWM, through /proc/self/clear_refs) and calls
walrust_sync(), which encodes the batch as one level-0 LTX file and uploads it. Prints the
size of that file and how much VmHWM rose above the RSS before the upload. With --rounds N,
does that N times with batches of 0.3 to 1.2 times --mb (seeded), and prints how far the
peak over all rounds rose above the RSS before the first: what the allocator keeps between
uploads of different sizes counts there.

    bench/upload_memory.py --ext target/release/libwalrust.so --replica s3 --mb 20
    bench/upload_memory.py --ext target/release/libwalrust.so --replica file --mb 20

`--replica s3` starts s3s-fs with scripts/s3-server.sh (stopped at the end); `file` uses a
local directory. Needs a python3 whose sqlite3 can load extensions (Debian's /usr/bin/python3).
Not a benchmark: one upload, no timing.
"""

import argparse
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
from workload import payloads  # noqa: E402  (the benchmark's rows)


def status_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise SystemExit(f"no {field} in /proc/self/status")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ext", required=True)
    ap.add_argument("--replica", choices=["s3", "file"], default="s3")
    ap.add_argument("--mb", type=float, default=20, help="MB of rows written before the upload")
    ap.add_argument("--rounds", type=int, default=1)
    a = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="walrust-upload-memory-")
    state = os.path.join(tmp, "s3")
    server = None
    try:
        if a.replica == "s3":
            out = subprocess.run([os.path.join(ROOT, "scripts/s3-server.sh"), "start", state],
                                 check=True, capture_output=True, text=True).stdout
            server = state
            env = {}
            for line in out.splitlines():
                if line.startswith("export "):
                    k, _, v = line[len("export "):].partition("=")
                    env[k] = v
            os.environ.update(env)
            replica = (f"s3://{env['WALRUST_TEST_S3_BUCKET']}/db"
                       f"?endpoint={env['AWS_ENDPOINT_URL_S3']}&region=us-east-1"
                       "&force_path_style=true")
        else:
            replica = "file://" + os.path.join(tmp, "replica")

        anchor = sqlite3.connect(":memory:")
        anchor.enable_load_extension(True)
        anchor.load_extension(os.path.abspath(a.ext))
        db_path = os.path.join(tmp, "app.db")
        params = {"walrust_replica": replica, "walrust_sync_interval": "3600000"}
        uri = ("file:" + urllib.parse.quote(db_path, safe="/") + "?"
               + "&".join(f"{k}={urllib.parse.quote(v, safe='/:')}" for k, v in params.items()))
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, ts REAL, payload TEXT)")
        conn.execute("SELECT walrust_sync()").fetchone()  # the first snapshot, out of the way

        pl = payloads()
        sizes = random.Random(7)
        i = 0
        start_rss = None
        for r in range(a.rounds):
            mb = a.mb if a.rounds == 1 else a.mb * sizes.uniform(0.3, 1.2)
            end = i + int(mb * 1e6 / 120)
            while i < end:
                conn.execute("BEGIN")
                conn.executemany("INSERT INTO t(ts, payload) VALUES (?, ?)",
                                 ((float(i + k), pl[(i + k) % len(pl)]) for k in range(1000)))
                conn.execute("COMMIT")
                i += 1000

            rss = status_kib("VmRSS")
            if start_rss is None:
                start_rss = rss
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
            txid = conn.execute("SELECT walrust_sync()").fetchone()[0]
            hwm = status_kib("VmHWM")
            files = conn.execute(
                "SELECT size FROM walrust_files(?) WHERE level = 0 AND max_txid = ?",
                (replica, txid)).fetchall()
            print(f"replica={a.replica} round={r + 1} rows={i} txid={txid} "
                  f"level-0 file={files[0][0] / 1e6:.1f} MB rss before upload={rss / 1024:.1f} MiB "
                  f"peak so far={hwm / 1024:.1f} MiB", flush=True)
        print(f"replica={a.replica} rounds={a.rounds}: peak {hwm / 1024:.1f} MiB, "
              f"{(hwm - start_rss) / 1024:.2f} MiB above the RSS before the first upload")
        conn.close()
    finally:
        if server:
            subprocess.run([os.path.join(ROOT, "scripts/s3-server.sh"), "stop", server],
                           capture_output=True)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    sys.exit(main())
