"""Exported graphs: the folder each one is kept in, building it once, opening it in a runtime, checking it.

An exported model lives in ``<models_dir>/<model>-<hash>-<backend>-opset<N>-<precision>/`` (see
:func:`folder_name`): one ``<graph>.onnx`` (or OpenVINO ``<graph>.xml``/``.bin``) per graph, ``probe.npz``
(probe inputs and the framework's outputs on them) and ``manifest.json`` (versions, checks, file sizes and
checksums). :func:`build_once` builds a folder into a temporary sibling under a lock and renames it into
place, so a crash never leaves half a model and two processes never build it twice. :func:`check_probe`
compares a runtime with the framework on the probe batch; a mismatch is an :class:`ExportError`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ...core.errors import ConfigError, MissingDependency, ModelUnavailable
from ...core.io import file_lock, read_json_object, sha256_file, write_json
from .base import l2_normalize

log = logging.getLogger(__name__)

#: ONNX opset of every export.
OPSET = 17
#: An fp32 export is kept (and opened) only when its vectors match the framework's this closely: the
#: smallest cosine over the probe rows.
EXACT_MIN_COSINE = 0.9999
#: The Python module and the pip name of each exported runtime.
RUNTIMES = {"onnx": ("onnxruntime", "onnxruntime"), "openvino": ("openvino", "openvino")}
#: The pip names whose version identifies a framework or runtime in provenance.
_DISTRIBUTIONS = {"onnx": ("onnxruntime",), "openvino": ("openvino",), "torch": ("torch",),
                  "tensorflow": ("tensorflow", "tensorflow-cpu")}
FAST_EXTRA = "pip install 'prodrec[fast]'"


class ExportError(ModelUnavailable):
    """A model could not be exported, or its export does not give the framework's vectors."""


def runtime_installed(backend: str) -> bool:
    """Whether the runtime of an exported ``backend`` (``onnx``, ``openvino``) is importable (nothing is
    imported)."""
    return importlib.util.find_spec(RUNTIMES[backend][0]) is not None


def require_runtime(backend: str) -> None:
    """Raise :class:`MissingDependency` naming the extra when ``backend``'s runtime is not installed."""
    if not runtime_installed(backend):
        raise MissingDependency(f"--backend {backend} needs {RUNTIMES[backend][1]}: {FAST_EXTRA} "
                                "(or --backend torch)")


def runtime_version(name: str) -> str:
    """``"onnxruntime 1.32.0"``, ``"torch 2.13.0+cpu"``: what runs a backend (``onnx``, ``openvino``) or a
    framework (``torch``, ``tensorflow``), with its installed version."""
    for dist in _DISTRIBUTIONS.get(name, (name,)):
        try:
            return f"{dist} {importlib.metadata.version(dist)}"
        except importlib.metadata.PackageNotFoundError:
            continue
    return f"{name} (not installed)"


class Runtime:
    """One exported graph opened in ONNX Runtime (``onnx``) or OpenVINO (``openvino``, fp32 inference
    precision: never the bf16 some CPUs would pick by themselves): ``run(feeds)`` -> its first output.

    ``throughput``: OpenVINO splits the cores into streams and :meth:`run_many` keeps a request per stream in
    flight (MiniLM's sentence batches on 2 cores: about 1.1x its one-stream speed; for photo batches, whose
    decoding shares the cores, one stream over all cores was faster)."""

    def __init__(self, backend: str, path: Path, throughput: bool = False) -> None:
        self.backend, self.path = backend, Path(path)
        if backend == "onnx":
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider")
                         if p in ort.get_available_providers()]
            self._session = ort.InferenceSession(str(path), so, providers=providers)
            self.input_names = tuple(i.name for i in self._session.get_inputs())
            self.device = "cuda" if self._session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
        elif backend == "openvino":
            import openvino as ov

            hint = "THROUGHPUT" if throughput else "LATENCY"
            self._compiled = ov.Core().compile_model(
                str(path), "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": hint})
            self.input_names = tuple(i.get_any_name() for i in self._compiled.inputs)
            self.device = "cpu"
            self._queue: Any = None
        else:
            raise ConfigError(f"no exported runtime for backend {backend!r}; choose onnx or openvino")

    def run(self, feeds: Mapping[str, np.ndarray]) -> np.ndarray:
        """The graph's first output for ``feeds`` (inputs the graph does not take are left out)."""
        return self.run_many([feeds])[0]

    def run_many(self, batches: Sequence[Mapping[str, np.ndarray]]) -> list[np.ndarray]:
        """:meth:`run` of each of ``batches``, in order; OpenVINO keeps a request per stream in flight."""
        batches = [{k: v for k, v in feeds.items() if k in self.input_names} for feeds in batches]
        if self.backend == "onnx":
            return [np.asarray(self._session.run(None, feeds)[0]) for feeds in batches]
        if len(batches) == 1:
            return [np.array(self._compiled(batches[0])[0])]
        import openvino as ov

        if self._queue is None:
            self._queue = ov.AsyncInferQueue(self._compiled)
        out: list[np.ndarray | None] = [None] * len(batches)

        def done(request: Any, i: int) -> None:
            out[i] = np.array(request.get_output_tensor(0).data)  # a copy: the request's buffer is reused

        self._queue.set_callback(done)
        for i, feeds in enumerate(batches):
            self._queue.start_async(feeds, i)
        self._queue.wait_all()
        return out  # type: ignore[return-value]


class Exportable(Protocol):
    """What an encoder gives the backends: the identity of its model, and how to export and run it."""

    #: Identifies the model's weights and settings (model id, load path, input size...): one folder each.
    export_key: str
    #: ``image`` or ``text``: how an int8 model is made (static, with calibration photos; or dynamic).
    kind: str

    def export_onnx(self, folder: Path) -> dict[str, Any]:
        """Write ``<graph>.onnx`` for each graph and ``probe.npz`` (per graph ``<graph>/<input>`` arrays and
        ``<graph>/output``, the framework's output on them); return facts for the manifest."""

    def prepare_exported(self, facts: Mapping[str, Any]) -> None:
        """Take what :meth:`export_onnx` returned (kept in the manifest) before an exported graph runs."""

    def embed_exported(self, runtimes: Mapping[str, Runtime], inputs: Sequence[str]) -> np.ndarray:
        """Unit vectors of ``inputs`` (photo paths or sentences) through ``runtimes``."""

    def calibration_feeds(self, inputs: Sequence[str]) -> list[dict[str, np.ndarray]]:
        """The graph inputs of ``inputs``, in batches (what a static int8 model takes its ranges from)."""


def key_of(model_id: str, detail: Any) -> str:
    """The key an exported model is kept under: the store id of its vectors and what else tells its weights
    apart (the folder it was loaded from, the input size)."""
    return f"{model_id}|{detail}"


def folder_name(key: str, backend: str, precision: str, opset: int = OPSET) -> str:
    """``<model>-<hash>-<backend>-opset<N>-<precision>``: readable, and distinct for distinct keys."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "-", key.split("|")[0]).strip("-.")[:60]
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return f"{readable}-{digest}-{backend}-opset{opset}-{precision}"


def build_once(folder: Path, build: Callable[[Path], dict[str, Any]], what: str) -> dict[str, Any]:
    """The manifest of ``folder``, built first when missing: ``build(tmp)`` fills a temporary sibling folder
    and returns the manifest, written last (with every file's size and sha256); the folder is then renamed
    into place. A lock keeps two processes from building it twice."""
    manifest = folder / "manifest.json"
    if manifest.is_file():
        return read_json_object(manifest)
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder.parent / f".{folder.name}.lock", what=what):
        if manifest.is_file():
            return read_json_object(manifest)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            t0 = time.perf_counter()
            meta = build(tmp)
            meta = {**meta, "build_seconds": round(time.perf_counter() - t0, 2), "created_at": _now(),
                    "files": {p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
                              for p in sorted(tmp.iterdir()) if p.is_file()}}
            write_json(tmp / "manifest.json", meta)
            if folder.exists():  # a leftover without a manifest (an interrupted older build)
                shutil.rmtree(folder)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    log.info("%s: built %s in %.1f s", what, folder, meta["build_seconds"])
    return meta


def export_torch(module: Any, args: tuple[Any, ...], path: Path, input_names: Sequence[str],
                 dynamic_axes: Mapping[str, Mapping[int, str]]) -> None:
    """``torch.onnx.export`` of ``module`` (TorchScript exporter, opset :data:`OPSET`, one output named
    ``output`` with a dynamic batch axis), its deprecation and tracer warnings silenced. The exporter puts
    ``module`` back in the mode it found it in, so pass it in eval mode."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad():
            torch.onnx.export(module, args, str(path), input_names=list(input_names), output_names=["output"],
                              dynamic_axes={**dynamic_axes, "output": {0: "batch"}}, opset_version=OPSET,
                              do_constant_folding=True, dynamo=False)


def save_probe(folder: Path, probes: Mapping[str, tuple[Mapping[str, np.ndarray], np.ndarray]]) -> None:
    """``probe.npz``: per graph, its probe inputs and the framework's output on them."""
    arrays = {f"{graph}/{name}": value for graph, (feeds, _) in probes.items() for name, value in feeds.items()}
    arrays.update({f"{graph}/output": np.asarray(out, dtype=np.float32) for graph, (_, out) in probes.items()})
    np.savez(folder / "probe.npz", **arrays)


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The smallest row-wise cosine between ``a`` and ``b`` (1.0 for no rows)."""
    if len(a) == 0:
        return 1.0
    return float(np.min(np.sum(l2_normalize(a) * l2_normalize(b), axis=1)))


def check_probe(runtimes: Mapping[str, Runtime], folder: Path) -> float:
    """Run each graph on its probe inputs (``folder/probe.npz``) and compare with the framework's outputs:
    the smallest cosine. Below :data:`EXACT_MIN_COSINE` raises :class:`ExportError`."""
    with np.load(folder / "probe.npz") as probe:
        arrays = {k: probe[k] for k in probe.files}
    worst = 1.0
    for graph, runtime in runtimes.items():
        feeds = {k.split("/", 1)[1]: v for k, v in arrays.items()
                 if k.startswith(f"{graph}/") and k != f"{graph}/output"}
        worst = min(worst, min_cosine(runtime.run(feeds), arrays[f"{graph}/output"]))
    if worst < EXACT_MIN_COSINE:
        backend = next(iter(runtimes.values())).backend
        raise ExportError(f"the {backend} graph in {folder} does not give the framework's vectors (min cosine "
                          f"{worst:.6f} < {EXACT_MIN_COSINE}); delete the folder to export again, or use "
                          "--backend torch")
    return worst


def export_onnx_checked(model: Exportable, tmp: Path, graphs: Sequence[str]) -> dict[str, Any]:
    """Export ``model`` into ``tmp`` and check it (ONNX Runtime, else OpenVINO) against the framework."""
    checker = "onnx" if runtime_installed("onnx") else "openvino"
    require_runtime(checker)
    try:
        extra = model.export_onnx(tmp)
    except (MissingDependency, ExportError):
        raise
    except Exception as exc:  # noqa: BLE001 - an exporter's failure, whatever it raises, is an export error
        raise ExportError(f"exporting {model.export_key.split('|')[0]} to ONNX failed "
                          f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
    worst = check_probe({g: Runtime(checker, tmp / f"{g}.onnx") for g in graphs}, tmp)
    return {"key": model.export_key, "backend": "onnx", "precision": "fp32", "opset": OPSET, "graphs": list(graphs),
            "exported_with": extra, "checked_with": runtime_version(checker), "probe_min_cosine": round(worst, 7)}


def convert_openvino(onnx_folder: Path, tmp: Path, graphs: Sequence[str]) -> dict[str, Any]:
    """OpenVINO's own format (fp32 weights) of the ONNX graphs in ``onnx_folder``, checked on the probe."""
    require_runtime("openvino")
    import openvino as ov

    for g in graphs:
        ov.save_model(ov.convert_model(str(onnx_folder / f"{g}.onnx")), str(tmp / f"{g}.xml"),
                      compress_to_fp16=False)
    shutil.copy2(onnx_folder / "probe.npz", tmp / "probe.npz")
    worst = check_probe({g: Runtime("openvino", tmp / f"{g}.xml") for g in graphs}, tmp)
    return {"backend": "openvino", "precision": "fp32", "opset": OPSET, "graphs": list(graphs),
            "converted_from": str(onnx_folder), "runtime": runtime_version("openvino"),
            "probe_min_cosine": round(worst, 7)}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
