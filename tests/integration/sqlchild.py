"""A process with walrust loaded that runs SQL it is sent, so a test can kill it (-9) or let it
exit at a chosen step.

    python3 sqlchild.py --ext EXT --db DB [--replica URL] [--setting name=value ...]

Reads one JSON line per request from stdin: `["SQL", [params]]`, answers one JSON line on
stdout: `{"rows": [...]}` or `{"error": "..."}`. `["exit"]` closes the connection and
exits 0; end of input returns without closing anything (as a script that forgets to close).
`["repeat", "SQL", N]` runs SQL N times in a tight loop, binding 0..N-1 (commits that follow
each other as fast as SQLite takes them).
"""

import argparse
import json
import os
import sqlite3
import sys
import urllib.parse


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ext", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("--replica")
    p.add_argument("--setting", action="append", default=[])
    args = p.parse_args()
    loader = sqlite3.connect(":memory:")
    loader.enable_load_extension(True)
    loader.load_extension(args.ext)
    params = {}
    if args.replica:
        params["walrust_replica"] = args.replica
    for s in args.setting:
        k, v = s.split("=", 1)
        params[k if k.startswith("walrust_") else "walrust_" + k] = v
    uri = "file:" + urllib.parse.quote(args.db, safe="/")
    if params:
        uri += "?" + urllib.parse.urlencode(params, safe="/:")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=60)
    print(json.dumps({"ready": os.getpid()}), flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        if req == ["exit"]:
            conn.close()
            loader.close()
            print(json.dumps({"rows": []}), flush=True)
            return
        if req[0] == "repeat":
            for i in range(req[2]):
                conn.execute(req[1], (i,))
            print(json.dumps({"rows": []}), flush=True)
            continue
        sql, bind = req[0], req[1] if len(req) > 1 else []
        try:
            rows = [list(r) for r in conn.execute(sql, bind).fetchall()]
            print(json.dumps({"rows": rows}), flush=True)
        except sqlite3.Error as e:
            print(json.dumps({"error": str(e)}), flush=True)
    # End of input: return without closing anything, as a script that forgets to; Python
    # lets go of the connection on its way out.


if __name__ == "__main__":
    main()
