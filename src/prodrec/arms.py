"""Deprecated alias of prodrec.embed.arms, prodrec.embed.registry: this old path works until prodrec 0.4."""

from ._compat import alias

alias("arms")
