"""Built indexes kept on disk, reloaded while what they index is unchanged."""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ...core.errors import ConfigError
from ...core.io import file_lock, read_json_object, write_json
from .base import FORMAT_VERSION, VectorIndex, as_queries, as_vectors, faiss_module, load_index
from .build import build_checked
from .exact import ExactIndex
from .faiss_kinds import FaissIndex
from .kinds import check_kind, params_for, resolve_kind

__all__ = ["IndexCache"]

log = logging.getLogger(__name__)


def _digest(x: np.ndarray) -> str:
    """A cheap content check of [n, d] vectors: sha256 of up to 64 evenly spaced rows and the shape."""
    rows = np.unique(np.linspace(0, len(x) - 1, num=min(64, len(x))).astype(np.intp))
    h = hashlib.sha256(repr(x.shape).encode())
    h.update(np.ascontiguousarray(x[rows]).tobytes())
    return h.hexdigest()[:16]



_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


class IndexCache:
    """Built indexes kept on disk (e.g. ``<store>/indexes``), one folder per name.

    :meth:`get` reloads a saved index when its kind, parameters, seed, shape, the caller's
    ``fingerprint`` and a sample of the vectors all match; otherwise it builds one and replaces the
    folder atomically (built in a temporary folder, then renamed), under a cross-process lock so that
    two runs never build the same index at once. Exact indexes are not saved: they need no build.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def folder(self, name: str) -> Path:
        if not isinstance(name, str) or not _NAME.match(name):
            raise ConfigError(f"index name {name!r} must be 1-128 letters, digits or ._=+- (not starting with "
                              "a dot or dash)")
        return self.root / name

    def get(self, name: str, vectors: np.ndarray, kind: str, fingerprint: str,
            params: Mapping[str, Any] | None = None, *, seed: int = 0, progress: bool = False,
            calibration_queries: np.ndarray | None = None) -> tuple[VectorIndex, str]:
        """The index ``name`` over ``vectors``, and ``"loaded"``, ``"loaded; recalibrated: <how>"`` or
        ``"built: <reason>"``.

        Parameters
        ----------
        name : str
            Folder name under the cache root (e.g. ``"fused-image+text"``).
        vectors : array [n, d]
            The rows the index must cover, in the order positions refer to.
        kind : {"exact", "ivf", "hnsw", "auto"}
        fingerprint : str
            What the caller knows identifies ``vectors`` (e.g. a hash of the store's ids, keys and model
            ids); a change forces a rebuild.
        params, seed, progress, calibration_queries
            As for :func:`build_index`. Other calibration queries than the saved index was calibrated
            with do not rebuild it: the loaded index is recalibrated (a few hundred exact searches) and
            its ``meta.json`` updated.
        """
        folder = self.folder(name)
        requested = check_kind(kind)
        if not isinstance(fingerprint, str) or not fingerprint:
            raise ConfigError(f"fingerprint must be a non-empty string, got {fingerprint!r}")
        x = as_vectors(vectors)
        concrete = resolve_kind(requested, len(x))
        p = params_for(requested, concrete, params)
        if concrete == "exact":
            return ExactIndex.from_checked(np.asarray(x), p), "built: exact search needs no index (nothing cached)"
        want = {"kind": concrete, "params": p, "seed": int(seed), "n": len(x), "dim": x.shape[1],
                "fingerprint": fingerprint, "digest": _digest(x)}
        cal_q = None if calibration_queries is None else as_queries(calibration_queries, x.shape[1])
        cal_digest = None if cal_q is None else hashlib.sha256(cal_q.tobytes()).hexdigest()[:16]
        self.root.mkdir(parents=True, exist_ok=True)
        with file_lock(self.root / f".{name}.lock", what=f"the index cache {folder}"):
            self._clean(name)
            reason = self._stale(folder, want)
            if reason is None:
                try:
                    index = load_index(folder, x, checked=True)  # x: through as_vectors above
                    if (index.ntotal, index.dim) == (want["n"], want["dim"]) and index.kind == concrete:
                        return index, self._recalibrated(folder, index, x, p, seed, cal_q, cal_digest)
                    reason = "the saved index does not match its meta.json"
                except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:  # damaged: rebuild
                    reason = f"the saved index could not be read ({type(exc).__name__}: {exc})"
            t0 = time.perf_counter()
            index = build_checked(x, concrete, p, seed, progress, cal_q)
            seconds = time.perf_counter() - t0
            extra = {"requested_kind": requested, "requested_params": p, "seed": int(seed),
                     "fingerprint": fingerprint, "digest": want["digest"], "calibration_digest": cal_digest,
                     "build_seconds": round(seconds, 3),
                     "threads": faiss_module().omp_get_max_threads(),
                     "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
            self._replace(name, lambda tmp: index.save(tmp, extra))
            log.info("index %s: built (%s) in %.1f s", name, reason, seconds)
            return index, f"built: {reason}"

    @staticmethod
    def _recalibrated(folder: Path, index: VectorIndex, x: np.ndarray, p: Mapping[str, Any], seed: int,
                      cal_q: np.ndarray | None, cal_digest: str | None) -> str:
        """``"loaded"``, after recalibrating ``index`` when it was calibrated with other queries."""
        if not isinstance(index, FaissIndex) or p.get(index.tuned) is not None:
            return "loaded"  # exact, or the search parameter was given: nothing calibrated
        meta = read_json_object(folder / "meta.json")
        if meta.get("calibration_digest") == cal_digest:
            return "loaded"
        before = index.params[index.tuned]
        index.calibrate(x, p.get("target_recall"), seed, cal_q)
        write_json(folder / "meta.json", {**meta, **index.meta(), "calibration_digest": cal_digest})
        what = "the given queries" if cal_q is not None else "sample rows"
        return f"loaded; recalibrated with {what}: {index.tuned} {before} -> {index.params[index.tuned]}"

    def _stale(self, folder: Path, want: Mapping[str, Any]) -> str | None:
        """Why the saved index cannot serve ``want`` (None: it can)."""
        meta_path = folder / "meta.json"
        if not meta_path.is_file():
            return "no saved index"
        try:
            meta = read_json_object(meta_path)
        except (OSError, ValueError) as exc:
            return f"meta.json unreadable ({exc})"
        if meta.get("format") != FORMAT_VERSION:
            return f"saved in format {meta.get('format')}, this version reads {FORMAT_VERSION}"
        if meta.get("kind") != want["kind"]:
            return f"kind changed ({meta.get('kind')} -> {want['kind']})"
        if (meta.get("n"), meta.get("dim")) != (want["n"], want["dim"]):
            return f"shape changed ({meta.get('n')} x {meta.get('dim')} -> {want['n']} x {want['dim']})"
        if meta.get("fingerprint") != want["fingerprint"]:
            return f"fingerprint changed ({str(meta.get('fingerprint'))[:16]} -> {want['fingerprint'][:16]})"
        old = meta.get("requested_params") or {}
        if old != want["params"]:
            diff = {k: (old.get(k), v) for k, v in want["params"].items() if old.get(k) != v}
            return "params changed (" + ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items()) + ")"
        if meta.get("seed") != want["seed"]:
            return f"seed changed ({meta.get('seed')} -> {want['seed']})"
        if meta.get("digest") != want["digest"]:
            return "the vectors changed under the same fingerprint"
        return None

    def _clean(self, name: str) -> None:
        """Remove temporary folders a crashed build of ``name`` left behind (we hold its lock)."""
        mine = re.compile(rf"^\.{re.escape(name)}\.(tmp|old)-[0-9a-f]{{12}}$")
        for p in self.root.iterdir():
            if mine.match(p.name) and p.is_dir():
                shutil.rmtree(p, ignore_errors=True)

    def _replace(self, name: str, write: Callable[[Path], Any]) -> None:
        final = self.folder(name)
        token = uuid.uuid4().hex[:12]
        tmp = self.root / f".{name}.tmp-{token}"
        old = self.root / f".{name}.old-{token}"
        try:
            write(tmp)
            if final.exists():
                os.replace(final, old)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(old, ignore_errors=True)

    def names(self) -> Sequence[str]:
        """Names of the saved indexes."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "meta.json").is_file())
