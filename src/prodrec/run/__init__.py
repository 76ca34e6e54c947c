"""Running: experiments assembled from a catalog, the notebooks, Kaggle staging and the CLI.

Lives here: :func:`.experiment.build_experiment` (catalog -> arms -> recommender, arguments checked
first), the papermill notebooks runner and Kaggle staging (:mod:`.notebooks`), and the ``prodrec`` command
line (:mod:`.cli`), which parses and prints while the library decides.

May import: every layer below (:mod:`prodrec.evaluation` and down), never :mod:`prodrec.viz`.
"""
