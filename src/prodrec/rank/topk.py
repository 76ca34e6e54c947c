"""Top-k selection: the one primitive every exact search, index and fusion ranks with.

Rows of scores in, positions and scores out, best first, ties broken by smaller position (exactly: when
several entries tie at the k-th score, the smallest positions are kept).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BLOCK_BYTES", "SELECT_CHUNK", "select_topk"]

#: Memory budget of one block of scores in all-vs-all ranking.
BLOCK_BYTES = 128 * 2**20
#: Scores per top-k selection pass (argpartition needs an int64 index per score: 32 MiB at this size).
SELECT_CHUNK = 1 << 22


def select_topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise top-k of ``scores`` [m, n]: positions sorted by score descending, then position ascending.

    Exact under ties: when several entries tie at the k-th score, the smallest positions are kept.
    Entries set to ``-inf`` are never chosen unless a row has fewer than k finite entries.
    """
    m, n = scores.shape
    if m > 1 and m * n > SELECT_CHUNK:  # selection needs ~13 bytes per score: do it a few rows at a time
        step = max(1, SELECT_CHUNK // n)
        parts = [select_topk(scores[i : i + step], k) for i in range(0, m, step)]
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
    vals = np.take_along_axis(scores, cand, axis=1)
    order = np.lexsort((cand, -vals), axis=1) if m else np.zeros((0, cand.shape[1]), dtype=np.intp)
    pos = np.take_along_axis(cand, order, axis=1)
    return pos[:, :k], np.take_along_axis(vals, order, axis=1)[:, :k]
