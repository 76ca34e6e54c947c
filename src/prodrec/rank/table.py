"""Tables of recommendations on disk: one row per (query, rank), as Parquet, CSV or JSON Lines.

The format follows the extension (``.parquet``, ``.csv``, ``.jsonl``). Provenance travels with the table:
in the Parquet file's metadata (key ``prodrec``), beside a CSV or JSON Lines file as
``<table>.provenance.json``. :class:`TableWriter` streams blocks of rows into a temporary file in the
target's folder and renames it over the target at the end (a crash leaves the old table or the new one);
:func:`read_table` reads any of the three back (ids as strings, as written), from the kit or from
anyone else's system (only ``query_id`` and ``id`` are required).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import numpy as np
import pandas as pd

from ..core.errors import ConfigError
from ..core.io import dumps, write_json

__all__ = ["BASE_COLUMNS", "TABLE_FORMATS", "TableWriter", "arrow_system_pool", "provenance_path", "read_provenance", "read_table",
           "table_format"]

#: Extension -> format of a recommendations table.
TABLE_FORMATS: dict[str, str] = {".parquet": "parquet", ".csv": "csv", ".jsonl": "jsonl"}
#: Every table's first columns: the query, the rank (1 = best), the recommended product, its score, the mode.
BASE_COLUMNS: tuple[str, ...] = ("query_id", "rank", "id", "score", "mode")
#: Parquet metadata key of the provenance.
META_KEY = b"prodrec"
_TYPES = {"str": "string", "int": "int32", "float": "float32"}


def table_format(path: str | os.PathLike[str]) -> str:
    """``parquet``, ``csv`` or ``jsonl`` from the file's extension; anything else is refused."""
    suffix = Path(path).suffix.lower()
    if suffix not in TABLE_FORMATS:
        raise ConfigError(f"a recommendations table ends in {', '.join(TABLE_FORMATS)} (the format follows the "
                          f"extension); got {str(path)!r}")
    return TABLE_FORMATS[suffix]


def provenance_path(path: str | os.PathLike[str]) -> Path:
    """Where a CSV or JSON Lines table's provenance is: ``<table>.provenance.json``."""
    p = Path(path)
    return p.with_name(p.name + ".provenance.json")


@contextlib.contextmanager
def arrow_system_pool() -> Iterator[None]:
    """Arrow's default memory pool is the system allocator's inside (restored after).

    An export builds many short-lived Arrow buffers (pandas' strings are Arrow-backed; each block's frame and
    Parquet pages). Arrow's default pool (mimalloc) keeps the pages of freed buffers; in the export
    benchmark (9,583 products' top-10) that was most of the export's memory growth: 39-53 MiB, against
    24-29 MiB with the system pool, whose free returns them. Buffers remember their pool, so switching
    while others are alive is safe.
    """
    import pyarrow as pa

    previous = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(previous)


class TableWriter:
    """Writes a table block by block; :meth:`commit` puts it in place (with its provenance) atomically.

    Parameters
    ----------
    path : path
        The table (``.parquet``, ``.csv`` or ``.jsonl``).
    columns : mapping column -> ``"str"`` | ``"int"`` | ``"float"``
        The columns in order and their kinds (so every block has the same types, whatever it holds).
    provenance : dict
        JSON-ready record written with the table.
    """

    def __init__(self, path: str | os.PathLike[str], columns: Mapping[str, str], provenance: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.format = table_format(self.path)
        self.columns = dict(columns)
        self.provenance = dict(provenance)
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        self._tmp = Path(tmp)
        self._file: IO[Any] | None = None
        self._parquet: Any = None
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            schema = pa.schema([(c, pa.type_for_alias(_TYPES[kind])) for c, kind in self.columns.items()],
                               metadata={META_KEY: dumps(self.provenance, indent=None).encode("utf-8")})
            self._schema = schema
            self._pool = pa.system_memory_pool()  # see arrow_system_pool
            self._parquet = pq.ParquetWriter(str(self._tmp), schema, compression="zstd", memory_pool=self._pool)
        else:
            self._file = open(self._tmp, "w", encoding="utf-8", newline="")

    def write(self, df: pd.DataFrame) -> None:
        """Append rows (the table's columns, in any order; others are refused)."""
        extra = [c for c in df.columns if c not in self.columns]
        if extra:
            raise ConfigError(f"columns {extra} are not in the table's columns {list(self.columns)}")
        df = _typed(df.reindex(columns=list(self.columns)), self.columns)
        if self.format == "parquet":
            import pyarrow as pa

            arrays = [pa.array(df[c], type=f.type, from_pandas=True, memory_pool=self._pool)
                      for c, f in zip(self.columns, self._schema)]
            self._parquet.write_table(pa.Table.from_arrays(arrays, schema=self._schema))
        elif self.format == "csv":
            assert self._file is not None
            df.to_csv(self._file, index=False, header=self.rows == 0, lineterminator="\n")
        else:
            assert self._file is not None
            if len(df):
                text = df.to_json(orient="records", lines=True, force_ascii=False, double_precision=15)
                self._file.write(text if text.endswith("\n") else text + "\n")
        self.rows += len(df)

    def commit(self) -> Path:
        """Close the file, put it in place of the target and write the provenance beside it (CSV, JSONL)."""
        if self.format == "parquet":
            self._parquet.close()
        else:
            assert self._file is not None
            if self.format == "csv" and self.rows == 0:
                self._file.write(",".join(self.columns) + "\n")
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
        os.chmod(self._tmp, 0o666 & ~_umask())
        os.replace(self._tmp, self.path)
        if self.format != "parquet":
            write_json(provenance_path(self.path), self.provenance)
        return self.path

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            if self._parquet is not None:
                self._parquet.close()
            if self._file is not None:
                self._file.close()
        with contextlib.suppress(OSError):
            self._tmp.unlink()

    def __enter__(self) -> TableWriter:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.abort()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _as_text(s: pd.Series) -> pd.Series:
    """Values as Python strings (``str(v)``), missing ones as None; numpy's conversion, not one Python call per
    value (a whole export's ids: 0.15 s that way); a column of strings already (ids) is only copied."""
    vals = s.astype("object").to_numpy(copy=True)
    ok = s.notna().to_numpy()
    if ok.any() and pd.api.types.infer_dtype(vals[ok], skipna=False) != "string":
        vals[ok] = vals[ok].astype(str).astype(object)
    vals[~ok] = None
    return pd.Series(vals, index=s.index, dtype=object)


def _typed(df: pd.DataFrame, kinds: Mapping[str, str]) -> pd.DataFrame:
    out = {}
    for col, kind in kinds.items():
        s = df[col]
        if kind == "str":
            out[col] = _as_text(s)
        elif kind == "int":
            out[col] = s.astype(np.int32)
        else:
            out[col] = s.astype(np.float32)
    return pd.DataFrame(out, index=df.index)


def read_provenance(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The provenance written with a table ({} when it has none: a table from elsewhere)."""
    p = Path(path)
    if table_format(p) == "parquet":
        import pyarrow.parquet as pq

        meta = pq.read_schema(str(p)).metadata or {}
        raw = meta.get(META_KEY)
        return json.loads(raw.decode("utf-8")) if raw else {}
    side = provenance_path(p)
    return json.loads(side.read_text(encoding="utf-8")) if side.is_file() else {}


def read_table(path: str | os.PathLike[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
    """A recommendations table as a DataFrame: ``query_id`` and ``id`` as strings (as written), ``rank`` an
    integer (from the row order within each query when the table has none), ``score`` and ``*_score`` floats.

    Raises :class:`ConfigError` when the file is missing or lacks ``query_id`` / ``id``.
    """
    p = Path(path)
    fmt = table_format(p)
    if not p.is_file():
        raise ConfigError(f"no recommendations table at {p}")
    if fmt == "parquet":
        df = pd.read_parquet(p, columns=list(columns) if columns else None)
    elif fmt == "csv":
        df = pd.read_csv(p, dtype=str, keep_default_na=False, na_values=[""], usecols=columns)
    else:
        df = pd.read_json(p, lines=True, dtype=False, convert_dates=False)
        if columns:
            df = df[[c for c in columns if c in df.columns]]
    missing = [c for c in ("query_id", "id") if c not in df.columns]
    if missing:
        raise ConfigError(f"{p} has no column(s) {missing}: a recommendations table needs query_id and id "
                          f"(it has {list(df.columns)})")
    for col in ("query_id", "id"):
        df[col] = _as_text(df[col])
    if "rank" in df.columns:
        df["rank"] = pd.to_numeric(df["rank"]).astype(np.int64)
    elif columns is None or "rank" in columns:
        df["rank"] = df.groupby("query_id", sort=False).cumcount() + 1
    for col in df.columns:
        if col == "score" or col.endswith("_score"):
            df[col] = pd.to_numeric(df[col], errors="coerce")
    return df
