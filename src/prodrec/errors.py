"""Deprecated alias of prodrec.core.errors: this old path works until prodrec 0.4."""

from ._compat import alias

alias("errors")
