"""The "Many databases" section of the bench (`bench/run.py --only many`), in four rows
(MANY_ROWS, default "grid,restore,hung,idle", picks which run):

- grid: N databases in one application process, replicating to S3 (s3s-fs) behind
  bench/latency_proxy.py (30 ms per request), walrust against plain SQLite plus one
  `litestream replicate` for all N;
- restore: a replica whose newest point needs 1,000 level-0 files, walrust against
  `litestream restore`;
- hung: the grid's walrust cell at N = MANY_HUNG_N (100), but database 0 replicates to an
  endpoint that accepts connections and never answers (`Silent`): the other databases' lag and
  upload-all, and database 0's walrust_sync() timeout, walrust_status() and close;
- idle: MANY_IDLE_N (2,000) databases that already replicate (to a local directory) reopened
  by a second process, one read each: open time, descriptors, RSS, threads and idle CPU per
  database against plain SQLite, and whether the restart uploaded a snapshot again. Not 10,000:
  SQLite alone needs 3 descriptors per open WAL database and RLIMIT_NOFILE's hard limit here is
  20,000; render() projects to 10,000 instead.

MANY_KINDS ("sqlite,walrust,litestream") picks the grid's columns. Sizes: MANY_DBS_N ("10,100";
MANY_DBS_FULL=1 adds 1000), MANY_DBS_SECONDS (10),
MANY_DBS_TPS (1000), MANY_DBS_DELAY_MS (30), MANY_DBS_CHAIN (1000 files for the restore row),
MANY_HUNG_N (100), MANY_HUNG_WAIT (45 s at most for database 0's last_error, which the S3
client's 30 s inactivity timeout sets), MANY_IDLE_N (2000); BENCH_QUICK=1 makes it N = 10 for
3 s, a 100-file chain, a hung row of 10 and 200 idle databases. About 10 minutes by default
(the hung row about 45 s, most of it waiting for that timeout; the idle row about a minute).

Worst lag, for both replicators alike: every 0.1 s while the writes run (after the first 2 s),
the longest time any database's replica has gone without a new level-0 file (watched in the
s3s-fs data directory). Every database commits at least every N ms, so this is the age of its
oldest unreplicated commit, give or take N ms and one request. walrust's own walrust_status()
lag_ms (the worst over the databases, sampled every 0.5 s) is reported beside it.
"""

import json
import os
import re
import resource
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import fswatch

BENCH = Path(__file__).resolve().parent
APP = str(BENCH / "many_app.py")
PY = "/usr/bin/python3"
L0 = re.compile(r"^(?:.*/)?db(\d+)/(?:ltx/0/|0000/).*\.ltx$")
ANY = re.compile(r"^(?:.*/)?db(\d+)/.*\.ltx$")
ROWS = ("grid", "restore", "hung", "idle")


def cfg():
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    ns = os.environ.get("MANY_DBS_N", "10" if quick else "10,100")
    n = [int(x) for x in ns.split(",") if x]
    if os.environ.get("MANY_DBS_FULL", "") not in ("", "0") and 1000 not in n:
        n.append(1000)
    return {"n": n,
            "seconds": float(os.environ.get("MANY_DBS_SECONDS", "3" if quick else "10")),
            "tps": float(os.environ.get("MANY_DBS_TPS", "1000")),
            "delay_ms": float(os.environ.get("MANY_DBS_DELAY_MS", "30")),
            "chain": int(os.environ.get("MANY_DBS_CHAIN", "100" if quick else "1000")),
            "interval_ms": 1000,
            "rows": [r for r in os.environ.get("MANY_ROWS", ",".join(ROWS)).split(",") if r],
            "hung_n": int(os.environ.get("MANY_HUNG_N", "10" if quick else "100")),
            "hung_wait_s": float(os.environ.get("MANY_HUNG_WAIT", "45")),
            "hung_close_ms": 500,
            "hung_sync_ms": 2000,
            "idle_n": int(os.environ.get("MANY_IDLE_N", "200" if quick else "2000")),
            "idle_s": 3.0,
            "nofile_hard": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}


class Proxy:
    def __init__(self, upstream, delay_ms):
        self.proc = subprocess.Popen(
            [PY, str(BENCH / "latency_proxy.py"), "--upstream", upstream,
             "--delay-ms", str(delay_ms)], stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.port = int(self.proc.stdout.readline().split()[1])
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class Silent:
    """An S3 endpoint that never answers: accepts every TCP connection and holds it open,
    reading and writing nothing (the hung-replica row). Runs on a thread of the bench."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.held, self.done = [], threading.Event()
        self.endpoint = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.done.is_set():
            try:
                self.held.append(self.sock.accept()[0])
            except socket.timeout:
                continue
            except OSError:
                break

    def stop(self):
        self.done.set()
        self.thread.join()
        for s in self.held + [self.sock]:
            s.close()


def status_of(pid):
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmHWM", "VmRSS", "Threads"):
                out[k] = int(v.split()[0])
    except FileNotFoundError:
        pass
    return out


def worst_lag_samples(events, n, t_start, t_stop, step=0.1, warmup=2.0, first=0):
    """Per sample time: max over databases first..n-1 of the time since its last level-0
    file."""
    arrivals = [[] for _ in range(n)]
    for t, rel, _ in events:
        m = L0.match(rel)
        if m and int(m.group(1)) < n:
            arrivals[int(m.group(1))].append(t)
    last = [t_start] * n
    idx = [0] * n
    out = []
    t = t_start + warmup
    while t <= t_stop:
        worst = 0.0
        for i in range(first, n):
            a = arrivals[i]
            while idx[i] < len(a) and a[idx[i]] <= t:
                last[i] = max(last[i], a[idx[i]])
                idx[i] += 1
            worst = max(worst, t - last[i])
        out.append(worst)
        t += step
    return out


L0_RANGE = re.compile(r"^(?:.*/)?db(\d+)/(?:ltx/0/|0000/)([0-9a-f]{16})-([0-9a-f]{16})\.ltx$")


def exact_lag_samples(events, res, step=0.1, warmup=2.0, first=0):
    """walrust only: per sample time, max over databases of the age of its oldest commit that
    no level-0 file which had arrived held, by TXID (every commit gets the next TXID after
    `base_txids`; a file's name says the TXIDs it holds). The file-based `worst_lag_samples`
    counts from the last file instead, which overstates lag by up to a database's time between
    commits (a second at N = 1,000). None when the TXIDs do not add up (something else took
    a TXID: a snapshot marker), so the numbering cannot be trusted."""
    bases, finals, times = res.get("base_txids"), res.get("final_txids"), res.get("commit_times")
    if not (bases and finals and times):
        return None
    n = len(bases)
    if any(f - b != len(ts) for b, f, ts in zip(bases, finals, times)):
        return None
    arrivals = [[] for _ in range(n)]
    for t, rel, _ in events:
        m = L0_RANGE.match(rel)
        if m and int(m.group(1)) < n:
            arrivals[int(m.group(1))].append((t, int(m.group(3), 16)))
    for a in arrivals:
        a.sort()
    covered = list(bases)
    idx = [0] * n
    out = []
    t = res["t_start"] + warmup
    while t <= res["t_stop"]:
        worst = 0.0
        for i in range(first, n):
            a = arrivals[i]
            while idx[i] < len(a) and a[idx[i]][0] <= t:
                covered[i] = max(covered[i], a[idx[i]][1])
                idx[i] += 1
            j = covered[i] - bases[i]  # commits held by the replica
            if j < len(times[i]) and times[i][j] <= t:
                worst = max(worst, t - times[i][j])
        out.append(worst)
        t += step
    return out


def last_l0(events, after, gap=None):
    """When the replica had everything committed before `after`: the last level-0 file after
    it. With `gap` (for Litestream, which also writes a level-0 file after its periodic
    checkpoint, with no new transaction in it), per database only the files that follow
    `after` in one run, each within `gap` s of the one before; the latest over the databases."""
    if gap is None:
        ts = [t for t, rel, _ in events if L0.match(rel) and t >= after]
        return max(ts) if ts else None
    per_db = {}
    for t, rel, _ in events:
        m = L0.match(rel)
        if m and t >= after:
            per_db.setdefault(m.group(1), []).append(t)
    done = None
    for ts in per_db.values():
        end = after
        for t in sorted(ts):
            if t - end > gap:
                break
            end = t
        done = end if done is None else max(done, end)
    return done


def one_cell(R, ext, kind, n, c, proxy, root, hung_url=None):
    """One grid cell; with `hung_url` (walrust only), database 0 replicates there instead."""
    d = R.fresh(root / f"{kind}{'-hung' if hung_url else ''}-{n}")
    prefix = f"many/{kind}-{n}-{next(R.SEQ)}"
    objdir = R.S3["data"] / prefix
    objdir.mkdir(parents=True, exist_ok=True)
    url_t = (f"s3://{R.S3['bucket']}/{prefix}/db{{i}}?endpoint={proxy.endpoint}"
             "&region=us-east-1&force_path_style=true")
    args = [PY, APP, "write", "--dir", d, "--n", n, "--tps", c["tps"], "--seconds", c["seconds"]]
    ls = None
    R.run_json([PY, APP, "init", "--dir", str(d), "--n", str(n)], env=R.app_env())
    watcher = fswatch.Watcher(objdir).start()
    if kind == "walrust":
        args += ["--ext", ext, "--url-template", url_t,
                 "--setting", f"walrust_sync_interval={c['interval_ms']}"]
        if hung_url:
            args += ["--hung-url", hung_url, "--hung-wait", c["hung_wait_s"],
                     "--hung-close-ms", c["hung_close_ms"], "--hung-sync-ms", c["hung_sync_ms"]]
    elif kind == "litestream":
        dbs = [{"path": str(d / f"db{i}.db"),
                "replica": {"type": "s3", "bucket": R.S3["bucket"], "path": f"{prefix}/db{i}",
                            "endpoint": proxy.endpoint, "region": "us-east-1",
                            "force-path-style": True, "sync-interval": "1s"}}
               for i in range(n)]
        (d / "litestream.yml").write_text(json.dumps({"dbs": dbs}))
        ls = R.Litestream.__new__(R.Litestream)
        ls.workdir, ls.config, ls.proc = d, d / "litestream.yml", None
        ls.start()
        # every database's first snapshot before the clock
        R.wait_for(lambda: len({m.group(1) for m in (ANY.match(e[1]) for e in watcher.events)
                                if m}) >= n, 300, 0.1)
        time.sleep(1)
    ls_cpu0 = R.proc_cpu_s(ls.proc.pid) if ls else 0
    res = R.run_json([str(a) for a in args], env=R.app_env(), timeout=3600)
    ls_cpu1 = R.proc_cpu_s(ls.proc.pid) if ls else 0
    if kind != "sqlite":
        R.wait_settled(watcher, quiet=3.0, timeout=300)
        end = last_l0(watcher.events, res["t_stop"], 2.5 if kind == "litestream" else None)
        res["upload_all_s"] = (end - res["t_stop"]) if end else 0.0
        res["worst_lag_s"] = worst_lag_samples(watcher.events, n, res["t_start"], res["t_stop"],
                                               first=1 if hung_url else 0)
        res["exact_lag_s"] = exact_lag_samples(watcher.events, res, first=1 if hung_url else 0)
        res.pop("commit_times", None)  # 10,000 numbers per cell: results.json keeps the lag
    if ls:
        res["litestream"] = status_of(ls.proc.pid)
        res["litestream_cpu_s"] = ls_cpu1 - ls_cpu0
        ls.stop()
    watcher.stop()
    shutil.rmtree(d, ignore_errors=True)
    return res


def restore_row(R, ext, cli, c, proxy, root):
    """A replica whose newest point needs c['chain'] level-0 files, restored through the proxy."""
    out = {"files": c["chain"]}
    d = R.fresh(root / "restore")
    # walrust: built straight against s3s-fs (no delay), restored through the proxy
    prefix = f"many/chain-{next(R.SEQ)}"
    build_url = R.s3_url(prefix)
    built = R.run_json([PY, APP, "chain", "--db", str(d / "src.db"), "--ext", ext, "--url",
                        build_url, "--commits", str(c["chain"])], env=R.app_env(), timeout=3600)
    out["walrust_build_s"] = built["build_s"]
    want = built["count"]
    objs = list((R.S3["data"] / prefix).rglob("*.ltx"))
    out["walrust_objects"] = len(objs)
    url = (f"s3://{R.S3['bucket']}/{prefix}?endpoint={proxy.endpoint}"
           "&region=us-east-1&force_path_style=true")
    o = d / "w.db"
    t0 = time.monotonic()
    r = subprocess.run([cli, "restore", url, "-o", str(o)], capture_output=True, text=True,
                       env=R.app_env(), timeout=3600)
    out["walrust_s"] = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"walrust restore: {r.stderr[-800:]}")
    out["walrust_ok"] = check(o) == want

    # litestream: one commit per sync (monitor- and sync-interval 10ms, commits 20 ms apart), built in < 30 s
    # so that its 30 s level-1 compaction has not run: the newest point is all level 0 files
    ldir = R.fresh(d / "ls")
    R.run_json([PY, APP, "init", "--dir", str(ldir), "--n", "1"], env=R.app_env())
    lprefix = f"many/lschain-{next(R.SEQ)}"
    rep = {"type": "s3", "bucket": R.S3["bucket"], "path": lprefix, "endpoint": R.S3["endpoint"],
           "region": "us-east-1", "force-path-style": True, "sync-interval": "10ms"}
    (ldir / "litestream.yml").write_text(json.dumps(
        {"dbs": [{"path": str(ldir / "db0.db"), "monitor-interval": "10ms", "replica": rep}]}))
    ls = R.Litestream.__new__(R.Litestream)
    ls.workdir, ls.config, ls.proc = ldir, ldir / "litestream.yml", None
    ls.start()
    time.sleep(1.5)
    import sqlite3
    conn = sqlite3.connect(str(ldir / "db0.db"), isolation_level=None)
    conn.execute("PRAGMA synchronous=NORMAL")
    commits = min(c["chain"], 1000)
    t0 = time.monotonic()
    for k in range(commits):
        conn.execute("INSERT INTO t(ts, payload) VALUES (?, ?)", (time.time(), "x" * 100))
        due = t0 + (k + 1) * 0.02
        time.sleep(max(0.0, due - time.monotonic()))
    lwant = list(conn.execute("SELECT count(*), sum(id) FROM t").fetchone())
    conn.close()
    time.sleep(1.0)
    ls.stop()
    out["litestream_build_s"] = time.monotonic() - t0
    out["litestream_l0_objects"] = len(list((R.S3["data"] / lprefix).glob("0000/*.ltx")))
    out["litestream_objects"] = len(list((R.S3["data"] / lprefix).rglob("*.ltx")))
    rep["endpoint"] = proxy.endpoint
    (ldir / "litestream.yml").write_text(json.dumps(
        {"dbs": [{"path": str(ldir / "db0.db"), "replica": rep}]}))
    lo = d / "l.db"
    t0 = time.monotonic()
    r = subprocess.run([R.litestream_bin(), "restore", "-config", str(ldir / "litestream.yml"),
                        "-o", str(lo), str(ldir / "db0.db")], capture_output=True, text=True,
                       env=R.litestream_env(), timeout=3600)
    out["litestream_s"] = time.monotonic() - t0
    if r.returncode != 0:
        raise RuntimeError(f"litestream restore: {r.stderr[-800:]}")
    out["litestream_ok"] = check(lo) == lwant
    shutil.rmtree(d, ignore_errors=True)
    return out


def check(path):
    import sqlite3
    c = sqlite3.connect(str(path))
    try:
        return list(c.execute("SELECT count(*), sum(id) FROM t").fetchone())
    finally:
        c.close()


def hung_row(R, ext, c, proxy, root):
    """c['hung_n'] databases as in the grid's walrust cell, but database 0 replicates to an
    endpoint that accepts connections and never answers."""
    silent = Silent()
    try:
        url = (f"s3://{R.S3['bucket']}/many/hung-{next(R.SEQ)}/db0?endpoint={silent.endpoint}"
               "&region=us-east-1&force_path_style=true")
        res = one_cell(R, ext, "walrust", c["hung_n"], c, proxy, root, hung_url=url)
        res["hung"]["connections_held"] = len(silent.held)
    finally:
        silent.stop()
    return res


def ltx_counts(replica):
    """(snapshot files, all LTX files) under a local-directory replica root of many databases."""
    return (len(list(replica.glob("db*/ltx/9/*.ltx"))), len(list(replica.glob("db*/ltx/*/*.ltx"))))


def idle_row(R, ext, c, root):
    """c['idle_n'] databases that already replicate (to a local directory), reopened at once by
    a second process, one read each, against the same with plain SQLite."""
    m = c["idle_n"]
    out = {"n": m}
    for kind in ("sqlite", "walrust"):
        d = R.fresh(root / f"idle-{kind}")
        args = ["--dir", str(d), "--n", str(m), "--idle-s", str(c["idle_s"])]
        if kind == "walrust":
            rep = R.fresh(root / "idle-replica")
            args += ["--ext", ext, "--url-template", f"file://{rep}/db{{i}}"]
        out[f"{kind}_create"] = R.run_json([PY, APP, "idle-create", *args], env=R.app_env())
        if kind == "walrust":
            out["snapshots_before"], out["ltx_before"] = ltx_counts(rep)
        out[kind] = R.run_json([PY, APP, "idle-open", *args], env=R.app_env())
        if kind == "walrust":
            out["snapshots_after"], out["ltx_after"] = ltx_counts(rep)
            shutil.rmtree(rep, ignore_errors=True)
        shutil.rmtree(d, ignore_errors=True)
    return out


def grid_cells(R, ext, c, proxy, root, cells):
    # MANY_KINDS=walrust (say) runs one column alone, for a quick look at one change.
    kinds = os.environ.get("MANY_KINDS", "sqlite,walrust,litestream").split(",")
    for n in c["n"]:
        for kind in [k for k in ("sqlite", "walrust", "litestream") if k in kinds]:
            R.log(f"many: N={n} {kind}: {c['tps']:g} tps for {c['seconds']:g} s "
                  f"through {c['delay_ms']:g} ms")
            res = one_cell(R, ext, kind, n, c, proxy, root)
            cells[f"{kind}_{n}"] = res
            log_cell(R, f"N={n} {kind}", res)


def log_cell(R, what, res):
    lags = res.get("worst_lag_s") or [0]
    R.log(f"many: {what}: {res['tps']:.0f} tps, worst lag p50 "
          f"{R.percentile(lags, 50):.2f} s max {max(lags):.2f} s, upload-all "
          f"{res.get('upload_all_s', 0):.2f} s, cpu {res['cpu_s']:.2f} s")


def section_many(R, ext, cli, results):
    if not R.S3.get("available"):
        results["many"] = {"skipped": R.S3.get("why", "S3 unavailable")}
        R.log("many: skipped:", results["many"]["skipped"])
        return
    c = cfg()
    root = R.WORK / "many"
    proxy = Proxy(R.S3["endpoint"].split("//", 1)[1], c["delay_ms"])
    cells = {}
    try:
        if "grid" in c["rows"]:
            grid_cells(R, ext, c, proxy, root, cells)
        if "restore" in c["rows"]:
            R.log(f"many: restore of a {c['chain']}-file chain through the proxy")
            cells["restore"] = restore_row(R, ext, cli, c, proxy, root)
            R.log("many: restore:", json.dumps(cells["restore"]))
        if "hung" in c["rows"]:
            R.log(f"many: N={c['hung_n']} walrust, database 0's replica never answers")
            h = cells[f"hung_{c['hung_n']}"] = hung_row(R, ext, c, proxy, root)
            log_cell(R, f"N={c['hung_n']} with db0 hung", h)
            R.log("many: hung db0:", json.dumps({k: v for k, v in h["hung"].items()
                                                 if k != "status_samples"}))
        if "idle" in c["rows"]:
            R.log(f"many: {c['idle_n']} idle databases reopened (local-directory replica)")
            cells["idle"] = idle_row(R, ext, c, root)
            R.log("many: idle:", json.dumps(cells["idle"]))
    finally:
        proxy.stop()
    results["many"] = {"config": c, "cells": cells,
                       "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def pct(xs, q):
    xs = sorted(xs)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    f = int(k)
    cc = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[cc] - xs[f]) * (k - f)


def render(m):
    """Markdown lines for BENCHMARKS.md's "Many databases" section (bench/report.py)."""
    if not m or "cells" not in m:
        return ["## Many databases", "", f"Not measured: {(m or {}).get('skipped', 'not run')}.",
                ""]
    c, cells = m["config"], m["cells"]
    L = ["## Many databases", "",
         f"Measured {m['date']} with `.venv/bin/python bench/run.py --only many` (part of "
         "`make bench`; `MANY_DBS_FULL=1` adds N = 1,000; `MANY_ROWS` picks among the grid, "
         "the restore, the hung-replica and the idle rows). One Debian /usr/bin/python3 process "
         f"holds N databases and commits {c['tps']:g} one-row transactions per second in total, "
         f"round-robin, for {c['seconds']:g} s, replicating to s3s-fs behind "
         f"bench/latency_proxy.py ({c['delay_ms']:g} ms added to every request); walrust with "
         f"walrust_sync_interval={c['interval_ms']}, Litestream 0.5.17 as one `litestream "
         "replicate` for all N (sync-interval 1s) beside plain SQLite. Worst lag: every 0.1 s, "
         "the longest any database's replica has gone without a new level-0 file (the age of its "
         "oldest unreplicated commit, to within the database's time between commits: N ms); "
         "walrust's own "
         "`walrust_status()` lag_ms, worst over the databases every 0.5 s, in brackets. Upload-all: "
         "from the last commit until the replica has everything (its last level-0 file; for "
         "Litestream, which also writes one after its periodic checkpoint, each database's run "
         "of files after the last commit, each within 2.5 s of the one before; "
         "walrust: the time `walrust_sync()` on all databases at once took, in brackets). Memory and CPU: walrust's are "
         "the application process's minus plain SQLite's in the same workload; Litestream's its "
         "own process's. CPU per transaction over the writing period. \"walrust, lag by "
         "TXID\": the age of each database's oldest commit that no level-0 file which had "
         "arrived held, told by the TXIDs in the files' names (every commit gets the next TXID); "
         "the file-based worst lag overstates it by up to a database's time between commits, a "
         "second at N = 1,000. Litestream numbers its files by sync, not by transaction, so only "
         "the file-based measure applies to it.", ""]
    hdr = ["N", "replicator", "rate (tps)", "worst lag p50", "p99", "max", "upload-all",
           "added RSS", "CPU / txn", "threads"]
    rows = []
    for n in c["n"]:
        base = cells.get(f"sqlite_{n}")
        if not base:
            continue
        rows.append([n, "plain SQLite", f"{base['tps']:,.0f}", "", "", "", "", "", 
                     f"{base['cpu_s'] / base['txns'] * 1e6:.0f} µs (app)",
                     base["proc_end"]["Threads"]])
        w = cells.get(f"walrust_{n}")
        if w:
            lag = w["worst_lag_s"] or [0]
            st = [s for _, s in w["lag_samples"]] or [0]
            rss = (w["proc_end"]["VmRSS"] - base["proc_end"]["VmRSS"]) / 1024
            cpu = (w["cpu_s"] - base["cpu_s"]) / w["txns"] * 1e6
            rows.append([n, "walrust", f"{w['tps']:,.0f}",
                         f"{pct(lag, 50):.2f} s ({pct(st, 50) / 1000:.2f} s)",
                         f"{pct(lag, 99):.2f} s ({pct(st, 99) / 1000:.2f} s)",
                         f"{max(lag):.2f} s ({max(st) / 1000:.2f} s)",
                         f"{w['upload_all_s']:.2f} s ({w['sync_all_s']:.2f} s)",
                         f"{rss:.0f} MB", f"{cpu:.0f} µs", w["proc_end"]["Threads"]])
            ex = w.get("exact_lag_s")
            if ex:
                rows.append([n, "walrust, lag by TXID", "", f"{pct(ex, 50):.2f} s",
                             f"{pct(ex, 99):.2f} s", f"{max(ex):.2f} s", "", "", "", ""])
        s = cells.get(f"litestream_{n}")
        if s:
            lag = s["worst_lag_s"] or [0]
            rows.append([n, "Litestream", f"{s['tps']:,.0f}", f"{pct(lag, 50):.2f} s",
                         f"{pct(lag, 99):.2f} s", f"{max(lag):.2f} s",
                         f"{s['upload_all_s']:.2f} s",
                         f"{s['litestream'].get('VmRSS', 0) / 1024:.0f} MB",
                         f"{s['litestream_cpu_s'] / s['txns'] * 1e6:.0f} µs",
                         s["litestream"].get("Threads", "")])
    if rows:
        L += table(hdr, rows)
    for n in c["n"]:
        w, s, b = (cells.get(f"{k}_{n}") for k in ("walrust", "litestream", "sqlite"))
        if not (w and s and b):
            continue
        def x(a, bb):
            return f"{a / bb:.1f}×" if bb else "–"
        L.append(f"- N = {n}, walrust ÷ Litestream: worst lag p99 "
                 f"{x(pct(w['worst_lag_s'] or [0], 99), pct(s['worst_lag_s'] or [0], 99))}, "
                 f"upload-all {x(w['upload_all_s'], s['upload_all_s'])}, CPU per transaction "
                 f"{x(w['cpu_s'] - b['cpu_s'], s['litestream_cpu_s'])}, memory "
                 f"{x(w['proc_end']['VmRSS'] - b['proc_end']['VmRSS'], s['litestream'].get('VmRSS', 0))}.")
    L.append("")
    r = cells.get("restore")
    if r:
        L += [f"Restore through the same proxy of a replica whose newest point needs "
              f"{r['files']:,} level-0 files (walrust: walrust_sync_interval=0 and "
              f"`walrust_sync()` after each of {r['files']:,} commits, {r['walrust_objects']:,} "
              "objects; Litestream: monitor- and sync-interval 10ms and a commit every 20 ms, stopped before "
              f"its 30 s level-1 compaction, {r['litestream_objects']:,} objects of which "
              f"{r['litestream_l0_objects']:,} level-0):", "",
              "| restore | seconds | restored database matches |", "|---|---|---|",
              f"| `walrust restore` (32 downloads at a time) | {r['walrust_s']:.2f} | "
              f"{r['walrust_ok']} |",
              f"| `litestream restore` | {r['litestream_s']:.2f} | {r['litestream_ok']} |", ""]
    L += render_hung(c, cells)
    L += render_idle(c, cells)
    return L


def table(hdr, rows):
    return (["| " + " | ".join(hdr) + " |", "|" + "|".join("---" for _ in hdr) + "|"]
            + ["| " + " | ".join(str(x) for x in r) + " |" for r in rows] + [""])


def lag_cols(w):
    """worst lag p50, p99, max (walrust_status() in brackets) and upload-all of a walrust cell."""
    lag = w["worst_lag_s"] or [0]
    st = [s for _, s in w["lag_samples"]] or [0]
    return [f"{pct(lag, q):.2f} s ({pct(st, q) / 1000:.2f} s)" for q in (50, 99)] + [
        f"{max(lag):.2f} s ({max(st) / 1000:.2f} s)",
        f"{w['upload_all_s']:.2f} s ({w['sync_all_s']:.2f} s)"]


def render_hung(c, cells):
    """The row "one replica that never answers among N" beside the grid's walrust cell."""
    n = c.get("hung_n")
    h = cells.get(f"hung_{n}")
    if not h:
        return []
    hd = h["hung"]
    L = [f"### One replica that never answers among {n}", "",
         f"The N = {n} walrust cell again, but database 0 replicates to an S3 endpoint that "
         "accepts TCP connections and never answers (a listener in the bench that holds every "
         f"socket open and writes nothing; it held {hd['connections_held']}). The other "
         f"{n - 1} replicate through the proxy as before; their worst lag and upload-all are "
         "measured the same way (database 0 left out; it still commits its share). Litestream "
         "is not measured for this row: it is about walrust's shared upload pool inside one "
         "process, where one hung endpoint must not hold the other databases' uploads.", ""]
    rows = []
    w = cells.get(f"walrust_{n}")
    if w:
        rows.append([f"{n}, all answer (the grid's cell, same run)", f"{w['tps']:,.0f}", *lag_cols(w),
                     w["proc_end"]["Threads"]])
    rows.append([f"{n - 1} of {n}, database 0 hung", f"{h['tps']:,.0f}", *lag_cols(h),
                 h["proc_end"]["Threads"]])
    L += table(["databases", "rate (tps)", "worst lag p50", "p99", "max", "upload-all",
                "threads"], rows)
    if not w:
        L += [f"(The N = {n} cell was not run with this row: `MANY_ROWS` left it out.)", ""]
    calls = [t for t, _, _ in hd["status_samples"]] + [hd["status_call_max_s"]]
    sync = (f"failed after {hd['sync_s']:.2f} s: \"{hd['sync_error']}\"" if "sync_error" in hd
            else f"returned {hd.get('sync_result')} after {hd['sync_s']:.2f} s")
    err = (f"set {hd['error_after_open_s']:.0f} s after the databases were opened: "
           f"\"{hd['last_error']}\"" if hd["last_error"]
           else f"still null {hd['error_after_open_s']:.0f} s after the databases were opened")
    L += [f"Database 0: `walrust_sync(NULL, {c['hung_sync_ms']})` {sync}. Its "
          f"`walrust_status()` answered in at most {max(calls) * 1000:.1f} ms over "
          f"{len(calls)} calls (lag_ms {hd['lag_ms']:,} at the end); its last_error was {err}. "
          f"Closing it (walrust_close_timeout={c['hung_close_ms']}) took {hd['close_s']:.2f} s, "
          "and the process exited.", ""]
    return L


def render_idle(c, cells):
    """The row "idle databases": a clean restart of M replicating databases, at rest."""
    r = cells.get("idle")
    if not r:
        return []
    m, s, w = r["n"], r["sqlite"], r["walrust"]

    def per_db(x, key):
        return (x["proc_idle"][key] - x["proc_base"][key]) / m

    fd_s, fd_w = per_db(s, "fds"), per_db(w, "fds")
    kb_s, kb_w = per_db(s, "VmRSS"), per_db(w, "VmRSS")
    hard = c.get("nofile_hard", 20000)
    L = [f"### {m:,} idle databases", "",
         f"A first Debian /usr/bin/python3 process creates {m:,} WAL databases with one row "
         "each, replicating to a local directory (file://, so this is walrust's own cost, not "
         f"S3's), waits for `walrust_sync()` on each and exits cleanly (500 open at a time, "
         "synchronous=OFF, which spares SQLite's fsyncs but not walrust's). A second process opens all "
         f"{m:,} again with the same replica URL and runs one SELECT on each, then rests "
         f"{c.get('idle_s', 3):g} s; the same two steps with plain SQLite (no extension) are the "
         "baseline. Descriptors (/proc/self/fd) and RSS are the process's after the rest minus "
         "before the first open (the extension already loaded), divided by the number of "
         "databases.", ""]
    rows = [["plain SQLite", f"{r['sqlite_create']['create_s']:.1f} s", f"{s['open_s']:.2f} s", f"{fd_s:.2f}", f"{kb_s:.0f} KB",
             s["proc_idle"]["Threads"], f"{s['idle_cpu_s']:.2f} s",
             f"{(s['proc_open']['fds'] - s['proc_base']['fds']) / m:.2f}"],
            ["walrust", f"{r['walrust_create']['create_s']:.1f} s", f"{w['open_s']:.2f} s", f"{fd_w:.2f}", f"{kb_w:.0f} KB",
             w["proc_idle"]["Threads"], f"{w['idle_cpu_s']:.2f} s",
             f"{(w['proc_open']['fds'] - w['proc_base']['fds']) / m:.2f}"],
            ["walrust − plain", "", f"{w['open_s'] - s['open_s']:+.2f} s", f"{fd_w - fd_s:+.2f}",
             f"{kb_w - kb_s:+.0f} KB", "", "", ""]]
    L += table([f"{m:,} databases", "first process: create + sync", "open all + one read each", "descriptors per database",
                 "RSS per database", "threads", f"CPU while resting {c.get('idle_s', 3):g} s",
                 "descriptors per database just after opening"], rows)
    new_snaps = r["snapshots_after"] - r["snapshots_before"]
    proj = 10000 * fd_w + w["proc_base"]["fds"]
    L += [f"Snapshots in the replica: {r['snapshots_before']:,} before the restart, "
          f"{r['snapshots_after']:,} after ({new_snaps:+,}; LTX files {r['ltx_before']:,} → "
          f"{r['ltx_after']:,}): "
          + ("the restart resumed without uploading a snapshot again. " if new_snaps == 0 else
             "**the restart uploaded snapshots again**. ")
          + f"walrust_status() after the rest: {w.get('last_errors', 0)} databases with an "
          f"error, {w.get('pending_txns', 0)} transactions pending.",
          "",
          f"Not run at 10,000: this machine's RLIMIT_NOFILE hard limit is {hard:,} and cannot "
          "be raised (the process raises its soft limit to it), and plain SQLite alone holds "
          f"{fd_s:.0f} descriptors per open WAL database (the file, its -wal and -shm), "
          f"{10000 * fd_s:,.0f} for 10,000. Projected from the per-database numbers above, "
          f"10,000 idle databases would need {proj:,.0f} descriptors with walrust "
          f"({10000 * (fd_w - fd_s):,.0f} of them walrust's) and {10000 * kb_w / 1024:,.0f} MB "
          f"of RSS ({10000 * (kb_w - kb_s) / 1024:,.0f} MB of it walrust's).", ""]
    return L
