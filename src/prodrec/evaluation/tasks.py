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
* ``composed``: a product X and a colour word C; see :mod:`.composed`.

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
from ..core.vocab import FUSION_MODES
from ..data.text import LabelMask
from ..embed.registry import ARMS
from ..rank import fusion
from ..rank.compose import Prototypes
from ..rank.search import Searcher
from ..rank.topk import select_topk
from .retrieval import cutoff_metrics
from .runs import bootstrap_ci

log = logging.getLogger(__name__)

__all__ = [
    "KAGL_CUTOFFS",
    "KAGL_DOC_WEIGHTS",
    "KAGL_LABELS",
    "NAME_QUERIES",
    "TaskRun",
    "label_task",
    "leaderboard_runs",
    "name_task",
    "task_modes",
    "text_space",
    "top_positions",
]

#: The label columns the leaderboard asks for (its category1/2/3 are masterCategory, subCategory, articleType).
KAGL_LABELS: tuple[str, ...] = ("masterCategory", "subCategory", "articleType", "baseColour", "season", "usage")
#: The leaderboard's cut-offs: P@1, P@10, R@1, R@10; MRR over the top 10.
KAGL_CUTOFFS: tuple[int, ...] = (1, 10)
#: The leaderboard's document of the label task: ``normalise(0.9 * image + 0.1 * text)`` in CLIP's space.
KAGL_DOC_WEIGHTS: dict[str, float] = {"image": 0.9, "text": 0.1}
#: Product names sampled as queries of the name task.
NAME_QUERIES = 2000
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


def top_positions(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> np.ndarray:
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
            pos = top_positions(sims, ks[-1])
            scores = cutoff_metrics(pos, codes, qcodes, ks)
            run.add(arm, column, {m: np.where(ok, v, np.where(np.isnan(v), v, 0.0)) for m, v in scores.items()})
            if w.get(arm):
                fused[ok] += w[arm] * fusion.zscore(sims[ok])
        if "fused" in eligible:
            run.add("fused", column, cutoff_metrics(top_positions(fused, ks[-1]), codes, qcodes, ks))
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
                cutoff_metrics(top_positions(sims, ks[-1]), codes, picked, ks))
        if w.get(arm):
            fused += w[arm] * fusion.zscore(sims)
    if "fused" in eligible:
        run.add("fused", "productDisplayName" if _is_kaggle_name(searcher) else "name",
                cutoff_metrics(top_positions(fused, ks[-1]), codes, picked, ks))
    return run


def _is_kaggle_name(searcher: Searcher) -> bool:
    return searcher.catalog.schema.name_column == "productDisplayName"


def leaderboard_runs(
    searchers: Mapping[str, Searcher],
    columns: Sequence[str] | None = None,
    *,
    withheld: Mapping[str, Sequence[str]] | None = None,
    prototypes: Prototypes | None = None,
    name_queries: int = NAME_QUERIES,
    seed: int = 0,
    progress: bool = True,
) -> list[TaskRun]:
    """The leaderboard's tasks over experiments under several protocols (``searchers``: protocol ->
    searcher): the label task under every protocol where some arm can take it, and the name task where an
    arm embeds text beside the photos (once: its queries do not depend on the protocol). A protocol where
    no arm can take a task is left out, and logged with the reasons."""
    runs: list[TaskRun] = []
    named = False
    for protocol, searcher in searchers.items():
        hidden = list((withheld or {}).get(protocol, ()))
        try:
            runs.append(label_task(searcher, columns, withheld=hidden, prototypes=prototypes, progress=progress))
        except ConfigError as exc:
            log.warning("label task under protocol %s: %s", protocol, exc)
        if not named and any(text_space(a) == "image" for a in searcher.rec.arms):
            runs.append(name_task(searcher, name_queries, seed, progress=progress))
            named = True
    return runs
