"""Headless notebook runs with papermill, and staging the Kaggle kernel (library code; the CLI is in
:mod:`prodrec.cli`).

``prodrec run-notebooks --out outputs/NAME`` executes ``notebooks/NN_*.ipynb`` in order with the same
parameters, writes the executed copies under ``--out`` (figures and metrics land in ``--out/figures`` and
``--out/metrics``), and stops at the first failing cell with a message naming the notebook and cell.

Executed copies are cleaned for reading (:func:`clean_outputs`): no progress-bar residue (a tqdm widget
saved without its state reads "0%"), each warning once per notebook, and no machine paths (the Python
environment, the home folder, the checkout and the output folder are written as names).
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.io import write_json
from ..core.errors import ConfigError, MissingDependency, ProdrecError
from ..core.provenance import provenance

log = logging.getLogger(__name__)

#: A progress bar's text: "evaluate modes:  40%|####      | 2/5 [00:01<00:02, ...]".
_BAR = re.compile(r"^.*\d+%\|.*\|.*$")
#: The first line of a logged or Python warning.
_WARNING = re.compile(r"^(WARNING\b|.*Warning: )")  # logged, or Python's (RuntimeWarning: ...)
_WIDGET = "application/vnd.jupyter.widget-view+json"

KAGGLE_METADATA = "kaggle-metadata.json"
#: The folder inside the installed package that holds copies of the notebooks and the Kaggle metadata.
BUNDLED = "_bundled"
#: The Kaggle dataset that carries the kit's wheel to the kernel (id: OWNER/WHEEL_DATASET).
WHEEL_DATASET = "prodrec-wheel"
KAGGLE_REQUIRED = {
    "id": str, "title": str, "code_file": str, "language": str, "kernel_type": str, "is_private": bool,
    "enable_gpu": bool, "enable_internet": bool, "dataset_sources": list,
}


class NotebookFailed(ProdrecError, RuntimeError):
    """A notebook cell raised; the executed copy (with the error in it) is kept at ``path``."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def resources_root() -> Path:
    """Where the notebooks and ``kaggle-metadata.json`` are: the checkout this package runs from (src layout;
    edits to ``notebooks/`` take effect at once), else the copies shipped inside the installed package."""
    here = Path(__file__).resolve().parents[3]  # src/prodrec/run/notebooks.py -> the checkout
    if (here / "notebooks").is_dir() and (here / KAGGLE_METADATA).is_file():
        return here
    bundled = Path(str(importlib.resources.files("prodrec") / BUNDLED))
    if (bundled / "notebooks").is_dir():
        return bundled
    raise ConfigError(
        "prodrec's notebooks are neither in a source checkout nor in the installed package (an incomplete "
        "install?); reinstall with: pip install --force-reinstall prodrec"
    )


def find_notebooks(folder: str | os.PathLike[str] | None = None, only: Sequence[str] | None = None) -> list[Path]:
    """The numbered notebooks ``NN_*.ipynb`` in ``folder`` (default: :func:`resources_root`), in order."""
    folder = Path(folder) if folder else resources_root() / "notebooks"
    nbs = sorted(p for p in folder.glob("[0-9][0-9]_*.ipynb"))
    if only:
        nbs = [p for p in nbs if any(p.name.startswith(o) or p.stem == o for o in only)]
    if not nbs:
        raise ConfigError(f"no numbered notebooks (NN_*.ipynb) in {folder}" + (f" matching {only}" if only else ""))
    return nbs


def run_notebooks(
    out_dir: str | os.PathLike[str],
    parameters: dict[str, Any] | None = None,
    notebooks: Sequence[str | os.PathLike[str]] | None = None,
    kernel_name: str | None = None,
    progress: bool = True,
    timeout: int | None = None,
) -> list[dict[str, Any]]:
    """Execute notebooks in order with papermill; return one record per notebook (name, seconds, path).

    ``parameters`` are injected into each notebook's ``parameters`` cell; ``out_dir`` is always passed.
    """
    try:
        import papermill as pm
        from papermill.exceptions import PapermillExecutionError
    except ImportError as exc:
        raise MissingDependency("run-notebooks needs papermill: pip install 'prodrec[notebooks]'") from exc
    out = Path(out_dir).resolve()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise PermissionError(f"cannot write to the output folder {out}: {exc}") from exc
    params = {**(parameters or {}), "out_dir": str(out)}
    paths = [Path(p) for p in notebooks] if notebooks else find_notebooks()
    records: list[dict[str, Any]] = []
    for nb in paths:
        target = out / nb.name
        log.info("running %s -> %s", nb.name, target)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(nb), str(target), parameters=params, kernel_name=kernel_name, progress_bar=progress,
                cwd=str(nb.parent), execution_timeout=timeout,
            )
        except PapermillExecutionError as exc:
            raise NotebookFailed(
                f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                f"The executed notebook with the error is at {target}",
                target,
            ) from None
        secs = time.perf_counter() - t0
        _clean_file(target, out)
        log.info("%s finished in %.1f s", nb.name, secs)
        records.append({"notebook": nb.name, "seconds": round(secs, 2), "executed": str(target)})
    write_json(out / "run.json", provenance(parameters=params, notebooks=records))
    return records


def machine_paths(out_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Absolute paths that say where a run happened, not what it found, and the names they are written as
    in cleaned outputs (longest first, so a path inside another is replaced by its own name)."""
    paths = {str(Path(sys.prefix).resolve()): "<python env>", str(Path(sys.prefix)): "<python env>",
             str(resources_root().resolve()): "<prodrec>", str(Path.home()): "~"}
    if out_dir is not None:
        paths[str(Path(out_dir).resolve())] = "<out>"
    return dict(sorted(((k, v) for k, v in paths.items() if len(k) > 1), key=lambda kv: -len(kv[0])))


def _clean_text(text: str, seen: set[str], paths: dict[str, str]) -> str:
    """One stream's text without progress bars, warnings already shown in the notebook, or machine paths."""
    for path, name in paths.items():
        text = text.replace(path, name)
    kept, skip_source = [], False
    for line in text.replace("\r\n", "\n").split("\n"):
        line = line.rsplit("\r", 1)[-1]  # a bar redrawn in place: its last state
        if _BAR.match(line):
            continue
        if skip_source:  # the source line Python prints under a repeated warning
            skip_source = False
            if line.startswith("  "):
                continue
        if _WARNING.match(line):
            if line in seen:
                skip_source = True
                continue
            seen.add(line)
        kept.append(line)
    return "\n".join(kept)


def clean_outputs(nb: dict[str, Any], out_dir: str | os.PathLike[str] | None = None) -> int:
    """Clean an executed notebook's outputs in place for reading; returns how many outputs were changed or
    dropped. Progress bars go (tqdm widgets, whose saved text is "0%", and text bars); a warning already
    shown earlier in the notebook is dropped; machine paths become names (:func:`machine_paths`)."""
    paths = machine_paths(out_dir)
    seen: set[str] = set()
    changed = 0
    for cell in nb["cells"]:
        if cell.get("cell_type") != "code":
            continue
        kept = []
        for o in cell.get("outputs", []):
            if o.get("output_type") == "display_data" and _WIDGET in o.get("data", {}) and _BAR.match(
                    str(o["data"].get("text/plain", "")).strip() or "0%||"):
                changed += 1
                continue
            if o.get("output_type") == "stream":
                raw = "".join(o["text"]) if isinstance(o["text"], list) else o["text"]
                text = _clean_text(raw, seen, paths)
                if text != raw:
                    changed += 1
                if not text.strip():
                    continue
                o["text"] = text
            elif "data" in o and "text/plain" in o["data"]:
                raw = o["data"]["text/plain"]
                raw = "".join(raw) if isinstance(raw, list) else raw
                text = _clean_text(raw, set(), paths)
                changed += text != raw
                o["data"]["text/plain"] = text
            kept.append(o)
        cell["outputs"] = kept
    return changed


def _clean_file(path: Path, out_dir: Path) -> None:
    """:func:`clean_outputs` on an executed notebook file, written back as nbformat writes it."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    if clean_outputs(nb, out_dir):
        path.write_text(json.dumps(nb, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def tidy_stored(paths: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str] | None = None) -> int:
    """Make executed notebooks fit to be stored in the repository (``make notebook-outputs``): outputs
    cleaned as a run's are (:func:`clean_outputs`), widget state and execution timestamps dropped (large, and
    noise in diffs). Returns how many notebooks were rewritten."""
    import nbformat

    changed = 0
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        nb.metadata.pop("widgets", None)
        for cell in nb.cells:
            cell.metadata.pop("execution", None)
        clean_outputs(nb, out_dir)
        nbformat.write(nb, path)
        changed += 1
    return changed


def copy_notebooks(dest: str | os.PathLike[str], overwrite: bool = False) -> list[Path]:
    """Put editable copies of the numbered notebooks and the Kaggle kernel notebook in ``dest``.

    Existing files are kept (and named in the error) unless ``overwrite``.
    """
    src = resources_root() / "notebooks"
    files = [*find_notebooks(src), src / "kaggle_kernel.ipynb"]
    dest = Path(dest)
    clash = [p.name for p in files if (dest / p.name).exists()]
    if clash and not overwrite:
        raise ConfigError(f"{dest} already holds {clash}; pass --force to overwrite them")
    dest.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(p, dest / p.name)) for p in files]


def kaggle_slug(title: str) -> str:
    """The slug Kaggle derives from a title, as the Kaggle CLI computes it (``python-slugify``, used when
    installed; else the same rule for ASCII titles: lower case, runs of other characters -> one hyphen,
    accents folded). ``kaggle kernels push`` warns when the id's slug differs from it."""
    try:
        from slugify import slugify
    except ImportError:
        ascii_title = unicodedata.normalize("NFKD", title).encode("ascii", "ignore").decode("ascii")
        return re.sub(r"[^a-z0-9]+", "-", ascii_title.lower()).strip("-")
    return str(slugify(title))


def validate_kaggle_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check ``kaggle-metadata.json``: required fields and types, code file present, dataset slugs, and
    that the title resolves to the id's slug."""
    path = Path(path)
    meta = json.loads(path.read_text())
    problems = []
    for key, typ in KAGGLE_REQUIRED.items():
        if key not in meta:
            problems.append(f"missing {key!r}")
        elif not isinstance(meta[key], typ):
            problems.append(f"{key!r} should be {typ.__name__}, is {type(meta[key]).__name__}")
    if not problems:
        if "/" not in meta["id"] or len(meta["id"].split("/")) != 2:
            problems.append(f"id {meta['id']!r} should be 'username/kernel-slug'")
        if meta["language"] != "python":
            problems.append("language should be 'python'")
        if meta["kernel_type"] not in ("notebook", "script"):
            problems.append("kernel_type should be 'notebook' or 'script'")
        if not (path.parent / meta["code_file"]).is_file():
            problems.append(f"code_file {meta['code_file']} does not exist next to {path.name}")
        if "/" in meta["id"] and kaggle_slug(meta["title"]) != meta["id"].split("/", 1)[1]:
            problems.append(f"title {meta['title']!r} resolves to the slug {kaggle_slug(meta['title'])!r}, "
                            f"not the id's {meta['id'].split('/', 1)[1]!r}")
        for slug in meta["dataset_sources"]:
            if not isinstance(slug, str) or len(slug.split("/")) != 2:
                problems.append(f"dataset source {slug!r} should be 'owner/dataset'")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return meta


def validate_dataset_metadata(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Check a Kaggle ``dataset-metadata.json``: title (6-50 characters) resolving to the id's slug, id
    ``owner/slug`` (slug 3-50 characters), licenses."""
    path = Path(path)
    meta = json.loads(path.read_text())
    problems = []
    title, ident = meta.get("title"), meta.get("id")
    if not isinstance(title, str) or not 6 <= len(title) <= 50:
        problems.append(f"title should be 6-50 characters, got {title!r}")
    if not isinstance(ident, str) or len(ident.split("/")) != 2 or not 3 <= len(ident.split("/")[1]) <= 50:
        problems.append(f"id should be 'owner/dataset-slug' with a 3-50 character slug, got {ident!r}")
    elif isinstance(title, str) and kaggle_slug(title) != ident.split("/")[1]:
        problems.append(f"title {title!r} resolves to the slug {kaggle_slug(title)!r}, not the id's")
    if not isinstance(meta.get("licenses"), list) or not meta["licenses"]:
        problems.append("licenses should be a non-empty list, e.g. [{\"name\": \"MIT\"}]")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems))
    return meta


def build_wheel(dest: str | os.PathLike[str]) -> Path:
    """The kit's wheel in ``dest``: built from the checkout this package runs from (``pip wheel``), else
    re-packed from the installed package's own files (so an installed kit can stage itself)."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    here = Path(__file__).resolve().parents[3]  # src/prodrec/run/notebooks.py -> the checkout
    if (here / "pyproject.toml").is_file() and (here / "src" / "prodrec").is_dir():
        with tempfile.TemporaryDirectory() as tmp:
            res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                  "-q", "-w", tmp, str(here)], capture_output=True, text=True)
            if res.returncode != 0:
                raise ConfigError(f"building the prodrec wheel failed: {res.stderr.strip()[-800:]}")
            built = next(Path(tmp).glob("prodrec-*.whl"))
            return Path(shutil.copy2(built, dest / built.name))
    return _repack_installed(dest)


def _repack_installed(dest: Path) -> Path:
    """A wheel made from the installed distribution's files (its RECORD lists them), RECORD rewritten."""
    dist = importlib.metadata.distribution("prodrec")
    files = [f for f in dist.files or [] if f.parts[0] != ".."  # console scripts: pip makes them anew
             and "__pycache__" not in f.parts and not str(f).endswith(".pyc")
             and f.name not in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")]
    if not any(f.parts[0] == "prodrec" for f in files):
        raise ConfigError("the installed prodrec has no package files to re-pack (an editable install?); "
                          "run kaggle-stage from the checkout or pass --wheel PATH")
    info = next(f.parts[0] for f in files if f.parts[0].endswith(".dist-info"))
    target = dest / f"prodrec-{dist.version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in files:
            data = Path(str(dist.locate_file(f))).read_bytes()
            zf.writestr(str(f), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{f},sha256={digest},{len(data)}")
        record.append(f"{info}/RECORD,,")
        zf.writestr(f"{info}/RECORD", "\n".join(record) + "\n")
    return target


def kaggle_stage(
    dest: str | os.PathLike[str],
    metadata: str | os.PathLike[str] | None = None,
    owner: str | None = None,
    wheel: str | os.PathLike[str] | None = None,
) -> dict[str, Path]:
    """Stage two push-ready folders under ``dest``:

    * ``dataset/``: the kit's wheel and its ``dataset-metadata.json`` (id ``OWNER/prodrec-wheel``), for
      ``kaggle datasets create -p DEST/dataset``;
    * ``kernel/``: ``kernel-metadata.json`` (Kaggle's file name) listing that dataset among its sources,
      and the kernel notebook, for ``kaggle kernels push -p DEST/kernel``. The kernel installs the wheel
      with ``--no-deps`` from ``/kaggle/input/prodrec-wheel/``, so it runs unedited.

    ``owner`` (your Kaggle user name) replaces the owner of both ids; ``wheel`` uses a wheel you built
    instead of building one (see :func:`build_wheel`). Returns ``{"kernel": ..., "dataset": ..., "wheel": ...}``.
    """
    metadata = Path(metadata) if metadata else resources_root() / KAGGLE_METADATA
    meta = validate_kaggle_metadata(metadata)
    owner = owner or meta["id"].split("/", 1)[0]
    dest = Path(dest)
    kernel_dir, dataset_dir = dest / "kernel", dest / "dataset"
    kernel_dir.mkdir(parents=True, exist_ok=True)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    for old in dataset_dir.glob("prodrec-*.whl"):
        old.unlink()
    if wheel:
        staged_wheel = Path(shutil.copy2(wheel, dataset_dir / Path(wheel).name))
    else:
        staged_wheel = build_wheel(dataset_dir)
    dataset_id = f"{owner}/{WHEEL_DATASET}"
    write_json(dataset_dir / "dataset-metadata.json",
               {"title": WHEEL_DATASET.replace("-", " "), "id": dataset_id, "licenses": [{"name": "MIT"}]})
    validate_dataset_metadata(dataset_dir / "dataset-metadata.json")
    code = metadata.parent / meta["code_file"]
    sources = [*meta["dataset_sources"], dataset_id]
    staged = dict(meta, id=f"{owner}/{meta['id'].split('/', 1)[1]}", code_file=code.name,
                  dataset_sources=list(dict.fromkeys(sources)))
    shutil.copy2(code, kernel_dir / code.name)
    write_json(kernel_dir / "kernel-metadata.json", staged)
    validate_kaggle_metadata(kernel_dir / "kernel-metadata.json")
    return {"kernel": kernel_dir, "dataset": dataset_dir, "wheel": staged_wheel}
