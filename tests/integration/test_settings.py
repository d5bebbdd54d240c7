"""Settings and replica URLs that cannot work fail loudly (issue 13, SPEC 2-4)."""

import re
import sqlite3

import pytest


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
