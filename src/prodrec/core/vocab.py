"""The kit's fixed vocabulary: the words every layer uses for modes, protocols, engines, calibrations and
index kinds, defined once. The CLI's ``choices``, the argument checks in :mod:`prodrec.core.params` and the
library all read these tuples; nothing types them again.

Arm names are not fixed here: they come from the arm registry (:mod:`prodrec.embed.registry`), so adding
an arm is one entry there.
"""

from __future__ import annotations

from typing import Literal, get_args

#: Modes that fuse several arms: weighted late fusion of scores, and reciprocal-rank fusion.
FUSION_MODES: tuple[str, ...] = ("fused", "rrf")
#: The arm trained on the other arms' vectors: ranked on its own, left out of fixed-weight fusion by default.
LEARNED = "learned"
#: The paper's two arms: fused as raw cosines (``alpha * image + (1 - alpha) * text``) under ``auto``
#: calibration.
PAPER_ARMS: tuple[str, ...] = ("image", "text")

#: Evaluation protocols: ``full`` puts every text column in the product sentence (a deployment's view);
#: ``withheld`` removes the evaluated label columns from every sentence, so a score says what an arm
#: learned beyond reading the label back.
Protocol = Literal["full", "withheld"]
PROTOCOLS: tuple[str, ...] = get_args(Protocol)

#: Where missing vectors are computed: this process, or a Ray cluster (:mod:`prodrec.embed.ray_engine`).
Engine = Literal["local", "ray"]
ENGINES: tuple[str, ...] = get_args(Engine)

#: How fusion puts arms' scores on one scale: ``raw`` cosines, per-query ``zscore``, or ``auto`` (raw for
#: the paper's two arms, zscore as soon as another arm is fused).
Calibration = Literal["auto", "raw", "zscore"]
CALIBRATIONS: tuple[str, ...] = get_args(Calibration)

#: Nearest-neighbour index kinds (:mod:`prodrec.rank.index`): exact numpy search, FAISS IVF or HNSW, or
#: ``auto`` (exact below :data:`AUTO_EXACT_MAX` vectors, :data:`AUTO_APPROX_KIND` above).
IndexKind = Literal["exact", "ivf", "hnsw", "auto"]
INDEX_KINDS: tuple[str, ...] = get_args(IndexKind)
#: Below this many vectors ``auto`` means ``exact``. From benchmarks/ann.py's size sweep (one query per
#: call, 2 shared cores): exact takes 0.1-0.3 ms up to 10,000 vectors (they fit in cache), then grows
#: with the bytes it reads: 1.1 / 4.8 / 8.7 ms at 20,000 / 50,000 / 100,000 x 384 and 3.6 / 9.3 / 18 ms
#: at 1280 dims (75 ms at 1,000,000 x 384), while ivf and hnsw answer in 0.1-0.2 ms at every size.
#: Below 50,000 exact stays under ~10 ms at up to 1280 dims, well within the kit's interactive budget
#: (50 ms per click for three modes), needs no build (ivf 0.9 s, hnsw 4.8 s at 50,000 x 384) and loses
#: no neighbour; it also keeps the 44,446-product fashion catalog exact, so the paper's figures are
#: reproduced as they are. Above it, exact's cost grows linearly and an index pays for its build.
AUTO_EXACT_MAX = 50_000
#: The approximate kind ``auto`` picks from :data:`AUTO_EXACT_MAX` vectors up: ivf, measured the safer
#: choice here: recall@5 0.973 / 0.992 at nprobe 1 on the 1M x 384 / 200k x 1280 sets with 420x / 128x
#: exact's single-query throughput, a 5x faster build than hnsw (24 vs 133 s at 1M x 384), and a
#: calibration that always reaches its target (the nprobe ladder ends at every cell), where hnsw's
#: efSearch ladder can run out on strongly clustered data.
AUTO_APPROX_KIND = "ivf"

#: The words that turn an optional model or feature off on the command line (``--clip-model none``).
NONE_WORDS: tuple[str, ...] = ("", "none", "off")

#: Evaluation tasks (:mod:`prodrec.evaluation.tasks`): ``item`` (product -> similar products, the paper's),
#: ``label`` (a label value as a text query -> products with it) and ``name`` (a product name -> its
#: photos), the public leaderboard's two tasks on this dataset, and ``composed`` (a product plus a colour
#: word -> products of its article type in that colour).
Task = Literal["item", "label", "name", "composed"]
TASKS: tuple[str, ...] = get_args(Task)
