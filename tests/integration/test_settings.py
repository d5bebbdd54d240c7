"""Settings and replica URLs that cannot work fail loudly (issue 13, SPEC 2-4), and settings
that do what SPEC 3 says."""

import re
import sqlite3
import time

import pytest

from harness import HANG_TIMEOUT


def test_a_bad_replica_root_in_the_environment_fails_the_open(tmp_path, walrust, connect, monkeypatch):
    walrust.load()
    # The message the PRAGMA gives for the same URL.
    conn = connect(tmp_path / "ok.db")
    with pytest.raises(sqlite3.Error) as pragma_err:
        conn.execute("PRAGMA walrust_replica = 'relative/root/app.db'").fetchall()
    expected = str(pragma_err.value).replace("ok.db", "app.db")
    assert expected.startswith("walrust: cannot replicate "), expected

    monkeypatch.setenv("WALRUST_REPLICA_ROOT", "relative/root")
    with pytest.raises(sqlite3.Error) as open_err:
        connect(tmp_path / "app.db")
    assert expected in str(open_err.value), (expected, str(open_err.value))


def test_walrust_snapshot_takes_a_timeout(tmp_path, walrust, connect):
    replica = tmp_path / "replica"
    conn = connect(tmp_path / "app.db", f"file://{replica}")
    conn.execute("CREATE TABLE t(x)")
    assert walrust.sync(conn) > 0
    # The replica directory becomes a file: every upload fails from now on.
    for p in sorted(replica.rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    replica.rmdir()
    replica.write_bytes(b"")
    with pytest.raises(sqlite3.Error) as err:
        conn.execute("SELECT walrust_snapshot('main', 300)").fetchone()
    message = str(err.value)
    assert re.match(r"walrust: snapshot of .*app\.db timed out after 300 ms: ", message), message
    assert "safe in the shadow log" in message, message


def test_a_bad_setting_in_the_environment_fails_the_open(tmp_path, walrust, connect, monkeypatch):
    walrust.load()
    monkeypatch.setenv("WALRUST_SYNC_INTERVAL", "9223372036854775807")
    with pytest.raises(sqlite3.Error) as err:
        connect(tmp_path / "app.db")
    message = str(err.value)
    assert "walrust: WALRUST_SYNC_INTERVAL: walrust_sync_interval = '9223372036854775807' is not valid" in message, message
    assert "from 0 to 86400000" in message, message
    monkeypatch.delenv("WALRUST_SYNC_INTERVAL")
    monkeypatch.setenv("WALRUST_RETENTION", "daily=7")
    conn = connect(tmp_path / "other.db")
    assert conn.execute("PRAGMA walrust_retention").fetchone()[0] == "hourly=24,daily=7,weekly=12,monthly=12"


@pytest.mark.parametrize("setting", ["on", "off"])
def test_compact_after_snapshot_runs_compaction_and_retention_after_each_snapshot(
        tmp_path, walrust, connect, replica, setting):
    """`walrust_compact_after_snapshot=on` (SPEC 3): after a snapshot, the uploading process
    runs compaction and retention itself. With a retention that keeps only the newest
    snapshot, the second snapshot's compaction removes the first snapshot and the level-0
    files it covers, and the replica still restores the newest state; `off` (the default)
    removes nothing."""
    retention = "hourly=0,daily=0,weekly=0,monthly=0"
    conn = connect(tmp_path / "app.db", replica, sync_interval=0, retention=retention,
                   compact_after_snapshot=setting)
    conn.execute("CREATE TABLE t(v TEXT)")
    snaps = []
    for round_ in range(2):
        for i in range(5):
            conn.execute("INSERT INTO t VALUES (?)", (f"round {round_} row {i}",))
        walrust.sync(conn)
        snaps.append(conn.execute("SELECT walrust_snapshot('main', 20000)").fetchone()[0])
    snap = snaps[-1]
    # A commit after the second snapshot: its level-0 file is the newest point's chain.
    conn.execute("INSERT INTO t VALUES ('after')")
    last = walrust.sync(conn)

    def old_files():
        return [f for f in replica.ltx_files() if f.max_txid < snap]

    if setting == "on":
        deadline = time.monotonic() + HANG_TIMEOUT
        while old_files():
            assert time.monotonic() < deadline, f"compaction after the snapshot at {snap} did not run: {old_files()}"
            time.sleep(0.05)
        assert [f.max_txid for f in replica.ltx_files() if f.level == 9] == [snap]
    else:
        time.sleep(1)  # compaction, had it been asked for, runs on the upload thread at once
        kept = {f.max_txid for f in replica.ltx_files() if f.level == 9}
        assert set(snaps) <= kept, (kept, snaps)
        assert any(f.level == 0 and f.max_txid < snap for f in replica.ltx_files())
    out = tmp_path / "restored.db"
    assert walrust.restore(replica, out) == last
    rows = sqlite3.connect(out).execute("SELECT count(*) FROM t").fetchone()[0]
    assert rows == 11
