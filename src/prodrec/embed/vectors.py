"""Vectors with their product ids: :class:`Embeddings`, aligning several arms by id, and the store key of
a sentence."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import RankingError

__all__ = ["Embeddings", "align", "align_outer", "text_key"]

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """Vectors for a list of product ids, plus the metadata that says where they came from.

    Attributes
    ----------
    ids : np.ndarray
        Product ids ``[n]`` (strings), in the order they were asked for.
    vectors : np.ndarray
        ``float32 [n, dim]``; rows of failed products are zero.
    meta : dict
        Model provenance and how the vectors were obtained (see :meth:`EmbeddingStore.embed`).
    failures : dict
        ``id -> reason`` for products that could not be embedded (e.g. undecodable images).
    """

    ids: np.ndarray
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.ids) != len(self.vectors):
            raise ValueError(
                f"embeddings need ids [n] and vectors [n, dim]; got {self.ids.shape} and {self.vectors.shape}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        """Length of each vector."""
        return int(self.vectors.shape[1])

    def valid(self) -> Embeddings:
        """These embeddings without the rows of products that failed."""
        if not self.failures:
            return self
        bad = np.isin(self.ids.astype(str), list(self.failures))
        return Embeddings(self.ids[~bad], self.vectors[~bad], self.meta, self.failures)


def text_key(text: str) -> str:
    """The store key of one product's sentence: the first 32 hex digits of its sha256."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def align(arms: Mapping[str, Embeddings]) -> tuple[np.ndarray, dict[str, Embeddings]]:
    """Restrict every arm to the ids they all share (failed items dropped), in one sorted order; rows are
    never paired by position."""
    valid = {name: emb.valid() for name, emb in arms.items() if emb is not None}
    if not valid:
        raise RankingError("need at least one arm of embeddings")
    common: np.ndarray | None = None
    for emb in valid.values():
        ids = np.asarray([str(i) for i in emb.ids], dtype=object)
        common = ids if common is None else np.intersect1d(common, ids)
    assert common is not None
    common = np.sort(np.asarray(common, dtype=object))
    if len(common) == 0:
        raise RankingError(f"the arms {list(valid)} share no product ids; they cannot be fused")
    out = {}
    for name, emb in valid.items():
        dropped = len(emb) - len(common)
        if dropped:
            log.warning("aligning arms by id: %d product(s) of the %s arm kept out (not in every arm)", dropped, name)
        pos = pd.Index([str(i) for i in emb.ids]).get_indexer(common)
        out[name] = Embeddings(common, emb.vectors[pos], emb.meta, emb.failures)
    return common, out


def align_outer(arms: Mapping[str, Embeddings]) -> tuple[np.ndarray, dict[str, Embeddings], dict[str, np.ndarray]]:
    """Every id any arm has a vector for, sorted, with each arm's vectors over them: a product keeps every arm
    it has (a product whose photo failed keeps its text). Returns ``(ids, aligned, present)``: ``aligned``
    arms hold zero rows for the products they lack, ``present[arm]`` is a bool mask over ``ids`` and each
    aligned arm's ``failures`` say why a product lacks it (``"no vector"`` when the arm never saw it).

    Rows are never paired by position; when every arm has every product this equals :func:`align`.
    """
    valid = {name: emb.valid() for name, emb in arms.items() if emb is not None}
    if not valid:
        raise RankingError("need at least one arm of embeddings")
    id_sets = [{str(i) for i in e.ids} for e in valid.values()]
    if len(id_sets) > 1 and not set.intersection(*id_sets):  # surely ids written two ways, not a catalog
        raise RankingError(f"the arms {list(valid)} share no product ids; they cannot be fused (ids are "
                           "compared as strings: check how each arm's ids are written)")
    every = np.unique(np.concatenate([np.asarray([str(i) for i in e.ids], dtype=object) for e in valid.values()]))
    ids = np.sort(np.asarray(every, dtype=object))
    index = pd.Index(ids)
    out: dict[str, Embeddings] = {}
    present: dict[str, np.ndarray] = {}
    for name, emb in valid.items():
        rows = index.get_indexer([str(i) for i in emb.ids])
        x = np.zeros((len(ids), emb.dim), dtype=np.float32)
        x[rows] = emb.vectors
        mask = np.zeros(len(ids), dtype=bool)
        mask[rows] = True
        why = {str(i): str(r) for i, r in arms[name].failures.items()}
        failures = {str(i): why.get(str(i), "no vector") for i in ids[~mask]}
        if failures:
            log.info("%d product(s) have no %s vector; they are ranked on the arms they have", len(failures), name)
        out[name], present[name] = Embeddings(ids, x, emb.meta, failures), mask
    return ids, out, present
