"""The learned fusion head (``prodrec.embed.learned``): quality against the fixed arms, and training time.

Split: the evaluated products are ``load_catalog(SHARED).sample(1000, seed=0)``, the kit's usual evaluation
sample; the head trains on every other photo product of the catalog (8,583 of the 9,583), so it is never
evaluated on a product whose labels it learned from (a derived row checks the two id sets, and the ids the
trained heads record, are disjoint). Inputs: the frozen image (EfficientNet-Lite0) and text
(all-MiniLM-L6-v2) vectors from the embedding store, plus the training-free colour histogram
(``prodrec.embed.encoders.colour``) when that module is present. Weak labels: articleType (0.7) and baseColour
(0.3).

Two protocols: ``full`` (the product sentences carry every text field) and ``withheld`` (articleType and
baseColour are removed from every sentence, so the text arm cannot read the evaluated labels off the
product's own description). Each is trained with 3 seeds; precision@5 of the learned vectors over the 1000
evaluated products (bootstrap CIs per seed) is reported per seed and as mean ± sd, next to each input arm
alone and the fixed equal-weight late fusion of the same arms on the same products.

Quick mode: 800 products of the sample (250 evaluated, 550 training), 10 epochs of batches of 128, one seed.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from ._common import SHARED, WORK, Result

LABELS = ("articleType", "baseColour")
TARGETS_WITHHELD = {"articleType": 0.83, "baseColour": 0.72}
TARGET_TRAIN_S = 120.0
N_EVAL = 1000
SEEDS = (0, 1, 2)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] learned: {msg}", file=sys.stderr, flush=True)


def _catalog(quick: bool) -> tuple[Any, Any, bool]:
    """(all products, evaluated products, real): the shared sample, or a synthetic demo catalog."""
    from prodrec import load_catalog
    from prodrec.data.demo import write_demo_catalog

    if (SHARED / "styles.csv").is_file():
        cat, real = load_catalog(SHARED), True
        if quick:
            cat = cat.sample(800, seed=0)
    else:
        _log(f"{SHARED} not found: using a synthetic demo catalog (numbers are then not comparable)")
        cat = load_catalog(write_demo_catalog(WORK / "demo-learned", n=800 if quick else 2400, seed=0,
                                              image_size=224, progress=False))
        real = False
    n_eval = 250 if quick else N_EVAL
    return cat, cat.sample(n_eval, seed=0), real


def _arm_vectors(cat: Any) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str], np.ndarray, str]:
    """Per protocol, arm -> vectors [n, dim] over ``ids`` (products every arm embedded), the arms' model
    ids, those ids, and a note on the colour arm."""
    from prodrec.embed.arms import TextArm
    from prodrec.embed.embedding import embed_arm

    withheld_fields = [f for f in cat.text_columns if f not in LABELS]
    embs = {"image": embed_arm(cat, "image", progress=False), "text": embed_arm(cat, "text", progress=False),
            "text-withheld": embed_arm(cat, TextArm(fields=withheld_fields), progress=False)}
    vectors = {k: e.vectors for k, e in embs.items()}
    models = {"image": embs["image"].meta.get("model_id", "?"), "text": embs["text"].meta.get("model_id", "?")}
    failed = set().union(*(e.failures for e in embs.values()))
    try:
        from prodrec.embed.encoders.colour import ColourEncoder
    except ImportError:
        colour_note = "colour arm absent (prodrec.embed.encoders.colour not importable): image + text only"
    else:
        enc = ColourEncoder()
        t0 = time.perf_counter()
        vectors["colour"], fails = enc.encode_with_failures(cat.image_paths, progress=False)
        models["colour"] = enc.model_id
        failed |= {str(cat.ids[i]) for i in fails}
        colour_note = f"colour arm included ({enc.dim}-d, {len(cat)} photos in {time.perf_counter() - t0:.1f} s)"
    ids = np.asarray([str(i) for i in cat.ids], dtype=object)
    keep = np.array([i not in failed for i in ids])
    if not keep.all():
        _log(f"{int((~keep).sum())} product(s) failed in some arm and are left out")
    extra = ["colour"] if "colour" in vectors else []
    protocols = {
        "full": {a: vectors[a][keep] for a in ["image", "text", *extra]},
        "withheld": {"image": vectors["image"][keep], "text": vectors["text-withheld"][keep],
                     **{a: vectors[a][keep] for a in extra}},
    }
    return protocols, models, ids[keep], colour_note


def _precision(arms: dict[str, np.ndarray], ids: np.ndarray, labels: pd.DataFrame, n_boot: int,
               modes: list[str] | None = None) -> pd.DataFrame:
    """precision@5 rows (mode, label, value, ci_low, ci_high) of a recommender over ``ids``."""
    from prodrec.evaluation.runs import evaluate
    from prodrec.rank.recommender import Recommender
    from prodrec.embed.vectors import Embeddings

    rec = Recommender({a: Embeddings(ids, v) for a, v in arms.items()})
    table = evaluate(rec, labels, k=5, modes=modes or [m for m in rec.modes if m != "rrf"], columns=list(LABELS),
                     n_boot=n_boot, seed=0, progress=False)
    return table[table["metric"] == "precision"]


def bench(quick: bool, out: list[Result], derived: list[dict[str, Any]]) -> None:
    from prodrec.embed.learned import LearnedHead, train_head

    cat, ev, real = _catalog(quick)
    _log(f"embedding {len(cat)} products (from the store where it has them)")
    protocols, models, ids, colour_note = _arm_vectors(cat)
    _log(colour_note)
    eval_set = {str(i) for i in ev.ids}
    is_eval = np.array([i in eval_set for i in ids])
    train_ids, eval_ids = list(ids[~is_eval]), ids[is_eval]
    labels = cat.labels.copy()
    labels.index = labels.index.map(str)
    labels = labels[list(LABELS)]
    seeds = SEEDS[:1] if quick else SEEDS
    epochs, batch_size = (10, 128) if quick else (30, 512)
    n_boot = 200 if quick else 1000
    arms_used = list(protocols["full"])
    base = {"train_products": len(train_ids), "eval_products": len(eval_ids), "arms": arms_used,
            "input_models": models, "epochs": epochs, "batch_size": batch_size, "label_weights": {"articleType": 0.7, "baseColour": 0.3},
            "real_data": real}
    heads: list[LearnedHead] = []
    summary: dict[tuple[str, str], list[float]] = {}
    for proto, arms in protocols.items():
        ev_arms = {a: v[is_eval] for a, v in arms.items()}
        fixed = _precision(ev_arms, eval_ids, labels, n_boot)
        for row in fixed.itertuples():
            if row.mode == "random":
                continue
            what = "equal-weight late fusion" if row.mode == "fused" else f"{row.mode} arm alone"
            out.append(Result("learned", f"{proto}: {what}, precision@5 {row.label}", "precision", [row.value],
                              dict(base, protocol=proto, ci95=[row.ci_low, row.ci_high]),
                              note=f"CI [{row.ci_low:.3f}, {row.ci_high:.3f}]"))
        per_seed: dict[str, list[float]] = {lab: [] for lab in LABELS}
        cis: dict[str, list[list[float]]] = {lab: [] for lab in LABELS}
        seconds = []
        for seed in seeds:
            _log(f"{proto}: training seed {seed} on {len(train_ids)} products")
            head = train_head({a: v[~is_eval] for a, v in arms.items()}, labels, ids=train_ids, epochs=epochs,
                              batch_size=batch_size, seed=seed, input_models=models, progress=False)
            heads.append(head)
            seconds.append(head.seconds)
            table = _precision({"learned": head.transform(ev_arms)}, eval_ids, labels, n_boot, modes=["learned"])
            for row in table[table["mode"] == "learned"].itertuples():
                per_seed[row.label].append(row.value)
                cis[row.label].append([row.ci_low, row.ci_high])
            _log(f"{proto} seed {seed}: " + ", ".join(f"{k} {v[-1]:.4f}" for k, v in per_seed.items())
                 + f", {head.seconds:.1f} s")
        params = dict(base, protocol=proto, seeds=list(seeds), loss_final=[h.loss_curve[-1] for h in heads[-len(seeds):]])
        for lab in LABELS:
            v = per_seed[lab]
            summary[(proto, lab)] = v
            out.append(Result("learned", f"{proto}: learned head, precision@5 {lab} (per seed)", "precision", v,
                              dict(params, ci95_per_seed=cis[lab]),
                              note="CIs " + " ".join(f"[{lo:.3f}, {hi:.3f}]" for lo, hi in cis[lab])))
        out.append(Result("learned", f"{proto}: learned head training time ({len(train_ids)} products, {epochs} "
                          "epochs)", "s", seconds, params, note="shared machine: noisy"))

    if not quick:  # the same training on one torch thread: on a busy 2-core machine 2 threads spin-wait
        arms = protocols["withheld"]
        one = train_head({a: v[~is_eval] for a, v in arms.items()}, labels, ids=train_ids, epochs=epochs, seed=0,
                         input_models=models, threads=1, progress=False)
        out.append(Result("learned", "withheld: learned head training time, 1 torch thread (seed 0)", "s",
                          [one.seconds], dict(base, protocol="withheld", threads=1), note="shared machine: noisy"))
        same_weights = all(np.array_equal(one.state[k], heads[len(seeds)].state[k]) for k in one.state)
        derived.append({"name": f"learned head training time, 1 torch thread ({len(train_ids)} products, {epochs} "
                                f"epochs; weights identical to the default-thread run: {same_weights})",
                        "value": f"{one.seconds:.1f} s", "goal": f"<= {TARGET_TRAIN_S:.0f} s",
                        "met": bool(one.seconds <= TARGET_TRAIN_S) if real else None})

    # disjointness: the split, and what every trained head records as its training ids
    leaked = set().union(*(set(h.train_ids) & eval_set for h in heads))
    overlap = len(set(train_ids) & eval_set)
    derived.append({"name": "learned head: evaluated and training products are disjoint",
                    "value": f"{len(eval_ids)} evaluated, {len(train_ids)} training, overlap {overlap}, "
                             f"eval ids in the heads' train_ids {len(leaked)}",
                    "goal": "overlap 0", "met": overlap == 0 and not leaked})

    folder = WORK / "learned-head"  # one head saved and loaded back: the stored arm ranks the same
    heads[-1].save(folder)
    back = LearnedHead.load(folder)
    ev_arms = {a: v[is_eval] for a, v in protocols["withheld"].items()}
    same = np.array_equal(back.transform(ev_arms), heads[-1].transform(ev_arms))
    derived.append({"name": "learned head: save + load gives identical vectors", "value": str(same),
                    "goal": "True", "met": same})

    def mean_sd(v: list[float]) -> str:
        return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}" if len(v) > 1 else f"{v[0]:.3f}"

    judged = real and not quick
    for (proto, lab), v in summary.items():
        goal = TARGETS_WITHHELD.get(lab) if proto == "withheld" else None
        derived.append({"name": f"learned head precision@5 {lab}, {proto} ({len(v)} seed(s), mean ± sd; "
                                f"{'+'.join(arms_used)})",
                        "value": mean_sd(v),
                        "goal": f">= {goal}" if goal else "(reported)",
                        "met": bool(statistics.mean(v) >= goal) if goal and judged else None})
    slowest = max(h.seconds for h in heads)
    derived.append({"name": f"learned head training time, slowest of {len(heads)} ({len(train_ids)} products, "
                            f"{epochs} epochs, torch default threads)",
                    "value": f"{slowest:.1f} s", "goal": f"<= {TARGET_TRAIN_S:.0f} s",
                    "met": bool(slowest <= TARGET_TRAIN_S) if judged else None})
    derived.append({"name": "learned head inputs", "value": colour_note, "goal": "(reported)", "met": None})
