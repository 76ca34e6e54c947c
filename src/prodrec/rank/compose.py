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
* an arm that takes no text (image, colour, learned...) gets the **prototypes** of the label values the text
  names (:class:`Prototypes`: the normalised mean vector of the products with that value, e.g. ``baseColour
  = Red`` in the colour arm). For an evaluation, fit them on products outside the evaluated sample.

**Near prototypes** ("like this one, but red"): with prototypes fitted with ``members=True`` and a
:class:`Composer` given ``near`` arms, the modifier of a query with liked products is, in each arm, the mean
of the ``n_near`` products with the named value (red) that are most like the liked ones in the ``near`` arms,
instead of the mean of all red products: red products of the liked one's kind. On the composed task
(5,000 products, ``withheld``, 400 queries, three seeds) that took precision@5 from 0.48 to 0.60 with the
learned arm choosing the members (``README``, composed task).

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
    "N_NEAR",
    "Composer",
    "Modifier",
    "Prototypes",
    "check_near",
    "part_scores",
    "rocchio_scores",
]

#: Rocchio's default weight of the disliked products (beta), against 1 for the liked ones.
NEGATIVE_WEIGHT = 0.5
#: Fewest products a label value needs for its prototype to be kept.
MIN_PROTOTYPE_COUNT = 5
#: Products a near prototype averages: the value's members most like the liked products (the composed task,
#: seed 0's validation queries, members chosen in the learned arm: 1, 3, 10 gave 0.55, 0.61, 0.61; with the
#: colour arm in the choice 5, 10, 20 gave 0.57, 0.54, 0.42).
N_NEAR = 10
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

    ``members`` (from ``fit(..., members=True)``): per arm, the unit vectors of every fitted product (rows in
    ``fitted_ids`` order; zero rows for products the arm has no vector of) and per label value its rows, for
    :meth:`near` prototypes.
    """

    def __init__(self, vectors: Mapping[str, Mapping[tuple[str, str], np.ndarray]],
                 counts: Mapping[tuple[str, str], int], fitted_ids: Sequence[Any],
                 members: tuple[Mapping[str, np.ndarray], Mapping[tuple[str, str], np.ndarray]] | None = None
                 ) -> None:
        self.vectors = {arm: dict(v) for arm, v in vectors.items()}
        self.counts = dict(counts)
        self.fitted_ids = np.asarray([str(i) for i in fitted_ids], dtype=object)
        self.member_vectors: dict[str, np.ndarray] = dict(members[0]) if members is not None else {}
        self.member_rows: dict[tuple[str, str], np.ndarray] = dict(members[1]) if members is not None else {}
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
            min_count: int = MIN_PROTOTYPE_COUNT, members: bool = False) -> Prototypes:
        """Prototypes of every value of ``columns`` with at least ``min_count`` products, in every arm of
        ``embeddings`` (failed products left out). ``labels`` is indexed by product id. ``members`` keeps
        every fitted product's vectors too, for :meth:`near` prototypes (memory: the fitted vectors)."""
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
        order = sorted(fitted)
        if not members:
            return cls(vectors, counts, order)
        row = {i: r for r, i in enumerate(order)}
        mats: dict[str, np.ndarray] = {}
        for arm, emb in embeddings.items():
            emb = emb.valid()
            ids = [str(i) for i in emb.ids]
            keep = np.array([i in row for i in ids], dtype=bool)
            x = emb.vectors[keep].astype(np.float32)
            mats[arm] = np.zeros((len(order), x.shape[1]), dtype=np.float32)
            mats[arm][[row[i] for i, k in zip(ids, keep) if k]] = x / np.maximum(
                np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        values = table.reindex(order)
        keyed = {c: values[c].astype("object").map(lambda v: None if pd.isna(v) else str(v)).to_numpy()
                 for c in columns}  # as the prototypes' keys: str(value)
        rows = {key: np.flatnonzero(keyed[key[0]] == key[1]) for key in counts}
        return cls(vectors, counts, order, (mats, rows))

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

    def near(self, column: str, value: str, like: Mapping[str, np.ndarray], n: int = N_NEAR) -> dict[str, np.ndarray]:
        """The **near prototype** of ``column = value``: per arm, the normalised mean of the ``n`` products with
        that value most like ``like`` (arm -> query vector: the sum of their cosines in those arms; ties to
        the earlier fitted id). Needs ``fit(..., members=True)``."""
        params.check_positive_int("n", n)
        if not self.member_vectors:
            raise ConfigError("near prototypes need the members' vectors: fit the prototypes with members=True")
        rows = self.member_rows.get((column, str(value)))
        if rows is None:
            raise ConfigError(f"no prototype of {column}={value!r} (values with at least the minimum count only)")
        by = {a: _unit(v, f"the {a} vector to choose near members by") for a, v in like.items()
              if a in self.member_vectors}
        if not by:
            raise ConfigError(f"near prototypes choose their members in arms the prototypes have ({self.arms}); "
                              f"got {list(like)}")
        sims = np.zeros(len(rows), dtype=np.float64)
        for a, v in by.items():
            sims += self.member_vectors[a][rows] @ v
        chosen = rows[np.argsort(-sims, kind="stable")[:n]]
        out = {}
        for arm, mat in self.member_vectors.items():
            x = mat[chosen]
            x = x[(x != 0).any(axis=1)]
            if len(x):
                out[arm] = _unit(x.mean(axis=0, dtype=np.float64), f"the near prototype of {column}={value}")
        return out

    def modifier(self, text: str, arms: Sequence[str] | None = None, like: Mapping[str, np.ndarray] | None = None,
                 n_near: int = N_NEAR) -> Modifier:
        """``text`` placed in ``arms`` (default: all fitted) as the normalised sum of the prototypes of the
        label values it names (:meth:`near` prototypes when ``like`` is given); arms without any of them are
        left out."""
        hits = self.match(text)
        vectors, sources = {}, {}
        near = {h: self.near(*h, like, n_near) for h in hits} if like is not None else {}
        by = "+".join(a for a in (like or {}) if a in self.member_vectors)
        for arm in arms if arms is not None else self.arms:
            found = [(c, v) for c, v in hits if (c, v) in self.vectors.get(arm, {})]
            if like is not None:
                found = [h for h in found if arm in near[h]]
            if found:
                parts = [near[h][arm] if like is not None else self.vectors[arm][h] for h in found]
                vectors[arm] = _unit(np.sum(parts, axis=0), f"{text!r} in {arm}")
                what = f"near prototype ({n_near} nearest by {by}) " if like is not None else "prototype "
                sources[arm] = what + " + ".join(f"{c}={v}" for c, v in found)
        return Modifier(text, vectors, sources)


def check_near(prototypes: Prototypes | None, near: Sequence[str]) -> list[str]:
    """``near`` (arms to choose near prototypes' members in), checked: the prototypes were fitted with
    ``members=True`` and have those arms."""
    if prototypes is None or not prototypes.member_vectors:
        raise ConfigError("near prototypes need prototypes fitted with members=True")
    wrong = [a for a in near if a not in prototypes.member_vectors]
    if wrong:
        raise ConfigError(f"near: arm(s) {wrong} have no prototypes (arms: {prototypes.arms})")
    return list(near)


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
    no text. ``text_arms`` / ``prototype_arms`` restrict either (default: all that can).

    ``near`` (arms of the prototypes, e.g. ``["learned"]``): a query with liked products gets :meth:`near
    <Prototypes.near>` prototypes, their ``n_near`` members chosen by likeness to the liked products in those
    arms (the prototypes need ``members=True``)."""

    def __init__(self, searcher: TextEmbedder | None = None, prototypes: Prototypes | None = None,
                 text_arms: Sequence[str] | None = None, prototype_arms: Sequence[str] | None = None,
                 near: Sequence[str] | None = None, n_near: int = N_NEAR) -> None:
        self.searcher = searcher
        self.prototypes = prototypes
        self.near = check_near(prototypes, near) if near else []
        self.n_near = params.check_positive_int("n_near", n_near)
        capable = list(searcher.modes) if searcher is not None else []
        self.text_arms = capable if text_arms is None else [a for a in text_arms if a in capable]
        textual = set(text_query_arms())
        fitted = prototypes.arms if prototypes is not None else []
        self.prototype_arms = [a for a in (fitted if prototype_arms is None else prototype_arms)
                               if a in fitted and a not in textual]
        if not self.text_arms and not self.prototype_arms:
            raise ConfigError("a text modifier needs an arm that embeds text (text, clip) or prototypes for an "
                              "arm that does not (Prototypes.fit on the colour or image arm)")

    def __call__(self, text: str, like: Mapping[str, np.ndarray] | None = None) -> Modifier:
        """``text`` placed in the arms; ``like`` (arm -> the liked products' mean vector) makes the prototypes
        near ones when the composer has ``near`` arms (ignored otherwise)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("a modifier is a non-empty text, e.g. 'in red'")
        vectors: dict[str, np.ndarray] = {}
        sources: dict[str, str] = {}
        for arm in self.text_arms:
            assert self.searcher is not None
            vectors[arm] = self.searcher.embed([text], arm)[0]
            sources[arm] = "text model"
        if self.prototypes is not None and self.prototype_arms:
            chooser = {a: like[a] for a in self.near if a in like} if like is not None and self.near else None
            proto = self.prototypes.modifier(text, self.prototype_arms, like=chooser or None, n_near=self.n_near)
            vectors.update(proto.vectors)
            sources.update(proto.sources)
        if not vectors:
            raise ConfigError(f"no arm can place {text!r}: no text arm here, and it names no label value with a "
                              f"prototype (e.g. {', '.join(self.prototypes.values(self.prototypes.columns[0])[:5])})"
                              if self.prototypes is not None else f"no arm can place {text!r}")
        return Modifier(text, vectors, sources)


def as_modifier(text: str | Modifier | Mapping[str, np.ndarray] | None, embed: Any = None,
                like: Mapping[str, np.ndarray] | None = None) -> Modifier | None:
    """``text`` as a :class:`Modifier`: a modifier as it is, a mapping arm -> vector, or a string placed by
    ``embed`` (a :class:`Composer`; given ``like``, the liked products' vector per arm, for its near
    prototypes)."""
    if text is None or isinstance(text, Modifier):
        return text
    if isinstance(text, str):
        if embed is None:
            raise ConfigError(f"to add the text {text!r} to a query, pass embed=Composer(exp.searcher(), prototypes) "
                              "(it places the text in each arm's space)")
        out = embed(text, like=like) if like is not None and getattr(embed, "near", None) else embed(text)
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
