"""Tables and findings shared by the notebooks and the CLI: the precision table, and the paper's claims
checked against the measured numbers (sentences built from the values, never written by hand)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from ..data.catalog import Catalog
from ..core.errors import CatalogError
from ..core.vocab import LEARNED
from ..data.schema import COLOUR_LABEL, STYLE_LABEL


#: Columns of a tidy evaluation table that hold values, not what a value is of.
VALUE_COLUMNS = ("mode", "value", "ci_low", "ci_high", "n_queries")
_SUPERSCRIPT = dict(zip("abcdefghijklmnopqrstuvwxyz", "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖ𐞥ʳˢᵗᵘᵛʷˣʸᶻ"))


def mode_order(modes: Sequence[str]) -> list[str]:
    """Modes in display order: random, the fixed arms (as given), fused and rrf, then the learned arm."""
    modes = list(dict.fromkeys(modes))
    late = ("fused", "rrf", LEARNED)
    return ([m for m in modes if m == "random"] + [m for m in modes if m not in ("random", *late)]
            + [m for m in late if m in modes])


def metric_table(results: pd.DataFrame, digits: int = 3, exclude: Sequence[str] = ()) -> pd.DataFrame:
    """Any metrics of tidy evaluation records as a table, one column per mode (in :func:`mode_order`), one
    row per metric and whatever else tells records apart: the label (unless no record has one), and the
    protocol, k or any other descriptive column (a training ``run``...) where they vary. Never assumes one
    row per mode: a metric per label, under two protocols or at two k gets a row for each; records that
    differ in nothing but their value are averaged. Metrics named in ``exclude`` are left out."""
    results = results[~results["metric"].isin(list(exclude))]
    if results.empty:
        return pd.DataFrame()
    keys = [c for c in results.columns if c not in VALUE_COLUMNS and (
        c == "metric" or (c == "label" and results[c].astype(str).ne("").any())
        or (c != "label" and results[c].nunique(dropna=False) > 1))]
    table = results.pivot_table(index=keys, columns="mode", values="value", aggfunc="mean", sort=False)
    table = table[[m for m in mode_order(results["mode"]) if m in table.columns]]
    table.columns.name = "mode"
    return table.round(digits)


def precision_table(results: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """precision@k as a label x mode table (values rounded), for display: labels in the order evaluated,
    modes in :func:`mode_order`; rows per protocol (or k, run...) too where results hold several."""
    table = metric_table(results[results["metric"] == "precision"], digits)
    return table.droplevel("metric") if not table.empty else table


def significance_table(results: pd.DataFrame, significance: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The metrics of ``significance`` (:func:`~prodrec.evaluation.significance.compare_modes`) as a
    :func:`metric_table` of strings, each mode's value marked with the letters of the modes it is
    significantly better than (``0.712ᵃᶜ``: above modes a and c); columns are named ``mode (letter)``.
    ``results`` and ``significance`` come from one evaluation run."""
    if significance.empty:
        return pd.DataFrame()
    fams = significance[["metric", "label"]].drop_duplicates()
    res = results.merge(fams, on=["metric", "label"])
    table = metric_table(res, digits)
    modes = mode_order(pd.concat([significance.mode_a, significance.mode_b]))
    letter = {m: "abcdefghijklmnopqrstuvwxyz"[i] for i, m in enumerate(modes[:26])}
    wins: dict[tuple[str, str, str], list[str]] = {}
    for r in significance[significance.significant].itertuples():
        better, worse = (r.mode_a, r.mode_b) if r.mean_a > r.mean_b else (r.mode_b, r.mode_a)
        wins.setdefault((r.metric, r.label, better), []).append(worse)
    names = list(table.index.names)
    out = table.astype(object)
    for idx in table.index:
        key = dict(zip(names, idx if isinstance(idx, tuple) else (idx,)))
        for mode in table.columns:
            v = table.loc[idx, mode]
            beaten = sorted(letter[w] for w in wins.get((key["metric"], key.get("label", ""), mode), ()) if w in letter)
            out.loc[idx, mode] = "" if pd.isna(v) else f"{v:.{digits}f}" + "".join(_SUPERSCRIPT[c] for c in beaten)
    return out.rename(columns={m: f"{m} ({letter[m]})" for m in table.columns if m in letter})


def significance_legend(significance: pd.DataFrame) -> str:
    """One line saying what the marks of :func:`significance_table` mean (test, correction, threshold)."""
    if significance.empty:
        return "no significance tests (fewer than two modes)"
    r = significance.iloc[0]
    test = {"student": "paired t-test", "fisher": "paired randomisation test"}.get(r.test, r.test)
    pairs = int(significance.groupby(["metric", "label"], sort=False).size().max())
    return (f"superscript letters: significantly higher than that mode ({test}; p {r.correction}-adjusted over "
            f"the {pairs} mode pairs of each metric, significant at ≤ {r.max_p:g})")


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


def pareto_front(table: pd.DataFrame, x: str, y: str) -> pd.DataFrame:
    """The rows of ``table`` no other row beats on both ``x`` and ``y`` (higher is better), sorted by ``x``."""
    t = table.sort_values([x, y], ascending=[False, False])
    best_y = -np.inf
    keep = []
    for idx, row in t.iterrows():
        if row[y] > best_y:
            keep.append(idx)
            best_y = row[y]
    return table.loc[keep].sort_values(x)


def protocol_table(results: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """precision@k of stacked :func:`~prodrec.evaluate.evaluate` results (a ``protocol`` column) as a
    (protocol, label) x mode table, modes in :func:`precision_table` order."""
    parts = {prot: precision_table(sub, digits) for prot, sub in results.groupby("protocol", sort=False)}
    return pd.concat(parts, names=["protocol"])


def seed_summary(results: pd.DataFrame, mode: str = LEARNED) -> pd.DataFrame:
    """Mean, standard deviation, min and max of ``mode``'s precision over runs that differ by a ``run``
    column (training seeds), per protocol and label."""
    p = results[(results.metric == "precision") & (results["mode"] == mode)]
    keys = [c for c in ("protocol", "label") if c in p.columns]
    return p.groupby(keys, sort=False)["value"].agg(["mean", "std", "min", "max", "count"]).round(3)


def describe_beyond(
    results: pd.DataFrame, sweep: pd.DataFrame | None = None, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL,
) -> str:
    """Findings of the beyond-the-paper comparison as Markdown sentences built from the measured numbers:
    the colour arm against the others on colour, the best fixed weightings (per protocol when ``sweep`` has
    a ``protocol`` column), and the learned arm (mean over training runs) against them."""
    p = results[results.metric == "precision"]
    k = int(p["k"].iloc[0]) if len(p) else 5

    def mean(mode: str, label: str, protocol: str | None = None) -> float:
        r = p[(p["mode"] == mode) & (p.label == label)]
        if protocol is not None and "protocol" in r.columns:
            r = r[r.protocol == protocol]
        return float(r["value"].mean()) if len(r) else float("nan")

    out = []
    protocols = list(dict.fromkeys(p["protocol"])) if "protocol" in p.columns else [None]
    first = protocols[0]
    if "colour" in set(p["mode"]) and colour in set(p.label):
        others = {m: mean(m, colour, first) for m in ("image", "text") if m in set(p["mode"])}
        c = mean("colour", colour, first)
        out.append(f"**Colour arm.** On its own, the training-free colour arm shares the query's {colour} in "
                   f"{c:.2f} of top-{k} slots (" + ", ".join(f"{m}: {v:.2f}" for m, v in others.items())
                   + f"; random: {mean('random', colour, first):.2f}).")
    for prot in protocols:
        tag = f" ({prot})" if prot else ""
        sw = sweep if sweep is None or prot is None or "protocol" not in sweep.columns else sweep[sweep.protocol == prot]
        if sw is not None and {style, colour} <= set(sw.label):
            wcols = [c for c in sw.columns if c.startswith("w_")]
            wide = sw.pivot_table(index=wcols, columns="label", values="precision").reset_index()
            bs, bc = wide.loc[wide[style].idxmax()], wide.loc[wide[colour].idxmax()]

            def w(r: pd.Series) -> str:
                return ", ".join(f"{c[2:]} {r[c]:.1f}" for c in wcols)

            out.append(f"**Fixed weights{tag}.** The best weighting for {style} ({w(bs)}) reaches {bs[style]:.2f} "
                       f"but {bs[colour]:.2f} on {colour}; the best for {colour} ({w(bc)}) reaches {bc[colour]:.2f} "
                       f"but {bc[style]:.2f} on {style}: no fixed weighting gets both.")
            if LEARNED in set(p["mode"]):
                ls, lc = mean(LEARNED, style, prot), mean(LEARNED, colour, prot)
                beaten = bool(((wide[style] >= ls) & (wide[colour] >= lc)).any())
                runs = p[(p["mode"] == LEARNED) & (p.label == style)]
                n_runs = len(runs if prot is None else runs[runs.protocol == prot])
                out.append(f"**Learned arm{tag}.** Mean over {n_runs} training run(s): {ls:.2f} on {style}, {lc:.2f} "
                           f"on {colour}; " + ("some fixed weighting matches or beats it on both."
                                                if beaten else "no fixed weighting reaches both values."))
        elif LEARNED in set(p["mode"]):
            out.append(f"**Learned arm{tag}.** {mean(LEARNED, style, prot):.2f} on {style}, "
                       f"{mean(LEARNED, colour, prot):.2f} on {colour}.")
    return "\n\n".join(out)


def style_colour_labels(catalog: Catalog) -> tuple[str, str]:
    """The two labels the trade-off is drawn on: article type and base colour when the catalog has them,
    else its first two label columns (the first twice when it has one)."""
    labels = list(catalog.label_columns)
    if not labels:
        raise CatalogError("the catalog has no label columns to evaluate (--label-columns)")
    x = STYLE_LABEL if STYLE_LABEL in labels else labels[0]
    y = COLOUR_LABEL if COLOUR_LABEL in labels else next((c for c in labels if c != x), x)
    return x, y


def mode_points(results: pd.DataFrame, x: str, y: str, protocol: str | None = None) -> pd.DataFrame:
    """One point per mode (mean over runs): ``name``, ``x`` (precision on label ``x``), ``y`` - the marks of
    :func:`~prodrec.gallery.plot_tradeoff`."""
    p = results[results.metric == "precision"]
    if protocol is not None and "protocol" in p.columns:
        p = p[p.protocol == protocol]
    m = p.pivot_table(index="mode", columns="label", values="value", aggfunc="mean")
    runs = p[p.label == x].groupby("mode").size()
    rows = [{"name": f"{mode} (mean of {runs[mode]})" if runs.get(mode, 1) > 1 else mode,
             "x": float(m.loc[mode, x]), "y": float(m.loc[mode, y])} for mode in m.index if mode != "random"]
    return pd.DataFrame(rows, columns=["name", "x", "y"])
