"""The "Many databases" section of the bench (`bench/run.py --only many`): N databases in one
application process, replicating to S3 (s3s-fs) behind bench/latency_proxy.py (30 ms per
request), walrust against plain SQLite plus one `litestream replicate` for all N; and a restore
whose newest point needs 1,000 level-0 files, walrust against `litestream restore`.

Sizes: MANY_DBS_N ("10,100"; MANY_DBS_FULL=1 adds 1000), MANY_DBS_SECONDS (10),
MANY_DBS_TPS (1000), MANY_DBS_DELAY_MS (30), MANY_DBS_CHAIN (1000 files for the restore row);
BENCH_QUICK=1 makes it N = 10 for 3 s and a 100-file chain. About 8 minutes by default.

Worst lag, for both replicators alike: every 0.1 s while the writes run (after the first 2 s),
the longest time any database's replica has gone without a new level-0 file (watched in the
s3s-fs data directory). Every database commits at least every N ms, so this is the age of its
oldest unreplicated commit, give or take N ms and one request. walrust's own walrust_status()
lag_ms (the worst over the databases, sampled every 0.5 s) is reported beside it.
"""

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import fswatch

BENCH = Path(__file__).resolve().parent
APP = str(BENCH / "many_app.py")
PY = "/usr/bin/python3"
L0 = re.compile(r"^(?:.*/)?db(\d+)/(?:ltx/0/|0000/).*\.ltx$")
ANY = re.compile(r"^(?:.*/)?db(\d+)/.*\.ltx$")


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
            "interval_ms": 1000}


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


def worst_lag_samples(events, n, t_start, t_stop, step=0.1, warmup=2.0):
    """Per sample time: max over databases of the time since its last level-0 file."""
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
        for i in range(n):
            a = arrivals[i]
            while idx[i] < len(a) and a[idx[i]] <= t:
                last[i] = max(last[i], a[idx[i]])
                idx[i] += 1
            worst = max(worst, t - last[i])
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


def one_cell(R, ext, kind, n, c, proxy, root):
    d = R.fresh(root / f"{kind}-{n}")
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
        res["worst_lag_s"] = worst_lag_samples(watcher.events, n, res["t_start"], res["t_stop"])
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
        for n in c["n"]:
            for kind in ("sqlite", "walrust", "litestream"):
                R.log(f"many: N={n} {kind}: {c['tps']:g} tps for {c['seconds']:g} s "
                      f"through {c['delay_ms']:g} ms")
                res = one_cell(R, ext, kind, n, c, proxy, root)
                cells[f"{kind}_{n}"] = res
                lags = res.get("worst_lag_s") or [0]
                R.log(f"many: N={n} {kind}: {res['tps']:.0f} tps, worst lag p50 "
                      f"{R.percentile(lags, 50):.2f} s max {max(lags):.2f} s, upload-all "
                      f"{res.get('upload_all_s', 0):.2f} s, cpu {res['cpu_s']:.2f} s")
        R.log(f"many: restore of a {c['chain']}-file chain through the proxy")
        cells["restore"] = restore_row(R, ext, cli, c, proxy, root)
        R.log("many: restore:", json.dumps(cells["restore"]))
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
         "`make bench`; `MANY_DBS_FULL=1` adds N = 1,000). One Debian /usr/bin/python3 process "
         f"holds N databases and commits {c['tps']:g} one-row transactions per second in total, "
         f"round-robin, for {c['seconds']:g} s, replicating to s3s-fs behind "
         f"bench/latency_proxy.py ({c['delay_ms']:g} ms added to every request); walrust with "
         f"walrust_sync_interval={c['interval_ms']}, Litestream 0.5.17 as one `litestream "
         "replicate` for all N (sync-interval 1s) beside plain SQLite. Worst lag: every 0.1 s, "
         "the longest any database's replica has gone without a new level-0 file (bench/many.py "
         "says why that is the age of its oldest unreplicated commit, within N ms); walrust's own "
         "`walrust_status()` lag_ms, worst over the databases every 0.5 s, in brackets. Upload-all: "
         "from the last commit until the replica has everything (its last level-0 file; for "
         "Litestream, which also writes one after its periodic checkpoint, each database's run "
         "of files after the last commit, each within 2.5 s of the one before; "
         "walrust: the time `walrust_sync()` on all databases at once took, in brackets). Memory and CPU: walrust's are "
         "the application process's minus plain SQLite's in the same workload; Litestream's its "
         "own process's. CPU per transaction over the writing period.", ""]
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
        s = cells.get(f"litestream_{n}")
        if s:
            lag = s["worst_lag_s"] or [0]
            rows.append([n, "Litestream", f"{s['tps']:,.0f}", f"{pct(lag, 50):.2f} s",
                         f"{pct(lag, 99):.2f} s", f"{max(lag):.2f} s",
                         f"{s['upload_all_s']:.2f} s",
                         f"{s['litestream'].get('VmRSS', 0) / 1024:.0f} MB",
                         f"{s['litestream_cpu_s'] / s['txns'] * 1e6:.0f} µs",
                         s["litestream"].get("Threads", "")])
    L.append("| " + " | ".join(hdr) + " |")
    L.append("|" + "|".join("---" for _ in hdr) + "|")
    L += ["| " + " | ".join(str(x) for x in r) + " |" for r in rows]
    L.append("")
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
    return L
