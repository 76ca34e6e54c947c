"""Claims that follow the numbers: each comparison a finding states, with its paired test, as a record and a
sentence generated from it.

Two kinds of claim, both paired over the same queries:

* ``modes``: two modes on one label (``fused`` against ``text`` on baseColour). The sentence says "**A**
  beats **B**" only when the paired test of :func:`~prodrec.evaluation.significance.compare_modes` is
  significant after its multiple-testing correction, and "do not differ significantly" otherwise; the
  paired bootstrap interval of the difference (:func:`~prodrec.evaluation.runs.paired_difference`) is given
  either way.
* ``labels``: one mode on two labels (image neighbours share the article type more often than the colour),
  significant when the paired bootstrap interval of the difference excludes 0.

A :class:`Findings` keeps the paragraphs, the claims behind them and the mode titles used, so a test can
read every sentence back against the metrics (``Findings.to_dict``, saved beside the metrics JSON).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from .runs import Difference, QueryScores, paired_difference

#: What the tests are called in sentences.
TEST_WORDS = {"student": "paired t-test", "fisher": "paired randomisation test"}
CORRECTION_WORDS = {"holm": "Holm-adjusted", "bonferroni": "Bonferroni-adjusted", "none": "unadjusted"}


@dataclass(frozen=True)
class Claim:
    """One paired comparison behind a sentence (``a`` is the side with the higher mean). The difference's
    numbers (``mean_a, mean_b, diff, ci_low, ci_high, n_queries``) read through to :attr:`difference`."""

    kind: str  # "modes" (two modes, one label) or "labels" (one mode, two labels)
    mode_a: str
    mode_b: str
    label_a: str
    label_b: str
    difference: Difference
    significant: bool
    p_value: float = float("nan")
    test: str = "paired bootstrap"
    protocol: str = ""

    def __getattr__(self, name: str) -> Any:
        if name in Difference._fields:
            return getattr(self.difference, name)
        raise AttributeError(name)

    def sentence(self, titles: Mapping[str, str] | None = None) -> str:
        """The claim in words, numbers included; ``titles`` name the modes (default: their ids)."""
        t = titles or {}
        a, b = t.get(self.mode_a, self.mode_a), t.get(self.mode_b, self.mode_b)
        nums = (f"{self.mean_a:.3f} vs {self.mean_b:.3f} (paired difference {self.diff:+.3f}, 95% bootstrap "
                f"interval [{self.ci_low:+.3f}, {self.ci_high:+.3f}], {self.n_queries} queries")
        if self.kind == "labels":
            if self.significant:
                return f"**{a}** neighbours share the query's {self.label_a} more often than its {self.label_b}: {nums})"
            return (f"**{a}** neighbours share the query's {self.label_a} and its {self.label_b} without a "
                    f"significant difference: {nums})")
        test = (f"; {self.test} p = {self.p_value:.2g}" if not math.isnan(self.p_value)
                else "; no paired test was run")
        if self.significant:
            return f"**{a}** beats **{b}** on {self.label_a}: {nums}{test})"
        return f"**{a}** and **{b}** do not differ significantly on {self.label_a}: {nums}{test})"

    def to_dict(self) -> dict[str, Any]:
        """The claim flat and JSON-safe (NaN as None)."""
        flat = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "difference"}
        flat.update(self.difference._asdict())
        return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in flat.items()}


@dataclass
class Findings:
    """Generated findings: Markdown paragraphs, the claims they state, and the mode titles they use."""

    paragraphs: list[str] = field(default_factory=list)
    claims: list[Claim] = field(default_factory=list)
    titles: dict[str, str] = field(default_factory=dict)

    @property
    def markdown(self) -> str:
        return "\n\n".join(self.paragraphs)

    def __str__(self) -> str:
        return self.markdown

    def to_dict(self) -> dict[str, Any]:
        """``findings`` (the Markdown), ``claims`` and ``titles``: what a notebook saves beside its metrics."""
        return {"findings": self.markdown, "claims": [c.to_dict() for c in self.claims], "titles": self.titles}

    def claim(self, claim: Claim) -> str:
        """Record ``claim`` and return its sentence."""
        self.claims.append(claim)
        return claim.sentence(self.titles)


def _values(scores: QueryScores, mode: str, label: str, metric: str = "precision") -> np.ndarray | None:
    return scores.per_query.get((mode, metric, label))


def _test_row(significance: pd.DataFrame | None, a: str, b: str, label: str, protocol: str = "",
              metric: str = "precision") -> pd.Series | None:
    if significance is None or significance.empty:
        return None
    s = significance[(significance.metric == metric) & (significance.label == label)
                     & (((significance.mode_a == a) & (significance.mode_b == b))
                        | ((significance.mode_a == b) & (significance.mode_b == a)))]
    if protocol and "protocol" in s.columns:
        s = s[s.protocol == protocol]
    return None if s.empty else s.iloc[0]


def modes_claim(scores: QueryScores, a: str, b: str, label: str, significance: pd.DataFrame | None = None,
                protocol: str = "", n_boot: int = 1000, seed: int = 0) -> Claim | None:
    """Modes ``a`` and ``b`` on ``label``: paired bootstrap interval of the difference from ``scores``, and
    the adjusted p-value and verdict of their row in ``significance`` (no row: not significant). None when
    either mode was not scored on ``label``."""
    d = _oriented(_values(scores, a, label), _values(scores, b, label), n_boot, seed)
    if d is None:
        return None
    if d[1]:
        a, b = b, a
    row = _test_row(significance, a, b, label, protocol)
    p = float(row.p_value) if row is not None else float("nan")
    test = (f"{TEST_WORDS.get(str(row.test), str(row.test))}, {CORRECTION_WORDS.get(str(row.correction), '')}"
            if row is not None else "none")
    return Claim("modes", a, b, label, label, d[0], bool(row.significant) if row is not None else False, p, test,
                 protocol)


def labels_claim(scores: QueryScores, mode: str, label_a: str, label_b: str, protocol: str = "",
                 n_boot: int = 1000, seed: int = 0) -> Claim | None:
    """One mode's precision on two labels, paired over the queries with both labels known; significant when
    the bootstrap interval of the difference excludes 0. None when either was not scored."""
    d = _oriented(_values(scores, mode, label_a), _values(scores, mode, label_b), n_boot, seed)
    if d is None:
        return None
    if d[1]:
        label_a, label_b = label_b, label_a
    return Claim("labels", mode, mode, label_a, label_b, d[0], d[0].significant, protocol=protocol)


def _oriented(va: np.ndarray | None, vb: np.ndarray | None, n_boot: int,
              seed: int) -> tuple[Difference, bool] | None:
    """The paired difference of the higher side minus the lower, and whether ``b`` was the higher (None when
    a side is missing)."""
    if va is None or vb is None:
        return None
    d = paired_difference(va, vb, n_boot=n_boot, seed=seed)
    return (d, False) if d.diff >= 0 else (paired_difference(vb, va, n_boot=n_boot, seed=seed), True)
