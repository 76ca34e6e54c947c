"""The paper's pipeline end to end: catalog -> embeddings (via the store) -> recommender.

:func:`image_embeddings` and :func:`text_embeddings` look in the store before loading any model, so a
warm re-run costs file reads, not model start-ups. :func:`build_experiment` is what the CLI and the
notebooks call.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .catalog import Catalog, load_catalog
from .data import find_data_dir
from .encoders import image_model_id, resolve_image_model
from .provenance import provenance
from .rank import Recommender
from .store import EmbeddingStore, Embeddings, fingerprint
from .text import DEFAULT_FIELDS, product_sentences

log = logging.getLogger(__name__)

STORE_ENV = "PRODREC_STORE"


def default_store_dir() -> Path:
    """``$PRODREC_STORE``, else ``/kaggle/working/prodrec-store`` on Kaggle, else ``~/.cache/prodrec/store``."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    if Path("/kaggle/working").is_dir():
        return Path("/kaggle/working/prodrec-store")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prodrec" / "store"


def _store(store: EmbeddingStore | str | os.PathLike[str] | None) -> EmbeddingStore:
    return store if isinstance(store, EmbeddingStore) else EmbeddingStore(store or default_store_dir())


def image_embeddings(
    catalog: Catalog,
    model: str = "auto",
    *,
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike[str] | None = None,
    store: EmbeddingStore | str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    progress: bool = True,
    encoder: Any = None,
) -> Embeddings:
    """Image embeddings of every product in ``catalog`` (from the store when they are there).

    Images that fail to decode are listed in ``emb.failures`` (id -> reason); use ``emb.valid()``.
    """
    if encoder is not None:
        concrete, reason, model_id = encoder.name, encoder.choice_reason, encoder.model_id
    else:
        concrete, reason = resolve_image_model(model, weights, weights_path)
        model_id = image_model_id(concrete, weights)
    built: dict[str, Any] = {"enc": encoder}

    def enc() -> Any:
        if built["enc"] is None:
            from .encoders import get_image_encoder

            built["enc"] = get_image_encoder(concrete, weights, weights_path)
            built["enc"].choice_reason = reason
        return built["enc"]

    paths = catalog.image_paths
    chunk_size = max(batch_size, chunk_size // batch_size * batch_size)  # chunks of whole batches

    def compute(start: int, stop: int) -> tuple[Any, dict[int, str]]:
        return enc().encode_with_failures(paths[start:stop], batch_size=batch_size, progress=False)

    dim = {"resnet50": 2048, "efficientnet-lite0": 1280}.get(concrete) or enc().dim
    emb = _store(store).get_or_compute(
        "image", model_id, catalog.image_fingerprint(), catalog.ids, dim, compute,
        meta=lambda: {**enc().describe(), "dataset": catalog.describe()},
        chunk_size=chunk_size, progress=progress,
    )
    emb.meta.setdefault("choice_reason", reason)
    if emb.failures:
        log.warning("%d image(s) could not be decoded and are left out, e.g. %s",
                    len(emb.failures), list(emb.failures.items())[:3])
    return emb


def text_embeddings(
    catalog: Catalog,
    model: str = "auto",
    *,
    fields: Sequence[str] | None = None,
    store: EmbeddingStore | str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: bool = True,
    encoder: Any = None,
) -> Embeddings:
    """Sentence embeddings of every product's metadata sentence (see :mod:`prodrec.text`)."""
    from .encoders.text import resolve_text_model

    fields = tuple(fields or [f for f in DEFAULT_FIELDS if f in catalog.df.columns])
    sentences = product_sentences(catalog.df, fields)
    if encoder is not None:
        model_id = encoder.model_id
    else:
        model_id, _, _ = resolve_text_model(model)
    built: dict[str, Any] = {"enc": encoder}

    def enc() -> Any:
        if built["enc"] is None:
            from .encoders import get_text_encoder

            built["enc"] = get_text_encoder(model)
        return built["enc"]

    def compute(start: int, stop: int) -> tuple[Any, dict[int, str]]:
        return enc().encode(sentences[start:stop], batch_size=batch_size, progress=False), {}

    fp = fingerprint(f"{i}\t{s}" for i, s in zip(catalog.ids, sentences))
    dims = {"sentence-transformers/bert-base-nli-mean-tokens": 768, "sentence-transformers/all-MiniLM-L6-v2": 384}
    dim = dims.get(model_id) or enc().dim
    return _store(store).get_or_compute(
        "text", model_id, fp, catalog.ids, dim, compute,
        meta=lambda: {**enc().describe(), "fields": list(fields), "dataset": catalog.describe()},
        chunk_size=chunk_size, progress=progress,
    )


def model_summary(emb: Embeddings | None) -> dict[str, Any] | None:
    """The provenance of one arm: model, weights and where they came from, cache status."""
    if emb is None:
        return None
    keys = ("name", "model_id", "dim", "weights", "weight_source", "choice_reason", "device", "fields",
            "created_at", "cache")
    out = {k: emb.meta[k] for k in keys if k in emb.meta}
    out["failures"] = len(emb.failures)
    return out


@dataclass
class Experiment:
    """A catalog (or sample), its embeddings and the recommender over them."""

    catalog: Catalog
    image: Embeddings | None
    text: Embeddings | None
    recommender: Recommender
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> Any:
        return self.catalog.df.set_index("id")

    def models(self) -> dict[str, Any]:
        return {"image": model_summary(self.image), "text": model_summary(self.text)}

    def provenance(self, **extra: Any) -> dict[str, Any]:
        return provenance(self.catalog, self.models(), settings=self.settings, **extra)


def build_experiment(
    data_dir: str | os.PathLike[str] | None = None,
    n_products: int | None = None,
    seed: int = 0,
    image_model: str | None = "auto",
    text_model: str | None = "auto",
    *,
    image_weights: str | None = "imagenet",
    resnet_weights: str | os.PathLike[str] | None = None,
    store_dir: str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    stratify: str | None = None,
    include_ids: Sequence[Any] = (),
    alpha: float = 0.5,
    fields: Sequence[str] | None = None,
    catalog: Catalog | None = None,
    progress: bool = True,
) -> Experiment:
    """Load (or take) a catalog, sample ``n_products`` with ``seed``, embed, and build a recommender.

    ``image_model`` / ``text_model`` set to None leave that arm out. ``include_ids`` are added to the
    sample when chance left them out (query products of a gallery, say).
    """
    if catalog is None:
        catalog = load_catalog(find_data_dir(data_dir))
    full = catalog
    catalog = catalog.sample(n_products, seed=seed, stratify=stratify)
    if include_ids:
        known, unknown = full.split_known(include_ids)
        if unknown:
            log.warning("query id(s) not in the catalog, left out: %s", unknown)
        sampled = set(catalog.ids.tolist())
        want = [i for i in known if i not in sampled]
        if want:
            info = dict(catalog.sample_info or {}, added_ids=[int(i) if hasattr(i, "__int__") else i for i in want])
            catalog = full.subset(list(catalog.ids) + want)
            catalog.sample_info = info
    store = _store(store_dir)
    img = txt = None
    if image_model:
        img = image_embeddings(catalog, image_model, weights=image_weights, weights_path=resnet_weights,
                               store=store, batch_size=batch_size, chunk_size=chunk_size, progress=progress)
    if text_model:
        txt = text_embeddings(catalog, text_model, fields=fields, store=store, chunk_size=max(chunk_size, 64),
                              progress=progress)
    rec = Recommender(img, txt, alpha=alpha)
    settings = {
        "n_products": n_products, "seed": seed, "stratify": stratify, "image_model": image_model,
        "text_model": text_model, "image_weights": image_weights, "alpha": alpha, "batch_size": batch_size,
        "store": str(store.root),
    }
    return Experiment(catalog, img, txt, rec, settings)
