"""Checkpoints off the commit path (SPEC 3 walrust_checkpoint, issue 8)."""

import json
import os
import re
import subprocess
import time
from pathlib import Path

from harness import open_plain


def wal_size(db):
    wal = f"{db}-wal"
    return os.path.getsize(wal) if os.path.exists(wal) else 0


def biggest_wal_while_writing(walrust, connect, replica, restore_and_compare, db, synchronous,
                              rounds, commits):
    """The largest the WAL grows over `rounds` x `commits` one-row commits, each round synced
    and restored."""
    conn = connect(db, replica, sync_interval=100)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    biggest = 0
    for _ in range(rounds):
        for _ in range(commits):
            conn.execute("INSERT INTO t(v) VALUES (randomblob(300))")
            biggest = max(biggest, wal_size(db))
        walrust.sync(conn)
        restore_and_compare(replica, conn)
    return biggest


def test_sustained_writes_keep_the_wal_bounded(tmp_path, walrust, connect, replica, restore_and_compare):
    biggest = biggest_wal_while_writing(walrust, connect, replica, restore_and_compare,
                                        tmp_path / "app.db", "NORMAL", 4, 6000)
    # 24,000 commits of ~1 page each: without checkpoints the WAL would pass 96 MB. The
    # background checkpointer starts at 1000 frames and, at NORMAL, the WAL restarts past 8000
    # (33 MB); allow it to lag behind that on a busy machine.
    assert biggest < 48 << 20, f"WAL grew to {biggest} bytes"


def test_at_synchronous_full_the_wal_restarts_sooner(tmp_path, walrust, connect, replica,
                                                     restore_and_compare):
    """At FULL (SQLite's default) every commit waits for an fsync and disk work beside it
    costs more than a checkpoint saves, so the committing connection checkpoints at 1,000
    frames (4 MB), as SQLite alone does, instead of 8,000 (33 MB)."""
    biggest = biggest_wal_while_writing(walrust, connect, replica, restore_and_compare,
                                        tmp_path / "app.db", "FULL", 1, 12000)
    # Well below what 8,000 frames would make (33 MB), with room for a snapshot's read view
    # holding the WAL back on a busy machine.
    assert biggest < 16 << 20, f"WAL grew to {biggest} bytes"


def wal_frames(conn):
    """Frames in use in the WAL: what a reader may have to search and a checkpoint to copy.
    -1 means another checkpoint (walrust's) was running: ask again."""
    for _ in range(200):
        frames = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1]
        if frames >= 0:
            return frames
        time.sleep(0.01)
    raise AssertionError("the checkpointer lock never came free")


def test_the_wal_shrinks_back_after_a_long_reader(tmp_path, walrust, connect, replica):
    db = tmp_path / "app.db"
    conn = connect(db, replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    reader = connect(db)
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM t").fetchone()
    for _ in range(3000):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(1000))")
    grown = wal_frames(conn)
    assert grown > 4000  # the reader kept every checkpoint from finishing
    reader.execute("COMMIT")
    # Once the reader is gone the background checkpointer finishes (at once, or when the
    # database goes idle), and the next write starts the WAL over from its beginning. The
    # file keeps its size, as with SQLite alone; what a reader or a checkpoint must go through
    # shrinks back.
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.5)
        conn.execute("INSERT INTO t(v) VALUES (randomblob(10))")
        if wal_frames(conn) < 100:
            break
    assert wal_frames(conn) < 100, f"WAL still holds {wal_frames(conn)} frames (was {grown})"
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
    # Idle past walrust's idle time (1 s) and several polls of its checkpoint thread, which
    # must not run its idle pass in this mode (it did, and the WAL restarted a frame early).
    time.sleep(1.8)
    for i in range(2500):
        for c in (conn, plain):
            c.execute("INSERT INTO t(v) VALUES (zeroblob(500))")
        if i % 100 == 0:
            sizes.append((wal_size(ours), wal_size(plain_db)))
    # SQLite's automatic checkpoint runs on the committing connection at 1000 frames in both:
    # the WAL files evolve identically.
    assert [a for a, _ in sizes] == [b for _, b in sizes], sizes
    walrust.sync(conn)


def test_a_busy_database_gets_a_spare_log_segment_and_gives_it_back_when_idle(
    tmp_path, walrust, connect, replica
):
    # The checkpoint thread writes the next shadow-log segment ahead (zeros) while the log fills
    # fast, so the commit that rolls overwrites cached pages; an idle database keeps no spare.
    db = tmp_path / "app.db"
    conn = connect(db, replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    spare = tmp_path / "app.db-walrust" / "log" / "spare"
    seen = False
    # Each 8 MiB segment gives the checkpoint thread a window (from half full to the roll) to
    # write the spare; on a loaded machine it may miss one, so keep filling, within a bound.
    for _ in range(32000):
        conn.execute("INSERT INTO t(v) VALUES (randomblob(2000))")
        if spare.exists():
            seen = True
            break
    assert seen, "no spare segment was written while the log filled (about 16 segments)"
    deadline = time.time() + 30
    while spare.exists() and time.time() < deadline:
        time.sleep(0.2)
    assert not spare.exists(), "an idle database kept its spare segment"
    walrust.sync(conn)


# --- the shadow log is durable before the WAL restarts (synchronous=FULL) ---------------------

STRACE_CALL = re.compile(r"^(\d+)\s+(\w+)\((\d+)<([^>]*)>(.*)$")
STRACE_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)$")


def unsynced_log_writes_at_each_wal_restart(trace, wal):
    """Reads an `strace -f -y` trace: at the start of each write of the WAL's header after its
    first (a restart: a new generation overwrites the old one's frames), the shadow-log
    segments written to since their last completed `fdatasync`/`fsync` that began after the
    write. Returns one list per restart, and how many log writes the trace showed in all (none
    would make every list empty: a trace that proves nothing)."""
    written, synced, pending, restarts = {}, {}, {}, []

    def finish(pid, call, path, tail):
        if "= -1" in tail:
            return
        # The spare segment is written as zeros under another name: no records.
        if call == "pwrite64" and "/log/" in path and "spare" not in path.rsplit("/", 1)[1]:
            written[path] = written.get(path, 0) + 1
        elif call in ("fdatasync", "fsync") and path in pending.get(pid, {}):
            synced[path] = max(synced.get(path, 0), pending[pid].pop(path))

    headers = 0
    for line in trace.splitlines():
        if m := STRACE_RESUMED.match(line):
            pid, call, tail = m.groups()
            path = pending.get(pid, {}).get("call", (None, None))
            if path[0] == call:
                pending[pid].pop("call")
                finish(pid, call, path[1], tail)
            continue
        m = STRACE_CALL.match(line)
        if not m:
            continue
        pid, call, _fd, path, tail = m.groups()
        if call == "pwrite64" and path == wal and re.search(r", 32, 0(\)| <unfinished)", tail):
            headers += 1
            if headers > 1:
                restarts.append(sorted(p for p, n in written.items() if synced.get(p, 0) < n))
        if call in ("fdatasync", "fsync"):
            pending.setdefault(pid, {})[path] = written.get(path, 0)
        if tail.endswith("<unfinished ...>"):
            pending.setdefault(pid, {})["call"] = (call, path)
        else:
            finish(pid, call, path, tail)
    return restarts, sum(written.values())


def test_at_full_the_log_is_synced_before_the_wal_restarts(tmp_path, walrust, replica):
    """SPEC 6: at FULL a commit is durable once the WAL's fsync returns; the log takes over
    when the WAL's generation ends, so every record appended before a restart is synced before
    the restart's first write. Each WAL write, log write and sync is traced (`strace -f`):
    the log is synced on another thread while the committing connection checkpoints, so this
    checks the order across threads too. The uploader waits a day, so that no sync of its
    covers for a missing one."""
    db = tmp_path / "app.db"
    trace = tmp_path / "trace"
    child = [
        "strace", "-f", "-y", "-o", str(trace), "-e", "trace=pwrite64,fdatasync,fsync",
        "/usr/bin/python3", str(Path(__file__).parent / "sqlchild.py"), "--ext", str(walrust.ext),
        "--db", str(db), "--replica", replica.url, "--setting", "sync_interval=86400000",
    ]
    requests = [
        ["PRAGMA journal_mode=WAL", []],
        ["CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)", []],
        # One-page commits, appended in groups; then commits of 18 pages, each appended at
        # its release (and the log synced beside the checkpoint): both roll segments.
        ["repeat", "INSERT INTO t(v) VALUES (randomblob(3000 + ? % 2))", 3500],
        ["repeat", "INSERT INTO t(v) VALUES (randomblob(70000 + ? % 2))", 300],
        ["SELECT count(*) FROM t", []],
        ["exit"],
    ]
    proc = subprocess.run(child, input="".join(json.dumps(r) + "\n" for r in requests),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"rows": [[3800]]' in proc.stdout, proc.stdout[-500:]
    restarts, log_writes = unsynced_log_writes_at_each_wal_restart(trace.read_text(), f"{db}-wal")
    assert log_writes >= 100, f"the trace shows {log_writes} writes to the shadow log"
    assert len(restarts) >= 6, f"the WAL restarted {len(restarts)} times (9,000 frames at FULL)"
    assert all(r == [] for r in restarts), f"log segments unsynced at a WAL restart: {restarts}"


# The start of each application below: walrust loaded (the failpoints' build), a new database
# replicating in WAL mode with one table; `conn` is its connection.
CHILD = r"""
import json, sqlite3, sys, time
ext, db, replica = sys.argv[1:4]
loader = sqlite3.connect(":memory:")
loader.enable_load_extension(True)
loader.load_extension(ext)
loader.close()
conn = sqlite3.connect(f"file:{db}?walrust_replica={replica}", uri=True, isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("CREATE TABLE t(x)")
"""


def run_child(script, failpoint_ext, db, replica, failpoints, trace=False):
    """Runs `script` (CHILD and its own lines) in Debian's Python with the failpoints set."""
    env = dict(os.environ, WALRUST_FAILPOINTS=failpoints)
    if trace:
        env["WALRUST_TRACE"] = "1"
    proc = subprocess.run(["/usr/bin/python3", "-c", script, str(failpoint_ext), str(db),
                           replica.url], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


EXPLICIT_CHECKPOINTS = CHILD + r"""
answers = []
for i in range(3):
    conn.execute("INSERT INTO t VALUES (?)", (i,))
    # The checkpoint thread's idle pass begins 1 to 1.25 s after the last commit, and holds
    # the checkpointer lock for the failpoint's 2 s.
    time.sleep(1.8)
    answers.append(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone())
print(json.dumps(answers))
conn.close()
"""


def test_an_explicit_checkpoint_waits_out_the_checkpoint_thread(tmp_path, failpoint_ext, replica):
    """SQLite answers a checkpoint that meets another one busy at once, without calling any
    busy handler. The application's own `PRAGMA wal_checkpoint(TRUNCATE)`, run while walrust's
    checkpoint thread holds the checkpointer lock for its pass (held 2 s here by the
    `checkpoint.internal` failpoint), would then report busy and leave the WAL as it was, where
    SQLite alone checkpoints and truncates it. It waits for the pass instead, and succeeds."""
    db = tmp_path / "app.db"
    proc = run_child(EXPLICIT_CHECKPOINTS, failpoint_ext, db, replica, "checkpoint.internal~2000",
                     trace=True)
    answers = json.loads(proc.stdout)
    assert answers == [[0, 0, 0]] * 3, answers
    waits = re.findall(r"request for the checkpointer lock waited \d+ ms", proc.stderr)
    assert waits, proc.stderr[-3000:]


COMMIT_DURING_A_PASS = CHILD + r"""
time.sleep(1.8)  # the idle pass holds the checkpointer lock from 1-1.25 s to 3-3.25 s
conn.execute("INSERT INTO t VALUES (1)")  # during it, past what it copies
time.sleep(4)
conn.close()
"""


def test_a_commit_during_an_idle_pass_gets_its_own(tmp_path, failpoint_ext, replica):
    """An idle database gets one PASSIVE checkpoint so that its next write starts the WAL over.
    A commit made while that pass runs is past what the pass copies: it gets an idle pass of
    its own, rather than the first pass's "done" standing for it (its frames would then stay
    uncopied until the next write)."""
    db = tmp_path / "app.db"
    proc = run_child(COMMIT_DURING_A_PASS, failpoint_ext, db, replica, "checkpoint.internal~2000",
                     trace=True)
    passes = re.findall(r"checkpoint PASSIVE of \S+ at \d+ frames: done true", proc.stderr)
    assert len(passes) >= 2, proc.stderr[-3000:]


SNAPSHOT_UPLOADING = CHILD + r"""
time.sleep(0.5)  # the replica's first snapshot waits for the next commit...
conn.execute("INSERT INTO t VALUES (0)")  # ...which fixes its point
for i in range(1, 20):
    conn.execute("INSERT INTO t VALUES (?)", (i,))  # frames past that point
time.sleep(1.0)  # the snapshot has read its pages, and its upload sleeps (the failpoint's 4 s)
uploaded = json.loads(conn.execute("SELECT walrust_status()").fetchone()[0])["uploaded_txid"]
print(json.dumps({"uploaded": uploaded, "checkpoint": conn.execute("PRAGMA wal_checkpoint").fetchone()}))
conn.close()
"""


def test_a_snapshot_being_uploaded_holds_back_no_checkpoint(tmp_path, failpoint_ext, replica):
    """A snapshot reads its pages through a read transaction at its point, and while that lasts
    no checkpoint copies a frame past the point. It ends once every page is in the snapshot's
    file, before the upload (which for a large database on a slow store takes long: a busy
    writer's WAL would grow meanwhile). Here the upload is held 4 s (failpoint
    `snapshot.file_written`) and the application's `PRAGMA wal_checkpoint` during it, with
    frames past the snapshot's point, copies every frame."""
    db = tmp_path / "app.db"
    proc = run_child(SNAPSHOT_UPLOADING, failpoint_ext, db, replica, "snapshot.file_written~4000")
    out = json.loads(proc.stdout)
    assert out["uploaded"] == 0, out  # the snapshot was still uploading
    busy, log, copied = out["checkpoint"]
    assert busy == 0 and log > 0 and copied == log, out
