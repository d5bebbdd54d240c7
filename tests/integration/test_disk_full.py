"""A full disk (ENOSPC) on the shadow directory, on the spare segment, on the replica
directory: the database stays writable, no committed transaction is lost, and the error says
what is full. Each full file system is a small tmpfs this test mounts (it needs root: without
it the tests fail, or skip with WALRUST_ALLOW_SKIP=1); "space returns" is a remount with a
larger size, the same files still in place."""

import os
import sqlite3
import subprocess
import tempfile
from contextlib import closing
from pathlib import Path

import pytest

from harness import Replica, cannot_run

ROW = 50_000  # bytes of randomblob per commit


@pytest.fixture
def small_fs(tmp_path):
    """small_fs(name, size) -> a directory on a new tmpfs of `size` (e.g. "2m");
    small_fs.grow(path, size) remounts it larger. Unmounted at the end."""
    mounted = []

    def mount(name, size):
        path = tmp_path / name
        path.mkdir()
        res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs",
                              str(path)], capture_output=True, text=True)
        if res.returncode != 0:
            cannot_run(f"cannot mount a tmpfs here (the disk-full tests need root): "
                       f"{res.stderr.strip()}")
        mounted.append(path)
        return path

    def grow(path, size):
        subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)

    mount.grow = grow
    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], check=False)


def insert_rows(conn, n):
    """n commits of one ROW-byte row each; every one must succeed."""
    for _ in range(n):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(?))", (ROW,))


def sync_fails_saying(walrust, conn, *words):
    """walrust_sync() with a short timeout must fail, its message (or last_error) naming
    every word: what is full."""
    try:
        conn.execute("SELECT walrust_sync('main', 2000)").fetchone()
    except Exception as e:  # sqlite3.OperationalError
        message = str(e)
    else:
        raise AssertionError("walrust_sync() succeeded with the disk full")
    assert message.startswith("walrust: ") and "\n" not in message, message
    status = walrust.status(conn)
    for word in words:
        assert word in message or word in (status["last_error"] or ""), (word, message, status)
    return status


def test_a_full_shadow_directory(tmp_path, walrust, connect, restore_and_compare, small_fs):
    shadow = small_fs("shadow", "2m")
    replica = Replica.file(tmp_path / "replica")
    conn = connect(tmp_path / "app.db", replica, sync_interval=0, shadow_dir=shadow)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    walrust.sync(conn)
    insert_rows(conn, 120)  # ~6 MB of commits into 2 MB: the database stays writable
    status = sync_fails_saying(walrust, conn, "No space left on device")
    assert status["uploaded_txid"] < 120, status
    full_error = status["last_error"] or ""

    small_fs.grow(shadow, "64m")  # space returns
    insert_rows(conn, 1)
    walrust.sync(conn)
    assert walrust.status(conn)["last_error"] is None
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 121
    restore_and_compare(replica, conn)

    # The error said which directory was full.
    assert str(shadow) in full_error, (
        f"the error while the shadow directory was full does not name it: {full_error}"
    )


def test_no_room_for_the_spare_segment(tmp_path, walrust, connect, restore_and_compare, small_fs):
    """The spare (a segment's worth of zeros written ahead, 9 MiB) cannot fit beside a
    half-full segment in 12 MiB: it must give its space back, and the log rolls without it
    (16 MB of commits: past the 8 MiB roll)."""
    shadow = small_fs("shadow", "12m")
    replica = Replica.file(tmp_path / "replica")
    conn = connect(tmp_path / "app.db", replica, sync_interval=0, shadow_dir=shadow)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    walrust.sync(conn)
    log = shadow / "app.db-walrust" / "log"
    first = sorted(log.glob("*.seg"))
    assert first, f"no segment in {log}: {os.listdir(shadow)}"
    insert_rows(conn, 320)
    walrust.sync(conn)
    assert walrust.status(conn)["last_error"] is None
    segments = sorted(log.glob("*.seg"))
    assert segments[-1].name > first[-1].name, f"the log never rolled: {segments}"
    assert not list(log.glob("spare.tmp*")), f"a half-written spare holds space: {os.listdir(log)}"
    restore_and_compare(replica, conn)


def test_a_shadow_directory_filled_by_the_log_still_uploads(tmp_path, walrust, connect,
                                                           restore_and_compare, small_fs):
    """With uploads an hour apart, 16 MB of commits fill a 12 MiB shadow directory: appends
    fail (the commits stay in the WAL) and no LTX file fits there either. walrust_sync() must
    still get everything up: the file is built in the system's temporary directory, and the
    upload frees the log's space."""
    shadow = small_fs("shadow", "12m")
    replica = Replica.file(tmp_path / "replica")
    conn = connect(tmp_path / "app.db", replica, sync_interval=3600000, shadow_dir=shadow)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    walrust.sync(conn)
    insert_rows(conn, 320)
    walrust.sync(conn)
    walrust.sync(conn)  # the commits the log could not take, caught up from the WAL
    assert walrust.status(conn)["last_error"] is None
    restore_and_compare(replica, conn)


def test_a_full_replica_directory(tmp_path, walrust, connect, restore_and_compare, small_fs):
    root = small_fs("replica", "1m")
    replica = Replica.file(root / "app")
    conn = connect(tmp_path / "app.db", replica, sync_interval=0)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    walrust.sync(conn)
    insert_rows(conn, 60)  # ~3 MB for 1 MB: the database stays writable
    status = sync_fails_saying(walrust, conn, "No space left on device", replica.url)
    assert status["pending_txns"] > 0, status
    # What is in the replica is whole: no file half written by a failed upload.
    check = walrust.memory()
    verify = check.execute("SELECT walrust_verify(?)", (replica.url,)).fetchone()[0]
    assert '"ok":true' in verify.replace(" ", ""), verify

    small_fs.grow(root, "64m")  # space returns
    walrust.sync(conn)
    assert walrust.status(conn)["last_error"] is None
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 60
    restore_and_compare(replica, conn)


def test_a_database_larger_than_the_room_in_its_shadow_directory(tmp_path, walrust, connect,
                                                                restore_and_compare, small_fs):
    """A 10 MB database (written before replication starts, incompressible) and 4 MiB free
    in its shadow directory: its snapshot cannot be built there. As for a batch, the file is
    then built in the system's temporary directory, and the replica gets its snapshot."""
    shadow = small_fs("shadow", "4m")
    db = tmp_path / "app.db"
    with closing(sqlite3.connect(db)) as c:
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
        with c:
            for _ in range(200):
                c.execute("INSERT INTO t(v) VALUES (randomblob(?))", (ROW,))
    replica = Replica.file(tmp_path / "replica")
    conn = connect(db, replica, sync_interval=0, shadow_dir=shadow)
    walrust.sync(conn)
    status = walrust.status(conn)
    assert status["last_error"] is None, status
    assert any(f.level == 9 for f in replica.ltx_files()), "no snapshot in the replica"
    insert_rows(conn, 1)
    walrust.sync(conn)
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 201
    restore_and_compare(replica, conn)
    leftovers = [p.name for p in Path(tempfile.gettempdir()).glob("*.ltx.*.tmp")]
    assert not leftovers, f"temporary LTX files left behind: {leftovers}"
