"""Measuring: how good the top-k lists are, on plain arrays of positions and labels.

Lives here: the metric registry (:mod:`.metrics`: name -> per-query function on positions and label
codes, random baseline), graded relevance and the ranking metrics ranx computes (:mod:`.relevance`),
evaluation runs and weight sweeps over a recommender (:mod:`.runs`), paired significance tests between
modes (:mod:`.significance`) and the tables, findings and summaries the notebooks print (:mod:`.report`).

May import: :mod:`prodrec.core`, :mod:`prodrec.data`, :mod:`prodrec.embed`, :mod:`prodrec.rank`.
"""
