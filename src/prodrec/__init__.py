"""prodrec: image- and text-based product recommendation, a notebook research kit.

The core (catalog, sentences, store, ranking, evaluation) needs only numpy/pandas/PIL; the image and
text encoders import TensorFlow or torch when they are built, not before.

>>> from prodrec import build_experiment
>>> exp = build_experiment("path/to/fashion-product-images-small", n_products=1000, seed=0)
>>> exp.recommender.recommend(15970, k=5, mode="fused")
"""

from __future__ import annotations

__version__ = "0.1.0"

from .catalog import Catalog, CatalogError, LoadReport, load_catalog  # noqa: E402
from .evaluate import evaluate, precision_table  # noqa: E402
from .pipeline import Experiment, build_experiment, image_embeddings, text_embeddings  # noqa: E402
from .rank import CosineIndex, Recommender, RankingError  # noqa: E402
from .store import EmbeddingStore, Embeddings  # noqa: E402
from .text import DEFAULT_FIELDS, product_sentences  # noqa: E402

__all__ = [
    "DEFAULT_FIELDS",
    "Catalog",
    "CatalogError",
    "CosineIndex",
    "EmbeddingStore",
    "Embeddings",
    "Experiment",
    "LoadReport",
    "RankingError",
    "Recommender",
    "__version__",
    "build_experiment",
    "evaluate",
    "image_embeddings",
    "load_catalog",
    "precision_table",
    "product_sentences",
    "text_embeddings",
]
