"""kill -9 at random moments: nothing SQLite reported committed is lost (SPEC 6)."""

import random

from external import WriterProcess
from harness import db_contents


def test_writer_killed_five_times_loses_nothing(tmp_path, walrust, walrust_ext, connect, replica, restore_and_compare):
    rng = random.Random("kill-9")
    db = tmp_path / "app.db"
    reported = []
    for round_ in range(5):
        # Each round reopens the database in a new process: it must pick up what the killed
        # one captured but had not uploaded. Some rounds upload eagerly, some lazily.
        # At FULL each commit's shadow record is synced before the commit returns (its own
        # path through the VFS); at NORMAL it is left to the page cache.
        settings = {"sync_interval": rng.choice([0, 50, 1000])}
        writer = WriterProcess(
            db, seed=round_, stderr_path=tmp_path / f"writer-{round_}.err",
            ext=walrust_ext, replica=replica, settings=settings,
            synchronous=["NORMAL", "FULL"][round_ % 2],
        )
        # "Random moments": after a random number of reported commits, while it keeps writing.
        writer.wait_for(rng.randint(5, 300))
        ids = writer.kill()
        assert writer.first_id > max(reported, default=0), "a reported commit was lost locally"
        reported += ids

    conn = connect(db, replica)
    walrust.sync(conn)
    _, restored = restore_and_compare(replica, conn)
    restored_ids = {row[0] for row in db_contents(restored)["tables"]["log"]}
    missing = sorted(set(reported) - restored_ids)
    assert not missing, f"{len(missing)} reported commits missing from the restore: {missing[:20]}"
    # The counter row counts every commit of every writer, reported or not.
    commits = conn.execute("SELECT n FROM counter WHERE k = 'commits'").fetchone()[0]
    assert commits == conn.execute("SELECT count(*) FROM log").fetchone()[0]
