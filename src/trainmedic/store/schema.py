"""The run store's SQLite schema and its migrations.

One run is one directory holding ``run.sqlite`` (WAL mode). Per-step series are written in *chunks*: one row
per flush and signal, holding numpy arrays as little-endian blobs. That keeps writes to a few rows per flush
and lets a reader load a million-step series with one query and one ``np.frombuffer``.
"""

from __future__ import annotations

import sqlite3

SCHEMA_VERSION = 1
DB_NAME = "run.sqlite"
TABLES = ("meta", "scalar_chunks", "layer_sets", "layer_chunks", "evals", "records", "events")

_V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS scalar_chunks (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, steps BLOB NOT NULL, vals BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS scalar_chunks_name ON scalar_chunks(name, id);
CREATE TABLE IF NOT EXISTS layer_sets (stat TEXT PRIMARY KEY, layers TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layer_chunks (
    id INTEGER PRIMARY KEY, stat TEXT NOT NULL, steps BLOB NOT NULL, vals BLOB NOT NULL);
CREATE INDEX IF NOT EXISTS layer_chunks_stat ON layer_chunks(stat, id);
CREATE TABLE IF NOT EXISTS evals (
    id INTEGER PRIMARY KEY, epoch INTEGER NOT NULL, step INTEGER, split TEXT NOT NULL,
    name TEXT NOT NULL, value REAL);
CREATE INDEX IF NOT EXISTS evals_split ON evals(split, name, epoch);
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY, kind TEXT NOT NULL, epoch INTEGER, step INTEGER, split TEXT,
    data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS records_kind ON records(kind, split, epoch);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, time REAL NOT NULL, step INTEGER, epoch INTEGER, kind TEXT NOT NULL,
    code TEXT, severity TEXT, message TEXT, data TEXT);
"""

# Migrations: version N -> N+1 as SQL scripts. Empty while there is one version.
MIGRATIONS: dict[int, str] = {}


def connect(path: str, readonly: bool = False, *, fresh: bool = False) -> sqlite3.Connection:
    """A connection in WAL mode with ``synchronous=NORMAL`` (commits do not wait for the disk; checkpoints do).

    ``fresh``: ``path`` is a new file. Then it is set up (WAL mode, and the schema with
    :func:`create_or_migrate`) with ``synchronous=OFF``, and the caller switches to ``NORMAL`` after that
    (:func:`durable`): creating the file in rollback mode and switching it to WAL costs six ``fdatasync``
    calls otherwise, ~30 ms on a virtual disk, for a file that holds nothing yet. An OS crash (not a killed
    process) before the run's first checkpoint loses the run either way.
    """
    if readonly:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    else:
        con = sqlite3.connect(path, timeout=10.0, isolation_level=None)
        con.execute("PRAGMA synchronous=OFF" if fresh else "PRAGMA synchronous=NORMAL")
        con.execute("PRAGMA journal_mode=WAL")
    return con


def durable(con: sqlite3.Connection) -> None:
    """After a ``fresh`` :func:`connect` and :func:`create_or_migrate`: the normal ``synchronous`` setting."""
    con.execute("PRAGMA synchronous=NORMAL")


def create_or_migrate(con: sqlite3.Connection) -> int:
    """Create the schema in an empty database or migrate an older one; return the schema version."""
    try:
        con.executescript("BEGIN;" + _V1 + "COMMIT;")  # one transaction
    except sqlite3.Error:
        if con.in_transaction:
            con.execute("ROLLBACK")
        raise
    row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    version = int(row[0]) if row else SCHEMA_VERSION
    while version < SCHEMA_VERSION:
        con.executescript(MIGRATIONS[version])
        version += 1
    con.execute("INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)", (str(version),))
    return version
