"""Deprecated alias of prodrec.rank.search: this old path works until prodrec 0.4."""

from ._compat import alias

alias("search")
