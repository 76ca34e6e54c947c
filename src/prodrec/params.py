"""Deprecated alias of prodrec.core.params: this old path works until prodrec 0.4."""

from ._compat import alias

alias("params")
