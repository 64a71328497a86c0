"""Sampling noise of the drift statistics: how large each one gets by chance at a batch's size.

A fixed threshold (score PSI 0.25, realised F1 0.85) means a different
false-alarm rate at every batch size: PSI of 50 same-distribution rows
crosses 0.25 often, of 5,000 rows never. So each statistic without a
p-value of its own is also judged against its own null distribution at the
batch's size, estimated from the reference by resampling:

* champion score PSI: both sides drawn with replacement from the champion's
  scores on its *holdout* (rows it was not trained on; scores on training
  rows are over-confident, so a batch of new rows would look shifted against
  them), the reference side at the holdout's size, the current side at the
  batch's size. The (1 - α) quantile is the threshold.
* OOV rate: batches of n reference rows held out from the rest, each scored
  against the vocabulary of the rest (n capped at half the reference: a
  vocabulary from fewer rows only raises the quantile, so the cap errs
  towards fewer alarms).
* realised spam F1: a percentile bootstrap of the batch itself; decay when
  the upper end of the one-sided (1 - α) interval is below the floor, i.e.
  the batch is evidence that the champion is below the floor, not merely a
  bad draw of a dozen spams.

Null quantiles depend on the size only through n, so they are cached per
size bucket (the largest bucket ≤ n: a smaller n has a larger quantile, so
rounding down errs towards fewer alarms) and per reference (a fingerprint of
its data). Pure numpy; no Dagster.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np

RESAMPLES = 300  # the 98.75% quantile from 300 draws is ~4 draws from the top: rough but cheap
SIZE_BUCKETS = (30, 40, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 7500, 10000, 20000)

_cache: dict[tuple, float] = {}


def size_bucket(n: int) -> int:
    """The largest bucket ≤ n (the smallest bucket for n below it)."""
    return max((b for b in SIZE_BUCKETS if b <= n), default=SIZE_BUCKETS[0])


def quantile_label(alpha: float, n: int) -> str:
    """How a reason names a noise threshold, e.g. "p98.75 at n=50"."""
    return f"p{100 * (1 - alpha):g} at n={size_bucket(n)}"


def score_psi_threshold(reference_scores, n: int, alpha: float, seed: int = 0, resamples: int = RESAMPLES) -> float:
    """The (1 - alpha) quantile of score PSI between two same-distribution samples (reference size, n)."""
    from spam_assets.drift import psi  # psi lives with the other statistics; imported late to avoid a cycle

    scores = np.asarray(reference_scores, dtype=float).ravel()
    scores = scores[np.isfinite(scores)]
    bucket = size_bucket(n)
    key = ("score_psi", _fingerprint(scores.tobytes()), bucket, alpha, seed, resamples)
    if key not in _cache:
        rng = np.random.default_rng([seed, bucket])
        draws = [
            psi(rng.choice(scores, size=scores.size), rng.choice(scores, size=bucket)) for _ in range(resamples)
        ]
        _cache[key] = float(np.quantile(draws, 1 - alpha))
    return _cache[key]


def oov_threshold(
    reference_tokens: Sequence[list[str]], n: int, alpha: float, seed: int = 0, resamples: int = RESAMPLES
) -> float:
    """The (1 - alpha) quantile of the OOV rate of n held-out reference rows against the rest's vocabulary."""
    docs = list(reference_tokens)
    bucket = min(size_bucket(n), len(docs) // 2)
    key = ("oov", _fingerprint("\x1f".join("\x1e".join(d) for d in docs).encode()), bucket, alpha, seed, resamples)
    if key not in _cache:
        if bucket < 1:
            return float("nan")
        ids: dict[str, int] = {}
        rows = [np.array([ids.setdefault(t, len(ids)) for t in d], dtype=np.int64) for d in docs]
        total = np.bincount(np.concatenate(rows), minlength=len(ids)) if ids else np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([seed, bucket, 1])
        draws = []
        for _ in range(resamples):
            held = [rows[i] for i in rng.choice(len(rows), size=bucket, replace=False)]
            flat = np.concatenate(held) if held else np.zeros(0, dtype=np.int64)
            if flat.size == 0:
                draws.append(0.0)
                continue
            in_batch = np.bincount(flat, minlength=len(ids))
            # a token is unseen by the rest when every occurrence of it is in the held-out rows
            draws.append(float(in_batch[total == in_batch].sum() / flat.size))
        _cache[key] = float(np.quantile(draws, 1 - alpha))
    return _cache[key]


def f1_upper_bound(truth, predicted, alpha: float, seed: int = 0, resamples: int = RESAMPLES) -> float:
    """The upper end of a one-sided (1 - alpha) percentile-bootstrap interval on spam F1 (NaN: no spam)."""
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    if truth.size == 0 or not truth.any():
        return float("nan")
    rng = np.random.default_rng([seed, truth.size, 2])
    idx = rng.integers(0, truth.size, size=(resamples, truth.size))
    t, p = truth[idx], predicted[idx]
    tp = (t & p).sum(axis=1)
    wrong = (t ^ p).sum(axis=1)  # FP + FN
    with np.errstate(invalid="ignore"):
        f1 = 2 * tp / (2 * tp + wrong)  # NaN for a resample with no spam and no spam predicted
    f1 = f1[np.isfinite(f1)]
    return float(np.quantile(f1, 1 - alpha)) if f1.size else float("nan")


def clear_cache() -> None:
    _cache.clear()


def _fingerprint(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()
