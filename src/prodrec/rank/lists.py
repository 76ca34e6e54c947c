"""Ranked lists for blocks of queries, with :mod:`rules <prodrec.rank.rules>` applied inside the ranking.

:class:`ListRanker` ranks a block of query products under one or more modes of a
:class:`~prodrec.rank.recommender.Recommender` and returns each mode's :class:`Lists` (positions, scores,
each arm's cosine, and the score a new product needs to enter the list). It is what ``prodrec export``
runs block by block, what ``prodrec recommend`` and the widget run for one query when rules are set, and
what Ray workers run (it pickles with its recommender).

How a block is ranked:

1. **Candidates.** Exact index: one matrix product per arm for the block ([m, n] float32 scores, bounded by
   a memory budget, read tile by tile), the mode's score (an arm's cosine, the weighted fused score, or each
   arm's list for reciprocal-rank fusion), the query itself and what the masks leave out set to ``-inf``,
   each tile's scores offered to a running heap per query (:class:`RunningTop`). The catalog is split into
   one column range per :func:`block_threads` thread, each with BLAS on one thread, and the ranges' best
   merged: OpenBLAS's own threads, left spinning after each product, had taken the cores from the rules'
   work that follows (MMR's pool similarities took 0.53 s on one thread or two; now 0.27 s on two), and the
   heaps and masks now run on every core too. (Split by queries instead, each thread read every product:
   5-8% slower than BLAS's threads; by columns, as fast.) Blocks ranked in catalog order with a
   :class:`Sweep` (a whole catalog's export) read half the products: a score read one way is the score read
   the other, so each block scores only the products from itself on and hands the later products' scores
   on, transposed, to their own blocks.
2. **Canonical scores.** Every candidate's score is computed again pair by pair (FAISS's
   ``fvec_inner_products_by_idx``: each (query, product) cosine from the two vectors alone), so a product
   gets the same score whichever block, process, machine or incremental update computes it: lists are
   ordered by that score (best first, equal scores by position, i.e. by id), and the tables of a resumed,
   a Ray and an updated export are the same as a fresh local one, row for row.
3. **Choice.** The first k (plain), the first k that are not duplicates of the query or of a product already
   listed, or MMR's k picks from the pool (see :mod:`~prodrec.rank.rules`).
4. **Deeper when needed.** Candidates are read a margin beyond what the list needs; a row whose choice is
   not certain (the rules discarded too many, or scores tie at the edge of what was read) reads twice as
   deep, until its list is full and certain or every qualifying product was read. So k products come back
   whenever k qualify.

``threshold`` in each list is the canonical score a product needs to possibly change the list (its k-th
score; for MMR the pool's last relevance; ``-inf`` when the list is short): :mod:`prodrec.rank.export`
reads it to update a table when products are added.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import ConfigError
from ..core.vocab import FUSION_MODES
from . import fusion
from .index import inner_products_by_idx
from .rules import BoundRules, diversity_pool
from .topk import BLOCK_BYTES, MAX_BLOCK_ROWS, one_blas_thread

if TYPE_CHECKING:
    from .recommender import Recommender

__all__ = ["MARGIN", "ListRanker", "Lists", "RunningTop", "Sweep", "block_budget", "pair_scores", "recommend_lists", "row_gram"]

#: Candidates read beyond what a list needs (at least; the margin grows with the list).
MARGIN = 8
#: Largest gap between a block's float32 matrix-product score and the pairwise score of the same cosine
#: (unit vectors; both float32, ~1e-7 apart in practice): a candidate counts as certain only above it.
EPS = 1e-5
#: Export working memory at most a quarter of the arms' vectors, between these bounds.
MIN_BUDGET = 4 * 2**20
#: Products per tile of block scores: a block of queries is scored against the catalog tile by tile, each
#: tile's best candidates merged into a running top list, so the queries of a block can be many (one
#: matrix product reads each tile once for all of them) while the scores held stay small.
TILE = 2048
#: Float32 copies of a tile a block holds at once (the score, one arm's term, a mask's worth).
TILE_COPIES = 3
#: Bytes of vectors :func:`row_gram` gathers at a time (cache-sized: 16 MiB ran at half the speed of 2 MiB here).
GATHER_BYTES = 2 * 2**20
#: Threads of :func:`row_gram` at most (numpy's matrix products release the GIL).
MAX_GRAM_THREADS = 4
#: Threads a block's exact candidates are computed on at most (:func:`block_threads`); a block of fewer queries
#: than MIN_THREAD_ROWS stays on one thread (BLAS's own threads), and a thread is given at least
#: MIN_THREAD_COLUMNS products.
MAX_BLOCK_THREADS = 8
MIN_THREAD_ROWS = 64
MIN_THREAD_COLUMNS = 1024
#: The duplicates rule first compares a list's ``need + DUPLICATE_SLACK`` best candidates (and the query), and
#: all of them only for the rows that did not keep ``need`` among those (see ``ListRanker._distinct``).
DUPLICATE_SLACK = 2

#: (rows, c) -> candidate positions [rows, c'] (-1: none), the block score of the last one read (-inf: the
#: row's qualifying candidates are all read), and whether every qualifying candidate was read.
Source = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def block_budget(vector_bytes: int) -> int:
    """Bytes of scores a block may hold: a quarter of the vectors, at least 4 MiB, at most
    :data:`~prodrec.rank.topk.BLOCK_BYTES`."""
    return int(min(BLOCK_BYTES, max(MIN_BUDGET, vector_bytes // 4)))


@contextlib.contextmanager
def _one_thread() -> Iterator[Any]:
    """FAISS with one OpenMP thread: for the small per-row jobs here, its threads cost more than they save
    (and fight BLAS's own threads)."""
    import faiss

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield faiss
    finally:
        faiss.omp_set_num_threads(threads)


class RunningTop:
    """The ``c`` best entries of each of ``m`` rows over column tiles fed in order (:meth:`add`), best first
    (:meth:`result`). One FAISS heap per row is kept across tiles (``float_minheap_array_t``, one thread: its
    OpenMP threads left spinning slowed the next tile's BLAS product, 2.3 -> 3.3 s for the export benchmark):
    a tile's entries below the row's c-th best so far are rejected by one comparison, and no tile's best need
    merging with the others'. For the export benchmark's 9,583 queries over 9,583 products (blocks of 620,
    tiles of 2,048): 0.08 s instead of 0.23 s for a heap selection per tile merged into a running list at
    c = 18, 0.11 s instead of 0.36 s at c = 28. ``-inf`` entries (left out) are never kept; which of several
    equal scores at the edge are kept is unspecified: callers read past ties."""

    def __init__(self, m: int, c: int, *, _arrays: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        import faiss

        self._faiss = faiss
        if _arrays is None:
            self.ids = np.full((m, c), -1, dtype=np.int64)
            self.val = np.full((m, c), -np.inf, dtype=np.float32)
        else:
            self.ids, self.val = _arrays
        self._heaps = faiss.float_minheap_array_t()
        self._heaps.ids, self._heaps.val = faiss.swig_ptr(self.ids), faiss.swig_ptr(self.val)
        self._heaps.nh, self._heaps.k = len(self.ids), self.ids.shape[1]
        if _arrays is None:
            self._heaps.heapify()

    def add(self, scores: np.ndarray, start: int, row: int = 0) -> None:
        """Offer ``scores`` [r, w] (float32, C-contiguous) of columns ``start .. start + w - 1`` to the rows
        ``row .. row + r - 1`` (default: all rows)."""
        assert scores.dtype == np.float32 and scores.flags.c_contiguous and row + len(scores) <= len(self.ids)
        with _one_thread():  # this thread's OpenMP setting (per thread): safe from several threads at once
            self._heaps.addn(scores.shape[1], self._faiss.swig_ptr(scores), int(start), int(row), len(scores))

    def rows(self, lo: int, hi: int) -> RunningTop:
        """Rows ``lo .. hi - 1`` as a running top of their own (sharing this one's memory)."""
        return RunningTop(hi - lo, self.ids.shape[1], _arrays=(self.ids[lo:hi], self.val[lo:hi]))

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        """Columns [m, c] (-1: none, where a row had fewer than ``c`` finite entries) and their scores (-inf
        there), best first."""
        self._heaps.reorder()
        none = (self.ids < 0) | ~np.isfinite(self.val) | (self.val <= -np.finfo(np.float32).max)
        return np.where(none, -1, self.ids).astype(np.intp), np.where(none, -np.inf, self.val).astype(np.float32)


def pair_scores(vectors: np.ndarray, query_pos: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Inner products [m, c] of rows ``query_pos`` [m] of ``vectors`` with rows ``cand`` [m, c], pair by pair.

    Each value depends on the two vectors only (never on the other pairs computed with it); ``cand < 0``
    gives ``-inf``.
    """
    with _one_thread():
        return inner_products_by_idx(vectors, vectors[query_pos], cand)


def row_gram(vectors: np.ndarray, pos: np.ndarray) -> np.ndarray:
    """Inner products [m, c, c] (float32) between every two of each row's products ``pos`` [m, c] (valid rows of
    ``vectors``): one small matrix product per row, over its vectors gathered once, :data:`GATHER_BYTES` of
    rows at a time (cache-sized), BLAS on one thread per Python thread and the chunks spread over
    :func:`gram_threads` threads (BLAS's own threads gain nothing on such small products, and left spinning they
    fight the rest of the export for the cores). A row's values depend on its own products only (the same
    product shape for every row, whichever chunk or thread), so a list is the same whichever block ranks it.
    Far cheaper than pair by pair (:func:`pair_scores` gathers each vector again for every pair): in the export
    benchmark, MMR's similarities took 0.55 s instead of 1.3 s on one thread; two threads halve that."""
    m, c = pos.shape
    out = np.empty((m, c, c), dtype=np.float32)
    if m == 0 or c == 0:
        return out
    step = max(1, GATHER_BYTES // max(1, c * vectors.shape[1] * vectors.itemsize))

    def chunk(r: int) -> None:
        g = vectors[pos[r : r + step]]  # [r, c, d]
        np.matmul(g, g.transpose(0, 2, 1), out=out[r : r + step])

    starts = range(0, m, step)
    threads = min(gram_threads(), len(starts))
    with one_blas_thread():
        if threads > 1:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(chunk, starts))
        else:
            for r in starts:
                chunk(r)
    return out


def block_threads() -> int:
    """Python threads a block's exact candidates are split over (by products, BLAS on one thread each): the
    cores this process may use, at most :data:`MAX_BLOCK_THREADS`."""
    return max(1, min(MAX_BLOCK_THREADS, usable_cores()))


def usable_cores() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def gram_threads() -> int:
    """Python threads :func:`row_gram` spreads its chunks over: the cores this process may use, at most
    :data:`MAX_GRAM_THREADS`."""
    return max(1, min(MAX_GRAM_THREADS, usable_cores()))


@dataclass
class Lists:
    """One mode's ranked lists for a block of queries (row = query)."""

    #: Positions [m, k] into the recommender's ids, best first; -1 where a list is short.
    pos: np.ndarray
    #: The mode's score [m, k] (float32; NaN where short).
    score: np.ndarray
    #: Arm -> its cosine [m, k] with the query (float32; NaN where short): the arms asked for.
    arms: dict[str, np.ndarray]
    #: [m] score a product needs to possibly change the list (-inf: any qualifying product does).
    threshold: np.ndarray

    @classmethod
    def empty(cls, m: int, k: int, arms: Sequence[str]) -> Lists:
        return cls(np.full((m, k), -1, dtype=np.intp), np.full((m, k), np.nan, dtype=np.float32),
                   {a: np.full((m, k), np.nan, dtype=np.float32) for a in arms},
                   np.full(m, -np.inf, dtype=np.float32))

    def __len__(self) -> int:
        return len(self.pos)

    def put(self, rows: np.ndarray, other: Lists) -> None:
        """Rows ``rows`` of this block become ``other``'s rows (in order)."""
        self.pos[rows], self.score[rows], self.threshold[rows] = other.pos, other.score, other.threshold
        for a in self.arms:
            self.arms[a][rows] = other.arms[a]

    def take(self, rows: np.ndarray) -> Lists:
        return Lists(self.pos[rows], self.score[rows], {a: v[rows] for a, v in self.arms.items()},
                     self.threshold[rows])

    @classmethod
    def concat(cls, parts: Sequence[Lists], k: int, arms: Sequence[str]) -> Lists:
        if not parts:
            return cls.empty(0, k, arms)
        return cls(np.concatenate([p.pos for p in parts]), np.concatenate([p.score for p in parts]),
                   {a: np.concatenate([p.arms[a] for p in parts]) for a in arms},
                   np.concatenate([p.threshold for p in parts]))

    def lengths(self) -> np.ndarray:
        return (self.pos >= 0).sum(axis=1)


class Sweep:
    """Blocks of queries ranked in catalog order (a whole catalog's export): the score of products i and j is
    the same read either way (a weighted sum of inner products), so a block of queries ``a .. b - 1`` scores
    only the products from ``a`` on, and hands each later product ``j``'s scores with its queries, transposed,
    to ``j``'s running top (carried to ``j``'s own block, which then reads only from itself on). Half the
    matrix products of ranking every product; the lists are the same (every candidate is scored again pair by
    pair, see :class:`ListRanker`). Made by :meth:`ListRanker.sweep`; pass it to each
    :meth:`~ListRanker.rank` in turn.

    z-scored fusion (each query's cosines put on its own mean and spread) is not symmetric: there the block
    keeps each arm's cosines apart and hands on their sum as the later product, the query, weighs them (its
    mean and spread, computed once for all of them when the carry starts). Used when the block's queries
    are consecutive positions and the carried tops fit the ranker's block budget. A block that does not start
    where the last one ended starts the carry again from itself: the products before it are then read by
    every later block itself.
    """

    def __init__(self, ranker: ListRanker) -> None:
        self.ranker = ranker
        self._carry: dict[tuple[str, int], _Carry] = {}

    def carry(self, key: str, mode: str, qp: np.ndarray, c: int) -> _Carry | None:
        """The carry ``key`` (one per list read: a mode, or an arm's list for reciprocal-rank fusion) for a
        block ``qp`` of ``mode``'s scores read ``c`` deep, or None where the block is read alone."""
        r, m = self.ranker, len(qp)
        if not m or (np.diff(qp) != 1).any():
            return None
        a = int(qp[0])
        held = self._carry.get((key, c))
        if held is not None and held.frontier == a:
            return held
        self._carry.pop((key, c), None)
        zscored = mode == "fused" and r.zscore
        per_row = c * (4 + 8) + (4 * (len(r.arms_of(mode)) + 1) if zscored else 0)  # a top, z-score terms
        if (r.n - a) * per_row > r.budget:  # for every later product
            return None
        held = self._carry[(key, c)] = _Carry(a, a, RunningTop(r.n - a, c))
        if zscored:
            held.weigh = r.zscore_terms(np.arange(a, r.n))
        return held


@dataclass
class _Carry:
    #: Products before ``base`` are not in the carried tops: each block reads them itself.
    base: int
    #: The next block's first query: rows from here on hold the scores of products ``base .. frontier - 1``.
    frontier: int
    #: Rows ``base .. n - 1``' running tops.
    top: RunningTop
    #: z-scored fusion: each arm's coefficient [n - base] and the offset [n - base] of rows ``base .. n - 1``
    #: (:meth:`ListRanker.zscore_terms`).
    weigh: tuple[dict[str, np.ndarray], np.ndarray] | None = None


class ListRanker:
    """Ranks blocks of queries of ``rec`` under ``modes``, k and ``rules`` (see the module).

    Parameters
    ----------
    rec : Recommender
    modes : sequence of str
        Modes of ``rec`` (arms, ``fused``, ``rrf``).
    k : int
        List length.
    rules : BoundRules, optional
        From :meth:`~prodrec.rank.rules.Rules.bind` over ``rec.ids``.
    weights, alpha : optional
        Fusion weights (default: the recommender's).
    arm_scores : bool
        Also return every arm's cosine of each listed product.
    budget : int, optional
        Bytes of block scores at a time (default :func:`block_budget` of the arms' vectors).
    exact : bool, optional
        Rank exactly even when the recommender has an approximate index (default: as its index).
    """

    def __init__(self, rec: Recommender, modes: Sequence[str], k: int, rules: BoundRules | None = None, *,
                 weights: Mapping[str, float] | None = None, alpha: float | None = None, arm_scores: bool = False,
                 budget: int | None = None, exact: bool | None = None) -> None:
        self.modes = [params.check_mode(m, rec.arms) for m in dict.fromkeys(modes)]
        if not self.modes:
            raise ConfigError("name at least one mode to rank with")
        self.k = params.check_k(k, len(rec))
        self.rec, self.rules = rec, rules
        self.weights = rec.fusion_weights(alpha, weights) if len(rec.arms) > 1 else {a: 1.0 for a in rec.arms}
        self.vectors = {a: index.vectors for a, index in rec.arms.items()}
        self.n = len(rec)
        self.exact = rec.index_kind == "exact" if exact is None else bool(exact)
        self.score_arms = list(rec.arms) if arm_scores else []
        self.zscore = rec.calibration == "zscore"
        self.greedy = rules is not None and rules.rules.greedy
        self.need = diversity_pool(self.k) if rules is not None and rules.rules.diversity is not None else self.k
        self.need = min(self.need, self.n - 1)
        nbytes = sum(v.nbytes for v in self.vectors.values())
        self.budget = int(budget) if budget else block_budget(nbytes)
        fusing_z = self.zscore and "fused" in self.modes
        self._moments = {a: fusion.moments(self.vectors[a]) for a in self.arms_of("fused")} if fusing_z else {}

    # ------------------------------------------------------------------ public
    def arms_of(self, mode: str) -> list[str]:
        """The arms a mode scores with (weight > 0 for fusion modes)."""
        if mode in FUSION_MODES:
            return [a for a in self.rec.arms if self.weights[a] > 0]
        return [mode]

    @property
    def tile(self) -> int:
        return min(self.n, TILE)

    @property
    def rows_per_block(self) -> int:
        """Queries scored at once: as many as the budget holds tiles of scores for."""
        return max(1, min(MAX_BLOCK_ROWS, self.budget // (4 * self.tile * TILE_COPIES)))

    def describe(self) -> dict[str, Any]:
        return {"modes": self.modes, "k": self.k, "weights": self.weights, "calibration": self.rec.calibration,
                "index": self.rec.index_kind, "rules": None if self.rules is None else self.rules.rules.to_dict(),
                "arm_scores": bool(self.score_arms)}

    def sweep(self) -> Sweep:
        """A :class:`Sweep` for ranking blocks of queries in catalog order (pass it to each :meth:`rank`)."""
        return Sweep(self)

    def rank(self, query_pos: np.ndarray, sweep: Sweep | None = None) -> dict[str, Lists]:
        """Each mode's lists for query positions ``query_pos`` [m] (rows of ``rec.ids``). ``sweep``: this
        block is the next of a :class:`Sweep` (the same lists, fewer products read)."""
        qp = np.asarray(query_pos, dtype=np.intp)
        if sweep is not None and sweep.ranker is not self:
            raise ValueError("a sweep serves the ranker that made it")
        step = self.rows_per_block
        parts = [self._rank_block(qp[b : b + step], sweep) for b in range(0, len(qp), step)]
        return {mode: Lists.concat([p[mode] for p in parts], self.k, self.score_arms) for mode in self.modes}

    # ------------------------------------------------------------------ one block
    def _rank_block(self, qp: np.ndarray, sweep: Sweep | None = None) -> dict[str, Lists]:
        stats = {a: self._moment_stats(a, qp) for a in self._moments}
        out = {}
        for mode in self.modes:
            if mode == "rrf":
                out[mode] = self._rrf(qp, sweep)
            else:
                out[mode] = self._choose(mode, qp, self._source(mode, qp, stats, sweep), stats)
        return out

    def zscore_terms(self, pos: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """z-scored fusion as one weighted sum for queries ``pos``: each fused arm's coefficient
        ``w_a / sd_a`` and the offset ``sum_a w_a mu_a / sd_a`` (float32 [len(pos)]; the fused score of
        product j is ``sum_a coef_a cos_a(j) - offset``), block by block."""
        step = self.rows_per_block
        parts = [self._zscore_weights({a: self._moment_stats(a, pos[s0 : s0 + step]) for a in self.arms_of("fused")})
                 for s0 in range(0, len(pos), step)]
        return ({a: np.concatenate([coef[a] for coef, _ in parts]) for a in self.arms_of("fused")},
                np.concatenate([offset for _, offset in parts]))

    def _zscore_weights(self, stats: Mapping[str, tuple[np.ndarray, np.ndarray]]
                        ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Each arm's coefficient ``w_a / sd_a`` and the offset ``sum_a w_a mu_a / sd_a`` (float32) of queries
        whose means and spreads are ``stats`` (arm -> (mu, sd))."""
        coef = {a: np.full(len(mu), self.weights[a], dtype=np.float32) / np.maximum(sd, fusion.MIN_SPREAD)
                for a, (mu, sd) in stats.items()}
        return coef, sum((coef[a] * mu for a, (mu, _) in stats.items()), np.zeros(1, dtype=np.float32))

    def _moment_stats(self, arm: str, qp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and spread of each query's cosines over the catalog, from the arm's moments (z-scores)."""
        mu, cov = self._moments[arm]
        q = self.vectors[arm][qp]
        sd = np.sqrt(np.maximum(np.einsum("md,md->m", q @ cov, q), 0.0))
        return (q @ mu).astype(np.float32), sd.astype(np.float32)

    def _source(self, mode: str, qp: np.ndarray, stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
                sweep: Sweep | None = None, key: str | None = None) -> Source:
        """Where a mode's candidates come from: the block's scores (exact) or the approximate index (which
        hands over to exact scores for rows that must read a quarter of the catalog or more). ``sweep`` serves
        the first read (all the block's rows; deeper reads are for a few rows and read every product)."""

        def read(rows: np.ndarray, c: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            nonlocal sweep
            first, sweep = sweep, None
            if self.exact or 4 * c >= self.n:
                carry = first.carry(key or mode, mode, qp[rows], min(c, self.n)) if first is not None else None
                return self._stream(mode, qp[rows], c, {a: (mu[rows], sd[rows]) for a, (mu, sd) in stats.items()},
                                    carry)
            weights = self.weights if mode in FUSION_MODES else None
            pos, _ = self.rec.topk_positions(c, mode, query_pos=qp[rows], weights=weights)
            return pos, np.full(len(rows), -np.inf), np.zeros(len(rows), dtype=bool)

        return read

    def _stream(self, mode: str, qp: np.ndarray, c: int, stats: Mapping[str, tuple[np.ndarray, np.ndarray]],
                carry: _Carry | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The best ``c`` candidates of each query by the block's scores (the query and masked products left
        out), the catalog read tile by tile; see :data:`Source`. With a ``carry`` (:class:`Sweep`; the queries
        are the consecutive products ``a .. b - 1``): the products from ``carry.base`` to ``a`` come from the
        carried tops, and the scores of products from ``b`` on are also handed, transposed, to theirs."""
        m, n = len(qp), self.n
        c = min(c, n)
        arms = self.arms_of(mode)
        if mode == "fused" and self.zscore:  # sum_a w_a (cos_a - mu_a) / sd_a as one product per arm
            coefs, offset = self._zscore_weights({a: stats[a] for a in arms})
        else:
            coefs = {a: np.full(m, self.weights[a] if mode == "fused" else 1.0, dtype=np.float32) for a in arms}
            offset = np.zeros(m, dtype=np.float32)  # not read
        queries = {a: coefs[a][:, None] * self.vectors[a][qp] for a in arms}
        # The catalog is split into one column range per thread (each thread reads its own products once, and
        # all the block's queries), read in tiles of tile / threads columns (the block's scores stay within
        # its budget). A block of few queries (one recommendation) stays on this thread with BLAS's own threads.
        # Products read: all, or with a carry those before its base, the block's own and those after it (whose
        # scores are also handed on, "mirrored").
        if carry is None:
            spans = [(0, n, False)]
        else:
            a, b = int(qp[0]), int(qp[-1]) + 1
            spans = [(0, carry.base, False), (a, b, False), (b, n, True)]
        read_n = sum(hi - lo for lo, hi, _ in spans)
        threads = min(block_threads(), -(-read_n // MIN_THREAD_COLUMNS)) if m >= MIN_THREAD_ROWS else 1
        width = -(-self.tile // threads)
        # each span split evenly over the threads
        parts: list[list[tuple[int, int, bool]]] = [[] for _ in range(threads)]
        for lo, hi, mirror in spans:
            bounds = np.linspace(lo, hi, threads + 1).astype(int)
            for i, (s0, s1) in enumerate(zip(bounds[:-1], bounds[1:])):
                if s1 > s0:
                    parts[i].append((int(s0), int(s1), mirror))
        parts = [p for p in parts if p]
        weigh = carry.weigh if carry is not None else None
        copies = min(2, len(queries)) + (carry is not None)
        if weigh is not None:  # z-scores handed on: each arm's cosines apart, the sum and its mirror, a spare
            copies = len(queries) + 3
            width = max(1, -(-self.tile * TILE_COPIES // (threads * copies)))
        # buffers and heaps are made here, on this thread: memory a worker thread allocates stays in its own
        # malloc arena (the export's peak grew by a third when each thread made its own)
        buffers = [[np.empty(m * width, dtype=np.float32) for _ in range(copies)] for _ in parts]
        heaps = [RunningTop(m, c) for _ in parts]

        def zscored(bufs: list[np.ndarray], cols: slice, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
            """The block's z-scored fusion over products ``cols`` [m, w], and the same pairs as those products
            weigh them [w, m]: each arm's cosines apart, then summed both ways."""
            assert carry is not None and weigh is not None
            size, (col_coef, col_offset) = shape[0] * shape[1], weigh
            here = slice(cols.start - carry.base, cols.stop - carry.base)  # the products' rows in weigh
            key, back, spare = (bufs[j][:size] for j in (0, -2, -1))
            key, back = key.reshape(shape), back.reshape(shape[::-1])
            for j, arm in enumerate(queries):
                cos = bufs[1 + j][:size].reshape(shape)
                np.matmul(self.vectors[arm][a:b], self.vectors[arm][cols].T, out=cos)  # consecutive queries
                if j == 0:
                    np.multiply(cos, coefs[arm][:, None], out=key)
                    np.multiply(cos.T, col_coef[arm][here, None], out=back)
                else:
                    term = spare.reshape(shape)
                    np.multiply(cos, coefs[arm][:, None], out=term)
                    key += term
                    term_t = spare.reshape(shape[::-1])
                    np.multiply(cos.T, col_coef[arm][here, None], out=term_t)
                    back += term_t
            key -= offset[:, None]
            back -= col_offset[here, None]
            return key, back

        def part(i: int) -> None:
            best, bufs = heaps[i], buffers[i]
            for lo, hi, mirror in parts[i]:
                for t0 in range(lo, hi, width):
                    cols = slice(t0, min(hi, t0 + width))
                    shape = (m, cols.stop - cols.start)
                    if mirror and weigh is not None:
                        key, back = zscored(bufs, cols, shape)
                    else:
                        key = bufs[0][: shape[0] * shape[1]].reshape(shape)  # C-contiguous whatever the width
                        for j, (arm, q) in enumerate(queries.items()):
                            if j == 0:
                                np.matmul(q, self.vectors[arm][cols].T, out=key)
                            else:
                                prod = bufs[1][: shape[0] * shape[1]].reshape(shape)
                                np.matmul(q, self.vectors[arm][cols].T, out=prod)
                                np.add(key, prod, out=key)
                        if mode == "fused" and self.zscore:
                            key -= offset[:, None]
                    if mirror:  # products cols as queries, the block's as candidates (before the block's masks)
                        assert carry is not None
                        if weigh is None:
                            back = bufs[-1][: shape[0] * shape[1]].reshape(shape[::-1])
                            np.copyto(back, key.T)
                        if self.rules is not None:
                            self.rules.mask_scores(back, np.arange(cols.start, cols.stop), slice(a, b))
                        carry.top.add(back, a, row=cols.start - carry.base)
                    own = np.flatnonzero((qp >= cols.start) & (qp < cols.stop))
                    key[own, qp[own] - cols.start] = -np.inf
                    if self.rules is not None:
                        self.rules.mask_scores(key, qp, cols)
                    best.add(key, cols.start)

        if len(parts) > 1:
            with one_blas_thread(), ThreadPoolExecutor(len(parts)) as pool:  # no BLAS threads left spinning
                list(pool.map(part, range(len(parts))))
        elif parts:
            part(0)
        found = [h.result() for h in heaps]
        if carry is not None:
            if a > carry.base:  # what the blocks before handed on
                found.append(carry.top.rows(a - carry.base, b - carry.base).result())
            carry.frontier = b
        run_p, run_v = found[0]
        if len(found) > 1:  # the best c of the ranges' best c
            ids, vals = np.concatenate([p for p, _ in found], axis=1), np.concatenate([v for _, v in found], axis=1)
            merged = RunningTop(m, c)
            merged.add(np.ascontiguousarray(vals), 0)
            col, run_v = merged.result()
            run_p = np.where(col >= 0, np.take_along_axis(ids, np.maximum(col, 0), axis=1), -1)
        bound = run_v[:, -1].astype(np.float64) if c else np.full(m, -np.inf)
        exhausted = ~np.isfinite(bound) | (c >= n - 1)
        return run_p, np.where(exhausted, -np.inf, bound), exhausted

    # ------------------------------------------------------------------ canonical scores
    def canonical(self, mode: str, qp: np.ndarray, cand: np.ndarray,
                  stats: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        """The mode's score of each (query, candidate) pair [m, c], pair by pair (``-inf``: not a candidate:
        no position, the query itself, or left out by a mask). Not for ``rrf`` (its scores are ranks)."""
        total: np.ndarray | None = None
        for a in self.arms_of(mode):
            s = pair_scores(self.vectors[a], qp, cand)
            if mode == "fused":
                if self.zscore:
                    mu, sd = (stats or {})[a]
                    s = (s - mu[:, None]) / np.maximum(sd, fusion.MIN_SPREAD)[:, None]
                s = self.weights[a] * s
            total = s if total is None else total + s
        assert total is not None
        return self._invalidate(total, qp, cand)

    def _invalidate(self, scores: np.ndarray, qp: np.ndarray, cand: np.ndarray) -> np.ndarray:
        bad = (cand < 0) | (cand == qp[:, None])
        if self.rules is not None and self.rules.masks:
            bad |= ~self.rules.allowed_pairs(qp, np.where(cand < 0, 0, cand))
        scores[bad] = -np.inf
        return scores

    def _eps(self, mode: str, stats: Mapping[str, tuple[np.ndarray, np.ndarray]], rows: np.ndarray) -> np.ndarray:
        """Per query: how far a block score may stray from the pairwise one (z-scores scale it by 1 / sd)."""
        if mode == "fused" and self.zscore:
            return EPS * sum(self.weights[a] / np.maximum(stats[a][1][rows], fusion.MIN_SPREAD)
                             for a in self.arms_of(mode)) + EPS
        return np.full(len(rows), EPS, dtype=np.float64)

    # ------------------------------------------------------------------ choosing
    def _choose(self, mode: str, qp: np.ndarray, source: Source,
                stats: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Lists:
        out = Lists.empty(len(qp), self.k, self.score_arms)
        todo = np.arange(len(qp))
        c = min(self.n - 1, self.need + max(MARGIN, self.need // 4))
        while todo.size:
            cand, bound, exhausted = source(todo, c)
            rows_stats = {a: (mu[todo], sd[todo]) for a, (mu, sd) in stats.items()}
            scores = self.canonical(mode, qp[todo], cand, rows_stats)
            cand, scores = _sorted(cand, scores)
            certain = scores > (bound + self._eps(mode, stats, todo))[:, None]
            lists, done = self._pick(mode, qp[todo], cand, scores, certain, exhausted | (c >= self.n - 1))
            out.put(todo[done], lists.take(done))
            todo = todo[~done]
            c = min(self.n - 1, 2 * c)
        return out

    def _pick(self, mode: str, qp: np.ndarray, cand: np.ndarray, scores: np.ndarray, certain: np.ndarray,
              exhausted: np.ndarray) -> tuple[Lists, np.ndarray]:
        """Lists from sorted candidates, and which rows are final (their choice cannot change by reading on)."""
        m, k = len(qp), self.k
        valid = np.isfinite(scores)
        grams: dict[str, np.ndarray] = {}
        if self.greedy:
            keep, grams = self._distinct(mode, qp, cand, valid, self.need)  # [m, c] kept flags, pool order
        else:
            keep = valid & (np.cumsum(valid, axis=1) <= self.need)
        n_kept = keep.sum(axis=1)
        last = np.where(n_kept > 0, _last_true(keep), 0)
        full = n_kept >= self.need
        done = exhausted | (full & certain[np.arange(m), last])
        pool_pos = _compact(cand, keep, self.need, -1)
        pool_score = _compact(scores, keep, self.need, -np.inf)
        threshold = np.where(full, pool_score[:, -1] if self.need else -np.inf, -np.inf).astype(np.float32)
        if self.rules is not None and self.rules.rules.diversity is not None:
            # the pool's columns among (query, candidates...), where the duplicates' similarities were computed
            pool_cols = _compact(np.broadcast_to(np.arange(1, cand.shape[1] + 1), cand.shape), keep, self.need, 0)
            order = self._mmr(mode, pool_pos, pool_score, {a: (g, pool_cols) for a, g in grams.items()})
            picked = np.maximum(order, 0)
            pos = np.where(order >= 0, np.take_along_axis(pool_pos, picked, axis=1), -1)
            score = np.where(order >= 0, np.take_along_axis(pool_score, picked, axis=1), -np.inf)
        else:
            pos, score = pool_pos[:, :k], pool_score[:, :k]
        if pos.shape[1] < k:
            pad = k - pos.shape[1]
            pos = np.pad(pos, ((0, 0), (0, pad)), constant_values=-1)
            score = np.pad(score, ((0, 0), (0, pad)), constant_values=-np.inf)
        lists = Lists(pos, np.where(pos >= 0, score, np.nan).astype(np.float32),
                      self._arm_scores(qp, pos), threshold)
        return lists, done

    def _arm_scores(self, qp: np.ndarray, pos: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for a in self.score_arms:
            s = pair_scores(self.vectors[a], qp, pos)
            out[a] = np.where(pos >= 0, s, np.nan).astype(np.float32)
        return out

    def _near(self, arms: Sequence[str], pos: np.ndarray, threshold: float
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Bool [m, c, c]: pairs of each row's products ``pos`` [m, c] whose cosine reaches ``threshold`` in every
        arm of ``arms`` (:func:`row_gram`); the arms are read smallest first, and a larger arm only for the rows
        where some pair is still near. Also each arm's similarities [m, c, c] where they were computed for every
        row (MMR reuses them)."""
        m, c = pos.shape
        near = np.triu(np.ones((c, c), dtype=bool), 1)[None].repeat(m, axis=0)  # pairs i < j, mirrored at the end
        rows = np.arange(m)
        grams = {}
        for a in sorted(arms, key=lambda name: self.vectors[name].shape[1]):
            if not len(rows):
                break
            g = row_gram(self.vectors[a], pos[rows])
            if len(rows) == m:
                grams[a] = g
            near[rows] &= g >= threshold
            rows = rows[near[rows].any(axis=(1, 2))]
        return near | near.transpose(0, 2, 1), grams

    def _distinct(self, mode: str, qp: np.ndarray, cand: np.ndarray, valid: np.ndarray, target: int
                  ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Greedy flags [m, c]: each valid candidate in order, kept unless it duplicates the query or a kept
        one (and until ``target`` are kept); without ``exclude_duplicates`` the first ``target`` valid. Also the
        arms' similarities [m, c + 1, c + 1] between the query and candidates, where they were computed for
        every row (see :meth:`_near`; only the first ``target + DUPLICATE_SLACK + 1`` columns of a row that
        kept ``target`` among those candidates are filled).

        The first ``target + DUPLICATE_SLACK`` candidates are compared first; only the rows that did not keep
        ``target`` among them (duplicates, or too few valid) compare them all: the choice of a row that did
        cannot change, and its similarities cost (target + slack + 1)^2 instead of (c + 1)^2 products."""
        assert self.rules is not None
        threshold = self.rules.rules.exclude_duplicates
        if threshold is None:
            return valid & (np.cumsum(valid, axis=1) <= target), {}
        m, c = cand.shape
        both = np.concatenate([qp[:, None], np.where(cand < 0, qp[:, None], cand)], axis=1)  # the query first
        w = min(c, target + DUPLICATE_SLACK)
        kept, grams = np.zeros((m, c), dtype=bool), {}
        kept[:, :w], first = self._greedy(mode, both[:, : w + 1], valid[:, :w], target, threshold)
        redo = np.flatnonzero(kept.sum(axis=1) < target) if w < c else np.zeros(0, dtype=np.intp)
        if redo.size:
            kept[redo], again = self._greedy(mode, both[redo], valid[redo], target, threshold)
        for a, g in first.items():
            if redo.size and a not in again:
                continue
            grams[a] = np.zeros((m, c + 1, c + 1), dtype=np.float32)
            grams[a][:, : w + 1, : w + 1] = g
            if redo.size:
                grams[a][redo] = again[a]
        return kept, grams

    def _greedy(self, mode: str, both: np.ndarray, valid: np.ndarray, target: int, threshold: float
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """:meth:`_distinct`'s walk over the query and candidates ``both`` [m, 1 + c] (``valid`` [m, c])."""
        assert self.rules is not None
        m, c = valid.shape
        near, grams = self._near(self.arms_of(mode), both, threshold)
        near |= self.rules.same_name(both[:, :, None], both[:, None, :])
        kept = np.zeros((m, c + 1), dtype=bool)
        kept[:, 0] = True
        n_kept = np.zeros(m, dtype=np.intp)
        for j in range(1, c + 1):
            dup = (near[:, j, :j] & kept[:, :j]).any(axis=1)
            take = valid[:, j - 1] & ~dup & (n_kept < target)
            kept[:, j] = take
            n_kept += take
        return kept[:, 1:], grams

    def _mmr(self, mode: str, pool: np.ndarray, rel: np.ndarray,
             known: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        """MMR's picks [m, <= k]: columns of each row's pool (-1: no pick left), in pick order; ties go to
        the earlier pool column (better relevance). ``known``: arm -> similarities already computed between
        each row's products, and the pool's columns among them (see :meth:`_pool_similarity`)."""
        assert self.rules is not None and self.rules.rules.diversity is not None
        lam = float(self.rules.rules.diversity)
        m, p = pool.shape
        k = min(self.k, p)
        valid = pool >= 0
        r = np.where(valid, rel, np.nan).astype(np.float64)
        lo, hi = np.nanmin(np.where(valid, r, np.inf), axis=1), np.nanmax(np.where(valid, r, -np.inf), axis=1)
        span = np.where(hi > lo, hi - lo, 1.0)
        rel01 = np.where(valid, (r - lo[:, None]) / span[:, None], 0.0)
        rel01 = np.where(valid & ~(hi > lo)[:, None], 1.0, rel01)
        gram = self._pool_similarity(mode, np.where(valid, pool, 0), known) if k > 1 else np.zeros((m, p, p))
        chosen = np.zeros((m, p), dtype=bool)
        maxsim = np.zeros((m, p), dtype=np.float64)
        order = np.full((m, k), -1, dtype=np.intp)
        rows = np.arange(m)
        for t in range(k):
            value = lam * rel01 - (1.0 - lam) * (maxsim if t else 0.0)
            value = np.where(valid & ~chosen, value, -np.inf)
            pick = np.argmax(value, axis=1)
            ok = np.isfinite(value[rows, pick])
            order[ok, t] = pick[ok]
            chosen[rows[ok], pick[ok]] = True
            if t + 1 < k and ok.any():  # similarity of the pool to the new pick
                live = rows[ok]
                sim = gram[live, pick[ok]]
                maxsim[live] = np.maximum(maxsim[live], sim) if t else sim
        return order

    def _pool_similarity(self, mode: str, pool: np.ndarray,
                         known: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None) -> np.ndarray:
        """[m, p, p] float64: the mode's similarity (its arms' cosines, weighted as fusion weighs them) between
        every two products of each row's pool ``pool`` [m, p] (positions, all valid; :func:`row_gram`). An arm
        in ``known`` (its similarities [m, w, w] between each row's products, and the pool's columns [m, p]
        among them) is read from there instead: the duplicates rule computed them."""
        m, p = pool.shape
        gram = np.zeros((m, p, p), dtype=np.float64)
        rows = np.arange(m)[:, None, None]
        for a in self.arms_of(mode):
            if known and a in known:
                g, cols = known[a]
                part = g[rows, cols[:, :, None], cols[:, None, :]]
            else:
                part = row_gram(self.vectors[a], pool)
            gram += (self.weights[a] if mode in FUSION_MODES else 1.0) * part
        return gram

    # ------------------------------------------------------------------ reciprocal-rank fusion
    def _rrf(self, qp: np.ndarray, sweep: Sweep | None = None) -> Lists:
        """Reciprocal-rank fusion of each arm's list (read ``rrf_depth`` deep, masks applied), then the choice;
        a list the rules leave short is fused again from deeper arm lists. ``sweep`` serves the first reads."""
        out = Lists.empty(len(qp), self.k, self.score_arms)
        todo = np.arange(len(qp))
        need = self.need
        arms = self.arms_of("rrf")
        while todo.size:
            depth = fusion.rrf_depth(need, self.n)
            lists, exhausted = [], np.ones(len(todo), dtype=bool)
            for a in arms:
                source = self._source(a, qp[todo], {}, sweep if need == self.need else None, key=f"rrf/{a}")
                cand, _, ex = source(np.arange(len(todo)), min(self.n - 1, depth + MARGIN))
                scores = self._invalidate(pair_scores(self.vectors[a], qp[todo], cand), qp[todo], cand)
                cand, scores = _sorted(cand, scores)
                cand = np.where(np.isfinite(scores), cand, -1)[:, :depth]
                exhausted &= ex | ((cand >= 0).sum(axis=1) < depth) | (depth >= self.n - 1)
                lists.append(cand)
            cand, scores = _sorted(*_rrf_scores(lists, [self.weights[a] for a in arms]))
            lists_, done = self._pick("rrf", qp[todo], cand, scores, np.ones(cand.shape, dtype=bool), exhausted)
            out.put(todo[done], lists_.take(done))
            todo = todo[~done]
            need *= 2
        return out


# ---------------------------------------------------------------------- helpers on arrays
def _sorted(cand: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row by score descending, equal scores by position ascending, non-candidates last."""
    key_pos = np.where(np.isfinite(scores), cand, np.iinfo(np.intp).max)
    order = np.lexsort((key_pos, -np.where(np.isfinite(scores), scores, -np.inf)), axis=1)
    return np.take_along_axis(cand, order, axis=1), np.take_along_axis(scores, order, axis=1)


def _last_true(flags: np.ndarray) -> np.ndarray:
    return flags.shape[1] - 1 - np.argmax(flags[:, ::-1], axis=1)


def _compact(values: np.ndarray, keep: np.ndarray, width: int, fill: Any) -> np.ndarray:
    """Each row's kept values moved to the front, in order, cut or padded to ``width``."""
    m, c = values.shape
    order = np.argsort(~keep, axis=1, kind="stable")[:, :width]
    out = np.take_along_axis(values, order, axis=1)
    kept = np.take_along_axis(keep, order, axis=1)
    out = np.where(kept, out, fill)
    if out.shape[1] < width:
        out = np.pad(out, ((0, 0), (0, width - out.shape[1])), constant_values=fill)
    return out


def _rrf_scores(lists: Sequence[np.ndarray], weights: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Weighted reciprocal-rank fusion of each row's lists (-1 entries skipped): candidates [m, c] (-1
    padded) and float32 scores ``sum_a w_a / (RRF_K + rank_a)`` (-inf where padded)."""
    m = len(lists[0]) if lists else 0
    rows, pos, term = [], [], []
    for lst, w in zip(lists, weights):
        r, j = np.nonzero(lst >= 0)
        rows.append(r)
        pos.append(lst[r, j])
        term.append(w / (fusion.RRF_K + j + 1.0))
    r, p, t = np.concatenate(rows), np.concatenate(pos), np.concatenate(term)
    order = np.lexsort((p, r))  # stable: for one (row, product) the arms' terms add in arm order
    r, p, t = r[order], p[order], t[order]
    first = np.ones(len(r), dtype=bool)
    first[1:] = (r[1:] != r[:-1]) | (p[1:] != p[:-1])
    starts = np.flatnonzero(first)
    rr, pp = r[starts], p[starts]
    ss = np.add.reduceat(t, starts) if len(t) else np.zeros(0)
    width = int(np.bincount(rr, minlength=m).max()) if len(rr) else 0
    cand = np.full((m, width), -1, dtype=np.intp)
    scores = np.full((m, width), -np.inf, dtype=np.float32)
    col = np.arange(len(rr)) - np.searchsorted(rr, rr)
    cand[rr, col], scores[rr, col] = pp, ss.astype(np.float32)
    return cand, scores


def recommend_lists(
    rec: Recommender, query_id: Any, k: int = 5, modes: Sequence[str] = ("fused",), rules: BoundRules | None = None,
    alpha: float | None = None, weights: Mapping[str, float] | None = None,
) -> dict[str, pd.DataFrame]:
    """One query's recommendations under ``modes`` with ``rules`` applied inside the ranking: per mode a
    table ``rank, id, score`` and each other arm's cosine ``<arm>_score`` (as
    :meth:`~prodrec.rank.recommender.Recommender.recommend_modes`). A list may be shorter than k when fewer
    products qualify. Always exact (one matrix-vector product per arm)."""
    qp = rec.positions([query_id])[:1]
    ranker = ListRanker(rec, modes, k, rules, weights=weights, alpha=alpha, arm_scores=True, exact=True)
    lists = ranker.rank(qp)
    out = {}
    for mode, lst in lists.items():
        ok = lst.pos[0] >= 0
        pos = lst.pos[0][ok]
        df = pd.DataFrame({"rank": np.arange(1, len(pos) + 1), "id": rec.ids[pos], "score": lst.score[0][ok]})
        for a in rec.arms:
            if a != mode:
                df[f"{a}_score"] = lst.arms[a][0][ok]
        out[mode] = df
    return out
