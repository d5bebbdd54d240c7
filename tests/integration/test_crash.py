"""kill -9 at random moments: nothing SQLite reported committed is lost (SPEC 6), and the
replica shows it was not covered up: one snapshot, then an unbroken chain of level-0 files,
every restore point on it a state the writer actually committed."""

import platform
import random
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from external import WriterProcess
from harness import HANG_TIMEOUT, Replica, assert_integrity_ok, cannot_run, db_contents


def writer_payloads(seed, first_id, last_id):
    """The payload writer.py (seeded `seed`, starting at `first_id`) gave each id it
    inserted, replaying its random choices."""
    rng = random.Random(seed)
    payloads = {}
    for i in range(first_id, last_id + 1):
        size = rng.choice([0, 10, 100, 1000]) if rng.random() < 0.9 else rng.randint(5000, 70000)
        payloads[i] = rng.randbytes(size)
    return payloads


def expected_log(payloads, writers, k):
    """The log table right after the commit of id `k`: ids 1..k, each with its writer's pid
    and payload, except the rows writer.py shrank to x'00' by then (commit j shrinks j-50
    when j is a multiple of 97)."""
    return [
        (i, writers[i], b"\x00" if (i + 50) % 97 == 0 and i + 50 <= k else payloads[i])
        for i in range(1, k + 1)
    ]


def test_writer_killed_five_times_loses_nothing(tmp_path, walrust, walrust_ext, connect, replica, restore_and_compare):
    rng = random.Random("kill-9")
    db = tmp_path / "app.db"
    reported = []
    rounds = []  # (seed, first id)
    for round_ in range(5):
        # Each round reopens the database in a new process: it must pick up what the killed
        # one captured but had not uploaded. Some rounds upload eagerly, some lazily.
        # Rounds alternate FULL and NORMAL: at FULL the WAL's own fsync makes each commit
        # durable (the shadow log is synced before that WAL generation ends, never on the
        # commit path); at NORMAL both are left to the page cache.
        settings = {"sync_interval": rng.choice([0, 50, 1000])}
        writer = WriterProcess(
            db, seed=round_, stderr_path=tmp_path / f"writer-{round_}.err",
            ext=walrust_ext, replica=replica, settings=settings,
            synchronous=["NORMAL", "FULL"][round_ % 2],
        )
        # "Random moments": after a random number of reported commits, while it keeps writing.
        writer.wait_for(rng.randint(5, 300))
        if round_ == 0:
            # The first writer's snapshot is what every later level-0 file continues (checked
            # below). Killed before it was uploaded (a few commits at NORMAL take
            # milliseconds), no writer might leave one, and that check would see nothing.
            deadline = time.monotonic() + HANG_TIMEOUT
            while not any(f.level == 9 for f in replica.ltx_files()):
                assert time.monotonic() < deadline, "the first writer uploaded no snapshot"
                time.sleep(0.01)
        ids = writer.kill()
        assert writer.first_id > max(reported, default=0), "a reported commit was lost locally"
        reported += ids
        rounds.append((round_, writer.first_id))

    conn = connect(db, replica)
    synced = walrust.sync(conn)
    _, restored = restore_and_compare(replica, conn)
    restored_ids = {row[0] for row in db_contents(restored)["tables"]["log"]}
    missing = sorted(set(reported) - restored_ids)
    assert not missing, f"{len(missing)} reported commits missing from the restore: {missing[:20]}"
    # The counter row counts every commit of every writer, reported or not.
    commits = conn.execute("SELECT n FROM counter WHERE k = 'commits'").fetchone()[0]
    last_id = conn.execute("SELECT count(*) FROM log").fetchone()[0]
    assert commits == last_id
    final_log = db_contents(conn)["tables"]["log"]
    assert [r[0] for r in final_log] == list(range(1, last_id + 1))

    files = replica.ltx_files()
    snapshots = [f for f in files if f.level == 9]
    level0 = sorted((f.min_txid, f.max_txid) for f in files if f.level == 0)
    first_snapshot = min(f.max_txid for f in snapshots)

    # Intermediate restore points, by content: each is the state right after one commit of
    # the writer (every row as written, the counter equal to the rows). TXIDs and row ids
    # should advance together (one TXID per commit): checked below, as a fresh snapshot
    # would take a TXID of its own.
    payloads = {}
    for n, (seed, first) in enumerate(rounds):
        end = rounds[n + 1][1] - 1 if n + 1 < len(rounds) else last_id
        payloads.update(writer_payloads(seed, first, end))
    writers = {r[0]: r[1] for r in final_log}
    points = [hi for lo, hi in level0 if hi > first_snapshot]
    sample = sorted(set(points[:: max(1, len(points) // 12)] + [first_snapshot, points[-1]]))
    offsets = set()
    for t in sample:
        out = tmp_path / f"at-{t}.db"
        assert walrust.restore(replica, out, t) == t
        assert_integrity_ok(out, f"restore at TXID {t}")
        contents = db_contents(out)["tables"]
        k = len(contents["log"])
        assert contents["log"] == expected_log(payloads, writers, k), (
            f"restore at TXID {t} is not the state after commit {k}"
        )
        counter = contents.get("counter", [])  # created by the writer's first commits
        assert counter == ([("commits", k)] if k else []), (t, counter)
        if "counter" in contents:
            # Past the writer's two CREATE TABLE commits: a snapshot may fall between them
            # (the log table and no counter yet), one commit before the others' offset.
            offsets.add(t - k)

    # The replica holds the first writer's snapshot and after it only level-0 files that
    # continue it without a gap up to the synced TXID. A lost shadow-log record would have
    # needed a fresh snapshot to cover it, or left a gap (issue 12).
    problems = []
    if len(snapshots) != 1:
        problems.append(f"fresh snapshots after kills: {[(f.min_txid, f.max_txid) for f in snapshots]}")
    if [f for f in files if 0 < f.level < 9]:
        problems.append("compacted files, though nothing here compacts")
    expected = first_snapshot + 1
    for lo, hi in level0:
        if hi < expected:
            continue  # written before the snapshot
        if lo != expected:
            problems.append(f"level-0 TXIDs jump from {expected - 1} to {lo}")
        expected = hi + 1
    if expected - 1 != synced:
        problems.append(f"level 0 ends at {expected - 1}, synced {synced}")
    if len(offsets) != 1:
        problems.append(f"TXIDs and commits do not advance together: TXID - id {sorted(offsets)}")
    assert not problems, "; ".join(problems)


@pytest.mark.parametrize("moment", ["before the rename", "after the rename"])
def test_killed_during_a_segment_roll(tmp_path, walrust, walrust_ext, connect, restore_and_compare, moment):
    """kill -9 in the middle of a shadow-log segment roll (8 MiB of records: the commit that
    crosses it seals the segment with a Roll record, renames the spare into place as the next
    segment, then appends there). Arranged with gdb: a breakpoint on rename(".../log/spare",
    ".../<n>.seg") in the writer, which is killed there, or once the rename has returned. The
    next process must carry on: nothing reported committed is lost, the log goes on."""
    gdb = shutil.which("gdb")
    if gdb is None:
        cannot_run("gdb is not installed (apt-get install gdb): it arranges the kill")
    if platform.machine() != "x86_64":
        cannot_run("the breakpoint reads rename()'s arguments from x86_64 registers")
    replica = Replica.file(tmp_path / "replica")
    db = tmp_path / "app.db"
    log = tmp_path / "app.db-walrust" / "log"
    writer = WriterProcess(db, seed=7, stderr_path=tmp_path / "writer-0.err", ext=walrust_ext,
                           replica=replica, settings={"sync_interval": 50}, hold=True)
    writer.wait_started()
    # libc's rename(), at its first instruction: the arguments are in rdi and rsi. ($_regex
    # matches from the start of the string.)
    cond = '$_regex((char*)$rdi, ".*/log/spare$") && $_regex((char*)$rsi, ".*[.]seg$")'
    commands = ["set pagination off", "set confirm off", f"break *rename if {cond}", "continue",
                'printf "TARGET %s\\n", (char*)$rsi']
    if moment == "after the rename":
        commands += ["finish", 'printf "RESULT %d\\n", (int)$rax']
    commands.append("kill")
    args = [gdb, "-q", "-nx", "-batch", "-p", str(writer.proc.pid)]
    for c in commands:
        args += ["-ex", c]
    debugger = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
    try:
        seen = []
        for line in debugger.stdout:  # the breakpoint is in before the writer may go on
            seen.append(line)
            if line.startswith("Breakpoint 1 at"):
                break
        else:
            raise AssertionError("gdb set no breakpoint:\n" + "".join(seen))
        writer.go()
        rest, _ = debugger.communicate(timeout=HANG_TIMEOUT)
    finally:
        if debugger.poll() is None:
            debugger.kill()
            debugger.wait()
    output = "".join(seen) + rest
    assert "Breakpoint 1, " in output, f"the writer never rolled a segment:\n{output[-3000:]}"
    reported = writer.kill()  # gdb killed it; this collects what it reported
    assert len(reported) > 0

    # The kill happened where it was meant to: the new segment is not there yet, or (after a
    # rename that found a spare) it is the spare's zeros, no record in it. (Whether a spare was
    # ready by then is up to the writer's pace: without one the rename fails, ENOENT, and the
    # roll would create the segment next.)
    target = Path(re.search(r"^TARGET (.*)$", output, re.M).group(1))
    assert target.parent == log, target
    renamed = moment == "after the rename" and re.search(r"^RESULT 0$", output, re.M)
    if renamed:
        with open(target, "rb") as f:
            assert f.read(4096) == bytes(4096), f"{target.name} already holds a record"
    else:
        assert not target.exists(), f"{target.name} exists: {sorted(log.iterdir())}"
    segments = sorted(log.glob("*.seg"))

    # The next process carries on past the roll, then this one uploads and restores.
    after = WriterProcess(db, seed=8, stderr_path=tmp_path / "writer-1.err", ext=walrust_ext,
                          replica=replica, settings={"sync_interval": 50})
    after.wait_for(200)
    assert after.first_id > max(reported), "a reported commit was lost locally"
    reported += after.kill()
    assert sorted(log.glob("*.seg"))[-1].name >= segments[-1].name
    conn = connect(db, replica)
    walrust.sync(conn)
    _, restored = restore_and_compare(replica, conn)
    restored_ids = {row[0] for row in db_contents(restored)["tables"]["log"]}
    missing = sorted(set(reported) - restored_ids)
    assert not missing, f"{len(missing)} reported commits missing from the restore: {missing[:20]}"
