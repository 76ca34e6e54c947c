"""Measuring: how good the top-k lists are, on plain arrays of positions and labels.

Lives here: evaluation runs and weight sweeps over a recommender (:mod:`.runs`) and the tables, findings
and summaries the notebooks print (:mod:`.report`).

May import: :mod:`prodrec.core`, :mod:`prodrec.data`, :mod:`prodrec.embed`, :mod:`prodrec.rank`.
"""
