"""The recommender: named arms aligned by product id, ranked by one arm or several fused.

:class:`Recommender` is a facade: it holds the arms (one :class:`~prodrec.rank.cosine.CosineIndex` each)
and the fusion weights, and ranks with the pieces that do the work: :mod:`.topk` (selection, blocked search,
self-exclusion), :mod:`.fusion` (calibration, weighted sums, fused queries, reciprocal-rank fusion) and
:mod:`.index` (approximate indexes, :class:`~prodrec.rank.index.ArmIndexes`).

``mode`` is one arm's cosine, ``fused`` (weighted late fusion ``sum_a w_a * cal(cos_a)``; with the paper's
two arms ``alpha * image + (1 - alpha) * text``; ``cal`` puts arms on one scale, see :class:`Recommender`)
or ``rrf`` (weighted reciprocal-rank fusion of the arms' lists).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import RankingError
from ..core.vocab import FUSION_MODES
from ..embed.vectors import Embeddings, align, align_outer
from . import compose, fusion
from .cosine import CosineIndex
from .index import ArmIndexes, IndexCache, resolve_kind
from .topk import block_rows, blocked_topk, drop_self, exclude_self, select_topk, unranked

__all__ = ["CosineIndex", "RankingError", "Recommender", "align", "select_topk"]

Positions = tuple[np.ndarray, np.ndarray]

log = logging.getLogger(__name__)


class Recommender:
    """Top-k recommendations from any named arm, or from several fused, over the ids all arms share.

    >>> rec = Recommender({"image": image_emb, "text": text_emb}, alpha=0.5)
    >>> rec.recommend("15970", k=5, mode="fused")

    ``weights`` (arm -> weight, normalised to sum 1) set the fusion; ``alpha`` is the paper's shorthand
    for two arms: ``{"image": alpha, "text": 1 - alpha}``. Both can be overridden per call.

    ``calibration`` says how arms' scores are put on one scale before they are weighted: ``raw`` adds the
    cosines as they are (the paper's fusion); ``zscore`` standardises each arm's cosines per query (minus
    their mean over the catalog, divided by their standard deviation), so an arm whose cosines crowd near 1
    (colour histograms) weighs what its weight says, not what its spread happens to be. ``auto`` (default)
    is ``raw`` for the paper's two arms (image, text) and ``zscore`` as soon as any other arm is fused.
    Reciprocal-rank fusion needs neither (it reads ranks).

    ``index`` (``exact``, ``ivf``, ``hnsw`` or ``auto``, see :mod:`prodrec.rank.index`) is how many-query
    searches (evaluation, all-vs-all, ``recommend_many``, search by an outside vector) find neighbours:
    ``exact`` is numpy (ties by id); the approximate kinds build one FAISS index per arm and one over the
    concatenated arms for fused modes (queried with per-arm weights, so one index serves every weighting
    and both calibrations), kept in ``index_cache`` when given and reused while the vectors are the same.
    One query's recommendations (one matrix-vector product per arm, filters allowed) and weight sweeps
    always rank exactly.

    Every product stays in every arm it has: a product without a usable photo is still ranked by its text
    (and searched by description). Its ids are the union of the arms' ids; :attr:`missing` says, per arm,
    which products lack it and why. A single-arm mode ranks only the products of that arm (a query without
    it is refused with the reason; in many-query results its row is -1); fused modes weigh, for each query
    and product, the arms *both* have, with the weights renormalised over them
    (:func:`prodrec.rank.fusion.weighted_mean`); rrf fuses the lists each has. With some products lacking
    an arm, many-query searches are exact (approximate indexes need every product in every arm).
    """

    def __init__(
        self,
        arms: Mapping[str, Embeddings] | None = None,
        *,
        alpha: float = 0.5,
        weights: Mapping[str, float] | None = None,
        image: Embeddings | None = None,
        text: Embeddings | None = None,
        calibration: str = "auto",
        index: str = "exact",
        index_cache: IndexCache | None = None,
        index_params: Mapping[str, Any] | None = None,
        protocol: str = "full",
    ) -> None:
        given = dict(arms or {})
        for name, emb in (("image", image), ("text", text)):
            if emb is not None:
                given[name] = emb
        self.ids, aligned, present = align_outer(given)
        self.arms: dict[str, CosineIndex] = {name: CosineIndex(e.ids, e.vectors, present=present[name])
                                             for name, e in aligned.items()}
        #: arm -> {product id: why it has no vector in that arm} (only arms some product lacks).
        self.missing: dict[str, dict[str, str]] = {name: dict(e.failures) for name, e in aligned.items()
                                                   if e.failures}
        #: Whether some product lacks some arm (then fusion renormalises weights per pair, search is exact).
        self.partial = bool(self.missing)
        self.calibration = params.check_calibration(calibration, self.arms)
        #: The evaluation protocol its text vectors were built under (``full`` or ``withheld``), recorded in
        #: every evaluation record.
        self.protocol = params.check_protocol(protocol)
        self.index_requested = params.check_index_kind(index)
        #: ``exact`` (numpy, ties by id) or the approximate kind every all-vs-all search goes through.
        self.index_kind = resolve_kind(self.index_requested, len(self.ids))
        exact_because = ""
        if self.partial and self.index_kind != "exact":
            exact_because = (f"exact: {sum(map(len, self.missing.values()))} product-arm pairs are missing "
                             "(approximate indexes need every product in every arm)")
            log.warning("index %s: %s", self.index_kind, exact_because)
            self.index_kind = "exact"
        self._indexes = ArmIndexes(
            self.index_kind, {name: a.vectors for name, a in self.arms.items()}, self.ids,
            {name: str(e.meta.get("model_id", "")) for name, e in aligned.items()}, index_cache, index_params)
        #: Approximate index name (arm or ``_fused``) -> how it was obtained (built, loaded...).
        self.index_status: dict[str, str] = self._indexes.status
        if exact_because:
            self.index_status["all"] = exact_because
        self._moments: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.alpha = params.check_alpha(alpha)
        if len(self.arms) < 2:
            self.weights = {n: 1.0 for n in self.arms}
        else:
            self.weights = (self.fusion_weights(weights=weights) if weights is not None
                            else fusion.default_weights(list(self.arms), self.alpha))

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return (f"Recommender({len(self)} products, arms {list(self.arms)}, weights {self.weights}, "
                f"calibration {self.calibration}, index {self.index_kind})")

    @property
    def image(self) -> CosineIndex | None:
        return self.arms.get("image")

    @property
    def text(self) -> CosineIndex | None:
        return self.arms.get("text")

    @property
    def modes(self) -> list[str]:
        """The arms' names, plus ``fused`` and ``rrf`` when there are at least two arms."""
        return list(self.arms) + (list(FUSION_MODES) if len(self.arms) > 1 else [])

    def arm(self, name: str) -> CosineIndex:
        """The index of arm ``name``; a clear :class:`RankingError` when it is not here."""
        try:
            return self.arms[name]
        except KeyError:
            raise RankingError(f"mode {name!r} is not available; this recommender has modes {self.modes}") from None

    def positions(self, query_ids: Sequence[Any]) -> np.ndarray:
        """Row positions of ``query_ids`` in :attr:`ids`; unknown ids raise :class:`UnknownIdError`."""
        return next(iter(self.arms.values())).positions(query_ids)

    def fusion_weights(self, alpha: float | None = None, weights: Mapping[str, float] | None = None) -> dict[str, float]:
        """Normalised per-arm weights: ``weights`` if given, else ``alpha`` for image/text, else equal."""
        if len(self.arms) < 2:
            raise RankingError(f"fusion needs at least two arms; this recommender has {list(self.arms)}")
        if weights is not None:
            w = params.check_weights(weights, self.arms)
            return {name: w.get(name, 0.0) for name in self.arms}
        if alpha is None:
            return self.weights
        return fusion.default_weights(list(self.arms), params.check_alpha(alpha))

    # -------------------------------------------------------------- one query, exact
    def scores(
        self, query_id: Any, mode: str = "fused", alpha: float | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, np.ndarray]:
        """Per-arm cosine scores of one query against every product (``-inf`` where the query or the product
        lacks the arm), plus ``fused`` for a fusion mode."""
        out = {name: index.scores(query_id) for name, index in self.arms.items()}
        if mode in FUSION_MODES:
            q = self.positions([query_id])[:1]
            out["fused"] = next(self._fused_blocks(q, [self.fusion_weights(alpha, weights)]))[0]
        return out

    def _fused_blocks(self, q: np.ndarray, ws: Sequence[Mapping[str, float]]) -> Iterator[np.ndarray]:
        """Fused scores [len(q), n] of query positions ``q`` under each weighting of ``ws`` (each arm's
        cosines computed once): ``sum_a w_a cal(cos_a)``, or with arms missing for some products the
        weighted mean over the arms each pair has (``-inf`` where they share none)."""
        sims = {name: index.vectors[q] @ index.vectors.T for name, index in self.arms.items()}
        if not self.partial:
            cal = {name: fusion.calibrate(x, self.calibration) for name, x in sims.items()}
            for w in ws:
                yield fusion.weighted_sum(cal, w)
            return
        cal = {name: fusion.calibrate(x, self.calibration, self.arms[name].present) for name, x in sims.items()}
        has = {name: index.present for name, index in self.arms.items()}
        for w in ws:
            yield fusion.weighted_mean(cal, w, {name: h[q] for name, h in has.items()}, has)

    def recommend(
        self,
        query_id: Any,
        k: int = 5,
        mode: str = "fused",
        alpha: float | None = None,
        allowed: np.ndarray | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> pd.DataFrame:
        """The k recommendations for one query: rank, id, score of ``mode`` and each arm's cosine.

        ``allowed`` is an optional boolean mask over :attr:`ids` (e.g. same gender as the query).
        Costs one matrix-vector product per arm.
        """
        return self.recommend_modes(query_id, k, (mode,), alpha, allowed, weights)[mode]

    def recommend_modes(
        self,
        query_id: Any,
        k: int = 5,
        modes: Sequence[str] = ("image", "text", "fused"),
        alpha: float | None = None,
        allowed: np.ndarray | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> dict[str, pd.DataFrame]:
        """:meth:`recommend` for several modes at once, from one matrix-vector product per arm
        (what an interactive browser needs per click)."""
        for mode in modes:
            params.check_mode(mode, self.arms)
        qpos = self.positions([query_id])[:1]
        for mode in modes:
            if mode in self.arms and not self.arms[mode].present[qpos[0]]:
                has = [m for m in self.modes if m not in self.arms or self.arms[m].present[qpos[0]]]
                raise RankingError(f"product {str(query_id)!r} has no {mode} vector "
                                   f"({self.missing[mode].get(str(query_id), 'no vector')}); its modes: {has}")
        fusing = any(m in FUSION_MODES for m in modes)
        sc = self.scores(query_id, "fused" if fusing else modes[0], alpha, weights)
        mask = None if allowed is None else np.asarray(allowed, dtype=bool)
        if mask is None:
            k = params.check_k(k, len(self))
        else:
            params.check_k(k)
            n_ok = int(mask.sum() - bool(mask[qpos[0]]))
            if k > n_ok:
                raise RankingError(f"k={k} but only {n_ok} products pass the filter")
        out = {}
        for mode in modes:
            if mode == "rrf":
                key = self._rrf_row(sc, qpos, k, self.fusion_weights(alpha, weights))
            else:
                key = sc[mode].copy()[None, :]
            exclude_self(key, qpos)
            if mask is not None:
                key[:, ~mask] = -np.inf
            pos, vals = select_topk(key, k)
            pos, vals = pos[0], vals[0]
            if not np.isfinite(vals).all():  # fewer candidates than k: products lacking the arm, or the filter
                n_ok = int(np.isfinite(key).sum())
                raise RankingError(f"k={k} but only {n_ok} products can be ranked by {mode} for {query_id!r}")
            df = pd.DataFrame({"rank": np.arange(1, k + 1), "id": self.ids[pos], "score": vals})
            for name in [*self.arms, "fused"]:
                if name in sc and name != mode:  # the mode's own score is `score` (NaN: an arm it lacks)
                    col = sc[name][pos].astype(np.float64)
                    df[f"{name}_score"] = np.where(np.isfinite(col), col, np.nan)
            out[mode] = df
        return out

    def _rrf_row(self, sc: Mapping[str, np.ndarray], qpos: np.ndarray, k: int, w: Mapping[str, float]) -> np.ndarray:
        """[1, n] reciprocal-rank fusion scores of one query from its arms' scores (-inf: in no list)."""
        depth = fusion.rrf_depth(k, len(self))
        used = [name for name in self.arms if w[name] > 0]
        lists = [unranked(*select_topk(exclude_self(sc[name].copy()[None, :], qpos), depth))[0] for name in used]
        cand, score = fusion.rrf_lists(lists, [w[name] for name in used])[0]
        key = np.full((1, len(self)), -np.inf)
        key[0, cand] = score
        return key

    def rank_vector(
        self, vector: np.ndarray, arm: str, k: int = 5, allowed: np.ndarray | None = None
    ) -> pd.DataFrame:
        """Top-k products of one arm for an outside query vector (a described product, say): rank, id and
        cosine ``score``. ``allowed`` is an optional boolean mask over :attr:`ids`."""
        index = self.arm(arm)
        v = np.asarray(vector, dtype=np.float32).reshape(-1)
        if v.shape[0] != index.vectors.shape[1] or not np.isfinite(v).all() or not np.linalg.norm(v) > 0:
            raise RankingError(f"a query vector for the {arm} arm must be finite, non-zero and "
                               f"{index.vectors.shape[1]}-d; got shape {v.shape}")
        v = v / np.linalg.norm(v)
        if allowed is None and self.index_kind != "exact":
            pos, vals = self._indexes.arm(arm).search(v[None, :], params.check_k(k, len(self) + 1))
            return pd.DataFrame({"rank": np.arange(1, k + 1), "id": self.ids[pos[0]], "score": vals[0]})
        scores = index.vectors @ v
        if index.partial:
            scores[~index.present] = -np.inf
        if allowed is not None:
            mask = np.asarray(allowed, dtype=bool)
            n_ok = int(mask.sum())
            params.check_k(k)
            if k > n_ok:
                raise RankingError(f"k={k} but only {n_ok} products pass the filter")
            scores = np.where(mask, scores, -np.inf)
        else:
            params.check_k(k, len(self) + 1)
        pos, vals = select_topk(scores[None, :], k)
        return pd.DataFrame({"rank": np.arange(1, k + 1), "id": self.ids[pos[0]], "score": vals[0]})

    def query(
        self,
        positive: Sequence[Any] = (),
        negative: Sequence[Any] = (),
        text: str | compose.Modifier | Mapping[str, np.ndarray] | None = None,
        weights: Mapping[str, float] | None = None,
        k: int = 5,
        *,
        embed: Any = None,
        text_weights: Mapping[str, float] | float | None = None,
        negative_weight: float = compose.NEGATIVE_WEIGHT,
        allowed: np.ndarray | None = None,
    ) -> pd.DataFrame:
        """A composed or feedback query: more like ``positive``, less like ``negative``, plus a ``text``
        modifier ("in red"), Rocchio-style per arm on the fusion's scale (see :mod:`prodrec.rank.compose`).

        ``text`` is a :class:`~prodrec.rank.compose.Modifier`, a mapping arm -> vector, or a string placed
        by ``embed`` (a :class:`~prodrec.rank.compose.Composer`; one with ``near`` arms places it through near
        prototypes of the liked products). ``weights`` are the arms' weights (default the fusion weights),
        ``text_weights`` the modifier's. The given products are never recommended.
        Returns rank, id, score and each arm's weighted part (``<arm>_score``).
        """
        pos, neg = self.positions(list(positive)), self.positions(list(negative))
        both = sorted(set(self.ids[pos]) & set(self.ids[neg]))
        if both:
            raise RankingError(f"product(s) {both} are both liked and disliked")
        w = self.weights if weights is None else (
            self.fusion_weights(weights=weights) if len(self.arms) > 1 else params.check_weights(weights, self.arms))
        like = {name: a.vectors[pos].mean(axis=0) for name, a in self.arms.items()} if len(pos) else None
        score, parts = compose.rocchio_scores(
            {name: a.vectors for name, a in self.arms.items()}, pos, neg, compose.as_modifier(text, embed, like), w,
            text_weights, self.calibration, negative_weight)
        given = np.concatenate([pos, neg])
        mask = None if allowed is None else np.asarray(allowed, dtype=bool)
        n_ok = len(self) - len(np.unique(given)) if mask is None else int(np.delete(mask, given).sum())
        params.check_k(k)
        if k > n_ok:
            raise RankingError(f"k={k} but only {n_ok} products can be recommended")
        key = score[None, :].copy()
        key[0, given] = -np.inf
        if mask is not None:
            key[:, ~mask] = -np.inf
        top, vals = select_topk(key, k)
        df = pd.DataFrame({"rank": np.arange(1, k + 1), "id": self.ids[top[0]], "score": vals[0]})
        for name, part in parts.items():
            df[f"{name}_score"] = part[top[0]]
        return df

    # -------------------------------------------------------------- many queries
    def topk_positions(
        self, k: int = 5, mode: str = "fused", alpha: float | None = None, query_pos: np.ndarray | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> Positions:
        """All-vs-all (or the given query positions) top-k positions and scores under ``mode``.

        Where a query cannot be ranked by ``mode`` (it lacks that arm) or has fewer than k candidates (the
        products lacking the arm are not candidates), its missing entries are position -1, score -inf."""
        params.check_mode(mode, self.arms)
        if mode == "fused":
            if self.index_kind != "exact":
                return self._ann_fused_topk(k, query_pos, self.fusion_weights(alpha, weights))
            return self.fused_topk_sweep([self.fusion_weights(alpha, weights)], k, query_pos=query_pos)[0]
        if mode == "rrf":
            return self._rrf_topk(k, query_pos, self.fusion_weights(alpha, weights))
        return self._arm_topk(mode, query_pos, k)

    def recommend_many(
        self, query_ids: Sequence[Any], k: int = 5, mode: str = "fused", alpha: float | None = None,
        weights: Mapping[str, float] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ids [m, k], scores [m, k]) for many queries."""
        pos, vals = self.topk_positions(k, mode, alpha, self.positions(query_ids), weights)
        return self.ids[pos], vals

    def fused_topk_sweep(
        self, weight_list: Sequence[Mapping[str, float]], k: int = 5, block: int | None = None,
        query_pos: np.ndarray | None = None,
    ) -> list[Positions]:
        """All-vs-all (or ``query_pos``) fused top-k for several weightings at once (a weight sweep): each
        arm's block of calibrated cosines is computed once and re-weighted per setting, instead of one full
        search per setting. Memory stays bounded: blocks of queries, never an N x N matrix."""
        n = len(self)
        k = params.check_k(k, n)
        ws = [self.fusion_weights(weights=w) for w in weight_list]
        qp = self._query_pos(query_pos)

        def scores_of(rows: slice) -> Iterator[np.ndarray]:
            q = qp[rows]
            for fused in self._fused_blocks(q, ws):
                yield exclude_self(fused, q)

        out = blocked_topk(len(qp), k, block or block_rows(n, copies=len(self.arms) + 1), scores_of, len(ws))
        return [unranked(pos, val) for pos, val in out] if self.partial else out

    def _query_pos(self, query_pos: np.ndarray | None) -> np.ndarray:
        return np.arange(len(self)) if query_pos is None else np.asarray(query_pos, dtype=np.intp)

    def _arm_topk(self, name: str, query_pos: np.ndarray | None, k: int) -> Positions:
        """One arm's top-k for query positions (all when None), the query itself left out."""
        index = self.arm(name)
        if self.index_kind == "exact":
            return index.topk_positions(query_pos, k)
        k = params.check_k(k, len(self))
        qp = self._query_pos(query_pos)
        ann = self._indexes.arm(name)
        pos, val = ann.search(index.vectors[qp], k + 1, effort=ann.effort_for(k))
        return drop_self(pos, val, qp, k)  # type: ignore[return-value]

    def _moments_of(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self._moments:
            self._moments[name] = fusion.moments(self.arms[name].vectors)
        return self._moments[name]

    def _fused_queries(self, query_pos: np.ndarray, w: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Rows for the fused index whose inner product is the fused score minus ``offset`` (see
        :func:`prodrec.rank.fusion.fused_queries`), and that offset."""
        zscore = self.calibration == "zscore"
        arm_moments = {name: self._moments_of(name) for name in self.arms if w[name]} if zscore else None
        return fusion.fused_queries({name: a.vectors[query_pos] for name, a in self.arms.items()}, w, arm_moments)

    def _ann_fused_topk(self, k: int, query_pos: np.ndarray | None, w: Mapping[str, float]) -> Positions:
        k = params.check_k(k, len(self))
        qp = self._query_pos(query_pos)
        q, offset = self._fused_queries(qp, w)
        ann = self._indexes.fused(lambda rows: self._fused_queries(rows, self.weights)[0])
        pos, val = drop_self(*ann.search(q, k + 1), qp, k)
        return pos, (val - offset[:, None]).astype(np.float32)  # type: ignore[operator]

    def _rrf_topk(self, k: int, query_pos: np.ndarray | None, w: Mapping[str, float]) -> Positions:
        k = params.check_k(k, len(self))
        depth = fusion.rrf_depth(k, len(self))
        qp = self._query_pos(query_pos)
        used = [name for name in self.arms if w[name] > 0]
        lists = [self._arm_topk(name, qp, depth)[0] for name in used]
        return fusion.rrf_topk(lists, [w[name] for name in used], k)
