"""Store-level embedding: one arm's vectors for a catalog, from the per-product store where it has them.

:func:`embed_arm` asks the store first and builds a model only for the products it lacks, so a warm run (any
sample of an embedded catalog) costs a stat per photo and file reads, never a model start.
:func:`learned_embeddings` trains (or finds in the store) the learned arm's head on products outside a sample.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..core import io as _io
from ..core import params
from ..core.errors import ConfigError, StoreError
from ..core.io import fingerprint
from ..core.vocab import LEARNED
from ..data.catalog import Catalog
from ..data.schema import COLOUR_LABEL, STYLE_LABEL
from .arms import ArmSpec, Resolved
from .encoders.backends import MODELS_FOLDER, check_backend, check_precision
from .encoders.base import Encoder
from .encoders.int8 import calibration_set
from .learned import HEAD_PATH_KEY, LearnedHead, train_head
from .ray_engine import ray_compute
from .registry import arm_spec
from .store import EmbeddingStore
from .vectors import Embeddings, align

log = logging.getLogger(__name__)

#: Runs an arm's spec with a model over a catalog (what :func:`learned_embeddings` embeds training products with).
ArmRunner = Callable[[ArmSpec, str, Catalog], Embeddings]


STORE_ENV = "PRODREC_STORE"


def default_store_dir() -> Path:
    """``$PRODREC_STORE``, else ``/kaggle/working/prodrec-store`` on Kaggle, else ``~/.cache/prodrec/store``."""
    if os.environ.get(STORE_ENV):
        return Path(os.environ[STORE_ENV]).expanduser()
    if Path("/kaggle/working").is_dir():
        return Path("/kaggle/working/prodrec-store")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prodrec" / "store"


def open_store(store: EmbeddingStore | str | os.PathLike[str] | None = None) -> EmbeddingStore:
    """``store`` as an :class:`EmbeddingStore` (a folder path, or None for :func:`default_store_dir`)."""
    return store if isinstance(store, EmbeddingStore) else EmbeddingStore(store or default_store_dir())


def embed_arm(
    catalog: Catalog,
    arm: str | ArmSpec = "image",
    model: str = "auto",
    *,
    store: EmbeddingStore | str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    progress: bool = True,
    encoder: Encoder | None = None,
    force: bool = False,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    backend: str = "auto",
    precision: str = "fp32",
    **options: Any,
) -> Embeddings:
    """Vectors of one arm for every product of ``catalog``, from the store where it has them.

    ``model`` is ``auto`` or a model name (see :data:`prodrec.embed.arms.MODELS`); ``encoder`` uses an already
    built encoder instead. ``options`` go to the arm's model resolution (``weights``, ``weights_path``).
    Products whose input fails (an undecodable photo) are listed in ``emb.failures``; use ``emb.valid()``.
    ``engine="ray"`` computes the missing vectors on a Ray cluster (``engine_options``: ``address``,
    ``workers``, ``gpus_per_worker``; see :mod:`prodrec.embed.ray_engine`) into the same store.
    ``backend`` (``auto``, ``torch``, ``onnx``, ``openvino``) is where the model runs, its exports kept in
    ``<store>/models`` (or the ``models_dir`` option); fp32 gives the torch vectors on every backend, under
    one store key. ``precision="int8"`` quantises the model, calibrated and checked on this catalog, and
    refuses one that moves precision@5 (see :mod:`prodrec.embed.encoders.backends` and ``.int8``).
    """
    params.check_positive_int("batch_size", batch_size)
    engine = params.check_engine(engine)
    params.check_positive_int("chunk_size", chunk_size)
    check_backend(backend)
    check_precision(precision)
    spec = arm if isinstance(arm, ArmSpec) else arm_spec(arm)
    why_not = spec.unavailable(catalog)
    if why_not:
        raise ConfigError(f"the {spec.name} arm cannot be built: {why_not}")
    st = open_store(store)
    models_dir = options.pop("models_dir", None)
    keys: list[str] | None = None
    if encoder is not None:
        resolved = Resolved(spec.name, encoder.name, encoder.model_id, encoder.dim, encoder.choice_reason, {})
    else:
        if spec.backends:
            options.update(backend=backend, precision=precision, n_items=len(catalog),
                           models_dir=str(models_dir or st.root / MODELS_FOLDER))
            if precision == "int8":  # drawn from this catalog by content; used only when no int8 model is kept
                keys = spec.keys(catalog, st, progress=progress)
                labels = {c: catalog.df[c].tolist() for c in catalog.label_columns if c in catalog.df}
                options["calibration"] = calibration_set(spec.inputs(catalog), keys, labels, kind=spec.input_kind,
                                                         source=f"{len(catalog)} products of {catalog.root}")
        resolved = spec.resolve(model, **options)
    built: dict[str, Encoder | None] = {"enc": encoder}

    def get_encoder() -> Encoder:
        enc = built["enc"]
        if enc is None:
            enc = built["enc"] = spec.build(resolved)
        return enc

    remote: Any = None  # the ray engine's compute (prodrec.embed.ray_engine.RayCompute): its actors build the model

    def meta() -> dict[str, Any]:
        described = remote.describe() if remote is not None else get_encoder().describe()
        reg = resolved.spec
        extra = {"preprocessing": reg.preprocessing, "why": reg.why} if reg else {}
        return {**described, "input": spec.input, **extra}

    if spec.input_kind == "image":  # chunks of whole batches of photos
        chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
    dim = resolved.dim or get_encoder().dim
    keys = keys if keys is not None else spec.keys(catalog, st, progress=progress)
    compute = spec.compute(catalog, get_encoder, batch_size)
    if engine == "ray":
        compute = remote = ray_compute(spec, catalog, resolved, batch_size=batch_size, encoder=encoder,
                                       **dict(engine_options or {}))
    try:
        emb = st.embed(
            spec.name, resolved.model_id, dim, [str(i) for i in catalog.ids], keys, compute, meta=meta,
            chunk_size=chunk_size, progress=progress, force=force, desc=f"{spec.name} embeddings",
        )
    finally:
        getattr(compute, "close", lambda: None)()
    emb.meta["engine"] = engine
    emb.meta["choice_reason"] = resolved.reason
    if spec.input_kind == "text":
        emb.meta["fields"] = list(spec.fields if spec.fields is not None else catalog.text_columns)
    if emb.failures:
        log.warning("%d product(s) have no %s vector (they keep the arms they have), e.g. %s",
                    len(emb.failures), spec.name, list(emb.failures.items())[:3])
    return emb


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
    encoder: Encoder | None = None,
) -> Embeddings:
    """Image vectors of every product in ``catalog`` (see :func:`embed_arm`)."""
    return embed_arm(catalog, arm_spec("image"), model, store=store, batch_size=batch_size, chunk_size=chunk_size,
                     progress=progress, encoder=encoder, weights=weights,
                     weights_path=None if weights_path is None else str(weights_path))


def text_embeddings(
    catalog: Catalog,
    model: str = "auto",
    *,
    fields: Sequence[str] | None = None,
    store: EmbeddingStore | str | os.PathLike[str] | None = None,
    batch_size: int = 64,
    chunk_size: int = 4096,
    progress: bool = True,
    encoder: Encoder | None = None,
) -> Embeddings:
    """Sentence vectors of every product's text columns (or ``fields``), see :func:`embed_arm`."""
    return embed_arm(catalog, arm_spec("text", fields=fields), model, store=store, batch_size=batch_size, chunk_size=chunk_size,
                     progress=progress, encoder=encoder)


_SUMMARY_KEYS = ("name", "model_id", "dim", "weights", "weight_source", "choice_reason", "device", "backend",
                 "backend_version", "precision", "fields", "input", "preprocessing", "why", "cache", "loaded",
                 "computed", "engine", "ray", "training")


def model_summary(emb: Embeddings | None) -> dict[str, Any] | None:
    """The provenance of one arm: model, weights and where they came from, how much came from the store."""
    if emb is None:
        return None
    out = {k: emb.meta[k] for k in _SUMMARY_KEYS if k in emb.meta}
    out["failures"] = len(emb.failures)
    return out


class LearnedArm(NamedTuple):
    """What :func:`learned_embeddings` returns: the evaluated products' learned vectors, and its training
    products' (all outside the sample: prototypes of label values in the learned space are fitted on them)."""

    sample: Embeddings
    training: Embeddings


def learned_embeddings(
    full: Catalog,
    sample: Catalog,
    inputs_of_sample: Mapping[str, Embeddings],
    inputs: Sequence[tuple[ArmSpec, str | None, ArmRunner]],
    store: EmbeddingStore,
    *,
    progress: bool = True,
    label_weights: Mapping[str, float] | None = None,
    max_train: int | None = None,
    sample_seed: int = 0,
    **train_options: Any,
) -> LearnedArm:
    """The ``learned`` arm's vectors of ``sample``: a head trained on the input arms' vectors of the products
    of ``full`` outside ``sample`` (weak labels: the catalog's label columns), kept in the store; and the
    vectors of those training products (:class:`LearnedArm`).

    ``max_train`` caps the training products at a draw seeded by ``sample_seed`` (the experiment's sample
    seed), never by the training ``seed``: every training seed of one experiment trains on the same products,
    so the seeds' spread is the training's own and their inputs are embedded once.

    The head is found again in ``<store>/learned/<fingerprint>/`` when its inputs (models, fields, training
    ids), labels and options are the same, so a re-run trains nothing.
    """
    sample_ids = set(map(str, sample.ids))
    train_cat = full.subset([i for i in map(str, full.ids) if i not in sample_ids])
    log.info("learned arm: embedding and training on the %d products outside the %d evaluated ones%s",
             len(train_cat) if max_train is None else min(max_train, len(train_cat)), len(sample_ids),
             "" if max_train is not None else " (cap with max_train / --max-train)")
    if max_train is not None:
        train_cat = train_cat.sample(params.check_positive_int("max_train", max_train), seed=sample_seed)
    train_emb = {spec.name: run(spec, model or "auto", train_cat) for spec, model, run in inputs}
    ids, aligned = align(train_emb)
    ids = [str(i) for i in ids]
    if sample_ids & set(ids):  # by construction impossible; kept as a guard, never an assert (python -O)
        raise ConfigError("the learned arm must never train on an evaluated product")
    label_cols = [c for c in (STYLE_LABEL, COLOUR_LABEL) if c in full.label_columns] or list(full.label_columns)
    if label_weights is not None:
        label_cols = list(label_weights)
    labels = full.labels.reindex(ids)[label_cols]
    models = {name: str(e.meta.get("model_id")) for name, e in aligned.items()}
    fields = {name: e.meta.get("fields") for name, e in aligned.items() if e.meta.get("fields")}
    masked = {name: e.meta["masked_labels"] for name, e in aligned.items() if e.meta.get("masked_labels")}
    settings = {"models": models, "fields": fields, "labels": label_cols,
                "label_weights": dict(label_weights or {}), "options": train_options}
    if masked:  # inputs read with label values masked (withheld protocol): another head
        settings["masked"] = masked
    key = fingerprint([_io.dumps(settings), *ids])
    folder = store.root / LEARNED / key
    head: LearnedHead | None = None
    cache = "hit"
    if (folder / "head.json").is_file():
        try:
            head = LearnedHead.load(folder)
        except StoreError as exc:
            log.warning("learned head in %s is damaged (%s); training it again", folder, exc)
    if head is None:
        cache = "miss"
        head = train_head({n: e.vectors for n, e in aligned.items()}, labels, ids=ids,
                          label_weights=label_weights, input_models=models, progress=progress, **train_options)
        head.save(folder)
    s_ids, s_aligned = align({name: inputs_of_sample[name] for name in head.arms})
    vectors = head.transform({name: e.vectors for name, e in s_aligned.items()})
    meta = {
        "name": "learned-head", "arm": LEARNED, "model_id": f"learned/{key[:16]}", "dim": int(vectors.shape[1]),
        "weights": "trained", "weight_source": f"store:{folder}", "cache": cache, "computed": len(s_ids),
        "loaded": 0, "input": f"the {', '.join(head.arms)} arms' vectors",
        "choice_reason": f"trained on {len(ids)} products outside the evaluated sample",
        "training": head.provenance(), "device": "cpu", HEAD_PATH_KEY: str(folder),
    }
    train_meta = {**meta, "computed": len(ids), "choice_reason": "the learned arm's training products (outside the "
                  "evaluated sample)"}
    training = Embeddings(np.asarray(ids, dtype=str), head.transform({n: e.vectors for n, e in aligned.items()}),
                          train_meta, {})
    return LearnedArm(Embeddings(np.asarray(s_ids, dtype=str), vectors, meta, {}), training)
