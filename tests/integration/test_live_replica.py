"""A live replica stays restorable (SPEC 6, issue 13 items 1 and 2): while one process writes
and uploads at walrust_sync_interval=0, another runs `walrust compact` with a retention that
removes level-0 files every second, and a third restores and verifies in a loop. No run of
any of them reports an integrity error (or fails at all), and every restore equals the
writer's database at the TXID it reports.

TEST_LIVE_SECONDS sets how long the writer writes (default 60). The writer, the compactions,
the CLI restores and the verifies are separate processes; every other restore is
walrust_restore() in this process.
"""

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import HANG_TIMEOUT, SYSTEM_PYTHON, assert_integrity_ok, open_plain

HERE = Path(__file__).parent
SECONDS = float(os.environ.get("TEST_LIVE_SECONDS", "60"))
# Keeps no snapshot but the newest and no exact-restore window: every run removes the level-0
# files (and snapshots) the newest snapshot makes unnecessary.
RETENTION = "hourly=0,daily=0,weekly=0,monthly=0"


def run(cmd):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=HANG_TIMEOUT)


def restored_state(path):
    """n, as the writer numbers its commits, of a restored database, after checking that the
    rows are exactly those n commits inserted."""
    assert_integrity_ok(path, f"restored {path}")
    conn = open_plain(path)
    try:
        n = conn.execute("SELECT n FROM meta WHERE k = 1").fetchone()[0]
        count, top = conn.execute("SELECT count(*), coalesce(max(id), 0) FROM t").fetchone()
        assert (count, top) == (n, n), f"{path}: meta says {n} commits but t has {count} rows up to id {top}"
        if n:
            same = conn.execute(
                "SELECT body = zeroblob(200) || ? FROM t WHERE id = ?", (str(n) * 20, n)
            ).fetchone()[0]
            assert same == 1, f"{path}: row {n} is not what the writer inserted"
        return n
    finally:
        conn.close()


class Loop(threading.Thread):
    """Runs `step(i)` until stopped; keeps the first exception."""

    def __init__(self, step):
        super().__init__(daemon=True)
        self.step, self.stop, self.error, self.runs = step, threading.Event(), None, 0

    def run(self):
        try:
            while not self.stop.is_set():
                self.step(self.runs)
                self.runs += 1
        except BaseException as e:  # reported by the test thread
            self.error = e

    def finish(self):
        self.stop.set()
        self.join(HANG_TIMEOUT * 2)
        assert not self.is_alive(), "a loop did not stop"
        if self.error is not None:
            raise self.error


def test_compaction_restore_and_verify_while_writing(tmp_path, walrust, walrust_cli, replica):
    db, log = tmp_path / "app.db", tmp_path / "writer.log"
    writer = subprocess.Popen(
        [SYSTEM_PYTHON, str(HERE / "livewriter.py"), "--ext", str(walrust.ext), "--db", str(db),
         "--replica", replica.url, "--log", str(log), "--seconds", str(SECONDS)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.time() + HANG_TIMEOUT
    while not (log.exists() and log.read_text().strip()) and writer.poll() is None:
        assert time.time() < deadline, "the writer never logged its first commit"
        time.sleep(0.1)

    removed = []

    def compact(i):
        r = run([str(walrust_cli), "compact", replica.url, "--retention", RETENTION])
        assert r.returncode == 0, f"walrust compact exited {r.returncode}: {r.stderr}"
        removed.append(len(json.loads(r.stdout)["removed"]))
        time.sleep(1)

    restored = []  # (txid, n)

    def restore(i):
        out = tmp_path / f"restore-{i}.db"
        if i % 2 == 0:
            r = run([str(walrust_cli), "restore", replica.url, "-o", str(out)])
            assert r.returncode == 0, f"walrust restore exited {r.returncode}: {r.stderr}"
            txid = int(re.search(r"to TXID \w+ \((\d+),", r.stdout).group(1))
        else:
            txid = walrust.restore(replica, out)
        restored.append((txid, restored_state(out)))
        out.unlink()
        r = run([str(walrust_cli), "verify", replica.url])
        assert r.returncode == 0, f"walrust verify exited {r.returncode}: {r.stdout}{r.stderr}"

    loops = [Loop(compact), Loop(restore)]
    for loop in loops:
        loop.start()
    try:
        out, err = writer.communicate(timeout=SECONDS + HANG_TIMEOUT)
    finally:
        for loop in loops:
            loop.stop.set()
    for loop in loops:
        loop.finish()
    assert writer.returncode == 0, err[-3000:]
    assert out.startswith("synced"), out + err[-3000:]

    # What the database held at each TXID, from the writer's log.
    at = {}
    for line in log.read_text().split("\n"):
        if line:
            txid, n = map(int, line.split())
            at[txid] = n
    txids = sorted(at)

    def expected(txid):
        known = [t for t in txids if t <= txid]
        assert known, f"a restore reached TXID {txid}, before the writer's first commit"
        return at[known[-1]]

    for txid, n in restored:
        assert n == expected(txid), f"the restore to TXID {txid} holds {n} commits, the writer had {expected(txid)}"
    assert restored, "no restore ran while the writer wrote"
    assert sum(removed) > 0, "compaction never removed a file: retention was not exercised"

    # At rest: the replica restores to the writer's last commit and verifies.
    _, synced, last_n = out.split()
    final = tmp_path / "final.db"
    assert walrust.restore(replica, final) == int(synced)
    assert restored_state(final) == int(last_n) == expected(int(synced))
    r = run([str(walrust_cli), "verify", replica.url])
    assert r.returncode == 0, r.stdout + r.stderr
    print(f"{len(restored)} restores, {len(removed)} compactions removing {sum(removed)} files, "
          f"{int(last_n)} commits")
