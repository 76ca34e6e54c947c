"""Evaluation: precision@k against hand-computed values, random baseline, CIs, coverage, diversity."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prodrec.core.errors import CatalogError, ConfigError
from prodrec.evaluation.runs import (
    bootstrap_ci,
    coverage,
    evaluate,
    intra_list_diversity,
    per_query_precision,
    random_precision,
)
from prodrec.rank.recommender import Recommender
from prodrec.evaluation.report import describe_arm, precision_table
from prodrec.embed.vectors import Embeddings


def test_per_query_precision_by_hand() -> None:
    labels = pd.Series(["a", "a", "b", None])
    nb = np.array([[1, 2], [0, 3], [0, 1], [0, 1]])
    out = per_query_precision(labels, nb)
    assert out[:3].tolist() == [0.5, 0.5, 0.0] and np.isnan(out[3])  # a missing neighbour label is a miss


def test_random_precision_is_the_exact_expectation() -> None:
    labels = pd.Series(list("aaabbc"))
    # a: 2/5 each (x3), b: 1/5 (x2), c: 0 -> (3*0.4 + 2*0.2)/6
    assert random_precision(labels) == pytest.approx((3 * 0.4 + 2 * 0.2) / 6)
    rng = np.random.default_rng(0)
    n = 300
    lab = pd.Series(rng.integers(0, 4, n).astype(str))
    means = [per_query_precision(lab, np.array([rng.choice(np.delete(np.arange(n), i), 5, replace=False)
                                                for i in range(n)])).mean() for _ in range(30)]
    assert np.mean(means) == pytest.approx(random_precision(lab), abs=0.01)


def test_bootstrap_coverage_diversity() -> None:
    v = np.r_[np.zeros(50), np.ones(50), np.nan]
    lo, hi = bootstrap_ci(v, n_boot=500, seed=1)
    assert lo < 0.5 < hi and hi - lo < 0.3
    assert bootstrap_ci(v, n_boot=500, seed=1) == (lo, hi)  # seeded
    assert coverage(np.array([[0, 1], [1, 2]]), 4) == 0.75
    e = np.eye(3, dtype=np.float32)
    assert intra_list_diversity(np.array([[0, 1, 2]]), e) == pytest.approx(1.0)
    assert intra_list_diversity(np.array([[0, 0]]), e) == pytest.approx(0.0)


def test_evaluate_tidy_table_and_fusion_on_planted_structure() -> None:
    """Image space knows the type, text space knows the colour: fused precision sits between on each."""
    rng = np.random.default_rng(0)
    n = 400
    types, colours = rng.integers(0, 5, n), rng.integers(0, 5, n)
    centres = rng.normal(size=(2, 5, 16))
    xi = centres[0][types] + 0.6 * rng.normal(size=(n, 16))
    xt = centres[1][colours] + 0.6 * rng.normal(size=(n, 16))
    ids = np.arange(n) + 1
    rec = Recommender({"image": Embeddings(ids, xi), "text": Embeddings(ids, xt)})
    labels = pd.DataFrame({"articleType": types.astype(str), "baseColour": colours.astype(str)}, index=ids)
    res = evaluate(rec, labels, k=5, columns=["articleType", "baseColour"], n_boot=200, progress=False)
    assert set(res.columns) >= {"mode", "metric", "label", "value", "ci_low", "ci_high", "n_queries", "k"}
    p = precision_table(res)
    assert list(p.columns) == ["random", "image", "text", "fused", "rrf"]
    assert list(p.index) == ["articleType", "baseColour"]
    assert p.loc["articleType", "image"] > 0.9 and p.loc["baseColour", "text"] > 0.9
    assert p.loc["articleType", "text"] < 0.4 and p.loc["baseColour", "image"] < 0.4
    assert p.loc["articleType", "fused"] > p.loc["articleType", "text"]
    assert p.loc["baseColour", "fused"] > p.loc["baseColour", "image"]
    assert p.loc["articleType", "random"] == pytest.approx(0.2, abs=0.03)
    prec = res[res.metric == "precision"].dropna(subset=["ci_low"])
    assert ((prec.ci_low <= prec.value) & (prec.value <= prec.ci_high)).all()
    assert set(res.metric) == {"precision", "coverage", "ild_image", "ild_text"}
    with pytest.raises(CatalogError, match="nope"):
        evaluate(rec, labels, columns=["nope"], progress=False)
    for bad in (dict(n_boot=0), dict(k=0), dict(k=400), dict(modes=["colour"])):  # refused before any ranking
        with pytest.raises(ConfigError):
            evaluate(rec, labels, progress=False, **bad)
    text = describe_arm(res, "image")
    assert f"{p.loc['articleType', 'image']:.0%}" in text and "style far more reliably" in text
