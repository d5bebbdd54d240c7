"""Several connections in one process on one database: every commit is captured once, gets
the next TXID, and is replicated (SPEC 5, 6)."""

import random
import threading


def test_interleaved_commits_from_several_connections(tmp_path, walrust, connect, replica, restore_and_compare):
    rng = random.Random("connections")
    db = tmp_path / "app.db"
    conns = [connect(db, replica) for _ in range(4)]
    conns[0].execute("CREATE TABLE t(id INTEGER PRIMARY KEY, conn INTEGER, n INTEGER, pad BLOB)")
    start = walrust.status(conns[0])["txid"]
    commits = 0
    reader = None  # a connection holding a read transaction open across others' commits
    for n in range(200):
        i = rng.randrange(len(conns))
        conn = conns[i]
        if reader is conn:
            reader.execute("COMMIT")
            reader = None
        if reader is None and rng.random() < 0.1:
            reader = conns[(i + 1) % len(conns)]
            reader.execute("BEGIN")
            reader.execute("SELECT count(*) FROM t").fetchone()
        if rng.random() < 0.5:
            conn.execute("INSERT INTO t(conn, n, pad) VALUES (?, ?, ?)", (i, n, rng.randbytes(rng.choice([0, 50, 5000]))))
        else:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO t(conn, n, pad) VALUES (?, ?, ?)", (i, n, b""))
            conn.execute("UPDATE t SET n = n + 1 WHERE id % 10 = ?", (n % 10,))
            conn.execute("COMMIT")
        commits += 1
        if rng.random() < 0.05:  # from a connection not inside a transaction of its own
            idle = [c for c in conns if c is not reader]
            rng.choice(idle).execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    if reader is not None:
        reader.execute("COMMIT")

    assert walrust.status(conns[-1])["txid"] - start == commits
    walrust.sync(conns[1])
    restore_and_compare(replica, conns[2])


def test_concurrent_commits_from_threads(tmp_path, walrust, connect, replica, restore_and_compare):
    db = tmp_path / "app.db"
    setup = connect(db, replica)
    setup.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, thread INTEGER, n INTEGER)")
    start = walrust.status(setup)["txid"]
    threads, per_thread = 4, 50
    errors = []

    def write(t):
        try:
            conn = connect(db, replica)
            for n in range(per_thread):
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("INSERT INTO t(thread, n) VALUES (?, ?)", (t, n))
                conn.execute("COMMIT")
            conn.close()
        except Exception as e:  # reported below, with the thread
            errors.append((t, e))

    workers = [threading.Thread(target=write, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert not errors, errors

    assert walrust.status(setup)["txid"] - start == threads * per_thread
    walrust.sync(setup)
    restore_and_compare(replica, setup)
