"""Ranking: top-k neighbours of products, from one arm or several fused.

Lives here: top-k selection, blocked search and self-exclusion (:mod:`.topk`), fusion maths on plain arrays
(:mod:`.fusion`), exact cosine search over one arm (:mod:`.cosine`), exact and approximate (FAISS) indexes
(:mod:`.index`), the recommender over named arms (:mod:`.recommender`), search by description
(:mod:`.search`), and a whole catalog's lists: rules inside the ranking (:mod:`.rules`), blocks of queries
ranked with them (:mod:`.lists`), recommendation tables on disk (:mod:`.table`) and ``prodrec export`` with
checkpoints and Ray (:mod:`.export`, :mod:`.state`, :mod:`.ray_export`), kept fresh by :mod:`.update`.

May import: :mod:`prodrec.core`, :mod:`prodrec.data`, :mod:`prodrec.embed`. faiss is imported when an
approximate index is built or loaded (and for the pairwise scores of :mod:`.lists`); ray when an export runs
on Ray.
"""

from .recommender import CosineIndex, Recommender, align
from .topk import select_topk

__all__ = ["CosineIndex", "Recommender", "align", "select_topk"]
