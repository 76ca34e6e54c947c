"""Search by description: the paper's text query, and true text -> photo retrieval with CLIP.

The paper: "the text query is first passed through Sentence-Transformer to obtain its embedding, which is
then compared with the embeddings of all [products] using cosine similarity". :class:`Searcher` does that
over a recommender's arms whose model also embeds free text:

* ``mode="text"``: the description through the text arm's sentence-transformers model, ranked against the
  product sentences' vectors;
* ``mode="clip"``: the description through CLIP's text tower, ranked against the product **photos'** CLIP
  vectors (text -> image retrieval, the paper's future scope).

>>> searcher = exp.searcher()
>>> searcher.search("white sports shoes for women", k=5, filters={"gender": "Women"})
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import numpy as np
import pandas as pd

from ..data.catalog import Catalog
from ..embed.encoders.base import Encoder, TextEncoderLike
from ..core.errors import CatalogError, ConfigError
from .recommender import Recommender
from .topk import one_blas_thread
from ..embed.registry import text_query_arms
from ..embed.store import EmbeddingStore, text_key


class Searcher:
    """Free-text search over the text-capable arms of ``recommender``.

    ``encoder(arm)`` returns that arm's model (built lazily, only when a description is new). Query vectors
    are cached in the process and, with a ``store``, read from the embedding store (arm ``<arm>-query``,
    keyed by the description's hash) where ``search(..., persist=True)`` kept them, so a re-run of the same
    descriptions (a notebook's gallery, a repeated CLI query) loads no model.
    """

    def __init__(self, recommender: Recommender, catalog: Catalog, encoder: Callable[[str], Encoder],
                 store: EmbeddingStore | None = None) -> None:
        self.rec = recommender
        self.catalog = catalog
        self._encoder = encoder
        self.store = store
        self.labels = catalog.labels.reindex(recommender.ids)
        self._model_ids: dict[str, str] = {}
        self._embed = functools.lru_cache(maxsize=256)(self._embed_uncached)

    def remember_models(self, model_ids: Mapping[str, str]) -> Searcher:
        """The store ids of the arms' models (needed to keep query vectors in the store)."""
        self._model_ids.update(model_ids)
        return self

    @property
    def modes(self) -> list[str]:
        """The arms a description can be searched against (``clip`` first when present)."""
        return [m for m in sorted(text_query_arms(), key=lambda a: a != "clip") if m in self.rec.arms]

    def default_mode(self) -> str:
        if not self.modes:
            raise ConfigError(f"search needs a text or clip arm; this recommender has {list(self.rec.arms)}")
        return self.modes[0] if "clip" in self.modes else "text"

    def _embed_uncached(self, mode: str, text: str, persist: bool) -> np.ndarray:
        """The description's vector: from the store when it was kept there, else computed (and kept when
        ``persist``)."""
        model_id, dim = self._model_ids.get(mode), self.rec.arms[mode].vectors.shape[1]
        key = text_key(text)
        if self.store is not None and model_id:
            found, vectors, _ = self.store.lookup(f"{mode}-query", model_id, [key], [key], dim)
            if found[0]:
                return vectors[0]

        def compute(_: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
            enc = cast(TextEncoderLike, self._encoder(mode))
            return enc.encode([text], batch_size=1, progress=False), {}

        if persist and self.store is not None and model_id:
            return self.store.embed(f"{mode}-query", model_id, dim, [key], [key], compute, progress=False).vectors[0]
        return compute(np.zeros(1))[0][0]

    def check_mode(self, mode: str | None) -> str:
        """``mode`` (default :meth:`default_mode`) if a description can be embedded by that arm's model."""
        mode = mode or self.default_mode()
        if mode not in self.modes:
            raise ConfigError(f"cannot search with mode {mode!r}: searchable arms here are {self.modes} "
                              "(the image arm's model cannot read text; add --clip-model for photo search)")
        return mode

    def embed(self, texts: Sequence[str], mode: str | None = None, persist: bool = False, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """Unit vectors ``[m, d]`` of ``texts`` by the model of arm ``mode`` (default :meth:`default_mode`):
        label values, product names or query modifiers (:mod:`.compose`, :mod:`prodrec.evaluation.tasks`).
        Repeated texts are embedded once; with a ``store``, vectors kept there are read back and, with
        ``persist``, new ones are kept (arm ``<mode>-query``, keyed by the text's hash)."""
        mode = self.check_mode(mode)
        clean = [" ".join(str(t).split()) for t in texts]
        uniq = list(dict.fromkeys(clean))
        if len(uniq) <= 1:
            vecs = np.stack([self._embed(mode, t, persist) for t in uniq]) if uniq else np.zeros((0, 1))
        else:
            vecs = self._embed_many(mode, uniq, persist, batch_size, progress)
        vecs = np.asarray(vecs, dtype=np.float32)
        vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        row = {t: i for i, t in enumerate(uniq)}
        return vecs[[row[t] for t in clean]] if clean else vecs[:0]

    def _embed_many(self, mode: str, texts: list[str], persist: bool, batch_size: int, progress: bool) -> np.ndarray:
        keys = [text_key(t) for t in texts]

        def compute(pos: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
            enc = cast(TextEncoderLike, self._encoder(mode))
            return enc.encode([texts[i] for i in pos], batch_size=batch_size, progress=progress), {}

        model_id, dim = self._model_ids.get(mode), self.rec.arms[mode].vectors.shape[1]
        if self.store is not None and model_id:
            if persist:
                return self.store.embed(f"{mode}-query", model_id, dim, keys, keys, compute, progress=progress,
                                        desc=f"{mode} text queries").vectors
            found, vectors, _ = self.store.lookup(f"{mode}-query", model_id, keys, keys, dim)
            missing = np.flatnonzero(~found)
            if len(missing):
                vectors[missing] = compute(missing)[0]
            return vectors
        return compute(np.arange(len(texts)))[0]

    def mask(self, filters: Mapping[str, Any] | None) -> np.ndarray | None:
        """Products whose label columns equal ``filters`` (compared as text), as a mask over the ids."""
        if not filters:
            return None
        mask = np.ones(len(self.rec), dtype=bool)
        for col, value in filters.items():
            if col not in self.labels.columns:
                raise CatalogError(f"cannot filter on {col!r}: not a catalog column ({list(self.labels.columns)})")
            mask &= self.labels[col].astype("string").fillna("").str.lower().to_numpy() == str(value).lower()
        return mask

    def search(
        self, text: str, k: int = 5, mode: str | None = None, filters: Mapping[str, Any] | None = None,
        persist: bool = False,
    ) -> pd.DataFrame:
        """The ``k`` products closest to the description ``text``: rank, id, score and the catalog's
        caption and label columns. ``filters`` keep products whose columns equal the given values.
        ``persist`` keeps the description's vector in the store (figures and CLI calls that are re-run)."""
        if not isinstance(text, str) or not text.strip():
            raise ConfigError("search needs a non-empty description, e.g. 'white sports shoes for women'")
        mode = self.check_mode(mode)
        vec = self._embed(mode, " ".join(text.split()), persist)
        with one_blas_thread():  # a matrix-vector product gains nothing from more threads (see there)
            df = self.rec.rank_vector(vec, mode, k, allowed=self.mask(filters))
        cols = list(dict.fromkeys([*(self.catalog.schema.caption_columns or ()), *self.catalog.label_columns]))
        meta = self.labels.loc[df["id"], cols].reset_index(drop=True)  # k rows, not the whole table
        return pd.concat([df, meta], axis=1)
