"""What walrust_sync() acknowledges, a restore returns (SPEC 6, issue 12): one history per
replica, continuing after a restore, takeovers, a shadow log that lost its tail, an uploader
killed at each step of the upload protocol, and nothing stranded at exit."""

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from external import run_plain_sqlite
from harness import HANG_TIMEOUT, Replica, assert_same_contents, db_contents, open_plain

HERE = Path(__file__).parent
PYTHON = "/usr/bin/python3"


class ChildDied(Exception):
    pass


class Child:
    """A process with walrust loaded running the SQL it is sent (sqlchild.py)."""

    def __init__(self, ext, db, replica=None, env_extra=None, stderr_log=None, **settings):
        """stderr_log: a file that collects the process's standard error (kept after a kill)."""
        cmd = [PYTHON, str(HERE / "sqlchild.py"), "--ext", str(ext), "--db", str(db)]
        if replica is not None:
            cmd += ["--replica", getattr(replica, "url", replica)]
        for k, v in settings.items():
            cmd += ["--setting", f"{k}={v}"]
        env = dict(os.environ, **(env_extra or {}))
        self.stderr_log = stderr_log
        err = open(stderr_log, "a") if stderr_log else subprocess.PIPE
        try:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                text=True, env=env,
            )
        finally:
            if stderr_log:
                err.close()
        self._answer()

    def _stderr(self):
        if self.stderr_log:
            return Path(self.stderr_log).read_text()[-2000:]
        return self.proc.stderr.read()[-2000:]

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            raise ChildDied(f"exit {self.proc.returncode}: {self._stderr()}")
        return json.loads(line)

    def sql(self, sql, *params):
        try:
            self.proc.stdin.write(json.dumps([sql, list(params)]) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # it died (a failpoint): _answer says so
        out = self._answer()
        if "error" in out:
            raise sqlite3.Error(out["error"])
        return out["rows"]

    def repeat(self, sql, n):
        """Runs `sql` n times in the child without a round trip between (binding 0..n-1)."""
        try:
            self.proc.stdin.write(json.dumps(["repeat", sql, n]) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        self._answer()

    def one(self, sql, *params):
        return self.sql(sql, *params)[0][0]

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=60)

    def exit(self, close=True):
        """Closes the connection and exits (close=False: ends the script without closing)."""
        if close:
            self.proc.stdin.write(json.dumps(["exit"]) + "\n")
        self.proc.stdin.close()
        self.proc.wait(timeout=120)
        assert self.proc.returncode == 0, self._stderr()

    def wait_died(self):
        self.proc.wait(timeout=120)
        return self.proc.returncode


def snapshots(replica):
    return [f for f in replica.ltx_files() if f.level == 9]


def level0_ranges(replica):
    return sorted((f.min_txid, f.max_txid) for f in replica.ltx_files() if f.level == 0)


def assert_level0_contiguous(replica, since=1):
    """Level-0 files from `since` on follow each other without a gap (SPEC 5)."""
    ranges = [r for r in level0_ranges(replica) if r[1] >= since]
    for (_, hi), (lo, _) in zip(ranges, ranges[1:]):
        assert lo == hi + 1, f"level 0 jumps from {hi} to {lo}: {ranges}"
    return ranges


def unnamed_files(replica):
    """How many LTX files of the replica manifest.json does not name (inline or in a part)."""
    head = json.loads((replica.objects / "manifest.json").read_bytes())
    named = len(head["files"]) + sum(p["count"] for p in head.get("parts", []))
    return len(replica.ltx_files()) - named


def restored(walrust, replica, tmp_path, name, target=None):
    out = tmp_path / name
    txid = walrust.restore(replica, out, target)
    return txid, db_contents(out)


# --- one history per replica ------------------------------------------------------------------


def test_a_second_database_on_the_same_url_is_refused(tmp_path, walrust, connect, replica,
                                                      restore_and_compare, capfd):
    a = connect(tmp_path / "a.db", replica, sync_interval=0)
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES ('a1')")
    walrust.sync(a)
    b = connect(tmp_path / "b.db", replica, sync_interval=0)
    b.execute("CREATE TABLE t(x)")
    b.execute("INSERT INTO t VALUES ('b1')")
    with pytest.raises(sqlite3.Error, match="another database's history") as e:
        walrust.sync(b)
    assert "b.db" in str(e.value) and "walrust_takeover" in str(e.value)
    assert "another database's history" in walrust.status(b)["last_error"]
    # And one line on standard error, naming this database and the replica's history.
    lines = [line for line in capfd.readouterr().err.splitlines()
             if "another database's history" in line]
    assert len(lines) == 1, lines
    assert lines[0].startswith("walrust: ") and str(tmp_path / "b.db") in lines[0], lines
    assert re.search(r"history [0-9a-f]{16} generation \d+", lines[0]), lines
    b.execute("INSERT INTO t VALUES ('b2')")  # still writable
    assert b.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    a.execute("INSERT INTO t VALUES ('a2')")
    txid = walrust.sync(a)
    got, _ = restore_and_compare(replica, a)
    assert got == txid
    assert walrust.status(a)["last_error"] is None


def test_two_databases_claiming_an_empty_url_at_once(tmp_path, walrust):
    # On a local directory only: s3s-fs's conditional writes are not atomic (TESTING.md),
    # real S3's are; the claim relies on them.
    replica = Replica.file(tmp_path / "replica")
    children = [Child(walrust.ext, tmp_path / f"{n}.db", replica, sync_interval=0) for n in "ab"]
    for n, c in zip("ab", children):
        c.sql("PRAGMA journal_mode=WAL")
        c.sql("CREATE TABLE t(x)")
        c.sql("INSERT INTO t VALUES (?)", n)
    outcomes = []
    for c in children:  # both upload threads race for the empty replica meanwhile
        try:
            outcomes.append(("ok", c.one("SELECT walrust_sync()")))
        except sqlite3.Error as e:
            outcomes.append(("refused", str(e)))
    kinds = sorted(k for k, _ in outcomes)
    assert kinds == ["ok", "refused"], outcomes
    winner = children[[k for k, _ in outcomes].index("ok")]
    winner_db = tmp_path / ("a.db" if winner is children[0] else "b.db")
    for c in children:
        c.exit()
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(winner_db), got)


def test_a_restored_copy_continues_the_history(tmp_path, walrust, connect, replica):
    primary = tmp_path / "primary.db"
    a = connect(primary, replica, sync_interval=0)
    a.execute("CREATE TABLE t(x)")
    for i in range(5):
        a.execute("INSERT INTO t VALUES (?)", (i,))
    head = walrust.sync(a)
    a.close()
    copy = tmp_path / "copy.db"
    assert walrust.restore(replica, copy) == head
    before = len(snapshots(replica))
    c = connect(copy, replica, sync_interval=0)
    c.execute("INSERT INTO t VALUES ('copy')")
    txid = walrust.sync(c)
    assert txid == head + 1, "the copy's first commit continues the history's TXIDs"
    assert len(snapshots(replica)) == before, "continuing a restore takes no snapshot"
    assert_level0_contiguous(replica)
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(c), got)
    # The database it was restored from is fenced off now.
    a = connect(primary, replica, sync_interval=0)
    a.execute("INSERT INTO t VALUES ('old primary')")
    with pytest.raises(sqlite3.Error, match="took the replica over"):
        walrust.sync(a)
    _, got = restored(walrust, replica, tmp_path, "r2.db")
    assert_same_contents(db_contents(c), got)


def test_a_takeover_starts_a_generation_and_refuses_the_old_primary(tmp_path, walrust, connect,
                                                                      replica):
    a = connect(tmp_path / "a.db", replica, sync_interval=0)
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")
    early = walrust.sync(a)
    early_rows = db_contents(a)
    a.execute("INSERT INTO t VALUES (2)")
    a.execute("INSERT INTO t VALUES (3)")
    head = walrust.sync(a)
    # A copy restored to an older point diverges from the replica: refused until it takes over.
    old = tmp_path / "old.db"
    assert walrust.restore(replica, old, early) == early
    b = connect(old, replica, sync_interval=0)
    b.execute("INSERT INTO t VALUES ('b')")
    with pytest.raises(sqlite3.Error, match="moved on"):
        walrust.sync(b)
    start = b.execute("SELECT walrust_takeover()").fetchone()[0]
    assert start > head, "a takeover's TXIDs go on past everything the replica held"
    b.execute("INSERT INTO t VALUES ('b2')")
    assert walrust.sync(b) > start
    a.execute("INSERT INTO t VALUES (4)")
    with pytest.raises(sqlite3.Error, match="took the replica over"):
        walrust.sync(a)
    assert "generation 2" in walrust.status(a)["last_error"]
    _, got = restored(walrust, replica, tmp_path, "newest.db")
    assert_same_contents(db_contents(b), got)
    # Restore points of the first generation stay reachable.
    _, got = restored(walrust, replica, tmp_path, "gen1.db", early)
    assert_same_contents(early_rows, got)


def test_cli_takeover_of_a_copy(tmp_path, walrust, connect, replica):
    a = connect(tmp_path / "a.db", replica, sync_interval=0)
    a.execute("CREATE TABLE t(x)")
    a.execute("INSERT INTO t VALUES (1)")
    head = walrust.sync(a)
    a.close()
    copy = tmp_path / "copy.db"
    shutil.copy(tmp_path / "a.db", copy)  # a copy made by hand: not a restore
    if (tmp_path / "a.db-wal").exists():
        shutil.copy(tmp_path / "a.db-wal", tmp_path / "copy.db-wal")
    cli = Path(walrust.ext).parent / "walrust"
    out = subprocess.run([str(cli), "takeover", str(copy), "--replica", replica.url],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "generation 2" in out.stdout
    c = connect(copy, replica, sync_interval=0)
    c.execute("INSERT INTO t VALUES ('copy')")
    assert walrust.sync(c) > head + 1
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(c), got)


# --- no silent stop ---------------------------------------------------------------------------


def shadow(db):
    return Path(str(db) + "-walrust")


def test_a_lost_log_tail_after_a_power_failure_is_noticed(tmp_path, walrust, replica):
    """state.json survives, the log's unsynced tail does not (synchronous=NORMAL: the log is
    never synced, not even before an upload)."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("PRAGMA synchronous=NORMAL")
    c.sql("CREATE TABLE t(x)")
    for i in range(10):
        c.sql("INSERT INTO t VALUES (?)", i)
    c.one("SELECT walrust_sync()")
    saved = tmp_path / "disk"
    shutil.copytree(shadow(db) / "log", saved / "log")
    shutil.copy(str(db) + "-wal", saved / "app.db-wal")
    for i in range(10, 20):
        c.sql("INSERT INTO t VALUES (?)", i)
    acknowledged = c.one("SELECT walrust_sync()")
    c.kill()
    # What the disk held: the older log and WAL, the newer state.json.
    shutil.rmtree(shadow(db) / "log")
    shutil.copytree(saved / "log", shadow(db) / "log")
    shutil.copy(saved / "app.db-wal", str(db) + "-wal")
    Path(str(db) + "-shm").unlink(missing_ok=True)
    snaps = len(snapshots(replica))
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("INSERT INTO t VALUES ('after')")
    txid = c.one("SELECT walrust_sync()")
    assert txid > acknowledged, "TXIDs never repeat"
    status = json.loads(c.one("SELECT walrust_status()"))
    assert "lost records" in status["notice"], status
    c.exit()
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert len(snapshots(replica)) == snaps + 1, "a lost tail is followed by a snapshot"


def test_a_power_failure_at_full_loses_no_commit_the_wal_made_durable(tmp_path, walrust, replica):
    """synchronous=FULL, SQLite's default: a commit waits for the WAL's fsync, not for the
    shadow log's (SPEC 6: the commit path adds no fsync of its own). Killed after commits
    returned, with the log's unsynced tail lost: the WAL still holds those commits, and the next
    open copies them from there, in order, without a snapshot."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=86_400_000)
    c.sql("PRAGMA journal_mode=WAL")
    assert c.one("PRAGMA synchronous") == 2, "FULL is the default"
    c.sql("CREATE TABLE t(x)")
    for i in range(10):
        c.sql("INSERT INTO t VALUES (?)", i)
    acknowledged = c.one("SELECT walrust_sync()")
    saved = tmp_path / "disk"
    shutil.copytree(shadow(db) / "log", saved / "log")
    for i in range(10, 30):
        c.sql("INSERT INTO t VALUES (?)", i)  # durable in the WAL when it returns
    c.kill()
    # The disk after the power failure: the WAL (synced at each commit) and state.json as they
    # were, the log without what was appended after the copy.
    shutil.rmtree(shadow(db) / "log")
    shutil.copytree(saved / "log", shadow(db) / "log")
    Path(str(db) + "-shm").unlink(missing_ok=True)
    snaps = len(snapshots(replica))
    c = Child(walrust.ext, db, replica, sync_interval=86_400_000)
    c.sql("INSERT INTO t VALUES ('after')")
    txid = c.one("SELECT walrust_sync()")
    assert txid == acknowledged + 21, "the 20 commits from the WAL, then the new one, in order"
    c.exit()
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert [r[0] for r in got["tables"]["t"]][-21:] == [*range(10, 30), "after"]
    assert len(snapshots(replica)) == snaps, "recovered from the WAL, no snapshot needed"
    assert level0_ranges(replica)[-1][1] == txid


def test_a_power_failure_with_commits_grouped_in_memory_loses_none(tmp_path, walrust,
                                                                    failpoint_ext, replica):
    """synchronous=FULL, a burst of commits: each returned once the WAL's fsync did, while the
    log got them in groups, some still in memory, none synced. The power fails: the process
    dies in the middle of the burst and the log loses all it was given since the uploader
    last synced it. The next open finds every one of those commits in the WAL and copies
    them in order, one TXID each, without a snapshot."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=86_400_000)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.exit()
    c = Child(failpoint_ext, db, replica, sync_interval=86_400_000,
              env_extra={"WALRUST_FAILPOINTS": "commit.grouping@200"})
    assert c.one("PRAGMA synchronous") == 2, "FULL is the default"
    acknowledged = c.one("SELECT walrust_sync()")  # the log is synced up to here
    saved = tmp_path / "disk"
    shutil.copytree(shadow(db) / "log", saved / "log")
    with pytest.raises(ChildDied):  # at the 200th commit's release, with 200 frames in the WAL
        c.repeat("INSERT INTO t VALUES (?)", 400)
    shutil.rmtree(shadow(db) / "log")
    shutil.copytree(saved / "log", shadow(db) / "log")
    Path(str(db) + "-shm").unlink(missing_ok=True)
    snaps = len(snapshots(replica))
    c = Child(walrust.ext, db, replica, sync_interval=86_400_000)
    count = c.one("SELECT count(*) FROM t")
    assert count == 200, "each commit was durable in the WAL when it returned"
    txid = c.one("SELECT walrust_sync()")
    status = json.loads(c.one("SELECT walrust_status()"))
    assert status["notice"] is None, status
    assert txid == acknowledged + count, (acknowledged, count, txid)
    c.exit()
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert len(snapshots(replica)) == snaps, "recovered from the WAL, no snapshot needed"
    assert_level0_contiguous(replica)


def test_deleted_log_segments_are_noticed(tmp_path, walrust, replica):
    """The application closed, someone removed the shadow log, the application came back."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.sql("INSERT INTO t VALUES (1)")
    acknowledged = c.one("SELECT walrust_sync()")
    c.exit()
    segments = list((shadow(db) / "log").glob("*.seg"))
    assert segments
    for seg in segments:
        seg.unlink()
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("INSERT INTO t VALUES (2)")
    txid = c.one("SELECT walrust_sync()")
    assert txid > acknowledged
    c.exit()
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert got["tables"]["t"] == [(1,), (2,)]


def damaged_log(walrust, db, replica, close):
    """A process writes 31 commits, uploads only the first (nothing at the close either), and
    exits (closing its connection or not); then a byte in the middle of its shadow log is
    flipped: the damaged records are the only copy of their commits in the log."""
    c = Child(walrust.ext, db, replica, sync_interval=600000, close_timeout=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.sql("INSERT INTO t VALUES ('first')")
    c.one("SELECT walrust_sync()")
    for i in range(30):
        c.sql("INSERT INTO t VALUES (?)", f"row {i} " + "x" * 3000)
    c.exit(close=close)
    seg = sorted((shadow(db) / "log").glob("*.seg"))[-1]
    data = bytearray(seg.read_bytes())
    data[len(data) // 2] ^= 0xFF
    seg.write_bytes(bytes(data))


def test_a_damaged_log_record_is_noticed_and_nothing_is_lost(tmp_path, walrust, replica):
    """A byte of the shadow log flipped in the middle of a record, complete records after it
    (a disk that damages files, not a crash, which tears only the log's last record). The
    next process cuts the log there as it cuts a torn tail, so the records after it are gone
    from the log; their commits are in the database file, and a snapshot with new TXIDs
    covers them. It used to do all that silently; now `walrust_status()` and one line on
    standard error say where the log was damaged."""
    db = tmp_path / "app.db"
    damaged_log(walrust, db, replica, close=True)
    log = tmp_path / "child.log"
    c = Child(walrust.ext, db, replica, sync_interval=0, stderr_log=log)
    c.sql("INSERT INTO t VALUES ('after')")
    c.one("SELECT walrust_sync()")
    status = json.loads(c.one("SELECT walrust_status()"))
    c.exit()
    assert "fails its checksum, and records follow it" in (status["notice"] or ""), status
    assert "the log was damaged" in log.read_text(), log.read_text()[-2000:]
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert len(got["tables"]["t"]) == 32


def test_the_sidecar_notices_a_damaged_log_record_too(tmp_path, walrust, walrust_cli, replica):
    """The same damage met by `walrust watch` (it shares the shadow directory): one line on its
    standard error, and the replica still restores equal to the database."""
    db = tmp_path / "app.db"
    damaged_log(walrust, db, replica, close=False)  # the WAL stays, not checkpointed
    log = tmp_path / "watch.log"
    app = open_plain(db)  # an application without walrust: the sidecar replicates it
    with open(log, "ab") as out:
        watch = subprocess.Popen([str(walrust_cli), "watch", str(db), "--replica", replica.url,
                                  "--sync-interval", "0"], stderr=out)
    try:
        app.execute("INSERT INTO t VALUES ('after')")
        deadline = time.monotonic() + HANG_TIMEOUT
        while "the log was damaged" not in log.read_text():
            assert watch.poll() is None and time.monotonic() < deadline, log.read_text()[-2000:]
            time.sleep(0.05)
        watch.send_signal(signal.SIGTERM)
        assert watch.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()[-2000:]
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait()
    damaged = [line for line in log.read_text().splitlines() if "the log was damaged" in line]
    assert len(damaged) == 1, log.read_text()[-2000:]
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(app), got)
    assert len(got["tables"]["t"]) == 32
    app.close()


# --- resume, don't re-snapshot ----------------------------------------------------------------

FAILPOINTS = [
    "upload.level0_written",
    "upload.manifest_written",
    "upload.state_written",
    "upload.trimmed",
]


@pytest.mark.parametrize("point", FAILPOINTS)
def test_an_uploader_killed_at_each_step_is_resumed(tmp_path, walrust, failpoint_ext, replica,
                                                    point):
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.sql("INSERT INTO t VALUES (0)")
    first = c.one("SELECT walrust_sync()")
    # Read through the child: a plain connection here could checkpoint and delete the WAL
    # behind walrust's back, which walrust rightly answers with a snapshot.
    points = {first: [tuple(r) for r in c.sql("SELECT * FROM t ORDER BY rowid")]}
    c.exit()
    c = Child(failpoint_ext, db, replica, sync_interval=0,
              env_extra={"WALRUST_FAILPOINTS": point})
    with pytest.raises(ChildDied):  # at the failpoint, on the upload thread
        for i in range(1, 4):
            c.sql("INSERT INTO t VALUES (?)", i)
        c.one("SELECT walrust_sync()")
    c = Child(walrust.ext, db, replica, sync_interval=0)
    for i in range(4, 6):
        c.sql("INSERT INTO t VALUES (?)", i)
    last = c.one("SELECT walrust_sync()")
    points[last] = [tuple(r) for r in c.sql("SELECT * FROM t ORDER BY rowid")]
    c.exit()
    snaps = snapshots(replica)
    assert len(snaps) == 1, f"killed at {point}: a second snapshot was taken"
    ranges = assert_level0_contiguous(replica)
    assert ranges[0][0] == snaps[0].max_txid + 1 and ranges[-1][1] == last, ranges
    # Every file is named in the manifest (inline or in a part), also one uploaded and
    # recorded in state.json by the process that died before it wrote its manifest backlog:
    # compaction works only on named files.
    unnamed = unnamed_files(replica)
    assert unnamed == 0, f"killed at {point}: {unnamed} files the manifest does not name"
    for txid, rows in points.items():
        _, got = restored(walrust, replica, tmp_path, f"r{txid}.db", txid)
        assert got["tables"]["t"] == rows, f"restore at TXID {txid}"


@pytest.mark.parametrize("racing", [False, True], ids=["then-commits", "commits-first"])
def test_an_upload_killed_before_it_was_recorded_and_a_lost_log_tail(
        tmp_path, walrust, failpoint_ext, replica, racing):
    """An uploader killed after its level-0 file reached the replica and before the manifest
    or state.json said so, then a power failure that cut the shadow log and the WAL back to
    before those commits (synchronous=NORMAL). The next process cannot resume after that file
    (its log no longer holds it) and takes a snapshot past it; the file, the only copy of those
    commits, is named in the manifest (restorable by TXID, seen by compaction and retention).
    `commits-first`: the next process commits before its uploader looks at the replica, under
    the TXIDs of the lost commits: a log record of the file's last TXID is not that commit, and
    the replica must not take the new commits for the lost ones."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.sql("INSERT INTO t VALUES (0)")
    c.one("SELECT walrust_sync()")
    # Killed, not closed: nothing of this process is left to upload by the next one.
    c.kill()
    disk = tmp_path / "disk"  # what a power failure leaves of the files below
    shutil.copytree(shadow(db) / "log", disk / "log")
    for suffix in ("", "-wal"):
        if Path(f"{db}{suffix}").exists():
            shutil.copy(f"{db}{suffix}", disk / f"app.db{suffix}")
    c = Child(failpoint_ext, db, replica, sync_interval=0,
              env_extra={"WALRUST_FAILPOINTS": "upload.level0_written"})
    c.sql("PRAGMA synchronous=NORMAL")
    with pytest.raises(ChildDied):  # after the level-0 file's upload, on the upload thread
        for i in range(1, 4):
            c.sql("INSERT INTO t VALUES (?)", i)
        c.one("SELECT walrust_sync()")
    lost = [f for f in replica.ltx_files() if f.level == 0][-1]
    shutil.rmtree(shadow(db) / "log")
    shutil.copytree(disk / "log", shadow(db) / "log")
    for suffix in ("", "-wal"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
        if (disk / f"app.db{suffix}").exists():
            shutil.copy(disk / f"app.db{suffix}", f"{db}{suffix}")
    Path(f"{db}-shm").unlink(missing_ok=True)
    if racing:  # the uploader waits 0.8 s before it reads the log: these commits come first
        c = Child(failpoint_ext, db, replica, sync_interval=0,
                  env_extra={"WALRUST_FAILPOINTS": "upload.resume_checking~800"})
        new_rows = range(4, 9)
    else:
        c = Child(walrust.ext, db, replica, sync_interval=0)
        new_rows = range(4, 5)
    for i in new_rows:
        c.sql("INSERT INTO t VALUES (?)", i)
    last = c.one("SELECT walrust_sync()")
    status = json.loads(c.one("SELECT walrust_status()"))
    rows = [tuple(r) for r in c.sql("SELECT * FROM t ORDER BY rowid")]
    c.exit()
    assert rows == [(0,)] + [(i,) for i in new_rows], rows
    assert last > lost.max_txid, "TXIDs never repeat"
    assert "lost records" in (status["notice"] or ""), status
    unnamed = unnamed_files(replica)
    assert unnamed == 0, f"{unnamed} files the manifest does not name"
    _, got = restored(walrust, replica, tmp_path, "latest.db")
    assert got["tables"]["t"] == rows
    # The lost commits stay restorable by TXID from the file that holds them.
    _, got = restored(walrust, replica, tmp_path, "lost.db", lost.max_txid)
    assert got["tables"]["t"][0] == (0,) and len(got["tables"]["t"]) > 1, got["tables"]["t"]


def test_a_first_snapshot_killed_before_it_was_recorded_and_a_lost_log_tail(
        tmp_path, walrust, failpoint_ext, replica):
    """As above, with the file the killed uploader left unrecorded the history's first
    snapshot, which no level-0 file ends at. A power failure then cuts the whole shadow log
    (synchronous=NORMAL never syncs it) and the WAL; state.json, synced, still names the
    history. The next process commits past the snapshot's TXID before its uploader looks at
    the replica: the log's record at that TXID is one of these new commits, not the
    snapshot's, and the replica must not take the snapshot for them."""
    db = tmp_path / "app.db"
    run_plain_sqlite(db, ["CREATE TABLE t(x)", "INSERT INTO t VALUES (0)"],
                     journal_mode="WAL", checkpoint=True)
    disk = tmp_path / "disk"  # what a power failure leaves of the database
    disk.mkdir()
    shutil.copy(db, disk / "app.db")
    c = Child(failpoint_ext, db, replica, sync_interval=0,
              env_extra={"WALRUST_FAILPOINTS": "snapshot.manifest_written"})
    c.sql("PRAGMA synchronous=NORMAL")
    with pytest.raises(ChildDied):  # after the snapshot's upload, on the upload thread
        c.repeat("INSERT INTO t VALUES (?)", 200_000)
        c.one("SELECT walrust_sync()")
    (lost,) = snapshots(replica)
    assert (shadow(db) / "state.json").exists()
    shutil.rmtree(shadow(db) / "log")
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(disk / "app.db", db)
    # The uploader waits 2 s before it reads the log: these commits come first, past the
    # snapshot's TXID.
    c = Child(failpoint_ext, db, replica, sync_interval=0,
              env_extra={"WALRUST_FAILPOINTS": "upload.resume_checking~2000"})
    c.repeat("INSERT INTO t VALUES (? + 1000000)", lost.max_txid + 10)
    last = c.one("SELECT walrust_sync()")
    status = json.loads(c.one("SELECT walrust_status()"))
    rows = [tuple(r) for r in c.sql("SELECT * FROM t ORDER BY rowid")]
    c.exit()
    assert len(rows) == lost.max_txid + 11, len(rows)
    assert last > lost.max_txid, "TXIDs never repeat"
    _, got = restored(walrust, replica, tmp_path, "latest.db")
    assert got["tables"]["t"] == rows
    assert "lost records" in (status["notice"] or ""), status
    assert unnamed_files(replica) == 0


def test_files_uploaded_before_a_snapshot_are_named_though_the_process_dies_after_it(
        tmp_path, walrust, replica):
    """Level-0 files wait in a backlog before the manifest names them; a snapshot is named at
    once. A process killed after a snapshot and before it wrote its backlog must not leave the
    files before the snapshot unnamed for good (the next process names only files past the
    manifest's newest TXID): compaction and retention see only named files."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.one("SELECT walrust_sync()")  # the first snapshot, and everything named
    for i in range(5):
        c.sql("INSERT INTO t VALUES (?)", i)
    c.one("SELECT walrust_snapshot()")  # the level-0 batch before it is uploaded first
    c.kill()
    assert any(f.level == 0 for f in replica.ltx_files())
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("INSERT INTO t VALUES (5)")
    c.one("SELECT walrust_sync()")
    c.exit()
    unnamed = unnamed_files(replica)
    assert unnamed == 0, f"{unnamed} files the manifest does not name"


def test_commits_grouped_in_memory_survive_a_kill(tmp_path, walrust, failpoint_ext, replica):
    """Commits that follow each other closely wait in memory to be appended to the shadow
    log together; they are in the WAL meanwhile. A process killed with such a group pending
    leaves them to the next one, which finds them in the WAL: every committed row is restored,
    TXIDs stay contiguous, one TXID per commit, and no second snapshot is taken."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    first = c.one("SELECT walrust_sync()")
    c.exit()
    c = Child(failpoint_ext, db, replica, env_extra={"WALRUST_FAILPOINTS": "commit.grouping@1500"})
    with pytest.raises(ChildDied):  # at the 1,500th commit's release
        c.repeat("INSERT INTO t VALUES (?)", 3000)
    c = Child(walrust.ext, db, replica)
    count = c.one("SELECT count(*) FROM t")
    # The 1,500th was published in the WAL index before its release: committed.
    assert count == 1500, count
    last = c.one("SELECT walrust_sync()")
    c.exit()
    assert last == first + count, (first, count, last)
    assert len(snapshots(replica)) == 1, replica.ltx_files()
    assert_level0_contiguous(replica)
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert len(got["tables"]["t"]) == count


def test_truncating_checkpoints_without_walrust_while_commits_are_grouped(tmp_path, walrust,
                                                                          replica):
    """Another process, without walrust, runs `PRAGMA wal_checkpoint(TRUNCATE)` over and over
    while this one commits in bursts (its commits wait in groups, in memory and in the WAL):
    the WAL is emptied under groups not yet in the log. Nothing is lost: a group whose commits
    left the WAL gives way to a snapshot, and the replica restores equal to the database."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.one("SELECT walrust_sync()")
    truncator = subprocess.Popen(
        [PYTHON, "-c", (
            "import sqlite3, sys, time\n"
            "c = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=0)\n"
            "print('ready', flush=True)\n"
            "n = 0\n"
            "end = time.time() + 3\n"
            "while time.time() < end:\n"
            "    try:\n"
            "        busy, _, _ = c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()\n"
            "        n += busy == 0\n"
            "    except sqlite3.OperationalError:\n"
            "        pass\n"
            "print(n, flush=True)\n"
        ), str(db)],
        stdout=subprocess.PIPE, text=True,
    )
    assert truncator.stdout.readline().strip() == "ready"
    for _ in range(10):
        c.repeat("INSERT INTO t VALUES (?)", 300)
    truncations = int(truncator.stdout.readline())
    truncator.wait(timeout=30)
    assert truncations > 0, "no truncating checkpoint got through"
    c.sql("INSERT INTO t VALUES ('after')")
    c.one("SELECT walrust_sync()")
    c.exit()
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert len(got["tables"]["t"]) == 3001


def test_a_sync_counts_the_commits_grouped_before_it(tmp_path, walrust, replica):
    """walrust_sync() right after a burst of commits (some of them still in a group in
    memory) returns only once all of them are in the replica."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    first = c.one("SELECT walrust_sync()")
    for n in (1, 7, 500):
        c.repeat("INSERT INTO t VALUES (?)", n)
        last = c.one("SELECT walrust_sync()")
        count = c.one("SELECT count(*) FROM t")
        assert last == first + count, (first, count, last)
        _, got = restored(walrust, replica, tmp_path, f"r{n}.db")
        assert len(got["tables"]["t"]) == count
    c.exit()


def test_a_group_left_in_memory_reaches_the_replica_without_a_sync(tmp_path, walrust, replica):
    """A burst of commits ends with its last group in memory (in the WAL, not yet in the
    shadow log) and the application goes quiet without `walrust_sync()`: the uploader appends
    that group itself and uploads it, as it uploads any commit, within the sync interval. Only
    the first group after each of the uploader's looks tells it so; the commits of the others
    wake no thread."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=200)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    first = c.one("SELECT walrust_sync()")
    for burst in (1, 2, 3):
        c.repeat("INSERT INTO t VALUES (?)", 500)
        want = first + 500 * burst
        deadline = time.time() + HANG_TIMEOUT
        while max(f.max_txid for f in replica.ltx_files()) < want:
            assert time.time() < deadline, f"TXID {want} never reached the replica"
            time.sleep(0.05)
        _, got = restored(walrust, replica, tmp_path, f"r{burst}.db")
        assert len(got["tables"]["t"]) == 500 * burst
    c.exit()


def names_every_file(replica):
    """Whether manifest.json names every LTX file of the replica (inline or in a part)."""
    return unnamed_files(replica) == 0


def test_a_crash_right_after_a_roll_never_reuses_a_txid(tmp_path, walrust, failpoint_ext,
                                                        replica):
    """Killed right after the shadow log rolled to a new, empty segment (before the commit
    that rolled it was appended), with the sealed segment's transactions not uploaded yet. The
    next process recovers that commit from the WAL, uploads everything, trims the sealed
    segment, and numbers its next commit right after: no TXID reused, no second snapshot, no
    warning. (The appender's side of this, a log with no record left before an empty newest
    segment, is `shadow::log`'s unit test
    `an_empty_segment_after_a_trimmed_one_numbers_past_what_the_state_recorded`.)"""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    first = c.one("SELECT walrust_sync()")
    c.exit()
    c = Child(failpoint_ext, db, replica, sync_interval=3600000,
              env_extra={"WALRUST_FAILPOINTS": "log.rolled"})
    with pytest.raises(ChildDied):  # ~80 commits of 100 KB fill the 8 MiB segment
        for _ in range(400):
            c.sql("INSERT INTO t VALUES (randomblob(100000))")
    log = tmp_path / "stderr.log"
    c = Child(walrust.ext, db, replica, stderr_log=log, sync_interval=0)
    recovered = c.one("SELECT walrust_sync()")
    assert recovered > first
    c.sql("INSERT INTO t VALUES (1)")
    last = c.one("SELECT walrust_sync()")
    count = c.one("SELECT count(*) FROM t")
    c.exit()
    assert last == recovered + 1, (recovered, last, log.read_text())
    assert "goes from TXID" not in log.read_text(), log.read_text()
    assert len(snapshots(replica)) == 1, replica.ltx_files()
    assert_level0_contiguous(replica)
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert len(got["tables"]["t"]) == count


def test_a_clean_close_names_every_file_it_uploaded(tmp_path, walrust, replica):
    """A snapshot taken while level 0 lags behind is followed by the level-0 file below its
    TXID. That file's manifest entry waits in the backlog (`manifest::cadence`); the last close
    writes it. The next process names only files past the manifest's newest TXID, so an entry
    left behind here would never be written, and compaction and retention never touch a file
    the manifest does not name."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=60000)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.sql("INSERT INTO t VALUES (0)")
    first = c.one("SELECT walrust_sync()")
    for i in range(1, 4):
        c.sql("INSERT INTO t VALUES (?)", i)
    snap = c.one("SELECT walrust_snapshot()")
    c.exit()
    assert any(f.level == 0 and f.min_txid > first and f.max_txid <= snap
               for f in replica.ltx_files()), replica.ltx_files()
    assert names_every_file(replica), replica.ltx_files()
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("INSERT INTO t VALUES (4)")
    last = c.one("SELECT walrust_sync()")
    rows = [tuple(r) for r in c.sql("SELECT * FROM t ORDER BY rowid")]
    c.exit()
    assert names_every_file(replica), replica.ltx_files()
    txid, got = restored(walrust, replica, tmp_path, "r.db")
    assert txid == last and got["tables"]["t"] == rows


@pytest.mark.parametrize("point", ["upload.claimed", "snapshot.file_written",
                                   "snapshot.manifest_written"])
def test_a_snapshot_killed_at_each_step_is_not_repeated(tmp_path, walrust, failpoint_ext, replica,
                                                        point):
    db = tmp_path / "app.db"
    c = Child(failpoint_ext, db, replica, sync_interval=0,
              env_extra={"WALRUST_FAILPOINTS": point})
    # The upload thread takes the first snapshot as soon as the first commit is in the log, so
    # the failpoint may end the process before any answer after that commit reaches us.
    with pytest.raises(ChildDied):
        c.sql("PRAGMA journal_mode=WAL")
        c.sql("CREATE TABLE t(x)")
        c.sql("INSERT INTO t VALUES (1)")
        c.one("SELECT walrust_sync()")
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE IF NOT EXISTS t(x)")
    c.sql("INSERT INTO t VALUES (2)")
    c.one("SELECT walrust_sync()")
    c.exit()
    assert len(snapshots(replica)) == 1, f"killed at {point}: the snapshot was taken again"
    assert_level0_contiguous(replica)
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)


# --- nothing stranded -------------------------------------------------------------------------


def test_shell_quit_leaves_every_commit_in_the_replica(tmp_path, walrust, replica):
    db = tmp_path / "app.db"
    script = (
        f".load {walrust.ext}\n"
        f".open 'file:{db}?walrust_replica={replica.url.replace('&', '%26')}'\n"
        "PRAGMA journal_mode=WAL;\nCREATE TABLE t(x);\n"
        "INSERT INTO t VALUES (1);\nINSERT INTO t VALUES (2);\n.quit\n"
    )
    out = subprocess.run(["sqlite3"], input=script, capture_output=True, text=True, env=os.environ)
    assert out.returncode == 0, out.stderr
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)
    assert got["tables"]["t"] == [(1,), (2,)]


def test_a_script_that_never_syncs_leaves_every_commit_in_the_replica(tmp_path, walrust, replica):
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica)  # the default 1 s sync interval: nothing uploaded yet
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    for i in range(3):
        c.sql("INSERT INTO t VALUES (?)", i)
    c.exit(close=False)  # the script ends; Python closes the connection on its way out
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert_same_contents(db_contents(db), got)


# --- upgrades ---------------------------------------------------------------------------------


def test_a_replica_written_before_owners_is_adopted(tmp_path, walrust, replica):
    """A replica and shadow directory as the previous walrust left them (manifest version 1, no
    owner anywhere) go on after an upgrade: no refusal, no new snapshot."""
    db = tmp_path / "app.db"
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.sql("INSERT INTO t VALUES (1)")
    c.one("SELECT walrust_sync()")
    c.exit()
    manifest = replica.objects / "manifest.json"
    m = json.loads(manifest.read_text())
    m.pop("history"), m.pop("generation")
    m["version"] = 1
    manifest.write_text(json.dumps(m))
    state_path = shadow(db) / "state.json"
    state = json.loads(state_path.read_text())
    state.pop("owner")
    state_path.write_text(json.dumps(state))
    c = Child(walrust.ext, db, replica, sync_interval=0)
    c.sql("INSERT INTO t VALUES (2)")
    c.one("SELECT walrust_sync()")
    c.exit()
    assert len(snapshots(replica)) == 1
    assert json.loads(manifest.read_text())["history"]
    _, got = restored(walrust, replica, tmp_path, "r.db")
    assert got["tables"]["t"] == [(1,), (2,)]


def test_a_snapshot_killed_before_it_was_named_is_named_by_the_next_one(tmp_path, walrust,
                                                                         failpoint_ext, replica):
    """A process killed after a snapshot's upload and before the manifest named it leaves the
    file unnamed. With nothing committed since, the next process's snapshot falls on the same
    TXID, so the same name, and files are never replaced: it used to fail ("exists already")
    until the next commit. Now a file holding exactly the same pages, checksums intact, is
    named instead."""
    db = tmp_path / "app.db"
    c = Child(failpoint_ext, db, replica,
              env_extra={"WALRUST_FAILPOINTS": "snapshot.file_written@2"})
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(x)")
    c.one("SELECT walrust_sync()")  # the first snapshot
    c.sql("INSERT INTO t VALUES (1)")
    with pytest.raises(ChildDied):  # the second: uploaded, then killed
        c.one("SELECT walrust_snapshot()")
    orphan = snapshots(replica)[-1]
    assert unnamed_files(replica) == 1
    c = Child(walrust.ext, db, replica)
    assert c.one("SELECT walrust_snapshot('main', 20000)") == orphan.max_txid
    status = json.loads(c.one("SELECT walrust_status()"))
    c.exit()
    assert status["last_error"] is None, status
    assert unnamed_files(replica) == 0
    assert snapshots(replica)[-1] == orphan
    got, contents = restored(walrust, replica, tmp_path, "restored.db")
    assert got == orphan.max_txid and contents["tables"]["t"] == [(1,)]
