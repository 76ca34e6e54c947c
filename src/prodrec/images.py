"""Deprecated alias of prodrec.data.images: this old path works until prodrec 0.4."""

from ._compat import alias

alias("images")
