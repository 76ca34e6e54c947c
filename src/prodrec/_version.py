"""The package version, in one place that every module may import (never the package ``__init__``)."""

from __future__ import annotations

__version__ = "0.3.0"
