"""A small synthetic catalog in the Kaggle schema, so every command and notebook runs anywhere, offline.

Each product is a drawn silhouette of its article type (T-shirt, jeans, dress, shoe, watch, handbag,
cap, sunglasses) in its base colour, with jittered size, position, background and a detail stripe, so
that image neighbours share shape and text neighbours share the words - a miniature of the real task.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from .schema import KAGGLE_COLUMNS

COLOURS: dict[str, tuple[int, int, int]] = {
    "Black": (25, 25, 28),
    "White": (240, 240, 236),
    "Blue": (40, 90, 200),
    "Navy Blue": (20, 30, 90),
    "Red": (200, 30, 40),
    "Green": (40, 150, 60),
    "Yellow": (235, 200, 40),
    "Pink": (235, 130, 170),
    "Grey": (128, 128, 128),
    "Brown": (120, 75, 35),
}
# articleType: (gender choices, masterCategory, subCategory, usage)
ARTICLES: dict[str, tuple[tuple[str, ...], str, str, str]] = {
    "Tshirts": (("Men", "Women"), "Apparel", "Topwear", "Casual"),
    "Jeans": (("Men", "Women"), "Apparel", "Bottomwear", "Casual"),
    "Dresses": (("Women",), "Apparel", "Dress", "Casual"),
    "Casual Shoes": (("Men", "Women"), "Footwear", "Shoes", "Casual"),
    "Watches": (("Men", "Women", "Unisex"), "Accessories", "Watches", "Casual"),
    "Handbags": (("Women",), "Accessories", "Bags", "Casual"),
    "Caps": (("Men", "Unisex"), "Accessories", "Headwear", "Sports"),
    "Sunglasses": (("Men", "Women", "Unisex"), "Accessories", "Eyewear", "Casual"),
}
BRANDS = ("Aurora", "Northwind", "Kestrel", "Mosaic", "Tidewater", "Lumen")
SEASONS = ("Summer", "Fall", "Winter", "Spring")


def _shape(d: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, s: float, fill: tuple[int, int, int]) -> None:
    """Draw a silhouette of ``kind`` centred at (cx, cy) with half-size ``s``."""
    edge = tuple(max(0, c - 60) for c in fill)

    def P(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
        return [(cx + x * s, cy + y * s) for x, y in pts]

    if kind == "Tshirts":
        d.polygon(P([(-.45, -.8), (-.15, -.9), (.15, -.9), (.45, -.8), (.95, -.45), (.75, -.15), (.5, -.3),
                     (.5, .9), (-.5, .9), (-.5, -.3), (-.75, -.15), (-.95, -.45)]), fill=fill, outline=edge)
    elif kind == "Jeans":
        d.polygon(P([(-.5, -.9), (.5, -.9), (.6, .95), (.12, .95), (0, -.2), (-.12, .95), (-.6, .95)]),
                  fill=fill, outline=edge)
        d.line(P([(-.5, -.75), (.5, -.75)]), fill=edge, width=3)
    elif kind == "Dresses":
        d.polygon(P([(-.25, -.9), (.25, -.9), (.35, -.35), (.85, .95), (-.85, .95), (-.35, -.35)]),
                  fill=fill, outline=edge)
    elif kind == "Casual Shoes":
        d.polygon(P([(-.9, .1), (-.4, .05), (-.1, -.35), (.3, -.35), (.45, .0), (.9, .15), (.95, .45),
                     (-.9, .45)]), fill=fill, outline=edge)
        d.rectangle(P([(-.92, .45), (.97, .6)]), fill=(235, 235, 235), outline=edge)
    elif kind == "Watches":
        d.rectangle(P([(-.22, -.95), (.22, .95)]), fill=edge)
        d.ellipse(P([(-.5, -.5), (.5, .5)]), fill=fill, outline=edge, width=4)
        d.ellipse(P([(-.38, -.38), (.38, .38)]), fill=(245, 245, 245))
        d.line(P([(0, 0), (0, -.3)]), fill=(20, 20, 20), width=3)
        d.line(P([(0, 0), (.22, 0)]), fill=(20, 20, 20), width=3)
    elif kind == "Handbags":
        d.arc(P([(-.4, -.95), (.4, -.1)]), 180, 360, fill=edge, width=6)
        d.polygon(P([(-.65, -.45), (.65, -.45), (.85, .85), (-.85, .85)]), fill=fill, outline=edge)
    elif kind == "Caps":
        d.pieslice(P([(-.7, -.6), (.7, .8)]), 180, 360, fill=fill, outline=edge)
        d.polygon(P([(-.1, .1), (.95, .1), (.95, .25), (-.1, .25)]), fill=edge)
    elif kind == "Sunglasses":
        d.line(P([(-.95, -.1), (.95, -.1)]), fill=edge, width=5)
        for x0 in (-.85, .1):
            d.ellipse(P([(x0, -.25), (x0 + .75, .35)]), fill=fill, outline=edge, width=3)
    else:  # pragma: no cover
        raise ValueError(kind)


def draw_product(kind: str, colour: str, rng: np.random.Generator, size: int = 224) -> Image.Image:
    bg = tuple(int(v) for v in rng.integers(225, 256, size=3))
    im = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(im)
    s = size * rng.uniform(0.32, 0.42)
    cx = size / 2 + rng.uniform(-0.06, 0.06) * size
    cy = size / 2 + rng.uniform(-0.06, 0.06) * size
    fill = tuple(int(np.clip(c + rng.integers(-12, 13), 0, 255)) for c in COLOURS[colour])
    _shape(d, kind, cx, cy, s, fill)
    if rng.random() < 0.4:  # a detail stripe, as on real garments
        y = cy + rng.uniform(-0.2, 0.2) * s
        d.line([(cx - 0.3 * s, y), (cx + 0.3 * s, y)], fill=tuple(255 - c for c in fill), width=2)
    return im


def write_demo_catalog(
    out_dir: str | os.PathLike[str], n: int = 240, seed: int = 0, image_size: int = 224, progress: bool = True
) -> Path:
    """Write ``styles.csv`` and ``images/<id>.jpg`` for ``n`` synthetic products under ``out_dir``."""
    if n < 2:
        raise ValueError(f"a demo catalog needs at least 2 products, got {n}")
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    kinds, colours = list(ARTICLES), list(COLOURS)
    rows = []
    for i in tqdm(range(n), desc="demo catalog", unit="product", disable=not progress):
        pid = 90000 + i
        kind = kinds[i % len(kinds)]
        colour = colours[int(rng.integers(len(colours)))]
        genders, master, sub, usage = ARTICLES[kind]
        gender = genders[int(rng.integers(len(genders)))]
        brand = BRANDS[int(rng.integers(len(BRANDS)))]
        name = f"{brand} {gender} {colour} {kind}"
        draw_product(kind, colour, rng, image_size).save(out / "images" / f"{pid}.jpg", quality=90)
        season = SEASONS[int(rng.integers(len(SEASONS)))]
        year = int(rng.integers(2011, 2018))
        rows.append([pid, gender, master, sub, kind, colour, season, year, usage, name])
    with open(out / "styles.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(KAGGLE_COLUMNS)
        w.writerows(rows)
    (out / "README.md").write_text(
        f"Synthetic demo catalog written by prodrec (n={n}, seed={seed}): drawn product silhouettes in the\n"
        "Kaggle Fashion Product Images schema. Not real data; for trying the kit offline.\n"
    )
    return out
