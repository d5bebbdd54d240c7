"""The application side of the benchmark: one process, Debian's /usr/bin/python3 (its sqlite3
module can load extensions), plain SQLite or with walrust loaded. bench/run.py starts one per
measurement and reads the JSON it prints last.

    workload.py init    --db P                       an empty WAL database with the table
    workload.py write   --db P --kind small|bulk --sync NORMAL|FULL --seconds S [options]
    workload.py lag     --db P --seconds S --every-ms 10 [options]
    workload.py mkdb    --db P --mb N                a database of N MB (page size 4096)
    workload.py apply   --db P --txns N [options]    N paced update transactions, then sync
    workload.py restore --ext E --url U --out O      walrust_restore(), timed inside
    workload.py check   --db P                       integrity_check and a checksum of table t
    workload.py probe   --ext E --url U              can walrust replicate to this URL?

Options shared by the writing modes: --ext EXT (load walrust; without it, plain SQLite),
--replica URL, --setting name=value (URI parameters, e.g. walrust_sync_interval=0),
--nockpt (wal_autocheckpoint=0), --idle-thread (plain SQLite in a
multi-threaded process).
"""

import argparse
import json
import os
import random
import sqlite3
import sys
import threading
import time
import urllib.parse

ROWS_PER_BULK_TXN = 1000
SCHEMA = "CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, ts REAL, payload TEXT)"
INSERT = "INSERT INTO t(ts, payload) VALUES (?, ?)"


def payloads(n=4096, seed=1):
    """~100-byte rows that compress about as well as real text: random words."""
    rnd = random.Random(seed)
    words = ["".join(rnd.choices("abcdefghijklmnopqrstuvwxyz", k=rnd.randint(2, 9))) for _ in range(500)]
    out = []
    for _ in range(n):
        s = ""
        while len(s) < 100:
            s += rnd.choice(words) + " "
        out.append(s[:100])
    return out


def uri(path, params):
    u = "file:" + urllib.parse.quote(os.path.abspath(path), safe="/")
    if params:
        u += "?" + "&".join(f"{k}={urllib.parse.quote(str(v), safe='/:')}" for k, v in params.items())
    return u


def load_ext(ext):
    c = sqlite3.connect(":memory:")
    c.enable_load_extension(True)
    c.load_extension(ext)
    return c  # keep a reference: the anchor connection


def open_db(a, check_same_thread=True):
    params = {}
    if a.ext and a.replica:
        params["walrust_replica"] = a.replica
    for s in a.setting or []:
        k, v = s.split("=", 1)
        params[k] = v
    conn = sqlite3.connect(uri(a.db, params), uri=True, isolation_level=None, timeout=60,
                           check_same_thread=check_same_thread)
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    assert mode == "wal", mode
    if getattr(a, "sync", None):
        conn.execute(f"PRAGMA synchronous={a.sync}")
    if a.nockpt:
        conn.execute("PRAGMA wal_autocheckpoint=0")
    return conn


def status(conn):
    return json.loads(conn.execute("SELECT walrust_status()").fetchone()[0])


def proc_status():
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS"):
                out[k] = int(v.split()[0])  # kB
    return out


def wal_frames(db, page_size=4096):
    try:
        size = os.path.getsize(db + "-wal")
    except FileNotFoundError:
        return 0
    return max(0, (size - 32) // (page_size + 24))


def thread_cpu():
    """CPU seconds (user+system) per thread name of this process, from /proc/self/task."""
    tck = os.sysconf("SC_CLK_TCK")
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                s = f.read()
        except FileNotFoundError:
            continue
        name = s[s.index("(") + 1 : s.rindex(")")]
        fields = s[s.rindex(")") + 2 :].split()
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tck
    return out


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def cmd_init(a):
    conn = sqlite3.connect(a.db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(SCHEMA)
    conn.close()
    emit({"ok": True})


def cmd_write(a):
    if a.idle_thread:
        # Plain SQLite in a process that has a second thread, as walrust's process has (and
        # most servers do): glibc then makes every mutex SQLite takes an atomic operation,
        # which it skips in a single-threaded process.
        threading.Thread(target=threading.Event().wait, daemon=True).start()
    anchor = load_ext(a.ext) if a.ext else None
    conn = open_db(a)
    conn.execute(SCHEMA)
    if a.ext and a.replica:
        conn.execute("SELECT walrust_sync(NULL, 600000)")  # the first snapshot, before the clock
    pl = payloads()
    npl = len(pl)
    rss0 = proc_status()
    cpu0 = thread_cpu()
    n = rows = 0
    t_start = time.monotonic()
    deadline = time.perf_counter() + a.seconds
    # slow commits: how many took over 10 ms / 100 ms, and the slowest (the loop only
    # compares, so the bookkeeping costs every variant the same few nanoseconds)
    slow10 = slow100 = 0
    worst = 0.0
    pc = time.perf_counter
    if a.kind == "small":
        ex = conn.execute
        now = time.time
        t = pc()
        while t < deadline:
            ex(INSERT, (now(), pl[n % npl]))
            n += 1
            t1 = pc()
            if t1 - t > 0.01:
                slow10 += 1
                slow100 += t1 - t > 0.1
                worst = max(worst, t1 - t)
            t = t1
        rows = n
    else:
        t = pc()
        while t < deadline:
            base = n * ROWS_PER_BULK_TXN
            ts = time.time()
            batch = [(ts, pl[(base + i) % npl]) for i in range(ROWS_PER_BULK_TXN)]
            conn.execute("BEGIN")
            conn.executemany(INSERT, batch)
            t0 = pc()
            conn.execute("COMMIT")
            n += 1
            t1 = pc()
            if t1 - t0 > 0.01:  # the COMMIT alone: a bulk transaction takes ms to build
                slow10 += 1
                slow100 += t1 - t0 > 0.1
                worst = max(worst, t1 - t0)
            t = t1
        rows = n * ROWS_PER_BULK_TXN
    t_end = time.monotonic()
    cpu1 = thread_cpu()
    elapsed = t_end - t_start
    cpu = {k: v - cpu0.get(k, 0.0) for k, v in cpu1.items()}
    res = {"cpu_s": cpu, "cpu_us_per_txn": sum(cpu.values()) / max(n, 1) * 1e6,
           "txns": n, "rows": rows, "seconds": elapsed, "tps": n / elapsed,
           "t_start": t_start, "t_end": t_end, "wal_frames": wal_frames(a.db),
           "rss_before_kb": rss0.get("VmRSS"), "slow_10ms": slow10, "slow_100ms": slow100,
           "worst_commit_s": worst}
    if a.ext and a.replica:
        t0 = time.monotonic()
        conn.execute("SELECT walrust_sync(NULL, 600000)")
        res["drain_seconds"] = time.monotonic() - t0
        cpu2 = thread_cpu()
        res["cpu_s_drained"] = {k: v - cpu0.get(k, 0.0) for k, v in cpu2.items()}
        res["status"] = status(conn)
    res.update(proc_status())
    conn.close()
    del anchor
    emit(res)


def cmd_lag(a):
    """A row every --every-ms, on an absolute schedule. With walrust, a second connection
    polls walrust_status() every millisecond and records when each TXID became uploaded."""
    anchor = load_ext(a.ext) if a.ext else None
    conn = open_db(a)
    conn.execute(SCHEMA)
    walrust = bool(a.ext and a.replica)
    uploads = []
    stop = threading.Event()
    if walrust:
        conn.execute("SELECT walrust_sync(NULL, 600000)")
        poll_conn = open_db(a, check_same_thread=False)

        def poll():
            last = -1
            while not stop.is_set():
                u = status(poll_conn)["uploaded_txid"]
                if u != last:
                    uploads.append((u, time.monotonic()))
                    last = u
                time.sleep(0.001)

        th = threading.Thread(target=poll, daemon=True)
        th.start()
    emit({"ready": True, "t": time.monotonic()})  # run.py starts counting objects here
    pl = payloads()
    commits = []  # (row id, txid or None, t_commit)
    every = a.every_ms / 1000.0
    t0 = time.monotonic()
    i = 0
    while True:
        due = t0 + i * every
        if due - t0 > a.seconds:
            break
        d = due - time.monotonic()
        if d > 0:
            time.sleep(d)
        cur = conn.execute(INSERT, (time.time(), pl[i % len(pl)]))
        t = time.monotonic()
        txid = status(conn)["txid"] if walrust else None
        commits.append((cur.lastrowid, txid, t))
        i += 1
    t_end = time.monotonic()
    res = {"commits": commits, "t_start": t0, "t_end": t_end, "pace_ms": a.every_ms}
    if walrust:
        conn.execute("SELECT walrust_sync(NULL, 600000)")
        time.sleep(0.02)
        stop.set()
        th.join()
        res["uploads"] = uploads
        res["status"] = status(conn)
        poll_conn.close()
    res.update(proc_status())
    conn.close()
    del anchor
    emit(res)


def cmd_mkdb(a):
    """A database of about --mb MB in rollback mode, page size 4096, then switched to WAL.
    Rows: an id, a random 64-bit h, and ~200 bytes of half random, half repetitive text."""
    conn = sqlite3.connect(a.db, isolation_level=None)
    conn.execute("PRAGMA page_size=4096")
    conn.execute("PRAGMA journal_mode=OFF")
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, ts REAL, payload TEXT, h INTEGER)")
    target = int(a.mb * 1e6)
    chunk = 2000
    n = 0
    while True:
        conn.execute("BEGIN")
        conn.execute(
            "WITH RECURSIVE c(x) AS (SELECT ?1 UNION ALL SELECT x+1 FROM c WHERE x < ?2) "
            "INSERT INTO t(id, ts, payload, h) SELECT x, x * 0.001, "
            "hex(randomblob(40)) || ' order ' || x || ' status shipped customer ' || (x % 9973) "
            "|| ' note the quick brown fox jumps over the lazy dog', random() FROM c",
            (n + 1, n + chunk),
        )
        conn.execute("COMMIT")
        n += chunk
        size = conn.execute("PRAGMA page_count").fetchone()[0] * 4096
        if size >= target:
            break
        # the rest in a few big transactions, sized from what a row took so far
        chunk = max(2000, min(200000, int((target - size) / (size / n)) + 100))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.close()
    emit({"rows": n, "bytes": os.path.getsize(a.db)})


def cmd_apply(a):
    """--txns transactions, --every-ms apart, each updating 100 random rows and inserting 100,
    so that a restore applies a snapshot plus incremental files. With walrust: then
    walrust_sync(). Ends with a TRUNCATE checkpoint so the file is the whole database."""
    anchor = load_ext(a.ext) if a.ext else None
    conn = open_db(a)
    if a.ext and a.replica:
        t0 = time.monotonic()
        conn.execute("SELECT walrust_sync(NULL, 1800000)")  # first: the full snapshot
        snapshot_s = time.monotonic() - t0
    rnd = random.Random(7)
    maxid = conn.execute("SELECT max(id) FROM t").fetchone()[0] or 0
    for _ in range(a.txns):
        conn.execute("BEGIN")
        for _ in range(100):
            conn.execute("UPDATE t SET h = ? WHERE id = ?", (rnd.getrandbits(62), rnd.randint(1, maxid)))
        for _ in range(100):
            maxid += 1
            conn.execute("INSERT INTO t(id, ts, payload, h) VALUES (?, ?, ?, ?)",
                         (maxid, time.time(), "appended row %d" % maxid, rnd.getrandbits(62)))
        conn.execute("COMMIT")
        time.sleep(a.every_ms / 1000.0)
    res = {}
    if a.ext and a.replica:
        t0 = time.monotonic()
        res["txid"] = conn.execute("SELECT walrust_sync(NULL, 1800000)").fetchone()[0]
        res["sync_seconds"] = time.monotonic() - t0
        res["snapshot_seconds"] = snapshot_s
    if not a.keep_wal:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    res["checksum"] = checksum(conn)
    conn.close()
    del anchor
    emit(res)


def checksum(conn):
    return list(conn.execute(
        "SELECT count(*), sum(id), sum(h % 1000003), sum(length(payload)) FROM t").fetchone())


def cmd_check(a):
    conn = sqlite3.connect(uri(a.db, {"vfs": "unix"}), uri=True, isolation_level=None)
    t0 = time.monotonic()
    ic = [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    res = {"integrity": ic[:5], "checksum": checksum(conn), "check_seconds": time.monotonic() - t0}
    conn.close()
    emit(res)


def cmd_restore(a):
    anchor = load_ext(a.ext)
    conn = sqlite3.connect(":memory:", isolation_level=None)
    t0 = time.monotonic()
    txid = conn.execute("SELECT walrust_restore(?, ?)", (a.url, a.out)).fetchone()[0]
    emit({"txid": txid, "seconds": time.monotonic() - t0, **proc_status()})
    del anchor


def cmd_probe(a):
    """Opens a tiny database with --url as its replica and waits (10 s at most) for it to be
    uploaded. Prints {"ok": true} or the error."""
    anchor = load_ext(a.ext)
    try:
        a.replica, a.setting, a.nockpt, a.sync = a.url, ["walrust_sync_interval=0"], False, None
        conn = open_db(a)
        conn.execute(SCHEMA)
        conn.execute("INSERT INTO t(ts, payload) VALUES (1, 'probe')")
        conn.execute("SELECT walrust_sync(NULL, 10000)")
        st = status(conn)
        emit({"ok": st.get("last_error") is None, "status": st})
    except sqlite3.Error as e:
        emit({"ok": False, "error": str(e)})
    del anchor


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode")
    p.add_argument("--db")
    p.add_argument("--ext")
    p.add_argument("--replica")
    p.add_argument("--setting", action="append")
    p.add_argument("--nockpt", action="store_true")
    p.add_argument("--idle-thread", action="store_true")
    p.add_argument("--kind", default="small")
    p.add_argument("--sync", default=None)
    p.add_argument("--seconds", type=float, default=5)
    p.add_argument("--every-ms", type=float, default=10)
    p.add_argument("--mb", type=float)
    p.add_argument("--txns", type=int, default=20)
    p.add_argument("--keep-wal", action="store_true")
    p.add_argument("--url")
    p.add_argument("--out")
    a = p.parse_args()
    {"init": cmd_init, "write": cmd_write, "lag": cmd_lag, "mkdb": cmd_mkdb, "apply": cmd_apply,
     "check": cmd_check, "restore": cmd_restore, "probe": cmd_probe}[a.mode](a)


if __name__ == "__main__":
    main()
