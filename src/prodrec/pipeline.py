"""Deprecated alias of prodrec.run.experiment, prodrec.embed.embedding: this old path works until prodrec 0.4."""

from ._compat import alias

alias("pipeline")
