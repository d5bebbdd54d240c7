"""A snapshot fixes its TXID alone when its own process does not commit (issue 15, item 6: one
connection of walrust's per database at a time). It takes the write lock to bring the shadow log
up to date, lets it go, then opens its read view, and keeps it only if `PRAGMA data_version`
shows no commit came in between. Here another process, without walrust, commits one row per
transaction while the idle process takes snapshots, and every snapshot must restore exactly the
database of its TXID. With the failpoint sleep the unlocked window is 40 ms wide, so commits
land in it and the snapshot retries. (The pages streamed are bounded by the fixed WAL position,
so a view one commit too new shows only if a checkpoint copies that commit's pages into the
database file meanwhile; the data_version check closes that window, which this test does not
reach deterministically.)"""

import subprocess
import time

import pytest

from test_history import PYTHON, Child, restored, snapshots

WRITER = r"""
import random, sqlite3, sys, time
c = sqlite3.connect(sys.argv[1], isolation_level=None)
# No checkpoint of its own: this writer has no walrust, and a WAL it restarted would lose
# commits walrust had not read yet (that case is a Resync, tested elsewhere).
c.execute("PRAGMA wal_autocheckpoint=0")
rng = random.Random(7)
for _ in range(int(sys.argv[2])):
    c.execute("INSERT INTO t(pad) VALUES (randomblob(40))")
    time.sleep(rng.uniform(0, 0.03))
c.close()
"""


@pytest.mark.parametrize("window_ms", [0, 40])
def test_a_snapshot_fixed_alone_labels_exactly_what_it_read(tmp_path, walrust, failpoint_ext,
                                                           replica, window_ms):
    db = tmp_path / "app.db"
    env = {"WALRUST_FAILPOINTS": f"snapshot.alone_unlocked~{window_ms}"} if window_ms else {}
    # No checkpoint either: a WAL the writer restarts after walrust's idle checkpoint would lose
    # commits not read yet, and their Resync would merge many commits into one TXID.
    a = Child(failpoint_ext, db, replica, env_extra=env, checkpoint="app")
    a.sql("PRAGMA journal_mode=WAL")
    a.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, pad BLOB)")
    a.sql("INSERT INTO t(pad) VALUES (x'00')")
    a.one("SELECT walrust_sync()")
    writer = subprocess.Popen([PYTHON, "-c", WRITER, str(db), "300"])
    taken = []
    try:
        while writer.poll() is None and len(taken) < 6:
            taken.append(a.one("SELECT walrust_snapshot('main', 60000)"))
    finally:
        writer.wait(timeout=120)
    assert writer.returncode == 0
    last = a.one("SELECT walrust_sync()")
    rows = a.one("SELECT count(*) FROM t")
    a.exit()
    assert taken, "no snapshot was taken while the writer ran"
    # Every commit of the writer is one row and one TXID: a snapshot at TXID t holds exactly
    # `rows - (last - t)` rows, or its pages are another TXID's.
    for t in sorted(set(taken)):
        got, contents = restored(walrust, replica, tmp_path, f"at-{t}.db", target=t)
        assert got == t
        n = len(contents["tables"]["t"])
        assert n == rows - (last - t), f"snapshot at TXID {t} holds {n} rows; expected {rows - (last - t)} (last TXID {last}, {rows} rows)"


def test_a_snapshot_with_nothing_new_since_the_last_one_is_that_one(tmp_path, walrust, connect,
                                                                    replica):
    """With no commit since the replica's newest snapshot (a database idle through its snapshot
    interval, `walrust_snapshot()` called twice), a snapshot is the one already there. It used
    to build the same file again, find its name taken (files are never replaced), and fail
    until the next commit: `walrust_snapshot()` timed out, and an idle database's
    `walrust_status()` showed "exists already" after every snapshot interval."""
    conn = connect(tmp_path / "app.db", replica, walrust_snapshot_interval=1)
    conn.execute("CREATE TABLE t(v)")
    conn.execute("INSERT INTO t VALUES (1)")
    txid = walrust.sync(conn)
    first = conn.execute("SELECT walrust_snapshot('main', 20000)").fetchone()[0]
    assert first == txid
    assert conn.execute("SELECT walrust_snapshot('main', 20000)").fetchone()[0] == first
    time.sleep(3.5)  # idle through three snapshot intervals
    status = walrust.status(conn)
    assert status["last_error"] is None, status
    assert [(f.min_txid, f.max_txid) for f in snapshots(replica)] == [(1, first)]
    conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT walrust_snapshot('main', 20000)").fetchone()[0] == first + 1
    assert walrust.status(conn)["last_error"] is None
    got, contents = restored(walrust, replica, tmp_path, "restored.db")
    assert got == first + 1 and len(contents["tables"]["t"]) == 2


def wait_for_snapshot(replica, txid):
    """Waits (a generous deadline, no timing claim) for the timer's snapshot at `txid`."""
    deadline = time.monotonic() + 60
    while txid not in [f.max_txid for f in snapshots(replica)]:
        assert time.monotonic() < deadline, f"no snapshot at the timer after the commit of {txid}"
        time.sleep(0.2)


def test_an_idle_database_takes_no_snapshot_connection_at_its_timer(tmp_path, walrust_ext,
                                                                      walrust, replica):
    """With nothing committed since its last snapshot, a database's snapshot timer starts over
    without opening a connection: before, every snapshot interval opened one, took the WAL
    write lock for an instant (a writer without a busy timeout in another process met it as
    "database is locked") and read the manifest, only to find the snapshot already there.
    Compaction still runs at each interval; after a commit the timer takes a new snapshot."""
    log = tmp_path / "child.log"
    a = Child(walrust_ext, tmp_path / "app.db", replica, env_extra={"WALRUST_TRACE": "1"},
              stderr_log=log, walrust_snapshot_interval=1)
    a.sql("PRAGMA journal_mode=WAL")
    a.sql("CREATE TABLE t(v)")
    a.sql("INSERT INTO t VALUES (1)")
    first = a.one("SELECT walrust_snapshot('main', 20000)")
    mark = len(log.read_text())
    time.sleep(3.5)  # idle through three snapshot intervals
    idle = log.read_text()[mark:]
    a.sql("INSERT INTO t VALUES (2)")
    second = a.one("SELECT walrust_sync()")
    # The timer, not a call, takes the next snapshot now that something was committed.
    wait_for_snapshot(replica, second)
    status = a.one("SELECT walrust_status()")
    a.exit()
    assert "the timer starts over" in idle, idle[-3000:]
    # No snapshot connection while idle.
    assert "waits for a commit" not in idle, idle[-3000:]
    assert second == first + 1
    assert '"last_error":null' in status.replace(" ", ""), status
    assert [f.max_txid for f in snapshots(replica)] == [first, second]
    got, contents = restored(walrust, replica, tmp_path, "restored.db")
    assert got == second and len(contents["tables"]["t"]) == 2


def test_a_process_that_reopens_an_idle_database_takes_no_snapshot_connection(tmp_path, walrust_ext,
                                                                              walrust, replica):
    """The same for a process that did not take the replica's newest snapshot: it reopens a
    database whose every commit the replica has, up to a snapshot the manifest names. Its
    timer used to go the whole way once (a connection, an instant of the write lock, a read
    of the manifest) before it knew of a snapshot."""
    db = tmp_path / "app.db"
    a = Child(walrust_ext, db, replica)
    a.sql("PRAGMA journal_mode=WAL")
    a.sql("CREATE TABLE t(v)")
    a.sql("INSERT INTO t VALUES (1)")
    first = a.one("SELECT walrust_snapshot('main', 20000)")
    a.exit()
    log = tmp_path / "child.log"
    b = Child(walrust_ext, db, replica, env_extra={"WALRUST_TRACE": "1"}, stderr_log=log,
              walrust_snapshot_interval=1)
    assert b.one("SELECT count(*) FROM t") == 1
    assert b.one("SELECT walrust_sync()") == first
    time.sleep(3.5)  # idle through three snapshot intervals
    idle = log.read_text()
    b.sql("INSERT INTO t VALUES (2)")
    second = b.one("SELECT walrust_sync()")
    wait_for_snapshot(replica, second)
    b.exit()
    assert "the timer starts over" in idle, idle[-3000:]
    assert "waits for a commit" not in idle, idle[-3000:]
    assert [f.max_txid for f in snapshots(replica)] == [first, second]
