"""Catalogs: what the products are, before any model sees them.

Lives here: the catalog schema and description files (:mod:`.schema`), reading catalog files of any
format (:mod:`.formats`: CSV/TSV, Parquet, JSON Lines, JSON arrays, gzip/zstd), loading and sampling a
catalog with its load report (:mod:`.catalog`), the product sentence, markup cleaning and label masks
(:mod:`.text`), image decoding (:mod:`.images`), downloading image URLs into the store's cache
(:mod:`.fetch`), the synthetic demo catalog (:mod:`.demo`) and finding or fetching the data (:mod:`.locate`,
whose functions are also importable from here).

May import: :mod:`prodrec.core`.
"""

from .locate import fetch_data, find_data_dir

__all__ = ["fetch_data", "find_data_dir"]
