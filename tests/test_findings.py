"""Findings a reviewer would sign: tuned on validation and reported on test, differences tested in pairs,
intervals in every table, names that say what ran, and words that never go past the numbers.

:func:`check_findings` reads generated findings back against the metrics and paired tests they came from;
the notebook tests use it on a real run's JSON files.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from prodrec.core.errors import CatalogError, ConfigError
from prodrec.core.provenance import save_json
from prodrec.embed.vectors import Embeddings
from prodrec.evaluation import names, report
from prodrec.evaluation.claims import Claim, labels_claim, modes_claim
from prodrec.evaluation.runs import (
    TUNED_MODE,
    alpha_sweep,
    bootstrap_ci,
    evaluate,
    paired_difference,
    split_queries,
    tune_fusion,
    tune_weights,
    weight_grid,
    weight_sweep,
)
from prodrec.evaluation.significance import compare_modes
from prodrec.rank.recommender import Recommender
from prodrec.run.cli import main
from prodrec.run.notebooks import clean_outputs

BEATS = re.compile(r"\*\*(?P<a>[^*]+)\*\* beats \*\*(?P<b>[^*]+)\*\* on (?P<label>\w+): (?P<ma>[\d.]+) vs (?P<mb>[\d.]+)")
TIE = re.compile(r"\*\*(?P<a>[^*]+)\*\* and \*\*(?P<b>[^*]+)\*\* do not differ significantly on (?P<label>\w+): "
                 r"(?P<ma>[\d.]+) vs (?P<mb>[\d.]+)")
MORE = re.compile(r"\*\*(?P<a>[^*]+)\*\* neighbours share the query's (?P<la>\w+) more often than its (?P<lb>\w+): "
                  r"(?P<ma>[\d.]+) vs (?P<mb>[\d.]+) \(paired difference [+-][\d.]+, 95% bootstrap interval "
                  r"\[(?P<lo>[+-][\d.]+), (?P<hi>[+-][\d.]+)\]")
FORBIDDEN = ("as the paper found", "contrary to the paper", "no fixed weighting gets both", "weak supervision")


PROTOCOL_TAG = re.compile(r"\((?P<protocol>full|withheld)\)")


def check_findings(findings: dict[str, Any], metrics: list[dict[str, Any]], significance: list[dict[str, Any]],
                   protocol: str | None = None) -> int:
    """Every comparison sentence of ``findings`` (a ``Findings.to_dict()``) read against the metrics rows and
    paired tests it came from: "A beats B on l" needs A's mean above B's in the metrics and a significant
    paired test; "do not differ significantly" needs a test that is not significant; "shares la more often
    than lb" needs a bootstrap interval above 0. No sentence agrees with the paper as if it had numbers.
    A paragraph whose heading names a protocol ("(full)", "(withheld)") is read against that protocol's rows
    and tests; ``protocol`` reads every paragraph against one. Returns how many sentences were checked."""
    text, titles = findings["findings"], findings["titles"]
    title_to_mode = {t: m for m, t in titles.items()}
    mode_of = lambda name: title_to_mode.get(name, name)  # noqa: E731 - a mode without a title is named by its id
    for phrase in FORBIDDEN:
        assert phrase not in text.lower(), phrase
    sig = pd.DataFrame(significance)
    all_rows = pd.DataFrame(metrics)
    all_rows = all_rows[all_rows.metric == "precision"]

    def test_of(a: str, b: str, label: str, prot: str | None) -> pd.Series:
        s = sig[(sig.label == label) & (sig.metric == "precision") & (((sig.mode_a == a) & (sig.mode_b == b))
                                                                   | ((sig.mode_a == b) & (sig.mode_b == a)))]
        if prot is not None and "protocol" in s.columns:
            s = s[s.protocol == prot]
        assert len(s) == 1, (a, b, label, prot)  # one test per pair: a sentence cannot borrow another's
        return s.iloc[0]

    def mean(mode: str, label: str, prot: str | None) -> float:
        r = all_rows[(all_rows["mode"] == mode) & (all_rows.label == label)]
        if prot is not None and "protocol" in r.columns:
            r = r[r.protocol == prot]
        if "train_seed" in r.columns and r["train_seed"].nunique() > 1:
            r = r[r.train_seed == r.train_seed.min()]  # the paired tests' run
        return float(r["value"].iloc[0])

    checked = 0
    for paragraph in text.split("\n\n"):
        tag = PROTOCOL_TAG.search(paragraph)  # the first: the heading's "(full)" / "(withheld)"
        prot = protocol if protocol is not None else (tag["protocol"] if tag else None)
        for m in BEATS.finditer(paragraph):
            a, b, label = mode_of(m["a"]), mode_of(m["b"]), m["label"]
            t = test_of(a, b, label, prot)
            assert bool(t.significant), (prot, m.group(0))
            if prot is None or "protocol" not in sig.columns or len(sig[sig.protocol == prot]):
                assert mean(a, label, prot) > mean(b, label, prot), m.group(0)
                assert float(m["ma"]) == pytest.approx(mean(a, label, prot), abs=6e-4)
                assert float(m["mb"]) == pytest.approx(mean(b, label, prot), abs=6e-4)
            checked += 1
        for m in TIE.finditer(paragraph):
            assert not bool(test_of(mode_of(m["a"]), mode_of(m["b"]), m["label"], prot).significant), m.group(0)
            checked += 1
        for m in MORE.finditer(paragraph):
            assert float(m["lo"]) > 0 and float(m["ma"]) > float(m["mb"]), m.group(0)
            checked += 1
    for c in findings.get("claims", []):  # every recorded claim is oriented and judged by its own numbers
        assert c["mean_a"] >= c["mean_b"] - 1e-12
        if c["kind"] == "labels":
            assert c["significant"] == (c["ci_low"] > 0 or c["ci_high"] < 0)
    return checked


# ------------------------------------------------------------------------------------------- fixtures
def planted(n: int = 300, image_noise: float = 0.9, text_noise: float = 0.9, seed: int = 0,
            dup: bool = False) -> tuple[Recommender, pd.DataFrame]:
    """Image vectors know the type, text vectors the colour (and a little type); ``dup`` names products
    after their (type, colour), so same-name products exist."""
    rng = np.random.default_rng(seed)
    types, colours = rng.integers(0, 5, n), rng.integers(0, 5, n)
    centres = rng.normal(size=(2, 5, 16))
    xi = centres[0][types] + image_noise * rng.normal(size=(n, 16))
    xt = centres[1][colours] + 0.4 * centres[0][types] + text_noise * rng.normal(size=(n, 16))
    ids = np.arange(n) + 1
    rec = Recommender({"image": Embeddings(ids, xi), "text": Embeddings(ids, xt)})
    labels = pd.DataFrame({"articleType": types.astype(str), "baseColour": colours.astype(str),
                           "gender": rng.integers(0, 2, n).astype(str)}, index=ids)
    labels["name"] = (labels.articleType + "-" + labels.baseColour) if dup else ids.astype(str)
    return rec, labels


LABELS = ["articleType", "baseColour", "gender"]


# ------------------------------------------------------------------------------------ tune on validation
def test_split_queries_is_seeded_disjoint_and_complete() -> None:
    ids = [f"p{i}" for i in range(101)]
    s = split_queries(ids, validation=0.4, seed=3)
    assert len(s.validation) == 40 and len(s.test) == 61 and not set(s.validation) & set(s.test)
    assert sorted(s.validation + s.test) == sorted(ids)
    assert s == split_queries(ids, validation=0.4, seed=3) and s != split_queries(ids, validation=0.4, seed=4)
    assert list(s.test) == [i for i in ids if i in set(s.test)]  # each half keeps the sample's order
    assert "40 validation and 61 test queries" in s.describe() and s.to_dict()["seed"] == 3
    for bad in (0.0, 1.0, 1.5, "half"):
        with pytest.raises(ConfigError):
            split_queries(ids, validation=bad)
    with pytest.raises(ConfigError, match="unique"):
        split_queries(["a", "a", "b"])


def test_a_split_sweep_tunes_on_validation_and_reads_test() -> None:
    rec, labels = planted()
    split = split_queries(rec.ids, seed=0)
    sweep = alpha_sweep(rec, labels, k=5, columns=["articleType", "baseColour"], split=split, progress=False)
    assert list(sweep.columns) == ["alpha", "label", "k", "precision", "split", "n_queries"]
    assert set(sweep.split) == {"validation", "test"} and set(sweep.n_queries) == {150}
    # each half's value is the mean over its own queries of the all-vs-all per-query precision
    res, sc = evaluate(rec, labels, k=5, columns=["articleType"], alpha=0.3, return_scores=True, progress=False,
                       n_boot=10, modes=["fused"])
    per_query = sc.per_query[("fused", "precision", "articleType")]
    test_rows = np.isin(rec.ids.astype(str), split.test)
    row = sweep[(sweep.alpha == 0.3) & (sweep.label == "articleType") & (sweep.split == "test")]
    assert float(row.precision.iloc[0]) == pytest.approx(per_query[test_rows].mean())
    tuned = tune_weights(sweep)
    val = sweep[sweep.split == "validation"].pivot_table(index="alpha", columns="label", values="precision").mean(axis=1)
    assert tuned.alpha == pytest.approx(val.idxmax())  # the best on validation, by an independent pivot
    test = sweep[sweep.split == "test"].pivot_table(index="alpha", columns="label", values="precision").mean(axis=1)
    assert tuned.test == pytest.approx(test.loc[val.idxmax()]) and tuned.validation == pytest.approx(val.max())
    # the test rows never choose: scramble them and the choice stays
    scrambled = sweep.copy()
    is_test = scrambled.split == "test"
    scrambled.loc[is_test, "precision"] = np.random.default_rng(1).random(int(is_test.sum()))
    assert tune_weights(scrambled).weights == tuned.weights
    assert f"alpha = {tuned.alpha:.1f}" in tuned.describe() and "150 validation queries" in tuned.describe()
    with pytest.raises(ConfigError, match="split"):
        tune_weights(sweep.drop(columns=["split"]))


def test_tune_fusion_weights_over_a_grid() -> None:
    rec, labels = planted()
    split = split_queries(rec.ids, seed=2)
    sweep, tuned = tune_fusion(rec, labels, split, "weights", k=5, columns=["articleType", "baseColour"], step=0.25,
                               progress=False)
    assert len(sweep) == len(weight_grid(["image", "text"], 0.25)) * 2 * 2
    assert set(tuned.weights) == {"image", "text"} and sum(tuned.weights.values()) == pytest.approx(1.0)
    plain = weight_sweep(rec, labels, weight_grid(["image", "text"], 0.25), k=5,
                         columns=["articleType", "baseColour"], progress=False)
    assert "split" not in plain.columns and len(plain) == len(sweep) // 2
    with pytest.raises(ConfigError):
        tune_fusion(rec, labels, split, "beta")


def test_evaluate_on_test_queries_and_a_tuned_variant() -> None:
    rec, labels = planted()
    split = split_queries(rec.ids, seed=0)
    full, sc_all = evaluate(rec, labels, k=5, columns=LABELS, return_scores=True, progress=False, n_boot=50)
    part, sc = evaluate(rec, labels, k=5, columns=LABELS, queries=split.test, return_scores=True, progress=False,
                        n_boot=50, variants={TUNED_MODE: {"image": 0.7, "text": 0.3}})
    keep = np.isin(rec.ids.astype(str), split.test)
    for mode in ("image", "text", "fused", "rrf"):
        a, b = sc.per_query[(mode, "precision", "articleType")], sc_all.per_query[(mode, "precision", "articleType")]
        np.testing.assert_array_equal(a[keep], b[keep])
        assert np.isnan(a[~keep]).all()
        r = part[(part["mode"] == mode) & (part.label == "articleType")].iloc[0]
        assert r.value == pytest.approx(b[keep].mean()) and r.n_queries == keep.sum()
    # the variant is the fused ranking at its weights
    ref, ref_sc = evaluate(rec, labels, k=5, columns=LABELS, modes=["fused"], weights={"image": 0.7, "text": 0.3},
                           return_scores=True, progress=False, n_boot=10)
    np.testing.assert_array_equal(sc.per_query[(TUNED_MODE, "precision", "gender")][keep],
                                  ref_sc.per_query[("fused", "precision", "gender")][keep])
    assert list(report.precision_table(part).columns) == ["random", "image", "text", "fused", TUNED_MODE, "rrf"]
    for bad in ({"image": {"image": 1.0}}, {"rrf": {"image": 1.0}}, {"x": {"colour": 1.0}}):
        with pytest.raises(ConfigError):
            evaluate(rec, labels, columns=LABELS, variants=bad, progress=False)


def test_duplicate_aware_ranking_leaves_the_same_name_out() -> None:
    rec, labels = planted(n=200, dup=True)
    res, sc = evaluate(rec, labels, k=5, columns=LABELS, exclude_same="name", modes=["image", "fused"],
                       return_scores=True, progress=False, n_boot=20)
    assert set(res.candidates) == {"same name left out"}
    # by hand: the image cosines, the query and every product of its name masked, the five best
    v = rec.arms["image"].vectors
    names_ = labels.name.reindex(rec.ids.astype(int)).to_numpy()
    codes = labels.articleType.reindex(rec.ids.astype(int)).to_numpy()
    sims = v @ v.T
    sims[names_[:, None] == names_[None, :]] = -np.inf
    top = np.argsort(-sims, axis=1, kind="stable")[:, :5]
    by_hand = (codes[top] == codes[:, None]).mean(axis=1)
    np.testing.assert_allclose(sc.per_query[("image", "precision", "articleType")], by_hand)
    std = evaluate(rec, labels, k=5, columns=LABELS, modes=["image"], progress=False, n_boot=20)
    both = report.precision_table(pd.concat([std.assign(candidates="all"), res]))
    assert ("articleType", "all") in both.index and ("articleType", "same name left out") in both.index
    # same-name neighbours are easy hits on type: leaving them out can only lower it here
    assert both.loc[("articleType", "same name left out"), "image"] < both.loc[("articleType", "all"), "image"]
    with pytest.raises(CatalogError, match="nope"):
        evaluate(rec, labels, columns=LABELS, exclude_same="nope", progress=False)


# ------------------------------------------------------------------------------------ differences in pairs
def test_paired_difference_by_hand() -> None:
    rng = np.random.default_rng(0)
    a = rng.random(400)
    b = a - 0.05 + 0.01 * rng.normal(size=400)
    b[:10] = np.nan
    d = paired_difference(a, b, n_boot=500)
    assert d.n_queries == 390 and d.diff == pytest.approx(np.nanmean(a[10:] - b[10:]))
    assert d.ci_low < d.diff < d.ci_high and d.significant
    assert (d.ci_low, d.ci_high) == pytest.approx(bootstrap_ci(a[10:] - b[10:], n_boot=500))
    same = paired_difference(a, a + 0.0)
    assert same.diff == 0 and not same.significant
    with pytest.raises(ConfigError):
        paired_difference(a, b[:5])


def test_tables_print_intervals() -> None:
    assert report.format_ci(0.8061, 0.7912, 0.8234) == "0.806 [0.79, 0.82]"
    assert report.format_ci(0.5, float("nan"), float("nan"), digits=2) == "0.50"
    assert report.format_ci(float("nan")) == ""
    rec, labels = planted()
    res = evaluate(rec, labels, k=5, columns=LABELS, progress=False, n_boot=100)
    t = report.precision_table(res, digits=2, ci=True)
    num = report.precision_table(res, digits=2)
    pattern = re.compile(r"^\d\.\d\d \[\d\.\d\d, \d\.\d\d\]$")
    for mode in ("image", "text", "fused", "rrf"):
        assert all(pattern.match(s) for s in t[mode]), t[mode]
        assert [float(s.split()[0]) for s in t[mode]] == num[mode].tolist()
    assert all(re.match(r"^\d\.\d\d$", s) for s in t["random"])  # exact: no interval
    extras = report.metric_table(res, exclude=["precision"], ci=True)
    assert re.match(r"^\d\.\d{3} \[\d\.\d\d, \d\.\d\d\]$", extras.loc["ild_image", "image"])
    assert re.match(r"^\d\.\d{3}$", extras.loc["coverage", "image"])


# ------------------------------------------------------------------------------------ words and names
def _findings(rec: Recommender, labels: pd.DataFrame) -> tuple[Any, pd.DataFrame, pd.DataFrame]:
    split = split_queries(rec.ids, seed=0)
    sweep, tuned = tune_fusion(rec, labels, split, "alpha", k=5, columns=["articleType", "baseColour"],
                               progress=False)
    variants = {TUNED_MODE: tuned.weights}
    res, sc = evaluate(rec, labels, k=5, columns=LABELS, queries=split.test, variants=variants, return_scores=True,
                       progress=False, n_boot=300)
    sig = compare_modes(sc.per_query)
    titles = names.mode_titles(rec, {"image": {"model_id": "efficientnet-lite0/imagenet"},
                                     "text": {"model_id": "sentence-transformers/all-MiniLM-L6-v2"}}, variants)
    f = report.paper_findings(res, sweep, scores=sc, significance=sig, tuned=tuned, titles=titles)
    return f, res, sig


@pytest.mark.parametrize("image_noise, text_noise", [(0.9, 0.9), (3.0, 0.5), (0.5, 3.0)])
def test_findings_follow_the_numbers(image_noise: float, text_noise: float, tmp_path: Path) -> None:
    """Three worlds (both arms good, a weak image arm, a weak text arm): every generated comparison is read
    back against the saved metrics and paired tests, as a notebook's JSON files are."""
    rec, labels = planted(image_noise=image_noise, text_noise=text_noise)
    f, res, sig = _findings(rec, labels)
    save_json(tmp_path / "findings.json", f.to_dict(), {})
    save_json(tmp_path / "metrics.json", res.to_dict(orient="records"), {})
    save_json(tmp_path / "significance.json", sig.to_dict(orient="records"), {})
    load = lambda name: json.loads((tmp_path / name).read_text())["data"]  # noqa: E731
    assert check_findings(load("findings.json"), load("metrics.json"), load("significance.json")) >= 8
    text = f.markdown
    assert "tuned on validation queries" in text and "test queries" in text
    # the headings state the direction the numbers show
    image = labels_claim(_scores(rec, labels), "image", "articleType", "baseColour")
    assert image is not None
    head = text.split("\n\n")[0]
    if image.significant:
        assert head.startswith(f"**Image arm: {image.label_a} over {image.label_b}")
    else:
        assert head.startswith("**Image arm: no significant gap")


def _scores(rec: Recommender, labels: pd.DataFrame) -> Any:
    split = split_queries(rec.ids, seed=0)
    return evaluate(rec, labels, k=5, columns=LABELS, queries=split.test, return_scores=True, progress=False,
                    n_boot=300)[1]


def test_a_claim_says_beats_only_when_its_test_is_significant() -> None:
    rec, labels = planted()
    _, sc = evaluate(rec, labels, k=5, columns=LABELS, return_scores=True, progress=False, n_boot=50)
    sig = compare_modes(sc.per_query)
    for a, b, label in (("image", "text", "articleType"), ("text", "image", "baseColour"),
                        ("fused", "rrf", "gender")):
        c = modes_claim(sc, a, b, label, sig)
        assert isinstance(c, Claim) and c.mean_a >= c.mean_b
        row = sig[(sig.label == label) & (sig.mode_a.isin([a, b])) & (sig.mode_b.isin([a, b]))].iloc[0]
        assert c.significant == bool(row.significant) and c.p_value == pytest.approx(row.p_value)
        said = c.sentence()
        assert ("beats" in said) == c.significant and ("do not differ" in said) == (not c.significant)
    untested = modes_claim(sc, "image", "text", "gender", None)
    assert untested is not None and not untested.significant and "no paired test" in untested.sentence()
    assert modes_claim(sc, "image", "colour", "gender", sig) is None


def test_mode_titles_name_each_fusion_and_the_learned_supervision() -> None:
    rec, _ = planted()
    models = {"image": {"model_id": "efficientnet-lite0/imagenet"},
              "text": {"model_id": "sentence-transformers/all-MiniLM-L6-v2"},
              "learned": {"model_id": "learned/abc", "training": {"config": {"labels": ["articleType", "baseColour"]}}},
              "colour": {"model_id": "colour-hist/hsv-v1"}}
    t = names.mode_titles(rec, models, {TUNED_MODE: {"image": 0.7, "text": 0.3}})
    assert t["fused"] == "fused (raw α=0.5, image+text)" and t["image"] == "image (EfficientNet-Lite0)"
    assert t[TUNED_MODE] == "fused (raw α=0.7, tuned on validation, image+text)"
    assert t["rrf"].startswith("RRF (reciprocal-rank fusion, equal weights")
    ids = rec.ids
    three = Recommender({a: Embeddings(ids, rec.arms[a].vectors) for a in ("image", "text")}
                        | {"colour": Embeddings(ids, np.abs(rec.arms["image"].vectors))})
    t3 = names.mode_titles(three, models)
    assert t3["fused"] == "fused (z-scored, equal weights, image+text+colour)" != t["fused"]
    assert t3["colour"] == "colour (foreground colour histogram)"
    assert names.model_name(models["learned"]) == "supervised on articleType, baseColour"
    assert names.model_name({"training": {"config": {"positives": "two views"}}}) == "label-free: two views"
    assert names.score_label(rec, "fused") == "weighted cosine" and names.score_label(three, "fused") == "z-score sum"
    assert names.score_label(rec, "image") == "cosine" and names.score_label(rec, "rrf") == "RRF score"
    line = names.model_lines({"text": {"model_id": "x/y", "dim": 3, "cache": "hit",
                                       "weight_source": f"pypi:y ({sys.prefix}/lib/site-packages/y)"},
                              "learned": {"model_id": "learned/k", "dim": 2, "weight_source":
                                          "store:/root/.cache/prodrec/store/learned/85f2"}})
    assert not any("/root" in s or sys.prefix in s for s in line) and "pypi:y;" in line[0] and "store:85f2" in line[1]


def test_paper_note_names_the_models_that_ran() -> None:
    stand_in = report.paper_note({"image": {"model_id": "efficientnet-lite0/imagenet"},
                                  "text": {"model_id": "sentence-transformers/all-MiniLM-L6-v2"}})
    assert "published example galleries, not numbers" in stand_in and "qualitative" in stand_in
    assert "EfficientNet-Lite0 instead of ResNet-50" in stand_in and "all-MiniLM-L6-v2 instead of bert-base" in stand_in
    assert "Kaggle kernel" in stand_in
    paper = report.paper_note({"image": {"model_id": "resnet50/imagenet"},
                               "text": {"model_id": "sentence-transformers/bert-base-nli-mean-tokens"}})
    assert "instead of" not in paper and "uses the paper's ResNet-50" in paper
    text_only = report.paper_note({"text": {"model_id": "sentence-transformers/all-MiniLM-L6-v2"}})
    assert "ResNet-50" not in text_only


def test_describe_withheld_says_what_was_removed() -> None:
    s = report.describe_withheld({"withheld_fields": ["articleType", "baseColour"],
                                  "masked_label_values": {"articleType": 1200, "baseColour": 3400}})
    assert "articleType, baseColour" in s and "4,600 value(s) masked" in s and "baseColour 3,400" in s
    assert "every text field" in report.describe_withheld({"withheld_fields": []})


def test_beyond_findings_tune_on_validation_and_name_the_learned_supervision() -> None:
    rec, labels = planted()
    ids = rec.ids
    learned = np.hstack([rec.arms["image"].vectors, rec.arms["text"].vectors])
    three = Recommender({"image": Embeddings(ids, rec.arms["image"].vectors),
                         "text": Embeddings(ids, rec.arms["text"].vectors),
                         "learned": Embeddings(ids, learned)}, weights={"image": 1, "text": 1})
    split = split_queries(ids, seed=0)
    res, sc = evaluate(three, labels, k=5, columns=LABELS, queries=split.test, return_scores=True, progress=False,
                       n_boot=100)
    sweep = weight_sweep(three, labels, weight_grid(["image", "text"], 0.25), k=5,
                         columns=["articleType", "baseColour"], split=split, progress=False)
    sig = compare_modes(sc.per_query).assign(protocol="full")
    titles = {"learned": "learned (supervised on articleType, baseColour)", "fused": "fused (z-scored)"}
    f = report.beyond_findings(res, sweep.assign(protocol="full"), scores={"full": sc}, significance=sig,
                               titles=titles, learned_on=["articleType", "baseColour"])
    text = f.markdown
    assert "Learned arm (full): learned (supervised on articleType, baseColour)" in text
    assert "the two labels of this trade-off" in text and "validation queries, read on" in text
    metrics = res.assign(protocol="full").to_dict(orient="records")
    assert check_findings(f.to_dict(), metrics, sig.to_dict(orient="records"), protocol="full") >= 2
    assert any(c.label_a == "gender" for c in f.claims)  # the label it was not trained on is reported
    old = report.describe_beyond(res, sweep[sweep.split == "test"].drop(columns=["split", "n_queries"]))
    assert "not held out" in old and "no fixed weighting gets both" not in old


def test_per_category_table_and_worst_queries_by_hand() -> None:
    rec, labels = planted()
    _, sc = evaluate(rec, labels, k=5, columns=LABELS, return_scores=True, progress=False, n_boot=20)
    t = report.per_category_table(sc, labels, "articleType", top=3, n_boot=50)
    lab = labels.articleType.reindex(rec.ids.astype(int)).to_numpy()
    top = pd.Series(lab).value_counts().head(3)
    assert list(t.index) == list(top.index) and t["queries"].tolist() == top.tolist()
    v = sc.per_query[("image", "precision", "articleType")]
    for cat in top.index:
        assert t.loc[cat, "image"].startswith(f"{v[lab == cat].mean():.2f} [")
    w = report.worst_queries(sc, labels, "text", "articleType", n=4)
    tv = sc.per_query[("text", "precision", "articleType")]
    assert w["value"].tolist() == sorted(tv)[:4] and w["value"].is_monotonic_increasing
    ties = w[w["value"] == w["value"].iloc[0]]
    assert ties["class_size"].is_monotonic_decreasing


# ------------------------------------------------------------------------------------ clean outputs, CLI
def test_clean_outputs_drops_bars_repeats_and_paths(tmp_path: Path) -> None:
    warn = "WARNING prodrec.embed.encoders: image model auto: resnet50 unavailable\n"
    py_warn = "/x/composed.py:161: RuntimeWarning: Mean of empty slice\n  return float(np.nanmean(v))\n"
    nb = {"cells": [
        {"cell_type": "code", "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {
                "application/vnd.jupyter.widget-view+json": {"model_id": "x"},
                "text/plain": "evaluate modes:   0%|          | 0/6 [00:00<?, ?it/s]"}},
            {"output_type": "stream", "name": "stderr", "text": warn},
            {"output_type": "stream", "name": "stdout",
             "text": f"weights pypi:x ({sys.prefix}/lib/x)\nout {tmp_path}/metrics/a.json\n"}]},
        {"cell_type": "code", "outputs": [
            {"output_type": "stream", "name": "stderr", "text": warn + "bar  10%|#  | 1/10\rbar 100%|###| 10/10\n"},
            {"output_type": "stream", "name": "stdout", "text": "kept line\n"}]},
        {"cell_type": "code", "outputs": [
            {"output_type": "stream", "name": "stderr", "text": py_warn},
            {"output_type": "stream", "name": "stderr", "text": py_warn}]},
        {"cell_type": "markdown", "source": "x"}]}
    assert clean_outputs(nb, tmp_path) >= 4
    first, second = nb["cells"][0]["outputs"], nb["cells"][1]["outputs"]
    assert [o["output_type"] for o in first] == ["stream", "stream"]  # the widget bar is gone
    assert first[0]["text"] == warn and second == [{"output_type": "stream", "name": "stdout", "text": "kept line\n"}]
    text = first[1]["text"]
    assert sys.prefix not in text and str(tmp_path) not in text and "<out>/metrics/a.json" in text
    assert [o["text"] for o in nb["cells"][2]["outputs"]] == [py_warn]  # a Python warning, once, with its source


def test_cli_evaluate_says_which_queries_tuned_what(demo_dir: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    args = ["evaluate", "--data", str(demo_dir), "--n", "40", "--arms", "colour,image", "--image-model",
            "efficientnet-lite0", "--no-learned", "--store", str(tmp_path / "store"), "--quiet", "--n-boot", "50"]
    assert main([*args, "--tune", "weights"]) == 0
    text = capsys.readouterr().out
    assert "tuned on validation queries: weights" in text and "20 validation and 20 test queries" in text
    assert "every row below is scored on the 20 test queries" in text and "fused_tuned" in text
    assert re.search(r"\d\.\d{3} \[\d\.\d\d, \d\.\d\d\]", text)  # intervals printed
    assert main([*args, "--json", "--tune", "weights"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["tuning"]["split"] == {"validation": 20, "test": 20, "seed": 0, "fraction": 0.5}
    rows = pd.DataFrame(out["results"])
    assert set(rows[rows.metric == "precision"].n_queries) <= {20} | set(rows[rows["mode"] == "random"].n_queries)
    assert main(args) == 0
    assert "nothing was tuned on them" in capsys.readouterr().out
    assert main([*args, "--tune", "alpha"]) == 2  # the paper's alpha needs the image and text arms
    assert "tuning alpha needs the image and text arms" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ heads without labels
def test_a_label_free_head_learns_from_two_copies_of_each_product() -> None:
    pytest.importorskip("torch")
    from prodrec.embed.learned import train_head

    rng = np.random.default_rng(0)
    n = 256
    types = rng.integers(0, 4, n)
    x = {"image": rng.normal(size=(4, 24))[types] + 0.3 * rng.normal(size=(n, 24)),
         "text": rng.normal(size=(n, 12))}
    ids = [f"p{i}" for i in range(n)]
    head = train_head(x, None, ids=ids, views=0.3, epochs=15, batch_size=64, seed=1, out_dim=16, hidden=32,
                      progress=False)  # no labels at all
    assert head.config["positives"].startswith("two copies of each product, 30%")
    assert names.model_name({"training": {"config": head.config}}).startswith("label-free: two copies")
    again = train_head(x, pd.DataFrame({"ignored": ["a"] * n}, index=ids), ids=ids, views=0.3, epochs=15,
                       batch_size=64, seed=1, out_dim=16, hidden=32, progress=False)
    np.testing.assert_array_equal(head.transform(x), again.transform(x))  # seeded; labels are not read
    # the loss falls, and a product's corrupted copy finds the product itself among its nearest
    assert head.loss_curve[-1] < head.loss_curve[0]
    noisy = {a: v + 0.05 * rng.normal(size=v.shape) for a, v in x.items()}
    z, zn = head.transform(x), head.transform(noisy)
    assert float(((zn @ z.T).argmax(axis=1) == np.arange(n)).mean()) > 0.5
    for bad in (0.0, 1.0, -0.2):
        with pytest.raises(ConfigError, match="views"):
            train_head(x, None, ids=ids, views=bad, epochs=1, progress=False)


@pytest.mark.parametrize("name", ["heads.json"])
def test_stored_benchmark_findings_say_what_their_numbers_show(name: str) -> None:
    """The stored result notebook 06 shows (``python -m benchmarks --only heads``): its generated words read
    back against its own rows and paired tests."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / name
    if not path.is_file():
        pytest.skip(f"no stored {name} in this checkout")
    data = json.loads(path.read_text())["data"]
    findings = {"findings": data["findings"], "titles": data["titles"], "claims": data.get("claims", [])}
    assert check_findings(findings, data["rows"], data["significance"]) >= 6
