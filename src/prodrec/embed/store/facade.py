"""The public face of the per-product embedding store: :class:`EmbeddingStore` (see :mod:`prodrec.embed.store`)."""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ...core.errors import ConfigError, StoreError
from ...core.io import file_lock
from ..vectors import Embeddings
from .digests import DigestCache, file_digests
from .index import ModelIndex, Request, Stored, summarize

log = logging.getLogger(__name__)

ComputeFn = Callable[[np.ndarray], tuple[np.ndarray, dict[int, str]]]
"""``compute(positions) -> (float32 vectors [len(positions), dim], {local index: failure reason})``."""


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
        self._digest_cache = DigestCache(self.root / "files.sqlite")

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
            (:class:`prodrec.embed.ray_engine.RayCompute`) gets ``prepare(missing)`` once, before ``meta`` and the
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
        request = Request.of(ids, keys)
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
        request = Request.of(ids, keys)
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
        return file_digests(self._digest_cache, paths, progress)

    def entries(self) -> list[dict[str, Any]]:
        """One summary per stored (arm, model), for listings.

        Each has ``arm``, ``model_id``, ``dim``, ``products`` (distinct ids with a vector), ``vectors``
        (stored rows, older inputs included), ``failures``, ``shards``, ``bytes`` on disk, ``created_at``,
        ``updated_at`` and ``path``; an unreadable index gives ``arm``, ``path``, ``bytes`` and ``error``.
        """
        return [summarize(path.parent) for path in sorted(self.root.glob("*/*/index.sqlite"))]

    # ------------------------------------------------------------------ internals
    def _index(self, arm: str, model_id: str, dim: int | None) -> ModelIndex:
        return ModelIndex.at(self.root, arm, model_id, dim)

    def _fill(
        self,
        index: ModelIndex,
        request: Request,
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
            stored = Stored.nothing(n) if force else index.find(conn, request)
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
    def _compute_chunk(index: ModelIndex, conn: sqlite3.Connection, request: Request, positions: np.ndarray,
                       compute: ComputeFn, out: np.ndarray) -> dict[int, str]:
        """Compute, store and copy into ``out`` one chunk; returns its failures by position (a resume point)."""
        vectors, failures = _checked(compute(positions.copy()), len(positions), index.dim)
        index.write_chunk(conn, request, positions, vectors, failures)
        out[positions] = vectors
        return {int(positions[j]): why for j, why in failures.items()}

    def _result(
        self,
        index: ModelIndex,
        request: Request,
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


def _pause_for_tests() -> None:
    """Test hook: sleep ``$PRODREC_SLOW_CHUNKS`` seconds after each saved chunk, to land a kill -9 mid-run."""
    seconds = float(os.environ.get("PRODREC_SLOW_CHUNKS") or 0)
    if seconds > 0:
        time.sleep(seconds)
