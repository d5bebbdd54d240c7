"""Leftovers of killed processes (issue 13): the temporary files a process killed mid-write
leaves (LTX files being built in `<db>-walrust/tmp/`, `log/spare.tmp.PID`, `*.PID-N.tmp` in a
local-directory replica, `walrust-compact-*` spool files) are removed by the next start of
replication and by `walrust compact`, so they never pile up across crashes; and a compaction
killed between its steps leaves the replica restorable and its work for the next run."""

import json

import os
import random
import re
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from harness import Replica, db_contents

HERE = Path(__file__).parent
PYTHON = "/usr/bin/python3"
TEMP_NAME = re.compile(
    r"(\.ltx\.(\d+)\.tmp|^spare\.tmp\.(\d+)|\.(\d+)-\d+\.tmp|^walrust-compact-(\d+)-\d+\..*\.tmp)$"
)


def temp_files(*dirs):
    """{path: (pid, size)} of walrust's temporary files under `dirs`."""
    found = {}
    for d in dirs:
        for p in Path(d).rglob("*"):
            m = TEMP_NAME.search(p.name)
            if not m:
                continue
            try:
                size = p.stat().st_size  # a live writer may rename it meanwhile: then gone
            except FileNotFoundError:
                continue
            if p.is_file():
                found[p] = (int(next(g for g in m.groups()[1:] if g)), size)
    return found


def alive(pid):
    return Path(f"/proc/{pid}").exists()


def start_replication(db, replica, ext, **env_vars):
    """A process that opens the database with its replica (replication starts at open) and
    exits: 'the next start'."""
    code = (
        "import sqlite3, sys, urllib.parse\n"
        "l = sqlite3.connect(':memory:'); l.enable_load_extension(True); l.load_extension(sys.argv[1])\n"
        "uri = 'file:' + urllib.parse.quote(sys.argv[2], safe='/') + '?walrust_replica=' + "
        "urllib.parse.quote(sys.argv[3], safe='/:')\n"
        "c = sqlite3.connect(uri, uri=True, isolation_level=None)\n"
        "print(c.execute('SELECT walrust_status()').fetchone()[0])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    subprocess.run([PYTHON, "-c", code, str(ext), str(db), replica.url], check=True,
                   capture_output=True, env={**env, **env_vars}, timeout=300)


def test_ltx_files_left_in_the_system_temporary_directory_are_removed(tmp_path, walrust_ext):
    """A full shadow directory sends LTX files to the system's temporary directory; one a
    killed process left there goes at the next start of replication (of any database), and
    nothing else there is touched: a live process's file, a file of another name."""
    tmp = tmp_path / "systmp"
    tmp.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert not alive(dead.pid)
    name = "0000000000000001-0000000000000007.ltx.{}.tmp"
    left = tmp / name.format(dead.pid)
    live = tmp / name.format(os.getpid())
    other = tmp / "0000000000000001-0000000000000007.ltx"
    for f in (left, live, other):
        f.write_bytes(b"x" * 4096)
    db = tmp_path / "app.db"
    with sqlite3.connect(db) as c:
        c.execute("PRAGMA journal_mode=WAL")
    start_replication(db, Replica.file(tmp_path / "replica"), walrust_ext, TMPDIR=str(tmp))
    assert not left.exists(), "the killed process's LTX file survived the start"
    assert live.exists() and other.exists(), sorted(p.name for p in tmp.iterdir())


def test_kill_9_leftovers_are_removed_at_the_next_start(tmp_path, walrust_ext):
    rng = random.Random("leftovers")
    db = tmp_path / "app.db"
    shadow = tmp_path / "app.db-walrust"
    replica = Replica.file(tmp_path / "replica")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    seen_leftovers = 0
    for round_ in range(8):
        proc = subprocess.Popen(
            [PYTHON, str(HERE / "churn.py"), "--ext", str(walrust_ext), "--db", str(db),
             "--replica", replica.url],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        ticks = rng.randint(1, 40)
        for _ in range(ticks):
            assert proc.stdout.readline().startswith("tick"), "the writer stopped"
        proc.send_signal(signal.SIGKILL)
        proc.wait()

        before = temp_files(shadow, replica.objects)
        assert all(not alive(pid) for pid, _ in before.values()), before
        seen_leftovers += len(before)
        start_replication(db, replica, walrust_ext)
        after = temp_files(shadow, replica.objects)
        stale = sorted(str(p) for p in before if p.exists())
        assert not stale, f"round {round_}: leftovers survived the start: {stale}"
        # The starter exited too: whatever it left is not from a live process either, and
        # is gone at the next start; nothing accumulates.
        assert len(after) <= 2, f"round {round_}: {after}"
    assert seen_leftovers > 0, "no kill left a temporary file: the test saw nothing to clean"


def test_walrust_compact_removes_leftovers_of_killed_compactions(tmp_path, walrust_ext):
    cli = Path(walrust_ext).parent / "walrust"
    assert cli.is_file(), f"the walrust binary is missing at {cli}: run cargo build --release"
    replica = Replica.file(tmp_path / "replica")
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    # Leftovers as killed processes leave them, from a PID no process has (above Linux's
    # pid_max): a compaction's spool file and a replica file being written.
    dead = 4_194_304 + 5
    ltx_dir = replica.objects / "ltx" / "0"
    ltx_dir.mkdir(parents=True)
    planted = [
        systmp / f"walrust-compact-{dead}-0.spool.tmp",
        ltx_dir / f"0000000000000001-0000000000000002.ltx.{dead}-0.tmp",
        replica.objects / f"manifest.json.{dead}-1.tmp",
    ]
    for p in planted:
        p.write_bytes(b"x" * 1000)
    others = [systmp / "someone-elses.tmp", ltx_dir / "0000000000000001-0000000000000002.ltx.tmp"]
    for p in others:
        p.write_bytes(b"y")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    env["TMPDIR"] = str(systmp)
    dry = subprocess.run([str(cli), "compact", replica.url, "--dry-run"], env=env,
                         capture_output=True, text=True)
    assert all(p.exists() for p in planted), "a dry run must change nothing"
    run = subprocess.run([str(cli), "compact", replica.url], env=env, capture_output=True, text=True)
    # An empty replica: nothing to compact (exit 3), but the leftovers are gone.
    assert run.returncode == 3, run.stderr
    assert dry.returncode == 3, dry.stderr
    assert [p for p in planted if p.exists()] == []
    assert all(p.exists() for p in others), "files that are not walrust's were touched"
    assert "removed 3 temporary files (3000 bytes)" in run.stderr, run.stderr


def kill_when_a_temp_file_shows(proc, dirs, rng):
    """kill -9 `proc` at a random moment while it has a temporary file in `dirs` (or let it
    finish if it never has one). Returns whether it was killed with one there."""
    sightings = rng.randint(1, 20)
    while proc.poll() is None:
        if temp_files(*dirs):
            sightings -= 1
            if sightings == 0:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                return True
    return False


def test_walrust_compact_killed_at_random_points_leaves_nothing_behind(tmp_path, walrust_ext):
    cli = Path(walrust_ext).parent / "walrust"
    assert cli.is_file(), f"the walrust binary is missing at {cli}: run cargo build --release"
    rng = random.Random("compact-kills")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    # A replica with many level-0 files of 256 KiB pages to merge.
    source = Replica.file(tmp_path / "source")
    writer = subprocess.Popen(
        [PYTHON, str(HERE / "churn.py"), "--ext", str(walrust_ext), "--db",
         str(tmp_path / "app.db"), "--replica", source.url],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    for _ in range(40):
        assert writer.stdout.readline().startswith("tick"), "the writer stopped"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    # Level 1 merges the files of 30-second windows that have ended.
    time.sleep(31)
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    env["TMPDIR"] = str(systmp)
    killed_with_temp = 0
    for round_ in range(6):
        replica = Replica.file(tmp_path / f"replica-{round_}")
        shutil.copytree(source.objects, replica.objects)
        for p in temp_files(replica.objects):
            p.unlink()  # the writer's own leftovers: not this test's subject
        proc = subprocess.Popen([str(cli), "compact", replica.url], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        killed_with_temp += kill_when_a_temp_file_shows(proc, [systmp, replica.objects], rng)
        before = temp_files(systmp, replica.objects)
        run = subprocess.run([str(cli), "compact", replica.url], env=env,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stderr
        stale = sorted(str(p) for p in before if p.exists())
        assert not stale, f"round {round_}: leftovers survived walrust compact: {stale}"
        assert temp_files(systmp, replica.objects) == {}, f"round {round_}"
    assert killed_with_temp > 0, "no kill hit a compaction with a temporary file"


def replica_state(replica):
    """The replica's LTX files, and how many of them manifest.json does not name."""
    head = json.loads((replica.objects / "manifest.json").read_bytes())
    named = len(head["files"]) + sum(p["count"] for p in head.get("parts", []))
    files = sorted((f.level, f.min_txid, f.max_txid) for f in replica.ltx_files())
    return files, len(files) - named


def test_a_compaction_killed_between_its_steps_leaves_the_replica_whole(
        tmp_path, walrust, failpoint_ext):
    """`walrust compact` killed after a merged file is stored and before the manifest names
    it (`compact.merged_written`), or after the manifest stopped naming the files retention
    removes and before they are deleted (`compact.unnamed`): the replica restores as before,
    and the next run finishes the work, leaving the same files, all named, as a run that was
    never killed."""
    cli = Path(failpoint_ext).parent / "walrust"
    assert cli.is_file(), f"the walrust binary is missing at {cli}: run make build-failpoints"
    source = Replica.file(tmp_path / "source")
    conn = walrust.connect(tmp_path / "app.db", source, sync_interval=0)
    conn.execute("CREATE TABLE t(x)")
    for round_ in range(3):  # snapshots, each after level-0 files retention then removes
        for i in range(10):
            conn.execute("INSERT INTO t VALUES (?)", (round_ * 100 + i,))
            walrust.sync(conn)
        conn.execute("SELECT walrust_snapshot()").fetchone()
    for i in range(10):
        conn.execute("INSERT INTO t VALUES (?)", (1000 + i,))
        walrust.sync(conn)
    expected = db_contents(conn)
    conn.close()
    time.sleep(31)  # level 1 merges the files of 30-second windows that have ended
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    env["TMPDIR"] = str(tmp_path)
    compact = [str(cli), "compact", None, "--retention", "hourly=0,daily=0,weekly=0,monthly=0"]

    def run(replica, failpoint=None):
        e = dict(env, WALRUST_FAILPOINTS=failpoint) if failpoint else env
        cmd = [replica.url if a is None else a for a in compact]
        return subprocess.run(cmd, env=e, capture_output=True, text=True, timeout=300)

    def restores_as_expected(replica, what):
        out = tmp_path / f"{what}.db"
        walrust.restore(replica, out)
        assert db_contents(out) == expected, f"restore {what}"

    clean = Replica.file(tmp_path / "clean")
    shutil.copytree(source.objects, clean.objects)
    assert run(clean).returncode == 0
    clean_files, unnamed = replica_state(clean)
    assert unnamed == 0
    assert any(level == 1 for level, _, _ in clean_files), clean_files
    assert len(clean_files) < len(replica_state(source)[0]), "retention removed nothing"
    for point in ["compact.merged_written", "compact.unnamed"]:
        replica = Replica.file(tmp_path / point)
        shutil.copytree(source.objects, replica.objects)
        killed = run(replica, point)
        assert killed.returncode == -signal.SIGABRT, (point, killed.returncode, killed.stderr)
        restores_as_expected(replica, f"{point}-killed")
        again = run(replica)
        assert again.returncode == 0, again.stderr
        files, unnamed = replica_state(replica)
        assert unnamed == 0, f"{point}: {unnamed} files the manifest does not name"
        assert files == clean_files, point
        restores_as_expected(replica, f"{point}-after")


def test_a_restore_killed_midway_leaves_no_output_and_the_next_one_finishes(
        tmp_path, walrust, failpoint_ext):
    """`walrust restore` killed between two files leaves no output (only its temporary file);
    the next restore to that path removes the leftover and finishes. While a restore runs, a
    second one to the same path is refused, and the first is not disturbed."""
    cli = Path(failpoint_ext).parent / "walrust"
    assert cli.is_file(), f"the walrust binary is missing at {cli}: run make build-failpoints"
    replica = Replica.file(tmp_path / "replica")
    conn = walrust.connect(tmp_path / "app.db", replica, sync_interval=0)
    conn.execute("CREATE TABLE t(x)")
    for i in range(6):
        conn.execute("INSERT INTO t VALUES (?)", (i,))
        walrust.sync(conn)
    expected = db_contents(conn)
    conn.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    out = tmp_path / "restored.db"
    temp = Path(f"{out}.tmp-walrust")
    restore = [str(cli), "restore", replica.url, "-o", str(out)]
    killed = subprocess.run(restore, env=dict(env, WALRUST_FAILPOINTS="restore.file_applied@2"),
                            capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGABRT, killed.stderr
    assert not out.exists() and temp.exists()
    slow = subprocess.Popen(restore, env=dict(env, WALRUST_FAILPOINTS="restore.file_applied~500"),
                            stderr=subprocess.PIPE, text=True)
    said = slow.stderr.readline()  # then it holds a temporary file of its own
    assert "left by a restore that was interrupted" in said, said
    refused = subprocess.run(restore, env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "another restore" in refused.stderr, refused.stderr
    assert slow.wait(timeout=120) == 0, slow.stderr.read()
    assert not temp.exists()
    assert db_contents(out) == expected


STALE_WAL = r"""
import os, signal, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("PRAGMA journal_mode=WAL")
conn.execute("PRAGMA wal_autocheckpoint=0")
conn.execute("CREATE TABLE t(v TEXT)")
conn.execute("CREATE TABLE stale(v TEXT)")
conn.executemany("INSERT INTO t VALUES (?)", [(f"stale {i}",) for i in range(20)])
os.kill(os.getpid(), signal.SIGKILL)  # the WAL keeps every commit
"""


@pytest.mark.parametrize("leftover", ["-wal", "-journal"])
def test_restore_refuses_a_wal_or_journal_left_at_its_output_path(tmp_path, walrust, connect,
                                                                 replica, leftover):
    """A database at the output path was deleted but its `-wal` (or hot `-journal`) was not:
    SQLite opening the restored file would apply it, and the restore would read as another
    database's pages. Restore refuses, names the file and leaves everything as it was."""
    conn = connect(tmp_path / "app.db", replica)
    conn.execute("CREATE TABLE t(v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"good {i}",) for i in range(5)])
    walrust.sync(conn)
    old = tmp_path / "old" / "x.db"
    old.parent.mkdir()
    run = subprocess.run([PYTHON, "-c", STALE_WAL, str(old)], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == -9, run.stderr
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.db"
    left = Path(str(out) + leftover)
    shutil.copyfile(str(old) + "-wal", left)  # a journal's bytes do not matter: it exists
    with pytest.raises(sqlite3.Error) as err:
        walrust.restore(replica, out)
    message = str(err.value)
    assert message.startswith("walrust: ") and left.name in message, message
    assert sorted(os.listdir(out_dir)) == [left.name]
    left.unlink()
    walrust.restore(replica, out)
    rows = db_contents(out)["tables"]["t"]
    assert len(rows) == 5, rows


def _occupy_shadow_path(kind, out, connect, new_replica):
    """Puts at `out`'s shadow path what a test of the restore below asks for."""
    theirs = Path(str(out) + "-walrust")
    if kind == "not walrust's":
        (theirs / "log").mkdir(parents=True)
        (theirs / "state.json").write_text("not walrust's\n")
        (theirs / "log" / "notes.txt").write_text("mine\n")
    elif kind == "empty":
        theirs.mkdir(parents=True)
    elif kind == "another replica's":
        conn = connect(out, new_replica("elsewhere"))
        conn.execute("CREATE TABLE u(v TEXT)")
        conn.execute("SELECT walrust_sync()").fetchone()
        conn.close()
        _remove_database(out)
    return theirs


def _remove_database(db):
    """What a disk that loses only the database file leaves: its shadow directory."""
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)


@pytest.mark.parametrize("kind, says, then", [
    ("not walrust's", "is not a walrust shadow directory", "cannot be read"),
    ("empty", "refused until walrust_takeover()", "walrust_takeover()"),
    ("another replica's", "names another replica", "already replicates to"),
    ("this replica's", "from a new snapshot", None),
])
def test_restore_leaves_a_directory_already_at_its_shadow_path_alone(
        tmp_path, walrust, connect, walrust_cli, replica, new_replica, kind, says, then):
    """Besides its output, restore writes one thing: the copy's shadow directory
    `<out>-walrust/`, so that the copy can continue the replica's history (README, "One
    history per replica"). A directory already at that path (a removed database's, or the
    user's) is never touched: the restore succeeds and says in one line that it did not record
    itself and what opening the copy with the same replica will do, which is what it does: fail
    in one line naming what to do, or (the shadow directory of a database that replicated to
    this replica) continue its replication from a new snapshot."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "x.db"
    # The replicated database: `out` itself when the shadow directory is to be its own.
    source = out if kind == "this replica's" else tmp_path / "app.db"
    conn = connect(source, replica)
    conn.execute("CREATE TABLE t(v TEXT)")
    conn.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(5)])
    walrust.sync(conn)
    conn.close()
    if source == out:
        _remove_database(out)
    theirs = _occupy_shadow_path(kind, out, connect, new_replica)
    before = {str(p.relative_to(theirs)): p.read_bytes() for p in theirs.rglob("*") if p.is_file()}
    run = subprocess.run([str(walrust_cli), "restore", replica.url, "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    warning = [line for line in run.stderr.splitlines() if str(theirs) in line]
    assert len(warning) == 1 and says in warning[0], run.stderr
    assert warning[0].startswith("walrust: "), warning
    after = {str(p.relative_to(theirs)): p.read_bytes() for p in theirs.rglob("*") if p.is_file()}
    assert after == before
    assert sorted(os.listdir(out_dir)) == ["x.db", "x.db-walrust"]
    assert len(db_contents(out)["tables"]["t"]) == 5
    if then is not None:
        with pytest.raises(sqlite3.Error) as err:
            conn = connect(out, replica)
            conn.execute("INSERT INTO t VALUES ('after')")
            walrust.sync(conn)
        message = str(err.value)  # SQLite may put its own words before walrust's line
        assert "walrust: " in message and then in message, message
        return
    copy = connect(out, replica)
    copy.execute("INSERT INTO t VALUES ('after')")
    walrust.sync(copy)
    copy.close()
    check = tmp_path / "check.db"
    walrust.restore(replica, check)
    assert len(db_contents(check)["tables"]["t"]) == 6
