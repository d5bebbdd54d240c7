"""S3 for real (issue 3): outages lose nothing and never fail the application's writes, and bad
settings each produce the one-line error the user needs while the database stays writable.
Each test runs its own s3s-fs on 127.0.0.1 so it can stop and restart it on the same port."""

import base64
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from harness import Replica, cannot_run

AK, SK, BUCKET = "walrust-test-ak", "walrust-test-sk", "walrust-test"


def s3s_fs():
    found = shutil.which("s3s-fs") or str(Path.home() / ".cargo" / "bin" / "s3s-fs")
    if not os.path.exists(found):
        cannot_run("s3s-fs is not installed: run scripts/setup-test-env.sh")
    return found


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Server:
    def __init__(self, data):
        self.data, self.port, self.proc = data, free_port(), None
        (data / BUCKET).mkdir(parents=True, exist_ok=True)

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.proc = subprocess.Popen(
            [s3s_fs(), "--host", "127.0.0.1", "--port", str(self.port), "--access-key", AK, "--secret-key", SK, str(self.data)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("s3s-fs did not start")

    def stop(self):
        """SIGKILL (a frozen server dies too); the data stays for a restart."""
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def pause(self):
        """SIGSTOP: connections are accepted by the kernel and never answered."""
        self.proc.send_signal(signal.SIGSTOP)

    def part_files(self):
        """The parts of unfinished multipart uploads, as s3s-fs keeps them."""
        return set(self.data.glob(".upload_id-*.part-*"))

    def etag(self, key):
        """The ETag s3s-fs stored for BUCKET/key: `<md5>-<parts>` for a multipart upload."""
        enc = lambda s: base64.urlsafe_b64encode(s.encode()).decode().rstrip("=")
        info = self.data / f".bucket-{enc(BUCKET)}.object-{enc(key)}.internal.json"
        return json.loads(info.read_text())["e_tag"]


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SK)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    srv = Server(tmp_path / "s3")
    srv.start()
    yield srv
    srv.stop()


def s3_replica(srv, prefix="app"):
    url = f"s3://{BUCKET}/{prefix}?endpoint={srv.endpoint}&region=us-east-1&force_path_style=true"
    return Replica("s3", url, srv.data / BUCKET / prefix)


def status(conn):
    return json.loads(conn.execute("SELECT walrust_status()").fetchone()[0])


def test_an_outage_fails_no_write_and_loses_nothing(tmp_path, server, walrust, connect, restore_and_compare):
    replica = s3_replica(server)
    conn = connect(tmp_path / "app.db", replica, sync_interval=100)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.executemany("INSERT INTO t(v) VALUES (randomblob(500))", [()] * 100)
    walrust.sync(conn)
    server.stop()
    for _ in range(300):  # a few seconds of commits with S3 down: none may fail
        conn.execute("INSERT INTO t(v) VALUES (randomblob(500))")
        time.sleep(0.01)
    with pytest.raises(sqlite3.OperationalError, match=r"^walrust: sync .* timed out"):
        conn.execute("SELECT walrust_sync('main', 1500)").fetchone()
    down = status(conn)
    assert down["pending_txns"] > 0 and down["last_error"], down
    assert SK not in json.dumps(down)
    server.start()
    walrust.sync(conn)
    assert status(conn)["last_error"] is None
    restore_and_compare(replica, conn)


def wait_for(what, event, timeout=120):
    """Polls until `event()` is true; the timeout only stops a hung test."""
    deadline = time.monotonic() + timeout
    while not event():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.005)


def test_the_server_restarted_during_a_multipart_snapshot(tmp_path, server, walrust, connect, restore_and_compare):
    """Arranged, not timed: the server is frozen (SIGSTOP) as soon as the snapshot's first
    part reaches it, the test checks the upload is unfinished, then kills the frozen server
    and restarts it on the same port and data. The part in flight fails; the store sends it
    again (3 attempts, 0.5 s and 1 s apart: longer than a restart) and the snapshot
    completes, in parts, with nothing lost."""
    replica = s3_replica(server)
    conn = connect(tmp_path / "app.db", replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) "
        "INSERT INTO t(v) SELECT randomblob(4000) FROM n"
    )  # ~50 MB: 7 parts of 8 MiB
    walrust.sync(conn)
    conn.execute("INSERT INTO t(v) VALUES (randomblob(10))")  # the new snapshot's own key
    txid = walrust.sync(conn)
    key = f"app/0009/{1:016x}-{txid:016x}.ltx"
    assert not (server.data / BUCKET / key).exists()
    assert not server.part_files(), "an unfinished multipart upload before the test"
    done = {}

    def snap():
        c = walrust.connect(tmp_path / "app.db")
        try:
            done["txid"] = c.execute("SELECT walrust_snapshot('main', 300000)").fetchone()[0]
        except sqlite3.Error as e:
            done["error"] = str(e)
        finally:
            c.close()

    t = threading.Thread(target=snap)
    t.start()
    try:
        wait_for("the snapshot's first part reached the server", server.part_files)
        server.pause()
        assert not (server.data / BUCKET / key).exists(), (
            "the snapshot finished before the server could be frozen: the outage missed it"
        )
        server.stop()
        server.start()
    finally:
        t.join(timeout=300)
    assert not t.is_alive(), "walrust_snapshot hung"
    assert done.get("txid") == txid, done
    etag = server.etag(key)
    assert re.fullmatch(r"[0-9a-f]{32}-[0-9]+", etag) and int(etag.split("-")[1]) >= 2, etag
    conn.execute("INSERT INTO t(v) VALUES (randomblob(10))")
    walrust.sync(conn)
    restore_and_compare(replica, conn)


@pytest.mark.parametrize(
    "case",
    ["wrong secret", "missing bucket", "closed port"],
)
def test_bad_settings_give_the_error_the_user_needs(tmp_path, server, walrust, connect, monkeypatch, case):
    url = s3_replica(server).url
    if case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        expect = r"AWS_SECRET_ACCESS_KEY"
    elif case == "missing bucket":
        url = url.replace(f"s3://{BUCKET}/", "s3://no-such-bucket/")
        # Not just "bucket", which the URL itself contains: the server's NoSuchBucket, named.
        expect = r"bucket\W+no-such-bucket\W+does not exist"
    else:
        url = url.replace(f":{server.port}", f":{free_port()}")
        expect = r"connect"
    conn = connect(tmp_path / "app.db", url)
    conn.execute("CREATE TABLE t(x)")
    conn.execute("INSERT INTO t VALUES (1)")  # the database stays writable
    with pytest.raises(sqlite3.OperationalError) as err:
        conn.execute("SELECT walrust_sync('main', 3000)").fetchone()
    message = str(err.value)
    assert message.startswith("walrust: ") and "\n" not in message
    last_error = status(conn)["last_error"] or ""
    assert re.search(expect, message, re.I) or re.search(expect, last_error, re.I), (message, last_error)
    assert "not-the-secret" not in message and SK not in message
    conn.execute("INSERT INTO t VALUES (2)")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 2


def test_a_malformed_url_is_refused_and_the_database_stays_writable(tmp_path, walrust, connect):
    conn = connect(tmp_path / "app.db")
    conn.execute("CREATE TABLE t(x)")
    with pytest.raises(sqlite3.Error, match=r"walrust: "):
        conn.execute("PRAGMA walrust_replica = 's3://'").fetchall()
    conn.execute("INSERT INTO t VALUES (1)")
    assert conn.execute("SELECT count(*) FROM t").fetchone()[0] == 1


def test_the_secret_key_is_written_nowhere(tmp_path, server, walrust):
    """SPEC 6: credentials are never written anywhere: not to the shadow directory, the
    manifest, object metadata, or logs. A process replicates with every trace line on,
    snapshots, loses S3 (errors logged and in `walrust_status()`), gets it back and syncs;
    then every file under the shadow directory and the S3 server's data (objects and their
    stored metadata) and everything the process wrote on standard error is searched for the
    secret access key."""
    from test_history import Child

    replica = s3_replica(server)
    log = tmp_path / "child.log"
    c = Child(walrust.ext, tmp_path / "app.db", replica, stderr_log=log, sync_interval=0,
              env_extra={"WALRUST_TRACE": "1"})
    c.sql("PRAGMA journal_mode=WAL")
    c.sql("CREATE TABLE t(v)")
    c.sql("INSERT INTO t VALUES (randomblob(5000))")
    c.one("SELECT walrust_sync()")
    c.one("SELECT walrust_snapshot()")
    server.stop()
    c.sql("INSERT INTO t VALUES (randomblob(5000))")
    with pytest.raises(sqlite3.Error):
        c.one("SELECT walrust_sync('main', 1500)")
    statuses = [c.one("SELECT walrust_status()")]
    server.start()
    c.one("SELECT walrust_sync()")
    statuses.append(c.one("SELECT walrust_status()"))
    c.exit()
    secret = SK.encode()
    found = [str(p) for root in (tmp_path / "app.db-walrust", server.data)
             for p in root.rglob("*") if p.is_file() and secret in p.read_bytes()]
    assert not found, f"the secret key is in {found}"
    err = log.read_text()
    assert "walrust: " in err  # it did log (the outage, the trace)
    assert SK not in err, [line for line in err.splitlines() if SK in line][:3]
    assert not any(SK in s for s in statuses), statuses
