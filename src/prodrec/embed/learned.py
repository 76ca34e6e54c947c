"""A learned fusion head: a small network that learns how to combine frozen arm vectors.

The paper fuses its arms with a fixed weighted cosine and names "learning the combination" as future scope.
:func:`train_head` trains a two-layer MLP on the *concatenated, frozen* vectors of several arms (image,
text, colour, ...) and returns a :class:`LearnedHead` whose output vectors (unit rows) are ranked by cosine
like any other arm.

What it learns from
    Catalog metadata as weak supervision, never human relevance judgements. Two products are *positives*
    for label ``l`` when both have a known, equal value of column ``l`` (a missing value, NaN, is never a
    positive). The label weights (default ``0.7 * articleType + 0.3 * baseColour``) turn the per-label
    matches into a graded positive weight ``p_ij = sum_l w_l [y_il == y_jl]``, and the loss is a
    *supervised contrastive* (SupCon / soft-target InfoNCE) loss over each mini-batch: for an anchor ``i``
    the target distribution over the other products ``j`` of the batch is ``p_ij / sum_j p_ij`` and the
    prediction is ``softmax_j(cos(f_i, f_j) / temperature)``; the loss is their cross-entropy, averaged over
    anchors that have at least one positive in the batch.

Input scaling (why no arm dominates)
    Each arm's rows are L2-normalised, centred on the arm's mean over the training products (embeddings
    share a large common direction: all-positive pooled CNN features, sentence vectors of one catalog, so
    raw cosines of unrelated products are high), and divided by one scalar per arm, the root-mean-square
    norm of the centred training rows. Every arm then enters the network with the same mean squared norm
    (1), whatever its dimension: a 1280-d image block and a 113-d colour block contribute equally to the
    first layer's pre-activations at initialisation (a per-coordinate z-score would instead weight an arm
    by its number of dimensions). The means and scales are part of the saved head.

Evaluation rule
    A head must never be evaluated on products it was trained on: their labels were its training signal.
    The caller passes ``ids`` disjoint from the evaluated products (``benchmarks/learned.py`` trains on
    every photo product outside the evaluated sample); the head records its training ids (count, hash and
    the full list in the saved folder) so that a disjointness check is always possible.

:meth:`LearnedHead.transform` runs in numpy only, so ranking with a trained head needs no torch; torch is
imported lazily by :func:`train_head` alone.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
import pandas as pd

from ..core import params
from ..core.io import atomic_write, read_json_object, sha256_file, to_jsonable, write_json
from .._version import __version__
from ..core.errors import ConfigError, MissingDependency, StoreError

__all__ = ["DEFAULT_LABEL_WEIGHTS", "FORMAT_VERSION", "LearnedHead", "train_head"]

#: Layout version of a saved head; a folder that records another version is refused.
FORMAT_VERSION = 1
#: The default weak labels when a table has both columns: product type matters more than colour.
DEFAULT_LABEL_WEIGHTS: dict[str, float] = {"articleType": 0.7, "baseColour": 0.3}
_META_FILE = "head.json"
_WEIGHTS_PREFIX = "weights-"
_EPS = 1e-12
_ROWS_PER_BLOCK = 8192


def _fingerprint_ids(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


def _unit_rows(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, _EPS)


def _check_block(name: str, x: Any, n_rows: int | None, dim: int | None, what: str) -> np.ndarray:
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
    """

    arms: tuple[str, ...]
    input_dims: dict[str, int]
    input_models: dict[str, str]
    config: dict[str, Any]
    state: dict[str, np.ndarray]
    loss_curve: list[float] = field(default_factory=list)
    train_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0

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
            x = _check_block(a, inputs[a], n, int(self.input_dims[a]), what)
            n = x.shape[0]
            blocks.append((_unit_rows(x) - self.state[f"mean.{a}"]) / self.state[f"scale.{a}"])
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
            out[s : s + _ROWS_PER_BLOCK] = _unit_rows(h @ self.state["w2"] + self.state["b2"])
        return out

    def fingerprint(self) -> str:
        """A stable sha256 (hex) of the config, the input arms and models, the training ids and the weights."""
        h = hashlib.sha256()
        head = {"format": FORMAT_VERSION, "arms": list(self.arms), "input_dims": self.input_dims,
                "input_models": self.input_models, "config": self.config,
                "train_ids": _fingerprint_ids(self.train_ids)}
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
            "train_ids": {"count": len(self.train_ids), "sha256": _fingerprint_ids(self.train_ids),
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
            )
        except (KeyError, TypeError, ValueError, OSError, ConfigError) as exc:
            raise StoreError(f"the learned head in {folder} is damaged: {exc}") from None
        if head.fingerprint() != meta.get("fingerprint"):
            raise StoreError(f"the learned head in {folder} is damaged: its contents do not match the recorded "
                             "fingerprint")
        return head


def _label_codes(table: pd.DataFrame, columns: Sequence[str]) -> tuple[np.ndarray, dict[str, int]]:
    """Integer codes [n, n_labels] (missing = -1) and the number of classes per label."""
    codes, classes = [], {}
    for col in columns:
        values = table[col]
        c, uniques = pd.factorize(values.astype("object").where(values.notna(), None), use_na_sentinel=True)
        codes.append(c.astype(np.int64))
        classes[col] = len(uniques)
    return np.stack(codes, axis=1), classes


def _resolve_label_weights(labels: pd.DataFrame, label_weights: Mapping[str, float] | None) -> dict[str, float]:
    if label_weights is None:
        if all(c in labels.columns for c in DEFAULT_LABEL_WEIGHTS):
            return dict(DEFAULT_LABEL_WEIGHTS)
        if len(labels.columns) == 0:
            raise ConfigError("labels has no columns: nothing to learn from")
        return {str(c): 1.0 / len(labels.columns) for c in labels.columns}
    if not isinstance(label_weights, Mapping) or not label_weights:
        raise ConfigError(f"label_weights must be a non-empty mapping column -> weight; got {label_weights!r}")
    unknown = [c for c in label_weights if c not in labels.columns]
    if unknown:
        raise ConfigError(f"label_weights names column(s) {unknown} that labels lacks ({list(labels.columns)})")
    out: dict[str, float] = {}
    for col, w in label_weights.items():
        try:
            f = float(w)
        except (TypeError, ValueError):
            raise ConfigError(f"the weight of label {col!r} must be a number; got {w!r}") from None
        if not math.isfinite(f) or f < 0:
            raise ConfigError(f"the weight of label {col!r} must be finite and >= 0; got {w!r}")
        if f > 0:
            out[str(col)] = f
    total = sum(out.values())
    if total <= 0:
        raise ConfigError(f"label_weights must not all be 0; got {dict(label_weights)}")
    return {c: w / total for c, w in out.items()}


def _check_positive_float(name: str, value: Any) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a positive number; got {value!r}") from None
    if not math.isfinite(f) or f <= 0 or isinstance(value, bool):
        raise ConfigError(f"{name} must be a positive number; got {value!r}")
    return f


def train_head(
    inputs: Mapping[str, np.ndarray],
    labels: pd.DataFrame,
    *,
    ids: Sequence[str],
    label_weights: Mapping[str, float] | None = None,
    epochs: int = 30,
    seed: int = 0,
    hidden: int = 512,
    out_dim: int = 256,
    batch_size: int = 512,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    temperature: float = 0.1,
    input_models: Mapping[str, str] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> LearnedHead:
    """Train a fusion head on frozen arm vectors with catalog labels as weak supervision.

    Parameters
    ----------
    inputs : mapping
        ``arm -> float [n, dim]`` (unit rows, as the store gives them), rows aligned with ``ids``; the
        mapping's order is the concatenation order.
    labels : pandas.DataFrame
        Label columns indexed by product id (compared as strings); it must have a row for every id in
        ``ids`` (other rows are ignored). NaN means "unknown": never a positive for that label.
    ids : sequence of str
        The training products, unique. They must be disjoint from any product the head is evaluated on.
    label_weights : mapping, optional
        ``column -> weight`` (normalised to sum 1). Default ``{"articleType": 0.7, "baseColour": 0.3}``
        when both columns exist, else equal weights over all of ``labels``' columns.
    epochs, seed, hidden, out_dim, batch_size : int
        Passes over the training products; the seed of initialisation and batch order; the hidden and
        output widths; products per mini-batch (the contrastive loss compares products within a batch).
    lr, weight_decay, temperature : float
        AdamW learning rate and weight decay; the softmax temperature of the contrastive loss.
    input_models : mapping, optional
        ``arm -> model_id`` of the input vectors, recorded as provenance.
    threads : int, optional
        torch threads while training (restored afterwards); None leaves torch's setting (the machine's
        cores). On a machine busy with other work, 1 thread can be much faster than 2 for these small
        matrices (threads spin-wait for each other).
    progress : bool
        Show a tqdm bar over epochs with the running loss.

    Returns
    -------
    LearnedHead

    Raises
    ------
    ConfigError
        Empty or non-unique ids, mismatched row counts, unknown label columns, a label with fewer than 2
        classes, no positive pairs at all, or out-of-range hyper-parameters.
    MissingDependency
        torch is not installed.
    """
    epochs = params.check_positive_int("epochs", epochs)
    hidden = params.check_positive_int("hidden", hidden)
    out_dim = params.check_positive_int("out_dim", out_dim)
    batch_size = params.check_positive_int("batch_size", batch_size)
    if threads is not None:
        threads = params.check_positive_int("threads", threads)
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0; got {seed!r}")
    lr = _check_positive_float("lr", lr)
    temperature = _check_positive_float("temperature", temperature)
    try:
        weight_decay = float(weight_decay)
    except (TypeError, ValueError):
        raise ConfigError(f"weight_decay must be a number >= 0; got {weight_decay!r}") from None
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ConfigError(f"weight_decay must be a number >= 0; got {weight_decay!r}")

    ids = [str(i) for i in ids]
    if not ids:
        raise ConfigError("no training products: ids is empty")
    if len(set(ids)) != len(ids):
        dup = pd.Index(ids)[pd.Index(ids).duplicated()].unique().tolist()
        raise ConfigError(f"ids must be unique; {len(dup)} repeat, e.g. {dup[:5]}")
    if len(ids) < 2:
        raise ConfigError("need at least 2 training products")
    if not isinstance(inputs, Mapping) or not inputs:
        raise ConfigError("inputs must be a non-empty mapping arm -> vectors [n, dim]")
    arms = tuple(str(a) for a in inputs)
    blocks = {a: _check_block(a, inputs[a], len(ids), None, "train_head (rows must align with ids)")
              for a in arms}
    models = {a: "unknown" for a in arms}
    if input_models is not None:
        extra = [a for a in input_models if a not in arms]
        if extra:
            raise ConfigError(f"input_models names arm(s) {extra} that are not inputs ({list(arms)})")
        models.update({str(a): str(m) for a, m in input_models.items()})

    if not isinstance(labels, pd.DataFrame):
        raise ConfigError(f"labels must be a pandas DataFrame indexed by id; got {type(labels).__name__}")
    table = labels.copy()
    table.index = table.index.map(str)
    if table.index.has_duplicates:
        raise ConfigError(f"labels has repeated ids, e.g. {table.index[table.index.duplicated()][:5].tolist()}")
    absent = [i for i in ids if i not in table.index]
    if absent:
        raise ConfigError(f"labels has no row for {len(absent)} training id(s), e.g. {absent[:5]}")
    weights = _resolve_label_weights(table, label_weights)
    columns = list(weights)
    codes, classes = _label_codes(table.loc[ids, columns], columns)
    few = {c: k for c, k in classes.items() if k < 2}
    if few:
        raise ConfigError(f"label(s) {few} have fewer than 2 classes among the training products: nothing to "
                          "contrast")

    try:
        import torch
    except ImportError as exc:
        raise MissingDependency(
            f"training a learned head needs torch ({exc}); install it with pip install 'prodrec[image]'"
        ) from None
    from tqdm.auto import tqdm

    # Input scaling, fixed from the training products: unit rows, centred, one RMS scale per arm.
    state: dict[str, np.ndarray] = {}
    feats = []
    for a in arms:
        x = _unit_rows(blocks[a])
        mean = x.mean(axis=0).astype(np.float32)
        centred = x - mean
        scale = np.float32(max(float(np.sqrt((centred**2).sum(axis=1).mean())), 1e-6))
        state[f"mean.{a}"], state[f"scale.{a}"] = mean, np.asarray(scale, dtype=np.float32)
        feats.append(centred / scale)
    x_all = np.hstack(feats).astype(np.float32)

    label_w = np.asarray([weights[c] for c in columns], dtype=np.float32)
    threads_before = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _fit(torch, tqdm, x_all, codes, label_w, state, arms=arms, blocks=blocks, models=models, ids=ids,
                    columns=columns, weights=weights, classes=classes, epochs=epochs, seed=int(seed),
                    hidden=hidden, out_dim=out_dim, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    temperature=temperature, progress=progress)
    finally:
        torch.set_num_threads(threads_before)


def _fit(torch: Any, tqdm: Any, x_all: np.ndarray, codes: np.ndarray, label_w: np.ndarray,
         state: dict[str, np.ndarray], *, arms: tuple[str, ...], blocks: Mapping[str, np.ndarray],
         models: dict[str, str], ids: list[str], columns: list[str], weights: dict[str, float],
         classes: dict[str, int], epochs: int, seed: int, hidden: int, out_dim: int, batch_size: int, lr: float,
         weight_decay: float, temperature: float, progress: bool) -> LearnedHead:
    """The training loop of :func:`train_head` (arguments already checked and the inputs scaled)."""
    d_in = x_all.shape[1]
    start = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    lin1, lin2 = torch.nn.Linear(d_in, hidden), torch.nn.Linear(hidden, out_dim)
    with torch.no_grad():  # initialise from this call's generator: the same seed gives the same weights
        for lin in (lin1, lin2):
            bound = 1.0 / math.sqrt(lin.in_features)
            lin.weight.uniform_(-bound, bound, generator=gen)
            lin.bias.uniform_(-bound, bound, generator=gen)
    model = torch.nn.Sequential(lin1, torch.nn.ReLU(), lin2)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = len(ids)
    bs = min(batch_size, n)
    n_batches = max(1, n // bs)  # whole batches only: a tiny last batch has few positives and a noisy loss
    steps = epochs * n_batches
    if steps >= 8:  # warm-up of at least two steps (OneCycleLR divides by the warm-up's length)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                    pct_start=max(0.1, 2.5 / steps))
    else:  # too few steps for a schedule: a constant rate
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    xt = torch.from_numpy(x_all)
    ct = torch.from_numpy(codes)
    wt = torch.from_numpy(label_w)
    curve: list[float] = []
    bar = tqdm(range(epochs), desc="learned head", unit="epoch", disable=not progress)
    for _epoch in bar:
        order = rng.permutation(n)
        total, counted = 0.0, 0
        for b in range(n_batches):
            idx = torch.from_numpy(order[b * bs : (b + 1) * bs])
            loss = _supcon_loss(torch, model(xt[idx]), ct[idx], wt, temperature)
            if loss is None:
                continue
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach())
            counted += 1
        curve.append(total / counted if counted else float("nan"))
        bar.set_postfix(loss=f"{curve[-1]:.4f}")
    if all(math.isnan(v) for v in curve):
        raise ConfigError("no training batch had a positive pair (no two products share a label value)")
    seconds = time.perf_counter() - start

    state["w1"] = lin1.weight.detach().numpy().T.copy()
    state["b1"] = lin1.bias.detach().numpy().copy()
    state["w2"] = lin2.weight.detach().numpy().T.copy()
    state["b2"] = lin2.bias.detach().numpy().copy()
    config = {
        "labels": columns,
        "label_weights": weights,
        "label_classes": classes,
        "epochs": epochs,
        "seed": seed,
        "hidden": hidden,
        "out_dim": out_dim,
        "batch_size": bs,
        "batches_per_epoch": n_batches,
        "lr": lr,
        "lr_schedule": "one-cycle (10% warm-up, cosine decay)",
        "optimizer": "AdamW",
        "weight_decay": weight_decay,
        "temperature": temperature,
        "architecture": "per-arm scaling -> Linear(in, hidden) -> ReLU -> Linear(hidden, out_dim) -> unit rows",
        "input_scaling": "per arm: unit rows, minus the training mean, divided by the RMS norm of the centred "
                         "training rows",
        "loss": "supervised contrastive, positives weighted by sum of label weights of the labels shared",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return LearnedHead(arms=arms, input_dims={a: int(blocks[a].shape[1]) for a in arms}, input_models=models,
                       config=config, state=state, loss_curve=curve, train_ids=ids, seconds=seconds)


def _supcon_loss(torch: Any, z: Any, codes: Any, label_w: Any, temperature: float) -> Any:
    """Soft-target InfoNCE over one batch; ``None`` when no anchor of the batch has a positive.

    ``p_ij = sum_l w_l [c_il == c_jl >= 0]`` (i != j) is the target mass; each anchor's targets are
    normalised to sum 1 and compared (cross-entropy) with ``softmax_j(cos_ij / temperature)`` over j != i.
    """
    z = torch.nn.functional.normalize(z, dim=1)
    m = z.shape[0]
    eye = torch.eye(m, dtype=torch.bool)
    with torch.no_grad():  # the targets: no gradient flows through them
        pos = torch.zeros((m, m), dtype=z.dtype)
        for col in range(codes.shape[1]):
            c = codes[:, col]
            pos += float(label_w[col]) * ((c[:, None] == c[None, :]) & (c >= 0)[:, None]).to(z.dtype)
        pos.masked_fill_(eye, 0.0)
        mass = pos.sum(dim=1)
        keep = mass > 0
    if not bool(keep.any()):
        return None
    logits = (z @ z.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = torch.log_softmax(logits, dim=1).masked_fill(eye, 0.0)
    per_anchor = -(pos * log_prob).sum(dim=1)[keep] / mass[keep]
    return per_anchor.mean()
