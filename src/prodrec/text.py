"""Product sentences: one line of text per product, built from its metadata (the paper's text input)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

#: The paper's order: product name, gender, categories, article type, colour, season, year, usage.
DEFAULT_FIELDS: tuple[str, ...] = (
    "productDisplayName",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
)


def _clean(value: object) -> str:
    """A field as text; NaN, None, pd.NA and blank strings become ''."""
    if value is None or value is pd.NA:
        return ""
    try:
        if pd.isna(value):
            return ""
    except (TypeError, ValueError):
        pass
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a year read as 2011.0 reads as 2011
    return " ".join(str(value).split())


def product_sentences(
    df: pd.DataFrame, fields: Sequence[str] | None = None, sep: str = " "
) -> list[str]:
    """One sentence per row of ``df``: the non-missing ``fields`` joined by ``sep``, in order.

    Missing values (NaN, None, empty) are left out rather than written as ``"nan"``. Fields absent from
    ``df`` raise a ``KeyError`` naming them. A product whose fields are all missing gets ``""``.
    """
    fields = tuple(fields or [f for f in DEFAULT_FIELDS if f in df.columns])
    missing = [f for f in fields if f not in df.columns]
    if missing:
        raise KeyError(f"sentence field(s) {missing} not in the catalog columns {list(df.columns)}")
    columns = [df[f].tolist() for f in fields]
    return [sep.join(t for t in (_clean(v) for v in row) if t) for row in zip(*columns)]
