"""What a newcomer meets first (issue 17): restore beside WALRUST_REPLICA_ROOT, the restored
file's permissions. Through the real sqlite3 shell, as a new user would run it."""

import os
import subprocess

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
    assert sorted(os.listdir(out)) == ["out.db"]
    assert "tmp-walrust" not in stderr, stderr
    assert stderr == "", stderr
