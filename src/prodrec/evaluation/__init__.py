"""Measuring: how good the top-k lists are, on plain arrays of positions and labels.

Lives here: the metric registry (:mod:`.metrics`: name -> per-query function on positions and label
codes, random baseline), graded relevance and the ranking metrics ranx computes (:mod:`.relevance`),
evaluation runs and weight sweeps over a recommender (:mod:`.runs`), paired significance tests between
modes (:mod:`.significance`), the tables, findings and summaries the notebooks print (:mod:`.report`), the
scoring of any recommendations table against a catalog's labels (:mod:`.tables`, ``prodrec evaluate --from``)
and a self-contained HTML page of photo grids for judging a table by eye (:mod:`.html_report`, ``prodrec
report``; here rather than in :mod:`prodrec.viz` so that the command line, which may not import viz, can
write it).

May import: :mod:`prodrec.core`, :mod:`prodrec.data`, :mod:`prodrec.embed`, :mod:`prodrec.rank`.
"""
