"""The training-free colour arm (``prodrec.embed.encoders.colour.ColourEncoder``): speed and quality.

Speed: images/s of the kit's encoder on the shared photos (quick: 200, full: all 9,583), against a naive
per-photo loop measured in the same run: full-size decode, one thread, and a plain foreground HSV
histogram per image (``np.histogramdd``). Quality: precision@5 on baseColour and articleType of the colour
arm alone on ``load_catalog(SHARED).sample(1000, seed=0)``, with bootstrap CIs, against random and against
the naive histogram's vectors.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import SHARED, WORK, Result, repeat

TARGET_IMAGES_PER_S = 500.0
TARGET_P5_COLOUR = 0.42


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] colour: {msg}", file=sys.stderr, flush=True)


def naive_vector(path: str) -> np.ndarray:
    """What a notebook would write: decode at full size, HSV through PIL, pixels that are not near-white,
    a 12x3x3 hard histogram with ``np.histogramdd``, square root, unit norm (one image, one thread)."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = im.convert("RGB")
    a = np.asarray(rgb)
    hsv = np.asarray(rgb.convert("HSV")).reshape(-1, 3)
    fg = (a.min(axis=-1) < 245).reshape(-1)
    pix = hsv[fg] if fg.mean() >= 0.01 else hsv
    hist, _ = np.histogramdd(pix, bins=(12, 3, 3), range=((0, 256), (0, 256), (0, 256)))
    v = np.sqrt(hist.ravel() / max(hist.sum(), 1.0))
    return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


def _catalog(n: int | None) -> tuple[Any, bool]:
    """(catalog, real): the shared sample, or a synthetic demo catalog when it is absent."""
    from prodrec import load_catalog
    from prodrec.data.demo import write_demo_catalog

    if (SHARED / "styles.csv").is_file():
        cat = load_catalog(SHARED)
        return (cat.sample(n, seed=0) if n is not None else cat), True
    _log(f"{SHARED} not found: using a synthetic demo catalog (numbers are then not comparable)")
    size = max(n or 240, 64)
    return load_catalog(write_demo_catalog(WORK / "demo-colour", n=size, seed=0, image_size=224, progress=False)), False


def _warm_file_cache(paths: list[str]) -> None:
    """Read every file once so that neither contender pays for the first disk read."""
    for p in paths:
        Path(p).read_bytes()


def _quality(enc: Any, quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec.evaluation.runs import evaluate
    from prodrec.rank.recommender import Recommender
    from prodrec.embed.vectors import Embeddings

    n = 300 if quick else 1000
    cat, real = _catalog(n)
    paths = cat.image_paths
    _warm_file_cache(paths)
    ids = np.array([str(i) for i in cat.ids])
    vecs, fails = enc.encode_with_failures(paths, progress=False)
    t0 = time.perf_counter()
    naive = np.stack([naive_vector(p) for p in paths])
    naive_s = time.perf_counter() - t0
    good = np.array([i not in fails for i in range(len(paths))])
    sub = cat.df.iloc[np.flatnonzero(good)]
    labels = sub.set_index(sub["id"].astype(str))[["baseColour", "articleType"]]
    tables = {}
    for name, v in (("kit", vecs), ("naive", naive)):
        rec = Recommender({"colour": Embeddings(ids[good], v[good], {}, {})})
        tables[name] = evaluate(rec, labels, k=5, modes=["colour"], columns=["baseColour", "articleType"],
                                n_boot=200 if quick else 1000, seed=0, progress=False)
    params = {"products": int(good.sum()), "failures": len(fails), "sample": f"sample({n}, seed=0)", "k": 5,
              "model_id": enc.model_id, "data": "shared sample" if real else "synthetic demo (not comparable)"}
    for label in ("baseColour", "articleType"):
        t = tables["kit"]
        row = t[(t.metric == "precision") & (t.label == label) & (t["mode"] == "colour")].iloc[0]
        rnd = t[(t["mode"] == "random") & (t.label == label)].iloc[0]["value"]
        tn = tables["naive"]
        nv = tn[(tn.metric == "precision") & (tn.label == label) & (tn["mode"] == "colour")].iloc[0]["value"]
        note = (f"95% CI [{row.ci_low:.3f}, {row.ci_high:.3f}]; random {rnd:.3f}; "
                f"naive hard 12x3x3 HSV histogram {nv:.3f}")
        out.append(Result("colour", f"precision@5 {label}, colour arm alone", "p@5", [float(row.value)],
                          dict(params, random=round(float(rnd), 4), naive_histogram=round(float(nv), 4),
                               ci=[round(float(row.ci_low), 4), round(float(row.ci_high), 4)]), note=note))
        if label == "baseColour":
            derived.append({"name": f"colour arm precision@5 baseColour (n={int(good.sum())}, seed 0)",
                            "value": f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] vs random {rnd:.3f}, "
                                     f"naive histogram {nv:.3f}",
                            "goal": f">= {TARGET_P5_COLOUR}" + (" at n=1000 (full run only)" if quick else ""),
                            "met": None if quick or not real else bool(row.value >= TARGET_P5_COLOUR)})
        else:
            derived.append({"name": "colour arm precision@5 articleType (reported)",
                            "value": f"{row.value:.3f} [{row.ci_low:.3f}, {row.ci_high:.3f}] vs random {rnd:.3f}",
                            "goal": "(reported)", "met": None})
    _log(f"naive quality pass: {len(paths) / naive_s:.0f} img/s")


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    """Colour-arm section: throughput (kit vs naive, same run) and precision@5 of the arm alone."""
    from prodrec.embed.encoders.colour import ColourEncoder

    enc = ColourEncoder()
    cat, real = _catalog(200 if quick else None)
    paths = cat.image_paths
    n = len(paths)
    n_naive = min(n, 50 if quick else 1000)
    reps = 1 if quick else 3
    _log(f"speed: {n} photos (kit), {n_naive} (naive); warming the file cache")
    _warm_file_cache(paths)
    enc.encode_with_failures(paths[:64], progress=False)  # warm-up (thread pool, lookup table in cache)
    kit = [n / s for s in repeat(lambda: enc.encode_with_failures(paths, progress=False), reps)]
    one = [n / s for s in repeat(lambda: enc.encode_with_failures(paths, progress=False, workers=1), reps)]
    naive = [n_naive / s for s in repeat(lambda: [naive_vector(p) for p in paths[:n_naive]], max(1, reps - 1))]
    params = {"images": n, "naive_images": n_naive, "batch_size": enc.default_batch_size, "model_id": enc.model_id,
              "data": "shared sample" if real else "synthetic demo (not comparable)"}
    out += [Result("colour", "kit encoder (DCT-reduced decode, thread pool, batched numpy)", "img/s", kit, params),
            Result("colour", "kit encoder, 1 decoding thread", "img/s", one, params),
            Result("colour", "naive: full-size decode, 1 thread, per-image numpy histogram", "img/s", naive, params)]
    def med(v: list[float]) -> float:
        return float(np.median(v))

    derived.append({"name": f"colour arm images/s ({n} photos, shared machine: noisy)",
                    "value": f"{med(kit):.0f} img/s (naive {med(naive):.0f}, {med(kit) / med(naive):.1f}x)",
                    "goal": f">= {TARGET_IMAGES_PER_S:.0f}", "met": med(kit) >= TARGET_IMAGES_PER_S})
    _log("quality: precision@5 of the colour arm alone")
    _quality(enc, quick, out, derived)
