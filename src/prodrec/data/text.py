"""Product sentences: one line of text per product, built from its metadata (the paper's text input).

Text as shops write it: :func:`clean_markup` turns HTML in a text column into the plain text a reader
sees (BeautifulSoup's parser: tags dropped, entities decoded, scripts and styles left out, whitespace
collapsed), and :class:`LabelMask` takes the evaluated label values out of free text under the
``withheld`` protocol (a description "Colour: Blue" would otherwise tell the text arm the colour).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from ..core.errors import CatalogError
from ..core.params import check_choice
from .schema import KAGGLE_TEXT_COLUMNS, TEXT_CLEAN

#: The paper's order: product name, gender, categories, article type, colour, season, year, usage.
DEFAULT_FIELDS: tuple[str, ...] = KAGGLE_TEXT_COLUMNS

#: A tag (``<p>``, ``</li>``, ``<br/>``, ``<a href=...>``) or an entity (``&amp;``, ``&#233;``, ``&#xE9;``).
_MARKUP = re.compile(r"</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>|&(?:#\d{1,7}|#[xX][0-9A-Fa-f]{1,6}|[A-Za-z]\w{1,31});")
_WORD = re.compile(r"\w+")


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


def has_markup(text: str) -> bool:
    """Whether ``text`` holds an HTML tag or entity."""
    return bool(_MARKUP.search(text))


def clean_markup(text: str) -> str:
    """``text`` as a reader sees it: tags dropped (block elements separate words), entities decoded,
    scripts and styles left out, whitespace (non-breaking spaces included) collapsed to single spaces."""
    from bs4 import BeautifulSoup, MarkupResemblesLocatorWarning  # here: most catalogs hold no markup (~0.4 s)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarkupResemblesLocatorWarning)  # a value that looks like a URL
        plain = BeautifulSoup(text, "html.parser").get_text(" ")
    return " ".join(plain.split())


def clean_text_columns(df: pd.DataFrame, columns: Iterable[str], how: str | None = "auto") -> dict[str, int]:
    """Make the markup in ``columns`` of ``df`` plain text, in place; return how many values changed per
    column (columns without any left out).

    ``how``: ``"auto"`` (default; None means it too) cleans the values that hold a tag or an entity,
    ``"html"`` parses every value, ``"none"`` changes nothing.
    """
    how = check_choice("text_clean", how or "auto", TEXT_CLEAN)
    changed: dict[str, int] = {}
    if how == "none":
        return changed
    for col in dict.fromkeys(columns):
        values = df[col].tolist()
        todo = [i for i, v in enumerate(values) if isinstance(v, str)
                and (how == "html" or (("<" in v or "&" in v) and has_markup(v)))]  # the cheap test first
        n = 0
        for i in todo:
            plain = clean_markup(values[i])
            n += plain != values[i]
            values[i] = plain
        if n:
            df[col] = pd.Series(values, index=df.index, dtype=object)
            changed[col] = n
    return changed


def has_text(df: pd.DataFrame, fields: Sequence[str]) -> pd.Series:
    """Whether each row has a non-blank value in any of ``fields`` (an empty product sentence otherwise)."""
    out = pd.Series(False, index=df.index)
    for f in fields:
        col = df[f]
        out |= col.notna() & (col.astype(object).map(lambda v: bool(str(v).strip())))
    return out


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


@dataclass(frozen=True)
class LabelMask:
    """The values of withheld label columns, to be taken out of free text (whole words, case-insensitive).

    Every value a label column takes in the catalog is masked, not only the product's own: a description
    that says "blue" tells the colour of a product labelled "Navy Blue" too. Multi-word values are matched
    as a whole first ("Navy Blue" before "Blue"). Build one with :meth:`of`.
    """

    columns: tuple[str, ...]
    #: Lower-cased words of each value -> the label column it belongs to.
    vocabulary: dict[tuple[str, ...], str] = field(default_factory=dict)
    longest: int = 0

    @classmethod
    def of(cls, df: pd.DataFrame, columns: Sequence[str]) -> LabelMask:
        """The mask of the values ``columns`` take in ``df``."""
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise CatalogError(f"cannot mask label column(s) {missing}: not in the catalog columns {list(df.columns)}")
        vocab: dict[tuple[str, ...], str] = {}
        for col in columns:
            for value in df[col].dropna().unique():
                words = tuple(w.lower() for w in _WORD.findall(str(value)))
                if words:
                    vocab.setdefault(words, col)
        return cls(tuple(columns), vocab, max((len(w) for w in vocab), default=0))

    def mask(self, text: str) -> tuple[str, list[str]]:
        """``text`` without the label values it holds, and the label column of each value taken out."""
        words = list(_WORD.finditer(text))
        if not words or not self.vocabulary:
            return text, []
        lowered = [w.group().lower() for w in words]
        cut: list[tuple[int, int]] = []
        hits: list[str] = []
        i = 0
        while i < len(words):
            for n in range(min(self.longest, len(words) - i), 0, -1):
                col = self.vocabulary.get(tuple(lowered[i : i + n]))
                if col is not None:
                    cut.append((words[i].start(), words[i + n - 1].end()))
                    hits.append(col)
                    i += n
                    break
            else:
                i += 1
        if not cut:
            return text, []
        kept, last = [], 0
        for start, end in cut:
            kept.append(text[last:start])
            last = end
        kept.append(text[last:])
        return " ".join("".join(kept).split()), hits

    def apply(self, df: pd.DataFrame, fields: Sequence[str]) -> tuple[pd.DataFrame, dict[str, int]]:
        """A copy of ``df`` whose ``fields`` (the label columns themselves excepted) have the label values
        masked, and how many values were masked per label column."""
        out = df.copy()
        counts = dict.fromkeys(self.columns, 0)
        memo: dict[str, tuple[str, list[str]]] = {}  # categories, seasons... repeat: each text is masked once
        for f in dict.fromkeys(f for f in fields if f not in self.columns):
            masked = []
            for v in out[f].tolist():
                if isinstance(v, str) and v:
                    if v not in memo:
                        memo[v] = self.mask(v)
                    v, hits = memo[v]
                    for col in hits:
                        counts[col] += 1
                masked.append(v)
            out[f] = pd.Series(masked, index=out.index, dtype=object)
        return out, counts
