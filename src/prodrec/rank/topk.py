"""Top-k: the one place every exact search, index and fusion ranks with.

* :func:`select_topk` - rows of scores in, positions and scores out, best first;
* :func:`order_by_score` - the tie rule: best score first, equal scores by smaller position (exactly: when
  several entries tie at the k-th score, the smallest positions are kept);
* :func:`blocked_topk` - top-k of many queries in blocks of :func:`block_rows` queries, under one or more
  rankings at once;
* :func:`blocked_search` - exact inner-product search of many queries in blocks of :func:`block_rows`
  queries (one BLAS matrix product per block, bounded memory: never an m x n matrix), optionally for rows of
  the searched vectors themselves, each left out of its own results;
* :func:`exclude_self` / :func:`drop_self` - self-exclusion (a product is not its own recommendation),
  before selection (its score set to ``-inf``) or after it (a top-(k+1) list cut to k, for searches such as
  FAISS's that cannot mask).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "BLOCK_BYTES",
    "HEAP_MIN_SCORES",
    "MAX_BLOCK_ROWS",
    "SELECT_CHUNK",
    "block_rows",
    "blocked_search",
    "blocked_topk",
    "drop_self",
    "exclude_self",
    "one_blas_thread",
    "order_by_score",
    "select_topk",
    "unranked",
]

@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def one_blas_thread() -> Any:
    """Context: BLAS on one thread, for many small matrix products. They gain nothing from more, and
    OpenBLAS threads left spinning after one fight other work for the cores of a small machine (a text
    search's query: 43 ms instead of 20 ms on 2 cores, benchmarks' search section; MMR's pool similarities
    in an export: about half the time)."""
    return _blas_controller().limit(limits=1, user_api="blas")


#: Memory budget of one block of float32 scores in many-query search.
BLOCK_BYTES = 128 * 2**20
#: Queries per block at most (their vectors are copied per block when they are indexed rows).
MAX_BLOCK_ROWS = 4096
#: Scores per top-k selection pass (argpartition needs an int64 index per score: 32 MiB at this size).
SELECT_CHUNK = 1 << 22
#: Scores from which :func:`select_topk` uses FAISS's heap selection (below, ``argpartition`` costs less
#: than the call).
HEAP_MIN_SCORES = 1 << 14


def order_by_score(pos: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row of (``pos``, ``scores``) [m, k] sorted by score descending, then position ascending.

    Entries at position ``-1`` (FAISS's "no result") go last. Scores keep their dtype.
    """
    pos = pos.astype(np.intp, copy=False)
    if len(pos) == 0:
        return pos, scores
    key = np.where(pos < 0, -np.inf, scores)
    order = np.lexsort((np.where(pos < 0, np.iinfo(np.intp).max, pos), -key), axis=1)
    return np.take_along_axis(pos, order, axis=1), np.take_along_axis(scores, order, axis=1)


def select_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``scores`` [m, n]: positions sorted by score descending, then position ascending.

    Exact under ties: when several entries tie at the k-th score, the smallest positions are kept.
    Entries set to ``-inf`` are never chosen unless a row has fewer than k finite entries.

    float32 scores go through FAISS's heap selection (one pass over each row, k comparisons kept, its
    OpenMP threads over rows: about 10x ``argpartition`` on a 5,000-product catalog), with positions fed
    in reverse so that its tie rule keeps the smaller ones; rows it cannot fill with k finite entries, and
    other dtypes, take :func:`_partition_topk`.
    """
    m, n = scores.shape
    if scores.dtype != np.float32 or k >= n or m * n < HEAP_MIN_SCORES or not _heap_keeps_smaller_positions():
        return _partition_topk(scores, k)
    pos, vals = _heap_topk(scores, k)
    short = np.flatnonzero((pos < 0).any(axis=1))
    if len(short):
        pos[short], vals[short] = _partition_topk(scores[short], k)
    return order_by_score(pos, vals)


def _heap_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """FAISS's min-heap top-k of each row (float32): positions (-1 where fewer than k entries are above
    ``-FLT_MAX``) and their scores, unordered. Among equal scores FAISS keeps the larger id, so ids go in as
    ``n - 1 - position``."""
    import faiss

    m, n = scores.shape
    scores = np.ascontiguousarray(scores)
    vals = np.empty((m, k), dtype=np.float32)
    ids = np.empty((m, k), dtype=np.int64)
    heaps = faiss.float_minheap_array_t()
    heaps.nh, heaps.k, heaps.val, heaps.ids = m, k, faiss.swig_ptr(vals), faiss.swig_ptr(ids)
    heaps.heapify()
    reversed_ids = np.arange(n - 1, -1, -1, dtype=np.int64)  # held here: FAISS reads it through a pointer
    heaps.addn_with_ids(n, faiss.swig_ptr(scores), faiss.swig_ptr(reversed_ids), 0)
    pos = np.where(ids >= 0, n - 1 - ids, -1).astype(np.intp)
    return pos, vals


@functools.cache
def _heap_keeps_smaller_positions() -> bool:
    """Whether this FAISS's heaps break ties as :func:`_heap_topk` expects (checked once, on ties at the cut
    and inside the list): else every selection takes ``argpartition``."""
    scores = np.array([[1, 3, 1, 2, 1, 3, 1, 2], [0, 0, 0, 0, 0, 0, 0, 0]], dtype=np.float32)
    pos, vals = _heap_topk(np.repeat(scores, 2, axis=1), 5)
    got = order_by_score(pos, vals)[0]
    return got.tolist() == [[2, 3, 10, 11, 6], [0, 1, 2, 3, 4]]


def _partition_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`select_topk` by ``argpartition`` (any dtype; ``-inf`` entries taken by position when a row has
    fewer than k finite ones)."""
    m, n = scores.shape
    if m > 1 and m * n > SELECT_CHUNK:  # selection needs ~13 bytes per score: do it a few rows at a time
        step = max(1, SELECT_CHUNK // n)
        parts = [_partition_topk(scores[i : i + step], k) for i in range(0, m, step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    if k >= n:
        cand = np.broadcast_to(np.arange(n), (m, n)).copy()
    else:
        cand = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        kth = np.take_along_axis(scores, cand, axis=1).min(axis=1)
        n_ge = (scores >= kth[:, None]).sum(axis=1)
        for r in np.flatnonzero(n_ge > k):  # a tie straddles the cut: choose among ties by position
            above = np.flatnonzero(scores[r] > kth[r])
            tied = np.flatnonzero(scores[r] == kth[r])[: k - len(above)]
            cand[r] = np.concatenate([above, tied])
    pos, vals = order_by_score(cand, np.take_along_axis(scores, cand, axis=1))
    return pos[:, :k], vals[:, :k]


def block_rows(n: int, copies: int = 1) -> int:
    """Queries per block when each query scores ``n`` vectors in ``copies`` float32 arrays at once: as many
    as :data:`BLOCK_BYTES` holds, between 1 and :data:`MAX_BLOCK_ROWS`."""
    return max(1, min(MAX_BLOCK_ROWS, BLOCK_BYTES // (4 * n * copies)))


def exclude_self(scores: np.ndarray, query_pos: np.ndarray) -> np.ndarray:
    """Set each row's score of its own query position to ``-inf`` (in place; rows whose position is
    negative, i.e. queries that are not indexed rows, are left alone); returns ``scores``."""
    rows = np.flatnonzero(np.asarray(query_pos) >= 0)
    scores[rows, np.asarray(query_pos)[rows]] = -np.inf
    return scores


def blocked_topk(
    m: int, k: int, block: int, scores_of: Callable[[slice], Iterable[np.ndarray]], rankings: int = 1,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Top-k of ``m`` query rows under one or more rankings, ``block`` rows at a time (bounded memory).

    ``scores_of(rows)`` yields, for the query rows in the slice ``rows``, one float score block
    [len(rows), n] per ranking (each consumed before the next is asked for). Returns one (positions intp
    [m, k], scores float32 [m, k]) per ranking, rows as :func:`select_topk` orders them.
    """
    out = [(np.empty((m, k), dtype=np.intp), np.empty((m, k), dtype=np.float32)) for _ in range(rankings)]
    for b in range(0, m, block):
        rows = slice(b, min(b + block, m))
        for (pos, val), s in zip(out, scores_of(rows)):
            pos[rows], val[rows] = select_topk(s, k)
    return out


def blocked_search(
    vectors: np.ndarray, k: int, *, queries: np.ndarray | None = None, query_pos: np.ndarray | None = None,
    block: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows of ``vectors`` [n, d] by inner product, for many queries, in blocks.

    Parameters
    ----------
    vectors : float32 array [n, d]
    k : int
        1 <= k <= n (n - 1 with ``query_pos``); checked by the caller.
    queries : float32 array [m, d], optional
        Outside query vectors.
    query_pos : int array [m], optional
        Instead of ``queries``: rows of ``vectors`` as queries, each left out of its own results.
    block : int, optional
        Queries per block; default :func:`block_rows`. Results do not depend on it beyond float rounding.

    Returns
    -------
    positions : intp [m, k] and scores : float32 [m, k]
        Best first, equal scores by smaller position (:func:`select_topk`).
    """
    if (queries is None) == (query_pos is None):
        raise ValueError("give exactly one of queries and query_pos")

    def scores_of(rows: slice) -> Iterator[np.ndarray]:
        if queries is not None:
            yield queries[rows] @ vectors.T
        else:
            q = query_pos[rows]  # type: ignore[index]
            yield exclude_self(vectors[q] @ vectors.T, q)

    m = len(queries) if queries is not None else len(query_pos)  # type: ignore[arg-type]
    return blocked_topk(m, k, block or block_rows(len(vectors)), scores_of)[0]


def unranked(pos: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mark the entries chosen at score ``-inf`` (no real neighbour: a masked candidate, or a query that
    has no vector in this space) as position -1, in place; returns both arrays."""
    pos[~np.isfinite(scores) & (scores < 0)] = -1
    return pos, scores


def drop_self(
    pos: np.ndarray, scores: np.ndarray | None, query_pos: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Top-(k+1) rows -> top-k rows without each row's own query position.

    Where the query is in its row it is removed; where it is not (an approximate search missed it, or the
    query is not an indexed row: a negative position) the (k+1)-th entry is dropped. Order is kept.

    Parameters
    ----------
    pos : int array [m, >= k + 1]
    scores : array [m, same] or None
        Moved along with ``pos`` (None: only positions are wanted).
    query_pos : int array [m]
    k : int
    """
    own = np.asarray(query_pos)[:, None]
    order = np.argsort((pos == own) & (own >= 0), axis=1, kind="stable")[:, :k]  # the own row moves last
    kept = np.take_along_axis(pos, order, axis=1)
    return kept, None if scores is None else np.take_along_axis(scores, order, axis=1)
