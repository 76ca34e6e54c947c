"""The interface every index kind implements, and what they share: input checks, faiss, files, recall."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ...core import params as _params
from ...core.errors import ConfigError, MissingDependency, RankingError
from ...core.io import read_json_object, write_json
from ..topk import blocked_search, order_by_score, select_topk

__all__ = ["CALIBRATION_K", "CALIBRATION_QUERIES", "CHUNK_ROWS", "DEEP_EFFORT", "DEEP_LIST", "FORMAT_VERSION",
           "SideBySide", "VectorIndex", "as_queries", "as_vectors", "exact_search", "faiss_version",
           "inner_products_by_idx", "load_index", "recall_at_k"]


#: Calibration of nprobe / efSearch: this many sample rows as queries, recall@CALIBRATION_K.
CALIBRATION_QUERIES = 256
CALIBRATION_K = 5
#: Lists longer than this are "deep" (reciprocal-rank fusion reads each arm's top 50): the calibrated
#: nprobe / efSearch targets top-:data:`CALIBRATION_K` recall, so :meth:`VectorIndex.effort_for` asks
#: :data:`DEEP_EFFORT` times the effort for them.
DEEP_LIST = 10
DEEP_EFFORT = 4
#: Rows per chunk for finiteness checks and for adding to faiss (bounded temporaries, progress steps).
CHUNK_ROWS = 65_536
#: Bytes of rows :func:`exact_search` puts side by side at a time, with their scores.
SIDE_BY_SIDE_BYTES = 8 * 2**20
FORMAT_VERSION = 1


def faiss_module() -> Any:
    """The faiss module, imported on first use."""
    try:
        import faiss
    except ImportError as exc:  # faiss-cpu is a dependency of the package, but may be missing
        raise MissingDependency(
            "approximate nearest-neighbour indexes need FAISS: pip install faiss-cpu"
        ) from exc
    return faiss


def faiss_version() -> str | None:
    """The installed faiss version, or None when faiss is missing (without importing it needlessly)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        return version("faiss-cpu")
    except PackageNotFoundError:
        try:
            return str(faiss_module().__version__)
        except MissingDependency:
            return None


# --------------------------------------------------------------------------------------------- checks


def _check_finite(x: np.ndarray, what: str) -> None:
    """Refuse rows holding NaN or inf (checked in chunks: no temporary the size of ``x``)."""
    bad_parts = []
    for s in range(0, len(x), CHUNK_ROWS):
        ok = np.isfinite(x[s : s + CHUNK_ROWS]).all(axis=1)
        if not ok.all():
            bad_parts.append(np.flatnonzero(~ok) + s)
    if bad_parts:
        bad = np.concatenate(bad_parts)
        raise RankingError(f"{bad.size} row(s) of the {what} contain NaN or inf, e.g. rows {bad[:5].tolist()}")


class SideBySide:
    """Row-aligned float32 arrays [n, d_a] read as one matrix [n, sum of d_a] (a fused index's rows: the arms
    side by side) without holding all of it: ``x[rows]`` (a slice or positions) puts those rows side by side,
    ``np.asarray(x)`` the whole. An index built from it adds and trains chunk by chunk and calibrates
    against :func:`exact_search`, so building an IVF index over several arms holds no concatenated copy of
    them (a copy of the stored vectors: 1.46 GB at 1,000,000 x 384)."""

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, parts: list[np.ndarray]) -> None:
        self.parts = [as_vectors(p) for p in parts]
        if not self.parts or len({len(p) for p in self.parts}) != 1:
            raise RankingError(f"side by side needs one or more arrays of as many rows; got "
                               f"{[p.shape for p in self.parts]}")
        self.shape = (len(self.parts[0]), sum(p.shape[1] for p in self.parts))

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: Any) -> np.ndarray:
        return np.hstack([p[rows] for p in self.parts])

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        x = np.hstack(self.parts)
        return x if dtype is None else x.astype(dtype, copy=False)

    @property
    def nbytes(self) -> int:
        return sum(p.nbytes for p in self.parts)


def exact_search(x: np.ndarray | SideBySide, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of ``x`` [n, d] (an array, or arrays :class:`SideBySide`) for ``queries`` [m, d]:
    positions and scores, best first, equal scores by smaller position. Side by side, the rows are scored
    a chunk at a time (the chunk, its scores and the top-k selection's copy of them within
    :data:`SIDE_BY_SIDE_BYTES`) and each chunk's best kept."""
    if not isinstance(x, SideBySide):
        return blocked_search(x, k, queries=queries)
    step = max(1, SIDE_BY_SIDE_BYTES // (4 * (x.shape[1] + 2 * len(queries))))  # rows, their scores, a copy
    pos = np.empty((len(queries), 0), dtype=np.intp)
    val = np.empty((len(queries), 0), dtype=np.float32)
    for s in range(0, len(x), step):
        scores = queries @ x[s : s + step].T
        p, v = select_topk(scores, min(k, scores.shape[1]))
        pos, val = order_by_score(np.concatenate([pos, p + s], axis=1), np.concatenate([val, v], axis=1))
        pos, val = pos[:, :k], val[:, :k]
    return pos, val


def inner_products_by_idx(x: np.ndarray | SideBySide, queries: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Inner products [m, c] (float32) of each query ``queries`` [m, d] with its rows ``pos`` [m, c] of ``x``
    (an array, or arrays :class:`SideBySide`: the sum of each part's products with the query's columns), pair
    by pair: each value depends on the two vectors only (FAISS's ``fvec_inner_products_by_idx``, no gathered
    copy of the rows); ``pos < 0`` gives ``-inf``."""
    m, c = pos.shape
    out = np.zeros((m, c), dtype=np.float32)
    if m == 0 or c == 0:
        return out
    faiss = faiss_module()
    ids = np.ascontiguousarray(np.where(pos < 0, 0, pos), dtype=np.int64)
    parts = x.parts if isinstance(x, SideBySide) else [x]
    part = np.empty((m, c), dtype=np.float32) if len(parts) > 1 else out
    col = 0
    for rows in parts:
        d = rows.shape[1]
        q = np.ascontiguousarray(queries[:, col : col + d], dtype=np.float32)
        faiss.fvec_inner_products_by_idx(faiss.swig_ptr(part), faiss.swig_ptr(q), faiss.swig_ptr(rows),
                                         faiss.swig_ptr(ids), d, m, c)
        if part is not out:
            out += part
        col += d
    out[pos < 0] = -np.inf
    return out


def as_vectors(vectors: Any, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [n, d] array (no copy when it already is one), finite; a
    :class:`SideBySide` as it is (its arrays were checked when it was made)."""
    if isinstance(vectors, SideBySide):
        return vectors  # type: ignore[return-value]
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise RankingError(f"{what} must be a non-empty 2-d array [n, dim]; got shape {x.shape}")
    _check_finite(x, what)
    return x


def as_queries(queries: Any, dim: int) -> np.ndarray:
    """``queries`` [m, dim] (or one query [dim]) as a C-contiguous float32 array, finite."""
    q = np.asarray(queries, dtype=np.float32)
    if q.ndim == 1:
        q = q[None, :]
    if q.ndim != 2 or q.shape[1] != dim:
        raise RankingError(f"queries must be [m, {dim}] (or one query of {dim} values); got shape {q.shape}")
    q = np.ascontiguousarray(q)
    _check_finite(q, "queries")
    return q


def _check_k(k: Any, ntotal: int) -> int:
    k = _params.check_k(k)
    if k > ntotal:
        raise RankingError(f"k={k} but the index holds only {ntotal} vectors; choose k <= {ntotal}")
    return k


def recall_at_k(approx_pos: np.ndarray, exact_pos: np.ndarray) -> float:
    """Mean over queries of |approx top-k ∩ exact top-k| / k, with k = ``exact_pos.shape[1]``.

    ``approx_pos`` [m, >= k] (only its first k columns count; -1 never matches), ``exact_pos`` [m, k].
    """
    a, e = np.asarray(approx_pos), np.asarray(exact_pos)
    if a.ndim != 2 or e.ndim != 2 or len(a) != len(e) or a.shape[1] < e.shape[1]:
        raise ConfigError(f"need approx [m, >= k] and exact [m, k] positions; got {a.shape} and {e.shape}")
    k = e.shape[1]
    if len(e) == 0 or k == 0:
        return float("nan")
    a = a[:, :k]
    hits = ((a[:, :, None] == e[:, None, :]) & (a[:, :, None] >= 0)).any(axis=2).sum()
    return float(hits) / (len(e) * k)


# -------------------------------------------------------------------------------------------- interface

#: kind -> class, filled as the kinds are defined (:func:`load_index` reads it).
KINDS: dict[str, type[VectorIndex]] = {}


class VectorIndex:
    """The interface of every index: ``search`` by inner product, ``save`` / ``load`` a folder.

    Attributes
    ----------
    kind : str
        ``"exact"``, ``"ivf"`` or ``"hnsw"``.
    params : dict
        Every parameter the index was built and searches with (calibrated values included). The search
        effort (``params["nprobe"]`` / ``params["efSearch"]``) is read at each search, so setting it
        trades speed for recall without a rebuild; for one search, pass ``effort`` instead.
    ntotal, dim : int
        Number and dimension of the indexed vectors.
    """

    kind: ClassVar[str] = ""
    params: dict[str, Any]
    ntotal: int
    dim: int
    #: How the tuned search parameter (nprobe / efSearch) was chosen; None when nothing was calibrated.
    calibration: dict[str, Any] | None = None

    def __init_subclass__(cls, kind: str = "", **kwargs: Any) -> None:
        """A subclass naming its ``kind`` (``class ExactIndex(VectorIndex, kind="exact")``) is a concrete kind:
        :func:`load_index` finds it by that name."""
        super().__init_subclass__(**kwargs)
        if kind:
            cls.kind = kind
            KINDS[kind] = cls

    def search(self, queries: np.ndarray, k: int, *, effort: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product for each query.

        Parameters
        ----------
        queries : array [m, dim] (or [dim] for one query)
            Float vectors of any norm (finite).
        k : int
            1 <= k <= ntotal.
        effort : int
            Multiplies the approximate kinds' search effort (``nprobe`` / ``efSearch``, capped at an
            exhaustive search) for this call only: ``params`` are not changed. :meth:`effort_for` says
            what a list of k wants. Exact search ignores it.

        Returns
        -------
        positions : intp [m, k]
            Rows of the indexed vectors, best first; equal scores by smaller position.
        scores : float32 [m, k]
            Their inner products with the query.
        """
        q = as_queries(queries, self.dim)
        k = _check_k(k, self.ntotal)
        effort = _params.check_positive_int("effort", effort)
        if len(q) == 0:
            return np.zeros((0, k), dtype=np.intp), np.zeros((0, k), dtype=np.float32)
        return self._search(q, k, effort)

    @staticmethod
    def effort_for(k: int) -> int:
        """The ``effort`` a search for k neighbours wants: 1 up to :data:`DEEP_LIST`, :data:`DEEP_EFFORT`
        beyond (the search effort was calibrated for top-:data:`CALIBRATION_K` lists)."""
        return DEEP_EFFORT if k > DEEP_LIST else 1

    def _search(self, q: np.ndarray, k: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def attach(self, vectors: np.ndarray | SideBySide, *, checked: bool = False) -> VectorIndex:
        """Give the index the rows it was built over (same order; not copied) and return it. Kinds that keep
        the vectors themselves need nothing; an IVF index with 8-bit codes (``codes="sq8"``) scores its
        candidates exactly with them, so one loaded from a folder needs them (:func:`load_index` with
        ``vectors``; :class:`IndexCache` passes them). ``checked``: the rows already went through
        :func:`as_vectors` (not scanned again)."""
        return self

    @property
    def nbytes(self) -> int:
        """Memory the index holds (vectors or codes, links, ids, centroids), in bytes; not the rows given to
        :meth:`attach`."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.ntotal

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.ntotal} x {self.dim}, {self.params})"

    def meta(self) -> dict[str, Any]:
        """What ``meta.json`` records about this index."""
        return {"format": FORMAT_VERSION, "kind": self.kind, "params": self.params, "n": self.ntotal,
                "dim": self.dim, "nbytes": self.nbytes, "calibration": self.calibration,
                "faiss_version": faiss_version() if self.kind != "exact" else None}

    def save(self, folder: str | os.PathLike[str], extra: Mapping[str, Any] | None = None) -> Path:
        """Write the index into ``folder`` (created): its data file, then ``meta.json`` (``extra`` merged in).

        Each file is written atomically; ``meta.json`` last, so a folder with a readable ``meta.json``
        holds a complete index. :class:`~prodrec.rank.index.IndexCache` also swaps whole folders atomically.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_data(folder)
        write_json(folder / "meta.json", {**self.meta(), **dict(extra or {})})
        return folder

    def _save_data(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def _load_data(cls, folder: Path, meta: Mapping[str, Any]) -> VectorIndex:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: str | os.PathLike[str], vectors: np.ndarray | SideBySide | None = None) -> VectorIndex:
        """The index saved in ``folder`` (``vectors``: as for :func:`load_index`); on a subclass, it must be of
        that kind."""
        index = load_index(folder, vectors)
        if not isinstance(index, cls):
            raise ConfigError(f"{folder} holds a {index.kind} index, not {cls.kind or 'an index'}")
        return index


def load_index(folder: str | os.PathLike[str], vectors: np.ndarray | SideBySide | None = None, *,
               checked: bool = False) -> VectorIndex:
    """The index saved by :meth:`VectorIndex.save` in ``folder``; ``vectors``: the rows it was built over, for
    the kinds that score with them (``checked``: see :meth:`VectorIndex.attach`)."""
    folder = Path(folder)
    try:
        meta = read_json_object(folder / "meta.json")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no readable index in {folder}: {exc}") from exc
    kind = meta.get("kind")
    if kind not in KINDS:
        raise ConfigError(f"{folder}/meta.json names index kind {kind!r}; known: {', '.join(KINDS)}")
    index = KINDS[kind]._load_data(folder, meta)
    if (index.ntotal, index.dim) != (meta.get("n"), meta.get("dim")):
        raise ConfigError(f"{folder}: the index holds {index.ntotal} x {index.dim} vectors but meta.json says "
                          f"{meta.get('n')} x {meta.get('dim')}")
    return index if vectors is None else index.attach(vectors, checked=checked)
