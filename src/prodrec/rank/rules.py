"""Rules a shop puts on its recommendation lists, applied inside the ranking (not to a finished top-k).

:class:`Rules` says what a list may hold:

* ``same`` columns: only candidates that share the query's value (``gender``: a men's shirt recommends men's
  products). A query whose value is missing is not restricted by that column;
* ``different`` columns: only candidates with a known value other than the query's (``articleType``: a
  "complete the look" list of other kinds of product);
* ``where``: only candidates whose column holds one of the given values (``in_stock=true``; values compared
  as text, case-insensitively; several values of one column: any of them, several columns: all of them);
* ``exclude_duplicates``: near-identical products collapse to the best-ranked one: the same name
  (case and spaces aside), or a cosine of at least the threshold in every arm the mode ranks with. The query
  counts as listed first, so its own copies are never recommended;
* ``diversity``: maximal marginal relevance (MMR) over a deeper pool: from the pool's
  :func:`diversity_pool` best candidates, each next pick maximises
  ``lambda * relevance - (1 - lambda) * max similarity to the picks so far`` (relevance scaled to [0, 1]
  over the pool; similarity the mode's arms' cosines, weighted as fusion weighs them). ``lambda`` 1 is
  the plain ranking, 0 pure spread.

The first three are masks: candidates that fail them never enter a list, so k products come back whenever k
qualify. The last two read further down the ranking until the list is full (see
:mod:`prodrec.rank.lists`). :meth:`Rules.bind` turns the rules into arrays over a recommender's products
(:class:`BoundRules`); :meth:`Rules.to_dict` is what provenance records.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import ConfigError

__all__ = ["DEFAULT_DUPLICATE_THRESHOLD", "DIVERSITY_POOL", "BoundRules", "Rules", "diversity_pool",
           "parse_where"]

#: Cosine (in every arm of the mode) from which two products count as the same under ``exclude_duplicates``
#: when no threshold is given: identical photos and texts score 1.0, a re-encoded photo ~0.99.
DEFAULT_DUPLICATE_THRESHOLD = 0.98
#: MMR picks from the best ``DIVERSITY_POOL * k`` candidates (at least k + 10).
DIVERSITY_POOL = 2


def diversity_pool(k: int) -> int:
    """How many of the best candidates MMR chooses k from."""
    return max(DIVERSITY_POOL * k, k + 10)


def parse_where(items: Iterable[str] | Mapping[str, Any]) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """``["in_stock=true", "season=Summer", "season=Fall"]`` (or a mapping column -> value or values) ->
    ``(("in_stock", ("true",)), ("season", ("Summer", "Fall")))``."""
    out: dict[str, list[str]] = {}
    if isinstance(items, Mapping):
        pairs = [(str(c), v) for c, vs in items.items()
                 for v in (vs if isinstance(vs, (list, tuple, set, frozenset)) else [vs])]
    else:
        pairs = []
        for item in items:
            col, sep, value = str(item).partition("=")
            if not sep or not col.strip():
                raise ConfigError(f"--where looks like COLUMN=VALUE (e.g. in_stock=true); got {item!r}")
            pairs.append((col, value))
    for col, value in pairs:
        out.setdefault(col.strip(), []).append(str(value).strip())
    return tuple((c, tuple(dict.fromkeys(vs))) for c, vs in out.items())


def _columns(value: str | Sequence[str] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    return tuple(dict.fromkeys(c.strip() for item in items for c in str(item).split(",") if c.strip()))


@dataclass(frozen=True)
class Rules:
    """What a recommendation list may hold (see the module); the default holds anything.

    >>> Rules.make(same="gender", where=["in_stock=true"], exclude_duplicates=True, diversity=0.7)
    """

    same: tuple[str, ...] = ()
    different: tuple[str, ...] = ()
    where: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Cosine threshold of near-identical vectors; None: duplicates are kept.
    exclude_duplicates: float | None = None
    #: MMR's lambda in [0, 1]; None: no re-ranking.
    diversity: float | None = None

    @classmethod
    def make(
        cls,
        same: str | Sequence[str] | None = None,
        different: str | Sequence[str] | None = None,
        where: Iterable[str] | Mapping[str, Any] | None = None,
        exclude_duplicates: bool | float | None = None,
        diversity: float | None = None,
    ) -> Rules:
        """Checked rules from friendly arguments: column names as a string or a list, ``where`` as
        ``COL=VAL`` strings or a mapping, ``exclude_duplicates=True`` for the default threshold."""
        dup: float | None
        if exclude_duplicates is None or exclude_duplicates is False:
            dup = None
        elif exclude_duplicates is True:
            dup = DEFAULT_DUPLICATE_THRESHOLD
        else:
            dup = _unit("exclude_duplicates (a cosine threshold)", exclude_duplicates, open_low=True)
        div = None if diversity is None else _unit("diversity (MMR's lambda)", diversity)
        rules = cls(_columns(same), _columns(different), parse_where(where or ()), dup, div)
        clash = set(rules.same) & set(rules.different)
        if clash:
            raise ConfigError(f"column(s) {sorted(clash)} are both --same and --different: no product could qualify")
        return rules

    def __bool__(self) -> bool:
        return bool(self.same or self.different or self.where or self.greedy)

    @property
    def greedy(self) -> bool:
        """True when the list is chosen candidate by candidate (duplicates or diversity)."""
        return self.exclude_duplicates is not None or self.diversity is not None

    @property
    def columns(self) -> list[str]:
        """The catalog columns the masks read."""
        return list(dict.fromkeys([*self.same, *self.different, *(c for c, _ in self.where)]))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for provenance (and the state an update compares with)."""
        return {"same": list(self.same), "different": list(self.different),
                "where": {c: list(v) for c, v in self.where}, "exclude_duplicates": self.exclude_duplicates,
                "diversity": self.diversity}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> Rules:
        d = dict(d or {})
        return cls.make(d.get("same"), d.get("different"), d.get("where") or {}, d.get("exclude_duplicates"),
                        d.get("diversity"))

    def describe(self) -> str:
        """One line for people: ``same gender; where in_stock=true; no duplicates (0.98); diversity 0.7``."""
        parts = [f"same {c}" for c in self.same] + [f"different {c}" for c in self.different]
        parts += [f"where {c}={'|'.join(v)}" for c, v in self.where]
        if self.exclude_duplicates is not None:
            parts.append(f"no duplicates (cosine >= {self.exclude_duplicates:g} or same name)")
        if self.diversity is not None:
            parts.append(f"diversity (MMR lambda {self.diversity:g})")
        return "; ".join(parts) or "none"

    def bind(self, ids: Sequence[Any], labels: pd.DataFrame | None, name_column: str | None = None) -> BoundRules:
        """The rules as arrays over products ``ids`` (a recommender's, in its order), from ``labels``
        (indexed by id, e.g. ``catalog.labels``). Unknown columns are refused, with the closest name."""
        needed = self.columns
        if needed and labels is None:
            raise ConfigError(f"the rules read column(s) {needed}: give the catalog's labels")
        lab = pd.DataFrame(index=pd.Index([str(i) for i in ids])) if labels is None else \
            labels.set_axis(labels.index.map(str)).reindex([str(i) for i in ids])
        for col in needed:
            if col not in lab.columns:
                raise ConfigError(f"rule column {col!r} is not in the catalog ({', '.join(map(str, lab.columns))})"
                                  f"{params.suggest(col, [str(c) for c in lab.columns])}")
        allowed = None
        for col, values in self.where:
            ok = _folded(lab[col]).isin([v.casefold() for v in values]).to_numpy()
            allowed = ok if allowed is None else allowed & ok
        names = None
        if self.exclude_duplicates is not None and name_column and name_column in lab.columns:
            names = _codes(_folded(lab[name_column], squeeze=True))
        return BoundRules(self, [_codes(lab[c]) for c in self.same], [_codes(lab[c]) for c in self.different],
                          allowed, names)


def _unit(what: str, value: Any, open_low: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be a number within [0, 1], got {value!r}") from None
    if math.isnan(v) or not (0.0 < v if open_low else 0.0 <= v) or v > 1.0:
        raise ConfigError(f"{what} must be within {'(0' if open_low else '[0'}, 1], got {value!r}")
    return v


def _folded(values: pd.Series, squeeze: bool = False) -> pd.Series:
    """Values as case-folded, stripped text (``squeeze``: inner runs of white space made one space, and a
    value left empty is missing); missing stays missing. Each distinct value is folded once."""
    codes, uniques = pd.factorize(values.astype("object").where(values.notna(), None), use_na_sentinel=True)
    folded = [str(u).strip().casefold() for u in uniques]
    if squeeze:
        folded = [" ".join(v.split()) or None for v in folded]
    table = np.array([*folded, None], dtype=object)  # code -1 (missing) reads the last entry
    return pd.Series(table[codes], index=values.index, dtype=object)


def _codes(values: pd.Series) -> np.ndarray:
    """Integer codes of a column (equal values, equal codes); -1 where the value is missing."""
    codes, _ = pd.factorize(values.astype("object").where(values.notna(), None), use_na_sentinel=True)
    return codes.astype(np.int64)


class BoundRules:
    """:class:`Rules` as arrays over one recommender's products (see :meth:`Rules.bind`)."""

    def __init__(self, rules: Rules, same: list[np.ndarray], different: list[np.ndarray],
                 allowed: np.ndarray | None, names: np.ndarray | None) -> None:
        self.rules = rules
        self.same, self.different, self.allowed, self.names = same, different, allowed, names

    @property
    def masks(self) -> bool:
        """True when some candidates are left out by a mask (same, different, where)."""
        return bool(self.same or self.different or self.allowed is not None)

    def mask_scores(self, scores: np.ndarray, query_pos: np.ndarray, cols: slice = slice(None)) -> np.ndarray:
        """Set to ``-inf`` (in place) the scores [m, w] of candidates the masks leave out for each query;
        the columns are the products ``cols`` (a tile of the catalog; default all). One boolean [m, w] pass per
        ``same`` / ``different`` column and one write (it runs on every tile of every block of an export)."""
        out: np.ndarray | None = None if self.allowed is None else ~self.allowed[None, cols]  # [1, w]
        for codes, same in self._columns():
            bad = self._left_out(codes[query_pos][:, None], codes[None, cols], same)
            out = bad if out is None else np.logical_or(bad, out, out=bad)
        if out is not None:
            np.copyto(scores, -np.inf, where=out)
        return scores

    def allowed_pairs(self, query_pos: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """Bool [m, c]: which candidate positions ``cand`` (rows per query) the masks let into each list."""
        ok = np.ones(cand.shape, dtype=bool)
        if self.allowed is not None:
            ok &= self.allowed[cand]
        for codes, same in self._columns():
            ok &= ~self._left_out(codes[query_pos][:, None], codes[cand], same)
        return ok

    def _columns(self) -> list[tuple[np.ndarray, bool]]:
        """(codes, same?) of every ``same`` and ``different`` column."""
        return [*((c, True) for c in self.same), *((c, False) for c in self.different)]

    @staticmethod
    def _left_out(q: np.ndarray, c: np.ndarray, same: bool) -> np.ndarray:
        """Bool, broadcast over the query codes ``q`` [m, 1] and candidate codes ``c``: the candidates a
        ``same`` column (another value; a query without a value is not restricted) or a ``different`` column
        (the same value, or none) leaves out."""
        if same:
            bad = c != q
            if (q < 0).any():
                bad &= q >= 0
            return bad
        bad = c == q
        bad |= c < 0
        return bad

    def same_name(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Bool, broadcast over ``a`` and ``b`` (positions): the products share a known name."""
        if self.names is None:
            return np.zeros(np.broadcast_shapes(np.shape(a), np.shape(b)), dtype=bool)
        na, nb = self.names[a], self.names[b]
        return (na == nb) & (na >= 0)
