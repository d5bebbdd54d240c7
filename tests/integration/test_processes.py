"""Several processes on one database (SPEC 6, issue 7): every commit of every process is
captured once and replicated, one process uploads at a time and another takes over when it
dies, and a process asking for a different replica gets an error naming both."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).parent
PYTHON = "/usr/bin/python3"


def spawn(walrust, db, replica, tag, count, sync=False):
    cmd = [PYTHON, str(HERE / "procwriter.py"), "--ext", str(walrust.ext), "--db", str(db),
           "--replica", replica.url, "--tag", tag, "--count", str(count)]
    if sync:
        cmd.append("--sync")
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def setup_db(connect, db, replica, walrust):
    conn = connect(db, replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, tag TEXT, n INTEGER)")
    walrust.sync(conn)
    return conn


def level0_contiguous_after_last_snapshot(replica):
    files = replica.ltx_files()
    snapshots = [f for f in files if f.level == 9]
    assert snapshots, "no snapshot in the replica"
    newest = max(s.max_txid for s in snapshots)
    level0 = sorted((f.min_txid, f.max_txid) for f in files if f.level == 0 and f.max_txid > newest)
    expected = newest + 1
    for lo, hi in level0:
        assert lo == expected, f"level-0 TXIDs jump from {expected - 1} to {lo}: {level0}"
        expected = hi + 1
    return expected - 1


def test_three_processes_with_the_uploader_killed(tmp_path, walrust, connect, replica, restore_and_compare):
    db = tmp_path / "app.db"
    conn = setup_db(connect, db, replica, walrust)
    conn.close()  # the writers decide among themselves who uploads
    time.sleep(2.5)  # this process's upload thread lets the lock go once it has nothing left
    procs = [spawn(walrust, db, replica, f"p{k}", 2000) for k in range(3)]
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline:
        for p in procs:
            line = p.stdout.readline()
            if line.strip() == "uploader true" and killed is None:
                p.send_signal(signal.SIGKILL)
                killed = p
    assert killed is not None, "no writer ever reported holding the uploader lock"
    for p in procs:
        out, err = p.communicate(timeout=300)
        if p is not killed:
            assert p.returncode == 0, err[-2000:]
    conn = connect(db, replica)
    synced = walrust.sync(conn)
    rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
    assert rows >= 4000  # the two survivors' rows, plus whatever the killed one committed
    restore_and_compare(replica, conn)
    assert level0_contiguous_after_last_snapshot(replica) == synced


def test_reader_process_uploads_after_the_writer_exits(tmp_path, walrust, connect, replica, restore_and_compare):
    db = tmp_path / "app.db"
    reader = setup_db(connect, db, replica, walrust)  # this process stays open, reading
    writer = spawn(walrust, db, replica, "writer", 300)
    out, err = writer.communicate(timeout=300)
    assert writer.returncode == 0, err[-2000:]
    assert reader.execute("SELECT count(*) FROM t").fetchone()[0] == 300
    reader.execute("INSERT INTO t(tag, n) VALUES ('reader', 1)")
    walrust.sync(reader)
    restore_and_compare(replica, reader)


def test_a_second_replica_url_is_refused_and_the_first_keeps_going(tmp_path, walrust, connect, replica, restore_and_compare):
    db = tmp_path / "app.db"
    first = setup_db(connect, db, replica, walrust)
    other = (tmp_path / "other-replica").resolve()
    code = (
        "import sqlite3, sys\n"
        "m = sqlite3.connect(':memory:'); m.enable_load_extension(True); m.load_extension(sys.argv[1])\n"
        "try:\n"
        "    c = sqlite3.connect(f'file:{sys.argv[2]}?walrust_replica=file://{sys.argv[3]}', uri=True)\n"
        "    c.execute('SELECT count(*) FROM t').fetchone()\n"
        "    print('opened')\n"
        "except sqlite3.Error as e:\n"
        "    print('error', e)\n"
    )
    res = subprocess.run([PYTHON, "-c", code, str(walrust.ext), str(db), str(other)], capture_output=True, text=True, timeout=120)
    out = res.stdout.strip()
    assert out.startswith("error"), out + res.stderr
    assert replica.url.removeprefix("file://") in out and str(other) in out, out
    assert not other.exists(), "the refused replica was written to"
    first.execute("INSERT INTO t(tag, n) VALUES ('first', 2)")
    walrust.sync(first)
    restore_and_compare(replica, first)
