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

__all__ = ["Embeddings", "align", "text_key"]

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
