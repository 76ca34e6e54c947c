"""Headless notebook runs with papermill, and staging the Kaggle kernel (library code; the CLI is in
:mod:`prodrec.cli`).

``prodrec run-notebooks --out outputs/NAME`` executes ``notebooks/NN_*.ipynb`` in order with the same
parameters, writes the executed copies under ``--out`` (figures and metrics land in ``--out/figures`` and
``--out/metrics``), and stops at the first failing cell with a message naming the notebook and cell.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._io import write_json
from .errors import ConfigError, MissingDependency, ProdrecError
from .provenance import provenance

log = logging.getLogger(__name__)

KAGGLE_METADATA = "kaggle-metadata.json"
KAGGLE_REQUIRED = {
    "id": str, "title": str, "code_file": str, "language": str, "kernel_type": str, "is_private": bool,
    "enable_gpu": bool, "enable_internet": bool, "dataset_sources": list,
}


class NotebookFailed(ProdrecError, RuntimeError):
    """A notebook cell raised; the executed copy (with the error in it) is kept at ``path``."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


def repo_root() -> Path:
    """The checkout this package runs from (src layout), else the current folder."""
    here = Path(__file__).resolve().parents[2]
    return here if (here / "notebooks").is_dir() else Path.cwd()


def find_notebooks(folder: str | os.PathLike[str] | None = None, only: Sequence[str] | None = None) -> list[Path]:
    folder = Path(folder) if folder else repo_root() / "notebooks"
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
        log.info("%s finished in %.1f s", nb.name, secs)
        records.append({"notebook": nb.name, "seconds": round(secs, 2), "executed": str(target)})
    write_json(out / "run.json", provenance(parameters=params, notebooks=records))
    return records


def kaggle_slug(title: str) -> str:
    """The slug Kaggle derives from a kernel title (lower case, runs of other characters -> one hyphen);
    ``kaggle kernels push`` warns when the id's slug differs from it."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


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


def kaggle_stage(
    dest: str | os.PathLike[str], metadata: str | os.PathLike[str] | None = None, owner: str | None = None
) -> Path:
    """Stage a push-ready folder: ``kernel-metadata.json`` (Kaggle's file name) and the code file.

    ``owner`` replaces the user part of the kernel id (yours, for ``kaggle kernels push``).
    """
    metadata = Path(metadata) if metadata else repo_root() / KAGGLE_METADATA
    meta = validate_kaggle_metadata(metadata)
    if owner:
        meta["id"] = f"{owner}/{meta['id'].split('/', 1)[1]}"
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    code = metadata.parent / meta["code_file"]
    staged = dict(meta, code_file=code.name)
    shutil.copy2(code, dest / code.name)
    write_json(dest / "kernel-metadata.json", staged)
    return dest
