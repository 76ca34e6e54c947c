"""An interactive browser of top-k grids (ipywidgets), for judging recommendations by eye.

>>> from prodrec.browse import Browser
>>> Browser(exp.recommender, exp.catalog).widget          # display it in JupyterLab, Voila or Kaggle

Pick a query by typing part of a product name or an id (matches appear in a dropdown; the first is shown),
with the "random" button, or by clicking "use as query" under any recommendation; or describe a product in
words ("white sports shoes for women") and see the top-k for the description (:class:`~prodrec.search.Searcher`:
CLIP's text tower against the photos when a clip arm is present, else the text arm). Choose the mode (image /
text / fused, or all of them as rows: the paper's comparison figure made live), the fusion weight, k, and the
rules of :mod:`prodrec.rank.rules` inside the ranking: recommendations share the query's gender (or another
column), duplicates hidden (the same name or near-identical vectors), and a diversity slider (MMR: 1 is the
plain ranking). Each interaction costs one
matrix-vector product per arm (:meth:`Recommender.recommend_modes`); thumbnails are decoded lazily and
cached.

Feedback: **like** / **dislike** under each recommendation, then **refine** (optionally with a modifier in
the refine box, "in red") re-ranks the catalog from the current list: more like the query and the liked
products, less like the disliked ones, plus the modifier (:meth:`Recommender.query`, Rocchio per arm); the
refined list is shown as a REFINED row and can be refined again.
"""

from __future__ import annotations

import functools
import html
import io
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data.catalog import Catalog
from ..core.errors import ConfigError, MissingDependency
from .gallery import caption_parts, thumbnail
from ..rank.lists import recommend_lists
from ..rank.recommender import Recommender
from ..rank.rules import DEFAULT_DUPLICATE_THRESHOLD, BoundRules, Rules
from ..core.vocab import LEARNED, PAPER_ARMS
from ..rank.compose import Composer
from ..rank.search import Searcher

#: The choice that shows every arm and the fused ranking as rows (the paper's comparison figure, live).
ALL_MODES = "all"


@functools.lru_cache(maxsize=8192)
def thumbnail_jpeg(path: str, size: int = 128) -> bytes:
    """:func:`prodrec.gallery.thumbnail` as JPEG bytes (what an ipywidgets Image shows), cached."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(thumbnail(path, size)).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class Browser:
    """The widget app over a :class:`~prodrec.rank.Recommender` and the catalog it was built from.

    ``widget`` is the ipywidgets tree to display; :meth:`show_query` / :meth:`search` drive it from code
    (tests, notebooks); :attr:`last_ms` is the compute time of the last interaction (ranking only).
    """

    def __init__(
        self,
        recommender: Recommender,
        catalog: Catalog,
        k: int = 5,
        mode: str = "fused",
        alpha: float | None = None,
        filter_columns: Sequence[str] | None = None,
        thumb_size: int = 128,
        seed: int = 0,
        searcher: Searcher | None = None,
        composer: Composer | None = None,
    ) -> None:
        try:
            import ipywidgets as w
        except ImportError as exc:
            raise MissingDependency("the widget browser needs ipywidgets: pip install 'prodrec[notebooks]'") from exc

        self.rec = recommender
        self.labels = catalog.labels.reindex(recommender.ids)
        self.captions = tuple(catalog.schema.caption_columns or ())
        self.thumb_size = thumb_size
        self._rng = np.random.default_rng(seed)
        name_col = catalog.schema.name_column
        names = self.labels[name_col] if name_col in self.labels.columns else pd.Series("", index=self.labels.index)
        self._names = names.fillna("").astype(str).to_numpy()
        self._lower = np.array([n.lower() for n in self._names])
        self._id_text = np.array([str(i).lower() for i in recommender.ids])
        self.last_ms = float("nan")
        filter_columns = catalog.label_columns if filter_columns is None else filter_columns
        fusing = "fused" in recommender.modes
        modes = [m for m in recommender.modes if m != "rrf"] + ([ALL_MODES] if fusing else [])
        self.search_box = w.Text(placeholder="search a product name or id", description="search",
                                 continuous_update=True, layout=w.Layout(width="360px"))
        self.search_box.add_class("prodrec-search")
        self.searcher = searcher if searcher is not None and searcher.modes else None
        self.describe_box = w.Text(placeholder="describe it: white sports shoes for women", description="describe",
                                   continuous_update=False, layout=w.Layout(width="420px"),
                                   disabled=self.searcher is None)
        self.describe_box.add_class("prodrec-describe")
        self.description: str | None = None
        self.matches = w.Dropdown(options=[], description="matches", layout=w.Layout(width="420px"))
        self.random_button = w.Button(description="random", icon="random", layout=w.Layout(width="100px"))
        self.mode = w.ToggleButtons(options=modes, value=mode if mode in modes else modes[0], description="mode")
        self.alpha = w.FloatSlider(value=recommender.alpha if alpha is None else alpha, min=0.0, max=1.0, step=0.05,
                                   description="alpha (image weight)", continuous_update=False,
                                   style={"description_width": "initial"},
                                   disabled="fused" not in recommender.modes)
        # more arms than the paper's two: one weight slider per arm instead of alpha (normalised when ranking)
        paper = set(recommender.arms) - {LEARNED} <= set(PAPER_ARMS)
        self.arm_weights = {} if paper or "fused" not in recommender.modes else {
            arm: w.FloatSlider(value=round(recommender.weights[arm], 2), min=0.0, max=1.0, step=0.05,
                               description=f"{arm} weight", continuous_update=False,
                               style={"description_width": "initial"}) for arm in recommender.arms}
        if self.arm_weights:
            self.alpha.layout.display = "none"
        self.k = w.BoundedIntText(value=k, min=1, max=min(50, len(recommender) - 1), description="k",
                                  layout=w.Layout(width="140px"))
        self.filter = w.Dropdown(options=["none"] + [c for c in filter_columns if c in self.labels.columns],
                                 value="none", description="same as query:", style={"description_width": "initial"})
        self.hide_duplicates = w.Checkbox(value=False, description="hide duplicates", indent=False,
                                          layout=w.Layout(width="140px"))
        self.diversity = w.FloatSlider(value=1.0, min=0.0, max=1.0, step=0.05, continuous_update=False,
                                       description="relevance (1) vs diversity (0)",
                                       style={"description_width": "initial"})
        self._name_column = catalog.schema.name_column
        self._labels_by_id = catalog.labels
        self._bound: dict[Rules, BoundRules] = {}
        self.status = w.HTML()
        self.grid = w.VBox()
        self.query_id: Any = None
        self._updating = False  # True while search() fills the dropdown (its change is not a user's pick)
        # feedback: liked / disliked products of the current list, and the refine box's modifier
        self.composer = composer if composer is not None else (
            Composer(self.searcher) if self.searcher is not None else None)
        self.liked: list[Any] = []
        self.disliked: list[Any] = []
        self.refined: pd.DataFrame | None = None
        self.refine_box = w.Text(placeholder="refine: in red (optional)", description="refine",
                                 continuous_update=False, layout=w.Layout(width="360px"))
        self.refine_box.add_class("prodrec-refine")
        self.refine_button = w.Button(description="refine", icon="filter", layout=w.Layout(width="100px"))
        self.refine_button.add_class("prodrec-refine-button")
        self.clear_button = w.Button(description="clear feedback", layout=w.Layout(width="130px"))
        self.refine_box.observe(lambda ch: self.refine() if ch["new"].strip() else None, names="value")
        self.refine_button.on_click(lambda _: self.refine())
        self.clear_button.on_click(lambda _: self.clear_feedback())

        self.search_box.observe(lambda ch: self.search(ch["new"]), names="value")
        self.describe_box.observe(lambda ch: self.describe(ch["new"]), names="value")
        self.matches.observe(self._on_match, names="value")
        self.random_button.on_click(lambda _: self.show_query(self.rec.ids[self._rng.integers(len(self.rec))]))
        for ctl in (self.mode, self.alpha, self.k, self.filter, self.hide_duplicates, self.diversity,
                    *self.arm_weights.values()):
            ctl.observe(lambda _: self.refresh(), names="value")
        controls = w.VBox([
            w.HBox([self.search_box, self.random_button]), self.matches, self.describe_box,
            w.HBox([self.mode, self.k]), w.HBox([self.alpha, self.filter]),
            w.HBox([self.hide_duplicates, self.diversity]),
            w.HBox(list(self.arm_weights.values())),
            w.HBox([self.refine_box, self.refine_button, self.clear_button]), self.status,
        ])
        self.widget = w.VBox([controls, self.grid])
        self.widget.add_class("prodrec-browser")
        self.show_query(self.rec.ids[0])

    # ------------------------------------------------------------------ queries
    def find(self, text: str, limit: int = 20) -> list[Any]:
        """Ids whose name contains ``text`` or whose id starts with it (both case-insensitive), best first."""
        return [self.rec.ids[i] for i in self._find_positions(text, limit)]

    def _find_positions(self, text: str, limit: int = 20) -> list[int]:
        text = text.strip().lower()
        if not text:
            return []
        exact_id = np.flatnonzero(self._id_text == text)
        by_id = np.flatnonzero(np.char.startswith(self._id_text, text))
        by_name = np.flatnonzero(np.char.find(self._lower, text) >= 0)
        exact_name = by_name[self._lower[by_name] == text]
        return list(dict.fromkeys([*exact_id, *exact_name, *by_id, *by_name]))[:limit]

    def search(self, text: str) -> list[Any]:
        """Fill the dropdown with matches for ``text`` and show the first as the query."""
        pos = self._find_positions(text)
        found = [self.rec.ids[p] for p in pos]
        self._updating = True
        try:
            self.matches.options = [(f"{pid} · {self._names[p]}", pid) for pid, p in zip(found, pos)]
            self.matches.value = found[0] if found else None
        finally:
            self._updating = False
        if found:
            self.show_query(found[0])
        else:
            self.status.value = f"<i>no product matches {html.escape(text)!r}</i>" if text.strip() else ""
        return found

    def _on_match(self, change: dict[str, Any]) -> None:
        if not self._updating and change["new"] is not None:
            self.show_query(change["new"])

    def show_query(self, product_id: Any) -> None:
        self.query_id = product_id
        self.description = None
        self.liked, self.disliked, self.refined = [], [], None
        self.refresh()

    def describe(self, text: str) -> pd.DataFrame | None:
        """Show the top-k for a description (CLIP's text tower against photos when the recommender has a
        clip arm, else the text arm) as the query row."""
        if self.searcher is None or not text.strip():
            return None
        self.description = text
        return self._show_description()

    def _show_description(self) -> pd.DataFrame | None:
        import ipywidgets as w

        assert self.searcher is not None and self.description is not None
        mode = self.searcher.default_mode()
        t0 = time.perf_counter()
        try:
            df = self.searcher.search(self.description, int(self.k.value), mode)
        except (ValueError, KeyError) as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return None
        self.last_ms = (time.perf_counter() - t0) * 1e3
        head = w.HTML(f"<div style='font-size:12px;width:{self.thumb_size}px'><b>DESCRIBED ({mode})</b><br>"
                      f"<span class='prodrec-name'>{html.escape(self.description)}</span></div>",
                      layout=w.Layout(border="2px solid #d62728", padding="4px", margin="2px"))
        head.add_class("prodrec-query")
        tiles = [head] + [self._tile(r["id"], self.labels.loc[r["id"]], (mode, float(r["score"]), {}))
                          for r in df.to_dict(orient="records")]
        self.grid.children = [w.HBox(tiles)]
        self.status.value = (f"description <b>{html.escape(self.description)}</b> · {mode} arm · "
                             f"searched {len(self.rec)} products in {self.last_ms:.1f} ms")
        return df

    # ------------------------------------------------------------------ ranking and drawing
    def rules(self) -> Rules:
        """The rules the controls set: same value of the filter column, no duplicates, MMR diversity."""
        same = () if self.filter.value == "none" else (self.filter.value,)
        diversity = float(self.diversity.value)
        return Rules.make(same=same, exclude_duplicates=DEFAULT_DUPLICATE_THRESHOLD if self.hide_duplicates.value
                          else None, diversity=diversity if diversity < 1.0 else None)

    def _allowed(self) -> np.ndarray | None:
        """A mask over the ranked products for a refined list: those sharing the query's value of the filter
        column (the refined list is one composed query, ranked with this mask rather than the rules)."""
        if self.filter.value == "none" or self.query_id is None:
            return None
        column = self._labels_by_id[self.filter.value]
        return (column.reindex(self.rec.ids) == column.get(str(self.query_id))).to_numpy()

    def compute(self) -> dict[str, pd.DataFrame]:
        """Top-k per shown mode for the current query (timed into :attr:`last_ms`), with the rules of the
        controls applied inside the ranking (:func:`~prodrec.rank.lists.recommend_lists`)."""
        modes = [*self.rec.arms, "fused"] if self.mode.value == ALL_MODES else [self.mode.value]
        weights = {arm: float(s.value) for arm, s in self.arm_weights.items()}
        weights_or_none = weights if sum(weights.values()) > 0 else None
        rules = self.rules()
        t0 = time.perf_counter()
        if rules:
            if rules not in self._bound:
                self._bound[rules] = rules.bind(self.rec.ids, self._labels_by_id, self._name_column)
            out = recommend_lists(self.rec, self.query_id, int(self.k.value), modes, self._bound[rules],
                                  float(self.alpha.value), weights_or_none)
        else:
            out = self.rec.recommend_modes(self.query_id, int(self.k.value), modes, float(self.alpha.value),
                                           None, weights_or_none)
        self.last_ms = (time.perf_counter() - t0) * 1e3
        return out

    def refresh(self) -> None:
        import ipywidgets as w

        if self.description is not None:  # k changed while a description is shown
            self._show_description()
            return
        if self.refined is not None:  # k, weights or the filter changed while a refined list is shown
            self.refine()
            return
        try:
            results = self.compute()
        except (ValueError, KeyError) as exc:  # RankingError, unknown id: shown, never raised into the UI
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return
        q = self.labels.loc[self.query_id]
        rows = []
        for mode, df in results.items():
            tiles = [self._tile(self.query_id, q, None, query=True, label=mode.upper())]
            arm_cols = [f"{a}_score" for a in self.rec.arms if f"{a}_score" in df.columns]
            for rec in df.to_dict(orient="records"):
                per_arm = {c[: -len("_score")]: float(rec[c]) for c in arm_cols}
                tiles.append(self._tile(rec["id"], self.labels.loc[rec["id"]], (mode, float(rec["score"]), per_arm)))
            rows.append(w.HBox(tiles))
        self.grid.children = rows
        rules = self.rules()
        self.status.value = (f"query <b>{html.escape(str(self.query_id))}</b> · {html.escape(self._label(q))} · "
                             f"ranked {len(self.rec)} products in {self.last_ms:.1f} ms"
                             + (f" · rules: {html.escape(rules.describe())}" if rules else ""))

    def _label(self, row: pd.Series) -> str:
        name, meta = caption_parts(row, self.captions)
        return f"{name} | {meta}" if meta else name

    def _tile(self, pid: Any, row: pd.Series, scores: tuple[str, float, dict[str, float]] | None,
              query: bool = False, label: str = "") -> Any:
        import ipywidgets as w

        img = w.Image(value=thumbnail_jpeg(str(row["image_path"]), self.thumb_size), format="jpeg",
                      width=self.thumb_size, height=self.thumb_size)
        name, meta = (html.escape(t) for t in caption_parts(row, self.captions))
        lines = [f"<b>{label}</b>" if query else "", f"<span class='prodrec-name'>{name}</span>", meta]
        if scores is not None:
            mode, s, per_arm = scores
            lines.append(f"{mode} {s:.3f}")
            if len(per_arm) > 1:
                lines.append(" · ".join(f"{a} {v:.3f}" for a, v in per_arm.items()))
        cap = w.HTML("<div style='font-size:11px;line-height:1.25'>" + "<br>".join(x for x in lines if x) + "</div>",
                     layout=w.Layout(width=f"{self.thumb_size + 8}px"))
        children = [img, cap]
        if not query:
            btn = w.Button(description="use as query", layout=w.Layout(width=f"{self.thumb_size}px"))
            btn.on_click(lambda _, p=pid: self.show_query(p))
            children.append(btn)
            children.append(self._feedback_buttons(pid))
        box = w.VBox(children, layout=w.Layout(border="2px solid #d62728" if query else "1px solid #ccc",
                                                padding="4px", margin="2px"))
        box.add_class("prodrec-query" if query else "prodrec-tile")
        box._prodrec_id = pid  # which product a tile shows (its like/dislike buttons are restyled by id)
        return box

    # ------------------------------------------------------------------ feedback and refine
    def _feedback_buttons(self, pid: Any) -> Any:
        import ipywidgets as w

        half = w.Layout(width=f"{self.thumb_size // 2 - 2}px")
        like = w.Button(description="like", icon="thumbs-up", layout=half,
                        button_style="success" if pid in self.liked else "")
        dislike = w.Button(description="dislike", icon="thumbs-down", layout=half,
                           button_style="danger" if pid in self.disliked else "")
        like.add_class("prodrec-like")
        dislike.add_class("prodrec-dislike")
        like.on_click(lambda _, p=pid: self.like(p))
        dislike.on_click(lambda _, p=pid: self.dislike(p))
        return w.HBox([like, dislike])

    def like(self, product_id: Any) -> None:
        """Mark ``product_id`` liked (again: unmark it); it is used by the next :meth:`refine`."""
        self._toggle(product_id, self.liked, self.disliked)

    def dislike(self, product_id: Any) -> None:
        """Mark ``product_id`` disliked (again: unmark it); it is used by the next :meth:`refine`."""
        self._toggle(product_id, self.disliked, self.liked)

    def _toggle(self, product_id: Any, into: list[Any], other: list[Any]) -> None:
        if product_id in into:
            into.remove(product_id)
        else:
            into.append(product_id)
            if product_id in other:
                other.remove(product_id)
        for row in self.grid.children:  # restyle the tile's buttons in place (no re-ranking)
            for tile in row.children:
                if len(tile.children) == 4 and getattr(tile, "_prodrec_id", None) == product_id:
                    like, dislike = tile.children[3].children
                    like.button_style = "success" if product_id in self.liked else ""
                    dislike.button_style = "danger" if product_id in self.disliked else ""
        self.status.value = (f"liked {len(self.liked)}, disliked {len(self.disliked)}: press <b>refine</b> to "
                             "re-rank")

    def clear_feedback(self) -> None:
        """Forget likes, dislikes and the modifier; show the query's own list again."""
        self.refine_box.value = ""
        self.liked, self.disliked, self.refined = [], [], None
        self.refresh()

    def _weights(self) -> dict[str, float] | None:
        mode = self.mode.value
        if mode in self.rec.arms:
            return {a: float(a == mode) for a in self.rec.arms} if len(self.rec.arms) > 1 else None
        if self.arm_weights:
            w = {arm: float(sl.value) for arm, sl in self.arm_weights.items()}
            return w if sum(w.values()) > 0 else None
        return self.rec.fusion_weights(alpha=float(self.alpha.value)) if len(self.rec.arms) > 1 else None

    def refine(self) -> pd.DataFrame | None:
        """Re-rank from the current list: more like the query and the liked products, less like the disliked
        ones, plus the refine box's modifier (placed by :attr:`composer`); shown as the REFINED row."""
        import ipywidgets as w

        if self.query_id is None:
            return None
        text = self.refine_box.value.strip()
        t0 = time.perf_counter()
        try:
            modifier = None
            if text:
                if self.composer is None:
                    raise ConfigError("a modifier needs an arm that reads text (a searcher) or prototypes")
                modifier = self.composer(text)
            df = self.rec.query([self.query_id, *self.liked], self.disliked, modifier, self._weights(),
                                int(self.k.value), allowed=self._allowed())
        except (ValueError, KeyError) as exc:
            self.status.value = f"<span style='color:#b00'>{html.escape(str(exc))}</span>"
            return None
        self.last_ms = (time.perf_counter() - t0) * 1e3
        self.refined = df
        q = self.labels.loc[self.query_id]
        tiles = [self._tile(self.query_id, q, None, query=True, label="REFINED")]
        arm_cols = [f"{a}_score" for a in self.rec.arms if f"{a}_score" in df.columns]
        for rec in df.to_dict(orient="records"):
            per_arm = {c[: -len("_score")]: float(rec[c]) for c in arm_cols}
            tiles.append(self._tile(rec["id"], self.labels.loc[rec["id"]], ("refined", float(rec["score"]), per_arm)))
        self.grid.children = [w.HBox(tiles)]
        parts = [f"like {len(self.liked)}", f"dislike {len(self.disliked)}"]
        if modifier is not None:
            parts.append(f"text <b>{html.escape(text)}</b> (" + "; ".join(
                f"{a}: {html.escape(how)}" for a, how in modifier.sources.items()) + ")")
        self.status.value = (f"refined from query <b>{html.escape(str(self.query_id))}</b> · {', '.join(parts)} · "
                             f"ranked {len(self.rec)} products in {self.last_ms:.1f} ms")
        return df
