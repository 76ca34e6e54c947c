"""What the learned arm's supervision buys: a supervised head beside a transfer head and a label-free head.

Notebook 06's learned arm is trained (supervised contrastive loss) on articleType and baseColour, the two
labels of the trade-off plot it is drawn on. Here three heads of the same architecture
(``prodrec.embed.learned.train_head``) are trained on the same inputs (the frozen image, text and colour
vectors) and the same products, differing only in what makes two products positives:

* ``supervised``: articleType (0.7) and baseColour (0.3), the learned arm's default;
* ``transfer``: subCategory, gender and usage (equal weights), never the two scored labels;
* ``label_free``: no label at all (``train_head(..., views=0.3)``). Each batch shows every product twice,
  each copy with 30% of its input coordinates dropped at random; a product's two copies are each other's
  only positives, every other product in the batch a negative.

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
EPOCHS = {"supervised": (10, 30, 60), "transfer": (10, 30, 60), "label_free": (10, 30, 60)}
SEEDS = (0, 1, 2)
TRAIN_N = 2000
OBJECTIVE = ("articleType", "baseColour")
SCORED = ("articleType", "baseColour", "gender", "subCategory")
#: The share of input coordinates a label-free copy drops.
VIEW_DROP = 0.3
VIEWS_NOTE = f"two copies of each product, {VIEW_DROP:.0%} of the input dropped at random"


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] heads: {msg}", file=sys.stderr, flush=True)


def train(kind: str, arms: dict[str, np.ndarray], ids: list[str], labels: pd.DataFrame, epochs: int, seed: int,
          models: dict[str, str]) -> Any:
    """One head of ``kind`` (see the module) on ``arms`` rows aligned with ``ids``."""
    from prodrec.embed.learned import train_head

    weights = {"supervised": SUPERVISED, "transfer": TRANSFER}.get(kind)
    return train_head(arms, labels, ids=ids, label_weights=weights, epochs=epochs, seed=seed, input_models=models,
                      progress=False, views=VIEW_DROP if kind == "label_free" else None)


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
    eval_set = {str(i) for i in ev.ids}
    pool = [str(i) for i in cat.ids if str(i) not in eval_set]
    n_train = min(300 if quick else TRAIN_N, len(pool))
    train_set = set(np.random.default_rng(0).choice(np.asarray(pool, dtype=object), n_train, replace=False))
    used = cat.subset([i for i in map(str, cat.ids) if i in eval_set or i in train_set])
    _log(f"embedding {len(used)} products: {len(eval_set)} evaluated, {n_train} training (from the store where it "
         "has them)")
    protocols, models, ids, colour_note = _arm_vectors(used)
    arms = protocols["full"]
    is_eval = np.array([i in eval_set for i in ids])
    is_train = np.array([i in train_set for i in ids])
    eval_ids = ids[is_eval]
    train_ids = [str(i) for i in ids[is_train]]
    train_arms = {a: v[is_train] for a, v in arms.items()}
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
