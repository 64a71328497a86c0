"""The operating point: a threshold for a target ham false-positive rate, its exact interval, the tiers.

Plain numbers: scores drawn from seeded distributions (several seeds), no model.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy.stats import binomtest

from spam_assets.defs.resources import build_resources
from spam_assets.model.artifact import RefusedModel
from spam_assets.model.operating_point import Tiers, choose, exact_interval, ham_needed
from spam_assets.model.tags import TAG_OPERATING_POINT, TAG_OPERATING_THRESHOLD, TAG_SUSPICIOUS_THRESHOLD
from spam_assets.operating_rows import at_threshold, operating_rows


def holdout(seed: int, n_ham: int, n_spam: int, overlap: float = 6.0) -> tuple[list[str], np.ndarray]:
    """Labels and P(spam): ham near 0, spam near 1, with tails that overlap more as `overlap` falls."""
    rng = np.random.default_rng(seed)
    ham, spam = rng.beta(1, overlap, n_ham), rng.beta(overlap, 1, n_spam)
    return ["ham"] * n_ham + ["spam"] * n_spam, np.concatenate([ham, spam])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("target", [0.001, 0.005, 0.02])
def test_the_threshold_is_the_lowest_that_keeps_holdout_ham_within_the_target(seed, target):
    labels, scores = holdout(seed, n_ham=2000, n_spam=300)
    point = choose(labels, scores, target_ham_fpr=target)
    ham = np.sort(scores[: point.n_ham])[::-1]
    allowed = math.floor(target * 2000)
    assert point.false_positives == int((ham >= point.threshold).sum()) <= allowed
    # Any lower threshold at or below the first ham it excludes lets one more ham through: the lowest that meets it.
    assert int((ham >= ham[allowed]).sum()) > allowed
    assert point.threshold > ham[allowed]
    # And the holdout counts it reports are the ones at that threshold.
    spam = scores[point.n_ham :]
    assert point.spam_recall == pytest.approx(float((spam >= point.threshold).mean()))


def test_the_threshold_sits_midway_between_the_last_ham_and_the_next_spam():
    labels = ["ham"] * 4 + ["spam"] * 3
    scores = [0.1, 0.2, 0.3, 0.6, 0.5, 0.8, 0.9]
    point = choose(labels, scores, target_ham_fpr=0.0)
    assert point.threshold == pytest.approx((0.6 + 0.8) / 2)
    assert (point.false_positives, point.spam_recall) == (0, pytest.approx(2 / 3))


def test_a_holdout_too_small_for_the_target_is_not_certified_and_says_what_it_supports():
    labels, scores = holdout(seed=5, n_ham=966, n_spam=150, overlap=20)
    point = choose(labels, scores, target_ham_fpr=0.001)
    assert point.false_positives == 0 and not point.certified
    # With no false positive the exact upper bound is 1 - (alpha/2)^(1/n): about 0.38% for 966 ham.
    assert point.ham_fpr_high == pytest.approx(1 - 0.025 ** (1 / 966), rel=1e-6)
    assert f"at least {ham_needed(0.001)} ham" in point.basis and "0.381%" in point.basis
    assert ham_needed(0.001) == 3688


def test_a_holdout_large_enough_certifies_the_target():
    labels, scores = holdout(seed=6, n_ham=8000, n_spam=300, overlap=20)
    point = choose(labels, scores, target_ham_fpr=0.001)
    assert point.certified and point.ham_fpr_high <= 0.001 and "within the target" in point.basis


@pytest.mark.parametrize(("k", "n"), [(0, 966), (1, 966), (7, 1200), (50, 50)])
def test_exact_interval_is_clopper_pearson(k, n):
    expected = binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert exact_interval(k, n) == pytest.approx((expected.low, expected.high), abs=1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_suspicious_tier_starts_at_or_below_the_spam_threshold(seed):
    labels, scores = holdout(seed, n_ham=1500, n_spam=200, overlap=4)
    point = choose(labels, scores, target_ham_fpr=0.002, suspicious_ham_fpr=0.05)
    assert point.suspicious_from < point.threshold
    ham = scores[:1500]
    assert int((ham >= point.suspicious_from).sum()) <= math.floor(0.05 * 1500)
    # A stricter suspicious target than the spam one cannot put the tier above the threshold.
    strict = choose(labels, scores, target_ham_fpr=0.05, suspicious_ham_fpr=0.001)
    assert strict.suspicious_from == strict.threshold


def test_rates_outside_zero_to_one_are_refused():
    with pytest.raises(ValueError, match="ham false-positive rates"):
        choose(["ham", "spam"], [0.1, 0.9], target_ham_fpr=1.5)


def test_tags_round_trip_and_a_version_without_them_serves_at_half():
    labels, scores = holdout(seed=7, n_ham=1000, n_spam=100)
    point = choose(labels, scores)
    tiers = Tiers.from_tags(point.to_tags())
    assert (tiers.threshold, tiers.suspicious_from, tiers.source) == (point.threshold, point.suspicious_from, "tags")
    assert tiers.basis == point.basis and json.loads(point.to_tags()[TAG_OPERATING_POINT])["n_ham"] == 1000
    default = Tiers.from_tags({})
    assert (default.threshold, default.suspicious_from, default.source) == (0.5, 0.5, "default")
    assert [default.tier(p) for p in (0.49, 0.5)] == ["ham", "spam"]
    custom = Tiers(0.9, 0.3, "tags")
    assert [(custom.label(p), custom.tier(p)) for p in (0.29, 0.3, 0.89, 0.9)] == [
        ("ham", "ham"), ("ham", "suspicious"), ("ham", "suspicious"), ("spam", "spam"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("tags", "named"),
    [
        ({TAG_OPERATING_THRESHOLD: "high"}, TAG_OPERATING_THRESHOLD),
        ({TAG_OPERATING_THRESHOLD: "1.5"}, TAG_OPERATING_THRESHOLD),
        ({TAG_OPERATING_THRESHOLD: "nan"}, TAG_OPERATING_THRESHOLD),
        ({TAG_OPERATING_THRESHOLD: "0.7", TAG_SUSPICIOUS_THRESHOLD: "-0.1"}, TAG_SUSPICIOUS_THRESHOLD),
        ({TAG_OPERATING_THRESHOLD: "0.7", TAG_SUSPICIOUS_THRESHOLD: "0.8"}, "above"),
    ],
    ids=["word", "above-one", "nan", "negative", "suspicious-above"],
)
def test_a_garbled_operating_point_refuses_the_version_naming_the_tag(tags, named):
    with pytest.raises(RefusedModel, match=named):
        Tiers.from_tags(tags)


def test_unreadable_basis_is_only_not_shown():
    tiers = Tiers.from_tags({TAG_OPERATING_THRESHOLD: "0.7", TAG_OPERATING_POINT: "{not json"})
    assert (tiers.threshold, tiers.basis) == (0.7, "")


def test_decision_rows_show_each_model_at_its_own_operating_point():
    labels = ["ham"] * 6 + ["spam"] * 4
    challenger = [0.1, 0.2, 0.3, 0.4, 0.55, 0.65, 0.6, 0.7, 0.8, 0.9]
    champion = [0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.3, 0.4, 0.6, 0.9]
    rows = {r["metric"]: r for r in operating_rows(labels, (challenger, Tiers(0.7, 0.5, "tags")), (champion, Tiers()))}
    threshold = rows["operating threshold (label spam from)"]
    assert (threshold["champion"], threshold["challenger"]) == (0.5, 0.7)
    assert "champion: 0.5, none stored" in threshold["verdict"] and "challenger: its operating point" in threshold["verdict"]
    assert rows["spam_recall @ operating point"]["challenger"] == pytest.approx(3 / 4)
    assert rows["spam_recall @ operating point"]["champion"] == pytest.approx(2 / 4)
    assert rows["ham false-positive rate @ operating point"]["challenger"] == 0.0
    assert rows["share of holdout in the suspicious tier"]["challenger"] == pytest.approx(3 / 10)
    assert at_threshold(labels, challenger, Tiers(0.5))["ham_fpr"] == pytest.approx(2 / 6)


def test_the_targets_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("SPAM_TARGET_HAM_FPR", "0.002")
    monkeypatch.setenv("SPAM_SUSPICIOUS_HAM_FPR", "0.03")
    policy = build_resources()["operating_point"]
    assert (policy.target_ham_fpr, policy.suspicious_ham_fpr) == (0.002, 0.03)
    monkeypatch.setenv("SPAM_TARGET_HAM_FPR", "one in a thousand")
    with pytest.raises(ValueError, match="SPAM_TARGET_HAM_FPR"):
        build_resources()
