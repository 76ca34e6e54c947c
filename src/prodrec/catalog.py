"""Product catalogs: loading, validation report, seeded sampling.

A :class:`Catalog` is a table of products sorted by id, with one image path per product and the metadata
columns used to build product sentences and to evaluate recommendations. :func:`load_catalog` reads

* the Kaggle "Fashion Product Images" layout: ``styles.csv`` + ``images/<id>.jpg`` (also inside a
  ``myntradataset/`` sub-folder, as on Kaggle), and
* a generic layout: any CSV with an id column, an image column (or a path pattern such as
  ``"photos/{id}.png"``) and the text columns you name.

Nothing is silently dropped: every skipped or repaired row is counted in :class:`LoadReport`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from .images import ImageError, check_image_header

KAGGLE_COLUMNS = (
    "id",
    "gender",
    "masterCategory",
    "subCategory",
    "articleType",
    "baseColour",
    "season",
    "year",
    "usage",
    "productDisplayName",
)
KAGGLE_IMAGE_PATTERN = "images/{id}.jpg"
#: How many example ids / lines a report keeps per problem (counts are always complete).
REPORT_EXAMPLES = 20

VerifyMode = Literal["none", "header"]


class CatalogError(ValueError):
    """The catalog cannot be used as given (empty, missing columns, unknown ids...)."""


@dataclass
class LoadReport:
    """What happened while loading a catalog. ``str(report)`` gives a human summary."""

    source: str
    csv_path: str
    layout: str
    encoding: str = "utf-8"
    rows_read: int = 0
    malformed_recovered: int = 0
    malformed_skipped: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    duplicate_ids: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    missing_id: int = 0
    missing_images: int = 0
    missing_image_examples: list[str] = field(default_factory=list)
    unreadable_images: int = 0
    unreadable_image_examples: dict[str, str] = field(default_factory=dict)
    nan_counts: dict[str, int] = field(default_factory=dict)
    products: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        lines = [
            f"catalog {self.source} ({self.layout} layout, {self.csv_path}, encoding {self.encoding})",
            f"  rows read                 {self.rows_read:>7}",
            f"  malformed rows recovered  {self.malformed_recovered:>7}",
            f"  malformed rows skipped    {self.malformed_skipped:>7}",
            f"  rows without an id        {self.missing_id:>7}",
            f"  duplicate ids (1st kept)  {self.duplicate_ids:>7}",
            f"  rows without image file   {self.missing_images:>7}",
            f"  unreadable images         {self.unreadable_images:>7}",
            f"  usable products           {self.products:>7}",
        ]
        nans = {k: v for k, v in self.nan_counts.items() if v}
        if nans:
            lines.append("  missing values: " + ", ".join(f"{k} {v}" for k, v in nans.items()))
        for path, why in list(self.unreadable_image_examples.items())[:5]:
            lines.append(f"  unreadable: {path}: {why}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


@dataclass
class Catalog:
    """Products sorted by id. ``df`` has the columns ``id``, ``image_path`` and the metadata columns."""

    df: pd.DataFrame
    root: Path
    report: LoadReport
    text_columns: tuple[str, ...]
    sample_info: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if len(self.df) == 0:
            raise CatalogError(
                f"catalog {self.root} has no usable products.\n{self.report}\n"
                "Check the path, the id/image columns, and that the image files exist."
            )
        self.df = self.df.reset_index(drop=True)
        self._pos = pd.Index(self.df["id"])

    def __len__(self) -> int:
        return len(self.df)

    def __repr__(self) -> str:
        return f"Catalog({len(self)} products from {self.root})"

    @property
    def ids(self) -> np.ndarray:
        return self.df["id"].to_numpy()

    @property
    def image_paths(self) -> list[str]:
        return self.df["image_path"].tolist()

    def positions(self, ids: Sequence[Any]) -> np.ndarray:
        """Row positions of ``ids``; unknown ids raise :class:`KeyError` naming them."""
        ids = [_coerce_id(i, self.df["id"].dtype) for i in ids]
        pos = self._pos.get_indexer(ids)
        if (pos < 0).any():
            unknown = [i for i, p in zip(ids, pos) if p < 0]
            raise KeyError(
                f"unknown product id(s) {unknown[:10]} (catalog of {len(self)} products, "
                f"ids {self.ids[0]}..{self.ids[-1]})"
            )
        return pos

    def row(self, product_id: Any) -> pd.Series:
        return self.df.iloc[int(self.positions([product_id])[0])]

    def subset(self, ids: Sequence[Any]) -> Catalog:
        pos = np.sort(self.positions(ids))
        return Catalog(self.df.iloc[pos], self.root, self.report, self.text_columns, self.sample_info)

    def sample(self, n: int | None, seed: int = 0, stratify: str | None = None) -> Catalog:
        """A seeded sample of ``n`` products (all of them when ``n`` is None or ≥ the catalog size).

        With ``stratify``, each value of that column keeps its share of the catalog (largest-remainder
        rounding), so rare categories are not lost to chance.
        """
        if n is None or n >= len(self):
            info = {"n_requested": n, "n": len(self), "seed": seed, "stratify": stratify, "all": True}
            return Catalog(self.df, self.root, self.report, self.text_columns, info)
        if n <= 0:
            raise CatalogError(f"sample size must be positive, got {n}")
        rng = np.random.default_rng(seed)
        if stratify is None:
            pos = rng.choice(len(self), size=n, replace=False)
        else:
            if stratify not in self.df.columns:
                raise CatalogError(f"cannot stratify by {stratify!r}: not a column ({list(self.df.columns)})")
            groups = self.df.groupby(self.df[stratify].fillna("<NA>"), sort=True).indices
            sizes = np.array([len(v) for v in groups.values()], dtype=float)
            exact = sizes * n / sizes.sum()
            quota = np.floor(exact).astype(int)
            extra = np.argsort(-(exact - quota), kind="stable")[: n - quota.sum()]
            quota[extra] += 1
            pos = np.concatenate(
                [rng.choice(members, size=q, replace=False) for members, q in zip(groups.values(), quota)]
            )
        info = {"n_requested": n, "n": n, "seed": seed, "stratify": stratify, "all": False}
        return Catalog(self.df.iloc[np.sort(pos)], self.root, self.report, self.text_columns, info)

    def split_known(self, ids: Sequence[Any]) -> tuple[list[Any], list[Any]]:
        """(ids in this catalog, ids not in it), coerced to the catalog's id type, in the given order."""
        have = set(self.ids.tolist())
        coerced = [_coerce_id(i, self.df["id"].dtype) for i in ids]
        return [i for i in coerced if i in have], [i for i in coerced if i not in have]

    def pick_queries(self, wanted: Sequence[Any] = (), n: int = 4, seed: int = 0, by: str = "articleType") -> list[Any]:
        """The ``wanted`` ids that are in this catalog; if none are, ``n`` seeded picks of distinct ``by`` values.

        Notebooks ask for fixed query ids (the paper's figures); on another catalog (the demo one, a
        different sample) they still get queries, chosen reproducibly.
        """
        known, _ = self.split_known(wanted)
        if known:
            return known
        rng = np.random.default_rng(seed)
        df = self.df.sample(frac=1.0, random_state=rng.integers(2**31)) if len(self) else self.df
        if by in df.columns:
            df = df.drop_duplicates(by)
        return df["id"].head(n).tolist()

    def image_fingerprint(self) -> str:
        """Hash of ids, image paths (relative to the root) and file sizes: changes when the images do."""
        h = hashlib.sha256()
        for pid, path in zip(self.df["id"], self.df["image_path"]):
            try:
                size = os.path.getsize(path)
            except OSError:
                size = -1
            rel = os.path.relpath(path, self.root)
            h.update(f"{pid}\t{rel}\t{size}\n".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        """Provenance of this catalog: where it came from, how big it is, how it was sampled."""
        return {
            "data_dir": str(self.root),
            "csv": self.report.csv_path,
            "layout": self.report.layout,
            "catalog_rows": self.report.rows_read,
            "usable_products": self.report.products,
            "products": len(self),
            "sample": self.sample_info,
        }


def _coerce_id(value: Any, dtype: Any) -> Any:
    if pd.api.types.is_integer_dtype(dtype):
        try:
            return int(value)
        except (TypeError, ValueError):
            return value
    return str(value)


def find_kaggle_root(path: Path) -> Path | None:
    """The folder holding ``styles.csv`` + ``images/`` for a Kaggle-style path, or None."""
    path = Path(path)
    if path.is_file() and path.name == "styles.csv":
        return path.parent
    for cand in (path, path / "myntradataset", path / "fashion-dataset"):
        if (cand / "styles.csv").is_file():
            return cand
    return None


def _read_text(path: Path, report: LoadReport) -> str:
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        report.encoding = "cp1252"
        report.notes.append(
            f"{path.name} is not valid UTF-8 (first bad byte at offset {exc.start}); "
            "decoded as cp1252 (Windows Latin-1) instead"
        )
        return raw.decode("cp1252", errors="replace")


def _read_csv(
    path: Path, report: LoadReport, overflow_column: str | None
) -> pd.DataFrame:
    """Read a CSV as strings; rows with extra fields are repaired into ``overflow_column`` or skipped."""
    text = _read_text(path, report)
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0])), [])
    ncols = len(header)
    if ncols == 0:
        raise CatalogError(f"{path} is empty (no header line)")
    overflow_at = header.index(overflow_column) if overflow_column in header else None

    def fix(fields: list[str]) -> list[str] | None:
        example = ",".join(fields)[:120]
        if len(report.malformed_examples) < REPORT_EXAMPLES:
            report.malformed_examples.append(example)
        if overflow_at is not None and len(fields) > ncols:
            extra = len(fields) - ncols
            fixed = (
                fields[:overflow_at]
                + [",".join(fields[overflow_at : overflow_at + extra + 1])]
                + fields[overflow_at + extra + 1 :]
            )
            report.malformed_recovered += 1
            return fixed
        report.malformed_skipped += 1
        return None

    df = pd.read_csv(
        io.StringIO(text),
        dtype=str,
        engine="python",
        index_col=False,  # else pandas turns leading fields into an index when a row has extra fields
        on_bad_lines=fix,
        skipinitialspace=False,
        keep_default_na=True,
    )
    report.rows_read = len(df) + report.malformed_skipped
    return df


def load_catalog(
    path: str | os.PathLike[str],
    *,
    id_column: str = "id",
    image_column: str | None = None,
    image_pattern: str | None = None,
    text_columns: Sequence[str] | None = None,
    overflow_column: str | None = None,
    verify_images: VerifyMode = "header",
    require_images: bool = True,
    max_image_pixels: int = 40_000_000,
    workers: int | None = None,
) -> Catalog:
    """Load a product catalog and report what was wrong with it.

    Parameters
    ----------
    path:
        A Kaggle-layout folder (or its ``styles.csv``), or any CSV file for the generic layout.
    id_column, image_column, image_pattern, text_columns:
        Generic layout: which column holds the id, which holds an image path (relative to the CSV's folder),
        or a pattern such as ``"photos/{id}.png"``; which columns carry product text. The Kaggle layout
        sets these itself.
    overflow_column:
        Rows with more fields than the header (unquoted commas) are repaired by joining the extra fields
        into this column; without it they are skipped. The Kaggle layout uses ``productDisplayName``.
    verify_images:
        ``"header"`` (default) opens each image's header: zero-byte files, non-images and images whose
        declared size exceeds ``max_image_pixels`` (decompression bombs) are skipped and named in the report.
        Damage deeper in a file (a truncated JPEG) is caught when the image is decoded for embedding.
    require_images:
        Drop products without a usable image (default). ``False`` keeps them (text-only use).

    workers:
        Threads for the header checks (default: serial, fastest on local disks; use 8-16 on network storage).

    Duplicate ids: the first row wins; later rows are counted and dropped.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"catalog path {path} does not exist")
    kroot = find_kaggle_root(path)
    if kroot is not None and image_column is None and image_pattern is None:
        root, csv_path, layout = kroot, kroot / "styles.csv", "kaggle"
        image_pattern = KAGGLE_IMAGE_PATTERN
        overflow_column = overflow_column or "productDisplayName"
        text_columns = tuple(text_columns or [c for c in KAGGLE_COLUMNS if c != "id"])
    else:
        if path.is_dir():
            raise CatalogError(
                f"{path} is a folder without styles.csv; pass the CSV file itself with id_column, "
                "image_column or image_pattern and text_columns for a generic catalog"
            )
        root, csv_path, layout = path.parent, path, "generic"
        if image_column is None and image_pattern is None and require_images:
            raise CatalogError("a generic catalog needs image_column= or image_pattern= (or require_images=False)")
    report = LoadReport(source=str(path), csv_path=str(csv_path), layout=layout)
    df = _read_csv(csv_path, report, overflow_column)
    df.columns = [str(c).strip() for c in df.columns]

    needed = [id_column] + ([image_column] if image_column else []) + list(text_columns or [])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise CatalogError(f"{csv_path} lacks column(s) {missing}; it has {list(df.columns)}")
    if text_columns is None:
        text_columns = tuple(c for c in df.columns if c not in (id_column, image_column))
    df = df.rename(columns={id_column: "id"})
    df["id"] = df["id"].str.strip()
    no_id = df["id"].isna() | (df["id"] == "")
    report.missing_id = int(no_id.sum())
    df = df[~no_id]
    ids_numeric = pd.to_numeric(df["id"], errors="coerce")
    if ids_numeric.notna().all() and (ids_numeric == ids_numeric.round()).all():
        df["id"] = ids_numeric.astype("int64")
    dup = df["id"].duplicated(keep="first")
    report.duplicate_ids = int(dup.sum())
    report.duplicate_examples = [str(i) for i in df.loc[dup, "id"].head(REPORT_EXAMPLES)]
    df = df[~dup].sort_values("id", kind="stable")

    prefix = str(root) + os.sep
    if image_pattern is not None:
        df["image_path"] = [prefix + image_pattern.format(id=i) for i in df["id"]]
    elif image_column is not None:
        df["image_path"] = [
            (p if os.path.isabs(p) else prefix + p) if isinstance(p, str) and p.strip() else "" for p in df[image_column]
        ]
    else:
        df["image_path"] = ""

    if require_images:
        exists = _existing(df["image_path"].tolist())
        report.missing_images = int((~exists).sum())
        report.missing_image_examples = [str(i) for i in df.loc[~exists, "id"].head(REPORT_EXAMPLES)]
        df = df[exists]
        if verify_images == "header" and len(df):
            problems = _verify_headers(df["image_path"].tolist(), max_image_pixels, workers)
            bad = np.array([p is not None for p in problems], dtype=bool)
            report.unreadable_images = int(bad.sum())
            for p, why in zip(df["image_path"][bad], [q for q in problems if q is not None]):
                if len(report.unreadable_image_examples) < REPORT_EXAMPLES:
                    report.unreadable_image_examples[p] = why
            df = df[~bad]
    if "year" in df.columns:
        df["year"] = pd.to_numeric(df["year"], errors="coerce").astype("Int64")
    report.nan_counts = {c: int(df[c].isna().sum()) for c in text_columns if c in df.columns}
    report.products = len(df)
    cols = ["id", "image_path"] + [c for c in df.columns if c not in ("id", "image_path")]
    return Catalog(df[cols], root, report, tuple(text_columns))


def _existing(paths: list[str]) -> np.ndarray:
    """Which paths exist, listing each folder once instead of one stat per file."""
    listing: dict[str, set[str]] = {}
    out = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        if not p:
            continue
        d, name = os.path.split(p)
        if d not in listing:
            try:
                listing[d] = {e.name for e in os.scandir(d) if e.is_file()}
            except OSError:
                listing[d] = set()
        out[i] = name in listing[d]
    return out


def _verify_headers(paths: list[str], max_pixels: int, workers: int | None) -> list[str | None]:
    """Header problems per path (None = fine). Serial by default: reading a header is ~30 us of mostly
    GIL-holding Python, so threads only pay off on slow (network) storage: pass ``workers`` there."""

    def one(p: str) -> str | None:
        try:
            check_image_header(p, max_pixels=max_pixels)
            return None
        except ImageError as exc:
            return str(exc.reason)

    def chunk(ps: list[str]) -> list[str | None]:
        return [one(p) for p in ps]

    if not workers or workers <= 1:
        return chunk(paths)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [r for part in pool.map(chunk, [paths[i : i + 512] for i in range(0, len(paths), 512)]) for r in part]
