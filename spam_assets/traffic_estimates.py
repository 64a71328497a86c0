"""Estimates on unlabelled traffic: how much of it is spam, and how well the champion does on it.

Pure functions (numpy and scipy; no Dagster, no MLflow). Input: the champion's
reference, i.e. its P(spam) scores on its *holdout* and the holdout's true
labels (the rows drift_noise already uses: scores on training rows are
over-confident), and the champion's P(spam) on a batch of traffic, with
labels for some rows where feedback exists. Output: `TrafficEstimates`,
every figure with a confidence interval.

* predicted spam share: the share with P(spam) >= 0.5 (Wilson interval);
* true spam share, corrected for the champion's errors, two classic ways:
  black-box shift estimation (BBSE, Lipton, Wang & Smola 2018): with C the
  holdout confusion matrix normalised by true class, solve C q = mu for the
  true shares q given the predicted shares mu; and EM re-estimation of the
  prior from the calibrated posteriors (Saerens, Latinne & Decaestecker
  2002). Both assume label shift: the spam share moves, P(text | label)
  does not. EM starts from the prior the champion's posteriors encode,
  their mean on the holdout (the holdout's label share, a noisier figure,
  made EM over-adjust on synthetic data and on SMS). Their intervals come
  from a bootstrap over both the holdout (for BBSE stratified by class: C
  rests on ~100 holdout spams) and the batch;
* spam precision, recall and F1 without labels by CBPE (as in NannyML): a
  message predicted spam with calibrated P(spam) p adds p to the expected
  true positives and 1 - p to the false positives; one predicted ham adds p
  to the false negatives. Under label shift the posteriors are first moved
  to the EM prior (Saerens' adjustment); both variants are kept, the
  adjusted one is the one reported. The interval is for the *realised*
  figure on this batch: per replicate, the prior is re-estimated on a
  bootstrap of the batch, the batch's posteriors adjusted to it, labels
  drawn from them, and the metric computed. CBPE trusts the probabilities:
  it cannot see spam the champion confidently calls ham (concept shift), so
  the holdout calibration (ECE) is reported beside it;
* realised precision, recall, F1 and spam share on the labelled rows, with
  percentile-bootstrap intervals, beside the estimates.

Nothing here raises on a batch the traffic can produce (empty, one class, a
champion whose predictions carry no information): the figure is NaN and
`reason` says why. A malformed input (scores outside [0, 1], lengths that
differ, unknown labels, a holdout without both classes) is a ValueError
naming what and where.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from spam_assets.settings import LABELS, POSITIVE_LABEL

THRESHOLD = 0.5  # P(spam) at or above which the champion says spam (as modeling.evaluate)
RESAMPLES = 500
CONFIDENCE = 0.95
ECE_BINS = 10
EM_TOLERANCE = 1e-7
EM_MAX_ITERATIONS = 2000
SINGULAR = 1e-9  # |recall - false-positive rate| below this: C cannot be inverted
_PROB_EPS = 1e-12  # posteriors of exactly 0 or 1 would make Saerens' ratio 0/0 at a prior of 0 or 1
_CHUNK = 2_000_000  # bootstrap cells (replicates x rows) per block, to bound memory on large batches
METRICS = ("precision", "recall", "f1")


@dataclass(frozen=True)
class Estimate:
    """A figure and its interval; NaN with `reason` when it cannot be had."""

    value: float
    low: float = math.nan
    high: float = math.nan
    reason: str = ""

    def covers(self, x: float) -> bool:
        return bool(self.low <= x <= self.high)

    def text(self, digits: int = 3) -> str:
        if math.isnan(self.value):
            return f"n/a ({self.reason})" if self.reason else "n/a"
        interval = "" if math.isnan(self.low) else f" [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return f"{self.value:.{digits}f}{interval}"

    def as_dict(self) -> dict:
        plain = lambda x: None if math.isnan(x) else round(float(x), 6)
        return {"value": plain(self.value), "low": plain(self.low), "high": plain(self.high), "reason": self.reason}


@dataclass(frozen=True)
class TrafficEstimates:
    """What the champion's reference says about one batch of traffic; see the module docstring."""

    n_batch: int
    n_labelled: int
    n_reference: int
    n_reference_spam: int
    reference_share: float  # spam share of the holdout's labels
    champion_prior: float  # mean P(spam) on the holdout: the prior the posteriors encode, EM's start
    confidence: float
    calibration_ece: float  # of the champion's P(spam) on its holdout
    holdout_cbpe_f1: float  # CBPE's spam F1 on the holdout, to set beside the realised one:
    holdout_f1: float  # how far CBPE is off where no shift is possible
    predicted_share: Estimate
    bbse_share: Estimate
    em_share: Estimate
    cbpe: dict[str, Estimate]  # precision, recall, f1: posteriors adjusted to the EM prior (reported)
    cbpe_unadjusted: dict[str, Estimate]  # the same with the champion's posteriors as they are
    realised: dict[str, Estimate] = field(default_factory=dict)  # precision, recall, f1, spam_share
    notes: list[str] = field(default_factory=list)

    def headline(self) -> list[str]:
        """One line per figure, for a person reading the asset's metadata."""
        pct = f"{100 * self.confidence:g}%"
        lines = [
            f"predicted spam share {self.predicted_share.text()} of {self.n_batch} messages "
            f"(holdout {self.reference_share:.3f}; {pct} intervals)",
            f"true spam share, corrected for the champion's errors: BBSE {self.bbse_share.text()}, "
            f"EM {self.em_share.text()}",
            "estimated spam "
            + ", ".join(f"{m} {self.cbpe[m].text()}" for m in ("f1", "precision", "recall"))
            + " (CBPE, prior-adjusted)",
        ]
        if self.realised:
            lines.append(
                f"realised on {self.n_labelled} labelled: "
                + ", ".join(f"{m} {self.realised[m].text()}" for m in ("f1", "precision", "recall", "spam_share"))
            )
        else:
            lines.append("no labelled rows in this batch: nothing realised to compare")
        lines.append(
            f"champion calibration on its holdout: ECE {self.calibration_ece:.3f}, "
            f"CBPE F1 {self.holdout_cbpe_f1:.3f} vs realised {self.holdout_f1:.3f} "
            f"({self.n_reference} messages, {self.n_reference_spam} spam)"
        )
        return lines + [f"note: {note}" for note in self.notes]

    def as_metadata(self) -> dict:
        """Plain types only (NaN as None), ready for MaterializeResult metadata or JSON."""
        plain = lambda x: None if math.isnan(x) else round(x, 6)
        return {
            "n_batch": self.n_batch,
            "n_labelled": self.n_labelled,
            "n_reference": self.n_reference,
            "n_reference_spam": self.n_reference_spam,
            "reference_share": plain(float(self.reference_share)),
            "champion_prior": plain(float(self.champion_prior)),
            "confidence": float(self.confidence),
            "calibration_ece": plain(float(self.calibration_ece)),
            "holdout_cbpe_f1": plain(float(self.holdout_cbpe_f1)),
            "holdout_f1": plain(float(self.holdout_f1)),
            "predicted_share": self.predicted_share.as_dict(),
            "bbse_share": self.bbse_share.as_dict(),
            "em_share": self.em_share.as_dict(),
            "cbpe": {k: v.as_dict() for k, v in self.cbpe.items()},
            "cbpe_unadjusted": {k: v.as_dict() for k, v in self.cbpe_unadjusted.items()},
            "realised": {k: v.as_dict() for k, v in self.realised.items()},
            "notes": list(self.notes),
            "headline": self.headline(),
        }


# ------------------------------------------------------------------ entry point


def estimate_traffic(
    reference_scores,
    reference_labels,
    batch_scores,
    batch_labels: Sequence | None = None,
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = 0,
) -> TrafficEstimates:
    """Every estimate for one batch; see the module docstring.

    reference_scores, reference_labels: the champion's P(spam) on its holdout
    and the true labels ("spam"/"ham" or booleans, spam true). batch_scores:
    its P(spam) on the traffic. batch_labels: optional, aligned with
    batch_scores, None (or NaN, "") where a row has no label.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    if resamples < 10:
        raise ValueError(f"resamples must be at least 10, got {resamples}")
    ref_p = _probabilities(reference_scores, "reference_scores")
    ref_y = _truth(reference_labels, "reference_labels")
    if ref_y.size != ref_p.size or np.isnan(ref_y).any():
        raise ValueError(
            f"reference_labels must label every reference score: {ref_y.size} labels "
            f"({int(np.isnan(ref_y).sum())} missing) for {ref_p.size} scores"
        )
    ref_y = ref_y.astype(bool)
    n_spam = int(ref_y.sum())
    if n_spam == 0 or n_spam == ref_y.size:
        raise ValueError(
            f"the reference holdout needs both classes to measure the champion's errors: "
            f"{n_spam} spam of {ref_y.size} rows"
        )
    p = _probabilities(batch_scores, "batch_scores")
    y = np.full(p.size, np.nan) if batch_labels is None else _truth(batch_labels, "batch_labels")
    if y.size != p.size:
        raise ValueError(f"batch_labels has {y.size} entries for {p.size} batch scores")

    rng = np.random.default_rng(seed)
    alpha = 1 - confidence
    # The prior the champion's posteriors encode: their mean on the holdout. EM then finds no shift
    # in the holdout itself; the holdout's label share (a noisier estimate) made EM over-adjust.
    prior = float(ref_p.mean())
    ref_pred = ref_p >= THRESHOLD
    notes: list[str] = []

    reference = dict(
        n_reference=int(ref_p.size),
        n_reference_spam=n_spam,
        reference_share=n_spam / ref_y.size,
        champion_prior=prior,
        confidence=confidence,
        calibration_ece=expected_calibration_error(ref_p, ref_y),
        holdout_cbpe_f1=cbpe_metrics(ref_p, ref_pred)["f1"],
        holdout_f1=_metrics(*_counts(ref_y, ref_pred))["f1"],
    )
    if p.size == 0:
        empty = Estimate(math.nan, reason="empty batch")
        every = {m: empty for m in METRICS}
        return TrafficEstimates(
            n_batch=0, n_labelled=0, **reference, predicted_share=empty, bbse_share=empty, em_share=empty,
            cbpe=every, cbpe_unadjusted=every, notes=["empty batch"],
        )  # fmt: skip

    pred = p >= THRESHOLD
    k = int(pred.sum())
    predicted = Estimate(k / p.size, *wilson(k, p.size, alpha))

    # BBSE: the point from the holdout and batch as they are; the interval from both resampled.
    tpr, fpr = ref_pred[ref_y].mean(), ref_pred[~ref_y].mean()
    q, reason = bbse_share(k / p.size, tpr, fpr)
    if reason:
        bbse = Estimate(math.nan, reason=reason)
        notes.append(f"BBSE: {reason}")
    else:
        tpr_b = rng.binomial(n_spam, tpr, resamples) / n_spam  # stratified holdout bootstrap, per class
        fpr_b = rng.binomial(ref_y.size - n_spam, fpr, resamples) / (ref_y.size - n_spam)
        mu_b = rng.binomial(p.size, k / p.size, resamples) / p.size  # batch bootstrap of the predicted share
        draws = np.array([bbse_share(m, t, f)[0] for m, t, f in zip(mu_b, tpr_b, fpr_b)])
        bbse = _percentile(q, draws, alpha, "of the bootstrap draws met a singular confusion matrix")
        if bbse.reason:
            notes.append(f"BBSE: {bbse.reason}")

    # EM: the prior and the adjusted posteriors, on the batch and on bootstraps of it.
    # Each replicate's prior: the mean posterior of a bootstrap of the holdout.
    em_q, adjusted, converged = em_prior(p, prior)
    if not converged:
        notes.append(
            f"EM: not settled after {EM_MAX_ITERATIONS} iterations (the posteriors say little about the "
            f"prior); its prior {em_q:.3f} and the CBPE adjusted to it are rough"
        )
    prior_b = ref_p[rng.integers(0, ref_p.size, size=(resamples, ref_p.size))].mean(axis=1)
    em_draws = np.concatenate(list(_em_bootstrap(p, prior_b, rng)))
    em = _percentile(em_q, em_draws, alpha, "")

    adjust_b = lambda b: adjust_posteriors(p, prior_b[b], em_draws[b])
    cbpe = _cbpe(p, pred, adjust_b, adjusted, resamples, alpha, rng)
    cbpe_raw = _cbpe(p, pred, lambda b: p, p, resamples, alpha, rng)
    for name, estimate in cbpe.items():
        if estimate.reason:
            notes.append(f"CBPE {name}: {estimate.reason}")

    labelled = ~np.isnan(y)
    realised = {}
    if labelled.any():
        realised = realised_metrics(y[labelled].astype(bool), pred[labelled], resamples, alpha, rng)
    return TrafficEstimates(
        n_batch=int(p.size),
        n_labelled=int(labelled.sum()),
        **reference,
        predicted_share=predicted,
        bbse_share=bbse,
        em_share=em,
        cbpe=cbpe,
        cbpe_unadjusted=cbpe_raw,
        realised=realised,
        notes=notes,
    )


# ------------------------------------------------------------------ the methods


def bbse_share(predicted_share: float, tpr: float, fpr: float) -> tuple[float, str]:
    """(true spam share, reason if NaN) by solving C q = mu, clipped to [0, 1].

    With C[i][j] = P(predicted i | true j), the spam row of C q = mu reads
    fpr (1 - s) + tpr s = mu, so s = (mu - fpr) / (tpr - fpr); det C = tpr - fpr.
    """
    det = tpr - fpr
    if abs(det) < SINGULAR:
        return math.nan, (
            f"the holdout confusion matrix is singular (recall {tpr:.3f} = false-positive rate {fpr:.3f}): "
            "the champion's verdicts carry no information on the spam share"
        )
    return float(np.clip((predicted_share - fpr) / det, 0.0, 1.0)), ""


def adjust_posteriors(p, train_prior, new_prior) -> np.ndarray:
    """Saerens' adjustment: P(spam | x) under a new spam prior, from P(spam | x) under the training prior.

    Either prior may be an array broadcasting against p (one prior per bootstrap row).
    """
    p = np.clip(np.asarray(p, dtype=float), _PROB_EPS, 1 - _PROB_EPS)
    new_prior = np.asarray(new_prior, dtype=float)
    spam = new_prior / train_prior * p
    ham = (1 - new_prior) / (1 - train_prior) * (1 - p)
    return spam / (spam + ham)


def em_prior(p, train_prior: float) -> tuple[float, np.ndarray, bool]:
    """(spam prior, adjusted posteriors, converged) of a batch by Saerens' EM.

    The prior is the mean of the posteriors adjusted to it. EM crawls when the
    posteriors say little about the prior (all near one value); `converged`
    is False when it has not settled within EM_MAX_ITERATIONS.
    """
    priors, converged = _em_rows(np.asarray(p, dtype=float)[None, :], train_prior)
    return float(priors[0]), adjust_posteriors(p, train_prior, priors[0]), bool(converged[0])


def expected_calibration_error(p, truth, bins: int = ECE_BINS) -> float:
    """Mean |observed spam share - mean P(spam)| over equal-width bins of P(spam), weighted by bin size."""
    p = np.asarray(p, dtype=float)
    truth = np.asarray(truth, dtype=bool)
    if p.size == 0:
        return math.nan
    which = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.bincount(which, weights=truth - p, minlength=bins)  # sum of (y - p) per bin
    return float(np.abs(gap).sum() / p.size)  # = sum over bins of (n_bin / n) |mean y - mean p|


def cbpe_metrics(p, predicted) -> dict[str, float]:
    """Expected precision, recall and F1 from calibrated posteriors (NaN where a denominator is 0)."""
    p = np.asarray(p, dtype=float)
    predicted = np.asarray(predicted, dtype=bool)
    tp = p[predicted].sum()
    fp = (1 - p[predicted]).sum()
    fn = p[~predicted].sum()
    return _metrics(tp, fp, fn)


def realised_metrics(truth, predicted, resamples: int, alpha: float, rng: np.random.Generator) -> dict[str, Estimate]:
    """Precision, recall, F1 and spam share on labelled rows, percentile-bootstrap intervals (Wilson for the share)."""
    truth = np.asarray(truth, dtype=bool)
    predicted = np.asarray(predicted, dtype=bool)
    n = truth.size
    out = {}
    point = _metrics(*_counts(truth, predicted))
    idx = rng.integers(0, n, size=(resamples, n))
    draws = _metrics(*_counts(truth[idx], predicted[idx], axis=1))
    why = {
        "precision": "no labelled row was predicted spam",
        "recall": "no labelled row is spam",
        "f1": "no labelled row is spam or predicted spam",
    }
    for name in METRICS:
        out[name] = _percentile(point[name], draws[name], alpha, "", why[name])
    spam = int(truth.sum())
    out["spam_share"] = Estimate(spam / n, *wilson(spam, n, alpha))
    return out


def wilson(successes: int, n: int, alpha: float) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (sound at 0 and n, unlike the normal one)."""
    from scipy.stats import norm

    z = norm.ppf(1 - alpha / 2)
    share = successes / n
    centre = (share + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


# ------------------------------------------------------------------ helpers


def _cbpe(p, pred, posteriors_of, point_posteriors, resamples, alpha, rng) -> dict[str, Estimate]:
    """CBPE's point from `point_posteriors`; its interval by drawing labels from `posteriors_of(replicate)`."""
    point = cbpe_metrics(point_posteriors, pred)
    draws = {m: np.empty(resamples) for m in METRICS}
    per_block = max(1, _CHUNK // p.size)
    for start in range(0, resamples, per_block):
        rows = np.arange(start, min(resamples, start + per_block))
        post = np.broadcast_to(posteriors_of(rows[:, None]), (rows.size, p.size))
        labels = rng.random(post.shape) < post
        for name, values in _metrics(*_counts(labels, np.broadcast_to(pred, post.shape), axis=1)).items():
            draws[name][rows] = values
    why = {
        "precision": "no message is predicted spam",
        "recall": "no message is expected to be spam",
        "f1": "no message is expected to be spam or predicted spam",
    }
    return {m: _percentile(point[m], draws[m], alpha, "", why[m]) for m in METRICS}


def _em_bootstrap(p, priors, rng):
    """EM on one bootstrap of the batch per prior, in blocks that bound memory."""
    per_block = max(1, _CHUNK // p.size)
    for start in range(0, priors.size, per_block):
        block = priors[start : start + per_block]
        yield _em_rows(p[rng.integers(0, p.size, size=(block.size, p.size))], block)[0]


def _em_rows(p: np.ndarray, train_prior) -> tuple[np.ndarray, np.ndarray]:
    """Saerens' EM on each row of p (replicates x rows) at once: (priors, converged per row).

    The fixed point q = mean(adjust(p, q)); train_prior: one for all rows, or one per row.
    """
    train_prior = np.broadcast_to(np.asarray(train_prior, dtype=float), (p.shape[0],))[:, None]
    q = train_prior[:, 0].copy()
    done = np.zeros(q.size, dtype=bool)
    for _ in range(EM_MAX_ITERATIONS):
        new = adjust_posteriors(p, train_prior, q[:, None]).mean(axis=1)
        done = np.abs(new - q) < EM_TOLERANCE
        q = new
        if done.all():
            break
    return q, done


def _counts(truth, predicted, axis=None):
    tp = (truth & predicted).sum(axis=axis)
    fp = (~truth & predicted).sum(axis=axis)
    fn = (truth & ~predicted).sum(axis=axis)
    return tp, fp, fn


def _metrics(tp, fp, fn) -> dict:
    with np.errstate(invalid="ignore", divide="ignore"):
        tp, fp, fn = (np.asarray(x, dtype=float) for x in (tp, fp, fn))
        out = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
    return {k: (float(v) if v.ndim == 0 else v) for k, v in out.items()}


def _percentile(point: float, draws, alpha: float, dropped: str, undefined: str = "") -> Estimate:
    """An Estimate with the percentile interval of the finite draws (NaN with a reason if there are too few)."""
    if isinstance(point, float) and math.isnan(point):
        return Estimate(math.nan, reason=undefined or "undefined")
    draws = np.asarray(draws, dtype=float)
    finite = draws[np.isfinite(draws)]
    reason = ""
    if finite.size < draws.size:
        share = 1 - finite.size / draws.size
        reason = f"{share:.0%} {dropped or 'of the bootstrap draws were undefined'}; the interval is over the rest"
    if finite.size < 0.5 * draws.size:
        return Estimate(float(point), reason=reason)  # too few for an interval to mean anything
    low, high = np.quantile(finite, [alpha / 2, 1 - alpha / 2])
    return Estimate(float(point), float(low), float(high), reason)


def _probabilities(values, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=float).ravel()
    bad = np.flatnonzero(~np.isfinite(array) | (array < 0) | (array > 1))
    if bad.size:
        raise ValueError(f"{name} must be probabilities in [0, 1]: position {bad[0]} is {float(array[bad[0]])}")
    return array


def _truth(values, name: str) -> np.ndarray:
    """1.0 for spam, 0.0 for ham, NaN for no label; a ValueError naming the first unknown label."""
    out = np.empty(len(values))
    for i, v in enumerate(values):
        if isinstance(v, (bool, np.bool_)):
            out[i] = float(v)
        elif isinstance(v, str) and v in LABELS:
            out[i] = float(v == POSITIVE_LABEL)
        elif v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
            out[i] = math.nan
        else:
            raise ValueError(f"{name}[{i}] is {v!r}: expected one of {list(LABELS)}, a boolean, or None for no label")
    return out
