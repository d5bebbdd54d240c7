"""The "sidecar" section of bench/run.py: an application that does not load walrust (Debian's
/usr/bin/python3, bench/workload.py's one-row INSERTs at full speed) with `walrust watch`
beside it, with `litestream replicate` beside it, and alone; at synchronous NORMAL and FULL.
Both replicators send to a local directory with a 1 s sync interval. The sidecar's CPU is its
process's user + system time from just before the writer starts until it has shipped
everything and exited on SIGTERM (wait4's rusage), per transaction; its memory is its peak RSS.
Not a test: nothing here passes or fails on time.

    .venv/bin/python bench/run.py --only sidecar    (BENCH_SIDECAR_SECONDS, BENCH_SIDECAR_ROUNDS)
"""

import json
import os
import signal
import statistics
import subprocess
import time
from pathlib import Path

VARIANTS = ["sqlite", "watch", "litestream"]
LABELS = {"sqlite": "plain SQLite (WAL, autocheckpoint 1000)",
          "watch": "SQLite + `walrust watch` (1 s)",
          "litestream": "SQLite + `litestream replicate` (1s)"}
SYNCS = ["NORMAL", "FULL"]


def cfg():
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    return {"seconds": float(os.environ.get("BENCH_SIDECAR_SECONDS", 1.0 if quick else 3.0)),
            "rounds": int(os.environ.get("BENCH_SIDECAR_ROUNDS", 1 if quick else 3)),
            "retries": 0 if quick else 4}


def uploaded(cli, db):
    r = subprocess.run([cli, "status", str(db)], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        return -1, -1
    st = json.loads(r.stdout)
    return st["uploaded_txid"], st["txid"]


def stop(proc):
    """SIGTERM, then the exited process's (CPU seconds, peak RSS kB) from wait4."""
    proc.send_signal(signal.SIGTERM)
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ru.ru_utime + ru.ru_stime, ru.ru_maxrss


def cell(R, cli, variant, sync, seconds, workdir):
    d = R.fresh(workdir)
    db, rep = d / "app.db", d / "replica"
    R.workload("init", "--db", db, env=R.app_env())
    proc = watcher = None
    if variant == "watch":
        log = open(d / "watch.log", "ab")
        proc = subprocess.Popen([cli, "watch", str(db), "--replica", f"file://{rep}"],
                                stderr=log, env=R.app_env(), start_new_session=True)
        if not R.wait_for(lambda: uploaded(cli, db)[0] >= 1, 30, step=0.05):
            raise RuntimeError(f"walrust watch took no snapshot in 30 s: {(d / 'watch.log').read_text()}")
    elif variant == "litestream":
        rep.mkdir(parents=True)
        watcher = R.fswatch.Watcher(rep).start()
        ls = R.Litestream(d, db, replica_dir=rep).start()
        proc = ls.proc
        if not R.wait_for(lambda: any(e[1].startswith("ltx/0/") for e in watcher.events), 30):
            raise RuntimeError("litestream wrote no first file in 30 s")
    time.sleep(0.2)
    cpu0 = R.proc_cpu_s(proc.pid) if proc else 0.0
    with R.Meter([proc.pid] if proc else []) as m:
        res = R.workload("write", "--db", db, "--kind", "small", "--sync", sync,
                         "--seconds", seconds, env=R.app_env())
    res["other_cores"] = round(m.other_cores, 2)
    if variant == "watch":
        # until the replica has every commit (the watch copies them from the WAL)
        R.wait_for(lambda: (lambda u: u[0] >= u[1] > 1)(uploaded(cli, db)), 120, step=0.1)
    elif variant == "litestream":
        R.wait_settled(watcher, quiet=1.5, timeout=60)
        watcher.stop()
    if proc:
        cpu, rss = stop(proc)
        res["side_cpu_s"] = cpu - cpu0
        res["side_us_per_txn"] = res["side_cpu_s"] / max(res["txns"], 1) * 1e6
        res["side_rss_kb"] = rss
        res["side_exit"] = proc.returncode
    res.pop("status", None)
    R.shutil.rmtree(d, ignore_errors=True)
    return res


def section_sidecar(R, cli, results):
    c = cfg()
    cells = {}
    R.log(f"sidecar: {len(VARIANTS)} variants x {len(SYNCS)} syncs x {c['rounds']} rounds x {c['seconds']}s")
    quiet = []
    for r in range(c["rounds"]):
        quiet.append(R.wait_quiet(f"sidecar round {r + 1}"))
        order = VARIANTS if r % 2 == 0 else VARIANTS[::-1]
        for sync in SYNCS:
            for v in order:
                for attempt in range(1 + c["retries"]):
                    res = cell(R, cli, v, sync, c["seconds"], R.WORK / f"side-{v}")
                    res["round"] = r + 1
                    res["noisy"] = res["other_cores"] > R.NOISY
                    cells.setdefault(sync, {}).setdefault(v, []).append(res)
                    R.log(f"sidecar r{r + 1} {sync:6} {v:10} {res['tps']:9.1f} tx/s  "
                          f"side {res.get('side_us_per_txn', 0):6.1f} us/tx rss {res.get('side_rss_kb')} kB"
                          f"  others {res['other_cores']:.2f} cores")
                    if not res["noisy"]:
                        break
                    # Another process took CPU meanwhile: measure again once it is quiet
                    # (both kept; the medians use the quiet ones).
                    R.wait_quiet("sidecar retry", max_wait=60, sample=1.0)
    results["sidecar"] = {"config": c, "cells": cells, "quiet": quiet,
                          "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def fmt(x, nd=0):
    return "" if x is None else f"{x:,.{nd}f}"


def worst_ms(rs):
    """The slowest commit (bench/workload.py records only those over 10 ms)."""
    w = max(r["worst_commit_s"] for r in rs)
    return fmt(w * 1000) if w > 0 else "< 10"


def render(s):
    """Markdown lines for BENCHMARKS.md's "Sidecar" section."""
    if not s or "cells" not in s:
        return []
    c = s["config"]
    L = ["## Sidecar: `walrust watch` beside an application", "",
         f"Measured {s['date']} with `.venv/bin/python bench/run.py --only sidecar` "
         f"({c['rounds']} rounds of {c['seconds']:g} s per cell, variants interleaved). The "
         "application (Debian's /usr/bin/python3, bench/workload.py) commits one-row INSERTs "
         "as fast as it can and loads nothing; `walrust watch` or `litestream replicate` runs "
         "beside it as its own process, both sending to a local directory every 1 s. Sidecar "
         "CPU: its process's user + system time from just before the writer starts until it "
         "has shipped everything and exited on SIGTERM, per transaction; RSS: its peak. "
         "Medians over the rounds in which other processes used under 0.5 cores (a cell measured "
         "while they did is measured again, up to 4 times).", ""]
    for sync in SYNCS:
        cells = s["cells"].get(sync, {})
        plain = [r for r in cells.get("sqlite", []) if not r.get("noisy")] or cells.get("sqlite")
        base = statistics.median(r["tps"] for r in plain) if plain else None
        L += [f"### synchronous={sync}", "",
              "| variant | tx/s (median) | quiet runs | range | × plain | app µs/tx | sidecar CPU µs/tx "
              "| sidecar peak RSS | WAL frames at end | slowest commit ms | others (cores) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
        for v in VARIANTS:
            every = cells.get(v)
            if not every:
                continue
            rs = [r for r in every if not r.get("noisy")] or every
            tps = statistics.median(r["tps"] for r in rs)
            side = [r["side_us_per_txn"] for r in rs if "side_us_per_txn" in r]
            rss = [r["side_rss_kb"] for r in rs if r.get("side_rss_kb")]
            L.append("| " + " | ".join([
                LABELS[v], fmt(tps), f"{sum(not r.get('noisy') for r in every)}/{len(every)}",
                f"{fmt(min(r['tps'] for r in rs))}–{fmt(max(r['tps'] for r in rs))}",
                fmt(tps / base, 2) if base else "",
                fmt(statistics.median(r["cpu_us_per_txn"] for r in rs), 1),
                fmt(statistics.median(side), 1) if side else "",
                f"{statistics.median(rss) / 1024:.1f} MiB" if rss else "",
                fmt(statistics.median(r["wal_frames"] for r in rs)),
                # workload.py records only commits over 10 ms
                worst_ms(rs),
                fmt(statistics.median(r["other_cores"] for r in rs), 2)]) + " |")
        L.append("")
    return L
