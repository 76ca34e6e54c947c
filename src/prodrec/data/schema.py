"""Names defined once: the catalog's columns, the arms and the ranking modes.

A :class:`CatalogSchema` says which CSV column holds the product id, where each product's image is (a
column of paths, or a pattern such as ``"img/{id}.png"``), which columns make the product sentence,
which are labels (evaluation, filters) and which caption a tile (galleries, widget). The Kaggle "Fashion
Product Images" layout is one preset of it (:data:`KAGGLE`); any other catalog is described by flags, by
keyword arguments, or by a small description file beside its CSV (:func:`read_description`)::

    # items.prodrec.toml  (or prodrec.toml in the catalog folder; JSON with the same keys works too)
    file = "items.csv"                # any format: items.parquet, items.jsonl.gz... (csv = ... also works)
    id_column = "sku"
    image_column = "photo"            # or: image_pattern = "img/{id}.png"
    text_columns = ["title", "colour", "category"]
    label_columns = ["category", "colour"]
    caption_columns = ["title", "colour", "category"]   # the first is the product's name
    delimiter = ";"                   # optional: sniffed from the file otherwise
    format = "csv"                    # optional: csv tsv parquet jsonl json (default: by extension)
    text_clean = "auto"               # optional: html | none (default auto: markup is made plain text)

Every module reads these names from the schema instead of spelling ``articleType`` itself.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import CatalogError, ConfigError, DataNotFound
from ..core.params import check_choice, suggest
from .formats import FORMATS, FORMATS_READ, stem

#: File names looked for beside a catalog, in this order (``<csv stem>.prodrec.toml`` comes first).
DESCRIPTION_FILES = ("prodrec.toml", "prodrec.json")
#: What ``text_clean`` may be: ``auto`` makes values with markup plain text, ``html`` parses every value,
#: ``none`` keeps text as written.
TEXT_CLEAN: tuple[str, ...] = ("auto", "html", "none")


@dataclass(frozen=True)
class CatalogSchema:
    """Which columns of a catalog CSV mean what. Unset fields are filled in by :meth:`resolve`."""

    id_column: str = "id"
    image_column: str | None = None
    image_pattern: str | None = None
    #: Columns joined into the product sentence, in order (None: every column but id and image).
    text_columns: tuple[str, ...] | None = None
    #: Columns whose agreement is evaluated and that the widget can filter on.
    label_columns: tuple[str, ...] | None = None
    #: Columns shown under each tile; the first is the product's name.
    caption_columns: tuple[str, ...] | None = None
    #: Rows with more fields than the header (unquoted commas) are repaired into this column.
    overflow_column: str | None = None
    #: Field separator; None: sniffed among , ; tab |.
    delimiter: str | None = None
    #: The catalog file, relative to the description file (only in description files and presets); ``csv``
    #: is its older name, still read.
    file: str | None = None
    csv: str | None = None
    #: The file's format (one of :data:`~prodrec.data.formats.FORMATS`); None: by extension, then content.
    format: str | None = None
    #: How markup in text columns is made plain text (one of :data:`TEXT_CLEAN`; None: ``auto``).
    text_clean: str | None = None
    #: Drop products without a usable photo (no value, a missing file, a URL not fetched, an unreadable
    #: file) from the catalog. False (default): keep them for every arm they have (text, search), their
    #: photo's problem in the ``image_note`` column. The Kaggle preset drops them: the paper studies products
    #: with photos, and the dataset lists 34,863 products whose photos it does not ship.
    require_images: bool = False
    #: Human name of the layout, recorded in every output's provenance.
    layout: str = "generic"

    def __post_init__(self) -> None:
        for name in ("text_columns", "label_columns", "caption_columns"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = _split(value)
            if value is not None:
                object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.image_column and self.image_pattern:
            raise ConfigError("give image_column or image_pattern, not both")
        if self.image_pattern is not None and "{id}" not in self.image_pattern:
            raise ConfigError(f"image_pattern {self.image_pattern!r} must contain {{id}}, e.g. 'img/{{id}}.png'")
        if self.delimiter is not None and len(self.delimiter) != 1:
            raise ConfigError(f"delimiter must be one character, got {self.delimiter!r}")
        if self.file and self.csv and self.file != self.csv:
            raise ConfigError(f"file = {self.file!r} and csv = {self.csv!r} name two catalog files; keep file")
        if self.format is not None:
            check_choice("the catalog format", self.format, FORMATS)
        if self.text_clean is not None:
            check_choice("text_clean", self.text_clean, TEXT_CLEAN)

    @property
    def catalog_file(self) -> str | None:
        """The catalog file a description names (``file``, or its older name ``csv``)."""
        return self.file or self.csv

    @property
    def has_images(self) -> bool:
        return bool(self.image_column or self.image_pattern)

    @property
    def name_column(self) -> str | None:
        """The caption column that names a product (the first caption column)."""
        return self.caption_columns[0] if self.caption_columns else None

    def replace(self, **changes: Any) -> CatalogSchema:
        """A copy with ``changes`` applied; None values leave a field as it is. Setting an image column
        clears the image pattern and the other way round."""
        changes = {k: v for k, v in changes.items() if v is not None}
        unknown = set(changes) - set(schema_keys())
        if unknown:
            raise ConfigError(f"unknown catalog setting(s) {sorted(unknown)}; known: {schema_keys()}")
        if changes.get("image_column"):
            changes["image_pattern"] = None
        elif changes.get("image_pattern"):
            changes["image_column"] = None
        return dataclasses.replace(self, **changes)

    def resolve(self, columns: Sequence[str]) -> CatalogSchema:
        """This schema checked against a CSV's ``columns``, with every unset list filled in.

        Text columns default to every column but id and image; labels to none (the Kaggle preset names
        its own); captions to the first text column plus the labels.
        """
        cols = list(columns)
        if self.id_column not in cols:
            raise CatalogError(missing_id_message(self.id_column, cols))
        named = [self.image_column, *(self.text_columns or ()), *(self.label_columns or ()),
                 *(self.caption_columns or ())]
        missing = list(dict.fromkeys(c for c in named if c and c not in cols))
        if missing:
            raise CatalogError(f"the catalog has no column(s) {missing}; its columns are {cols}"
                               f"{suggest(missing[0], cols)}")
        reserved = [c for c in ("image_path", "image_note") if c in cols and c != self.image_column]
        if reserved:
            raise CatalogError(f"column name(s) {reserved} are used by prodrec itself; rename them in the CSV")
        text = self.text_columns
        if text is None:
            text = tuple(c for c in cols if c not in (self.id_column, self.image_column))
        labels = self.label_columns or ()
        captions = self.caption_columns
        if captions is None:
            captions = tuple(dict.fromkeys([*text[:1], *labels[:2]]))
        overflow = self.overflow_column if self.overflow_column in cols else None
        return dataclasses.replace(self, text_columns=tuple(text), label_columns=tuple(labels),
                                   caption_columns=tuple(captions), overflow_column=overflow)

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


#: Words that make a column name look like an id (``product_id``, ``SKU``, ``itemId``, ``ean``...).
_ID_WORDS = {"id", "sku", "ean", "gtin", "upc", "asin", "isbn", "code", "key", "ref"}


def _id_like(column: str) -> bool:
    words = re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", column)
    return any(w.lower() in _ID_WORDS for w in words)


def missing_id_message(id_column: str, columns: Sequence[str]) -> str:
    """One line for a catalog without its id column: the flag that names another, and the closest columns
    (id-like names first, then those spelled alike)."""
    cols = [str(c) for c in columns]
    close = [c for c in cols if _id_like(c)] + difflib.get_close_matches(id_column, cols, n=3, cutoff=0.5)
    near = list(dict.fromkeys(close))[:3]
    hint = f" (closest: {', '.join(map(repr, near))}, e.g. --id-column {near[0]})" if near else ""
    shown = cols if len(cols) <= 12 else [*cols[:12], f"... {len(cols) - 12} more"]
    return (f"the catalog has no id column {id_column!r}; name the column that holds the product id with "
            f"--id-column NAME (id_column = \"NAME\" in prodrec.toml){hint}; its columns are {shown}")


def schema_keys() -> list[str]:
    return [f.name for f in dataclasses.fields(CatalogSchema)]


def _split(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return tuple(v.strip() for v in value.split(",") if v.strip())
    return tuple(value)


#: The paper's product sentence: name, gender, categories, article type, colour, season, year, usage.
KAGGLE_TEXT_COLUMNS: tuple[str, ...] = (
    "productDisplayName", "gender", "masterCategory", "subCategory", "articleType", "baseColour", "season",
    "year", "usage",
)
#: The Kaggle "Fashion Product Images (Small)" layout: styles.csv + images/<id>.jpg.
KAGGLE = CatalogSchema(
    id_column="id",
    image_pattern="images/{id}.jpg",
    text_columns=KAGGLE_TEXT_COLUMNS,
    label_columns=("articleType", "baseColour", "subCategory", "gender"),
    caption_columns=("productDisplayName", "baseColour", "articleType"),
    overflow_column="productDisplayName",
    delimiter=",",
    csv="styles.csv",
    require_images=True,
    layout="kaggle",
)
#: The labels the paper's claims are about: style (image neighbours share it) and colour (text neighbours do).
STYLE_LABEL, COLOUR_LABEL = "articleType", "baseColour"
KAGGLE_COLUMNS: tuple[str, ...] = ("id", "gender", "masterCategory", "subCategory", "articleType", "baseColour",
                                   "season", "year", "usage", "productDisplayName")


def read_description(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings in a description file (TOML or JSON, by extension), checked against the schema's keys."""
    path = Path(path)
    try:
        if path.suffix == ".toml":
            try:
                import tomllib
            except ImportError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        else:
            data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CatalogError(f"cannot read the catalog description {path}: {exc}") from None
    if not isinstance(data, Mapping):
        raise CatalogError(f"the catalog description {path} must hold a table/object of settings")
    unknown = sorted(set(data) - set(schema_keys()))
    if unknown:
        raise CatalogError(f"{path}: unknown setting(s) {unknown}; known: {schema_keys()}")
    return dict(data)


def find_description(path: Path) -> Path | None:
    """The description file for a catalog folder or file: ``<stem>.prodrec.toml|json`` beside the file
    (``items.prodrec.toml`` for ``items.csv``, ``items.parquet`` or ``items.jsonl.gz``), else
    ``prodrec.toml|json`` in the folder, else (for a folder) its only ``*.prodrec.toml|json``."""
    if not path.exists():
        return None
    if path.is_file() and is_description(path):
        return path
    folder = path if path.is_dir() else path.parent
    names = [f"{stem(path)}.{n}" for n in DESCRIPTION_FILES] if path.is_file() else []
    for name in [*names, *DESCRIPTION_FILES]:
        if (folder / name).is_file():
            return folder / name
    if path.is_dir():  # a folder holding exactly one <stem>.prodrec.toml / .json
        found = sorted(p for n in DESCRIPTION_FILES for p in folder.glob(f"*.{n}"))
        if len(found) == 1:
            return found[0]
    return None


def is_description(path: Path) -> bool:
    """Whether ``path`` is a description file rather than a catalog: a ``.toml``, a ``*prodrec.json``, or a
    small ``.json`` holding one object (a JSON catalog is an array, or one object per line)."""
    name = path.name.lower()
    if path.suffix.lower() == ".toml" or name.endswith("prodrec.json"):
        return True
    if path.suffix.lower() != ".json" or path.stat().st_size > 1 << 20:
        return False
    try:
        return isinstance(json.loads(path.read_text(encoding="utf-8")), dict)
    except (OSError, ValueError):
        return False


@dataclass
class CatalogSpec:
    """A catalog to load: its file (any format; ``csv_path`` is the field's older name), the folder image
    paths are relative to, and its schema."""

    csv_path: Path
    root: Path
    schema: CatalogSchema
    description: Path | None = None
    notes: list[str] = field(default_factory=list)


def locate_catalog(path: str | os.PathLike[str], overrides: Mapping[str, Any] | None = None) -> CatalogSpec:
    """Work out what ``path`` is (Kaggle folder, catalog folder with a description file, CSV, description
    file) and the schema to read it with; ``overrides`` (flags, keyword arguments) win over the file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataNotFound(f"catalog path {path} does not exist")
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    desc = find_description(path)
    kaggle_root_ = kaggle_root(path)
    if desc is not None:
        settings = read_description(desc)
        base = (KAGGLE if kaggle_root_ is not None and not (settings.get("csv") or settings.get("file"))
                else CatalogSchema())
        schema = base.replace(**settings)
        if desc == path or path.is_dir():
            if not schema.catalog_file:
                raise CatalogError(f"{desc} does not name the catalog file: add file = \"items.parquet\" "
                                   "(any format: .csv .tsv .parquet .jsonl .json, also .gz/.zst)")
            csv_path = (desc.parent / schema.catalog_file).resolve()
        else:
            csv_path = path
        if not csv_path.is_file():
            raise CatalogError(f"{desc} names the file {schema.catalog_file!r}, but {csv_path} does not exist")
    elif kaggle_root_ is not None and not (overrides.get("image_column") or overrides.get("image_pattern")):
        schema, csv_path = KAGGLE, kaggle_root_ / "styles.csv"
    elif path.is_dir():
        raise CatalogError(
            f"{path} is a folder without styles.csv or a prodrec.toml description; pass the catalog file "
            "itself (--data products.parquet --id-column ... --image-column/--image-pattern ... "
            f"--text-columns ...; prodrec reads {FORMATS_READ}) or write a prodrec.toml beside it naming it "
            "(see the README, 'Your own catalog')"
        )
    else:
        schema, csv_path = CatalogSchema(), path
    schema = schema.replace(**overrides)
    return CatalogSpec(csv_path=csv_path, root=csv_path.parent, schema=schema, description=desc)


def kaggle_root(path: Path) -> Path | None:
    """The folder holding a Kaggle-layout ``styles.csv`` for ``path`` (itself, ``myntradataset/``...), or None."""
    if path.is_file() and path.name == "styles.csv":
        return path.parent
    if path.is_dir():
        for cand in (path, path / "myntradataset", path / "fashion-dataset"):
            if (cand / "styles.csv").is_file():
                return cand
    return None
