"""prodrec: image- and text-based product recommendation, a notebook research kit.

The package is built in layers, each a subpackage that imports only the ones below it (checked by
``lint-imports``, see ``[tool.importlinter]`` in pyproject.toml):

* :mod:`prodrec.run` (experiment assembly, notebooks runner, Kaggle staging, CLI) and :mod:`prodrec.viz`
  (galleries, widget browser), which do not import each other;
* :mod:`prodrec.evaluation` (metrics on plain arrays, evaluation runs and sweeps, reports);
* :mod:`prodrec.rank` (top-k, exact and approximate indexes, fusion, the recommender, search);
* :mod:`prodrec.embed` (encoders, the arm registry, the per-product store, the Ray engine, the learned head);
* :mod:`prodrec.data` (catalog schema, loading, sentences, images, demo catalog, locating data);
* :mod:`prodrec.core` (vocabulary, argument checks, errors, I/O, provenance).

The core needs only numpy/pandas/PIL; the encoders import TensorFlow or torch when they are built.

>>> import prodrec
>>> exp = prodrec.build_experiment("path/to/fashion-product-images-small", n_products=1000, seed=0)
>>> exp.recommender.recommend(exp.catalog.ids[0], k=5, mode="fused")
"""

from __future__ import annotations

from ._version import __version__
from .core.errors import (
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
from .data.catalog import Catalog, LoadReport, load_catalog
from .data.schema import KAGGLE, CatalogSchema
from .data.text import DEFAULT_FIELDS, product_sentences
from .embed.arms import MODELS, ArmSpec, ModelSpec
from .embed.embedding import embed_arm, image_embeddings, text_embeddings
from .embed.registry import ARMS, ArmEntry, Mode, arm_names, modes, register_arm
from .embed.store import EmbeddingStore
from .embed.vectors import Embeddings
from .evaluation.metrics import METRICS, MetricSpec, register_metric
from .evaluation.report import describe_findings, precision_table
from .evaluation.runs import alpha_sweep, evaluate
from .rank.recommender import CosineIndex, Recommender
from .run.experiment import Experiment, build_experiment

#: The built-in ranking modes (arms, then fusion modes); :func:`modes` is the live list, with registered arms.
MODES: tuple[str, ...] = modes()

__all__ = [
    "ARMS",
    "DEFAULT_FIELDS",
    "KAGGLE",
    "METRICS",
    "MODELS",
    "MODES",
    "ArmEntry",
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
    "MetricSpec",
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
    "arm_names",
    "build_experiment",
    "describe_findings",
    "embed_arm",
    "evaluate",
    "image_embeddings",
    "load_catalog",
    "modes",
    "precision_table",
    "product_sentences",
    "register_arm",
    "register_metric",
    "text_embeddings",
]
