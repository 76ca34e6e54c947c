"""Deprecated alias of prodrec.embed.ray_engine: this old path works until prodrec 0.4."""

from ._compat import alias

alias("scale")
