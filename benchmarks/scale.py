"""Section ``ray``: `prodrec embed --engine local` vs `--engine ray` on real photos, and whether they agree.

Each run is a fresh `prodrec embed` process into a fresh empty store (EfficientNet-Lite0, image arm only):
Python start, imports, catalog, hashing, model start and, for Ray, starting and stopping a local Ray on this
machine are all inside the time. The two stores' vectors are then compared: the top-5 neighbours of 100
query products must be the same lists.

Read the ratio with the machine's load in mind: each Ray actor gets one core and runs torch on one thread,
while the local engine runs torch on one thread per core in one process. On a machine shared with other
busy processes those threads wait for each other and the local engine slows down far more than the actors
do; on an idle machine expect the Ray run to cost about the local time plus Ray's fixed start-up (tens of
seconds on 2 cores).
"""

from __future__ import annotations

import importlib.util
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

from ._common import ROOT, SHARED, Result

MODEL = "efficientnet-lite0"
RATIO_GOAL = 1.3
QUERIES = 100
K = 5


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _embed(engine: str, n: int, store: Path) -> tuple[float, dict[str, Any]]:
    """Wall seconds of one `prodrec embed --engine ENGINE` into ``store``, and its JSON output."""
    env = dict(os.environ, PRODREC_OFFLINE="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cmd = [sys.executable, "-m", "prodrec.run.cli", "embed", "--data", str(SHARED), "--n", str(n), "--seed", "0",
           "--image-model", MODEL, "--text-model", "none", "--store", str(store), "--engine", engine,
           "--json", "--quiet"]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=ROOT, env=env)
    seconds = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"prodrec embed --engine {engine} failed:\n{res.stderr[-3000:]}")
    return seconds, json.loads(res.stdout)


def _stored(store: Path, model_id: str) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """(ids, vectors, meta) of the sample photos ``store`` holds a vector for (a store read: no model)."""
    from prodrec import load_catalog
    from prodrec.embed.arms import ImageArm
    from prodrec.embed.store import EmbeddingStore

    def never(positions: np.ndarray) -> Any:
        raise AssertionError(f"{len(positions)} vectors missing from {store}")

    cat = load_catalog(SHARED)
    st = EmbeddingStore(store)
    ids, keys = [str(i) for i in cat.ids], ImageArm().keys(cat, st)
    found, vectors, failures = st.lookup("image", model_id, ids, keys)
    ok = np.flatnonzero(found & ~np.isin(ids, list(failures)))
    emb = st.embed("image", model_id, vectors.shape[1], [ids[i] for i in ok], [keys[i] for i in ok], never,
                   progress=False)
    return emb.ids, emb.vectors, emb.meta


def _top_k(vectors: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of each query's ``k`` nearest rows by cosine (unit vectors), itself left out."""
    sims = vectors[queries] @ vectors.T
    sims[np.arange(len(queries)), queries] = -np.inf
    top = np.argpartition(-sims, k, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    return np.take_along_axis(top, order, axis=1)


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    """Time the two engines on the same photos into empty stores; compare their vectors' top-5 lists."""
    if importlib.util.find_spec("ray") is None:
        _log("ray: skipped (Ray Data is not installed: pip install 'prodrec[scale]')")
        return
    if not (SHARED / "styles.csv").is_file():
        _log("ray: skipped (needs the real sample catalog)")
        return
    n = 64 if quick else 2000
    rounds = 1 if quick else 2  # alternated, so that load from other processes hits both engines alike
    times: dict[str, list[float]] = {"local": [], "ray": []}
    infos: dict[str, dict[str, Any]] = {}
    work = Path(tempfile.mkdtemp(prefix="prodrec-bench-ray-"))
    try:
        for r in range(rounds):
            for engine in ("local", "ray"):
                store = work / f"{engine}-{r}"
                _log(f"ray: prodrec embed --engine {engine}, {n} photos, empty store (round {r + 1}/{rounds})")
                seconds, info = _embed(engine, n, store)
                times[engine].append(seconds)
                infos[engine] = info["models"]["image"]
                if infos[engine]["computed"] != info["products"]:
                    raise RuntimeError(f"--engine {engine} computed {infos[engine]['computed']} of "
                                       f"{info['products']} products into an empty store")
        model_id = infos["local"]["model_id"]
        ids_a, va, _ = _stored(work / "local-0", model_id)
        ids_b, vb, meta = _stored(work / "ray-0", model_id)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if ids_a.tolist() != ids_b.tolist():
        raise RuntimeError(f"the two stores hold different products ({len(ids_a)} vs {len(ids_b)})")
    queries = np.random.default_rng(0).choice(len(ids_a), size=min(QUERIES, len(ids_a)), replace=False)
    same = int((_top_k(va, queries, K) == _top_k(vb, queries, K)).all(axis=1).sum())
    diff = float(np.abs(va - vb).max())

    p = {"photos": n, "model": model_id, "cores": os.cpu_count(), "ray": meta.get("ray"),
         "device": meta.get("device")}
    note = "fresh process and empty store each"
    out += [Result("ray", f"prodrec embed --engine local, {n} photos", "s", times["local"], p,
                   f"{note}; one process, torch's default threads (one per core)"),
            Result("ray", f"prodrec embed --engine ray (local Ray), {n} photos", "s", times["ray"], p,
                   f"{note}; Ray start-up and shutdown included; one actor per core, one torch thread each")]
    ratio = float(np.median(times["ray"]) / np.median(times["local"]))
    derived.append({"name": f"--engine ray / --engine local wall time, {n} photos on this machine",
                    "value": f"{ratio:.2f}x ({np.median(times['ray']):.1f} s vs {np.median(times['local']):.1f} s)",
                    "goal": f"<= {RATIO_GOAL}x", "met": ratio <= RATIO_GOAL})
    derived.append({"name": f"identical top-{K} lists, local vs ray vectors ({len(queries)} queries)",
                    "value": f"{same}/{len(queries)} (max |difference| {diff:.1e})",
                    "goal": f"{len(queries)}/{len(queries)}", "met": same == len(queries)})
