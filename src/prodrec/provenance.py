"""Deprecated alias of prodrec.core.provenance: this old path works until prodrec 0.4."""

from ._compat import alias

alias("provenance")
