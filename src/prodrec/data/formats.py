"""Catalog files as shops export them: CSV/TSV, Parquet, JSON Lines and JSON arrays, each optionally gzip- or
zstd-compressed, read into a table of strings.

The format is the one ``--format`` (or ``format = "..."`` in ``prodrec.toml``) names, else the file's
extension (``products.parquet``, ``items.jsonl.gz``, ``styles.csv.zst``...), else what its first bytes
say (Parquet's ``PAR1``, a ``[`` or ``{`` for JSON). Compression is read from the first bytes (gzip and
zstd have magic numbers), so a misnamed file still opens. Parquet and JSON are parsed by pyarrow and
pandas; CSV keeps the kit's own repair path (rows with unquoted delimiters repaired into the overflow
column or skipped, a sniffed delimiter, cp1252 when the file is not UTF-8).

Every value comes back as a string as written (``"0015970"`` stays ``"0015970"``), or missing: typed
columns are written out (ints as ints, a float that is a whole number as one: ``2012.0`` reads ``2012``),
lists are joined with ``", "`` and objects are written as JSON.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.errors import CatalogError

__all__ = ["FORMATS", "FileFormat", "ReadInfo", "as_strings", "detect_format", "read_catalog_file"]

#: The table formats read (``--format``); compression (gzip, zstd) comes on top of any of them.
FORMATS: tuple[str, ...] = ("csv", "tsv", "parquet", "jsonl", "json")
#: One line naming what is read, for messages.
FORMATS_READ = ("CSV/TSV, Parquet, JSON Lines (.jsonl) and JSON arrays (.json), each also gzip- (.gz) or "
                "zstd-compressed (.zst)")
EXTENSIONS: dict[str, str] = {
    ".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".parquet": "parquet", ".pq": "parquet",
    ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json",
}
COMPRESSION_SUFFIXES: dict[str, str] = {".gz": "gzip", ".gzip": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC: tuple[tuple[bytes, str], ...] = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))
#: Field separators sniffed in a CSV, in order of preference on a tie.
DELIMITERS = (",", ";", "\t", "|")
#: How many example lines the read keeps per problem (counts are always complete).
EXAMPLES = 20


@dataclass(frozen=True)
class FileFormat:
    """How a catalog file is read: its table ``format``, its ``compression`` (None: plain) and what decided
    the format (``"--format"``, ``"extension"`` or ``"content"``)."""

    format: str
    compression: str | None = None
    decided_by: str = "extension"

    def __str__(self) -> str:
        return self.format + (f" ({self.compression})" if self.compression else "")


@dataclass
class ReadInfo:
    """What reading the file found: the format, the CSV specifics, the rows repaired or skipped."""

    format: str = "csv"
    encoding: str = "utf-8"
    delimiter: str | None = None
    rows_read: int = 0
    malformed_recovered: int = 0
    malformed_skipped: int = 0
    malformed_examples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def base_name(path: str | os.PathLike[str]) -> str:
    """The file name without its compression suffix (``items.jsonl.gz`` -> ``items.jsonl``)."""
    name = Path(path).name
    for suffix in COMPRESSION_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def stem(path: str | os.PathLike[str]) -> str:
    """The file name without compression and format suffixes (``items.jsonl.gz`` -> ``items``)."""
    name = base_name(path)
    suffix = Path(name).suffix.lower()
    return name[: -len(suffix)] if suffix in EXTENSIONS else Path(name).stem


def _head(path: Path, n: int = 4096) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def _compression_of(head: bytes) -> str | None:
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def _format_of_content(head: bytes) -> str | None:
    """The format the first (decompressed) bytes show: Parquet's magic, or JSON's first character."""
    if head.startswith(b"PAR1"):
        return "parquet"
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if text.startswith(b"["):
        return "json"
    if text.startswith(b"{"):
        return "jsonl"
    return None


def detect_format(path: str | os.PathLike[str], fmt: str | None = None) -> FileFormat:
    """How to read ``path``: ``fmt`` when given, else its extension, else its content; compression from its
    first bytes. A file named ``.csv`` that holds Parquet is read as Parquet (its magic bytes say so)."""
    path = Path(path)
    if fmt is not None and fmt not in FORMATS:
        raise CatalogError(f"unknown catalog format {fmt!r}; formats read: {', '.join(FORMATS)}")
    head = _head(path)
    compression = _compression_of(head)
    if compression:
        head = _decompress(path, compression, limit=4096)
    if fmt is not None:
        return FileFormat(fmt, compression, "--format")
    by_ext = EXTENSIONS.get(Path(base_name(path)).suffix.lower())
    by_content = _format_of_content(head)
    if by_ext is not None and not (by_content == "parquet" and by_ext != "parquet"):
        return FileFormat(by_ext, compression, "extension")
    if by_content is not None:
        return FileFormat(by_content, compression, "content")
    return FileFormat("csv", compression, "content")


def _decompress(path: Path, compression: str | None, limit: int | None = None) -> bytes:
    """The file's bytes, decompressed by pyarrow's codecs (``limit``: only the first bytes)."""
    with pa.input_stream(str(path), compression=compression) as stream:
        return stream.read(limit) if limit is not None else stream.read()


def read_catalog_file(
    path: str | os.PathLike[str],
    fmt: str | None = None,
    *,
    delimiter: str | None = None,
    overflow_column: str | None = None,
) -> tuple[pd.DataFrame, ReadInfo]:
    """Read a catalog file into a DataFrame of strings, and say how it was read.

    Raises :class:`~prodrec.core.errors.CatalogError` saying what the file looked like and which formats
    are read when it cannot be parsed as the format chosen.
    """
    path = Path(path)
    ff = detect_format(path, fmt)
    info = ReadInfo(format=str(ff))
    if ff.decided_by == "content" and EXTENSIONS.get(Path(base_name(path)).suffix.lower()):
        info.notes.append(f"{path.name} holds {ff.format} (its first bytes say so): read as {ff.format}")
    try:
        raw = _decompress(path, ff.compression)
    except (OSError, pa.ArrowException) as exc:
        raise CatalogError(f"cannot decompress {path} ({ff.compression}): {exc}") from None
    if ff.format in ("csv", "tsv"):
        text = _decode(raw, path, info)
        df = read_csv_text(text, info, "\t" if ff.format == "tsv" and delimiter is None else delimiter,
                           overflow_column, path)
        return df, info
    reader: dict[str, Callable[[bytes], pd.DataFrame]] = {"parquet": _read_parquet, "jsonl": _read_jsonl,
                                                         "json": _read_json_array}
    try:
        df = reader[ff.format](raw)
    except (ValueError, TypeError, pa.ArrowException) as exc:
        raise CatalogError(_unreadable(path, ff, raw, exc)) from None
    df = as_strings(df)
    info.rows_read = len(df)
    return df, info


def _unreadable(path: Path, ff: FileFormat, raw: bytes, exc: BaseException) -> str:
    why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    how = {"--format": "as --format said", "extension": "by its extension", "content": "by its first bytes"}
    return (f"cannot read {path.name} as {ff} (chosen {how[ff.decided_by]}): {why}. Its first bytes: "
            f"{raw[:60]!r}. prodrec reads {FORMATS_READ}; pass --format {'|'.join(FORMATS)} "
            "(or format = \"...\" in prodrec.toml) when the extension does not say")


def _read_parquet(raw: bytes) -> pd.DataFrame:
    table = pq.read_table(pa.BufferReader(raw))
    return table.to_pandas(integer_object_nulls=True)  # ints with nulls stay ints (long ids keep every digit)


def _json_options() -> dict[str, Any]:
    # dtype=False keeps values as parsed; pandas < 3 also converts date-like columns unless told not to
    return {"dtype": False, "precise_float": True,
            **({"convert_dates": False} if int(pd.__version__.split(".")[0]) < 3 else {})}


def _read_jsonl(raw: bytes) -> pd.DataFrame:
    return pd.read_json(io.BytesIO(raw), lines=True, **_json_options())


def _read_json_array(raw: bytes) -> pd.DataFrame:
    if not raw.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"["):
        raise ValueError("a JSON catalog is an array of objects, one per product ([{...}, {...}]); "
                         "one object per line is JSON Lines (.jsonl)")
    return pd.read_json(io.BytesIO(raw), orient="records", **_json_options())


def _text(value: Any) -> str | None:
    """One value as the text it stands for; None when missing."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return None
        return str(int(f)) if f.is_integer() and abs(f) < 2**53 else repr(f)
    if isinstance(value, (list, tuple, np.ndarray)):
        parts = [t for t in (_text(v) for v in value) if t]
        return ", ".join(parts) if parts else None
    if isinstance(value, dict):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (_dt.datetime, _dt.date)):
        return value.isoformat()
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return str(value)


def as_strings(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with string column names and every value as text (None when missing), as the CSV reader
    gives it: what a typed source (Parquet, JSON, a DataFrame) holds is written out as it reads."""
    out = {}
    for name, col in df.items():
        if pd.api.types.is_string_dtype(col.dtype) and col.dtype != object:
            values = col.astype(object).where(col.notna(), None)
        else:
            values = col.map(_text, na_action=None) if len(col) else col.astype(object)
        out[str(name).strip()] = values.astype(object)
    if len(out) != df.shape[1]:
        raise CatalogError(f"the catalog has columns that are the same once written as text: {list(df.columns)}")
    return pd.DataFrame(out, index=df.index)


# ------------------------------------------------------------------------------------------------- CSV
def _decode(raw: bytes, path: Path, info: ReadInfo) -> str:
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        info.encoding = "cp1252"
        info.notes.append(
            f"{path.name} is not valid UTF-8 (first bad byte at offset {exc.start}); "
            "decoded as cp1252 (Windows Latin-1) instead"
        )
        return raw.decode("cp1252", errors="replace")


def sniff_delimiter(text: str) -> str:
    """The field separator among , ; tab | that splits the first lines into the same number (≥ 2) of
    fields, preferring the most fields; raises :class:`CatalogError` saying what was seen otherwise."""
    lines = [ln for ln in text.splitlines()[:50] if ln.strip()]
    if not lines:
        raise CatalogError("the catalog file is empty (no header line)")
    if any(ord(c) < 32 and c not in "\t\r" for c in lines[0][:200]) or "\ufffd" in lines[0][:200]:
        raise CatalogError(
            f"the catalog file does not look like CSV text (its first line: {lines[0][:60]!r}); prodrec reads "
            f"{FORMATS_READ}: pass --format {'|'.join(FORMATS)} if the extension does not say"
        )
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
            ", ; tab |. Pass --delimiter (or delimiter = \"...\" in prodrec.toml); prodrec reads "
            f"{FORMATS_READ}"
        )
    return best[2]


def read_csv_text(text: str, info: ReadInfo, delimiter: str | None, overflow_column: str | None,
                  path: Path | None = None) -> pd.DataFrame:
    """Read CSV text as strings; rows with extra fields are repaired into ``overflow_column`` or skipped."""
    delimiter = delimiter or sniff_delimiter(text)
    info.delimiter = delimiter
    header = next(csv.reader(io.StringIO(text.split("\n", 1)[0]), delimiter=delimiter), [])
    ncols = len(header)
    if ncols == 0:
        raise CatalogError(f"{path or 'the catalog'} is empty (no header line)")
    header = [h.strip() for h in header]
    overflow_at = header.index(overflow_column) if overflow_column in header else None

    def fix(fields: list[str]) -> list[str] | None:
        if len(info.malformed_examples) < EXAMPLES:
            info.malformed_examples.append(delimiter.join(fields)[:120])
        if overflow_at is not None and len(fields) > ncols:
            extra = len(fields) - ncols
            fixed = (
                fields[:overflow_at]
                + [delimiter.join(fields[overflow_at : overflow_at + extra + 1])]
                + fields[overflow_at + extra + 1 :]
            )
            info.malformed_recovered += 1
            return fixed
        info.malformed_skipped += 1
        return None

    options: dict[str, Any] = dict(sep=delimiter, dtype=str, skipinitialspace=False, keep_default_na=True,
                                   index_col=False)  # else pandas makes leading fields an index on long rows
    try:  # the C parser is ~5x faster; it stops at the first row with extra fields
        df = pd.read_csv(io.StringIO(text), engine="c", on_bad_lines="error", **options)
    except pd.errors.ParserError:  # repair or skip such rows, one by one, with the Python parser
        df = pd.read_csv(io.StringIO(text), engine="python", on_bad_lines=fix, **options)
    df.columns = [str(c).strip() for c in df.columns]
    info.rows_read = len(df) + info.malformed_skipped
    return df

