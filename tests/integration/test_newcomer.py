"""What a newcomer meets first (issue 17): restore beside WALRUST_REPLICA_ROOT, the restored
file's permissions. Through the real sqlite3 shell, as a new user would run it."""

import json
import os
import sqlite3
import subprocess

from harness import ROOT, Replica, url_under

SQLITE3 = os.environ.get("SQLITE3", "/usr/bin/sqlite3")


def run_shell(ext, cwd, script, **env):
    """Runs `script` through the sqlite3 shell with walrust loaded; returns (stdout, stderr)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    full_env.update(env)
    proc = subprocess.run(
        [SQLITE3, "-bail", "-cmd", f".load {ext}"],
        input=script, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"sqlite3 failed ({proc.returncode}):\n{proc.stderr}"
    return proc.stdout, proc.stderr


def test_restore_under_replica_root_replicates_nothing_of_its_own(tmp_path, walrust_ext):
    root = tmp_path / "root"
    work = tmp_path / "work"
    out = tmp_path / "out"
    work.mkdir()
    out.mkdir()
    script = f"""
.open app.db
PRAGMA journal_mode=WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES (1), (2);
SELECT walrust_sync() > 0;
SELECT walrust_restore('file://{root}/app.db', '{out}/out.db') > 0;
"""
    stdout, stderr = run_shell(walrust_ext, work, script, WALRUST_REPLICA_ROOT=f"file://{root}")
    assert stdout.split() == ["wal", "1", "1"], stdout
    # Restore's temporary file never replicated: no replica, no shadow directory, no -wal/-shm,
    # no message about it.
    assert sorted(os.listdir(root)) == ["app.db"]
    # Beside it only the restore's record (SPEC 6: a restored copy may continue the history),
    # which names the replica restored from, not the temporary file.
    assert sorted(os.listdir(out)) == ["out.db", "out.db-walrust"]
    state = json.loads((out / "out.db-walrust" / "state.json").read_text())
    assert state["replica"] == f"file://{root}/app.db" and state["restored_txid"] > 0, state
    assert "tmp-walrust" not in stderr, stderr
    assert stderr == "", stderr


def test_replica_root_with_an_s3_query_replicates_each_database_under_it(tmp_path, walrust_ext,
                                                                        replica):
    """WALRUST_REPLICA_ROOT may be an s3:// URL with a query (`?endpoint=...&force_path_style=
    true`, as every S3-compatible server needs): each database's name goes into the path, not
    after the query. (It went after it, and every open failed on `force_path_style`.)"""
    work = tmp_path / "work"
    work.mkdir()
    script = """
.open app.db
PRAGMA journal_mode=WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES (1), (2);
SELECT walrust_sync() > 0;
SELECT json_extract(walrust_status(), '$.replica');
"""
    stdout, stderr = run_shell(walrust_ext, work, script, WALRUST_REPLICA_ROOT=replica.url)
    url = url_under(replica.url, "app.db")
    assert stdout.split() == ["wal", "1", url], stdout
    assert stderr == "", stderr
    out = tmp_path / "out.db"
    stdout, _ = run_shell(walrust_ext, tmp_path, f"SELECT walrust_restore('{url}', '{out}') > 0;\n")
    assert stdout.split() == ["1"], stdout
    conn = sqlite3.connect(out)
    assert conn.execute("SELECT x FROM t").fetchall() == [(1,), (2,)]
    conn.close()


def test_an_s3_url_written_as_is_in_the_uri_works(tmp_path, walrust_ext, s3_server):
    """`.open 'file:app.db?walrust_replica=s3://b/p?endpoint=URL&region=R&force_path_style=true'`,
    as a user copies the URL from the README: SQLite ends the URI parameter at the first `&`
    and takes `region` and `force_path_style` for URI parameters of its own. walrust puts them
    back (it used to replicate to the URL cut at the first `&`: a `region=` after it was lost,
    and requests were signed for the environment's region instead)."""
    replica = Replica.s3_prefix(s3_server, "uri-as-is/replica")
    work = tmp_path / "work"
    work.mkdir()
    script = f"""
.open 'file:app.db?walrust_replica={replica.url}'
PRAGMA journal_mode=WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES (1), (2);
SELECT walrust_sync() > 0;
SELECT json_extract(walrust_status(), '$.replica');
"""
    stdout, stderr = run_shell(walrust_ext, work, script)
    assert stdout.split() == ["wal", "1", replica.url], stdout
    assert stderr == "", stderr
    out = tmp_path / "out.db"
    stdout, _ = run_shell(walrust_ext, tmp_path, f"SELECT walrust_restore('{replica.url}', '{out}') > 0;\n")
    assert stdout.split() == ["1"], stdout


def _with_umask(mask):
    return lambda: os.umask(mask)


def test_restored_database_has_the_permissions_sqlite_would_give_it(tmp_path, walrust_ext):
    """A restore, by SQL or the CLI, creates the file as SQLite creates a new database: 0644
    less the umask, so the usual 022 gives 0644 and 077 gives 0600."""
    cli = walrust_ext.parent / "walrust"
    assert cli.is_file(), f"the walrust CLI is not built beside the extension: {cli}"
    work = tmp_path / "work"
    work.mkdir()
    replica = tmp_path / "replica"
    script = f"""
.open 'file:app.db?walrust_replica=file://{replica}'
PRAGMA journal_mode=WAL;
CREATE TABLE t(x);
INSERT INTO t VALUES (1);
SELECT walrust_sync() > 0;
"""
    run_shell(walrust_ext, work, script)
    for mask in (0o022, 0o077, 0o027):
        plain = tmp_path / f"plain-{mask:o}.db"
        subprocess.run(
            [SQLITE3, str(plain), "CREATE TABLE t(x)"], check=True, preexec_fn=_with_umask(mask)
        )
        want = plain.stat().st_mode & 0o777
        by_sql = tmp_path / f"sql-{mask:o}.db"
        subprocess.run(
            [SQLITE3, "-bail", "-cmd", f".load {walrust_ext}", ":memory:",
             f"SELECT walrust_restore('file://{replica}', '{by_sql}')"],
            check=True, capture_output=True, preexec_fn=_with_umask(mask),
        )
        by_cli = tmp_path / f"cli-{mask:o}.db"
        subprocess.run(
            [str(cli), "restore", f"file://{replica}", "-o", str(by_cli)],
            check=True, capture_output=True, preexec_fn=_with_umask(mask),
        )
        for restored in (by_sql, by_cli):
            got = restored.stat().st_mode & 0o777
            assert got == want, f"umask {mask:o}: {restored.name} is {got:o}, SQLite gives {want:o}"


def test_the_demo_explains_what_it_shows(tmp_path, walrust_ext):
    """`make demo`'s output: why 5 statements give TXID 6, what manifest.json.lock is, the
    uploader as yes/no; and Litestream restores the same replica."""
    root = ROOT  # the scripts are the checkout's; the extension may be built elsewhere
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    env.update(WALRUST_EXT=str(walrust_ext), WALRUST_DEMO_DIR=str(tmp_path / "demo"))
    proc = subprocess.run(
        [str(root / "scripts" / "demo.sh")], env=env, capture_output=True, text=True,
        timeout=300,
    )
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert proc.stderr == "", proc.stderr
    assert "│ 6             │" in out, out
    assert "Why 6 for 5 statements" in out
    assert "manifest.json.lock: an empty file whose lock" in out
    uploader = [line for line in out.splitlines() if "uploader" in line and "│" in line]
    assert len(uploader) == 1 and "│ yes" in uploader[0], uploader
    assert "last_error     │ none" in out
    assert "rows: 300" in out, "Litestream (from .venv) did not restore the demo's replica"
    assert (tmp_path / "demo" / "restored.db").is_file()


def test_the_watch_demo_restores_what_a_plain_sqlite3_shell_wrote(tmp_path, walrust_cli):
    """`make demo-watch`: the sidecar beside the sqlite3 shell (no extension), SIGTERM, restore."""
    root = ROOT
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    env.update(WALRUST_CLI=str(walrust_cli), WALRUST_DEMO_DIR=str(tmp_path / "demo"))
    proc = subprocess.run([str(root / "scripts" / "demo-watch.sh")], env=env, capture_output=True,
                          text=True, timeout=300)
    out = proc.stdout
    assert proc.returncode == 0, proc.stderr + out
    assert proc.stderr == "", proc.stderr
    assert "stopped watching" in out and "TXID 6 uploaded" in out, out
    assert "restored: 290|29|290" in out and "original: 290|29|290" in out, out
    assert "the restored database has the same rows" in out
