"""Many databases in one process (issue 15): uploads of different databases run on the upload
pool, each replica stays whole, and one replica that hangs or is locked by another process
delays only its own database (docs/DESIGN.md, decision 14). Nothing here is timed: the
timeouts below only stop a hung test, and are far above what a healthy sync takes."""

import os
import socket
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest

from harness import SYSTEM_PYTHON, Replica
from test_history import assert_level0_contiguous, snapshots

# A healthy database's walrust_sync() must return within this while another replica hangs.
# Below the S3 response timeout (60 s) and the manifest lock wait (30 s), which is what one
# shared upload thread made every other database wait before the pool.
GUARD_MS = 25_000


def pool_threads():
    """Names of this process's walrust upload pool threads."""
    names = []
    for task in Path("/proc/self/task").iterdir():
        try:
            names.append((task / "comm").read_text().strip())
        except OSError:
            pass
    return [n for n in names if n == "walrust-upload"]


def write_rows(conn, tag, n):
    for i in range(n):
        conn.execute("INSERT INTO t(tag, v) VALUES (?, randomblob(200))", (f"{tag}-{i}",))


def open_db(connect, path, replica, **settings):
    conn = connect(path, replica, **settings)
    conn.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, tag TEXT, v BLOB)")
    return conn


def test_many_databases_upload_concurrently_and_each_replica_stays_whole(
    walrust, connect, replica, new_replica, restore_and_compare, tmp_path
):
    n_dbs, n_threads, rounds = 24, 6, 15
    replicas = [replica] + [new_replica(f"r{i}") for i in range(1, n_dbs)]
    conns = [
        open_db(connect, tmp_path / f"db{i}.db", replicas[i], sync_interval=20)
        for i in range(n_dbs)
    ]
    errors = []

    def writer(k):
        try:
            for r in range(rounds):
                for i in range(k, n_dbs, n_threads):
                    write_rows(conns[i], f"{r}", 3)
                    if r % 5 == 4:
                        walrust.sync(conns[i])
        except Exception as e:  # noqa: BLE001 - reported below, on the test's thread
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
        assert not t.is_alive(), "a writer hung"
    assert not errors, errors
    for conn in conns:
        walrust.sync(conn)
    assert 1 <= len(pool_threads()) <= 128, pool_threads()
    for i, conn in enumerate(conns):
        txid, _ = restore_and_compare(replicas[i], conn)
        first = snapshots(replicas[i])[0].max_txid
        ranges = assert_level0_contiguous(replicas[i], since=first + 1)
        assert ranges and ranges[-1][1] == txid, (i, ranges, txid)
    for conn in conns:
        conn.close()


class HungS3:
    """An "S3 endpoint" that accepts every connection and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.conns = []
        self.stopped = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stopped:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            self.conns.append(c)  # kept open, never read from or written to

    def replica(self):
        url = (
            f"s3://hung/app?endpoint=http://127.0.0.1:{self.port}"
            "&region=us-east-1&force_path_style=true"
        )
        return Replica("s3", url, None)

    def stop(self):
        self.stopped = True
        self.sock.close()
        for c in self.conns:
            c.close()


def healthy_rounds(walrust, conns, rounds):
    """Commits to every healthy database and waits for each to be in its replica."""
    for r in range(rounds):
        for conn in conns:
            write_rows(conn, f"h{r}", 5)
            walrust.sync(conn, timeout_ms=GUARD_MS)


def test_a_hung_endpoint_delays_only_its_own_database(
    walrust, connect, replica, new_replica, restore_and_compare, tmp_path, monkeypatch
):
    if "AWS_ACCESS_KEY_ID" not in os.environ:
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "walrust-test-ak")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "walrust-test-sk")
        monkeypatch.setenv("AWS_REGION", "us-east-1")
    hung = HungS3()
    try:
        stuck = open_db(connect, tmp_path / "stuck.db", hung.replica(), sync_interval=20)
        write_rows(stuck, "before", 5)
        with pytest.raises(sqlite3.OperationalError, match=r"^walrust: sync .* timed out"):
            stuck.execute("SELECT walrust_sync('main', 1500)").fetchone()
        replicas = [replica] + [new_replica(f"ok{i}") for i in range(1, 4)]
        conns = [
            open_db(connect, tmp_path / f"ok{i}.db", r, sync_interval=20)
            for i, r in enumerate(replicas)
        ]
        healthy_rounds(walrust, conns, 5)
        # The hung database stays writable, and its commits wait in the shadow log.
        write_rows(stuck, "during", 5)
        assert walrust.status(stuck)["pending_txns"] > 0
        with pytest.raises(sqlite3.OperationalError, match=r"^walrust: sync .* timed out"):
            stuck.execute("SELECT walrust_sync('main', 500)").fetchone()
        healthy_rounds(walrust, conns, 2)
        for r, conn in zip(replicas, conns):
            restore_and_compare(r, conn)
            conn.close()
        stuck.close()
    finally:
        hung.stop()


LOCK_HOLDER = """
import fcntl, sys
f = open(sys.argv[1], "a+")
fcntl.flock(f, fcntl.LOCK_EX)  # what src/store/fs.rs takes around a manifest write
print("locked", flush=True)
sys.stdin.read()
"""


def test_a_manifest_lock_held_elsewhere_delays_only_its_own_replica(
    walrust, connect, replica, restore_and_compare, tmp_path
):
    locked = Replica.file(tmp_path / "locked-replica")
    locked.objects.mkdir(parents=True)
    holder = subprocess.Popen(
        [SYSTEM_PYTHON, "-c", LOCK_HOLDER, str(locked.objects / "manifest.json.lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        blocked = open_db(connect, tmp_path / "blocked.db", locked, sync_interval=20)
        write_rows(blocked, "before", 5)
        with pytest.raises(sqlite3.OperationalError, match=r"^walrust: sync .* timed out"):
            blocked.execute("SELECT walrust_sync('main', 1500)").fetchone()
        free = open_db(connect, tmp_path / "free.db", replica, sync_interval=20)
        healthy_rounds(walrust, [free], 5)
        write_rows(blocked, "during", 5)
        restore_and_compare(replica, free)
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # Released: the locked replica catches up (after its backoff) and is whole.
    walrust.sync(blocked)
    restore_and_compare(locked, blocked)
    free.close()
    blocked.close()
