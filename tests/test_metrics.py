"""The metric registry, graded relevance and the ranx-computed ranking metrics (against an independent numpy
computation and hand values), their random baselines (against Monte Carlo), paired significance tests (against
ranx.compare) and the tables that read any number of rows per mode."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

import prodrec
from prodrec.core.errors import ConfigError
from prodrec.embed.vectors import Embeddings
from prodrec.evaluation.metrics import METRICS, MetricSpec, check_metrics, get_metric, register_metric
from prodrec.evaluation.relevance import grade_counts, neighbour_grades, prefix_keys, ranx_scores
from prodrec.evaluation.report import metric_table, precision_table, significance_legend, significance_table
from prodrec.evaluation.runs import alpha_sweep, evaluate, weight_sweep
from prodrec.evaluation.significance import adjust_p, compare_modes
from prodrec.rank.recommender import Recommender

ranx = pytest.importorskip("ranx")
RANKING = ("ndcg", "map", "mrr", "recall")


def grade_matrix(codes: np.ndarray) -> np.ndarray:
    """Brute force: grade[i, j] = number of leading label columns on which j matches i (missing: no match)."""
    n, c = codes.shape
    g = np.zeros((n, n), dtype=int)
    for i in range(n):
        for j in range(n):
            level = 0
            while level < c and codes[i, level] >= 0 and codes[i, level] == codes[j, level]:
                level += 1
            g[i, j] = level if i != j else 0
    return g


def reference(positions: np.ndarray, codes: np.ndarray) -> dict[str, np.ndarray]:
    """nDCG@k (linear gains), AP@k over all R relevant, RR@k and recall@k in plain numpy; NaN when R = 0."""
    g = grade_matrix(codes)
    n, k = positions.shape
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = {m: np.full(n, np.nan) for m in RANKING}
    for i in range(n):
        big_r = int((g[i] > 0).sum())
        if big_r == 0:
            continue
        got = g[i, positions[i]]
        hits = got > 0
        ideal = np.sort(g[i])[::-1][:k]
        out["ndcg"][i] = (got * disc).sum() / (ideal * disc).sum()
        out["recall"][i] = hits.sum() / big_r
        out["mrr"][i] = 1.0 / (np.argmax(hits) + 1) if hits.any() else 0.0
        out["map"][i] = sum(hits[r] * hits[: r + 1].sum() / (r + 1) for r in range(k)) / big_r
    return out


# products: type A red, A red, A blue, B red, B red, C red (a type no other product has), missing type
HAND_CODES = np.array([[0, 0], [0, 0], [0, 1], [1, 0], [1, 0], [2, 0], [-1, 0]])
HAND_POS = np.array([[3, 1, 2], [0, 3, 4], [5, 6, 0], [4, 0, 1], [3, 2, 1], [0, 1, 2], [0, 1, 2]])


def test_grades_by_hand_and_against_brute_force() -> None:
    assert neighbour_grades(HAND_POS, HAND_CODES)[:4].tolist() == [[0, 2, 1], [2, 0, 0], [0, 0, 1], [2, 0, 0]]
    assert grade_counts(HAND_CODES).tolist() == [[2, 1], [2, 1], [2, 0], [1, 1], [1, 1], [0, 0], [0, 0]]
    rng = np.random.default_rng(3)
    codes = rng.integers(-1, 3, size=(40, 3))
    g = grade_matrix(codes)
    counts = grade_counts(codes)
    for level in range(3):
        assert (counts[:, level] == (g >= level + 1).sum(axis=1)).all()
    pos = np.array([rng.choice(np.delete(np.arange(40), i), 5, replace=False) for i in range(40)])
    assert (neighbour_grades(pos, codes) == np.take_along_axis(g, pos, axis=1)).all()
    key = prefix_keys(codes)[:, 1]  # the same key at level 2 is grade 2 or more
    same, others = (key[:, None] == key[None, :]) & (key[:, None] >= 0), ~np.eye(40, dtype=bool)
    assert (same[others] == (g >= 2)[others]).all()


def test_ranx_metrics_by_hand_and_against_numpy() -> None:
    got = ranx_scores(HAND_POS, HAND_CODES)
    d2, d3 = 1 / np.log2(3), 0.5
    # query 0: grades [0, 2, 1] of R = 2 relevant (ideal 2, 1)
    assert got["ndcg"][0] == pytest.approx((2 * d2 + 1 * d3) / (2 + d2))
    assert got["mrr"][0] == pytest.approx(0.5) and got["recall"][0] == pytest.approx(1.0)
    assert got["map"][0] == pytest.approx((1 / 2 + 2 / 3) / 2)
    # query 2 (A blue): two grade-1 products tie in its ideal list, one found at rank 3
    assert got["ndcg"][2] == pytest.approx(d3 / (1 + d2)) and got["mrr"][2] == pytest.approx(1 / 3)
    assert got["map"][2] == pytest.approx(1 / 3 / 2) and got["recall"][2] == pytest.approx(0.5)
    # a type no other product has, and a missing type: nothing relevant, not scored
    for m in RANKING:
        assert np.isnan(got[m][5:]).all()
        np.testing.assert_allclose(got[m], reference(HAND_POS, HAND_CODES)[m], equal_nan=True)

    rng = np.random.default_rng(0)
    codes = np.column_stack([rng.integers(-1, 6, 120), rng.integers(0, 3, 120), rng.integers(0, 2, 120)])
    pos = np.array([rng.choice(np.delete(np.arange(120), i), 7, replace=False) for i in range(120)])
    ref = reference(pos, codes)
    got = ranx_scores(pos, codes)
    for m in RANKING:
        np.testing.assert_allclose(got[m], ref[m], rtol=1e-12, equal_nan=True)


def ranx_objects(g: np.ndarray, positions: dict[str, np.ndarray]) -> tuple[object, list[object]]:
    """ranx's own Qrels and Runs (string ids) from a grade matrix and rankings; queries with a relevant product."""
    qrels = ranx.Qrels({str(i): {str(j): int(g[i, j]) for j in np.flatnonzero(g[i])} for i in range(len(g))
                        if g[i].any()})
    k = next(iter(positions.values())).shape[1]
    runs = [ranx.Run({q: {str(j): float(k - r) for r, j in enumerate(pos[int(q)])} for q in qrels.keys()}, name=name)
            for name, pos in positions.items()]
    return qrels, runs


def test_ranx_objects_give_the_same_scores_and_compare_the_same_p_values() -> None:
    """The kit feeds ranx arrays; ranx's own Qrels/Run objects (string ids) and ranx.compare agree."""
    rng = np.random.default_rng(1)
    n, k = 80, 5
    codes = np.column_stack([rng.integers(0, 6, n), rng.integers(0, 3, n)])
    g = grade_matrix(codes)
    positions = {name: np.array([rng.choice(np.delete(np.arange(n), i), k, replace=False) for i in range(n)])
                 for name in ("a", "b", "c")}
    positions["b"][: n // 2] = positions["a"][: n // 2]  # b is half a
    qrels, runs = ranx_objects(g, positions)
    scored = np.array(sorted(int(q) for q in qrels.keys()))
    per_query = {}
    for name, pos in positions.items():
        mine = ranx_scores(pos, codes)
        for m in ("ndcg", "recall"):
            per_query[(name, m, "articleType+baseColour")] = mine[m]
            theirs = ranx.evaluate(qrels, next(r for r in runs if r.name == name), f"{m}@{k}", return_mean=False)
            order = np.argsort([str(q) for q in scored])  # ranx orders queries by id as strings
            np.testing.assert_allclose(mine[m][scored][order], theirs, rtol=1e-12)
    report = ranx.compare(qrels, runs, [f"ndcg@{k}", f"recall@{k}"], stat_test="student")
    table = compare_modes(per_query, test="student", correction="none")
    for r in table.itertuples():
        assert r.p_raw == pytest.approx(report.comparisons[(r.mode_a, r.mode_b)][f"{r.metric}@{k}"]["p_value"])
    assert len(table) == 3 * 2 and set(table.columns) >= {"mode_a", "mode_b", "metric", "p_value", "significant",
                                                          "correction"}


@pytest.mark.parametrize("name", ["precision", *RANKING])
def test_random_baselines_are_the_expectation_of_a_uniform_draw(name: str) -> None:
    rng = np.random.default_rng(2)
    n, k = 50, 4
    codes = np.column_stack([rng.integers(-1, 5, n), rng.integers(0, 3, n)])
    spec = get_metric(name)
    c = codes[:, 0] if spec.per_label else codes
    draws = [np.nanmean(spec.per_query(np.array([rng.choice(np.delete(np.arange(n), i), k, replace=False)
                                                 for i in range(n)]), c)) for _ in range(300)]
    expected = spec.baseline(c, k)
    assert np.mean(draws) == pytest.approx(expected, abs=4 * np.std(draws) / np.sqrt(len(draws)) + 1e-9)


def test_registry_entries_names_and_errors() -> None:
    assert {"precision", *RANKING} <= set(METRICS) and prodrec.METRICS is METRICS
    assert {"METRICS", "MetricSpec", "register_metric"} <= set(prodrec.__all__)
    with pytest.raises(ConfigError, match="already registered"):
        register_metric(METRICS["ndcg"])
    with pytest.raises(ConfigError, match="did you mean 'ndcg'"):
        get_metric("ndgc")
    for bad in ("coverage", "ild_image", "a,b", ""):
        with pytest.raises(ConfigError):
            register_metric(MetricSpec(bad, lambda p, c: np.zeros(len(p))))
    assert check_metrics("ndcg, precision,ndcg") == ["ndcg", "precision"]
    with pytest.raises(ConfigError, match="at least one"):
        check_metrics(" , ")
    spec = MetricSpec("precision", METRICS["precision"].per_query, None)
    old = METRICS["precision"]
    try:
        assert register_metric(spec, replace=True) is METRICS["precision"]
    finally:
        METRICS["precision"] = old


def test_missing_ranx_names_the_extra() -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'ranx':
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from prodrec.core.errors import MissingDependency
from prodrec.evaluation.metrics import check_metrics
from prodrec.evaluation.relevance import ranx_scores
import numpy as np
check_metrics('precision')
for call in (lambda: check_metrics('ndcg'), lambda: ranx_scores(np.array([[1], [0]]), np.array([0, 0]))):
    try:
        call()
    except MissingDependency as exc:
        print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.count("pip install 'prodrec[eval]'") == 2, out.stdout + out.stderr


def _tied_recommender(n: int = 60) -> tuple[Recommender, pd.DataFrame]:
    """Three groups of identical vectors (cosine ties, broken by id) and labels that half agree with them."""
    rng = np.random.default_rng(4)
    ids = [f"p{i:03d}" for i in range(n)]
    base = rng.normal(size=(3, 8))
    image = base[np.arange(n) % 3]  # ties: every third product has the same image vector
    text = rng.normal(size=(n, 8))
    labels = pd.DataFrame({"articleType": np.where(rng.random(n) < 0.5, np.arange(n) % 3, rng.integers(0, 3, n)).astype(str),
                           "baseColour": rng.integers(0, 2, n).astype(str)}, index=ids)
    labels.iloc[5, 0] = None
    return Recommender({"image": Embeddings(ids, image), "text": Embeddings(ids, text)}), labels


def test_evaluate_reports_ranking_metrics_with_cis_and_baselines() -> None:
    rec, labels = _tied_recommender()
    res = evaluate(rec, labels, k=4, metrics="ndcg,map,mrr,recall,precision", n_boot=200, progress=False)
    assert list(res.columns) == ["protocol", "mode", "metric", "label", "value", "ci_low", "ci_high", "n_queries", "k"]
    codes = np.column_stack([pd.factorize(labels.loc[list(rec.ids), c])[0] for c in ("articleType", "baseColour")])
    for mode in rec.modes:
        pos, _ = rec.topk_positions(4, mode)
        ref = reference(pos, codes)
        for m in RANKING:
            row = res[(res["mode"] == mode) & (res.metric == m)].iloc[0]
            assert row.label == "articleType+baseColour" and row.n_queries == int((~np.isnan(ref[m])).sum())
            assert row.value == pytest.approx(np.nanmean(ref[m])) and row.ci_low <= row.value <= row.ci_high
    # precision on the first label is ranx's precision@k (binary relevance) over the queries with a relevant product
    pos, _ = rec.topk_positions(4, "image")
    g = grade_matrix(codes)
    scored = g.any(axis=1)
    prec = res[(res["mode"] == "image") & (res.metric == "precision") & (res.label == "articleType")].value.iloc[0]
    qrels, runs = ranx_objects(g, {"image": pos})
    by_ranx = ranx.evaluate(qrels, runs[0], "precision@4")
    assert prec == pytest.approx(by_ranx * scored.sum() / (codes[:, 0] >= 0).sum())  # unscored known queries count 0
    random = res[res["mode"] == "random"].set_index(["metric", "label"]).value
    assert set(random.index) == {(m, "articleType+baseColour") for m in RANKING} | {("precision", "articleType"), ("precision", "baseColour")}
    one = evaluate(rec, labels, k=4, metrics=["ndcg"], grade_levels=1, n_boot=10, progress=False)
    assert set(one[one.metric == "ndcg"].label) == {"articleType"}
    with pytest.raises(ConfigError):
        evaluate(rec, labels, metrics=["ndgc"], progress=False)
    with pytest.raises(ConfigError):
        evaluate(rec, labels, grade_levels=0, progress=False)


def test_compare_modes_and_holm() -> None:
    assert adjust_p([0.01, 0.04, 0.03, 0.005], "holm") == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert adjust_p([0.01, 0.4], "bonferroni") == pytest.approx([0.02, 0.8])
    assert adjust_p([0.01, 0.4], "none") == pytest.approx([0.01, 0.4])
    rng = np.random.default_rng(5)
    base = rng.random(200)
    pq = {("a", "m", "x"): base, ("b", "m", "x"): base.copy(), ("c", "m", "x"): base + 0.2 + 0.01 * rng.random(200)}
    pq[("a", "m", "x")][:3] = np.nan  # unscored queries are left out of every pair
    sig = compare_modes(pq, correction="holm")
    assert (sig.n_queries == 197).all()
    same = sig[(sig.mode_a == "a") & (sig.mode_b == "b")].iloc[0]
    assert same.p_value == 1.0 and not same.significant  # identical values: p = 1
    assert sig[sig.mode_b == "c"].significant.all()
    assert (sig.p_value >= sig.p_raw).all()
    res = pd.DataFrame([dict(mode=m, metric="m", label="x", value=float(np.nanmean(v)), ci_low=np.nan, ci_high=np.nan,
                             n_queries=200, k=5) for (m, _, _), v in pq.items()])
    table = significance_table(res, sig)
    assert list(table.columns) == ["a (a)", "b (b)", "c (c)"]
    assert table.iloc[0]["c (c)"].endswith("ᵃᵇ") and table.iloc[0]["a (a)"][-1].isdigit()
    assert "holm" in significance_legend(sig)
    fisher = compare_modes(pq, test="fisher", n_permutations=200)
    assert fisher[fisher.mode_b == "c"].significant.all()
    with pytest.raises(ConfigError, match="did you mean"):
        compare_modes(pq, test="studnet")


def test_tables_read_any_number_of_rows_per_mode() -> None:
    rec, labels = _tied_recommender()
    a = evaluate(rec, labels, k=3, metrics="precision,mrr", n_boot=10, progress=False)
    b = evaluate(rec, labels, k=5, metrics="precision,mrr", n_boot=10, progress=False)
    both = pd.concat([a, b, a.assign(protocol="withheld")])
    t = metric_table(both, exclude=["coverage"])
    assert list(t.index.names) == ["protocol", "metric", "label", "k"]
    assert ("full", "mrr", "articleType+baseColour", 5) in t.index and not any(m == "coverage" for m in t.index.get_level_values(1))
    assert list(t.columns) == ["random", "image", "text", "fused", "rrf"]
    p = precision_table(both)
    assert list(p.index.names) == ["protocol", "label", "k"] and len(p) == 2 * 2 + 2
    assert precision_table(a).index.name == "label" and precision_table(a).columns.name == "mode"
    extras = metric_table(a, exclude=["precision", "mrr"])
    assert list(extras.index) == ["coverage", "ild_image", "ild_text"] and extras.index.name == "metric"
    assert precision_table(a[a.metric != "precision"]).empty


def test_alpha_sweep_is_weight_sweep_with_fixed_weights() -> None:
    rec, labels = _tied_recommender()
    alphas = (0.0, 0.25, 1.0)
    a = alpha_sweep(rec, labels, alphas, k=4, progress=False)
    w = weight_sweep(rec, labels, [{"image": x, "text": 1 - x} for x in alphas], k=4, progress=False)
    assert list(a.columns) == ["alpha", "label", "k", "precision"]
    assert a.alpha.tolist() == [0.0, 0.0, 0.25, 0.25, 1.0, 1.0]
    assert a.precision.tolist() == w.precision.tolist() and (w.w_image == a.alpha).all()
    with pytest.raises(ConfigError):
        alpha_sweep(rec, labels, (0.5, 1.5), progress=False)


def test_evaluate_can_return_the_per_query_values() -> None:
    rec, labels = _tied_recommender()
    res, sc = evaluate(rec, labels, k=4, metrics=["precision", "ndcg"], n_boot=20, progress=False, return_scores=True)
    assert set(sc.per_query) == {(m, metric, label) for m in rec.modes
                                 for metric, label in (("precision", "articleType"), ("precision", "baseColour"),
                                                       ("ndcg", "articleType+baseColour"))}
    assert all(len(v) == len(rec) for v in sc.per_query.values())
    assert sc.table(n_boot=20).equals(res)
    assert res.equals(evaluate(rec, labels, k=4, metrics=["precision", "ndcg"], n_boot=20, progress=False))


def test_ranx_scores_in_small_blocks_are_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    from prodrec.evaluation import relevance

    rng = np.random.default_rng(6)
    codes = np.column_stack([rng.integers(-1, 4, 70), rng.integers(0, 3, 70)])
    pos = np.array([rng.choice(np.delete(np.arange(70), i), 3, replace=False) for i in range(70)])
    monkeypatch.setattr(relevance, "BLOCK_PAIRS", 25)  # a block of a few queries per ranx call
    got, ref = ranx_scores(pos, codes), reference(pos, codes)
    for m in RANKING:
        np.testing.assert_allclose(got[m], ref[m], rtol=1e-12, equal_nan=True)
