"""Checkpoints off the commit path (SPEC 3 walrust_checkpoint, issue 8)."""

import os
import time

from harness import open_plain


def wal_size(db):
    wal = f"{db}-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else 0


def test_sustained_writes_keep_the_wal_bounded(tmp_path, walrust, connect, replica, restore_and_compare):
    db = tmp_path / "app.db"
    conn = connect(db, replica, sync_interval=100)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    biggest = 0
    for round_ in range(4):
        for _ in range(3000):
            conn.execute("INSERT INTO t(v) VALUES (randomblob(300))")
            biggest = max(biggest, wal_size(db))
        walrust.sync(conn)
        restore_and_compare(replica, conn)
    # 12,000 commits of ~1 page each: without checkpoints the WAL would pass 48 MB. The
    # background checkpointer starts at 1000 frames and restarts the WAL past 4000 (16 MB);
    # allow it to lag behind that on a busy machine.
    assert biggest < 32 << 20, f"WAL grew to {biggest} bytes"


def test_the_wal_shrinks_back_after_a_long_reader(tmp_path, walrust, connect, replica):
    db = tmp_path / "app.db"
    conn = connect(db, replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    reader = connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    for _ in range(3000):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(1000))")
    grown = wal_size(db)
    assert grown > 8 << 20  # the reader kept the checkpointer from restarting the WAL
    reader.execute("COMMIT")
    deadline = time.time() + 60
    while wal_size(db) > 1 << 20 and time.time() < deadline:
        time.sleep(0.2)
    assert wal_size(db) <= 1 << 20, f"WAL still {wal_size(db)} bytes after the reader closed (was {grown})"
    walrust.sync(conn)


def test_app_mode_checkpoints_exactly_as_sqlite_does(tmp_path, walrust, connect, replica):
    ours = tmp_path / "ours.db"
    plain_db = tmp_path / "plain.db"
    conn = connect(ours, replica, checkpoint="app")
    plain = open_plain(plain_db)
    plain.execute("PRAGMA journal_mode=WAL")
    sizes = []
    for c in (conn, plain):
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    for i in range(2500):
        for c in (conn, plain):
            c.execute("INSERT INTO t(v) VALUES (zeroblob(500))")
        if i % 100 == 0:
            sizes.append((wal_size(ours), wal_size(plain_db)))
    # SQLite's automatic checkpoint runs on the committing connection at 1000 frames in both:
    # the WAL files evolve identically.
    assert [a for a, _ in sizes] == [b for _, b in sizes], sizes
    walrust.sync(conn)
