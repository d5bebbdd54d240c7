"""walrust as the integration tests drive it (through Debian python's sqlite3), replica
locations, and the comparisons that decide a test. external.py runs everything else.

Only `Walrust` needs the extension; test_harness.py checks the rest works without it.
"""

import json
import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
# Debian's python: its sqlite3 module can load extensions (pyenv's cannot). Subprocesses that
# write databases run it, so that they use the same libsqlite3 as this process.
SYSTEM_PYTHON = "/usr/bin/python3"
# Generous limits that only stop a hung test; no test asserts on how long anything takes.
HANG_TIMEOUT = 120
# Read before conftest.py removes every WALRUST_* variable from the environment.
ALLOW_SKIP = os.environ.get("WALRUST_ALLOW_SKIP") == "1"


def cannot_run(why):
    """A test cannot run here because `why` (a tool the project installs is missing, the
    machine does not allow a mount): it FAILS, unless WALRUST_ALLOW_SKIP=1, when it skips
    (pytest counts it, and scripts/test.sh prints the count)."""
    if ALLOW_SKIP:
        pytest.skip(why)
    pytest.fail(f"{why} (set WALRUST_ALLOW_SKIP=1 to skip this test instead)", pytrace=False)


# --- opening databases ----------------------------------------------------------------------


def file_uri(path, **params):
    """`file:` URI for `path` with query parameters, each value percent-encoded as SQLite
    expects (a replica URL's own `?` and `&` must not end the parameter)."""
    uri = "file:" + urllib.parse.quote(str(Path(path).resolve()), safe="/")
    if params:
        uri += "?" + "&".join(
            f"{k}={urllib.parse.quote(str(v), safe='/:')}" for k, v in params.items()
        )
    return uri


def url_under(root, name):
    """The replica URL of database file `name` under a replica root URL (WALRUST_REPLICA_ROOT,
    `walrust watch --replica-root`): the name goes in the path, before an s3:// URL's query."""
    base, sep, query = root.partition("?")
    return f"{base.rstrip('/')}/{name}{sep}{query}"


def open_plain(path):
    """A connection through SQLite's own `unix` VFS, bypassing walrust even when it is the
    default: for reading restored files and databases walrust never wrote."""
    return sqlite3.connect(file_uri(path, vfs="unix"), uri=True, isolation_level=None)


# --- comparing databases --------------------------------------------------------------------


def _table_rows(conn, name):
    quoted = '"' + name.replace('"', '""') + '"'
    try:
        return conn.execute(f"SELECT * FROM {quoted} ORDER BY rowid").fetchall()
    except sqlite3.OperationalError:  # WITHOUT ROWID
        ncols = len(conn.execute(f"SELECT * FROM {quoted} LIMIT 0").description)
        order = ", ".join(str(i) for i in range(1, ncols + 1))
        return conn.execute(f"SELECT * FROM {quoted} ORDER BY {order}").fetchall()


def db_contents(source):
    """Everything two equal databases share: page size and count, the schema, and every
    table's rows in rowid (or primary key) order. `source` is a connection or a path."""
    conn = source if isinstance(source, sqlite3.Connection) else open_plain(source)
    try:
        schema = sorted(
            conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_schema").fetchall(),
            key=repr,
        )
        tables = [r[1] for r in schema if r[0] == "table"]
        return {
            "page_size": conn.execute("PRAGMA page_size").fetchone()[0],
            "page_count": conn.execute("PRAGMA page_count").fetchone()[0],
            "schema": schema,
            "tables": {t: _table_rows(conn, t) for t in sorted(tables)},
        }
    finally:
        if conn is not source:
            conn.close()


def integrity_check(source):
    conn = source if isinstance(source, sqlite3.Connection) else open_plain(source)
    try:
        return [r[0] for r in conn.execute("PRAGMA integrity_check").fetchall()]
    finally:
        if conn is not source:
            conn.close()


def _short(value, limit=200):
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def assert_same_contents(expected, actual, what="restored database"):
    """Fails with the first difference, not with two multi-megabyte dicts."""
    for key in ("page_size", "page_count", "schema"):
        assert actual[key] == expected[key], (
            f"{what}: {key} differs: expected {_short(expected[key])}, got {_short(actual[key])}"
        )
    assert sorted(actual["tables"]) == sorted(expected["tables"]), f"{what}: tables differ"
    for table, want in expected["tables"].items():
        got = actual["tables"][table]
        for i, (w, g) in enumerate(zip(want, got)):
            assert w == g, f"{what}: table {table} row {i}: expected {_short(w)}, got {_short(g)}"
        assert len(got) == len(want), (
            f"{what}: table {table} has {len(got)} rows, expected {len(want)}"
        )


def assert_integrity_ok(source, what="database"):
    result = integrity_check(source)
    assert result == ["ok"], f"{what}: PRAGMA integrity_check says {result[:5]}"


# --- walrust ----------------------------------------------------------------------------------


class Walrust:
    """The extension, loaded into this process (it stays loaded: SPEC 1)."""

    def __init__(self, ext_path):
        self.ext = Path(ext_path)
        self._anchor = None
        self._restores = 0

    def load(self):
        if self._anchor is None:
            conn = sqlite3.connect(":memory:", isolation_level=None)
            conn.enable_load_extension(True)
            conn.load_extension(str(self.ext))
            conn.enable_load_extension(False)
            self._anchor = conn
        return self

    def connect(self, db, replica=None, *, wal=True, page_size=None, **settings):
        """Opens `db` through the walrust VFS (the default once loaded), in autocommit mode
        (explicit BEGIN/COMMIT). `replica` (a Replica or URL) and `settings`
        (`sync_interval=0` -> `walrust_sync_interval=0`) go in the URI. `page_size` is set
        before `wal` switches the database to WAL, so it applies to a new database."""
        self.load()
        params = {}
        if replica is not None:
            params["walrust_replica"] = getattr(replica, "url", replica)
        for key, value in settings.items():
            params[key if key.startswith("walrust_") else "walrust_" + key] = value
        conn = sqlite3.connect(
            file_uri(db, **params),
            uri=True,
            isolation_level=None,
            check_same_thread=False,
            timeout=HANG_TIMEOUT,
        )
        if page_size is not None:
            conn.execute(f"PRAGMA page_size={int(page_size)}")
        if wal:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            assert mode == "wal", f"PRAGMA journal_mode=WAL returned {mode!r}"
        return conn

    def memory(self):
        """A :memory: connection, for the functions that take a URL."""
        self.load()
        return sqlite3.connect(":memory:", isolation_level=None)

    @staticmethod
    def status(conn, schema="main"):
        return json.loads(conn.execute("SELECT walrust_status(?)", (schema,)).fetchone()[0])

    @staticmethod
    def sync(conn, schema="main", timeout_ms=HANG_TIMEOUT * 1000):
        """walrust_sync with a timeout, so a broken uploader fails the test instead of
        hanging it. Returns the uploaded TXID."""
        return conn.execute("SELECT walrust_sync(?, ?)", (schema, timeout_ms)).fetchone()[0]

    def restore(self, replica, out, target=None):
        """walrust_restore(url, out[, target]) on a fresh :memory: connection; returns the
        TXID restored to. Raises sqlite3.Error with walrust's message on failure."""
        url = getattr(replica, "url", replica)
        conn = self.memory()
        try:
            if target is None:
                row = conn.execute("SELECT walrust_restore(?, ?)", (url, str(out))).fetchone()
            else:
                row = conn.execute(
                    "SELECT walrust_restore(?, ?, ?)", (url, str(out), target)
                ).fetchone()
            return row[0]
        finally:
            conn.close()

    def restore_and_compare(self, replica, source, workdir, target=None, expected=None):
        """Restores `replica` (at `target`) into a new directory under `workdir` and checks
        that the result equals `source` (a connection or path) or the `expected` contents:
        page size and count, schema, every row. Also that the restore left exactly one file
        and that it, and the source, pass PRAGMA integrity_check. Returns (txid, path)."""
        self._restores += 1
        out_dir = Path(workdir) / f"walrust-restore-{self._restores}"
        out_dir.mkdir(parents=True)
        out = out_dir / "restored.db"
        txid = self.restore(replica, out, target)
        # The restore's record beside it (SPEC 6: a restored copy continues the history).
        assert sorted(os.listdir(out_dir)) == ["restored.db", "restored.db-walrust"], (
            f"restore left {sorted(os.listdir(out_dir))} in its output directory"
        )
        assert_integrity_ok(out, "restored database")
        if expected is None:
            assert_integrity_ok(source, "source database")
            expected = db_contents(source)
        assert_same_contents(expected, db_contents(out), f"restore of {target or 'latest'}")
        return txid, out


# --- replicas ---------------------------------------------------------------------------------


@dataclass
class LtxFile:
    level: int
    min_txid: int
    max_txid: int
    path: Path


@dataclass
class Replica:
    """A replica location: what walrust and Litestream are given, and where its objects lie on
    this machine (for a file replica its directory; for S3 the s3s-fs directory behind the
    bucket and prefix), so a test can list or damage them."""

    kind: str
    url: str
    objects: Path
    s3: object = None
    prefix: str = None

    @classmethod
    def file(cls, directory):
        directory = Path(directory).resolve()
        return cls("file", "file://" + str(directory), directory)

    @classmethod
    def s3_prefix(cls, server, prefix):
        url = (
            f"s3://{server.bucket}/{prefix}?endpoint={server.endpoint}"
            "&region=us-east-1&force_path_style=true"
        )
        return cls("s3", url, server.data / server.bucket / prefix, server, prefix)

    def ltx_files(self):
        """Every LTX file, parsed from the layout of SPEC 5: `ltx/<level>/` for a directory,
        `<level as %04x>/` on S3."""
        if self.kind == "file":
            base, parse_level = self.objects / "ltx", int
        else:
            base, parse_level = self.objects, lambda s: int(s, 16)
        files = []
        if base.is_dir():
            for level_dir in sorted(base.iterdir()):
                for f in sorted(level_dir.glob("*.ltx")):
                    lo, hi = f.stem.split("-")
                    files.append(LtxFile(parse_level(level_dir.name), int(lo, 16), int(hi, 16), f))
        return files

    def litestream_replica_config(self):
        if self.kind == "file":
            return {"url": self.url, "sync-interval": "100ms"}
        return {
            "type": "s3",
            "bucket": self.s3.bucket,
            "path": self.prefix,
            "endpoint": self.s3.endpoint,
            "region": "us-east-1",
            "force-path-style": True,
            "sync-interval": "100ms",
        }


def restore_refused(walrust, replica, tmp_path):
    """Restores `replica` into an empty folder, expecting the one-line integrity error a
    damaged replica must give, and nothing left in the folder. Returns the message."""
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(sqlite3.Error) as err:
        walrust.restore(replica, out_dir / "restored.db")
    message = str(err.value)
    assert message.startswith("walrust: integrity error"), f"got: {message}"
    assert "\n" not in message, f"not one line: {message!r}"
    assert os.listdir(out_dir) == [], f"restore left {os.listdir(out_dir)}"
    return message
