"""What every mode, model and score is called in tables, galleries and findings, from what was run.

A reader meets ``fused`` in two notebooks that fuse differently (raw cosines at alpha = 0.5 over two arms;
z-scored cosines at equal weights over three) and a ``learned`` arm trained on the very labels it is scored
on. Names here are built from the recommender and the models' provenance, so each variant has its own
name and the learned arm says what supervised it:

* :func:`mode_titles`: mode -> title, e.g. ``fused (raw α=0.5, image+text)``, ``fused (z-scored, equal
  weights, image+text+colour)``, ``learned (supervised on articleType, baseColour)``;
* :func:`score_label`: what a gallery's score is (cosine, weighted cosine, z-score sum, RRF score);
* :func:`model_lines`: one line per arm naming its model and weights, without machine paths;
* :func:`model_name`: a model id in words (the colour model is a histogram of foreground colours).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import PurePath
from typing import Any

from ..core.vocab import LEARNED
from ..embed import registry
from ..rank.recommender import Recommender

#: The paper's models, and the words for the kit's stand-ins (prefix of a model id -> name).
PAPER_MODELS: dict[str, str] = {"image": "ResNet-50", "text": "bert-base-nli-mean-tokens"}
MODEL_NAMES: dict[str, str] = {
    "efficientnet-lite0": "EfficientNet-Lite0",
    "resnet50": "ResNet-50",
    "colour-hist": "foreground colour histogram",
}
#: Said of a fused or RRF score in a caption.
SCORE_LABELS: dict[str, str] = {"raw": "weighted cosine", "zscore": "z-score sum", "rrf": "RRF score",
                                "arm": "cosine"}
_ABS_PATH = re.compile(r"(?<![\w.])/(?:[^\s()\[\],:;'\"]+/)*[^\s()\[\],:;'\"]+")


def model_name(meta: Mapping[str, Any] | None) -> str:
    """An arm's model in words: ``EfficientNet-Lite0``, ``all-MiniLM-L6-v2``, ``foreground colour histogram``,
    ``supervised on articleType, baseColour`` (a learned head: its training labels, or ``label-free`` and how
    its positives were made, from its training provenance)."""
    if not meta:
        return "none"
    config = (meta.get("training") or {}).get("config") or {}
    if config:
        return supervision(config)
    model_id = str(meta.get("model_id", ""))
    for prefix, name in MODEL_NAMES.items():
        if model_id.startswith(prefix):
            return name
    return model_id.rstrip("/").rsplit("/", 1)[-1] or "unknown model"


def supervision(config: Mapping[str, Any]) -> str:
    """What a learned head was trained on, from its config: ``supervised on a, b`` or ``label-free (...)``."""
    if config.get("positives"):
        return f"label-free: {config['positives']}"
    labels = list(config.get("labels") or [])
    return f"supervised on {', '.join(labels)}" if labels else "trained head"


def fusion_title(recommender: Recommender, weights: Mapping[str, float] | None = None, mode: str = "fused",
                 tuned: str = "") -> str:
    """The name of one fusion variant: calibration, weights and arms (``fused (raw α=0.5, image+text)``,
    ``fused (z-scored, equal weights, image+text+colour)``, ``RRF (reciprocal-rank fusion, ...)``);
    ``tuned`` is said after the weights (``tuned on validation``)."""
    w = recommender.fusion_weights(weights=weights) if weights is not None else recommender.weights
    used = {a: float(v) for a, v in w.items() if v > 0}
    arms = "+".join(used)
    if mode != "rrf" and set(w) - {LEARNED} == {"image", "text"}:  # the paper's two arms: alpha, the image weight
        spread = f"α={w['image']:.2g}"
    elif len(set(round(v, 6) for v in used.values())) == 1:
        spread = "equal weights"
    else:
        spread = " + ".join(f"{v:.2g} {a}" for a, v in used.items())
    spread += f", {tuned}" if tuned else ""
    if mode == "rrf":
        return f"RRF (reciprocal-rank fusion, {spread}, {arms})"
    cal = "raw" if recommender.calibration == "raw" else "z-scored"
    return f"fused ({cal} {spread}, {arms})" if cal == "raw" else f"fused ({cal}, {spread}, {arms})"


def mode_titles(recommender: Recommender, models: Mapping[str, Mapping[str, Any] | None],
                variants: Mapping[str, Mapping[str, float]] | None = None) -> dict[str, str]:
    """Mode -> title for every mode of ``recommender`` (and each named fused ``variants`` weighting, said to be
    tuned on validation queries), from the models' provenance (``Experiment.models()``)."""
    out = {"random": "random"}
    for arm in recommender.arms:
        out[arm] = f"{arm} ({model_name(models.get(arm))})"
    if len(recommender.arms) > 1:
        out["fused"] = fusion_title(recommender)
        out["rrf"] = fusion_title(recommender, mode="rrf")
    for name, w in (variants or {}).items():
        out[name] = fusion_title(recommender, w, tuned="tuned on validation")
    return out


def title_of(mode: str, titles: Mapping[str, str] | None = None) -> str:
    """``titles[mode]``, else the registry's title of the mode."""
    return (titles or {}).get(mode) or registry.title(mode)


def score_label(recommender: Recommender, mode: str) -> str:
    """What the score of ``mode`` is: ``cosine`` (an arm), ``weighted cosine`` (raw fusion), ``z-score sum``
    (z-scored fusion) or ``RRF score``."""
    if mode == "rrf":
        return SCORE_LABELS["rrf"]
    if mode == "fused":
        return SCORE_LABELS["raw" if recommender.calibration == "raw" else "zscore"]
    return SCORE_LABELS["arm"]


def no_paths(text: str) -> str:
    """``text`` without machine paths: a parenthesised absolute path is dropped, any other absolute path
    becomes its last component (``store:/root/.cache/.../learned/85f2...`` -> ``store:85f2...``)."""
    text = re.sub(r"\s*\(\s*/[^()]*\)", "", str(text))
    return _ABS_PATH.sub(lambda m: PurePath(m.group()).name, text)


def model_lines(models: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """One line per arm: its model in words, model id and dimension, where the weights came from, and
    whether the store had its vectors - names only, no machine paths."""
    lines = []
    for arm, m in models.items():
        if not m:
            continue
        source = no_paths(str(m.get("weight_source", "")))
        lines.append(f"{arm}: {model_name(m)} ({m.get('model_id')}, {m.get('dim')}-d); weights {source}; "
                     f"store {m.get('cache', 'n/a')}")
    return lines


def learned_labels(models: Mapping[str, Mapping[str, Any] | None]) -> list[str]:
    """The label columns the learned arm was trained on (empty when there is no learned arm)."""
    m = models.get(LEARNED) or {}
    return list(((m.get("training") or {}).get("config") or {}).get("labels") or [])
