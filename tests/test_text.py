"""Product sentences (the paper's text input): order, NaN safety (pandas 3 keeps NaN through astype(str))."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from shop_export import FLAGS, pid, write_export

from prodrec.core.errors import CatalogError, ConfigError
from prodrec.data.catalog import load_catalog
from prodrec.data.text import (DEFAULT_FIELDS, LabelMask, clean_markup, clean_text_columns, has_markup,
                               product_sentences)
from prodrec.run.experiment import build_experiment


def test_paper_order_and_year_as_integer() -> None:
    df = pd.DataFrame({"productDisplayName": ["Blue Tee"], "gender": ["Men"], "masterCategory": ["Apparel"],
                       "subCategory": ["Topwear"], "articleType": ["Tshirts"], "baseColour": ["Blue"],
                       "season": ["Summer"], "year": [2012.0], "usage": ["Casual"]})
    assert list(DEFAULT_FIELDS)[:2] == ["productDisplayName", "gender"]
    assert product_sentences(df) == ["Blue Tee Men Apparel Topwear Tshirts Blue Summer 2012 Casual"]


def test_nan_none_na_and_blank_are_left_out() -> None:
    df = pd.DataFrame({"a": ["x", np.nan, None, "  ", "y"], "b": [pd.NA, "z", "w", "v", "  two   spaces "]},
                      dtype="object")
    df["year"] = pd.array([2011, None, 2013, None, 2015], dtype="Int64")
    out = product_sentences(df, ["a", "b", "year"])
    assert out == ["x 2011", "z", "w 2013", "v", "y two spaces 2015"]
    assert not any("nan" in s.lower() or "<na>" in s.lower() for s in out)
    # a str-dtype column (pandas' new default string type) keeps NaN as missing too
    s = pd.DataFrame({"a": pd.Series(["p", None], dtype="string")})
    assert product_sentences(s, ["a"]) == ["p", ""]


def test_custom_fields_order_and_errors() -> None:
    df = pd.DataFrame({"colour": ["Red"], "name": ["Mug"]})
    assert product_sentences(df, ["colour", "name"], sep=", ") == ["Red, Mug"]
    with pytest.raises(CatalogError, match="nope"):
        product_sentences(df, ["nope"])


# --------------------------------------------------------------------------- text as users write it (issue 18)
def test_markup_becomes_plain_text() -> None:
    html = ("<p>Skirt &amp; top,&nbsp;<b>cotton</b></p>\n<ul><li>Colour: Blue</li><li>Type: Skirts</li></ul>"
            "<script>track()</script>&#233;t&#xE9;")
    assert has_markup(html) and not has_markup("Tom & Jerry < 3 > 2")
    assert clean_markup(html) == "Skirt & top, cotton Colour: Blue Type: Skirts été"
    assert clean_markup("Tom & Jerry") == "Tom & Jerry"


@pytest.mark.parametrize("how, expected", [
    ("auto", ["Red & blue", "a < b", "x y"]),
    ("html", ["Red & blue", "a < b", "x y"]),
    ("none", ["Red &amp; blue", "a < b", "x<br>y"]),
])
def test_text_clean_modes(how: str, expected: list[str]) -> None:
    df = pd.DataFrame({"t": ["Red &amp; blue", "a < b", "x<br>y"], "n": [None, None, None]}, dtype=object)
    changed = clean_text_columns(df, ["t", "n"], how)
    assert df["t"].tolist() == expected
    assert changed == ({} if how == "none" else {"t": 2})
    with pytest.raises(ConfigError, match="did you mean 'html'"):
        clean_text_columns(df, ["t"], "htm")


def test_label_values_masked_as_whole_words_case_insensitive() -> None:
    df = pd.DataFrame({
        "desc": ["Colour: Blue. Type: skirts", "NAVY BLUE skirt, blueberry print", "plain", None],
        "colour": ["Blue", "Navy Blue", "Red", "Blue"],
        "type": ["Skirts", "Skirts", "Tops", "Tops"],
    }, dtype=object)
    mask = LabelMask.of(df, ["colour", "type"])
    out, counts = mask.apply(df, ["desc", "colour"])  # label columns themselves are left as they are
    assert out["desc"].tolist()[:3] == ["Colour: . Type:", "skirt, blueberry print", "plain"]
    assert pd.isna(out["desc"].iloc[3]) and out["colour"].tolist() == df["colour"].tolist()
    assert counts == {"colour": 2, "type": 1}  # "NAVY BLUE" is one value (matched before "Blue")
    assert df["desc"].iloc[0] == "Colour: Blue. Type: skirts"  # the input is not changed
    # independent check: no withheld value is left as a whole word in the masked text
    for text in out["desc"].dropna():
        words = text.lower().replace(",", " ").replace(".", " ").replace(":", " ").split()
        assert not {"blue", "skirts", "red", "tops"} & set(words)


@pytest.mark.slow
def test_withheld_text_arm_reads_masked_sentences(tmp_path: Path) -> None:
    """Under withheld, the text arm's vector of a product is the model's vector of its masked sentence."""
    write_export(tmp_path)
    cat = load_catalog(tmp_path / "products.parquet", **FLAGS)
    exp = build_experiment(catalog=cat, image_model=None, text_model="auto", protocol="withheld",
                           store_dir=tmp_path / "store", progress=False)
    assert exp.settings["masked_label_values"] == {"category": 24, "colour": 48}  # every product, photo or not
    assert exp.settings["text_fields"] == ["title", "description"]
    assert exp.catalog.row(pid(0))["description"] == "A fine skirt & more. Colour: Blue Type: Skirts"  # kept
    masked = cat.sentence(pid(0), ["title", "description"], LabelMask.of(cat.df, ["category", "colour"]))
    assert masked == "skirt no. 0 A fine skirt & more. Colour: Type:"
    enc = exp.encoder("text")
    want, plain = enc.encode([masked, cat.sentence(pid(0), ["title", "description"])], batch_size=2, progress=False)
    got = exp.text.vectors[list(exp.text.ids).index(pid(0))]
    assert float(got @ want) > 0.999 and float(got @ plain) < 0.99


def test_the_text_arm_embeds_each_distinct_sentence_once(tmp_path: Path) -> None:
    """Products with the same sentence share one model call per run, across the store's chunks; every
    product still gets the model's vector of its own sentence, and the store holds them all."""
    from prodrec.embed.embedding import embed_arm

    from test_search import BagOfWords

    class Counting(BagOfWords):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def encode(self, sentences: list[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
            self.seen.extend(sentences)
            return super().encode(sentences, batch_size, progress)

    titles = [f"shirt {i % 7}" for i in range(100)] + [f"unique {i}" for i in range(30)]
    df = pd.DataFrame({"id": [str(i) for i in range(130)], "title": titles, "category": "Shirts"})
    df.to_csv(tmp_path / "items.csv", index=False)
    cat = load_catalog(tmp_path / "items.csv", id_column="id", image_column=None, text_columns="title",
                       label_columns="category")
    enc = Counting()
    emb = embed_arm(cat, "text", encoder=enc, store=tmp_path / "store", chunk_size=64, progress=False)
    sentences = product_sentences(cat.df, ["title"])
    assert sorted(enc.seen) == sorted(set(sentences)) and len(enc.seen) == 7 + 30  # once each, over 3 chunks
    np.testing.assert_array_equal(emb.vectors, BagOfWords().encode(sentences))
    again = embed_arm(cat, "text", encoder=Counting(), store=tmp_path / "store", progress=False)
    assert again.meta["cache"] == "hit"
    np.testing.assert_array_equal(again.vectors, emb.vectors)
