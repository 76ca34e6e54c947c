"""Exact cosine top-k over one embedding space, ties by id (:class:`CosineIndex`)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import RankingError, UnknownIdError
from .topk import block_rows, blocked_search, blocked_topk, exclude_self, unranked

__all__ = ["CosineIndex"]


class CosineIndex:
    """Exact cosine similarity over one embedding space.

    Top-k for a query, for many queries, and all-vs-all. The query itself is excluded; ties are broken by id
    (smaller id first, ids compared as strings), so results are deterministic. ``ids`` are sorted
    internally, so "ties by id" and "ties by position" are the same rule. Many-query search works in blocks
    of queries (:func:`prodrec.rank.topk.blocked_search`: bounded memory, never an N x N matrix).

    NaN/inf values and zero vectors are refused (their cosine is undefined) with the offending ids named.

    ``present`` (bool [n], in the order of ``ids``) marks the products this space has a vector for; the
    others (a product without a usable photo, in the image space) hold zero rows: they are never a
    candidate, and as queries they get no list (positions -1, scores -inf). Default: every product.
    """

    def __init__(self, ids: Sequence[Any], vectors: np.ndarray, normalize: bool = True,
                 present: np.ndarray | None = None) -> None:
        ids = np.asarray([str(i) for i in ids], dtype=object)
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(ids) != len(x):
            raise RankingError(f"need ids [n] and vectors [n, dim]; got {ids.shape} and {x.shape}")
        if len(ids) < 2:
            raise RankingError(f"a catalog of {len(ids)} product(s) has nothing to recommend; need at least 2")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise RankingError(f"{bad.sum()} embedding(s) contain NaN or inf, e.g. ids {ids[bad][:5].tolist()}")
        norms = np.linalg.norm(x, axis=1)
        has = np.ones(len(ids), dtype=bool) if present is None else np.asarray(present, dtype=bool)
        if has.shape != (len(ids),):
            raise RankingError(f"present must be a bool mask of {len(ids)} products; got shape {has.shape}")
        norms = np.where(has, norms, 1.0)
        zero = norms < 1e-12
        if zero.any():
            raise RankingError(
                f"{zero.sum()} embedding(s) are zero vectors (cosine undefined), e.g. ids {ids[zero][:5].tolist()}"
            )
        order = np.argsort(ids, kind="stable")
        self.ids = ids[order]
        if len(pd.unique(self.ids)) != len(self.ids):
            raise RankingError("ids must be unique")
        x = x[order]  # a copy: normalise it in place rather than making a second one
        if normalize:
            x /= norms[order, None]
        self.present = has[order]
        x[~self.present] = 0.0
        #: Whether some product lacks a vector here (then candidates and queries are masked).
        self.partial = not bool(self.present.all())
        self.vectors = np.ascontiguousarray(x)
        self._index = pd.Index(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, query_ids: Sequence[Any]) -> np.ndarray:
        """Row positions of ``query_ids`` (compared as strings); unknown ids raise :class:`UnknownIdError`."""
        qids = [str(q) for q in query_ids]
        pos = self._index.get_indexer(qids)
        if (pos < 0).any():
            raise UnknownIdError([q for q, p in zip(qids, pos) if p < 0], f"the {len(self)} ranked products")
        return pos

    def scores(self, query_id: Any) -> np.ndarray:
        """Cosine of one query with every product (one matrix-vector product); ``-inf`` for products
        without a vector here (and for every product when the query has none)."""
        q = self.positions([query_id])[0]
        s = self.vectors @ self.vectors[q]
        if self.partial:
            s[~self.present] = -np.inf
            if not self.present[q]:
                s[:] = -np.inf
        return s

    def topk(self, query_id: Any, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(ids [k], scores [k]) of the query's k nearest other products."""
        ids, scores = self.topk_many([query_id], k)
        return ids[0], scores[0]

    def topk_many(self, query_ids: Sequence[Any], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(ids [m, k], scores [m, k]) of each query's k nearest other products."""
        pos, scores = self.topk_positions(self.positions(query_ids), k)
        return self.ids[pos], scores

    def topk_positions(
        self, query_pos: np.ndarray | None = None, k: int = 5, block: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k positions and scores for query positions (all products when None), block by block.

        With products lacking a vector here (:attr:`partial`), they are never candidates, and a query
        without a vector (or with fewer than k candidates) gets positions -1 and scores -inf where it has
        no neighbour."""
        query_pos = np.arange(len(self)) if query_pos is None else np.asarray(query_pos, dtype=np.intp)
        if not self.partial:
            return blocked_search(self.vectors, params.check_k(k, len(self)), query_pos=query_pos, block=block)
        k = params.check_k(k, len(self))
        present = self.present

        def scores_of(rows: slice) -> Iterator[np.ndarray]:
            q = query_pos[rows]
            s = exclude_self(self.vectors[q] @ self.vectors.T, q)
            s[:, ~present] = -np.inf
            s[~present[q]] = -np.inf
            yield s

        pos, val = blocked_topk(len(query_pos), k, block or block_rows(len(self)), scores_of)[0]
        return unranked(pos, val)
