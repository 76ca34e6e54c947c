"""Deprecated alias of prodrec.evaluation.report: this old path works until prodrec 0.4."""

from ._compat import alias

alias("report")
