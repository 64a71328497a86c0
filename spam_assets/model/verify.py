"""From a downloaded model folder to a verified model and the scorer that serves it.

`load_verified` is the one gate a stored model passes before it scores
anything for anyone: the artifact checks and loading of `artifact`, then
`verify_model` (it behaves like a spam classifier), then the choice of
scorer (`scorer.choose_scorer`). The server calls it for every version the
champion alias points at; the graph can call it before a promotion.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from spam_assets.model.artifact import RefusedModel, load_skops, read_artifact, sha256_hex
from spam_assets.model.scorer import Scorer, choose_scorer
from spam_assets.settings import LABELS, POSITIVE_LABEL

# Messages no acceptable spam model gets wrong.
DEFAULT_PROBES: tuple[tuple[str, str], ...] = (
    ("WINNER!! You have won a £1000 cash prize. To claim call 09061701461 now", "spam"),
    ("URGENT! Free entry: txt WIN to 87121 to claim your guaranteed award", "spam"),
    ("Are we still on for lunch tomorrow?", "ham"),
    ("Ok, see you at home later. Love you", "ham"),
)


@dataclass(frozen=True)
class VerifiedModel:
    """A loaded model that passed every check, and the scorer chosen for it; never mutated."""

    model: Any  # a fitted scikit-learn pipeline taking a list of str
    spam_column: int  # column of predict_proba holding P(spam)
    sha256: str  # of the model file as loaded
    scorer: Scorer

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """P(spam) through the pipeline itself: the reference the scorer was checked against."""
        return np.asarray(self.model.predict_proba(list(texts)), dtype=float)[:, self.spam_column]


def verify_model(model: Any, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES) -> int:
    """Check a loaded model behaves like a spam classifier; return the P(spam) column."""
    classes = [str(c) for c in getattr(model, "classes_", [])]
    if sorted(classes) != sorted(LABELS):
        raise RefusedModel(f"model classes are {classes}, expected {list(LABELS)}")
    if not hasattr(model, "predict_proba"):
        raise RefusedModel("model has no predict_proba")
    texts = [text for text, _ in probes]
    try:
        proba = np.asarray(model.predict_proba(texts), dtype=float)
    except Exception as error:  # noqa: BLE001 - any failure to predict refuses the model
        raise RefusedModel(f"predict_proba failed on probe messages: {error!r}") from error
    if proba.shape != (len(texts), len(classes)):
        raise RefusedModel(f"predict_proba returned shape {proba.shape}, expected {(len(texts), len(classes))}")
    if not np.all(np.isfinite(proba)) or proba.min() < 0 or proba.max() > 1:
        raise RefusedModel("predict_proba returned probabilities that are not finite numbers in [0, 1]")
    if not np.allclose(proba.sum(axis=1), 1.0, atol=1e-6):
        raise RefusedModel("predict_proba rows do not sum to 1")
    spam_column = classes.index(POSITIVE_LABEL)
    wrong = [
        f"{text[:40]!r}: expected {expected}, P(spam)={p:.3f}"
        for (text, expected), p in zip(probes, proba[:, spam_column], strict=True)
        if (POSITIVE_LABEL if p >= 0.5 else "ham") != expected
    ]
    if wrong:
        raise RefusedModel(f"wrong labels on {len(wrong)} of {len(probes)} probe messages: " + "; ".join(wrong))
    return spam_column


def load_verified(
    local_dir: Path, expected_sha256: str | None = None, probes: Sequence[tuple[str, str]] = DEFAULT_PROBES
) -> VerifiedModel:
    """Check, load and verify the MLflow model in `local_dir`; raises RefusedModel saying why not."""
    data = read_artifact(Path(local_dir), expected_sha256)
    model = load_skops(data)
    spam_column = verify_model(model, probes)
    scorer = choose_scorer(model, spam_column, [text for text, _ in probes])
    return VerifiedModel(model=model, spam_column=spam_column, sha256=sha256_hex(data), scorer=scorer)
