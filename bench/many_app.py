"""The application side of the "Many databases" bench section: ONE Debian /usr/bin/python3
process holding N databases (its sqlite3 module loads the extension). bench/many.py runs it.

    many_app.py init  --dir D --n N                      N empty WAL databases D/db{i}.db
    many_app.py write --dir D --n N --tps T --seconds S [--ext E --url-template U --setting k=v]
    many_app.py chain --db P --ext E --url U --commits C   C commits, each followed by walrust_sync()
    many_app.py idle-create --dir D --n M [--ext E --url-template U]   M databases, one row each
    many_app.py idle-open   --dir D --n M [--ext E --url-template U]   reopen all M, one read each

`write --hung-url H` gives database 0 the replica H (an endpoint that never answers) with
walrust_close_timeout=--hung-close-ms: the first and final `walrust_sync()` wait on the other
databases only, database 0 gets `walrust_sync(NULL, --hung-sync-ms)` (expected to fail), and
after the writes its walrust_status() is polled until last_error is set (--hung-wait s at most).
The idle modes raise RLIMIT_NOFILE's soft limit to the hard one; `idle-open` reports seconds to
open all M, then after --idle-s s of rest the process's descriptors, RSS, threads and CPU.

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
import resource
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


def open_db(path, params, synchronous="NORMAL"):
    """NORMAL as WAL applications (and Litestream's docs) run; OFF only to create the idle
    row's databases quickly (each fsync costs tens of ms on a busy disk)."""
    c = sqlite3.connect(uri(path, params), uri=True, isolation_level=None, timeout=60,
                        check_same_thread=False)
    c.execute(f"PRAGMA synchronous={synchronous}")
    assert c.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    c.execute(f"PRAGMA synchronous={synchronous}")
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
    anchor = load_anchor(a.ext)
    base = proc()
    t_open = time.monotonic()
    conns = []
    for i in range(a.n):
        c = open_db(os.path.join(a.dir, f"db{i}.db"), replica_params(a, i))
        c.execute(SCHEMA)
        conns.append(c)
    res = {"n": a.n, "open_s": time.monotonic() - t_open, "proc_base": base}
    live = conns[1:] if a.hung_url else conns  # the databases whose replica answers
    if a.ext:
        t0 = time.monotonic()
        on_all(live, "SELECT walrust_sync(NULL, 600000)")
        res["first_sync_s"] = time.monotonic() - t0
        # Each commit gets the next TXID: with the TXID before the clock and every commit's
        # time, bench/many.py tells from a level-0 file's name which commits it holds.
        res["base_txids"] = [json.loads(c.execute("SELECT walrust_status()").fetchone()[0])["txid"]
                             for c in conns]
    commit_times = [[] for _ in conns]
    res["proc_before"] = proc()

    samples = []  # (t, worst lag_ms over the databases)
    stop = threading.Event()

    def sample():
        while not stop.wait(0.5):
            t = time.monotonic()
            worst = 0
            for c in live:
                st = json.loads(c.execute("SELECT walrust_status()").fetchone()[0])
                worst = max(worst, st.get("lag_ms") or 0)
            samples.append((t, worst))
            if a.hung_url:
                hung_samples.append(status_call(conns[0]))

    hung_samples = []  # database 0's status_call(): (seconds it took, lag_ms, last_error)
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
        commit_times[k % a.n].append(time.monotonic())
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
        on_all(live, "SELECT walrust_sync(NULL, 600000)")
        res["sync_all_s"] = time.monotonic() - t0
        res["commit_times"] = commit_times
        res["final_txids"] = [json.loads(c.execute("SELECT walrust_status()").fetchone()[0])["txid"]
                              for c in conns]
        res["statuses_last_error"] = sum(
            1 for c in live
            if json.loads(c.execute("SELECT walrust_status()").fetchone()[0]).get("last_error"))
    if a.hung_url:
        res["hung"] = hung_db(a, conns[0], t_open)
        res["hung"]["status_samples"] = hung_samples
    res["cpu_total_s"] = cpu_s() - cpu0
    t0 = time.monotonic()
    for c in live:
        c.close()
    res["close_s"] = time.monotonic() - t0
    if a.hung_url:
        t0 = time.monotonic()
        conns[0].close()
        res["hung"]["close_s"] = time.monotonic() - t0
    del anchor
    print(json.dumps(res), flush=True)


def replica_params(a, i):
    """URI parameters of database i: none for plain SQLite."""
    if not a.ext:
        return {}
    params = {"walrust_replica": a.url_template.replace("{i}", str(i))}
    for s in a.setting or []:
        k, v = s.split("=", 1)
        params[k] = v
    if i == 0 and a.hung_url:
        params.update(walrust_replica=a.hung_url, walrust_close_timeout=str(a.hung_close_ms))
    return params


def status_call(c):
    """(seconds one walrust_status() call took, its lag_ms, its last_error)."""
    t0 = time.monotonic()
    st = json.loads(c.execute("SELECT walrust_status()").fetchone()[0])
    return time.monotonic() - t0, st.get("lag_ms"), st.get("last_error")


def hung_db(a, c, t_open):
    """Database 0, whose replica never answers: its final walrust_sync() with a timeout, then
    its walrust_status() polled until last_error is set (a.hung_wait s at most)."""
    out = {}
    t0 = time.monotonic()
    try:
        out["sync_result"] = c.execute(f"SELECT walrust_sync(NULL, {a.hung_sync_ms})").fetchone()[0]
    except sqlite3.Error as e:
        out["sync_error"] = str(e)
    out["sync_s"] = time.monotonic() - t0
    deadline = time.monotonic() + a.hung_wait
    while True:
        took, lag, err = status_call(c)
        out["status_call_max_s"] = max(out.get("status_call_max_s", 0), took)
        if err or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    out.update({"last_error": err, "lag_ms": lag, "error_after_open_s": time.monotonic() - t_open})
    return out


def load_anchor(ext):
    """A connection that loads the extension (kept open so it stays loaded); None without."""
    if not ext:
        return None
    anchor = sqlite3.connect(":memory:")
    anchor.enable_load_extension(True)
    anchor.load_extension(ext)
    return anchor


def raise_nofile():
    """The soft RLIMIT_NOFILE up to the hard one (M databases need several descriptors each)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def cmd_idle_create(a):
    """M databases with one row each, synced to their replicas, 500 open at a time, closed.
    synchronous=OFF: this step only prepares the row; walrust's own writes are unchanged."""
    raise_nofile()
    anchor = load_anchor(a.ext)
    t0 = time.monotonic()
    for lo in range(0, a.n, 500):
        conns = []
        for i in range(lo, min(lo + 500, a.n)):
            c = open_db(os.path.join(a.dir, f"db{i}.db"), replica_params(a, i), "OFF")
            c.execute(SCHEMA)
            c.execute("INSERT INTO t(ts, payload) VALUES (?, ?)", (time.time(), PAYLOAD))
            conns.append(c)
        if a.ext:
            on_all(conns, "SELECT walrust_sync(NULL, 600000)")
        for c in conns:
            c.close()
    del anchor
    print(json.dumps({"n": a.n, "create_s": time.monotonic() - t0}), flush=True)


def cmd_idle_open(a):
    """Reopens all M at once, one read on each, and measures the process at rest."""
    res = {"n": a.n, "nofile_limit": raise_nofile()}
    anchor = load_anchor(a.ext)
    res["proc_base"] = proc()
    t0 = time.monotonic()
    conns = []
    for i in range(a.n):
        c = open_db(os.path.join(a.dir, f"db{i}.db"), replica_params(a, i))
        c.execute("SELECT count(*) FROM t").fetchone()
        conns.append(c)
    res["open_s"] = time.monotonic() - t0
    res["proc_open"] = proc()
    cpu0 = cpu_s()
    time.sleep(a.idle_s)
    res["idle_s"], res["idle_cpu_s"] = a.idle_s, cpu_s() - cpu0
    res["proc_idle"] = proc()
    if a.ext:
        sts = [json.loads(c.execute("SELECT walrust_status()").fetchone()[0]) for c in conns]
        res["last_errors"] = sum(1 for st in sts if st.get("last_error"))
        res["pending_txns"] = sum(st.get("pending_txns") or 0 for st in sts)
    t0 = time.monotonic()
    for c in conns:
        c.close()
    res["close_s"] = time.monotonic() - t0
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
    p.add_argument("mode", choices=["init", "write", "chain", "idle-create", "idle-open"])
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
    p.add_argument("--hung-url")
    p.add_argument("--hung-close-ms", type=int, default=500)
    p.add_argument("--hung-sync-ms", type=int, default=2000)
    p.add_argument("--hung-wait", type=float, default=45)
    p.add_argument("--idle-s", type=float, default=3)
    a = p.parse_args()
    {"init": cmd_init, "write": cmd_write, "chain": cmd_chain, "idle-create": cmd_idle_create,
     "idle-open": cmd_idle_open}[a.mode](a)


if __name__ == "__main__":
    sys.exit(main())
