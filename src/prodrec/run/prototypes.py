"""Label prototypes for an experiment's arms that read no text (:class:`~prodrec.rank.compose.Prototypes`):
fitted on the catalog's products **outside** the experiment's sample (for an evaluation: the label task's
prototype queries, the composed task's colour words), or on the sample itself (for browsing and the
``recommend --text`` command, where nothing is evaluated).

>>> full = prodrec.load_catalog(data_dir)
>>> exp = prodrec.build_experiment(catalog=full, n_products=5000, models={"colour": "auto"})
>>> protos = outside_prototypes(exp, full, ["baseColour"])        # colour words -> the colour arm
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

from ..core import params
from ..core.errors import ConfigError
from ..data.catalog import Catalog
from ..embed.embedding import embed_arm
from ..embed.registry import ARMS
from ..embed.vectors import Embeddings
from ..rank.compose import Prototypes
from .experiment import Experiment

log = logging.getLogger(__name__)

__all__ = ["catalog_prototypes", "outside_prototypes", "prototype_arms"]


def prototype_arms(exp: Experiment, arms: Sequence[str] | None = None) -> list[str]:
    """The arms of ``exp`` that can have prototypes: arms whose model reads no text, embedded ones and
    trained ones whose training products' vectors the experiment kept (``exp.outside``: the learned arm);
    ``arms`` restricts them (naming another arm is an error)."""
    able = [a for a in exp.embeddings if a in ARMS and not ARMS[a].text_query
            and (not ARMS[a].trained or a in exp.outside)]
    if arms is None:
        return able
    wrong = [a for a in arms if a not in able]
    if wrong:
        raise ConfigError(f"prototypes are for arms that read no text; {wrong} cannot have them (here: {able})")
    return list(arms)


def _columns(exp: Experiment, catalog: Catalog, columns: Sequence[str] | None) -> list[str]:
    cols = list(columns) if columns is not None else list(exp.catalog.label_columns)
    missing = [c for c in cols if c not in catalog.df.columns]
    if missing or not cols:
        raise ConfigError(f"prototype column(s) {missing or cols} not in the catalog ({list(catalog.df.columns)})")
    return cols


def outside_prototypes(exp: Experiment, catalog: Catalog, columns: Sequence[str] | None = None,
                       arms: Sequence[str] | None = None, *, max_products: int | None = None, seed: int = 0,
                       min_count: int = 1, members: bool = False, progress: bool = True) -> Prototypes:
    """Prototypes of ``columns`` (default: the label columns) in ``exp``'s arms that read no text, fitted on
    the products of ``catalog`` (the one ``exp`` was sampled from) outside its sample: at most
    ``max_products`` of them (a seeded draw), embedded through the experiment's store and models. The
    learned arm's are fitted on those of its training products (``exp.outside``). ``members`` keeps the
    products' vectors for near prototypes (:meth:`~prodrec.rank.compose.Prototypes.near`)."""
    names = prototype_arms(exp, arms)
    if not names:
        raise ConfigError(f"this experiment has no arm that reads no text (arms: {list(exp.embeddings)}); "
                          "prototypes are for the image or colour arm")
    cols = _columns(exp, catalog, columns)
    inside = set(map(str, exp.catalog.ids)) | set(map(str, exp.recommender.ids))
    outside = np.array([i for i in map(str, catalog.ids) if i not in inside], dtype=object)
    if not len(outside):
        raise ConfigError(f"every product of the catalog ({len(catalog)}) is in the evaluated sample: prototypes "
                          "are fitted outside it; sample fewer products (--n / n_products)")
    subset = catalog.subset(outside.tolist())
    if max_products is not None:  # the draw the learned arm makes of its training products (same store rows)
        subset = subset.sample(params.check_positive_int("max_products", max_products), seed=seed)
    settings = exp.settings
    embeddings: dict[str, Embeddings] = {}
    for arm in names:
        entry = ARMS[arm]
        if entry.trained:  # vectors of its training products, never of the sample (they are outside it)
            kept = exp.outside[arm]
            rows = np.isin(np.asarray(kept.ids, dtype=str), np.asarray(list(map(str, subset.ids)), dtype=str))
            embeddings[arm] = Embeddings(kept.ids[rows], kept.vectors[rows], kept.meta)
            continue
        embeddings[arm] = embed_arm(subset, entry(), str(settings.get(entry.settings_key) or "auto"),
                                    store=settings.get("store"), batch_size=int(settings.get("batch_size", 32)),
                                    progress=progress, **dict((settings.get("arm_options") or {}).get(arm) or {}))
    log.info("prototypes of %s fitted on %d products outside the sample", cols, len(subset))
    return Prototypes.fit(embeddings, subset.labels, cols, min_count=min_count, members=members)


def catalog_prototypes(exp: Experiment, columns: Sequence[str] | None = None, arms: Sequence[str] | None = None,
                       min_count: int = 1) -> Prototypes:
    """Prototypes fitted on the experiment's own products (for browsing and ``recommend --text``; never
    for an evaluation of them)."""
    names = prototype_arms(exp, arms)
    if not names:
        raise ConfigError(f"this experiment has no arm that reads no text (arms: {list(exp.embeddings)})")
    return Prototypes.fit({a: exp.embeddings[a] for a in names}, exp.labels, _columns(exp, exp.catalog, columns),
                          min_count=min_count)
