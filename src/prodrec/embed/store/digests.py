"""Content digests of files (the store keys of images), with a stat cache in ``files.sqlite``.

A warm :func:`file_digests` costs one ``stat`` per file: (path, size, mtime_ns) -> digest is cached once
a file's mtime has settled; files that changed are read on a small thread pool.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sqlite3
import stat
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from tqdm.auto import tqdm

from .sqlite import connect, remove_journals, transaction

log = logging.getLogger(__name__)

SETTLE_NS = 2_000_000_000  # files changed more recently than this may change again in the same mtime tick
_HASH_THREADS = 8
_SQL_BATCH = 500  # parameters per ``IN (...)`` query, well under SQLite's limit

_T = TypeVar("_T")


def settled(mtime_ns: int) -> bool:
    """Whether a file is old enough that a same-size rewrite would change its mtime (safe to cache)."""
    return time.time_ns() - mtime_ns > SETTLE_NS


class DigestCache:
    """``files.sqlite``: (path, size, mtime_ns) -> digest; damaged or foreign, it is simply rebuilt."""

    _SCHEMA = ("CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, size INTEGER NOT NULL,"
               " mtime_ns INTEGER NOT NULL, digest TEXT NOT NULL)")

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self, names: list[str]) -> dict[str, tuple[tuple[int, int], str]]:
        """``name -> ((size, mtime_ns), digest)`` of the cached names among ``names``."""
        def select(conn: sqlite3.Connection) -> dict[str, tuple[tuple[int, int], str]]:
            found = {}
            for start in range(0, len(names), _SQL_BATCH):
                batch = names[start:start + _SQL_BATCH]
                query = f"SELECT path, size, mtime_ns, digest FROM files WHERE path IN ({', '.join('?' * len(batch))})"
                found.update({p: ((size, mtime), digest) for p, size, mtime, digest in conn.execute(query, batch)})
            return found

        return self._run(select) if names else {}

    def put(self, rows: list[tuple[str, int, int, str]]) -> None:
        """Cache ``(path, size, mtime_ns, digest)`` rows."""
        def insert(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)

        if rows:
            self._run(insert)

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return self._once(work)
        except sqlite3.DatabaseError as exc:
            log.warning("the file digest cache %s is damaged (%s); starting a new one", self.path, exc)
        self.path.unlink(missing_ok=True)
        remove_journals(self.path)
        return self._once(work)

    def _once(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with contextlib.closing(connect(self.path)) as conn:
            conn.execute(self._SCHEMA)
            return work(conn)


def file_digests(cache: DigestCache, paths: Sequence[str | os.PathLike[str]], progress: bool = False) -> list[str]:
    """Content digest (blake2b, 32 hex digits) of each file, through ``cache``; an unreadable file gets
    ``"missing:<reason>"`` (see :meth:`prodrec.embed.store.EmbeddingStore.file_digests`)."""
    names = [os.path.abspath(os.fspath(p)) for p in paths]
    digests: dict[str, str] = {}
    stats: dict[str, tuple[int, int]] = {}
    for name in dict.fromkeys(names):
        try:
            st = os.stat(name)
        except OSError as exc:
            digests[name] = _unreadable(exc)
        else:
            if stat.S_ISREG(st.st_mode):
                stats[name] = (st.st_size, st.st_mtime_ns)
            else:
                digests[name] = "missing:not a regular file"
    cached = cache.get(list(stats))
    digests.update({name: cached[name][1] for name in stats if cached.get(name, (None,))[0] == stats[name]})
    fresh = hash_files([name for name in stats if name not in digests], progress)
    digests.update(fresh)
    cache.put([
        (name, *stats[name], digest) for name, digest in fresh.items()
        if not digest.startswith("missing:") and settled(stats[name][1])
    ])
    return [digests[name] for name in names]


def hash_files(names: list[str], progress: bool) -> dict[str, str]:
    """Digests of ``names``, read on a small thread pool."""
    if not names:
        return {}
    digests = {}
    with (
        ThreadPoolExecutor(min(_HASH_THREADS, len(names))) as pool,
        tqdm(total=len(names), desc="hashing files", unit="file", disable=not progress) as bar,
    ):
        for name, digest in zip(names, pool.map(hash_file, names)):
            digests[name] = digest
            bar.update()
    return digests


def hash_file(name: str) -> str:
    """The blake2b digest (16 bytes, hex) of one file's bytes, or ``"missing:<exception>"``."""
    h = hashlib.blake2b(digest_size=16)
    try:
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    except OSError as exc:
        return _unreadable(exc)
    return h.hexdigest()


def _unreadable(exc: OSError) -> str:
    return f"missing:{type(exc).__name__}"
