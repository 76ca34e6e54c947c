"""What the learned arm's supervision buys: a supervised head beside a transfer head and a label-free head.

Notebook 06's learned arm is trained (supervised contrastive loss) on articleType and baseColour, the two
labels of the trade-off plot it is drawn on. Here three heads of the same architecture
(``prodrec.embed.learned.train_head``) are trained on the same inputs (the frozen image, text and colour
vectors) and the same products, differing only in what makes two products positives:

* ``supervised``: articleType (0.7) and baseColour (0.3), the learned arm's default;
* ``transfer``: subCategory, gender and usage (equal weights), never the two scored labels;
* ``label_free``: no label at all. Each training product appears as two corrupted views (feature dropout
  and Gaussian noise on every arm's vector); the two views of one product are the only positives, every
  other product in the batch a negative (one batch holds every view, so each anchor meets its positive).

Split: the evaluated products are ``load_catalog(SHARED).sample(1000, seed=0)``, split (seed 0) into 500
validation and 500 test queries; the heads train on 2,000 products drawn (seed 0) from the photo products
outside that sample, never on an evaluated one. Each head's number of epochs is chosen on the validation
queries (the mean precision@5 on articleType and baseColour: the label-free head's weights see no label,
its epoch count does, and this says so); then three training seeds at that count are scored on the test
queries on articleType, baseColour, gender and subCategory, beside the input arms alone and their
z-scored equal-weight fusion. Paired t-tests (Holm-adjusted) compare the heads with each other and with
the fusion (training seed 0).

Results: ``results.json`` rows, and ``benchmarks/heads.json`` (provenance, the command, the test rows of
seed 0 with intervals, the per-seed summary, the tuning rows, the paired tests and generated findings),
which notebook 06 shows. Quick mode: 800 products of the sample (250 evaluated, 300 training), tiny epochs.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from ._common import HERE, WORK, Result
from .learned import _arm_vectors, _catalog

COMMAND = "python -m benchmarks --only heads --merge"
FILE = "heads.json"
SUPERVISED = {"articleType": 0.7, "baseColour": 0.3}
TRANSFER = {"subCategory": 1.0, "gender": 1.0, "usage": 1.0}
HEADS = ("supervised", "transfer", "label_free")
EPOCHS = {"supervised": (10, 30, 60), "transfer": (10, 30, 60), "label_free": (40, 80, 160)}
SEEDS = (0, 1, 2)
TRAIN_N = 2000
OBJECTIVE = ("articleType", "baseColour")
SCORED = ("articleType", "baseColour", "gender", "subCategory")
#: Corruption of a label-free view: the share of coordinates dropped, and the noise (times the mean |x|).
VIEW_DROP, VIEW_NOISE = 0.2, 0.5
VIEWS_NOTE = (f"two corrupted views of the same product ({VIEW_DROP:.0%} of coordinates dropped, Gaussian noise "
              f"of {VIEW_NOISE:g} x the mean absolute value)")


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] heads: {msg}", file=sys.stderr, flush=True)


def views(arms: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """Two corrupted copies of every row of every arm, stacked: rows ``0..n-1`` are the first views, ``n..2n-1``
    the second (dropout of :data:`VIEW_DROP` of the coordinates, rescaled, plus Gaussian noise)."""
    rng = np.random.default_rng(seed)
    out = {}
    for arm, x in arms.items():
        scale = VIEW_NOISE * float(np.abs(x).mean())
        copies = [x * (rng.random(x.shape) >= VIEW_DROP) / (1 - VIEW_DROP) + scale * rng.standard_normal(x.shape)
                  for _ in range(2)]
        out[arm] = np.vstack(copies).astype(np.float32)
    return out


def train(kind: str, arms: dict[str, np.ndarray], ids: list[str], labels: pd.DataFrame, epochs: int, seed: int,
          models: dict[str, str]) -> Any:
    """One head of ``kind`` (see the module) on ``arms`` rows aligned with ``ids``."""
    from prodrec.embed.learned import train_head

    if kind != "label_free":
        weights = SUPERVISED if kind == "supervised" else TRANSFER
        return train_head(arms, labels, ids=ids, label_weights=weights, epochs=epochs, seed=seed,
                          input_models=models, progress=False)
    doubled = [f"{i}~a" for i in ids] + [f"{i}~b" for i in ids]
    product = pd.DataFrame({"product": ids + ids}, index=doubled)
    return train_head(views(arms, seed), product, ids=doubled, label_weights={"product": 1.0}, epochs=epochs,
                      seed=seed, batch_size=len(doubled), input_models=models, progress=False)


def _evaluate(vectors: dict[str, np.ndarray], ids: np.ndarray, labels: pd.DataFrame, queries: tuple[str, ...],
              columns: tuple[str, ...], modes: list[str]) -> tuple[pd.DataFrame, Any]:
    """precision@5 of ``modes`` over a recommender of ``vectors`` (the fusion: z-scored image, text and colour at
    equal weights), scored on ``queries``."""
    from prodrec.embed.vectors import Embeddings
    from prodrec.evaluation.runs import evaluate
    from prodrec.rank.recommender import Recommender

    rec = Recommender({a: Embeddings(ids, v) for a, v in vectors.items()}, calibration="zscore",
                      weights={a: 1.0 for a in ("image", "text", "colour") if a in vectors})
    return evaluate(rec, labels, k=5, modes=modes, columns=list(columns), queries=queries, n_boot=1000, seed=0,
                    progress=False, return_scores=True)


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec.core.provenance import provenance, save_json
    from prodrec.evaluation.names import supervision
    from prodrec.evaluation.report import compare_findings
    from prodrec.evaluation.runs import split_queries
    from prodrec.evaluation.significance import compare_modes

    from .samplesize import _machine_line

    cat, ev, real = _catalog(quick)
    _log(f"embedding {len(cat)} products (from the store where it has them)")
    protocols, models, ids, colour_note = _arm_vectors(cat)
    arms = protocols["full"]
    eval_set = {str(i) for i in ev.ids}
    is_eval = np.array([i in eval_set for i in ids])
    eval_ids = ids[is_eval]
    pool = ids[~is_eval]
    n_train = min(300 if quick else TRAIN_N, len(pool))
    train_pos = np.sort(np.random.default_rng(0).choice(np.flatnonzero(~is_eval), n_train, replace=False))
    train_ids = [str(i) for i in ids[train_pos]]
    train_arms = {a: v[train_pos] for a, v in arms.items()}
    eval_arms = {a: v[is_eval] for a, v in arms.items()}
    labels = cat.labels.copy()
    labels.index = labels.index.map(str)
    split = split_queries(eval_ids, seed=0)
    epochs_grid = {k: ((2, 4) if quick else v) for k, v in EPOCHS.items()}
    seeds = SEEDS[:1] if quick else SEEDS
    fixed = [a for a in ("image", "text", "colour") if a in arms]

    tuning, chosen, first = [], {}, {}
    for kind in HEADS:
        best = None
        for epochs in epochs_grid[kind]:
            head = train(kind, train_arms, train_ids, labels, epochs, 0, models)
            table, _ = _evaluate({kind: head.transform(eval_arms)}, eval_ids, labels, split.validation, OBJECTIVE,
                                 [kind])
            p = table[(table["metric"] == "precision") & (table["mode"] == kind)]
            objective = float(p["value"].mean())
            tuning.append({"head": kind, "epochs": epochs, "validation objective": round(objective, 4),
                           **{f"validation {r.label}": round(float(r.value), 4) for r in p.itertuples()},
                           "seconds": round(head.seconds, 1)})
            _log(f"{kind}, {epochs} epochs: validation objective {objective:.4f} ({head.seconds:.1f} s)")
            if best is None or objective > best[0]:
                best = (objective, epochs, head)
        assert best is not None
        chosen[kind], first[kind] = best[1], best[2]
        for row in tuning:
            row["chosen"] = row.get("chosen", False) or (row["head"], row["epochs"]) == (kind, best[1])

    rows, scores0, per_seed = [], None, []
    for seed in seeds:
        heads = {k: (first[k] if seed == 0 else train(k, train_arms, train_ids, labels, chosen[k], seed, models))
                 for k in HEADS}
        vectors = {**eval_arms, **{k: h.transform(eval_arms) for k, h in heads.items()}}
        table, sc = _evaluate(vectors, eval_ids, labels, split.test, SCORED, [*fixed, "fused", *HEADS])
        p = table[table["metric"] == "precision"].assign(train_seed=seed)
        per_seed.append(p)
        if seed == 0:
            scores0, rows = sc, p
        _log(f"seed {seed}: " + ", ".join(f"{r.mode} {r.label} {r.value:.3f}" for r in p.itertuples()
                                          if r.mode in HEADS and r.label in OBJECTIVE))
    assert scores0 is not None
    all_seeds = pd.concat(per_seed, ignore_index=True)
    summary = (all_seeds[all_seeds["mode"].isin(HEADS)].groupby(["mode", "label"], sort=False)["value"]
               .agg(["mean", "std", "min", "max", "count"]).round(4).reset_index())
    sig = compare_modes(scores0.per_query)
    titles = {"supervised": f"supervised head ({supervision({'labels': list(SUPERVISED)})})",
              "transfer": f"transfer head ({supervision({'labels': list(TRANSFER)})})",
              "label_free": f"label-free head ({VIEWS_NOTE})",
              "fused": "fused (z-scored, equal weights, " + "+".join(fixed) + ")"}
    pairs = [("supervised", "transfer"), ("supervised", "label_free"), ("transfer", "label_free"),
             ("supervised", "fused"), ("transfer", "fused"), ("label_free", "fused")]
    findings = compare_findings(scores0, sig, pairs, SCORED, titles, heading="Heads on ")
    prov = provenance(cat, command=COMMAND, machine=_machine_line(), real_data=real, inputs=list(arms),
                      input_models=models, colour=colour_note, train_products=len(train_ids),
                      eval_products=len(eval_ids), split=split.to_dict(), epochs_grid=epochs_grid, chosen=chosen,
                      seeds=list(seeds), supervised=SUPERVISED, transfer=TRANSFER, label_free=VIEWS_NOTE)
    path = save_json((WORK / "quick" if quick else HERE) / FILE, {
        "rows": rows.to_dict(orient="records"), "seed_summary": summary.to_dict(orient="records"),
        "tuning": tuning, "significance": sig.to_dict(orient="records"), "findings": findings.markdown,
        "claims": [c.to_dict() for c in findings.claims], "titles": titles}, prov)
    _log(f"wrote {path}")
    for r in summary.itertuples():
        vals = all_seeds[(all_seeds["mode"] == r.mode) & (all_seeds["label"] == r.label)]["value"].tolist()
        out.append(Result("heads", f"{r.mode} head ({chosen[str(r.mode)]} epochs), precision@5 {r.label}, test "
                          "queries (per seed)", "precision", vals, {"train_products": len(train_ids),
                                                                     "test_queries": len(split.test)}))
    leaked = len(set(train_ids) & eval_set)
    derived.append({"name": "heads: training and evaluated products are disjoint", "value": f"overlap {leaked}",
                    "goal": "overlap 0", "met": leaked == 0})
    for kind in HEADS:
        derived.append({"name": f"heads: {kind} epochs chosen on {len(split.validation)} validation queries",
                        "value": str(chosen[kind]), "goal": "(reported)", "met": None})
