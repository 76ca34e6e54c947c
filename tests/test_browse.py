"""The widget browser driven from Python: search, random, click-to-query, modes, filter, k (issue 4)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from prodrec import load_catalog
from prodrec.viz.browse import Browser, thumbnail_jpeg
from prodrec.rank.recommender import Recommender
from prodrec.embed.vectors import Embeddings

pytest.importorskip("ipywidgets")


@pytest.fixture(scope="module")
def browser(demo_dir: Path) -> Browser:
    cat = load_catalog(demo_dir)
    rng = np.random.default_rng(0)
    img = Embeddings(cat.ids, rng.normal(size=(len(cat), 16)))
    txt = Embeddings(cat.ids, rng.normal(size=(len(cat), 8)))
    return Browser(Recommender({"image": img, "text": txt}), cat, k=5)


def captions(b: Browser) -> list[str]:
    return [t.children[1].value for row in b.grid.children for t in row.children[1:]]


def test_initial_grid_and_search(browser: Browser) -> None:
    assert len(browser.grid.children) == 1 and len(browser.grid.children[0].children) == 6
    before = captions(browser)
    name = str(browser.labels.loc["90013", "productDisplayName"])
    found = browser.search(name.upper())  # case-insensitive
    assert found[0] == "90013" and browser.query_id == "90013"
    assert browser.matches.value == "90013" and captions(browser) != before
    assert "90013" in browser.status.value and "ms" in browser.status.value
    assert browser.search("90013")[0] == "90013"
    browser.search("no such product")
    assert "no product matches" in browser.status.value and browser.query_id == "90013"


def test_click_tile_random_modes_filter_k(browser: Browser) -> None:
    browser.show_query("90000")
    first = browser.grid.children[0].children[1]
    rec_id = browser.rec.recommend("90000", 5, browser.mode.value, browser.alpha.value)["id"].iloc[0]
    first.children[2].click()  # "use as query" under the first recommendation
    assert browser.query_id == rec_id
    browser.random_button.click()
    assert browser.query_id in set(browser.rec.ids.tolist())
    browser.mode.value = "all"
    assert len(browser.grid.children) == 3
    browser.k.value = 3
    assert all(len(row.children) == 4 for row in browser.grid.children)
    browser.filter.value = "gender"
    q = browser.labels.loc[browser.query_id, "gender"]
    shown = [d["id"] for d in browser.compute().values()]
    assert all((browser.labels.loc[ids, "gender"] == q).all() for ids in shown)
    browser.mode.value, browser.k.value, browser.filter.value = "fused", 5, "none"


def test_thumbnails_cached_and_bad_files_grey(tmp_path: Path) -> None:
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    a = thumbnail_jpeg(str(tmp_path / "bad.jpg"), 32)
    assert a[:2] == b"\xff\xd8" and thumbnail_jpeg(str(tmp_path / "bad.jpg"), 32) is a


def test_generic_catalog_ids_with_upper_case_and_captions(generic_dir: Path) -> None:
    cat = load_catalog(generic_dir / "items.csv", id_column="sku", image_column="photo", label_columns="category,colour")
    rng = np.random.default_rng(1)
    b = Browser(Recommender({"image": Embeddings(cat.ids, rng.normal(size=(len(cat), 4)))}), cat, k=3)
    assert b.search("sku-0004")[0] == "SKU-0004"  # ids match case-insensitively
    assert b.search("0015970")[0] == "0015970" and b.search("007")[0] == "007"
    assert list(b.mode.options) == ["image"] and list(b.filter.options) == ["none", "category", "colour"]
    assert "Red shoe no. 1 | shoe | Red" in b.status.value  # captions from the catalog's own columns
    first = b.rec.recommend("007", 3, "image")["id"].iloc[0]
    assert f">{cat.row(first)['title']}<" in captions(b)[0]


def test_three_arms_get_a_weight_slider_each(demo_dir: Path) -> None:
    """Beyond the paper's two arms the alpha slider gives way to per-arm weights, and they move the ranking."""
    cat = load_catalog(demo_dir)
    rng = np.random.default_rng(1)
    arms = {a: Embeddings(cat.ids, rng.normal(size=(len(cat), 8))) for a in ("image", "text", "colour")}
    b = Browser(Recommender(arms), cat, k=5, mode="fused")
    assert set(b.arm_weights) == {"image", "text", "colour"} and b.alpha.layout.display == "none"
    assert "colour" in b.mode.options
    b.arm_weights["image"].value, b.arm_weights["text"].value, b.arm_weights["colour"].value = 0.0, 0.0, 1.0
    only_colour = b.compute()["fused"]["id"].tolist()
    assert only_colour == b.rec.recommend(b.query_id, k=5, mode="colour")["id"].tolist()
    b.arm_weights["colour"].value, b.arm_weights["image"].value = 0.0, 1.0
    assert b.compute()["fused"]["id"].tolist() == b.rec.recommend(b.query_id, k=5, mode="image")["id"].tolist()


def test_like_dislike_and_refine(demo_dir: Path) -> None:
    """Like/dislike under each tile, then refine: the list is re-ranked as Recommender.query ranks it, with
    the refine box's modifier placed by the composer; clearing brings the query's own list back."""
    from prodrec.data.text import product_sentences
    from prodrec.rank.compose import Composer, Prototypes
    from prodrec.rank.search import Searcher
    from test_search import BagOfWords

    cat = load_catalog(demo_dir)
    enc = BagOfWords()
    rng = np.random.default_rng(0)
    img = Embeddings(cat.ids, rng.normal(size=(len(cat), 16)))
    txt = Embeddings(cat.ids, enc.encode(product_sentences(cat.df, cat.text_columns)))
    rec = Recommender({"image": img, "text": txt})
    composer = Composer(Searcher(rec, cat, lambda arm: enc), Prototypes.fit({"image": img}, cat.labels, ["baseColour"]))
    b = Browser(rec, cat, k=5, composer=composer)
    b.show_query("90000")
    tiles = b.grid.children[0].children[1:]
    first, second = tiles[0]._prodrec_id, tiles[1]._prodrec_id
    tiles[0].children[3].children[0].click()  # like the first recommendation
    tiles[1].children[3].children[1].click()  # dislike the second
    assert b.liked == [first] and b.disliked == [second]
    assert tiles[0].children[3].children[0].button_style == "success"
    assert tiles[1].children[3].children[1].button_style == "danger"
    b.refine_button.click()
    want = rec.query(["90000", first], [second], None, rec.fusion_weights(alpha=b.alpha.value), 5)
    assert b.refined["id"].tolist() == want["id"].tolist() == [t._prodrec_id for t in b.grid.children[0].children[1:]]
    assert "REFINED" in b.grid.children[0].children[0].children[1].value and "like 1, dislike 1" in b.status.value
    b.refine_box.value = "in Red"  # submitting the box refines with the modifier
    want = rec.query(["90000", first], [second], composer("in Red"), rec.fusion_weights(alpha=b.alpha.value), 5)
    assert b.refined["id"].tolist() == want["id"].tolist()
    assert "prototype baseColour=Red" in b.status.value and "text model" in b.status.value
    b.k.value = 3  # a changed control re-ranks the refined list
    assert len(b.refined) == 3 and len(b.grid.children[0].children) == 4
    b.like(first)  # a second click unmarks
    assert b.liked == []
    b.clear_feedback()
    assert b.refined is None and b.refine_box.value == "" and b.disliked == []
    assert [t._prodrec_id for t in b.grid.children[0].children[1:]] == rec.recommend("90000", 3, "fused", b.alpha.value)["id"].tolist()
    b.refine_box.value = "zzz unknown"  # the text arm still places it; a bad k is shown, never raised
    b.k.value = 5
    b2 = Browser(Recommender({"image": img}), cat, k=5)
    b2.refine_box.value = "in red"
    assert "needs an arm that reads text" in b2.status.value
