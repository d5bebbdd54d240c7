"""Seeded random workloads: the same seed gives the same statements, every run."""

import random

# Default cache size to return to after the small-cache transactions (SQLite's -2000 = 2 MB).
DEFAULT_CACHE = -2000


class RandomWorkload:
    """A mix of everything the capture path has to get right: inserts, updates and deletes,
    BLOBs that overflow pages, savepoints rolled back, transactions rolled back (some after
    spilling uncommitted pages into the WAL), wal_checkpoint TRUNCATE/RESTART/PASSIVE,
    VACUUM, schema changes, and a transaction far larger than the page cache.

    `on_commit(conn)` (optional) is called after every statement or transaction that
    committed, e.g. to record walrust_status()."""

    def __init__(self, conn, seed, page_size=4096, on_commit=None, without=()):
        self.ops = [(name, weight) for name, weight in self.OPS if name not in without]
        self.conn = conn
        self.rng = random.Random(seed)
        self.page_size = page_size
        self.on_commit = on_commit or (lambda conn: None)
        self.log = []  # what ran, for failure messages

    # -- helpers --

    def _x(self, sql, params=()):
        return self.conn.execute(sql, params)

    def _committed(self):
        self.on_commit(self.conn)

    def _blob(self, big=False):
        if big:  # larger than a page: overflow chain
            hi = min(3 * self.page_size, 200_000)
            return self.rng.randbytes(self.rng.randint(self.page_size + 1, max(hi, self.page_size + 2)))
        return self.rng.randbytes(self.rng.choice([0, 1, 16, 100, 400]))

    def _ids(self, table="t1"):
        return [r[0] for r in self._x(f"SELECT id FROM {table}")]

    def _some_ids(self, k, table="t1"):
        ids = self._ids(table)
        return self.rng.sample(ids, min(k, len(ids)))

    def _insert_rows(self, n, big_share=0.2):
        for _ in range(n):
            self._x(
                "INSERT INTO t1(k, v, big) VALUES (?, ?, ?)",
                (f"k{self.rng.randrange(10**6)}", self._blob(), self._blob(self.rng.random() < big_share)),
            )

    # -- the operations --

    def setup(self):
        self._x("BEGIN")
        self._x("CREATE TABLE t1(id INTEGER PRIMARY KEY, k TEXT, v BLOB, big BLOB)")
        self._x("CREATE INDEX t1_k ON t1(k)")
        self._x("CREATE TABLE t2(a INTEGER, b TEXT)")  # rowid table without an alias
        self._x("CREATE TABLE t3(k TEXT PRIMARY KEY, n INTEGER) WITHOUT ROWID")
        self._x("COMMIT")
        self._committed()
        for _ in range(20):  # autocommit: 20 transactions
            self._insert_rows(1)
            self._committed()

    def op_insert(self):
        self._x("BEGIN")
        self._insert_rows(self.rng.randint(1, 20))
        for i in range(self.rng.randint(0, 5)):
            self._x("INSERT INTO t2 VALUES (?, ?)", (self.rng.randrange(1000), "x" * self.rng.randrange(300)))
            self._x(
                "INSERT INTO t3 VALUES (?, 1) ON CONFLICT(k) DO UPDATE SET n = n + 1",
                (f"key{self.rng.randrange(200)}",),
            )
        self._x("COMMIT")
        self._committed()

    def op_update(self):
        self._x("BEGIN")
        for i in self._some_ids(self.rng.randint(1, 10)):
            self._x("UPDATE t1 SET v = ?, big = ? WHERE id = ?", (self._blob(), self._blob(self.rng.random() < 0.3), i))
        self._x("UPDATE t2 SET b = b || 'u' WHERE a % 7 = ?", (self.rng.randrange(7),))
        self._x("COMMIT")
        self._committed()

    def op_delete(self):
        ids = self._some_ids(self.rng.randint(1, 15))
        if self.rng.random() < 0.5:  # one autocommit statement
            self._x(f"DELETE FROM t1 WHERE id IN ({','.join('?' * len(ids))})", ids)
        else:
            self._x("BEGIN")
            for i in ids:
                self._x("DELETE FROM t1 WHERE id = ?", (i,))
            self._x("DELETE FROM t3 WHERE k IN (SELECT k FROM t3 ORDER BY k LIMIT 2)")
            self._x("COMMIT")
        self._committed()

    def op_savepoint_rollback(self):
        self._x("BEGIN")
        self._insert_rows(2)
        self._x("SAVEPOINT s1")
        self._insert_rows(5, big_share=0.5)
        self._x("SAVEPOINT s2")
        for i in self._some_ids(5):
            self._x("DELETE FROM t1 WHERE id = ?", (i,))
        self._x("ROLLBACK TO s2")
        self._x("RELEASE s2")
        if self.rng.random() < 0.5:
            self._x("ROLLBACK TO s1")
        self._x("RELEASE s1")
        self._insert_rows(1)
        self._x("COMMIT")
        self._committed()

    def op_transaction_rollback(self):
        self._x("BEGIN")
        self._insert_rows(self.rng.randint(1, 10), big_share=0.5)
        for i in self._some_ids(3):
            self._x("UPDATE t1 SET k = 'rolled back' WHERE id = ?", (i,))
        self._x("ROLLBACK")

    def op_checkpoint(self):
        mode = self.rng.choice(["TRUNCATE", "RESTART", "PASSIVE", "FULL"])
        self._x(f"PRAGMA wal_checkpoint({mode})").fetchall()

    def op_vacuum(self):
        self._x("VACUUM")
        self._committed()

    def op_schema(self):
        n = self.rng.randrange(1000)
        self._x(f"CREATE TABLE extra_{n} AS SELECT id, k FROM t1 WHERE id % 3 = 0")
        self._committed()
        if self.rng.random() < 0.5:
            self._x(f"DROP TABLE extra_{n}")
            self._committed()

    def big_transaction(self, total_bytes=4 << 20, rollback=False):
        """One transaction far larger than the page cache: with cache_size=10 SQLite spills
        dirty pages into the WAL before the commit (or the rollback)."""
        self._x("PRAGMA cache_size=10")
        self._x("BEGIN")
        written = 0
        while written < total_bytes:
            blob = self.rng.randbytes(self.rng.randint(1000, 60_000))
            self._x("INSERT INTO t1(k, v, big) VALUES (?, ?, ?)", ("bulk", b"", blob))
            written += len(blob)
        self._x("UPDATE t1 SET k = 'bulk-done' WHERE k = 'bulk'")
        self._x("ROLLBACK" if rollback else "COMMIT")
        self._x(f"PRAGMA cache_size={DEFAULT_CACHE}")
        if not rollback:
            self._committed()

    OPS = [
        ("op_insert", 30),
        ("op_update", 20),
        ("op_delete", 15),
        ("op_savepoint_rollback", 8),
        ("op_transaction_rollback", 8),
        ("op_checkpoint", 8),
        ("op_vacuum", 2),
        ("op_schema", 3),
    ]

    def step(self):
        names, weights = zip(*self.ops)
        name = self.rng.choices(names, weights)[0]
        self.log.append(name)
        getattr(self, name)()

    def run(self, steps):
        for _ in range(steps):
            self.step()


def passthrough_statements(seed, rows=300):
    """Statements for the byte-for-byte comparison with plain SQLite (sqlscript.py format):
    deterministic, with overflow BLOBs, an update, deletes and a rolled-back transaction."""
    rng = random.Random(seed)
    out = [
        "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, data BLOB)",
        "CREATE INDEX t_name ON t(name)",
        "BEGIN",
    ]
    for i in range(rows):
        size = rng.choice([10, 100, 1000, 9000])
        out.append(["INSERT INTO t VALUES (?, ?, ?)", [i, f"row{rng.randrange(10**6)}", {"blob": rng.randbytes(size).hex()}]])
    out.append("COMMIT")
    out += [
        "UPDATE t SET name = upper(name) WHERE id % 5 = 0",
        "DELETE FROM t WHERE id % 7 = 0",
        "BEGIN",
        "DELETE FROM t",
        "ROLLBACK",
        "CREATE TABLE u AS SELECT id, length(data) AS n FROM t",
    ]
    return out
