"""Notebooks run headless with papermill (metrics asserted), nbval on stored outputs, the Kaggle kernel."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest

from test_findings import check_findings

from prodrec.core.errors import ConfigError
from prodrec.run.notebooks import (
    NotebookFailed,
    find_notebooks,
    kaggle_slug,
    machine_paths,
    resources_root,
    run_notebooks,
    validate_kaggle_metadata,
)

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("category_distribution", "attribute_distributions", "image_gallery", "text_gallery", "precision_bars",
           "alpha_sweep", "failure_gallery", "browse_static", "tradeoff_full")
CI_N = 200  # the small configuration whose outputs are stored in the committed notebooks


def strict_load(path: Path) -> Any:
    """A JSON file parsed as a strict parser would (bare NaN / Infinity refused)."""
    def refuse(name: str) -> None:
        raise ValueError(f"{path}: not JSON: bare {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def all_json_is_strict(out: Path) -> int:
    files = [p for p in out.rglob("*") if p.suffix in (".json", ".ipynb")]
    for p in files:
        strict_load(p)
    return len(files)


def precision(out: Path, name: str) -> dict[tuple[str, str], float]:
    rows = strict_load(out / "metrics" / f"{name}.json")["data"]
    return {(r["mode"], r["label"]): r["value"] for r in rows if r["metric"] == "precision"}


def check_clean(out: Path) -> None:
    """Executed notebooks read cleanly: no progress-bar residue, no warning twice, no machine paths."""
    paths = [p for p in machine_paths(out) if p not in ("/", str(Path.home()))] + [str(Path.home()) + "/"]
    for nb in find_notebooks():
        check_clean_cells(nb.name, nbformat.read(out / nb.name, as_version=4).cells, paths)


def check_clean_cells(name: str, cells: list[Any], paths: list[str]) -> None:
    """No progress bar, no path of ``paths``, no warning (logged, or Python's ``...Warning:``) twice in one
    notebook's outputs. (The dataset's path is provenance and stays.)"""
    warnings: list[str] = []
    for cell in cells:
        for o in cell.get("outputs", []):
            text = o.get("text", "") if o.get("output_type") == "stream" else str(
                o.get("data", {}).get("text/plain", ""))
            assert not re.search(r"\d+%\|", text), (name, text[:200])
            assert not any(p in text for p in paths), (name, text[:300])
            warnings += [line for line in text.splitlines() if line.startswith("WARNING") or "Warning: " in line]
    assert len(warnings) == len(set(warnings)), (name, warnings)


def test_stored_notebook_outputs_are_clean() -> None:
    """What the repository shows a reader (``make notebook-outputs``) is as clean as a run's outputs."""
    for nb in find_notebooks():
        check_clean_cells(nb.name, nbformat.read(nb, as_version=4).cells,
                          [str(ROOT) + "/", str(Path(sys.prefix)) + "/", "/.venv/"])


def check_outputs(out: Path, n_expected: int) -> dict[tuple[str, str], float]:
    for nb in find_notebooks():
        assert (out / nb.name).is_file()
    for fig in FIGURES:
        png = out / "figures" / f"{fig}.png"
        assert png.stat().st_size > 5_000, fig
        prov = json.loads((out / "figures" / f"{fig}.json").read_text())["provenance"]
        assert "versions" in prov and prov.get("dataset", {}).get("data_dir")
    p = precision(out, "04_comparison")
    for label in ("articleType", "baseColour", "subCategory", "gender"):
        for mode in ("image", "text", "fused"):
            assert 0.0 <= p[(mode, label)] <= 1.0
    assert p[("image", "articleType")] > p[("random", "articleType")]
    assert p[("text", "articleType")] > p[("random", "articleType")]
    # every number of notebook 04 is on its test queries; its findings say nothing the numbers do not show
    rows = strict_load(out / "metrics" / "04_comparison.json")["data"]
    split = strict_load(out / "metrics" / "04_comparison.json")["provenance"]["split"]
    assert {r["n_queries"] for r in rows if r["metric"] == "precision" and r["mode"] != "random"} <= set(
        range(1, split["test"] + 1))
    findings = strict_load(out / "metrics" / "04_findings.json")["data"]
    assert check_findings(findings, rows, strict_load(out / "metrics" / "04_significance.json")["data"]) >= 4
    assert "tuned on validation queries" in findings["findings"]
    check_clean(out)
    prov = json.loads((out / "metrics" / "04_comparison.json").read_text())["provenance"]
    assert prov["dataset"]["products"] >= n_expected and prov["dataset"]["sample"]["seed"] == 0
    assert prov["models"]["image"]["weight_source"] and prov["models"]["text"]["weight_source"]
    run = json.loads((out / "run.json").read_text())
    assert [r["notebook"] for r in run["notebooks"]] == [nb.name for nb in find_notebooks()]
    assert all_json_is_strict(out) > 20
    return p


@pytest.mark.slow
@pytest.mark.shared_data
def test_notebooks_on_real_sample(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    # three training seeds of the learned arm, as the study runs it (make run trains two, see notebook 06)
    run_notebooks(out, {"data_dir": str(shared_data), "n_products": CI_N, "seed": 0, "learn_seeds": [0, 1, 2]},
                  progress=False)
    p = check_outputs(out, CI_N)
    # the paper's claims, measured on the test queries: image shares style more than colour, and the findings
    # say so in the direction and with the significance the numbers have (check_outputs reads them back)
    assert p[("image", "articleType")] > p[("image", "baseColour")]
    findings = strict_load(out / "metrics" / "04_findings.json")["data"]["findings"]
    assert "**Image arm: articleType over baseColour.**" in findings and f"{p[('image', 'articleType')]:.3f}" in findings
    eda = json.loads((out / "metrics" / "01_eda.json").read_text())["data"]
    assert eda["products"] == 9583 and eda["report"]["rows_read"] == 44446
    # beyond the paper (06): colour arm and learned arm against random, both protocols, three training seeds
    beyond = strict_load(out / "metrics" / "06_beyond.json")
    rows = [r for r in beyond["data"] if r["metric"] == "precision"]

    def mean(mode: str, label: str, protocol: str) -> float:
        vals = [r["value"] for r in rows if (r["mode"], r["label"], r["protocol"]) == (mode, label, protocol)]
        return sum(vals) / len(vals)

    for protocol in ("full", "withheld"):
        assert mean("colour", "baseColour", protocol) > mean("random", "baseColour", protocol) + 0.15
        assert mean("colour", "baseColour", protocol) > mean("image", "baseColour", protocol)
        for label in ("articleType", "baseColour"):
            assert mean("learned", label, protocol) > mean("random", label, protocol) + 0.2
    assert sorted({r["train_seed"] for r in rows if r["mode"] == "learned"}) == [0, 1, 2]
    beyond_findings = strict_load(out / "metrics" / "06_findings.json")["data"]
    sig = strict_load(out / "metrics" / "06_significance.json")["data"]
    # 06's words read back against its numbers, each paragraph against its protocol's rows and tests
    assert check_findings(beyond_findings, rows, sig) >= 6
    assert "supervised on articleType, baseColour" in beyond_findings["findings"]
    assert beyond["provenance"]["models"]["learned"]["training"]["train_ids"]["count"] == 1000
    for fig in ("tradeoff_full", "tradeoff_withheld", "learned_loss"):
        assert (out / "figures" / f"{fig}.png").stat().st_size > 5_000


def test_failing_cell_names_notebook_and_keeps_it(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    src = tmp_path / "07_bad.ipynb"
    nbformat.write(nb, src)
    with pytest.raises(NotebookFailed) as err:
        run_notebooks(tmp_path / "out", {}, notebooks=[src], progress=False)
    msg = str(err.value)
    assert "07_bad.ipynb failed in cell" in msg and "broken on purpose" in msg
    kept = nbformat.read(err.value.path, as_version=4)
    assert any(o.get("ename") == "ValueError" for c in kept.cells for o in c.get("outputs", []))


def test_unwritable_output_folder_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(PermissionError, match="cannot write to the output folder"):
        run_notebooks(tmp_path / "file" / "out", {}, progress=False)


def test_notebooks_are_thin_and_parametrised() -> None:
    params = {"data_dir", "n_products", "seed", "image_model", "text_model", "k", "query_ids", "batch_size",
              "out_dir", "catalog_options"}
    private = re.compile(r"\b(prodrec|gallery|browse|exp|catalog|browser)\.(\w+\.)*_[a-z]")
    for path in find_notebooks():
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, path.name
        names = {line.split("=")[0].strip() for line in tagged[0].source.splitlines()
                 if "=" in line and not line.startswith("#")}
        assert params <= names, (path.name, params - names)
        for cell in nb.cells:  # no function or class is defined only in a notebook
            if cell.cell_type == "code":
                assert "\ndef " not in "\n" + cell.source and "\nclass " not in "\n" + cell.source, path.name
                assert not private.search(cell.source), (path.name, private.search(cell.source))  # public names only


@pytest.mark.slow
@pytest.mark.shared_data
def test_nbval_stored_outputs(shared_data: Path) -> None:
    """Re-execute the committed notebooks (CI configuration) and compare the cells marked NBVAL_CHECK_OUTPUT."""
    env = dict(os.environ, PRODREC_DATA=str(shared_data), PRODREC_NB_N_PRODUCTS=str(CI_N),
               PRODREC_NB_OUT=str(Path(os.environ["PRODREC_STORE"]).parent / "nbval-out"))
    nbs = [str(p) for p in find_notebooks()]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                          "--nbval-sanitize-with", str(ROOT / "notebooks" / "nbval_sanitize.cfg"),
                          "--rootdir", str(ROOT / "notebooks"), *nbs], capture_output=True, text=True, env=env,
                         cwd=ROOT / "notebooks")
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout


def test_kaggle_metadata_valid_and_staged(tmp_path: Path) -> None:
    meta = validate_kaggle_metadata(ROOT / "kaggle-metadata.json")
    assert meta["kernel_type"] == "notebook" and meta["language"] == "python"
    assert meta["enable_gpu"] is True and meta["enable_internet"] is True and isinstance(meta["is_private"], bool)
    assert meta["dataset_sources"] == ["paramaggarwal/fashion-product-images-small"]
    assert (ROOT / meta["code_file"]).is_file()
    # Kaggle derives the slug from the title and warns when it differs from the id's (kaggle kernels push)
    assert kaggle_slug(meta["title"]) == meta["id"].split("/")[1]
    assert kaggle_slug("prodrec: Image and Text Product Recommendation") == "prodrec-image-and-text-product-recommendation"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**meta, "enable_gpu": "yes", "dataset_sources": ["noslash"]}))
    with pytest.raises(ConfigError, match="enable_gpu"):
        validate_kaggle_metadata(bad)
    bad.write_text(json.dumps({**meta, "id": "someone/another-slug"}))
    with pytest.raises(ConfigError, match="resolves to the slug"):
        validate_kaggle_metadata(bad)
    assert resources_root() == ROOT  # a checkout uses its own notebooks/, not the packaged copies


@pytest.mark.slow
def test_kaggle_kernel_runs_in_a_kaggle_like_layout(tmp_path: Path) -> None:
    """The kernel notebook, executed locally against /kaggle/input-like and /kaggle/working-like folders."""
    import papermill as pm

    from prodrec.data.demo import write_demo_catalog

    kin, work = tmp_path / "kaggle" / "input", tmp_path / "kaggle" / "working"
    write_demo_catalog(kin / "fashion-product-images-small" / "myntradataset", n=40, seed=1, image_size=96,
                       progress=False)
    work.mkdir(parents=True)
    meta = validate_kaggle_metadata(ROOT / "kaggle-metadata.json")
    pm.execute_notebook(str(ROOT / meta["code_file"]), str(work / "executed.ipynb"),
                        parameters={"kaggle_input": str(kin), "working": str(work), "n_products": None},
                        progress_bar=False, cwd=str(tmp_path))
    for name in ("image_gallery", "text_gallery", "fused_gallery", "precision_bars"):
        assert (work / "outputs" / "figures" / f"{name}.png").is_file()
    rows = json.loads((work / "outputs" / "metrics" / "kaggle_metrics.json").read_text())
    assert rows["provenance"]["dataset"]["layout"] == "kaggle" and rows["provenance"]["dataset"]["products"] == 40
