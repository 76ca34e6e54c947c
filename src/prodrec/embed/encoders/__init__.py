"""Image and text encoders behind one small interface. Frameworks are imported only when built."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Any

from .backends import BACKENDS, PRECISIONS, BackendRequest
from .base import ImageEncoder, l2_normalize
from .efficientnet import EfficientNetLite0Encoder
from .resnet import ResNet50Encoder, WeightsUnavailable, resolve_resnet50_weights
from .text import SentenceEncoder

log = logging.getLogger(__name__)

IMAGE_MODELS = ("auto", "resnet50", "efficientnet-lite0")


def resolve_image_model(
    name: str = "auto", weights: str | None = "imagenet", weights_path: str | os.PathLike[str] | None = None
) -> tuple[str, str]:
    """Which concrete image model a request means, without loading it: (name, reason).

    ``auto``: ``resnet50`` (the paper's) when TensorFlow is installed and its ImageNet weights can be found
    (see :func:`~prodrec.encoders.resnet.resolve_resnet50_weights`), else ``efficientnet-lite0``.
    """
    name = name.lower().replace("_", "-")
    if name not in IMAGE_MODELS:
        raise ValueError(f"unknown image model {name!r}; choose one of {IMAGE_MODELS}")
    if name != "auto":
        return name, "requested"
    if importlib.util.find_spec("tensorflow") is None:
        reason = "resnet50 unavailable (TensorFlow is not installed)"
    elif weights is None:
        return "resnet50", "auto with random weights requested"
    else:
        try:
            _, source = resolve_resnet50_weights(weights_path)
            return "resnet50", f"paper model: ResNet-50 ImageNet weights from {source}"
        except WeightsUnavailable as exc:
            reason = f"resnet50 unavailable ({str(exc).splitlines()[0].split('. Supply')[0]})"
    _warn_once(f"image model auto: {reason}; using efficientnet-lite0 (ImageNet weights ship with its package)")
    return "efficientnet-lite0", reason


@functools.lru_cache(maxsize=None)
def _warn_once(message: str) -> None:
    """A fallback is worth one warning per process, not one per experiment built (the reason is also
    recorded in every output's provenance as ``choice_reason``)."""
    log.warning("%s", message)


def image_model_id(name: str, weights: str | None) -> str:
    """The store key of a concrete model: name plus ``imagenet`` or ``random``."""
    return f"{name}/{'imagenet' if weights else 'random'}"


def get_image_encoder(
    name: str = "auto",
    weights: str | None = "imagenet",
    weights_path: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> ImageEncoder:
    """Build an image encoder by name (``auto``, ``resnet50``, ``efficientnet-lite0``).

    ``weights=None`` gives random weights (only when asked for explicitly; every output records it).
    The auto choice and its reason are kept in ``encoder.choice_reason``. ``backend=`` (keyword): ``torch``
    (default), ``onnx``, ``openvino``, ``auto`` or a :class:`~prodrec.embed.encoders.backends.BackendRequest`
    (an exported backend needs one with ``models_dir``; ``embed_arm`` makes it).
    """
    concrete, reason = resolve_image_model(name, weights, weights_path)
    enc: ImageEncoder
    if concrete == "resnet50":
        enc = ResNet50Encoder(weights=weights, weights_path=weights_path, **kwargs)
    else:
        enc = EfficientNetLite0Encoder(weights=weights, **kwargs)
    enc.choice_reason = reason
    return enc


def get_text_encoder(name: str = "auto", device: str | None = None,
                     backend: BackendRequest | str | None = "torch") -> Any:
    """A :class:`~prodrec.encoders.text.SentenceEncoder` (``auto`` = the paper's model when reachable) on
    ``backend`` (see :func:`get_image_encoder`)."""
    return SentenceEncoder(name, device=device, backend=backend)


__all__ = [
    "BACKENDS",
    "IMAGE_MODELS",
    "PRECISIONS",
    "BackendRequest",
    "ImageEncoder",
    "get_image_encoder",
    "get_text_encoder",
    "image_model_id",
    "l2_normalize",
    "resolve_image_model",
]
