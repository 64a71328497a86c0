"""Rows of the champion decision's table at each model's operating point: what serving will actually do.

The gates judge P(spam) >= 0.5; serving labels spam from each version's own
threshold (spam_assets.model.operating_point). These rows show, for both
models on the same holdout, the threshold each serves at and the precision,
recall and ham false-positive rate it gives there (the rate with its exact
95% interval), so a reader of the decision sees the trade-off served.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from spam_assets.model.operating_point import Tiers, exact_interval
from spam_assets.settings import POSITIVE_LABEL


def at_threshold(labels: Sequence[str], spam_scores: Sequence[float], tiers: Tiers) -> dict[str, float]:
    """Precision, recall, ham false-positive rate (and its 95% upper bound), suspicious share at `tiers`."""
    is_spam = np.asarray(labels) == POSITIVE_LABEL
    scores = np.asarray(spam_scores, dtype=float)
    flagged = scores >= tiers.threshold
    tp, fp = int((flagged & is_spam).sum()), int((flagged & ~is_spam).sum())
    n_ham, n_spam = int((~is_spam).sum()), int(is_spam.sum())
    suspicious = (scores >= tiers.suspicious_from) & ~flagged
    return {
        "threshold": tiers.threshold,
        "suspicious_from": tiers.suspicious_from,
        "spam_precision": tp / (tp + fp) if tp + fp else 0.0,
        "spam_recall": tp / n_spam if n_spam else 0.0,
        "ham_fpr": fp / n_ham if n_ham else float("nan"),
        "ham_fpr_upper": exact_interval(fp, n_ham)[1],
        "suspicious_share": float(suspicious.mean()) if len(scores) else 0.0,
    }


ROWS = (
    ("threshold", "operating threshold (label spam from)"),
    ("suspicious_from", "suspicious tier from"),
    ("spam_precision", "spam_precision @ operating point"),
    ("spam_recall", "spam_recall @ operating point"),
    ("ham_fpr", "ham false-positive rate @ operating point"),
    ("ham_fpr_upper", "  its exact 95% upper bound"),
    ("suspicious_share", "share of holdout in the suspicious tier"),
)


def operating_rows(
    labels: Sequence[str],
    challenger: tuple[Sequence[float], Tiers],
    champion: tuple[Sequence[float], Tiers] | None,
) -> list[dict]:
    """Decision-table rows (metric, champion, challenger, gate, verdict): each model at its own operating point."""
    new = at_threshold(labels, *challenger)
    old = at_threshold(labels, *champion) if champion is not None else None
    rows = []
    for key, name in ROWS:
        note = ""
        if key == "threshold":  # where each threshold comes from
            note = "; ".join(
                f"{who}: {'its operating point' if tiers.source == 'tags' else '0.5, none stored'}"
                for who, tiers in (("champion", champion[1] if champion else None), ("challenger", challenger[1]))
                if tiers is not None
            )
        rows.append({"metric": name, "champion": old[key] if old else None, "challenger": new[key], "gate": "", "verdict": note})
    return rows
