"""prodrec benchmarks: each figure against the naive way, measured in the same run.

    python -m benchmarks              # full sizes (about 15-20 minutes on 2 cores)
    python -m benchmarks --quick      # tiny sizes: a smoke run of the harness (CI runs this)
    python -m benchmarks --only topk,latency

Writes benchmarks/results.json and benchmarks/RESULTS.md. Sections: images, text, topk, latency, search, store,
rerun, colour (benchmarks/colour.py), learned (benchmarks/learned.py), ann (benchmarks/ann.py), ray (benchmarks/scale.py),
backends (benchmarks/backends.py), export (benchmarks/export.py), samplesize (benchmarks/samplesize.py) and heads (benchmarks/heads.py); the last two also store what notebooks 04 and
06 show (benchmarks/samplesize.json, benchmarks/heads.json).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import SHARED, WORK, Result, repeat, run_isolated, write_results

SECTIONS = ("images", "text", "topk", "latency", "search", "store", "rerun", "colour", "learned", "ann", "ray",
            "backends", "samplesize", "heads", "export")
RESNET50_GFLOP = 2 * 4.09  # multiply-adds of ResNet-50 at 224x224 (without the 1000-way head: -0.002), x2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def catalog(n: int) -> Any:
    from prodrec import load_catalog
    from prodrec.data.demo import write_demo_catalog

    if (SHARED / "styles.csv").is_file():
        return load_catalog(SHARED).sample(n, seed=0)
    log(f"{SHARED} not found: using a synthetic demo catalog (numbers are then not comparable)")
    return load_catalog(write_demo_catalog(WORK / "demo", n=max(n, 64), seed=0, progress=False))


def sgemm_gflops(reps: int) -> list[Result]:
    """numpy SGEMM as this environment runs it, and with OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE unset (they are
    set on some machines for old OpenBLAS builds and pin a slower kernel): the higher one is the practical limit."""
    out = []
    plain = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    for label, env in (("as configured", dict(os.environ)), ("OPENBLAS_CORETYPE unset", plain)):
        r = run_isolated("benchmarks._sgemm_worker", str(reps), env=env)
        out.append(Result("images", f"numpy SGEMM 2048^3, {label}", "GFLOP/s", r["gflops"],
                          note=f"OpenBLAS kernel {r['kernel']}"))
    return out


def bench_images(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from PIL import Image

    from prodrec.embed.encoders import get_image_encoder
    from prodrec.data.images import load_rgb

    n, n_naive, bs, reps = (32, 8, 8, 1) if quick else (512, 96, 32, 3)
    paths = catalog(n).image_paths[:n]
    gemms = sgemm_gflops(5 if not quick else 2)
    out += gemms
    gemm = max(gemms, key=lambda r: r.median)
    for name, weights in (("efficientnet-lite0", "imagenet"), ("resnet50", None)):
        log(f"images: {name}")
        enc = get_image_encoder(name, weights=weights)
        enc.encode_with_failures(paths[:bs], bs, progress=False)  # warm-up (graph tracing, allocator)
        kit = [n / s for s in repeat(lambda: enc.encode_with_failures(paths, bs, progress=False), reps)]
        decoded = np.stack([load_rgb(p, 224) for p in paths])
        model = [n / s for s in repeat(lambda: [enc.encode_arrays(decoded[i:i + bs]) for i in range(0, n, bs)], reps)]
        if name == "resnet50":
            import tensorflow as tf

            def naive_one(p: str) -> None:  # what peer notebooks do: one image, one predict() call
                img = Image.open(p).convert("RGB").resize((224, 224))
                x = tf.keras.applications.resnet50.preprocess_input(np.asarray(img, dtype=np.float32)[None])
                enc.model.predict(x, verbose=0)
        else:
            def naive_one(p: str) -> None:
                img = Image.open(p).convert("RGB").resize((224, 224))
                enc.encode_arrays(np.asarray(img)[None])
        naive = [n_naive / s for s in repeat(lambda: [naive_one(p) for p in paths[:n_naive]], max(1, reps - 1))]
        params = {"images": n, "batch_size": bs, "weights": enc.weight_source, "naive_images": n_naive}
        out += [Result("images", f"{name}: kit pipeline (thread-pool decode + batches)", "img/s", kit, params),
                Result("images", f"{name}: naive loop (decode 1, predict 1)", "img/s", naive, params),
                Result("images", f"{name}: model alone on decoded batches", "img/s", model, params)]
        med = lambda v: float(np.median(v))
        derived.append({"name": f"{name}: kit / naive", "value": f"{med(kit) / med(naive):.2f}x", "goal": ">= 1.5",
                        "met": med(kit) / med(naive) >= 1.5})
        derived.append({"name": f"{name}: kit / model alone", "value": f"{med(kit) / med(model):.2f}", "goal": ">= 0.85",
                        "met": med(kit) / med(model) >= 0.85})
        if name == "resnet50":
            gf = med(model) * RESNET50_GFLOP
            out.append(Result("images", "resnet50: model alone, compute rate", "GFLOP/s",
                              [v * RESNET50_GFLOP for v in model], note="8.18 GFLOP per 224x224 image"))
            derived.append({"name": "resnet50 GFLOP/s vs numpy SGEMM", "value": f"{gf:.0f} / {gemm.median:.0f} = "
                            f"{gf / gemm.median:.0%}", "goal": "(reported)", "met": None})
        del enc


def bench_text(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec.embed.encoders import get_text_encoder
    from prodrec.data.text import product_sentences

    n, n_naive, reps = (64, 16, 1) if quick else (1024, 128, 3)
    sents = product_sentences(catalog(n).df)[:n]
    enc = get_text_encoder("all-MiniLM-L6-v2")
    enc.encode(sents[:32], progress=False)
    kit = [n / s for s in repeat(lambda: enc.encode(sents, batch_size=64, progress=False), reps)]
    naive = [n_naive / s for s in repeat(lambda: [enc.model.encode([x]) for x in sents[:n_naive]], reps)]
    p = {"sentences": n, "model": enc.model_id, "weights": enc.weight_source}
    out += [Result("text", "MiniLM: kit (batches of 64)", "sentences/s", kit, p),
            Result("text", "MiniLM: one sentence at a time", "sentences/s", naive, p)]
    r = float(np.median(kit) / np.median(naive))
    derived.append({"name": "text: batched / one at a time", "value": f"{r:.1f}x", "goal": "(reported)", "met": None})


def bench_topk(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    d, k = 2048, 5
    small, big, reps = (2000, 6000, 1) if quick else (10_000, 44_446, 3)
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for method, n in (("kit", small), ("naive", small), ("faiss", small), ("kit", big), ("faiss", big)):
        log(f"topk: {method} N={n}")
        runs[(method, n)] = [run_isolated("benchmarks._topk_worker", method, str(n), str(d), str(k))
                             for _ in range(reps)]
        secs = [r["seconds"] for r in runs[(method, n)]]
        mem = [r["extra_mib"] for r in runs[(method, n)]]
        emb = runs[(method, n)][0]["embeddings_mib"]
        out.append(Result("topk", f"all-vs-all top-{k}, {method}, N={n}", "s", secs, {"dim": d}))
        out.append(Result("topk", f"peak extra memory, {method}, N={n}", "MiB", mem, {"embeddings_mib": emb}))
    need = big * big * (4 + 4 + 8) / 2**30
    out.append(Result("topk", f"all-vs-all top-{k}, naive, N={big}", "s", [], note=f"not run: the N x N matrix, its "
                      f"negation and argsort indices need about {need:.1f} GiB (machine: 24 GiB)"))
    med = lambda m, n: float(np.median([r["seconds"] for r in runs[(m, n)]]))
    scaled = med("naive", small) * (big / small) ** 2
    derived.append({"name": f"kit time at N={big} vs naive at N={small} scaled by N^2",
                    "value": f"{med('kit', big):.1f} s vs {scaled:.0f} s ({med('kit', big) / scaled:.2f})",
                    "goal": "<= 1/3", "met": med("kit", big) <= scaled / 3})
    peak = float(np.median([r["extra_mib"] for r in runs[("kit", big)]]))
    derived.append({"name": f"kit peak extra memory at N={big}", "value": f"{peak:.0f} MiB", "goal": "<= 1024 MiB",
                    "met": peak <= 1024})
    a = np.load(WORK / f"topk-kit-{small}-{d}.npy")
    for other in ("naive", "faiss"):
        b = np.load(WORK / f"topk-{other}-{small}-{d}.npy")
        same = float((a == b).all(axis=1).mean())
        sets = float(np.mean([set(x) == set(y) for x, y in zip(a.tolist(), b.tolist())]))
        derived.append({"name": f"kit results identical to {other} (N={small})",
                        "value": f"{same:.2%} of rows identical in order, {sets:.2%} as sets",
                        "goal": "identical", "met": same == 1.0})


def bench_latency(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from sklearn.metrics.pairwise import cosine_similarity

    from benchmarks._topk_worker import unit_vectors
    from prodrec.rank.recommender import Recommender
    from prodrec.embed.vectors import Embeddings

    n, q, qn = (5000, 20, 5) if quick else (44_446, 200, 10)
    ids = np.arange(n)
    xi, xt = unit_vectors(n, 2048, 1), unit_vectors(n, 384, 2)
    rec = Recommender({"image": Embeddings(ids, xi), "text": Embeddings(ids, xt)})
    queries = np.random.default_rng(0).integers(0, n, q)
    modes = ("image", "text", "fused")
    rec.recommend_modes(int(queries[0]), 5, modes)
    it = iter(queries.tolist())
    kit = [s * 1e3 for s in repeat(lambda: rec.recommend_modes(next(it), 5, modes), q)]
    allowed = np.random.default_rng(1).random(n) < 0.5
    it2 = iter(queries.tolist())
    filt = [s * 1e3 for s in repeat(lambda: rec.recommend_modes(next(it2), 5, modes, allowed=allowed), q)]

    def naive(qi: int) -> None:  # per mode: cosine of the query against everything, then a full argsort
        si = cosine_similarity(xi[qi:qi + 1], xi)[0]
        st = cosine_similarity(xt[qi:qi + 1], xt)[0]
        for s in (si, st, 0.5 * si + 0.5 * st):
            np.argsort(-s)[:6]

    it3 = iter(queries.tolist())
    nv = [s * 1e3 for s in repeat(lambda: naive(next(it3)), qn)]
    p = {"products": n, "dims": "2048 image + 384 text", "modes": list(modes)}
    out += [Result("latency", "widget click: top-5 for image, text and fused", "ms", kit, p),
            Result("latency", "widget click with a same-gender filter", "ms", filt, p),
            Result("latency", "naive: sklearn cosine per mode + full argsort", "ms", nv, p)]
    med = float(np.median(kit))
    derived.append({"name": f"interaction latency at N={n} (median)", "value": f"{med:.1f} ms "
                    f"(naive {np.median(nv):.0f} ms)", "goal": "<= 50 ms", "met": med <= 50})


def bench_search(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    """Free-text search over every product's metadata (44,446 rows, photos or not) with the text arm:
    per query, the description through MiniLM plus ranking, after the catalog is embedded."""
    if not (SHARED / "styles.csv").is_file():
        log("search: skipped (needs the real sample catalog)")
        return
    from sklearn.metrics.pairwise import cosine_similarity

    from prodrec import build_experiment, load_catalog

    cat = load_catalog(SHARED, require_images=False)
    if quick:
        cat = cat.sample(3000, seed=0)
    store = Path(tempfile.mkdtemp(prefix="prodrec-bench-store-"))
    try:
        log(f"search: embedding {len(cat)} product sentences")
        exp = build_experiment(catalog=cat, image_model=None, store_dir=store, progress=False)
        searcher = exp.searcher()
        colours = ["black", "white", "blue", "red", "green", "brown", "grey", "pink"]
        things = ["sports shoes", "leather wallet", "analog watch", "denim jeans", "cotton t-shirt", "handbag",
                  "sunglasses", "formal shirt", "kurta", "backpack"]
        queries = [f"{c} {t} for {g}" for c in colours for t in things for g in ("men", "women")]
        queries = queries[:40] if quick else queries
        searcher.search("warm-up query", 5)
        it = iter(queries)
        kit = [s * 1e3 for s in repeat(lambda: searcher.search(next(it), 5), len(queries))]
        enc = exp.encoder("text")
        vecs = exp.embeddings["text"].vectors
        it2 = iter(queries)

        def naive(q: str) -> None:  # the description embedded, sklearn cosine against all, full argsort
            v = enc.encode([q], batch_size=1, progress=False)
            np.argsort(-cosine_similarity(v, vecs)[0])[:5]

        nv = [s * 1e3 for s in repeat(lambda: naive(next(it2)), min(40, len(queries)))]
    finally:
        shutil.rmtree(store, ignore_errors=True)
    p = {"products": len(cat), "queries": len(queries), "model": exp.models()["text"]["model_id"]}
    out += [Result("search", "search by description: embed + rank, top-5 (distinct queries)", "ms", kit, p),
            Result("search", "naive: embed + sklearn cosine + full argsort", "ms", nv, p)]
    med = float(np.median(kit))
    derived.append({"name": f"search latency over {len(cat)} products (median)", "value": f"{med:.1f} ms "
                    f"(naive {np.median(nv):.1f} ms)", "goal": "<= 30 ms", "met": med <= 30})


def _cli(*args: str, env: dict[str, str]) -> dict[str, Any]:
    """Run `prodrec ... --json` in a fresh process (Python start and imports included) and parse its output."""
    res = subprocess.run([sys.executable, "-m", "prodrec.run.cli", *args, "--json", "--quiet"], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"prodrec {' '.join(args)} failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout)


def bench_store(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    """`prodrec embed` of the whole photo sample into an empty store (cold), then `recommend` and `evaluate`
    on other samples and seeds (warm): each a fresh CLI process; the warm ones must load no model."""
    if not (SHARED / "styles.csv").is_file():
        log("store: skipped (needs the real sample catalog)")
        return
    store = Path(tempfile.mkdtemp(prefix="prodrec-bench-store-"))
    env = dict(os.environ, PRODREC_STORE=str(store), PRODREC_OFFLINE="1")
    data = ["--data", str(SHARED)] + (["--n", "300"] if quick else [])
    try:
        log("store: cold `prodrec embed` of the photo sample" + (" (300 products)" if quick else ""))
        t0 = time.perf_counter()
        info = _cli("embed", *data, env=env)
        cold = time.perf_counter() - t0
        samples = [("200", "1"), ("1000", "7")] if quick else [("1000", "1"), ("5000", "7"), ("2000", "42")]
        warm_rec, warm_eval, caches = [], [], set()
        for n, seed in samples:
            t0 = time.perf_counter()
            rec = _cli("recommend", "--data", str(SHARED), "--n", n, "--seed", seed, "--id", "15970", env=env)
            warm_rec.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            ev = _cli("evaluate", "--data", str(SHARED), "--n", n, "--seed", seed, "--n-boot", "200", env=env)
            warm_eval.append(time.perf_counter() - t0)
            caches |= {m["cache"] for r in (rec, ev) for m in r.get("provenance", {}).get("models", {}).values() if m}
    finally:
        shutil.rmtree(store, ignore_errors=True)
    products = info["products"]
    p = {"products embedded": products, "warm samples (n, seed)": samples,
         "models": {a: m["model_id"] for a, m in info["models"].items() if m}}
    out += [Result("store", f"cold: prodrec embed, {products} products, empty store", "s", [cold], p),
            Result("store", "warm: prodrec recommend, another --n/--seed", "s", warm_rec, p),
            Result("store", "warm: prodrec evaluate, another --n/--seed (n-boot 200)", "s", warm_eval, p)]
    for name, vals in (("recommend", warm_rec), ("evaluate", warm_eval)):
        r = float(np.median(vals) / cold)
        derived.append({"name": f"warm {name} / cold embed (any other sample of the embedded catalog)",
                        "value": f"{r:.1%} (models: {sorted(caches)})", "goal": "<= 10%, no model loaded",
                        "met": r <= 0.10 and caches == {"hit"}})


def bench_rerun(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec.run.notebooks import find_notebooks, run_notebooks

    if not (SHARED / "styles.csv").is_file():
        log("rerun: skipped (needs the real sample catalog)")
        return
    n = 200 if quick else 2000
    nbs = find_notebooks(only=["02", "03", "04"])
    store = Path(tempfile.mkdtemp(prefix="prodrec-bench-store-"))
    old = os.environ.get("PRODREC_STORE")
    os.environ["PRODREC_STORE"] = str(store)
    try:
        params = {"data_dir": str(SHARED), "n_products": n, "seed": 0}
        run = lambda: run_notebooks(WORK / "rerun", params, notebooks=nbs, progress=False)
        log(f"rerun: cold, {n} products")
        cold = repeat(run, 1)
        log("rerun: warm")
        warm = repeat(run, 1 if quick else 3)
    finally:
        if old is None:
            os.environ.pop("PRODREC_STORE", None)
        else:
            os.environ["PRODREC_STORE"] = old
        shutil.rmtree(store, ignore_errors=True)
    p = {"products": n, "notebooks": [nb.name for nb in nbs]}
    out += [Result("rerun", "notebooks 02-04, cold (empty store)", "s", cold, p),
            Result("rerun", "notebooks 02-04, warm (store filled)", "s", warm, p)]
    r = float(np.median(warm) / np.median(cold))
    derived.append({"name": "warm / cold re-run of notebooks 02-04", "value": f"{r:.0%}", "goal": "<= 10%",
                    "met": r <= 0.10})


def bench_colour(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .colour import bench

    bench(quick, out, derived)


def bench_learned(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .learned import bench

    bench(quick, out, derived)


def bench_ann(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .ann import bench

    bench(quick, out, derived)


def bench_ray(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .scale import bench

    bench(quick, out, derived)


def bench_backends(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .backends import bench

    bench(quick, out, derived)


def bench_samplesize(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .samplesize import bench

    bench(quick, out, derived)


def bench_heads(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .heads import bench

    bench(quick, out, derived)


def bench_export(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from .export import bench

    bench(quick, out, derived)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, not the machine")
    ap.add_argument("--out", default=None, help="folder for results.json and RESULTS.md (default: benchmarks/, "
                    "or benchmarks/_work/quick with --quick)")
    ap.add_argument("--only", default=",".join(SECTIONS), help=f"comma list of {SECTIONS}")
    ap.add_argument("--merge", action="store_true", help="keep the other sections' results from the existing "
                    "results.json in the output folder (each row keeps the date it was measured on)")
    args = ap.parse_args(argv)
    os.environ.setdefault("PRODREC_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    WORK.mkdir(parents=True, exist_ok=True)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {sorted(unknown)}; choose from {SECTIONS}")
    results: list[Result] = []
    derived: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    for sec in SECTIONS:
        if sec in only:
            log(f"section {sec}")
            before = len(derived)
            globals()[f"bench_{sec}"](args.quick, results, derived)
            for d in derived[before:]:
                d["section"] = sec
    meta = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "quick": args.quick,
            "sections": only, "seconds": round(time.perf_counter() - t0, 1), "data": str(SHARED)}
    folder = Path(args.out) if args.out else (WORK / "quick" if args.quick else Path(__file__).parent)
    carried = None
    if args.merge and (folder / "results.json").is_file():
        old = json.loads((folder / "results.json").read_text())
        date = old["meta"].get("date")
        carried = {"rows": [dict(r, measured=r.get("measured", date)) for r in old["results"]
                            if r["section"] not in only],
                   "derived": [dict(d, measured=d.get("measured", date)) for d in old["derived"]
                               if d.get("section") not in only]}
        meta["merged"] = f"sections {sorted({r['section'] for r in carried['rows']})} carried over from {date}"
    write_results(results, derived, meta, folder, carried)
    width = max(len(r.name) for r in results) if results else 10
    for r in results:
        print(f"{r.section:<8} {r.name:<{width}} {r.median:>10.4g} {r.unit}" if r.values else
              f"{r.section:<8} {r.name:<{width}} {'-':>10} {r.note}")
    for d in derived:
        print(f"target   {d['name']}: {d['value']} (goal {d['goal']})"
              + {True: " ok", False: " MISSED", None: ""}[d.get("met")])
    print(f"wrote {folder / 'RESULTS.md'} and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
