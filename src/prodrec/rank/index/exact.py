"""Exact search: brute force with numpy BLAS, ties by smaller position."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...core.io import atomic_write
from ..topk import blocked_search
from .base import VectorIndex, as_vectors
from .kinds import check_params

__all__ = ["ExactIndex"]


class ExactIndex(VectorIndex, kind="exact"):
    """Exact top-k by inner product with numpy BLAS (:func:`prodrec.rank.topk.blocked_search`); ties by
    smaller position.

    numpy rather than faiss ``IndexFlatIP``: measured on this project's 2 cores (shared, noisy), one query at
    1,000,000 x 384 took 0.23 s with numpy's matrix-vector product vs 0.54 s with ``faiss.knn`` (0.10 vs
    0.19 s at 200,000 x 1280), and batches of 256 queries 62 vs 102 ms per query (16 vs 28 ms at
    200,000 x 1280); numpy also needs no copy of the vectors and gives the exact tie order directly
    (:func:`prodrec.rank.select_topk`).
    """

    def __init__(self, vectors: np.ndarray, params: Mapping[str, Any] | None = None) -> None:
        self._set(as_vectors(vectors), check_params("exact", params))

    def _set(self, x: np.ndarray, params: dict[str, Any]) -> None:
        self.params = params
        self.vectors = x
        self.ntotal, self.dim = x.shape

    @classmethod
    def from_checked(cls, x: np.ndarray, params: dict[str, Any]) -> ExactIndex:
        """An index over ``x`` as it is (already float32, C-contiguous and finite) with checked ``params``."""
        out = cls.__new__(cls)
        out._set(x, params)
        return out

    @property
    def nbytes(self) -> int:
        return int(self.vectors.nbytes)

    def _search(self, q: np.ndarray, k: int, effort: int) -> tuple[np.ndarray, np.ndarray]:
        return blocked_search(self.vectors, k, queries=q)

    def _save_data(self, folder: Path) -> None:
        atomic_write(folder / "vectors.npy", lambda f: np.save(f, self.vectors))

    @classmethod
    def _load_data(cls, folder: Path, meta: Mapping[str, Any]) -> ExactIndex:
        return cls(np.load(folder / "vectors.npy"), meta.get("params"))
