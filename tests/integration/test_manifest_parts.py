"""manifest.json's parts (SPEC 5, issue 15): past 16 files of a level the manifest names parts
(packed, `src/manifest/packed.rs`) instead of every file, so keeping it current does not cost more as the replica ages. A replica
with hundreds of upload batches restores with walrust and with Litestream, verifies, compacts
and restores again; the manifest object stays small throughout."""

import json

from harness import assert_integrity_ok, assert_same_contents, db_contents

BATCHES = 300


def manifest_object(replica):
    return json.loads((replica.objects / "manifest.json").read_bytes())


def part_files(replica):
    """Parts on disk, relative to the replica's root: packed (.wmp) and JSON (index parts)."""
    return sorted(str(p.relative_to(replica.objects))
                  for p in (replica.objects / "manifest").rglob("*")
                  if p.suffix in (".wmp", ".json"))


def test_a_replica_of_hundreds_of_batches_keeps_a_small_manifest_and_restores(
        tmp_path, walrust, connect, replica, litestream):
    db = tmp_path / "app.db"
    conn = connect(db, replica, sync_interval=0)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    for i in range(BATCHES):
        conn.execute("INSERT INTO t(body) VALUES (randomblob(200))")
        walrust.sync(conn)  # one level-0 file, and one manifest write, per batch
    head = manifest_object(replica)
    level0 = [f for f in replica.ltx_files() if f.level == 0]
    assert len(level0) >= BATCHES - 2  # the first commits go into the first snapshot
    assert head["parts"], "past 16 files of a level the manifest names parts"
    assert len(head["files"]) < 64 + 2, len(head["files"])
    assert len((replica.objects / "manifest.json").read_bytes()) < 24 << 10
    named = len(head["files"]) + sum(p["count"] for p in head["parts"])
    assert named == len(replica.ltx_files()), "every file is named once, inline or in a part"

    expected = db_contents(db)
    out = tmp_path / "restored.db"
    walrust.restore(replica, out)
    assert_same_contents(expected, db_contents(out), "walrust restore")
    verify = json.loads(walrust.memory().execute("SELECT walrust_verify(?)",
                                                 (replica.url,)).fetchone()[0])
    assert verify["ok"], verify
    ls_out = tmp_path / "litestream.db"
    litestream(db, replica).restore(ls_out)
    assert_integrity_ok(ls_out, "litestream restore of a replica with manifest parts")
    assert_same_contents(expected, db_contents(ls_out), "litestream restore")

    # Compaction removes level-0 files held in parts: the parts are rewritten, the replica
    # stays whole, and every part the manifest no longer names is gone.
    result = json.loads(walrust.memory().execute("SELECT walrust_compact(?)",
                                                 (replica.url,)).fetchone()[0])
    assert result, result
    conn.execute("INSERT INTO t(body) VALUES (randomblob(200))")
    walrust.sync(conn)
    out2 = tmp_path / "restored-after-compaction.db"
    walrust.restore(replica, out2)
    assert_same_contents(db_contents(db), db_contents(out2), "restore after compaction")
    head = manifest_object(replica)
    named = len(head["files"]) + sum(p["count"] for p in head["parts"])
    assert named == len(replica.ltx_files())
    if replica.kind == "file":
        on_disk = part_files(replica)
        assert on_disk == sorted(p["key"] for p in head["parts"])
    conn.close()


def test_parts_no_manifest_names_are_swept_once_an_hour_old(tmp_path, walrust, connect, replica):
    """A writer killed between writing its parts and the manifest naming them leaves parts
    nothing names: the uploader deletes them after its next snapshot once they are an hour
    old (younger ones may be about to be named), and never a part the manifest names."""
    import os
    import time

    db = tmp_path / "app.db"
    conn = connect(db, replica, sync_interval=0)
    conn.execute("CREATE TABLE t(id INTEGER PRIMARY KEY, body BLOB)")
    for _ in range(80):
        conn.execute("INSERT INTO t(body) VALUES (randomblob(100))")
        walrust.sync(conn)
    parts_dir = replica.objects / "manifest" / "0"
    named = sorted(p["key"] for p in manifest_object(replica)["parts"])
    assert named, "80 batches make parts"
    old = parts_dir / "1-2-00000000000000aa.json"
    young = parts_dir / "1-2-00000000000000bb.json"
    for p in (old, young):
        p.write_text('{"version": 3, "level": 0, "files": []}')
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))

    conn.execute("SELECT walrust_snapshot()").fetchone()
    walrust.sync(conn)
    on_disk = part_files(replica)
    assert str(old.relative_to(replica.objects)) not in on_disk, "an hour-old orphan is swept"
    assert str(young.relative_to(replica.objects)) in on_disk, "a young part is kept"
    head = manifest_object(replica)
    assert all(p["key"] in on_disk for p in head["parts"]), "every named part is kept"
    out = tmp_path / "restored.db"
    walrust.restore(replica, out)
    assert_same_contents(db_contents(db), db_contents(out), "restore after the sweep")
    conn.close()
