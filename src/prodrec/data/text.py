"""Product sentences: one line of text per product, built from its metadata (the paper's text input)."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from ..core.errors import CatalogError
from .schema import KAGGLE_TEXT_COLUMNS

#: The paper's order: product name, gender, categories, article type, colour, season, year, usage.
DEFAULT_FIELDS: tuple[str, ...] = KAGGLE_TEXT_COLUMNS


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
    ``df`` raise a :class:`~prodrec.errors.CatalogError` naming them. A product whose fields are all
    missing gets ``""``. ``fields=None`` uses the paper's fields that ``df`` has.
    """
    fields = tuple([f for f in DEFAULT_FIELDS if f in df.columns] if fields is None else fields)
    missing = [f for f in fields if f not in df.columns]
    if missing:
        raise CatalogError(f"sentence field(s) {missing} not in the catalog columns {list(df.columns)}")
    columns = [df[f].tolist() for f in fields]
    return [sep.join(t for t in (_clean(v) for v in row) if t) for row in zip(*columns)]
