"""`walrust watch`, the sidecar (SPEC 7, issue 16): an application that does not load walrust
writes thousands of transactions while `target/release/walrust watch` runs beside it and is
killed with -9 twice; the replica restores (with walrust and with Litestream) to exactly the
database, its level-0 TXIDs contiguous. The sidecar links no SQLite: it reads the WAL itself and
takes part in SQLite's WAL-index locking (src/watch/shm.rs)."""

import json
import re
import os
import shutil
import signal
import socket
import sqlite3
import struct
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from harness import (HANG_TIMEOUT, SYSTEM_PYTHON, Replica, assert_integrity_ok, assert_same_contents,
                     db_contents, url_under)
from external import litestream_bin

# The application: plain sqlite3 of the Python on PATH (pyenv's cannot load extensions), one
# connection that stays open (a live WAL index) until its stdin closes.
APP = r"""
import sqlite3, sys, time
db, n, every, progress = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = sqlite3.connect(db, timeout=2, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
if every == 0:
    c.execute("PRAGMA wal_autocheckpoint=0")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB)")
busy = 0
for i in range(1, n + 1):
    c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(300))", (i,))
    if every and i % every == 0:
        busy += c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
    if i % 50 == 0:
        with open(progress + ".tmp", "w") as f:
            f.write(str(i))
        import os; os.replace(progress + ".tmp", progress)
        time.sleep(0.005)
with open(progress + ".tmp", "w") as f:
    f.write(f"done {busy}")
import os; os.replace(progress + ".tmp", progress)
sys.stdin.read()
"""

N = 4000


def app_python():
    found = shutil.which("python3")
    return found if found and Path(found).resolve() != Path(SYSTEM_PYTHON).resolve() else SYSTEM_PYTHON


class App:
    def __init__(self, tmp_path, db, every):
        self.progress = tmp_path / "progress"
        script = tmp_path / "app.py"
        script.write_text(APP)
        self.proc = subprocess.Popen(
            [app_python(), str(script), str(db), str(N), str(every), str(self.progress)],
            stdin=subprocess.PIPE,
        )

    def count(self):
        try:
            text = self.progress.read_text()
        except FileNotFoundError:
            return 0
        return N if text.startswith("done") else int(text)

    def wait_for(self, n):
        deadline = time.monotonic() + HANG_TIMEOUT
        while self.count() < n:
            assert self.proc.poll() is None, f"the application exited {self.proc.returncode}"
            assert time.monotonic() < deadline, f"the application never reached {n} commits"
            time.sleep(0.01)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=HANG_TIMEOUT)


class Watch:
    def __init__(self, cli, db, replica, log):
        self.log = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [str(cli), "watch", str(db), "--replica", replica.url, "--sync-interval", "100"],
                stderr=out,
            )

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=HANG_TIMEOUT)
        assert code == 0, f"walrust watch exited {code} on SIGTERM:\n{self.log.read_text()}"


def assert_contiguous(replica):
    """Level 0 goes on from one file to the next, or from a snapshot (its only gap, SPEC 6)."""
    files = replica.ltx_files()
    snapshots = {f.max_txid for f in files if f.level == 9}
    level0 = sorted((f for f in files if f.level == 0), key=lambda f: f.min_txid)
    assert snapshots, "the replica has no snapshot"
    for prev, cur in zip(level0, level0[1:]):
        assert cur.min_txid == prev.max_txid + 1 or cur.min_txid - 1 in snapshots, (
            f"TXID gap in level 0: {prev.min_txid:x}-{prev.max_txid:x} then {cur.min_txid:x}-{cur.max_txid:x}"
        )
    return len(snapshots), max([max(snapshots)] + [f.max_txid for f in level0])


def run_with_kills(tmp_path, walrust_cli, replica, every, kills_at=(N // 4, N // 2)):
    """The application's N commits, the sidecar killed with -9 and started again as the
    application reaches each count of `kills_at`, then stopped."""
    db = tmp_path / "app.db"
    app = App(tmp_path, db, every)
    app.wait_for(50)
    log = tmp_path / "watch.log"
    watch = Watch(walrust_cli, db, replica, log)
    for at in kills_at:
        app.wait_for(at)
        watch.kill9()
        watch = Watch(walrust_cli, db, replica, log)
    app.wait_for(N)
    wait_watched(walrust_cli, db, watch)
    watch.stop()
    return db, app, log


def assert_restores_to(walrust_cli, replica, tmp_path, db, what):
    """`walrust restore` of the replica equals the database."""
    out = tmp_path / "restored.db"
    r = subprocess.run([str(walrust_cli), "restore", replica.url, "-o", str(out)],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert_same_contents(db_contents(db), db_contents(out), what)


def check_restores(tmp_path, walrust_cli, litestream, replica, db, newest):
    expected = db_contents(db)
    out = tmp_path / "restored.db"
    r = subprocess.run([str(walrust_cli), "restore", replica.url, "-o", str(out)],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert f"TXID {newest:016x}" in r.stderr + r.stdout, r.stderr + r.stdout
    assert_integrity_ok(out, "walrust restore of the sidecar's replica")
    assert_same_contents(expected, db_contents(out), "walrust restore of the sidecar's replica")
    out = tmp_path / "litestream.db"
    litestream(db, replica).restore(out)
    assert_integrity_ok(out, "litestream restore of the sidecar's replica")
    assert_same_contents(expected, db_contents(out), "litestream restore of the sidecar's replica")


def test_watch_survives_kill9_without_a_new_snapshot(tmp_path, walrust_cli, litestream, replica):
    db, app, log = run_with_kills(tmp_path, walrust_cli, replica, every=0)
    try:
        snapshots, newest = assert_contiguous(replica)
        # Nothing restarted the WAL while the watch was dead: it resumed from the shadow log.
        assert snapshots == 1, f"{snapshots} snapshots:\n{log.read_text()}"
        check_restores(tmp_path, walrust_cli, litestream, replica, db, newest)
        # A second watch of the same database is refused while one runs.
        first = Watch(walrust_cli, db, replica, log)
        wait_watched(walrust_cli, db, first)
        second = subprocess.run([str(walrust_cli), "watch", str(db), "--replica", replica.url],
                                capture_output=True, text=True, timeout=HANG_TIMEOUT)
        assert second.returncode == 1 and "already watched" in second.stderr, second.stderr
        status = subprocess.run([str(walrust_cli), "status", str(db)],
                                capture_output=True, text=True, timeout=HANG_TIMEOUT)
        assert status.returncode == 0, status.stderr
        st = json.loads(status.stdout)
        assert st["watched"] is True and st["uploaded_txid"] == newest, st
        assert st["replica"] and st["last_error"] is None, st
        first.stop()
    finally:
        app.close()


def test_a_watch_killed_once_the_wal_restarted_goes_on_without_a_snapshot(tmp_path, walrust_cli,
                                                                        replica):
    """The sidecar lets SQLite restart the WAL only after writing into the shadow log that every
    frame was copied and checkpointed, with the database file's fingerprint: killed once the
    application has started a new WAL generation, before it saw it, the next watch can still
    prove the new generation follows the log and takes no second snapshot."""
    db = tmp_path / "app.db"
    app = sqlite3.connect(db, isolation_level=None)
    app.execute("PRAGMA journal_mode=WAL")
    app.execute("PRAGMA wal_autocheckpoint=0")  # the watch checkpoints
    app.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")

    def insert(n):
        for _ in range(n):
            app.execute("INSERT INTO t(body) VALUES (randomblob(300))")

    insert(20)
    log = tmp_path / "watch.log"
    watch = Watch(walrust_cli, db, replica, log)
    try:
        wait_for_snapshot(replica, watch)
        deadline = time.monotonic() + HANG_TIMEOUT
        while True:
            # Everything copied and checkpointed: the watch lets its read slot go in that
            # same look. Frozen, it cannot see the next commit start a new generation.
            while (idx := wal_index(db))[1] != idx[0]:
                assert watch.proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"the watch never checkpointed: {idx}"
                time.sleep(0.02)
            time.sleep(0.2)
            watch.proc.send_signal(signal.SIGSTOP)
            salts = wal_salts(db)
            insert(1)
            if wal_salts(db) != salts:
                break
            watch.proc.send_signal(signal.SIGCONT)  # it had not let go yet: again
            assert time.monotonic() < deadline, "the watch never let SQLite restart the WAL"
        watch.kill9()
        insert(20)
        watch = Watch(walrust_cli, db, replica, log)
        wait_watched(walrust_cli, db, watch)
        watch.stop()
        snapshots, _ = assert_contiguous(replica)
        assert snapshots == 1, f"{snapshots} snapshots:\n{log.read_text()}"
        assert_restores_to(walrust_cli, replica, tmp_path, db, "the watch's replica")
    finally:
        if watch.proc.poll() is None:
            watch.kill9()
        app.close()


def wait_for_snapshot(replica, watch):
    deadline = time.monotonic() + HANG_TIMEOUT
    while not any(f.level == 9 for f in replica.ltx_files()):
        assert watch.proc.poll() is None, watch.log.read_text()
        assert time.monotonic() < deadline, "the watch never uploaded a snapshot"
        time.sleep(0.05)


def wal_salts(db):
    return Path(f"{db}-wal").read_bytes()[16:24]


def wait_watched(walrust_cli, db, watch):
    """Until `walrust status` says a watch runs (it has taken its lock)."""
    deadline = time.monotonic() + HANG_TIMEOUT
    while True:
        assert watch.proc.poll() is None, f"walrust watch exited:\n{watch.log.read_text()}"
        r = subprocess.run([str(walrust_cli), "status", str(db)], capture_output=True, text=True,
                           timeout=HANG_TIMEOUT)
        if r.returncode == 0 and json.loads(r.stdout).get("watched"):
            return
        assert time.monotonic() < deadline, "walrust watch never started"
        time.sleep(0.05)


def wal_index(db):
    """(mxFrame, nBackfill) of the live WAL index (`-shm`, native byte order), read as a
    reader would: both header copies equal."""
    while True:
        b = Path(f"{db}-shm").read_bytes()[:136]
        if b[:48] == b[48:96]:
            return struct.unpack_from("=I", b, 16)[0], struct.unpack_from("=I", b, 96)[0]


def test_watch_checkpoints_for_an_application_that_never_does(tmp_path, walrust_cli, litestream,
                                                              replica):
    """`--checkpoint background` (the default): with the application's automatic checkpoints
    off, the sidecar copies every frame into the database file itself once it is in the shadow
    log, and then lets SQLite restart the WAL."""
    db = tmp_path / "app.db"
    app = App(tmp_path, db, every=0)  # wal_autocheckpoint=0
    app.wait_for(50)
    log = tmp_path / "watch.log"
    watch = Watch(walrust_cli, db, replica, log)
    try:
        app.wait_for(N)
        deadline = time.monotonic() + HANG_TIMEOUT
        while (idx := wal_index(db))[1] != idx[0]:
            assert watch.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"never checkpointed: {idx}\n{log.read_text()}"
            time.sleep(0.05)
        # The database file alone (no WAL) holds every commit.
        alone = tmp_path / "alone.db"
        shutil.copy(db, alone)
        assert_integrity_ok(alone, "the database file the sidecar checkpointed")
        assert_same_contents(db_contents(db), db_contents(alone), "the database file alone")
        # The application's next commits restart the WAL (the sidecar let its read slot go).
        c = __import__("sqlite3").connect(db, isolation_level=None)
        frames = idx[0]
        while wal_index(db)[0] >= frames:
            c.execute("INSERT INTO t(body) VALUES (randomblob(10))")
            assert time.monotonic() < deadline, f"the WAL never restarted\n{log.read_text()}"
            time.sleep(0.05)
        c.close()
        watch.stop()
        _, newest = assert_contiguous(replica)
        check_restores(tmp_path, walrust_cli, litestream, replica, db, newest)
    finally:
        app.close()


@pytest.mark.parametrize("kills_at", [(N // 4, N // 2), range(N // 10, N, N // 10)],
                         ids=["two-kills", "kill-loop"])
def test_watch_with_the_application_checkpointing(tmp_path, walrust_cli, litestream, replica,
                                                  kills_at):
    """The application checkpoints every 300 commits while the sidecar is killed with -9, twice
    or in a loop of nine (each restart finds the WAL restarted, or not, at a different point);
    level 0 is contiguous and every restore point is a database the application had."""
    db, app, log = run_with_kills(tmp_path, walrust_cli, replica, every=300, kills_at=kills_at)
    try:
        _, newest = assert_contiguous(replica)
        check_restores(tmp_path, walrust_cli, litestream, replica, db, newest)
        check_every_restore_point(tmp_path, walrust_cli, replica)
    finally:
        app.close()


def check_every_restore_point(tmp_path, walrust_cli, replica):
    """Each restore point (the end of a level-0 file, a snapshot) restores to a database that
    passes the integrity check and holds rows 1..n, as some moment of the application's had:
    a level-0 file that spanned changes the sidecar did not see (a `Resync`) would not."""
    points = sorted({f.max_txid for f in replica.ltx_files() if f.level in (0, 9)})
    for txid in points:
        out = tmp_path / f"at-{txid:x}.db"
        r = subprocess.run([str(walrust_cli), "restore", replica.url, "-o", str(out), "--txid", str(txid)],
                           capture_output=True, text=True, timeout=HANG_TIMEOUT)
        assert r.returncode == 0, f"restore at TXID {txid:x}: {r.stderr}"
        assert_integrity_ok(out, f"the restore at TXID {txid:x}")
        c = sqlite3.connect(out)
        ids = [row[0] for row in c.execute("SELECT id FROM t ORDER BY id")]
        c.close()
        assert ids == list(range(1, len(ids) + 1)), (
            f"the restore at TXID {txid:x} has {len(ids)} rows, not 1..n: {ids[:3]}...{ids[-3:]}"
        )
        out.unlink()


def test_watch_beside_a_process_that_loads_the_extension(tmp_path, walrust_cli, connect, walrust, replica):
    """The application writes without walrust while this process writes the same database
    through the extension (same replica): one shared shadow log, one uploader at a time, and
    the replica holds every commit of both."""
    db = tmp_path / "app.db"
    app = App(tmp_path, db, every=0)
    app.wait_for(50)
    log = tmp_path / "watch.log"
    watch = Watch(walrust_cli, db, replica, log)
    ext = connect(db, replica, sync_interval=100)
    ext.execute("CREATE TABLE IF NOT EXISTS e(id INTEGER PRIMARY KEY, body BLOB)")
    try:
        for i in range(1, 501):
            ext.execute("INSERT INTO e(id, body) VALUES (?, randomblob(100))", (i,))
            if i == 250:
                watch.kill9()
                watch = Watch(walrust_cli, db, replica, log)
        app.wait_for(N)
        watch.stop()
        newest = walrust.sync(ext)
        _, last = assert_contiguous(replica)
        assert last == newest
        assert_restores_to(walrust_cli, replica, tmp_path, db, "restore of the shared replica")
    finally:
        ext.close()
        app.close()


def test_watch_started_before_the_application_opens(tmp_path, walrust_cli, litestream, replica):
    """No live WAL index at start (the sidecar reads the WAL as it is, then joins the index
    the application creates); whatever the application did before the join, the replica
    restores to the database."""
    db = tmp_path / "app.db"
    subprocess.run([SYSTEM_PYTHON, "-c", "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); "
                    "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)'); c.close()",
                    str(db)], check=True, timeout=HANG_TIMEOUT)
    log = tmp_path / "watch.log"
    watch = Watch(walrust_cli, db, replica, log)
    time.sleep(0.3)
    app = App(tmp_path, db, every=0)
    try:
        app.wait_for(N)
        watch.stop()
        _, newest = assert_contiguous(replica)
        check_restores(tmp_path, walrust_cli, litestream, replica, db, newest)
    finally:
        app.close()


def watch_status(cli, db):
    r = subprocess.run([str(cli), "status", str(db)], capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def wait_uploaded(cli, db, above, log):
    """Waits (a generous deadline, no timing claim) until the replica has a TXID above `above`."""
    deadline = time.monotonic() + HANG_TIMEOUT
    while (st := watch_status(cli, db))["uploaded_txid"] <= above:
        assert time.monotonic() < deadline, f"nothing above TXID {above} uploaded: {st}\n{log.read_text()}"
        time.sleep(0.05)
    return st["uploaded_txid"]


def test_watch_wakes_on_inotify_not_the_fallback_poll(tmp_path, walrust_cli, replica):
    """With the safety-net poll set to an hour (a hidden setting for this test), only inotify
    can tell the idle sidecar that a commit came: each one is still uploaded."""
    import sqlite3
    db = tmp_path / "app.db"
    c = sqlite3.connect(db, isolation_level=None)
    c.execute("PRAGMA journal_mode=WAL")
    c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    log = tmp_path / "watch.log"
    env = dict(os.environ, WALRUST_WATCH_FALLBACK_MS="3600000")
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(walrust_cli), "watch", str(db), "--replica", replica.url,
                                 "--sync-interval", "100"], stderr=out, env=env)
    try:
        seen = wait_uploaded(walrust_cli, db, 0, log)
        for i in range(1, 4):
            time.sleep(1.5)  # past the sidecar's quick looks after its last change
            c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(100))", (i,))
            seen = wait_uploaded(walrust_cli, db, seen, log)
        assert "polling every" not in log.read_text(), log.read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        assert_restores_to(walrust_cli, replica, tmp_path, db, "restore after inotify wake-ups")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        c.close()


def new_wal_databases(dbs):
    """A connection to each new database of `dbs`, in WAL mode with one table."""
    conns = []
    for db in dbs:
        c = sqlite3.connect(db, isolation_level=None)
        c.execute("PRAGMA journal_mode=WAL")
        c.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
        conns.append(c)
    return conns


def stop_all(proc, conns):
    """Kills the watch if it still runs; closes the application's connections."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for c in conns:
        c.close()


def watch_several(tmp_path, walrust_cli, dbs_and_urls, args, what, env=None):
    """Makes each database (WAL, one table), runs `walrust watch ARGS` (in `env`) while an
    application without walrust writes 200 rows to each, stops it, and restores each from its
    URL."""
    dbs_and_urls = list(dbs_and_urls)
    conns = new_wal_databases(db for db, _ in dbs_and_urls)
    log = tmp_path / "watch.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(walrust_cli), "watch", *args, "--sync-interval", "100"],
                                stderr=out, env=env)
    try:
        for i in range(1, 201):
            for c in conns:
                c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        for db, url in dbs_and_urls:
            out = tmp_path / f"restored-{db.name}"
            r = subprocess.run([str(walrust_cli), "restore", url, "-o", str(out)],
                               capture_output=True, text=True, timeout=HANG_TIMEOUT)
            assert r.returncode == 0, r.stderr
            assert_same_contents(db_contents(db), db_contents(out), f"restore of {db.name} from {what}")
    finally:
        stop_all(proc, conns)


def test_watch_with_a_litestream_config_file_of_two_databases(tmp_path, walrust_cli, replica, new_replica):
    """`walrust watch --config FILE` in Litestream's format (`replicas:` for one database,
    `replica:` for the other): both are replicated and restore; a second replica is refused
    with its line number."""
    second = new_replica("second")
    dbs = [tmp_path / "one.db", tmp_path / "two words.db"]
    config = tmp_path / "litestream.yml"
    config.write_text(f"""# as for litestream replicate -config
dbs:
  - path: {dbs[0]}
    replicas:
      - url: "{replica.url}"   # the first

  - path: "{dbs[1]}"
    replica:
      url: '{second.url}'
""")
    watch_several(tmp_path, walrust_cli, zip(dbs, (replica.url, second.url)),
                  ["--config", str(config)], "--config")
    bad = tmp_path / "two-replicas.yml"
    bad.write_text(f"dbs:\n  - path: {dbs[0]}\n    replicas:\n      - url: {replica.url}\n      - url: {second.url}\n")
    r = subprocess.run([str(walrust_cli), "watch", "--config", str(bad)],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 2 and "line 3: 2 replicas" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_watch_reads_a_replica_given_as_litestreams_fields(tmp_path, walrust_cli, replica,
                                                          new_replica):
    """A Litestream configuration whose replicas are written as fields (`type: s3` with bucket,
    path, endpoint, region, force-path-style; `type: file` with path), each with its own
    `sync-interval`: each database goes to the replica its fields name, at its own interval
    (the one at 1h, over `--sync-interval 100`, holds its commits until the watch stops)."""
    slow = new_replica("slow")
    dbs = [tmp_path / "fast.db", tmp_path / "slow.db"]

    def fields(r, interval):
        if r.kind == "file":
            f = {"type": "file", "path": str(r.objects)}
        else:
            f = {k: v for k, v in r.litestream_replica_config().items() if k != "sync-interval"}
        f["sync-interval"] = interval
        return "".join(f"      {k}: {str(v).lower() if isinstance(v, bool) else v}\n"
                       for k, v in f.items())

    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {dbs[0]}\n    replica:\n{fields(replica, '100ms')}"
                      f"  - path: {dbs[1]}\n    replica:\n{fields(slow, '1h')}")
    conns = new_wal_databases(dbs)
    log = tmp_path / "watch.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(walrust_cli), "watch", "--config", str(config),
                                 "--sync-interval", "100"], stderr=out)
    try:
        for r in (replica, slow):
            deadline = time.monotonic() + HANG_TIMEOUT
            while not any(f.level == 9 for f in r.ltx_files()):
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, f"no snapshot in {r.url}:\n{log.read_text()}"
                time.sleep(0.05)
        def status(db):
            r = subprocess.run([str(walrust_cli), "status", str(db)], capture_output=True,
                               text=True, timeout=HANG_TIMEOUT)
            assert r.returncode == 0, r.stderr
            return json.loads(r.stdout)

        def write_and_wait_for_fast(first):
            for i in range(first, first + 50):
                for c in conns:
                    c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
            deadline = time.monotonic() + HANG_TIMEOUT
            while (st := status(dbs[0]))["pending_txns"] or st["txid"] < first + 49:
                assert time.monotonic() < deadline, f"fast.db never caught up: {st}\n{log.read_text()}"
                time.sleep(0.05)

        # A snapshot's level-0 batch follows it at once, whatever the interval: commits made
        # meanwhile may go with it. The second round is the one the interval holds back, once
        # the snapshot's step is done (its file is in the replica before it is recorded).
        for db in dbs:
            deadline = time.monotonic() + HANG_TIMEOUT
            while status(db)["uploaded_txid"] < 1:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.05)
        write_and_wait_for_fast(1)
        write_and_wait_for_fast(51)
        time.sleep(1)  # ten of the intervals slow.db would have without its own
        st = status(dbs[1])
        assert st["pending_txns"] >= 50, f"slow.db uploaded before its hour: {st}\n{log.read_text()}"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        for db, r in zip(dbs, (replica, slow)):
            (tmp_path / f"restore-{db.stem}").mkdir()
            assert_restores_to(walrust_cli, r, tmp_path / f"restore-{db.stem}", db,
                               f"{db.name}'s replica")
    finally:
        stop_all(proc, conns)


def test_a_litestream_config_with_its_own_settings_works_as_it_is(tmp_path, walrust_cli, replica):
    """A Litestream 0.5 configuration as deployments write it, with its metrics address and
    settings of how Litestream runs (logging, compaction levels, monitor and checkpoint intervals, part
    size, validation) and its snapshot settings (`snapshot:` at the top and under the database,
    Litestream 0.3's `snapshot-interval` and `retention` on the replica): `litestream` accepts
    it, and so does `walrust watch`, which names each setting it does not use, with its line,
    takes the snapshot interval and retention (the replica's, over the database's, over the
    top's), and replicates the database."""
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(f"""addr: ":0"
logging:
  level: info
levels:
  - interval: 5m
snapshot:
  interval: 24h
  retention: 24h
part-size: 10MB
dbs:
  - path: {db}
    monitor-interval: 1s
    checkpoint-interval: 1m
    snapshot:
      interval: 1h
    replica:
      url: {replica.url}
      validation-interval: 6h
      snapshot-interval: 10m
      retention: 72h
""")
    ls = subprocess.run([litestream_bin(), "databases", "-config", str(config)],
                        capture_output=True, text=True, timeout=HANG_TIMEOUT,
                        env={k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"})
    assert ls.returncode == 0 and str(db) in ls.stdout, ls.stdout + ls.stderr
    watch_several(tmp_path, walrust_cli, [(db, replica.url)], ["--config", str(config)],
                  "a Litestream config with its own settings")
    log = (tmp_path / "watch.log").read_text()
    assert "serving metrics at http://0.0.0.0:" in log, log  # Go's ":PORT": every interface
    for no, key in [(2, "logging"), (4, "levels"), (9, "part-size"),
                    (12, "monitor-interval"), (13, "checkpoint-interval"),
                    (18, "validation-interval")]:
        assert f"{config} line {no}: `{key}` is Litestream's own and not used: " in log, log
    assert ("a snapshot every 600 s, then compaction and retention "
            "hourly=72,daily=0,weekly=0,monthly=0") in log, log
    assert "sets no snapshot retention" not in log, log


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(url):
    """{(name, db): value} of a Prometheus text page, and its families' `# TYPE` lines."""
    with urllib.request.urlopen(url, timeout=HANG_TIMEOUT) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain")
        text = r.read().decode()
    values = {}
    for line in text.splitlines():
        m = re.fullmatch(r'(\w+)\{db="([^"]*)"\} (\S+)', line)
        if m:
            values[(m[1], m[2])] = float(m[3])
    return values, [line for line in text.splitlines() if line.startswith("# TYPE ")]


def watch_config(tmp_path, walrust_cli, text):
    """`walrust watch --config` of a file holding `text` (uploads every 100 ms), and its log."""
    config = tmp_path / "litestream.yml"
    config.write_text(text)
    log = tmp_path / "watch.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(walrust_cli), "watch", "--config", str(config),
                                 "--sync-interval", "100"], stderr=out)
    return proc, log


def wait_logged(proc, log, done):
    """Waits (a generous deadline, no timing claim) until `done(log text)` while the watch runs."""
    deadline = time.monotonic() + HANG_TIMEOUT
    while not done(log.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)


def test_watch_serves_litestreams_metrics_at_addr(tmp_path, walrust_cli, replica):
    """`addr:` in the config file serves the watched databases' replication at `/metrics`, in
    Prometheus' text format, under the names Litestream serves there (so its dashboards and
    alerts keep working: `litestream_sync_count` grows while replication runs, and
    `litestream_sync_error_count` does not), with walrust's own for the replica: its TXID
    follows the database's once the upload is done, and nothing is pending."""
    db = tmp_path / "app.db"
    conns = new_wal_databases([db])
    port = free_port()
    proc, log = watch_config(tmp_path, walrust_cli, f'addr: "127.0.0.1:{port}"\ndbs:\n'
                             f"  - path: {db}\n    replica:\n      url: {replica.url}\n")
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + HANG_TIMEOUT
        # Metrics are served before the database is watched: the commits below come after
        # both, so that they follow the first snapshot (TXID 1) rather than fall inside it.
        wait_logged(proc, log, lambda text: f"serving metrics at {url}" in text
                    and f"watching {db}" in text)
        for i in range(1, 51):
            conns[0].execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
        txid = wait_uploaded(walrust_cli, db, 1, log)
        values, types = scrape(url)
        d = str(db)
        assert values[("litestream_txid", d)] >= txid, values
        assert values[("litestream_db_size", d)] == os.path.getsize(db), values
        assert values[("litestream_sync_count", d)] > 0, values
        assert values[("litestream_sync_error_count", d)] == 0, values
        assert values[("walrust_replica_error", d)] == 0, values
        assert "# TYPE litestream_sync_count counter" in types, types
        # Nothing pending at last: the record the watch appends once its checkpoint has copied
        # everything (its proof for the next WAL generation) is taken at the uploader's next look.
        while ((v := scrape(url)[0])[("walrust_replica_txid", d)] < v[("litestream_txid", d)]
               or v[("walrust_replica_pending_bytes", d)] > 0):
            assert time.monotonic() < deadline, (v, log.read_text())
            time.sleep(0.05)
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=HANG_TIMEOUT)
        assert err.value.code == 404
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
    finally:
        stop_all(proc, conns)


def test_a_metrics_address_in_use_is_said_and_replication_goes_on(tmp_path, walrust_cli,
                                                                  replica):
    """A metrics address the watch cannot listen on (another process has the port), here given
    as `--addr`, is said in one line naming the address and what to do, and the database is
    replicated without metrics, as Litestream does: monitoring is never why nothing is
    replicated."""
    db = tmp_path / "app.db"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        watch_several(tmp_path, walrust_cli, [(db, replica.url)],
                      [str(db), "--replica", replica.url, "--addr", f"127.0.0.1:{port}"],
                      "a watch whose metrics address is taken")
    log = (tmp_path / "watch.log").read_text()
    line = [l for l in log.splitlines() if "cannot serve metrics" in l]
    assert len(line) == 1 and f"127.0.0.1:{port}" in line[0] and "addr:" in line[0], log
    assert "replicating without them" in line[0] and line[0].startswith("walrust: "), log


class Pings:
    """A health-check service on 127.0.0.1: it counts the GETs of each path."""

    def __init__(self):
        import http.server
        import threading
        self.paths = []
        pings = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                pings.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def heartbeat_watch(tmp_path, walrust_cli, dbs_and_urls, pings):
    """`walrust watch` of these databases with a heartbeat to `pings` every minute; the URL's
    path stands for a health check's secret token."""
    text = (f"heartbeat-url: http://127.0.0.1:{pings.port}/ping/s3cr3t-token\n"
            "heartbeat-interval: 1m\ndbs:\n")
    for db, url in dbs_and_urls:
        text += f"  - path: {db}\n    replica:\n      url: {url}\n"
    return watch_config(tmp_path, walrust_cli, text)


def test_watch_pings_litestreams_heartbeat_url_while_it_replicates(tmp_path, walrust_cli,
                                                                    replica):
    """`heartbeat-url:` (Litestream 0.5.16+) is asked once per `heartbeat-interval` while every
    watched database replicates: here the first GET comes once the database is in its replica,
    and no second one within the minute. The URL's path (a health check's secret) is never in
    the log; scheme and host are."""
    db = tmp_path / "app.db"
    conns = new_wal_databases([db])
    pings = Pings()
    proc, log = heartbeat_watch(tmp_path, walrust_cli, [(db, replica.url)], pings)
    try:
        deadline = time.monotonic() + HANG_TIMEOUT
        while not pings.paths:
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        assert pings.paths == ["/ping/s3cr3t-token"]
        assert watch_status(walrust_cli, db)["uploaded_txid"] >= 1
        for i in range(1, 21):
            conns[0].execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
        wait_uploaded(walrust_cli, db, 1, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        assert pings.paths == ["/ping/s3cr3t-token"], "one ping per interval"
        text = log.read_text()
        assert f"heartbeat: GET http://127.0.0.1:{pings.port}/… every 60 s" in text, text
        assert "s3cr3t" not in text, text
    finally:
        stop_all(proc, conns)
        pings.close()


def test_no_heartbeat_while_a_database_fails_to_replicate(tmp_path, walrust_cli, replica):
    """One database of two cannot reach its replica (its directory would be under a regular
    file): the heartbeat is withheld, and the watch says which database holds it back, so the
    health check's service reports the watch down instead of up."""
    good, bad = tmp_path / "good.db", tmp_path / "bad.db"
    conns = new_wal_databases([good, bad])
    (tmp_path / "not-a-dir").write_text("a regular file")
    pings = Pings()
    unreachable = f"file://{tmp_path}/not-a-dir/replica"
    proc, log = heartbeat_watch(tmp_path, walrust_cli, [(good, replica.url), (bad, unreachable)],
                                pings)
    try:
        withheld = f"heartbeat withheld: {bad} is failing to replicate"
        wait_logged(proc, log, lambda text: withheld in text)
        wait_uploaded(walrust_cli, good, 0, log)
        assert pings.paths == [], log.read_text()
    finally:
        stop_all(proc, conns)
        pings.close()


def test_a_heartbeat_interval_litestream_refuses_is_refused(tmp_path, walrust_cli, replica):
    """Litestream refuses a heartbeat interval under a minute and a URL that is not http(s);
    so does walrust watch, in one line naming the file's line, before it watches anything."""
    db = tmp_path / "app.db"
    new_wal_databases([db])[0].close()
    config = tmp_path / "litestream.yml"
    body = f"dbs:\n  - path: {db}\n    replica:\n      url: {replica.url}\n"
    for head, said in [("heartbeat-url: http://h/x\nheartbeat-interval: 30s\n",
                        "line 2: heartbeat-interval `30s` is not a duration of at least 1m"),
                       ("heartbeat-url: h/x\n", "line 1: heartbeat-url must be an http://")]:
        config.write_text(head + body)
        r = subprocess.run([str(walrust_cli), "watch", "--config", str(config)],
                           capture_output=True, text=True, timeout=HANG_TIMEOUT)
        assert r.returncode == 2 and said in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def child_url(url, rel):
    """The replica Litestream gives the database at `rel` under a `dir:` entry's URL."""
    base, sep, query = url.partition("?")
    return f"{base.rstrip('/')}/{rel}{sep}{query}"


def test_watch_replicates_a_directory_of_databases(tmp_path, walrust_cli, replica):
    """A `dir:` entry (Litestream 0.5's directory replication) replicates every SQLite database
    whose name matches `pattern` (`recursive`: in subdirectories too), each to the entry's URL
    with its path under the directory appended, as Litestream names them; other files (a
    `-wal`, a text file, walrust's own state) are left out; with `watch: true` a database
    created while the watch runs is replicated too. Each restores from its own URL."""
    tenants = tmp_path / "tenants"
    (tenants / "eu").mkdir(parents=True)
    (tenants / "notes.txt").write_text("not a database")
    dbs = [tenants / "a.db", tenants / "eu" / "b.db"]
    conns = new_wal_databases(dbs)
    proc, log = watch_config(tmp_path, walrust_cli,
                             f'dbs:\n  - dir: {tenants}\n    pattern: "*.db"\n    recursive: true\n'
                             f"    watch: true\n    replica:\n      url: {replica.url}\n")
    try:
        wait_logged(proc, log, lambda text: all(f"watching {db}" in text for db in dbs))
        late = tenants / "eu" / "c.db"
        conns += new_wal_databases([late])
        dbs.append(late)
        wait_logged(proc, log, lambda text: f"watching {late}" in text)
        for i in range(1, 101):
            for c in conns:
                c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        text = log.read_text()
        assert f"{tenants}: 2 database(s) match `*.db`; others are watched as they appear" in text
        assert f"{late} appeared in {tenants}" in text, text
        watching = re.findall(r"^walrust: watching (\S+),", text, re.M)
        assert sorted(watching) == sorted(map(str, dbs)), text
        for db in dbs:
            rel = db.relative_to(tenants).as_posix()
            out = tmp_path / f"restored-{db.name}"
            r = subprocess.run([str(walrust_cli), "restore", child_url(replica.url, rel), "-o",
                                str(out)], capture_output=True, text=True, timeout=HANG_TIMEOUT)
            assert r.returncode == 0, r.stderr
            assert_same_contents(db_contents(db), db_contents(out), f"restore of {rel}")
        # A start script's restore of a lost tenant finds its replica through the `dir:` entry.
        stop_all(proc, conns)
        lost = tenants / "eu" / "b.db"
        expected = db_contents(lost)
        for f in tenants.joinpath("eu").glob("b.db*"):
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        r = subprocess.run([str(walrust_cli), "restore", "-if-db-not-exists", "-if-replica-exists",
                            "-config", str(tmp_path / "litestream.yml"), str(lost)],
                           capture_output=True, text=True, timeout=HANG_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert_same_contents(expected, db_contents(lost), "restore -config of a dir: tenant")
    finally:
        stop_all(proc, conns)


def test_litestream_names_a_directorys_replicas_as_walrust_does(tmp_path, walrust_cli,
                                                                litestream, replica):
    """The oracle for `dir:` naming: `litestream replicate` given a `dir:` entry writes each
    tenant's replica where walrust watch would (the entry's replica with the tenant's path
    under the directory appended): `walrust restore` of that URL returns the tenant."""
    tenants = tmp_path / "tenants"
    (tenants / "eu").mkdir(parents=True)
    dbs = [tenants / "a.db", tenants / "eu" / "b.db"]
    conns = new_wal_databases(dbs)
    try:
        for i in range(1, 51):
            for c in conns:
                c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
        ls = litestream(dbs[0], replica)
        ls.config.write_text(json.dumps({"dbs": [{
            "dir": str(tenants), "pattern": "*.db", "recursive": True,
            "replica": replica.litestream_replica_config()}]}))
        ls.start()
        deadline = time.monotonic() + HANG_TIMEOUT
        for db in dbs:
            url = child_url(replica.url, db.relative_to(tenants).as_posix())
            out = tmp_path / f"restored-{db.name}"
            while True:
                assert ls.proc.poll() is None, ls.tail()
                r = subprocess.run([str(walrust_cli), "restore", url, "-o", str(out)],
                                   capture_output=True, text=True, timeout=HANG_TIMEOUT)
                if r.returncode == 0 and db_contents(out) == db_contents(db):
                    break
                assert time.monotonic() < deadline, f"{url}: {r.stderr}\n{ls.tail()}"
                out.unlink(missing_ok=True)
                time.sleep(0.2)
        ls.stop()
    finally:
        for c in conns:
            c.close()


def test_a_database_deleted_and_created_again_under_the_watch_loses_nothing(tmp_path,
                                                                             walrust_cli,
                                                                             replica):
    """An application deletes its database and creates another at the same path while
    `walrust watch` runs (a reset, a backup copied into place). The watch must follow the new
    file: had it kept the old one open, its checkpoint would copy the new WAL's frames into the
    deleted file and mark them done, and SQLite would then drop them from the new database. Here
    every row of the new database survives its last close, the watch says it follows the new
    file, and the replica restores the new database (from a new snapshot)."""
    db = tmp_path / "app.db"
    (old,) = new_wal_databases([db])
    for i in range(1, 51):
        old.execute("INSERT INTO t(id, body) VALUES (?, randomblob(300))", (i,))
    proc, log = watch_config(tmp_path, walrust_cli,
                             f"dbs:\n  - path: {db}\n    replica:\n      url: {replica.url}\n")
    conns = [old]
    try:
        wait_uploaded(walrust_cli, db, 0, log)
        old.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
        new = sqlite3.connect(db, isolation_level=None)
        conns.append(new)
        new.execute("PRAGMA journal_mode=WAL")
        new.execute("CREATE TABLE u(id INTEGER PRIMARY KEY, body BLOB)")
        # Enough commits for the watch to checkpoint the new WAL (and its pages to matter).
        for i in range(1, 1501):
            new.execute("INSERT INTO u(id, body) VALUES (?, randomblob(300))", (i,))
        # The watch has copied (and checkpointed) the new WAL's commits: they are uploaded.
        wait_uploaded(walrust_cli, db, 100, log)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        new.close()  # the last close: SQLite checkpoints what it thinks is left, then deletes the WAL
        check = sqlite3.connect(db)
        assert check.execute("SELECT count(*) FROM u").fetchone() == (1500,), log.read_text()
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        check.close()
        assert_restores_to(walrust_cli, replica, tmp_path, db, "the new database's replica")
        assert "another file than the one watched" in log.read_text()
    finally:
        stop_all(proc, conns)


def test_a_tenant_removed_from_a_watched_directory_leaves_the_watch(tmp_path, walrust_cli,
                                                                      replica):
    """With `watch: true`, a database removed from the directory (a tenant deleted) is taken
    off the watch once what it had pending is uploaded, as Litestream does, instead of being
    reported failing for ever; created again, it is watched again, from a new snapshot, and its
    replica restores the new database."""
    tenants = tmp_path / "tenants"
    tenants.mkdir()
    gone = tenants / "gone.db"
    conns = new_wal_databases([tenants / "stays.db", gone])
    proc, log = watch_config(tmp_path, walrust_cli,
                             f'dbs:\n  - dir: {tenants}\n    pattern: "*.db"\n    watch: true\n'
                             f"    replica:\n      url: {replica.url}\n")
    try:
        wait_logged(proc, log, lambda text: f"watching {gone}" in text)
        conns.pop().close()
        for suffix in ("", "-wal", "-shm"):  # what the application knows of (not -walrust)
            Path(f"{gone}{suffix}").unlink(missing_ok=True)
        wait_logged(proc, log, lambda text: f"{gone} was removed from its directory" in text)
        (again,) = new_wal_databases([gone])
        conns.append(again)
        for i in range(1, 21):
            again.execute("INSERT INTO t(id, body) VALUES (?, randomblob(100))", (i,))
        wait_logged(proc, log, lambda text: text.count(f"watching {gone}") == 2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        out = tmp_path / "restored.db"
        r = subprocess.run([str(walrust_cli), "restore", child_url(replica.url, "gone.db"), "-o",
                            str(out)], capture_output=True, text=True, timeout=HANG_TIMEOUT)
        assert r.returncode == 0, r.stderr
        assert_same_contents(db_contents(gone), db_contents(out), "the tenant created again")
    finally:
        stop_all(proc, conns)


def test_a_directory_with_no_database_is_said_unless_watched(tmp_path, walrust_cli, replica):
    """A `dir:` entry that finds nothing is an error in one line saying how to wait for
    databases instead (`watch: true`), as Litestream refuses it."""
    (tmp_path / "empty").mkdir()
    config = tmp_path / "litestream.yml"
    config.write_text(f'dbs:\n  - dir: {tmp_path / "empty"}\n    pattern: "*.db"\n'
                      f"    replica:\n      url: {replica.url}\n")
    r = subprocess.run([str(walrust_cli), "watch", "--config", str(config)],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 2, r.stderr
    assert "no SQLite database in" in r.stderr and "watch: true" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_a_litestream_config_without_retention_says_nothing_is_removed(tmp_path, walrust_cli,
                                                                      replica):
    """Litestream removes what is older than 24h when its file says nothing; walrust removes
    nothing unless told: `walrust watch --config` says so at start, and what would change it."""
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {db}\n    replica:\n      url: {replica.url}\n")
    watch_several(tmp_path, walrust_cli, [(db, replica.url)], ["--config", str(config)],
                  "a Litestream config without retention")
    log = (tmp_path / "watch.log").read_text()
    assert f"{config} sets no snapshot retention: the replicas keep every snapshot" in log, log
    assert "a snapshot every 3600 s, nothing removed" in log, log


WRITE_ROWS = """import sqlite3, sys
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB)")
for i in range(int(sys.argv[2]), int(sys.argv[3])):
    c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
c.close()
"""


def write_rows(db, first, end):
    """The application, without walrust: rows first..end-1 (the database made if need be)."""
    subprocess.run([SYSTEM_PYTHON, "-c", WRITE_ROWS, str(db), str(first), str(end)],
                   check=True, timeout=HANG_TIMEOUT)


def test_a_database_is_waited_for_then_restored_when_lost(tmp_path, walrust_cli, replica):
    """A container's life with `restore-if-db-not-exists: true`. First start, before the
    application: nothing to restore, the database not there yet; the watch says so and waits,
    and watches the database from when the application creates it. Then the disk is lost (the
    database, its WAL and the shadow directory gone): the next start restores the database
    from the replica before watching it, the watch continues the replica's history, and the
    next restore holds the rows of both lives."""
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(f"snapshot:\n  retention: 24h\ndbs:\n  - path: {db}\n"
                      f"    restore-if-db-not-exists: true\n    replica:\n      url: {replica.url}\n")

    def start(log):
        with open(log, "ab") as out:
            return subprocess.Popen([str(walrust_cli), "watch", "--config", str(config),
                                     "--sync-interval", "100"], stderr=out)

    def wait_for(proc, log, text):
        deadline = time.monotonic() + HANG_TIMEOUT
        while text not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no {text!r} in:\n{log.read_text()}"
            time.sleep(0.05)

    def stop_and_restore(proc, log, what):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        out = tmp_path / what
        out.mkdir()
        assert_restores_to(walrust_cli, replica, out, db, what)

    first_log = tmp_path / "first.log"
    proc = start(first_log)
    try:
        wait_for(proc, first_log, "waiting for")
        assert "holds no restore point yet: a first start" in first_log.read_text()
        write_rows(db, 1, 201)
        wait_for(proc, first_log, "watching")
        wait_uploaded(walrust_cli, db, 0, first_log)
        stop_and_restore(proc, first_log, "first-life")
        before = db_contents(db)
        for p in tmp_path.glob("app.db*"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()

        second_log = tmp_path / "second.log"
        proc = start(second_log)
        wait_for(proc, second_log, "watching")
        assert "before watching it (restore-if-db-not-exists)" in second_log.read_text()
        assert_same_contents(before, db_contents(db), "the database restored at start")
        write_rows(db, 1001, 1101)
        stop_and_restore(proc, second_log, "second-life")
        assert "another" not in second_log.read_text(), second_log.read_text()
        assert len(db_contents(db)["tables"]["t"]) == 300
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


EXEC_APP = """import signal, sqlite3, sys, time
db, mode = sys.argv[1], sys.argv[2]
c = sqlite3.connect(db, isolation_level=None)
c.execute("PRAGMA journal_mode=WAL")
c.execute("CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, body BLOB)")
for i in range(1, 301):
    c.execute("INSERT INTO t(id, body) VALUES (?, randomblob(200))", (i,))
if mode == "fail":
    c.close()
    sys.exit(3)
stopping = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
while not stopping:
    time.sleep(0.01)
c.execute("INSERT INTO t(id, body) VALUES (1000, X'ff')")  # its last word, after SIGTERM
c.close()
"""


def test_watch_runs_the_application_and_stops_with_it(tmp_path, walrust_cli, replica):
    """`exec:` (Litestream's, for one container): the watch runs the application as its child,
    waits for the database it creates, and stops with it. An application that exits by itself
    (here with status 3, after 300 rows) ends the watch, everything uploaded, with exit 1 (an
    error other than walrust's own, SPEC 7) and a line giving the application's status.
    A SIGTERM sent to the watch reaches the application, whose last commit (made on SIGTERM)
    is uploaded before the watch exits 0."""
    app = tmp_path / "app.py"
    app.write_text(EXEC_APP)
    for mode, code, rows in [("fail", 1, 300), ("serve", 0, 301)]:
        run = tmp_path / mode
        run.mkdir()
        db = run / "app.db"
        url = url_under(replica.url, mode)
        config = run / "litestream.yml"
        config.write_text(f"exec: {SYSTEM_PYTHON} {app} {db} {mode}\n"
                          f"dbs:\n  - path: {db}\n    replica:\n      url: {url}\n")
        log = run / "watch.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen([str(walrust_cli), "watch", "--config", str(config),
                                     "--sync-interval", "100"], stderr=out)
        try:
            if mode == "serve":
                wait_uploaded(walrust_cli, db, 0, log)
                proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=HANG_TIMEOUT) == code, log.read_text()
            text = log.read_text()
            assert "waiting for" in text and f"running {SYSTEM_PYTHON} (process" in text, text
            assert str(app) not in text, "the command's arguments are not logged"
            if mode == "fail":
                assert f"walrust: {SYSTEM_PYTHON} exited with status 3" in text, text
            out = run / "restored.db"
            r = subprocess.run([str(walrust_cli), "restore", url, "-o", str(out)],
                               capture_output=True, text=True, timeout=HANG_TIMEOUT)
            assert r.returncode == 0, r.stderr
            assert_same_contents(db_contents(db), db_contents(out), f"the {mode} application's")
            assert len(db_contents(out)["tables"]["t"]) == rows
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_application_gets_the_environment_the_watch_was_given(tmp_path, walrust_cli):
    """The access key a config file names is the watch's: the application `exec:` runs sees
    the environment the watch was started with (its own AWS session token kept, no key from
    the file)."""
    report = tmp_path / "env.json"
    app = tmp_path / "app.py"
    app.write_text("import json, os, sqlite3, sys\n"
                   "json.dump({k: os.environ.get(k) for k in ('MARKER', 'AWS_SESSION_TOKEN', "
                   "'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'LITESTREAM_ACCESS_KEY_ID')}, "
                   "open(sys.argv[2], 'w'))\n"
                   "c = sqlite3.connect(sys.argv[1]); c.execute('PRAGMA journal_mode=WAL')\n"
                   "c.execute('CREATE TABLE t(x)'); c.close()\n")
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(f"access-key-id: FILEKEY\nsecret-access-key: FILESECRET\n"
                      f"exec: {SYSTEM_PYTHON} {app} {db} {report}\n"
                      f"dbs:\n  - path: {db}\n    replica:\n      url: file://{tmp_path}/replica\n")
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "MARKER": "mine",
           "AWS_SESSION_TOKEN": "the-apps-own", "LITESTREAM_ACCESS_KEY_ID": "ls-key",
           "LITESTREAM_SECRET_ACCESS_KEY": "ls-secret"}
    r = subprocess.run([str(walrust_cli), "watch", "--config", str(config)], env=env,
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 0, r.stderr
    assert json.loads(report.read_text()) == {
        "MARKER": "mine", "AWS_SESSION_TOKEN": "the-apps-own", "AWS_ACCESS_KEY_ID": None,
        "AWS_SECRET_ACCESS_KEY": None, "LITESTREAM_ACCESS_KEY_ID": "ls-key"}


def test_a_litestream_start_script_restores_as_it_is(tmp_path, walrust_cli, replica, new_replica):
    """`litestream restore -if-db-not-exists -if-replica-exists -config FILE DB`, as container
    start scripts run it, with `walrust` in its place: restores DB from the replica the file
    names for it, into DB; does nothing (exit 0) once DB is there, or when the replica is empty
    (a first start)."""
    db, fresh = tmp_path / "app.db", tmp_path / "fresh.db"
    empty = new_replica("empty")
    config = tmp_path / "litestream.yml"
    config.write_text(f"dbs:\n  - path: {db}\n    replica:\n      url: {replica.url}\n"
                      f"  - path: {fresh}\n    replica:\n      url: {empty.url}\n")
    watch_several(tmp_path, walrust_cli, [(db, replica.url)],
                  [str(db), "--replica", replica.url], "the application's life")
    before = db_contents(db)
    for p in tmp_path.glob("app.db*"):
        shutil.rmtree(p) if p.is_dir() else p.unlink()

    def restore(path):
        return subprocess.run([str(walrust_cli), "restore", "-if-db-not-exists",
                               "-if-replica-exists", "-config", str(config), str(path)],
                              capture_output=True, text=True, timeout=HANG_TIMEOUT)

    r = restore(db)
    assert r.returncode == 0 and r.stdout.startswith(f"restored {db} to TXID"), r.stdout + r.stderr
    assert_same_contents(before, db_contents(db), "the start script's restore")
    r = restore(db)
    assert (r.returncode, r.stdout) == (0, f"{db} exists: nothing restored (--if-db-not-exists)\n"), r
    r = restore(fresh)
    assert r.returncode == 0 and r.stdout.startswith("nothing restored (--if-replica-exists)"), r
    assert not fresh.exists()
    r = restore(tmp_path / "other.db")
    assert r.returncode == 2 and "names no database at" in r.stderr, r.stderr


def test_a_litestream_service_command_runs_as_it_is(tmp_path, walrust_cli, replica):
    """`litestream replicate` with no argument reads $LITESTREAM_CONFIG (or
    /etc/litestream.yml); so does `walrust watch`, saying which file it read; and Litestream's
    single-dash `-config` works too. With neither a database nor a config file, the usage error
    names what would be read."""
    db = tmp_path / "app.db"
    config = tmp_path / "litestream.yml"
    config.write_text(f"snapshot:\n  retention: 24h\ndbs:\n  - path: {db}\n"
                      f"    replica:\n      url: {replica.url}\n")
    env = {**os.environ, "LITESTREAM_CONFIG": str(config)}
    watch_several(tmp_path, walrust_cli, [(db, replica.url)], [], "$LITESTREAM_CONFIG", env=env)
    log = (tmp_path / "watch.log").read_text()
    assert f"reading {config}: no database or --config named" in log, log
    r = subprocess.run([str(walrust_cli), "watch", "-config", str(tmp_path / "none.yml")],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 2 and "none.yml" in r.stderr, r.stderr
    if not Path("/etc/litestream.yml").exists():
        bare = {k: v for k, v in os.environ.items() if k != "LITESTREAM_CONFIG"}
        r = subprocess.run([str(walrust_cli), "watch"], capture_output=True, text=True,
                           timeout=HANG_TIMEOUT, env=bare)
        assert r.returncode == 2 and "$LITESTREAM_CONFIG or /etc/litestream.yml" in r.stderr, r.stderr


def test_watch_takes_its_access_key_as_litestream_does(tmp_path, walrust_cli, s3_server):
    """A Litestream deployment's key works unchanged, with no AWS_* variable set: in the
    config file (`access-key-id: ${VAR}` at its top, as Litestream's docs write it), or in
    Litestream's variables (LITESTREAM_ACCESS_KEY_ID, LITESTREAM_SECRET_ACCESS_KEY). Replicas
    of one file naming two keys are refused in one line (one watch has one key)."""
    bare = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WALRUST_"))}
    bare["AWS_REGION"] = "us-east-1"
    key = {"KEY": s3_server.access_key, "SECRET": s3_server.secret_key}
    in_file = Replica.s3_prefix(s3_server, f"creds-{os.getpid()}-{time.monotonic_ns()}/file")
    db = tmp_path / "one.db"
    config = tmp_path / "litestream.yml"
    config.write_text("access-key-id: ${KEY}\nsecret-access-key: ${SECRET}\n"
                      f"dbs:\n  - path: {db}\n    replica:\n      url: {in_file.url}\n")
    watch_several(tmp_path, walrust_cli, [(db, in_file.url)], ["--config", str(config)],
                  "a key in the config file", env={**bare, **key})

    in_env = Replica.s3_prefix(s3_server, f"creds-{os.getpid()}-{time.monotonic_ns()}/env")
    db = tmp_path / "two.db"
    litestream_vars = {"LITESTREAM_ACCESS_KEY_ID": s3_server.access_key,
                       "LITESTREAM_SECRET_ACCESS_KEY": s3_server.secret_key}
    watch_several(tmp_path, walrust_cli, [(db, in_env.url)], [str(db), "--replica", in_env.url],
                  "Litestream's variables", env={**bare, **litestream_vars})

    two_keys = tmp_path / "two-keys.yml"
    two_keys.write_text(f"dbs:\n  - path: {tmp_path / 'one.db'}\n    replica:\n      url: {in_file.url}\n"
                        "      access-key-id: A\n      secret-access-key: a\n"
                        f"  - path: {db}\n    replica:\n      url: {in_env.url}\n"
                        "      access-key-id: B\n      secret-access-key: b\n")
    r = subprocess.run([str(walrust_cli), "watch", "--config", str(two_keys)],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 2 and "more than one access key" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "b\n" not in r.stderr, r.stderr


def test_moving_from_litestream_to_walrust_watch(tmp_path, walrust_cli, litestream, replica):
    """Moving from Litestream: `litestream replicate` wrote the replica; `walrust watch` given a
    Litestream config file for it says in one line that the replica holds another history and
    names `walrust takeover`, uploading nothing; after the takeover it continues the replica,
    and both `walrust restore` and `litestream restore` return every row."""
    db = tmp_path / "app.db"
    (app,) = new_wal_databases([db])
    insert = "INSERT INTO t(body) VALUES (randomblob(100))"
    try:
        for _ in range(100):
            app.execute(insert)
        ls = litestream(db, replica).start()
        ls.wait_replicated(db)
        ls.stop()
        before = {(f.level, f.min_txid, f.max_txid) for f in replica.ltx_files()}
        for _ in range(50):
            app.execute(insert)
        config = tmp_path / "litestream.yml"
        fields = replica.litestream_replica_config()
        config.write_text(f"dbs:\n  - path: {db}\n    replica:\n" + "".join(
            f"      {k}: {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in fields.items()))
        log = tmp_path / "watch.log"
        with open(log, "ab") as out:
            refused = subprocess.Popen([str(walrust_cli), "watch", "--config", str(config)],
                                       stderr=out)
        deadline = time.monotonic() + HANG_TIMEOUT
        while "walrust takeover" not in log.read_text():
            assert refused.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"no word of the other history:\n{log.read_text()}"
            time.sleep(0.05)
        refused.send_signal(signal.SIGTERM)
        refused.wait(timeout=HANG_TIMEOUT)
        said = [l for l in log.read_text().splitlines() if "walrust takeover" in l]
        assert "Litestream" in said[0], said
        assert {(f.level, f.min_txid, f.max_txid) for f in replica.ltx_files()} == before
        r = subprocess.run([str(walrust_cli), "takeover", str(db)], capture_output=True,
                           text=True, timeout=HANG_TIMEOUT)
        assert r.returncode == 0, r.stderr
        with open(log, "ab") as out:
            watch = subprocess.Popen([str(walrust_cli), "watch", "--config", str(config)],
                                     stderr=out)
        try:
            for _ in range(50):
                app.execute(insert)
            watch.send_signal(signal.SIGTERM)
            assert watch.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        finally:
            stop_all(watch, [])
        assert app.execute("SELECT count(*) FROM t").fetchone()[0] == 200
        assert_restores_to(walrust_cli, replica, tmp_path, db, "walrust restore after the takeover")
        out = tmp_path / "litestream.db"
        ls.restore(out)
        assert_same_contents(db_contents(db), db_contents(out), "litestream restore after the takeover")
    finally:
        app.close()


def test_watch_with_a_replica_root(tmp_path, walrust_cli, new_replica):
    """`--replica-root URL` replicates each database to URL/<its file name>; two databases of
    one file name would share a replica (one history each: the second would be refused at its
    first upload), so the watch refuses to start, in one line, before touching either."""
    root = new_replica("root")
    dbs = [tmp_path / "a" / "one.db", tmp_path / "b" / "two.db"]
    for db in dbs:
        db.parent.mkdir()
    watch_several(tmp_path, walrust_cli, [(db, url_under(root.url, db.name)) for db in dbs],
                  [*map(str, dbs), "--replica-root", root.url], "--replica-root")
    twin = tmp_path / "b" / "one.db"
    shutil.copyfile(dbs[0], twin)
    r = subprocess.run([str(walrust_cli), "watch", str(dbs[0]), str(twin), "--replica-root", root.url],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 2 and "would share the replica" in r.stderr, r.stderr
    assert str(twin) in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not Path(f"{twin}-walrust").exists()
    # The same database named twice (another spelling of its path) is said to be that.
    again = tmp_path / "b" / ".." / "b" / "one.db"
    r = subprocess.run([str(walrust_cli), "watch", str(twin), str(again), "--replica-root", root.url],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 2 and "is named twice" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_watch_of_a_database_not_in_wal_mode_fails_in_one_line(tmp_path, walrust_cli, replica):
    """Exit 1 (cannot start) with one line that says what to do; nothing is created. A path
    that names nothing yet is waited for (a sidecar started before its application), with one
    line that says which file, from where a relative path was taken."""
    (tmp_path / "plain").mkdir()
    db = tmp_path / "plain" / "plain.db"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE t(x)")
    c.commit()
    c.close()
    r = subprocess.run([str(walrust_cli), "watch", str(db), "--replica", replica.url],
                       capture_output=True, text=True, timeout=HANG_TIMEOUT)
    assert r.returncode == 1, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "journal_mode=WAL" in r.stderr, r.stderr
    assert sorted(os.listdir(db.parent)) == ["plain.db"]
    # A relative path that names nothing: the watch waits, and says for which file.
    log = tmp_path / "waiting.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(walrust_cli), "watch", "plain.db", "--replica", replica.url],
                                stderr=out, cwd=tmp_path)
    try:
        deadline = time.monotonic() + HANG_TIMEOUT
        while "waiting for" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        line = log.read_text().strip()
        assert line == (f"walrust: waiting for {tmp_path / 'plain.db'} (plain.db relative to the "
                        f"working directory {tmp_path}) to be created in WAL mode; it is watched "
                        "from then on"), line
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=HANG_TIMEOUT) == 0, log.read_text()
        assert not (tmp_path / "plain.db").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
