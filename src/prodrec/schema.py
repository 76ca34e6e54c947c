"""Deprecated alias of prodrec.data.schema, prodrec.core.vocab, prodrec.embed.registry: this old path works until prodrec 0.4."""

from ._compat import alias

alias("schema")
