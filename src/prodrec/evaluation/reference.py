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

import importlib.resources

import pandas as pd

__all__ = ["HEADLINE_MODELS", "KAGL_REFERENCE", "KAGL_SOURCE", "beside_reference", "kagl_reference"]

KAGL_SOURCE = ("marqo-ai/marqo-FashionCLIP LEADERBOARD.md (2024-08-09; commit 60a875d), KAGL section; "
               "https://github.com/marqo-ai/marqo-FashionCLIP/blob/60a875dfcec9538f745e31bc9eddcc1d2cae229f/"
               "LEADERBOARD.md")

#: The KAGL section's tables as published, verbatim, each headed by the kit's task and label for it.
PUBLISHED_FILE = "kagl_leaderboard.md"


def _parse(text: str) -> list[dict[str, object]]:
    """The published tables as tidy rows (bold marks dropped; ``Recall@k`` written ``R@k`` as the kit does)."""
    rows: list[dict[str, object]] = []
    task = label = ""
    header: list[str] = []
    for line in filter(None, (ln.strip() for ln in text.splitlines())):
        if line.startswith("<!--") or line.endswith("-->"):
            continue
        cells = [c.strip().strip("*") for c in line.strip("|").split("|")]
        if not line.startswith("|"):
            task, label = line.split()[:2]
        elif cells[0] == "Model":
            header = [c.replace("Recall@", "R@") for c in cells[1:]]
        else:
            rows += [{"source": "published", "model": cells[0], "task": task, "label": label, "metric": m,
                      "value": float(v)} for m, v in zip(header, cells[1:])]
    return rows


#: The published rows, tidy: ``source, model, task, label, metric, value``.
KAGL_REFERENCE: tuple[dict[str, object], ...] = tuple(
    _parse((importlib.resources.files(__package__) / PUBLISHED_FILE).read_text(encoding="utf-8")))


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
