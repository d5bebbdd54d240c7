"""Replication needs journal_mode=WAL (SPEC 2)."""

import os
import re
import sqlite3

import pytest


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
