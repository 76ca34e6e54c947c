"""Deprecated alias of prodrec.data.text: this old path works until prodrec 0.4."""

from ._compat import alias

alias("text")
