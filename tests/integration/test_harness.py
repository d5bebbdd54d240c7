"""The harness checked against the real things it drives, without walrust: if one of these
fails, the walrust tests' verdicts mean nothing."""

import pytest

from external import S3Server, WriterProcess, run_plain_sqlite
from harness import Replica, assert_integrity_ok, assert_same_contents, db_contents
from workload import passthrough_statements


def _write(db, n, start=0):
    run_plain_sqlite(
        db,
        ["CREATE TABLE IF NOT EXISTS t(id INTEGER PRIMARY KEY, v BLOB)", "BEGIN"]
        + [["INSERT INTO t VALUES (?, ?)", [i, {"blob": (b"%d" % i * 500).hex()}]] for i in range(start, start + n)]
        + ["COMMIT"],
        journal_mode="wal",
    )


def _litestream_round_trip(tmp_path, litestream, replica):
    db = tmp_path / "app.db"
    _write(db, 100)
    ls = litestream(db, replica).start()
    ls.wait_replicated(db)
    _write(db, 100, start=100)
    ls.wait_replicated(db)
    ls.stop()
    out = tmp_path / "out.db"
    ls.restore(out)
    assert_integrity_ok(out)
    assert_same_contents(db_contents(db), db_contents(out))
    files = replica.ltx_files()
    assert {f.level for f in files} >= {0, 9}, f"unexpected Litestream layout: {files}"
    assert all(f.min_txid <= f.max_txid for f in files)


def test_litestream_replicates_to_a_directory_and_restores(tmp_path, litestream):
    _litestream_round_trip(tmp_path, litestream, Replica.file(tmp_path / "replica"))


def test_litestream_replicates_to_the_s3_server_and_restores(tmp_path, litestream, s3_server):
    _litestream_round_trip(tmp_path, litestream, Replica.s3_prefix(s3_server, "harness/app"))


def test_s3_server_starts_and_stops_cleanly(tmp_path):
    server = S3Server.start(tmp_path / "s3")
    assert (server.data / server.bucket).is_dir()
    server.stop()
    assert not (tmp_path / "s3").exists()


def test_killed_plain_writer_loses_no_reported_commit(tmp_path):
    db = tmp_path / "app.db"
    reported = []
    for round_ in range(3):
        writer = WriterProcess(db, seed=round_, stderr_path=tmp_path / f"writer-{round_}.err")
        writer.wait_for(20 + 30 * round_)
        ids = writer.kill()
        # A commit may land without being reported (killed between COMMIT and print).
        assert writer.first_id > max(reported, default=0)
        reported += ids
    in_db = {row[0] for row in db_contents(db)["tables"]["log"]}
    assert set(reported) <= in_db
    assert_integrity_ok(db)


def test_comparison_notices_a_single_changed_byte(tmp_path):
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    _write(a, 50)
    _write(b, 50)
    assert_same_contents(db_contents(a), db_contents(b))
    run_plain_sqlite(b, ["UPDATE t SET v = substr(v, 1, 99) || x'00' || substr(v, 101) WHERE id = 7"])
    with pytest.raises(AssertionError, match="table t row 7"):
        assert_same_contents(db_contents(a), db_contents(b))


@pytest.mark.parametrize("journal_mode", ["delete", "wal"])
def test_plain_sqlite_is_byte_for_byte_repeatable(tmp_path, journal_mode):
    """The premise of the pass-through test: the same statements give the same bytes."""
    files = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        db = tmp_path / name / "app.db"
        run_plain_sqlite(db, passthrough_statements(7), page_size=1024, journal_mode=journal_mode, checkpoint=True)
        files.append(db.read_bytes())
    assert files[0] == files[1]
