"""Evaluation runs and weight sweeps over a recommender: label agreement, ranking metrics, coverage and
diversity of top-k lists.

:func:`evaluate` ranks every product with each mode and scores the lists with the metric registry
(:mod:`.metrics`): by default precision@k per label column (per query, the share of its k recommendations
with the query's label, averaged over queries whose own label is known; a recommendation with a missing
label counts as a miss); on request nDCG, MAP, MRR and recall with graded relevance (:mod:`.relevance`).
Confidence intervals are percentile bootstraps over queries. The ``random`` rows are exact expectations for
k products drawn uniformly from the others. ``evaluate(..., return_scores=True)`` also returns the per-query values,
for paired significance tests between modes (:mod:`.significance`) and paired bootstrap intervals of a
difference (:func:`paired_difference`).

Tune on validation, report on test: :func:`split_queries` splits the evaluated products into disjoint, seeded
validation and test *queries* (every product stays a candidate). The sweeps (:func:`weight_sweep`,
:func:`alpha_sweep`) given a split report both curves (a ``split`` column), :func:`tune_weights` picks a
weighting on the validation rows only and reads its value on the test rows, and ``evaluate(..., queries=
split.test, variants={"fused_tuned": tuned.weights})`` scores the tuned weighting beside every other mode on
the test queries alone.

Duplicates: ``evaluate(..., exclude_same="productDisplayName")`` ranks each query's top-k among the products
whose value of that column differs from the query's (the same product sold under one name in several colours
is left out), the duplicate-aware rows to set beside the standard ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import params
from ..core.errors import CatalogError, ConfigError
from ..core.vocab import FUSION_MODES, LEARNED
from ..data.catalog import Catalog
from ..data.schema import KAGGLE
from .metrics import MetricSpec, check_metrics, get_metric, label_codes, precision_at_k, random_precision_at_k
from .relevance import grade_counts

if TYPE_CHECKING:
    from ..rank.recommender import Recommender

#: Used when labels come as a bare DataFrame without a schema: the Kaggle preset's label columns.
DEFAULT_LABELS: tuple[str, ...] = KAGGLE.label_columns or ()
#: The metrics :func:`evaluate` reports unless told otherwise (the paper's measure).
DEFAULT_METRICS: tuple[str, ...] = ("precision",)
#: The two halves of a :class:`QuerySplit`, in the order sweeps report them.
SPLITS: tuple[str, ...] = ("validation", "test")
#: What :func:`tune_fusion` can tune: the paper's image weight alpha, or every fixed arm's weight on a grid.
TUNABLE: tuple[str, ...] = ("alpha", "weights")
#: The mode name of a fused weighting chosen on validation queries.
TUNED_MODE = "fused_tuned"
#: The ``candidates`` value of the standard rows when they are stacked with duplicate-aware ones.
ALL_CANDIDATES = "all"


@dataclass(frozen=True)
class QuerySplit:
    """Disjoint validation and test queries of one evaluated sample (ids as strings, in the sample's order):
    a choice is tuned on the validation queries and reported on the test queries. Every product stays a
    candidate for every query; only the queries are split."""

    validation: tuple[str, ...]
    test: tuple[str, ...]
    seed: int
    fraction: float

    def of(self, split: str) -> tuple[str, ...]:
        """The ids of ``split`` (``validation`` or ``test``)."""
        return self.validation if params.check_choice("split", split, SPLITS) == "validation" else self.test

    def describe(self) -> str:
        """One line: how many queries each half holds and how it was drawn."""
        return (f"{len(self.validation)} validation and {len(self.test)} test queries (a seeded random split of "
                f"the {len(self.validation) + len(self.test)} evaluated products, seed {self.seed}; every product "
                "stays a candidate)")

    def to_dict(self) -> dict[str, Any]:
        """Counts, seed and fraction (provenance; the ids are reproducible from the seed)."""
        return {"validation": len(self.validation), "test": len(self.test), "seed": self.seed,
                "fraction": self.fraction}


def split_queries(ids: Sequence[Any], validation: float = 0.5, seed: int = 0) -> QuerySplit:
    """A seeded split of ``ids`` into validation queries (a share ``validation`` of them) and test queries
    (the rest), each half in the order of ``ids``."""
    ids = [str(i) for i in ids]
    if len(set(ids)) != len(ids):
        raise ConfigError("split_queries needs unique ids")
    try:
        frac = float(validation)
    except (TypeError, ValueError):
        raise ConfigError(f"validation must be a share within (0, 1), got {validation!r}") from None
    n_val = round(frac * len(ids))
    if not 0.0 < frac < 1.0 or not 1 <= n_val <= len(ids) - 1:
        raise ConfigError(f"validation={validation!r} of {len(ids)} queries leaves one half empty; give a share "
                          "within (0, 1) and at least 2 queries")
    chosen = np.zeros(len(ids), dtype=bool)
    chosen[np.random.default_rng(seed).permutation(len(ids))[:n_val]] = True
    return QuerySplit(tuple(np.asarray(ids)[chosen]), tuple(np.asarray(ids)[~chosen]), int(seed), frac)


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


class Difference(NamedTuple):
    """The paired difference ``mean(a - b)`` over the queries both score, with its bootstrap interval."""

    mean_a: float
    mean_b: float
    diff: float
    ci_low: float
    ci_high: float
    n_queries: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0."""
        return bool(self.ci_low > 0 or self.ci_high < 0)


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 1000, ci: float = 0.95,
                      seed: int = 0) -> Difference:
    """``mean(a) - mean(b)`` over the queries scored in both (NaN in either: left out), with a percentile
    bootstrap interval that resamples queries, so each query's two values move together (a paired test:
    e.g. one arm's precision on two labels, or two modes on one label)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ConfigError(f"paired values need one value per query on both sides; got {a.shape} and {b.shape}")
    both = ~(np.isnan(a) | np.isnan(b))
    d = a[both] - b[both]
    lo, hi = bootstrap_ci(d, n_boot=n_boot, ci=ci, seed=seed)
    mean = lambda v: float(v.mean()) if len(v) else float("nan")  # noqa: E731
    return Difference(mean(a[both]), mean(b[both]), mean(d), lo, hi, int(both.sum()))


def random_precision(labels: pd.Series) -> float:
    """Expected precision@k of uniformly random recommendations (any k): mean of (n_c - 1) / (n - 1)."""
    return random_precision_at_k(label_codes(labels.reset_index(drop=True)))


def coverage(neighbors: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one recommendation list."""
    return float(len(np.unique(neighbors)) / n_items) if n_items else float("nan")


def list_diversity(neighbors: np.ndarray, vectors: np.ndarray, block: int = 4096) -> np.ndarray:
    """Per list, the mean pairwise cosine distance (1 - cos) among its items ([n]; NaN when k < 2)."""
    k = neighbors.shape[1]
    if k < 2:
        return np.full(len(neighbors), np.nan)
    out = np.empty(len(neighbors))
    iu = np.triu_indices(k, 1)
    for b in range(0, len(neighbors), block):
        v = vectors[neighbors[b : b + block]]  # [m, k, d]
        sims = np.einsum("mkd,mld->mkl", v, v)[:, iu[0], iu[1]]
        out[b : b + len(v)] = (1.0 - sims).mean(axis=1)
    return out


def intra_list_diversity(neighbors: np.ndarray, vectors: np.ndarray, block: int = 4096) -> float:
    """Mean over lists of the mean pairwise cosine distance (1 - cos) among a list's items."""
    if neighbors.shape[1] < 2 or not len(neighbors):
        return float("nan")
    return float(list_diversity(neighbors, vectors, block).mean())


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
    #: The product id of each per-query position (the recommender's ids, as strings).
    ids: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=str))
    #: (mode, ild_<arm>) -> per-list values of the scored queries (for the extras' intervals).
    extra_values: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def add_baselines(self, jobs: Sequence[Job]) -> None:
        """The random rows: each metric's expectation for uniformly random recommendations, where known."""
        for job in jobs:
            if job.spec.baseline is not None:
                scored = (job.codes >= 0).sum() if job.spec.per_label else (grade_counts(job.codes)[:, 0] > 0).sum()
                self.baselines[(job.spec.name, job.label)] = (float(job.spec.baseline(job.codes, self.k)), int(scored))

    def add_mode(self, mode: str, positions: np.ndarray, jobs: Sequence[Job], vectors: Mapping[str, np.ndarray],
                 rows: np.ndarray | None = None) -> None:
        """Score one mode's top-k ``positions`` [n, k]: every job per query, then coverage and the intra-list
        diversity in each arm's space (``vectors``: arm -> [n, d]). ``rows`` (a boolean mask [n]) keeps the
        queries scored; the others get NaN and count in neither coverage nor diversity."""
        self.modes.append(mode)
        # a query the mode cannot rank (it lacks the mode's arm) has -1 entries: it is not scored (NaN)
        keep = (positions >= 0).all(axis=1) & (True if rows is None else np.asarray(rows, dtype=bool))
        safe = np.where(positions >= 0, positions, 0)
        for job in jobs:
            values = np.asarray(job.spec.per_query(safe, job.codes), dtype=np.float64)
            self.per_query[(mode, job.spec.name, job.label)] = np.where(keep, values, np.nan)
        self.extras[(mode, "coverage")] = (coverage(safe[keep], len(positions)), int(keep.sum()))
        for arm, v in vectors.items():
            has = np.linalg.norm(v, axis=1) > 0  # products without this arm hold zero rows
            values = list_diversity(safe[keep & has[safe].all(axis=1)], v)
            self.extra_values[(mode, f"ild_{arm}")] = values
            self.extras[(mode, f"ild_{arm}")] = (float(values.mean()) if len(values) else float("nan"), len(values))

    def table(self, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """The tidy table of :func:`evaluate`: means with percentile-bootstrap 95% intervals over queries
        (the diversity extras too; coverage, a share of the whole catalog, has none)."""
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
            for (m, metric), (value, n) in self.extras.items():
                if m == mode:
                    pl = self.extra_values.get((m, metric))
                    lo, hi = (np.nan, np.nan) if pl is None else bootstrap_ci(pl, n_boot=n_boot, seed=seed)
                    rows.append(dict(mode=mode, metric=metric, label="", value=value, ci_low=lo, ci_high=hi,
                                     n_queries=n, k=self.k))
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
    queries: Sequence[Any] | None = None,
    variants: Mapping[str, Mapping[str, float]] | None = None,
    exclude_same: str | None = None,
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

    ``queries`` (product ids, e.g. ``split.test`` of :func:`split_queries`) restricts the scored queries;
    every product stays a candidate (the ``random`` rows are the expectation over all products).
    ``variants`` (name -> arm weights) adds fused modes under their own names, e.g. a weighting tuned on
    validation queries (``{"fused_tuned": tuned.weights}``). ``exclude_same`` (a catalog column, e.g. the
    product name) ranks each query's top-k among the products whose value differs from the query's, and adds
    a ``candidates`` column saying so (stack it with standard rows given ``candidates="all"``).

    ``return_scores=True`` returns ``(table, scores)``: the :class:`QueryScores` keep the per-query values,
    for paired significance tests between modes (:func:`~prodrec.evaluation.significance.compare_modes`).
    """
    params.check_n_boot(n_boot)
    modes = list(modes or recommender.modes)
    for mode in modes:
        params.check_mode(mode, recommender.arms)
    variants = _check_variants(recommender, variants, modes)
    params.check_k(k, len(recommender))
    table, columns = label_table(labels, columns)
    table = table.reindex(recommender.ids.astype(str))
    jobs = metric_jobs(table, columns, metrics, grade_levels)
    groups = None if exclude_same is None else _group_codes(table, exclude_same)
    qpos = None if queries is None else recommender.positions(list(queries))
    rows = None if qpos is None else np.isin(np.arange(len(recommender)), qpos)
    scores = QueryScores(k=k, protocol=_check_protocol(recommender, protocol), ids=recommender.ids.astype(str))
    scores.add_baselines(jobs)
    vectors = {arm: index.vectors for arm, index in recommender.arms.items()}
    runs = [(mode, alpha, weights) for mode in modes] + [(name, None, w) for name, w in variants.items()]
    for mode, a, w in tqdm(runs, desc="evaluate modes", disable=not progress):
        ranked = mode if mode in recommender.modes else "fused"
        pos = _ranked(recommender, k, ranked, a, w, qpos, groups)
        scores.add_mode(mode, pos, jobs, vectors, rows)
    out = scores.table(n_boot=n_boot, seed=seed)
    if exclude_same is not None:
        out["candidates"] = same_left_out(exclude_same)
    return (out, scores) if return_scores else out


def same_left_out(column: str) -> str:
    """The ``candidates`` value of duplicate-aware rows: products sharing the query's ``column`` left out."""
    return f"same {column} left out"


def _check_variants(recommender: Recommender, variants: Mapping[str, Mapping[str, float]] | None,
                    modes: Sequence[str]) -> dict[str, dict[str, float]]:
    """Named fused weightings, checked: a name of its own (no arm, fusion mode or listed mode), valid weights."""
    out: dict[str, dict[str, float]] = {}
    for name, w in (variants or {}).items():
        taken = {*recommender.arms, *FUSION_MODES, *modes, "random"}
        if not isinstance(name, str) or not name or name in taken:
            raise ConfigError(f"a fused variant needs a mode name of its own, not {name!r} (taken: "
                              f"{', '.join(sorted(taken))})")
        out[name] = recommender.fusion_weights(weights=w)
    return out


def _group_codes(table: pd.DataFrame, column: str) -> np.ndarray:
    """Codes of ``column`` (a product name, say) per product; -1 where it is missing."""
    if column not in table.columns:
        raise CatalogError(f"exclude_same={column!r} is not a catalog column ({', '.join(map(str, table.columns))})")
    return label_codes(table[column])


def _ranked(recommender: Recommender, k: int, mode: str, alpha: float | None, weights: Mapping[str, float] | None,
            qpos: np.ndarray | None, groups: np.ndarray | None) -> np.ndarray:
    """Top-k positions [n, k] of every product under ``mode`` (rows outside ``qpos`` are left 0, unscored);
    with ``groups``, the k best whose group differs from the query's (ranked k + the largest group size - 1
    deep, so enough remain)."""
    n = len(recommender)
    depth = k
    if groups is not None:
        sizes = np.bincount(groups[groups >= 0]) if (groups >= 0).any() else np.zeros(1, dtype=int)
        depth = min(k + int(sizes.max()) - 1 if len(sizes) else k, n - 1)
        depth = max(depth, k)
    pos, _ = recommender.topk_positions(depth, mode, alpha, qpos, weights=weights)
    query = np.arange(n) if qpos is None else np.asarray(qpos)
    if groups is not None:
        g = groups[query][:, None]
        same = (groups[pos] == g) & (g >= 0)
        pos = np.take_along_axis(pos, np.argsort(same, axis=1, kind="stable")[:, :k], axis=1)
    if qpos is None:
        return pos
    full = np.zeros((n, k), dtype=pos.dtype)
    full[query] = pos
    return full


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
    split: QuerySplit | None = None,
) -> pd.DataFrame:
    """precision@k of fused ranking under each weighting in ``weight_list`` (arm -> weight), one row per
    weighting and label, with a ``w_<arm>`` column per arm (normalised weights). Each arm's cosines are
    computed once for all weightings.

    With ``split`` (:func:`split_queries`), each weighting and label gets two rows, the mean over the
    validation queries and over the test queries (a ``split`` column and ``n_queries``): a weighting is
    chosen on the first (:func:`tune_weights`) and reported on the second."""
    params.check_k(k, len(recommender))
    table, cols = label_table(labels, columns)
    columns = cols if columns is not None else cols[:2]
    lab = table.reindex(recommender.ids.astype(str))
    ws = [recommender.fusion_weights(weights=w) for w in weight_list]
    swept = list(dict.fromkeys(a for w in weight_list for a in w))  # the arms the sweep weighs
    halves = {"": np.ones(len(recommender), dtype=bool)} if split is None else {
        name: np.isin(np.arange(len(recommender)), recommender.positions(list(split.of(name)))) for name in SPLITS}
    results = recommender.fused_topk_sweep(ws, k)
    rows = []
    for w, (pos, _) in tqdm(list(zip(ws, results)), desc="weight sweep", disable=not progress):
        for col in columns:
            values = per_query_precision(lab[col], pos)
            for name, keep in halves.items():
                row = {**{f"w_{a}": round(float(w[a]), 6) for a in swept}, "label": col, "k": k,
                       "precision": float(np.nanmean(values[keep]))}
                rows.append(row if split is None else {**row, "split": name,
                                                       "n_queries": int((~np.isnan(values[keep])).sum())})
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Tuned:
    """A weighting chosen on validation queries and its value on the test queries (:func:`tune_weights`)."""

    #: The chosen weighting (arm -> normalised weight), for ``evaluate(..., variants=...)``.
    weights: dict[str, float]
    #: The labels whose mean precision@k was maximised.
    objective: tuple[str, ...]
    #: The objective on the validation queries (where it was chosen) and on the test queries.
    validation: float
    test: float
    #: Per label of the objective: (validation, test) precision at the chosen weighting.
    per_label: dict[str, tuple[float, float]]
    n_validation: int
    n_test: int
    #: How many weightings were compared.
    candidates: int

    @property
    def alpha(self) -> float | None:
        """The image weight when the weighting is the paper's two arms (image, text), else None."""
        return self.weights.get("image") if set(self.weights) == {"image", "text"} else None

    def describe(self) -> str:
        """One line: what was tuned on which queries, and what the test queries say."""
        what = f"alpha = {self.alpha:.1f}" if self.alpha is not None else "weights " + ", ".join(
            f"{a} {w:.1f}" for a, w in self.weights.items())
        return (f"{what}, chosen among {self.candidates} weightings on {self.n_validation} validation queries "
                f"(maximising mean precision@k on {' and '.join(self.objective)}: {self.validation:.3f}); on the "
                f"{self.n_test} test queries it scores {self.test:.3f}")

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "alpha": self.alpha, "objective": list(self.objective),
                "validation": self.validation, "test": self.test,
                "per_label": {k: list(v) for k, v in self.per_label.items()}, "n_validation": self.n_validation,
                "n_test": self.n_test, "candidates": self.candidates}


def sweep_weights(sweep: pd.DataFrame) -> list[str]:
    """The ``w_<arm>`` columns of a sweep (an :func:`alpha_sweep` has ``alpha`` instead: image and text)."""
    return [c for c in sweep.columns if c.startswith("w_")]


def tune_weights(sweep: pd.DataFrame, objective: Sequence[str] | None = None) -> Tuned:
    """The weighting of a split sweep (``weight_sweep(..., split=...)`` or ``alpha_sweep(..., split=...)``)
    with the highest mean precision over the ``objective`` labels (default: every label swept) on the
    **validation** rows, and its value on the **test** rows; ties go to the first weighting swept."""
    if "split" not in sweep.columns:
        raise ConfigError("tune_weights needs a sweep over a query split: weight_sweep(..., split=split_queries(...))")
    sw = sweep if sweep_weights(sweep) else sweep.assign(w_image=sweep["alpha"], w_text=1.0 - sweep["alpha"])
    wcols = sweep_weights(sw)
    labels = list(dict.fromkeys(sw["label"]))
    objective = tuple(labels if objective is None else objective)
    missing = [c for c in objective if c not in labels]
    if missing:
        raise ConfigError(f"objective label(s) {missing} were not swept (swept: {labels})")
    wide = {name: sw[sw["split"] == name].pivot_table(index=wcols, columns="label", values="precision", sort=False)
            for name in SPLITS}
    score = {name: w[list(objective)].mean(axis=1) for name, w in wide.items()}
    best = score["validation"].idxmax()
    best = best if isinstance(best, tuple) else (best,)
    n = {name: int(sw[(sw["split"] == name) & (sw["label"] == objective[0])]["n_queries"].iloc[0]) for name in SPLITS}
    return Tuned(weights={c[2:]: float(v) for c, v in zip(wcols, best)}, objective=objective,
                 validation=float(score["validation"].loc[best]), test=float(score["test"].loc[best]),
                 per_label={lab: (float(wide["validation"].loc[best, lab]), float(wide["test"].loc[best, lab]))
                            for lab in objective},
                 n_validation=n["validation"], n_test=n["test"], candidates=len(score["validation"]))


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
    split: QuerySplit | None = None,
) -> pd.DataFrame:
    """precision@k of fused ranking for each image weight ``alpha`` (0 = text only, 1 = image only), over
    the first two label columns unless ``columns`` says otherwise: :func:`weight_sweep` over the weightings
    ``{image: alpha, text: 1 - alpha}``, with columns ``alpha, label, k, precision`` (and ``split,
    n_queries`` given a ``split``: the validation and the test curve)."""
    alphas = [params.check_alpha(a) for a in alphas]
    sweep = weight_sweep(recommender, labels, [{"image": a, "text": 1.0 - a} for a in alphas], k=k,
                         columns=columns, progress=progress, split=split)
    per_setting = len(sweep) // max(len(alphas), 1)  # rows per weighting: one per label (and split)
    keep = ["alpha", "label", "k", "precision"] + (["split", "n_queries"] if split is not None else [])
    return sweep.assign(alpha=np.repeat(alphas, per_setting))[keep]


def tune_fusion(
    recommender: Recommender,
    labels: Catalog | pd.DataFrame,
    split: QuerySplit,
    what: str = "alpha",
    k: int = 5,
    columns: Sequence[str] | None = None,
    step: float = 0.1,
    progress: bool = True,
) -> tuple[pd.DataFrame, Tuned]:
    """Tune the fusion on ``split``'s validation queries: ``what="alpha"`` sweeps the paper's image weight
    (:func:`alpha_sweep`, steps of ``step``), ``"weights"`` every weighting of the arms on a grid of ``step``
    (:func:`weight_grid`; a learned arm is left out: it is a mode of its own). The objective is the mean
    precision@k over ``columns`` (default: the first two label columns). Returns the split sweep (both
    curves) and the :class:`Tuned` choice, to be scored on the test queries with
    ``evaluate(..., queries=split.test, variants={TUNED_MODE: tuned.weights})``."""
    params.check_choice("what to tune", what, TUNABLE)
    if what == "alpha":
        if not {"image", "text"} <= set(recommender.arms):
            raise ConfigError(f"tuning alpha needs the image and text arms; this recommender has {list(recommender.arms)} "
                              "(tune 'weights' instead)")
        alphas = [round(i * step, 10) for i in range(round(1 / step) + 1)]
        sweep = alpha_sweep(recommender, labels, alphas, k=k, columns=columns, progress=progress, split=split)
    else:
        arms = [a for a in recommender.arms if a != LEARNED]
        if len(arms) < 2:
            raise ConfigError(f"tuning fusion weights needs two or more arms; this recommender has {arms}")
        sweep = weight_sweep(recommender, labels, weight_grid(arms, step), k=k, columns=columns, progress=progress,
                             split=split)
    return sweep, tune_weights(sweep)
