"""Replication needs journal_mode=WAL (SPEC 2)."""

import json
import os
import re
import sqlite3
import subprocess
import time

import pytest

from harness import assert_same_contents, db_contents, file_uri, open_plain


def test_pragma_replica_on_a_rollback_journal_database_is_an_error(tmp_path, connect, replica):
    conn = connect(tmp_path / "app.db", wal=False)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")
    with pytest.raises(sqlite3.Error) as err:
        conn.execute(f"PRAGMA walrust_replica = '{replica.url}'").fetchall()
    message = str(err.value)
    assert message.startswith("walrust: "), message
    assert re.search(r"\bWAL\b", message, re.IGNORECASE), f"does not mention WAL: {message}"
    # Nothing replicates and nothing was created.
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not replica.objects.exists() or not any(replica.objects.iterdir())
    assert sorted(os.listdir(tmp_path)) == ["app.db"]
    conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2


def test_uri_replica_starts_when_the_database_switches_to_wal(tmp_path, walrust, connect, replica, restore_and_compare):
    conn = connect(tmp_path / "app.db", replica, wal=False)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"before {i}",) for i in range(10)])
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    # Until WAL, walrust_status() says why nothing replicates (the SPEC leaves the wording
    # open, but it must name WAL), and nothing has been uploaded.
    before = walrust.status(conn)
    assert re.search(r"\bWAL\b", before["last_error"] or ""), before
    assert before["uploaded_txid"] == 0 and before["last_upload_at"] is None, before
    assert not replica.ltx_files(), "something replicated before WAL"

    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.executemany("INSERT INTO t(v) VALUES (?)", [(f"after {i}",) for i in range(10)])
    walrust.sync(conn)
    restore_and_compare(replica, conn)  # the first snapshot carries the rows from before WAL


def test_pragma_replica_on_a_wal_database_replicates(tmp_path, walrust, connect, replica, restore_and_compare):
    conn = connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    conn.execute("INSERT INTO t(v) VALUES ('written before replication was turned on')")
    conn.execute(f"PRAGMA walrust_replica = '{replica.url}'").fetchall()
    assert conn.execute("PRAGMA walrust_replica").fetchone()[0] == replica.url
    conn.executemany("INSERT INTO t(v) VALUES (?)", [(str(i),) for i in range(10)])
    walrust.sync(conn)
    restore_and_compare(replica, conn)


# About 1200 WAL frames in one transaction.
BIG_TXN = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1200) "
    "INSERT INTO t(v) SELECT randomblob(3000) FROM n"
)


def _open_fds(path):
    """How many of this process's file descriptors are open on `path` (the application's
    connection has one; walrust's checkpoint connection another)."""
    target = os.path.realpath(path)
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == target:
                count += 1
        except OSError:
            pass
    return count


def _wait_for(condition, what):
    deadline = time.monotonic() + 60
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.05)


def test_leaving_wal_mode_pauses_replication_and_wal_resumes_it(tmp_path, walrust, connect, replica, restore_and_compare):
    """PRAGMA journal_mode=DELETE works as it does without walrust, even while walrust's
    checkpoint connection is open; replication then pauses (walrust_status and walrust_sync
    say so) and resumes with WAL. After the last close, another process can take the database
    at once, and no -wal/-shm file is left behind."""
    db = tmp_path / "app.db"
    conn = connect(db, replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    # Past 1000 WAL frames the checkpoint thread opens its own connection.
    conn.execute(BIG_TXN)
    walrust.sync(conn)
    _wait_for(lambda: _open_fds(db) >= 2, "walrust's checkpoint connection")

    assert conn.execute("PRAGMA journal_mode=DELETE").fetchone()[0] == "delete"
    paused = walrust.status(conn)["last_error"]
    assert paused and paused.startswith("walrust: ") and "journal_mode=WAL" in paused, paused
    conn.execute("INSERT INTO t(v) VALUES (x'01')")
    with pytest.raises(sqlite3.Error, match="not in WAL mode; run PRAGMA journal_mode=WAL"):
        walrust.sync(conn)

    assert conn.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    conn.execute("INSERT INTO t(v) VALUES (x'02')")
    walrust.sync(conn)
    assert walrust.status(conn)["last_error"] is None
    restore_and_compare(replica, conn)  # the row written outside WAL mode is there too

    conn.execute(BIG_TXN)
    walrust.sync(conn)
    _wait_for(lambda: _open_fds(db) >= 2, "walrust's checkpoint connection")
    conn.close()
    # Another process (plain SQLite, no busy timeout) gets the database to itself at once.
    other = subprocess.run(
        ["/usr/bin/python3", "-c",
         "import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0);"
         " print(c.execute('PRAGMA journal_mode=DELETE').fetchone()[0])", str(db)],
        capture_output=True, text=True, timeout=60,
    )
    assert other.returncode == 0 and other.stdout.strip() == "delete", other.stderr
    assert sorted(p for p in os.listdir(tmp_path) if p.startswith("app.db")) == [
        "app.db", "app.db-walrust",
    ]


@pytest.mark.parametrize("pause", [0, 0.002, 0.02])
def test_a_close_right_after_the_first_commits_leaves_the_database_file_whole(
        tmp_path, walrust, connect, new_replica, pause):
    """The last close of a database whose replication just started: the uploader's first
    snapshot is then opening its connection (or waiting for a commit to fix its point). The
    close lets it finish, so SQLite's close still checkpoints and deletes the WAL, and a
    snapshot that begins after the close removes the `-wal` and `-shm` its own connection made
    again: the database file alone holds every commit, as it would without walrust, and the
    replica restores them."""
    for i in range(4):
        db = tmp_path / f"app{i}.db"
        replica = new_replica(f"replica{i}")
        conn = connect(db, replica)
        conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
        for n in range(i + 1):
            conn.execute("INSERT INTO t(v) VALUES (?)", (f"row {n}",))
        expected = db_contents(conn)
        time.sleep(pause)
        conn.close()
        left = sorted(p.name for p in tmp_path.iterdir() if p.name in (f"{db.name}-wal", f"{db.name}-shm"))
        assert left == [], f"the close left {left} beside {db.name}"
        alone = sqlite3.connect(file_uri(db, vfs="unix", immutable=1), uri=True)
        assert_same_contents(expected, db_contents(alone), "database file after the close")
        out = tmp_path / f"restored{i}.db"
        walrust.restore(replica, out)
        assert_same_contents(expected, db_contents(open_plain(out)))


LATE_SNAPSHOT_CHILD = r"""
import os, sqlite3, sys, time
ext, db, url = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
conn = sqlite3.connect(f"file:{db}?walrust_replica={url}&walrust_close_timeout=200", uri=True,
                       isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t(v TEXT)")
conn.execute("INSERT INTO t VALUES ('the replicated database')")
conn.close()  # its wait (200 ms) ends before the uploader's first snapshot begins
for suffix in ("", "-wal", "-shm"):
    if os.path.exists(db + suffix):
        os.remove(db + suffix)
other = sqlite3.connect(f"file:{db}?vfs=unix", uri=True, isolation_level=None)
other.execute("PRAGMA journal_mode=WAL")
other.execute("CREATE TABLE t(v TEXT)")
other.execute("INSERT INTO t VALUES ('another database at that path')")
time.sleep(3)  # the snapshot wakes (after 1.5 s) while this one is open
print(other.execute("SELECT v FROM t").fetchall())
"""


def test_a_snapshot_that_begins_after_the_last_close_leaves_the_path_alone(tmp_path, walrust,
                                                                          failpoint_ext, replica):
    """The last close waited its walrust_close_timeout and returned before the uploader's
    first snapshot began; the application then deleted the database and made another at that
    path. The snapshot must not open the path (it names another database now): it gives up,
    and the shadow log keeps the commits for the next open. Before, it snapshotted the other
    database into this one's replica, and a restore returned the other database."""
    db = tmp_path / "app.db"
    run = subprocess.run(
        ["/usr/bin/python3", "-c", LATE_SNAPSHOT_CHILD, str(failpoint_ext), str(db), replica.url],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, WALRUST_FAILPOINTS="snapshot.begins~1500"),
    )
    assert run.returncode == 0, run.stderr
    assert "another database at that path" in run.stdout
    other = sqlite3.connect(file_uri(db, vfs="unix", immutable=1), uri=True)
    assert other.execute("SELECT v FROM t").fetchall() == [("another database at that path",)]
    # Nothing of the other database reached the replica; the first one's commits wait in its
    # shadow log for its next open.
    with pytest.raises(sqlite3.Error, match="nothing to restore"):
        walrust.restore(replica, tmp_path / "restored.db")


CLOSING_SNAPSHOT_CHILD = r"""
import os, sqlite3, sys, time, urllib.parse
ext, db, url = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
url = urllib.parse.quote(url, safe="/:")
conn = sqlite3.connect(f"file:{db}?walrust_replica={url}&walrust_close_timeout=200", uri=True,
                       isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t(v TEXT)")
conn.execute("INSERT INTO t VALUES ('the replicated database')")
conn.close()
time.sleep(5)  # every failpoint's sleep is over; the process still runs
print(sorted(p for p in os.listdir(os.path.dirname(db)) if p.startswith(os.path.basename(db))))
"""


def test_a_snapshot_that_begins_as_the_last_close_ends_opens_nothing(tmp_path, walrust,
                                                                    failpoint_ext, replica):
    """The uploader's first snapshot begins in the instant between the last close's wait for
    walrust's connections and the end of that close (`close.waited`): the close no longer
    waits for it, so it must open nothing. Before, it opened the database after the
    application had closed it, and its connection (held open by `snapshot.file_written`)
    made the `-wal` and `-shm` files again and left them beside the closed database. The
    commits stay in the shadow log and the next open uploads them."""
    db = tmp_path / "app.db"
    run = subprocess.run(
        ["/usr/bin/python3", "-c", CLOSING_SNAPSHOT_CHILD, str(failpoint_ext), str(db),
         replica.url],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, WALRUST_FAILPOINTS=(
            "snapshot.begins~400,close.waited~1500,snapshot.file_written~2000")),
    )
    assert run.returncode == 0, run.stderr
    left = eval(run.stdout.strip().splitlines()[-1])
    assert left == ["app.db", "app.db-walrust"], f"after the close: {left}"
    # The next open uploads what the first process committed.
    conn = sqlite3.connect(file_uri(db, walrust_replica=replica.url), uri=True,
                           isolation_level=None)
    walrust.sync(conn)
    expected = db_contents(conn)
    conn.close()
    out = tmp_path / "restored.db"
    walrust.restore(replica, out)
    assert_same_contents(expected, db_contents(open_plain(out)))
    assert open_plain(out).execute("SELECT v FROM t").fetchall() == [("the replicated database",)]


def test_a_journal_mode_change_that_fails_leaves_background_checkpoints_on(tmp_path, walrust, connect, replica):
    """`PRAGMA journal_mode=DELETE` asks for the EXCLUSIVE lock, as the last close does, and
    walrust readies itself for a close; when another process's connection makes it fail, the
    application goes on writing in WAL mode, and walrust's checkpoints must go on too."""
    db = tmp_path / "app.db"
    conn = connect(db, replica)
    conn.execute("CREATE TABLE t(v BLOB)")
    other = subprocess.Popen(
        ["/usr/bin/python3", "-c",
         "import sqlite3, sys, time\n"
         f"c = sqlite3.connect('file:{db}?vfs=unix', uri=True)\n"
         "c.execute('SELECT count(*) FROM t').fetchall()\n"
         "print('open', flush=True)\n"
         "sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "open"
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            conn.execute("PRAGMA journal_mode=DELETE").fetchall()
        size = os.path.getsize(db)
        for _ in range(300):
            conn.execute("INSERT INTO t VALUES (randomblob(3000))")
        _wait_for(lambda: os.path.getsize(db) > size, "a background checkpoint")
        walrust.sync(conn)
    finally:
        other.communicate("", timeout=60)


REPLICATING_WRITER = r"""
import sqlite3, sys, urllib.parse
ext, db, url = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
url = urllib.parse.quote(url, safe="/:")
conn = sqlite3.connect(f"file:{db}?walrust_replica={url}", uri=True, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t(v TEXT)")
conn.execute("INSERT INTO t VALUES ('written with walrust')")
conn.execute("SELECT walrust_sync()").fetchall()
conn.close()
"""

PLAIN_WRITER_KILLED = r"""
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
for i in range(50):
    conn.execute("INSERT INTO t VALUES (?)", (f"written without walrust {i}",))
os.kill(os.getpid(), signal.SIGKILL)
"""

FIRST_READ_CHILD = r"""
import sqlite3, sys, time, urllib.parse
ext, db, url = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
url = urllib.parse.quote(url, safe="/:")
# No busy timeout, as the sqlite3 shell and SQLite's C API have by default.
conn = sqlite3.connect(f"file:{db}?walrust_replica={url}", uri=True, isolation_level=None,
                       timeout=0)
time.sleep(0.5)  # walrust's uploader starts meanwhile; the application reads after it
try:
    print(conn.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
except sqlite3.OperationalError as e:
    print(f"first read failed: {e}", flush=True)
    sys.exit(1)
conn.execute("SELECT walrust_sync()").fetchall()
conn.close()
"""


def crash_with_commits_in_the_wal(walrust, db, replica):
    """A replicated database, then 50 commits by a writer without walrust, killed -9: the WAL
    holds commits the shadow log lacks. Each step in a process of its own: the recovery
    happens only when no process has the database open."""
    setup = subprocess.run(
        ["/usr/bin/python3", "-c", REPLICATING_WRITER, str(walrust.ext), str(db), replica.url],
        capture_output=True, text=True, timeout=60)
    assert setup.returncode == 0, setup.stderr
    writer = subprocess.run(["/usr/bin/python3", "-c", PLAIN_WRITER_KILLED, str(db)],
                            capture_output=True, text=True, timeout=60)
    assert writer.returncode == -9, writer.stderr


def test_the_first_read_after_a_crash_is_not_made_busy_by_walrust(tmp_path, walrust,
                                                                  failpoint_ext, replica):
    """A process dies with commits in the WAL (here a writer without walrust, killed -9), so
    the next process to open the database runs WAL recovery at its first read. walrust's
    uploader, starting at that open, finds those commits missing from its shadow log and
    catches up through a connection of its own; when that connection ran the recovery (made
    slow here by `recovery.internal`), the application's first read, without a busy timeout,
    failed with "database is locked". walrust now leaves the recovery to the application's
    first read (for up to 2 s after the open). Nothing is lost: the commits are caught up and
    restored."""
    db = tmp_path / "app.db"
    crash_with_commits_in_the_wal(walrust, db, replica)
    assert (tmp_path / "app.db-wal").exists()
    run = subprocess.run(
        ["/usr/bin/python3", "-c", FIRST_READ_CHILD, str(failpoint_ext), str(db), replica.url],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, WALRUST_FAILPOINTS="recovery.internal~1500"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.split() == ["51"], run.stdout
    out = tmp_path / "restored.db"
    walrust.restore(replica, out)
    assert open_plain(out).execute("SELECT count(*) FROM t").fetchone() == (51,)


WAITS_FIRST_CHILD = r"""
import sqlite3, sys, urllib.parse
ext, db, url, call = sys.argv[1:5]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
url = urllib.parse.quote(url, safe="/:")
conn = sqlite3.connect(f"file:{db}?walrust_replica={url}", uri=True, isolation_level=None)
# The first statement after the open, before any read of the application's own.
try:
    print(conn.execute(f"SELECT {call}").fetchone()[0], flush=True)
except sqlite3.OperationalError as e:
    print(f"{call} failed: {e}", flush=True)
    sys.exit(1)
print(conn.execute("SELECT count(*) FROM t").fetchone()[0], flush=True)
conn.close()
"""


@pytest.mark.parametrize("call", ["walrust_sync('main', 20000)",
                                  "walrust_snapshot('main', 20000)"])
def test_a_wait_for_the_replica_first_after_a_crash_does_the_recovery_itself(
        tmp_path, walrust, failpoint_ext, replica, call):
    """After a crash the WAL holds commits the shadow log lacks, and walrust's uploader leaves
    the WAL's recovery to the application's first read (for 2 s after the open, here made
    10 minutes by `recovery.grace`). An application whose first statement waits for the
    replica (`walrust_sync()`, `walrust_snapshot()`) waited out that grace, since it had not
    read: the call is now that first read (through the caller's connection), and returns as
    soon as the commits are uploaded. The old code timed out here."""
    db = tmp_path / "app.db"
    crash_with_commits_in_the_wal(walrust, db, replica)
    run = subprocess.run(
        ["/usr/bin/python3", "-c", WAITS_FIRST_CHILD, str(failpoint_ext), str(db), replica.url,
         call],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, WALRUST_FAILPOINTS="recovery.grace~600000"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    txid, rows = run.stdout.split()
    assert int(txid) >= 52 and rows == "51", run.stdout
    out = tmp_path / "restored.db"
    walrust.restore(replica, out)
    assert open_plain(out).execute("SELECT count(*) FROM t").fetchone() == (51,)


WRITES_DURING_A_HOLD = r"""
import json, sqlite3, sys, threading, time, urllib.parse
ext, db, url = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
uri = f"file:{db}?walrust_replica={urllib.parse.quote(url, safe='/:')}"
# No busy timeout, as the sqlite3 shell and SQLite's C API have by default.
conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=0, check_same_thread=False)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t(v INTEGER)")
conn.execute("INSERT INTO t VALUES (0)")
conn.execute("SELECT walrust_sync()").fetchall()
taken = []
def snapshot():
    other = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
    taken.append(other.execute("SELECT walrust_snapshot('main', 60000)").fetchone()[0])
    other.close()
s = threading.Thread(target=snapshot)
s.start()
# No commit for 1.5 s: the snapshot fixes its point alone (after 1 s), with the write lock held
# for 2 s by the failpoint; these writes meet that hold.
time.sleep(1.5)
failed, n = [], 0
while s.is_alive() or n < 5:
    n += 1
    try:
        conn.execute("INSERT INTO t VALUES (?)", (n,))
    except sqlite3.OperationalError as e:
        failed.append(f"insert {n}: {e}")
    time.sleep(0.05)
s.join()
sync = conn.execute("SELECT walrust_sync()").fetchone()[0]
rows = conn.execute("SELECT count(*) FROM t").fetchone()[0]
conn.close()
print(json.dumps({"failed": failed, "rows": rows, "snapshot": taken, "sync": sync}), flush=True)
"""


def test_a_writer_without_busy_timeout_waits_out_walrusts_own_write_lock(tmp_path, walrust,
                                                                         failpoint_ext, replica):
    """walrust's own connection holds the WAL write lock for moments (here a snapshot fixing its
    point alone after a second without commits, the hold widened to 2 s by a failpoint). An
    application connection of the same process without a busy timeout that wrote meanwhile
    failed with "database is locked"; now its request waits for walrust's hold to end, and
    every write succeeds and is restored."""
    db = tmp_path / "app.db"
    run = subprocess.run(
        ["/usr/bin/python3", "-c", WRITES_DURING_A_HOLD, str(failpoint_ext), str(db),
         replica.url],
        capture_output=True, text=True, timeout=120,
        env=dict(os.environ, WALRUST_FAILPOINTS="internal.write_locked~2000", WALRUST_TRACE="1"),
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = json.loads(run.stdout)
    assert out["failed"] == [], out
    # The case happened: the snapshot took the lock itself, and a write met it.
    assert "snapshot takes the write lock itself" in run.stderr, run.stderr[-3000:]
    assert "an application's request for the write lock waited" in run.stderr, run.stderr[-3000:]
    assert out["snapshot"] and out["rows"] > 5, out
    restored = tmp_path / "restored.db"
    walrust.restore(replica, restored)
    assert open_plain(restored).execute("SELECT count(*) FROM t").fetchone() == (out["rows"],)
