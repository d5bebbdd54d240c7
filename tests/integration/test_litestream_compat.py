"""Litestream 0.5.17 is the oracle (SPEC 5): it restores what walrust writes, and walrust
restores what it writes."""

from harness import assert_integrity_ok, assert_same_contents, db_contents, open_plain
from workload import RandomWorkload


def test_litestream_restores_a_walrust_replica(tmp_path, walrust, connect, replica, litestream, restore_and_compare):
    conn = connect(tmp_path / "app.db", replica, sync_interval=0)
    work = RandomWorkload(conn, seed="litestream-restores-walrust")
    work.setup()
    work.run(30)
    middle = walrust.sync(conn)
    middle_contents = db_contents(conn)
    work.run(30)
    work.big_transaction(total_bytes=1 << 20)
    work.op_checkpoint()
    work.run(10)
    newest = walrust.sync(conn)

    ls = litestream(tmp_path / "app.db", replica)  # only its restore; never `replicate` here
    out = tmp_path / "litestream-latest.db"
    ls.restore(out)
    assert_integrity_ok(out, "litestream restore")
    assert_same_contents(db_contents(conn), db_contents(out), "litestream restore of walrust's replica")

    out = tmp_path / "litestream-middle.db"
    ls.restore(out, txid=middle)
    assert_integrity_ok(out, f"litestream restore -txid {middle:016x}")
    assert_same_contents(middle_contents, db_contents(out), f"litestream restore -txid {middle:016x}")
    assert newest > middle


def test_walrust_restores_a_litestream_replica(tmp_path, walrust, replica, litestream, restore_and_compare):
    db = tmp_path / "app.db"
    # The application: plain SQLite (the unix VFS, not walrust), one long-lived connection as
    # applications have. Litestream runs the checkpoints (an application's own TRUNCATE or
    # RESTART checkpoint waits for Litestream's read lock, which only makes the test slow).
    conn = open_plain(db)
    conn.execute("PRAGMA journal_mode=WAL")
    work = RandomWorkload(conn, seed="walrust-restores-litestream", without=["op_checkpoint"])
    work.setup()
    ls = litestream(db, replica).start()
    ls.wait_replicated(conn)
    work.run(30)
    work.big_transaction(total_bytes=1 << 20)
    ls.wait_replicated(conn)
    work.run(30)
    ls.wait_replicated(conn)
    ls.stop()

    restore_and_compare(replica, conn)
