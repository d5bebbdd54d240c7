"""walrust for Python: continuous replication of SQLite to S3-compatible storage.

    import sqlite3, sqlite_walrust
    sqlite_walrust.load(sqlite3.connect(":memory:"))   # once per process
    db = sqlite3.connect("file:app.db?walrust_replica=s3://bucket/app", uri=True)
    db.execute("PRAGMA journal_mode=WAL")

Loading once registers the walrust VFS as the process's default and the walrust_* SQL
functions on every connection opened afterwards (see the project's README). The package also
installs the `walrust` command (restore, list, verify, compact). Needs a Python
whose sqlite3 module can load extensions (Debian's and most distributions' can; some builds,
such as pyenv's default or macOS's system Python, cannot).
"""

import os

__all__ = ["load", "loadable_path"]

_HERE = os.path.dirname(os.path.abspath(__file__))


def loadable_path():
    """Path of the extension without its suffix, as SQLite's load_extension() takes it."""
    return os.path.join(_HERE, "libwalrust")


def load(conn):
    """Loads walrust through `conn` (any sqlite3 connection, e.g. ":memory:")."""
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    finally:
        conn.enable_load_extension(False)

