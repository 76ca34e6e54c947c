"""The store's per-model index: ``<arm>/<model-slug>/index.sqlite`` and its shard files.

One :class:`ModelIndex` per (arm, model) folder: it checks the index (tables, format, arm, model, dim),
finds stored vectors and failures, checks shards against their sha256 as it reads them, writes chunks
(shard first, atomically, then its rows in one transaction), and drops or garbage-collects shards.
Internal to :mod:`prodrec.embed.store`; :class:`~prodrec.embed.store.EmbeddingStore` is the public face.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import logging
import os
import re
import sqlite3
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..._version import __version__
from ...core.errors import ConfigError
from ...core.io import atomic_write, sha256_file
from .digests import settled
from .sqlite import connect, remove_journals, set_meta, transaction

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Layout version of ``index.sqlite``; an index that records another version is rebuilt."""

_ARM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")

_INDEX_SCHEMA = (
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE shards(shard INTEGER PRIMARY KEY, file TEXT NOT NULL, rows INTEGER NOT NULL,"
    " sha256 TEXT NOT NULL, created_at TEXT NOT NULL)",
    "CREATE TABLE items(id TEXT NOT NULL, key TEXT NOT NULL, shard INTEGER, row INTEGER, failure TEXT,"
    " PRIMARY KEY (id, key))",
    "CREATE INDEX items_by_shard ON items(shard)",
)
_INDEX_COLUMNS = {
    "meta": {"key", "value"},
    "shards": {"shard", "file", "rows", "sha256", "created_at"},
    "items": {"id", "key", "shard", "row", "failure"},
}

# Shards whose checksum this process has verified: (path, size, mtime_ns) -> sha256.
_VERIFIED: dict[tuple[str, int, int], str] = {}


@dataclass(frozen=True)
class Request:
    """The validated ids and keys of one call."""

    ids: list[str]
    keys: list[str]

    @classmethod
    def of(cls, ids: Sequence[Any], keys: Sequence[Any]) -> Request:
        ids_, keys_ = [str(i) for i in ids], [str(k) for k in keys]
        if len(ids_) != len(keys_):
            raise ConfigError(f"got {len(ids_)} ids but {len(keys_)} keys; give one key per id")
        if len(set(ids_)) != len(ids_):
            repeated = [i for i, count in Counter(ids_).items() if count > 1]
            raise ConfigError(f"ids must be unique; repeated: {repeated[:5]}")
        return cls(ids_, keys_)

    def __len__(self) -> int:
        return len(self.ids)


@dataclass
class Stored:
    """What an index holds for a request, per position."""

    found: np.ndarray  # bool [n]: a vector or a failure is stored for (id, key)
    shard: np.ndarray  # int64 [n]: the vector's shard; -1 for failures and misses
    row: np.ndarray  # int64 [n]: the vector's row in its shard
    failures: dict[int, str]  # position -> reason
    shards: dict[int, ShardInfo]  # the index's shard table

    @classmethod
    def nothing(cls, n: int) -> Stored:
        return cls(np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, np.int64), {}, {})


@dataclass
class Found:
    """The result of a read-only look into an index."""

    mask: np.ndarray  # bool [n]
    vectors: np.ndarray  # float32 [n, dim]
    failures: dict[int, str]  # position -> reason
    meta: dict[str, Any]


class ShardInfo(NamedTuple):
    file: str
    rows: int
    sha256: str


class Unusable(Exception):
    """An index or shard that cannot be used; the message says why."""


class ModelIndex:
    """The index and shards of one (arm, model) folder."""

    def __init__(self, folder: Path, arm: str, model_id: str, dim: int | None) -> None:
        self.folder, self.arm, self.model_id, self._dim = folder, arm, model_id, dim
        self.path = folder / "index.sqlite"
        self.lock_path = folder / ".lock"

    @classmethod
    def at(cls, root: Path, arm: str, model_id: str, dim: int | None) -> ModelIndex:
        """The index of (``arm``, ``model_id``) under the store folder ``root`` (nothing is opened yet)."""
        if not _ARM_NAME.match(arm):
            raise ConfigError(f"arm {arm!r} is not a folder name of letters, digits, '-' and '_'")
        return cls(root / arm / slug(model_id), arm, model_id, dim)

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise RuntimeError("the dim is known only after check()")
        return self._dim

    # -------------------------------------------------------------- opening
    def read(self, request: Request) -> Found | None:
        """Read-only lookup without a lock; ``None`` if there is no usable index."""
        if not self.path.exists():
            return None
        try:
            with contextlib.closing(connect(self.path, readonly=True)) as conn:
                meta = self.check(conn)
                stored = self.find(conn, request)
        except (Unusable, sqlite3.DatabaseError) as exc:
            log.debug("%s is not readable now (%s)", self.path, exc)
            return None
        vectors = np.zeros((len(request), self.dim), np.float32)
        bad = self.gather(stored, vectors)
        mask = stored.found & ~np.isin(stored.shard, list(bad))
        return Found(mask, vectors, stored.failures, meta)

    def open_for_writing(self) -> tuple[sqlite3.Connection, str]:
        """A read-write connection to a valid index (call under the lock), and why it was rebuilt, if it was."""
        if self.path.exists():
            conn = connect(self.path)
            try:
                self.check(conn, thorough=True)
                return conn, ""
            except Unusable as exc:
                conn.close()
                reason = f"index.sqlite was not usable ({exc}); moved it aside and started a new index"
                log.warning("%s embeddings (%s): %s", self.arm, self.model_id, reason)
                self._move_aside()
        else:
            reason = ""
        conn = connect(self.path)
        self._create(conn)
        return conn, reason

    def check(self, conn: sqlite3.Connection, thorough: bool = False) -> dict[str, Any]:
        """The index's meta, after checking its tables and that it belongs to this arm, model and dim."""
        try:
            if thorough:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise Unusable(f"damaged: {problems[0]}")
            for table, columns in _INDEX_COLUMNS.items():
                if not columns <= {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    raise Unusable(f"it lacks the table {table} or some of its columns")
            meta = self.meta(conn)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise Unusable(str(exc)) from exc
        expected = {"format_version": FORMAT_VERSION, "arm": self.arm, "model_id": self.model_id}
        if self._dim is not None:
            expected["dim"] = self._dim
        for key, want in expected.items():
            if meta.get(key) != want:
                raise Unusable(f"it records {key} {meta.get(key)!r}, not {want!r}")
        if not isinstance(meta.get("dim"), int) or meta["dim"] < 1:
            raise Unusable(f"it records dim {meta.get('dim')!r}")
        self._dim = meta["dim"]
        return meta

    def _create(self, conn: sqlite3.Connection) -> None:
        stamp = now()
        with transaction(conn):
            for statement in _INDEX_SCHEMA:
                conn.execute(statement)
            set_meta(conn, {
                "format_version": FORMAT_VERSION, "arm": self.arm, "model_id": self.model_id, "dim": self.dim,
                "created_at": stamp, "updated_at": stamp, "package_version": __version__, "last_shard": 0,
                "model": {},
            })

    def _move_aside(self) -> None:
        os.replace(self.path, self.path.with_name("index.sqlite.discarded"))
        remove_journals(self.path)

    # -------------------------------------------------------------- reading
    @staticmethod
    def meta(conn: sqlite3.Connection) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}

    @staticmethod
    def find(conn: sqlite3.Connection, request: Request) -> Stored:
        """Look up every (id, key) of ``request`` with one join, plus the shard table, in one snapshot."""
        stored = Stored.nothing(len(request))
        conn.execute("BEGIN")
        try:
            conn.execute("CREATE TEMP TABLE wanted(pos INTEGER PRIMARY KEY, id TEXT NOT NULL, key TEXT NOT NULL)")
            conn.executemany("INSERT INTO temp.wanted VALUES (?, ?, ?)",
                             zip(range(len(request)), request.ids, request.keys))
            rows = conn.execute("SELECT w.pos, i.shard, i.row, i.failure FROM temp.wanted AS w"
                                " JOIN items AS i ON i.id = w.id AND i.key = w.key").fetchall()
            shard_rows = conn.execute("SELECT shard, file, rows, sha256 FROM shards").fetchall()
        finally:
            if conn.in_transaction:
                conn.execute("ROLLBACK")  # read-only work; this also drops the temp table
        stored.shards = {shard: ShardInfo(file, n, sha) for shard, file, n, sha in shard_rows}
        for pos, shard, row, failure in rows:
            stored.found[pos] = True
            if failure is None:
                stored.shard[pos], stored.row[pos] = shard, row
            else:
                stored.failures[pos] = failure
        return stored

    def gather(self, stored: Stored, out: np.ndarray) -> dict[int, str]:
        """Copy stored vectors into ``out``; returns the shards that could not be used, with why."""
        bad: dict[int, str] = {}
        for shard in np.unique(stored.shard[stored.shard >= 0]).tolist():
            positions = np.flatnonzero(stored.shard == shard)
            try:
                out[positions] = self._load_shard(stored.shards, shard)[stored.row[positions]]
            except Unusable as exc:
                bad[shard] = str(exc)
            except IndexError:
                bad[shard] = "the index points at rows past its end"
        return bad

    def _load_shard(self, shards: dict[int, ShardInfo], shard: int) -> np.ndarray:
        """The shard as a read-only memory map, after checking its checksum (once per file version)."""
        info = shards.get(shard)
        if info is None:
            raise Unusable("it is not in the shard table")
        path = self.folder / Path(info.file).name
        try:
            st = path.stat()
            version = (str(path), st.st_size, st.st_mtime_ns)
            if _VERIFIED.get(version) != info.sha256:
                if sha256_file(path) != info.sha256:
                    raise Unusable("it does not match its checksum (truncated or edited)")
                if settled(st.st_mtime_ns):
                    _VERIFIED[version] = info.sha256
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise Unusable("the file is missing") from exc
        except (OSError, ValueError) as exc:
            raise Unusable(f"it cannot be read ({exc})") from exc
        if vectors.dtype != np.float32 or vectors.shape != (info.rows, self.dim):
            raise Unusable(f"it holds {vectors.dtype} {vectors.shape}, not float32 ({info.rows}, {self.dim})")
        return vectors

    # -------------------------------------------------------------- writing (under the lock)
    @staticmethod
    def save_model_meta(conn: sqlite3.Connection, model_meta: dict[str, Any]) -> None:
        with transaction(conn):
            set_meta(conn, {"model": model_meta})

    def write_chunk(self, conn: sqlite3.Connection, request: Request, positions: np.ndarray,
                    vectors: np.ndarray, failures: dict[int, str]) -> None:
        """Store one computed chunk: its shard file atomically, then its rows in one transaction."""
        ok = np.ones(len(positions), bool)
        ok[list(failures)] = False
        rows = np.cumsum(ok) - 1
        shard = int(self.meta(conn)["last_shard"]) + 1
        info = self._write_shard(shard, vectors[ok]) if ok.any() else None
        items = [
            (request.ids[p], request.keys[p], shard if ok[j] else None, int(rows[j]) if ok[j] else None,
             failures.get(j))
            for j, p in enumerate(positions.tolist())
        ]
        with transaction(conn):
            if info is not None:
                conn.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?)", (shard, *info, now()))
                set_meta(conn, {"last_shard": shard})
            conn.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)", items)
            set_meta(conn, {"updated_at": now()})

    def _write_shard(self, shard: int, vectors: np.ndarray) -> ShardInfo:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        data = buffer.getvalue()
        path = atomic_write(self.folder / f"shard-{shard:06d}.npy", lambda f: f.write(data))
        return ShardInfo(path.name, len(vectors), hashlib.sha256(data).hexdigest())

    def drop_shard(self, conn: sqlite3.Connection, shard: int, why: str) -> str:
        """Forget a damaged shard and its rows (their products become missing); returns the repair note."""
        with transaction(conn):
            row = conn.execute("SELECT file FROM shards WHERE shard = ?", (shard,)).fetchone()
            dropped = conn.execute("DELETE FROM items WHERE shard = ?", (shard,)).rowcount
            conn.execute("DELETE FROM shards WHERE shard = ?", (shard,))
        file = row[0] if row else f"shard-{shard:06d}.npy"
        (self.folder / Path(file).name).unlink(missing_ok=True)
        note = f"{file}: {why}; dropped it and its {dropped} stored vectors"
        log.warning("%s embeddings (%s): %s", self.arm, self.model_id, note)
        return note

    def collect_garbage(self, conn: sqlite3.Connection) -> None:
        """Delete shards no item points at (replaced by ``force``) and files the index does not know.

        Unknown files are left by runs killed between writing a shard and indexing it; only the lock
        holder writes shards, so under the lock they are never a run in progress.
        """
        with transaction(conn):
            conn.execute("DELETE FROM shards WHERE shard NOT IN (SELECT shard FROM items WHERE shard IS NOT NULL)")
        indexed = {file for (file,) in conn.execute("SELECT file FROM shards")}
        leftovers = [p for p in self.folder.iterdir()
                     if p.name.startswith(("shard-", ".shard-")) and p.name not in indexed]
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            log.info("%s embeddings (%s): deleted %d unused shard file(s)", self.arm, self.model_id, len(leftovers))


def summarize(folder: Path) -> dict[str, Any]:
    """The :meth:`EmbeddingStore.entries` row of one model folder."""
    summary: dict[str, Any] = {
        "arm": folder.parent.name,
        "path": str(folder),
        "bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
    }
    try:
        with contextlib.closing(connect(folder / "index.sqlite", readonly=True)) as conn:
            meta = ModelIndex.meta(conn)
            products, vectors, failures = conn.execute(
                "SELECT COUNT(DISTINCT CASE WHEN failure IS NULL THEN id END), COUNT(shard), COUNT(failure)"
                " FROM items").fetchone()
            (shards,) = conn.execute("SELECT COUNT(*) FROM shards").fetchone()
    except (sqlite3.DatabaseError, ValueError) as exc:
        return {**summary, "error": f"index.sqlite cannot be read ({exc})"}
    return {
        **summary, "model_id": meta.get("model_id"), "dim": meta.get("dim"), "products": products,
        "vectors": vectors, "failures": failures, "shards": shards, "created_at": meta.get("created_at"),
        "updated_at": meta.get("updated_at"),
    }


def slug(model_id: str) -> str:
    """A folder name for a model id: readable, and unique thanks to a short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.")[:60]
    return f"{readable}-{hashlib.sha256(model_id.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
