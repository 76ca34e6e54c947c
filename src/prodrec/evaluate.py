"""Deprecated alias of prodrec.evaluation.runs,
    if len(modules) == 1 and old != evaluate:: this old path works until prodrec 0.4."""

from ._compat import alias

alias("evaluate")
