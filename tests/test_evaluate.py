"""Evaluation: precision@k against hand-computed values, random baseline, CIs, coverage, diversity; a new
metric is one registry entry, through the API and ``prodrec evaluate``."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodrec.core.errors import CatalogError, ConfigError
from prodrec.embed.arms import TrainingFreeImageArm
from prodrec.embed.encoders.colour import ColourEncoder
from prodrec.embed.registry import ARMS, ArmEntry, register_arm
from prodrec.evaluation.metrics import METRICS, MetricSpec, register_metric
from prodrec.run.cli import main
from prodrec.run.experiment import build_experiment
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


# ------------------------------------------------------------------------------------------- one entry
def _hit_any(positions: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """1 when any of the k neighbours shares the query's label, else 0; NaN for a query without a label."""
    q = codes[:, None]
    out = ((codes[positions] == q) & (q >= 0)).any(axis=1).astype(float)
    out[codes < 0] = np.nan
    return out


@pytest.fixture
def hit_any() -> Iterator[MetricSpec]:
    """The toy metric, registered for one test: one entry, nothing else edited."""
    yield register_metric(MetricSpec("hit_any", _hit_any, description="any neighbour shares the label"))
    METRICS.pop("hit_any")


def test_a_new_metric_is_one_entry(hit_any: MetricSpec, demo_dir: Path, tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "store")
    args = ["evaluate", "--data", str(demo_dir), "--n", "30", "--arms", "colour", "--no-learned", "--store", store,
            "--quiet", "--n-boot", "50", "-k", "3"]
    assert main([*args, "--json", "--metrics", "hit_any,precision"]) == 0
    out = json.loads(capsys.readouterr().out)
    rows = pd.DataFrame(out["results"])
    assert out["provenance"]["metrics"] == ["hit_any", "precision"]
    hit = rows[rows.metric == "hit_any"].set_index("label")
    prec = rows[(rows.metric == "precision") & (rows["mode"] == "colour")].set_index("label")
    assert set(hit["mode"]) == {"colour"} and list(hit.index) == list(prec.index)  # no baseline: no random row
    assert ((hit.value >= prec.value) & (hit.value <= 1)).all()  # any hit in k >= the share of hits

    exp = build_experiment(demo_dir, 30, 0, models={"image": None, "text": None, "colour": "auto"},
                           store_dir=tmp_path / "store", progress=False)
    api = evaluate(exp.recommender, exp.catalog, k=3, metrics=["hit_any"], n_boot=50, progress=False)
    pos, _ = exp.recommender.topk_positions(3, "colour")
    labels = exp.catalog.labels.reindex(exp.recommender.ids)
    for label, row in hit.iterrows():
        mine = api[(api.metric == "hit_any") & (api.label == label)].iloc[0]
        assert mine.value == pytest.approx(row.value) and (mine.ci_low, mine.ci_high) == pytest.approx(
            (row.ci_low, row.ci_high))
        values = labels[label].to_numpy()
        by_hand = [(values[p] == values[i]).any() for i, p in enumerate(pos) if pd.notna(values[i])]
        assert row.value == pytest.approx(np.mean(by_hand))

    assert main([*args, "--metrics", "hit_any"]) == 0  # text output: no precision table, the metric's row
    text = capsys.readouterr().out
    assert "hit_any" in text and "precision@3" not in text
    with pytest.raises(SystemExit):
        main([*args, "--metrics", "hit_an"])
    assert "did you mean 'hit_any'" in capsys.readouterr().err


@pytest.fixture
def coarse_arm() -> Iterator[ArmEntry]:
    """A second training-free arm for one test: a coarse colour histogram (3 hues, 2 greys)."""
    coarse = functools.partial(ColourEncoder, hue_bins=3, sat_bins=1, val_bins=1, grey_bins=2)
    yield register_arm(ArmEntry("coarse", spec=lambda: TrainingFreeImageArm("coarse", coarse), title="coarse"))
    ARMS.pop("coarse")


def test_cli_ranking_metrics_and_significance(coarse_arm: ArmEntry, demo_dir: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ranx")
    args = ["evaluate", "--data", str(demo_dir), "--n", "40", "--arms", "colour,coarse", "--no-learned", "--store",
            str(tmp_path / "store"), "--quiet", "--n-boot", "50", "--metrics", "ndcg,map,mrr,recall,precision",
            "--significance", "--labels", "articleType,baseColour", "--out", str(tmp_path / "out")]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)  # strict JSON: NaN would not parse as a number here
    res, sig = pd.DataFrame(out["results"]), pd.DataFrame(out["significance"])
    assert {"ndcg", "map", "mrr", "recall", "precision"} <= set(res.metric)
    assert set(res[res.metric == "ndcg"]["mode"]) == {"random", "colour", "coarse", "fused", "rrf"}
    assert set(res[res.metric == "ndcg"].label) == {"articleType+baseColour"}
    assert len(sig) == 6 * (4 + 2)  # 6 mode pairs x (4 ranking metrics + precision on 2 labels)
    assert set(sig.correction) == {"holm"} and set(sig.test) == {"student"} and (sig.p_value >= sig.p_raw).all()
    assert (tmp_path / "out" / "significance.json").is_file() and (tmp_path / "out" / "metrics.json").is_file()
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "coarse (b)" in text and "Holm".lower() in text and "ndcg" in text


def test_precision_bars_take_an_interval_equal_to_its_point() -> None:
    """Every query scoring alike gives an interval equal to its mean up to rounding (0.8 against
    0.8000000000000002 on the 40-product demo): drawn as a zero error bar, which matplotlib would refuse as a
    negative one; other intervals are drawn as they are."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from prodrec.viz import gallery

    err = gallery._bar_errors([0.8, 0.5], [0.8000000000000002, 0.4], [0.8000000000000002, 0.65])
    assert np.allclose(err, [[0.0, 0.1], [2e-16, 0.15]]) and (err >= 0).all() and err[0, 0] == 0.0
    rows = [dict(mode="image", metric="precision", label="articleType", value=0.8, ci_low=0.8000000000000002,
                 ci_high=0.8000000000000002, k=5),
            dict(mode="text", metric="precision", label="articleType", value=0.5, ci_low=0.4, ci_high=0.65, k=5)]
    gallery.plot_precision_bars(pd.DataFrame(rows))  # raised "'yerr' must not contain negative values" before
    plt.close("all")
