"""Per-product embedding store: vectors keyed by product id and a hash of that product's input.

A product's *key* is a hash of what its embedding is computed from: the bytes of its image
(:meth:`EmbeddingStore.file_digests`) or its sentence (:func:`text_key`). Any sample or subset of an
already-embedded catalog therefore reads what is stored and computes only what is missing, and a changed
photo or sentence recomputes that product only.

Layout of a store folder::

    files.sqlite                          stat cache of file_digests: (path, size, mtime_ns) -> digest
    <arm>/<model-slug>/index.sqlite       meta(key, value JSON); shards(shard, file, rows, sha256,
                                          created_at); items(id, key, shard, row, failure)
    <arm>/<model-slug>/shard-000001.npy   float32 [rows, dim]: written once, never modified
    <arm>/<model-slug>/.lock              held while computing and writing (one writer per model)

Every computed chunk is a resume point: its shard is written atomically, then the shard and its item rows
enter the index in one transaction. A run killed between the two steps leaves a shard file the index does
not know, which the next writer deletes. Shards are checked against their sha256 when they are read; a
damaged shard, or an index that is damaged or written for another dim or format, is dropped and its
products recomputed, with the reason in the log and in the returned metadata. Reading a complete set takes
no lock and calls no model.

Modules: :mod:`~prodrec.embed.store.facade` (:class:`EmbeddingStore`, the public face),
:mod:`~prodrec.embed.store.index` (one model's index and shards: checks, reads, writes, repairs),
:mod:`~prodrec.embed.store.digests` (file digests and their stat cache), :mod:`~prodrec.embed.store.sqlite`
(connection and transaction helpers).
"""

from __future__ import annotations

from ..vectors import Embeddings, text_key
from .facade import ComputeFn, EmbeddingStore
from .index import FORMAT_VERSION

__all__ = ["FORMAT_VERSION", "ComputeFn", "EmbeddingStore", "Embeddings", "text_key"]
