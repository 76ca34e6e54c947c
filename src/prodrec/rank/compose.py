"""Composed and feedback queries: "like these, not like that, and in red", ranked on the fusion's scale.

A query is a set of liked products ``P``, disliked products ``N`` and an optional text **modifier**
(``"in red"``). Every arm scores the catalog against each part, on the scale fusion adds arms on
(:func:`prodrec.rank.fusion.calibrate`: raw cosines, or z-scored per query), and the parts are combined
Rocchio-style, per arm::

    score(x) = sum_a w_a * [mean_{p in P} cal_a(p, x) - beta * mean_{n in N} cal_a(n, x)]
             + sum_a t_a * cal_a(m_a, x)

``w`` are the fusion weights, ``beta`` the weight of the disliked products (``negative_weight``), ``m_a`` the
modifier in arm ``a``'s space and ``t`` its weights (``text_weights``, default ``w``). Under ``raw``
calibration this is exactly Rocchio's query ``mean(P) - beta * mean(N) + t * m`` in each arm (a cosine is
linear in the query vector); under ``zscore`` each part is standardised first, so one part cannot drown
the others by the spread of its cosines.

The modifier reaches an arm in one of two ways (:class:`Composer`):

* an arm whose model embeds free text (the text arm, CLIP: ``text_query`` in the arm registry) embeds it;
* an arm that takes no text (image, colour...) gets the **prototypes** of the label values the text names
  (:class:`Prototypes`: the normalised mean vector of the products with that value, e.g. ``baseColour =
  Red`` in the colour arm). For an evaluation, fit them on products outside the evaluated sample.

:meth:`prodrec.rank.recommender.Recommender.query` ranks such a query.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ..core import params
from ..core.errors import ConfigError, RankingError
from ..embed.registry import text_query_arms
from ..embed.vectors import Embeddings
from . import fusion

__all__ = [
    "NEGATIVE_WEIGHT",
    "Composer",
    "Modifier",
    "Prototypes",
    "part_scores",
    "rocchio_scores",
]

#: Rocchio's default weight of the disliked products (beta), against 1 for the liked ones.
NEGATIVE_WEIGHT = 0.5
#: Fewest products a label value needs for its prototype to be kept.
MIN_PROTOTYPE_COUNT = 5
_WORD = re.compile(r"\w+")


def _words(text: str) -> tuple[str, ...]:
    return tuple(w.lower() for w in _WORD.findall(str(text)))


@dataclass(frozen=True)
class Modifier:
    """A text modifier placed in arms' spaces: arm -> unit query vector, and how each one was obtained
    (``"text model"``, ``"prototype baseColour=Red"``...)."""

    text: str
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)

    @property
    def arms(self) -> list[str]:
        return list(self.vectors)

    def only(self, arms: Sequence[str]) -> Modifier:
        """This modifier in ``arms`` only (the others dropped)."""
        keep = [a for a in self.vectors if a in arms]
        return Modifier(self.text, {a: self.vectors[a] for a in keep}, {a: self.sources[a] for a in keep})


def _unit(vector: Any, what: str) -> np.ndarray:
    v = np.asarray(vector, dtype=np.float32).reshape(-1)
    norm = float(np.linalg.norm(v))
    if not np.isfinite(v).all() or not norm > 0:
        raise RankingError(f"{what} must be a finite, non-zero vector")
    return v / norm


class Prototypes:
    """Per arm and label value, the normalised mean of the unit vectors of the products with that value.

    A prototype puts a label value (a colour word, an article type) into the space of an arm that cannot
    read text. Fit them with :meth:`fit` on products **outside** an evaluated sample (the ids they were
    fitted on are kept: :meth:`overlap` says how many of a sample's products were among them).
    """

    def __init__(self, vectors: Mapping[str, Mapping[tuple[str, str], np.ndarray]],
                 counts: Mapping[tuple[str, str], int], fitted_ids: Sequence[Any]) -> None:
        self.vectors = {arm: dict(v) for arm, v in vectors.items()}
        self.counts = dict(counts)
        self.fitted_ids = np.asarray([str(i) for i in fitted_ids], dtype=object)
        self._vocab: dict[tuple[str, ...], tuple[str, str]] = {}
        for column, value in self.counts:
            words = _words(value)
            if words:
                self._vocab.setdefault(words, (column, value))
        self._longest = max((len(w) for w in self._vocab), default=0)

    def __repr__(self) -> str:
        return (f"Prototypes({len(self.counts)} label values of {self.columns} in arms {self.arms}, "
                f"fitted on {len(self.fitted_ids)} products)")

    @classmethod
    def fit(cls, embeddings: Mapping[str, Embeddings], labels: pd.DataFrame, columns: Sequence[str],
            min_count: int = MIN_PROTOTYPE_COUNT) -> Prototypes:
        """Prototypes of every value of ``columns`` with at least ``min_count`` products, in every arm of
        ``embeddings`` (failed products left out). ``labels`` is indexed by product id."""
        params.check_positive_int("min_count", min_count)
        if not embeddings:
            raise ConfigError("prototypes need the vectors of at least one arm")
        if not set(columns) <= set(labels.columns):
            raise ConfigError(f"cannot fit prototypes of {sorted(set(columns) - set(labels.columns))}: not label "
                              f"columns ({list(labels.columns)})")
        table = labels.set_axis(labels.index.map(str), axis=0)
        vectors: dict[str, dict[tuple[str, str], np.ndarray]] = {}
        counts: dict[tuple[str, str], int] = {}
        fitted: set[str] = set()
        for arm, emb in embeddings.items():
            emb = emb.valid()
            ids = np.asarray([str(i) for i in emb.ids], dtype=object)
            known = table.index.get_indexer(ids) >= 0
            ids, x = ids[known], emb.vectors[known]
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            fitted.update(ids.tolist())
            vectors[arm] = {}
            for column in columns:
                values = table[column].reindex(ids).astype("object")
                for value, rows in pd.Series(np.arange(len(ids))).groupby(values.to_numpy()).groups.items():
                    if pd.isna(value) or len(rows) < min_count:
                        continue
                    key = (column, str(value))
                    vectors[arm][key] = _unit(x[np.asarray(rows)].mean(axis=0, dtype=np.float64),
                                              f"the prototype of {column}={value}")
                    counts[key] = max(counts.get(key, 0), len(rows))
        if not counts:
            raise ConfigError(f"no value of {list(columns)} has {min_count} products to fit a prototype on")
        return cls(vectors, counts, sorted(fitted))

    @property
    def arms(self) -> list[str]:
        return list(self.vectors)

    @property
    def columns(self) -> list[str]:
        return list(dict.fromkeys(c for c, _ in self.counts))

    def values(self, column: str) -> list[str]:
        """The values of ``column`` that have a prototype."""
        return [v for c, v in self.counts if c == column]

    def overlap(self, ids: Sequence[Any]) -> int:
        """How many of ``ids`` the prototypes were fitted on (0 for an evaluation's sample)."""
        return int(np.isin(np.asarray([str(i) for i in ids], dtype=object), self.fitted_ids).sum())

    def match(self, text: str) -> list[tuple[str, str]]:
        """The (column, value) pairs ``text`` names, as whole words, case-insensitive, longest first
        ("navy blue" is Navy Blue, not Blue), left to right."""
        words = _words(text)
        found: list[tuple[str, str]] = []
        i = 0
        while i < len(words):
            for n in range(min(self._longest, len(words) - i), 0, -1):
                hit = self._vocab.get(words[i : i + n])
                if hit is not None:
                    found.append(hit)
                    i += n
                    break
            else:
                i += 1
        return list(dict.fromkeys(found))

    def vector(self, arm: str, column: str, value: str) -> np.ndarray:
        """The prototype of ``column = value`` in ``arm``."""
        try:
            return self.vectors[arm][(column, str(value))]
        except KeyError:
            raise ConfigError(f"no prototype of {column}={value!r} in the {arm} arm "
                              f"(arms {self.arms}; values with at least the minimum count only)") from None

    def modifier(self, text: str, arms: Sequence[str] | None = None) -> Modifier:
        """``text`` placed in ``arms`` (default: all fitted) as the normalised sum of the prototypes of the
        label values it names; arms without any of them are left out."""
        hits = self.match(text)
        vectors, sources = {}, {}
        for arm in arms if arms is not None else self.arms:
            found = [(c, v) for c, v in hits if (c, v) in self.vectors.get(arm, {})]
            if found:
                vectors[arm] = _unit(np.sum([self.vectors[arm][h] for h in found], axis=0), f"{text!r} in {arm}")
                sources[arm] = "prototype " + " + ".join(f"{c}={v}" for c, v in found)
        return Modifier(text, vectors, sources)


class TextEmbedder(Protocol):
    """What :class:`Composer` needs of a :class:`~prodrec.rank.search.Searcher`: the arms whose model
    embeds text, and their vectors for texts."""

    @property
    def modes(self) -> list[str]: ...

    def embed(self, texts: Sequence[str], mode: str | None = None, persist: bool = False, batch_size: int = 64,
              progress: bool = False) -> np.ndarray: ...


class Composer:
    """Turns a modifier text into a :class:`Modifier`: embedded by every text-capable arm of ``searcher``
    (a :class:`~prodrec.rank.search.Searcher`), and mapped through ``prototypes`` into the arms that take
    no text. ``text_arms`` / ``prototype_arms`` restrict either (default: all that can)."""

    def __init__(self, searcher: TextEmbedder | None = None, prototypes: Prototypes | None = None,
                 text_arms: Sequence[str] | None = None, prototype_arms: Sequence[str] | None = None) -> None:
        self.searcher = searcher
        self.prototypes = prototypes
        capable = list(searcher.modes) if searcher is not None else []
        self.text_arms = capable if text_arms is None else [a for a in text_arms if a in capable]
        textual = set(text_query_arms())
        fitted = prototypes.arms if prototypes is not None else []
        self.prototype_arms = [a for a in (fitted if prototype_arms is None else prototype_arms)
                               if a in fitted and a not in textual]
        if not self.text_arms and not self.prototype_arms:
            raise ConfigError("a text modifier needs an arm that embeds text (text, clip) or prototypes for an "
                              "arm that does not (Prototypes.fit on the colour or image arm)")

    def __call__(self, text: str) -> Modifier:
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("a modifier is a non-empty text, e.g. 'in red'")
        vectors: dict[str, np.ndarray] = {}
        sources: dict[str, str] = {}
        for arm in self.text_arms:
            assert self.searcher is not None
            vectors[arm] = self.searcher.embed([text], arm)[0]
            sources[arm] = "text model"
        if self.prototypes is not None and self.prototype_arms:
            proto = self.prototypes.modifier(text, self.prototype_arms)
            vectors.update(proto.vectors)
            sources.update(proto.sources)
        if not vectors:
            raise ConfigError(f"no arm can place {text!r}: no text arm here, and it names no label value with a "
                              f"prototype (e.g. {', '.join(self.prototypes.values(self.prototypes.columns[0])[:5])})"
                              if self.prototypes is not None else f"no arm can place {text!r}")
        return Modifier(text, vectors, sources)


def as_modifier(text: str | Modifier | Mapping[str, np.ndarray] | None, embed: Any = None) -> Modifier | None:
    """``text`` as a :class:`Modifier`: a modifier as it is, a mapping arm -> vector, or a string placed by
    ``embed`` (a :class:`Composer`)."""
    if text is None or isinstance(text, Modifier):
        return text
    if isinstance(text, str):
        if embed is None:
            raise ConfigError(f"to add the text {text!r} to a query, pass embed=Composer(exp.searcher(), prototypes) "
                              "(it places the text in each arm's space)")
        out = embed(text)
        if not isinstance(out, Modifier):
            raise ConfigError("embed must return a Modifier (see prodrec.rank.compose.Composer)")
        return out
    vectors = {str(a): _unit(v, f"the modifier vector of arm {a!r}") for a, v in dict(text).items()}
    return Modifier("", vectors, dict.fromkeys(vectors, "given"))


def part_scores(vectors: np.ndarray, queries: np.ndarray, calibration: str) -> np.ndarray:
    """Calibrated scores ``[m, n]`` of the unit rows ``vectors`` [n, d] against query rows [m, d] (each
    normalised first), on the fusion's scale (:func:`prodrec.rank.fusion.calibrate`)."""
    q = np.atleast_2d(np.asarray(queries, dtype=np.float32))
    q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    return fusion.calibrate(q @ vectors.T, calibration)


def rocchio_scores(
    arms: Mapping[str, np.ndarray],
    positive: np.ndarray,
    negative: np.ndarray = np.zeros(0, dtype=np.intp),
    modifier: Modifier | None = None,
    weights: Mapping[str, float] | None = None,
    text_weights: Mapping[str, float] | float | None = None,
    calibration: str = "zscore",
    negative_weight: float = NEGATIVE_WEIGHT,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Scores ``[n]`` of a composed query over every product, and each arm's part ``[n]`` (its weight
    applied), by the formula of the module.

    Parameters
    ----------
    arms : mapping arm -> float32 [n, d]
        Each arm's unit vectors, rows aligned.
    positive, negative : int arrays
        Row positions of the liked and disliked products.
    modifier : Modifier, optional
        The text part, in some of the arms.
    weights : mapping arm -> weight
        The arms' weights for the liked/disliked parts (default equal); normalised to sum 1.
    text_weights : mapping arm -> weight, or one number
        The modifier's weight per arm (a number scales ``weights``); default ``weights``. Not normalised,
        so the modifier can weigh more or less than the products.
    calibration : ``raw`` or ``zscore``
    negative_weight : float
        Rocchio's beta, ≥ 0.
    """
    if not arms:
        raise RankingError("a composed query needs at least one arm")
    pos = np.asarray(positive, dtype=np.intp).reshape(-1)
    neg = np.asarray(negative, dtype=np.intp).reshape(-1)
    if not len(pos) and not len(neg) and (modifier is None or not modifier.vectors):
        raise RankingError("a composed query needs a liked product, a disliked one or a text modifier")
    beta = float(negative_weight)
    if not np.isfinite(beta) or beta < 0:
        raise RankingError(f"negative_weight must be finite and ≥ 0, got {negative_weight!r}")
    w = params.check_weights(weights if weights is not None else dict.fromkeys(arms, 1.0), arms)
    w = {a: w.get(a, 0.0) for a in arms}
    mod = {} if modifier is None else {a: v for a, v in modifier.vectors.items() if a in arms}
    unknown = [a for a in (modifier.vectors if modifier is not None else {}) if a not in arms]
    if unknown:
        raise RankingError(f"the modifier is placed in arm(s) {unknown} that this recommender lacks ({list(arms)})")
    if text_weights is None or isinstance(text_weights, (int, float)):
        scale = 1.0 if text_weights is None else float(text_weights)
        t = {a: scale * w[a] for a in mod}
    else:
        t = {a: float(text_weights.get(a, 0.0)) for a in mod}
        extra = [a for a in text_weights if a not in arms]
        if extra:
            raise RankingError(f"text_weights name arm(s) {extra} that are not present; arms: {list(arms)}")
    if any(not np.isfinite(v) or v < 0 for v in t.values()):
        raise RankingError(f"text weights must be finite and ≥ 0, got {t}")
    n = len(next(iter(arms.values())))
    total = np.zeros(n, dtype=np.float32)
    parts: dict[str, np.ndarray] = {}
    for arm, x in arms.items():
        part = np.zeros(n, dtype=np.float32)
        if w[arm] and len(pos):
            part += w[arm] * part_scores(x, x[pos], calibration).mean(axis=0)
        if w[arm] and len(neg) and beta:
            part -= w[arm] * beta * part_scores(x, x[neg], calibration).mean(axis=0)
        if t.get(arm):
            part += t[arm] * part_scores(x, mod[arm], calibration)[0]
        parts[arm] = part
        total += part
    return total, parts
