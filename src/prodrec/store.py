"""Embedding store: ``.npy`` matrices with JSON sidecars, reused when model and catalog match.

Layout of a store folder, for one entry ``KEY = <kind>__<model>__<fingerprint[:16]>``::

    KEY.npy         float32 [n, dim], L2-normalised rows (rows of failed items are zero)
    KEY.json        sidecar: model id, weight source, dims, catalog fingerprint, ids, failures,
                    created-at, package version, sha256 of KEY.npy
    KEY.parts/      only while computing: manifest.json + chunk-000000.npz ... (resume points)
    KEY.lock        advisory lock held while computing (two runs never interleave their writes)

Every file is written to a temporary name and renamed into place, so a crash leaves either the old
state or the new one, never a half-written file. An interrupted run leaves its finished chunks behind;
the next run with the same model and catalog resumes after the last complete chunk.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from . import __version__

log = logging.getLogger(__name__)
_SLOW_CHUNKS = float(os.environ.get("PRODREC_SLOW_CHUNKS", "0") or 0)

ChunkFn = Callable[[int, int], tuple[np.ndarray, dict[int, str]]]


@dataclass
class Embeddings:
    """Vectors for a list of product ids, plus the metadata that says where they came from."""

    ids: np.ndarray
    vectors: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.ids = np.asarray(self.ids)
        self.vectors = np.asarray(self.vectors, dtype=np.float32)
        if self.vectors.ndim != 2 or len(self.ids) != len(self.vectors):
            raise ValueError(
                f"embeddings need ids [n] and vectors [n, dim]; got {self.ids.shape} and {self.vectors.shape}"
            )

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def valid(self) -> Embeddings:
        """Without the rows of items that failed (e.g. undecodable images)."""
        if not self.failures:
            return self
        bad = np.isin(self.ids.astype(str), list(self.failures))
        return Embeddings(self.ids[~bad], self.vectors[~bad], self.meta, self.failures)


def fingerprint(items: Sequence[str] | Iterator[str]) -> str:
    """sha256 over a sequence of strings (ids, sentences, file facts)."""
    h = hashlib.sha256()
    for s in items:
        h.update(s.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:80]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str = "wb") -> None:
    """Write through a temp file in the same folder, fsync, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def write_json(path: Path, obj: Any) -> None:
    text = json.dumps(obj, indent=2, default=_json_default)
    _atomic_write(Path(path), lambda f: f.write(text), mode="w")


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: atomic renames still give last-writer-wins
        yield
        return
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.warning("%s is locked by another run; waiting for it to finish", path)
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class EmbeddingStore:
    """A folder of embedding matrices keyed by (kind, model id, catalog fingerprint)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionError(f"cannot create the embedding store folder {self.root}: {exc}") from exc
        if not os.access(self.root, os.W_OK):
            raise PermissionError(
                f"the embedding store folder {self.root} is not writable; choose another with --out / store_dir"
            )

    def key(self, kind: str, model_id: str, fp: str) -> str:
        return f"{_slug(kind)}__{_slug(model_id)}__{fp[:16]}"

    def paths(self, key: str) -> tuple[Path, Path, Path, Path]:
        return (
            self.root / f"{key}.npy",
            self.root / f"{key}.json",
            self.root / f"{key}.parts",
            self.root / f"{key}.lock",
        )

    # ------------------------------------------------------------------ reading
    def check(self, kind: str, model_id: str, fp: str) -> tuple[Embeddings | None, str]:
        """Load a complete entry if it is valid; otherwise (None, why it cannot be used)."""
        key = self.key(kind, model_id, fp)
        npy, side, _, _ = self.paths(key)
        if not side.exists() or not npy.exists():
            others = [p.name for p in self.root.glob(f"{_slug(kind)}__{_slug(model_id)}__*.json")]
            if others:
                return None, f"the store holds {model_id} {kind} embeddings only for another catalog ({others[0]})"
            return None, "no stored embeddings for this model and catalog"
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            return None, f"sidecar {side.name} is unreadable ({exc})"
        if meta.get("package_version") != __version__:
            return None, f"written by prodrec {meta.get('package_version')}, this is {__version__}"
        if meta.get("model_id") != model_id:
            return None, f"written by model {meta.get('model_id')}, not {model_id}"
        if meta.get("fingerprint") != fp:
            return None, "catalog fingerprint differs (the products or their data changed)"
        try:
            if _sha256_file(npy) != meta.get("sha256"):
                return None, f"{npy.name} does not match its checksum (truncated or edited)"
            vectors = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            return None, f"{npy.name} is unreadable ({exc})"
        if vectors.shape != (len(meta["ids"]), meta["dim"]):
            return None, f"{npy.name} has shape {vectors.shape}, sidecar says ({len(meta['ids'])}, {meta['dim']})"
        emb = Embeddings(np.asarray(meta["ids"]), vectors, meta, meta.get("failures", {}))
        return emb, "loaded from store"

    # ------------------------------------------------------------------ writing
    def get_or_compute(
        self,
        kind: str,
        model_id: str,
        fp: str,
        ids: Sequence[Any],
        dim: int,
        compute: ChunkFn,
        meta: dict[str, Any] | Callable[[], dict[str, Any]] | None = None,
        chunk_size: int = 1024,
        progress: bool = True,
        force: bool = False,
    ) -> Embeddings:
        """Return stored embeddings, or compute them chunk by chunk with ``compute(start, stop)``.

        ``compute`` returns (vectors [stop - start, dim], {local position: failure reason}). Each finished
        chunk is saved at once; an interrupted call resumes after the last saved chunk.
        """
        key = self.key(kind, model_id, fp)
        npy, side, parts, lock = self.paths(key)
        ids = np.asarray(ids)
        with _locked(lock):
            if not force:
                emb, why = self.check(kind, model_id, fp)
                if emb is not None:
                    log.info("%s embeddings (%s): %s", kind, model_id, why)
                    emb.meta["cache"] = "hit"
                    return emb
                log.info("%s embeddings (%s): computing, because %s", kind, model_id, why)
            else:
                why = "recompute forced"
            manifest = {
                "model_id": model_id,
                "fingerprint": fp,
                "package_version": __version__,
                "n": len(ids),
                "dim": dim,
                "chunk_size": chunk_size,
            }
            done = self._resume(parts, manifest)
            n_chunks = (len(ids) + chunk_size - 1) // chunk_size
            todo = [c for c in range(n_chunks) if c not in done]
            resumed = len(done)
            bar = tqdm(
                total=len(ids),
                initial=sum(min(chunk_size, len(ids) - c * chunk_size) for c in done),
                desc=f"{kind} embeddings",
                unit="item",
                disable=not progress,
            )
            for c in todo:
                start, stop = c * chunk_size, min((c + 1) * chunk_size, len(ids))
                vecs, fails = compute(start, stop)
                vecs = np.asarray(vecs, dtype=np.float32)
                if vecs.shape != (stop - start, dim):
                    raise ValueError(f"encoder returned {vecs.shape} for chunk {c}, expected {(stop - start, dim)}")
                self._write_chunk(parts / f"chunk-{c:06d}.npz", vecs, fails)
                done[c] = (vecs, fails)
                bar.update(stop - start)
                if _SLOW_CHUNKS:  # test hook: widens the window in which a kill -9 lands mid-run
                    time.sleep(_SLOW_CHUNKS)
            bar.close()
            vectors = (
                np.concatenate([done[c][0] for c in range(n_chunks)]) if n_chunks else np.zeros((0, dim), np.float32)
            )
            failures = {
                str(ids[c * chunk_size + int(j)]): why_
                for c in range(n_chunks)
                for j, why_ in done[c][1].items()
            }
            if callable(meta):
                meta = meta()
            full_meta = {
                **(meta or {}),
                **manifest,
                "kind": kind,
                "ids": ids.tolist(),
                "failures": failures,
                "created_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "resumed_chunks": resumed,
                "computed_because": why,
            }
            _atomic_write(npy, lambda f: np.save(f, vectors, allow_pickle=False))
            full_meta["sha256"] = _sha256_file(npy)
            write_json(side, full_meta)
            shutil.rmtree(parts, ignore_errors=True)
            emb = Embeddings(ids, vectors, full_meta, failures)
            emb.meta["cache"] = "resumed" if resumed else "miss"
            return emb

    def _resume(self, parts: Path, manifest: dict[str, Any]) -> dict[int, tuple[np.ndarray, dict[int, str]]]:
        """Load the finished chunks of an earlier, interrupted run with the same manifest."""
        man_path = parts / "manifest.json"
        if parts.exists():
            try:
                old = json.loads(man_path.read_text())
            except (OSError, ValueError):
                old = None
            if old != manifest:
                log.info("discarding partial chunks in %s (different run settings)", parts)
                shutil.rmtree(parts, ignore_errors=True)
        parts.mkdir(parents=True, exist_ok=True)
        if not man_path.exists():
            write_json(man_path, manifest)
        done: dict[int, tuple[np.ndarray, dict[int, str]]] = {}
        for p in sorted(parts.glob("chunk-*.npz")):
            c = int(p.stem.split("-")[1])
            try:
                with np.load(p, allow_pickle=False) as z:
                    vecs = z["vectors"]
                    fails = json.loads(str(z["failures"]))
                expected = min(manifest["chunk_size"], manifest["n"] - c * manifest["chunk_size"])
                if vecs.shape != (expected, manifest["dim"]):
                    raise ValueError(f"shape {vecs.shape}")
                done[c] = (vecs, {int(k): v for k, v in fails.items()})
            except Exception as exc:  # noqa: BLE001 - any damage: recompute that chunk
                log.warning("chunk %s is damaged (%s); it will be recomputed", p.name, exc)
                p.unlink(missing_ok=True)
        if done:
            log.info("resuming: %d chunk(s) already computed in %s", len(done), parts)
        return done

    @staticmethod
    def _write_chunk(path: Path, vecs: np.ndarray, fails: dict[int, str]) -> None:
        payload = json.dumps({str(k): v for k, v in fails.items()})
        _atomic_write(path, lambda f: np.savez(f, vectors=vecs, failures=np.array(payload)))
