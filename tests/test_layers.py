"""The house in layers: the import rule holds (no circle, counting imports inside functions), old module
paths still work with a warning, and adding an arm or a metric is one registry entry each."""

from __future__ import annotations

import ast
import importlib
import json
import shutil
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

import prodrec
from prodrec._compat import MOVED
from prodrec.core.errors import ConfigError
from prodrec.embed.arms import TrainingFreeImageArm
from prodrec.embed.encoders.base import ImageEncoder
from prodrec.embed.registry import ARMS, ArmEntry, arm_names, modes, register_arm
from prodrec.evaluation.metrics import METRICS, MetricSpec, register_metric

SRC = Path(prodrec.__file__).resolve().parent
LAYERS = ["core", "data", "embed", "rank", "evaluation", "viz", "run"]  # bottom to top (viz and run are siblings)


def _module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[str, bool]]:
    """(imported prodrec module, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    me = _module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                if target.startswith("prodrec"):
                    if child.module is None or target == package:  # from . import x: x is a module
                        found.extend((f"{target}.{a.name}", inner) for a in child.names)
                    else:
                        found.append((target, inner))
            elif isinstance(child, ast.Import):
                found.extend((a.name, inner) for a in child.names if a.name.startswith("prodrec"))
            visit(child, inner)

    visit(tree, False)
    return found


def _layer(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in LAYERS else None


def _library_files() -> list[Path]:
    aliases = {SRC / f"{old}.py" for old in MOVED} | {SRC / "_compat.py"}
    return [p for p in sorted(SRC.rglob("*.py")) if p not in aliases]


def test_lint_imports_contract_is_kept() -> None:
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.skip("import-linter is not installed (pip install 'prodrec[test]')")
    out = subprocess.run([exe], capture_output=True, text=True, cwd=SRC.parents[1])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "0 broken" in out.stdout


def test_no_import_runs_up_or_hides_in_a_function() -> None:
    """Counted with every import statement, those inside functions too: no module imports a layer above its
    own, viz and run never import each other, no intra-package import hides in a function, and the package
    graph has no circle."""
    rank = {name: i for i, name in enumerate(LAYERS)}
    rank["run"] = rank["viz"]
    edges: dict[str, set[str]] = {}
    problems = []
    for path in _library_files():
        me = _module_name(path)
        for target, in_function in _imports(path):
            if in_function:
                problems.append(f"{me}: imports {target} inside a function")
            src_layer, dst_layer = _layer(me), _layer(target)
            if src_layer and dst_layer and src_layer != dst_layer:
                if rank[dst_layer] > rank[src_layer] or {src_layer, dst_layer} == {"viz", "run"}:
                    problems.append(f"{me} ({src_layer}) imports {target} ({dst_layer})")
            if target != me and target.startswith("prodrec."):
                edges.setdefault(me, set()).add(target)
    assert not problems, "\n".join(problems)
    # no circle among modules (a module's package __init__ counts as a separate node)
    state: dict[str, int] = {}

    def dfs(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in edges.get(node, ()):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt]
                if not all(n == "prodrec" or n.count(".") == 1 and nxt.startswith(n + ".") for n in cycle[:1]):
                    raise AssertionError("import circle: " + " -> ".join(cycle))
            elif state.get(nxt) is None:
                dfs(nxt, [*stack, nxt])
        state[node] = 2

    for node in list(edges):
        if node not in state:
            dfs(node, [node])


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_paths_work_with_a_deprecation_warning(old: str) -> None:
    sys.modules.pop(f"prodrec.{old}", None)
    with pytest.warns(DeprecationWarning, match=f"prodrec.{old} moved to"):
        module = importlib.import_module(f"prodrec.{old}")
    new = [importlib.import_module(t) for t in MOVED[old]]
    public = [n for m in new for n in getattr(m, "__all__", [k for k in vars(m) if not k.startswith("_")])]
    for name in public[:20]:
        assert getattr(module, name) is getattr(next(m for m in new if hasattr(m, name)), name)


def test_copied_notebook_imports_keep_working() -> None:
    """What notebooks copied before the move import: still there, and prodrec.evaluate still callable."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from prodrec import gallery, report  # noqa: F401
        from prodrec.data import find_data_dir  # noqa: F401
        from prodrec.evaluate import alpha_sweep, evaluate  # noqa: F401
        from prodrec.provenance import provenance, save_json  # noqa: F401
        from prodrec.viz.gallery import plot_topk_grid

        assert gallery.plot_topk_grid is plot_topk_grid
        import prodrec.evaluate as old_evaluate
    assert callable(prodrec.evaluate) and callable(old_evaluate)
    assert old_evaluate.weight_sweep is importlib.import_module("prodrec.evaluation.runs").weight_sweep


# ---------------------------------------------------------------------------------------------- one entry
class ShapeEncoder(ImageEncoder):
    """A training-free toy arm: a 4 x 4 grid of 4-bin gradient-orientation histograms (64-d) of the photo."""

    name = "shape-hog"
    dim = 64
    input_size = 64

    def __init__(self) -> None:
        super().__init__()
        self.weights, self.weight_source = "none", "training-free"

    def _forward(self, batch: np.ndarray) -> np.ndarray:
        grey = batch.astype(np.float32).mean(axis=3)
        gy, gx = np.gradient(grey, axis=(1, 2))
        mag, ang = np.hypot(gx, gy), np.mod(np.arctan2(gy, gx), np.pi)
        bins = np.minimum((ang / np.pi * 4).astype(int), 3)
        cells = (np.arange(self.input_size) * 4 // self.input_size)
        cell = cells[:, None] * 4 + cells[None, :]  # [H, W] -> 0..15
        out = np.zeros((len(batch), 16, 4), np.float32)
        for b in range(len(batch)):
            np.add.at(out[b], (np.broadcast_to(cell, bins[b].shape), bins[b]), mag[b])
        return out.reshape(len(batch), 64) + 1e-6


@pytest.fixture
def shape_arm() -> Iterator[ArmEntry]:
    """The toy arm, registered for one test: one entry, nothing else edited."""
    entry = register_arm(ArmEntry("shape", spec=lambda: TrainingFreeImageArm("shape", ShapeEncoder),
                                  title="shape (gradient histogram)", colour="#8c8c3c"))
    yield entry
    ARMS.pop("shape")


def test_a_new_arm_is_one_entry(shape_arm: ArmEntry, demo_dir: Path, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from prodrec.embed import registry
    from prodrec.run.cli import main
    from prodrec.run.experiment import build_experiment

    assert "shape" in arm_names() and "shape" in modes() and shape_arm.flag == "--shape-model"
    with pytest.raises(ConfigError, match="already registered"):
        register_arm(shape_arm)
    exp = build_experiment(demo_dir, 30, 0, models={"image": None, "text": None, "shape": "auto"},
                           store_dir=tmp_path / "store", progress=False)
    assert list(exp.recommender.arms) == ["shape"] and exp.settings["shape_model"] == "auto"
    assert exp.embeddings["shape"].meta["model_id"] == "shape-hog/none"
    assert registry.title("shape") == "shape (gradient histogram)"

    store = str(tmp_path / "store")
    # ... and a toy metric, one entry too, in the same run: is the first neighbour of the query's label?
    register_metric(MetricSpec("first_hit", lambda pos, codes: ((codes[pos[:, 0]] == codes) & (codes >= 0)) * 1.0,
                               baseline=None, description="the first neighbour shares the label"))
    try:
        assert main(["evaluate", "--data", str(demo_dir), "--n", "30", "--arms", "shape,colour", "--no-learned",
                     "--store", store, "--json", "--quiet", "--n-boot", "50", "--metrics", "precision,first_hit"]) == 0
    finally:
        METRICS.pop("first_hit")
    out = json.loads(capsys.readouterr().out)
    got = {(r["mode"], r["metric"]) for r in out["results"]}
    assert {("shape", "precision"), ("colour", "precision"), ("fused", "precision"), ("rrf", "coverage"),
            ("shape", "first_hit"), ("fused", "first_hit")} <= got
    first = {(r["mode"], r["label"]): r["value"] for r in out["results"] if r["metric"] == "first_hit"}
    prec = {(r["mode"], r["label"]): r["value"] for r in out["results"] if r["metric"] == "precision"}
    assert all(0.0 <= v <= 1.0 for v in first.values()) and first.keys() <= prec.keys()
    assert out["provenance"]["settings"]["shape_model"] == "auto"

    assert main(["recommend", "--data", str(demo_dir), "--n", "30", "--arms", "shape", "--mode", "shape",
                 "--id", str(exp.catalog.ids[0]), "--store", store, "--json", "--quiet", "-k", "3"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["mode"] == "shape" and len(rec["recommendations"]) == 3
