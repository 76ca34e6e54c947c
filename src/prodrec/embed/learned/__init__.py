"""A learned fusion head: a small network that learns how to combine frozen arm vectors.

The paper fuses its arms with a fixed weighted cosine and names "learning the combination" as future scope.
:func:`train_head` trains a two-layer MLP on the *concatenated, frozen* vectors of several arms (image,
text, colour, ...) and returns a :class:`LearnedHead` whose output vectors (unit rows) are ranked by cosine
like any other arm.

What it learns from
    Supervision by catalog labels, never human relevance judgements: a head trained on articleType and
    baseColour is *supervised on the labels it is then scored on*, and is named so ("supervised on
    articleType, baseColour"). Two products are *positives*
    for label ``l`` when both have a known, equal value of column ``l`` (a missing value, NaN, is never a
    positive). The label weights (default ``0.7 * articleType + 0.3 * baseColour``) turn the per-label
    matches into a graded positive weight ``p_ij = sum_l w_l [y_il == y_jl]``, and the loss is a
    *supervised contrastive* (SupCon / soft-target InfoNCE) loss over each mini-batch: for an anchor ``i``
    the target distribution over the other products ``j`` of the batch is ``p_ij / sum_j p_ij`` and the
    prediction is ``softmax_j(cos(f_i, f_j) / temperature)``; the loss is their cross-entropy, averaged over
    anchors that have at least one positive in the batch. ``train_head(..., views=p)`` trains without labels:
    each batch shows every product twice with a share ``p`` of its input dropped, and the two copies of a
    product are each other's only positives (``benchmarks/heads.py`` sets such a head, and one supervised on
    other labels, beside the default one).

Input scaling (why no arm dominates)
    Each arm's rows are L2-normalised, centred on the arm's mean over the training products (embeddings
    share a large common direction: all-positive pooled CNN features, sentence vectors of one catalog, so
    raw cosines of unrelated products are high), and divided by one scalar per arm, the root-mean-square
    norm of the centred training rows. Every arm then enters the network with the same mean squared norm
    (1), whatever its dimension: a 1280-d image block and a 113-d colour block contribute equally to the
    first layer's pre-activations at initialisation (a per-coordinate z-score would instead weight an arm
    by its number of dimensions). The means and scales are part of the saved head.

Evaluation rule
    A head must never be evaluated on products it was trained on: their labels were its training signal.
    The caller passes ``ids`` disjoint from the evaluated products (``benchmarks/learned.py`` trains on
    every photo product outside the evaluated sample); the head records its training ids (count, hash and
    the full list in the saved folder) so that a disjointness check is always possible.

:meth:`LearnedHead.transform` runs in numpy only, so ranking with a trained head needs no torch; torch is
imported lazily by :func:`train_head` alone.

Modules: :mod:`~prodrec.embed.learned.head` (:class:`LearnedHead`: numpy inference, save/load,
provenance) and :mod:`~prodrec.embed.learned.train` (:func:`train_head`, the torch loop and the
supervised-contrastive loss).
"""

from __future__ import annotations

from .head import FORMAT_VERSION, HEAD_PATH_KEY, LearnedHead
from .train import DEFAULT_LABEL_WEIGHTS, train_head

__all__ = ["DEFAULT_LABEL_WEIGHTS", "FORMAT_VERSION", "HEAD_PATH_KEY", "LearnedHead", "train_head"]
