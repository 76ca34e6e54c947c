"""A static HTML page of a recommendations table: ``prodrec report recs.parquet --html report.html``.

For a seeded sample of the table's queries, one row of tiles per mode: the query's photo, then its top-k
with names, captions, rank, score (and each arm's score when the table has them), under a header that says
how the table was made (catalog, modes, k, rules, index, when). The page is one self-contained file:
photos are small JPEG thumbnails inlined as ``data:`` URIs, the style sheet is inline, nothing is fetched,
so it can be mailed or opened offline. A product the catalog no longer has is shown as a grey tile.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from ..core.io import atomic_write
from ..data.catalog import Catalog, caption_parts, load_catalog
from ..data.images import ImageError, load_rgb
from ..data.schema import CatalogSchema
from ..rank.table import read_provenance, read_table

__all__ = ["catalog_of_table", "html_report", "write_html_report"]

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 6px} .meta{font-size:13px;color:#555;margin-bottom:18px}
.meta td{padding:1px 10px 1px 0;vertical-align:top} .query{margin:0 0 18px;border-top:1px solid #ddd;padding-top:8px}
.qhead{font-size:13px;margin-bottom:4px} .row{display:flex;gap:6px;align-items:flex-start;margin:4px 0 8px}
.mode{writing-mode:vertical-rl;transform:rotate(180deg);font-size:11px;color:#666;text-transform:uppercase}
.tile{width:{w}px;border:1px solid #ccc;padding:3px;font-size:11px;line-height:1.25;overflow-wrap:anywhere}
.tile.q{border:2px solid #d62728} .tile img{width:{w}px;height:{w}px;display:block;object-fit:contain}
.name{font-weight:600} .sc{color:#444}
"""


@functools.lru_cache(maxsize=4096)
def _data_uri(path: str, size: int) -> str:
    """A photo as a small JPEG ``data:`` URI; a grey tile when there is none or it cannot be decoded."""
    from PIL import Image

    try:
        pixels = load_rgb(path, size=size) if path else None
    except ImageError:
        pixels = None
    image = Image.fromarray(pixels) if pixels is not None else Image.new("RGB", (size, size), (200, 200, 200))
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def catalog_of_table(provenance: Mapping[str, Any], image_cache: str | os.PathLike[str] | None = None) -> Catalog:
    """The catalog a kit-made table was exported from, reloaded from its provenance (path and schema)."""
    data = (provenance or {}).get("dataset") or {}
    path = data.get("csv") or data.get("data_dir")
    if not path or not Path(path).exists():
        raise ConfigError("the table does not say where its catalog is (or it moved): give --data (and the "
                          "catalog flags) for the photos and names")
    schema = CatalogSchema(**{k: v for k, v in (data.get("schema") or {}).items()
                              if k in CatalogSchema.__dataclass_fields__})
    if image_cache is None:
        store = ((provenance.get("settings") or {}).get("store"))
        image_cache = Path(store) / "images" if store else None
    return load_catalog(path, schema=schema, image_cache=image_cache, require_images=False,
                        verify_images="none", progress=False)


def _tile(pid: str, row: pd.Series | None, captions: Sequence[str], size: int, lines: Sequence[str],
          query: bool = False) -> str:
    path = row.get("image_path") if row is not None else None
    path = path if isinstance(path, str) else ""
    name, meta = caption_parts(row, captions) if row is not None else (pid, "not in the catalog")
    text = [f"<span class='name'>{html.escape(name)}</span>", html.escape(meta),
            f"<span class='sc'>{html.escape(pid)}</span>", *lines]
    return (f"<div class='tile{' q' if query else ''}'><img alt='{html.escape(pid)}' src='{_data_uri(path, size)}'>"
            + "<br>".join(t for t in text if t) + "</div>")


def html_report(table: pd.DataFrame, catalog: Catalog, provenance: Mapping[str, Any] | None = None, n: int = 50,
                seed: int = 0, thumb: int = 128, title: str = "Recommendations") -> str:
    """The report page (HTML text) for ``table`` over ``catalog`` (see the module)."""
    if n < 1:
        raise ConfigError(f"--n must be a positive number of queries, got {n}")
    prov = dict(provenance or {})
    export = prov.get("export") or {}
    queries = pd.unique(table["query_id"].astype(str))
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(queries), size=min(n, len(queries)), replace=False)) if len(queries) else []
    chosen = [queries[i] for i in pick]
    lab = catalog.labels
    lab.index = lab.index.map(str)
    captions = tuple(catalog.schema.caption_columns or ())
    arm_cols = [c for c in table.columns if c.endswith("_score") and c != "score"]
    modes = list(pd.unique(table["mode"].astype(str))) if "mode" in table.columns else ["table"]
    rows_of = table.assign(_mode=table["mode"].astype(str) if "mode" in table.columns else "table")
    groups = {key: g.sort_values("rank") for key, g in rows_of[rows_of["query_id"].astype(str).isin(chosen)]
              .groupby(["query_id", "_mode"], sort=False)}

    def row_of(pid: str) -> pd.Series | None:
        return lab.loc[pid] if pid in lab.index else None

    meta = [("table", export.get("format", "")), ("catalog", (prov.get("dataset") or {}).get("data_dir", "")),
            ("products", (prov.get("dataset") or {}).get("products", "")), ("modes", ", ".join(modes)),
            ("k", export.get("k", int(table.groupby("query_id").size().max()) if len(table) else 0)),
            ("rules", export.get("rules_text", "none")), ("index", export.get("index", "")),
            ("calibration", export.get("calibration", "")), ("made", prov.get("created_at", "")),
            ("queries shown", f"{len(chosen)} of {len(queries)} (seed {seed})")]
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_STYLE.replace('{w}', str(thumb))}</style></head><body>",
           f"<h1>{html.escape(title)}</h1><table class='meta'>"
           + "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in meta if v != "")
           + "</table>"]
    for q in chosen:
        out.append(f"<div class='query' data-query='{html.escape(q)}'><div class='qhead'>query "
                   f"<b>{html.escape(q)}</b></div>")
        for mode in modes:
            g = groups.get((q, mode))
            if g is None:
                continue
            tiles = [f"<div class='mode'>{html.escape(mode)}</div>",
                     _tile(q, row_of(q), captions, thumb, ["<b>QUERY</b>"], query=True)]
            for rec in g.to_dict(orient="records"):
                lines = [f"#{int(rec['rank'])}" + (f" · {mode} {float(rec['score']):.3f}"
                                                   if "score" in rec and pd.notna(rec["score"]) else "")]
                per_arm = [f"{c[:-6]} {float(rec[c]):.3f}" for c in arm_cols if pd.notna(rec.get(c))]
                if per_arm:
                    lines.append("<span class='sc'>" + " · ".join(per_arm) + "</span>")
                tiles.append(_tile(str(rec["id"]), row_of(str(rec["id"])), captions, thumb, lines))
            out.append("<div class='row'>" + "".join(tiles) + "</div>")
        out.append("</div>")
    out.append("</body></html>")
    return "\n".join(out)


def write_html_report(table: str | os.PathLike[str], out: str | os.PathLike[str], catalog: Catalog | None = None,
                      n: int = 50, seed: int = 0, thumb: int = 128) -> Path:
    """Read a recommendations table (and its provenance), write its report page to ``out`` (atomically).
    ``catalog`` defaults to the one the table's provenance names."""
    prov = read_provenance(table)
    df = read_table(table)
    cat = catalog if catalog is not None else catalog_of_table(prov)
    text = html_report(df, cat, prov, n=n, seed=seed, thumb=thumb, title=f"Recommendations: {Path(table).name}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write(out, lambda f: f.write(text), mode="w")
