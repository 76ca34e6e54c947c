"""Where an encoder runs: its own framework, or a graph exported once and run by ONNX Runtime or OpenVINO.

Backends (``--backend`` / ``backend=``):

* ``torch``: the model's own framework, as before (PyTorch; TensorFlow for the Keras ResNet-50).
* ``onnx``: the model exported once to ONNX (opset :data:`~prodrec.embed.encoders.export.OPSET`, with the
  photo preprocessing or the sentence pooling inside the graph) and run by ONNX Runtime.
* ``openvino``: the same ONNX graph converted once to OpenVINO's format and run by OpenVINO in fp32.
* ``auto``: ``torch`` on a GPU; on a CPU the fastest exact backend installed (:data:`CPU_PREFERENCE`, as
  measured by ``python -m benchmarks --only backends``) once its export is kept in the store, or for a job
  large enough to pay for exporting (:data:`AUTO_MIN_ITEMS` inputs); else ``torch``. An export that fails
  under ``auto`` falls back to ``torch`` with a warning; under ``onnx``/``openvino`` it is an error.

**Exact by default, so fp32 vectors of every backend share one store key.** Every fp32 export is checked
against the framework on a probe batch before it is kept, and again each time a runtime opens it (min cosine
>= :data:`~prodrec.embed.encoders.export.EXACT_MIN_COSINE`), and the tests compare real photos and product
sentences with the torch vectors (min cosine >= 0.9999; max abs difference of the unit vectors about 1e-6).
Such differences are rounding, far below what moves a ranking, so an encoder's ``model_id`` does not name an
fp32 backend: a store filled by torch is read by ONNX Runtime and the reverse. An int8 model
(``--precision int8``, :mod:`~prodrec.embed.encoders.int8`) changes the vectors and gets its own ``model_id``.

Exported models are kept in ``<store>/models/`` (:mod:`~prodrec.embed.encoders.export`), built once and
reused; an encoder's provenance (``describe()``) names its backend, the runtime's version, the precision,
the folder and the check.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core import params
from ...core.errors import ConfigError, MissingDependency
from .base import ImageEncoder
from .export import (
    FAST_EXTRA,
    OPSET,
    RUNTIMES,
    Exportable,
    ExportError,
    Runtime,
    build_once,
    check_probe,
    convert_openvino,
    export_onnx_checked,
    folder_name,
    key_of,
    require_runtime,
    runtime_installed,
    runtime_version,
)
from .int8 import Calibration, int8_id, int8_model_id, quantize

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnx", "openvino")
#: The folder of a store that keeps exported models (``<store>/models``).
MODELS_FOLDER = "models"
PRECISIONS = ("fp32", "int8")
#: The exported runtimes, fastest first on a CPU, per kind of model (benchmarks/RESULTS.md, section backends:
#: photo models ran faster in ONNX Runtime, EfficientNet-Lite0 3.25x torch against OpenVINO's 2.81x and
#: ResNet-50 1.57x against 1.40x; MiniLM faster in OpenVINO, 1.64x against 1.50x).
CPU_PREFERENCE = {"image": ("onnx", "openvino"), "text": ("openvino", "onnx")}
#: ``auto`` makes a first export only for jobs of at least this many inputs (an export takes a few seconds,
#: ResNet-50's about a minute); an export already kept in the store is used for any job.
AUTO_MIN_ITEMS = 1000


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


def gpu_for_torch() -> bool:
    """A GPU torch can run on. The driver's files are looked at first, so a CPU machine imports no torch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    if not (Path("/proc/driver/nvidia/version").exists() or Path("/dev/nvidia0").exists()):
        return False
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch_device(torch) == "cuda"


def check_backend(backend: Any) -> str:
    """``backend`` is one of :data:`BACKENDS`."""
    return params.check_choice("backend", backend, BACKENDS)


def check_precision(precision: Any) -> str:
    """``precision`` is one of :data:`PRECISIONS`."""
    return params.check_choice("precision", precision, PRECISIONS)


@dataclass(frozen=True)
class BackendRequest:
    """What a caller asks of an encoder's backend; the encoder decides (:meth:`Backend.open`).

    ``models_dir`` keeps exported models (``<store>/models``); ``n_items`` is how many inputs the caller is
    about to embed (``auto`` makes a first export only for large jobs); ``calibration`` is the catalog
    sample an int8 model is calibrated and checked on (:func:`~prodrec.embed.encoders.int8.calibration_set`).
    """

    backend: str = "torch"
    precision: str = "fp32"
    models_dir: str | None = None
    n_items: int | None = None
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        check_backend(self.backend)
        check_precision(self.precision)

    @classmethod
    def of(cls, value: BackendRequest | str | None) -> BackendRequest:
        """A request from a backend name (``"onnx"``), a request, or None (``torch``)."""
        return value if isinstance(value, BackendRequest) else cls(backend=value or "torch")

    def model_id(self, base: str, key: str) -> str:
        """The store key of the vectors this request gives for the model ``base`` (export key ``key``):
        ``base`` in fp32 (every backend gives the same vectors), else the int8 model's own id."""
        if self.precision == "fp32":
            return base
        return int8_model_id(base, self.models_dir, key, self.calibration)

    def choose(self, key: str, device: str | None = None, kind: str = "image") -> tuple[str, str]:
        """(backend, reason) for the model of export key ``key``, without exporting anything."""
        backend = self.backend
        if self.precision == "int8":
            if backend in ("torch", "openvino"):
                raise ConfigError(f"--precision int8 is made with ONNX Runtime's quantiser: use --backend onnx "
                                  f"(or auto), not {backend}")
            require_runtime("onnx")
            return "onnx", f"int8 requested ({backend}: ONNX Runtime, calibrated on the catalog)"
        if backend == "torch":
            return "torch", "requested"
        if backend in RUNTIMES:
            require_runtime(backend)
            return backend, "requested"
        if device not in (None, "cpu"):
            return "torch", f"auto: device {device} (torch runs there)"
        if gpu_for_torch():
            return "torch", "auto: a GPU is present (torch runs there)"
        installed = [b for b in CPU_PREFERENCE.get(kind, CPU_PREFERENCE["image"]) if runtime_installed(b)]
        if not installed:
            return "torch", f"auto: no ONNX Runtime or OpenVINO installed ({FAST_EXTRA})"
        if self.models_dir is None:
            return "torch", "auto: no models folder to keep an export in"
        kept = [b for b in installed if self.kept(key, b)]
        if kept:
            return kept[0], f"auto: fastest exact backend installed on this CPU ({kept[0]}; export kept in the store)"
        if self.n_items is None or self.n_items < AUTO_MIN_ITEMS:
            return "torch", (f"auto: {self.n_items or 'a few'} inputs do not pay for a first export "
                             f"(from {AUTO_MIN_ITEMS})")
        return installed[0], f"auto: fastest exact backend installed on this CPU ({installed[0]})"

    def kept(self, key: str, backend: str) -> bool:
        """Whether the fp32 export ``backend`` runs is in the models folder (OpenVINO converts the ONNX
        export in a second or two, so a kept ONNX export counts for it)."""
        folders = {backend, "onnx"} if backend == "openvino" else {backend}
        return any((Path(str(self.models_dir)) / folder_name(key, b, "fp32") / "manifest.json").is_file()
                   for b in folders)


@dataclass
class Backend:
    """The backend an encoder runs on and, unless it is its framework, its opened exported graphs.

    ``name`` is what runs (``torch``, ``onnx``, ``openvino``); ``runtimes`` maps graph names to
    :class:`~prodrec.embed.encoders.export.Runtime` objects (empty for the framework); ``info`` is what
    :meth:`describe` adds to the encoder's provenance.
    """

    name: str
    reason: str
    precision: str = "fp32"
    runtimes: dict[str, Runtime] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def exported(self) -> bool:
        return bool(self.runtimes)

    @classmethod
    def open(cls, request: BackendRequest | str | None, model: Exportable, *, device: str | None = None,
             graphs: Sequence[str] = ("model",), what: str = "model") -> Backend:
        """Choose the backend for ``model`` and, unless it is the framework, export it (once, kept in the
        models folder) and open its graphs. Under ``auto`` a failing export falls back to the framework."""
        request = BackendRequest.of(request)
        name, reason = request.choose(model.export_key, device, model.kind)
        if name == "torch":
            return cls("torch", reason)
        if request.models_dir is None:
            raise ConfigError(f"--backend {name} keeps its exported model in a folder: pass models_dir "
                              "(embed_arm and build_experiment use <store>/models)")
        try:
            return cls._open(request, model, name, reason, graphs, what)
        except (ExportError, MissingDependency, OSError) as exc:  # OSError: a models folder it cannot write
            if request.backend != "auto" or request.precision != "fp32":
                raise
            log.warning("%s: %s; using torch", what, exc)
            return cls("torch", f"auto: the {name} export failed ({str(exc).splitlines()[0]})")

    @classmethod
    def _open(cls, request: BackendRequest, model: Exportable, name: str, reason: str, graphs: Sequence[str],
              what: str) -> Backend:
        models = Path(str(request.models_dir))
        fp32 = models / folder_name(model.export_key, "onnx", "fp32")
        exported = build_once(fp32, lambda tmp: export_onnx_checked(model, tmp, graphs), f"{what}: ONNX export")
        folder, files = fp32, {g: fp32 / f"{g}.onnx" for g in graphs}
        model.prepare_exported(exported["exported_with"])
        info: dict[str, Any] = {"backend": name, "backend_version": runtime_version(name), "backend_reason": reason,
                                "precision": request.precision, "opset": OPSET,
                                "exported_with": exported["exported_with"]}
        if request.precision == "int8":
            if tuple(graphs) != ("model",):
                raise ConfigError(f"--precision int8 is offered for the image and text arms' models, not {what}")
            folder, manifest = quantize(model, models, fp32, request.calibration, what)
            files = {"model": folder / "model.onnx"}
            info["int8"] = manifest["int8"]
        elif name == "openvino":
            folder = models / folder_name(model.export_key, "openvino", "fp32")
            build_once(folder, lambda tmp: convert_openvino(fp32, tmp, graphs), f"{what}: OpenVINO conversion")
            files = {g: folder / f"{g}.xml" for g in graphs}
        throughput = model.kind == "text"  # many short batches: one per OpenVINO stream
        runtimes = {g: Runtime(name, path, throughput=throughput) for g, path in files.items()}
        if request.precision == "fp32":  # the runtime here gives the framework's vectors (checked each time)
            info["export_check_min_cosine"] = round(check_probe(runtimes, folder), 7)
        info["export"] = str(folder)
        return cls(name, reason, request.precision, runtimes, info)

    def describe(self, framework: str = "torch") -> dict[str, Any]:
        """The encoder's provenance fields for its backend (``framework``: what runs when not exported)."""
        if not self.exported:
            return {"backend": framework, "backend_version": runtime_version(framework),
                    "backend_reason": self.reason, "precision": "fp32"}
        return dict(self.info)

    def model_id(self, base: str) -> str:
        """The store key of this encoder's vectors (see :meth:`BackendRequest.model_id`)."""
        if self.precision == "fp32":
            return base
        return int8_id(base, self.info["int8"]["calibration"]["fingerprint"])


class BackendImageEncoder(ImageEncoder):
    """An :class:`~prodrec.embed.encoders.base.ImageEncoder` that runs in its framework or on an exported
    graph taking the decoded photos as they are (uint8 ``[b, H, W, 3]``, input ``pixels``).

    A subclass sets its weights, calls :meth:`_open_backend` and loads its framework model only when that
    returns False; it implements :meth:`_framework_forward` and ``export_onnx``.
    """

    kind = "image"
    #: What runs when nothing is exported (``torch``; ``tensorflow`` for the Keras ResNet-50).
    framework = "torch"
    #: The exported graph that embeds photos.
    image_graph = "model"
    #: Photos per exported forward pass on a CPU (benchmarks, section backends).
    exported_micro_batch: int | None = 8

    def __init__(self) -> None:
        super().__init__()
        self.backend = Backend(self.framework, "not opened yet")
        self._runtime_override: Runtime | None = None

    def _open_backend(self, request: BackendRequest | str | None, device: str | None,
                      graphs: Sequence[str] = ("model",)) -> bool:
        """Choose and open the backend; True when an exported graph runs (the framework need not load)."""
        self.backend = Backend.open(request, self, device=device, graphs=graphs, what=self.name)
        if self.backend.exported:
            self.device = self.backend.runtimes[self.image_graph].device
            self.micro_batch = self.exported_micro_batch if self.device == "cpu" else None
        return self.backend.exported

    def prepare_exported(self, facts: Mapping[str, Any]) -> None:
        self.weight_source = str(facts.get("weight_source", self.weight_source))

    @property
    def base_model_id(self) -> str:
        """The store key of the framework's vectors (model and weights)."""
        return f"{self.name}/{self.weights}"

    @property
    def model_id(self) -> str:
        return self.backend.model_id(self.base_model_id)

    @property
    def export_key(self) -> str:
        return key_of(self.base_model_id, self.input_size)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **self.backend.describe(self.framework)}

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        return self._forward_many([batch])[0]

    def _forward_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        runtime = self._runtime_override or self.backend.runtimes.get(self.image_graph)
        if runtime is not None:
            return runtime.run_many([{"pixels": b} for b in batches])
        return [self._framework_forward(b) for b in batches]

    @abstractmethod
    def _framework_forward(self, batch: np.ndarray) -> np.ndarray:
        """uint8 RGB [b, H, W, 3] -> features, in the framework."""

    def probe_pixels(self) -> np.ndarray:
        """The probe batch an export is checked on: two seeded noise photos (any input shows a wrong graph)."""
        return np.random.default_rng(0).integers(0, 256, (2, self.input_size, self.input_size, 3), dtype=np.uint8)

    def calibration_feeds(self, inputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
        failures: dict[int, str] = {}
        return [{"pixels": batch[ok]} for _, batch, ok in self._batches(list(inputs), 16, None, failures) if ok.any()]

    def embed_exported(self, runtimes: Mapping[str, Runtime], inputs: Sequence[str]) -> np.ndarray:
        self._runtime_override = runtimes[self.image_graph]
        try:
            return self.encode_with_failures(list(inputs), progress=False)[0]
        finally:
            self._runtime_override = None
