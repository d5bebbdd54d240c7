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

from harness import assert_integrity_ok, assert_same_contents, db_contents

HERE = Path(__file__).parent
PYTHON = "/usr/bin/python3"


def spawn(walrust, db, replica, tag, count, sync=False, hold_after=None):
    cmd = [PYTHON, str(HERE / "procwriter.py"), "--ext", str(walrust.ext), "--db", str(db),
           "--replica", replica.url, "--tag", tag, "--count", str(count)]
    if sync:
        cmd.append("--sync")
    if hold_after is not None:
        cmd += ["--hold-after", str(hold_after)]
    return subprocess.Popen(cmd, stdin=subprocess.PIPE if hold_after is not None else None,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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


def read_line(proc, what):
    line = proc.stdout.readline()
    assert line, f"{what}: the writer exited; stderr:\n{proc.stderr.read()[-2000:]}"
    return line.split()


def test_three_processes_with_the_uploader_killed(tmp_path, walrust, replica):
    """Three writers; the one holding the uploader lock is killed -9; a survivor must take
    over: each survivor's walrust_sync() returns, a survivor reports itself the uploader, and
    the replica, restored before this process opens the database at all, holds every row of
    the survivors and an unbroken prefix of the killed one's. Nobody else uploads: this
    process never opens the database through walrust until the replica has been checked."""
    db = tmp_path / "app.db"
    held = 200
    procs = [spawn(walrust, db, replica, f"p{k}", 2000, sync=True, hold_after=held)
             for k in range(3)]
    try:
        for p in procs:
            while (line := read_line(p, "first rows")) != ["held"]:
                assert line[0] == "uploader", line
        # Ask each, in turn, whether it holds the uploader lock, until one does (the first
        # upload takes it; nobody is writing now, so nothing moves it elsewhere).
        killed = None
        deadline = time.monotonic() + 120
        while killed is None:
            assert time.monotonic() < deadline, "no writer ever reported holding the uploader lock"
            for p in procs:
                p.stdin.write("status\n")
                p.stdin.flush()
                if read_line(p, "status") == ["uploader", "true"]:
                    killed = p
                    break
            else:
                time.sleep(0.05)
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        survivors = [p for p in procs if p is not killed]
        for p in survivors:
            p.stdin.write("go\n")
            p.stdin.flush()  # communicate() closes it
        outputs = {}
        for p in survivors:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-2000:]
            outputs[p] = out.split("\n")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    synced = []
    for p, lines in outputs.items():
        sync_lines = [l for l in lines if l.startswith("synced ")]
        assert len(sync_lines) == 1, lines[-5:]
        synced.append(int(sync_lines[0].split()[1]))
    # Reports made after the kill: a survivor held the lock (nobody else could upload).
    after_kill = [l for lines in outputs.values() for l in lines if l.startswith("uploader ")]
    assert "uploader true" in after_kill, f"no survivor ever reported uploading: {after_kill}"

    # The replica as the survivors left it, before this process opens the database.
    out = tmp_path / "survivors.db"
    restored_txid = walrust.restore(replica, out)
    assert restored_txid == max(synced), (restored_txid, synced)
    assert_integrity_ok(out, "restore of the survivors' replica")
    rows = db_contents(out)["tables"]["t"]
    by_tag = {}
    for _, tag, n in rows:
        by_tag.setdefault(tag, []).append(n)
    for p in survivors:
        tag = p.args[p.args.index("--tag") + 1]
        assert by_tag.pop(tag) == list(range(2000)), f"{tag}: rows missing or repeated"
    (killed_tag, killed_rows), = by_tag.items()
    assert killed_rows == list(range(len(killed_rows))) and len(killed_rows) >= held, (
        f"{killed_tag}: the killed writer's rows are not an unbroken prefix of at least "
        f"{held}: {killed_rows[:5]}...{killed_rows[-5:]} ({len(killed_rows)} rows)"
    )
    assert level0_contiguous_after_last_snapshot(replica) == max(synced)

    # And that restore is what the database holds.
    conn = walrust.connect(db, replica)
    assert_same_contents(db_contents(conn), db_contents(out), "the survivors' replica")


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
