"""Ranking: top-k neighbours of products, from one arm or several fused.

Lives here: top-k selection, blocked search and self-exclusion (:mod:`.topk`), fusion maths on plain arrays
(:mod:`.fusion`), exact cosine search over one arm (:mod:`.cosine`), exact and approximate (FAISS) indexes
(:mod:`.index`), the recommender over named arms (:mod:`.recommender`) and search by description
(:mod:`.search`).

May import: :mod:`prodrec.core`, :mod:`prodrec.data`, :mod:`prodrec.embed`. faiss is imported when an
approximate index is built or loaded.
"""

from .recommender import CosineIndex, Recommender, align
from .topk import select_topk

__all__ = ["CosineIndex", "Recommender", "align", "select_topk"]
