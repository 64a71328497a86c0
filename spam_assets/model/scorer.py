"""What scores requests: one `Scorer` per loaded model version, chosen once at load.

The compiled lean scorer (`lean_scorer`) when it compiles and matches the
pipeline's predict_proba on the probe and edge-case texts; otherwise the
pipeline itself, with the reason, so a model the compiler does not know
still serves (slower) and says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import numpy as np
import sklearn

from spam_assets.model.lean_scorer import verified_scorer


class Scorer(Protocol):
    """P(spam) for a batch of texts; `name` says which scorer ("lean" or "pipeline"), `reason` why it was chosen."""

    @property
    def name(self) -> str: ...

    @property
    def reason(self) -> str: ...

    def scores(self, texts: Sequence[str]) -> np.ndarray: ...


@dataclass(frozen=True)
class PipelineScorer:
    """P(spam) through the fitted pipeline's own predict_proba."""

    model: Any
    spam_column: int
    reason: str
    name: ClassVar[str] = "pipeline"

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        # Only verified models get here, and their inputs are texts, so the features are finite
        # by construction: skipping scikit-learn's per-call input checks saves ~10-15% per call.
        with sklearn.config_context(assume_finite=True, skip_parameter_validation=True):
            return self.model.predict_proba(texts)[:, self.spam_column]


def choose_scorer(model: Any, spam_column: int, texts: Sequence[str]) -> Scorer:
    """The lean scorer if it compiles and matches predict_proba on `texts` (and edge cases), else the pipeline."""
    lean, why = verified_scorer(model, spam_column, texts)
    return lean if lean is not None else PipelineScorer(model, spam_column, reason=why)
