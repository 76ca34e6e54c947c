"""Evaluation tasks beyond product -> product: the public fashion leaderboard's two tasks on this dataset,
and a composed-query task.

* ``item``: a product -> similar products (the paper's task; :func:`~.runs.evaluate`).
* ``label`` (:func:`label_task`): each distinct value of a label column (masterCategory, subCategory,
  articleType, baseColour, season, usage) is a text query; relevant = the products with that value. The
  published protocol (Marqo's KAGL evaluation, see :mod:`.reference`) embeds the value with a CLIP text
  tower against ``normalise(0.9 image + 0.1 text)`` product vectors (the text being the product name) and
  reports P@1, P@10, R@1, R@10 and MRR over the top 10.
* ``name`` (:func:`name_task`): product names (2,000 distinct names sampled with a seed) as text queries
  against image-only vectors; relevant = every product with exactly that name.
* ``composed`` (:func:`composed_task`): a sampled product X and a colour C (a baseColour other than X's,
  with at least 5 products of X's articleType in colour C); the query is X + "C"; relevant = X's article
  type in colour C; precision@5 of X alone (each arm), "C" alone and the composed query
  (:mod:`prodrec.rank.compose`).

Which arms can take which task is decided before any work (:func:`task_modes`): an arm whose model embeds
text into the photos' space (CLIP) takes both leaderboard tasks as published; the text arm takes the label
task only when its product sentences do not contain the labels asked for (protocol ``withheld`` with those
columns withheld), and never the name task (its documents contain the names); an arm that reads no text
(image, colour) takes the label task through **prototypes** (the mean vector of products outside the
evaluated sample with that value: supervised, not the published zero-shot protocol, and marked so in the
``query`` column). Every task returns a :class:`TaskRun`: tidy records (``TaskRun.table``) and per-query
values for paired significance tests (:func:`~.significance.compare_modes`).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ..core import params
from ..core.errors import CatalogError, ConfigError
from ..core.vocab import FUSION_MODES, TASKS
from ..data.schema import COLOUR_LABEL, STYLE_LABEL
from ..data.text import LabelMask
from ..embed.registry import ARMS
from ..rank import fusion
from ..rank.compose import Composer, Modifier, Prototypes, part_scores
from ..rank.search import Searcher
from ..rank.topk import select_topk
from .retrieval import cutoff_metrics
from .runs import bootstrap_ci

log = logging.getLogger(__name__)

__all__ = [
    "COMPOSED_K",
    "COMPOSED_QUERIES",
    "KAGL_CUTOFFS",
    "KAGL_DOC_WEIGHTS",
    "KAGL_LABELS",
    "NAME_QUERIES",
    "ComposedWeights",
    "TaskRun",
    "composed_queries",
    "composed_task",
    "label_task",
    "name_task",
    "task_modes",
    "text_space",
]

#: The label columns the leaderboard asks for (its category1/2/3 are masterCategory, subCategory, articleType).
KAGL_LABELS: tuple[str, ...] = ("masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
#: The leaderboard's cut-offs: P@1, P@10, R@1, R@10; MRR over the top 10.
KAGL_CUTOFFS: tuple[int, ...] = (1, 10)
#: The leaderboard's document of the label task: ``normalise(0.9 * image + 0.1 * text)`` in CLIP's space.
KAGL_DOC_WEIGHTS: dict[str, float] = {"image": 0.9, "text": 0.1}
#: Product names sampled as queries of the name task.
NAME_QUERIES = 2000
#: Queries, cut-off and fewest relevant products of the composed task.
COMPOSED_QUERIES = 400
COMPOSED_K = 5
MIN_RELEVANT = 5
#: The weights a tuned composed query is searched over, per arm (coordinate ascent on validation queries).
WEIGHT_LADDER: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
COLUMNS = ["protocol", "task", "mode", "query", "metric", "label", "value", "ci_low", "ci_high", "n_queries", "k"]


def text_space(arm: str) -> str | None:
    """Where arm ``arm``'s model puts free text: ``"image"`` (beside the photos: CLIP), ``"text"`` (beside
    the product sentences: the text arm), or None (it reads no text)."""
    entry = ARMS.get(arm)
    if entry is None or not entry.text_query or entry.spec is None:
        return None
    return entry().input_kind or None


def task_modes(
    task: str,
    arms: Sequence[str],
    protocol: str = "full",
    *,
    columns: Sequence[str] = (),
    withheld: Sequence[str] = (),
    prototype_arms: Sequence[str] = (),
    modes: Sequence[str] | None = None,
) -> tuple[dict[str, str], dict[str, str]]:
    """Which of ``arms`` (and fusion) can take ``task``, decided before any work.

    Returns ``(eligible, refused)``: mode -> how its queries are made (``text``: the query text through the
    arm's model; ``prototype``: label prototypes fitted outside the sample; ``product``: the query product's
    vector; ``fused``: the eligible arms z-scored and weighted), and mode -> why it cannot take the task.
    ``columns`` are the label columns asked for (label, composed), ``withheld`` the columns the text arm's
    sentences were made without, ``prototype_arms`` the arms prototypes will be fitted for. Naming a refused
    mode in ``modes``, or leaving no mode, is a :class:`~prodrec.core.errors.ConfigError`.
    """
    params.check_task(task)
    protocol = params.check_protocol(protocol)
    eligible: dict[str, str] = {}
    refused: dict[str, str] = {}
    hidden = set(withheld) if protocol == "withheld" else set()
    for arm in arms:
        space = text_space(arm)
        if task == "item":
            eligible[arm] = "product"
        elif task == "name":
            if space == "image":
                eligible[arm] = "text"
            elif space == "text":
                refused[arm] = "its documents are product sentences, which contain the names asked for"
            else:
                refused[arm] = "its model reads no text and a product name has no prototype"
        elif task == "label" and space == "image":
            eligible[arm] = "text"
        elif task == "label" and space == "text":
            missing = [c for c in columns if c not in hidden]
            if missing:
                refused[arm] = (f"its sentences contain the labels asked for ({', '.join(missing)}): run under "
                                f"protocol withheld with them withheld (--protocol withheld --labels "
                                f"{','.join(columns)})")
            else:
                eligible[arm] = "text"
        elif task == "label":
            if arm in prototype_arms:
                eligible[arm] = "prototype"
            else:
                refused[arm] = ("its model reads no text: it takes the label task through prototypes fitted on "
                                "products outside the sample (none given)")
        else:  # composed: every arm takes the product; the colour word needs text or prototypes
            eligible[arm] = "product"
    fusing = [a for a in eligible if a in arms]
    if len(fusing) >= 2 and task != "item":
        eligible["fused"] = "fused"
    elif task == "item" and len(fusing) >= 2:
        eligible.update({m: m for m in FUSION_MODES})
    for mode in modes or ():
        if mode in refused:
            raise ConfigError(f"mode {mode!r} cannot take the {task} task: {refused[mode]}")
        if mode not in eligible:
            raise ConfigError(f"mode {mode!r} is not available for the {task} task here; choose from "
                              f"{list(eligible)}{params.suggest(mode, eligible)}")
    if modes is not None:
        eligible = {m: eligible[m] for m in modes}
    if not eligible:
        need = ("an arm that embeds text into the photos' space (CLIP: --clip-model)" if task == "name" else
                "a clip arm, the text arm under protocol withheld, or prototypes for an arm that reads no text")
        raise ConfigError(f"no arm here can take the {task} task ({'; '.join(f'{a}: {r}' for a, r in refused.items())}); "
                          f"it needs {need}")
    if task == "composed" and protocol == "withheld":
        missing = [c for c in columns if c not in hidden]
        if missing:
            raise ConfigError(f"the composed task under protocol withheld needs {', '.join(missing)} withheld from "
                              "the sentences (--labels)")
    return eligible, refused


@dataclass
class TaskRun:
    """The per-query values of one task run, and how they were obtained.

    ``per_query`` maps (mode, metric, label) -> values over the queries (NaN: not scored), ready for
    :func:`~.significance.compare_modes`; ``kinds`` says how each mode's queries were made, ``skipped``
    why the other arms did not take the task, ``settings`` what was asked (JSON-ready).
    """

    task: str
    protocol: str
    k: int
    per_query: dict[tuple[str, str, str], np.ndarray] = field(default_factory=dict)
    kinds: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    def add(self, mode: str, label: str, values: Mapping[str, np.ndarray]) -> None:
        for metric, v in values.items():
            self.per_query[(mode, metric, label)] = np.asarray(v, dtype=np.float64)

    def table(self, n_boot: int = 1000, seed: int = 0) -> pd.DataFrame:
        """Tidy records: ``protocol, task, mode, query, metric, label, value, ci_low, ci_high, n_queries,
        k``, means with percentile-bootstrap 95% intervals over the queries."""
        params.check_n_boot(n_boot)
        rows = []
        for (mode, metric, label), v in self.per_query.items():
            lo, hi = bootstrap_ci(v, n_boot=n_boot, seed=seed)
            scored = int((~np.isnan(v)).sum())
            rows.append(dict(protocol=self.protocol, task=self.task, mode=mode, query=self.kinds.get(mode, ""),
                             metric=metric, label=label, value=float(np.nanmean(v)) if scored else float("nan"),
                             ci_low=lo, ci_high=hi, n_queries=scored, k=self.k))
        return pd.DataFrame(rows, columns=COLUMNS)


def _topk(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
    """Top-k positions of score rows [m, n] (ties by position), ``exclude`` (one position per row) left out."""
    if exclude is not None:
        scores = scores.copy()
        scores[np.arange(len(scores)), exclude] = -np.inf
    return select_topk(scores, k)[0]


def _fusion_weights(searcher: Searcher, arms: Sequence[str]) -> dict[str, float]:
    """The recommender's fusion weights of ``arms``, renormalised (equal when they are all 0)."""
    w = {a: float(searcher.rec.weights.get(a, 0.0)) for a in arms}
    return params.check_weights(w if sum(w.values()) > 0 else dict.fromkeys(arms, 1.0))


def _names(searcher: Searcher, withheld: Sequence[str]) -> list[str]:
    """The product names (the catalog's name column) in the recommender's order, with the withheld label
    values masked out of them under protocol withheld."""
    col = searcher.catalog.schema.name_column
    if col is None or col not in searcher.labels.columns:
        raise CatalogError("this task needs product names: the catalog has no name (first caption) column")
    names = searcher.labels[col].astype("object").where(searcher.labels[col].notna(), "").astype(str).tolist()
    if searcher.rec.protocol == "withheld" and withheld:
        mask = LabelMask.of(searcher.catalog.df, list(withheld))
        names = [mask.mask(n)[0] for n in names]
    return names


def _label_documents(searcher: Searcher, arm: str, kind: str, withheld: Sequence[str],
                     doc_weights: Mapping[str, float], progress: bool) -> np.ndarray:
    """The vectors label queries are ranked against in ``arm``: for an arm that embeds text beside the
    photos, ``normalise(w_image * photo + w_text * name)`` (the published document); else the arm's own."""
    x = searcher.rec.arms[arm].vectors
    if kind != "text" or text_space(arm) != "image" or not doc_weights.get("text"):
        return x
    names = _names(searcher, withheld)
    t = searcher.embed(names, arm, persist=True, progress=progress)
    t[np.array([not n.strip() for n in names])] = 0.0  # no name: the photo alone
    docs = doc_weights.get("image", 0.0) * x + doc_weights["text"] * t
    return (docs / np.maximum(np.linalg.norm(docs, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def label_task(
    searcher: Searcher,
    columns: Sequence[str] | None = None,
    modes: Sequence[str] | None = None,
    *,
    withheld: Sequence[str] = (),
    prototypes: Prototypes | None = None,
    cutoffs: Sequence[int] = KAGL_CUTOFFS,
    doc_weights: Mapping[str, float] = KAGL_DOC_WEIGHTS,
    progress: bool = True,
) -> TaskRun:
    """Label -> products over the recommender of ``searcher``: each distinct value of each of ``columns``
    (default :data:`KAGL_LABELS` the catalog has) among its products is a query; relevant = its products
    with that value. See the module for which arms take it and how (``withheld``: the columns the text
    arm's sentences were made without; ``prototypes``: fitted outside the sample, for arms that read no
    text). A value without a prototype in an arm scores 0 there (the arm cannot ask it)."""
    rec = searcher.rec
    cols = list(columns) if columns is not None else [c for c in KAGL_LABELS if c in searcher.labels.columns]
    missing = [c for c in cols if c not in searcher.labels.columns]
    if missing or not cols:
        raise CatalogError(f"label column(s) {missing or cols} not in the catalog ({list(searcher.labels.columns)})")
    ks = sorted({params.check_positive_int("cut-off", c) for c in cutoffs})
    params.check_k(ks[-1], len(rec) + 1)
    eligible, refused = task_modes("label", list(rec.arms), rec.protocol, columns=cols, withheld=withheld,
                                   prototype_arms=prototypes.arms if prototypes is not None else (), modes=modes)
    arms = [m for m in eligible if m in rec.arms]
    if prototypes is not None and any(eligible[a] == "prototype" for a in arms):
        overlap = prototypes.overlap(rec.ids)
        if overlap:
            log.warning("the prototypes were fitted on %d of the evaluated products: fit them outside the sample",
                        overlap)
    run = TaskRun("label", rec.protocol, ks[-1], kinds=eligible, skipped=refused,
                  settings={"columns": cols, "cutoffs": ks, "doc_weights": dict(doc_weights),
                            "withheld": list(withheld), "fusion": "zscore", "modes": list(eligible)})
    docs = {a: _label_documents(searcher, a, eligible[a], withheld, doc_weights, progress) for a in arms}
    w = _fusion_weights(searcher, arms) if "fused" in eligible else {}
    for column in tqdm(cols, desc="label task", disable=not progress):
        col = searcher.labels[column].reset_index(drop=True)
        codes, uniques = pd.factorize(col.astype("object").where(col.notna(), None), use_na_sentinel=True)
        values = np.asarray([str(v) for v in uniques], dtype=object)
        qcodes = np.arange(len(values), dtype=np.int64)
        fused = np.zeros((len(values), len(rec)), dtype=np.float32)
        for arm in arms:
            if eligible[arm] == "text":
                q = searcher.embed(list(values), arm)
                ok = np.ones(len(values), dtype=bool)
            else:
                assert prototypes is not None
                ok = np.array([(column, v) in prototypes.vectors.get(arm, {}) for v in values])
                q = np.zeros((len(values), docs[arm].shape[1]), dtype=np.float32)
                for i in np.flatnonzero(ok):
                    q[i] = prototypes.vector(arm, column, values[i])
            sims = q @ docs[arm].T
            pos = _topk(sims, ks[-1])
            scores = cutoff_metrics(pos, codes, qcodes, ks)
            run.add(arm, column, {m: np.where(ok, v, np.where(np.isnan(v), v, 0.0)) for m, v in scores.items()})
            if w.get(arm):
                fused[ok] += w[arm] * fusion.zscore(sims[ok])
        if "fused" in eligible:
            run.add("fused", column, cutoff_metrics(_topk(fused, ks[-1]), codes, qcodes, ks))
    return run


def name_task(
    searcher: Searcher,
    n_queries: int = NAME_QUERIES,
    seed: int = 0,
    modes: Sequence[str] | None = None,
    *,
    cutoffs: Sequence[int] = KAGL_CUTOFFS,
    progress: bool = True,
) -> TaskRun:
    """Name -> photo: ``n_queries`` distinct product names (sampled with ``seed``; all when there are
    fewer) as text queries against the photo vectors of every arm that embeds text beside the photos
    (CLIP); relevant = every product with exactly that name."""
    rec = searcher.rec
    params.check_positive_int("n_queries", n_queries)
    ks = sorted({params.check_positive_int("cut-off", c) for c in cutoffs})
    params.check_k(ks[-1], len(rec) + 1)
    eligible, refused = task_modes("name", list(rec.arms), rec.protocol, modes=modes)
    names = _names(searcher, ())
    codes, uniques = pd.factorize(pd.Series(names).where(pd.Series(names).str.strip() != "", None),
                                  use_na_sentinel=True)
    rng = np.random.default_rng(seed)
    order = np.argsort(np.asarray(uniques, dtype=str), kind="stable")  # sampled from the sorted names
    picked = np.sort(order[rng.choice(len(uniques), size=min(n_queries, len(uniques)), replace=False)])
    queries = [str(uniques[i]) for i in picked]
    run = TaskRun("name", rec.protocol, ks[-1], kinds=eligible, skipped=refused,
                  settings={"n_queries": len(queries), "n_requested": n_queries, "seed": seed, "cutoffs": ks,
                            "distinct_names": len(uniques), "fusion": "zscore", "modes": list(eligible)})
    arms = [m for m in eligible if m in rec.arms]
    w = _fusion_weights(searcher, arms) if "fused" in eligible else {}
    fused = np.zeros((len(queries), len(rec)), dtype=np.float32)
    for arm in tqdm(arms, desc="name task", disable=not progress):
        sims = searcher.embed(queries, arm, persist=True, progress=progress) @ rec.arms[arm].vectors.T
        run.add(arm, "productDisplayName" if _is_kaggle_name(searcher) else "name",
                cutoff_metrics(_topk(sims, ks[-1]), codes, picked, ks))
        if w.get(arm):
            fused += w[arm] * fusion.zscore(sims)
    if "fused" in eligible:
        run.add("fused", "productDisplayName" if _is_kaggle_name(searcher) else "name",
                cutoff_metrics(_topk(fused, ks[-1]), codes, picked, ks))
    return run


def _is_kaggle_name(searcher: Searcher) -> bool:
    return searcher.catalog.schema.name_column == "productDisplayName"


# ----------------------------------------------------------------------------------------- composed queries
def composed_queries(
    labels: pd.DataFrame, n_queries: int, seed: int = 0, *, type_column: str = STYLE_LABEL,
    colour_column: str = COLOUR_LABEL, min_relevant: int = MIN_RELEVANT, exclude: Sequence[int] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n_queries`` composed queries over the products of ``labels`` (rows in ranking order):
    positions of products X (each once, none of ``exclude``) and colours C, drawn with ``seed``: C is a
    ``colour_column`` value other than X's with at least ``min_relevant`` products of X's ``type_column``
    in that colour."""
    params.check_positive_int("n_queries", n_queries)
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
        if composer is not None:
            mods = self.modifiers = {c: composer(str(c)) for c in pd.unique(colours)}
            for arm in dict.fromkeys(a for m in mods.values() for a in m.vectors):
                ok = np.array([arm in mods[c].vectors for c in colours])
                rows = np.zeros((len(colours), rec.arms[arm].vectors.shape[1]), dtype=np.float32)
                for i in np.flatnonzero(ok):
                    rows[i] = mods[colours[i]].vectors[arm]
                scores = np.zeros((len(colours), len(rec)), dtype=np.float32)
                if ok.any():
                    scores[ok] = part_scores(rec.arms[arm].vectors, rows[ok], cal)
                self.text[arm], self.placed[arm] = scores, ok

    def metrics(self, scores: np.ndarray, ok: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """P@k, R@k and MRR of score rows; queries a part cannot ask (``ok`` False) score 0."""
        out = cutoff_metrics(_topk(scores, self.k, self.x_pos), self.codes, self.qcodes, (self.k,), self.x_pos)
        if ok is not None:
            out = {m: np.where(ok | np.isnan(v), v, 0.0) for m, v in out.items()}
        return out

    def combine(self, weights: ComposedWeights) -> np.ndarray:
        total = np.zeros_like(next(iter(self.item.values())))
        for arm, w in weights.item.items():
            if w:
                total += w * self.item[arm]
        for arm, w in weights.text.items():
            if w and arm in self.text:
                total += w * self.text[arm]
        return total

    def precision(self, weights: ComposedWeights) -> float:
        return float(np.nanmean(self.metrics(self.combine(weights))[f"P@{self.k}"]))


def _tune(parts: _Parts, start: ComposedWeights, ladder: Sequence[float], passes: int = 3) -> ComposedWeights:
    """Coordinate ascent of mean precision@k over the weights of ``start`` on the ladder's values (ties keep
    the current value, so it is deterministic)."""
    item, text = dict(start.item), dict(start.text)
    best = parts.precision(ComposedWeights(item, text))
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
                    p = parts.precision(cand)
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
    them. The weights used are in ``settings``.
    """
    rec = searcher.rec
    params.check_k(k, len(rec))
    eligible, refused = task_modes("composed", list(rec.arms), rec.protocol, columns=[type_column, colour_column],
                                   withheld=withheld)
    text_arms = [a for a in searcher.modes if a in rec.arms]
    composer = (Composer(searcher if text_arms else None, prototypes)
                if text_arms or (prototypes is not None and prototypes.arms) else None)
    if composer is None:
        raise ConfigError("the composed task needs a way to place the colour word: an arm that embeds text "
                          "(text, clip) or prototypes for an arm that reads none (colour, image)")
    labels = searcher.labels.reset_index(drop=True)
    x_pos, colours = composed_queries(labels, n_queries, seed, type_column=type_column,
                                      colour_column=colour_column, min_relevant=min_relevant)
    if not len(x_pos):
        raise ConfigError(f"no composed query can be drawn: no {type_column} has {min_relevant} products in "
                          f"a second {colour_column}")
    pair = labels[type_column].astype(str) + "\x1f" + labels[colour_column].astype(str)
    pair = pair.where(labels[type_column].notna() & labels[colour_column].notna(), None)
    codes, uniq = pd.factorize(pair, use_na_sentinel=True)
    index = {v: i for i, v in enumerate(uniq)}
    qcodes = np.array([index[f"{labels[type_column].iloc[x]}\x1f{c}"] for x, c in zip(x_pos, colours)])
    parts = _Parts(searcher, composer, x_pos, colours, codes, qcodes, k)
    default = ComposedWeights(dict(rec.weights), {a: rec.weights.get(a, 0.0) for a in parts.text})
    tuned_on = 0
    if weights is None:
        n_val = n_validation if n_validation is not None else max(1, len(x_pos) // 2)
        vx, vc = composed_queries(labels, n_val, seed + 7919, type_column=type_column,
                                  colour_column=colour_column, min_relevant=min_relevant, exclude=x_pos)
        vq = np.array([index[f"{labels[type_column].iloc[x]}\x1f{c}"] for x, c in zip(vx, vc)], dtype=np.int64)
        start = ComposedWeights(dict(default.item), {a: default.text.get(a) or 1.0 for a in parts.text})
        weights = _tune(_Parts(searcher, composer, vx, vc, codes, vq, k), start, ladder)
        tuned_on = len(vx)
    kinds = {**{a: "X" for a in rec.arms}, **({"fused": "X"} if len(rec.arms) > 1 else {}),
             **{f"C:{a}": "C" for a in parts.text}, "X+C": "X+C", "X+C tuned": "X+C"}
    run = TaskRun("composed", rec.protocol, k, kinds=kinds, skipped=refused, settings={
        "n_queries": len(x_pos), "n_requested": n_queries, "seed": seed, "k": k, "type_column": type_column,
        "colour_column": colour_column, "min_relevant": min_relevant, "calibration": rec.calibration,
        "default_weights": default.to_dict(), "tuned_weights": weights.to_dict(), "tuned_on_queries": tuned_on,
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
    run.add("X+C tuned", label, parts.metrics(parts.combine(weights)))
    return run
