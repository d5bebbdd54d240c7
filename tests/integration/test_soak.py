"""A randomized soak (issue 12): three processes write one database while they are killed with
-9, or abort at a random failpoint of the upload protocol, at least SOAK_KILLS (default 100)
times in all. Not timed: it ends when enough processes have died. At the end every commit a
process reported is in the restore, the restore equals the database, the replica has one
snapshot, and level 0 runs without a gap up to the synced TXID."""

import os
import random

from harness import assert_same_contents, db_contents
from test_history import FAILPOINTS, Child, ChildDied, assert_level0_contiguous, snapshots

KILLS = int(os.environ.get("SOAK_KILLS", "100"))


def spawn(rng, walrust, failpoint_ext, db, replica):
    log = db.parent / "children.log"  # every process's standard error, for a failure's message
    trace = {"WALRUST_TRACE": "1"}  # the uploaders' decisions, quoted if the test fails
    if rng.random() < 0.5:
        point = f"{rng.choice(FAILPOINTS)}@{rng.randint(1, 4)}"
        return Child(failpoint_ext, db, replica, env_extra={"WALRUST_FAILPOINTS": point, **trace},
                     stderr_log=log, sync_interval=rng.choice([0, 20, 200]))
    return Child(walrust.ext, db, replica, env_extra=trace, stderr_log=log,
                 sync_interval=rng.choice([0, 20, 200]))


def said(db, *words):
    """The lines of the processes' standard error that mention any of `words`."""
    log = db.parent / "children.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return "\n".join(line for line in lines if any(w in line for w in words))[-6000:]


def test_soak_of_kills_and_failpoints(tmp_path, walrust, failpoint_ext, replica):
    rng = random.Random(f"soak-{replica.kind}")
    db = tmp_path / "app.db"
    first = Child(walrust.ext, db, replica, sync_interval=0)
    first.sql("PRAGMA journal_mode=WAL")
    first.sql("CREATE TABLE t(id INTEGER PRIMARY KEY, who INTEGER)")
    first.one("SELECT walrust_sync()")
    first.exit()
    procs = [spawn(rng, walrust, failpoint_ext, db, replica) for _ in range(3)]
    reported, next_id, deaths = set(), 1, 0
    while deaths < KILLS:
        i = rng.randrange(3)
        try:
            for _ in range(rng.randint(1, 15)):
                procs[i].sql("INSERT INTO t VALUES (?, ?)", next_id, i)
                reported.add(next_id)
                next_id += 1
            if rng.random() < 0.2:
                procs[i].one("SELECT walrust_sync(NULL, 60000)")
            if rng.random() < 0.5:
                procs[i].kill()
            else:
                continue
        except ChildDied:
            next_id += 1  # the insert in flight may or may not have committed
        deaths += 1
        procs[i] = spawn(rng, walrust, failpoint_ext, db, replica)
    for p in procs:
        p.kill()
    last = Child(walrust.ext, db, replica, sync_interval=0)
    synced = last.one("SELECT walrust_sync()")
    last.exit()
    out = tmp_path / "restored.db"
    assert walrust.restore(replica, out) == synced
    got = db_contents(out)
    assert_same_contents(db_contents(db), got)
    ids = {row[0] for row in got["tables"]["t"]}
    assert not reported - ids, f"reported commits missing: {sorted(reported - ids)[:20]}"
    snaps = snapshots(replica)
    assert len(snaps) == 1, (f"fresh snapshots after {deaths} deaths: {snaps}; the processes "
                             f"said:\n{said(db, 'snapshot', 'ReplicaView', 'Resync', 'skips', 'goes', 'lost', 'failpoint')}")
    ranges = assert_level0_contiguous(replica, since=snaps[0].max_txid + 1)
    assert ranges[-1][1] == synced, ranges
