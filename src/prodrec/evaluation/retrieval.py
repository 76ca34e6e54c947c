"""Query -> documents retrieval metrics on plain arrays: the cut-off metrics of the public fashion
leaderboard (precision@k, recall@k, MRR over the top list), with relevance given by codes.

Relevance is "same code": document ``j`` is relevant to query ``i`` when ``doc_codes[j] ==
query_codes[i]`` (codes ≥ 0; -1 is never relevant). That covers the tasks of :mod:`.tasks`: a label value
(relevant: the products with it), a product name (the products with exactly that name) and a composed
query (the products of the query's article type in the asked colour).

The definitions are BEIR's / trec_eval's, as the leaderboard's evaluation code uses them:

* ``P@k`` = relevant documents among the first k / k (k is the denominator even when a list is shorter);
* ``R@k`` = relevant documents among the first k / all relevant documents of the query;
* ``MRR`` = 1 / rank of the first relevant document within the list (its depth), 0 when there is none.

A query without any relevant document is not scored (NaN), as a query absent from the qrels.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core import params

__all__ = ["cutoff_metrics", "metric_names", "relevant_counts"]


def metric_names(cutoffs: Sequence[int]) -> list[str]:
    """The metric names :func:`cutoff_metrics` returns for ``cutoffs``: ``P@k`` and ``R@k`` per cut-off, then
    ``MRR`` (over the deepest cut-off)."""
    ks = sorted(set(cutoffs))
    return [f"P@{k}" for k in ks] + [f"R@{k}" for k in ks] + ["MRR"]


def relevant_counts(doc_codes: np.ndarray, query_codes: np.ndarray, exclude: np.ndarray | None = None) -> np.ndarray:
    """Relevant documents per query: documents with its code (codes < 0 have none); ``exclude`` (one
    document position per query, -1 for none) is not counted (a query product among the documents)."""
    doc_codes = np.asarray(doc_codes, dtype=np.int64)
    query_codes = np.asarray(query_codes, dtype=np.int64)
    known = doc_codes[doc_codes >= 0]
    size = int(max(known.max(initial=-1), query_codes.max(initial=-1))) + 1
    counts = np.bincount(known, minlength=size)
    out = np.where(query_codes >= 0, counts[np.maximum(query_codes, 0)], 0)
    if exclude is not None:
        ex = np.asarray(exclude, dtype=np.int64)
        hit = (ex >= 0) & (query_codes >= 0)
        out[hit] -= doc_codes[ex[hit]] == query_codes[hit]
    return out


def cutoff_metrics(
    positions: np.ndarray,
    doc_codes: np.ndarray,
    query_codes: np.ndarray,
    cutoffs: Sequence[int] = (1, 10),
    exclude: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-query ``P@k``, ``R@k`` (each cut-off) and ``MRR`` of ranked lists.

    Parameters
    ----------
    positions : int array [m, depth]
        Each query's ranked document positions, best first (depth ≥ the largest cut-off).
    doc_codes : int array [n]
        Each document's code (-1: relevant to nothing).
    query_codes : int array [m]
        Each query's code: the documents with it are relevant.
    cutoffs : sequence of int
    exclude : int array [m], optional
        A document per query that is neither relevant nor a hit (the query product itself; -1: none).

    Returns
    -------
    dict name -> float64 [m], NaN where a query has no relevant document.
    """
    positions = np.asarray(positions, dtype=np.intp)
    query_codes = np.asarray(query_codes, dtype=np.int64)
    if positions.ndim != 2 or len(positions) != len(query_codes):
        raise ValueError(f"positions [m, depth] for {len(query_codes)} queries; got shape {positions.shape}")
    ks = sorted({params.check_positive_int("cut-off", k) for k in cutoffs})
    if ks and ks[-1] > positions.shape[1]:
        raise ValueError(f"cut-off {ks[-1]} is deeper than the ranked lists ({positions.shape[1]})")
    doc_codes = np.asarray(doc_codes, dtype=np.int64)
    hits = (doc_codes[positions] == query_codes[:, None]) & (query_codes[:, None] >= 0)
    if exclude is not None:  # the excluded document is no hit, wherever it is ranked
        hits &= positions != np.asarray(exclude, dtype=np.intp)[:, None]
    n_rel = relevant_counts(doc_codes, query_codes, exclude).astype(np.float64)
    scored = n_rel > 0
    out: dict[str, np.ndarray] = {}
    for k in ks:
        out[f"P@{k}"] = hits[:, :k].sum(axis=1) / k
    for k in ks:
        out[f"R@{k}"] = hits[:, :k].sum(axis=1) / np.maximum(n_rel, 1)
    depth = ks[-1] if ks else positions.shape[1]
    first = hits[:, :depth].argmax(axis=1)
    out["MRR"] = np.where(hits[:, :depth].any(axis=1), 1.0 / (first + 1), 0.0)
    for name in out:
        out[name] = np.where(scored, out[name], np.nan)
    return out
