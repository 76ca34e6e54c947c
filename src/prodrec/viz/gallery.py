"""Figures of the paper and of its measurements: galleries of top-k grids, distributions, metric charts.

Every ``plot_*`` function returns a matplotlib Figure and draws nothing it cannot name: each tile's caption
says the product's name, colour, article type and score, and the score says what it is (``cosine`` for an
arm, ``weighted cosine`` for raw fusion, ``z-score sum`` for z-scored fusion, ``RRF score``). Each gallery row
is named by its mode's title (:func:`~prodrec.evaluation.names.mode_titles`). Galleries are drawn to be read
at the width a notebook shows them: six tiles a row, 8-point captions at the notebook's 80 dpi.
:func:`save_figure` writes the PNG with its provenance (in the PNG's text chunk and in a JSON file beside it).
"""

from __future__ import annotations

import functools
import logging
import os
import textwrap
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.io import dumps
from ..data.catalog import Catalog, caption_parts
from ..data.images import ImageError, load_rgb
from ..core.provenance import save_json
from ..data.schema import KAGGLE
from ..embed import registry
from ..evaluation.names import score_label, title_of
from ..evaluation.report import pareto_front, worst_queries
from ..evaluation.runs import QueryScores
from ..rank.compose import Composer
from ..rank.recommender import Recommender
from ..rank.search import Searcher

log = logging.getLogger(__name__)

#: Inches per gallery tile (width, height) and the captions' font size (points).
TILE_W, TILE_H, CAPTION_PT = 1.85, 2.75, 8


# ------------------------------------------------------------------------------------ non-Latin names
class _Glyphs:
    """Which characters figures were checked for, and whether the one warning about missing ones was given."""

    checked: set[str] = set()
    warned = False


@functools.lru_cache(maxsize=None)
def _charmap(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


def _drawing_fonts() -> list[str]:
    """The font files matplotlib draws text with: one per entry of ``rcParams["font.family"]`` (its fallback
    chain; a generic name such as ``sans-serif`` stands for its first installed font)."""
    import matplotlib
    from matplotlib import font_manager

    paths = []
    for family in matplotlib.rcParams["font.family"]:
        try:
            paths.append(font_manager.findfont(font_manager.FontProperties(family=[family]),  # a list: not a
                                               fallback_to_default=False))  # fontconfig pattern
        except ValueError:  # not installed
            continue
    return list(dict.fromkeys(paths))


def _font_covering(missing: set[int]) -> tuple[str, frozenset[int]] | None:
    """(family name, code points) of the installed font that draws most of ``missing``; fonts installed after
    matplotlib built its font list are added to it first."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    known = {f.fname for f in manager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known and path.lower().endswith((".ttf", ".otf", ".ttc")):
            try:
                manager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue
    best: tuple[int, str, frozenset[int]] | None = None
    for entry in manager.ttflist:
        if "last resort" in entry.name.lower():  # matplotlib's font of placeholder boxes, one per Unicode block
            continue
        covered = _charmap(entry.fname) & missing
        if covered and (best is None or len(covered) > best[0]):
            best = (len(covered), entry.name, _charmap(entry.fname))
    return None if best is None else (best[1], best[2])


def ensure_glyphs(texts: Iterable[Any]) -> None:
    """Let figures draw every character of ``texts`` (product names in Chinese, say).

    When matplotlib's fonts lack some, an installed font that has them is added to its fallback chain
    (``rcParams["font.family"]``); when no installed font has them, one warning says so and how to
    install one, and matplotlib's warning per missing glyph is silenced. Characters are checked once per
    process.
    """
    import matplotlib

    chars = {c for t in texts for c in str(t) if not c.isspace() and c not in _Glyphs.checked}
    if not chars:
        return
    _Glyphs.checked |= chars
    have: set[int] = set().union(*(_charmap(p) for p in _drawing_fonts()))
    missing = {ord(c) for c in chars} - have
    if not missing:
        return
    found = _font_covering(missing)
    if found is not None:
        name, points = found
        matplotlib.rcParams["font.family"] = [*matplotlib.rcParams["font.family"], name]
        log.info("figures: drawing characters the default font lacks with %s", name)
        missing -= points
    if missing and not _Glyphs.warned:
        _Glyphs.warned = True
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from", category=UserWarning)
        shown = ", ".join(repr(chr(c)) for c in sorted(missing)[:5])
        log.warning("figures: no installed font draws %d character(s) of the product names (e.g. %s); they "
                    "show as boxes. Install a font that has them (Debian/Ubuntu: apt-get install fonts-noto-cjk; "
                    "conda: conda install -c conda-forge noto-cjk) and matplotlib uses it", len(missing), shown)


def show() -> None:
    """Show the current figures (inline in a notebook; nothing on a headless run)."""
    pyplot().show()


def pyplot() -> Any:
    """matplotlib.pyplot, with the headless Agg backend selected outside a notebook or display."""
    import matplotlib

    if not os.environ.get("DISPLAY") and "inline" not in matplotlib.get_backend().lower():
        try:
            from IPython import get_ipython

            if get_ipython() is None:
                matplotlib.use("Agg")
        except ImportError:
            matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@functools.lru_cache(maxsize=4096)
def thumbnail(path: str, size: int = 160) -> np.ndarray:
    """A product photo as a uint8 [size, size, 3] array, cached; a grey tile when it cannot be decoded."""
    try:
        return load_rgb(path, size=size)
    except ImageError:
        return np.full((size, size, 3), 200, dtype=np.uint8)


def caption(row: pd.Series, score: float | None = None, width: int = 24,
            columns: Sequence[str] = KAGGLE.caption_columns or (), score_name: str = "cosine") -> str:
    """Name (wrapped), the other caption columns, and the score named by what it is (``score_name``:
    cosine, weighted cosine, z-score sum, RRF score), for one tile."""
    name, meta = caption_parts(row, columns)
    ensure_glyphs([name, meta])
    lines = textwrap.wrap(name, width)[:2]
    lines.extend(textwrap.wrap(meta, width)[:2])
    if score is not None:
        lines.append(f"{score_name} {score:.3f}")
    return "\n".join(lines)


def _frame(ax: Any, query: bool = False) -> None:
    """No ticks; a red frame for the query, a grey one otherwise."""
    ax.set_xticks([])
    ax.set_yticks([])
    for side in ax.spines.values():
        side.set_edgecolor("#d62728" if query else "#bbbbbb")
        side.set_linewidth(3 if query else 1)


def _tile(ax: Any, path: str, text: str, query: bool = False) -> None:
    ax.imshow(thumbnail(path))
    _frame(ax, query)
    ax.set_title(text, fontsize=CAPTION_PT)


def _row_name(ax: Any, name: str) -> None:
    """A gallery row's name, written up the left edge of its query tile (never over a photo)."""
    ax.set_ylabel("\n".join(textwrap.wrap(name, 26)[:3]), fontsize=CAPTION_PT + 1, fontweight="bold")


def _grid(catalog: Catalog, rows: Sequence[tuple[Any, str, pd.DataFrame, str]], k: int, title: str) -> Any:
    """One row per (query id, row name, its recommendations, what their score is): the query photo (red
    frame; the row's name up its left edge) and the recommended products, captioned with the catalog's
    caption columns and the named score."""
    plt = pyplot()
    lab = catalog.labels
    cols = catalog.schema.caption_columns or ()
    fig, axes = plt.subplots(len(rows), k + 1, figsize=(TILE_W * (k + 1) + 0.4, TILE_H * len(rows) + 0.5),
                             squeeze=False)
    for r, (q, name, recs, score_name) in enumerate(rows):
        qrow = lab.loc[str(q)]
        _tile(axes[r, 0], qrow["image_path"], "query\n" + caption(qrow, columns=cols), query=True)
        _row_name(axes[r, 0], name)
        for c, (pid, score) in enumerate(zip(recs["id"], recs["score"]), start=1):
            row = lab.loc[pid]
            _tile(axes[r, c], row["image_path"], caption(row, float(score), columns=cols, score_name=score_name))
    fig.suptitle(title, fontsize=CAPTION_PT + 3)
    fig.tight_layout()
    return fig


def plot_topk_grid(
    recommender: Recommender,
    catalog: Catalog,
    query_ids: Sequence[Any],
    mode: str = "image",
    k: int = 5,
    alpha: float | None = None,
    title: str | None = None,
    titles: dict[str, str] | None = None,
) -> Any:
    """One row per query: the query photo (red frame) and its top-k under ``mode``, captioned; ``titles``
    (mode -> name, :func:`~prodrec.evaluation.names.mode_titles`) name the mode."""
    name = title_of(mode, titles)
    rows = [(q, f"query {q}", recommender.recommend(q, k=k, mode=mode, alpha=alpha), score_label(recommender, mode))
            for q in query_ids]
    return _grid(catalog, rows, k, title or f"top-{k} by {name}")


def plot_mode_comparison(
    recommender: Recommender, catalog: Catalog, query_id: Any, modes: Sequence[str] | None = None,
    k: int = 5, alpha: float | None = None, titles: dict[str, str] | None = None,
) -> Any:
    """The paper's comparison made explicit: one query, one row per mode (default: every arm, then
    ``fused``), from one scoring pass for all modes; each row named by its mode's title (``titles``, else
    the registry's)."""
    modes = list(modes or [m for m in recommender.modes if m != "rrf"])
    recs = recommender.recommend_modes(query_id, k, modes, alpha)
    rows = [(query_id, title_of(m, titles), recs[m], score_label(recommender, m)) for m in modes]
    return _grid(catalog, rows, k, f"query {query_id}: top-{k} by " + ", ".join(modes))


def plot_failures(
    recommender: Recommender, catalog: Catalog, scores: QueryScores, label: str, modes: Sequence[str] | None = None,
    n: int = 2, k: int = 5, titles: dict[str, str] | None = None,
) -> Any:
    """The failure gallery: for each mode, its ``n`` worst queries on ``label`` (lowest precision@k; among
    equals, queries of the most frequent ``label`` values first, see
    :func:`~prodrec.evaluation.report.worst_queries`) with the top-k that mode gave them; the captions show
    every product's labels, so a reader sees what was missed."""
    modes = [m for m in (modes or scores.modes) if m in recommender.modes and (m, "precision", label) in scores.per_query]
    rows = []
    for m in modes:
        for r in worst_queries(scores, catalog.labels, m, label, n).itertuples():
            recs = recommender.recommend(r.id, k=k, mode=m)
            rows.append((r.id, f"{title_of(m, titles)}: p@{k} {label} {r.value:.2f}", recs, score_label(recommender, m)))
    return _grid(catalog, rows, k, f"worst queries per mode on {label} (precision@{k})")


def plot_search_grid(searcher: Searcher, descriptions: Sequence[str], k: int = 5, mode: str | None = None,
                     title: str | None = None) -> Any:
    """One row per description: the description (red frame) and the top-k products it finds, captioned.
    The descriptions' vectors are kept in the store, so a re-run draws the figure without a model."""
    plt = pyplot()
    mode = mode or searcher.default_mode()
    cols = searcher.catalog.schema.caption_columns or ()
    lab = searcher.labels
    ensure_glyphs(descriptions)
    fig, axes = plt.subplots(len(descriptions), k + 1, figsize=(TILE_W * (k + 1), TILE_H * len(descriptions) + 0.5),
                             squeeze=False)
    for r, text in enumerate(descriptions):
        ax = axes[r, 0]
        _frame(ax, query=True)
        ax.text(0.5, 0.5, "\n".join(textwrap.wrap(text, 16)), ha="center", va="center", fontsize=9, wrap=True)
        ax.set_title(f"described ({mode})", fontsize=CAPTION_PT)
        for c, rec in enumerate(searcher.search(text, k, mode, persist=True).to_dict(orient="records"), start=1):
            row = lab.loc[rec["id"]]
            _tile(axes[r, c], row["image_path"], caption(row, float(rec["score"]), columns=cols))
    fig.suptitle(title or f"search by description: top-{k} by the {mode} arm (cosine to the description)",
                 fontsize=CAPTION_PT + 3)
    fig.tight_layout()
    return fig


def plot_composed_queries(
    recommender: Recommender, catalog: Catalog, queries: Sequence[tuple[Any, str]], composer: Composer, k: int = 5,
    weights: Mapping[str, float] | None = None, text_weights: Mapping[str, float] | float | None = None,
    title: str | None = None,
) -> Any:
    """Three rows per composed query (product X, modifier text): X alone (the fused list), the text alone and
    X + the text (:meth:`Recommender.query`, with ``weights`` / ``text_weights``), each beside X's photo."""
    rows = []
    for q, text in queries:
        mod = composer(text)
        composed = "Rocchio score (weighted, on the fusion's scale)"
        rows.append((q, "X ALONE", recommender.recommend(q, k=k), score_label(recommender, "fused")))
        rows.append((q, f'"{text}" ALONE', recommender.query(text=mod, weights=weights, text_weights=text_weights,
                                                              k=k), composed))
        rows.append((q, f'X + "{text}"', recommender.query([q], text=mod, weights=weights,
                                                          text_weights=text_weights, k=k), composed))
    return _grid(catalog, rows, k, title or f"composed queries: top-{k}")


def plot_distribution(df: pd.DataFrame, column: str, top: int = 20, ax: Any = None) -> Any:
    """Horizontal bar chart of the ``top`` most frequent values of ``column`` (missing shown as <missing>)."""
    import seaborn as sns

    plt = pyplot()
    counts = df[column].astype("object").where(df[column].notna(), "<missing>").value_counts().head(top)
    ensure_glyphs([column, *counts.index])
    if ax is None:
        _, ax = plt.subplots(figsize=(7, 0.28 * len(counts) + 1.2))
    sns.barplot(x=counts.to_numpy(), y=[str(v) for v in counts.index], ax=ax, color="#4c72b0")
    ax.set_xlabel("products")
    ax.set_ylabel("")
    ax.set_title(f"{column} (top {len(counts)} of {df[column].nunique()})")
    for i, v in enumerate(counts.to_numpy()):
        ax.text(v, i, f" {v}", va="center", fontsize=7)
    return ax.figure


def plot_distributions(df: pd.DataFrame, columns: Sequence[str], top: int = 15, ncols: int = 3,
                       title: str | None = None) -> Any:
    """:func:`plot_distribution` for several columns in a grid of ``ncols`` panels a row."""
    plt = pyplot()
    columns = list(columns)
    nrows = max(1, -(-len(columns) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5.7 * ncols, 0.3 * top * nrows + 1.5 * nrows), squeeze=False)
    for ax, col in zip(axes.flat, columns):
        plot_distribution(df, col, top=top, ax=ax)
    for ax in list(axes.flat)[len(columns):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=13)
    fig.tight_layout(rect=(0, 0, 1, 0.97 if title else 1))  # leave the title its own band
    return fig


def _bar_errors(value: Any, low: Any, high: Any) -> np.ndarray:
    """matplotlib's ``yerr`` [2, n] for an interval around each value, never negative: an interval equal to
    its point (every query scored alike) differs from the mean by rounding only, which matplotlib refuses."""
    err = np.vstack([np.asarray(value, dtype=float) - np.asarray(low, dtype=float),
                     np.asarray(high, dtype=float) - np.asarray(value, dtype=float)])
    return np.clip(err, 0.0, None)


def plot_precision_bars(results: pd.DataFrame, modes: Sequence[str] | None = None) -> Any:
    """precision@k per label and mode with bootstrap 95% CIs, the random baseline as a grey bar."""
    plt = pyplot()
    p = results[results.metric == "precision"]
    modes = list(modes or dict.fromkeys(p["mode"]))
    labels = list(dict.fromkeys(p["label"]))
    fig, ax = plt.subplots(figsize=(1.6 * len(labels) + 2, 3.6))
    w = 0.8 / len(modes)
    for i, m in enumerate(modes):
        sub = p[p["mode"] == m].groupby("label", sort=False)[["value", "ci_low", "ci_high"]].first().reindex(labels)
        x = np.arange(len(labels)) + (i - (len(modes) - 1) / 2) * w
        err = _bar_errors(sub["value"], sub["ci_low"], sub["ci_high"])
        ax.bar(x, sub["value"], w, label=m, color=registry.colour(m),
               yerr=None if np.isnan(err).all() else np.nan_to_num(err), capsize=2)
    ax.set_xticks(np.arange(len(labels)), labels)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"precision@{int(p['k'].iloc[0])}")
    ax.legend(ncol=len(modes), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, 1.15))
    fig.tight_layout()
    return fig


def plot_alpha_sweep(sweep: pd.DataFrame, tuned: Any = None) -> Any:
    """precision@k against the image weight α of raw fusion (``α·cos_image + (1-α)·cos_text``: 0 = text
    only, 1 = image only), one colour per label; a sweep over a query split draws the validation curve
    (dashed) and the test curve (solid), and ``tuned`` (:class:`~prodrec.evaluation.runs.Tuned`) marks the α
    chosen on validation."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9.0, 3.8))
    colours = dict(zip(dict.fromkeys(sweep["label"]), plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    halves = list(dict.fromkeys(sweep["split"])) if "split" in sweep.columns else [None]
    for half in halves:
        part = sweep if half is None else sweep[sweep["split"] == half]
        for label, sub in part.groupby("label", sort=False):
            name = label if half is None else f"{label}, {half} ({int(sub['n_queries'].iloc[0])} queries)"
            ax.plot(sub["alpha"], sub["precision"], marker="o", ms=3, color=colours[label], label=name,
                    ls="--" if half == "validation" else "-")
    if tuned is not None and getattr(tuned, "alpha", None) is not None:
        ax.axvline(tuned.alpha, color="k", lw=0.8, ls=":", label=f"α chosen on validation ({tuned.alpha:.1f})")
    ax.set_xlabel("α, the weight of the image cosine (0 = text only, 1 = image only)")
    ax.set_ylabel(f"precision@{int(sweep['k'].iloc[0])}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.set_title("raw fusion: α·cos(image) + (1-α)·cos(text)", fontsize=9)
    fig.tight_layout()
    return fig


def _nudged(points: pd.DataFrame, ax: Any, min_gap: float = 0.045) -> list[float]:
    """Vertical offsets (points) for point labels, so labels of points close together do not overlap:
    each label sits above its point, raised past any earlier label within ``min_gap`` of the axes."""
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    placed: list[tuple[float, float]] = []
    offsets = []
    for _, r in points.iterrows():
        fx, fy = (r["x"] - x0) / (x1 - x0 or 1), (r["y"] - y0) / (y1 - y0 or 1)
        dy = 4.0
        while any(abs(fx - px) < 0.3 and abs(fy + dy / 300 - py) < min_gap for px, py in placed):
            dy += 11.0
        placed.append((fx, fy + dy / 300))
        offsets.append(dy)
    return offsets


def plot_tradeoff(sweep: pd.DataFrame, points: pd.DataFrame | None = None, x: str = "articleType",
                  y: str = "baseColour", colour_by: str | None = None, title: str | None = None) -> Any:
    """The type/colour trade-off: one dot per fusion weighting of ``sweep`` (:func:`~prodrec.evaluate.
    weight_sweep`) at (precision on ``x``, precision on ``y``), its Pareto front as a line, and ``points``
    (a table with ``name``, ``x``, ``y`` columns: single arms, the learned arm...) marked and named. A sweep
    over a query split draws the test queries' dots and front, and the validation queries' front dashed."""
    plt = pyplot()
    wcols = [c for c in sweep.columns if c.startswith("w_")]
    halves = {"": sweep} if "split" not in sweep.columns else {h: sweep[sweep["split"] == h] for h in ("test", "validation")}
    wides = {h: part.pivot_table(index=wcols, columns="label", values="precision").reset_index()
             for h, part in halves.items()}
    wide = next(iter(wides.values()))
    fig, ax = plt.subplots(figsize=(7.2, 5.4))
    c = wide[colour_by] if colour_by in wide.columns else None
    main = "test" if "test" in wides else ""
    sc = ax.scatter(wide[x], wide[y], c=c, cmap="viridis", s=14, alpha=0.7,
                    label=f"fixed weightings{' (test queries)' if main else ''}")
    if c is not None:
        fig.colorbar(sc, ax=ax, label=f"weight of {colour_by.removeprefix('w_')}")
    for h, w in wides.items():
        front = pareto_front(w, x, y)
        ax.plot(front[x], front[y], color="black", lw=1, ls="--" if h == "validation" else "-",
                label=f"Pareto front{f' ({h} queries)' if h else ''}")
    pts = points if points is not None else pd.DataFrame(columns=["name", "x", "y"])
    for _, r in pts.iterrows():
        mode = r["mode"] if "mode" in r.index and isinstance(r["mode"], str) else str(r["name"]).split()[0]
        ax.scatter([r["x"]], [r["y"]], marker="*", s=140, color=registry.colour(mode), edgecolor="k", zorder=3)
    ax.margins(x=0.08, y=0.1)
    mid = float(np.mean(ax.get_xlim()))
    pts = pts.sort_values("y") if len(pts) else pts
    for (_, r), dy in zip(pts.iterrows(), _nudged(pts, ax)):  # names point inwards, so none runs off the axes
        right = r["x"] > mid
        ax.annotate(str(r["name"]), (r["x"], r["y"]), textcoords="offset points", xytext=(-6 if right else 6, dy),
                    ha="right" if right else "left", fontsize=7,
                    arrowprops=dict(arrowstyle="-", lw=0.4, color="#666666") if dy > 4 else None)
    ax.set_xlabel(f"precision@{int(sweep['k'].iloc[0])} {x}")
    ax.set_ylabel(f"precision@{int(sweep['k'].iloc[0])} {y}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=3, frameon=False)
    if title:
        ax.set_title(title, fontsize=9, wrap=True)
    fig.tight_layout()
    return fig


def plot_samplesize(curve: pd.DataFrame, label: str | None = None) -> Any:
    """precision@k against the sample size n (log scale), one line per mode: the mean over sample seeds,
    a band from the lowest to the highest seed, and the mean bootstrap 95% interval as error bars
    (``curve``: columns ``n, seed, mode, label, value, ci_low, ci_high``, e.g. the ``samplesize`` benchmark's
    stored rows). ``label`` picks the label drawn (default: the first)."""
    plt = pyplot()
    label = label or str(curve["label"].iloc[0])
    c = curve[curve["label"] == label]
    fig, ax = plt.subplots(figsize=(6.0, 3.6))
    for mode, sub in c.groupby("mode", sort=False):
        g = sub.groupby("n").agg(mean=("value", "mean"), lo=("value", "min"), hi=("value", "max"),
                                 ci_lo=("ci_low", "mean"), ci_hi=("ci_high", "mean"), seeds=("seed", "nunique"))
        ax.errorbar(g.index, g["mean"], yerr=_bar_errors(g["mean"], g["ci_lo"], g["ci_hi"]),
                    marker="o", ms=3, capsize=2, color=registry.colour(str(mode)),
                    label=f"{mode} ({int(g['seeds'].max())} sample seeds)")
        ax.fill_between(g.index, g["lo"], g["hi"], color=registry.colour(str(mode)), alpha=0.15)
    ax.set_xscale("log")
    ax.set_xlabel("products in the evaluated sample (n)")
    ax.set_ylabel(f"precision@{int(c['k'].iloc[0])} {label}" if "k" in c.columns else f"precision {label}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title("bars: mean 95% bootstrap interval over queries; band: range over sample seeds", fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss_curves(curves: dict[str, Sequence[float]]) -> Any:
    """Training loss per epoch, one line per run (e.g. per protocol and seed of the learned arm)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for name, curve in curves.items():
        ax.plot(np.arange(1, len(curve) + 1), curve, label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def save_figure(fig: Any, out_dir: str | os.PathLike[str], name: str, prov: dict[str, Any], dpi: int = 110) -> Path:
    """Write ``out_dir/figures/NAME.png`` (provenance in its text chunk) and ``NAME.json`` beside it."""
    folder = Path(out_dir) / "figures"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    fig.savefig(path, dpi=dpi, metadata={"Software": "prodrec", "Description": dumps(prov, indent=None)})
    save_json(folder / f"{name}.json", {"figure": path.name}, prov)
    return path


def save_table(table: pd.DataFrame, out_dir: str | os.PathLike[str], name: str, prov: dict[str, Any]) -> Path:
    """Write a metrics table as ``out_dir/metrics/NAME.json`` (records plus provenance)."""
    return save_json(Path(out_dir) / "metrics" / f"{name}.json", table.to_dict(orient="records"), prov)


class OnceFilter(logging.Filter):
    """Lets each distinct log message through once (a notebook building six experiments says "resnet50
    unavailable" once, not six times)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, int, str]] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, record.getMessage())
        if key in self.seen:
            return False
        self.seen.add(key)
        return True


def setup_notebook(dpi: int = 80, fmt: str = "jpeg") -> None:
    """Inline figures legible at a notebook's width (JPEG, ``dpi`` 80: a six-tile gallery row is about 920
    pixels, its captions about 9) and light enough for notebooks with stored outputs in git; each log
    message is shown once (:class:`OnceFilter` on the root logger's handlers).

    Files written by :func:`save_figure` keep their own, higher resolution.
    """
    import matplotlib

    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, OnceFilter) for f in handler.filters):
            handler.addFilter(OnceFilter())
    matplotlib.rcParams["figure.dpi"] = dpi
    try:
        from matplotlib_inline.backend_inline import set_matplotlib_formats

        set_matplotlib_formats(fmt)
    except (ImportError, ValueError):  # outside IPython: nothing to configure
        pass
