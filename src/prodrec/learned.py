"""Deprecated alias of prodrec.embed.learned: this old path works until prodrec 0.4."""

from ._compat import alias

alias("learned")
