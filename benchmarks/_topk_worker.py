"""One all-vs-all exact top-k run in a fresh process: `python -m benchmarks._topk_worker METHOD N DIM K`.

Prints one JSON line: seconds, peak extra memory above the embeddings (MiB, from VmHWM), and a digest
of the result so that methods can be compared for identity. METHOD: kit | naive | faiss.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time

import numpy as np

from ._common import WORK, peak_rss_mib


def unit_vectors(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Random unit rows, made in chunks so that no float64 temporary inflates the memory baseline."""
    rng = np.random.default_rng(seed)
    x = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 4096):
        blk = rng.standard_normal((min(4096, n - s), d), dtype=np.float32)
        blk /= np.linalg.norm(blk, axis=1, keepdims=True)
        x[s : s + len(blk)] = blk
    return x


def main() -> None:
    method, n, d, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    x = unit_vectors(n, d)
    ids = np.arange(n)
    if method == "kit":
        from prodrec.rank.recommender import CosineIndex

        ids = np.array([f"{i:08d}" for i in range(n)], dtype=object)  # string ids, sorted as the rows are
        base = peak_rss_mib()  # before the index: its sorted copy of the vectors counts as extra memory
        t0 = time.perf_counter()
        idx = CosineIndex(ids, x, normalize=False)
        pos, _ = idx.topk_positions(None, k)
    elif method == "naive":
        from sklearn.metrics.pairwise import cosine_similarity

        base = peak_rss_mib()
        t0 = time.perf_counter()
        sim = cosine_similarity(x)  # the full N x N matrix, as peer notebooks do
        np.fill_diagonal(sim, -np.inf)
        pos = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    elif method == "faiss":
        import faiss

        base = peak_rss_mib()
        t0 = time.perf_counter()
        index = faiss.IndexFlatIP(d)
        index.add(x)
        _, nb = index.search(x, k + 1)
        pos = np.array([[j for j in row if j != i][:k] for i, row in enumerate(nb)])
    else:
        raise SystemExit(f"unknown method {method}")
    secs = time.perf_counter() - t0
    extra = peak_rss_mib() - base
    digest = hashlib.sha256(np.ascontiguousarray(pos, dtype=np.int64).tobytes()).hexdigest()[:16]
    WORK.mkdir(exist_ok=True)
    np.save(WORK / f"topk-{method}-{n}-{d}.npy", pos.astype(np.int32))
    print(json.dumps({"method": method, "n": n, "d": d, "seconds": secs, "extra_mib": extra,
                      "embeddings_mib": x.nbytes / 2**20, "digest": digest}))


if __name__ == "__main__":
    main()
