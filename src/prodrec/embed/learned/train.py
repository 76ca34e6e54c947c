"""Training a :class:`~prodrec.embed.learned.head.LearnedHead`: argument checks, input scaling, the torch
loop and the supervised-contrastive loss. torch is imported lazily, by :func:`train_head` alone.
"""

from __future__ import annotations

import math
import numbers
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from ...core import params
from ...core.errors import ConfigError, MissingDependency, RankingError
from .head import LearnedHead, check_block, unit_rows

__all__ = ["DEFAULT_LABEL_WEIGHTS", "supcon_loss", "train_head"]

#: The default weak labels when a table has both columns: product type matters more than colour.
DEFAULT_LABEL_WEIGHTS: dict[str, float] = {"articleType": 0.7, "baseColour": 0.3}


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
    try:  # the fusion weights' rules: finite, >= 0, not all 0; normalised to sum 1
        weights = params.check_weights(label_weights)
    except RankingError as exc:  # a training argument, not a ranking one
        raise ConfigError(f"label_weights (label column -> weight): {exc}") from None
    return {c: w for c, w in weights.items() if w > 0}  # a label of weight 0 is not trained on


def _check_number(name: str, value: Any, *, positive: bool) -> float:
    """``value`` as a finite float, > 0 when ``positive``, else >= 0 (bools and strings are refused)."""
    what = "a positive number" if positive else "a number >= 0"
    number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else math.nan
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        raise ConfigError(f"{name} must be {what}; got {value!r}")
    return number


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
    views: float | None = None,
) -> LearnedHead:
    """Train a fusion head on frozen arm vectors, supervised by catalog labels (without labels: ``views``).

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
    views : float, optional
        Label-free training: ``labels`` and ``label_weights`` are ignored; each batch shows every product
        twice, each copy with this share of its input coordinates dropped at random, and a product's two
        copies are each other's only positives.

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
    lr = _check_number("lr", lr, positive=True)
    temperature = _check_number("temperature", temperature, positive=True)
    weight_decay = _check_number("weight_decay", weight_decay, positive=False)

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
    blocks = {a: check_block(a, inputs[a], len(ids), None, "train_head (rows must align with ids)")
              for a in arms}
    models = {a: "unknown" for a in arms}
    if input_models is not None:
        extra = [a for a in input_models if a not in arms]
        if extra:
            raise ConfigError(f"input_models names arm(s) {extra} that are not inputs ({list(arms)})")
        models.update({str(a): str(m) for a, m in input_models.items()})

    if views is not None:  # label-free: each product is its own class, seen as two corrupted copies
        if not 0 < _check_number("views", views, positive=True) < 1:
            raise ConfigError(f"views (the share of input dropped per copy) must be within (0, 1); got {views!r}")
        labels, label_weights = pd.DataFrame({"product": ids}, index=ids), {"product": 1.0}
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

    # Input scaling, fixed from the training products: unit rows, centred, one RMS scale per arm.
    state: dict[str, np.ndarray] = {}
    feats = []
    for a in arms:
        x = unit_rows(blocks[a])
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
        return _fit(torch, x_all, codes, label_w, state, arms=arms, blocks=blocks, models=models, ids=ids,
                    columns=columns, weights=weights, classes=classes, epochs=epochs, seed=int(seed),
                    hidden=hidden, out_dim=out_dim, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                    temperature=temperature, progress=progress, views=views)
    finally:
        torch.set_num_threads(threads_before)


def _fit(torch: Any, x_all: np.ndarray, codes: np.ndarray, label_w: np.ndarray,
         state: dict[str, np.ndarray], *, arms: tuple[str, ...], blocks: Mapping[str, np.ndarray],
         models: dict[str, str], ids: list[str], columns: list[str], weights: dict[str, float],
         classes: dict[str, int], epochs: int, seed: int, hidden: int, out_dim: int, batch_size: int, lr: float,
         weight_decay: float, temperature: float, progress: bool, views: float | None = None) -> LearnedHead:
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
            x, c = xt[idx], ct[idx]
            if views:  # two copies of each product, coordinates dropped at random: each other's positives
                x = torch.cat([x, x]) * (torch.rand((2 * len(idx), d_in), generator=gen) >= views) / (1 - views)
                c = torch.cat([c, c])
            loss = supcon_loss(torch, model(x), c, wt, temperature)
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
        **({"positives": f"two copies of each product, {views:.0%} of the input dropped at random (label-free)"}
           if views else {}),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }
    return LearnedHead(arms=arms, input_dims={a: int(blocks[a].shape[1]) for a in arms}, input_models=models,
                       config=config, state=state, loss_curve=curve, train_ids=ids, seconds=seconds)


def supcon_loss(torch: Any, z: Any, codes: Any, label_w: Any, temperature: float) -> Any:
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
