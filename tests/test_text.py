"""Product sentences (the paper's text input): order, NaN safety (pandas 3 keeps NaN through astype(str))."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from prodrec.core.errors import CatalogError
from prodrec.data.text import DEFAULT_FIELDS, product_sentences


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
