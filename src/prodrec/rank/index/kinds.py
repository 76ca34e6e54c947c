"""Index kinds and their parameters: which kind ``auto`` means, defaults, checks, IVF's cell count."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ...core import params as _params
from ...core.errors import ConfigError
from ...core.vocab import AUTO_APPROX_KIND, AUTO_EXACT_MAX

__all__ = ["IVF_CODES", "IVF_NLIST_PER_SQRT_N", "IVF_TRAIN_PER_LIST", "check_kind", "check_params", "default_nlist",
           "params_for", "resolve_kind"]

#: Default ``nlist`` per sqrt(n) for ivf; see :func:`default_nlist`. A query costs ~``nlist * d`` (ranking
#: the centroids) + ``nprobe * n / nlist * d`` (scanning cells), least at ``nlist ~ sqrt(nprobe * n)``;
#: calibrated nprobe was 1-12 on our sets, hence 2 sqrt(n) rather than faiss's 4-16 sqrt(n) (which suits
#: larger nprobe). It also halves k-means and assignment time: building 1,000,000 x 384 (an earlier,
#: low-rank mixture) took 129 s with nlist 2000 and 240 s with 4000 on 2 shared cores.
IVF_NLIST_PER_SQRT_N = 2
#: k-means trains on at most this many points per centroid (faiss warns below 39).
IVF_TRAIN_PER_LIST = 40

#: What an ivf index's lists hold: ``sq8`` (default), FAISS's 8-bit scalar quantizer (a byte per dimension,
#: a quarter of the float32 vectors), its candidates then scored exactly with the indexed rows (see
#: :class:`~prodrec.rank.index.IVFIndex`); ``flat``, the float32 vectors themselves (``IndexIVFFlat``).
IVF_CODES = ("sq8", "flat")

DEFAULTS: dict[str, dict[str, Any]] = {
    "exact": {},
    # niter: 10 k-means iterations, faiss's default for IVF training.
    "ivf": {"nlist": None, "nprobe": None, "niter": 10, "train_size": None, "target_recall": 0.95, "codes": "sq8"},
    # M=32, efConstruction=80, measured on 1,000,000 x 384 clustered unit vectors (2 shared cores): with
    # faiss's default efConstruction 40 (build 88 s) recall@5 stalled at 0.966 even at efSearch 1024;
    # 80 (125 s) reached 0.957 at efSearch 32 and 0.976 at 64; 160 (520 s) only 0.964 / 0.979. M=32
    # beat M=16 at equal efSearch on 100,000 x 384 for 256 bytes of links per vector.
    "hnsw": {"M": 32, "efConstruction": 80, "efSearch": None, "target_recall": 0.95},
}


def check_kind(kind: Any) -> str:
    """``kind`` if it is one of :data:`INDEX_KINDS`, else :class:`ConfigError` naming them."""
    return _params.check_index_kind(kind)


def resolve_kind(kind: str, n: int) -> str:
    """The concrete kind for ``kind`` and ``n`` vectors: ``auto`` becomes ``exact`` below
    :data:`AUTO_EXACT_MAX`, else :data:`AUTO_APPROX_KIND`."""
    kind = check_kind(kind)
    if kind != "auto":
        return kind
    return "exact" if n < AUTO_EXACT_MAX else AUTO_APPROX_KIND


def check_params(kind: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """``params`` of a concrete ``kind`` with the defaults filled in; unknown names and bad values raise
    :class:`ConfigError` naming the valid ones. ``None`` values mean "choose for me"."""
    kind = check_kind(kind)
    if kind == "auto":
        raise ConfigError("resolve 'auto' to a concrete kind first (see resolve_kind)")
    out = dict(DEFAULTS[kind])
    given = dict(params or {})
    unknown = sorted(set(given) - set(out))
    if unknown:
        valid = ", ".join(out) if out else "none"
        raise ConfigError(f"unknown parameter(s) {unknown} for a {kind} index; valid: {valid}")
    for name, value in given.items():
        if value is None:
            continue
        if name == "target_recall":
            try:
                f = float(value)
            except (TypeError, ValueError):
                f = float("nan")
            if not 0.0 < f <= 1.0:
                raise ConfigError(f"target_recall must be a number within (0, 1], got {value!r}")
            out[name] = f
        elif name == "codes":
            if value not in IVF_CODES:
                raise ConfigError(f"codes must be one of {', '.join(IVF_CODES)}; got {value!r}")
            out[name] = str(value)
        else:
            out[name] = _params.check_positive_int(f"the {kind} parameter {name}", value)
    return out


def params_for(requested: str, concrete: str, params: Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked params for ``concrete``; under ``auto``, names meant for the other kinds are dropped."""
    given = dict(params or {})
    if requested == "auto":
        known = set().union(*(DEFAULTS[k] for k in ("exact", "ivf", "hnsw")))
        unknown = sorted(set(given) - known)
        if unknown:
            raise ConfigError(f"unknown index parameter(s) {unknown}; valid: {', '.join(sorted(known))}")
        given = {k: v for k, v in given.items() if k in DEFAULTS[concrete]}
    return check_params(concrete, given)


def default_nlist(n: int) -> int:
    """IVF cells for ``n`` vectors: ``IVF_NLIST_PER_SQRT_N * sqrt(n)``, at most ``n / 39`` (so k-means
    has at least 39 points per centroid), at least 1."""
    return int(max(1, min(round(IVF_NLIST_PER_SQRT_N * math.sqrt(n)), n // 39)))
