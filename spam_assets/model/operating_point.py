"""The operating point: the P(spam) threshold chosen for a target ham false-positive rate, and the action tiers.

A ham marked spam (a lost message) costs more than a spam let through, so
the label is not P(spam) >= 0.5 but P(spam) >= the threshold chosen on the
holdout for a target ham false-positive rate (`choose`). The threshold is
stored with the model version (`to_tags`, tags in `tags.py`); serving reads
it back (`Tiers.from_tags`) and gives every verdict an action tier:

    ham          P(spam) <  suspicious_from
    suspicious   suspicious_from <= P(spam) < threshold   (e.g. deliver, flag or add a header)
    spam         P(spam) >= threshold                      (the label is spam)

`suspicious_from` is chosen the same way for a looser ham false-positive
rate. A version without the tags (trained before this) serves at 0.5 with
no suspicious tier.

How the threshold is chosen. With n holdout ham, the rate can only be
observed in steps of 1/n: the threshold allows k = floor(target * n) ham at
or above it, so it lies above the (k+1)-th highest ham score; any threshold
between that score and the next spam score above it gives the same holdout
counts, and the midpoint leaves margin both ways. The observed rate comes
with an exact (Clopper-Pearson) 95% interval on the ham count. A target
is *certified* only when the interval's upper end is within it: for 0.1%
that needs at least 3,688 ham with no false positive (2.5% one-sided:
n >= ln(0.025) / ln(1 - 0.001)); the SMS holdout has about 970, so there
the threshold is the strictest the holdout supports (no holdout ham above
it) and the bound it does support is stated (about 0.38%).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import beta

from spam_assets.model.artifact import RefusedModel
from spam_assets.model.tags import TAG_OPERATING_POINT, TAG_OPERATING_THRESHOLD, TAG_SUSPICIOUS_THRESHOLD
from spam_assets.settings import POSITIVE_LABEL

DEFAULT_THRESHOLD = 0.5  # what a version without an operating point serves at
DEFAULT_TARGET_HAM_FPR = 0.001
DEFAULT_SUSPICIOUS_HAM_FPR = 0.01
CONFIDENCE = 0.95
TIERS = ("ham", "suspicious", "spam")


def exact_interval(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Clopper-Pearson interval of a binomial proportion k/n (two-sided, `confidence`)."""
    if n <= 0:
        return 0.0, 1.0
    alpha = 1.0 - confidence
    low = 0.0 if k == 0 else float(beta.ppf(alpha / 2, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - alpha / 2, k + 1, n - k))
    return low, high


def ham_needed(target: float, confidence: float = CONFIDENCE) -> int:
    """Ham messages needed to certify `target` when none is a false positive (upper end of the interval <= target)."""
    if not 0 < target < 1:
        return 0
    return math.ceil(math.log((1 - confidence) / 2) / math.log(1 - target))


@dataclass(frozen=True)
class OperatingPoint:
    """A threshold chosen on a holdout, and what it gives there."""

    threshold: float
    suspicious_from: float
    target_ham_fpr: float
    suspicious_ham_fpr: float
    n_ham: int
    n_spam: int
    false_positives: int  # holdout ham with P(spam) >= threshold
    ham_fpr: float
    ham_fpr_low: float  # exact 95% interval of the ham false-positive rate
    ham_fpr_high: float
    certified: bool  # ham_fpr_high <= target_ham_fpr
    spam_precision: float
    spam_recall: float
    spam_f1: float
    basis: str  # in words: how it was chosen, and the bound the holdout supports

    def metrics(self) -> dict[str, float]:
        """As MLflow metrics (holdout_*, so the model card and GetChampion carry them)."""
        return {
            "holdout_operating_threshold": self.threshold,
            "holdout_suspicious_threshold": self.suspicious_from,
            "holdout_ham_fpr_at_operating_point": self.ham_fpr,
            "holdout_ham_fpr_upper_at_operating_point": self.ham_fpr_high,
            "holdout_spam_precision_at_operating_point": self.spam_precision,
            "holdout_spam_recall_at_operating_point": self.spam_recall,
            "holdout_spam_f1_at_operating_point": self.spam_f1,
        }

    def to_tags(self) -> dict[str, str]:
        """The model version's tags: the two thresholds serving reads, and the whole point as JSON for people."""
        return {
            TAG_OPERATING_THRESHOLD: repr(self.threshold),
            TAG_SUSPICIOUS_THRESHOLD: repr(self.suspicious_from),
            TAG_OPERATING_POINT: json.dumps(asdict(self), sort_keys=True)[:5000],
        }


def _threshold_for(ham: np.ndarray, spam: np.ndarray, target: float) -> float:
    """The lowest threshold (midpoint rule, module doc) with at most floor(target * n) holdout ham at or above it."""
    if len(ham) == 0:
        return DEFAULT_THRESHOLD
    allowed = math.floor(target * len(ham) + 1e-9)
    if allowed >= len(ham):
        return 0.0
    ranked = np.sort(ham)[::-1]
    above = float(ranked[allowed])  # the threshold must exceed this ham score
    higher_spam = spam[spam > above]
    if len(higher_spam):
        return (above + float(higher_spam.min())) / 2
    return min(1.0, float(np.nextafter(above, np.inf)))


def choose(
    labels: Sequence[str],
    spam_scores: Sequence[float],
    target_ham_fpr: float = DEFAULT_TARGET_HAM_FPR,
    suspicious_ham_fpr: float = DEFAULT_SUSPICIOUS_HAM_FPR,
) -> OperatingPoint:
    """The operating point for `target_ham_fpr` on a holdout (its labels and P(spam)); see the module doc."""
    if not 0 <= target_ham_fpr < 1 or not 0 <= suspicious_ham_fpr < 1:
        raise ValueError(f"ham false-positive rates must be in [0, 1): got {target_ham_fpr}, {suspicious_ham_fpr}")
    is_spam = np.asarray(labels) == POSITIVE_LABEL
    scores = np.asarray(spam_scores, dtype=float)
    ham, spam = scores[~is_spam], scores[is_spam]
    threshold = _threshold_for(ham, spam, target_ham_fpr)
    suspicious_from = min(threshold, _threshold_for(ham, spam, max(suspicious_ham_fpr, target_ham_fpr)))
    fp, tp = int((ham >= threshold).sum()), int((spam >= threshold).sum())
    n_ham, n_spam = len(ham), len(spam)
    low, high = exact_interval(fp, n_ham)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / n_spam if n_spam else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    certified = n_ham > 0 and high <= target_ham_fpr
    if n_ham == 0:
        basis = f"no ham in the holdout: threshold {DEFAULT_THRESHOLD}, nothing known about false positives"
    elif certified:
        basis = (
            f"chosen on {n_ham} holdout ham for a ham false-positive rate of {target_ham_fpr:.2%}: "
            f"{fp} at or above it, rate {fp / n_ham:.3%} (95% CI {low:.3%}-{high:.3%}), within the target"
        )
    else:
        basis = (
            f"chosen on {n_ham} holdout ham for a ham false-positive rate of {target_ham_fpr:.2%}: "
            f"{fp} at or above it, rate {fp / n_ham:.3%}, but the exact 95% CI ({low:.3%}-{high:.3%}) "
            f"does not certify the target: that needs at least {ham_needed(target_ham_fpr)} ham with none "
            f"above the threshold; what this holdout supports is a rate of at most {high:.3%}"
        )
    return OperatingPoint(
        threshold=float(threshold),
        suspicious_from=float(suspicious_from),
        target_ham_fpr=float(target_ham_fpr),
        suspicious_ham_fpr=float(suspicious_ham_fpr),
        n_ham=n_ham,
        n_spam=n_spam,
        false_positives=fp,
        ham_fpr=fp / n_ham if n_ham else float("nan"),
        ham_fpr_low=low,
        ham_fpr_high=high,
        certified=bool(certified),
        spam_precision=precision,
        spam_recall=recall,
        spam_f1=f1,
        basis=basis,
    )


@dataclass(frozen=True)
class Tiers:
    """What serving needs of an operating point: the label and the action tier of a P(spam)."""

    threshold: float = DEFAULT_THRESHOLD
    suspicious_from: float = DEFAULT_THRESHOLD
    source: str = "default"  # "tags": the version's own operating point; "default": none stored, 0.5
    basis: str = "no operating point stored with this version: label spam from 0.5, no suspicious tier"

    def label(self, probability: float) -> str:
        return POSITIVE_LABEL if probability >= self.threshold else "ham"

    def tier(self, probability: float) -> str:
        if probability >= self.threshold:
            return "spam"
        return "suspicious" if probability >= self.suspicious_from else "ham"

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Tiers:
        """The version's tiers, or the default when it has no operating point; RefusedModel for a garbled one.

        A threshold that is not a number in [0, 1], or a suspicious tier above
        the spam threshold, would label every message wrongly: the version is
        refused (the server keeps what it serves), naming the tag.
        """
        raw_threshold, raw_suspicious = tags.get(TAG_OPERATING_THRESHOLD), tags.get(TAG_SUSPICIOUS_THRESHOLD)
        if raw_threshold is None:
            return cls()
        threshold = _probability(TAG_OPERATING_THRESHOLD, raw_threshold)
        suspicious = threshold if raw_suspicious is None else _probability(TAG_SUSPICIOUS_THRESHOLD, raw_suspicious)
        if suspicious > threshold:
            raise RefusedModel(
                f"tag {TAG_SUSPICIOUS_THRESHOLD}={raw_suspicious!r} is above {TAG_OPERATING_THRESHOLD}={raw_threshold!r}: "
                "the suspicious tier must start at or below the spam threshold"
            )
        return cls(threshold, suspicious, "tags", _basis(tags.get(TAG_OPERATING_POINT)))


def _basis(raw: str | None) -> str:
    """The `basis` of the operating point's JSON tag: for people only, so anything unreadable is just not shown."""
    try:
        basis = json.loads(raw or "{}").get("basis", "")
    except (ValueError, AttributeError):
        return ""
    return basis if isinstance(basis, str) else ""


def _probability(tag: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise RefusedModel(f"tag {tag}={raw!r} is not a probability in [0, 1]")
    return value
