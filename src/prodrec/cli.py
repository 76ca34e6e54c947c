"""Deprecated alias of prodrec.run.cli: this old path works until prodrec 0.4."""

from ._compat import alias

alias("cli")
