"""One entry point that builds an index of any kind."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import VectorIndex, as_vectors
from .exact import ExactIndex
from .faiss_kinds import HNSWIndex, IVFIndex
from .kinds import check_kind, params_for, resolve_kind

__all__ = ["build_checked", "build_index"]


def build_index(vectors: np.ndarray, kind: str = "auto", *, params: Mapping[str, Any] | None = None,
                seed: int = 0, progress: bool = False,
                calibration_queries: np.ndarray | None = None) -> VectorIndex:
    """An index of ``kind`` over ``vectors`` [n, d] (float32, finite; rows of any norm).

    Parameters
    ----------
    vectors : array [n, d]
        The rows to index; an exact index uses a float32 C-contiguous array as it is (no copy).
    kind : {"exact", "ivf", "hnsw", "auto"}
        ``auto``: exact below :data:`AUTO_EXACT_MAX` rows, else :data:`AUTO_APPROX_KIND`.
    params : mapping, optional
        Parameters of the concrete kind (see :class:`IVFIndex`, :class:`HNSWIndex`); unknown names raise
        :class:`ConfigError`. With ``auto`` they apply only when the chosen kind takes them.
    seed : int
        Seeds the k-means sample and initialisation, HNSW levels and the calibration sample.
    progress : bool
        Draw a progress bar while adding vectors.
    calibration_queries : array [m, d], optional
        Queries like those the index will serve, to calibrate ``nprobe`` / ``efSearch`` with (see
        :meth:`IVFIndex.calibrate`); default: a sample of the rows themselves.
    """
    requested = check_kind(kind)
    x = as_vectors(vectors)
    concrete = resolve_kind(requested, len(x))
    return build_checked(x, concrete, params_for(requested, concrete, params), seed, progress, calibration_queries)


def build_checked(x: np.ndarray, kind: str, p: dict[str, Any], seed: int, progress: bool,
                  calibration_queries: np.ndarray | None = None) -> VectorIndex:
    """:func:`build_index` for checked vectors, a concrete kind and its checked params."""
    if kind == "exact":
        return ExactIndex.from_checked(np.asarray(x), p)  # arrays side by side: as one
    cls = IVFIndex if kind == "ivf" else HNSWIndex
    return cls.build_checked(x, p, seed, progress, calibration_queries)
