"""Deprecated alias of prodrec.embed.store, prodrec.embed.vectors: this old path works until prodrec 0.4."""

from ._compat import alias

alias("store")
