"""Catalogs: what the products are, before any model sees them.

Lives here: the catalog schema and description files (:mod:`.schema`), loading and sampling a catalog
with its load report (:mod:`.catalog`), the product sentence (:mod:`.text`), image decoding
(:mod:`.images`), the synthetic demo catalog (:mod:`.demo`) and finding or fetching the data
(:mod:`.locate`, whose functions are also importable from here).

May import: :mod:`prodrec.core`.
"""

from .locate import fetch_data, find_data_dir

__all__ = ["fetch_data", "find_data_dir"]
