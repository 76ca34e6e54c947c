"""Backends (``prodrec.embed.encoders.backends``): torch against ONNX Runtime and OpenVINO, same inputs, one run.

Per model, each backend's throughput and the smallest cosine of its vectors to torch's, repeats interleaved
(torch, onnx, openvino, torch, ...) so a busy neighbour slows every contender alike:

* EfficientNet-Lite0 on real photos, the model alone on decoded batches (what the backend changes) and the
  kit's pipeline (decoding on a thread pool a few batches ahead); the exported backends at micro-batches
  4-32 (the kit's setting is ``exported_micro_batch``);
* the Keras ResNet-50 (random weights: the same FLOPs; TensorFlow is its ``torch``) through tf2onnx;
* all-MiniLM-L6-v2 on real product sentences, batches of 64 (sentence-transformers is its ``torch``);
* int8 (ONNX Runtime, calibrated and checked on a catalog sample through ``embed_arm``): the report's
  cosine to fp32 and precision@5 change per label, and its speed when it is accepted;
* export times (each model's first export, kept in a fresh models folder).

The targets: image >= 2.5x torch and text >= 1.1x at identical vectors (min cosine >= 0.9999).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ._common import SHARED, WORK, Result, repeat

IMAGE_TARGET = 2.5
TEXT_TARGET = 1.1
EXACT = 0.9999


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] backends: {msg}", file=sys.stderr, flush=True)


def _catalog(n: int, seed: int = 0) -> Any:
    from prodrec import load_catalog
    from prodrec.data.demo import write_demo_catalog

    if (SHARED / "styles.csv").is_file():
        return load_catalog(SHARED).sample(n, seed=seed)
    _log(f"{SHARED} not found: using a synthetic demo catalog (numbers are then not comparable)")
    return load_catalog(write_demo_catalog(WORK / "demo-backends", n=max(n, 64), seed=0, progress=False))


def _interleaved(contenders: dict[str, Callable[[], Any]], n: int, reps: int) -> dict[str, list[float]]:
    """Items/s of each contender, one warm-up call each, then ``reps`` rounds taking turns."""
    for fn in contenders.values():
        fn()
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(reps):
        for name, fn in contenders.items():
            rates[name] += [n / s for s in repeat(fn, 1)]
    return rates


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a * b, axis=1)))


def _med(v: list[float]) -> float:
    return float(np.median(v))


def _exported(models: Path, backend: str, build: Callable[[Any], Any]) -> tuple[Any, float]:
    """An encoder on ``backend`` (its export made now when missing) and the seconds that took."""
    from prodrec.embed.encoders.backends import BackendRequest

    t0 = time.perf_counter()
    enc = build(BackendRequest(backend, models_dir=str(models)))
    return enc, time.perf_counter() - t0


def _backends() -> list[str]:
    from prodrec.embed.encoders.export import runtime_installed

    return [b for b in ("onnx", "openvino") if runtime_installed(b)]


def _images(name: str, build: Callable[[Any], Any], models: Path, quick: bool, out: list[Result],
            derived: list[dict[str, Any]], sweep: bool) -> None:
    from prodrec.data.images import load_rgb

    n, bs, reps = (32, 16, 1) if quick else ((256, 32, 3) if name == "efficientnet-lite0" else (96, 32, 3))
    paths = _catalog(n).image_paths[:n]
    decoded = np.stack([load_rgb(p, 224) for p in paths])
    encoders = {"torch": build("torch")}
    export_s: dict[str, float] = {}
    for b in _backends():
        encoders[b], export_s[b] = _exported(models, b, build)
    ref = encoders["torch"].encode_arrays(decoded)

    def model_alone(enc: Any) -> Callable[[], Any]:
        return lambda: [enc.encode_arrays(decoded[i:i + bs]) for i in range(0, n, bs)]

    rates = _interleaved({b: model_alone(e) for b, e in encoders.items()}, n, reps)
    pipe = _interleaved({b: (lambda e=e: e.encode_with_failures(paths, bs, progress=False)) for b, e in encoders.items()},
                        n, max(1, reps - 1))
    p = {"images": n, "batch_size": bs, "weights": encoders["torch"].weight_source}
    for b, enc in encoders.items():
        cos = _min_cos(ref, enc.encode_arrays(decoded))
        note = f"micro-batch {enc.micro_batch}; {enc.describe()['backend_version']}; min cosine to torch {cos:.6f}"
        out.append(Result("backends", f"{name}: {b}, model alone on decoded batches", "img/s", rates[b],
                          dict(p, min_cosine_to_torch=cos), note=note))
        out.append(Result("backends", f"{name}: {b}, kit pipeline (decode + model)", "img/s", pipe[b], p))
        if b != "torch":
            ratio = _med(rates[b]) / _med(rates["torch"])
            goal = f">= {IMAGE_TARGET} at min cosine >= {EXACT}" if name == "efficientnet-lite0" else "(reported)"
            derived.append({"name": f"{name}: {b} / torch, model alone (same run, {n} photos)",
                            "value": f"{ratio:.2f}x ({_med(rates[b]):.1f} vs {_med(rates['torch']):.1f} img/s), "
                                     f"min cosine {cos:.6f}; pipeline {_med(pipe[b]) / _med(pipe['torch']):.2f}x",
                            "goal": goal, "met": (ratio >= IMAGE_TARGET and cos >= EXACT)
                            if name == "efficientnet-lite0" else None})
            out.append(Result("backends", f"{name}: first export for {b} (kept in the store)", "s", [export_s[b]], p))
    if sweep:
        for b in _backends():
            enc, kept = encoders[b], encoders[b].micro_batch

            def at(m: int, enc: Any = enc) -> Callable[[], Any]:
                def run() -> Any:
                    enc.micro_batch = m
                    return model_alone(enc)()
                return run

            swept = _interleaved({m: at(m) for m in (4, 8, 16, 32)}, n, max(1, reps - 1))
            enc.micro_batch = kept
            for m, v in swept.items():
                out.append(Result("backends", f"{name}: {b}, micro-batch {m}, model alone", "img/s", v, p))


def _text(models: Path, quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec.data.text import product_sentences
    from prodrec.embed.encoders import get_text_encoder

    n, reps = (64, 1) if quick else (2048, 3)
    cat = _catalog(n, seed=1)
    sents = product_sentences(cat.df, cat.text_columns)[:n]
    encoders = {"torch": get_text_encoder("all-MiniLM-L6-v2")}
    export_s: dict[str, float] = {}
    for b in _backends():
        encoders[b], export_s[b] = _exported(models, b, lambda r: get_text_encoder("all-MiniLM-L6-v2", backend=r))
    ref = encoders["torch"].encode(sents, progress=False)
    rates = _interleaved({b: (lambda e=e: e.encode(sents, batch_size=64, progress=False))
                          for b, e in encoders.items()}, n, reps)
    p = {"sentences": n, "batch_size": 64, "model": encoders["torch"].model_id}
    for b, enc in encoders.items():
        cos = _min_cos(ref, enc.encode(sents, progress=False))
        out.append(Result("backends", f"MiniLM: {b}, kit encode (batches of 64)", "sentences/s", rates[b],
                          dict(p, min_cosine_to_torch=cos), note=f"{enc.describe()['backend_version']}; min cosine "
                          f"to torch {cos:.6f}"))
        if b != "torch":
            ratio = _med(rates[b]) / _med(rates["torch"])
            derived.append({"name": f"MiniLM: {b} / torch (sentence-transformers), same run, {n} sentences",
                            "value": f"{ratio:.2f}x ({_med(rates[b]):.0f} vs {_med(rates['torch']):.0f} sentences/s), "
                                     f"min cosine {cos:.6f}",
                            "goal": f">= {TEXT_TARGET} at min cosine >= {EXACT}", "met": ratio >= TEXT_TARGET and cos >= EXACT})
            out.append(Result("backends", f"MiniLM: first export for {b} (kept in the store)", "s", [export_s[b]], p))


def _int8(arm: str, model: str, quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    """int8 through the kit's path: embed_arm(precision="int8") on a catalog sample (calibration and check
    drawn from it), then its speed against fp32 ONNX Runtime on other products."""
    from prodrec.core.errors import ConfigError
    from prodrec.data.text import product_sentences
    from prodrec.embed.embedding import embed_arm
    from prodrec.embed.encoders import get_image_encoder, get_text_encoder
    from prodrec.embed.encoders.backends import BackendRequest

    n_cat = 300 if quick else 1200
    store = Path(tempfile.mkdtemp(prefix="prodrec-bench-int8-"))
    try:
        cat = _catalog(n_cat, seed=2)
        t0 = time.perf_counter()
        try:
            embed_arm(cat, arm, model, store=store, backend="onnx", precision="int8", progress=False)
            refused = None
        except ConfigError as exc:
            refused = str(exc)
        build_s = time.perf_counter() - t0
        models = store / "models"
        manifest = next(models.glob("*-int8v*/manifest.json"))
        report = json.loads(manifest.read_text())["int8"]
        label = "MiniLM" if arm == "text" else model
        changes = {c: v["change"] for c, v in report["precision_at_5"].items()}
        p = {"catalog sample": n_cat, "method": report["method"], "validation products": report["products"],
             "precision_at_5": report["precision_at_5"], "cosine_to_fp32": report["cosine_to_fp32"]}
        for stat in ("min", "mean"):  # one figure each, not two "repeats" of one row
            out.append(Result("backends", f"{label}: int8 cosine to fp32, {stat} over the validation products",
                              "cosine", [report["cosine_to_fp32"][stat]], p))
        out.append(Result("backends", f"{label}: int8 quantise + check (embed_arm, {n_cat} products)", "s", [build_s], p))
        speed = ""
        if refused is None:
            if arm == "text":
                def build(r: Any) -> Any:
                    return get_text_encoder(model, backend=r)
                other = _catalog(1024 if not quick else 64, seed=3)
                inputs: Any = product_sentences(other.df, other.text_columns)
                unit = "sentences/s"
            else:
                def build(r: Any) -> Any:
                    return get_image_encoder(model, backend=r)
                from prodrec.data.images import load_rgb

                inputs = np.stack([load_rgb(x, 224) for x in _catalog(256 if not quick else 32, seed=3).image_paths])
                unit = "img/s"
            fp32 = build(BackendRequest("onnx", models_dir=str(models)))
            q = build(BackendRequest("onnx", "int8", models_dir=str(models)))
            run = (lambda e: lambda: e.encode(inputs, progress=False)) if arm == "text" else (
                lambda e: lambda: [e.encode_arrays(inputs[i:i + 32]) for i in range(0, len(inputs), 32)])
            rates = _interleaved({"fp32": run(fp32), "int8": run(q)}, len(inputs), 1 if quick else 3)
            for k, v in rates.items():
                out.append(Result("backends", f"{label}: onnx {k} (int8 speed check)", unit, v, p))
            speed = f"; int8 / fp32 ONNX Runtime {_med(rates['int8']) / _med(rates['fp32']):.2f}x"
        derived.append({"name": f"{label}: int8 (ONNX Runtime, calibrated on the catalog)",
                        "value": f"{'refused' if refused else 'accepted'}: precision@5 change {changes}, cosine to "
                                 f"fp32 min {report['cosine_to_fp32']['min']:.4f} mean "
                                 f"{report['cosine_to_fp32']['mean']:.4f}{speed}",
                        "goal": f"|change| <= {report['allowed_p5_change']} or refused", "met": True})
    finally:
        shutil.rmtree(store, ignore_errors=True)


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    """The backends section (see the module docstring)."""
    from prodrec.embed.encoders import get_image_encoder

    models = Path(tempfile.mkdtemp(prefix="prodrec-bench-models-"))
    try:
        _log("EfficientNet-Lite0")
        _images("efficientnet-lite0", lambda r: get_image_encoder("efficientnet-lite0", backend=r), models, quick,
                out, derived, sweep=True)
        _log("MiniLM")
        _text(models, quick, out, derived)
        if not quick:
            _log("ResNet-50 (random weights)")
            _images("resnet50", lambda r: get_image_encoder("resnet50", weights=None, backend=r), models, quick,
                    out, derived, sweep=False)
        _log("int8")
        _int8("image", "efficientnet-lite0", quick, out, derived)
        _int8("text", "all-MiniLM-L6-v2", quick, out, derived)
    finally:
        shutil.rmtree(models, ignore_errors=True)
