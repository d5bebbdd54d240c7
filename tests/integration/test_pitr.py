"""Point-in-time restores: to TXIDs and to timestamps, each equal to the database as it was."""

import datetime
import random
import time

from harness import db_contents


def rfc3339(ts, style):
    """The same instant written three ways RFC 3339 allows."""
    utc = datetime.datetime.fromtimestamp(ts, datetime.timezone.utc)
    if style == "Z":
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if style == "+00:00":
        return utc.isoformat(timespec="milliseconds")
    plus2 = utc.astimezone(datetime.timezone(datetime.timedelta(hours=2)))
    return plus2.isoformat(timespec="microseconds")


def _transaction(conn, rng, n):
    conn.execute("BEGIN")
    for _ in range(rng.randint(1, 4)):
        conn.execute("INSERT INTO t(v, pad) VALUES (?, ?)", (n, rng.randbytes(rng.choice([10, 3000]))))
    ids = [r[0] for r in conn.execute("SELECT id FROM t")]
    for i in rng.sample(ids, min(len(ids), rng.randint(0, 2))):
        if rng.random() < 0.5:
            conn.execute("DELETE FROM t WHERE id = ?", (i,))
        else:
            conn.execute("UPDATE t SET v = ? WHERE id = ?", (-n, i))
    conn.execute("COMMIT")


def test_point_in_time_restores(tmp_path, walrust, connect, replica, restore_and_compare):
    rng = random.Random("pitr")
    # A long sync interval: the restore points are (at least) the walrust_sync() calls.
    conn = connect(tmp_path / "app.db", replica, sync_interval=3_600_000)
    states = {}  # txid -> contents right after that commit

    def committed():
        states[walrust.status(conn)["txid"]] = db_contents(conn)

    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v INTEGER, pad BLOB)")
    committed()
    points = []  # (txid, time just after walrust_sync returned, with no commit near it)
    n = 0
    for _ in range(6):
        for _ in range(rng.randint(1, 5)):
            n += 1
            _transaction(conn, rng, n)
            committed()
        uploaded = walrust.sync(conn)
        assert uploaded == walrust.status(conn)["txid"]
        # Keep commits well away from the recorded instant, so that no rounding of
        # timestamps (milliseconds in LTX headers) can put a commit on the wrong side of it.
        time.sleep(0.05)
        points.append((uploaded, time.time()))
        time.sleep(0.05)
    assert len(set(p[0] for p in points)) == len(points), f"sync points not distinct: {points}"

    # By TXID: each sync point is a restore point, restored exactly.
    for txid, _ in points:
        got, _ = restore_and_compare(replica, None, target=txid, expected=states[txid])
        assert got == txid

    # By timestamp, in each RFC 3339 spelling: the newest restore point at or before it.
    for i, (txid, ts) in enumerate(points):
        style = ["Z", "+00:00", "+02:00"][i % 3]
        got, _ = restore_and_compare(replica, None, target=rfc3339(ts, style), expected=states[txid])
        assert got == txid, f"restore to {rfc3339(ts, style)} gave TXID {got}, expected {txid}"

    # Between sync points: some restore point at or before the target, and never before the
    # previous sync point; the contents are the database as it was at the TXID returned.
    for (before, _), (after, _) in zip(points, points[1:]):
        if after - before >= 2:
            target = before + 1
            got = walrust.restore(replica, tmp_path / f"between-{target}.db", target)
            assert before <= got <= target, f"target {target} gave {got}"
            restore_and_compare(replica, None, target=target, expected=states[got])

    # The newest, with no target, is the latest sync point.
    got, _ = restore_and_compare(replica, conn)
    assert got == points[-1][0]
