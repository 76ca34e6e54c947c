"""The metric registry: name -> :class:`MetricSpec`, the per-query metrics :func:`~.runs.evaluate` reports.

A metric reads plain data only - the neighbour positions of a ranking ([n, k], row ``i`` the k products
recommended for product ``i``) and integer label codes (-1 for a missing label) - never a model, so any
system's top-k table can be scored (as in recommenders' ``python_evaluation``). Its function returns one
value per query, NaN where the query is not scored; :func:`~.runs.evaluate` averages them and bootstraps a
95% interval over queries, and adds the ``random`` row from the metric's baseline (the exact expectation for
k products drawn uniformly from the others, where one is known).

* ``per_label`` metrics are computed once per evaluated label column and get that column's codes [n]:
  ``precision`` (the kit's precision@k, the paper's measure).
* The others get the codes [n, c] of the columns that grade relevance (the first ``grade_levels`` evaluated
  label columns, see :mod:`.relevance`): ``ndcg``, ``map``, ``mrr`` and ``recall``, computed by ranx
  (``pip install 'prodrec[eval]'``). ranx's precision@k with this relevance is ``precision`` on the first
  column (over the queries that have a relevant product), so it is not registered twice.

Coverage (share of the catalog ever recommended) and intra-list diversity (``ild_<arm>``, which reads an
arm's vectors) are not per-query label metrics: :func:`~.runs.evaluate` adds them to every run as extras.

Adding a metric is one entry:

>>> register_metric(MetricSpec("hit_any", lambda pos, codes: (codes[pos] == codes[:, None]).any(1) * 1.0))
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import ConfigError
from .relevance import RANX_EXTRA, check_backend, random_map, random_mrr, random_ndcg, random_recall, ranx_metric

#: ``(positions [n, k], codes) -> values [n]`` (NaN: query not scored); codes [n] or [n, c], see the module.
PerQuery = Callable[[np.ndarray, np.ndarray], np.ndarray]
#: ``(codes, k) -> float``: the exact expected value of the metric for uniformly random recommendations.
Baseline = Callable[[np.ndarray, int], float]
#: Metric names the evaluation table uses for its extras (not registrable).
RESERVED = ("coverage",)
RESERVED_PREFIX = "ild_"


@dataclass(frozen=True)
class MetricSpec:
    """One per-query metric.

    Parameters
    ----------
    name
        The ``metric`` value of its rows and its ``--metrics`` name (no commas).
    per_query
        ``(positions [n, k], codes) -> [n]`` values, NaN for queries it does not score.
    baseline
        ``(codes, k) -> float``, the exact expectation for uniformly random recommendations; None when none
        is known (the table then has no ``random`` row for it).
    per_label
        True: computed per evaluated label column, on that column's codes [n]. False: once, on the codes
        [n, c] of the columns that grade relevance; its ``label`` is those columns joined by ``+``.
    description
        One line for help texts.
    backend, extra
        The module the function imports (checked before any work) and the pip extra that brings it.
    """

    name: str
    per_query: PerQuery
    baseline: Baseline | None = None
    per_label: bool = True
    description: str = ""
    backend: str | None = None
    extra: str | None = None


def label_codes(values: pd.Series) -> np.ndarray:
    """Integer label codes of a label column; missing labels are -1."""
    codes, _ = pd.factorize(values.astype("object").where(values.notna(), None), use_na_sentinel=True)
    return codes


def precision_at_k(positions: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """Per-query share of the k neighbours with the query's label (a neighbour with a missing label is a
    miss); NaN where the query's own label is missing."""
    codes = np.asarray(codes)
    if len(positions) != len(codes):
        raise ValueError(f"neighbors has {len(positions)} rows for {len(codes)} products")
    q = codes[:, None]
    out = ((codes[positions] == q) & (q >= 0)).mean(axis=1)
    out[codes < 0] = np.nan
    return out


def random_precision_at_k(codes: np.ndarray, k: int = 1) -> float:
    """Expected precision@k of uniformly random recommendations (any k): the mean over queries with a known
    label of (n_c - 1) / (n - 1), n_c the size of the query's label class."""
    codes = np.asarray(codes)
    known = codes >= 0
    if known.sum() == 0 or len(codes) < 2:
        return float("nan")
    counts = np.bincount(codes[known])
    return float(((counts[codes[known]] - 1) / (len(codes) - 1)).mean())


def _ranx_spec(name: str, baseline: Baseline, description: str) -> MetricSpec:
    return MetricSpec(name, ranx_metric(name), baseline, per_label=False, description=description,
                      backend="ranx", extra=RANX_EXTRA)


#: The registered metrics, in the order their rows appear.
METRICS: dict[str, MetricSpec] = {
    "precision": MetricSpec("precision", precision_at_k, random_precision_at_k, per_label=True,
                            description="share of the k recommendations with the query's label, per label"),
    "ndcg": _ranx_spec("ndcg", random_ndcg, "nDCG@k with graded relevance (ranx)"),
    "map": _ranx_spec("map", random_map, "MAP@k: average precision over all relevant products (ranx)"),
    "mrr": _ranx_spec("mrr", random_mrr, "MRR@k: reciprocal rank of the first relevant product (ranx)"),
    "recall": _ranx_spec("recall", random_recall, "recall@k: share of the relevant products found (ranx)"),
}


def metric_names() -> list[str]:
    """The registered metric names, in registry order."""
    return list(METRICS)


def register_metric(spec: MetricSpec, replace: bool = False) -> MetricSpec:
    """Add ``spec`` to :data:`METRICS` (``replace=True`` to redefine a registered name)."""
    name = spec.name
    if not name or not isinstance(name, str) or "," in name or name != name.strip():
        raise ConfigError(f"a metric name is a non-empty word without commas; got {name!r}")
    if name in RESERVED or name.startswith(RESERVED_PREFIX):
        raise ConfigError(f"metric name {name!r} is taken by the evaluation table's extras ({', '.join(RESERVED)}, "
                          f"{RESERVED_PREFIX}<arm>); choose another")
    if name in METRICS and not replace:
        raise ConfigError(f"metric {name!r} is already registered; pass replace=True to redefine it")
    if not callable(spec.per_query) or (spec.baseline is not None and not callable(spec.baseline)):
        raise ConfigError(f"metric {name!r}: per_query (and baseline, when given) must be functions")
    METRICS[name] = spec
    return spec


def get_metric(name: str) -> MetricSpec:
    """The registered metric ``name``; a :class:`ConfigError` with the closest name otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ConfigError(f"unknown metric {name!r}; registered: {', '.join(METRICS)}"
                          f"{params.suggest(name, METRICS)}") from None


def check_metrics(names: str | Iterable[str], backends: bool = True) -> list[str]:
    """Metric names (a list, or a comma-separated string) checked against the registry, duplicates dropped;
    with ``backends``, a :class:`MissingDependency` naming the extra when a metric's library is missing."""
    items = names.split(",") if isinstance(names, str) else list(names)
    out = list(dict.fromkeys(str(n).strip() for n in items if str(n).strip()))
    if not out:
        raise ConfigError(f"name at least one metric: {', '.join(METRICS)}")
    specs = [get_metric(n) for n in out]
    for spec in specs if backends else ():
        if spec.backend:
            check_backend(spec.backend, spec.extra or spec.backend, f"metric {spec.name!r}")
    return out
