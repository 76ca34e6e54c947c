"""Timing, machine facts and result files shared by the benchmark sections."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHARED = Path(os.environ.get("PRODREC_SHARED_DATA", ROOT.parent / "shared" / "data" / "fashion-sample"))
WORK = HERE / "_work"


@dataclass
class Result:
    section: str
    name: str
    unit: str
    values: list[float]
    params: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    def row(self) -> dict[str, Any]:
        v = self.values
        return {"section": self.section, "name": self.name, "unit": self.unit, "repeats": len(v),
                "min": min(v) if v else None, "median": self.median if v else None, "max": max(v) if v else None,
                "values": v, "params": self.params, "note": self.note}


def repeat(fn: Callable[[], Any], n: int, warmup: int = 0) -> list[float]:
    """Wall-clock seconds of ``n`` calls of ``fn`` (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def peak_rss_mib() -> float:
    """This process's peak resident memory (MiB): VmHWM, which a new program starts afresh. (ru_maxrss
    would not do: Linux carries the parent's peak into a child across fork and exec.)"""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_isolated(module: str, *args: str, timeout: int = 3600, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``python -m MODULE ARGS`` in a fresh process (clean peak-memory accounting); it prints JSON last."""
    out = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout,
                         cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{module} {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from prodrec.core.provenance import package_versions

    info: dict[str, Any] = {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                            "versions": package_versions()}
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [{k: d.get(k) for k in ("internal_api", "version", "num_threads", "architecture")}
                        for d in threadpool_info()]
    except ImportError:
        pass
    info["env"] = {k: v for k, v in os.environ.items() if k.startswith("OPENBLAS") or k.endswith("NUM_THREADS")}
    return info


def write_results(results: list[Result], derived: list[dict[str, Any]], meta: dict[str, Any], folder: Path = HERE,
                  carried: dict[str, list[dict[str, Any]]] | None = None) -> None:
    """results.json and RESULTS.md; ``carried`` rows and targets (from an earlier run) are kept, each with
    the date it was measured on, before the new ones."""
    carried = carried or {"rows": [], "derived": []}
    rows = carried["rows"] + [dict(r.row(), measured=meta["date"]) for r in results]
    derived = carried["derived"] + [dict(d, measured=meta["date"]) for d in derived]
    payload = {"machine": machine(), "meta": meta, "results": rows, "derived": derived}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(payload, indent=2, default=str))
    m = payload["machine"]
    lines = [
        "# Benchmark results",
        "",
        f"Written by `python -m benchmarks` on {meta['date']} ({'quick smoke sizes' if meta['quick'] else 'full sizes'}).",
        "",
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['platform']}",
        f"- BLAS: {m.get('blas')}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()),
        f"- environment: {m['env'] or '-'}",
        "",
        "## Measurements (min / median / max over repeats)",
        "",
        "| section | measurement | unit | min | median | max | repeats | notes, measured |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    if meta.get("merged"):
        lines.insert(lines.index("## Measurements (min / median / max over repeats)"),
                     f"Merged run: {meta['merged']}; the column *measured* says when each row was.\n")
    for row in rows:
        f = (lambda x: "-" if x is None else f"{x:.4g}")
        lines.append(f"| {row['section']} | {row['name']} | {row['unit']} | {f(row['min'])} | {f(row['median'])} "
                     f"| {f(row['max'])} | {row['repeats']} | {row.get('note', '')} {row.get('measured', '')[:10]} |")
    lines += ["", "## Targets", "", "| target | measured | goal | met |", "| --- | --- | --- | --- |"]
    for d in derived:
        met = {True: "yes", False: "**no**", None: "n/a"}[d.get("met")]
        lines.append(f"| {d['name']} | {d['value']} | {d['goal']} | {met} |")
    (folder / "RESULTS.md").write_text("\n".join(lines) + "\n")
