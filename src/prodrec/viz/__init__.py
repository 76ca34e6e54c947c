"""Showing: image galleries, plots and the interactive widget browser.

Lives here: top-k grids, distribution and trade-off plots, figure saving with provenance
(:mod:`.gallery`) and the ipywidgets browser (:mod:`.browse`).

May import: every layer below (:mod:`prodrec.evaluation` and down), never :mod:`prodrec.run`.
matplotlib and ipywidgets are imported when a figure or widget is made.
"""
