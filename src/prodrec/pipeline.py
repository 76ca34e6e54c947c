"""The paper's pipeline end to end: catalog -> per-arm embeddings (via the store) -> recommender.

:func:`embed_arm` asks the per-product store first and builds a model only for the products it lacks, so a
warm run (any sample of an embedded catalog) costs a stat per photo and file reads, never a model start.
:func:`build_experiment` is what the CLI and the notebooks call; it checks every argument before it loads
or embeds anything.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from . import _io, params
from .arms import ArmSpec, ClipArm, ColourArm, ImageArm, Resolved, TextArm, arm_spec, model_spec
from .catalog import Catalog, load_catalog
from .data import find_data_dir
from .encoders.base import Encoder
from .errors import ConfigError, ModelUnavailable, StoreError, UnknownIdError
from .provenance import provenance
from .rank import Recommender, align
from .schema import COLOUR_LABEL, LEARNED, STYLE_LABEL
from .store import Embeddings, EmbeddingStore, fingerprint

if TYPE_CHECKING:
    from .search import Searcher

log = logging.getLogger(__name__)

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
    **options: Any,
) -> Embeddings:
    """Vectors of one arm for every product of ``catalog``, from the store where it has them.

    ``model`` is ``auto`` or a model name (see :data:`prodrec.arms.MODELS`); ``encoder`` uses an already
    built encoder instead. ``options`` go to the arm's model resolution (``weights``, ``weights_path``).
    Products whose input fails (an undecodable photo) are listed in ``emb.failures``; use ``emb.valid()``.
    ``engine="ray"`` computes the missing vectors on a Ray cluster (``engine_options``: ``address``,
    ``workers``, ``gpus_per_worker``; see :mod:`prodrec.scale`) into the same store.
    """
    params.check_positive_int("batch_size", batch_size)
    engine = params.check_engine(engine)
    params.check_positive_int("chunk_size", chunk_size)
    spec = arm if isinstance(arm, ArmSpec) else arm_spec(arm)
    why_not = spec.unavailable(catalog)
    if why_not:
        raise ConfigError(f"the {spec.name} arm cannot be built: {why_not}")
    if encoder is not None:
        resolved = Resolved(spec.name, encoder.name, encoder.model_id, encoder.dim, encoder.choice_reason, {})
    else:
        resolved = spec.resolve(model, **options)
    st = open_store(store)
    built: dict[str, Encoder | None] = {"enc": encoder}

    def get_encoder() -> Encoder:
        enc = built["enc"]
        if enc is None:
            enc = built["enc"] = spec.build(resolved)
        return enc

    remote: Any = None  # the ray engine's compute (prodrec.scale.RayCompute): its actors build the model

    def meta() -> dict[str, Any]:
        described = remote.describe() if remote is not None else get_encoder().describe()
        reg = model_spec(described["model_id"])
        extra = {"preprocessing": reg.preprocessing, "why": reg.why} if reg else {}
        return {**described, "input": spec.input, **extra}

    if isinstance(spec, ImageArm):  # chunks of whole batches (the clip arm is an image arm too)
        chunk_size = max(batch_size, chunk_size // batch_size * batch_size)
    dim = resolved.dim or get_encoder().dim
    keys = spec.keys(catalog, st, progress=progress)
    compute = spec.compute(catalog, get_encoder, batch_size)
    if engine == "ray":
        from .scale import ray_compute

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
    if isinstance(spec, TextArm):
        emb.meta["fields"] = list(spec.fields if spec.fields is not None else catalog.text_columns)
    if emb.failures:
        log.warning("%d product(s) of the %s arm failed and are left out, e.g. %s",
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
    return embed_arm(catalog, ImageArm(), model, store=store, batch_size=batch_size, chunk_size=chunk_size,
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
    return embed_arm(catalog, TextArm(fields), model, store=store, batch_size=batch_size, chunk_size=chunk_size,
                     progress=progress, encoder=encoder)


_SUMMARY_KEYS = ("name", "model_id", "dim", "weights", "weight_source", "choice_reason", "device", "fields",
                 "input", "preprocessing", "why", "cache", "loaded", "computed", "engine", "ray", "training")


def model_summary(emb: Embeddings | None) -> dict[str, Any] | None:
    """The provenance of one arm: model, weights and where they came from, how much came from the store."""
    if emb is None:
        return None
    out = {k: emb.meta[k] for k in _SUMMARY_KEYS if k in emb.meta}
    out["failures"] = len(emb.failures)
    return out


@dataclass
class Experiment:
    """A catalog (or a sample of one), its arms' embeddings and the recommender over them."""

    catalog: Catalog
    embeddings: dict[str, Embeddings]
    recommender: Recommender
    settings: dict[str, Any] = field(default_factory=dict)
    #: Arms that were asked for but left out, with the reason (a catalog without images, say).
    skipped: dict[str, str] = field(default_factory=dict)
    _encoders: dict[str, Encoder] = field(default_factory=dict, repr=False)

    @property
    def image(self) -> Embeddings | None:
        return self.embeddings.get("image")

    @property
    def text(self) -> Embeddings | None:
        return self.embeddings.get("text")

    @property
    def labels(self) -> pd.DataFrame:
        return self.catalog.labels

    def models(self) -> dict[str, Any]:
        names = dict.fromkeys(["image", "text", *self.embeddings])  # the paper's arms always listed
        return {name: model_summary(self.embeddings.get(name)) for name in names}

    def provenance(self, **extra: Any) -> dict[str, Any]:
        rec = self.recommender
        index = {"kind": rec.index_kind, "requested": rec.index_requested, "status": dict(rec.index_status)}
        return provenance(self.catalog, self.models(), settings=self.settings, skipped_arms=self.skipped,
                          index=index, **extra)

    def encoder(self, arm: str) -> Encoder:
        """The model of ``arm``, built once per experiment (to embed queries: free-text search)."""
        if arm not in self.embeddings:
            raise ConfigError(f"this experiment has no {arm} arm (arms: {list(self.embeddings)})")
        if arm not in self._encoders:
            spec = arm_spec(arm)
            model = self.settings.get(f"{arm}_model") or "auto"
            options = {"weights": self.settings.get("image_weights")} if arm == "image" else {}
            self._encoders[arm] = spec.build(spec.resolve(model, **options))
        return self._encoders[arm]

    def searcher(self) -> Searcher:
        """A :class:`~prodrec.search.Searcher` over this experiment's text-capable arms."""
        from .search import Searcher

        store = open_store(self.settings["store"]) if self.settings.get("store") else None
        ids = {arm: str(emb.meta["model_id"]) for arm, emb in self.embeddings.items() if emb.meta.get("model_id")}
        return Searcher(self.recommender, self.catalog, self.encoder, store).remember_models(ids)


def build_experiment(
    data_dir: str | os.PathLike[str] | None = None,
    n_products: int | None = None,
    seed: int = 0,
    image_model: str | None = "auto",
    text_model: str | None = "auto",
    *,
    clip_model: str | None = None,
    image_weights: str | None = "imagenet",
    resnet_weights: str | os.PathLike[str] | None = None,
    store_dir: EmbeddingStore | str | os.PathLike[str] | None = None,
    batch_size: int = 32,
    chunk_size: int = 1024,
    stratify: str | None = None,
    include_ids: Sequence[Any] = (),
    alpha: float = 0.5,
    weights: Mapping[str, float] | None = None,
    fields: Sequence[str] | None = None,
    catalog: Catalog | None = None,
    catalog_options: Mapping[str, Any] | None = None,
    k: int | None = None,
    modes: Sequence[str] | None = None,
    require_ids: bool = False,
    progress: bool = True,
    engine: str = "local",
    engine_options: Mapping[str, Any] | None = None,
    colour_model: str | None = None,
    learned: bool | Mapping[str, Any] = False,
    protocol: str = "full",
    withheld: Sequence[str] | None = None,
    calibration: str = "auto",
    index: str = "exact",
    index_params: Mapping[str, Any] | None = None,
) -> Experiment:
    """Load (or take) a catalog, sample ``n_products`` with ``seed``, embed each arm, build a recommender.

    ``image_model`` / ``text_model`` set to None leave that arm out; ``clip_model`` (a CLIP checkpoint name
    or folder, or ``auto``) adds the CLIP arm. An arm the catalog cannot feed (no images, no text columns),
    or an ``auto`` CLIP that cannot be loaded, is left out with the reason in ``exp.skipped`` and a warning.
    ``include_ids`` are added to the sample when chance left them out (query products of a gallery, say).
    ``catalog_options`` are :func:`~prodrec.catalog.load_catalog` settings (``id_column``, ``image_pattern``,
    ``text_columns``...). ``k`` and ``modes``, when given, are checked against the sample size and the arms the
    catalog can have before anything is embedded; with ``require_ids`` an unknown ``include_ids`` entry is an
    error before anything is embedded (else a warning).

    Beyond the paper: ``colour_model="auto"`` adds the training-free colour arm; ``learned=True`` (or a dict
    of :func:`~prodrec.learned.train_head` options: ``epochs``, ``seed``, ``label_weights``...) adds the
    ``learned`` arm, trained on the products of the catalog *outside* the sample (so it is never evaluated
    on a product it was trained on) and kept in the store. ``protocol="withheld"`` removes ``withheld``
    columns (default: the catalog's label columns) from every product sentence, for the text arm and the
    learned arm's inputs alike. ``calibration`` is the fusion's score scale (see
    :class:`~prodrec.rank.Recommender`). ``index`` (``exact``, ``ivf``, ``hnsw``, ``auto``) is how
    many-query searches find neighbours (see :mod:`prodrec.index`); approximate indexes are kept in
    ``<store>/indexes`` and reused while the vectors are the same.
    """
    params.check_sample_size(n_products)
    params.check_positive_int("batch_size", batch_size)
    params.check_positive_int("chunk_size", chunk_size)
    params.check_alpha(alpha)
    params.check_engine(engine)
    from .index import IndexCache, check_kind

    check_kind(index)
    run_on = {"engine": engine, "engine_options": engine_options}
    if k is not None:
        params.check_k(k)
    if weights is not None:
        params.check_weights(weights)
    store = open_store(store_dir)
    if catalog is None:
        catalog = load_catalog(find_data_dir(data_dir), **dict(catalog_options or {}))
    full = catalog
    catalog = catalog.sample(n_products, seed=seed, stratify=stratify)
    if include_ids:
        _, unknown = full.split_known(include_ids)
        if unknown and require_ids:  # refused before anything is embedded
            raise UnknownIdError(unknown, f"the catalog of {len(full)} products", known=full.ids)
        if unknown:
            log.warning("query id(s) not in the catalog, left out: %s", unknown)
        catalog = catalog.with_ids(include_ids, full)
    if k is not None:
        params.check_k(k, len(catalog))

    params.check_protocol(protocol)
    withheld_cols = _withheld_columns(catalog, protocol, withheld)
    text_fields = fields
    if protocol == "withheld" and text_fields is None:
        text_fields = [c for c in catalog.text_columns if c not in withheld_cols]
    img_opts = {"weights": image_weights, "weights_path": None if resnet_weights is None else str(resnet_weights)}

    def runner(batch: int, chunk: int, **opts: Any) -> Callable[[ArmSpec, str, Catalog], Embeddings]:
        return lambda s, m, cat: embed_arm(cat, s, m, store=store, batch_size=batch, chunk_size=chunk,
                                           progress=progress, **opts, **run_on)

    requested: list[tuple[ArmSpec, str | None, Callable[[ArmSpec, str, Catalog], Embeddings]]] = [
        (ImageArm(), image_model, runner(batch_size, chunk_size, **img_opts)),
        (TextArm(text_fields), text_model, runner(max(batch_size, 64), max(chunk_size, 64))),
        (ClipArm(), clip_model, runner(batch_size, chunk_size)),
        (ColourArm(), colour_model, runner(max(batch_size, 256), max(chunk_size, 1024))),
    ]
    skipped: dict[str, str] = {}
    plan = []
    for spec, model, _ in requested:
        if not model and isinstance(spec, (ClipArm, ColourArm)):
            continue  # opt-in arms: not asking for one is not worth a note
        why_not = "not requested" if not model else spec.unavailable(catalog)
        if not why_not and model == "auto" and isinstance(spec, ClipArm):
            try:
                spec.resolve("auto")
            except ModelUnavailable as exc:  # auto never fails for want of CLIP weights
                why_not = f"auto: no CLIP checkpoint could be loaded ({str(exc).splitlines()[0]})"
        if why_not:
            skipped[spec.name] = why_not
            if model:
                log.warning("leaving out the %s arm: %s", spec.name, why_not)
        else:
            plan.append(spec.name)
    if not plan:
        raise ConfigError("no arm can be built: " + "; ".join(f"{a}: {w}" for a, w in skipped.items()))
    learn = _learned_options(learned)
    if learn is not None:
        why_not = _why_no_learning(plan, full, catalog)
        if why_not:
            skipped[LEARNED] = why_not
            log.warning("leaving out the learned arm: %s", why_not)
        else:
            plan.append(LEARNED)
    if weights is not None:
        params.check_weights(weights, plan)
    for mode in modes or ():
        params.check_mode(mode, plan)
    embeddings = {spec.name: run(spec, model, catalog) for spec, model, run in requested
                  if spec.name in plan and model}
    if LEARNED in plan:
        assert learn is not None
        inputs = [(spec, model, run) for spec, model, run in requested if spec.name in embeddings]
        embeddings[LEARNED] = learned_embeddings(full, catalog, embeddings, inputs, store, progress=progress, **learn)
    rec = Recommender(embeddings, alpha=alpha, weights=weights, calibration=calibration, index=index,
                      index_cache=IndexCache(store.root / "indexes"), index_params=index_params)
    rec.protocol = protocol
    settings = {
        "n_products": n_products, "seed": seed, "stratify": stratify, "image_model": image_model,
        "text_model": text_model, "clip_model": clip_model, "colour_model": colour_model,
        "image_weights": image_weights, "alpha": alpha, "weights": dict(weights) if weights else None,
        "fusion_weights": rec.weights, "calibration": rec.calibration, "batch_size": batch_size,
        "store": str(store.root), "arms": plan, "engine": engine, "protocol": protocol,
        "withheld_fields": withheld_cols if protocol == "withheld" else [],
        "text_fields": list(text_fields) if text_fields is not None else list(catalog.text_columns),
        "learned": learn, "index": rec.index_requested,
    }
    return Experiment(catalog, embeddings, rec, settings, skipped)


#: Fewest labelled training products the learned arm is trained on.
MIN_TRAIN = 200


def _withheld_columns(catalog: Catalog, protocol: str, withheld: Sequence[str] | None) -> list[str]:
    if protocol != "withheld":
        return []
    cols = list(withheld) if withheld is not None else list(catalog.label_columns)
    unknown = [c for c in cols if c not in catalog.df.columns]
    if unknown:
        raise ConfigError(f"cannot withhold {unknown}: not columns of the catalog ({list(catalog.df.columns)})")
    if not cols:
        raise ConfigError("the withheld protocol needs label columns to withhold (--label-columns or --labels)")
    return cols


def _learned_options(learned: bool | Mapping[str, Any]) -> dict[str, Any] | None:
    if learned is False or learned is None:
        return None
    return {} if learned is True else dict(learned)


def _why_no_learning(plan: Sequence[str], full: Catalog, sample: Catalog) -> str | None:
    if len(plan) < 2:
        return f"it combines at least two arms; this run has {list(plan)}"
    if not full.label_columns:
        return "the catalog has no label columns to learn from"
    n_train = len(full) - len(set(map(str, sample.ids)) & set(map(str, full.ids)))
    if n_train < MIN_TRAIN:
        return (f"only {n_train} products lie outside the sample (need {MIN_TRAIN}); the learned arm trains only "
                "on products it does not rank: pass a smaller --n")
    return None


def learned_embeddings(
    full: Catalog,
    sample: Catalog,
    inputs_of_sample: Mapping[str, Embeddings],
    inputs: Sequence[tuple[ArmSpec, str | None, Callable[[ArmSpec, str, Catalog], Embeddings]]],
    store: EmbeddingStore,
    *,
    progress: bool = True,
    label_weights: Mapping[str, float] | None = None,
    max_train: int | None = None,
    **train_options: Any,
) -> Embeddings:
    """The ``learned`` arm's vectors of ``sample``: a head trained on the input arms' vectors of the products
    of ``full`` outside ``sample`` (weak labels: the catalog's label columns), kept in the store.

    The head is found again in ``<store>/learned/<fingerprint>/`` when its inputs (models, fields, training
    ids), labels and options are the same, so a re-run trains nothing.
    """
    from .learned import LearnedHead, train_head

    sample_ids = set(map(str, sample.ids))
    train_cat = full.subset([i for i in map(str, full.ids) if i not in sample_ids])
    log.info("learned arm: embedding and training on the %d products outside the %d evaluated ones%s",
             len(train_cat) if max_train is None else min(max_train, len(train_cat)), len(sample_ids),
             "" if max_train is not None else " (cap with max_train / --max-train)")
    if max_train is not None:
        train_cat = train_cat.sample(params.check_positive_int("max_train", max_train),
                                     seed=int(train_options.get("seed", 0)))
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
    key = fingerprint([_io.dumps({"models": models, "fields": fields, "labels": label_cols,
                                  "label_weights": dict(label_weights or {}), "options": train_options}),
                       *ids])
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
        "training": head.provenance(), "device": "cpu", "head_path": str(folder),
    }
    return Embeddings(np.asarray(s_ids, dtype=str), vectors, meta, {})
