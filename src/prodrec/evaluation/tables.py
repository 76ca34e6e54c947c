"""Scoring a table of recommendations, whoever made it: ``prodrec evaluate --from recs.parquet``.

A table (:func:`prodrec.rank.table.read_table`: ``query_id``, ``id``, and optionally ``rank`` and ``mode``)
is turned into the plain data the metric registry reads (:mod:`.metrics`: neighbour positions [n, k] and
label codes), so the kit's own lists and a shop's current system are scored by the same code on the same
labels: every registered per-query metric with bootstrap intervals, the random baselines, coverage and the
intra-list diversity in any arm's space.

How a table meets the catalog: queries and recommended products are matched by id (as text). Each list is
cut to its best ``k`` by ``rank``; a list shorter than ``k``, or a recommended id the catalog lacks, counts
as a miss in its empty slots (precision@k divides by k). Queries the catalog lacks are not scored (their
number is returned). Coverage is the share of the catalog's products that appear in some list; intra-list
diversity is measured over the lists that hold k products the arm has vectors for.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import ConfigError
from ..data.catalog import Catalog
from .runs import DEFAULT_METRICS, QueryScores, coverage, intra_list_diversity, label_table, metric_jobs

__all__ = ["TableFit", "evaluate_table"]

#: The mode name of a table without a ``mode`` column.
TABLE_MODE = "table"


@dataclass
class TableFit:
    """How a table met the catalog, per mode: queries scored and skipped, unknown recommended ids."""

    k: int
    queries: dict[str, int]
    unknown_queries: dict[str, int]
    unknown_products: dict[str, int]
    short_lists: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "queries": self.queries, "unknown_queries": self.unknown_queries,
                "unknown_products": self.unknown_products, "short_lists": self.short_lists}


def _positions(sub: pd.DataFrame, universe: pd.Index, k: int) -> tuple[np.ndarray, np.ndarray, int, int, int]:
    """Neighbour positions [n + 1, k] of one mode's rows (row n and position n: a pad product without
    labels), which catalog rows are queries of the table, and the counts of unknown queries, unknown
    products and short lists."""
    n = len(universe)
    sub = sub.sort_values(["query_id", "rank"], kind="stable")
    slot = sub.groupby("query_id", sort=False).cumcount().to_numpy()
    q = universe.get_indexer(sub["query_id"])
    r = universe.get_indexer(sub["id"])
    keep = (slot < k) & (q >= 0)
    pos = np.full((n + 1, k), n, dtype=np.intp)
    pos[q[keep], slot[keep]] = np.where(r[keep] >= 0, r[keep], n)
    asked = np.zeros(n + 1, dtype=bool)
    asked[q[q >= 0]] = True
    unknown_queries = int(sub.loc[q < 0, "query_id"].nunique())
    unknown_products = int((keep & (r < 0)).sum())
    lengths = np.bincount(q[keep], minlength=n + 1)
    short = int((asked & (lengths < k)).sum())
    return pos, asked, unknown_queries, unknown_products, short


def evaluate_table(
    table: pd.DataFrame,
    labels: Catalog | pd.DataFrame,
    k: int | None = None,
    columns: Sequence[str] | None = None,
    metrics: Sequence[str] | str = DEFAULT_METRICS,
    grade_levels: int = 2,
    n_boot: int = 1000,
    seed: int = 0,
    vectors: Mapping[str, tuple[Sequence[Any], np.ndarray]] | None = None,
    protocol: str = "full",
) -> tuple[pd.DataFrame, QueryScores, TableFit]:
    """Score a recommendations ``table`` against ``labels`` (a catalog, or metadata indexed by id).

    Parameters
    ----------
    table : DataFrame
        ``query_id``, ``id``; ``rank`` (default: row order per query) and ``mode`` (default: one mode,
        ``table``) when it has them.
    labels : Catalog or DataFrame
        The catalog whose label columns are scored (``columns`` to choose).
    k : int, optional
        List length scored (default: the longest list in the table).
    metrics, grade_levels, n_boot, seed
        As for :func:`~prodrec.evaluation.runs.evaluate`.
    vectors : mapping arm -> (ids, unit vectors [n, d]), optional
        Arms to measure intra-list diversity in (``ild_<arm>``).
    protocol : str
        Written in the table's ``protocol`` column.

    Returns
    -------
    (results, scores, fit)
        The tidy table of :func:`~prodrec.evaluation.runs.evaluate` (per mode: every metric with its 95%
        interval, coverage, diversity; a ``random`` row per metric), the per-query values (for
        :func:`~prodrec.evaluation.significance.compare_modes`), and how the table met the catalog.
    """
    params.check_n_boot(n_boot)
    for col in ("query_id", "id"):
        if col not in table.columns:
            raise ConfigError(f"a recommendations table needs columns query_id and id; it has {list(table.columns)}")
    df = table.copy()
    if "rank" not in df.columns:
        df["rank"] = df.groupby("query_id", sort=False).cumcount() + 1
    if "mode" not in df.columns:
        df["mode"] = TABLE_MODE
    df["query_id"], df["id"] = df["query_id"].astype(str), df["id"].astype(str)
    if df.empty:
        raise ConfigError("the recommendations table has no rows")
    longest = int(df.groupby(["mode", "query_id"]).size().max())
    k = params.check_k(k) if k is not None else longest
    lab, cols = label_table(labels, columns)
    universe = pd.Index(lab.index.map(str))
    n = len(universe)
    jobs = metric_jobs(lab, cols, metrics, grade_levels)
    scores = QueryScores(k=k, protocol=params.check_protocol(protocol))
    scores.add_baselines(jobs)
    fit = TableFit(k, {}, {}, {}, {})
    arm_rows = {arm: (pd.Index([str(i) for i in ids]).get_indexer(universe), np.asarray(v, dtype=np.float32))
                for arm, (ids, v) in (vectors or {}).items()}
    for mode in df["mode"].astype(str).unique():
        pos, asked, unknown_q, unknown_p, short = _positions(df[df["mode"].astype(str) == mode], universe, k)
        scores.modes.append(mode)
        for job in jobs:
            pad = np.full((1, *job.codes.shape[1:]), -1, dtype=job.codes.dtype)
            values = np.asarray(job.spec.per_query(pos, np.concatenate([job.codes, pad])), dtype=np.float64)[:n]
            scores.per_query[(mode, job.spec.name, job.label)] = np.where(asked[:n], values, np.nan)
        lists = pos[:n][asked[:n]]
        known = lists[lists < n]
        n_lists = len(lists)
        scores.extras[(mode, "coverage")] = (coverage(known, n) if len(known) else 0.0, n_lists)
        for arm, (rows, v) in arm_rows.items():
            full = lists[(lists < n).all(axis=1)] if n_lists else lists
            arm_pos = rows[full] if len(full) else full
            ok = (arm_pos >= 0).all(axis=1) if len(full) else np.zeros(0, dtype=bool)
            ild = intra_list_diversity(arm_pos[ok], v) if ok.any() else float("nan")
            scores.extras[(mode, f"ild_{arm}")] = (ild, int(ok.sum()))
        fit.queries[mode] = int(asked[:n].sum())
        fit.unknown_queries[mode] = unknown_q
        fit.unknown_products[mode] = unknown_p
        fit.short_lists[mode] = short
    return scores.table(n_boot=n_boot, seed=seed), scores, fit
