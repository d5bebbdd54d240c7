"""Fixtures for walrust's integration tests. See harness.py for what they drive.

Knobs (read here, then removed from the environment with every other WALRUST_* variable, so
that the extension under test sees no stray settings such as WALRUST_REPLICA_ROOT):
- WALRUST_EXT: the built extension (suffix optional). Unset: `cargo build --release` once per
  session and use target/release/libwalrust.so.
- WALRUST_FAILPOINT_EXT: the extension built with the `failpoints` feature (`make
  build-failpoints`). Unset: built into target/failpoints once per session.
- WALRUST_TEST_STORES: comma-separated stores the `replica` fixture runs each test against,
  `file` and `s3` (default: both; `s3` starts s3s-fs through scripts/s3-server.sh).
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from external import Litestream, S3Server
from harness import ROOT, Replica, Walrust

EXT_ENV = os.environ.get("WALRUST_EXT")
FAILPOINT_EXT_ENV = os.environ.get("WALRUST_FAILPOINT_EXT")
STORES = [s.strip() for s in os.environ.get("WALRUST_TEST_STORES", "file,s3").split(",") if s.strip()]
for _name in [k for k in os.environ if k.startswith("WALRUST_")]:
    del os.environ[_name]


def _suffix():
    return ".dylib" if sys.platform == "darwin" else ".so"


def _find_ext(path):
    path = Path(path)
    for candidate in (path, path.with_name(path.name + _suffix())):
        if candidate.is_file():
            return candidate.resolve()
    raise FileNotFoundError(f"no extension at {path} (WALRUST_EXT)")


@pytest.fixture(scope="session")
def walrust_ext():
    """Path of the built extension: $WALRUST_EXT, or `cargo build --release` once."""
    if EXT_ENV:
        return _find_ext(EXT_ENV)
    build = subprocess.run(
        ["cargo", "build", "--release"], cwd=ROOT, capture_output=True, text=True
    )
    if build.returncode != 0:
        pytest.fail("cargo build --release failed:\n" + build.stderr[-4000:], pytrace=False)
    meta = subprocess.run(
        ["cargo", "metadata", "--format-version", "1", "--no-deps"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    target = Path(json.loads(meta.stdout)["target_directory"])
    return _find_ext(target / "release" / "libwalrust")


@pytest.fixture(scope="session")
def failpoint_ext():
    """The extension with failpoints compiled in (src/failpoint.rs)."""
    if FAILPOINT_EXT_ENV:
        return _find_ext(FAILPOINT_EXT_ENV)
    target = ROOT / "target" / "failpoints"
    build = subprocess.run(
        ["cargo", "build", "--release", "--features", "failpoints", "--target-dir", str(target)],
        cwd=ROOT, capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.fail("cargo build --features failpoints failed:\n" + build.stderr[-4000:],
                    pytrace=False)
    return _find_ext(target / "release" / "libwalrust")


@pytest.fixture(scope="session")
def walrust(walrust_ext):
    """The extension loaded into this process (Debian python's sqlite3)."""
    return Walrust(walrust_ext).load()


@pytest.fixture
def walrust_cli(walrust):
    """The `walrust` binary built beside the extension."""
    cli = walrust.ext.parent / "walrust"
    if not cli.is_file():
        pytest.fail(f"no walrust binary beside the extension at {cli}; run `make build`")
    return cli


@pytest.fixture
def connect(walrust):
    """connect(db, replica=None, *, wal=True, page_size=None, **settings) -> connection."""
    return walrust.connect


@pytest.fixture
def restore_and_compare(walrust, tmp_path):
    """restore_and_compare(replica, source, target=None, expected=None) -> (txid, path)."""

    def run(replica, source, target=None, expected=None):
        return walrust.restore_and_compare(replica, source, tmp_path, target, expected)

    return run


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    """s3s-fs on 127.0.0.1 (a real, SigV4-checking S3 server), with the standard AWS_*
    variables set in this process for walrust while it runs."""
    server = S3Server.start(tmp_path_factory.mktemp("s3") / "server")
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update(
        AWS_ACCESS_KEY_ID=server.access_key,
        AWS_SECRET_ACCESS_KEY=server.secret_key,
        AWS_REGION="us-east-1",
    )
    yield server
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()


_prefixes = iter(range(1, 1 << 30))


def make_replica(request, store, tmp_path, name="replica"):
    if store == "file":
        return Replica.file(tmp_path / name)
    if store == "s3":
        server = request.getfixturevalue("s3_server")
        test = re.sub(r"[^A-Za-z0-9_.-]+", "-", request.node.name)[:60]
        return Replica.s3_prefix(server, f"{test}-{next(_prefixes)}/{name}")
    raise ValueError(f"unknown store {store!r} in WALRUST_TEST_STORES")


@pytest.fixture(params=STORES)
def replica(request, tmp_path):
    """An empty replica location, once per store in WALRUST_TEST_STORES."""
    return make_replica(request, request.param, tmp_path)


@pytest.fixture
def new_replica(request, tmp_path, replica):
    """new_replica(name) -> another empty replica on the same store as `replica`."""
    return lambda name: make_replica(request, replica.kind, tmp_path, name)


@pytest.fixture
def litestream(tmp_path):
    """litestream(db, replica) -> a Litestream (not started); every one still running at the
    end of the test is stopped."""
    started = []

    def make(db, replica):
        ls = Litestream(tmp_path / f"litestream-{len(started) + 1}", db, replica)
        started.append(ls)
        return ls

    yield make
    for ls in started:
        if ls.proc is not None:
            ls.proc.kill()
            ls.proc.wait()
