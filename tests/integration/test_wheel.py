"""The Python package (`make wheel`): installed with pip into a fresh virtual environment made
from Debian's /usr/bin/python3, `sqlite_walrust.load(conn)` replicates and the `walrust`
command the wheel installs restores."""

import os
import subprocess
import sys
import textwrap

from harness import ROOT

SYSTEM_PYTHON = "/usr/bin/python3"

CLIENT = textwrap.dedent(
    """
    import json, sqlite3, sys
    import sqlite_walrust

    db_path, replica, restored = sys.argv[1:]
    assert sqlite_walrust.loadable_path().endswith("libwalrust"), sqlite_walrust.loadable_path()
    sqlite_walrust.load(sqlite3.connect(":memory:"))
    db = sqlite3.connect(f"file:{db_path}?walrust_replica=file://{replica}", uri=True,
                         isolation_level=None)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute("CREATE TABLE t(x)")
    db.executemany("INSERT INTO t VALUES (?)", [(i,) for i in range(100)])
    txid = db.execute("SELECT walrust_sync()").fetchone()[0]
    status = json.loads(db.execute("SELECT walrust_status()").fetchone()[0])
    assert status["uploaded_txid"] == txid and status["last_error"] is None, status
    got = db.execute("SELECT walrust_restore(?, ?)", (f"file://{replica}", restored)).fetchone()[0]
    assert got == txid, (got, txid)
    print(txid)
    """
)


def run(args, **kw):
    proc = subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_the_wheel_installs_loads_replicates_and_restores(tmp_path, walrust_ext):
    cli = walrust_ext.parent / "walrust"
    assert cli.is_file(), f"the walrust command is not built beside the extension: {cli}"
    dist = tmp_path / "dist"
    wheel = run([sys.executable, str(ROOT / "python" / "build_wheel.py"),
                 "--ext", str(walrust_ext), "--cli", str(cli), "--out", str(dist)]).strip()
    assert os.path.basename(wheel).startswith("sqlite_walrust-"), wheel

    venv = tmp_path / "venv"
    run([SYSTEM_PYTHON, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run([str(python), "-m", "pip", "install", "--no-index", "--quiet", wheel])

    replica = tmp_path / "replica"
    restored = tmp_path / "restored.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    txid = int(run([str(python), "-c", CLIENT, str(tmp_path / "app.db"), str(replica),
                    str(restored)], env=env, cwd=tmp_path))
    assert run([SYSTEM_PYTHON, "-c",
                "import sqlite3, sys; print(sqlite3.connect(sys.argv[1])"
                ".execute('SELECT count(*) FROM t').fetchone()[0])", str(restored)]).strip() == "100"

    # The command the wheel installed, from the venv's bin.
    listing = run([str(venv / "bin" / "walrust"), "list", str(replica)], env=env)
    assert f"newest restore point: TXID {txid:016x}" in listing, listing
    out = tmp_path / "by-cli.db"
    run([str(venv / "bin" / "walrust"), "restore", f"file://{replica}", "-o", str(out)], env=env)
    assert out.stat().st_size == restored.stat().st_size
