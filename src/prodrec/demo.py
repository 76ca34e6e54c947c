"""Deprecated alias of prodrec.data.demo: this old path works until prodrec 0.4."""

from ._compat import alias

alias("demo")
