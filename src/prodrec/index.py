"""Deprecated alias of prodrec.rank.index: this old path works until prodrec 0.4."""

from ._compat import alias

alias("index")
