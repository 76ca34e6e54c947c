"""Ranking: top-k neighbours of products, from one arm or several fused.

Lives here: the one top-k primitive (:mod:`.topk`), exact and approximate (FAISS) indexes
(:mod:`.index`), the recommender over named arms (:mod:`.recommender`) and search by description
(:mod:`.search`).

May import: :mod:`prodrec.core`, :mod:`prodrec.data`, :mod:`prodrec.embed`. faiss is imported when an
approximate index is built or loaded.
"""

from .recommender import CosineIndex, Recommender
from .topk import select_topk

__all__ = ["CosineIndex", "Recommender", "select_topk"]
