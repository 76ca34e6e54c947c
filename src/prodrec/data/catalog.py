"""Product catalogs: loading, validation report, seeded sampling.

A :class:`Catalog` is a table of products in the CSV's order, with one image path per product (empty when
the catalog has no images) and the metadata columns, read through a :class:`~prodrec.schema.CatalogSchema`
that says which column is the id, where the images are, which columns make the product sentence and which
are labels and captions. :func:`load_catalog` reads

* the Kaggle "Fashion Product Images" layout: ``styles.csv`` + ``images/<id>.jpg`` (also inside a
  ``myntradataset/`` sub-folder, as on Kaggle), and
* any other CSV, described by keyword arguments (CLI flags) or a ``prodrec.toml`` beside it.

Ids are kept as the strings the CSV holds (``"0015970"`` stays ``"0015970"``; ``"007"`` and ``"7"`` are
two products). Nothing is silently dropped: every skipped or repaired row is counted in :class:`LoadReport`.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from ..core.errors import CatalogError, ConfigError, DataNotFound, UnknownIdError
from .images import ImageError, check_image_header
from .schema import (
    DELIMITERS,
    KAGGLE_COLUMNS,
    CatalogSchema,
    CatalogSpec,
    locate_catalog,
)

__all__ = ["KAGGLE_COLUMNS", "Catalog", "CatalogError", "LoadReport", "load_catalog"]

#: How many example ids / lines a report keeps per problem (counts are always complete).
REPORT_EXAMPLES = 20

VerifyMode = Literal["none", "header"]


@dataclass
class LoadReport:
    """What happened while loading a catalog. ``str(report)`` gives a human summary."""

    source: str
    csv_path: str
    layout: str
    encoding: str = "utf-8"
    delimiter: str = ","
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
        sep = {"\t": "tab"}.get(self.delimiter, repr(self.delimiter))
        lines = [
            f"catalog {self.source} ({self.layout} layout, {self.csv_path}, encoding {self.encoding}, "
            f"delimiter {sep})",
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
    """Products in the CSV's order. ``df`` has the columns ``id`` (str), ``image_path`` and the metadata
    columns; ``schema`` (resolved against the CSV) names the text, label and caption columns."""

    df: pd.DataFrame
    root: Path
    report: LoadReport
    schema: CatalogSchema
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
        return f"Catalog({len(self)} products from {self.root}, {self.schema.layout} layout)"

    @property
    def ids(self) -> np.ndarray:
        return self.df["id"].to_numpy()

    @property
    def image_paths(self) -> list[str]:
        return self.df["image_path"].tolist()

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
        return Catalog(df, self.root, self.report, self.schema, sample_info)

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
            "schema": self.schema.to_dict(),
        }


def sniff_delimiter(text: str) -> str:
    """The field separator among , ; tab | that splits the first lines into the same number (≥ 2) of
    fields, preferring the most fields; raises :class:`CatalogError` saying what was seen otherwise."""
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if not lines:
        raise CatalogError("the catalog file is empty (no header line)")
    best: tuple[int, int, str] | None = None
    for d in DELIMITERS:
        counts = [len(r) for r in csv.reader(io.StringIO("\n".join(lines)), delimiter=d)]
        if counts[0] < 2:
            continue
        consistent = sum(c == counts[0] for c in counts)
        score = (consistent, counts[0], d)
        if best is None or score[:2] > best[:2]:
            best = score
    if best is None:
        shown = lines[0][:120]
        raise CatalogError(
            f"cannot tell the catalog's field separator: its header {shown!r} has a single field with each of "
            ", ; tab |. Pass --delimiter (or delimiter = \"...\" in prodrec.toml)"
        )
    return best[2]


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


def _read_csv(path: Path, report: LoadReport, schema: CatalogSchema) -> pd.DataFrame:
    """Read a CSV as strings; rows with extra fields are repaired into the overflow column or skipped."""
    text = _read_text(path, report)
    delimiter = schema.delimiter or sniff_delimiter(text)
    report.delimiter = delimiter
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=delimiter), [])
    ncols = len(header)
    if ncols == 0:
        raise CatalogError(f"{path} is empty (no header line)")
    header = [h.strip() for h in header]
    overflow_at = header.index(schema.overflow_column) if schema.overflow_column in header else None

    def fix(fields: list[str]) -> list[str] | None:
        if len(report.malformed_examples) < REPORT_EXAMPLES:
            report.malformed_examples.append(delimiter.join(fields)[:120])
        if overflow_at is not None and len(fields) > ncols:
            extra = len(fields) - ncols
            fixed = (
                fields[:overflow_at]
                + [delimiter.join(fields[overflow_at : overflow_at + extra + 1])]
                + fields[overflow_at + extra + 1 :]
            )
            report.malformed_recovered += 1
            return fixed
        report.malformed_skipped += 1
        return None

    options: dict[str, Any] = dict(sep=delimiter, dtype=str, skipinitialspace=False, keep_default_na=True,
                                   index_col=False)  # else pandas makes leading fields an index on long rows
    try:  # the C parser is ~5x faster; it stops at the first row with extra fields
        df = pd.read_csv(io.StringIO(text), engine="c", on_bad_lines="error", **options)
    except pd.errors.ParserError:  # repair or skip such rows, one by one, with the Python parser
        df = pd.read_csv(io.StringIO(text), engine="python", on_bad_lines=fix, **options)
    df.columns = [str(c).strip() for c in df.columns]
    report.rows_read = len(df) + report.malformed_skipped
    return df


def load_catalog(
    path: str | os.PathLike[str],
    *,
    schema: CatalogSchema | None = None,
    id_column: str | None = None,
    image_column: str | None = None,
    image_pattern: str | None = None,
    text_columns: Sequence[str] | str | None = None,
    label_columns: Sequence[str] | str | None = None,
    caption_columns: Sequence[str] | str | None = None,
    delimiter: str | None = None,
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
        A Kaggle-layout folder (or its ``styles.csv``), a folder or CSV with a ``prodrec.toml`` /
        ``<stem>.prodrec.toml`` description beside it, that description file, or any CSV.
    schema:
        A :class:`~prodrec.schema.CatalogSchema` to start from (default: the Kaggle preset for a Kaggle
        folder, the description file when there is one, else a generic schema).
    id_column, image_column, image_pattern, text_columns, label_columns, caption_columns, delimiter, overflow_column:
        Override single settings of the schema (they win over the description file). ``image_column``
        holds paths relative to the CSV's folder; ``image_pattern`` is a path such as
        ``"photos/{id}.png"``. Without either, the catalog has no images: only the text arm can be built.
        ``text_columns=[]`` means no product text: only the image arm. The delimiter is sniffed when unset.
    verify_images:
        ``"header"`` (default) opens each image's header: zero-byte files, non-images and images whose
        declared size exceeds ``max_image_pixels`` (decompression bombs) are skipped and named in the report.
        Damage deeper in a file (a truncated JPEG) is caught when the image is decoded for embedding.
    require_images:
        When the catalog has images, drop products whose image is missing or unreadable (default).
        ``False`` keeps them (their image path is empty; the text arm can still use them).
    workers:
        Threads for the header checks (default: serial, fastest on local disks; use 8-16 on network storage).

    Duplicate ids: the first row wins; later rows are counted and dropped.
    """
    overrides = dict(id_column=id_column, image_column=image_column, image_pattern=image_pattern,
                     text_columns=text_columns, label_columns=label_columns, caption_columns=caption_columns,
                     delimiter=delimiter, overflow_column=overflow_column)
    spec = locate_catalog(path, overrides) if schema is None else _spec_from_schema(path, schema, overrides)
    report = LoadReport(source=str(Path(path).expanduser()), csv_path=str(spec.csv_path), layout=spec.schema.layout)
    if spec.description is not None:
        report.notes.append(f"settings read from {spec.description}")
    df = _read_csv(spec.csv_path, report, spec.schema)
    sch = spec.schema.resolve(df.columns)
    df = _clean_ids(df, sch, report)
    df = _attach_images(df, sch, spec.root, report, verify_images, require_images, max_image_pixels, workers)
    report.nan_counts = {c: int(df[c].isna().sum()) for c in dict.fromkeys([*sch.text_columns, *sch.label_columns])}
    report.products = len(df)
    if not sch.has_images:
        report.notes.append("no image column or pattern: the catalog has no images (text arm only)")
    if not sch.text_columns:
        report.notes.append("no text columns: the catalog has no product text (image arm only)")
    cols = ["id", "image_path"] + [c for c in df.columns if c not in ("id", "image_path")]
    return Catalog(df[cols], spec.root, report, sch)


def _spec_from_schema(path: str | os.PathLike[str], schema: CatalogSchema, overrides: dict[str, Any]) -> CatalogSpec:
    p = Path(path).expanduser()
    if not p.exists():
        raise DataNotFound(f"catalog path {p} does not exist")
    schema = schema.replace(**{k: v for k, v in overrides.items() if v is not None})
    csv_path = p / (schema.csv or "styles.csv") if p.is_dir() else p
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


def _attach_images(
    df: pd.DataFrame, sch: CatalogSchema, root: Path, report: LoadReport, verify: VerifyMode,
    require: bool, max_pixels: int, workers: int | None,
) -> pd.DataFrame:
    """Add ``image_path`` (absolute; empty without images) and drop or count missing/unreadable images."""
    prefix = str(root) + os.sep
    if sch.image_pattern is not None:
        df["image_path"] = [prefix + sch.image_pattern.format(id=i) for i in df["id"]]
    elif sch.image_column is not None:
        df["image_path"] = [
            (p if os.path.isabs(p) else prefix + p.strip()) if isinstance(p, str) and p.strip() else ""
            for p in df[sch.image_column]
        ]
    else:
        df["image_path"] = ""
        return df
    exists = _existing(df["image_path"].tolist())
    report.missing_images = int((~exists).sum())
    report.missing_image_examples = [str(i) for i in df.loc[~exists, "id"].head(REPORT_EXAMPLES)]
    bad = np.zeros(len(df), dtype=bool)
    if verify == "header" and exists.any():
        paths = df["image_path"].to_numpy()[exists].tolist()
        problems = _verify_headers(paths, max_pixels, workers)
        bad_existing = np.array([p is not None for p in problems], dtype=bool)
        report.unreadable_images = int(bad_existing.sum())
        for p, why in zip(np.asarray(paths)[bad_existing], [q for q in problems if q is not None]):
            if len(report.unreadable_image_examples) < REPORT_EXAMPLES:
                report.unreadable_image_examples[str(p)] = why
        bad[np.flatnonzero(exists)[bad_existing]] = True
    usable = exists & ~bad
    if require:
        return df[usable]
    df.loc[~usable, "image_path"] = ""
    return df


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
