"""Tables and findings shared by the notebooks and the CLI: the precision table, and the paper's claims
checked against the measured numbers (sentences built from the values, never written by hand)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from .catalog import Catalog
from .schema import COLOUR_LABEL, LEARNED, STYLE_LABEL


def precision_table(results: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """precision@k as a label x mode table (values rounded), for display: labels in the order evaluated,
    modes as random, the fixed arms, fused and rrf, then the learned arm."""
    p = results[results.metric == "precision"]
    table = p.pivot(index="label", columns="mode", values="value").round(digits)
    modes = list(dict.fromkeys(p["mode"]))
    late = ("fused", "rrf", LEARNED)
    order = ["random"] + [m for m in modes if m not in ("random", *late)] + [m for m in late if m in modes]
    return table.reindex(index=list(dict.fromkeys(p["label"])), columns=[m for m in order if m in table.columns])


def _fmt(results: pd.DataFrame, mode: str, label: str) -> str:
    r = results[(results.metric == "precision") & (results["mode"] == mode) & (results.label == label)]
    if r.empty:
        return "n/a"
    r = r.iloc[0]
    ci = "" if np.isnan(r.ci_low) else f" (95% CI {r.ci_low:.2f}-{r.ci_high:.2f})"
    return f"{r.value:.2f}{ci}"


def describe_findings(
    results: pd.DataFrame, sweep: pd.DataFrame | None = None, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL,
    alpha: float = 0.5,
) -> str:
    """The paper's claims checked against the measured table, as Markdown sentences built from the numbers.

    Claims: image neighbours share style (the ``style`` label, article type) but not colour (``colour``);
    text neighbours share colour too; fusion beats either. Each sentence states the measured values and
    whether they support the claim; sentences whose labels the results lack are left out.
    """
    p = precision_table(results, digits=6)

    def v(label: str, mode: str) -> float:
        return float(p.loc[label, mode]) if label in p.index and mode in p.columns else float("nan")

    out = []
    k = int(results["k"].iloc[0])
    if {style, colour} <= set(p.index) and "image" in p.columns:
        s_img, c_img, rnd = v(style, "image"), v(colour, "image"), v(colour, "random")
        out.append(
            f"**Image → style.** Image neighbours share the query's article type in {_fmt(results, 'image', style)} "
            f"of top-{k} slots, its colour in {_fmt(results, 'image', colour)} (random: {rnd:.2f}). "
            + ("This supports the paper: style is shared far more often than colour."
               if s_img > c_img + 0.1 else "Here style and colour are shared about equally, which does not support the paper's picture.")
        )
    if "text" in p.columns and "image" in p.columns and colour in p.index:
        tc, ic = v(colour, "text"), v(colour, "image")
        out.append(
            f"**Text → colour.** Text neighbours share the colour in {_fmt(results, 'text', colour)} against "
            f"{ic:.2f} for image neighbours: "
            + (f"text is better at colour by {tc - ic:+.2f}, as the paper found." if tc > ic
               else f"text is not better at colour here ({tc - ic:+.2f}), contrary to the paper.")
        )
    if {"fused", "image", "text"} <= set(p.columns) and style in p.index:
        wins = [lab for lab in p.index if v(lab, "fused") >= max(v(lab, "image"), v(lab, "text"))]
        out.append(
            f"**Fusion → both.** Fused ranking (alpha={alpha:g}) is at least as good as the better arm on "
            f"{len(wins)} of {len(p.index)} labels ({', '.join(wins) or 'none'}); article type: "
            f"fused {_fmt(results, 'fused', style)} vs image {v(style, 'image'):.2f}, "
            f"text {v(style, 'text'):.2f}."
        )
    if sweep is not None and not sweep.empty:
        parts = []
        for label, sub in sweep.groupby("label", sort=False):
            best = sub.loc[sub["precision"].idxmax()]
            parts.append(f"{label} peaks at alpha={best.alpha:.1f} ({best.precision:.2f}; "
                         f"text only {sub.iloc[0].precision:.2f}, image only {sub.iloc[-1].precision:.2f})")
        out.append("**Fusion weight.** " + "; ".join(parts) + ".")
    return "\n\n".join(out)


def eda_columns(catalog: Catalog, max_values: int = 60) -> tuple[list[str], list[str]]:
    """(label columns, other descriptive columns) to chart in an EDA: the catalog's labels first, then
    its other text columns with at most ``max_values`` distinct values (names and free text left out)."""
    labels = [c for c in catalog.label_columns if c in catalog.df.columns]
    others = [c for c in catalog.text_columns
              if c not in labels and c != catalog.schema.name_column and catalog.df[c].nunique() <= max_values]
    return labels, others


def value_counts(catalog: Catalog, columns: Sequence[str], top: int = 20) -> pd.DataFrame:
    """Tidy ``column, value, count`` table of the ``top`` values of each column (missing as ``<missing>``)."""
    rows = []
    for c in columns:
        counts = catalog.df[c].astype("object").where(catalog.df[c].notna(), "<missing>").value_counts().head(top)
        rows += [{"column": c, "value": str(v), "count": int(n)} for v, n in counts.items()]
    return pd.DataFrame(rows, columns=["column", "value", "count"])


def describe_arm(results: pd.DataFrame, arm: str, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL) -> str:
    """One paragraph on one arm, built from the measured table: for the paper's labels, whether the arm
    finds the same style more than the same colour; for any catalog, each label's share against random."""
    p = precision_table(results, digits=6)
    if arm not in p.columns:
        return f"No {arm} results in this table."

    def pct(label: str, mode: str) -> str:
        return f"{p.loc[label, mode]:.0%}" if mode in p.columns and label in p.index else "n/a"

    if {style, colour} <= set(p.index):
        s, c = float(p.loc[style, arm]), float(p.loc[colour, arm])
        verdict = ("finds the same style far more reliably than the same colour" if s > c + 0.1 else
                   "shares colour about as often as style" if abs(s - c) <= 0.1 else
                   "shares colour more often than style")
        return (f"{arm.capitalize()} neighbours share the **{style}** in {pct(style, arm)} of slots (random "
                f"{pct(style, 'random')}) and the **{colour}** in {pct(colour, arm)} (random {pct(colour, 'random')}): "
                f"the {arm} arm {verdict}.")
    parts = [f"**{label}** {pct(label, arm)} (random {pct(label, 'random')})" for label in p.index]
    return f"{arm.capitalize()} neighbours share the query's " + ", ".join(parts) + "."
