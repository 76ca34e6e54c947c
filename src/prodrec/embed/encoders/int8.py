"""int8 on request (``--precision int8``): calibrated on the catalog, checked on its labels, refused when it
moves precision@5.

An int8 model is made by ONNX Runtime's quantiser from the fp32 ONNX export: photo models statically (QDQ,
per-channel int8 weights, uint8 activations whose ranges come from :data:`N_CALIBRATE` photos *of the
catalog*: a random calibration batch gave a min cosine of 0.60 to fp32), text models dynamically (int8
weights, activation ranges per batch). Then both models embed up to :data:`N_VALIDATE` other products of
the catalog; the report (kept in the model's ``manifest.json`` and in every output's provenance) gives the
cosine of the int8 vectors to the fp32 ones and precision@5 of each label column with either. A model whose
precision@5 moves by more than :data:`MAX_P5_CHANGE` on any label is refused (:class:`ConfigError`, with the
figure); the refusal is kept, so asking again is refused at once (delete the folder to try another catalog).

The calibration set is chosen by content, not by position: products ordered by a hash of their input key
(photo digest, sentence hash), so the same catalog in any order gives the same set. The int8 model is built
once per store and its store key says so: ``<model_id>@int8v2-onnx-<calibration fingerprint>`` (``v2``: the
recipe, :data:`RECIPE`; a model quantised by an earlier recipe is never reused).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ConfigError
from ...core.io import fingerprint, read_json_object
from .export import Exportable, Runtime, build_once, folder_name, runtime_version

log = logging.getLogger(__name__)

#: Calibration inputs of a static (photo) model; a text model's dynamic quantisation needs none.
N_CALIBRATE = 64
#: At most this many other products of the catalog check the int8 model against fp32.
N_VALIDATE = 1000
#: Fewest products a check is made on (fewer cannot measure a change of 0.01).
MIN_VALIDATE = 100
#: Largest change of precision@5, on any label column, an int8 model may make.
MAX_P5_CHANGE = 0.01
K = 5


@dataclass(frozen=True)
class Calibration:
    """Inputs drawn from the catalog for an int8 model: ``calibrate`` (static ranges) and ``validate``
    (the fp32-vs-int8 check), with the labels of the validation products per label column."""

    calibrate: tuple[str, ...]
    validate: tuple[str, ...]
    labels: Mapping[str, tuple[str | None, ...]] = field(default_factory=dict)
    fingerprint: str = ""
    source: str = "catalog"
    max_p5_change: float = MAX_P5_CHANGE

    def describe(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "source": self.source, "calibration_inputs": len(self.calibrate),
                "validation_products": len(self.validate), "labels": list(self.labels),
                "max_p5_change": self.max_p5_change}


def calibration_set(
    inputs: Sequence[str],
    keys: Sequence[str],
    labels: Mapping[str, Sequence[Any]],
    *,
    kind: str,
    source: str = "catalog",
    max_p5_change: float = MAX_P5_CHANGE,
) -> Calibration:
    """The calibration and validation products of a catalog, drawn by content (never random data).

    ``inputs`` are the products' photo paths or sentences, ``keys`` their input keys (what the store keys
    vectors by), ``labels`` the catalog's label columns, one value per product. Products are ordered by the
    sha256 of their key; photo models take the first :data:`N_CALIBRATE` for calibration, and the next up to
    :data:`N_VALIDATE` check the model (too few for a check is refused when a model is to be built).
    """
    if not len(inputs) == len(keys) or any(len(v) != len(inputs) for v in labels.values()):
        raise ConfigError("calibration_set: inputs, keys and every label column must have one entry per product")
    order = sorted((i for i in range(len(inputs)) if inputs[i]),
                   key=lambda i: hashlib.sha256(str(keys[i]).encode("utf-8", "surrogatepass")).hexdigest())
    n_cal = N_CALIBRATE if kind == "image" else 0
    cal, val = order[:n_cal], order[n_cal:n_cal + N_VALIDATE]
    label_of = {col: tuple(None if _missing(v[i]) else str(v[i]) for i in val) for col, v in labels.items()}
    fp = fingerprint([kind, *(str(keys[i]) for i in cal), "|", *(str(keys[i]) for i in val)])
    return Calibration(tuple(inputs[i] for i in cal), tuple(inputs[i] for i in val), label_of, fp, source,
                       max_p5_change)


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or str(value) in ("", "nan", "<NA>")


def precision_at_k(vectors: np.ndarray, labels: Sequence[str | None], k: int = K) -> float:
    """Mean over products with a label of the share of their ``k`` nearest other products (cosine of unit
    rows) that carry the same label."""
    lab = np.asarray([("" if v is None else v) for v in labels], dtype=object)
    k = min(k, len(lab) - 1)
    sims = vectors @ vectors.T
    np.fill_diagonal(sims, -np.inf)
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    hits = lab[top] == lab[:, None]
    keep = lab != ""
    return float(hits[keep].mean()) if keep.any() else float("nan")


def compare(fp32: np.ndarray, int8: np.ndarray, calibration: Calibration) -> dict[str, Any]:
    """The int8 report: cosine of int8 to fp32 vectors, precision@5 per label column with each, and whether
    the largest change stays within ``calibration.max_p5_change``. Products whose input failed (a zero row,
    an undecodable photo) are left out."""
    ok = (np.linalg.norm(fp32, axis=1) > 0) & (np.linalg.norm(int8, axis=1) > 0)
    fp32, int8 = fp32[ok], int8[ok]
    cos = np.sum(fp32 * int8, axis=1)
    p5 = {}
    for col, all_labels in calibration.labels.items():
        labels = [v for v, keep in zip(all_labels, ok) if keep]
        a, b = precision_at_k(fp32, labels), precision_at_k(int8, labels)
        p5[col] = {"fp32": round(a, 4), "int8": round(b, 4), "change": round(b - a, 4)}
    worst = max((abs(v["change"]) for v in p5.values()), default=0.0)
    return {"products": len(fp32), "cosine_to_fp32": {"min": round(float(cos.min()), 5),
                                                       "mean": round(float(cos.mean()), 5),
                                                       "p01": round(float(np.quantile(cos, 0.01)), 5)},
            f"precision_at_{K}": p5, "max_abs_p5_change": round(worst, 4),
            "allowed_p5_change": calibration.max_p5_change, "accepted": worst <= calibration.max_p5_change}


#: The int8 recipe's version, in the kept model's folder and the vectors' store key: 2 since photo models
#: quantise with 7-bit weights (``reduce_range``), so a model (and its vectors) made by the earlier recipe,
#: which saturated on CPUs without VNNI, is made again rather than reused.
RECIPE = 2


def int8_folder(models_dir: str | Path, key: str) -> Path:
    """Where the int8 model of ``key`` is kept."""
    return Path(models_dir) / folder_name(key, "onnx", f"int8v{RECIPE}")


def int8_model_id(base: str, models_dir: str | Path | None, key: str, calibration: Calibration | None) -> str:
    """The store key of the int8 vectors of the model ``base``: the kept model's calibration when it exists,
    else the one this request brings (the model is built with it)."""
    if models_dir is not None and (int8_folder(models_dir, key) / "manifest.json").is_file():
        fp = read_json_object(int8_folder(models_dir, key) / "manifest.json")["int8"]["calibration"]["fingerprint"]
    elif calibration is not None:
        fp = calibration.fingerprint
    else:
        raise ConfigError("--precision int8 needs a calibration set drawn from the catalog: embed the catalog "
                          "with --precision int8 (prodrec embed, embed_arm, build_experiment draw it), or use fp32")
    return int8_id(base, fp)


def int8_id(base: str, calibration_fingerprint: str) -> str:
    """``<base>@int8v<recipe>-onnx-<first 8 hex digits of the calibration fingerprint>``."""
    return f"{base}@int8v{RECIPE}-onnx-{calibration_fingerprint[:8]}"


def quantize(model: Exportable, models_dir: str | Path, fp32_folder: Path, calibration: Calibration | None,
             what: str = "model") -> tuple[Path, dict[str, Any]]:
    """The int8 model of ``model`` (built once from the fp32 export in ``fp32_folder``): (folder, manifest).

    Raises :class:`ConfigError` when its precision@5 moves more than allowed (the figure in the message), or
    when a kept model was calibrated on another catalog than ``calibration`` (a race with another run).
    """
    folder = int8_folder(models_dir, model.export_key)
    if calibration is None and not (folder / "manifest.json").is_file():
        int8_model_id("", models_dir, model.export_key, None)  # raises: no calibration set, no kept model

    if calibration is not None and len(calibration.validate) < MIN_VALIDATE and not (folder / "manifest.json").is_file():
        n_cal = len(calibration.calibrate)
        raise ConfigError(f"--precision int8 is calibrated and checked on the catalog: it needs at least "
                          f"{n_cal + MIN_VALIDATE} products with an input, this one has "
                          f"{n_cal + len(calibration.validate)}; embed a larger catalog with --precision int8 "
                          "first (the model is then kept), or use fp32")

    def build(tmp: Path) -> dict[str, Any]:
        assert calibration is not None  # checked above: a missing folder needs a calibration set
        log.info("%s: int8 quantisation, checked on %d products of the catalog against fp32", what,
                 len(calibration.validate))
        method = _quantize_file(model, fp32_folder / "model.onnx", tmp, calibration)
        reference = model.embed_exported({"model": Runtime("onnx", fp32_folder / "model.onnx")}, calibration.validate)
        quantised = model.embed_exported({"model": Runtime("onnx", tmp / "model.onnx")}, calibration.validate)
        report = compare(reference, quantised, calibration)
        if not report["accepted"]:  # the refusal is kept; the model is not
            (tmp / "model.onnx").unlink()
        return {"key": model.export_key, "backend": "onnx", "precision": "int8", "graphs": ["model"],
                "runtime": runtime_version("onnx"),
                "int8": {"method": method, "calibration": calibration.describe(), **report}}

    manifest = build_once(folder, build, f"{what}: int8 quantisation")
    report = manifest["int8"]
    if calibration is not None and report["calibration"]["fingerprint"] != calibration.fingerprint:
        raise ConfigError(f"the int8 model in {folder} was calibrated on another catalog by another run meanwhile; "
                          "run again (it is then reused)")
    log.info("%s int8: cosine to fp32 min %.4f mean %.4f; precision@%d change %s", what,
             report["cosine_to_fp32"]["min"], report["cosine_to_fp32"]["mean"], K,
             {c: v["change"] for c, v in report[f"precision_at_{K}"].items()})
    if not report["accepted"]:
        raise ConfigError(
            f"int8 refused: it moves precision@{K} by {report['max_abs_p5_change']:+.4f} "
            f"(allowed {report['allowed_p5_change']}; per label "
            f"{ {c: v['change'] for c, v in report[f'precision_at_{K}'].items()} }, cosine to fp32 min "
            f"{report['cosine_to_fp32']['min']:.4f}, on {report['products']} products); use fp32 "
            f"(report: {folder / 'manifest.json'})")
    return folder, manifest


def _quantize_file(model: Exportable, src: Path, tmp: Path, calibration: Calibration) -> str:
    """Write ``tmp/model.onnx``, the int8 version of ``src``; returns how it was made."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = tmp / "prepared.onnx"
    quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
    if model.kind != "image":
        quantize_dynamic(str(prepared), str(tmp / "model.onnx"), weight_type=QuantType.QInt8, per_channel=True)
        prepared.unlink()
        return "dynamic (int8 weights per channel, activation ranges per batch), ONNX Runtime"

    class Feeds(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(model.calibration_feeds(calibration.calibrate))

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    # reduce_range: 7-bit weights. ONNX Runtime's uint8 x int8 kernels saturate on x86 CPUs without VNNI
    # (AVX2, plain AVX-512), which took the vectors' mean cosine to fp32 from above 0.9 to 0.87 on such a
    # machine; with it the same model comes out on every CPU (the int8 model's key does not name the CPU).
    quantize_static(str(prepared), str(tmp / "model.onnx"), Feeds(), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=True, activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
    prepared.unlink()
    return (f"static QDQ (int8 weights per channel, 7-bit range; uint8 activations; MinMax ranges from "
            f"{len(calibration.calibrate)} catalog photos), ONNX Runtime")
