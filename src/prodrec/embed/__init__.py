"""Vectors: every arm's embedding of every product, computed once and kept.

Lives here: the encoders (:mod:`.encoders`: ResNet-50, EfficientNet-Lite0, sentence-transformers, CLIP,
the colour histogram), the model table and arm specs (:mod:`.arms`), the arm registry that everything
naming an arm reads (:mod:`.registry`), vectors with ids (:mod:`.vectors`), the per-product store
(:mod:`.store`), store-level embedding (:mod:`.embedding`), the Ray engine (:mod:`.ray_engine`) and the
learned head (:mod:`.learned`).

May import: :mod:`prodrec.core`, :mod:`prodrec.data`. Deep-learning frameworks (TensorFlow, torch,
transformers, ray) are imported inside the encoder or engine that needs them, never at module level.
"""
