"""Argument checks that run before any catalog load or embedding (scikit-learn style: fail fast, one
clear line). Every function raises :class:`~prodrec.core.errors.ConfigError` (or its subclass
:class:`~prodrec.core.errors.RankingError` for ranking arguments) naming the argument and the accepted range.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError, RankingError
from .vocab import CALIBRATIONS, ENGINES, FUSION_MODES, INDEX_KINDS, LEARNED, PAPER_ARMS, PROTOCOLS, TASKS


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int ≥ 1."""
    if not _is_int(value) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def check_sample_size(n: Any) -> int | None:
    """A sample size: None (all products) or an int ≥ 1."""
    return None if n is None else check_positive_int("the sample size n", n)


def check_k(k: Any, n_products: int | None = None) -> int:
    """k ≥ 1, and (when the number of products is known) at most the other products a query has."""
    if not _is_int(k):
        raise RankingError(f"k must be an integer, got {k!r}")
    if k < 1:
        raise RankingError(f"k must be at least 1, got {k}")
    if n_products is not None and k > n_products - 1:
        raise RankingError(
            f"k={k} but the catalog has {n_products} products, so a query has only {n_products - 1} other "
            "products to recommend"
        )
    return int(k)


def check_alpha(alpha: Any) -> float:
    """The image weight of two-arm fusion, within [0, 1]."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise RankingError(f"alpha must be a number within [0, 1], got {alpha!r}") from None
    if not 0.0 <= a <= 1.0 or math.isnan(a):
        raise RankingError(f"alpha must be within [0, 1], got {alpha}")
    return a


def check_weights(weights: Mapping[str, Any], arms: Iterable[str] | None = None) -> dict[str, float]:
    """Per-arm fusion weights: finite, ≥ 0, not all 0, naming only ``arms`` (when given); normalised to sum 1."""
    out: dict[str, float] = {}
    for name, w in weights.items():
        try:
            f = float(w)
        except (TypeError, ValueError):
            raise RankingError(f"the weight of arm {name!r} must be a number, got {w!r}") from None
        if not math.isfinite(f) or f < 0:
            raise RankingError(f"the weight of arm {name!r} must be finite and ≥ 0, got {w!r}")
        out[str(name)] = f
    if arms is not None:
        known = list(arms)
        unknown = [a for a in out if a not in known]
        if unknown:
            raise RankingError(f"weights name arm(s) {unknown} that are not present; arms: {known}")
    total = sum(out.values())
    if total <= 0:
        raise RankingError(f"fusion weights must not all be 0, got {dict(weights)}")
    return {a: w / total for a, w in out.items()}


def parse_weights(text: str) -> dict[str, float]:
    """``"image=0.7,text=0.3"`` -> {"image": 0.7, "text": 0.3} (checked by :func:`check_weights`)."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"weights look like image=0.7,text=0.3; cannot read {part!r}")
        out[name.strip()] = value.strip()
    if not out:
        raise ConfigError("weights look like image=0.7,text=0.3; got nothing")
    check_weights(out)
    return {k: float(v) for k, v in out.items()}


def suggest(value: Any, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the choice closest to ``value`` (empty when none is close)."""
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """``value`` if it is one of ``choices``, else one :class:`ConfigError` line naming them (with the
    closest one as a suggestion)."""
    options = tuple(choices)
    if value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}{suggest(value, options)}")
    return str(value)


def check_mode(mode: str, arms: Iterable[str], known_arms: Iterable[str] = ()) -> str:
    """``mode`` is an arm present here, or a fusion mode when at least two arms are. ``known_arms`` (the
    registry's names) lets the message say which arm to add."""
    arms = list(arms)
    modes = list(arms) + (list(FUSION_MODES) if len(arms) >= 2 else [])
    if mode not in modes:
        if mode in FUSION_MODES:
            raise RankingError(f"mode {mode!r} fuses arms, but only {arms} is present; choose one of {modes}")
        hint = (f"; add the {mode} arm (CLI: --arms {','.join([*arms, mode])})" if mode in set(known_arms)
                else suggest(mode, modes))
        raise RankingError(f"mode {mode!r} is not available here; choose one of {modes}{hint}")
    return mode


def check_n_boot(n_boot: Any) -> int:
    return check_positive_int("n_boot (bootstrap resamples)", n_boot)


def check_engine(engine: str) -> str:
    """``engine`` is one of :data:`~prodrec.core.vocab.ENGINES` (where missing vectors are computed)."""
    return check_choice("engine", engine, ENGINES)


def check_index_kind(kind: Any) -> str:
    """``kind`` is one of :data:`~prodrec.core.vocab.INDEX_KINDS`."""
    return check_choice("index kind", kind, INDEX_KINDS)


def check_calibration(calibration: str, arms: Iterable[str] | None = None) -> str:
    """``calibration`` is one of :data:`CALIBRATIONS`; with ``arms`` given, ``auto`` is resolved (``raw`` for
    the paper's image/text arms, ``zscore`` when any other arm is present)."""
    check_choice("calibration", calibration, CALIBRATIONS)
    if calibration == "auto" and arms is not None:
        return "raw" if set(arms) - {LEARNED} <= set(PAPER_ARMS) else "zscore"
    return calibration


def check_protocol(protocol: str) -> str:
    """``protocol`` is one of :data:`~prodrec.core.vocab.PROTOCOLS` (``full`` or ``withheld``)."""
    return check_choice("protocol", protocol, PROTOCOLS)


def check_task(task: str) -> str:
    """``task`` is one of :data:`~prodrec.core.vocab.TASKS` (item, label, name, composed)."""
    return check_choice("task", task, TASKS)
