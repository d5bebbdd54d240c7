"""A shadow log past walrust_shadow_warn_bytes is reported (issue 13): walrust_status() has a
`warning`, standard error has one line, and no commit is dropped: once the replica is back,
everything is uploaded and restores."""

import json
import os
import stat
import subprocess

from harness import Replica

PYTHON = "/usr/bin/python3"
LIMIT = 12 << 20

SCRIPT = r"""
import json, os, sqlite3, sys, time, urllib.parse
ext, db, replica_dir, limit, report = sys.argv[1:6]
l = sqlite3.connect(':memory:'); l.enable_load_extension(True); l.load_extension(ext)
uri = 'file:' + urllib.parse.quote(db, safe='/') + '?' + urllib.parse.urlencode(
    {'walrust_replica': 'file://' + replica_dir, 'walrust_shadow_warn_bytes': limit,
     'walrust_sync_interval': '0'}, safe='/:')
c = sqlite3.connect(uri, uri=True, isolation_level=None)
c.execute('PRAGMA journal_mode=WAL')
c.execute('CREATE TABLE t(id INTEGER PRIMARY KEY, b BLOB)')
c.execute('SELECT walrust_sync()').fetchone()
status = lambda: json.loads(c.execute('SELECT walrust_status()').fetchone()[0])
out = {'healthy': status()}
# The replica becomes unwritable (its folder moves away; a file takes its place): the log
# grows past the limit.
os.rename(replica_dir, replica_dir + '.away'); open(replica_dir, 'w').close()
for i in range(100):
    c.execute('INSERT INTO t(b) VALUES (?)', (os.urandom(256 << 10),))
out['down'] = status()
# Wait for the event: the background thread has printed its warning.
err = sys.argv[6]
deadline = time.time() + 120
while 'walrust_shadow_warn_bytes' not in open(err).read() and time.time() < deadline:
    time.sleep(0.2)
for i in range(20):
    c.execute('INSERT INTO t(b) VALUES (?)', (os.urandom(256 << 10),))
time.sleep(6)  # more than one measuring period: a second line would show up here
# The replica is back: everything is uploaded, the warning goes.
os.remove(replica_dir); os.rename(replica_dir + '.away', replica_dir)
out['synced'] = c.execute('SELECT walrust_sync(\'main\', 120000)').fetchone()[0]
deadline = time.time() + 120
while status()['warning'] is not None and time.time() < deadline:
    time.sleep(0.2)
out['recovered'] = status()
out['rows'] = c.execute('SELECT count(*) FROM t').fetchone()[0]
open(report, 'w').write(json.dumps(out))
"""


def test_a_growing_shadow_log_is_reported_and_nothing_is_dropped(tmp_path, walrust_ext, walrust, restore_and_compare):
    db = tmp_path / "app.db"
    replica = Replica.file(tmp_path / "replica")
    report, err = tmp_path / "report.json", tmp_path / "stderr.txt"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    with open(err, "w") as e:
        subprocess.run([PYTHON, "-c", SCRIPT, str(walrust_ext), str(db), str(replica.objects),
                        str(LIMIT), str(report), str(err)],
                       stderr=e, env=env, check=True, timeout=600)
    out = json.loads(report.read_text())
    assert out["healthy"]["warning"] is None
    warning = out["down"]["warning"]
    assert warning and warning.startswith("walrust: the shadow log of "), out["down"]
    assert f"walrust_shadow_warn_bytes = {LIMIT}" in warning, warning
    assert "nothing is dropped" in warning, warning
    lines = [l for l in err.read_text().splitlines() if "walrust_shadow_warn_bytes" in l]
    assert len(lines) == 1, lines
    assert lines[0].startswith("walrust: warning: the shadow log of "), lines
    assert out["recovered"]["warning"] is None, out["recovered"]
    assert out["rows"] == 120
    assert out["synced"] == out["recovered"]["uploaded_txid"]
    conn = walrust.connect(db, replica)
    restore_and_compare(replica, conn)


def test_the_shadow_directory_is_its_owners_alone(tmp_path, walrust, connect, replica):
    """SPEC 6: the shadow directory is created readable by the database's owner only: 0700,
    files 0600, whatever the umask lets others read (the log holds page images of the
    database). Every file there after commits, uploads and a snapshot, the space reserve
    included (it was 0644)."""
    conn = connect(tmp_path / "app.db", replica, sync_interval=0)
    conn.execute("CREATE TABLE t(v)")
    for i in range(20):
        conn.execute("INSERT INTO t VALUES (?)", (os.urandom(3000),))
    walrust.sync(conn)
    conn.execute("SELECT walrust_snapshot()").fetchone()
    root = tmp_path / "app.db-walrust"
    modes = {}
    for p in [root, *root.rglob("*")]:
        try:  # the uploader may rename a temporary file meanwhile
            st = p.stat()
        except FileNotFoundError:
            continue
        modes[str(p.relative_to(root))] = (stat.S_ISDIR(st.st_mode), st.st_mode & 0o777)
    conn.close()
    wrong = {p: oct(m) for p, (d, m) in modes.items() if m != (0o700 if d else 0o600)}
    assert not wrong, f"not the owner's alone: {wrong} (all: {sorted(modes)})"
    assert "reserve" in modes and "state.json" in modes, sorted(modes)
