"""Small SQLite helpers of the store: autocommit connections, explicit write transactions, JSON meta rows."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ...core.io import dumps

BUSY_TIMEOUT_S = 60.0  # how long SQLite waits for another connection's short write transaction


def connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, see :func:`transaction`)."""
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    return sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)


@contextlib.contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def set_meta(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    """Write ``values`` into the ``meta(key, value)`` table, each value as compact JSON."""
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                     [(key, dumps(value, indent=None)) for key, value in values.items()])


def remove_journals(db_path: Path) -> None:
    """Delete SQLite's side files of a database that is being replaced (they must not meet the new one)."""
    for suffix in ("-journal", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)
