"""Deprecated alias of prodrec.viz.browse: this old path works until prodrec 0.4."""

from ._compat import alias

alias("browse")
