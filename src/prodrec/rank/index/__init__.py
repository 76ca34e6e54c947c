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
    FAISS IVF: a seeded spherical k-means splits the rows into ``nlist`` cells (``nlist`` ~
    ``IVF_NLIST_PER_SQRT_N * sqrt(n)``, trained on a capped seeded sample), a query scans the ``nprobe``
    cells whose centroids score best. By default (``codes="sq8"``) the lists hold FAISS's 8-bit scalar
    codes, a byte per dimension, and a search re-scores its ``2k + 10`` best candidates exactly with the
    indexed rows (which the index references, never copies): 0.26x the raw vectors (377 MiB at 1M, 250 MiB
    at 200k; the process kept 0.39x as its lists grow) at the recall of float32 lists. Build 22 s (1M) /
    9 s (200k); 0.19 / 0.25 ms per query (440x / 217x exact), recall@5 0.973 / 0.992 at the calibrated
    nprobe 1, as with ``codes="flat"`` (``IndexIVFFlat``, 1.01x the raw vectors; 0.18 / 0.28 ms).
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
fastest build (rebuild freely when the catalog changes), a quarter of the raw vectors' memory, exact
scores, and a calibration that always reaches its target; ``hnsw`` when the graph build (minutes per million
vectors) is paid once and cached and the data is not one of tightly separated clusters.

Unless given, ``nprobe`` (ivf) and ``efSearch`` (hnsw) are calibrated at build time: the smallest value
whose recall@5 reaches ``target_recall`` (default 0.95) against :class:`ExactIndex` on 256 seeded
sample rows used as queries (their own row left out, as in recommending), or on ``calibration_queries``
when given. Fused (maximum inner product) indexes should be calibrated with weighted queries: with
arm weights 0.8 : 0.2, hnsw calibrated on rows gave recall@5 0.943, on weighted queries 0.967
(efSearch 16 -> 24); in the tests' set of two independent arms ivf needed 4x the nprobe. The chosen
value is kept in ``index.params`` (and can be changed there: it is read at each search). One search can
ask for more effort without touching ``params``: ``index.search(q, k, effort=index.effort_for(k))``
multiplies nprobe / efSearch by :data:`DEEP_EFFORT` for lists deeper than :data:`DEEP_LIST` (reciprocal-rank
fusion reads each arm's top 50).

:class:`IndexCache` keeps built indexes beside the embedding store and reloads one only when its kind,
parameters, shape and the caller's fingerprint all match. FAISS is imported only when an approximate
index is built or loaded.

Modules: :mod:`.base` (the :class:`VectorIndex` interface, checks, loading), :mod:`.kinds` (kinds and
their parameters), :mod:`.exact`, :mod:`.faiss_kinds` (ivf, hnsw), :mod:`.build` (:func:`build_index`),
:mod:`.cache` (:class:`IndexCache`) and :mod:`.arm_indexes` (a recommender's per-arm and fused indexes).
"""

from __future__ import annotations

from ...core.vocab import AUTO_APPROX_KIND, AUTO_EXACT_MAX, INDEX_KINDS, IndexKind
from .arm_indexes import FUSED_INDEX, FUSED_TARGET_RECALL, ArmIndexes
from .base import (CALIBRATION_K, CALIBRATION_QUERIES, CHUNK_ROWS, DEEP_EFFORT, DEEP_LIST, FORMAT_VERSION,
                   VectorIndex, as_vectors, faiss_version, inner_products_by_idx, load_index, recall_at_k)
from .build import build_index
from .cache import IndexCache
from .exact import ExactIndex
from .faiss_kinds import FaissIndex, HNSWIndex, IVFIndex
from .kinds import (IVF_CODES, IVF_NLIST_PER_SQRT_N, IVF_TRAIN_PER_LIST, check_kind, check_params, default_nlist,
                    resolve_kind)

__all__ = [
    "AUTO_APPROX_KIND",
    "AUTO_EXACT_MAX",
    "CALIBRATION_K",
    "CALIBRATION_QUERIES",
    "CHUNK_ROWS",
    "DEEP_EFFORT",
    "DEEP_LIST",
    "FORMAT_VERSION",
    "FUSED_INDEX",
    "FUSED_TARGET_RECALL",
    "INDEX_KINDS",
    "IVF_CODES",
    "IVF_NLIST_PER_SQRT_N",
    "IVF_TRAIN_PER_LIST",
    "ArmIndexes",
    "ExactIndex",
    "FaissIndex",
    "HNSWIndex",
    "IVFIndex",
    "IndexCache",
    "IndexKind",
    "VectorIndex",
    "as_vectors",
    "build_index",
    "check_kind",
    "check_params",
    "default_nlist",
    "faiss_version",
    "inner_products_by_idx",
    "load_index",
    "recall_at_k",
    "resolve_kind",
]
