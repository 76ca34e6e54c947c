"""Composed and feedback queries (issue 21, item 3): Rocchio per arm on the fusion's scale, text modifiers
through text arms and label prototypes, the Recommender.query API and the recommend CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from prodrec import load_catalog
from prodrec.core.errors import ConfigError, RankingError, UnknownIdError
from prodrec.data.text import product_sentences
from prodrec.embed.vectors import Embeddings
from prodrec.rank.compose import Composer, Modifier, Prototypes, part_scores, rocchio_scores
from prodrec.rank.fusion import zscore
from prodrec.rank.recommender import Recommender
from prodrec.rank.search import Searcher

from test_search import BagOfWords

COLOURS = ["Red", "Blue", "Navy Blue", "Black"]
KINDS = ["Shirts", "Jeans", "Watches"]


def synthetic(n: int = 240, seed: int = 0) -> tuple[pd.DataFrame, dict[str, Embeddings]]:
    """Products with a kind and a colour; the image arm sees the kind, the colour arm the colour (noisy)."""
    rng = np.random.default_rng(seed)
    ids = [f"p{i:04d}" for i in range(n)]
    kind = rng.integers(len(KINDS), size=n)
    colour = rng.integers(len(COLOURS), size=n)
    kind_c, colour_c = rng.normal(size=(len(KINDS), 12)), rng.normal(size=(len(COLOURS), 6))
    image = kind_c[kind] * 2 + rng.normal(size=(n, 12))
    col = colour_c[colour] * 2 + rng.normal(size=(n, 6))
    labels = pd.DataFrame({"articleType": np.array(KINDS)[kind], "baseColour": np.array(COLOURS)[colour]},
                          index=pd.Index(ids, name="id"))
    return labels, {"image": Embeddings(ids, image), "colour": Embeddings(ids, col)}


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_raw_rocchio_is_the_query_vector_formula() -> None:
    """Under raw calibration the scores are Rocchio's: (mean(P) - beta mean(N) + t m) . x per arm, weighted."""
    rng = np.random.default_rng(3)
    arms = {"a": unit(rng.normal(size=(30, 5))).astype(np.float32), "b": unit(rng.normal(size=(30, 4))).astype(np.float32)}
    pos, neg = np.array([1, 4]), np.array([7])
    mod = Modifier("m", {"b": unit(rng.normal(size=4)).astype(np.float32)}, {"b": "given"})
    score, parts = rocchio_scores(arms, pos, neg, mod, {"a": 3.0, "b": 1.0}, {"b": 0.7}, "raw", 0.25)
    expect = 0.75 * (arms["a"] @ (arms["a"][pos].mean(0) - 0.25 * arms["a"][neg].mean(0)))
    expect += 0.25 * (arms["b"] @ (arms["b"][pos].mean(0) - 0.25 * arms["b"][neg].mean(0))) + 0.7 * arms["b"] @ mod.vectors["b"]
    np.testing.assert_allclose(score, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(parts["a"] + parts["b"], score, rtol=1e-6, atol=1e-6)


def test_zscore_parts_are_standardised_per_part() -> None:
    rng = np.random.default_rng(4)
    x = unit(rng.normal(size=(50, 6))).astype(np.float32)
    got = part_scores(x, x[[2, 3]], "zscore")
    want = zscore((x[[2, 3]] @ x.T).astype(np.float32))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert abs(got.mean(axis=1)).max() < 1e-4 and np.allclose(got.std(axis=1), 1, atol=1e-3)


def test_one_liked_product_is_recommend() -> None:
    """A query of one liked product ranks exactly as recommend() does, fused (both calibrations) or one arm."""
    labels, embs = synthetic()
    for arms, cal in (({"image": embs["image"], "colour": embs["colour"]}, "zscore"),
                      ({"image": embs["image"], "text": embs["colour"]}, "raw")):
        rec = Recommender(arms, calibration="auto")
        assert rec.calibration == cal
        for mode in ("fused", *arms):
            w = None if mode == "fused" else {a: float(a == mode) for a in arms}
            got = rec.query(["p0007"], weights=w, k=8)
            want = rec.recommend("p0007", k=8, mode=mode)
            assert got["id"].tolist() == want["id"].tolist(), (cal, mode)
            if mode == "fused":  # one arm's query scores are on the fusion's scale, recommend's are cosines
                np.testing.assert_allclose(got["score"], want["score"], rtol=1e-4, atol=1e-5)


def test_feedback_moves_the_list() -> None:
    """Liking a second product pulls the list towards it; disliking one pushes its look-alikes out."""
    labels, embs = synthetic()
    rec = Recommender(embs)
    red = labels.index[(labels.baseColour == "Red") & (labels.articleType == "Shirts")][0]
    blue = labels.index[(labels.baseColour == "Blue") & (labels.articleType == "Shirts")][0]
    black = labels.index[labels.baseColour == "Black"][0]
    base = rec.query([red], k=10)
    both = rec.query([red, blue], k=10)
    share = lambda df, c: float((labels.loc[df["id"], "baseColour"] == c).mean())  # noqa: E731
    near_blue = lambda df: float((rec.arm("colour").vectors[rec.positions(df["id"])]  # noqa: E731
                                  @ rec.arm("colour").vectors[rec.positions([blue])[0]]).mean())
    assert near_blue(both) > near_blue(base) + 0.2 and share(both, "Red") < share(base, "Red")
    away = rec.query([red], [black], k=10, negative_weight=1.0)
    assert share(away, "Black") <= share(base, "Black") and black not in away["id"].tolist()
    assert red not in both["id"].tolist() and blue not in both["id"].tolist()  # the given are never recommended
    assert set(both.columns) >= {"rank", "id", "score", "image_score", "colour_score"}


def test_prototypes_fit_match_and_place_a_colour_word() -> None:
    labels, embs = synthetic(400)
    inside, outside = labels.index[:200], labels.index[200:]
    sub = {a: Embeddings(e.ids[200:], e.vectors[200:]) for a, e in embs.items()}
    protos = Prototypes.fit(sub, labels, ["articleType", "baseColour"], min_count=5)
    assert protos.overlap(inside) == 0 and protos.overlap(outside) == 200
    assert protos.match("something in NAVY blue") == [("baseColour", "Navy Blue")]  # longest value first
    assert protos.match("red shirts") == [("baseColour", "Red"), ("articleType", "Shirts")]
    assert protos.match("green") == []
    # the prototype is the normalised mean of the unit vectors of the products with the value
    x = unit(embs["colour"].vectors[200:])
    red = (labels.loc[outside, "baseColour"] == "Red").to_numpy()
    np.testing.assert_allclose(protos.vector("colour", "baseColour", "Red"), unit(x[red].mean(0)), rtol=1e-5)
    rec = Recommender({a: Embeddings(e.ids[:200], e.vectors[:200]) for a, e in embs.items()})
    mod = Composer(None, protos, prototype_arms=["colour"])("in red")
    assert mod.arms == ["colour"] and mod.sources["colour"] == "prototype baseColour=Red"
    top = rec.query(text=mod, k=10)
    assert (labels.loc[top["id"], "baseColour"] == "Red").mean() >= 0.8
    # X + "red": same kind as X, in red
    x_id = labels.index[:200][(labels.baseColour[:200] == "Blue") & (labels.articleType[:200] == "Jeans")][0]
    comp = rec.query([x_id], text=mod, weights={"image": 1, "colour": 0}, text_weights={"colour": 1.0}, k=5)
    hit = (labels.loc[comp["id"], "articleType"] == "Jeans") & (labels.loc[comp["id"], "baseColour"] == "Red")
    alone = rec.query([x_id], k=5)
    hit_alone = (labels.loc[alone["id"], "articleType"] == "Jeans") & (labels.loc[alone["id"], "baseColour"] == "Red")
    assert hit.mean() >= 0.6 > hit_alone.mean()
    with pytest.raises(ConfigError, match="no prototype of baseColour='Green'"):
        protos.vector("colour", "baseColour", "Green")
    with pytest.raises(ConfigError, match="not label columns"):
        Prototypes.fit(sub, labels, ["season"])


def test_near_prototypes_by_hand_through_the_composer_and_the_query() -> None:
    labels, embs = synthetic(400)
    sub = {a: Embeddings(e.ids[200:], e.vectors[200:]) for a, e in embs.items()}
    protos = Prototypes.fit(sub, labels, ["baseColour"], min_count=5, members=True)
    assert list(protos.fitted_ids) == sorted(map(str, embs["image"].ids[200:]))
    rec = Recommender({a: Embeddings(e.ids[:200], e.vectors[:200]) for a, e in embs.items()})
    lab = labels.iloc[:200]
    x_id = lab.index[(lab.baseColour == "Blue") & (lab.articleType == "Jeans")][0]
    like = {"image": rec.arms["image"].vectors[rec.positions([x_id])[0]]}
    # by hand: the 4 red products outside the sample whose image is most like X's, their mean per arm
    order = np.argsort(sub["image"].ids.astype(str))
    img, col = unit(sub["image"].vectors[order]), unit(sub["colour"].vectors[order])
    red = np.flatnonzero(labels.loc[sub["image"].ids.astype(str)[order], "baseColour"].to_numpy() == "Red")
    best = red[np.argsort(-(img[red] @ unit(like["image"])), kind="stable")[:4]]
    near = protos.near("baseColour", "Red", like, n=4)
    np.testing.assert_allclose(near["image"], unit(img[best].mean(0)), atol=1e-5)
    np.testing.assert_allclose(near["colour"], unit(col[best].mean(0)), atol=1e-5)
    # the composer places the word through them when the query has liked products
    composer = Composer(None, protos, near=["image"], n_near=4)
    mod = composer("in red", like=like)
    np.testing.assert_allclose(mod.vectors["colour"], near["colour"], atol=1e-6)
    assert mod.sources["image"] == "near prototype (4 nearest by image) baseColour=Red"
    assert composer("in red").sources["image"] == "prototype baseColour=Red"  # nothing liked: plain ones
    # Recommender.query hands the liked product's vectors to the composer
    got = rec.query([x_id], text="in red", embed=composer, k=5)
    want = rec.query([x_id], text=Modifier("in red", near), k=5)
    assert got["id"].tolist() == want["id"].tolist()
    # X + "red": red jeans, the colour arm's near prototype still red
    w, t = {"image": 1, "colour": 0}, {"colour": 1.0, "image": 0.0}
    near_top = rec.query([x_id], text="in red", embed=composer, weights=w, text_weights=t, k=5)
    hit = (labels.loc[near_top["id"], "articleType"] == "Jeans") & (labels.loc[near_top["id"], "baseColour"] == "Red")
    assert hit.mean() >= 0.6
    with pytest.raises(ConfigError, match="members=True"):
        Composer(None, Prototypes.fit(sub, labels, ["baseColour"]), near=["image"])
    with pytest.raises(ConfigError, match="members=True"):
        Prototypes.fit(sub, labels, ["baseColour"]).near("baseColour", "Red", like)
    with pytest.raises(ConfigError, match=r"arm\(s\) \['text'\] have no prototypes"):
        Composer(None, protos, near=["text"])
    with pytest.raises(ConfigError, match="choose their members in arms the prototypes have"):
        protos.near("baseColour", "Red", {"text": like["image"]})
    with pytest.raises(ConfigError, match="no prototype of baseColour='Green'"):
        protos.near("baseColour", "Green", like)


def test_composer_embeds_with_text_arms_and_maps_the_rest(demo_dir: Path) -> None:
    cat = load_catalog(demo_dir)
    enc = BagOfWords()
    text = Embeddings(cat.ids, enc.encode(product_sentences(cat.df, cat.text_columns)))
    image = Embeddings(cat.ids, np.random.default_rng(0).normal(size=(len(cat), 8)))
    rec = Recommender({"image": image, "text": text})
    searcher = Searcher(rec, cat, lambda arm: enc)
    protos = Prototypes.fit({"image": image}, cat.labels, ["baseColour"])
    composer = Composer(searcher, protos)
    mod = composer("in Red")
    assert mod.sources == {"text": "text model", "image": "prototype baseColour=Red"}
    np.testing.assert_allclose(mod.vectors["text"], searcher.embed(["in Red"], "text")[0], rtol=1e-6)
    # the text arm alone finds red products when the colour is in the sentence
    top = rec.query(text=mod, weights={"image": 0, "text": 1}, k=5)
    assert (cat.labels.loc[top["id"], "baseColour"] == "Red").mean() >= 0.6
    # a string is placed by embed=; without it the error names the fix
    assert rec.query(["90000"], text="in red", embed=composer, k=3)["id"].tolist() == \
        rec.query(["90000"], text=composer("in red"), k=3)["id"].tolist()
    with pytest.raises(ConfigError, match="embed=Composer"):
        rec.query(["90000"], text="in red")
    assert Composer(searcher, None)("blue").arms == ["text"]
    with pytest.raises(ConfigError, match="needs an arm that embeds text"):
        Composer(None, None)


def test_query_errors_are_clear() -> None:
    labels, embs = synthetic(60)
    rec = Recommender(embs)
    with pytest.raises(RankingError, match="needs a liked product"):
        rec.query()
    with pytest.raises(RankingError, match="both liked and disliked"):
        rec.query(["p0001"], ["p0001"])
    with pytest.raises(UnknownIdError):
        rec.query(["nope"])
    with pytest.raises(RankingError, match="negative_weight"):
        rec.query(["p0001"], ["p0002"], negative_weight=-1)
    with pytest.raises(RankingError, match="only 58 products can be recommended"):
        rec.query(["p0001"], ["p0002"], k=59)
    with pytest.raises(RankingError, match="lacks"):
        rec.query(["p0001"], text={"text": np.ones(3)})
    with pytest.raises(RankingError, match="text_weights name arm"):
        rec.query(["p0001"], text={"colour": np.ones(6)}, text_weights={"clip": 1.0})
    allowed = (labels.loc[rec.ids, "articleType"] == "Watches").to_numpy()
    got = rec.query(["p0001"], k=5, allowed=allowed)
    assert (labels.loc[got["id"], "articleType"] == "Watches").all()


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "prodrec.run.cli", *args], capture_output=True, text=True)


@pytest.mark.slow
def test_recommend_cli_composed_query(demo_dir: Path, tmp_path: Path) -> None:
    common = ["--data", str(demo_dir), "--image-model", "efficientnet-lite0", "--text-model", "auto",
              "--store", str(tmp_path / "store"), "--quiet"]
    single = run_cli("recommend", *common, "--id", "90000", "-k", "3", "--json")
    assert single.returncode == 0, single.stderr
    one = json.loads(single.stdout)
    assert one["query"]["id"] == "90000" and len(one["recommendations"]) == 3  # the single-id output is kept
    out = run_cli("recommend", *common, "--id", "90000", "--id", "90001", "--not", "90002", "--text", "in red",
                  "-k", "5", "--json", "--out", str(tmp_path / "o"))
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["query"]["positive"] == ["90000", "90001"] and res["query"]["negative"] == ["90002"]
    assert res["query"]["placed"]["text"] == "text model"
    assert res["query"]["placed"]["image"].startswith("prototype baseColour=Red")
    ids = [r["id"] for r in res["recommendations"]]
    assert len(ids) == 5 and not {"90000", "90001", "90002"} & set(ids)
    assert (tmp_path / "o" / "recommend-composed-90000-fused.json").is_file()
    text = run_cli("recommend", *common, "--id", "90000", "--text", "in red", "-k", "3")
    assert text.returncode == 0 and "query: like 90000; text 'in red'" in text.stdout
    bad = run_cli("recommend", *common, "--id", "90000", "--not", "90000")
    assert bad.returncode == 2 and "both --id and --not" in bad.stderr
    rrf = run_cli("recommend", *common, "--id", "90000", "--id", "90001", "--mode", "rrf")
    assert rrf.returncode == 2 and "ranked by fused scores" in rrf.stderr
