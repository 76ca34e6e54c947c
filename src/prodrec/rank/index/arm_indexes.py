"""The approximate indexes a recommender searches: one per arm, one over all arms side by side."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ...core.io import fingerprint
from .base import CALIBRATION_QUERIES, SideBySide, VectorIndex
from .build import build_index
from .cache import IndexCache

__all__ = ["FUSED_INDEX", "FUSED_TARGET_RECALL", "ArmIndexes"]

log = logging.getLogger(__name__)

#: Name of the index over the concatenated arms (fused modes).
FUSED_INDEX = "_fused"
#: Recall@5 the fused index's search effort is calibrated for: its weighted queries (standardised arms
#: weigh a low-spread arm up) stray further from the rows it was clustered on than one arm's queries do;
#: at the default 0.95, IVF lost 0.022 of fused precision@5 on 2,000 real products (text + colour), at 0.98
#: less than 0.01.
FUSED_TARGET_RECALL = 0.98


class ArmIndexes:
    """Approximate indexes of named arms' unit vectors, built (or loaded from ``cache``) on first use.

    Parameters
    ----------
    kind : {"ivf", "hnsw"}
        The concrete kind of every index.
    vectors : mapping arm -> float32 [n, d_a]
        Each arm's unit vectors, rows in the order of ``ids``; the fused index holds them side by side in
        this order.
    ids : array [n]
        The product ids of the rows (part of the cache key).
    models : mapping arm -> str
        Each arm's model id (part of the cache key).
    cache : IndexCache, optional
        Where built indexes are kept and reused; None: built in memory for this object only.
    params : mapping, optional
        Index parameters (see :func:`~prodrec.rank.index.build_index`); the fused index's ``target_recall``
        defaults to :data:`FUSED_TARGET_RECALL`.

    Attributes
    ----------
    status : dict
        Index name (arm or :data:`FUSED_INDEX`) -> how it was obtained (``built: ...``, ``loaded``...).
    """

    def __init__(self, kind: str, vectors: Mapping[str, np.ndarray], ids: np.ndarray, models: Mapping[str, str],
                 cache: IndexCache | None = None, params: Mapping[str, Any] | None = None) -> None:
        self.kind, self.cache = kind, cache
        self._vectors, self._ids, self._models = dict(vectors), ids, dict(models)
        self._params = dict(params or {})
        self._built: dict[str, VectorIndex] = {}
        self.status: dict[str, str] = {}

    def arm(self, name: str) -> VectorIndex:
        """The index of arm ``name``."""
        if name not in self._built:
            self._get(name, self._vectors[name], f"{name}: {self._models.get(name, '')}", dict(self._params), None)
        return self._built[name]

    def fused(self, queries_for: Callable[[np.ndarray], np.ndarray]) -> VectorIndex:
        """The index over the arms' vectors side by side (maximum inner product with weighted queries).

        ``queries_for(rows)`` gives the fused query rows of those product rows under the default weights;
        the first :data:`~prodrec.rank.index.base.CALIBRATION_QUERIES` products calibrate the search effort
        (only when the index is built or was calibrated with other queries).
        """
        if FUSED_INDEX not in self._built:
            x = SideBySide(list(self._vectors.values()))  # no concatenated copy while the index is built
            calib = queries_for(np.arange(min(len(self._ids), CALIBRATION_QUERIES)))
            what = "fused: " + ", ".join(f"{a}: {m}" for a, m in self._models.items())
            p = dict(self._params)
            if self.kind in ("ivf", "hnsw"):
                p.setdefault("target_recall", FUSED_TARGET_RECALL)
            self._get(FUSED_INDEX, x, what, p, calib)
        return self._built[FUSED_INDEX]

    def _get(self, name: str, x: np.ndarray, what: str, p: dict[str, Any], calib: np.ndarray | None) -> None:
        # The key is prodrec.core.io.fingerprint of (what, *ids). Indexes cached before it replaced a private
        # hash here (prodrec 0.3) have other keys: each is rebuilt once, under a new folder name (the old
        # folders are left in the cache's root, unused).
        key = fingerprint(itertools.chain([what], self._ids))  # streamed: no list of every id
        if self.cache is not None:
            self._built[name], self.status[name] = self.cache.get(
                f"{self.kind}-{name.strip('_')}-{key[:16]}", x, self.kind, key, p, calibration_queries=calib)
        else:
            self._built[name] = build_index(x, self.kind, params=p, calibration_queries=calib)
            self.status[name] = "built (not kept: no index cache)"
        log.info("%s index of %s: %s", self.kind, name, self.status[name])
