"""The trained head itself: per-arm input scaling and a two-layer MLP in numpy, saved with its provenance.

:meth:`LearnedHead.transform` runs in numpy only, so ranking with a trained head needs no torch.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..._version import __version__
from ...core.errors import ConfigError, StoreError
from ...core import io as core_io
from ...core.io import atomic_write, read_json_object, sha256_file, to_jsonable, write_json
from ..vectors import Embeddings

__all__ = ["FORMAT_VERSION", "HEAD_PATH_KEY", "LearnedHead", "check_block", "unit_rows"]

#: Layout version of a saved head; a folder that records another version is refused.
FORMAT_VERSION = 1
#: The key of a learned arm's :attr:`Embeddings.meta <prodrec.embed.vectors.Embeddings.meta>` that names
#: the folder of the head that made the vectors (see :meth:`LearnedHead.of`).
HEAD_PATH_KEY = "head_path"
_META_FILE = "head.json"
_WEIGHTS_PREFIX = "weights-"
_EPS = 1e-12
_ROWS_PER_BLOCK = 8192


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (all-zero rows stay zero)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def check_block(name: str, x: Any, n_rows: int | None, dim: int | None, what: str) -> np.ndarray:
    """One arm's input as float32 [n, dim]: finite, no all-zero rows, the expected shape."""
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"the {name!r} input of {what} is not a numeric array ({exc})") from None
    if arr.ndim != 2:
        raise ConfigError(f"the {name!r} input of {what} must be 2-d [products, dim]; got shape {arr.shape}")
    if n_rows is not None and arr.shape[0] != n_rows:
        raise ConfigError(f"the {name!r} input of {what} has {arr.shape[0]} rows; expected {n_rows}")
    if dim is not None and arr.shape[1] != dim:
        raise ConfigError(f"the {name!r} input of {what} has dimension {arr.shape[1]}; this head was trained on "
                          f"{dim}-d {name} vectors")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise ConfigError(f"{int(bad.sum())} row(s) of the {name!r} input of {what} contain NaN or inf, e.g. rows "
                          f"{np.flatnonzero(bad)[:5].tolist()}")
    zero = ~(arr != 0).any(axis=1)
    if zero.any():
        raise ConfigError(f"{int(zero.sum())} row(s) of the {name!r} input of {what} are all zero (failed "
                          f"embeddings?), e.g. rows {np.flatnonzero(zero)[:5].tolist()}; drop those products")
    return arr


@dataclass
class LearnedHead:
    """A trained fusion head: per-arm input scaling, then ``Linear -> ReLU -> Linear``, then unit rows.

    Attributes
    ----------
    arms : tuple of str
        Input arm names, in concatenation order.
    input_dims : dict
        ``arm -> dimension`` of the frozen input vectors.
    input_models : dict
        ``arm -> model_id`` of the frozen input vectors (provenance; ``"unknown"`` when not given).
    config : dict
        How it was trained: ``labels``, ``label_weights``, ``epochs``, ``seed``, ``hidden``, ``out_dim``,
        ``lr``, ``weight_decay``, ``batch_size``, ``temperature``, ``input_scaling``, ``loss``, class counts.
    state : dict
        The weights as numpy arrays: ``mean.<arm>``, ``scale.<arm>`` (input scaling), ``w1``, ``b1``,
        ``w2``, ``b2`` (``w`` as ``[in, out]``).
    loss_curve : list of float
        Mean training loss per epoch.
    train_ids : list of str
        The products it was trained on (never evaluate on these).
    seconds : float
        Wall-clock training time.
    path : Path or None
        The folder the head was saved to or loaded from (None: not on disk). Not part of the fingerprint.

    The training ids are fingerprinted with :func:`prodrec.core.io.fingerprint` (sha256 over the ids, each
    ended by a NUL byte), the digest a head has recorded since format 1: heads saved before it was shared
    with the rest of the kit keep their fingerprint, load as they are and are not retrained.
    """

    arms: tuple[str, ...]
    input_dims: dict[str, int]
    input_models: dict[str, str]
    config: dict[str, Any]
    state: dict[str, np.ndarray]
    loss_curve: list[float] = field(default_factory=list)
    train_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    path: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.arms = tuple(str(a) for a in self.arms)
        self.state = {k: np.asarray(v, dtype=np.float32) for k, v in self.state.items()}
        self._check_state()

    def _check_state(self) -> None:
        """The weights agree with the arms and dimensions (a damaged or mismatched save fails here)."""
        missing_dims = [a for a in self.arms if a not in self.input_dims]
        if missing_dims:
            raise ConfigError(f"input_dims lacks arm(s) {missing_dims}")
        d_in = sum(int(self.input_dims[a]) for a in self.arms)
        hidden, out_dim = int(self.config.get("hidden", -1)), int(self.config.get("out_dim", -1))
        shapes = {"w1": (d_in, hidden), "b1": (hidden,), "w2": (hidden, out_dim), "b2": (out_dim,)}
        for a in self.arms:
            shapes[f"mean.{a}"] = (int(self.input_dims[a]),)
            shapes[f"scale.{a}"] = ()
        missing = sorted(set(shapes) - set(self.state))
        if missing:
            raise ConfigError(f"the head's weights lack {missing}")
        wrong = {k: (self.state[k].shape, s) for k, s in shapes.items() if self.state[k].shape != s}
        if wrong:
            raise ConfigError("the head's weights have the wrong shapes: "
                              + ", ".join(f"{k} {got} (expected {want})" for k, (got, want) in wrong.items()))

    @classmethod
    def of(cls, embeddings: Embeddings) -> LearnedHead:
        """The head that made a learned arm's vectors (loaded from the folder its meta names).

        Parameters
        ----------
        embeddings : Embeddings
            The ``learned`` arm's vectors, as :func:`prodrec.embed.embedding.learned_embeddings` (and
            so an experiment's ``embeddings["learned"]``) gives them.

        Raises
        ------
        ConfigError
            If ``embeddings`` were not made by a learned head.
        StoreError
            If the head's folder is missing or damaged (see :meth:`load`).
        """
        folder = embeddings.meta.get(HEAD_PATH_KEY)
        if not folder:
            raise ConfigError(f"these {embeddings.meta.get('arm', '')} vectors were not made by a learned head "
                              f"(their meta has no {HEAD_PATH_KEY!r}); pass the learned arm's embeddings")
        return cls.load(folder)

    @property
    def out_dim(self) -> int:
        """Length of the output vectors."""
        return int(self.state["w2"].shape[1])

    def _features(self, inputs: Mapping[str, np.ndarray], what: str = "transform") -> np.ndarray:
        """The scaled, concatenated input [n, sum(dims)] (what the first layer sees)."""
        if not isinstance(inputs, Mapping):
            raise ConfigError(f"{what} needs a mapping arm -> vectors; got {type(inputs).__name__}")
        missing = [a for a in self.arms if a not in inputs]
        if missing:
            raise ConfigError(f"{what} is missing input arm(s) {missing}: this head was trained on {list(self.arms)}"
                              f" (given {list(inputs)})")
        blocks, n = [], None
        for a in self.arms:
            x = check_block(a, inputs[a], n, int(self.input_dims[a]), what)
            n = x.shape[0]
            blocks.append((unit_rows(x) - self.state[f"mean.{a}"]) / self.state[f"scale.{a}"])
        return np.hstack(blocks).astype(np.float32, copy=False)

    def transform(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The learned vectors of products given their frozen arm vectors, in numpy (no torch needed).

        Parameters
        ----------
        inputs : mapping
            ``arm -> float [n, dim]`` for every arm of :attr:`arms` (other keys are ignored), rows aligned
            across arms. Rows need not be unit length (they are normalised first) but must be finite and
            not all zero.

        Returns
        -------
        np.ndarray
            ``float32 [n, out_dim]`` unit rows.

        Raises
        ------
        ConfigError
            A missing arm, a wrong dimension, differing row counts, NaN/inf or all-zero rows.
        """
        x = self._features(inputs)
        out = np.empty((len(x), self.out_dim), dtype=np.float32)
        for s in range(0, len(x), _ROWS_PER_BLOCK):  # bounded memory: [block, hidden] at a time
            h = np.maximum(x[s : s + _ROWS_PER_BLOCK] @ self.state["w1"] + self.state["b1"], 0.0)
            out[s : s + _ROWS_PER_BLOCK] = unit_rows(h @ self.state["w2"] + self.state["b2"])
        return out

    def fingerprint(self) -> str:
        """A stable sha256 (hex) of the config, the input arms and models, the training ids and the weights."""
        h = hashlib.sha256()
        head = {"format": FORMAT_VERSION, "arms": list(self.arms), "input_dims": self.input_dims,
                "input_models": self.input_models, "config": self.config,
                "train_ids": core_io.fingerprint(self.train_ids)}
        h.update(json.dumps(to_jsonable(head), sort_keys=True, allow_nan=False).encode())
        for k in sorted(self.state):
            v = np.asarray(self.state[k], dtype="<f4")  # (not ascontiguousarray: it makes 0-d arrays 1-d)
            h.update(f"{k}|{v.shape}|".encode())
            h.update(v.tobytes())
        return h.hexdigest()

    def provenance(self) -> dict[str, Any]:
        """Everything but the weights, JSON-safe: the training ids are summarised (count, sha256, first few)."""
        return to_jsonable({
            "kind": "learned-head",
            "format": FORMAT_VERSION,
            "prodrec": __version__,
            "fingerprint": self.fingerprint(),
            "arms": list(self.arms),
            "input_dims": dict(self.input_dims),
            "input_models": dict(self.input_models),
            "out_dim": self.out_dim,
            "config": self.config,
            "loss_curve": list(self.loss_curve),
            "seconds": self.seconds,
            "train_ids": {"count": len(self.train_ids), "sha256": core_io.fingerprint(self.train_ids),
                          "first": list(self.train_ids[:5])},
        })

    def save(self, folder: str | Path) -> Path:
        """Write the head to ``folder``: ``head.json`` (provenance and the full training ids) and
        ``weights-<sha>.npz``.

        The weights file is named by its checksum and written first; ``head.json`` (written atomically last)
        names it, so a crash leaves the previous head or the new one, never a mix. Weight files that the new
        ``head.json`` does not name are removed afterwards.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        arrays: dict[str, Any] = {k: np.asarray(v, dtype="<f4") for k, v in sorted(self.state.items())}
        np.savez(buf, **arrays)
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        weights = folder / f"{_WEIGHTS_PREFIX}{digest[:16]}.npz"

        def write(f: IO[Any]) -> None:
            f.write(data)

        atomic_write(weights, write)
        meta = dict(self.provenance(), weights={"file": weights.name, "sha256": digest},
                    train_ids_all=list(self.train_ids))
        write_json(folder / _META_FILE, meta)
        for old in folder.glob(f"{_WEIGHTS_PREFIX}*.npz"):
            if old.name != weights.name:
                old.unlink(missing_ok=True)
        self.path = folder
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> LearnedHead:
        """A head saved by :meth:`save`; a missing, damaged or inconsistent folder raises :class:`StoreError`."""
        folder = Path(folder)
        meta_path = folder / _META_FILE
        if not meta_path.is_file():
            raise StoreError(f"no learned head in {folder}: {_META_FILE} is missing")
        try:
            meta = read_json_object(meta_path)
        except (OSError, ValueError) as exc:
            raise StoreError(f"the learned head in {folder} is damaged: {_META_FILE} is unreadable ({exc})") from None
        if meta.get("kind") != "learned-head" or meta.get("format") != FORMAT_VERSION:
            raise StoreError(f"{meta_path} is not a learned head of format {FORMAT_VERSION} (kind "
                             f"{meta.get('kind')!r}, format {meta.get('format')!r})")
        try:
            name = str(meta["weights"]["file"])
            want_sha = str(meta["weights"]["sha256"])
            if Path(name).name != name or not name.startswith(_WEIGHTS_PREFIX):
                raise ValueError(f"its weights file {name!r} is not a file of the folder")
            wfile = folder / name
            if not wfile.is_file():
                raise ValueError(f"its weights file {wfile.name} is missing")
            if sha256_file(wfile) != want_sha:
                raise ValueError(f"its weights file {wfile.name} does not match its recorded sha256")
            with np.load(wfile, allow_pickle=False) as z:
                state = {k: z[k] for k in z.files}
            head = cls(
                arms=tuple(meta["arms"]),
                input_dims={str(k): int(v) for k, v in meta["input_dims"].items()},
                input_models={str(k): str(v) for k, v in meta["input_models"].items()},
                config=dict(meta["config"]),
                state=state,
                loss_curve=[float("nan") if v is None else float(v) for v in meta["loss_curve"]],
                train_ids=[str(i) for i in meta["train_ids_all"]],
                seconds=float(meta["seconds"]),
                path=folder,
            )
        except (KeyError, TypeError, ValueError, OSError, ConfigError) as exc:
            raise StoreError(f"the learned head in {folder} is damaged: {exc}") from None
        if head.fingerprint() != meta.get("fingerprint"):
            raise StoreError(f"the learned head in {folder} is damaged: its contents do not match the recorded "
                             "fingerprint")
        return head
