"""A damaged replica file fails the restore loudly and leaves nothing behind (SPEC 4, 6)."""

import json
import random
import sqlite3

import pytest

from harness import restore_refused


@pytest.mark.parametrize("where", ["header", "middle", "last"])
def test_flipped_byte_fails_restore_and_leaves_nothing(tmp_path, walrust, connect, replica, where):
    rng = random.Random(where)
    conn = connect(tmp_path / "app.db", replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    for i in range(50):
        conn.execute("INSERT INTO t(v) VALUES (?)", (rng.randbytes(100 + 37 * i),))
    walrust.sync(conn)
    conn.execute("BEGIN")
    for i in range(50):
        conn.execute("INSERT INTO t(v) VALUES (?)", (rng.randbytes(2000),))
    conn.execute("COMMIT")
    walrust.sync(conn)

    # Damage every file that holds the newest transaction: whichever a restore of the latest
    # state reads, it reads a damaged one.
    files = replica.ltx_files()
    newest = max(f.max_txid for f in files)
    damaged = [f for f in files if f.max_txid == newest]
    for f in damaged:
        data = bytearray(f.path.read_bytes())
        # header: byte 40 of the 100-byte LTX header; last: the file checksum in the trailer.
        pos = {"header": 40, "middle": len(data) // 2, "last": len(data) - 1}[where]
        data[pos] ^= 0x01
        f.path.write_bytes(bytes(data))

    restore_refused(walrust, replica, tmp_path)


def test_a_restore_whose_database_fails_integrity_check_leaves_nothing(tmp_path, walrust,
                                                                      connect, replica):
    """Every LTX file is sound, but the database they hold is not: an index whose schema was
    rewritten under it (`writable_schema`), so `PRAGMA integrity_check` finds rows missing
    from it. `walrust_restore()` runs that check before it puts the file in place (SPEC 6),
    fails with its first line, and leaves nothing at the output path."""
    conn = connect(tmp_path / "app.db", replica)
    conn.execute("CREATE TABLE t(a, b)")
    conn.execute("CREATE INDEX i ON t(a)")
    conn.executemany("INSERT INTO t VALUES (?, ?)", [(i, 100 - i) for i in range(50)])
    conn.execute("PRAGMA writable_schema=ON")
    conn.execute("UPDATE sqlite_schema SET sql='CREATE INDEX i ON t(b)' WHERE name='i'")
    conn.execute("PRAGMA writable_schema=RESET")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] != "ok"
    walrust.sync(conn)
    message = restore_refused(walrust, replica, tmp_path)
    assert "integrity_check" in message and "missing from index i" in message, message


def test_verify_finds_a_missing_level0_file(tmp_path, walrust, connect, replica):
    """`walrust_verify()` checks the TXID chain, not only the files there (SPEC 4): a level-0
    file removed from the middle of the newest restore point's chain fails it, as a file the
    manifest names that is missing and as a gap in the chain."""
    conn = connect(tmp_path / "app.db", replica, sync_interval=0)
    conn.execute("CREATE TABLE t(a)")
    for i in range(6):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        walrust.sync(conn)
    verify = "SELECT walrust_verify(?)"
    assert json.loads(walrust.memory().execute(verify, (replica.url,)).fetchone()[0])["ok"]
    level0 = sorted((f for f in replica.ltx_files() if f.level == 0), key=lambda f: f.min_txid)
    assert len(level0) >= 4, level0
    gone = level0[len(level0) // 2]
    gone.path.unlink()
    with pytest.raises(sqlite3.Error) as err:
        walrust.memory().execute(verify, (replica.url,)).fetchone()
    message = str(err.value)
    assert message.startswith("walrust: integrity error") and "but it is missing" in message
    assert "has a gap" in message, message
