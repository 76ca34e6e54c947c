"""A smoke run of the benchmark harness at tiny sizes (its figures are not judged here; see benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_benchmark_harness_quick(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--only", "topk,latency", "--out",
                          str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    names = [r["name"] for r in res["results"]]
    assert any("kit, N=2000" in n for n in names) and any("naive: sklearn" in n for n in names)
    assert all(r["median"] is None or r["median"] >= 0 for r in res["results"])
    ident = [d for d in res["derived"] if d["name"].startswith("kit results identical")]
    assert ident and all(d["met"] for d in ident)  # exact top-k agrees with the naive and faiss references
    assert "cores" in res["machine"] and (tmp_path / "RESULTS.md").read_text().startswith("# Benchmark results")
