"""Paired significance tests between modes, on the per-query values of one evaluation run.

Every pair of modes is compared on every (metric, label) with ranx's paired tests - the ones
``ranx.compare`` runs after it evaluates its runs (``compute_statistical_significance``): the two-sided
paired Student's t-test (``student``, deterministic) or Fisher's randomisation test (``fisher``,
``n_permutations`` permutations). They are fed the per-query values the kit already holds
(:attr:`~prodrec.evaluation.runs.QueryScores.per_query`), so every registered metric can be compared
(per-label precision too) and nothing is ranked twice; queries a metric does not score under every mode are
left out of its tests. ranx corrects for no multiple testing, so p-values are adjusted here, per (metric,
label) over its mode pairs: Holm's step-down (default), Bonferroni, or none. Identical per-query values
(a t-test of 0/0) get p = 1.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import ConfigError
from .relevance import check_backend, require_ranx

#: Paired tests (ranx's names).
TESTS: tuple[str, ...] = ("student", "fisher")
#: Multiple-testing corrections, applied per (metric, label) over its mode pairs.
CORRECTIONS: tuple[str, ...] = ("holm", "bonferroni", "none")
COLUMNS = ["mode_a", "mode_b", "metric", "label", "n_queries", "mean_a", "mean_b", "test", "p_raw", "p_value",
           "correction", "max_p", "significant"]


def check_test(test: str) -> str:
    """``test`` is one of :data:`TESTS`, and ranx (which runs it) is installed."""
    params.check_choice("significance test", test, TESTS)
    check_backend()
    return test


def adjust_p(p: Sequence[float] | np.ndarray, correction: str = "holm") -> np.ndarray:
    """p-values adjusted for testing them together: ``holm`` (step-down: the i-th smallest times
    ``m - i + 1``, kept monotone), ``bonferroni`` (times ``m``) or ``none``; capped at 1."""
    params.check_choice("correction", correction, CORRECTIONS)
    p = np.asarray(p, dtype=np.float64)
    m = len(p)
    if correction == "none" or m == 0:
        return p.copy()
    if correction == "bonferroni":
        return np.minimum(p * m, 1.0)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate(np.minimum(p[order] * (m - np.arange(m)), 1.0))
    out = np.empty(m)
    out[order] = stepped
    return out


def compare_modes(
    per_query: Mapping[tuple[str, str, str], np.ndarray],
    modes: Sequence[str] | None = None,
    test: str = "student",
    correction: str = "holm",
    max_p: float = 0.05,
    n_permutations: int = 1000,
    seed: int = 42,
) -> pd.DataFrame:
    """Paired tests between every two modes on every (metric, label) of ``per_query``
    ((mode, metric, label) -> per-query values, NaN where not scored; e.g. the ``per_query`` of
    ``evaluate(..., return_scores=True)``).

    Returns a tidy table, one row per pair and (metric, label): ``mode_a, mode_b, metric, label, n_queries``
    (queries scored under every mode), ``mean_a, mean_b, test, p_raw`` (ranx's p-value), ``p_value``
    (adjusted by ``correction``), ``correction``, ``max_p`` and ``significant`` (adjusted p ≤ ``max_p``).
    """
    params.check_choice("test", test, TESTS)
    params.check_choice("correction", correction, CORRECTIONS)
    if not 0.0 < float(max_p) < 1.0:
        raise ConfigError(f"max_p must be within (0, 1), got {max_p}")
    params.check_positive_int("n_permutations", n_permutations)
    modes = list(dict.fromkeys(modes or [mode for mode, _, _ in per_query]))
    families = list(dict.fromkeys((metric, label) for _, metric, label in per_query))
    rows = []
    for metric, label in families:
        present = [m for m in modes if (m, metric, label) in per_query]
        if len(present) < 2:
            continue
        values = np.column_stack([np.asarray(per_query[(m, metric, label)], dtype=np.float64) for m in present])
        values = values[~np.isnan(values).any(axis=1)]
        p_raw = _ranx_p_values(present, values, test, n_permutations, seed)
        pairs = list(itertools.combinations(range(len(present)), 2))
        adjusted = adjust_p([p_raw[a, b] for a, b in pairs], correction)
        for (a, b), p in zip(pairs, adjusted):
            rows.append(dict(mode_a=present[a], mode_b=present[b], metric=metric, label=label,
                             n_queries=len(values), mean_a=_mean(values[:, a]), mean_b=_mean(values[:, b]),
                             test=test, p_raw=float(p_raw[a, b]), p_value=float(p), correction=correction,
                             max_p=float(max_p), significant=bool(p <= max_p)))
    return pd.DataFrame(rows, columns=COLUMNS)


def _mean(v: np.ndarray) -> float:
    return float(v.mean()) if len(v) else float("nan")


def _ranx_p_values(modes: list[str], values: np.ndarray, test: str, n_permutations: int, seed: int) -> np.ndarray:
    """[m, m] two-sided p-values of ranx's paired test between the columns of ``values``; NaN (identical
    values, or too few queries) becomes 1."""
    require_ranx()
    from ranx.statistical_tests import compute_statistical_significance  # the tests ranx.compare runs

    scores = {mode: {"metric": values[:, i]} for i, mode in enumerate(modes)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # scipy on identical columns (0/0)
        found = compute_statistical_significance(
            modes, scores, stat_test=test, n_permutations=n_permutations, max_p=0.05, random_seed=seed)
    out = np.ones((len(modes), len(modes)))
    for a, b in itertools.combinations(range(len(modes)), 2):
        p = float(found[(modes[a], modes[b])]["metric"]["p_value"])
        out[a, b] = out[b, a] = 1.0 if np.isnan(p) else p
    return out
