"""Deprecated alias of prodrec.viz.gallery: this old path works until prodrec 0.4."""

from ._compat import alias

alias("gallery")
