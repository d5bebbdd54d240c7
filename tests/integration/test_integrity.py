"""A damaged replica file fails the restore loudly and leaves nothing behind (SPEC 4, 6)."""

import random

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
