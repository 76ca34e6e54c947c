"""Graded relevance from label codes, the standard ranking metrics computed by ranx, and their exact
random baselines.

Relevance of product ``j`` to query ``i`` (``j != i``) is graded by the label columns given, in order: the
grade is the number of leading columns on which ``j`` matches ``i`` (a missing label matches nothing). With
``articleType, baseColour``: same article type = 1, same article type and colour = 2, another article type
= 0 (not relevant) whatever the colour. Relevance is judged over the whole ranked catalog minus the query, so
recall and average precision know how many products are relevant to each query (``R``).

nDCG@k (linear gains, Järvelin & Kekäläinen), MAP@k, MRR@k and recall@k are ranx's (``ranx.evaluate`` on
qrels and a run in ranx's array form, built from neighbour positions: a query's qrels are its relevant
products with their grades, its run the k recommended positions with strictly falling scores, so ranx keeps
the ranking's own order, ties included). A product counts as relevant from grade 1; MAP@k divides by all
``R`` relevant products, as trec_eval and ranx do, so it is small when ``R`` is much larger than k. A query
whose first label is missing, or that no other product shares, has nothing relevant: it is not scored (NaN),
as a query absent from the qrels is not in trec_eval's mean.

ranx is an optional dependency (``pip install 'prodrec[eval]'``), imported by the functions that need it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..core.errors import MissingDependency

#: The ranx metrics the registry offers: registry name -> ranx name (evaluated at the run's k).
RANX_METRICS: dict[str, str] = {"ndcg": "ndcg", "map": "map", "mrr": "mrr", "recall": "recall"}
#: The pip extra that brings ranx.
RANX_EXTRA = "eval"
#: Judged (query, relevant product) pairs per ranx call: bounds memory on a large catalog.
BLOCK_PAIRS = 4_000_000


def check_backend(module: str = "ranx", extra: str = RANX_EXTRA,
                  user: str = "the ranking metrics and significance tests") -> None:
    """A :class:`MissingDependency` naming the pip extra when ``module`` (used by ``user``) is not installed;
    found without importing it, so a check before any work costs nothing."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise MissingDependency(f"{module} is not installed (used by {user}): pip install 'prodrec[{extra}]'")


def require_ranx() -> Any:
    """The ``ranx`` module, or a :class:`MissingDependency` naming the extra that brings it."""
    check_backend()
    try:
        import ranx
    except ImportError as exc:
        raise MissingDependency(f"ranx cannot be imported ({exc}): pip install 'prodrec[{RANX_EXTRA}]'") from exc
    return ranx


def as_columns(codes: np.ndarray) -> np.ndarray:
    """Label codes as a [n, c] int64 array (one column for 1-d input)."""
    c = np.asarray(codes, dtype=np.int64)
    return c.reshape(len(c), -1)


def prefix_keys(codes: np.ndarray) -> np.ndarray:
    """[n, c] group keys: ``keys[:, l]`` is the same for two products exactly when their first ``l + 1``
    label codes are equal and known; -1 where one of them is missing (-1 codes)."""
    codes = as_columns(codes)
    n, c = codes.shape
    keys = np.full((n, c), -1, dtype=np.int64)
    prev, known = np.zeros(n, dtype=np.int64), np.ones(n, dtype=bool)
    for level in range(c):
        known &= codes[:, level] >= 0
        combined = prev * (int(codes[:, level].max(initial=0)) + 1) + codes[:, level]
        _, inv = np.unique(np.where(known, combined, -1), return_inverse=True)
        prev = inv.reshape(-1).astype(np.int64)
        keys[known, level] = prev[known]
    return keys


def grade_counts(codes: np.ndarray) -> np.ndarray:
    """[n, c]: ``counts[i, l]`` is how many other products have grade ≥ ``l + 1`` for query ``i`` (so
    ``counts[:, 0]`` is ``R``, the number of relevant products)."""
    keys = prefix_keys(codes)
    counts = np.zeros(keys.shape, dtype=np.int64)
    for level in range(keys.shape[1]):
        _, inv, cnt = np.unique(keys[:, level], return_inverse=True, return_counts=True)
        counts[:, level] = np.where(keys[:, level] >= 0, cnt[inv.reshape(-1)] - 1, 0)
    return counts


def neighbour_grades(positions: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """[n, k] grade of each recommended product for its query."""
    keys = prefix_keys(codes)
    q = keys[:, None, :]
    return ((keys[positions] == q) & (q >= 0)).sum(axis=2)


def _judged(keys: np.ndarray, order: np.ndarray, starts: np.ndarray, group: np.ndarray, i: int) -> np.ndarray:
    """Query ``i``'s qrels in ranx's array form: rows (product position, grade) of every other product of
    grade ≥ 1, highest grade first."""
    g = group[i]
    members = order[starts[g] : starts[g + 1]]
    members = members[members != i]
    q = keys[i]
    grades = ((keys[members] == q) & (q >= 0)).sum(axis=1)
    o = np.argsort(-grades, kind="stable")
    return np.column_stack([members[o].astype(np.float64), grades[o].astype(np.float64)])


def _blocks(queries: np.ndarray, pairs: np.ndarray, limit: int) -> Iterator[np.ndarray]:
    """``queries`` in consecutive blocks of at most ``limit`` judged pairs (one query at least)."""
    start, total = 0, 0
    for j, p in enumerate(pairs):
        if j > start and total + p > limit:
            yield queries[start:j]
            start, total = j, 0
        total += int(p)
    if start < len(queries):
        yield queries[start:]


_memo: dict[str, dict[str, np.ndarray]] = {}


def ranx_scores(positions: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
    """Per-query nDCG@k, MAP@k, MRR@k and recall@k (keys of :data:`RANX_METRICS`) of neighbour ``positions``
    [n, k], computed by ranx with relevance graded by ``codes`` [n, c]; NaN for queries with nothing
    relevant. The last result is kept, so the registry's four metrics of one ranking cost one ranx pass."""
    positions = np.asarray(positions, dtype=np.int64)
    keys = prefix_keys(codes)
    if len(positions) != len(keys):
        raise ValueError(f"positions has {len(positions)} rows for {len(keys)} products")
    digest = hashlib.blake2b(positions.tobytes() + b"|" + keys.tobytes(), digest_size=16).hexdigest()
    digest += f"{positions.shape}{keys.shape}"
    if digest in _memo:
        return _memo[digest]
    ranx = require_ranx()
    from numba import config as numba_config  # numba comes with ranx
    from numba.typed import List

    n, k = positions.shape
    group = keys[:, 0]  # the products relevant to a query are the others of its first-label group
    order = np.argsort(group, kind="stable")
    starts = np.searchsorted(group[order], np.arange(group.max(initial=-1) + 2))
    relevant = np.where(group >= 0, np.diff(starts)[np.maximum(group, 0)] - 1, 0)
    scored = np.flatnonzero(relevant > 0)
    out = {m: np.full(n, np.nan) for m in RANX_METRICS}
    names = [f"{RANX_METRICS[m]}@{k}" for m in RANX_METRICS]
    falling = np.arange(k, 0, -1, dtype=np.float64)  # run scores: ranx sorts by score, so the order is kept
    for block in _blocks(scored, relevant[scored], BLOCK_PAIRS):
        qrels = List([_judged(keys, order, starts, group, int(i)) for i in block])
        run = List([np.column_stack([positions[i].astype(np.float64), falling]) for i in block])
        res = ranx.evaluate(qrels, run, names, return_mean=False, threads=numba_config.NUMBA_NUM_THREADS)
        for m, name in zip(RANX_METRICS, names):
            out[m][block] = res[name]
    _memo.clear()
    _memo[digest] = out
    return out


def ranx_metric(name: str) -> Any:
    """The registry's per-query function of ranx metric ``name`` (a key of :data:`RANX_METRICS`)."""

    def per_query(positions: np.ndarray, codes: np.ndarray) -> np.ndarray:
        return ranx_scores(positions, codes)[name]

    per_query.__name__ = f"{name}_at_k"
    per_query.__doc__ = f"Per-query {name}@k computed by ranx (NaN: nothing relevant)."
    return per_query


# ------------------------------------------------------------------------------------- random baselines
def _scored_counts(codes: np.ndarray, k: int) -> tuple[np.ndarray, int]:
    counts = grade_counts(codes)
    others = len(counts) - 1
    if others < k:
        raise ValueError(f"k={k} but only {others} other products")
    return counts[counts[:, 0] > 0], others


def _discounts(k: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(2, k + 2))


def random_ndcg(codes: np.ndarray, k: int) -> float:
    """Expected nDCG@k of k products drawn uniformly from the others: E[DCG] = sum of discounts x the mean
    grade of the others (linearity), over the query's ideal DCG; averaged over scored queries."""
    counts, others = _scored_counts(codes, k)
    if not len(counts):
        return float("nan")
    d = _discounts(k)
    ideal = np.stack([(counts >= r).sum(axis=1) for r in range(1, k + 1)], axis=1) @ d
    expected = d.sum() * counts.sum(axis=1) / others
    return float((expected / ideal).mean())


def random_map(codes: np.ndarray, k: int) -> float:
    """Expected AP@k (ranx's: sum over relevant ranks r <= k of precision@r, over R) of a uniform draw:
    E[rel_r hits_r] = R/N + (r - 1) R (R - 1) / (N (N - 1)) with N other products."""
    counts, others = _scored_counts(codes, k)
    if not len(counts):
        return float("nan")
    big_r = counts[:, 0].astype(np.float64)
    pair = (big_r - 1) / (others * max(others - 1, 1))
    total = sum((1.0 / others + (r - 1) * pair) / r for r in range(1, k + 1))
    return float(np.mean(total))


def random_mrr(codes: np.ndarray, k: int) -> float:
    """Expected reciprocal rank@k of a uniform draw: sum over r <= k of P(first relevant at r) / r."""
    counts, others = _scored_counts(codes, k)
    if not len(counts):
        return float("nan")
    big_r = counts[:, 0].astype(np.float64)
    none_yet, total = np.ones_like(big_r), np.zeros_like(big_r)
    for r in range(1, k + 1):
        left = others - (r - 1)
        total += none_yet * big_r / left / r
        none_yet *= np.maximum(left - big_r, 0) / left
    return float(total.mean())


def random_recall(codes: np.ndarray, k: int) -> float:
    """Expected recall@k of a uniform draw: k / N for every scored query (N other products)."""
    counts, others = _scored_counts(codes, k)
    return float(k / others) if len(counts) else float("nan")
