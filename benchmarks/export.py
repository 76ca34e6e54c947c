"""Section ``export``: ``prodrec export`` of a whole catalog's related-products table, against FAISS computing
the same per-arm top-k, in the same run (issue 19).

* **real**: the 9,583 products with photos of the shared sample: their ids and labels, and vectors of the real
  sizes (1280 + 384 dims) from seeded Gaussian mixtures, or with ``PRODREC_BENCH_EXPORT_EMBED=1`` the
  EfficientNet-Lite0 + MiniLM vectors themselves (embedded once into ``benchmarks/_work/export/store``: on
  a shared 2-core machine that is most of an hour, for a computation that depends only on the sizes). prodrec exports the fused
  top-10 of every product (exact index, canonical pairwise scores, checkpoints, the Parquet table written;
  its blocks in catalog order read half the products, :class:`prodrec.rank.lists.Sweep`) vs FAISS
  ``IndexFlatIP`` computing each arm's top-10 of every product (index built, searched, self left out; no
  table written; a search reads every product for every query). Time ratio (goal <= 1.3) and peak memory over the stored vectors (goal <= 1.5):
  memory is the vectors the method holds (1.0 for both: the recommender's unit copy, or the arrays FAISS
  indexes) plus its peak resident growth during the step (VmHWM reset just before it).
* **rules**: the same export with rules vs without: masks (``--same gender --where masterCategory=...``),
  ``--exclude-duplicates``, ``--diversity 0.7``, and all of them (goal <= 1.2 each).
* **update**: 99% of the products exported, then the last 1% added: ``update_table`` vs a full export of all
  (goal <= 0.2), the two tables compared row for row.
* **1M**: 1,000,000 synthetic products (two arms, 256 + 128 dims, seeded Gaussian mixtures of
  :mod:`benchmarks.ann`) with ``index="ivf"`` (the kit's default lists: 8-bit codes, candidates scored
  exactly with the stored vectors; the index built inside the export's time) vs FAISS ``IndexIVFFlat`` per
  arm (nlist 4 sqrt(n), nprobe 4). ``PRODREC_BENCH_EXPORT_N`` scales it down.

Each measurement is a fresh process (``benchmarks._export_worker``); methods alternate, so a change in the
machine's load hits both. The machine is shared: the 1-minute load average is recorded with every row.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import SHARED, WORK, Result, run_isolated
from .ann import mixture, n_centres

K = 10
FOLDER = WORK / "export"
GOALS = {"time": 1.3, "memory": 1.5, "update": 0.2, "rules": 1.2}
RULES = {"masks (same gender, where masterCategory)": "same+where", "exclude duplicates": "dups",
         "diversity 0.7": "div0.7", "all rules": "same+where+dups+div0.7"}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] export: {msg}", file=sys.stderr, flush=True)


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def prepare_real(folder: Path, embed: bool) -> str | None:
    """The real sample's 9,583 products with photos in ``folder``: ids, labels and vectors (unit rows, the
    recommender's order). ``embed``: EfficientNet-Lite0 + MiniLM vectors from the store (embedded once into
    ``benchmarks/_work/export/store``); otherwise vectors of the same sizes drawn from seeded Gaussian
    mixtures (the computation an export does depends on the sizes, not on what the vectors say). Returns
    what the data is, or None without the sample."""
    marker = folder / "what.txt"
    if marker.is_file() and (folder / "ids.npy").is_file():
        return marker.read_text()
    if not (SHARED / "styles.csv").is_file():
        return None
    from prodrec import build_experiment, load_catalog

    folder.mkdir(parents=True, exist_ok=True)
    if embed:
        log("embedding the 9,583 photos and their texts once (store: benchmarks/_work/export/store)")
        exp = build_experiment(SHARED, image_model="efficientnet-lite0", text_model="auto",
                               store_dir=FOLDER / "store", progress=False)
        rec, cat = exp.recommender, exp.catalog
        ids = rec.ids
        for arm, index in rec.arms.items():
            np.save(folder / f"{arm}.npy", index.vectors)
        what = "9,583 real products (EfficientNet-Lite0 1280-d + MiniLM 384-d vectors)"
    else:
        cat = load_catalog(SHARED, progress=False)
        ids = np.sort(cat.ids.astype(str))
        for arm, d, seed in (("image", 1280, 0), ("text", 384, 1)):
            np.save(folder / f"{arm}.npy", mixture(len(ids), d, n_centres(len(ids)), seed=seed, sample_seed=seed + 10))
        what = ("the 9,583 real products with photos (their ids, genders, categories, names), vectors of the real "
                "sizes (1280 + 384) drawn from seeded Gaussian mixtures")
    cat.labels.reindex(ids)[["gender", "masterCategory", "productDisplayName"]].to_parquet(folder / "labels.parquet")
    np.save(folder / "ids.npy", np.asarray(ids, dtype=str))
    marker.write_text(what)
    return what


def prepare_synthetic(folder: Path, n: int, dims: tuple[int, ...], labels: bool = False) -> None:
    if (folder / "ids.npy").is_file() and len(np.load(folder / "ids.npy", mmap_mode="r")) == n:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for arm, d, seed in zip(("image", "text"), dims, (0, 1)):
        x = np.lib.format.open_memmap(folder / f"{arm}.npy", mode="w+", dtype=np.float32, shape=(n, d))
        mixture(n, d, n_centres(n), seed=seed, sample_seed=seed + 10, out=x)
        x.flush()
        del x
    if labels:
        import pandas as pd

        rng = np.random.default_rng(0)
        pd.DataFrame({"gender": rng.choice(["Men", "Women", "Unisex"], n),
                      "masterCategory": rng.choice(["Apparel", "Accessories", "Footwear", "Personal Care"], n),
                      "productDisplayName": [f"Product {i % (n // 2)}" for i in range(n)]},
                     index=[f"{i:08d}" for i in range(n)]).to_parquet(folder / "labels.parquet")
    np.save(folder / "ids.npy", np.asarray([f"{i:08d}" for i in range(n)], dtype=str))


def _run(*args: str) -> dict[str, Any]:
    before = _load()
    res = run_isolated("benchmarks._export_worker", *args, timeout=7200)
    res["load"] = [before, _load()]
    return res


def _loads(runs: list[dict[str, Any]]) -> str:
    values = [v for r in runs for v in r["load"]]
    return f"1-min load average {min(values):.1f}-{max(values):.1f} on this shared machine"


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    reps = 1 if quick else 3
    real = FOLDER / "real"
    if quick:
        real = FOLDER / "quick"
        prepare_synthetic(real, 2000, (64, 32), labels=True)
        what = "2,000 synthetic products (quick)"
    elif (found := prepare_real(real, embed=os.environ.get("PRODREC_BENCH_EXPORT_EMBED", "0") == "1")) is not None:
        what = found
    else:
        real = FOLDER / "synthetic-real"
        prepare_synthetic(real, 9583, (1280, 384), labels=True)
        what = "9,583 synthetic products, 1280 + 384 dims (the real sample is missing)"
    k = str(K)

    # 1. the fused top-10 of every product vs FAISS flat per arm
    runs: dict[str, list[dict[str, Any]]] = {"faiss": [], "export": []}
    for _ in range(reps):
        log("FAISS IndexFlatIP per arm")
        runs["faiss"].append(_run("faiss", str(real), k, "flat"))
        log("prodrec export (exact, fused)")
        runs["export"].append(_run("export", str(real), k, "exact"))
    stored = runs["export"][0]["stored_mib"]
    note = _loads(runs["faiss"] + runs["export"])
    p = {"products": runs["export"][0]["rows"] // K, "k": K, "stored_vectors_mib": round(stored, 1), "data": what}
    out.append(Result("export", "FAISS IndexFlatIP, per-arm top-10 of every product", "s",
                      [r["seconds"] for r in runs["faiss"]], p, note))
    out.append(Result("export", "prodrec export, fused top-10 of every product (Parquet)", "s",
                      [r["seconds"] for r in runs["export"]], p, note))
    mem = {m: [1.0 + r["peak_growth_mib"] / stored for r in rs] for m, rs in runs.items()}
    out.append(Result("export", "FAISS flat: peak memory / stored vectors", "x", mem["faiss"], p, note))
    out.append(Result("export", "prodrec export: peak memory / stored vectors", "x", mem["export"], p, note))
    ratio = float(np.median([r["seconds"] for r in runs["export"]]) / np.median([r["seconds"] for r in runs["faiss"]]))
    derived.append({"name": f"export / FAISS flat time ({what})", "value": f"{ratio:.2f}x",
                    "goal": f"<= {GOALS['time']}", "met": ratio <= GOALS["time"]})
    m = float(np.median(mem["export"]))
    derived.append({"name": "export peak memory / stored vectors", "value": f"{m:.2f}x (FAISS flat "
                    f"{np.median(mem['faiss']):.2f}x)", "goal": f"<= {GOALS['memory']}", "met": m <= GOALS["memory"]})

    # 2. rules cost
    base_runs: list[dict[str, Any]] = []
    rule_runs: dict[str, list[dict[str, Any]]] = {name: [] for name in RULES}
    for _ in range(max(1, reps - 1)):
        base_runs.append(_run("export", str(real), k, "exact", "none"))
        for name, spec in RULES.items():
            log(f"prodrec export with {name}")
            rule_runs[name].append(_run("export", str(real), k, "exact", spec))
    base_s = float(np.median([r["seconds"] for r in base_runs + runs["export"]]))
    for name, rs in rule_runs.items():
        note = _loads(base_runs + rs)
        out.append(Result("export", f"prodrec export with {name}", "s", [r["seconds"] for r in rs],
                          {**p, "short_lists": rs[0]["short_lists"]}, note))
        r = float(np.median([x["seconds"] for x in rs])) / base_s
        derived.append({"name": f"rules cost: {name} / no rules", "value": f"{r:.2f}x", "goal": f"<= {GOALS['rules']}",
                        "met": r <= GOALS["rules"]})

    # 3. --update after 1% new products
    ups = []
    for _ in range(reps):
        log("update after adding 1% of the products")
        ups.append(_run("update", str(real), k))
    note = _loads(ups)
    pu = {**p, "added": ups[0]["added"], "update": ups[0]["update"]}
    out.append(Result("export", "full export of all products (update's reference)", "s",
                      [u["full_seconds"] for u in ups], pu, note))
    out.append(Result("export", "prodrec export --update after 1% new products", "s", [u["seconds"] for u in ups], pu,
                      note + f"; tables identical to the full export: {all(u['identical'] for u in ups)}"))
    r = float(np.median([u["seconds"] for u in ups]) / np.median([u["full_seconds"] for u in ups]))
    derived.append({"name": "update (1% new) / full export", "value": f"{r:.2f}", "goal": f"<= {GOALS['update']}",
                    "met": r <= GOALS["update"] and all(u["identical"] for u in ups)})

    # 4. a million synthetic products with an IVF index
    n_big = 20_000 if quick else int(os.environ.get("PRODREC_BENCH_EXPORT_N", 1_000_000))
    big = FOLDER / f"synthetic-{n_big}"
    log(f"making {n_big:,} synthetic products (256 + 128 dims)")
    prepare_synthetic(big, n_big, (256, 128))
    log("FAISS IndexIVFFlat per arm")
    f_ivf = _run("faiss", str(big), k, "ivf")
    log("prodrec export --index ivf")
    e_ivf = _run("export", str(big), k, "ivf")
    note = _loads([f_ivf, e_ivf])
    pb = {"products": n_big, "k": K, "dims": [256, 128], "stored_vectors_mib": round(e_ivf["stored_mib"], 1),
          "index_status": e_ivf["index_status"]}
    out.append(Result("export", f"FAISS IndexIVFFlat per arm (nprobe 4), top-10 of {n_big:,}", "s",
                      [f_ivf["seconds"]], pb, note))
    out.append(Result("export", f"prodrec export --index ivf, fused top-10 of {n_big:,} (index build included)", "s",
                      [e_ivf["seconds"]], pb, note))
    r = e_ivf["seconds"] / f_ivf["seconds"]
    derived.append({"name": f"export ivf / FAISS ivf time ({n_big:,} synthetic)", "value": f"{r:.2f}x",
                    "goal": f"<= {GOALS['time']}", "met": r <= GOALS["time"]})
    mi = 1.0 + e_ivf["peak_growth_mib"] / e_ivf["stored_mib"]
    mf = 1.0 + f_ivf["peak_growth_mib"] / f_ivf["stored_mib"]
    derived.append({"name": f"export ivf peak memory / stored vectors ({n_big:,})", "value": f"{mi:.2f}x (FAISS ivf "
                    f"{mf:.2f}x)", "goal": f"<= {GOALS['memory']}", "met": mi <= GOALS["memory"]})
