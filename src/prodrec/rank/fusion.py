"""Fusion maths on plain arrays: how several arms' similarities become one ranking.

* :func:`default_weights` - the paper's ``{image: alpha, text: 1 - alpha}`` for its two arms, equal
  weights for other arm sets (the learned arm left out unless weighted);
* :func:`calibrate` / :func:`zscore` - put an arm's cosines on the scale fusion adds them on;
* :func:`weighted_sum` - late fusion ``sum_a w_a * cal(cos_a)``;
* :func:`moments` / :func:`fused_queries` - the same fused score as one inner product, for an index over the
  arms' unit vectors side by side (``zscore``: per-query mean and spread from each arm's moments);
* :func:`rrf_lists` / :func:`rrf_topk` - weighted reciprocal-rank fusion of the arms' ranked lists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..core.vocab import LEARNED

__all__ = [
    "RRF_K",
    "calibrate",
    "default_weights",
    "fused_queries",
    "moments",
    "rrf_depth",
    "rrf_lists",
    "rrf_topk",
    "weighted_mean",
    "weighted_sum",
    "zscore",
]

#: The constant of reciprocal-rank fusion: an item at rank r of a list scores ``w / (RRF_K + r)``.
RRF_K = 60
#: Smallest spread a z-scored row is divided by (a row of equal cosines stays finite).
MIN_SPREAD = 1e-6


def default_weights(arms: Sequence[str], alpha: float) -> dict[str, float]:
    """Fixed fusion weights for ``arms``: ``{image: alpha, text: 1 - alpha}`` when the arms (the learned
    one aside) are the paper's two; equal weights otherwise. The learned arm (trained on the others'
    vectors) weighs 0 unless it is the only arm."""
    fixed = [name for name in arms if name != LEARNED] or list(arms)
    if set(fixed) == {"image", "text"}:
        return {name: {"image": alpha, "text": 1.0 - alpha}.get(name, 0.0) for name in arms}
    return {name: 1.0 / len(fixed) if name in fixed else 0.0 for name in arms}


def zscore(sims: np.ndarray) -> np.ndarray:
    """Each row of ``sims`` [m, n] standardised to mean 0 and standard deviation 1 (float64 moments)."""
    mu = sims.mean(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    sd = sims.std(axis=1, keepdims=True, dtype=np.float64).astype(np.float32)
    return (sims - mu) / np.maximum(sd, MIN_SPREAD)


def calibrate(sims: np.ndarray, calibration: str, present: np.ndarray | None = None) -> np.ndarray:
    """Rows of one arm's cosines on the scale fusion adds them on: as they are (``raw``) or z-scored per row
    over the catalog (``zscore``). With ``present`` (bool [n]: the products the arm has a vector for), the
    moments are taken over those columns only and the other columns are 0."""
    if present is None or present.all():
        return sims if calibration == "raw" else zscore(sims)
    s = np.where(present[None, :], sims, 0.0).astype(np.float32)
    if calibration == "raw":
        return s
    count = max(int(present.sum()), 1)
    mu = s.sum(axis=1, keepdims=True, dtype=np.float64) / count
    var = (np.square(s, dtype=np.float64).sum(axis=1, keepdims=True) / count) - np.square(mu)
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.where(present[None, :], (s - mu) / np.maximum(sd, MIN_SPREAD), 0.0).astype(np.float32)


def weighted_sum(sims: Mapping[str, np.ndarray], weights: Mapping[str, float]) -> np.ndarray:
    """``sum_a weights[a] * sims[a]`` over the arms of non-zero weight (zeros when every weight is 0)."""
    total: np.ndarray | None = None
    for name, s in sims.items():
        if weights[name]:
            total = weights[name] * s if total is None else total + weights[name] * s
    if total is None:
        return np.zeros(next(iter(sims.values())).shape, dtype=np.float32)
    return total


def weighted_mean(
    sims: Mapping[str, np.ndarray], weights: Mapping[str, float], query_has: Mapping[str, np.ndarray],
    product_has: Mapping[str, np.ndarray],
) -> np.ndarray:
    """Late fusion when some products lack some arms: for each (query, product), the weighted mean of the
    calibrated scores of the arms *both* have, ``sum_a w_a s_a / sum_a w_a`` over those arms (the weights
    renormalised, so a product without a photo is ranked on its text alone); ``-inf`` where they share no
    arm of non-zero weight. With every arm present this is :func:`weighted_sum` (weights summing to 1).

    Parameters
    ----------
    sims : arm -> float [m, n] calibrated scores (any value where an arm is absent)
    weights : arm -> float
    query_has : arm -> bool [m], product_has : arm -> bool [n]
    """
    total: np.ndarray | None = None
    norm: np.ndarray | None = None
    for name, s in sims.items():
        w = float(weights[name])
        if not w:
            continue
        both = query_has[name][:, None] & product_has[name][None, :]
        part = np.where(both, w * s, 0.0)
        total = part if total is None else total + part
        norm = w * both if norm is None else norm + w * both
    if total is None or norm is None:
        return np.zeros(next(iter(sims.values())).shape, dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(norm > 0, total / np.where(norm > 0, norm, 1.0), -np.inf)
    return out.astype(np.float32)


#: Bytes of float64 rows :func:`moments` converts at a time.
MOMENT_CHUNK_BYTES = 8 * 2**20


def moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean [d] and covariance [d, d] (float32, computed in float64) of rows ``x`` [n, d]: for unit rows, a
    query's cosines with them have mean ``q @ mean`` and spread ``sqrt(q @ cov @ q)``."""
    n, d = x.shape
    total = np.zeros(d, dtype=np.float64)
    gram = np.zeros((d, d), dtype=np.float64)
    step = max(1, MOMENT_CHUNK_BYTES // (8 * max(d, 1)))  # float64 copies of a few rows at a time, never of x
    part = np.empty((d, d), dtype=np.float64)
    for b in range(0, n, step):
        rows = x[b : b + step].astype(np.float64)
        total += rows.sum(axis=0)
        gram += np.matmul(rows.T, rows, out=part)
    mu = total / max(n, 1)
    gram /= max(n, 1)
    gram -= np.multiply.outer(mu, mu, out=part)
    return mu.astype(np.float32), gram.astype(np.float32)


def fused_queries(
    queries: Mapping[str, np.ndarray], weights: Mapping[str, float],
    arm_moments: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Query rows for an index over the arms' unit vectors side by side (in the order of ``queries``).

    A row's inner product with a product's concatenated vectors is the fused score minus a per-query
    constant, returned as ``offset`` (subtract it to get the fused score).

    Parameters
    ----------
    queries : mapping arm -> float32 [m, d_a]
        Each arm's unit query vectors.
    weights : mapping arm -> float
    arm_moments : mapping arm -> (mean, cov), optional
        Given: ``zscore`` fusion, each arm's cosines standardised per query (moments are needed for the arms
        of non-zero weight, see :func:`moments`). None: ``raw`` fusion.

    Returns
    -------
    rows : float32 [m, sum d_a] and offset : float64 [m]
    """
    m = len(next(iter(queries.values())))
    parts, offset = [], np.zeros(m, dtype=np.float64)
    for name, q in queries.items():
        coef = np.full(len(q), weights[name], dtype=np.float32)
        if arm_moments is not None and weights[name]:
            mu, cov = arm_moments[name]
            sd = np.sqrt(np.maximum(np.einsum("md,de,me->m", q, cov, q), 0.0))
            coef = coef / np.maximum(sd, MIN_SPREAD)
            offset += coef * (q @ mu)
        parts.append(coef[:, None] * q)
    return np.hstack(parts).astype(np.float32), offset


def rrf_depth(k: int, n: int) -> int:
    """How deep each arm's list is read for a fused top-k over ``n`` products: 10 k, at least 50, at most
    the n - 1 other products."""
    return min(n - 1, max(50, 10 * k))


def rrf_lists(lists: Sequence[np.ndarray], weights: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Weighted reciprocal-rank fusion: for each query, the positions in any of its lists and their scores
    ``sum_a weights[a] / (RRF_K + rank_a)`` (ranks from 1; a list that lacks a position adds nothing).

    Parameters
    ----------
    lists : sequence of int arrays [m, depth_a]
        Each arm's ranked positions per query, best first.
    weights : sequence of float
        One weight per list.

    Returns
    -------
    list of m (positions ascending [c], scores float64 [c])
    """
    terms = np.concatenate([w / (RRF_K + np.arange(1, lst.shape[1] + 1)) for lst, w in zip(lists, weights)])
    out = []
    for r in range(len(lists[0]) if lists else 0):
        cand = np.concatenate([lst[r] for lst in lists])
        keep = cand >= 0  # -1: no entry (an arm the query or too few products have)
        uniq, inv = np.unique(cand[keep], return_inverse=True)
        out.append((uniq, np.bincount(inv, weights=terms[keep], minlength=len(uniq))))
    return out


def rrf_topk(lists: Sequence[np.ndarray], weights: Sequence[float], k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top-k of :func:`rrf_lists` per query: positions [m, k] and float32 scores, ties by smaller
    position; a query whose lists hold fewer than k distinct positions is padded with -1 and -inf."""
    fused = rrf_lists(lists, weights)
    out_pos = np.full((len(fused), k), -1, dtype=np.intp)
    out_val = np.full((len(fused), k), -np.inf, dtype=np.float32)
    for r, (cand, score) in enumerate(fused):
        order = np.lexsort((cand, -score))[:k]
        out_pos[r, : len(order)], out_val[r, : len(order)] = cand[order], score[order]
    return out_pos, out_val
