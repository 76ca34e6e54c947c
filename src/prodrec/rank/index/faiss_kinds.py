"""FAISS's approximate kinds: IVF (k-means cells) and HNSW (a small-world graph), one build path."""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
from tqdm.auto import tqdm

from ...core.errors import ConfigError, RankingError
from ..topk import drop_self, order_by_score
from .base import (CALIBRATION_K, CALIBRATION_QUERIES, CHUNK_ROWS, SideBySide, VectorIndex, as_queries, as_vectors,
                   exact_search, faiss_module, inner_products_by_idx, recall_at_k)
from .kinds import IVF_TRAIN_PER_LIST, check_params, default_nlist

__all__ = ["IVF_REFINE", "IVF_REFINE_MARGIN", "HNSWIndex", "IVFIndex"]

log = logging.getLogger(__name__)

_IVF_NPROBE_LADDER = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024)
_HNSW_EF_LADDER = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048)

_F = TypeVar("_F", bound="FaissIndex")

#: An ivf index with 8-bit codes reads ``IVF_REFINE * k + IVF_REFINE_MARGIN`` candidates by their codes and
#: keeps the best k by exact inner products. Measured on 250,000 x 384 (two arms side by side, the export
#: benchmark's vectors), recall@10 over 500 queries at nprobe 2 / 4 / 8: codes alone 0.969 / 0.976 / 0.983,
#: 2k candidates re-scored 0.978 / 0.986 / 0.992, the same as float32 lists (``codes="flat"``) at every
#: nprobe, and 3k gained nothing more. The margin is for short lists: on the tests' 3,000 x 32 mixture, 2k
#: candidates changed 1.75% of the top-1 results against float32 lists, 2k + 10 none (nor at k = 5 or 10).
IVF_REFINE = 2
IVF_REFINE_MARGIN = 10


class FaissIndex(VectorIndex):
    """Shared parts of the faiss-backed kinds: build, calibration, search effort, short-row repair, tie
    order, files. A kind names the search parameter it tunes and the values calibration tries
    (``class IVFIndex(FaissIndex, kind="ivf", tuned="nprobe", ladder=(1, 2, ...))``), and says how to make
    its faiss index (:meth:`_make`) and how the parameter reaches faiss (:meth:`_search_params`)."""

    _tuned: ClassVar[str] = ""  # the search parameter calibrated at build (nprobe / efSearch)
    _ladder: ClassVar[tuple[int, ...]] = ()

    def __init_subclass__(cls, tuned: str = "", ladder: tuple[int, ...] = (), **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._tuned, cls._ladder = tuned, tuple(ladder)

    def __init__(self, index: Any, params: Mapping[str, Any], calibration: Mapping[str, Any] | None = None) -> None:
        self._index = index
        self.params = dict(params)
        self.ntotal, self.dim = int(index.ntotal), int(index.d)
        self.calibration = dict(calibration) if calibration else None

    # ---------------------------------------------------------------------------------------- build
    @classmethod
    def build(cls: type[_F], vectors: np.ndarray, params: Mapping[str, Any] | None = None, seed: int = 0,
              progress: bool = False, calibration_queries: np.ndarray | None = None) -> _F:
        """Build over ``vectors`` [n, d] (see the kind's ``params``); calibrate the search effort unless
        given (:meth:`calibrate`, with ``calibration_queries`` when given)."""
        return cls.build_checked(as_vectors(vectors), check_params(cls.kind, params), seed, progress,
                                 calibration_queries)

    @classmethod
    def build_checked(cls: type[_F], x: np.ndarray, p: dict[str, Any], seed: int, progress: bool,
                      calibration_queries: np.ndarray | None = None) -> _F:
        """:meth:`build` for vectors and params already checked."""
        t0 = time.perf_counter()
        index, p = cls._make(faiss_module(), x, p, seed, progress)
        out = cls(index, p)
        out.attach(x, checked=True)  # an ivf index with 8-bit codes scores with the rows (calibration too)
        if p[cls._tuned] is None:
            out.calibrate(x, p["target_recall"], seed, calibration_queries)
        cap = out._max_effort()
        if cap is not None:
            out.params[cls._tuned] = int(min(out.params[cls._tuned], cap))
        log.info("%s index of %d x %d built in %.1f s (%s)", cls.kind, *x.shape, time.perf_counter() - t0,
                 out.params)
        return out

    @classmethod
    def _make(cls, faiss: Any, x: np.ndarray, p: dict[str, Any], seed: int, progress: bool
              ) -> tuple[Any, dict[str, Any]]:
        """The faiss index holding every row of ``x``, and the params with what was chosen filled in."""
        raise NotImplementedError

    # --------------------------------------------------------------------------------------- search
    def _search_params(self, value: int, k: int) -> Any:
        raise NotImplementedError

    def _max_effort(self) -> int | None:
        """The tuned parameter's value that searches exhaustively (None: no such value)."""
        return None

    def _search_ladder(self) -> tuple[int, ...]:
        """The values calibration tries, in increasing effort."""
        return self._ladder

    def _raw_search(self, q: np.ndarray, k: int, value: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = self._index.search(q, k, params=self._search_params(value, k))
        return pos, scores

    def _complete(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exhaustive search for rows the approximate search left short (fewer than k results)."""
        raise NotImplementedError

    def _search(self, q: np.ndarray, k: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        value = int(self.params[self._tuned]) * effort
        cap = self._max_effort()
        pos, scores = self._raw_search(q, k, value if cap is None else min(value, cap))
        short = np.flatnonzero((pos < 0).any(axis=1))
        if short.size:  # too few candidates in the probed cells / visited nodes: fall back for those rows
            pos[short], scores[short] = self._complete(q[short], k)
        return order_by_score(pos, scores)

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
            qs = as_queries(queries, self.dim)
            source, n_q = "given", len(qs)
        pick = np.sort(rng.choice(n_q, min(CALIBRATION_QUERIES, n_q), replace=False))
        rows = pick if queries is None else np.full(len(pick), -1)  # -1: no row of the query's own to drop
        q = np.ascontiguousarray(x[pick] if queries is None else qs[pick])
        k = min(CALIBRATION_K, len(x) - 1 if queries is None else len(x))
        value, recall = self._ladder[0], 1.0
        if k >= 1 and len(q):
            truth = drop_self(exact_search(x, q, k + 1)[0], None, rows, k)[0]
            for value in self._search_ladder():
                recall = recall_at_k(drop_self(self._raw_search(q, k + 1, value)[0], None, rows, k)[0], truth)
                if recall >= target:
                    break
        self.params[self._tuned] = int(value)
        self.calibration = {"param": self._tuned, "value": int(value), "recall": round(recall, 4),
                            "target": target, "queries": source, "n_queries": len(q), "k": k, "seed": int(seed)}
        if recall < target:
            log.warning("%s: %s=%d reaches only recall@%d %.3f < %.3f on sample rows (the ladder's end)",
                        self.kind, self._tuned, value, k, recall, target)
        return int(value), recall

    @property
    def tuned(self) -> str:
        """The name of the search parameter calibrated at build (``nprobe`` / ``efSearch``)."""
        return self._tuned

    # ---------------------------------------------------------------------------------------- files
    def _save_data(self, folder: Path) -> None:
        faiss = faiss_module()
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
    def _load_data(cls, folder: Path, meta: Mapping[str, Any]) -> FaissIndex:
        index = faiss_module().read_index(str(folder / "index.faiss"))
        return cls(index, dict(meta.get("params") or {}), meta.get("calibration"))


def _add_chunks(index: Any, x: np.ndarray, desc: str, progress: bool, chunk: int = CHUNK_ROWS) -> None:
    with tqdm(total=len(x), desc=desc, unit="vec", disable=not progress) as bar:
        for s in range(0, len(x), chunk):
            blk = x[s : s + chunk]  # arms side by side: a copy of these rows only
            index.add(blk)
            bar.update(len(blk))
            del blk  # before the next chunk is made


class IVFIndex(FaissIndex, kind="ivf", tuned="nprobe", ladder=_IVF_NPROBE_LADDER):
    """FAISS IVF with ``METRIC_INNER_PRODUCT``: spherical k-means cells, a query scans the ``nprobe`` best.

    Build with :meth:`build` (train on a seeded sample, add every row, calibrate ``nprobe`` unless given);
    ``params``: ``nlist`` (default :func:`default_nlist`), ``nprobe`` (default: calibrated for
    ``target_recall``), ``niter`` (k-means iterations), ``train_size`` (k-means sample; default
    ``IVF_TRAIN_PER_LIST * nlist``), ``target_recall``, ``codes``:

    ``"sq8"`` (default)
        ``IndexIVFScalarQuantizer`` (8 bits per dimension, ranges trained on the k-means sample): the lists
        hold a quarter of the float32 vectors. A search reads ``IVF_REFINE * k + IVF_REFINE_MARGIN``
        candidates by their codes and returns the best k by exact inner products with the indexed rows,
        which the index keeps a reference to (never a copy): scores are exact, recall that of float32 lists
        (see :data:`IVF_REFINE`). An index loaded from a folder needs the rows: :func:`load_index` with
        ``vectors`` (:class:`IndexCache` passes them).
    ``"flat"``
        ``IndexIVFFlat``: the float32 vectors themselves (no rows needed; 4x the lists' memory).
    """

    def __init__(self, index: Any, params: Mapping[str, Any], calibration: Mapping[str, Any] | None = None) -> None:
        super().__init__(index, params, calibration)
        self.params.setdefault("codes", "flat")  # saved before codes were a parameter: IndexIVFFlat
        self._rows: np.ndarray | SideBySide | None = None

    @classmethod
    def _make(cls, faiss: Any, x: np.ndarray, p: dict[str, Any], seed: int, progress: bool
              ) -> tuple[Any, dict[str, Any]]:
        n, d = x.shape
        nlist = p["nlist"] or default_nlist(n)
        if nlist > n:
            raise ConfigError(f"nlist={nlist} but there are only {n} vectors; choose nlist <= {n}")
        train_n = min(n, max(nlist, p["train_size"] or IVF_TRAIN_PER_LIST * nlist))
        rng = np.random.default_rng(seed)
        sample = x[:] if train_n == n else x[np.sort(rng.choice(n, train_n, replace=False))]
        if p["codes"] == "sq8":
            index = faiss.IndexIVFScalarQuantizer(faiss.IndexFlatIP(d), d, nlist, faiss.ScalarQuantizer.QT_8bit,
                                                  faiss.METRIC_INNER_PRODUCT)
            index.by_residual = False  # codes of the vectors themselves: one range per dimension, no centroid
        else:
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = int(seed)
        index.cp.niter = int(p["niter"])
        index.cp.min_points_per_centroid = 1  # nlist <= n / 39 already by default; do not warn on purpose
        index.cp.max_points_per_centroid = max(1, -(-train_n // nlist))  # our sample: no resampling
        index.train(sample)
        del sample
        # codes are a quarter of a row: smaller chunks keep the temporary rows below the lists' growth
        _add_chunks(index, x, "ivf add", progress, chunk=CHUNK_ROWS if p["codes"] == "flat" else CHUNK_ROWS // 4)
        return index, dict(p, nlist=int(nlist), train_size=int(train_n))

    def attach(self, vectors: np.ndarray | SideBySide, *, checked: bool = False) -> IVFIndex:
        if self.params["codes"] == "sq8":
            x = vectors if checked else as_vectors(vectors)
            if x.shape != (self.ntotal, self.dim):
                raise ConfigError(f"this ivf index was built over {self.ntotal} x {self.dim} rows; got {x.shape}")
            self._rows = x
        return self

    def _raw_search(self, q: np.ndarray, k: int, value: int) -> tuple[np.ndarray, np.ndarray]:
        if self.params["codes"] != "sq8":
            return super()._raw_search(q, k, value)
        if self._rows is None:
            raise RankingError("this ivf index keeps 8-bit codes and scores its candidates with the rows it was "
                               "built over: load it with load_index(folder, vectors=rows) or call index.attach(rows)")
        pos, _ = super()._raw_search(q, min(self.ntotal, IVF_REFINE * k + IVF_REFINE_MARGIN), value)
        pos, scores = order_by_score(pos, inner_products_by_idx(self._rows, q, pos))
        return pos[:, :k], scores[:, :k]

    def _search_params(self, value: int, k: int) -> Any:
        return faiss_module().SearchParametersIVF(nprobe=int(min(value, self.params["nlist"])))

    def _max_effort(self) -> int | None:
        return int(self.params["nlist"])  # every cell: exhaustive

    def _search_ladder(self) -> tuple[int, ...]:
        nlist = int(self.params["nlist"])
        return tuple(v for v in self._ladder if v < nlist) + (nlist,)  # ends with every cell: exhaustive

    def _complete(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self._raw_search(q, k, int(self.params["nlist"]))  # every cell: exhaustive

    @property
    def nbytes(self) -> int:
        centroids = self.params["nlist"] * 4 * self.dim
        if self.params["codes"] == "sq8":  # a byte per dimension, and each dimension's trained range (2 floats)
            return int(self.ntotal * (self.dim + 8) + centroids + 2 * 4 * self.dim)
        return int(self.ntotal * (4 * self.dim + 8) + centroids)


class HNSWIndex(FaissIndex, kind="hnsw", tuned="efSearch", ladder=_HNSW_EF_LADDER):
    """FAISS ``IndexHNSWFlat(d, M, METRIC_INNER_PRODUCT)``.

    Build with :meth:`build` (insert every row into the graph, calibrate ``efSearch`` unless given);
    ``params``: ``M`` (links per node), ``efConstruction``, ``efSearch`` (default: calibrated for
    ``target_recall``; never below k at search time), ``target_recall``.
    The level of each node is drawn from a generator seeded with ``seed``; the links still depend on
    the order threads insert nodes in, so two builds can differ slightly (a saved index does not).
    """

    @classmethod
    def _make(cls, faiss: Any, x: np.ndarray, p: dict[str, Any], seed: int, progress: bool
              ) -> tuple[Any, dict[str, Any]]:
        index = faiss.IndexHNSWFlat(x.shape[1], int(p["M"]), faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = int(p["efConstruction"])
        index.hnsw.rng = faiss.RandomGenerator(int(seed))
        # One add call: faiss then inserts the upper levels' nodes first, in a shuffled order. Adding in
        # chunks made a worse graph (300,000 x 384: recall@5 0.949 vs 0.973 at efSearch 32).
        _add_chunks(index, x, "hnsw add", progress, chunk=len(x))
        return index, p

    def _search_params(self, value: int, k: int) -> Any:
        return faiss_module().SearchParametersHNSW(efSearch=int(max(value, k)))

    def _complete(self, q: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores, pos = faiss_module().downcast_index(self._index.storage).search(q, k)  # the flat storage: exact
        return pos, scores

    @property
    def nbytes(self) -> int:
        h = self._index.hnsw
        links = h.neighbors.size() * 4 + h.offsets.size() * 8 + h.levels.size() * 4
        return int(self.ntotal * 4 * self.dim + links)
