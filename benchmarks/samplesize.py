"""Which n a number belongs to: precision@5 against the size of the evaluated sample.

The paper sampled 5,000 products; the notebooks' stored outputs use 200 and ``make run`` 5,000. precision@k
rises with n (a query has more same-label products to find), so a figure means little without its n. This
section draws, for n in 200, 500, 1,000, 2,000 and 5,000 products of the shared photo catalog and five sample
seeds each (``Catalog.sample(n, seed)``, the notebooks' sampling), the image arm (EfficientNet-Lite0), the text
arm (all-MiniLM-L6-v2) and their raw fusion at alpha 0.5, and records precision@5 on every label with its
bootstrap 95% interval over queries (all products are queries: nothing is tuned here).

Rows go to ``results.json`` (one per n, mode and label: the per-seed values) and, with provenance and the
command, to ``benchmarks/samplesize.json``, which notebook 04 draws (``gallery.plot_samplesize``).

Quick mode: n in 60 and 120 of the same catalog (or a synthetic one), two seeds.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from ._common import HERE, SHARED, WORK, Result

NS = (200, 500, 1000, 2000, 5000)
SEEDS = (0, 1, 2, 3, 4)
MODES = ("image", "text", "fused")
COMMAND = "python -m benchmarks --only samplesize --merge"
FILE = "samplesize.json"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] samplesize: {msg}", file=sys.stderr, flush=True)


def stored_path(quick: bool) -> Path:
    """Where the curve is stored: ``benchmarks/`` (what the notebooks read), or the quick work folder."""
    return (WORK / "quick" if quick else HERE) / FILE


def curve(catalog: Any, ns: tuple[int, ...], seeds: tuple[int, ...], n_boot: int = 500) -> list[dict[str, Any]]:
    """precision@5 rows ``n, seed, mode, label, k, value, ci_low, ci_high, n_queries`` of every (n, seed)
    sample of ``catalog`` under :data:`MODES` (vectors from the store where it has them)."""
    from prodrec import build_experiment
    from prodrec.evaluation.runs import evaluate

    rows: list[dict[str, Any]] = []
    for n in ns:
        for seed in seeds:
            exp = build_experiment(catalog=catalog.sample(n, seed=seed), image_model="auto", text_model="auto",
                                   progress=False)
            res = evaluate(exp.recommender, exp.catalog, k=5, modes=list(MODES), n_boot=n_boot, seed=0, progress=False)
            p = res[res["metric"] == "precision"]
            rows += [dict(n=len(exp.recommender), sample_n=n, seed=seed, mode=r.mode, label=r.label, k=int(r.k),
                          value=float(r.value), ci_low=float(r.ci_low), ci_high=float(r.ci_high),
                          n_queries=int(r.n_queries)) for r in p.itertuples()]
            _log(f"n={n} seed={seed}: " + ", ".join(
                f"{r.mode} {r.label} {r.value:.3f}" for r in p.itertuples() if r.label == "articleType"))
    return rows


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec import load_catalog
    from prodrec.core.provenance import provenance, save_json
    from prodrec.data.demo import write_demo_catalog

    real = (SHARED / "styles.csv").is_file()
    if real:
        cat = load_catalog(SHARED)
    else:
        _log(f"{SHARED} not found: using a synthetic demo catalog (numbers are then not comparable)")
        cat = load_catalog(write_demo_catalog(WORK / "demo-samplesize", n=160, seed=0, image_size=96, progress=False))
    ns, seeds = ((60, 120), (0, 1)) if quick else (NS, SEEDS)
    t0 = time.perf_counter()
    rows = curve(cat, ns, seeds, n_boot=200 if quick else 500)
    seconds = time.perf_counter() - t0
    models = sorted({m for m in MODES if m != "fused"})
    prov = provenance(cat, command=COMMAND, machine=_machine_line(), ns=list(ns), seeds=list(seeds),
                      modes=list(MODES), arms=models, seconds=round(seconds, 1), real_data=real)
    path = save_json(stored_path(quick), {"rows": rows}, prov)
    _log(f"wrote {path}")
    by: dict[tuple[int, str, str], list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault((r["sample_n"], r["mode"], r["label"]), []).append(r)
    for (n, mode, label), rs in by.items():
        out.append(Result("samplesize", f"precision@5 {label}, {mode}, n={n} (per sample seed)", "precision",
                          [r["value"] for r in rs], {"n": n, "seeds": [r["seed"] for r in rs], "stored": FILE},
                          note="mean CI [{:.3f}, {:.3f}]".format(statistics.mean(r["ci_low"] for r in rs),
                                                                 statistics.mean(r["ci_high"] for r in rs))))
    lo, hi = min(ns), max(ns)
    for mode in MODES:
        a, b = by.get((lo, mode, "articleType")), by.get((hi, mode, "articleType"))
        if a and b:
            derived.append({"name": f"{mode} precision@5 articleType, n={lo} vs n={hi} (mean over {len(a)} seeds)",
                            "value": f"{statistics.mean(r['value'] for r in a):.3f} vs "
                                     f"{statistics.mean(r['value'] for r in b):.3f}", "goal": "(reported)",
                            "met": None})


def _machine_line() -> str:
    from ._common import machine

    m = machine()
    return f"{m['cpu']}, {m['cores']} cores"
