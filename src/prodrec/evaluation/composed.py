"""The composed-query task: a product X and a colour word C, "like this one, but in C".

For a sampled product X and a colour C (a ``baseColour`` other than X's, with at least 5 products of X's
``articleType`` in colour C among the evaluated products), the query is X + "C" and the relevant products are
X's article type in colour C (:func:`composed_queries`). :func:`composed_task` reports precision@k (and
R@k, MRR) of

* X alone, by each arm and by the default fusion (``query`` X: what ``recommend`` gives);
* "C" alone, placed by each arm that embeds text and, through label prototypes fitted outside the sample,
  by the arms that read none (``C:<arm>``, query C);
* the composed query (:meth:`~prodrec.rank.recommender.Recommender.query`, Rocchio per arm on the fusion's
  scale): ``X+C`` with the recommender's fusion weights for both parts, ``X+C tuned`` with weights tuned by
  coordinate ascent on validation queries drawn from other products (never on the reported ones).

:func:`composed_runs` runs it over protocols and seeds; :func:`composed_table` and :func:`describe_composed`
summarise the runs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import params
from ..core.errors import CatalogError, ConfigError
from ..data.schema import COLOUR_LABEL, STYLE_LABEL
from ..rank.compose import N_NEAR, Composer, Modifier, Prototypes, check_near, part_scores
from ..rank.search import Searcher
from .retrieval import cutoff_metrics
from .tasks import TaskRun, task_modes, top_positions

log = logging.getLogger(__name__)

__all__ = [
    "COMPOSED_K",
    "COMPOSED_QUERIES",
    "MIN_RELEVANT",
    "NEAR_BY",
    "ComposedWeights",
    "composed_queries",
    "composed_runs",
    "composed_table",
    "composed_task",
    "describe_composed",
    "near_arms",
]

#: Queries, cut-off and fewest relevant products of the composed task.
COMPOSED_QUERIES = 400
COMPOSED_K = 5
MIN_RELEVANT = 5
#: The weights a tuned composed query is searched over, per arm (coordinate ascent on validation queries).
WEIGHT_LADDER: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
#: Offset of the validation queries' seed from the reported ones' (they are drawn from other products too).
VALIDATION_SEED_OFFSET = 7919
#: The arm a near prototype chooses its members in by default: the first of these the prototypes have. The
#: learned arm is trained to bring products of one type and colour together, so X's neighbours in it share
#: X's type. Seed 0's validation queries (5,000 products, withheld; the near prototype alone, scored in the
#: learned arm, 10 members): chosen in the learned arm 0.61, in the image arm 0.46, in image + colour +
#: learned 0.54 (the colour arm pulls the members towards X's own colour).
NEAR_BY: tuple[str, ...] = ("learned", "image")


def _colour_options(labels: pd.DataFrame, type_column: str, colour_column: str,
                    min_relevant: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[Any, list[Any]]]:
    """Per row: its type, its colour, whether both are known; per type, the colours with at least
    ``min_relevant`` products of that type."""
    params.check_positive_int("min_relevant", min_relevant)
    for c in (type_column, colour_column):
        if c not in labels.columns:
            raise CatalogError(f"the composed task needs the label column {c!r} ({list(labels.columns)})")
    kind = labels[type_column].astype("object").to_numpy()
    colour = labels[colour_column].astype("object").to_numpy()
    known = pd.notna(kind) & pd.notna(colour)
    counts = pd.Series(1, index=pd.MultiIndex.from_arrays([kind[known], colour[known]])).groupby(level=[0, 1]).sum()
    colours_of: dict[Any, list[Any]] = {}
    for (t, c), n in counts.items():
        if n >= min_relevant:
            colours_of.setdefault(t, []).append(c)
    return kind, colour, known, colours_of


def drawable(labels: pd.DataFrame, *, type_column: str = STYLE_LABEL, colour_column: str = COLOUR_LABEL,
             min_relevant: int = MIN_RELEVANT) -> int:
    """How many products of ``labels`` can be the X of a composed query (:func:`composed_queries`)."""
    kind, colour, known, colours_of = _colour_options(labels, type_column, colour_column, min_relevant)
    return int(sum(1 for i in np.flatnonzero(known) if any(c != colour[i] for c in colours_of.get(kind[i], ()))))


def composed_queries(
    labels: pd.DataFrame, n_queries: int, seed: int = 0, *, type_column: str = STYLE_LABEL,
    colour_column: str = COLOUR_LABEL, min_relevant: int = MIN_RELEVANT, exclude: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_queries`` composed queries over the products of ``labels`` (rows in ranking order):
    positions of products X (each once, none of ``exclude``) and colours C, drawn with ``seed``: C is a
    ``colour_column`` value other than X's with at least ``min_relevant`` products of X's ``type_column``
    in that colour. The first m queries of a draw are the draw of m (same seed)."""
    params.check_positive_int("n_queries", n_queries)
    kind, colour, known, colours_of = _colour_options(labels, type_column, colour_column, min_relevant)
    rng = np.random.default_rng(seed)
    skip = set(int(i) for i in exclude)
    x_pos, wanted = [], []
    for i in rng.permutation(len(labels)):
        if not known[i] or int(i) in skip:
            continue
        options = sorted(c for c in colours_of.get(kind[i], []) if c != colour[i])
        if options:
            x_pos.append(int(i))
            wanted.append(options[int(rng.integers(len(options)))])
            if len(x_pos) == n_queries:
                break
    if len(x_pos) < n_queries:
        log.warning("only %d composed queries can be drawn here (asked for %d)", len(x_pos), n_queries)
    return np.asarray(x_pos, dtype=np.intp), np.asarray(wanted, dtype=object)


class NoComposedQuery(ConfigError):
    """The catalog has too few products per article type and colour to draw a composed query."""


@dataclass(frozen=True)
class ComposedWeights:
    """The weights of a composed query X + "C": ``item`` per arm (the product's part, normalised to sum 1)
    and ``text`` per arm (the colour word's part, relative to them), as
    :meth:`~prodrec.rank.recommender.Recommender.query` takes them (``weights``, ``text_weights``)."""

    item: dict[str, float]
    text: dict[str, float]

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {"item": {a: round(v, 6) for a, v in self.item.items()},
                "text": {a: round(v, 6) for a, v in self.text.items()}}


class _Parts:
    """Calibrated scores of composed queries, part by part: each arm's scores of the query products
    [m, n] and each placement's scores of the colour words [m, n], combined per weighting."""

    def __init__(self, searcher: Searcher, composer: Composer | None, x_pos: np.ndarray, colours: np.ndarray,
                 codes: np.ndarray, qcodes: np.ndarray, k: int) -> None:
        rec = searcher.rec
        self.x_pos, self.codes, self.qcodes, self.k = x_pos, codes, qcodes, k
        cal = rec.calibration
        self.item = {a: part_scores(idx.vectors, idx.vectors[x_pos], cal) for a, idx in rec.arms.items()}
        self.text: dict[str, np.ndarray] = {}
        self.placed: dict[str, np.ndarray] = {}
        self.modifiers: dict[Any, Modifier] = {}
        #: The word placed through near prototypes of each query's product (composer with near arms).
        self.near_text: dict[str, np.ndarray] = {}
        if composer is not None:
            mods = self.modifiers = {c: composer(str(c)) for c in pd.unique(colours)}
            self.text, self.placed = self._scores(rec, [mods[c] for c in colours])
            if composer.near:  # only the prototype arms' placement depends on X; the others' is self.text's
                like = [{a: rec.arms[a].vectors[x] for a in composer.near} for x in x_pos]
                near, _ = self._scores(rec, [composer(str(c), like=v).only(composer.prototype_arms)
                                             for c, v in zip(colours, like)])
                self.near_text = {**self.text, **near}

    @staticmethod
    def _scores(rec: Any, mods: Sequence[Modifier]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per arm: calibrated scores [m, n] of each query's modifier (zero rows where the arm has none), and
        which queries it could place."""
        scores_of, placed = {}, {}
        for arm in dict.fromkeys(a for m in mods for a in m.vectors):
            ok = np.array([arm in m.vectors for m in mods])
            rows = np.zeros((len(mods), rec.arms[arm].vectors.shape[1]), dtype=np.float32)
            for i in np.flatnonzero(ok):
                rows[i] = mods[i].vectors[arm]
            scores = np.zeros((len(mods), len(rec)), dtype=np.float32)
            if ok.any():
                scores[ok] = part_scores(rec.arms[arm].vectors, rows[ok], rec.calibration)
            scores_of[arm], placed[arm] = scores, ok
        return scores_of, placed

    def metrics(self, scores: np.ndarray, ok: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """P@k, R@k and MRR of score rows; queries a part cannot ask (``ok`` False) score 0."""
        out = cutoff_metrics(top_positions(scores, self.k, self.x_pos), self.codes, self.qcodes, (self.k,), self.x_pos)
        if ok is not None:
            out = {m: np.where(ok | np.isnan(v), v, 0.0) for m, v in out.items()}
        return out

    def combine(self, weights: ComposedWeights, near: bool = False) -> np.ndarray:
        """The composed scores: the products' parts plus the word's (its near placement when ``near``)."""
        total = np.zeros_like(next(iter(self.item.values())))
        text = self.near_text if near else self.text
        for arm, w in weights.item.items():
            if w:
                total += w * self.item[arm]
        for arm, w in weights.text.items():
            if w and arm in text:
                total += w * text[arm]
        return total

    def precision(self, weights: ComposedWeights, near: bool = False) -> float:
        return float(np.nanmean(self.metrics(self.combine(weights, near))[f"P@{self.k}"]))


def _tune(parts: _Parts, start: ComposedWeights, ladder: Sequence[float], passes: int = 3,
          near: bool = False) -> ComposedWeights:
    """Coordinate ascent of mean precision@k over the weights of ``start`` on the ladder's values (ties keep
    the current value, so it is deterministic); ``near``: of the query with the word's near placement."""
    item, text = dict(start.item), dict(start.text)
    best = parts.precision(ComposedWeights(item, text), near)
    for _ in range(passes):
        changed = False
        for table in (item, text):
            for arm in list(table):
                for value in ladder:
                    if value == table[arm]:
                        continue
                    trial = dict(table, **{arm: value})
                    cand = ComposedWeights(trial, text) if table is item else ComposedWeights(item, trial)
                    if not any(cand.item.values()) and not any(cand.text.values()):
                        continue
                    p = parts.precision(cand, near)
                    if p > best + 1e-12:
                        best, changed = p, True
                        table[arm] = value
        if not changed:
            break
    total = sum(item.values())
    if total > 0:  # the products' part sums to 1, the word's is relative to it (ranking unchanged)
        item, text = {a: v / total for a, v in item.items()}, {a: v / total for a, v in text.items()}
    return ComposedWeights(item, text)


def composed_task(
    searcher: Searcher,
    prototypes: Prototypes | None = None,
    *,
    n_queries: int = COMPOSED_QUERIES,
    seed: int = 0,
    k: int = COMPOSED_K,
    weights: ComposedWeights | None = None,
    n_validation: int | None = None,
    type_column: str = STYLE_LABEL,
    colour_column: str = COLOUR_LABEL,
    min_relevant: int = MIN_RELEVANT,
    withheld: Sequence[str] = (),
    ladder: Sequence[float] = WEIGHT_LADDER,
    near: Sequence[str] | None = None,
    n_near: int = N_NEAR,
    progress: bool = True,
) -> TaskRun:
    """The composed-query task: ``n_queries`` queries X + "C" (:func:`composed_queries`, ``seed``), scored
    by precision@k (and R@k, MRR) against X's article type in colour C.

    Modes (``query`` column): ``X`` - the product alone in each arm and the default fusion (what
    ``recommend`` gives); ``C`` - the colour word alone, placed by each arm that embeds text and through
    ``prototypes`` (fit them outside the sample) in the arms that read none (``C:<arm>``); ``X+C`` - the
    composed query with the recommender's fusion weights for both parts (``X+C``, Rocchio's default), and
    with ``weights`` (``X+C tuned``): given, or tuned by coordinate ascent on ``n_validation`` (default
    ``n_queries // 2``) validation queries drawn from other products than the reported ones, never on
    them. Where fewer products can take a query than both sets ask for (a small sample), the drawable ones
    are split: about half reported, half tuning (one: reported, untuned, no ``X+C tuned``). The weights used
    and the counts are in ``settings``.

    ``X+C near`` (when ``prototypes`` were fitted with ``members=True``): the word placed in the prototype
    arms through near prototypes of X (:meth:`~prodrec.rank.compose.Prototypes.near`: the ``n_near``
    products in colour C most like X in the ``near`` arms; default the first of :data:`NEAR_BY` the
    prototypes have), its weights tuned the same way.
    """
    rec = searcher.rec
    params.check_k(k, len(rec))
    eligible, refused = task_modes("composed", list(rec.arms), rec.protocol, columns=[type_column, colour_column],
                                   withheld=withheld)
    text_arms = [a for a in searcher.modes if a in rec.arms]
    near = near_arms(prototypes, near)
    composer = (Composer(searcher if text_arms else None, prototypes, near=near, n_near=n_near)
                if text_arms or (prototypes is not None and prototypes.arms) else None)
    if composer is None:
        raise ConfigError("the composed task needs a way to place the colour word: an arm that embeds text "
                          "(text, clip) or prototypes for an arm that reads none (colour, image)")
    labels = searcher.labels.reset_index(drop=True)
    pool = drawable(labels, type_column=type_column, colour_column=colour_column, min_relevant=min_relevant)
    n_test, n_val = n_queries, 0
    if weights is None:
        asked = n_val = n_validation if n_validation is not None else max(1, n_queries // 2)
        if pool < n_test + n_val:  # a small sample: what can be drawn is split, half tunes and half reports
            n_test, n_val = min(n_queries, pool - pool // 2), min(n_val, pool // 2)
            log.warning("only %d products can take a composed query here (asked for %d reported + %d validation "
                        "queries): %d reported, %d validation", pool, n_queries, asked, n_test, n_val)
    x_pos, colours = (composed_queries(labels, n_test, seed, type_column=type_column, colour_column=colour_column,
                                       min_relevant=min_relevant) if n_test else (np.zeros(0, np.intp), None))
    if not len(x_pos):
        raise NoComposedQuery(f"no composed query can be drawn: no {type_column} has {min_relevant} products in "
                              f"a second {colour_column} among the {len(labels)} ranked products; use a larger "
                              f"sample, or lower min_relevant (--min-relevant)")
    pair = labels[type_column].astype(str) + "\x1f" + labels[colour_column].astype(str)
    pair = pair.where(labels[type_column].notna() & labels[colour_column].notna(), None)
    codes, uniq = pd.factorize(pair, use_na_sentinel=True)
    index = {v: i for i, v in enumerate(uniq)}
    qcodes = np.array([index[f"{labels[type_column].iloc[x]}\x1f{c}"] for x, c in zip(x_pos, colours)])
    parts = _Parts(searcher, composer, x_pos, colours, codes, qcodes, k)
    default = ComposedWeights(dict(rec.weights), {a: rec.weights.get(a, 0.0) for a in parts.text})
    tuned_on = 0
    near_weights: ComposedWeights | None = None
    if weights is None and n_val == 0:  # one drawable product: nothing is left to tune on
        log.warning("no validation query is left for tuning the composed query's weights: X+C tuned is not "
                    "reported")
    elif weights is None:
        vx, vc = composed_queries(labels, n_val, seed + VALIDATION_SEED_OFFSET, type_column=type_column,
                                  colour_column=colour_column, min_relevant=min_relevant, exclude=x_pos)
        vq = np.array([index[f"{labels[type_column].iloc[x]}\x1f{c}"] for x, c in zip(vx, vc)], dtype=np.int64)
        start = ComposedWeights(dict(default.item), {a: default.text.get(a) or 1.0 for a in parts.text})
        val_parts = _Parts(searcher, composer, vx, vc, codes, vq, k)
        weights = _tune(val_parts, start, ladder)
        if near:
            near_weights = _tune(val_parts, start, ladder, near=True)
        tuned_on = len(vx)
    if near and near_weights is None:
        near_weights = weights
    kinds = {**{a: "X" for a in rec.arms}, **({"fused": "X"} if len(rec.arms) > 1 else {}),
             **{f"C:{a}": "C" for a in parts.text}, "X+C": "X+C", "X+C tuned": "X+C",
             **({"X+C near": "X+C"} if near and near_weights is not None else {})}
    run = TaskRun("composed", rec.protocol, k, kinds=kinds, skipped=refused, settings={
        "n_queries": len(x_pos), "n_requested": n_queries, "seed": seed, "k": k, "type_column": type_column,
        "colour_column": colour_column, "min_relevant": min_relevant, "calibration": rec.calibration,
        "default_weights": default.to_dict(), "tuned_weights": None if weights is None else weights.to_dict(),
        "tuned_on_queries": tuned_on, "drawable": pool, "near_by": near or None, "n_near": n_near if near else None,
        "near_weights": None if near_weights is None else near_weights.to_dict(),
        "placements": {a: sorted({m.sources[a] for m in parts.modifiers.values() if a in m.sources})[:3]
                       for a in parts.text},
        "queries": [{"id": str(rec.ids[x]), "colour": str(c)} for x, c in zip(x_pos, colours)]})
    label = f"{type_column}+{colour_column}"
    for arm in tqdm(list(rec.arms), desc="composed task", disable=not progress):
        run.add(arm, label, parts.metrics(parts.item[arm]))
    if len(rec.arms) > 1:
        run.add("fused", label, parts.metrics(parts.combine(ComposedWeights(dict(rec.weights), {}))))
    for arm, scores in parts.text.items():
        run.add(f"C:{arm}", label, parts.metrics(scores, parts.placed[arm]))
    run.add("X+C", label, parts.metrics(parts.combine(default)))
    if weights is not None:
        run.add("X+C tuned", label, parts.metrics(parts.combine(weights)))
    else:
        run.kinds.pop("X+C tuned")
    if near_weights is not None:
        run.add("X+C near", label, parts.metrics(parts.combine(near_weights, near=True)))
    return run


def near_arms(prototypes: Prototypes | None, near: Sequence[str] | None = None) -> list[str]:
    """The arms near prototypes choose their members in: ``near`` as given (checked), else the first of
    :data:`NEAR_BY` the prototypes have members in; none without members."""
    if near is not None or prototypes is None or not prototypes.member_vectors:
        return check_near(prototypes, near) if near else []
    return [next(a for a in (*NEAR_BY, *prototypes.member_vectors) if a in prototypes.member_vectors)]


def composed_runs(
    searchers: Mapping[str, Searcher],
    prototypes: Prototypes | None = None,
    seeds: Sequence[int] = (0, 1, 2),
    *,
    withheld: Mapping[str, Sequence[str]] | None = None,
    progress: bool = True,
    **options: Any,
) -> list[TaskRun]:
    """:func:`composed_task` for every protocol (``searchers``: protocol -> searcher) and seed, each seed
    with its own validation queries; ``options`` go to :func:`composed_task`. A catalog on which no composed
    query can be drawn (too few products per article type and colour) gives no run, logged."""
    runs = []
    for protocol, searcher in searchers.items():
        for seed in seeds:
            try:
                runs.append(composed_task(searcher, prototypes, seed=seed, progress=progress,
                                          withheld=(withheld or {}).get(protocol, ()), **options))
            except NoComposedQuery as exc:
                log.warning("composed task under protocol %s: %s", protocol, exc)
                return runs
    return runs


def composed_table(runs: Sequence[TaskRun], metric: str | None = None, digits: int = 3) -> pd.DataFrame:
    """precision@k (or ``metric``) of composed-task runs: one row per query kind and mode, one column per
    (protocol, seed), then the mean and standard deviation over seeds per protocol."""
    if not runs:
        return pd.DataFrame()
    metric = metric or f"P@{runs[0].k}"
    rows = []
    for run in runs:
        t = run.table(n_boot=1)
        t = t[t.metric == metric]
        rows.append(t.assign(seed=run.settings["seed"]))
    tidy = pd.concat(rows, ignore_index=True)
    wide = tidy.pivot_table(index=["query", "mode"], columns=["protocol", "seed"], values="value", sort=False)
    for protocol in dict.fromkeys(tidy.protocol):
        wide[(protocol, "mean")] = wide[protocol].mean(axis=1)
        wide[(protocol, "sd")] = wide[protocol].std(axis=1, ddof=1) if wide[protocol].shape[1] > 1 else np.nan
    order = [c for p in dict.fromkeys(tidy.protocol) for c in wide.columns if c[0] == p]
    return wide[order].round(digits)


def describe_composed(runs: Sequence[TaskRun]) -> str:
    """The composed task's findings as Markdown sentences built from the measured numbers, per protocol:
    the composed query against the best single query (mean over seeds), and the tuned weights."""
    table = composed_table(runs, digits=6)
    if table.empty:
        return "No composed query could be drawn on this catalog."
    k = runs[0].k
    out = []
    for protocol in dict.fromkeys(c[0] for c in table.columns):
        mean = table[(protocol, "mean")]
        singles = mean[[q in ("X", "C") for q, _ in mean.index]]
        (bq, bm), best = singles.idxmax(), float(singles.max())
        plain = float(mean[("X+C", "X+C")])
        seeds = sorted({r.settings["seed"] for r in runs if r.protocol == protocol})
        weights = next(r.settings["tuned_weights"] for r in runs if r.protocol == protocol)
        if weights is None or ("X+C", "X+C tuned") not in mean.index or np.isnan(mean[("X+C", "X+C tuned")]):
            out.append(f"**{protocol}.** X + \"C\" with the fusion weights reaches precision@{k} {plain:.3f} (mean "
                       f"of seeds {seeds}) against {best:.3f} for the best single query ({bq} by {bm}); too few "
                       "queries could be drawn to tune its weights on others.")
            continue
        tuned = float(mean[("X+C", "X+C tuned")])
        ratio = f"{tuned / best:.1f}x" if best > 0 else "n/a"
        out.append(f"**{protocol}.** X + \"C\" with tuned weights reaches precision@{k} {tuned:.3f} (mean of seeds "
                   f"{seeds}; with the fusion weights {plain:.3f}), {ratio} the best single query ({bq} by {bm}: "
                   f"{best:.3f}). Tuned on validation queries (seed {seeds[0]}): products "
                   + ", ".join(f"{a} {w:g}" for a, w in weights["item"].items() if w) + "; colour word "
                   + ", ".join(f"{a} {w:g}" for a, w in weights["text"].items() if w) + "."
                   + _near_sentence(runs, protocol, mean, best, k))
    return "\n\n".join(out)


def _near_sentence(runs: Sequence[TaskRun], protocol: str, mean: pd.Series, best: float, k: int) -> str:
    """The near-prototype row's sentence (empty without it)."""
    if ("X+C", "X+C near") not in mean.index or np.isnan(mean[("X+C", "X+C near")]):
        return ""
    near = float(mean[("X+C", "X+C near")])
    first = next(r.settings for r in runs if r.protocol == protocol)
    ratio = f"{near / best:.1f}x" if best > 0 else "n/a"
    return (f" With the colour placed through near prototypes (the {first['n_near']} products in colour C most like X "
            f"by {'+'.join(first['near_by'])}, fitted outside the sample), X + \"C\" reaches {near:.3f}, {ratio} the "
            f"best single query.")
