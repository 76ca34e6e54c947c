"""The image-encoder interface and its decoding pipeline.

Subclasses implement :meth:`ImageEncoder._forward` (a uint8 batch in, features out) and, when they decode
files their own way, :meth:`ImageEncoder.load`. The base class decodes images on a thread pool a few batches
ahead of the model (PIL releases the GIL while decoding), so the model never waits for JPEG decoding, shows
a progress bar, and L2-normalises the output.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Protocol, runtime_checkable

import numpy as np
from tqdm.auto import tqdm

from ...core.params import check_positive_int
from ...data.images import ImageError, load_rgb


@runtime_checkable
class Encoder(Protocol):
    """What every encoder tells about itself: a name, a vector size, an id under which its vectors are
    stored (model + weights: equal ids give interchangeable vectors), and a provenance record."""

    name: str
    dim: int
    choice_reason: str

    @property
    def model_id(self) -> str: ...

    def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class ImageEncoderLike(Encoder, Protocol):
    """An image encoder: file paths in, L2-normalised float32 rows out; undecodable files are reported
    (position -> reason) with a zero row instead of stopping the run."""

    def encode_with_failures(
        self, paths: Sequence[str], batch_size: int = 32, progress: bool = True, workers: int | None = None,
        desc: str | None = None,
    ) -> tuple[np.ndarray, dict[int, str]]: ...


@runtime_checkable
class TextEncoderLike(Encoder, Protocol):
    """A text encoder: sentences in, L2-normalised float32 rows out."""

    def encode(self, sentences: list[str], batch_size: int = 64, progress: bool = True) -> np.ndarray: ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (float32); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, eps)


def default_decode_workers() -> int:
    """Decoding threads when neither the call nor the encoder says: between 2 and 8, from the CPU count."""
    return max(2, min(8, os.cpu_count() or 2))


class ImageEncoder(ABC):
    """``encode(paths) -> float32 [n, dim]``, L2-normalised. Attributes describe the model for provenance.

    A subclass supplies :meth:`_forward` (the model), and may replace :meth:`load` (how one file becomes a
    uint8 array: the colour encoder decodes JPEGs reduced) and the class defaults below; decoding on a
    thread pool ahead of the model, failures, progress and normalisation come from here.

    Parameters
    ----------
    workers : int or None
        Decoding threads used when a call gives none (None: :func:`default_decode_workers`).
    """

    name: str = "image-encoder"
    dim: int = 0
    input_size: int = 224
    #: Images per forward pass, when smaller than the decoding batch (None: the whole batch). Memory-bound
    #: models run faster on a CPU in small micro-batches whose activations stay in cache.
    micro_batch: int | None = None
    #: Images decoded (and encoded) per batch when a call gives no ``batch_size``.
    default_batch_size: int = 32
    #: Batches decoded ahead of the model.
    prefetch: int = 2

    def __init__(self, workers: int | None = None) -> None:
        self.weights: str = "unknown"
        self.weight_source: str = "unknown"
        self.device: str = "cpu"
        self.choice_reason: str = "requested"
        self.workers: int | None = None if workers is None else check_positive_int("workers", workers)

    @property
    def model_id(self) -> str:
        """Identifies model and weights: embeddings from two encoders with equal ids are interchangeable."""
        return f"{self.name}/{self.weights}"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model_id": self.model_id,
            "dim": self.dim,
            "weights": self.weights,
            "weight_source": self.weight_source,
            "device": self.device,
            "choice_reason": self.choice_reason,
            "input_size": self.input_size,
            "micro_batch": self.micro_batch,
        }

    @abstractmethod
    def _forward(self, batch: np.ndarray) -> np.ndarray:
        """uint8 RGB [b, H, W, 3] -> float [b, dim] features (not yet normalised)."""

    def encode_arrays(self, batch: np.ndarray) -> np.ndarray:
        """Features for in-memory uint8 images [b, H, W, 3], L2-normalised."""
        mb = self.micro_batch
        if mb and len(batch) > mb:
            feats = np.concatenate(self._forward_many([np.ascontiguousarray(batch[i : i + mb])
                                                       for i in range(0, len(batch), mb)]))
        else:
            feats = self._forward(np.ascontiguousarray(batch))
        return l2_normalize(feats)

    def _forward_many(self, batches: Sequence[np.ndarray]) -> list[np.ndarray]:
        """:meth:`_forward` of each micro-batch, in order (a backend may run several at once)."""
        return [self._forward(b) for b in batches]

    def load(self, path: str) -> np.ndarray:
        """Decode ``path`` to uint8 RGB ``[input_size, input_size, 3]``, as the model sees it; raises
        :class:`~prodrec.data.images.ImageError` for a file that cannot be used."""
        return load_rgb(path, size=self.input_size)

    def _decode(self, path: str) -> np.ndarray | str:
        """:meth:`load`, with an unusable file's reason returned instead of raised (runs on the pool)."""
        try:
            return self.load(path)
        except ImageError as exc:
            return exc.reason

    def encode(
        self, paths: Sequence[str], batch_size: int | None = None, progress: bool = True, workers: int | None = None
    ) -> np.ndarray:
        """Embed ``paths``; raises :class:`~prodrec.data.images.ImageError` listing every unusable file."""
        out, failures = self.encode_with_failures(paths, batch_size, progress, workers)
        if failures:
            listed = "; ".join(f"{paths[i]}: {why}" for i, why in list(failures.items())[:5])
            raise ImageError(paths[next(iter(failures))], f"{len(failures)} image(s) could not be decoded: {listed}")
        return out

    def encode_with_failures(
        self,
        paths: Sequence[str],
        batch_size: int | None = None,
        progress: bool = True,
        workers: int | None = None,
        desc: str | None = None,
    ) -> tuple[np.ndarray, dict[int, str]]:
        """Embed ``paths``; rows of images that fail to decode are zero and listed in the returned dict
        (position -> reason) instead of stopping the run, so callers must drop them.

        Parameters
        ----------
        paths : sequence of str
            Image files.
        batch_size : int or None
            Images per decoded batch (None: :attr:`default_batch_size`).
        progress : bool
            Show a progress bar.
        workers : int or None
            Decoding threads (None: the encoder's ``workers``, else :func:`default_decode_workers`).
        desc : str or None
            Progress bar label.

        Returns
        -------
        (np.ndarray, dict)
            ``float32 [len(paths), dim]`` unit-norm rows (zero rows for failures) and ``{position: reason}``.
        """
        batch_size = check_positive_int("batch_size", self.default_batch_size if batch_size is None else batch_size)
        n = len(paths)
        out = np.zeros((n, self.dim), dtype=np.float32)
        failures: dict[int, str] = {}
        bar = tqdm(total=n, desc=desc or f"{self.name} images", unit="img", disable=not progress or n == 0)
        try:
            for start, batch, ok in self._batches(paths, batch_size, workers, failures):
                if ok.any():
                    out[start : start + len(ok)][ok] = self.encode_arrays(batch[ok])
                bar.update(len(ok))
        finally:
            bar.close()
        return out, failures

    def _batches(
        self, paths: Sequence[str], batch_size: int, workers: int | None, failures: dict[int, str]
    ) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(start, uint8 batch, decoded-ok mask) per batch, decoded on a thread pool :attr:`prefetch`
        batches ahead of the model (PIL releases the GIL while decoding)."""
        size = self.input_size
        n_workers = workers or self.workers or default_decode_workers()
        with ThreadPoolExecutor(max_workers=n_workers) as pool:
            pending: deque[tuple[int, list[Future[np.ndarray | str]]]] = deque()
            starts = iter(range(0, len(paths), batch_size))

            def submit_next() -> None:
                start = next(starts, None)
                if start is not None:
                    stop = min(start + batch_size, len(paths))
                    pending.append((start, [pool.submit(self._decode, paths[i]) for i in range(start, stop)]))

            for _ in range(self.prefetch + 1):
                submit_next()
            while pending:
                start, futures = pending.popleft()
                submit_next()
                batch = np.zeros((len(futures), size, size, 3), dtype=np.uint8)
                ok = np.ones(len(futures), dtype=bool)
                for j, fut in enumerate(futures):
                    res = fut.result()
                    if isinstance(res, str):
                        ok[j] = False
                        failures[start + j] = res
                    else:
                        batch[j] = res
                yield start, batch, ok
