"""Measuring what the paper showed in pictures: label agreement, coverage and diversity of top-k lists.

precision@k for a label column (articleType, baseColour...) is, per query, the share of its k
recommendations with the same label as the query, averaged over queries whose own label is known
(a recommendation with a missing label counts as a miss). Confidence intervals are percentile bootstraps
over queries. The ``random`` row is the exact expectation for k products drawn uniformly from the others.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import params
from ..data.catalog import Catalog
from ..core.errors import CatalogError, ConfigError
from ..data.schema import KAGGLE

if TYPE_CHECKING:
    from ..rank.recommender import Recommender

#: Used when labels come as a bare DataFrame without a schema: the Kaggle preset's label columns.
DEFAULT_LABELS: tuple[str, ...] = KAGGLE.label_columns or ()


def label_table(labels: Catalog | pd.DataFrame, columns: Sequence[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(labels indexed by id as strings, the label columns to use): a catalog's own label columns, or
    ``columns``, or the Kaggle preset's that are present. Columns that are missing raise a clear error."""
    if isinstance(labels, Catalog):
        table, default = labels.labels, list(labels.label_columns)
    else:
        table, default = labels, [c for c in DEFAULT_LABELS if c in labels.columns]
    cols = list(default if columns is None else columns)
    missing = [c for c in cols if c not in table.columns]
    if missing:
        raise CatalogError(f"label column(s) {missing} not in the catalog ({list(table.columns)})")
    if not cols:
        raise CatalogError("no label columns to evaluate: name some (--label-columns a,b / label_columns=)")
    table = table.copy()
    table.index = table.index.map(str)
    return table, cols


def _codes(values: pd.Series) -> np.ndarray:
    """Integer label codes; missing labels are -1."""
    codes, _ = pd.factorize(values.astype("object").where(values.notna(), None), use_na_sentinel=True)
    return codes


def per_query_precision(labels: pd.Series, neighbors: np.ndarray) -> np.ndarray:
    """Per-query share of neighbours with the query's label; NaN where the query's label is missing."""
    codes = _codes(labels.reset_index(drop=True))
    q = codes[:, None] if len(neighbors) == len(codes) else None
    if q is None:
        raise ValueError(f"neighbors has {len(neighbors)} rows for {len(codes)} products")
    hits = (codes[neighbors] == q) & (q >= 0)
    out = hits.mean(axis=1)
    out[codes < 0] = np.nan
    return out


def bootstrap_ci(values: np.ndarray, n_boot: int = 1000, ci: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``values`` (NaNs dropped)."""
    v = values[~np.isnan(values)]
    if len(v) == 0:
        return float("nan"), float("nan")
    params.check_n_boot(n_boot)
    rng = np.random.default_rng(seed)
    means = np.empty(n_boot)
    for b in range(0, n_boot, 100):  # chunks keep memory at 100 x n
        idx = rng.integers(0, len(v), size=(min(100, n_boot - b), len(v)))
        means[b : b + len(idx)] = v[idx].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - ci) / 2, 1 - (1 - ci) / 2])
    return float(lo), float(hi)


def random_precision(labels: pd.Series) -> float:
    """Expected precision@k of uniformly random recommendations (any k): mean of (n_c - 1) / (n - 1)."""
    codes = _codes(labels.reset_index(drop=True))
    known = codes >= 0
    if known.sum() == 0 or len(codes) < 2:
        return float("nan")
    counts = np.bincount(codes[known])
    return float(((counts[codes[known]] - 1) / (len(codes) - 1)).mean())


def coverage(neighbors: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one recommendation list."""
    return float(len(np.unique(neighbors)) / n_items) if n_items else float("nan")


def intra_list_diversity(neighbors: np.ndarray, vectors: np.ndarray, block: int = 4096) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among a list's items."""
    k = neighbors.shape[1]
    if k < 2:
        return float("nan")
    total = 0.0
    iu = np.triu_indices(k, 1)
    for b in range(0, len(neighbors), block):
        v = vectors[neighbors[b : b + block]]  # [m, k, d]
        sims = np.einsum("mkd,mld->mkl", v, v)[:, iu[0], iu[1]]
        total += float((1.0 - sims).mean(axis=1).sum())
    return total / len(neighbors)


def evaluate(
    recommender: Recommender,
    labels: Catalog | pd.DataFrame,
    k: int = 5,
    modes: Sequence[str] | None = None,
    columns: Sequence[str] | None = None,
    alpha: float | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
    weights: Mapping[str, float] | None = None,
    protocol: str | None = None,
) -> pd.DataFrame:
    """All-vs-all evaluation of a :class:`~prodrec.rank.Recommender` over its products.

    ``labels`` is the catalog (its label columns are used) or a table indexed by product id. Returns a tidy
    table with columns ``mode, metric, label, value, ci_low, ci_high, n_queries, k``; metrics are
    ``precision`` (per label), ``coverage`` and ``ild_<arm>`` (intra-list diversity in each arm's space).
    The protocol the recommender's text inputs were made under (``full`` or ``withheld``, set by
    :func:`~prodrec.pipeline.build_experiment`) is recorded in a first column, so tables of both protocols
    can be stacked; ``protocol`` names it for a recommender built by hand, and must match a known one.
    """
    modes = list(modes or recommender.modes)
    for mode in modes:
        params.check_mode(mode, recommender.arms)
    params.check_k(k, len(recommender))
    params.check_n_boot(n_boot)
    table, columns = label_table(labels, columns)
    lab = table.reindex(recommender.ids)
    rows: list[dict[str, Any]] = []
    n = len(recommender)
    for col in columns:
        known = int(lab[col].notna().sum())
        rows.append(dict(mode="random", metric="precision", label=col, value=random_precision(lab[col]),
                         ci_low=np.nan, ci_high=np.nan, n_queries=known, k=k))
    for mode in tqdm(modes, desc="evaluate modes", disable=not progress):
        pos, _ = recommender.topk_positions(k, mode, alpha, weights=weights)
        for col in columns:
            pq = per_query_precision(lab[col], pos)
            lo, hi = bootstrap_ci(pq, n_boot=n_boot, seed=seed)
            rows.append(dict(mode=mode, metric="precision", label=col, value=float(np.nanmean(pq)),
                             ci_low=lo, ci_high=hi, n_queries=int((~np.isnan(pq)).sum()), k=k))
        rows.append(dict(mode=mode, metric="coverage", label="", value=coverage(pos, n),
                         ci_low=np.nan, ci_high=np.nan, n_queries=n, k=k))
        for arm, index in recommender.arms.items():
            rows.append(dict(mode=mode, metric=f"ild_{arm}", label="",
                             value=intra_list_diversity(pos, index.vectors),
                             ci_low=np.nan, ci_high=np.nan, n_queries=n, k=k))
    out = pd.DataFrame(rows)
    known = getattr(recommender, "protocol", None)
    if protocol is not None and known is not None and protocol != known:
        raise ConfigError(f"protocol={protocol!r}, but this recommender's text inputs were made under {known!r}; "
                          f"build the experiment with protocol={protocol!r} instead")
    protocol = protocol or known
    if protocol is not None:
        out.insert(0, "protocol", params.check_protocol(protocol))
    return out


def weight_sweep(
    recommender: Recommender,
    labels: Catalog | pd.DataFrame,
    weight_list: Sequence[Mapping[str, float]],
    k: int = 5,
    columns: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """precision@k of fused ranking under each weighting in ``weight_list`` (arm -> weight), one row per
    weighting and label, with a ``w_<arm>`` column per arm (normalised weights). Each arm's cosines are
    computed once for all weightings."""
    params.check_k(k, len(recommender))
    table, cols = label_table(labels, columns)
    columns = cols if columns is not None else cols[:2]
    lab = table.reindex(recommender.ids)
    ws = [recommender.fusion_weights(weights=w) for w in weight_list]
    swept = list(dict.fromkeys(a for w in weight_list for a in w))  # the arms the sweep weighs
    results = recommender.fused_topk_sweep(ws, k)
    rows = []
    for w, (pos, _) in tqdm(list(zip(ws, results)), desc="weight sweep", disable=not progress):
        for col in columns:
            rows.append({**{f"w_{a}": round(float(w[a]), 6) for a in swept}, "label": col, "k": k,
                         "precision": float(np.nanmean(per_query_precision(lab[col], pos)))})
    return pd.DataFrame(rows)


def weight_grid(arms: Sequence[str], step: float = 0.1) -> list[dict[str, float]]:
    """Every weighting of ``arms`` on a simplex grid of ``step`` (weights >= 0 summing to 1, not all zero)."""
    n = round(1 / step)
    if not 1 <= n <= 100 or abs(n * step - 1) > 1e-9:
        raise ConfigError(f"step must divide 1 into 1 to 100 parts, got {step}")
    out: list[dict[str, float]] = []

    def rec(prefix: list[int], left: int) -> None:
        if len(prefix) == len(arms) - 1:
            out.append({a: c / n for a, c in zip(arms, [*prefix, left])})
            return
        for c in range(left + 1):
            rec([*prefix, c], left - c)

    rec([], n)
    return out


def alpha_sweep(
    recommender: Recommender,
    labels: Catalog | pd.DataFrame,
    alphas: Sequence[float] = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
    k: int = 5,
    columns: Sequence[str] | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """precision@k of fused ranking for each image weight ``alpha`` (0 = text only, 1 = image only), over
    the first two label columns unless ``columns`` says otherwise."""
    for a in alphas:
        params.check_alpha(a)
    params.check_k(k, len(recommender))
    table, cols = label_table(labels, columns)
    columns = cols if columns is not None else cols[:2]
    lab = table.reindex(recommender.ids)
    settings = [{"image": float(a), "text": 1.0 - float(a)} for a in alphas]
    rows = []
    results = recommender.fused_topk_sweep(settings, k)  # each arm's cosines computed once for all alphas
    for a, (pos, _) in tqdm(list(zip(alphas, results)), desc="alpha sweep", disable=not progress):
        for col in columns:
            rows.append({"alpha": float(a), "label": col, "k": k,
                         "precision": float(np.nanmean(per_query_precision(lab[col], pos)))})
    return pd.DataFrame(rows)


