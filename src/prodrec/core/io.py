"""Small I/O helpers every module shares: atomic writes, strict JSON, a cross-process lock, checksums.

* :func:`atomic_write` writes through a temporary file in the target's folder, fsyncs and renames, so a
  crash leaves the old file or the new one, never half of one; the file gets the permissions an ordinary
  ``open()`` would give (``0o666`` minus the umask), not ``mkstemp``'s private ``0o600``.
* :func:`dumps` / :func:`write_json` emit strict JSON: NaN and infinities become ``null`` (JavaScript's
  ``JSON.parse`` and every strict parser reject bare ``NaN``), numpy scalars and arrays become numbers
  and lists, and anything else unknown is an error rather than a silent ``str()``.
* :func:`file_lock` is a lock across processes (the ``filelock`` package: works on Linux, macOS, Windows).
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path, PurePath
from typing import IO, Any

import numpy as np

from .errors import StoreError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[Any]], None], mode: str = "wb") -> Path:
    """Write ``path`` atomically: ``write(f)`` fills a temp file that is fsynced and renamed over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK) if hasattr(os, "fchmod") else None
        with os.fdopen(fd, mode, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def to_jsonable(obj: Any) -> Any:
    """``obj`` with numpy/pandas values converted and every non-finite float replaced by ``None``."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, PurePath):
        return str(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    # pandas missing values (pd.NA, NaT) without importing pandas here
    if type(obj).__name__ in ("NAType", "NaTType"):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # other numpy-like scalars
        return to_jsonable(obj.item())
    raise TypeError(f"cannot write {type(obj).__name__} as JSON: {obj!r}")


def dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text (``allow_nan=False``) of :func:`to_jsonable` ``(obj)``."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False, ensure_ascii=False)


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write strict JSON atomically, creating the parent folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = dumps(obj) + "\n"
    return atomic_write(path, lambda f: f.write(text), mode="w")


def read_json_object(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A JSON file that must hold an object; anything else (``[]``, ``null``, damage) raises ``ValueError``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path} holds {type(data).__name__}, not a JSON object")
    return data


def fingerprint(items: Iterable[str]) -> str:
    """sha256 (hex) over a sequence of strings, each ended by a NUL byte: ``["a", "b"]`` and ``["ab"]``
    differ. The one fingerprint of the kit (lists of ids, model settings)."""
    h = hashlib.sha256()
    for s in items:
        h.update(str(s).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@contextlib.contextmanager
def file_lock(path: str | os.PathLike[str], timeout: float = -1, what: str = "this store") -> Iterator[None]:
    """Hold an exclusive lock on ``path`` across processes (waits; ``timeout`` seconds, -1 = forever)."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        import logging

        logging.getLogger(__name__).warning("another run holds the lock on %s (%s); waiting for it to finish",
                                            what, path)
        try:
            lock.acquire(timeout=timeout)
        except Timeout as exc:
            raise StoreError(f"another run held the lock on {what} for {timeout} s ({path})") from exc
    try:
        yield
    finally:
        lock.release()
