"""The package's error family: catch :class:`ProdrecError` for anything the kit refuses on purpose.

Each subclass also derives from the built-in exception a caller would expect (``ValueError`` for bad
arguments, ``KeyError`` for unknown ids, ``FileNotFoundError`` for missing data), so code written against
the built-ins keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


class ProdrecError(Exception):
    """Base class of every error the kit raises on purpose (the CLI prints these as one line, exit 2)."""


class ConfigError(ProdrecError, ValueError):
    """An argument or setting is out of range or inconsistent (k, weights, modes, batch sizes, paths...)."""


class CatalogError(ProdrecError, ValueError):
    """The catalog cannot be used as given (empty, missing columns, unreadable description file...)."""


class DataNotFound(ProdrecError, FileNotFoundError):
    """No catalog in any of the places searched; the message lists them and how to get one."""


class UnknownIdError(ProdrecError, KeyError):
    """Product ids that are not in the catalog (or not in the ranked set); ``ids`` lists them."""

    def __init__(self, ids: Sequence[Any], where: str = "the catalog", known: Sequence[Any] = ()) -> None:
        self.ids = [str(i) for i in ids]
        shown = ", ".join(repr(i) for i in self.ids[:10]) + (" ..." if len(self.ids) > 10 else "")
        message = f"unknown product id(s) {shown}: not in {where}"
        if len(known):  # ids are compared as written: point at one that differs only in leading zeros or case
            norm = {str(k).lstrip("0").lower(): str(k) for k in known}
            near = [norm[i.lstrip("0").lower()] for i in self.ids if i.lstrip("0").lower() in norm]
            if near:
                message += f" (ids are compared as written; did you mean {', '.join(map(repr, near[:5]))}?)"
        super().__init__(message)

    def __str__(self) -> str:  # KeyError's str() would wrap the message in quotes
        return str(self.args[0])


class RankingError(ConfigError):
    """Invalid ranking input: k out of range, NaN or zero vectors, misaligned or missing arms."""


class StoreError(ProdrecError, OSError):
    """The embedding store cannot be used (not writable, locked past the timeout)."""


class ModelUnavailable(ProdrecError, RuntimeError):
    """A model or its weights cannot be loaded here; the message names the fix."""


class MissingDependency(ProdrecError, ImportError):
    """An optional dependency is not installed; the message names the pip extra that brings it."""
