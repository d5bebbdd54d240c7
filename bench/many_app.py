"""The application side of the "Many databases" bench section: ONE Debian /usr/bin/python3
process holding N databases (its sqlite3 module loads the extension). bench/many.py runs it.

    many_app.py init  --dir D --n N                      N empty WAL databases D/db{i}.db
    many_app.py write --dir D --n N --tps T --seconds S [--ext E --url-template U --setting k=v]
    many_app.py chain --db P --ext E --url U --commits C   C commits, each followed by walrust_sync()

`write` commits T one-row transactions per second in total, round-robin over the databases,
paced to a schedule; with walrust it first waits for every first snapshot (before the clock),
samples every database's walrust_status() lag every 0.5 s while writing, then times
walrust_sync() on all of them at once. `--url-template` holds `{i}` for the database number.
Prints one JSON line.
"""

import argparse
import concurrent.futures
import json
import os
import sqlite3
import sys
import threading
import time
import urllib.parse

SCHEMA = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts REAL, payload TEXT)"
PAYLOAD = "x" * 100


def uri(path, params):
    u = "file:" + urllib.parse.quote(os.path.abspath(path), safe="/")
    if params:
        u += "?" + "&".join(f"{k}={urllib.parse.quote(str(v), safe='/:')}" for k, v in params.items())
    return u


def proc():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    out["fds"] = len(os.listdir("/proc/self/fd"))
    return out


def cpu_s():
    t = os.times()
    return t.user + t.system


def open_db(path, params):
    c = sqlite3.connect(uri(path, params), uri=True, isolation_level=None, timeout=60,
                        check_same_thread=False)
    assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    c.execute("PRAGMA synchronous=NORMAL")  # as WAL applications (and Litestream's docs) run
    return c


def on_all(conns, sql, threads=64):
    """Runs `sql` on every connection at once (sqlite3 releases the GIL while it runs)."""
    with concurrent.futures.ThreadPoolExecutor(min(threads, len(conns))) as ex:
        return list(ex.map(lambda c: c.execute(sql).fetchone()[0], conns))


def cmd_init(a):
    os.makedirs(a.dir, exist_ok=True)
    for i in range(a.n):
        c = sqlite3.connect(os.path.join(a.dir, f"db{i}.db"), isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute(SCHEMA)
        c.close()
    print(json.dumps({"ok": True}), flush=True)


def cmd_write(a):
    anchor = None
    if a.ext:
        anchor = sqlite3.connect(":memory:")
        anchor.enable_load_extension(True)
        anchor.load_extension(a.ext)
    base = proc()
    t_open = time.monotonic()
    conns = []
    for i in range(a.n):
        params = {}
        if a.ext:
            params["walrust_replica"] = a.url_template.replace("{i}", str(i))
            for s in a.setting or []:
                k, v = s.split("=", 1)
                params[k] = v
        c = open_db(os.path.join(a.dir, f"db{i}.db"), params)
        c.execute(SCHEMA)
        conns.append(c)
    res = {"n": a.n, "open_s": time.monotonic() - t_open, "proc_base": base}
    if a.ext:
        t0 = time.monotonic()
        on_all(conns, "SELECT walrust_sync(NULL, 600000)")
        res["first_sync_s"] = time.monotonic() - t0
    res["proc_before"] = proc()

    samples = []  # (t, worst lag_ms over the databases)
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            t = time.monotonic()
            worst = 0
            for c in conns:
                st = json.loads(c.execute("SELECT walrust_status()").fetchone()[0])
                worst = max(worst, st.get("lag_ms") or 0)
            samples.append((t, worst))

    sampler = threading.Thread(target=sample, daemon=True)
    total = int(a.tps * a.seconds)
    cpu0 = cpu_s()
    t_start = time.monotonic()
    if a.ext:
        sampler.start()
    for k in range(total):
        due = t_start + k / a.tps
        now = time.monotonic()
        if due > now:
            time.sleep(due - now)
        conns[k % a.n].execute("INSERT INTO t(ts, payload) VALUES (?, ?)", (time.time(), PAYLOAD))
    t_stop = time.monotonic()
    cpu1 = cpu_s()
    stop.set()
    if a.ext:
        sampler.join()
    res["proc_end"] = proc()
    res.update({"txns": total, "t_start": t_start, "t_stop": t_stop,
                "write_s": t_stop - t_start, "tps": total / (t_stop - t_start),
                "cpu_s": cpu1 - cpu0, "lag_samples": samples})
    if a.ext:
        t0 = time.monotonic()
        on_all(conns, "SELECT walrust_sync(NULL, 600000)")
        res["sync_all_s"] = time.monotonic() - t0
        res["statuses_last_error"] = sum(
            1 for c in conns
            if json.loads(c.execute("SELECT walrust_status()").fetchone()[0]).get("last_error"))
    res["cpu_total_s"] = cpu_s() - cpu0
    for c in conns:
        c.close()
    del anchor
    print(json.dumps(res), flush=True)


def cmd_chain(a):
    anchor = sqlite3.connect(":memory:")
    anchor.enable_load_extension(True)
    anchor.load_extension(a.ext)
    c = open_db(a.db, {"walrust_replica": a.url, "walrust_sync_interval": "0"})
    c.execute(SCHEMA)
    c.execute("SELECT walrust_sync(NULL, 600000)")
    t0 = time.monotonic()
    for k in range(a.commits):
        c.execute("INSERT INTO t(ts, payload) VALUES (?, ?)", (time.time(), PAYLOAD))
        c.execute("SELECT walrust_sync(NULL, 600000)")
    res = {"build_s": time.monotonic() - t0,
           "count": c.execute("SELECT count(*), sum(id) FROM t").fetchone()}
    c.close()
    del anchor
    print(json.dumps(res), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["init", "write", "chain"])
    p.add_argument("--dir")
    p.add_argument("--db")
    p.add_argument("--n", type=int, default=10)
    p.add_argument("--tps", type=float, default=1000)
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--ext")
    p.add_argument("--url-template")
    p.add_argument("--url")
    p.add_argument("--setting", action="append")
    p.add_argument("--commits", type=int, default=1000)
    a = p.parse_args()
    {"init": cmd_init, "write": cmd_write, "chain": cmd_chain}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
