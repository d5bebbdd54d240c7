"""A database with no replica passes straight through: same files, same bytes (SPEC 1)."""

import os

import pytest

import sqlscript
from external import run_plain_sqlite
from workload import passthrough_statements


@pytest.mark.parametrize("page_size", [1024, 4096])
@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_no_replica_is_byte_identical_to_plain_sqlite(tmp_path, connect, journal_mode, page_size):
    statements = passthrough_statements(seed=page_size)
    checkpoint = journal_mode == "wal"

    plain_dir, walrust_dir = tmp_path / "plain", tmp_path / "walrust"
    plain_dir.mkdir()
    walrust_dir.mkdir()
    run_plain_sqlite(plain_dir / "app.db", statements, page_size, journal_mode, checkpoint)

    # The same statements, the same way, in this process with walrust loaded (it is now the
    # default VFS) and no replica configured anywhere.
    conn = connect(walrust_dir / "app.db", wal=False)
    sqlscript.run(conn, statements, page_size, journal_mode, checkpoint)
    while_open = sorted(os.listdir(walrust_dir))
    assert while_open in (["app.db"], ["app.db", "app.db-shm", "app.db-wal"]), while_open
    conn.close()

    assert sorted(os.listdir(walrust_dir)) == sorted(os.listdir(plain_dir)) == ["app.db"]
    plain = (plain_dir / "app.db").read_bytes()
    through_walrust = (walrust_dir / "app.db").read_bytes()
    assert len(through_walrust) == len(plain)
    if through_walrust != plain:
        first = next(i for i, (a, b) in enumerate(zip(plain, through_walrust)) if a != b)
        pytest.fail(f"files differ first at byte {first} (page {first // page_size + 1})")
