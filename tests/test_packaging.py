"""Installed as users install it: the wheel outside the checkout, extras named in every ImportError, the
conda environment kept in step with pyproject, the Kaggle push folders, --quiet."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import nbformat
import pytest
import tomllib
import yaml

from test_notebooks import all_json_is_strict, precision, strict_load

from prodrec._version import __version__
from prodrec.run.notebooks import (
    find_notebooks,
    kaggle_slug,
    validate_dataset_metadata,
    validate_kaggle_metadata,
)

ROOT = Path(__file__).resolve().parents[1]


def fresh_venv(path: Path) -> Path:
    """A new virtual environment that sees this environment's third-party packages (so nothing is
    downloaded) but not prodrec: the editable install's import hook lives in a .pth file that a path
    entry does not run, and the checkout is not on its path."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    site = next(path.glob("lib/python*/site-packages"))
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return path / "bin" / "python"


def pip_install(python: Path, wheel: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--no-index", str(wheel)], check=True)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(ROOT)], check=True)
    return next(out.glob("prodrec-*.whl"))


@pytest.mark.slow
def test_wheel_outside_the_checkout_runs_notebooks_and_stages_kaggle(wheel: Path, generic_dir: Path,
                                                                     tmp_path: Path) -> None:
    """The wheel installed outside the checkout: its bundled notebooks, all of them run on a catalog outside the
    Kaggle layout (catalog flags: this is the suite's one run of 01-07 on a tiny catalog; the real sample's run
    in test_notebooks checks the numbers), the Kaggle staging and the kernel's own install cell."""
    import zipfile

    names = zipfile.ZipFile(wheel).namelist()
    assert "prodrec/_bundled/kaggle-metadata.json" in names and "prodrec/_bundled/notebooks/01_eda.ipynb" in names
    py = fresh_venv(tmp_path / "venv")
    pip_install(py, wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{py.parent}:{env['PATH']}"
    work = tmp_path / "elsewhere"
    work.mkdir()

    def prodrec(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(py.parent / "prodrec"), *args], capture_output=True, text=True, cwd=work, env=env)

    where = subprocess.run([str(py), "-c", "import prodrec; print(prodrec.__file__)"], capture_output=True, text=True,
                           cwd=work, env=env)
    assert str(tmp_path / "venv") in where.stdout and str(ROOT) not in where.stdout
    listed = prodrec("notebooks", "list")
    assert listed.returncode == 0 and "_bundled/notebooks/01_eda.ipynb" in listed.stdout, listed.stderr
    copied = prodrec("notebooks", "copy", "mine")
    assert copied.returncode == 0 and (work / "mine" / "05_browse.ipynb").is_file()
    assert prodrec("notebooks", "copy", "mine").returncode == 2  # never overwrites without --force
    assert prodrec("demo-catalog", "demo", "--n", "40").returncode == 0
    assert len(list((work / "demo" / "images").glob("*.jpg"))) == 40
    run = prodrec("run-notebooks", "--quiet", "--data", str(generic_dir / "items.csv"), "--id-column", "sku",
                  "--image-column", "photo", "--text-columns", "title,colour,category", "--label-columns",
                  "category,colour", "--out", "out")
    assert run.returncode == 0, run.stderr[-3000:]
    out = work / "out"
    for name in (p.name for p in find_notebooks()):  # each notebook wrote its executed copy
        assert (out / name).is_file(), name
    metrics = sorted((out / "metrics").glob("*.json"))
    assert {m.name for m in metrics} >= {"04_comparison.json", "06_beyond.json", "07_metrics.json"}
    assert all_json_is_strict(out) > 20
    assert len(list((out / "figures").glob("*.png"))) >= 8
    # the EDA charts the catalog's label columns; the evaluation scores them; provenance names the schema
    eda = strict_load(out / "metrics" / "01_eda.json")["data"]
    assert eda["products"] == 24 and eda["label_columns"] == ["category", "colour"]
    assert {r["column"] for r in strict_load(out / "metrics" / "eda_counts.json")["data"]} >= {"category", "colour"}
    p = precision(out, "04_comparison")
    assert set(label for _, label in p) == {"category", "colour"}
    assert p[("image", "category")] > p[("random", "category")]
    prov = strict_load(out / "metrics" / "04_comparison.json")["provenance"]
    assert prov["dataset"]["schema"]["id_column"] == "sku" and prov["dataset"]["layout"] == "generic"
    staged = prodrec("kaggle-stage", "stage", "--owner", "someone")
    assert staged.returncode == 0, staged.stderr
    check_kaggle_folders(work / "stage", "someone")
    # the kernel's own install cell, in a Kaggle-like layout, with a Python that has no prodrec
    kaggle_input = tmp_path / "kaggle" / "input"
    (kaggle_input / "prodrec-wheel").mkdir(parents=True)
    staged_wheel = next((work / "stage" / "dataset").glob("prodrec-*.whl"))
    (kaggle_input / "prodrec-wheel" / staged_wheel.name).write_bytes(staged_wheel.read_bytes())
    kernel_py = fresh_venv(tmp_path / "kaggle-python")
    subprocess.run([str(kernel_py), "-m", "ensurepip"], check=True, env=env)
    nb = nbformat.read(work / "stage" / "kernel" / "kaggle_kernel.ipynb", as_version=4)
    install_cell = next(c.source for c in nb.cells if "def ensure_prodrec" in c.source)
    script = (f"kaggle_input = {str(kaggle_input)!r}\nrepo_spec = 'unused'\n" + install_cell
              + "\nimport prodrec\nprint('imported', prodrec.__version__, prodrec.__file__)\n")
    res = subprocess.run([str(kernel_py), "-c", script], capture_output=True, text=True, cwd=work, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"installed from {kaggle_input / 'prodrec-wheel' / staged_wheel.name}" in res.stdout
    assert f"imported {__version__} {tmp_path / 'kaggle-python'}" in res.stdout


def check_kaggle_folders(stage: Path, owner: str) -> None:
    kernel = validate_kaggle_metadata(stage / "kernel" / "kernel-metadata.json")
    dataset = validate_dataset_metadata(stage / "dataset" / "dataset-metadata.json")
    assert kernel["id"].startswith(f"{owner}/") and dataset["id"] == f"{owner}/prodrec-wheel"
    assert dataset["id"] in kernel["dataset_sources"]
    assert "paramaggarwal/fashion-product-images-small" in kernel["dataset_sources"]
    assert (stage / "kernel" / kernel["code_file"]).is_file()
    wheels = list((stage / "dataset").glob("prodrec-*.whl"))
    assert len(wheels) == 1 and wheels[0].stat().st_size > 20_000


@pytest.mark.slow
def test_kaggle_stage_from_the_checkout(tmp_path: Path) -> None:
    from prodrec.run.notebooks import kaggle_stage

    staged = kaggle_stage(tmp_path / "stage", owner="me")
    check_kaggle_folders(tmp_path / "stage", "me")
    assert staged["wheel"].name.startswith(f"prodrec-{__version__}-")


def test_kaggle_titles_resolve_as_the_kaggle_cli_resolves_them() -> None:
    """The Kaggle CLI slugifies titles with python-slugify and warns when the id's slug differs."""
    slugify = pytest.importorskip("slugify").slugify
    meta = json.loads((ROOT / "kaggle-metadata.json").read_text())
    assert slugify(meta["title"]) == meta["id"].split("/")[1]
    for title in (meta["title"], "prodrec wheel", "Kaggle's kernel: Café, v2!", "  A -- B  ", "test 3.5\""):
        assert kaggle_slug(title) == slugify(title), title
    # without python-slugify installed, the kit's own rule gives the same answers for these titles
    code = ("import sys; sys.modules['slugify'] = None; from prodrec.run.notebooks import kaggle_slug; "
            "print(kaggle_slug(sys.argv[1]))")
    for title in (meta["title"], "Kaggle's kernel: Café, v2!"):
        out = subprocess.run([sys.executable, "-c", code, title], capture_output=True, text=True)
        assert out.stdout.strip() == slugify(title), out.stderr


@pytest.mark.parametrize("blocked, call, extra", [
    ("torch", "from prodrec.embed.encoders import get_image_encoder; get_image_encoder('efficientnet-lite0')", "image"),
    ("tensorflow", "from prodrec.embed.encoders.resnet import ResNet50Encoder; ResNet50Encoder(weights=None)", "resnet"),
    ("sentence_transformers", "from prodrec.embed.encoders import get_text_encoder; get_text_encoder('all-MiniLM-L6-v2')",
     "text"),
    ("papermill", "from prodrec.run.notebooks import run_notebooks; run_notebooks('/tmp/x')", "notebooks"),
    ("ipywidgets", "from prodrec.viz.browse import Browser; Browser(None, None)", "notebooks"),
])
def test_missing_dependency_names_the_extra(blocked: str, call: str, extra: str) -> None:
    code = f"""
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == {blocked!r}:
            raise ImportError('blocked ' + name)
sys.meta_path.insert(0, Block())
from prodrec.core.errors import MissingDependency
try:
    {call}
except MissingDependency as exc:
    print(exc)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert f"pip install 'prodrec[{extra}]'" in out.stdout, out.stdout + out.stderr


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_matches_pyproject_and_the_cpu_pins() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    conda = {_name(d) for d in env["dependencies"] if isinstance(d, str)}
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    core = {_name(d) for d in project["dependencies"] if "python_version" not in d}
    assert core <= conda, core - conda  # every core dependency comes from conda-forge
    extras = {_name(d) for reqs in project["optional-dependencies"].values() for d in reqs}
    assert conda - {"python", "pip"} <= core | extras, (conda - core - extras)  # nothing the project does not use
    pins = [ln.strip() for ln in (ROOT / "constraints-cpu.txt").read_text().splitlines()
            if ln.strip() and not ln.startswith("#")]
    assert all(p in pip for p in pins), (pins, pip)  # the same CPU pins as the Makefile's
    assert "--extra-index-url https://download.pytorch.org/whl/cpu" in pip and "-e .[all]" in pip


@pytest.mark.slow
def test_quiet_silences_every_progress_bar_and_verbose_shows_them(demo_dir: Path, tmp_path: Path) -> None:
    base = [sys.executable, "-m", "prodrec.run.cli"]
    args = ["embed", "--data", str(demo_dir), "--image-model", "efficientnet-lite0"]
    quiet = subprocess.run([*base, *args, "--store", str(tmp_path / "a"), "--quiet"], capture_output=True, text=True)
    assert quiet.returncode == 0, quiet.stderr
    assert "%|" not in quiet.stderr and "Loading weights" not in quiet.stderr, quiet.stderr
    loud = subprocess.run([*base, "--verbose", *args, "--store", str(tmp_path / "b"), "--quiet"], capture_output=True,
                          text=True)
    assert "Loading weights" in loud.stderr


def load_uv_install():  # tools/ is not a package: the Makefile runs it as a script
    import importlib.util

    spec = importlib.util.spec_from_file_location("uv_install", ROOT / "tools" / "uv_install.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_uv_install_carries_pips_package_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uv = load_uv_install()
    listing = "\n".join([
        "global.cert='/etc/ssl/certs/ca.crt'",
        "global.constraint='/etc/xdg/pip/constraints.txt'",
        "global.extra-index-url='file:///opt/pypi/simple file:///opt/more/simple'",
        "global.find-links='/opt/wheels'",
        ":env:.find-links='/opt/wheels'",  # the same folder from PIP_FIND_LINKS: once
        ":env:.timeout='180'",  # not a package source: left out
        "user.index-url='https://ignored.example/simple'",  # a section pip install does not read
        "install.no-index='true'",
    ])
    args, env = uv.uv_args(uv.pip_settings(listing))
    assert args == ["--find-links", "/opt/wheels", "--extra-index-url", "file:///opt/pypi/simple",
                    "--extra-index-url", "file:///opt/more/simple", "--constraint", "/etc/xdg/pip/constraints.txt",
                    "--no-index"]
    assert env == {"SSL_CERT_FILE": "/etc/ssl/certs/ca.crt"}
    assert uv.uv_args(uv.pip_settings("")) == ([], {})
    # without uv next to this Python or on PATH: a clear refusal (the Makefile then installs with pip)
    monkeypatch.setattr(uv.shutil, "which", lambda *a, **k: None)
    assert uv.main(["-e", "."]) == 127


def test_make_run_and_test_write_bytecode_caches_even_where_the_environment_forbids_them() -> None:
    """`make run` clears $PYTHONDONTWRITEBYTECODE for the notebooks, `make test` for both pytest phases (their
    kernels and CLI runs would each compile torch, pandas... again); Python treats the empty value as unset."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    dry = subprocess.run(["make", "-n", "run", "DATA=/x"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    line = next(ln for ln in dry.stdout.splitlines() if "run-notebooks" in ln)
    assert line.startswith("PYTHONDONTWRITEBYTECODE= "), line
    dry = subprocess.run(["make", "-n", "-o", "install", "test"], cwd=ROOT, capture_output=True, text=True, env=env)
    assert dry.returncode == 0, dry.stderr
    lines = [ln for ln in dry.stdout.splitlines() if " -m pytest " in ln]
    assert len(lines) == 2 and all(ln.startswith("PYTHONDONTWRITEBYTECODE= ") for ln in lines), lines
    # a module at a time, in tests/conftest.py's order (loadgroup's marks group nothing under pytest 9.2)
    assert "--dist loadfile --no-loadscope-reorder" in lines[0] and "-n " not in lines[1], lines
    flag = subprocess.run([sys.executable, "-c", "import sys; print(sys.dont_write_bytecode)"], capture_output=True,
                          text=True, env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""})
    assert flag.stdout.strip() == "False"
