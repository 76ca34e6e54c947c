"""Experiment assembly: catalog -> sample -> every requested arm's embeddings (via the store) -> recommender.

:func:`build_experiment` is what the CLI and the notebooks call; it checks every argument before it loads or
embeds anything. Which arms exist, which are built by default and in what batches comes from the arm
registry (:mod:`prodrec.embed.registry`); the embedding itself from :mod:`prodrec.embed.embedding`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ..core import params
from ..core.errors import ConfigError, ModelUnavailable, UnknownIdError
from ..core.provenance import provenance
from ..core.vocab import LEARNED
from ..data.catalog import Catalog, load_catalog
from ..data.fetch import CACHE_DIR
from ..data.locate import find_data_dir
from ..data.text import LabelMask
from ..embed.arms import ArmSpec
from ..embed.embedding import ArmRunner, embed_arm, learned_embeddings, model_summary, open_store
from ..embed.encoders.backends import MODELS_FOLDER, check_backend, check_precision
from ..embed.encoders.base import Encoder
from ..embed.registry import ARMS, arm_names, requested_models
from ..embed.store import EmbeddingStore
from ..embed.vectors import Embeddings
from ..rank.export import ExportResult, export_table
from ..rank.index import IndexCache
from ..rank.lists import recommend_lists
from ..rank.recommender import Recommender
from ..rank.rules import Rules
from ..rank.search import Searcher
from ..rank.update import update_table

log = logging.getLogger(__name__)


@dataclass
class Experiment:
    """A catalog (or a sample of one), its arms' embeddings and the recommender over them.

    ``settings`` records how it was built (JSON-ready: it goes into every output's provenance), with each
    arm's model under ``<arm>_model`` and its model options under ``arm_options``.
    """

    catalog: Catalog
    embeddings: dict[str, Embeddings]
    recommender: Recommender
    settings: dict[str, Any] = field(default_factory=dict)
    #: Arms that were asked for but left out, with the reason (a catalog without images, say).
    skipped: dict[str, str] = field(default_factory=dict)
    #: Vectors of products outside the sample the experiment made on the way, per arm: the learned arm's
    #: training products in the learned space (what its prototypes are fitted on: ``outside_prototypes``).
    outside: dict[str, Embeddings] = field(default_factory=dict)
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
            entry = ARMS[arm]
            spec = entry()
            model = self.settings.get(entry.settings_key) or "auto"
            options = dict((self.settings.get("arm_options") or {}).get(arm) or {})
            self._encoders[arm] = spec.build(spec.resolve(model, **options))
        return self._encoders[arm]

    def recommend(self, query_id: Any, k: int = 5, mode: str = "fused", rules: Rules | None = None,
                  alpha: float | None = None, weights: Mapping[str, float] | None = None) -> pd.DataFrame:
        """One product's top-k (:meth:`Recommender.recommend`), with ``rules`` (:class:`~prodrec.rank.rules.Rules`
        over this catalog's columns) applied inside the ranking when given; a list is shorter than k only
        when fewer products qualify."""
        if not rules:
            return self.recommender.recommend(query_id, k=k, mode=mode, alpha=alpha, weights=weights)
        bound = rules.bind(self.recommender.ids, self.catalog.labels, self.catalog.schema.name_column)
        return recommend_lists(self.recommender, query_id, k, [mode], bound, alpha, weights)[mode]

    def export(self, out: str | os.PathLike[str], k: int = 10, modes: Sequence[str] | None = None,
               rules: Rules | None = None, ids: Sequence[Any] | None = None, *, update: bool = False,
               captions: Sequence[str] | None = None, **options: Any) -> ExportResult:
        """The top-k of every product (or ``ids``) to the table ``out`` (``.parquet``, ``.csv``, ``.jsonl``),
        with this catalog's columns for ``rules`` and ``captions`` and this experiment's provenance:
        :func:`~prodrec.rank.export.export_table` (``arm_scores``, ``engine``, ``block``, ``progress``...).
        ``update=True`` brings an exported table up to date with this experiment's catalog instead, with the
        settings it was exported with (:func:`~prodrec.rank.update.update_table`)."""
        labels = self.catalog.labels
        if update:
            keep = {key: options[key] for key in ("engine", "engine_options", "progress", "budget") if key in options}
            return update_table(self.recommender, out, labels=labels, provenance=self.provenance(), **keep)
        return export_table(self.recommender, out, labels=labels, name_column=self.catalog.schema.name_column,
                            k=k, modes=modes, rules=rules, ids=ids, captions=list(captions or ()),
                            provenance=self.provenance(), **options)

    def searcher(self) -> Searcher:
        """A :class:`~prodrec.search.Searcher` over this experiment's text-capable arms."""
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
    models: Mapping[str, str | None] | None = None,
    arms: Sequence[str] | None = None,
    clip_model: str | None = None,
    colour_model: str | None = None,
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
    learned: bool | Mapping[str, Any] = False,
    protocol: str = "full",
    withheld: Sequence[str] | None = None,
    calibration: str = "auto",
    index: str = "exact",
    index_params: Mapping[str, Any] | None = None,
    fetch_images: bool = False,
    backend: str = "auto",
    precision: str = "fp32",
) -> Experiment:
    """Load (or take) a catalog, sample ``n_products`` with ``seed``, embed each arm, build a recommender.

    Which arms: ``models`` maps arm names of the registry (:data:`prodrec.embed.registry.ARMS`) to a model
    (``"auto"``, a model name, or None for off), e.g. ``models={"image": "auto", "colour": "auto"}``; arms
    it does not name keep their registry default (image and text ``auto``, the others off). ``arms`` names
    exactly the arms to build instead (each with its ``models`` entry or ``auto``); naming ``learned`` there
    is the same as ``learned=True``. ``image_model``, ``text_model``, ``clip_model`` and ``colour_model`` are
    the same as ``models`` entries (``models`` wins). An arm the catalog cannot feed (no images, no text
    columns), or an ``auto`` model that cannot be loaded (CLIP offline), is left out with the reason in
    ``exp.skipped`` and a warning.

    ``include_ids`` are added to the sample when chance left them out (query products of a gallery, say).
    ``catalog_options`` are :func:`~prodrec.data.catalog.load_catalog` settings (``id_column``,
    ``image_pattern``, ``text_columns``...). ``k`` and ``modes``, when given, are checked against the sample
    size and the arms the catalog can have before anything is embedded; with ``require_ids`` an unknown
    ``include_ids`` entry is an error before anything is embedded (else a warning).

    Beyond the paper: ``learned=True`` (or a dict of :func:`~prodrec.embed.learned.train_head` options:
    ``epochs``, ``seed``, ``label_weights``, ``max_train``...) adds the ``learned`` arm, trained on the
    products of the catalog *outside* the sample (so it is never evaluated on a product it was trained on)
    and kept in the store; ``max_train`` draws its products with the sample's ``seed``, the same for every
    training ``seed``. ``protocol="withheld"`` removes ``withheld`` columns (default: the catalog's label
    columns) from every product sentence, for the text arm and the learned arm's inputs alike, and masks
    their values inside the other text fields (whole words, case-insensitive: a description "Colour: Blue"
    loses "Blue" when the colour is withheld; see :class:`~prodrec.data.text.LabelMask`); how many were
    masked in the sample is ``settings["masked_label_values"]``.
    Image URLs are looked up in ``<store>/images``; ``fetch_images=True`` downloads the missing ones first
    (:func:`~prodrec.data.fetch.fetch_images`; the catalog's ``report.fetch`` says what happened).
    ``calibration`` is the fusion's score scale (see :class:`~prodrec.rank.recommender.Recommender`).
    ``index`` (``exact``, ``ivf``, ``hnsw``, ``auto``) is how many-query searches find neighbours (see
    :mod:`prodrec.rank.index`); approximate indexes are kept in ``<store>/indexes`` and reused while the
    vectors are the same.

    ``backend`` (``auto``, ``torch``, ``onnx``, ``openvino``) is where every arm's model runs (exports kept
    in ``<store>/models``; fp32 vectors are the torch ones on every backend); ``precision="int8"`` quantises
    the models, calibrated and checked on the catalog (see :mod:`prodrec.embed.encoders.backends`).
    """
    params.check_sample_size(n_products)
    check_backend(backend)
    check_precision(precision)
    params.check_positive_int("batch_size", batch_size)
    params.check_positive_int("chunk_size", chunk_size)
    params.check_alpha(alpha)
    params.check_engine(engine)
    params.check_index_kind(index)
    params.check_protocol(protocol)
    if k is not None:
        params.check_k(k)
    if weights is not None:
        params.check_weights(weights)
    given = {"image": image_model, "text": text_model, "clip": clip_model, "colour": colour_model,
             **dict(models or {})}
    if arms is not None:
        names = list(arms)
        unknown = [a for a in names if a not in ARMS]
        if unknown:
            raise ConfigError(f"unknown arm(s) {unknown}; known: {', '.join(ARMS)}"
                              f"{params.suggest(unknown[0], ARMS)}")
        if LEARNED in names and learned is False:
            learned = True
        given = {a: m for a, m in given.items() if a in names}
    wanted = requested_models(given, arms=[a for a in arms if not ARMS[a].trained] if arms is not None else None)
    store = open_store(store_dir)
    on_backend = {"backend": backend, "precision": precision, "models_dir": str(store.root / MODELS_FOLDER)}
    arm_options: dict[str, dict[str, Any]] = {name: dict(on_backend) for name in wanted}
    arm_options["image"] = {"weights": image_weights, "weights_path": None if resnet_weights is None
                            else str(resnet_weights), **on_backend}
    if catalog is None:
        options = {"image_cache": store.root / CACHE_DIR, "fetch": fetch_images, "progress": progress,
                   **dict(catalog_options or {})}
        catalog = load_catalog(find_data_dir(data_dir), **options)
    elif fetch_images:
        raise ConfigError("fetch_images applies to a catalog the experiment loads; for a catalog given as it "
                          "is, load it with load_catalog(..., image_cache=..., fetch=True)")
    full = catalog
    catalog = catalog.sample(n_products, seed=seed, stratify=stratify)
    if include_ids:
        _, unknown_ids = full.split_known(include_ids)
        if unknown_ids and require_ids:  # refused before anything is embedded
            why = [f"{i}: {full.dropped[str(i)]}" for i in unknown_ids if str(i) in full.dropped]
            where = f"the catalog of {len(full)} products" + (
                f" (dropped when loaded for want of a usable photo: {'; '.join(why[:5])}; keep such products "
                "for their text with require_images=False, CLI --keep-without-photo)" if why else "")
            raise UnknownIdError(unknown_ids, where, known=full.ids)
        if unknown_ids and len(unknown_ids) == len(include_ids):  # another catalog than the ids were written for
            log.info("none of the %d query id(s) is in this catalog (%s); pick queries from it with "
                     "Catalog.pick_queries", len(unknown_ids), ", ".join(unknown_ids[:5]))
        elif unknown_ids:
            log.warning("query id(s) not in the catalog, left out: %s", unknown_ids)
        catalog = catalog.with_ids(include_ids, full)
    if k is not None:
        params.check_k(k, len(catalog))

    withheld_cols = withheld_columns(catalog, protocol, withheld)
    text_fields = fields
    mask: LabelMask | None = None
    masked: dict[str, int] = {}
    if protocol == "withheld":
        if text_fields is None:
            text_fields = [c for c in catalog.text_columns if c not in withheld_cols]
        mask = LabelMask.of(full.df, withheld_cols)  # the values the whole catalog has
        _, masked = catalog.masked(mask, text_fields)

    def text_of(cat: Catalog, spec: ArmSpec) -> Catalog:
        """What a text arm reads under the withheld protocol: the label values masked in its fields."""
        if mask is None or spec.input_kind != "text":
            return cat
        return cat.masked(mask, text_fields)[0]

    def runner(name: str) -> ArmRunner:
        batch, chunk = ARMS[name].batch_sizes(batch_size, chunk_size)

        def run(spec: ArmSpec, model: str, cat: Catalog) -> Embeddings:
            emb = embed_arm(text_of(cat, spec), spec, model, store=store, batch_size=batch, chunk_size=chunk,
                            progress=progress, engine=engine, engine_options=engine_options,
                            **arm_options.get(name, {}))
            if mask is not None and spec.input_kind == "text":  # the learned head's key must see the mask
                emb.meta["masked_labels"] = list(withheld_cols)
            return emb

        return run

    specs: dict[str, ArmSpec] = {}
    skipped: dict[str, str] = {}
    for name, model in wanted.items():
        if not model:
            if not ARMS[name].opt_in:  # opt-in arms: not asking for one is not worth a note
                skipped[name] = "not requested"
            continue
        spec = ARMS[name]()
        if spec.input_kind == "text" and text_fields is not None:
            spec = ARMS[name](fields=text_fields)
        why_not = spec.unavailable(catalog)
        if not why_not and model == "auto":
            try:
                spec.resolve("auto", **arm_options.get(name, {}))
            except ModelUnavailable as exc:  # auto never fails for want of weights: the arm is left out
                why_not = f"auto: no {ARMS[name].model_noun} could be loaded ({str(exc).splitlines()[0]})"
        if why_not:
            skipped[name] = why_not
            log.warning("leaving out the %s arm: %s", name, why_not)
        else:
            specs[name] = spec
    plan = list(specs)
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
        params.check_mode(mode, plan, arm_names())
    embeddings = {name: runner(name)(spec, str(wanted[name]), catalog) for name, spec in specs.items()}
    outside: dict[str, Embeddings] = {}
    if LEARNED in plan:
        assert learn is not None
        inputs = [(spec, wanted[name], runner(name)) for name, spec in specs.items()]
        learned_arm = learned_embeddings(full, catalog, embeddings, inputs, store, progress=progress,
                                         sample_seed=seed, **learn)
        embeddings[LEARNED], outside[LEARNED] = learned_arm.sample, learned_arm.training
    rec = Recommender(embeddings, alpha=alpha, weights=weights, calibration=calibration, index=index,
                      index_cache=IndexCache(store.root / "indexes"), index_params=index_params, protocol=protocol)
    settings = {
        "n_products": n_products, "seed": seed, "stratify": stratify,
        **{ARMS[name].settings_key: model for name, model in wanted.items()},
        "image_weights": image_weights, "arm_options": arm_options, "alpha": alpha,
        "weights": dict(weights) if weights else None, "fusion_weights": rec.weights,
        "calibration": rec.calibration, "batch_size": batch_size, "store": str(store.root), "arms": plan,
        "engine": engine, "protocol": protocol, "withheld_fields": withheld_cols if protocol == "withheld" else [],
        "masked_label_values": masked,
        "text_fields": list(text_fields) if text_fields is not None else list(catalog.text_columns),
        "learned": learn, "index": rec.index_requested,
    }
    return Experiment(catalog, embeddings, rec, settings, skipped, outside=outside)


#: Fewest labelled training products the learned arm is trained on.
MIN_TRAIN = 200


@dataclass(frozen=True)
class ArmRequest:
    """Which arms a run asks for, decided before anything is loaded: each embedded arm's model (None: off)
    and whether the learned arm is trained on top of them."""

    models: dict[str, str | None]
    learned: bool

    @property
    def arms(self) -> list[str]:
        """The arms the request builds, the learned arm last."""
        return [a for a, m in self.models.items() if m] + ([LEARNED] if self.learned else [])

    def check(self, modes: Sequence[str] = (), weights: Mapping[str, float] | None = None) -> ArmRequest:
        """Refuse, before any work, a request without arms, modes its arms cannot give and weights of arms
        it does not build."""
        arms = self.arms
        if not [a for a in arms if a != LEARNED]:
            raise ConfigError("every arm is off (--arms, or --image-model none --text-model none): nothing to "
                              "rank with")
        for mode in modes:
            params.check_mode(mode, arms, arm_names())
        if weights:
            params.check_weights(weights, arms)
        return self


def request_arms(
    models: Mapping[str, str | None] | None = None,
    arms: Sequence[str] | None = None,
    *,
    learned: bool | None = None,
    evaluating: bool = False,
) -> ArmRequest:
    """The arms a run builds, from per-arm ``models`` (registry defaults for the others) or the exact list
    ``arms``.

    The learned arm is trained when ``arms`` names it, or, for an evaluation (``evaluating``), as soon as
    ``arms`` names two or more arms to fuse (it is then one more mode to compare); ``learned=False`` never
    trains it and ``learned=True`` always does.
    """
    named = None if arms is None else [a.strip() for a in arms if a.strip()]
    for a in named or ():
        if a not in ARMS:
            raise ConfigError(f"unknown arm {a!r} in --arms; choose from {', '.join(ARMS)}{params.suggest(a, ARMS)}")
    wanted = requested_models(models, arms=None if named is None else [a for a in named if not ARMS[a].trained])
    if learned is None:
        inputs = [a for a in named or () if not ARMS[a].trained]
        learned = named is not None and (LEARNED in named or (evaluating and len(inputs) >= 2))
    return ArmRequest(wanted, bool(learned))


def withheld_columns(catalog: Catalog, protocol: str, withheld: Sequence[str] | None) -> list[str]:
    """The label columns the ``withheld`` protocol takes out of the text (``withheld``, default the
    catalog's label columns); none under ``full``."""
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


