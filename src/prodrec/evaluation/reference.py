"""Published numbers to set the kit's own beside: Marqo's fashion retrieval leaderboard on the Kaggle Fashion
Product Images set ("KAGL").

Source: marqo-ai/marqo-FashionCLIP, ``LEADERBOARD.md`` (updated 2024-08-09), section KAGL, produced by that
repository's ``eval.py`` with ``configs/KAGL.json``: text -> image with product names as queries (up to 2,000
sampled names) against image embeddings; category/colour/season/usage -> product with each distinct value
as a query against ``normalise(0.9 image + 0.1 text)`` embeddings; cut-offs 1 and 10. ``AvgP`` is the mean
of P@1 and P@10, ``AvgRecall`` of R@1 and R@10. Their ``category1/2/3`` are the catalog's
``masterCategory``, ``subCategory`` and ``articleType`` (7, 45 and ~142 values: P@1 = 5/7, 27/45...).

The models are CLIP-family checkpoints (none is available offline here):

* ``FashionCLIP2.0``: patrickjohncyh/fashion-clip (2.0);
* ``Marqo-FashionCLIP``: Marqo/marqo-fashionCLIP; ``Marqo-FashionSigLIP``: Marqo/marqo-fashionSigLIP;
* ``OpenFashionCLIP``; ``ViT-B-16-laion2b_s34b_b88k`` (open_clip); ``ViT-B-16-SigLIP-webli`` (open_clip).
"""

from __future__ import annotations

import pandas as pd

__all__ = ["HEADLINE_MODELS", "KAGL_REFERENCE", "KAGL_SOURCE", "beside_reference", "kagl_reference"]

KAGL_SOURCE = ("marqo-ai/marqo-FashionCLIP LEADERBOARD.md (2024-08-09), KAGL section; "
               "https://github.com/marqo-ai/marqo-FashionCLIP/blob/main/LEADERBOARD.md")

_MODELS = ("FashionCLIP2.0", "Marqo-FashionCLIP", "Marqo-FashionSigLIP", "OpenFashionCLIP",
           "ViT-B-16-laion2b_s34b_b88k", "ViT-B-16-SigLIP-webli")
_LABEL_METRICS = ("AvgP", "P@1", "P@10", "MRR")
_NAME_METRICS = ("AvgRecall", "R@1", "R@10", "MRR")

#: (task, label) -> one row of values per model (in the order of the models above), in the metric order of
#: the task (label: AvgP, P@1, P@10, MRR; name: AvgRecall, R@1, R@10, MRR), as published.
_TABLES: dict[tuple[str, str], tuple[tuple[float, ...], ...]] = {
    ("name", "productDisplayName"): (
        (0.263, 0.122, 0.404, 0.217), (0.303, 0.159, 0.446, 0.265), (0.334, 0.179, 0.489, 0.293),
        (0.208, 0.091, 0.325, 0.170), (0.295, 0.155, 0.435, 0.259), (0.319, 0.169, 0.468, 0.272)),
    ("label", "masterCategory"): (
        (0.700, 0.714, 0.686, 0.714), (0.643, 0.714, 0.571, 0.714), (0.629, 0.571, 0.686, 0.643),
        (0.493, 0.429, 0.557, 0.500), (0.550, 0.571, 0.529, 0.619), (0.707, 0.714, 0.700, 0.714)),
    ("label", "subCategory"): (
        (0.586, 0.600, 0.571, 0.627), (0.640, 0.667, 0.613, 0.691), (0.699, 0.711, 0.687, 0.756),
        (0.479, 0.467, 0.491, 0.566), (0.598, 0.622, 0.573, 0.664), (0.667, 0.689, 0.644, 0.731)),
    ("label", "articleType"): (
        (0.605, 0.634, 0.577, 0.694), (0.669, 0.725, 0.613, 0.772), (0.667, 0.704, 0.629, 0.763),
        (0.515, 0.542, 0.489, 0.607), (0.628, 0.683, 0.573, 0.748), (0.640, 0.669, 0.611, 0.736)),
    ("label", "baseColour"): (
        (0.428, 0.413, 0.443, 0.518), (0.498, 0.500, 0.496, 0.614), (0.545, 0.587, 0.502, 0.664),
        (0.472, 0.478, 0.465, 0.587), (0.487, 0.500, 0.474, 0.605), (0.459, 0.500, 0.417, 0.564)),
    ("label", "season"): (
        (0.362, 0.500, 0.225, 0.550), (0.338, 0.250, 0.425, 0.542), (0.425, 0.500, 0.350, 0.500),
        (0.400, 0.500, 0.300, 0.583), (0.300, 0.250, 0.350, 0.490), (0.325, 0.250, 0.400, 0.375)),
    ("label", "usage"): (
        (0.244, 0.250, 0.237, 0.275), (0.256, 0.250, 0.263, 0.354), (0.388, 0.375, 0.400, 0.438),
        (0.188, 0.125, 0.250, 0.225), (0.263, 0.250, 0.275, 0.292), (0.444, 0.500, 0.388, 0.500)),
}

#: The published rows, tidy: ``source, model, task, label, metric, value``.
KAGL_REFERENCE: tuple[dict[str, object], ...] = tuple(
    {"source": "published", "model": model, "task": task, "label": label, "metric": metric, "value": value}
    for (task, label), rows in _TABLES.items()
    for model, values in zip(_MODELS, rows)
    for metric, value in zip(_NAME_METRICS if task == "name" else _LABEL_METRICS, values)
)


def kagl_reference(task: str | None = None, models: tuple[str, ...] | None = None) -> pd.DataFrame:
    """The published KAGL rows (:data:`KAGL_REFERENCE`) as a tidy table, for one task (``label`` or ``name``)
    or both, and for the named models (default all six)."""
    table = pd.DataFrame(list(KAGL_REFERENCE))
    if task is not None:
        table = table[table.task == task]
    if models is not None:
        table = table[table.model.isin(models)]
    return table.reset_index(drop=True)


#: The three models the kit's rows are usually set beside (the issue's and Marqo's headline models).
HEADLINE_MODELS: tuple[str, ...] = ("FashionCLIP2.0", "Marqo-FashionCLIP", "Marqo-FashionSigLIP")


def beside_reference(results: pd.DataFrame, task: str, models: tuple[str, ...] = HEADLINE_MODELS,
                     digits: int = 3) -> pd.DataFrame:
    """The kit's rows of one leaderboard task (``label`` or ``name`` records of
    :meth:`~prodrec.evaluation.tasks.TaskRun.table`) beside the published ones: one row per (label, metric),
    one column per published model (``published: <model>``) and per kit mode (``kit <protocol>: <mode>
    (<query>)``). The kit's ``AvgP`` / ``AvgRecall`` are the mean of its P@1 and P@10 / R@1 and R@10, as
    published. A metric a side does not report is left empty; without kit rows, the published ones alone."""
    avg, parts = ("AvgRecall", ("R@1", "R@10")) if task == "name" else ("AvgP", ("P@1", "P@10"))
    kit = results[results["task"] == task] if "task" in results.columns else pd.DataFrame(
        columns=["protocol", "mode", "query", "label", "metric", "value"])
    kit = kit.assign(column=[f"kit {p}: {m} ({q})" for p, m, q in zip(kit.protocol, kit["mode"], kit["query"])])
    wide = kit.pivot_table(index=["label", "metric"], columns="column", values="value", sort=False)
    for label in dict.fromkeys(kit.label):
        if all((label, m) in wide.index for m in parts):
            wide.loc[(label, avg), :] = wide.loc[[(label, m) for m in parts]].mean()
    ref = kagl_reference(task, models)
    pub = ref.assign(column="published: " + ref.model).pivot_table(
        index=["label", "metric"], columns="column", values="value", sort=False)
    out = pub.join(wide, how="outer")
    labels = list(dict.fromkeys([*kit.label, *ref.label]))
    metrics = [avg, *parts, *(m for m in ("R@1", "R@10", "P@1", "P@10") if m not in parts), "MRR"]
    order = [(lab, m) for lab in labels for m in metrics if (lab, m) in out.index]
    cols = [f"published: {m}" for m in models if f"published: {m}" in out.columns] + list(wide.columns)
    return out.loc[order, cols].round(digits)
