"""Evaluation runs and weight sweeps over a recommender: label agreement, ranking metrics, coverage and
diversity of top-k lists.

:func:`evaluate` ranks every product with each mode and scores the lists with the metric registry
(:mod:`.metrics`): by default precision@k per label column (per query, the share of its k recommendations
with the query's label, averaged over queries whose own label is known; a recommendation with a missing
label counts as a miss); on request nDCG, MAP, MRR and recall with graded relevance (:mod:`.relevance`).
Confidence intervals are percentile bootstraps over queries. The ``random`` rows are exact expectations for
k products drawn uniformly from the others. ``evaluate(..., return_scores=True)`` also returns the per-query values,
for paired significance tests between modes (:mod:`.significance`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import params
from ..data.catalog import Catalog
from ..core.errors import CatalogError, ConfigError
from ..data.schema import KAGGLE
from .metrics import MetricSpec, check_metrics, get_metric, label_codes, precision_at_k, random_precision_at_k
from .relevance import grade_counts

if TYPE_CHECKING:
    from ..rank.recommender import Recommender

#: Used when labels come as a bare DataFrame without a schema: the Kaggle preset's label columns.
DEFAULT_LABELS: tuple[str, ...] = KAGGLE.label_columns or ()
#: The metrics :func:`evaluate` reports unless told otherwise (the paper's measure).
DEFAULT_METRICS: tuple[str, ...] = ("precision",)


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


def per_query_precision(labels: pd.Series, neighbors: np.ndarray) -> np.ndarray:
    """Per-query share of neighbours with the query's label; NaN where the query's label is missing or the
    query has no full list (-1 entries: it lacks the mode's arm)."""
    ranked = (neighbors >= 0).all(axis=1)
    out = precision_at_k(np.where(neighbors >= 0, neighbors, 0), label_codes(labels.reset_index(drop=True)))
    return np.where(ranked, out, np.nan)


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
    return random_precision_at_k(label_codes(labels.reset_index(drop=True)))


def coverage(neighbors: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one recommendation list."""
    return float(len(np.unique(neighbors)) / n_items) if n_items else float("nan")


def intra_list_diversity(neighbors: np.ndarray, vectors: np.ndarray, block: int = 4096) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among a list's items."""
    k = neighbors.shape[1]
    if k < 2 or not len(neighbors):
        return float("nan")
    total = 0.0
    iu = np.triu_indices(k, 1)
    for b in range(0, len(neighbors), block):
        v = vectors[neighbors[b : b + block]]  # [m, k, d]
        sims = np.einsum("mkd,mld->mkl", v, v)[:, iu[0], iu[1]]
        total += float((1.0 - sims).mean(axis=1).sum())
    return total / len(neighbors)


class Job(NamedTuple):
    """One per-query value a ranking gets: a metric on a label (or on the grading columns), with its codes."""

    spec: MetricSpec
    label: str
    codes: np.ndarray


def metric_jobs(lab: pd.DataFrame, columns: Sequence[str], metrics: Sequence[str] | str,
                grade_levels: int = 2) -> list[Job]:
    """The (metric, label, codes) of every value a ranking is scored with, in table order: a per-label metric
    once per column of ``lab``, the others once on the codes of the first ``grade_levels`` columns (their
    label is those columns joined by ``+``)."""
    grade_levels = params.check_positive_int("grade_levels", grade_levels)
    codes = {col: label_codes(lab[col]) for col in columns}
    graded = list(columns)[:grade_levels]
    grade_codes = np.column_stack([codes[c] for c in graded])
    jobs: list[Job] = []
    for spec in (get_metric(m) for m in check_metrics(metrics)):
        if spec.per_label:
            jobs += [Job(spec, col, codes[col]) for col in columns]
        else:
            jobs.append(Job(spec, "+".join(graded), grade_codes))
    return jobs


@dataclass
class QueryScores:
    """One evaluation run before it is averaged: per-query values of every (mode, metric, label), the random
    baselines and the extras, in the order :meth:`table` reports them (``evaluate(..., return_scores=True)``)."""

    k: int
    protocol: str
    modes: list[str] = field(default_factory=list)
    #: (mode, metric, label) -> values [n] (NaN: query not scored); the input of significance tests.
    per_query: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    #: (metric, label) -> (expected value for random recommendations, queries scored).
    baselines: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)
    #: (mode, metric) -> (value, n): coverage and ild_<arm>, which are not per-query label metrics.
    extras: dict[tuple[str, str], tuple[float, int]] = field(default_factory=dict)

    def add_baselines(self, jobs: Sequence[Job]) -> None:
        """The random rows: each metric's expectation for uniformly random recommendations, where known."""
        for job in jobs:
            if job.spec.baseline is not None:
                scored = (job.codes >= 0).sum() if job.spec.per_label else (grade_counts(job.codes)[:, 0] > 0).sum()
                self.baselines[(job.spec.name, job.label)] = (float(job.spec.baseline(job.codes, self.k)), int(scored))

    def add_mode(self, mode: str, positions: np.ndarray, jobs: Sequence[Job], vectors: Mapping[str, np.ndarray]) -> None:
        """Score one mode's top-k ``positions`` [n, k]: every job per query, then coverage and the intra-list
        diversity in each arm's space (``vectors``: arm -> [n, d])."""
        self.modes.append(mode)
        # a query the mode cannot rank (it lacks the mode's arm) has -1 entries: it is not scored (NaN)
        ranked = (positions >= 0).all(axis=1)
        safe = np.where(positions >= 0, positions, 0)
        for job in jobs:
            values = np.asarray(job.spec.per_query(safe, job.codes), dtype=np.float64)
            values[~ranked] = np.nan
            self.per_query[(mode, job.spec.name, job.label)] = values
        n = len(positions)
        self.extras[(mode, "coverage")] = (coverage(positions[positions >= 0], n), int(ranked.sum()))
        for arm, v in vectors.items():
            has = np.linalg.norm(v, axis=1) > 0  # products without this arm hold zero rows
            rows = ranked & has[safe].all(axis=1)
            self.extras[(mode, f"ild_{arm}")] = (intra_list_diversity(safe[rows], v), int(rows.sum()))

    def table(self, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """The tidy table of :func:`evaluate`: means with percentile-bootstrap 95% intervals over queries."""
        params.check_n_boot(n_boot)
        rows: list[dict[str, Any]] = [
            dict(mode="random", metric=metric, label=label, value=value, ci_low=np.nan, ci_high=np.nan,
                 n_queries=n, k=self.k) for (metric, label), (value, n) in self.baselines.items()]
        for mode in self.modes:
            for (m, metric, label), pq in self.per_query.items():
                if m == mode:
                    lo, hi = bootstrap_ci(pq, n_boot=n_boot, seed=seed)
                    scored = int((~np.isnan(pq)).sum())
                    rows.append(dict(mode=mode, metric=metric, label=label,
                                     value=float(np.nanmean(pq)) if scored else float("nan"),
                                     ci_low=lo, ci_high=hi, n_queries=scored, k=self.k))
            rows.extend(dict(mode=mode, metric=metric, label="", value=value, ci_low=np.nan, ci_high=np.nan,
                             n_queries=n, k=self.k) for (m, metric), (value, n) in self.extras.items() if m == mode)
        out = pd.DataFrame(rows, columns=["mode", "metric", "label", "value", "ci_low", "ci_high", "n_queries", "k"])
        out.insert(0, "protocol", self.protocol)
        return out


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
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    grade_levels: int = 2,
    return_scores: bool = False,
) -> pd.DataFrame | tuple[pd.DataFrame, QueryScores]:
    """All-vs-all evaluation of a :class:`~prodrec.rank.Recommender` over its products.

    ``labels`` is the catalog (its label columns are used) or a table indexed by product id. Returns a tidy
    table with columns ``protocol, mode, metric, label, value, ci_low, ci_high, n_queries, k``: one row per
    mode and registered metric of ``metrics`` (:data:`~prodrec.evaluation.metrics.METRICS`; default
    ``precision``, per label; ``ndcg``, ``map``, ``mrr``, ``recall`` with relevance graded by the first
    ``grade_levels`` label columns, see :mod:`~prodrec.evaluation.relevance`), with percentile-bootstrap 95%
    intervals over queries (``n_boot`` resamples, ``seed``); a ``random`` row per metric with a known
    expectation for random recommendations; and, for every mode, ``coverage`` and ``ild_<arm>``
    (intra-list diversity in each arm's space). The protocol column is the one the recommender's text
    inputs were made under (``full`` or ``withheld``, see :func:`~prodrec.run.experiment.build_experiment`),
    so tables of both protocols can be stacked; ``protocol``, when given, must be that one.

    ``return_scores=True`` returns ``(table, scores)``: the :class:`QueryScores` keep the per-query values,
    for paired significance tests between modes (:func:`~prodrec.evaluation.significance.compare_modes`).
    """
    params.check_n_boot(n_boot)
    modes = list(modes or recommender.modes)
    for mode in modes:
        params.check_mode(mode, recommender.arms)
    params.check_k(k, len(recommender))
    table, columns = label_table(labels, columns)
    jobs = metric_jobs(table.reindex(recommender.ids), columns, metrics, grade_levels)
    scores = QueryScores(k=k, protocol=_check_protocol(recommender, protocol))
    scores.add_baselines(jobs)
    vectors = {arm: index.vectors for arm, index in recommender.arms.items()}
    for mode in tqdm(modes, desc="evaluate modes", disable=not progress):
        pos, _ = recommender.topk_positions(k, mode, alpha, weights=weights)
        scores.add_mode(mode, pos, jobs, vectors)
    out = scores.table(n_boot=n_boot, seed=seed)
    return (out, scores) if return_scores else out


def _check_protocol(recommender: Recommender, protocol: str | None) -> str:
    known = recommender.protocol
    if protocol is not None and params.check_protocol(protocol) != known:
        raise ConfigError(f"protocol={protocol!r}, but this recommender's text inputs were made under {known!r}; "
                          f"build the experiment with protocol={protocol!r} instead")
    return known


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
    the first two label columns unless ``columns`` says otherwise: :func:`weight_sweep` over the weightings
    ``{image: alpha, text: 1 - alpha}``, with columns ``alpha, label, k, precision``."""
    alphas = [params.check_alpha(a) for a in alphas]
    sweep = weight_sweep(recommender, labels, [{"image": a, "text": 1.0 - a} for a in alphas], k=k,
                         columns=columns, progress=progress)
    per_setting = len(sweep) // max(len(alphas), 1)  # rows per weighting: one per label
    return sweep.assign(alpha=np.repeat(alphas, per_setting))[["alpha", "label", "k", "precision"]]
