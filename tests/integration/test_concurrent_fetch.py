"""Restore and verify download many files at once (src/store/fetch.rs) yet apply and check them
in TXID order: a replica of many level-0 files restores to the database, at its newest point
and at a point in the middle, and one damaged object among them is reported by name and leaves
no output (issue 15, item 5; SPEC 4, 6)."""

import json
import sqlite3

import pytest
from harness import db_contents, restore_refused

COMMITS = 150  # more than the download window (128 files) ahead of the one being applied


def many_level0(tmp_path, walrust, connect, replica):
    """A replica of a snapshot and COMMITS level-0 files, one per walrust_sync()."""
    conn = connect(tmp_path / "app.db", replica, walrust_sync_interval=0)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT)")
    walrust.sync(conn)
    middle = None
    for i in range(COMMITS):
        conn.execute("INSERT INTO t(v) VALUES (?)", (f"row {i} " + "x" * (i % 300),))
        txid = walrust.sync(conn)
        if i == COMMITS // 2:
            middle = (txid, db_contents(conn))
    level0 = [f for f in replica.ltx_files() if f.level == 0]
    assert len(level0) >= COMMITS, f"expected {COMMITS} level-0 files, found {len(level0)}"
    return conn, level0, middle


def test_restore_through_many_level0_files_equals_the_database(
    tmp_path, walrust, connect, replica, restore_and_compare
):
    conn, _, (mid_txid, mid_contents) = many_level0(tmp_path, walrust, connect, replica)
    restore_and_compare(replica, conn)
    # A point in the middle of the chain: the plan stops there, the rest is never applied.
    restore_and_compare(replica, None, target=mid_txid, expected=mid_contents)

    report = json.loads(
        walrust.memory().execute("SELECT walrust_verify(?)", (replica.url,)).fetchone()[0]
    )
    assert report["ok"], report["problems"]
    assert report["files_checked"] == len(replica.ltx_files())


def test_a_damaged_object_among_many_is_named_and_leaves_nothing(
    tmp_path, walrust, connect, replica
):
    _, level0, _ = many_level0(tmp_path, walrust, connect, replica)
    victim = level0[len(level0) * 2 // 3]
    data = bytearray(victim.path.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.path.write_bytes(bytes(data))

    message = restore_refused(walrust, replica, tmp_path)
    assert victim.path.name in message, f"the damaged file is not named: {message}"

    with pytest.raises(sqlite3.Error) as err:
        walrust.memory().execute("SELECT walrust_verify(?)", (replica.url,)).fetchone()
    message = str(err.value)
    assert message.startswith("walrust: integrity error"), f"got: {message}"
    assert victim.path.name in message, f"verify does not name the damaged file: {message}"
