"""Exact cosine top-k, and fusion of the image and text arms.

* :class:`CosineIndex` - one embedding space: top-k for a query, for many queries, and all-vs-all. The
  query itself is excluded; ties are broken by id (smaller id first), so results are deterministic.
  All-vs-all works in blocks of queries (one BLAS matrix product per block, bounded memory: never an
  N x N matrix).
* :class:`Recommender` - the image and text arms aligned by product id, ranked by ``mode``:
  ``image``, ``text``, ``fused`` (weighted late fusion ``alpha * image + (1 - alpha) * text`` of cosine
  scores) or ``rrf`` (reciprocal-rank fusion of the two ranked lists).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .store import Embeddings

log = logging.getLogger(__name__)

Mode = Literal["image", "text", "fused", "rrf"]
MODES: tuple[str, ...] = ("image", "text", "fused", "rrf")
#: Memory budget of one block of scores in all-vs-all ranking.
BLOCK_BYTES = 128 * 2**20
RRF_K = 60
#: Scores per top-k selection pass (argpartition needs an int64 index per score: 32 MiB at this size).
SELECT_CHUNK = 1 << 22


class RankingError(ValueError):
    """Invalid ranking input: k out of range, NaN or zero vectors, misaligned arms."""


def _validate_k(k: int, n: int) -> int:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool):
        raise RankingError(f"k must be an integer, got {k!r}")
    if k <= 0:
        raise RankingError(f"k must be at least 1, got {k}")
    if k > n - 1:
        raise RankingError(
            f"k={k} but the catalog has {n} products, so a query has only {n - 1} other products to recommend"
        )
    return int(k)


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


class CosineIndex:
    """Exact cosine similarity over one embedding space.

    ``ids`` are sorted internally, so "ties by id" and "ties by position" are the same rule.
    NaN/inf values and zero vectors are refused (their cosine is undefined) with the offending ids named.
    """

    def __init__(self, ids: Sequence[Any], vectors: np.ndarray, normalize: bool = True) -> None:
        ids = np.asarray(ids)
        x = np.asarray(vectors, dtype=np.float32)
        if x.ndim != 2 or len(ids) != len(x):
            raise RankingError(f"need ids [n] and vectors [n, dim]; got {ids.shape} and {x.shape}")
        if len(ids) < 2:
            raise RankingError(f"a catalog of {len(ids)} product(s) has nothing to recommend; need at least 2")
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise RankingError(f"{bad.sum()} embedding(s) contain NaN or inf, e.g. ids {ids[bad][:5].tolist()}")
        norms = np.linalg.norm(x, axis=1)
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
        self.vectors = np.ascontiguousarray(x)
        self._index = pd.Index(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    def positions(self, query_ids: Sequence[Any]) -> np.ndarray:
        qids = list(query_ids)
        if self.ids.dtype.kind in "iu":
            try:
                qids = [int(q) for q in qids]
            except (TypeError, ValueError):
                pass
        else:
            qids = [str(q) for q in qids]
        pos = self._index.get_indexer(qids)
        if (pos < 0).any():
            unknown = [q for q, p in zip(qids, pos) if p < 0]
            raise KeyError(f"unknown product id(s) {unknown[:10]}: not among the {len(self)} indexed products")
        return pos

    def scores(self, query_id: Any) -> np.ndarray:
        """Cosine of one query with every product (one matrix-vector product)."""
        return self.vectors @ self.vectors[self.positions([query_id])[0]]

    def topk(self, query_id: Any, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """(ids [k], scores [k]) of the query's k nearest other products."""
        ids, scores = self.topk_many([query_id], k)
        return ids[0], scores[0]

    def topk_many(self, query_ids: Sequence[Any], k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        pos, scores = self.topk_positions(self.positions(query_ids), k)
        return self.ids[pos], scores

    def topk_positions(
        self, query_pos: np.ndarray | None = None, k: int = 5, block: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-k positions and scores for query positions (all products when None), block by block."""
        n = len(self)
        k = _validate_k(k, n)
        query_pos = np.arange(n) if query_pos is None else np.asarray(query_pos, dtype=np.intp)
        block = block or max(1, min(4096, BLOCK_BYTES // (4 * n)))
        out_pos = np.empty((len(query_pos), k), dtype=np.intp)
        out_val = np.empty((len(query_pos), k), dtype=np.float32)
        for b in range(0, len(query_pos), block):
            q = query_pos[b : b + block]
            s = self.vectors[q] @ self.vectors.T
            s[np.arange(len(q)), q] = -np.inf  # the query is not its own recommendation
            out_pos[b : b + block], out_val[b : b + block] = select_topk(s, k)
        return out_pos, out_val


def align(image: Embeddings | None, text: Embeddings | None) -> tuple[np.ndarray, Embeddings | None, Embeddings | None]:
    """Restrict both arms to the ids they share, in the same sorted order; never pair rows by position."""
    arms = [a.valid() for a in (image, text) if a is not None]
    if not arms:
        raise RankingError("need at least one of image or text embeddings")
    common = arms[0].ids
    for a in arms[1:]:
        common = np.intersect1d(common, a.ids)
    common = np.sort(common)
    for a in arms:
        dropped = len(a) - len(common)
        if dropped:
            log.warning("aligning arms by id: %d product(s) of %s kept out (not in both arms)", dropped, a.meta.get("kind"))
    if len(common) == 0:
        raise RankingError("the image and text embeddings share no product ids; they cannot be fused")

    def take(a: Embeddings | None) -> Embeddings | None:
        if a is None:
            return None
        a = a.valid()
        pos = pd.Index(a.ids).get_indexer(common)
        return Embeddings(common, a.vectors[pos], a.meta, a.failures)

    return common, take(image), take(text)


class Recommender:
    """Top-k recommendations from image, text, or both arms fused, over the ids both arms share."""

    def __init__(self, image: Embeddings | None = None, text: Embeddings | None = None, alpha: float = 0.5) -> None:
        self.ids, img, txt = align(image, text)
        self.image = CosineIndex(img.ids, img.vectors) if img is not None else None
        self.text = CosineIndex(txt.ids, txt.vectors) if txt is not None else None
        self.alpha = self._check_alpha(alpha)
        self._index = pd.Index(self.ids)

    def __len__(self) -> int:
        return len(self.ids)

    @staticmethod
    def _check_alpha(alpha: float) -> float:
        if not 0.0 <= float(alpha) <= 1.0:
            raise RankingError(f"alpha must be within [0, 1], got {alpha}")
        return float(alpha)

    @property
    def modes(self) -> list[str]:
        if self.image is not None and self.text is not None:
            return list(MODES)
        return ["image"] if self.image is not None else ["text"]

    def _arm(self, mode: str) -> CosineIndex:
        arm = {"image": self.image, "text": self.text}.get(mode)
        if arm is None:
            raise RankingError(f"mode {mode!r} is not available; this recommender has modes {self.modes}")
        return arm

    def fused_index(self, alpha: float | None = None) -> CosineIndex:
        """An index whose inner products are ``alpha * cos_image + (1 - alpha) * cos_text``.

        Concatenating ``sqrt(alpha) * image`` and ``sqrt(1 - alpha) * text`` (both unit rows) gives unit
        rows whose dot products are exactly the fused score, so fused all-vs-all is one more exact search.
        """
        a = self.alpha if alpha is None else self._check_alpha(alpha)
        img, txt = self._arm("image"), self._arm("text")
        x = np.hstack([np.sqrt(a) * img.vectors, np.sqrt(1.0 - a) * txt.vectors]).astype(np.float32)
        return CosineIndex(self.ids, x, normalize=False)

    def scores(self, query_id: Any, mode: str = "fused", alpha: float | None = None) -> dict[str, np.ndarray]:
        """Per-arm cosine scores of one query against every product, plus the score of ``mode``."""
        out: dict[str, np.ndarray] = {}
        if self.image is not None:
            out["image"] = self.image.scores(query_id)
        if self.text is not None:
            out["text"] = self.text.scores(query_id)
        if mode in ("fused", "rrf"):
            self._arm("image")
            self._arm("text")  # both arms are needed: a clear error when one is missing
            a = self.alpha if alpha is None else self._check_alpha(alpha)
            out["fused"] = a * out["image"] + (1.0 - a) * out["text"]
        return out

    def recommend(
        self,
        query_id: Any,
        k: int = 5,
        mode: str = "fused",
        alpha: float | None = None,
        allowed: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """The k recommendations for one query: rank, id, score of ``mode`` and each arm's cosine.

        ``allowed`` is an optional boolean mask over :attr:`ids` (e.g. same gender as the query).
        Costs one matrix-vector product per arm.
        """
        return self.recommend_modes(query_id, k, (mode,), alpha, allowed)[mode]

    def recommend_modes(
        self,
        query_id: Any,
        k: int = 5,
        modes: Sequence[str] = ("image", "text", "fused"),
        alpha: float | None = None,
        allowed: np.ndarray | None = None,
    ) -> dict[str, pd.DataFrame]:
        """:meth:`recommend` for several modes at once, from one matrix-vector product per arm
        (what an interactive browser needs per click)."""
        for mode in modes:
            if mode not in MODES:
                raise RankingError(f"unknown mode {mode!r}; choose one of {MODES}")
        qpos = int(self._arm_any().positions([query_id])[0])
        need_both = any(m in ("fused", "rrf") for m in modes)
        sc = self.scores(query_id, "fused" if need_both else modes[0], alpha)
        mask = None if allowed is None else np.asarray(allowed, dtype=bool)
        n_ok = len(self) - 1 if mask is None else int(mask.sum() - bool(mask[qpos]))
        if mask is None:
            k = _validate_k(k, len(self))
        elif k > n_ok:
            raise RankingError(f"k={k} but only {n_ok} products pass the filter")
        out = {}
        for mode in modes:
            key = self._rrf_scores(sc["image"], sc["text"], qpos, k) if mode == "rrf" else sc[mode].copy()
            key[qpos] = -np.inf
            if mask is not None:
                key[~mask] = -np.inf
            pos, vals = select_topk(key[None, :], k)
            pos, vals = pos[0], vals[0]
            df = pd.DataFrame({"rank": np.arange(1, k + 1), "id": self.ids[pos], "score": vals})
            for arm in ("image", "text", "fused"):
                if arm in sc:
                    df[f"{arm}_score"] = sc[arm][pos]
            out[mode] = df
        return out

    def _arm_any(self) -> CosineIndex:
        return self.image if self.image is not None else self.text  # type: ignore[return-value]

    def topk_positions(
        self, k: int = 5, mode: str = "fused", alpha: float | None = None, query_pos: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """All-vs-all (or the given query positions) top-k positions and scores under ``mode``."""
        if mode in ("image", "text"):
            return self._arm(mode).topk_positions(query_pos, k)
        if mode == "fused":
            return self.fused_index(alpha).topk_positions(query_pos, k)
        if mode == "rrf":
            return self._rrf_topk(k, query_pos)
        raise RankingError(f"unknown mode {mode!r}; choose one of {MODES}")

    def recommend_many(
        self, query_ids: Sequence[Any], k: int = 5, mode: str = "fused", alpha: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids [m, k], scores [m, k]) for many queries."""
        pos, vals = self.topk_positions(k, mode, alpha, self._arm_any().positions(query_ids))
        return self.ids[pos], vals

    # -------------------------------------------------------------- reciprocal-rank fusion
    def _rrf_depth(self, k: int) -> int:
        return min(len(self) - 1, max(50, 10 * k))

    def _rrf_scores(self, s_img: np.ndarray, s_txt: np.ndarray, qpos: int, k: int) -> np.ndarray:
        """RRF over each arm's top ``depth`` list (1 / (60 + rank) summed); others score -inf."""
        depth = self._rrf_depth(k)
        fused = np.zeros(len(self), dtype=np.float64)
        seen = np.zeros(len(self), dtype=bool)
        for s in (s_img, s_txt):
            s = s.copy()
            s[qpos] = -np.inf
            pos, _ = select_topk(s[None, :], depth)
            fused[pos[0]] += 1.0 / (RRF_K + np.arange(1, depth + 1))
            seen[pos[0]] = True
        fused[~seen] = -np.inf
        return fused

    def _rrf_topk(self, k: int, query_pos: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        n = len(self)
        k = _validate_k(k, n)
        depth = self._rrf_depth(k)
        qp = np.arange(n) if query_pos is None else np.asarray(query_pos)
        pi, _ = self._arm("image").topk_positions(qp, depth)
        pt, _ = self._arm("text").topk_positions(qp, depth)
        weights = 1.0 / (RRF_K + np.arange(1, depth + 1))
        out_pos = np.empty((len(qp), k), dtype=np.intp)
        out_val = np.empty((len(qp), k), dtype=np.float32)
        for r in range(len(qp)):
            cand = np.concatenate([pi[r], pt[r]])
            w = np.concatenate([weights, weights])
            uniq, inv = np.unique(cand, return_inverse=True)
            score = np.bincount(inv, weights=w)
            order = np.lexsort((uniq, -score))[:k]
            out_pos[r], out_val[r] = uniq[order], score[order]
        return out_pos, out_val
