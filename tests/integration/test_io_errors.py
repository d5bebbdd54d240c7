"""A failing disk under the WAL: when the WAL's fsync fails, SQLite reports the commit failed
and never publishes it (the next transaction writes the same frames again). walrust must not
capture it either: no restore, at any TXID, may return a transaction the application was told
had failed. The failure is injected with the failpoint `wal.sync!N` (the N-th fsync of a WAL
fails as EIO would make it)."""

import sqlite3

from test_history import Child, restored


def test_a_commit_whose_wal_fsync_failed_is_in_no_restore(tmp_path, walrust, failpoint_ext,
                                                          replica):
    db = tmp_path / "app.db"
    c = Child(failpoint_ext, db, replica, sync_interval=0,
              env_extra={"WALRUST_FAILPOINTS": "wal.sync!8"})
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("PRAGMA synchronous=FULL")
    c.sql("CREATE TABLE t(v INTEGER)")
    failed = []
    for i in range(1, 16):
        try:
            c.sql("INSERT INTO t VALUES (?)", i)
        except sqlite3.Error:
            failed.append(i)
            # Not synced now: the failed commit's frames are still valid in the WAL file, and
            # a catch-up (which reads the WAL file, not SQLite's WAL index) would take them
            # for a commit. The next commit writes over them. (A known gap: README.md, "A
            # failed WAL fsync".)
            continue
        # Each commit its own level-0 file, so that every TXID is a restore point.
        c.one("SELECT walrust_sync()")
    assert len(failed) == 1, f"expected one failed commit, got {failed}"
    # The database goes on: later commits reuse the failed one's frames.
    rows = [r[0] for r in c.sql("SELECT v FROM t ORDER BY rowid")]
    assert rows == [i for i in range(1, 16) if i not in failed]
    last = c.one("SELECT walrust_sync()")
    c.exit()
    for t in range(1, last + 1):
        try:
            got, contents = restored(walrust, replica, tmp_path, f"at-{t}.db", target=t)
        except sqlite3.Error:
            continue  # before the first snapshot: nothing to restore to
        values = [r[0] for r in contents["tables"].get("t", [])]
        assert failed[0] not in values, f"restore at TXID {got} holds the failed commit: {values}"
        assert values == rows[:len(values)], f"restore at TXID {got}: {values}"
    _, contents = restored(walrust, replica, tmp_path, "latest.db")
    assert [r[0] for r in contents["tables"]["t"]] == rows
