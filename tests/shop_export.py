"""A shop's product export as such exports come: opaque string ids, an HTML description, photos as relative
paths (grayscale, CMYK, RGBA, palette, one truncated, one empty), some as URLs, some empty, two duplicated
ids, typed columns (price, stock). Used by test_formats and test_fetch."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

COLOURS = {"Blue": (30, 60, 200), "Red": (200, 30, 40), "Green": (40, 160, 60), "Black": (15, 15, 15)}
TYPES = ["Skirts", "Shirts", "Handbags"]


def pid(i: int) -> str:
    return "P-" + hashlib.sha1(str(i).encode()).hexdigest()[:10]


def picture(colour: str, mode: str, size: int = 48) -> Image.Image:
    rgb = Image.new("RGB", (size, size), COLOURS[colour])
    arr = np.asarray(rgb).copy()
    arr[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 250  # a light square: not a flat picture
    im = Image.fromarray(arr)
    if mode == "P":
        return im.convert("P", palette=Image.ADAPTIVE, colors=8)
    return im.convert(mode)


def write_photo(path: Path, colour: str, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = {"CMYK": "JPEG", "RGB": "JPEG", "L": "PNG", "RGBA": "PNG", "P": "GIF"}[mode]
    picture(colour, mode).save(path, format=fmt)


def shop_frame(root: Path, n: int = 24, urls: dict[int, str] | None = None) -> pd.DataFrame:
    """The export's rows (``n`` products + 2 duplicated ids); photos written under ``root/photos``.

    Product 3 has no photo value, product 5's photo is an empty file, product 6's is truncated; ``urls``
    gives the rows (by number) whose image is a URL instead of a path.
    """
    modes = ["RGB", "L", "CMYK", "RGBA", "P"]
    rows = []
    for i in range(n):
        colour, kind = list(COLOURS)[i % 4], TYPES[i % 3]
        ext = {"CMYK": "jpg", "RGB": "jpg", "L": "png", "RGBA": "png", "P": "gif"}[modes[i % 5]]
        rel = f"photos/{kind.lower()}/{pid(i)}.{ext}"
        write_photo(root / rel, colour, modes[i % 5])
        image = rel
        if urls and i in urls:
            image = urls[i]
        rows.append({
            "product_id": pid(i),
            "title": f"{colour} {kind[:-1].lower()} no. {i}",
            "description": f"<p>A fine {kind[:-1].lower()} &amp; more.</p><ul><li>Colour: {colour}</li>"
                           f"<li>Type:&nbsp;{kind}</li></ul>",
            "colour": colour,
            "category": kind,
            "image": image,
            "price": 10.5 + i,
            "stock": i % 7,
        })
    rows[3]["image"] = ""
    (root / f"photos/handbags/{pid(5)}.jpg").write_bytes(b"")  # product 4 (a GIF) keeps its photo; 5's is empty
    jpeg = root / f"photos/skirts/{pid(6)}.png"  # product 6: grayscale PNG, cut after its header
    jpeg.write_bytes(jpeg.read_bytes()[:80])
    dup = [dict(rows[1], title="second copy"), dict(rows[2], title="second copy")]
    return pd.DataFrame(rows + dup)


def write_export(root: Path, n: int = 24, urls: dict[int, str] | None = None) -> pd.DataFrame:
    """The export as products.parquet, products.jsonl, products.jsonl.gz, products.json, products.csv.zst and
    products.tsv in ``root``; returns the frame."""
    df = shop_frame(root, n, urls)
    df.to_parquet(root / "products.parquet", index=False)
    df.to_json(root / "products.jsonl", orient="records", lines=True, force_ascii=False)
    df.to_json(root / "products.jsonl.gz", orient="records", lines=True, compression="gzip")
    df.to_json(root / "products.json", orient="records", force_ascii=False)
    df.to_csv(root / "products.tsv", sep="\t", index=False)
    with pa.CompressedOutputStream(str(root / "products.csv.zst"), "zstd") as out:
        out.write(df.to_csv(index=False).encode("utf-8"))
    return df


FLAGS = dict(id_column="product_id", image_column="image", text_columns=["title", "description", "colour"],
             label_columns=["category", "colour"])
