"""prodrec: image- and text-based product recommendation, a notebook research kit.

The core (schema, catalog, sentences, store, ranking, evaluation) needs only numpy/pandas/PIL; the image
and text encoders import TensorFlow or torch when they are built, not before.

>>> import prodrec
>>> exp = prodrec.build_experiment("path/to/fashion-product-images-small", n_products=1000, seed=0)
>>> exp.recommender.recommend(exp.catalog.ids[0], k=5, mode="fused")
"""

from __future__ import annotations

from ._version import __version__
from .arms import ARMS, MODELS, ArmSpec, ModelSpec
from .catalog import Catalog, LoadReport, load_catalog
from .errors import (
                     CatalogError,
                     ConfigError,
                     DataNotFound,
                     MissingDependency,
                     ModelUnavailable,
                     ProdrecError,
                     RankingError,
                     StoreError,
                     UnknownIdError,
)
from .evaluate import alpha_sweep, evaluate
from .pipeline import (
                     Experiment,
                     build_experiment,
                     embed_arm,
                     image_embeddings,
                     text_embeddings,
)
from .rank import CosineIndex, Recommender
from .report import describe_findings, precision_table
from .schema import KAGGLE, MODES, CatalogSchema, Mode
from .store import Embeddings, EmbeddingStore
from .text import DEFAULT_FIELDS, product_sentences

__all__ = [
    "ARMS",
    "DEFAULT_FIELDS",
    "KAGGLE",
    "MODELS",
    "MODES",
    "ArmSpec",
    "Catalog",
    "CatalogError",
    "CatalogSchema",
    "ConfigError",
    "CosineIndex",
    "DataNotFound",
    "EmbeddingStore",
    "Embeddings",
    "Experiment",
    "LoadReport",
    "MissingDependency",
    "Mode",
    "ModelSpec",
    "ModelUnavailable",
    "ProdrecError",
    "RankingError",
    "Recommender",
    "StoreError",
    "UnknownIdError",
    "__version__",
    "alpha_sweep",
    "build_experiment",
    "describe_findings",
    "embed_arm",
    "evaluate",
    "image_embeddings",
    "load_catalog",
    "precision_table",
    "product_sentences",
    "text_embeddings",
]
