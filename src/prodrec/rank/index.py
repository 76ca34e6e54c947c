"""Nearest-neighbour indexes by inner product: one interface for exact search and FAISS's approximate ones.

Every kind ranks rows by inner product with the query (``METRIC_INNER_PRODUCT``) and accepts queries of
any norm, so the same index serves cosine search over unit vectors and maximum-inner-product search over
concatenated per-arm unit vectors with weighted (non-unit) queries, as fused modes need. Results are
positions into the indexed rows, best first; ties (equal scores) are ordered by smaller position.

Kinds, with figures from ``python -m benchmarks --only ann`` (benchmarks/ann.py: 2 shared cores, seeded
clustered unit vectors, 1,000 held-out queries, recall@5 against exact; 1M = 1,000,000 x 384 and
200k = 200,000 x 1280):

``exact``
    Brute force with numpy BLAS (a matrix-vector product for one query, blocks of a matrix product for
    many), exact top-k with ties broken by position. No build, no extra memory (a float32 C-contiguous
    array is used as it is). Every query reads every vector: 75 ms per query at 1M, 36 ms at 200k;
    batched, 48 and 179 queries/s.
``ivf``
    FAISS ``IndexIVFFlat``: a seeded spherical k-means splits the rows into ``nlist`` cells
    (``nlist`` ~ ``IVF_NLIST_PER_SQRT_N * sqrt(n)``, trained on a capped seeded sample), a query scans the
    ``nprobe`` cells whose centroids score best. Vectors are stored uncompressed (raw vectors + 8-byte ids
    + centroids, 1.01x the raw vectors; the process kept 1.37x as its lists grow), so no product
    quantisation is needed. Build 24 s (1M) / 10 s (200k); 0.18 / 0.28 ms per query (420x / 128x
    exact), recall@5 0.973 / 0.992 at the calibrated nprobe 1.
``hnsw``
    FAISS ``IndexHNSWFlat``: a navigable small-world graph (``M`` links per node) searched greedily with
    a beam of ``efSearch``; ~``8 * M`` bytes of links per vector (1.18x / 1.05x the raw vectors). Build
    133 s (1M) / 44 s (200k); 0.19 ms per query at both, recall@5 0.947 / 0.953 at the calibrated
    efSearch 32 / 16 (0.965 / 0.977 at twice that). Calibrating with indexed rows is optimistic for
    queries that are not in the graph (0.963 on rows vs 0.947 held out at 1M), and on a flat mixture of
    4,000 mutually orthogonal clusters (efConstruction 40) recall stalled at 0.93 even at efSearch
    2048, where ivf reached 0.997.
``auto``
    ``exact`` below :data:`AUTO_EXACT_MAX` (50,000) vectors, :data:`AUTO_APPROX_KIND` (``ivf``) from
    there up.

Which to pick: ``exact`` when results must be exact (evaluation, reproducing the paper's figures) or
below ~50,000 vectors, where it answers in < 10 ms at up to 1280 dims; ``ivf`` for large catalogs: the
fastest build (rebuild freely when the catalog changes), memory ~ the raw vectors, and a calibration that
always reaches its target; ``hnsw`` when the graph build (minutes per million vectors) is paid once and
cached and the data is not one of tightly separated clusters.

Unless given, ``nprobe`` (ivf) and ``efSearch`` (hnsw) are calibrated at build time: the smallest value
whose recall@5 reaches ``target_recall`` (default 0.95) against :class:`ExactIndex` on 256 seeded
sample rows used as queries (their own row left out, as in recommending), or on ``calibration_queries``
when given. Fused (maximum inner product) indexes should be calibrated with weighted queries: with
arm weights 0.8 : 0.2, hnsw calibrated on rows gave recall@5 0.943, on weighted queries 0.967
(efSearch 16 -> 24); in the tests' set of two independent arms ivf needed 4x the nprobe. The chosen
value is kept in ``index.params`` (and can be changed there: it is read at each search).

:class:`IndexCache` keeps built indexes beside the embedding store and reloads one only when its kind,
parameters, shape and the caller's fingerprint all match. FAISS is imported only when an approximate
index is built or loaded.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..core import params as _params
from ..core.io import atomic_write, file_lock, read_json_object, write_json
from ..core.errors import ConfigError, MissingDependency, RankingError
from ..core.vocab import AUTO_APPROX_KIND, AUTO_EXACT_MAX, INDEX_KINDS, IndexKind
from .topk import BLOCK_BYTES, select_topk

__all__ = [
    "AUTO_APPROX_KIND",
    "AUTO_EXACT_MAX",
    "INDEX_KINDS",
    "ExactIndex",
    "HNSWIndex",
    "IVFIndex",
    "IndexCache",
    "IndexKind",
    "VectorIndex",
    "build_index",
    "load_index",
    "recall_at_k",
    "resolve_kind",
]

log = logging.getLogger(__name__)


#: Default ``nlist`` per sqrt(n) for ivf; see :func:`default_nlist`. A query costs ~``nlist * d`` (ranking
#: the centroids) + ``nprobe * n / nlist * d`` (scanning cells), least at ``nlist ~ sqrt(nprobe * n)``;
#: calibrated nprobe was 1-12 on our sets, hence 2 sqrt(n) rather than faiss's 4-16 sqrt(n) (which suits
#: larger nprobe). It also halves k-means and assignment time: building 1,000,000 x 384 (an earlier,
#: low-rank mixture) took 129 s with nlist 2000 and 240 s with 4000 on 2 shared cores.
IVF_NLIST_PER_SQRT_N = 2
#: k-means trains on at most this many points per centroid (faiss warns below 39).
IVF_TRAIN_PER_LIST = 40
#: Calibration of nprobe / efSearch: this many sample rows as queries, recall@CALIBRATION_K.
CALIBRATION_QUERIES = 256
CALIBRATION_K = 5
#: Rows per chunk for finiteness checks and for adding to faiss (bounded temporaries, progress steps).
CHUNK_ROWS = 65_536
FORMAT_VERSION = 1

_DEFAULTS: dict[str, dict[str, Any]] = {
    "exact": {},
    # niter: 10 k-means iterations, faiss's default for IVF training.
    "ivf": {"nlist": None, "nprobe": None, "niter": 10, "train_size": None, "target_recall": 0.95},
    # M=32, efConstruction=80, measured on 1,000,000 x 384 clustered unit vectors (2 shared cores): with
    # faiss's default efConstruction 40 (build 88 s) recall@5 stalled at 0.966 even at efSearch 1024;
    # 80 (125 s) reached 0.957 at efSearch 32 and 0.976 at 64; 160 (520 s) only 0.964 / 0.979. M=32
    # beat M=16 at equal efSearch on 100,000 x 384 for 256 bytes of links per vector.
    "hnsw": {"M": 32, "efConstruction": 80, "efSearch": None, "target_recall": 0.95},
}
_IVF_NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_HNSW_EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)


def _faiss() -> Any:
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
            return str(_faiss().__version__)
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


def as_vectors(vectors: Any, what: str = "vectors") -> np.ndarray:
    """``vectors`` as a C-contiguous float32 [n, d] array (no copy when it already is one), finite."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    if x.ndim != 2 or x.shape[0] < 1 or x.shape[1] < 1:
        raise RankingError(f"{what} must be a non-empty 2-d array [n, dim]; got shape {x.shape}")
    _check_finite(x, what)
    return x


def _as_queries(queries: Any, dim: int) -> np.ndarray:
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


def check_kind(kind: Any) -> str:
    """``kind`` if it is one of :data:`INDEX_KINDS`, else :class:`ConfigError` naming them."""
    return _params.check_index_kind(kind)


def resolve_kind(kind: str, n: int) -> str:
    """The concrete kind for ``kind`` and ``n`` vectors: ``auto`` becomes ``exact`` below
    :data:`AUTO_EXACT_MAX`, else :data:`AUTO_APPROX_KIND`."""
    kind = check_kind(kind)
    if kind != "auto":
        return kind
    return "exact" if n < AUTO_EXACT_MAX else AUTO_APPROX_KIND


def check_params(kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` of a concrete ``kind`` with the defaults filled in; unknown names and bad values raise
    :class:`ConfigError` naming the valid ones. ``None`` values mean "choose for me"."""
    kind = check_kind(kind)
    if kind == "auto":
        raise ConfigError("resolve 'auto' to a concrete kind first (see resolve_kind)")
    out = dict(_DEFAULTS[kind])
    given = dict(params or {})
    unknown = sorted(set(given) - set(out))
    if unknown:
        valid = ", ".join(out) if out else "none"
        raise ConfigError(f"unknown parameter(s) {unknown} for a {kind} index; valid: {valid}")
    for name, value in given.items():
        if value is None:
            continue
        if name == "target_recall":
            try:
                f = float(value)
            except (TypeError, ValueError):
                f = float("nan")
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"target_recall must be a number within (0, 1], got {value!r}")
            out[name] = f
        else:
            out[name] = _params.check_positive_int(f"the {kind} parameter {name}", value)
    return out


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: ``IVF_NLIST_PER_SQRT_N * sqrt(n)``, at most ``n / 39`` (so k-means
    has at least 39 points per centroid), at least 1."""
    return int(max(1, min(round(IVF_NLIST_PER_SQRT_N * math.sqrt(n)), n // 39)))


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


def _order_by_score(pos: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row sorted by score descending, then position ascending (-1 entries last)."""
    pos = pos.astype(np.intp, copy=False)
    scores = scores.astype(np.float32, copy=False)
    key = np.where(pos < 0, -np.inf, scores)
    order = np.lexsort((np.where(pos < 0, np.iinfo(np.intp).max, pos), -key), axis=1)
    return np.take_along_axis(pos, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _drop_self(pos: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """The first k entries of each row of ``pos`` that are not the query's own row."""
    is_self = pos == rows[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")  # the query's own row (if present) moves last
    return np.take_along_axis(pos, order, axis=1)[:, :k]


def _digest(x: np.ndarray) -> str:
    """A cheap content check of [n, d] vectors: sha256 of up to 64 evenly spaced rows and the shape."""
    rows = np.unique(np.linspace(0, len(x) - 1, num=min(64, len(x))).astype(np.intp))
    h = hashlib.sha256(repr(x.shape).encode())
    h.update(np.ascontiguousarray(x[rows]).tobytes())
    return h.hexdigest()[:16]


# -------------------------------------------------------------------------------------------- indexes


class VectorIndex:
    """The interface of every index: ``search`` by inner product, ``save`` / ``load`` a folder.

    Attributes
    ----------
    kind : str
        ``"exact"``, ``"ivf"`` or ``"hnsw"``.
    params : dict
        Every parameter the index was built and searches with (calibrated values included). The search
        effort (``params["nprobe"]`` / ``params["efSearch"]``) is read at each search, so setting it
        trades speed for recall without a rebuild.
    ntotal, dim : int
        Number and dimension of the indexed vectors.
    """

    kind: ClassVar[str] = ""
    params: dict[str, Any]
    ntotal: int
    dim: int
    #: How the tuned search parameter (nprobe / efSearch) was chosen; None when nothing was calibrated.
    calibration: dict[str, Any] | None = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k rows by inner product for each query.

        Parameters
        ----------
        queries : array [m, dim] (or [dim] for one query)
            Float vectors of any norm (finite).
        k : int
            1 <= k <= ntotal.

        Returns
        -------
        positions : intp [m, k]
            Rows of the indexed vectors, best first; equal scores by smaller position.
        scores : float32 [m, k]
            Their inner products with the query.
        """
        q = _as_queries(queries, self.dim)
        k = _check_k(k, self.ntotal)
        if len(q) == 0:
            return np.zeros((0, k), dtype=np.intp), np.zeros((0, k), dtype=np.float32)
        return self._search(q, k)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    @property
    def nbytes(self) -> int:
        """Memory the index holds (vectors, links, ids, centroids), in bytes."""
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
        holds a complete index. :class:`IndexCache` also swaps whole folders atomically.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_data(folder)
        write_json(folder / "meta.json", {**self.meta(), **dict(extra or {})})
        return folder

    def _save_data(self, folder: Path) -> None:
        raise NotImplementedError

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> VectorIndex:
        """The index saved in ``folder``; on a subclass, it must be of that kind."""
        index = load_index(folder)
        if not isinstance(index, cls):
            raise ConfigError(f"{folder} holds a {index.kind} index, not {cls.kind or 'an index'}")
        return index


class ExactIndex(VectorIndex):
    """Exact top-k by inner product with numpy BLAS; ties by smaller position.

    numpy rather than faiss ``IndexFlatIP``: measured on this project's 2 cores (shared, noisy), one query at
    1,000,000 x 384 took 0.23 s with numpy's matrix-vector product vs 0.54 s with ``faiss.knn`` (0.10 vs
    0.19 s at 200,000 x 1280), and batches of 256 queries 62 vs 102 ms per query (16 vs 28 ms at
    200,000 x 1280); numpy also needs no copy of the vectors and gives the exact tie order directly
    (:func:`prodrec.rank.select_topk`).
    """

    kind = "exact"

    def __init__(self, vectors: np.ndarray, params: Mapping[str, Any] | None = None) -> None:
        self._set(as_vectors(vectors), check_params("exact", params))

    def _set(self, x: np.ndarray, params: dict[str, Any]) -> None:
        self.params = params
        self.vectors = x
        self.ntotal, self.dim = x.shape

    @classmethod
    def _from_checked(cls, x: np.ndarray, params: dict[str, Any]) -> ExactIndex:
        out = cls.__new__(cls)
        out._set(x, params)
        return out

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes)

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if len(q) == 1:  # a matrix-vector product: faster than a 1-row matrix product
            return select_topk((self.vectors @ q[0])[None, :], k)
        block = max(1, BLOCK_BYTES // (4 * self.ntotal))
        pos = np.empty((len(q), k), dtype=np.intp)
        val = np.empty((len(q), k), dtype=np.float32)
        for b in range(0, len(q), block):
            pos[b : b + block], val[b : b + block] = select_topk(q[b : b + block] @ self.vectors.T, k)
        return pos, val

    def _save_data(self, folder: Path) -> None:
        atomic_write(folder / "vectors.npy", lambda f: np.save(f, self.vectors))

    @classmethod
    def _load_data(cls, folder: Path, meta: Mapping[str, Any]) -> ExactIndex:
        return cls(np.load(folder / "vectors.npy"), meta.get("params"))


class _FaissIndex(VectorIndex):
    """Shared parts of the faiss-backed kinds: search parameters, short-row repair, tie order, files."""

    _tuned: ClassVar[str] = ""  # the search parameter calibrated at build (nprobe / efSearch)
    _ladder: ClassVar[tuple[int, ...]] = ()

    def __init__(self, index: Any, params: Mapping[str, Any], calibration: Mapping[str, Any] | None = None) -> None:
        self._index = index
        self.params = dict(params)
        self.ntotal, self.dim = int(index.ntotal), int(index.d)
        self.calibration = dict(calibration) if calibration else None

    def _search_params(self, value: int, k: int) -> Any:
        raise NotImplementedError

    def _search_ladder(self) -> tuple[int, ...]:
        """The values calibration tries, in increasing effort."""
        return self._ladder

    def _raw_search(self, q: np.ndarray, k: int, value: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self._index.search(q, k, params=self._search_params(value, k))
        return pos, scores

    def _complete(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive search for rows the approximate search left short (fewer than k results)."""
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        pos, scores = self._raw_search(q, k, int(self.params[self._tuned]))
        short = np.flatnonzero((pos < 0).any(axis=1))
        if short.size:  # too few candidates in the probed cells / visited nodes: fall back for those rows
            pos[short], scores[short] = self._complete(q[short], k)
        return _order_by_score(pos, scores)

    def calibrate(self, vectors: np.ndarray, target: float | None = None, seed: int = 0,
                  queries: np.ndarray | None = None) -> tuple[int, float]:
        """Set the tuned search parameter (``nprobe`` / ``efSearch``) to the smallest value of its ladder
        whose recall@5 against exact search reaches ``target`` (default: ``params["target_recall"]``);
        the ladder's last value when none does.

        Parameters
        ----------
        vectors : array [ntotal, dim]
            The indexed vectors (the exact reference is computed over them).
        target : float, optional
        seed : int
            Seeds the sample of queries.
        queries : array [m, dim], optional
            Queries like the ones the index will serve (at most ``CALIBRATION_QUERIES`` of them, a
            seeded sample, are used). Default: a sample of the indexed rows, each query's own row left
            out of both result lists. Pass weighted queries for fused (maximum inner product) search:
            skewed arm weights can need several times the ``nprobe`` that the rows themselves need.

        Returns the value chosen and its measured recall; :attr:`calibration` records both.
        """
        x = as_vectors(vectors)
        if x.shape != (self.ntotal, self.dim):
            raise RankingError(f"calibrate with the indexed vectors {self.ntotal} x {self.dim}; got {x.shape}")
        target = float(self.params.get("target_recall", 0.95) if target is None else target)
        rng = np.random.default_rng(seed)
        if queries is None:
            source, n_q = "rows", len(x)
        else:
            qs = _as_queries(queries, self.dim)
            source, n_q = "given", len(qs)
        pick = np.sort(rng.choice(n_q, min(CALIBRATION_QUERIES, n_q), replace=False))
        rows = pick if queries is None else np.full(len(pick), -1)  # -1: no row of the query's own to drop
        q = np.ascontiguousarray(x[pick] if queries is None else qs[pick])
        k = min(CALIBRATION_K, len(x) - 1 if queries is None else len(x))
        value, recall = self._ladder[0], 1.0
        if k >= 1 and len(q):
            truth = _drop_self(ExactIndex._from_checked(x, {}).search(q, k + 1)[0], rows, k)
            for value in self._search_ladder():
                recall = recall_at_k(_drop_self(self._raw_search(q, k + 1, value)[0], rows, k), truth)
                if recall >= target:
                    break
        self.params[self._tuned] = int(value)
        self.calibration = {"param": self._tuned, "value": int(value), "recall": round(recall, 4),
                            "target": target, "queries": source, "n_queries": len(q), "k": k, "seed": int(seed)}
        if recall < target:
            log.warning("%s: %s=%d reaches only recall@%d %.3f < %.3f on sample rows (the ladder's end)",
                        self.kind, self._tuned, value, k, recall, target)
        return int(value), recall

    def _save_data(self, folder: Path) -> None:
        faiss = _faiss()
        final = folder / "index.faiss"
        tmp = folder / f".index.faiss.{uuid.uuid4().hex}.tmp"
        try:
            faiss.write_index(self._index, str(tmp))
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def _load_data(cls, folder: Path, meta: Mapping[str, Any]) -> _FaissIndex:
        index = _faiss().read_index(str(folder / "index.faiss"))
        return cls(index, dict(meta.get("params") or {}), meta.get("calibration"))


class IVFIndex(_FaissIndex):
    """FAISS ``IndexIVFFlat`` with ``METRIC_INNER_PRODUCT`` (spherical k-means cells, exact vectors).

    Build with :meth:`build`; ``params``: ``nlist`` (default :func:`default_nlist`), ``nprobe``
    (default: calibrated for ``target_recall``), ``niter`` (k-means iterations), ``train_size`` (k-means
    sample; default ``IVF_TRAIN_PER_LIST * nlist``), ``target_recall``.
    """

    kind = "ivf"
    _tuned = "nprobe"
    _ladder = _IVF_NPROBE_LADDER

    @classmethod
    def build(cls, vectors: np.ndarray, params: Mapping[str, Any] | None = None, seed: int = 0,
              progress: bool = False, calibration_queries: np.ndarray | None = None) -> IVFIndex:
        """Train on a seeded sample, add every row, calibrate ``nprobe`` unless given."""
        return cls._build(as_vectors(vectors), check_params("ivf", params), seed, progress, calibration_queries)

    @classmethod
    def _build(cls, x: np.ndarray, p: dict[str, Any], seed: int, progress: bool,
               calibration_queries: np.ndarray | None = None) -> IVFIndex:
        faiss = _faiss()
        n, d = x.shape
        nlist = p["nlist"] or default_nlist(n)
        if nlist > n:
            raise ConfigError(f"nlist={nlist} but there are only {n} vectors; choose nlist <= {n}")
        train_n = min(n, max(nlist, p["train_size"] or IVF_TRAIN_PER_LIST * nlist))
        rng = np.random.default_rng(seed)
        sample = x if train_n == n else x[np.sort(rng.choice(n, train_n, replace=False))]
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.cp.niter = int(p["niter"])
        index.cp.min_points_per_centroid = 1  # nlist <= n / 39 already by default; do not warn on purpose
        index.cp.max_points_per_centroid = max(1, -(-train_n // nlist))  # our sample: no resampling
        t0 = time.perf_counter()
        index.train(sample)
        del sample
        _add_chunks(index, x, "ivf add", progress)
        out = cls(index, dict(p, nlist=int(nlist), train_size=int(train_n)))
        if p["nprobe"] is None:
            out.calibrate(x, p["target_recall"], seed, calibration_queries)
        out.params["nprobe"] = int(min(out.params["nprobe"], nlist))
        log.info("ivf index of %d x %d built in %.1f s (%s)", n, d, time.perf_counter() - t0, out.params)
        return out

    def _search_params(self, value: int, k: int) -> Any:
        return _faiss().SearchParametersIVF(nprobe=int(min(value, self.params["nlist"])))

    def _search_ladder(self) -> tuple[int, ...]:
        nlist = int(self.params["nlist"])
        return tuple(v for v in self._ladder if v < nlist) + (nlist,)  # ends with every cell: exhaustive

    def _complete(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._raw_search(q, k, int(self.params["nlist"]))  # every cell: exhaustive

    @property
    def nbytes(self) -> int:
        return int(self.ntotal * (4 * self.dim + 8) + self.params["nlist"] * 4 * self.dim)


class HNSWIndex(_FaissIndex):
    """FAISS ``IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT)``.

    Build with :meth:`build`; ``params``: ``M`` (links per node), ``efConstruction``, ``efSearch``
    (default: calibrated for ``target_recall``; never below k at search time), ``target_recall``.
    The level of each node is drawn from a generator seeded with ``seed``; the links still depend on
    the order threads insert nodes in, so two builds can differ slightly (a saved index does not).
    """

    kind = "hnsw"
    _tuned = "efSearch"
    _ladder = _HNSW_EF_LADDER

    @classmethod
    def build(cls, vectors: np.ndarray, params: Mapping[str, Any] | None = None, seed: int = 0,
              progress: bool = False, calibration_queries: np.ndarray | None = None) -> HNSWIndex:
        """Insert every row into the graph, calibrate ``efSearch`` unless given."""
        return cls._build(as_vectors(vectors), check_params("hnsw", params), seed, progress, calibration_queries)

    @classmethod
    def _build(cls, x: np.ndarray, p: dict[str, Any], seed: int, progress: bool,
               calibration_queries: np.ndarray | None = None) -> HNSWIndex:
        faiss = _faiss()
        n, d = x.shape
        index = faiss.IndexHNSWFlat(d, int(p["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["efConstruction"])
        index.hnsw.rng = faiss.RandomGenerator(int(seed))
        t0 = time.perf_counter()
        # One add call: faiss then inserts the upper levels' nodes first, in a shuffled order. Adding in
        # chunks made a worse graph (300,000 x 384: recall@5 0.949 vs 0.973 at efSearch 32).
        _add_chunks(index, x, "hnsw add", progress, chunk=len(x))
        out = cls(index, p)
        if p["efSearch"] is None:
            out.calibrate(x, p["target_recall"], seed, calibration_queries)
        log.info("hnsw index of %d x %d built in %.1f s (%s)", n, d, time.perf_counter() - t0, out.params)
        return out

    def _search_params(self, value: int, k: int) -> Any:
        return _faiss().SearchParametersHNSW(efSearch=int(max(value, k)))

    def _complete(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = _faiss().downcast_index(self._index.storage).search(q, k)  # the flat storage: exact
        return pos, scores

    @property
    def nbytes(self) -> int:
        h = self._index.hnsw
        links = h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
        return int(self.ntotal * 4 * self.dim + links)


_KINDS: dict[str, type[VectorIndex]] = {"exact": ExactIndex, "ivf": IVFIndex, "hnsw": HNSWIndex}


def _add_chunks(index: Any, x: np.ndarray, desc: str, progress: bool, chunk: int = CHUNK_ROWS) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=len(x), desc=desc, unit="vec", disable=not progress) as bar:
        for s in range(0, len(x), chunk):
            blk = x[s : s + chunk]
            index.add(blk)
            bar.update(len(blk))


def build_index(vectors: np.ndarray, kind: str = "auto", *, params: Mapping[str, Any] | None = None,
                seed: int = 0, progress: bool = False,
                calibration_queries: np.ndarray | None = None) -> VectorIndex:
    """An index of ``kind`` over ``vectors`` [n, d] (float32, finite; rows of any norm).

    Parameters
    ----------
    vectors : array [n, d]
        The rows to index; an exact index uses a float32 C-contiguous array as it is (no copy).
    kind : {"exact", "ivf", "hnsw", "auto"}
        ``auto``: exact below :data:`AUTO_EXACT_MAX` rows, else :data:`AUTO_APPROX_KIND`.
    params : mapping, optional
        Parameters of the concrete kind (see :class:`IVFIndex`, :class:`HNSWIndex`); unknown names raise
        :class:`ConfigError`. With ``auto`` they apply only when the chosen kind takes them.
    seed : int
        Seeds the k-means sample and initialisation, HNSW levels and the calibration sample.
    progress : bool
        Draw a progress bar while adding vectors.
    calibration_queries : array [m, d], optional
        Queries like those the index will serve, to calibrate ``nprobe`` / ``efSearch`` with (see
        :meth:`IVFIndex.calibrate`); default: a sample of the rows themselves.
    """
    requested = check_kind(kind)
    x = as_vectors(vectors)
    concrete = resolve_kind(requested, len(x))
    p = _params_for(requested, concrete, params)
    return _build_checked(x, concrete, p, seed, progress, calibration_queries)


def _build_checked(x: np.ndarray, kind: str, p: dict[str, Any], seed: int, progress: bool,
                   calibration_queries: np.ndarray | None = None) -> VectorIndex:
    if kind == "exact":
        return ExactIndex._from_checked(x, p)
    if kind == "ivf":
        return IVFIndex._build(x, p, seed, progress, calibration_queries)
    return HNSWIndex._build(x, p, seed, progress, calibration_queries)


def _params_for(requested: str, concrete: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked params for ``concrete``; under ``auto``, names meant for the other kinds are dropped."""
    given = dict(params or {})
    if requested == "auto":
        known = set().union(*(_DEFAULTS[k] for k in ("exact", "ivf", "hnsw")))
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"unknown index parameter(s) {unknown}; valid: {', '.join(sorted(known))}")
        given = {k: v for k, v in given.items() if k in _DEFAULTS[concrete]}
    return check_params(concrete, given)


def load_index(folder: str | os.PathLike[str]) -> VectorIndex:
    """The index saved by :meth:`VectorIndex.save` in ``folder``."""
    folder = Path(folder)
    try:
        meta = read_json_object(folder / "meta.json")
    except (OSError, ValueError) as exc:
        raise ConfigError(f"no readable index in {folder}: {exc}") from exc
    kind = meta.get("kind")
    if kind not in _KINDS:
        raise ConfigError(f"{folder}/meta.json names index kind {kind!r}; known: {', '.join(_KINDS)}")
    index = _KINDS[kind]._load_data(folder, meta)  # type: ignore[attr-defined]
    if (index.ntotal, index.dim) != (meta.get("n"), meta.get("dim")):
        raise ConfigError(f"{folder}: the index holds {index.ntotal} x {index.dim} vectors but meta.json says "
                          f"{meta.get('n')} x {meta.get('dim')}")
    return index


# ---------------------------------------------------------------------------------------------- cache

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


class IndexCache:
    """Built indexes kept on disk (e.g. ``<store>/indexes``), one folder per name.

    :meth:`get` reloads a saved index when its kind, parameters, seed, shape, the caller's
    ``fingerprint`` and a sample of the vectors all match; otherwise it builds one and replaces the
    folder atomically (built in a temporary folder, then renamed), under a cross-process lock so that
    two runs never build the same index at once. Exact indexes are not saved: they need no build.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"index name {name!r} must be 1-128 letters, digits or ._=+- (not starting with "
                              "a dot or dash)")
        return self.root / name

    def get(self, name: str, vectors: np.ndarray, kind: str, fingerprint: str,
            params: Mapping[str, Any] | None = None, *, seed: int = 0, progress: bool = False,
            calibration_queries: np.ndarray | None = None) -> tuple[VectorIndex, str]:
        """The index ``name`` over ``vectors``, and ``"loaded"``, ``"loaded; recalibrated: <how>"`` or
        ``"built: <reason>"``.

        Parameters
        ----------
        name : str
            Folder name under the cache root (e.g. ``"fused-image+text"``).
        vectors : array [n, d]
            The rows the index must cover, in the order positions refer to.
        kind : {"exact", "ivf", "hnsw", "auto"}
        fingerprint : str
            What the caller knows identifies ``vectors`` (e.g. a hash of the store's ids, keys and model
            ids); a change forces a rebuild.
        params, seed, progress, calibration_queries
            As for :func:`build_index`. Other calibration queries than the saved index was calibrated
            with do not rebuild it: the loaded index is recalibrated (a few hundred exact searches) and
            its ``meta.json`` updated.
        """
        folder = self.folder(name)
        requested = check_kind(kind)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ConfigError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        x = as_vectors(vectors)
        concrete = resolve_kind(requested, len(x))
        p = _params_for(requested, concrete, params)
        if concrete == "exact":
            return ExactIndex._from_checked(x, p), "built: exact search needs no index (nothing cached)"
        want = {"kind": concrete, "params": p, "seed": int(seed), "n": len(x), "dim": x.shape[1],
                "fingerprint": fingerprint, "digest": _digest(x)}
        cal_q = None if calibration_queries is None else _as_queries(calibration_queries, x.shape[1])
        cal_digest = None if cal_q is None else hashlib.sha256(cal_q.tobytes()).hexdigest()[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / f".{name}.lock", what=f"the index cache {folder}"):
            self._clean(name)
            reason = self._stale(folder, want)
            if reason is None:
                try:
                    index = load_index(folder)
                    if (index.ntotal, index.dim) == (want["n"], want["dim"]) and index.kind == concrete:
                        return index, self._recalibrated(folder, index, x, p, seed, cal_q, cal_digest)
                    reason = "the saved index does not match its meta.json"
                except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:  # damaged: rebuild
                    reason = f"the saved index could not be read ({type(exc).__name__}: {exc})"
            t0 = time.perf_counter()
            index = _build_checked(x, concrete, p, seed, progress, cal_q)
            seconds = time.perf_counter() - t0
            extra = {"requested_kind": requested, "requested_params": p, "seed": int(seed),
                     "fingerprint": fingerprint, "digest": want["digest"], "calibration_digest": cal_digest,
                     "build_seconds": round(seconds, 3),
                     "threads": _faiss().omp_get_max_threads(),
                     "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            self._replace(name, lambda tmp: index.save(tmp, extra))
            log.info("index %s: built (%s) in %.1f s", name, reason, seconds)
            return index, f"built: {reason}"

    @staticmethod
    def _recalibrated(folder: Path, index: VectorIndex, x: np.ndarray, p: Mapping[str, Any], seed: int,
                      cal_q: np.ndarray | None, cal_digest: str | None) -> str:
        """``"loaded"``, after recalibrating ``index`` when it was calibrated with other queries."""
        if not isinstance(index, _FaissIndex) or p.get(index._tuned) is not None:
            return "loaded"  # exact, or the search parameter was given: nothing calibrated
        meta = read_json_object(folder / "meta.json")
        if meta.get("calibration_digest") == cal_digest:
            return "loaded"
        before = index.params[index._tuned]
        index.calibrate(x, p.get("target_recall"), seed, cal_q)
        write_json(folder / "meta.json", {**meta, **index.meta(), "calibration_digest": cal_digest})
        what = "the given queries" if cal_q is not None else "sample rows"
        return f"loaded; recalibrated with {what}: {index._tuned} {before} -> {index.params[index._tuned]}"

    def _stale(self, folder: Path, want: Mapping[str, Any]) -> str | None:
        """Why the saved index cannot serve ``want`` (None: it can)."""
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return "no saved index"
        try:
            meta = read_json_object(meta_path)
        except (OSError, ValueError) as exc:
            return f"meta.json unreadable ({exc})"
        if meta.get("format") != FORMAT_VERSION:
            return f"saved in format {meta.get('format')}, this version reads {FORMAT_VERSION}"
        if meta.get("kind") != want["kind"]:
            return f"kind changed ({meta.get('kind')} -> {want['kind']})"
        if (meta.get("n"), meta.get("dim")) != (want["n"], want["dim"]):
            return f"shape changed ({meta.get('n')} x {meta.get('dim')} -> {want['n']} x {want['dim']})"
        if meta.get("fingerprint") != want["fingerprint"]:
            return f"fingerprint changed ({str(meta.get('fingerprint'))[:16]} -> {want['fingerprint'][:16]})"
        old = meta.get("requested_params") or {}
        if old != want["params"]:
            diff = {k: (old.get(k), v) for k, v in want["params"].items() if old.get(k) != v}
            return "params changed (" + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items()) + ")"
        if meta.get("seed") != want["seed"]:
            return f"seed changed ({meta.get('seed')} -> {want['seed']})"
        if meta.get("digest") != want["digest"]:
            return "the vectors changed under the same fingerprint"
        return None

    def _clean(self, name: str) -> None:
        """Remove temporary folders a crashed build of ``name`` left behind (we hold its lock)."""
        mine = re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-[0-9a-f]{{12}}$")
        for p in self.root.iterdir():
            if mine.match(p.name) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def _replace(self, name: str, write: Callable[[Path], Any]) -> None:
        final = self.folder(name)
        token = uuid.uuid4().hex[:12]
        tmp = self.root / f".{name}.tmp-{token}"
        old = self.root / f".{name}.old-{token}"
        try:
            write(tmp)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def names(self) -> Sequence[str]:
        """Names of the saved indexes."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "meta.json").is_file())
