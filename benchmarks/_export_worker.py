"""One measurement of the ``export`` section in a fresh process: ``python -m benchmarks._export_worker JOB DIR ...``.

DIR holds the vectors (``<arm>.npy``, unit rows, ids in ``ids.npy``) and, for rules, ``labels.parquet``.
Prints one JSON line: seconds, peak memory growth during the measured step (MiB; VmHWM reset just before it,
through /proc/self/clear_refs), the stored vectors' size (MiB) and a digest of the result.

Jobs: ``faiss K [kind]`` (per-arm top-K by FAISS, flat or ivf: the baseline), ``export K [index] [rules]``
(prodrec's export of the fused top-K to a Parquet table), ``update K`` (export 99% of the products, then
time ``update_table`` after the last 1% are added, and the full export of all of them; the two tables are
compared row for row).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from ._common import peak_rss_mib


def _rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> float:
    """Reset the high-water mark to the current RSS (Linux: ``echo 5 > /proc/self/clear_refs``); returns it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _rss_mib()


def _load(folder: Path, arms: list[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    ids = np.load(folder / "ids.npy", allow_pickle=False).astype(object)
    return ids, {a: np.load(folder / f"{a}.npy") for a in arms}


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def faiss_topk(folder: Path, k: int, kind: str, arms: list[str]) -> dict[str, Any]:
    import faiss
    import pyarrow.parquet  # noqa: F401 - loaded by both methods before their step (the export needs it)

    _, vec = _load(folder, arms)
    stored = sum(v.nbytes for v in vec.values()) / 2**20
    base = _reset_peak()
    t0 = time.perf_counter()
    out = []
    for a, x in vec.items():
        d = x.shape[1]
        if kind == "flat":
            index = faiss.IndexFlatIP(d)
        else:
            nlist = int(4 * np.sqrt(len(x)))
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            rng = np.random.default_rng(0)
            index.train(x[rng.choice(len(x), min(len(x), 64 * nlist), replace=False)])
            index.nprobe = 4
        index.add(x)
        pos = np.empty((len(x), k), dtype=np.int64)
        for b in range(0, len(x), 65536):
            _, nb = index.search(x[b : b + 65536], k + 1)
            own = nb == np.arange(b, b + len(nb))[:, None]
            order = np.argsort(own, axis=1, kind="stable")[:, :k]
            pos[b : b + len(nb)] = np.take_along_axis(nb, order, axis=1)
        out.append(pos)
        del index
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "peak_growth_mib": peak_rss_mib() - base, "stored_mib": stored,
            "digest": _digest(*out), "n": len(out[0])}


def _recommender(folder: Path, arms: list[str], index: str = "exact", keep: np.ndarray | None = None) -> Any:
    from prodrec.embed.vectors import Embeddings
    from prodrec.rank.recommender import Recommender

    ids, vec = _load(folder, arms)
    keep = np.arange(len(ids)) if keep is None else keep
    rec = Recommender({a: Embeddings(ids[keep], v[keep]) for a, v in vec.items()}, index=index)
    return rec, sum(v.nbytes for v in vec.values()) / 2**20


def _rules(spec: str) -> Any:
    from prodrec.rank.rules import Rules

    if spec in ("", "none"):
        return None
    opts: dict[str, Any] = {}
    for part in spec.split("+"):
        if part == "same":
            opts["same"] = "gender"
        elif part == "where":
            opts["where"] = ["masterCategory=Apparel", "masterCategory=Accessories", "masterCategory=Footwear"]
        elif part == "dups":
            opts["exclude_duplicates"] = True
        elif part.startswith("div"):
            opts["diversity"] = float(part[3:] or 0.7)
    return Rules.make(**opts)


def export_job(folder: Path, k: int, index: str, rules_spec: str, arms: list[str]) -> dict[str, Any]:
    import pandas as pd

    from prodrec.rank.export import export_table
    from prodrec.rank.table import read_table

    import faiss  # noqa: F401 - libraries the step loads are not its working memory
    import pyarrow.parquet  # noqa: F401

    rec, stored = _recommender(folder, arms, index)  # an approximate index is built by the export (first search)
    labels = pd.read_parquet(folder / "labels.parquet") if (folder / "labels.parquet").is_file() else None
    rules = _rules(rules_spec)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "recs.parquet"
        base = _reset_peak()
        t0 = time.perf_counter()
        res = export_table(rec, out, labels=labels, name_column="productDisplayName" if labels is not None else None,
                           k=k, modes=["fused"], rules=rules, progress=False)
        seconds = time.perf_counter() - t0
        peak = peak_rss_mib() - base
        df = read_table(out, columns=["query_id", "id"])
    return {"seconds": seconds, "peak_growth_mib": peak, "stored_mib": stored, "rows": res.rows,
            "short_lists": res.short_lists, "digest": _digest(df["id"].to_numpy().astype(str)),
            "index_status": dict(rec.index_status)}


def update_job(folder: Path, k: int, arms: list[str]) -> dict[str, Any]:
    import pandas as pd

    from prodrec.rank.export import export_table
    from prodrec.rank.update import update_table
    from prodrec.rank.table import read_table

    ids, _ = _load(folder, arms)
    n = len(ids)
    rng = np.random.default_rng(0)
    first = np.sort(rng.choice(n, n - max(1, n // 100), replace=False))
    full_rec, stored = _recommender(folder, arms)
    part_rec, _ = _recommender(folder, arms, keep=first)
    with tempfile.TemporaryDirectory() as tmp:
        full, table = Path(tmp) / "full.parquet", Path(tmp) / "recs.parquet"
        t0 = time.perf_counter()
        export_table(full_rec, full, k=k, modes=["fused"], progress=False)
        full_s = time.perf_counter() - t0
        export_table(part_rec, table, k=k, modes=["fused"], progress=False)
        t0 = time.perf_counter()
        res = update_table(full_rec, table, progress=False)
        update_s = time.perf_counter() - t0
        same = read_table(table).equals(read_table(full))
        pd.testing.assert_frame_equal(read_table(table), read_table(full))
    return {"seconds": update_s, "full_seconds": full_s, "stored_mib": stored, "added": n - len(first),
            "identical": bool(same), "update": res.update}


def main() -> None:
    job, folder, k = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    rest = sys.argv[4:]
    arms = sorted(p.stem for p in folder.glob("*.npy") if p.stem != "ids")
    if job == "faiss":
        result = faiss_topk(folder, k, rest[0] if rest else "flat", arms)
    elif job == "export":
        result = export_job(folder, k, rest[0] if rest else "exact", rest[1] if len(rest) > 1 else "", arms)
    elif job == "update":
        result = update_job(folder, k, arms)
    else:
        raise SystemExit(f"unknown job {job}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
