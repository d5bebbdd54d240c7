"""A seeded random workload, replicated, restored, compared row for row (milestone 1)."""

import pytest

from workload import RandomWorkload


@pytest.mark.parametrize("page_size", [512, 4096, 65536])
def test_random_workload_restores_row_for_row(tmp_path, walrust, connect, replica, restore_and_compare, page_size):
    conn = connect(tmp_path / "app.db", replica, page_size=page_size, sync_interval=0)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == page_size
    work = RandomWorkload(conn, seed=f"workload-{page_size}", page_size=page_size)
    work.setup()
    work.run(40)
    walrust.sync(conn)  # an upload batch boundary in the middle of everything below
    work.big_transaction(rollback=True)  # spills uncommitted pages into the WAL, then rolls back
    work.run(40)
    work.big_transaction()  # a few MB in one transaction with cache_size=10
    work.op_checkpoint()
    work.run(40)
    work.op_vacuum()
    work.run(20)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    conn.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
    work.op_insert()

    uploaded = walrust.sync(conn)
    assert uploaded == walrust.status(conn)["txid"]
    txid, _ = restore_and_compare(replica, conn)
    assert txid == uploaded, f"restored to {txid}, newest is {uploaded} (ops: {work.log})"
