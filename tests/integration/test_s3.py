"""S3 for real (issue 3): outages lose nothing and never fail the application's writes, and bad
settings each produce the one-line error the user needs while the database stays writable.
Each test runs its own s3s-fs on 127.0.0.1 so it can stop and restart it on the same port."""

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
        if self.proc:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None


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


def test_the_server_restarted_during_a_multipart_snapshot(tmp_path, server, walrust, connect, restore_and_compare):
    replica = s3_replica(server)
    conn = connect(tmp_path / "app.db", replica)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB)")
    conn.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12000) "
        "INSERT INTO t(v) SELECT randomblob(4000) FROM n"
    )  # ~50 MB
    walrust.sync(conn)
    done = {}

    def snap():
        c = walrust.connect(tmp_path / "app.db")
        try:
            done["txid"] = c.execute("SELECT walrust_snapshot()").fetchone()[0]
        except sqlite3.Error as e:
            done["error"] = str(e)

    t = threading.Thread(target=snap)
    t.start()
    time.sleep(0.3)  # the snapshot is streaming its parts now
    server.stop()
    time.sleep(2)
    server.start()
    t.join(timeout=300)
    assert not t.is_alive()
    assert "txid" in done, done
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
