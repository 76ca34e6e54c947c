"""Product catalogs: loading, validation report, seeded sampling.

A :class:`Catalog` is a table of products in the file's order, with one image path per product (empty when
the catalog has no images) and the metadata columns, read through a :class:`~prodrec.data.schema.CatalogSchema`
that says which column is the id, where the images are, which columns make the product sentence and which
are labels and captions. :func:`load_catalog` reads

* the Kaggle "Fashion Product Images" layout: ``styles.csv`` + ``images/<id>.jpg`` (also inside a
  ``myntradataset/`` sub-folder, as on Kaggle),
* any other catalog file, CSV/TSV, Parquet, JSON Lines or a JSON array, plain or gzip/zstd-compressed
  (:mod:`prodrec.data.formats`), described by keyword arguments (CLI flags) or a ``prodrec.toml`` beside it,
* a pandas DataFrame (image paths relative to ``root``).

Images may be paths (relative to the catalog's folder) or http(s) URLs: a URL points at its file in the image
cache once :mod:`prodrec.data.fetch` has downloaded it (``fetch_images=True``, or ``prodrec fetch-images``).
Markup in text columns is made plain text (``text_clean``).

Ids are kept as the strings the file holds (``"0015970"`` stays ``"0015970"``; ``"007"`` and ``"7"`` are
two products). Nothing is silently dropped: every skipped or repaired row is counted in :class:`LoadReport`,
with the ids behind each count.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.errors import CatalogError, ConfigError, DataNotFound, UnknownIdError
from ..core.io import fingerprint
from .fetch import NOT_FETCHED, FetchReport, ImageCache, fetch_images, is_url
from .formats import ReadInfo, as_strings, read_catalog_file
from .images import ImageError, check_image_header
from .schema import KAGGLE_COLUMNS, CatalogSchema, CatalogSpec, locate_catalog
from .text import LabelMask, clean_text_columns, has_text, product_sentences

__all__ = ["KAGGLE_COLUMNS", "Catalog", "CatalogError", "LoadReport", "load_catalog"]

#: How many example ids / lines a report keeps per problem (counts are always complete).
REPORT_EXAMPLES = 20
#: How many of them the text report names.
SHOWN = 5

VerifyMode = Literal["none", "header"]


@dataclass
class LoadReport:
    """What happened while loading a catalog. ``str(report)`` gives a human summary naming the ids behind
    every count (the first few, then how many more)."""

    source: str
    csv_path: str
    layout: str
    format: str = "csv"
    encoding: str = "utf-8"
    delimiter: str | None = ","
    rows_read: int = 0
    malformed_recovered: int = 0
    malformed_skipped: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    duplicate_ids: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    missing_id: int = 0
    #: Rows whose image column is empty.
    empty_images: int = 0
    #: Products kept without a usable photo (their other arms still rank them; see ``image_note``).
    kept_without_image: int = 0
    #: Products each kind of input can feed: ``{"image": with a usable photo, "text": with text}``.
    arm_inputs: dict[str, int] = field(default_factory=dict)
    empty_image_examples: list[str] = field(default_factory=list)
    #: Rows whose image file (a path) does not exist.
    missing_images: int = 0
    missing_image_examples: list[str] = field(default_factory=list)
    #: Rows whose image is a URL: how many, and those without a cached file (id -> why).
    image_urls: int = 0
    unfetched_urls: int = 0
    unfetched_url_examples: dict[str, str] = field(default_factory=dict)
    unreadable_images: int = 0
    unreadable_image_examples: dict[str, str] = field(default_factory=dict)
    unreadable_image_ids: list[str] = field(default_factory=list)
    #: Usable products whose product sentence is empty.
    empty_text: int = 0
    empty_text_examples: list[str] = field(default_factory=list)
    #: Values made plain text per column (markup removed).
    text_cleaned: dict[str, int] = field(default_factory=dict)
    nan_counts: dict[str, int] = field(default_factory=dict)
    products: int = 0
    fetch: FetchReport | None = None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def _read(self, info: ReadInfo) -> None:
        self.format, self.encoding, self.delimiter = info.format, info.encoding, info.delimiter
        self.rows_read, self.malformed_recovered = info.rows_read, info.malformed_recovered
        self.malformed_skipped, self.malformed_examples = info.malformed_skipped, info.malformed_examples
        self.notes.extend(info.notes)

    def __str__(self) -> str:
        how = [f"{self.layout} layout", self.csv_path or "in memory", self.format]
        if self.delimiter is not None:
            how += [f"encoding {self.encoding}", "delimiter " + {"\t": "tab"}.get(self.delimiter, repr(self.delimiter))]
        lines = [f"catalog {self.source} ({', '.join(how)})"]

        def count(label: str, n: int, ids: Sequence[str] = (), always: bool = True) -> None:
            if n or always:
                lines.append(f"  {label:<26}{n:>7}" + (f"  {_named(ids, n)}" if n and ids else ""))

        count("rows read", self.rows_read)
        count("malformed rows recovered", self.malformed_recovered)
        count("malformed rows skipped", self.malformed_skipped)
        count("rows without an id", self.missing_id)
        count("duplicate ids (1st kept)", self.duplicate_ids, self.duplicate_examples)
        count("rows without image value", self.empty_images, self.empty_image_examples, always=False)
        count("image files missing", self.missing_images, self.missing_image_examples)
        if self.image_urls:
            count("image URLs", self.image_urls)
            count("image URLs not fetched", self.unfetched_urls, list(self.unfetched_url_examples))
        count("unreadable images", self.unreadable_images, self.unreadable_image_ids)
        count("products without text", self.empty_text, self.empty_text_examples, always=False)
        count("usable products", self.products)
        count("  kept without a photo", self.kept_without_image, always=False)
        if self.arm_inputs:
            lines.append("  products per input: " + ", ".join(f"{k} {v}" for k, v in self.arm_inputs.items()))
        nans = {k: v for k, v in self.nan_counts.items() if v}
        if nans:
            lines.append("  missing values: " + ", ".join(f"{k} {v}" for k, v in nans.items()))
        if self.text_cleaned:
            lines.append("  markup made plain text: " + ", ".join(f"{k} {v}" for k, v in self.text_cleaned.items()))
        for path, why in list(self.unreadable_image_examples.items())[:SHOWN]:
            lines.append(f"  unreadable: {path}: {why}")
        reasons = list(self.unfetched_url_examples.items())
        for pid, why in [(p, w) for p, w in reasons if w != NOT_FETCHED][:SHOWN]:  # failures, with their reason
            lines.append(f"  not fetched: {pid}: {why}")
        if any(why == NOT_FETCHED for _, why in reasons):
            lines.append("  (download image URLs with `prodrec fetch-images`, or `prodrec embed --fetch-images`)")
        if self.fetch is not None:
            lines.append(f"  fetch: {self.fetch.summary()}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


def _named(ids: Sequence[str], n: int) -> str:
    """The first ids of ``n`` as ``'a', 'b', 'c' and 12 more``."""
    head = list(ids)[:SHOWN]
    return ", ".join(map(repr, head)) + (f" and {n - len(head)} more" if n > len(head) else "")


@dataclass
class Catalog:
    """Products in the file's order. ``df`` has the columns ``id`` (str), ``image_path`` and the metadata
    columns; ``schema`` (resolved against the file) names the text, label and caption columns."""

    df: pd.DataFrame
    root: Path
    report: LoadReport
    schema: CatalogSchema
    sample_info: dict[str, Any] | None = None
    #: Products dropped when the catalog was loaded (``require_images``): id -> why (not in the report's
    #: JSON: the Kaggle sample drops 34,863); an id asked for later is refused with its reason.
    dropped: dict[str, str] = field(default_factory=dict, repr=False)

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
        return f"Catalog({len(self)} products from {self.root}, {self.schema.layout} layout)"

    @property
    def ids(self) -> np.ndarray:
        return self.df["id"].to_numpy()

    @property
    def image_paths(self) -> list[str]:
        return self.df["image_path"].tolist()

    @property
    def image_notes(self) -> list[str]:
        """Why each product has no usable photo ("" where it has one; see ``load_catalog(require_images=)``)."""
        if "image_note" not in self.df.columns:
            return [""] * len(self.df)
        return self.df["image_note"].fillna("").astype(str).tolist()

    @property
    def text_columns(self) -> tuple[str, ...]:
        return self.schema.text_columns or ()

    @property
    def label_columns(self) -> tuple[str, ...]:
        return self.schema.label_columns or ()

    @property
    def has_images(self) -> bool:
        return self.schema.has_images

    @property
    def labels(self) -> pd.DataFrame:
        """The metadata indexed by product id (what evaluation and galleries look labels up in)."""
        return self.df.set_index("id")

    def _derive(self, df: pd.DataFrame, sample_info: dict[str, Any] | None) -> Catalog:
        return Catalog(df, self.root, self.report, self.schema, sample_info, self.dropped)

    def positions(self, ids: Sequence[Any]) -> np.ndarray:
        """Row positions of ``ids`` (compared as strings); unknown ids raise :class:`UnknownIdError`."""
        keys = [str(i) for i in ids]
        pos = self._pos.get_indexer(keys)
        if (pos < 0).any():
            raise UnknownIdError([k for k, p in zip(keys, pos) if p < 0], f"this catalog of {len(self)} products",
                                 known=self.ids)
        return pos

    def row(self, product_id: Any) -> pd.Series:
        return self.df.iloc[int(self.positions([product_id])[0])]

    def subset(self, ids: Sequence[Any]) -> Catalog:
        pos = np.sort(self.positions(ids))
        return self._derive(self.df.iloc[pos], self.sample_info)

    def sample(self, n: int | None, seed: int = 0, stratify: str | None = None) -> Catalog:
        """A seeded sample of ``n`` products (all of them when ``n`` is None or ≥ the catalog size).

        With ``stratify``, each value of that column keeps its share of the catalog (largest-remainder
        rounding), so rare categories are not lost to chance.
        """
        if n is not None and n <= 0:
            raise ConfigError(f"sample size must be positive, got {n}")
        if stratify is not None and stratify not in self.df.columns:
            raise ConfigError(f"cannot stratify by {stratify!r}: not a column ({list(self.df.columns)})")
        if n is None or n >= len(self):
            info = {"n_requested": n, "n": len(self), "seed": seed, "stratify": stratify, "all": True}
            return self._derive(self.df, info)
        rng = np.random.default_rng(seed)
        if stratify is None:
            pos = rng.choice(len(self), size=n, replace=False)
        else:
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
        return self._derive(self.df.iloc[np.sort(pos)], info)

    def with_ids(self, ids: Sequence[Any], full: Catalog) -> Catalog:
        """This sample plus the products ``ids`` of ``full`` it lacks (query products of a gallery, say);
        the added ids are recorded in ``sample_info``."""
        known, _ = full.split_known(ids)
        have = set(self.ids.tolist())
        want = [i for i in known if i not in have]
        if not want:
            return self
        out = full.subset([*self.ids.tolist(), *want])
        out.sample_info = dict(self.sample_info or {}, added_ids=want)
        return out

    def split_known(self, ids: Sequence[Any]) -> tuple[list[str], list[str]]:
        """(ids in this catalog, ids not in it), as strings, in the given order."""
        keys = [str(i) for i in ids]
        found = self._pos.get_indexer(keys) >= 0
        return [k for k, f in zip(keys, found) if f], [k for k, f in zip(keys, found) if not f]

    def pick_queries(self, wanted: Sequence[Any] = (), n: int = 4, seed: int = 0, by: str | None = None) -> list[str]:
        """The ``wanted`` ids that are in this catalog; if none are, ``n`` seeded picks of distinct ``by``
        values (default: the first label column).

        Notebooks ask for fixed query ids (the paper's figures); on another catalog (the demo one, a
        different sample, your own) they still get queries, chosen reproducibly.
        """
        known, _ = self.split_known(wanted)
        if known:
            return known
        by = by or (self.label_columns[0] if self.label_columns else None)
        rng = np.random.default_rng(seed)
        df = self.df.sample(frac=1.0, random_state=int(rng.integers(2**31)))
        if by in df.columns:
            df = df.drop_duplicates(by)
        return df["id"].head(n).tolist()

    def sentence(self, product_id: Any, fields: Sequence[str] | None = None, mask: LabelMask | None = None) -> str:
        """The product sentence of ``product_id`` (what the text arm reads): its ``fields`` (default: the
        text columns) joined, with the label values of ``mask`` taken out when given."""
        fields = list(self.text_columns if fields is None else fields)
        df = self.df.iloc[[int(self.positions([product_id])[0])]]
        if mask is not None:
            df, _ = mask.apply(df, fields)
        return product_sentences(df, fields)[0]

    def masked(self, mask: LabelMask, fields: Sequence[str] | None = None) -> tuple[Catalog, dict[str, int]]:
        """This catalog with the label values of ``mask`` taken out of ``fields`` (default: the text
        columns), and how many were masked per label column (see :class:`~prodrec.data.text.LabelMask`)."""
        df, counts = mask.apply(self.df, list(self.text_columns if fields is None else fields))
        return self._derive(df, self.sample_info), counts

    def describe(self) -> dict[str, Any]:
        """Provenance of this catalog: where it came from, how big it is, how it was sampled."""
        return {
            "data_dir": str(self.root),
            "csv": self.report.csv_path,
            "format": self.report.format,
            "layout": self.report.layout,
            "catalog_rows": self.report.rows_read,
            "usable_products": self.report.products,
            "products": len(self),
            "sample": self.sample_info,
            "schema": self.schema.to_dict(),
        }


def caption_parts(row: pd.Series, columns: Sequence[str]) -> tuple[str, str]:
    """(name, other caption values joined by " | ") of one product; missing values are left out, a
    product without a name is named by its id."""
    values = [row.get(c) if c in row.index else None for c in columns]
    text = ["" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v) for v in values]
    name = (text[0] if text else "") or str(row.name)
    return name, " | ".join(t for t in text[1:] if t)


def load_catalog(
    path: str | os.PathLike[str] | pd.DataFrame,
    *,
    schema: CatalogSchema | None = None,
    root: str | os.PathLike[str] | None = None,
    id_column: str | None = None,
    image_column: str | None = None,
    image_pattern: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    label_columns: Sequence[str] | str | None = None,
    caption_columns: Sequence[str] | str | None = None,
    delimiter: str | None = None,
    overflow_column: str | None = None,
    format: str | None = None,  # noqa: A002 - the flag's name (--format)
    text_clean: str | None = None,
    image_cache: ImageCache | str | os.PathLike[str] | None = None,
    fetch: bool = False,
    fetch_options: Mapping[str, Any] | None = None,
    verify_images: VerifyMode = "header",
    require_images: bool | None = None,
    max_image_pixels: int = 40_000_000,
    workers: int | None = None,
    progress: bool = True,
) -> Catalog:
    """Load a product catalog and report what was wrong with it.

    Parameters
    ----------
    path:
        A Kaggle-layout folder (or its ``styles.csv``), a folder or file with a ``prodrec.toml`` /
        ``<stem>.prodrec.toml`` description beside it, that description file, any catalog file (CSV, TSV,
        Parquet, JSON Lines, JSON array; also ``.gz`` / ``.zst``), or a pandas DataFrame.
    schema:
        A :class:`~prodrec.data.schema.CatalogSchema` to start from (default: the Kaggle preset for a Kaggle
        folder, the description file when there is one, else a generic schema).
    root:
        The folder image paths are relative to (default: the catalog file's folder; for a DataFrame, the
        current folder).
    id_column, image_column, image_pattern, text_columns, label_columns, caption_columns, delimiter, \
    overflow_column, format, text_clean:
        Override single settings of the schema (they win over the description file). ``image_column``
        holds paths relative to ``root``, or http(s) URLs; ``image_pattern`` is a path such as
        ``"photos/{id}.png"`` (or a URL pattern). Without either, the catalog has no images: only the text
        arm can be built. ``text_columns=[]`` means no product text: only the image arm. The delimiter is
        sniffed when unset; the format comes from the extension (see :mod:`prodrec.data.formats`).
        ``text_clean`` (``auto``, ``html``, ``none``) is how markup in the text, label and caption columns
        is made plain text (``auto``: the values that hold markup).
    image_cache, fetch, fetch_options:
        The image cache URLs are looked up in (:class:`~prodrec.data.fetch.ImageCache` or its folder,
        ``<store>/images``); ``fetch=True`` downloads the URLs it lacks first
        (:func:`~prodrec.data.fetch.fetch_images` with ``fetch_options``; the result is ``report.fetch``).
    verify_images:
        ``"header"`` (default) opens each image's header: zero-byte files, non-images and images whose
        declared size exceeds ``max_image_pixels`` (decompression bombs) are skipped and named in the report.
        Damage deeper in a file (a truncated JPEG) is caught when the image is decoded for embedding.
    require_images:
        When the catalog has images, drop products whose image is missing, not fetched or unreadable
        (``True``), or keep them for the arms they have (``False``: their image path is empty and the
        ``image_note`` column says why; the text arm and search still rank them). Default: the schema's
        ``require_images`` (False for any catalog; True for the Kaggle preset, whose rows without photos are
        not part of the image study).
    workers:
        Threads for the header checks (default: serial, fastest on local disks; use 8-16 on network storage).

    Duplicate ids: the first row wins; later rows are counted and dropped.
    """
    overrides = dict(id_column=id_column, image_column=image_column, image_pattern=image_pattern,
                     text_columns=text_columns, label_columns=label_columns, caption_columns=caption_columns,
                     delimiter=delimiter, overflow_column=overflow_column, format=format, text_clean=text_clean)
    if fetch and image_cache is None:
        raise ConfigError("fetch=True needs image_cache= (the folder downloaded photos go to, e.g. <store>/images)")
    if isinstance(path, pd.DataFrame):
        spec = CatalogSpec(csv_path=Path(), root=Path(root or Path.cwd()).expanduser(),
                           schema=(schema or CatalogSchema()).replace(**overrides))
        report = LoadReport(source=f"DataFrame of {len(path)} rows", csv_path="", layout=spec.schema.layout,
                            format="DataFrame", delimiter=None)
        df = as_strings(path)
        report.rows_read = len(df)
    else:
        spec = locate_catalog(path, overrides) if schema is None else _spec_from_schema(path, schema, overrides)
        if root is not None:
            spec.root = Path(root).expanduser()
        report = LoadReport(source=str(Path(path).expanduser()), csv_path=str(spec.csv_path),
                            layout=spec.schema.layout)
        if spec.description is not None:
            report.notes.append(f"settings read from {spec.description}")
        df, info = read_catalog_file(spec.csv_path, spec.schema.format, delimiter=spec.schema.delimiter,
                                     overflow_column=spec.schema.overflow_column)
        report._read(info)
    sch = spec.schema.resolve(df.columns)
    df = _clean_ids(df, sch, report)
    report.text_cleaned = clean_text_columns(
        df, [*sch.text_columns, *sch.label_columns, *sch.caption_columns], sch.text_clean)
    cache = image_cache if isinstance(image_cache, ImageCache) or image_cache is None else ImageCache(image_cache)
    require = sch.require_images if require_images is None else bool(require_images)
    images = _Images(verify_images, require, max_image_pixels, workers, cache, fetch,
                     dict(fetch_options or {}, progress=progress))
    df = images.attach(df, sch, spec.root, report)
    report.nan_counts = {c: int(df[c].isna().sum()) for c in dict.fromkeys([*sch.text_columns, *sch.label_columns])}
    report.products = len(df)
    if sch.text_columns:
        empty = ~has_text(df, sch.text_columns).to_numpy()
        report.empty_text = int(empty.sum())
        report.empty_text_examples = [str(i) for i in df.loc[empty, "id"].head(REPORT_EXAMPLES)]
    if sch.has_images:
        report.arm_inputs["photo"] = int((df["image_path"] != "").sum())
    if sch.text_columns:
        report.arm_inputs["text"] = len(df) - report.empty_text
    if not sch.has_images:
        report.notes.append("no image column or pattern: the catalog has no images (text arm only)")
    if not sch.text_columns:
        report.notes.append("no text columns: the catalog has no product text (image arm only)")
    cols = ["id", "image_path"] + [c for c in df.columns if c not in ("id", "image_path")]
    return Catalog(df[cols], spec.root, report, sch, dropped=images.dropped)


def _spec_from_schema(path: str | os.PathLike[str], schema: CatalogSchema, overrides: dict[str, Any]) -> CatalogSpec:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFound(f"catalog path {p} does not exist")
    schema = schema.replace(**{k: v for k, v in overrides.items() if v is not None})
    csv_path = p / (schema.catalog_file or "styles.csv") if p.is_dir() else p
    if not csv_path.is_file():
        raise CatalogError(f"catalog file {csv_path} does not exist")
    return CatalogSpec(csv_path=csv_path, root=csv_path.parent, schema=schema)


def _clean_ids(df: pd.DataFrame, sch: CatalogSchema, report: LoadReport) -> pd.DataFrame:
    """Ids as stripped strings; rows without one, and repeated ids after the first, dropped and counted."""
    if sch.id_column != "id" and "id" in df.columns:
        df = df.rename(columns={"id": "id_"})  # a column named id that is not the id: keep it, renamed
        report.notes.append(f"column 'id' is not the id column ({sch.id_column!r}); kept as 'id_'")
    df = df.rename(columns={sch.id_column: "id"})
    df["id"] = df["id"].str.strip()
    no_id = df["id"].isna() | (df["id"] == "")
    report.missing_id = int(no_id.sum())
    df = df[~no_id]
    dup = df["id"].duplicated(keep="first")
    report.duplicate_ids = int(dup.sum())
    report.duplicate_examples = [str(i) for i in df.loc[dup, "id"].head(REPORT_EXAMPLES)]
    return df[~dup].copy()


def _ids(df: pd.DataFrame, mask: np.ndarray) -> list[str]:
    return [str(i) for i in df.loc[mask, "id"].head(REPORT_EXAMPLES)]


@dataclass
class _Images:
    """How image paths are attached: verification, URL cache, fetching."""

    verify: VerifyMode
    require: bool
    max_pixels: int
    workers: int | None
    cache: ImageCache | None
    fetch: bool
    fetch_options: dict[str, Any]
    #: Filled by :meth:`attach` when products without a usable photo are dropped: id -> why.
    dropped: dict[str, str] = field(default_factory=dict)

    def attach(self, df: pd.DataFrame, sch: CatalogSchema, root: Path, report: LoadReport) -> pd.DataFrame:
        """Add ``image_path`` (absolute; empty without images) and drop or count the products without a
        usable image: no value, a missing file, a URL not fetched, an unreadable file."""
        prefix = str(root) + os.sep
        if sch.image_pattern is not None:
            values = [sch.image_pattern.format(id=i) for i in df["id"]]
        elif sch.image_column is not None:
            values = [p.strip() if isinstance(p, str) else "" for p in df[sch.image_column]]
        else:
            df["image_path"] = ""
            df["image_note"] = "the catalog has no images"
            return df
        url = np.array([is_url(v) for v in values], dtype=bool)
        empty = np.array([not v for v in values], dtype=bool)
        paths = ["" if e or u else (v if os.path.isabs(v) else prefix + v) for v, e, u in zip(values, empty, url)]
        report.empty_images = int(empty.sum())
        report.empty_image_examples = _ids(df, empty)
        report.image_urls = int(url.sum())
        unfetched = np.zeros(len(df), dtype=bool)
        if url.any():
            unfetched = self._resolve_urls(df, values, url, paths, report)
        df["image_path"] = paths
        exists = _existing(paths)
        missing = ~exists & ~empty & ~url
        report.missing_images = int(missing.sum())
        report.missing_image_examples = _ids(df, missing)
        bad = np.zeros(len(df), dtype=bool)
        bad_why: dict[int, str] = {}
        if self.verify == "header" and exists.any():
            checked = np.flatnonzero(exists)
            problems = _verify_headers([paths[i] for i in checked], self.max_pixels, self.workers)
            for i, why in zip(checked, problems):
                if why is not None:
                    bad[i] = True
                    bad_why[int(i)] = why
                    if len(report.unreadable_image_examples) < REPORT_EXAMPLES:
                        report.unreadable_image_examples[paths[i]] = why
            report.unreadable_images = int(bad.sum())
            report.unreadable_image_ids = _ids(df, bad)
        usable = exists & ~bad & ~unfetched
        notes = np.full(len(df), "", dtype=object)
        notes[empty] = "no image in the catalog"
        notes[missing] = "image file missing"
        for i in np.flatnonzero(unfetched):
            notes[i] = f"image URL not fetched ({report.unfetched_url_examples.get(str(df['id'].iloc[i]), 'not in the cache')})"
        for i, why in bad_why.items():
            notes[i] = f"unreadable image ({why})"
        if self.require:
            self.dropped = {str(i): str(n) for i, n in zip(df["id"][~usable], notes[~usable])}
            return df[usable].assign(image_note="")
        df["image_note"] = notes
        df.loc[~usable, "image_path"] = ""
        report.kept_without_image = int((~usable).sum())
        return df

    def _resolve_urls(self, df: pd.DataFrame, values: list[str], url: np.ndarray, paths: list[str],
                      report: LoadReport) -> np.ndarray:
        """Point URL rows at their cached files (fetching the missing ones first when asked); return which
        rows have none."""
        ids = df["id"].tolist()
        wanted = {ids[i]: values[i] for i in np.flatnonzero(url)}
        if self.fetch and self.cache is not None:
            report.fetch = fetch_images(wanted, self.cache, **self.fetch_options)
        found = self.cache.resolve(list(set(wanted.values()))) if self.cache is not None else {}
        unfetched = np.zeros(len(df), dtype=bool)
        for i in np.flatnonzero(url):
            hit = found.get(values[i], NOT_FETCHED)
            if isinstance(hit, Path):
                paths[i] = str(hit)
                continue
            unfetched[i] = True
            if len(report.unfetched_url_examples) < REPORT_EXAMPLES:
                report.unfetched_url_examples[ids[i]] = hit
        report.unfetched_urls = int(unfetched.sum())
        return unfetched


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


#: The header checks of the last catalogs loaded in this process (a notebook builds several experiments on one
#: catalog): keyed by every path's size and modification time, so a changed, added or removed file checks again.
_HEADER_MEMO: OrderedDict[str, list[str | None]] = OrderedDict()
_HEADER_MEMO_SIZE = 4


def _stat_key(paths: list[str], max_pixels: int) -> str | None:
    """A fingerprint of ``paths`` as they are on disk now (name, size, mtime), or None when one cannot be
    read (the check reports it)."""
    try:
        stats = [os.stat(p) for p in paths]
    except OSError:
        return None
    return fingerprint([str(max_pixels), *(f"{p}|{st.st_size}|{st.st_mtime_ns}" for p, st in zip(paths, stats))])


def _verify_headers(paths: list[str], max_pixels: int, workers: int | None) -> list[str | None]:
    """Header problems per path (None = fine), checked once per process for files that have not changed
    since (:data:`_HEADER_MEMO`: one ``stat`` per file, a tenth of a header's cost)."""
    key = _stat_key(paths, max_pixels)
    if key is not None and key in _HEADER_MEMO:
        _HEADER_MEMO.move_to_end(key)
        return list(_HEADER_MEMO[key])
    problems = _check_headers(paths, max_pixels, workers)
    if key is not None:
        _HEADER_MEMO[key] = problems
        while len(_HEADER_MEMO) > _HEADER_MEMO_SIZE:
            _HEADER_MEMO.popitem(last=False)
    return list(problems)


def _check_headers(paths: list[str], max_pixels: int, workers: int | None) -> list[str | None]:
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
