"""Recall under obfuscation: measured per family and strength, and the folds hold it up."""

from __future__ import annotations

import random

import numpy as np
import pytest

from spam_assets.model.evasion import normalise_word_pairs
from spam_assets.perturb import FAMILIES, STRENGTHS
from spam_assets.robustness import adversarial_recall, evaluation_seed

SEED = random.SystemRandom().randrange(2**31)
print(f"perturbation seed for this run: {SEED}")

SPAM = [
    "FREE entry to win a cash prize, call 09061701461",
    "Claim your free ringtone now, txt WIN to 87121",
    "You have been selected for a free holiday, reply YES",
    "Urgent! Your free voucher expires today, call 08000930705",
]


def literal(texts: list[str]) -> np.ndarray:
    """A filter that looks for the word "free" as typed."""
    return np.array([1.0 if "free" in t.lower().split() else 0.0 for t in texts])


def folded(texts: list[str]) -> np.ndarray:
    """The same filter reading the word pairs of the fold, as the word_char_svm candidate does."""
    return np.array([1.0 if "fre" in normalise_word_pairs(t) else 0.0 for t in texts])


def test_a_literal_filter_loses_the_disguised_spam_and_says_which_family():
    report = adversarial_recall(literal, SPAM, seed=SEED)
    assert report.clean == 1.0 and report.n_spam == len(SPAM)
    assert set(report.recall) == set(FAMILIES)
    assert all(set(report.recall[f]) == set(STRENGTHS[f]) for f in FAMILIES)
    # "free" spelt in fullwidth forms, with a zero-width character, or spaced out is no longer "free".
    for family in ("zero_width", "spacing", "fullwidth", "homoglyph"):
        assert report.recall[family][1.0] == 0.0, family
    family, worst = report.worst_family()
    assert worst == 0.0 and report.by_family[family] == 0.0
    metrics = report.metrics()
    assert metrics["adversarial_recall_clean"] == 1.0 and metrics["adversarial_recall_spacing_1"] == 0.0
    assert "| spacing | 1 | 0.000 |" in report.to_markdown()


def test_the_folds_undo_every_family():
    report = adversarial_recall(folded, SPAM, seed=SEED)
    assert report.clean == 1.0
    assert report.by_family == {family: 1.0 for family in FAMILIES}, (SEED, report.by_family)


def test_the_same_seed_gives_the_same_figures_and_the_seed_follows_the_corpus():
    texts = [f"{text} {i}" for i, text in enumerate(SPAM * 10)]
    first = adversarial_recall(literal, texts, seed=SEED)
    assert adversarial_recall(literal, texts, seed=SEED) == first
    assert evaluation_seed(0, "corpus-a") == evaluation_seed(0, "corpus-a") != evaluation_seed(0, "corpus-b")
    assert evaluation_seed(0, "corpus-a") != evaluation_seed(1, "corpus-a")


def test_markdown_puts_the_champion_beside_the_challenger():
    mine, theirs = adversarial_recall(folded, SPAM, seed=SEED), adversarial_recall(literal, SPAM, seed=SEED)
    table = mine.to_markdown(theirs)
    assert table.splitlines()[0] == "| family | strength | challenger | champion |"
    assert "| spacing | 1 | 1.000 | 0.000 |" in table


def test_no_spam_or_a_scorer_of_the_wrong_shape_is_refused():
    with pytest.raises(ValueError, match="at least one spam text"):
        adversarial_recall(literal, [], seed=SEED)
    with pytest.raises(ValueError, match="returned shape"):
        adversarial_recall(lambda texts: np.zeros(3), SPAM, seed=SEED)
