"""Tables and findings shared by the notebooks and the CLI: the precision table (intervals printed), and
the paper's claims checked against the measured numbers (sentences built from the values and their paired
tests, never written by hand; see :mod:`.claims`).

Words never go past the numbers: a sentence says one mode *beats* another only when their paired test is
significant, a title states the direction the numbers show, and the paper - which published example
galleries, not numbers - is only ever agreed with qualitatively (:func:`paper_note`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import CatalogError
from ..core.io import read_json_object
from ..core.vocab import LEARNED
from ..data.catalog import Catalog
from ..data.schema import COLOUR_LABEL, STYLE_LABEL
from .claims import Claim, Findings, labels_claim, modes_claim
from .names import PAPER_MODELS, model_name
from .runs import QueryScores, Tuned, bootstrap_ci, sweep_weights, tune_weights


#: Columns of a tidy evaluation table that hold values, not what a value is of.
VALUE_COLUMNS = ("mode", "value", "ci_low", "ci_high", "n_queries")
_SUPERSCRIPT = dict(zip("abcdefghijklmnopqrstuvwxyz", "ᵃᵇᶜᵈᵉᶠᵍʰⁱʲᵏˡᵐⁿᵒᵖ𐞥ʳˢᵗᵘᵛʷˣʸᶻ"))


def mode_order(modes: Sequence[str]) -> list[str]:
    """Modes in display order: random, the fixed arms (as given), fused (then its named variants,
    ``fused_*``) and rrf, then the learned arm."""
    modes = list(dict.fromkeys(modes))
    late = ["fused", *[m for m in modes if m.startswith("fused_")], "rrf", LEARNED]
    return ([m for m in modes if m == "random"] + [m for m in modes if m not in ("random", *late)]
            + [m for m in late if m in modes])


def format_ci(value: float, low: float = float("nan"), high: float = float("nan"), digits: int = 3) -> str:
    """``0.806 [0.79, 0.82]``: a value with its interval (one digit fewer), or the value alone when it has
    none (an exact random baseline, coverage); empty for NaN."""
    if value is None or pd.isna(value):
        return ""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value:.{digits}f}"
    d = max(digits - 1, 2)
    return f"{value:.{digits}f} [{low:.{d}f}, {high:.{d}f}]"


def metric_table(results: pd.DataFrame, digits: int = 3, exclude: Sequence[str] = (), ci: bool = False) -> pd.DataFrame:
    """Any metrics of tidy evaluation records as a table, one column per mode (in :func:`mode_order`), one
    row per metric and whatever else tells records apart: the label (unless no record has one), and the
    protocol, k or any other descriptive column (a training ``run``...) where they vary. Never assumes one
    row per mode: a metric per label, under two protocols or at two k gets a row for each; records that
    differ in nothing but their value are averaged. Metrics named in ``exclude`` are left out.

    ``ci=True`` prints each cell with its 95% interval (``0.806 [0.79, 0.82]``, see :func:`format_ci`; the
    interval's ends are averaged like the values), as strings for display."""
    results = results[~results["metric"].isin(list(exclude))]
    if results.empty:
        return pd.DataFrame()
    keys = [c for c in results.columns if c not in VALUE_COLUMNS and (
        c == "metric" or (c == "label" and results[c].astype(str).ne("").any())
        or (c != "label" and results[c].nunique(dropna=False) > 1))]
    values = ["value", "ci_low", "ci_high"] if ci else "value"
    wide = results.pivot_table(index=keys, columns="mode", values=values, aggfunc="mean", sort=False, dropna=False)
    table = wide["value"] if ci else wide
    order = [m for m in mode_order(results["mode"]) if m in table.columns]
    table = table[order].dropna(how="all")
    table.columns.name = "mode"
    if not ci:
        return table.round(digits)
    out = table.astype(object)
    for mode in order:
        out[mode] = [format_ci(v, lo, hi, digits) for v, lo, hi in
                     zip(table[mode], wide["ci_low"][mode].reindex(table.index), wide["ci_high"][mode].reindex(table.index))]
    return out


def precision_table(results: pd.DataFrame, digits: int = 3, ci: bool = False) -> pd.DataFrame:
    """precision@k as a label x mode table (values rounded; with ``ci``, strings with 95% intervals), for
    display: labels in the order evaluated, modes in :func:`mode_order`; rows per protocol (or k, run,
    candidates...) too where results hold several."""
    table = metric_table(results[results["metric"] == "precision"], digits, ci=ci)
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
    adjusted = (f"p {r.correction}-adjusted over the {pairs} mode pairs of each metric" if r.correction != "none"
                else "p unadjusted")
    return (f"superscript letters: significantly higher than that mode ({test}; {adjusted}, significant at "
            f"≤ {r.max_p:g})")


def _rows(results: pd.DataFrame, mode: str, label: str, protocol: str | None = None) -> pd.DataFrame:
    r = results[(results.metric == "precision") & (results["mode"] == mode) & (results.label == label)]
    if protocol is not None and "protocol" in r.columns:
        r = r[r.protocol == protocol]
    return r


def _value(results: pd.DataFrame, mode: str, label: str, protocol: str | None = None) -> float:
    """Mean precision of ``mode`` on ``label`` (over training runs, where there are several)."""
    r = _rows(results, mode, label, protocol)
    return float(r["value"].mean()) if len(r) else float("nan")


def _fmt(results: pd.DataFrame, mode: str, label: str, protocol: str | None = None) -> str:
    """A mode's precision on a label with its interval (``0.50 [0.46, 0.55]``), or, over several training
    runs, their mean and range."""
    r = _rows(results, mode, label, protocol)
    if r.empty:
        return "n/a"
    if len(r) > 1:
        return f"{r['value'].mean():.3f} (runs {r['value'].min():.3f}-{r['value'].max():.3f})"
    return format_ci(float(r["value"].iloc[0]), float(r["ci_low"].iloc[0]), float(r["ci_high"].iloc[0]))


def _title(titles: Mapping[str, str], mode: str) -> str:
    return titles.get(mode, mode)


def _gap_heading(what: str, claim: Claim | None, style: str, colour: str) -> str:
    """``Image arm: articleType over baseColour`` - the direction a label claim shows, if significant."""
    if claim is None:
        return f"{what}: {style} and {colour} (not tested)"
    if claim.significant:
        return f"{what}: {claim.label_a} over {claim.label_b}"
    return f"{what}: no significant gap between {style} and {colour}"


def _verdict_on(claims: Sequence[Claim | None], mode: str, label: str) -> str:
    """How ``mode`` stands on ``label`` against the other modes of ``claims``: better than all of them,
    worse than some, or neither, by their significant paired tests."""
    mine = [c for c in claims if c is not None and c.label_a == label and mode in (c.mode_a, c.mode_b)]
    if not mine:
        return f"not tested on {label}"
    worse = [c.mode_a for c in mine if c.significant and c.mode_b == mode]
    if worse:
        return f"worse than {' and '.join(worse)} on {label}"
    if all(c.significant and c.mode_a == mode for c in mine):
        return f"better than {' and '.join(c.mode_b for c in mine)} on {label}"
    return f"no significant gain over the better arm on {label}"


def paper_findings(
    results: pd.DataFrame, sweep: pd.DataFrame | None = None, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL,
    alpha: float = 0.5, *, scores: QueryScores | None = None, significance: pd.DataFrame | None = None,
    tuned: Tuned | None = None, titles: Mapping[str, str] | None = None,
) -> Findings:
    """The paper's three claims (image neighbours share style, not colour; text neighbours share colour;
    fusion gets both) and the fusion weight, checked against the measured table, as :class:`Findings`.

    ``scores`` (the per-query values of the same run) and ``significance`` (its
    :func:`~prodrec.evaluation.significance.compare_modes` table) turn each comparison into a paired claim:
    "beats" only when the test is significant. ``sweep`` with a ``split`` column (or ``tuned``, from
    :func:`~prodrec.evaluation.runs.tune_weights`) reports the weight chosen on validation queries at its test
    value; a sweep without a split is said to be read off the queries it reports on. ``titles`` name the
    modes (:func:`~prodrec.evaluation.names.mode_titles`). Sentences whose labels or modes the results lack
    are left out.
    """
    f = Findings(titles=dict(titles or {}))
    p = results[results.metric == "precision"]
    if p.empty:
        return f
    modes, labels = set(p["mode"]), list(dict.fromkeys(p.label))
    k = int(p["k"].iloc[0])
    two = {style, colour} <= set(labels)
    with_tests = scores is not None

    def rnd(label: str) -> str:
        return f"{_value(results, 'random', label):.3f}"

    if "image" in modes and two:
        c = labels_claim(scores, "image", style, colour) if with_tests else None
        said = (f.claim(c) if c is not None else
                f"image neighbours share the query's {style} in {_fmt(results, 'image', style)} of top-{k} slots and its "
                f"{colour} in {_fmt(results, 'image', colour)}")
        agree = c is not None and c.significant and c.label_a == style
        f.paragraphs.append(
            f"**{_gap_heading('Image arm', c, style, colour)}.** {said} (random: {style} {rnd(style)}, {colour} "
            f"{rnd(colour)}). " + ("In line, qualitatively, with the paper's galleries, whose image neighbours "
                                   "share a style in several colours." if agree else
                                   "The paper's galleries suggest style over colour; these numbers do not show it."))
    if {"text", "image"} <= modes and colour in labels:
        c = modes_claim(scores, "text", "image", colour, significance) if with_tests else None
        if c is None:
            head, said = "Text arm on colour (not tested)", (
                f"text {_fmt(results, 'text', colour)} vs image {_fmt(results, 'image', colour)} on {colour}")
        else:
            said = f.claim(c)
            head = ("Text arm: more colour than the image arm" if c.significant and c.mode_a == "text" else
                    "Text arm: less colour than the image arm" if c.significant else
                    "Text arm: no significant colour gain over the image arm")
        own = labels_claim(scores, "text", style, colour) if with_tests and two else None
        f.paragraphs.append(
            f"**{head}.** {said}. " + (f"Within the text arm: {f.claim(own)}. " if own is not None else "")
            + ("The paper's galleries suggest text neighbours share colour; on this comparison the numbers agree, "
               "qualitatively." if c is not None and c.significant and c.mode_a == "text" else
               "The paper's galleries suggest text neighbours share colour; these numbers do not show the text arm "
               "ahead of the image arm on it."))
    if {"fused", "image", "text"} <= modes and style in labels:
        fused = _title(f.titles, "fused")
        pairs = [(lab, arm) for lab in (style, colour) if lab in labels for arm in ("image", "text")]
        claims = [modes_claim(scores, "fused", arm, lab, significance) for lab, arm in pairs] if with_tests else []
        if claims:
            verdicts = "; ".join(_verdict_on(claims, "fused", lab) for lab in (style, colour) if lab in labels)
            f.paragraphs.append(f"**Fusion, {fused}: {verdicts}.** "
                                + " ".join(f.claim(c) + "." for c in claims if c))
        else:
            f.paragraphs.append(f"**Fusion (not tested).** {fused}: {style} {_fmt(results, 'fused', style)} against "
                                f"image {_fmt(results, 'image', style)} and text {_fmt(results, 'text', style)}.")
    _fusion_weight(f, results, sweep, tuned, scores, significance, alpha)
    others = [lab for lab in labels if lab not in (style, colour)]
    if with_tests and others:
        said = []
        for lab in others:
            ranked = sorted((m for m in ("image", "text", "fused") if m in modes),
                            key=lambda m: -_value(results, m, lab))
            if len(ranked) >= 2:
                c = modes_claim(scores, ranked[0], ranked[1], lab, significance)
                if c is not None:
                    said.append(f.claim(c) + ".")
        if said:
            f.paragraphs.append("**Other labels (the best mode against the runner-up).** " + " ".join(said))
    return f


def _fusion_weight(f: Findings, results: pd.DataFrame, sweep: pd.DataFrame | None, tuned: Tuned | None,
                   scores: QueryScores | None, significance: pd.DataFrame | None, alpha: float) -> None:
    """The fusion-weight paragraph: chosen on validation and read on test when the sweep is split."""
    if tuned is None and sweep is not None and "split" in sweep.columns and not sweep.empty:
        tuned = tune_weights(sweep)
    if tuned is not None:
        per = ", ".join(f"{lab} {t:.3f} (validation {v:.3f})" for lab, (v, t) in tuned.per_label.items())
        text = f"**Fusion weight, tuned on validation queries.** {tuned.describe()}; per label on the test queries: {per}."
        variant = next((m for m in mode_order(results["mode"]) if m.startswith("fused_")), None)
        if variant is not None and scores is not None:
            cs = [modes_claim(scores, variant, "fused", lab, significance) for lab in tuned.objective]
            text += " Against the untuned weighting (α = {:g}) on the test queries: ".format(alpha) + " ".join(
                f.claim(c) + "." for c in cs if c is not None)
        f.paragraphs.append(text)
    elif sweep is not None and not sweep.empty:
        parts = []
        for label, sub in sweep.groupby("label", sort=False):
            best = sub.loc[sub["precision"].idxmax()]
            parts.append(f"{label} peaks at alpha={best.alpha:.1f} ({best.precision:.2f}; "
                         f"text only {sub.iloc[0].precision:.2f}, image only {sub.iloc[-1].precision:.2f})")
        f.paragraphs.append("**Fusion weight (read off the same queries it is reported on: not a held-out "
                            "figure).** " + "; ".join(parts) + ".")


def describe_findings(
    results: pd.DataFrame, sweep: pd.DataFrame | None = None, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL,
    alpha: float = 0.5, *, scores: QueryScores | None = None, significance: pd.DataFrame | None = None,
    tuned: Tuned | None = None, titles: Mapping[str, str] | None = None,
) -> str:
    """The paper's claims checked against the measured table, as Markdown sentences built from the numbers
    (:func:`paper_findings`, whose arguments these are)."""
    return paper_findings(results, sweep, style, colour, alpha, scores=scores, significance=significance,
                          tuned=tuned, titles=titles).markdown


#: What the paper's model of an arm differs in from the kit's offline stand-in.
MODEL_DIFFERENCES: dict[str, str] = {
    "image": "ResNet-50 is a larger ImageNet network than EfficientNet-Lite0, with 2048-d features instead of 1280",
    "text": "bert-base-nli-mean-tokens embeds a sentence in 768 dimensions, all-MiniLM-L6-v2 in 384, and the two "
            "were trained on different sentence pairs",
}


def paper_note(models: Mapping[str, Mapping[str, Any] | None]) -> str:
    """What a comparison with the paper can and cannot say, from the models this run used: the paper
    published example galleries, not numbers, so agreement is qualitative; which of its models were replaced
    by what, what its models might change, and that the Kaggle kernel runs them."""
    swaps, same = [], []
    for arm, paper in PAPER_MODELS.items():
        m = models.get(arm)
        if not m:
            continue
        used = model_name(m)
        (same if paper.lower() in (used.lower(), str(m.get("model_id", "")).rsplit("/", 1)[-1].lower())
         else swaps).append((arm, used, paper))
    text = ("**About the comparison with the paper.** The paper published example galleries, not numbers: "
            "every agreement or disagreement with it stated here is qualitative, and every number is this "
            "kit's own measurement.")
    if swaps:
        text += (" This run replaces the paper's models: " + "; ".join(
            f"{arm} arm {used} instead of {paper}" for arm, used, paper in swaps) + ". The paper's models could "
                 "move the levels (" + "; ".join(MODEL_DIFFERENCES[arm] for arm, _, _ in swaps) + ") and so the "
                 "gaps between arms; the direction of a gap is the part most likely to carry over, its size the "
                 "least.")
    if same:
        text += " " + "; ".join(f"The {arm} arm uses the paper's {paper}" for arm, _, paper in same) + "."
    text += (" The Kaggle kernel (`notebooks/kaggle_kernel.ipynb`) runs the paper's models where Kaggle can "
             "fetch them (Internet on, or their weights attached).")
    return text


def describe_withheld(settings: Mapping[str, Any]) -> str:
    """What the ``withheld`` protocol took out of the product sentences, from an experiment's settings: the
    label fields removed and how many label values were masked inside the other fields."""
    fields = list(settings.get("withheld_fields") or [])
    if not fields:
        return "Protocol `full`: every text field is in the product sentence, the evaluated labels too."
    masked = {c: int(n) for c, n in (settings.get("masked_label_values") or {}).items()}
    said = ", ".join(f"{c} {n:,}" for c, n in masked.items() if n) or "none"
    return (f"Protocol `withheld`: the fields {', '.join(fields)} are removed from every product sentence, and "
            f"their values are masked where they occur inside the remaining fields (the product name keeps "
            f"words such as its colour): {sum(masked.values()):,} value(s) masked in this sample ({said}). What "
            "is left is what an arm reads beyond the label fields; words the masks do not catch (synonyms, "
            "other spellings) stay.")


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


def describe_arm(results: pd.DataFrame, arm: str, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL, *,
                 scores: QueryScores | None = None, titles: Mapping[str, str] | None = None) -> str:
    """One paragraph on one arm, built from the measured table: for the paper's labels, whether the arm
    finds the same style more than the same colour (a paired test over queries when ``scores`` are given);
    for any catalog, each label's share against random."""
    p = precision_table(results, digits=6)
    if arm not in p.columns:
        return f"No {arm} results in this table."
    name = (titles or {}).get(arm) or arm
    name = name[:1].upper() + name[1:]

    def pct(label: str, mode: str) -> str:
        return f"{p.loc[label, mode]:.0%}" if mode in p.columns and label in p.index else "n/a"

    if {style, colour} <= set(p.index):
        s, c = float(p.loc[style, arm]), float(p.loc[colour, arm])
        claim = labels_claim(scores, arm, style, colour) if scores is not None else None
        if claim is None:
            verdict = ("finds the same style far more reliably than the same colour" if s > c + 0.1 else
                       "shares colour about as often as style" if abs(s - c) <= 0.1 else
                       "shares colour more often than style") + " (no paired test)"
        elif not claim.significant:
            verdict = "shows no significant difference between style and colour"
        elif claim.label_a == style:
            verdict = ("finds the same style far more reliably than the same colour" if claim.diff > 0.1 else
                       "finds the same style more often than the same colour")
        else:
            verdict = "finds the same colour more often than the same style"
        text = (f"{name} neighbours share the **{style}** in {pct(style, arm)} of slots (random "
                f"{pct(style, 'random')}) and the **{colour}** in {pct(colour, arm)} (random {pct(colour, 'random')}): "
                f"the {arm} arm {verdict}.")
        return text + (f" {claim.sentence(titles)}." if claim is not None else "")
    parts = [f"**{label}** {pct(label, arm)} (random {pct(label, 'random')})" for label in p.index]
    return f"{name} neighbours share the query's " + ", ".join(parts) + "."


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


def protocol_table(results: pd.DataFrame, digits: int = 3, ci: bool = False) -> pd.DataFrame:
    """precision@k of stacked :func:`~prodrec.evaluate.evaluate` results (a ``protocol`` column) as a
    (protocol, label) x mode table, modes in :func:`precision_table` order (with ``ci``, 95% intervals)."""
    parts = {prot: precision_table(sub, digits, ci=ci) for prot, sub in results.groupby("protocol", sort=False)}
    return pd.concat(parts, names=["protocol"])


def seed_summary(results: pd.DataFrame, mode: str = LEARNED) -> pd.DataFrame:
    """Mean, standard deviation, min and max of ``mode``'s precision over runs that differ by a ``run``
    column (training seeds), per protocol and label, and the mean of the runs' bootstrap 95% intervals
    (``ci_low``, ``ci_high``: the spread over queries, beside the spread over seeds)."""
    p = results[(results.metric == "precision") & (results["mode"] == mode)]
    keys = [c for c in ("protocol", "label") if c in p.columns]
    g = p.groupby(keys, sort=False)
    out = g["value"].agg(["mean", "std", "min", "max", "count"])
    out["ci_low"], out["ci_high"] = g["ci_low"].mean(), g["ci_high"].mean()
    return out.round(3)


def per_category_table(scores: QueryScores, labels: pd.DataFrame, label: str, modes: Sequence[str] | None = None,
                       top: int = 8, digits: int = 2, n_boot: int = 500, seed: int = 0,
                       metric: str = "precision") -> pd.DataFrame:
    """precision@k per value of ``label`` (its ``top`` most frequent values among the scored queries), one
    column per mode with its 95% interval over that value's queries, and ``queries`` (how many). The
    per-query values are ``scores``' (one evaluation run); ``labels`` is indexed by product id."""
    lab = labels.copy()
    lab.index = lab.index.map(str)
    values = lab[label].reindex(scores.ids)
    modes = [m for m in (modes or mode_order(scores.modes)) if (m, metric, label) in scores.per_query]
    if not modes:
        return pd.DataFrame()
    scored = ~np.isnan(scores.per_query[(modes[0], metric, label)])
    counts = values[scored].value_counts().head(top)
    rows = []
    for value, n in counts.items():
        rows.append({label: value, "queries": int(n), **{
            m: format_ci(float(np.nanmean(v)), *bootstrap_ci(v, n_boot=n_boot, seed=seed), digits=digits)
            for m in modes for v in [scores.per_query[(m, metric, label)][(values == value).to_numpy() & scored]]}})
    return pd.DataFrame(rows).set_index(label)


def worst_queries(scores: QueryScores, labels: pd.DataFrame, mode: str, label: str, n: int = 3,
                  metric: str = "precision") -> pd.DataFrame:
    """The ``n`` queries ``mode`` serves worst on ``label``: lowest value first; among equal values, queries
    of the most frequent ``label`` values first (a miss where many neighbours were available), then by id.
    Columns ``id, value, <label>, class_size``."""
    v = scores.per_query[(mode, metric, label)]
    lab = labels.copy()
    lab.index = lab.index.map(str)
    values = lab[label].reindex(scores.ids)
    size = values.map(values.value_counts()).fillna(0).to_numpy()
    t = pd.DataFrame({"id": scores.ids, "value": v, label: values.to_numpy(), "class_size": size.astype(int)})
    t = t[~np.isnan(v)]
    return t.sort_values(["value", "class_size", "id"], ascending=[True, False, True]).head(n).reset_index(drop=True)


def _tuned_pair(sweep: pd.DataFrame, style: str, colour: str) -> tuple[Tuned, Tuned] | None:
    if "split" not in sweep.columns or not {style, colour} <= set(sweep.label):
        return None
    return tune_weights(sweep, [style]), tune_weights(sweep, [colour])


def _weights_text(w: Mapping[str, float]) -> str:
    return ", ".join(f"{a} {v:.1f}" for a, v in w.items())


def beyond_findings(
    results: pd.DataFrame, sweep: pd.DataFrame | None = None, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL,
    *, scores: Mapping[str, QueryScores] | None = None, significance: pd.DataFrame | None = None,
    titles: Mapping[str, str] | None = None, learned_on: Sequence[str] = (),
) -> Findings:
    """Findings of the beyond-the-paper comparison, built from the measured numbers: the colour arm against
    the others on colour; per protocol, the best fixed weightings (chosen on validation queries and read on
    test queries when ``sweep`` has a ``split`` column); the learned arm (mean over training runs) against
    them, named by its supervision (``learned_on``: the labels it was trained on), and on the labels it was
    not trained on. ``scores`` (protocol -> per-query values of one run) and ``significance`` (its paired
    tests, with a ``protocol`` column) make each comparison a paired claim."""
    f = Findings(titles=dict(titles or {}))
    p = results[results.metric == "precision"]
    if p.empty:
        return f
    k = int(p["k"].iloc[0])
    protocols = list(dict.fromkeys(p["protocol"])) if "protocol" in p.columns else [None]
    first = protocols[0]
    sc = scores or {}
    all_modes = set(p["mode"])

    def claim(prot: str | None, a: str, b: str, label: str) -> Claim | None:
        s = sc.get(prot or "")
        return None if s is None else modes_claim(s, a, b, label, significance, protocol=prot or "")

    if "colour" in all_modes and colour in set(p.label):
        others = [m for m in ("image", "text") if m in all_modes]
        cs = [claim(first, "colour", m, colour) for m in others]
        if all(c is not None for c in cs) and cs:
            wins = [c.mode_b for c in cs if c is not None and c.significant and c.mode_a == "colour"]
            head = (f"Colour arm: more {colour} than {' and '.join(wins)}" if wins else
                    f"Colour arm: no significant {colour} gain over {' or '.join(others)}")
            f.paragraphs.append(f"**{head}** ({first}). " + " ".join(f.claim(c) + "." for c in cs if c is not None)
                                + f" (random: {_value(results, 'random', colour, first):.3f}.)")
        else:
            f.paragraphs.append(
                f"**Colour arm.** On its own, the training-free colour arm shares the query's {colour} in "
                f"{_fmt(results, 'colour', colour, first)} of top-{k} slots (" + ", ".join(
                    f"{m}: {_fmt(results, m, colour, first)}" for m in others)
                + f"; random: {_value(results, 'random', colour, first):.3f}).")
    for prot in protocols:
        tag = f" ({prot})" if prot else ""
        sw = sweep if sweep is None or prot is None or "protocol" not in sweep.columns else sweep[sweep.protocol == prot]
        test = None
        if sw is not None and {style, colour} <= set(sw.label):
            pair = _tuned_pair(sw, style, colour)
            test = sw[sw["split"] == "test"] if "split" in sw.columns else sw
            wcols = sweep_weights(test)
            wide = test.pivot_table(index=wcols, columns="label", values="precision", sort=False).reset_index()
            both = bool(((wide[style] >= wide[style].max()) & (wide[colour] >= wide[colour].max())).any())
            if pair is not None:
                ts, tc = pair
                f.paragraphs.append(
                    f"**Fixed weights{tag}, chosen on {ts.n_validation} validation queries, read on {ts.n_test} test "
                    f"queries.** The best weighting for {style} ({_weights_text(ts.weights)}) scores "
                    f"{ts.per_label[style][1]:.3f} on it; the best for {colour} ({_weights_text(tc.weights)}) scores "
                    f"{tc.per_label[colour][1]:.3f} on {colour}. On the test queries, "
                    + ("one weighting of the grid is best on both." if both else
                       f"no weighting of the grid is best on both: the grid's best {style} is {wide[style].max():.3f} "
                       f"and its best {colour} {wide[colour].max():.3f}, never together."))
            else:
                f.paragraphs.append(
                    f"**Fixed weights{tag} (read off the queries they are reported on: not held out).** The grid's "
                    f"best {style} is {wide[style].max():.3f} and its best {colour} {wide[colour].max():.3f}; "
                    + ("one weighting reaches both." if both else "no weighting reaches both."))
            if LEARNED in all_modes:
                ls, lc = _value(results, LEARNED, style, prot), _value(results, LEARNED, colour, prot)
                beaten = bool(((wide[style] >= ls) & (wide[colour] >= lc)).any())
                f.paragraphs.append(_learned_paragraph(f, results, prot, tag, style, colour, learned_on, beaten,
                                                       claim, all_modes))
        elif LEARNED in all_modes:
            f.paragraphs.append(_learned_paragraph(f, results, prot, tag, style, colour, learned_on, None, claim,
                                                   all_modes))
    return f


def _learned_paragraph(f: Findings, results: pd.DataFrame, prot: str | None, tag: str, style: str, colour: str,
                       learned_on: Sequence[str], beaten: bool | None, claim: Any, modes: set[str]) -> str:
    """The learned arm of one protocol: its supervision, its values, the fixed weightings, paired claims
    against the fixed fusion on the plotted labels and against the best other mode on every other label."""
    name = _title(f.titles, LEARNED)
    runs = len(_rows(results, LEARNED, style, prot))
    ls, lc = _value(results, LEARNED, style, prot), _value(results, LEARNED, colour, prot)
    sup = (f" It is trained on {', '.join(learned_on)}" + (
        f", the two labels of this trade-off: lying beyond the fixed weightings is what supervision on them "
        "buys, not a free gain." if {style, colour} <= set(learned_on) else ".")) if learned_on else ""
    where = ("" if beaten is None else " Some fixed weighting matches or beats it on both (test queries)."
             if beaten else " No fixed weighting of the grid reaches both values (test queries).")
    text = (f"**Learned arm{tag}: {name}.** Mean over {runs} training run(s): {ls:.3f} on {style}, {lc:.3f} on "
            f"{colour}.{sup}{where}")
    said = []
    for lab in (style, colour):
        c = claim(prot, LEARNED, "fused", lab) if "fused" in modes else None
        if c is not None:
            said.append(f.claim(c) + ".")
    labels = list(dict.fromkeys(results[results.metric == "precision"].label))
    weaker = []
    for lab in (x for x in labels if x not in (style, colour)):
        rivals = sorted((m for m in modes if m not in ("random", LEARNED)), key=lambda m: -_value(results, m, lab, prot))
        c = claim(prot, LEARNED, rivals[0], lab) if rivals else None
        if c is not None:
            said.append(f.claim(c) + ".")
            if c.significant and c.mode_b == LEARNED:
                weaker.append(lab)
    if said:
        text += " Paired tests (training seed of the first run): " + " ".join(said)
    if weaker:
        text += f" Weaker labels: {', '.join(weaker)}."
    return text


def compare_findings(scores: QueryScores, significance: pd.DataFrame | None, pairs: Sequence[tuple[str, str]],
                     labels: Sequence[str], titles: Mapping[str, str] | None = None, heading: str = "") -> Findings:
    """One paragraph per label: a paired claim for each (mode, mode) of ``pairs`` (:func:`~.claims.modes_claim`:
    "beats" only when the paired test of ``significance`` is significant), headed ``heading + label``."""
    f = Findings(titles=dict(titles or {}))
    for label in labels:
        said = [f.claim(c) + "." for c in (modes_claim(scores, a, b, label, significance) for a, b in pairs)
                if c is not None]
        if said:
            f.paragraphs.append(f"**{heading}{label}.** " + " ".join(said))
    return f


def describe_beyond(
    results: pd.DataFrame, sweep: pd.DataFrame | None = None, style: str = STYLE_LABEL, colour: str = COLOUR_LABEL,
    *, scores: Mapping[str, QueryScores] | None = None, significance: pd.DataFrame | None = None,
    titles: Mapping[str, str] | None = None, learned_on: Sequence[str] = (),
) -> str:
    """Findings of the beyond-the-paper comparison as Markdown (:func:`beyond_findings`, whose arguments
    these are)."""
    return beyond_findings(results, sweep, style, colour, scores=scores, significance=significance,
                           titles=titles, learned_on=learned_on).markdown


def style_colour_labels(catalog: Catalog) -> tuple[str, str]:
    """The two labels the trade-off is drawn on: article type and base colour when the catalog has them,
    else its first two label columns (the first twice when it has one)."""
    labels = list(catalog.label_columns)
    if not labels:
        raise CatalogError("the catalog has no label columns to evaluate (--label-columns)")
    x = STYLE_LABEL if STYLE_LABEL in labels else labels[0]
    y = COLOUR_LABEL if COLOUR_LABEL in labels else next((c for c in labels if c != x), x)
    return x, y


def mode_points(results: pd.DataFrame, x: str, y: str, protocol: str | None = None,
                titles: Mapping[str, str] | None = None) -> pd.DataFrame:
    """One point per mode (mean over runs): ``name`` (its title in ``titles``, else the mode), ``x``
    (precision on label ``x``), ``y`` and ``mode`` - the marks of :func:`~prodrec.viz.gallery.plot_tradeoff`."""
    p = results[results.metric == "precision"]
    if protocol is not None and "protocol" in p.columns:
        p = p[p.protocol == protocol]
    m = p.pivot_table(index="mode", columns="label", values="value", aggfunc="mean")
    runs = p[p.label == x].groupby("mode").size()
    names = titles or {}
    rows = [{"name": names.get(mode, mode) + (f" (mean of {runs[mode]})" if runs.get(mode, 1) > 1 else ""),
             "x": float(m.loc[mode, x]), "y": float(m.loc[mode, y]), "mode": mode}
            for mode in m.index if mode != "random"]
    return pd.DataFrame(rows, columns=["name", "x", "y", "mode"])


def shared_name_share(names: pd.Series) -> float:
    """The share of products whose exact name (``names``; missing ones left out) another product also has."""
    known = names.dropna().astype(str)
    return float(known.duplicated(keep=False).mean()) if len(known) else float("nan")


def stored_result(path: str | Path, make: str) -> tuple[dict[str, Any] | None, str]:
    """A result a benchmark stored (``{"provenance": ..., "data": ...}``, e.g. ``benchmarks/samplesize.json``)
    and one line saying where it came from: the command that made it (``make``), when, on which data and
    kit version. (None, a line saying how to make it) when the file is not there (an installed kit has no
    ``benchmarks/``)."""
    path = Path(path)
    if not path.is_file():
        return None, f"no stored result at {path.name}: make it from a checkout with `{make}`"
    stored = read_json_object(path)
    prov = stored.get("provenance") or {}
    data = prov.get("dataset") or {}
    versions = prov.get("versions") or {}
    when = str(prov.get("created_at", "an unknown date"))[:10]
    return stored.get("data"), (
        f"stored result {path.name}, made by `{prov.get('command') or make}` on {when} (prodrec "
        f"{versions.get('prodrec', '?')}; data {Path(str(data.get('data_dir', '?'))).name}, "
        f"{data.get('products', '?')} products; machine: {prov.get('machine', '?')}); not recomputed here")
