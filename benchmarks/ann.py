"""Nearest-neighbour indexes (``prodrec.rank.index``): exact vs ivf vs hnsw on clustered synthetic unit vectors.

Data: a seeded Gaussian mixture (``mixture``) around ``min(4000, n / 100)`` unit centres, each cluster
with its own isotropic spread (uniform in [0.3, 0.9] of the centre's norm), every point normalised. The
centres come in "departments" of 80 (noisy copies of one random direction), as a catalog's categories
do, rather than all mutually orthogonal: on a flat mixture of 4,000 orthogonal clusters hnsw (then with
efConstruction 40) stalled at recall@5 0.93 on 1M x 384 even at efSearch 2048, as greedy graph search
has no gradient to follow between orthogonal clusters, while ivf reached 0.997 at nprobe 1. 1,000
held-out queries come from the same mixture with another seed. Sets: 1,000,000 x 384 and 200,000 x 1280
(quick: 20,000 x 64), generated in chunks straight into ``.npy`` files under ``benchmarks/_work/ann``
(deleted afterwards), so this process never holds them.

Each kind is built and measured in a fresh process (``python -m benchmarks.ann worker ...``) that loads
the vectors first, so its memory figures are its own: RSS kept after the build and peak growth during
it, beside the index's own byte count. Per kind: build seconds (k-means / graph + the calibration of
nprobe / efSearch), single-query latency (one query per call, the interactive case), batched throughput
(all 1,000 queries in one call), recall@5 on the held-out queries against the exact ranking, which the
exact worker computes (its batched run) in the same benchmark run.

Also: a size sweep that justifies ``prodrec.rank.index.AUTO_EXACT_MAX`` (single-query latency at N = 2,000 to
100,000, prefixes of each set: exact at 384 and 1280 dims, hnsw and ivf with their build time and recall
at 384), and a fused check: 100,000 products as two concatenated unit arms (256 + 128 dims, sharing each
product's cluster), queries weighted 0.5 : 0.5 and 0.8 : 0.2, nprobe / efSearch calibrated with the
rows vs with weighted queries.

    python -m benchmarks --only ann --out /tmp/bench_ann
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import WORK, Result, peak_rss_mib, run_isolated

K = 5
GEN_VERSION = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] ann: {msg}", file=sys.stderr, flush=True)


def n_centres(n: int) -> int:
    return int(min(4000, max(16, n // 100)))


def centres_of(d: int, centres: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded unit centres in two levels (``centres / 80`` random "departments", each centre a noisy copy
    of one: cosine ~0.6 between centres of a department, ~0 across), and per-centre spreads."""
    rng = np.random.default_rng(seed)
    supers = rng.standard_normal((max(4, centres // 80), d), dtype=np.float32)
    supers /= np.linalg.norm(supers, axis=1, keepdims=True)
    cen = supers[np.arange(centres) % len(supers)] + 0.8 * rng.standard_normal((centres, d), dtype=np.float32) \
        / np.float32(np.sqrt(d))
    cen /= np.linalg.norm(cen, axis=1, keepdims=True)
    spread = rng.uniform(0.3, 0.9, centres).astype(np.float32) / np.float32(np.sqrt(d))
    return cen, spread


def points(cen: np.ndarray, spread: np.ndarray, c: np.ndarray, draw: np.random.Generator) -> np.ndarray:
    """Unit vectors around the centres ``c`` (isotropic Gaussian, each centre's own spread)."""
    blk = cen[c] + spread[c, None] * draw.standard_normal((len(c), cen.shape[1]), dtype=np.float32)
    blk /= np.linalg.norm(blk, axis=1, keepdims=True)
    return blk


def mixture(n: int, d: int, centres: int, seed: int, sample_seed: int, out: np.ndarray | None = None,
            chunk: int = 32_768) -> np.ndarray:
    """``n`` unit vectors of the Gaussian mixture around :func:`centres_of` ``(d, centres, seed)``;
    ``sample_seed`` draws the points (held-out queries: same ``seed``, another ``sample_seed``)."""
    cen, spread = centres_of(d, centres, seed)
    draw = np.random.default_rng(sample_seed)
    x = np.empty((n, d), dtype=np.float32) if out is None else out
    for s in range(0, n, chunk):
        m = min(chunk, n - s)
        x[s : s + m] = points(cen, spread, draw.integers(0, centres, m), draw)
    return x


def make_set(folder: Path, n: int, d: int, n_queries: int) -> None:
    """base.npy [n, d] and queries.npy [n_queries, d] in ``folder`` (kept when already made alike)."""
    spec = {"n": n, "d": d, "queries": n_queries, "centres": n_centres(n), "version": GEN_VERSION}
    if (folder / "spec.json").is_file() and json.loads((folder / "spec.json").read_text()) == spec:
        return
    folder.mkdir(parents=True, exist_ok=True)
    base = np.lib.format.open_memmap(folder / "base.npy", mode="w+", dtype=np.float32, shape=(n, d))
    mixture(n, d, n_centres(n), seed=0, sample_seed=1, out=base)
    base.flush()
    del base
    np.save(folder / "queries.npy", mixture(n_queries, d, n_centres(n), seed=0, sample_seed=2))
    (folder / "spec.json").write_text(json.dumps(spec))


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------------------------------- workers


def _single_latencies(index: Any, q: np.ndarray, n: int) -> list[float]:
    for i in range(3):  # warm-up
        index.search(q[i : i + 1], K)
    out = []
    for i in range(n):
        t0 = time.perf_counter()
        index.search(q[i % len(q) : i % len(q) + 1], K)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def worker(kind: str, folder: Path, n_single: int) -> dict[str, Any]:
    """Build one index over ``folder``'s vectors and measure it (exact: also writes the ground truth)."""
    import faiss

    from prodrec.rank.index import build_index, recall_at_k

    x = np.load(folder / "base.npy")
    q = np.load(folder / "queries.npy")
    base_rss, base_peak = rss_mib(), peak_rss_mib()
    t0 = time.perf_counter()
    index = build_index(x, kind, seed=0)
    build_s = time.perf_counter() - t0
    kept_rss, build_peak = rss_mib() - base_rss, peak_rss_mib() - base_peak
    t0 = time.perf_counter()
    pos, _ = index.search(q, K)
    batch_s = time.perf_counter() - t0
    res: dict[str, Any] = {"kind": kind, "n": len(x), "dim": x.shape[1], "build_s": build_s,
                           "index_mib": index.nbytes / 2**20, "raw_mib": x.nbytes / 2**20,
                           "kept_rss_mib": kept_rss, "peak_extra_mib": build_peak, "params": index.params,
                           "calibration": index.calibration, "batch_qps": len(q) / batch_s,
                           "queries": len(q), "threads": faiss.omp_get_max_threads()}
    if kind == "exact":
        np.save(folder / "truth.npy", pos)
        res["recall"] = 1.0
    else:
        truth = np.load(folder / "truth.npy")
        res["recall"] = recall_at_k(pos, truth)
        tuned = index.calibration["param"] if index.calibration else None
        if tuned:  # recall and throughput on the held-out queries around the calibrated value
            chosen = int(index.params[tuned])
            curve = {}
            for v in sorted({max(1, chosen // 2), chosen, 2 * chosen, 4 * chosen}):
                index.params[tuned] = v  # the search effort is read from params at each call
                t0 = time.perf_counter()
                p, _ = index.search(q, K)
                curve[v] = {"recall": round(recall_at_k(p, truth), 4),
                            "batch_qps": round(len(q) / (time.perf_counter() - t0), 1)}
            index.params[tuned] = chosen
            res["curve"] = {"param": tuned, "points": curve}
    res["single_ms"] = _single_latencies(index, q, n_single)
    return res


def sweep(folder: Path, sizes: list[int], n_single: int, approx: bool) -> list[dict[str, Any]]:
    """Exact (and, with ``approx``, hnsw and ivf) at each size, prefixes of ``folder``'s vectors: one
    query per call."""
    from prodrec.rank.index import ExactIndex, build_index, recall_at_k

    base = np.load(folder / "base.npy", mmap_mode="r")
    q = np.load(folder / "queries.npy")[:n_single]
    out = []
    for n in sizes:
        x = np.ascontiguousarray(base[:n])
        exact = ExactIndex(x)
        truth, _ = exact.search(q, K)
        row: dict[str, Any] = {"n": n, "dim": x.shape[1], "exact_ms": _single_latencies(exact, q, n_single)}
        if not approx:
            out.append(row)
            log(f"sweep {x.shape[1]}-d N={n}: exact {np.median(row['exact_ms']):.2f} ms")
            continue
        for kind in ("hnsw", "ivf"):
            t0 = time.perf_counter()
            idx = build_index(x, kind, seed=0)
            row[f"{kind}_build_s"] = time.perf_counter() - t0
            row[f"{kind}_ms"] = _single_latencies(idx, q, n_single)
            row[f"{kind}_recall"] = recall_at_k(idx.search(q, K)[0], truth)
            row[f"{kind}_params"] = idx.params
        out.append(row)
        log(f"sweep N={n}: exact {np.median(row['exact_ms']):.2f} ms, hnsw {np.median(row['hnsw_ms']):.2f} ms "
            f"(build {row['hnsw_build_s']:.1f} s), ivf {np.median(row['ivf_ms']):.2f} ms")
    return out


def fused_check(n: int) -> dict[str, Any]:
    """Two unit arms side by side (256 + 128 dims), queries weighted w : 1 - w: recall of ivf / hnsw when
    calibrated with the rows (default) and with weighted queries (``calibration_queries``)."""
    from prodrec.rank.index import ExactIndex, build_index, recall_at_k

    arms = [centres_of(d, n_centres(n), seed) for d, seed in ((256, 0), (128, 10))]

    def rows(sample: int, m: int, w: float | None = None) -> np.ndarray:
        """``m`` products, both arms side by side (a product's arms share its cluster, as a photo and its
        description share a category); weighted ``w : 1 - w`` (queries) unless ``w`` is None."""
        draw = np.random.default_rng(sample)
        c = draw.integers(0, n_centres(n), m)
        a, b = (points(cen, spread, c, draw) for cen, spread in arms)
        return np.hstack([a, b] if w is None else [w * a, (1 - w) * b]).astype(np.float32)

    x = rows(1, n)
    out: dict[str, Any] = {"n": n, "dims": [cen.shape[1] for cen, _ in arms]}
    built = {kind: build_index(x, kind, seed=0) for kind in ("ivf", "hnsw")}  # calibrated with the rows
    for w in (0.5, 0.8):
        q, cal = rows(2, 500, w), rows(3, 256, w)
        truth = ExactIndex(x).search(q, K)[0]
        for kind, idx in built.items():
            for how, cq in (("rows", None), ("weighted queries", cal)):
                value, _ = idx.calibrate(x, seed=0, queries=cq)  # type: ignore[attr-defined]
                key = f"w={w} {kind} calibrated with {how}"
                out[key] = {idx.calibration["param"]: value,  # type: ignore[index]
                            "recall": round(recall_at_k(idx.search(q, K)[0], truth), 4)}
                log(f"fused {key}: {out[key]}")
    return out


# ----------------------------------------------------------------------------------------- bench


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    sets = [("20k x 64", 20_000, 64)] if quick else [("1M x 384", 1_000_000, 384), ("200k x 1280", 200_000, 1280)]
    n_queries, single_ann, single_exact = (200, 50, 20) if quick else (1000, 200, 30)
    root = WORK / "ann"
    try:
        for label, n, d in sets:
            folder = root / f"{n}x{d}"
            log(f"{label}: generating {n} + {n_queries} clustered unit vectors ({n_centres(n)} centres)")
            t0 = time.perf_counter()
            make_set(folder, n, d, n_queries)
            log(f"{label}: data ready in {time.perf_counter() - t0:.0f} s")
            runs = {}
            for kind in ("exact", "ivf", "hnsw"):
                log(f"{label}: {kind}")
                r = run_isolated("benchmarks.ann", "worker", kind, str(folder),
                                 str(single_exact if kind == "exact" else single_ann))
                runs[kind] = r
                log(f"{label}: {kind} build {r['build_s']:.1f} s, single {np.median(r['single_ms']):.2f} ms, "
                    f"batch {r['batch_qps']:.0f} q/s, recall@5 {r['recall']:.3f}, params {r['params']}")
            _report_set(label, runs, out, derived, judged=(n == 1_000_000))
        sizes = [1000, 2000, 5000, 10_000] if quick else [2000, 5000, 10_000, 20_000, 50_000, 100_000]
        for i, (label, n, d) in enumerate(sets):  # approximate kinds on the first set only; exact on each
            log(f"size sweep on prefixes of {label}: {sizes}")
            rows = run_isolated("benchmarks.ann", "sweep", str(root / f"{n}x{d}"), ",".join(map(str, sizes)),
                                "50" if quick else "100", "approx" if i == 0 else "exact")["rows"]
            _report_sweep(rows, out, derived, with_approx=i == 0)
        fused_n = 5000 if quick else 100_000
        log(f"fused check, {fused_n} rows")
        fused = run_isolated("benchmarks.ann", "fused", str(fused_n))
        out.append(Result("ann", f"fused 2 arms (256 + 128 dims), N={fused_n}: recall@5 by calibration", "recall",
                          [v["recall"] for k, v in fused.items() if isinstance(v, dict)],
                          {k: v for k, v in fused.items()},
                          note="values in params; weighted queries w : 1 - w"))
        for w in (0.5, 0.8):
            a, b = fused[f"w={w} ivf calibrated with rows"], fused[f"w={w} ivf calibrated with weighted queries"]
            derived.append({"name": f"fused (w={w}), ivf recall@5: calibrated with rows vs weighted queries",
                            "value": f"{a['recall']:.3f} (nprobe {a['nprobe']}) vs {b['recall']:.3f} "
                            f"(nprobe {b['nprobe']})", "goal": "(reported)", "met": None})
            a, b = fused[f"w={w} hnsw calibrated with rows"], fused[f"w={w} hnsw calibrated with weighted queries"]
            derived.append({"name": f"fused (w={w}), hnsw recall@5: calibrated with rows vs weighted queries",
                            "value": f"{a['recall']:.3f} (efSearch {a['efSearch']}) vs {b['recall']:.3f} "
                            f"(efSearch {b['efSearch']})", "goal": "(reported)", "met": None})
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _report_set(label: str, runs: dict[str, dict[str, Any]], out: list[Result], derived: list[dict[str, Any]],
                judged: bool) -> None:
    ex = runs["exact"]
    ex_single = float(np.median(ex["single_ms"]))
    for kind, r in runs.items():
        p = {"n": r["n"], "dim": r["dim"], "params": r["params"], "calibration": r["calibration"],
             "threads": r["threads"], "queries": r["queries"]}
        if "curve" in r:
            p["held-out recall / batched q/s by " + r["curve"]["param"]] = r["curve"]["points"]
        out += [
            Result("ann", f"{label}: {kind} build (incl. calibration)", "s", [r["build_s"]], p),
            Result("ann", f"{label}: {kind} index memory", "MiB", [r["index_mib"]], p,
                   note=f"RSS kept {r['kept_rss_mib']:.0f} MiB, build peak +{r['peak_extra_mib']:.0f} MiB; "
                   f"raw vectors {r['raw_mib']:.0f} MiB"),
            Result("ann", f"{label}: {kind} single-query latency", "ms", r["single_ms"], p),
            Result("ann", f"{label}: {kind} batched throughput ({r['queries']} queries)", "queries/s",
                   [r["batch_qps"]], p),
            Result("ann", f"{label}: {kind} recall@5 (held-out queries)", "recall", [r["recall"]], p),
        ]
        if kind == "exact":
            continue
        speed = ex_single / float(np.median(r["single_ms"]))
        batch = r["batch_qps"] / ex["batch_qps"]
        ok = r["recall"] >= 0.95 and speed >= 20
        derived.append({"name": f"{label}: {kind} recall@5 at single-query speed-up vs exact (same run)",
                        "value": f"{r['recall']:.3f} at {speed:.0f}x ({np.median(r['single_ms']):.2f} vs "
                        f"{ex_single:.1f} ms; batched {batch:.1f}x)",
                        "goal": ">= 0.95 at >= 20x", "met": ok if judged else None})
        mem = r["index_mib"] / r["raw_mib"]
        derived.append({"name": f"{label}: {kind} index memory / raw vectors",
                        "value": f"{mem:.2f} ({r['index_mib']:.0f} / {r['raw_mib']:.0f} MiB; RSS kept "
                        f"{r['kept_rss_mib']:.0f} MiB)", "goal": "<= 2", "met": mem <= 2})


def _report_sweep(rows: list[dict[str, Any]], out: list[Result], derived: list[dict[str, Any]],
                  with_approx: bool) -> None:
    from prodrec.rank.index import AUTO_EXACT_MAX

    d = rows[0]["dim"]
    if not with_approx:
        for row in rows:
            out.append(Result("ann", f"size sweep {d}-d, N={row['n']}: exact single-query latency", "ms",
                              row["exact_ms"], {"n": row["n"], "dim": d}))
        text = "; ".join(f"N={r['n']}: {np.median(r['exact_ms']):.2f} ms" for r in rows)
        derived.append({"name": f"exact single-query latency by N, {d}-d", "value": text, "goal": "(reported)",
                        "met": None})
        return
    for row in rows:
        p = {"n": row["n"], "dim": d, "hnsw": row["hnsw_params"], "ivf": row["ivf_params"],
             "hnsw_recall@5": row["hnsw_recall"], "ivf_recall@5": row["ivf_recall"],
             "hnsw_build_s": row["hnsw_build_s"], "ivf_build_s": row["ivf_build_s"]}
        for kind in ("exact", "hnsw", "ivf"):
            note = "" if kind == "exact" else (f"recall@5 {row[f'{kind}_recall']:.3f}, build "
                                               f"{row[f'{kind}_build_s']:.1f} s")
            out.append(Result("ann", f"size sweep {d}-d, N={row['n']}: {kind} single-query latency", "ms",
                              row[f"{kind}_ms"], p, note=note))
    med = {(r["n"], k): float(np.median(r[f"{k}_ms"])) for r in rows for k in ("exact", "hnsw", "ivf")}
    text = "; ".join(f"N={r['n']}: exact {med[(r['n'], 'exact')]:.2f} / hnsw {med[(r['n'], 'hnsw')]:.2f} ms "
                     f"(build {r['hnsw_build_s']:.1f} s)" for r in rows)
    derived.append({"name": f"auto: exact below {AUTO_EXACT_MAX} vectors (single-query latency by N, {d}-d)",
                    "value": text, "goal": "(reported)", "met": None})


def main() -> None:
    cmd = sys.argv[1]
    if cmd == "worker":
        res = worker(sys.argv[2], Path(sys.argv[3]), int(sys.argv[4]))
    elif cmd == "sweep":
        res = {"rows": sweep(Path(sys.argv[2]), [int(s) for s in sys.argv[3].split(",")], int(sys.argv[4]),
                             sys.argv[5] == "approx")}
    elif cmd == "fused":
        res = fused_check(int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {cmd!r}: worker | sweep | fused")
    print(json.dumps(res, default=float))


if __name__ == "__main__":
    main()
