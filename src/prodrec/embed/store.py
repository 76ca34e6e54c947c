"""Per-product embedding store: vectors keyed by product id and a hash of that product's input.

A product's *key* is a hash of what its embedding is computed from: the bytes of its image
(:meth:`EmbeddingStore.file_digests`) or its sentence (:func:`text_key`). Any sample or subset of an
already-embedded catalog therefore reads what is stored and computes only what is missing, and a changed
photo or sentence recomputes that product only.

Layout of a store folder::

    files.sqlite                          stat cache of file_digests: (path, size, mtime_ns) -> digest
    <arm>/<model-slug>/index.sqlite       meta(key, value JSON); shards(shard, file, rows, sha256,
                                          created_at); items(id, key, shard, row, failure)
    <arm>/<model-slug>/shard-000001.npy   float32 [rows, dim]: written once, never modified
    <arm>/<model-slug>/.lock              held while computing and writing (one writer per model)

Every computed chunk is a resume point: its shard is written atomically, then the shard and its item rows
enter the index in one transaction. A run killed between the two steps leaves a shard file the index does
not know, which the next writer deletes. Shards are checked against their sha256 when they are read; a
damaged shard, or an index that is damaged or written for another dim or format, is dropped and its
products recomputed, with the reason in the log and in the returned metadata. Reading a complete set takes
no lock and calls no model.
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
import stat
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import numpy as np
from tqdm.auto import tqdm

from ..core.io import atomic_write, dumps, file_lock, sha256_file
from .._version import __version__
from ..core.errors import ConfigError, StoreError
from .vectors import Embeddings, text_key

__all__ = ["FORMAT_VERSION", "ComputeFn", "EmbeddingStore", "Embeddings", "text_key"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
"""Layout version of ``index.sqlite``; an index that records another version is rebuilt."""

ComputeFn = Callable[[np.ndarray], tuple[np.ndarray, dict[int, str]]]
"""``compute(positions) -> (float32 vectors [len(positions), dim], {local index: failure reason})``."""

_BUSY_TIMEOUT_S = 60.0  # how long SQLite waits for another connection's short write transaction
_SETTLE_NS = 2_000_000_000  # files changed more recently than this may change again in the same mtime tick
_HASH_THREADS = 8
_SQL_BATCH = 500  # parameters per ``IN (...)`` query, well under SQLite's limit
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

_T = TypeVar("_T")


class EmbeddingStore:
    """Embedding vectors on disk, per arm and model, keyed by product id and a hash of the product's input.

    Parameters
    ----------
    root : str or path-like
        The store folder; created if it does not exist.

    Raises
    ------
    StoreError
        If the folder cannot be created or is not writable.

    Examples
    --------
    >>> store = EmbeddingStore("~/.cache/prodrec/store")
    >>> keys = store.file_digests(image_paths)
    >>> emb = store.embed("image", "efficientnet-lite0@imagenet", 1280, ids, keys,
    ...                   compute=lambda pos: encoder.encode_with_failures([image_paths[i] for i in pos]))
    >>> emb.meta["cache"]
    'miss'
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        fix = "choose another with --store or $PRODREC_STORE"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the embedding store folder {self.root} ({exc}); {fix}") from exc
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StoreError(f"the embedding store folder {self.root} is not writable; {fix}")
        self._digest_cache = _DigestCache(self.root / "files.sqlite")

    def embed(
        self,
        arm: str,
        model_id: str,
        dim: int,
        ids: Sequence[str],
        keys: Sequence[str],
        compute: ComputeFn,
        meta: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        chunk_size: int = 1024,
        progress: bool = True,
        force: bool = False,
        desc: str | None = None,
    ) -> Embeddings:
        """Vectors of ``ids`` from the store, computing (and storing) only those that are missing.

        Parameters
        ----------
        arm : str
            What is embedded (``"image"``, ``"text"``): a folder name of letters, digits, ``-`` and ``_``.
        model_id : str
            The model and its weights; vectors of different model ids never mix.
        dim : int
            Length of the model's vectors.
        ids, keys : sequences of str
            Unique product ids and, for each, the hash of its input (:meth:`file_digests`,
            :func:`text_key`). Ids are stored as given: ``"007"`` and ``"7"`` are different products.
        compute : callable
            ``compute(positions)`` gets an int array of positions into ``ids`` (only missing products, at
            most ``chunk_size`` at a time) and returns ``(vectors float32 [len(positions), dim],
            {local index: failure reason})``. It is never called when everything is stored, so a model
            built lazily inside it is not loaded on a warm run. A ``compute`` with a ``prepare`` method
            (:class:`prodrec.scale.RayCompute`) gets ``prepare(missing)`` once, before ``meta`` and the
            first chunk: every position it will be asked for, in the order of the calls.
        meta : dict or callable, optional
            Model provenance (weight source, device...) saved with the model's entry; a callable is called
            only when something is computed.
        chunk_size : int
            Products per ``compute`` call; every finished chunk is saved at once (a resume point).
        progress : bool
            Show a tqdm bar over products (starting at the number already stored).
        force : bool
            Recompute every given product.
        desc : str, optional
            Label of the progress bar.

        Returns
        -------
        Embeddings
            Rows in the order of ``ids``. ``meta`` holds the stored model provenance plus ``arm``,
            ``model_id``, ``dim``, ``created_at``, ``updated_at``, ``cache`` (``"hit"``, ``"partial"`` or
            ``"miss"``), ``loaded``, ``computed``, ``computed_because`` (``""`` on a hit), ``repairs``
            (damage found and fixed) and ``store``.

        Raises
        ------
        ConfigError
            If the arguments are inconsistent (lengths, duplicate ids, sizes, arm name).
        ValueError
            If ``compute`` returns vectors of the wrong shape or failures outside the chunk.
        """
        request = _Request.of(ids, keys)
        _check_sizes(dim=dim, chunk_size=chunk_size)
        index = self._index(arm, model_id, dim)
        if not request.ids:
            return self._result(index, request, np.zeros((0, dim), np.float32), {}, {}, computed=0)
        if not force:
            found = index.read(request)
            if found is not None and found.mask.all():
                return self._result(index, request, found.vectors, found.failures, found.meta, computed=0)
        index.folder.mkdir(parents=True, exist_ok=True)
        with file_lock(index.lock_path, what=f"the {arm} embeddings of {model_id} in {self.root}"):
            return self._fill(index, request, compute, meta, chunk_size, progress, force, desc)

    def lookup(
        self, arm: str, model_id: str, ids: Sequence[str], keys: Sequence[str], dim: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, dict[str, str]]:
        """What the store holds for ``ids``, read-only: no lock, no compute, no repair.

        Returns
        -------
        found : np.ndarray
            bool ``[n]``: a vector or a recorded failure is stored for the product's current key (a row in
            a damaged shard counts as not found).
        vectors : np.ndarray
            float32 ``[n, dim]``, zero where not found or failed; ``dim`` is the stored one (0 when
            nothing is stored and ``dim`` is not given).
        failures : dict
            ``id -> reason`` of the stored failures among ``ids``.
        """
        request = _Request.of(ids, keys)
        found = self._index(arm, model_id, dim).read(request)
        if found is None:
            return np.zeros(len(request), bool), np.zeros((len(request), dim or 0), np.float32), {}
        return found.mask, found.vectors, {request.ids[p]: why for p, why in found.failures.items()}

    def file_digests(self, paths: Sequence[str | os.PathLike[str]], progress: bool = False) -> list[str]:
        """Content digest (blake2b, 32 hex digits) of each file: the store key of an image.

        A stat cache in ``files.sqlite`` maps (path, size, mtime_ns) to the digest, so a warm call costs
        one ``stat`` per file; files that changed are read on a small thread pool. A file that cannot be
        read gets ``"missing:<reason>"`` (e.g. ``"missing:FileNotFoundError"``) instead of raising, so its
        failure can be stored like any other until the file appears or changes.
        """
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
        cached = self._digest_cache.get(list(stats))
        digests.update({name: cached[name][1] for name in stats if cached.get(name, (None,))[0] == stats[name]})
        fresh = _hash_files([name for name in stats if name not in digests], progress)
        digests.update(fresh)
        self._digest_cache.put([
            (name, *stats[name], digest) for name, digest in fresh.items()
            if not digest.startswith("missing:") and _settled(stats[name][1])
        ])
        return [digests[name] for name in names]

    def entries(self) -> list[dict[str, Any]]:
        """One summary per stored (arm, model), for listings.

        Each has ``arm``, ``model_id``, ``dim``, ``products`` (distinct ids with a vector), ``vectors``
        (stored rows, older inputs included), ``failures``, ``shards``, ``bytes`` on disk, ``created_at``,
        ``updated_at`` and ``path``; an unreadable index gives ``arm``, ``path``, ``bytes`` and ``error``.
        """
        return [_summarize(path.parent) for path in sorted(self.root.glob("*/*/index.sqlite"))]

    # ------------------------------------------------------------------ internals
    def _index(self, arm: str, model_id: str, dim: int | None) -> _ModelIndex:
        if not _ARM_NAME.match(arm):
            raise ConfigError(f"arm {arm!r} is not a folder name of letters, digits, '-' and '_'")
        return _ModelIndex(self.root / arm / _slug(model_id), arm, model_id, dim)

    def _fill(
        self,
        index: _ModelIndex,
        request: _Request,
        compute: ComputeFn,
        meta: dict[str, Any] | Callable[[], dict[str, Any]] | None,
        chunk_size: int,
        progress: bool,
        force: bool,
        desc: str | None,
    ) -> Embeddings:
        """Under the model's lock: repair, load what is stored, compute and store the rest."""
        n = len(request)
        conn, rebuilt = index.open_for_writing()
        with contextlib.closing(conn):
            stored = _Stored.nothing(n) if force else index.find(conn, request)
            vectors = np.zeros((n, index.dim), np.float32)
            bad = index.gather(stored, vectors)
            repairs = [rebuilt] if rebuilt else []
            repairs += [index.drop_shard(conn, shard, why) for shard, why in bad.items()]
            missing = np.flatnonzero(~stored.found | np.isin(stored.shard, list(bad)))
            failures = dict(stored.failures)
            because = _why_computed(repairs, force, len(missing), n)
            if len(missing):
                log.info("%s embeddings (%s): computing %d of %d products, because %s",
                         index.arm, index.model_id, len(missing), n, because)
                prepare = getattr(compute, "prepare", None)
                if prepare is not None:  # e.g. the ray engine: one job over every missing product
                    prepare(missing.copy())
                index.save_model_meta(conn, (meta() if callable(meta) else meta) or {})
                with tqdm(total=n, initial=n - len(missing), desc=desc or f"{index.arm} embeddings",
                          unit="item", disable=not progress) as bar:
                    for start in range(0, len(missing), chunk_size):
                        positions = missing[start:start + chunk_size]
                        failures.update(self._compute_chunk(index, conn, request, positions, compute, vectors))
                        bar.update(len(positions))
                        _pause_for_tests()
            index.collect_garbage(conn)
            entry_meta = index.meta(conn)
        return self._result(index, request, vectors, failures, entry_meta, len(missing), because, repairs)

    @staticmethod
    def _compute_chunk(index: _ModelIndex, conn: sqlite3.Connection, request: _Request, positions: np.ndarray,
                       compute: ComputeFn, out: np.ndarray) -> dict[int, str]:
        """Compute, store and copy into ``out`` one chunk; returns its failures by position (a resume point)."""
        vectors, failures = _checked(compute(positions.copy()), len(positions), index.dim)
        index.write_chunk(conn, request, positions, vectors, failures)
        out[positions] = vectors
        return {int(positions[j]): why for j, why in failures.items()}

    def _result(
        self,
        index: _ModelIndex,
        request: _Request,
        vectors: np.ndarray,
        failures: dict[int, str],
        entry_meta: dict[str, Any],
        computed: int,
        because: str = "",
        repairs: list[str] | None = None,
    ) -> Embeddings:
        """The returned :class:`Embeddings`, with the stored model meta and this call's story."""
        loaded = len(request) - computed
        meta = {
            **entry_meta.get("model", {}),
            "arm": index.arm,
            "model_id": index.model_id,
            "dim": int(vectors.shape[1]),
            "created_at": entry_meta.get("created_at"),
            "updated_at": entry_meta.get("updated_at"),
            "cache": "hit" if computed == 0 else "miss" if loaded == 0 else "partial",
            "loaded": loaded,
            "computed": computed,
            "computed_because": because,
            "repairs": repairs or [],
            "store": str(self.root),
        }
        by_id = {request.ids[p]: why for p, why in sorted(failures.items())}
        return Embeddings(np.array(request.ids, dtype=str), vectors, meta, by_id)


@dataclass(frozen=True)
class _Request:
    """The validated ids and keys of one call."""

    ids: list[str]
    keys: list[str]

    @classmethod
    def of(cls, ids: Sequence[Any], keys: Sequence[Any]) -> _Request:
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
class _Stored:
    """What an index holds for a request, per position."""

    found: np.ndarray  # bool [n]: a vector or a failure is stored for (id, key)
    shard: np.ndarray  # int64 [n]: the vector's shard; -1 for failures and misses
    row: np.ndarray  # int64 [n]: the vector's row in its shard
    failures: dict[int, str]  # position -> reason
    shards: dict[int, _ShardInfo]  # the index's shard table

    @classmethod
    def nothing(cls, n: int) -> _Stored:
        return cls(np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, np.int64), {}, {})


@dataclass
class _Found:
    """The result of a read-only look into an index."""

    mask: np.ndarray  # bool [n]
    vectors: np.ndarray  # float32 [n, dim]
    failures: dict[int, str]  # position -> reason
    meta: dict[str, Any]


class _ShardInfo(NamedTuple):
    file: str
    rows: int
    sha256: str


class _Unusable(Exception):
    """An index or shard that cannot be used; the message says why."""


class _ModelIndex:
    """The index and shards of one (arm, model) folder."""

    def __init__(self, folder: Path, arm: str, model_id: str, dim: int | None) -> None:
        self.folder, self.arm, self.model_id, self._dim = folder, arm, model_id, dim
        self.path = folder / "index.sqlite"
        self.lock_path = folder / ".lock"

    @property
    def dim(self) -> int:
        if self._dim is None:
            raise RuntimeError("the dim is known only after check()")
        return self._dim

    # -------------------------------------------------------------- opening
    def read(self, request: _Request) -> _Found | None:
        """Read-only lookup without a lock; ``None`` if there is no usable index."""
        if not self.path.exists():
            return None
        try:
            with contextlib.closing(_connect(self.path, readonly=True)) as conn:
                meta = self.check(conn)
                stored = self.find(conn, request)
        except (_Unusable, sqlite3.DatabaseError) as exc:
            log.debug("%s is not readable now (%s)", self.path, exc)
            return None
        vectors = np.zeros((len(request), self.dim), np.float32)
        bad = self.gather(stored, vectors)
        mask = stored.found & ~np.isin(stored.shard, list(bad))
        return _Found(mask, vectors, stored.failures, meta)

    def open_for_writing(self) -> tuple[sqlite3.Connection, str]:
        """A read-write connection to a valid index (call under the lock), and why it was rebuilt, if it was."""
        if self.path.exists():
            conn = _connect(self.path)
            try:
                self.check(conn, thorough=True)
                return conn, ""
            except _Unusable as exc:
                conn.close()
                reason = f"index.sqlite was not usable ({exc}); moved it aside and started a new index"
                log.warning("%s embeddings (%s): %s", self.arm, self.model_id, reason)
                self._move_aside()
        else:
            reason = ""
        conn = _connect(self.path)
        self._create(conn)
        return conn, reason

    def check(self, conn: sqlite3.Connection, thorough: bool = False) -> dict[str, Any]:
        """The index's meta, after checking its tables and that it belongs to this arm, model and dim."""
        try:
            if thorough:
                problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
                if problems != ["ok"]:
                    raise _Unusable(f"damaged: {problems[0]}")
            for table, columns in _INDEX_COLUMNS.items():
                if not columns <= {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}:
                    raise _Unusable(f"it lacks the table {table} or some of its columns")
            meta = self.meta(conn)
        except (sqlite3.DatabaseError, ValueError) as exc:
            raise _Unusable(str(exc)) from exc
        expected = {"format_version": FORMAT_VERSION, "arm": self.arm, "model_id": self.model_id}
        if self._dim is not None:
            expected["dim"] = self._dim
        for key, want in expected.items():
            if meta.get(key) != want:
                raise _Unusable(f"it records {key} {meta.get(key)!r}, not {want!r}")
        if not isinstance(meta.get("dim"), int) or meta["dim"] < 1:
            raise _Unusable(f"it records dim {meta.get('dim')!r}")
        self._dim = meta["dim"]
        return meta

    def _create(self, conn: sqlite3.Connection) -> None:
        now = _now()
        with _transaction(conn):
            for statement in _INDEX_SCHEMA:
                conn.execute(statement)
            _set_meta(conn, {
                "format_version": FORMAT_VERSION, "arm": self.arm, "model_id": self.model_id, "dim": self.dim,
                "created_at": now, "updated_at": now, "package_version": __version__, "last_shard": 0,
                "model": {},
            })

    def _move_aside(self) -> None:
        os.replace(self.path, self.path.with_name("index.sqlite.discarded"))
        _remove_journals(self.path)

    # -------------------------------------------------------------- reading
    @staticmethod
    def meta(conn: sqlite3.Connection) -> dict[str, Any]:
        return {key: json.loads(value) for key, value in conn.execute("SELECT key, value FROM meta")}

    @staticmethod
    def find(conn: sqlite3.Connection, request: _Request) -> _Stored:
        """Look up every (id, key) of ``request`` with one join, plus the shard table, in one snapshot."""
        stored = _Stored.nothing(len(request))
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
        stored.shards = {shard: _ShardInfo(file, n, sha) for shard, file, n, sha in shard_rows}
        for pos, shard, row, failure in rows:
            stored.found[pos] = True
            if failure is None:
                stored.shard[pos], stored.row[pos] = shard, row
            else:
                stored.failures[pos] = failure
        return stored

    def gather(self, stored: _Stored, out: np.ndarray) -> dict[int, str]:
        """Copy stored vectors into ``out``; returns the shards that could not be used, with why."""
        bad: dict[int, str] = {}
        for shard in np.unique(stored.shard[stored.shard >= 0]).tolist():
            positions = np.flatnonzero(stored.shard == shard)
            try:
                out[positions] = self._load_shard(stored.shards, shard)[stored.row[positions]]
            except _Unusable as exc:
                bad[shard] = str(exc)
            except IndexError:
                bad[shard] = "the index points at rows past its end"
        return bad

    def _load_shard(self, shards: dict[int, _ShardInfo], shard: int) -> np.ndarray:
        """The shard as a read-only memory map, after checking its checksum (once per file version)."""
        info = shards.get(shard)
        if info is None:
            raise _Unusable("it is not in the shard table")
        path = self.folder / Path(info.file).name
        try:
            st = path.stat()
            version = (str(path), st.st_size, st.st_mtime_ns)
            if _VERIFIED.get(version) != info.sha256:
                if sha256_file(path) != info.sha256:
                    raise _Unusable("it does not match its checksum (truncated or edited)")
                if _settled(st.st_mtime_ns):
                    _VERIFIED[version] = info.sha256
            vectors = np.load(path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError as exc:
            raise _Unusable("the file is missing") from exc
        except (OSError, ValueError) as exc:
            raise _Unusable(f"it cannot be read ({exc})") from exc
        if vectors.dtype != np.float32 or vectors.shape != (info.rows, self.dim):
            raise _Unusable(f"it holds {vectors.dtype} {vectors.shape}, not float32 ({info.rows}, {self.dim})")
        return vectors

    # -------------------------------------------------------------- writing (under the lock)
    @staticmethod
    def save_model_meta(conn: sqlite3.Connection, model_meta: dict[str, Any]) -> None:
        with _transaction(conn):
            _set_meta(conn, {"model": model_meta})

    def write_chunk(self, conn: sqlite3.Connection, request: _Request, positions: np.ndarray,
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
        with _transaction(conn):
            if info is not None:
                conn.execute("INSERT INTO shards VALUES (?, ?, ?, ?, ?)", (shard, *info, _now()))
                _set_meta(conn, {"last_shard": shard})
            conn.executemany("INSERT OR REPLACE INTO items VALUES (?, ?, ?, ?, ?)", items)
            _set_meta(conn, {"updated_at": _now()})

    def _write_shard(self, shard: int, vectors: np.ndarray) -> _ShardInfo:
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(vectors, dtype=np.float32), allow_pickle=False)
        data = buffer.getvalue()
        path = atomic_write(self.folder / f"shard-{shard:06d}.npy", lambda f: f.write(data))
        return _ShardInfo(path.name, len(vectors), hashlib.sha256(data).hexdigest())

    def drop_shard(self, conn: sqlite3.Connection, shard: int, why: str) -> str:
        """Forget a damaged shard and its rows (their products become missing); returns the repair note."""
        with _transaction(conn):
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
        with _transaction(conn):
            conn.execute("DELETE FROM shards WHERE shard NOT IN (SELECT shard FROM items WHERE shard IS NOT NULL)")
        indexed = {file for (file,) in conn.execute("SELECT file FROM shards")}
        leftovers = [p for p in self.folder.iterdir()
                     if p.name.startswith(("shard-", ".shard-")) and p.name not in indexed]
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            log.info("%s embeddings (%s): deleted %d unused shard file(s)", self.arm, self.model_id, len(leftovers))


class _DigestCache:
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
        def insert(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.executemany("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?)", rows)

        if rows:
            self._run(insert)

    def _run(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        try:
            return self._once(work)
        except sqlite3.DatabaseError as exc:
            log.warning("the file digest cache %s is damaged (%s); starting a new one", self.path, exc)
        self.path.unlink(missing_ok=True)
        _remove_journals(self.path)
        return self._once(work)

    def _once(self, work: Callable[[sqlite3.Connection], _T]) -> _T:
        with contextlib.closing(_connect(self.path)) as conn:
            conn.execute(self._SCHEMA)
            return work(conn)


# ---------------------------------------------------------------------- helpers
def _connect(path: Path, readonly: bool = False) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit, see :func:`_transaction`)."""
    if readonly:
        uri = f"{path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, timeout=_BUSY_TIMEOUT_S, isolation_level=None)
    return sqlite3.connect(path, timeout=_BUSY_TIMEOUT_S, isolation_level=None)


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    """One write transaction: committed when the block ends, rolled back if it raises."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _set_meta(conn: sqlite3.Connection, values: dict[str, Any]) -> None:
    conn.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                     [(key, dumps(value, indent=None)) for key, value in values.items()])


def _remove_journals(db_path: Path) -> None:
    """Delete SQLite's side files of a database that is being replaced (they must not meet the new one)."""
    for suffix in ("-journal", "-wal", "-shm"):
        db_path.with_name(db_path.name + suffix).unlink(missing_ok=True)


def _summarize(folder: Path) -> dict[str, Any]:
    """The :meth:`EmbeddingStore.entries` row of one model folder."""
    summary: dict[str, Any] = {
        "arm": folder.parent.name,
        "path": str(folder),
        "bytes": sum(p.stat().st_size for p in folder.iterdir() if p.is_file()),
    }
    try:
        with contextlib.closing(_connect(folder / "index.sqlite", readonly=True)) as conn:
            meta = _ModelIndex.meta(conn)
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


def _checked(result: tuple[np.ndarray, dict[int, str]], n: int, dim: int) -> tuple[np.ndarray, dict[int, str]]:
    """``compute``'s output as a float32 copy with failed rows zeroed, after checking its shape."""
    raw_vectors, raw_failures = result
    vectors = np.array(raw_vectors, dtype=np.float32)
    if vectors.shape != (n, dim):
        raise ValueError(f"compute returned vectors of shape {vectors.shape} for {n} products; expected ({n}, {dim})")
    failures = {int(j): str(why) for j, why in (raw_failures or {}).items()}
    outside = [j for j in failures if not 0 <= j < n]
    if outside:
        raise ValueError(f"compute reported failures at {outside[:5]}, outside its chunk of {n}")
    vectors[list(failures)] = 0.0
    return vectors, failures


def _why_computed(repairs: list[str], force: bool, missing: int, n: int) -> str:
    reasons = list(repairs)
    if force:
        reasons.append("recompute forced")
    elif missing:
        reasons.append(f"{missing} of {n} products had no stored vector for their current input")
    return "; ".join(reasons)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")


def _hash_files(names: list[str], progress: bool) -> dict[str, str]:
    """Digests of ``names``, read on a small thread pool."""
    if not names:
        return {}
    digests = {}
    with (
        ThreadPoolExecutor(min(_HASH_THREADS, len(names))) as pool,
        tqdm(total=len(names), desc="hashing files", unit="file", disable=not progress) as bar,
    ):
        for name, digest in zip(names, pool.map(_hash_file, names)):
            digests[name] = digest
            bar.update()
    return digests


def _hash_file(name: str) -> str:
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


def _settled(mtime_ns: int) -> bool:
    """Whether a file is old enough that a same-size rewrite would change its mtime (safe to cache)."""
    return time.time_ns() - mtime_ns > _SETTLE_NS


def _slug(model_id: str) -> str:
    """A folder name for a model id: readable, and unique thanks to a short hash."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-.")[:60]
    return f"{readable}-{hashlib.sha256(model_id.encode('utf-8', 'surrogatepass')).hexdigest()[:8]}"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _pause_for_tests() -> None:
    """Test hook: sleep ``$PRODREC_SLOW_CHUNKS`` seconds after each saved chunk, to land a kill -9 mid-run."""
    seconds = float(os.environ.get("PRODREC_SLOW_CHUNKS") or 0)
    if seconds > 0:
        time.sleep(seconds)
