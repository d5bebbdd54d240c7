"""walrust from Node: better-sqlite3 12 (npm, with its own bundled SQLite) loads the extension
with db.loadExtension(), replicates and restores (tests/node/replicate.mjs).
scripts/setup-test-env.sh installs tests/node/node_modules."""

import os
import shutil
import subprocess

from harness import ROOT

NODE_DIR = ROOT / "tests" / "node"


def test_better_sqlite3_loads_replicates_and_restores(tmp_path, walrust_ext):
    node = shutil.which("node")
    assert node, "no node on PATH: install Node 20 (see scripts/setup-test-env.sh)"
    addon = NODE_DIR / "node_modules" / "better-sqlite3" / "build" / "Release" / "better_sqlite3.node"
    assert addon.is_file(), f"better-sqlite3 is not built ({addon}): run scripts/setup-test-env.sh"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WALRUST_")}
    proc = subprocess.run(
        [node, str(NODE_DIR / "replicate.mjs"), str(walrust_ext), str(tmp_path)],
        cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert int(proc.stdout.strip()) > 0, proc.stdout
    assert (tmp_path / "restored.db").is_file()
