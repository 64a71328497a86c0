"""Holdout metrics per source (sms, email, feedback, ...), with intervals, and two models compared per source.

The merged holdout hides a small source: 93% SMS, a model can pass the
precision gate overall while failing on e-mail. So every figure is also
given per source (the corpus's `source` column), with its 95% interval:

- spam precision, spam recall and ham false-positive rate: Wilson score
  intervals (traffic_estimates.wilson), sound at 0 and 1, which small
  sources reach;
- spam F1: a seeded percentile bootstrap over the source's messages.

Two models on the same holdout are compared per source with the exact
McNemar test of live_comparison (the platform's one paired test): of the
messages exactly one model labelled right, does the champion have
significantly more? Labels are taken at P(spam) >= 0.5, as the gates are.

Pure pandas/numpy; no Dagster, no MLflow.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from spam_assets.live_comparison import mcnemar_exact, regressed
from spam_assets.settings import POSITIVE_LABEL
from spam_assets.traffic_estimates import Estimate, wilson

CONFIDENCE = 0.95
RESAMPLES = 1000
FIGURES = ("spam_precision", "spam_recall", "spam_f1", "ham_fpr")


@dataclasses.dataclass(frozen=True)
class SourceMetrics:
    """One model on one source's holdout messages."""

    source: str
    n: int
    spams: int
    spam_precision: Estimate  # 0 when nothing is called spam, as modeling.evaluate has it (the gates read these)
    spam_recall: Estimate
    spam_f1: Estimate
    ham_fpr: Estimate

    def value(self, figure: str) -> float:
        return getattr(self, figure).value

    def metrics(self, prefix: str = "source") -> dict[str, float]:
        """MLflow metrics: `source.<name>.spam_f1`, with `_low` / `_high` for its interval, and n, spams."""
        out = {f"{prefix}.{self.source}.n": float(self.n), f"{prefix}.{self.source}.spams": float(self.spams)}
        for figure in FIGURES:
            estimate = getattr(self, figure)
            for suffix, number in (("", estimate.value), ("_low", estimate.low), ("_high", estimate.high)):
                if not math.isnan(number):  # MLflow stores NaN, but a chart of it says nothing
                    out[f"{prefix}.{self.source}.{figure}{suffix}"] = float(number)
        return out


def per_source(
    labels: Sequence[str], sources: Sequence[str], spam_scores: Sequence[float], *, seed: int = 0
) -> list[SourceMetrics]:
    """Metrics of one model per source, largest source first."""
    y, sources, spam = _arrays(labels, sources, spam_scores)
    return [_metrics(name, y[sources == name], spam[sources == name], seed) for name in _by_size(sources)]


@dataclasses.dataclass(frozen=True)
class SourceComparison:
    """Challenger and champion (when there is one) on the same holdout messages of one source."""

    challenger: SourceMetrics
    champion: SourceMetrics | None
    champion_only_right: int = 0  # McNemar's discordant messages
    challenger_only_right: int = 0
    mcnemar_p: float = math.nan  # exact, two-sided; NaN without a champion

    @property
    def source(self) -> str:
        return self.challenger.source

    @property
    def n(self) -> int:
        return self.challenger.n

    @property
    def spams(self) -> int:
        return self.challenger.spams

    def regression(self, alpha: float) -> bool:
        """The champion labels this source's holdout right significantly more often, at `alpha`."""
        return self.champion is not None and regressed(
            self.champion_only_right, self.challenger_only_right, self.mcnemar_p, alpha
        )


def compare_sources(
    labels: Sequence[str],
    sources: Sequence[str],
    challenger_scores: Sequence[float],
    champion_scores: Sequence[float] | None = None,
    *,
    seed: int = 0,
) -> list[SourceComparison]:
    """Per source, largest first: both models' metrics and the paired test on that source's messages."""
    y, sources, challenger = _arrays(labels, sources, challenger_scores)
    champion = None if champion_scores is None else np.asarray(champion_scores, dtype=float) >= 0.5
    out = []
    for name in _by_size(sources):
        mask = sources == name
        new = _metrics(name, y[mask], challenger[mask], seed)
        if champion is None:
            out.append(SourceComparison(new, None))
            continue
        old = _metrics(name, y[mask], champion[mask], seed)
        a_right, b_right = champion[mask] == y[mask], challenger[mask] == y[mask]
        champion_only, challenger_only = int((a_right & ~b_right).sum()), int((b_right & ~a_right).sum())
        out.append(SourceComparison(new, old, champion_only, challenger_only, mcnemar_exact(champion_only, challenger_only)))
    return out


def to_markdown(metrics: Sequence[SourceMetrics]) -> str:
    """One row per source: n, spams, and each figure with its 95% interval."""
    lines = [
        "| source | n | spam | spam precision | spam recall | spam F1 | ham FPR |",
        "|---|---|---|---|---|---|---|",
    ]
    for m in metrics:
        cells = [m.source, str(m.n), str(m.spams), *(getattr(m, f).text(3) for f in FIGURES)]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append(f"\n{CONFIDENCE:.0%} intervals: Wilson for precision, recall and ham FPR; seeded bootstrap for F1.")
    return "\n".join(lines)


def as_json(metrics: Sequence[SourceMetrics]) -> list[dict]:
    """Plain JSON (NaN as None), for Dagster metadata."""
    nan_free = lambda x: None if isinstance(x, float) and math.isnan(x) else x
    return [
        {
            "source": m.source,
            "n": m.n,
            "spams": m.spams,
            **{f: {k: nan_free(v) for k, v in dataclasses.asdict(getattr(m, f)).items() if k != "reason"} for f in FIGURES},
        }
        for m in metrics
    ]


# ------------------------------------------------------------------ helpers


def _arrays(labels, sources, spam_scores) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    y = np.asarray(labels) == POSITIVE_LABEL
    sources = np.asarray(sources, dtype=object)
    scores = np.asarray(spam_scores)
    if not (len(y) == len(sources) == len(scores)):
        raise ValueError(f"{len(y)} labels, {len(sources)} sources and {len(scores)} scores: one each per message")
    return y, sources, scores.astype(bool) if scores.dtype == bool else scores >= 0.5


def _by_size(sources: np.ndarray) -> list[str]:
    names, counts = np.unique(sources, return_counts=True)
    return [str(n) for _, n in sorted(zip(-counts, names, strict=True))]


def _metrics(name: str, y: np.ndarray, spam: np.ndarray, seed: int) -> SourceMetrics:
    tp, fp = int((y & spam).sum()), int((~y & spam).sum())
    spams, hams = int(y.sum()), int((~y).sum())
    alpha = 1 - CONFIDENCE
    return SourceMetrics(
        source=name,
        n=len(y),
        spams=spams,
        spam_precision=_proportion(tp, tp + fp, alpha, "nothing called spam"),
        spam_recall=_proportion(tp, spams, alpha, "no spam"),
        spam_f1=_f1(y, spam, seed, alpha),
        ham_fpr=_proportion(fp, hams, alpha, "no ham"),
    )


def _proportion(k: int, n: int, alpha: float, empty: str) -> Estimate:
    if n == 0:  # 0 as evaluate() scores it (zero_division=0), without an interval
        return Estimate(0.0, reason=empty)
    return Estimate(k / n, *wilson(k, n, alpha))


def _f1(y: np.ndarray, spam: np.ndarray, seed: int, alpha: float) -> Estimate:
    point = _f1_of(y, spam)
    if len(y) == 0 or not y.any():
        return Estimate(float(point), reason="no spam")
    rng = np.random.default_rng([seed, len(y)])
    idx = rng.integers(0, len(y), size=(RESAMPLES, len(y)))
    replicates = _f1_of(y[idx], spam[idx], axis=1)
    return Estimate(float(point), float(np.quantile(replicates, alpha / 2)), float(np.quantile(replicates, 1 - alpha / 2)))


def _f1_of(y: np.ndarray, spam: np.ndarray, axis=None):
    """Spam F1 = 2TP / (2TP + FP + FN); 0 where nothing is spam on either side (zero_division=0)."""
    tp = (y & spam).sum(axis=axis)
    denominator = 2 * tp + (~y & spam).sum(axis=axis) + (y & ~spam).sum(axis=axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, 2 * tp / np.maximum(denominator, 1), 0.0)
