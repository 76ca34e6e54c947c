"""numpy SGEMM rate in a fresh process (so that OpenBLAS settings from the environment apply):
`python -m benchmarks._sgemm_worker REPEATS`; prints one JSON line."""

from __future__ import annotations

import json
import sys
import time

import numpy as np


def main() -> None:
    reps = int(sys.argv[1])
    a = np.random.default_rng(0).random((2048, 2048), dtype=np.float32)
    a @ a
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ a
        rates.append(2 * 2048**3 / (time.perf_counter() - t0) / 1e9)
    try:
        from threadpoolctl import threadpool_info

        kernel = [d.get("architecture") for d in threadpool_info() if d.get("user_api") == "blas"]
    except ImportError:
        kernel = []
    print(json.dumps({"gflops": rates, "kernel": kernel}))


if __name__ == "__main__":
    main()
