"""Old module paths (``prodrec.gallery``, ``prodrec.provenance``...) kept working for one release.

Before 0.3 the kit was one flat package; notebooks copied with ``prodrec notebooks copy`` import those
paths. Each old name is now a thin alias module that warns (:class:`DeprecationWarning`, naming the new
path) and makes the old name *the same module object* as the new one, so attributes, monkeypatches and
``isinstance`` checks agree. Nothing inside the package imports an alias.
"""

from __future__ import annotations

import importlib
import sys
import types
import warnings
from typing import Any

#: Old module -> new module(s), in the order names are looked up.
MOVED: dict[str, tuple[str, ...]] = {
    "arms": ("prodrec.embed.arms", "prodrec.embed.registry"),
    "browse": ("prodrec.viz.browse",),
    "catalog": ("prodrec.data.catalog",),
    "cli": ("prodrec.run.cli",),
    "demo": ("prodrec.data.demo",),
    "errors": ("prodrec.core.errors",),
    "evaluate": ("prodrec.evaluation.runs",),
    "gallery": ("prodrec.viz.gallery",),
    "images": ("prodrec.data.images",),
    "index": ("prodrec.rank.index",),
    "learned": ("prodrec.embed.learned",),
    "notebooks": ("prodrec.run.notebooks",),
    "params": ("prodrec.core.params",),
    "pipeline": ("prodrec.run.experiment", "prodrec.embed.embedding"),
    "provenance": ("prodrec.core.provenance",),
    "report": ("prodrec.evaluation.report",),
    "scale": ("prodrec.embed.ray_engine",),
    "schema": ("prodrec.data.schema", "prodrec.core.vocab", "prodrec.embed.registry"),
    "search": ("prodrec.rank.search",),
    "store": ("prodrec.embed.store", "prodrec.embed.vectors"),
    "text": ("prodrec.data.text",),
}


def _warn(old: str, targets: tuple[str, ...]) -> None:
    warnings.warn(f"prodrec.{old} moved to {' and '.join(targets)}; the old path works until prodrec 0.4",
                  DeprecationWarning, stacklevel=3)


class _Merged(types.ModuleType):
    """An alias over several new modules: attributes are looked up in each, in order."""

    _targets: tuple[types.ModuleType, ...] = ()

    def __getattr__(self, name: str) -> Any:
        for module in self._targets:
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")


class _CallableEvaluate(_Merged):
    """``prodrec.evaluate`` is both the public function and (for old imports) a module: importing the old
    module must not stop ``prodrec.evaluate(...)`` from working."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._targets[0].evaluate(*args, **kwargs)


def alias(old: str) -> None:
    """Turn the module ``prodrec.<old>`` (being imported) into the alias of its new home."""
    targets = MOVED[old]
    _warn(old, targets)
    modules = tuple(importlib.import_module(t) for t in targets)
    name = f"prodrec.{old}"
    if len(modules) == 1 and old != "evaluate":
        sys.modules[name] = modules[0]
        return
    me = sys.modules[name]
    me.__class__ = _CallableEvaluate if old == "evaluate" else _Merged
    me._targets = modules  # type: ignore[attr-defined]
