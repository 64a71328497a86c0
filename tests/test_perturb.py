"""The platform's perturbation families: each changes text as it says, deterministically per seed."""

from __future__ import annotations

import random
import unicodedata

import pytest

from spam_assets.model.evasion import normalise_skeleton, normalise_word_pairs, skeleton
from spam_assets.perturb import CYRILLIC_LOOK_ALIKES, FAMILIES, LEET, STRENGTHS, ZERO_WIDTH, perturb, perturb_all
from tests.synthetic import sms_messages

SEED = random.SystemRandom().randrange(2**31)
print(f"perturbation seed for this run: {SEED}")

SPAM = "WINNER!! Claim your free cash prize now, call 09061701461 or visit www.win-prizes.co.uk for £1000"
KEPT = ("09061701461", "www.win-prizes.co.uk", "£1000")


def letters_of(text: str) -> str:
    return "".join(c for c in text if c.isalpha())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_each_family_changes_words_and_leaves_numbers_urls_and_money_alone(family):
    # Three messages' worth of words: at the lightest strength (a quarter of the words
    # for spacing) some word changes but for a chance of about 1e-5.
    text = " ".join([SPAM, SPAM.lower(), SPAM.upper()])
    for strength in STRENGTHS[family]:
        copy = perturb(text, family, strength, SEED)
        assert copy != text, (family, strength, SEED)
        if family != "fullwidth":
            assert all(kept in copy for kept in KEPT), (family, strength, copy)
    assert perturb(text, family, 0.0, SEED) == text  # strength 0 touches nothing


def test_zero_width_inserts_only_invisible_characters_between_letters():
    copy = perturb(SPAM, "zero_width", 1.0, SEED)
    inserted = [c for c in copy if c in ZERO_WIDTH]
    assert inserted and all(unicodedata.category(c) == "Cf" for c in inserted)
    assert "".join(c for c in copy if c not in ZERO_WIDTH) == SPAM
    # At strength 1 every gap between two letters of a word has one.
    assert len(inserted) == sum(len(w) - 1 for w in "WINNER Claim your free cash prize now call or visit for".split())


def test_homoglyph_replaces_letters_with_cyrillic_look_alikes_only():
    copy = perturb(SPAM, "homoglyph", 1.0, SEED)
    changed = [(a, b) for a, b in zip(SPAM, copy, strict=True) if a != b]
    assert changed and all(CYRILLIC_LOOK_ALIKES[a] == b and unicodedata.name(b).startswith("CYRILLIC") for a, b in changed)
    # Every replaceable letter of a word is replaced at strength 1.
    assert not any(c in CYRILLIC_LOOK_ALIKES for c in "".join(copy.split()[1:6]))


def test_leet_replaces_letters_with_digits_in_proportion_to_the_strength():
    texts = sms_messages(200, seed=SEED % 1000)["text"].tolist()
    shares = []
    for strength in (0.2, 0.6):
        replaced = candidates = 0
        for text, copy in zip(texts, perturb_all(texts, "leet", strength, SEED), strict=True):
            assert len(copy) == len(text)
            for a, b in zip(text, copy, strict=True):
                if a != b:
                    assert LEET[a.lower()] == b
                    replaced += 1
            candidates += sum(1 for w in text.split() if "@" not in w for c in w if c.lower() in LEET and c.isascii() and c.isalpha())
        shares.append(replaced / candidates)
    assert 0.1 < shares[0] < 0.3 and 0.5 < shares[1] < 0.7, shares


def test_spacing_spaces_words_letter_by_letter_and_stretching_repeats_a_letter():
    spaced = perturb("free cash prize", "spacing", 1.0, SEED)
    assert spaced == "f r e e c a s h p r i z e"
    stretched = perturb("free cash prize", "stretching", 1.0, SEED)
    for word, long in zip("free cash prize".split(), stretched.split(), strict=True):
        assert len(word) + 2 <= len(long) <= len(word) + 5 and letters_of(long) != word
        assert "".join(dict.fromkeys(long)) == "".join(dict.fromkeys(word))  # the same letters, one repeated


def test_fullwidth_uses_the_fullwidth_forms_nfkc_folds():
    copy = perturb("free cash", "fullwidth", 1.0, SEED)
    assert copy == "ｆｒｅｅ ｃａｓｈ" and unicodedata.normalize("NFKC", copy) == "free cash"


def test_the_evasion_folds_undo_what_a_reader_does_not_see():
    texts = sms_messages(100, seed=SEED % 997)["text"].tolist()
    for family in ("zero_width", "homoglyph", "fullwidth"):
        for copy, text in zip(perturb_all(texts, family, 1.0, SEED), texts, strict=True):
            assert skeleton(copy) == skeleton(text), (family, copy)
    # Spaced out letter by letter, a message keeps the 4-grams its word pairs had across the word
    # boundaries (all but those next to punctuation, where the fold cannot join the letters).
    kept = total = 0
    for copy, text in zip(perturb_all(texts, "spacing", 1.0, SEED), texts, strict=True):
        grams = _four_grams(normalise_word_pairs(text))
        kept, total = kept + len(grams & _four_grams(normalise_word_pairs(copy))), total + len(grams)
        assert normalise_skeleton(copy) != normalise_skeleton(text) or len(text.split()) == len(copy.split())
    assert kept / total > 0.9, kept / total


def _four_grams(text: str) -> set[str]:
    return {token[i : i + 4] for token in text.split() for i in range(len(token) - 3)}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_the_same_arguments_give_the_same_copy_and_other_seeds_other_copies(family):
    texts = sms_messages(40, seed=SEED % 991)["text"].tolist()
    first = perturb_all(texts, family, 0.5, SEED)
    assert perturb_all(texts[::-1], family, 0.5, SEED)[::-1] == first  # order and company do not matter
    assert perturb_all(texts, family, 0.5, SEED) == first
    others = [perturb_all(texts, family, 0.5, SEED + k) for k in (1, 2, 3)]
    assert any(other != first for other in others), (family, SEED)
    assert perturb_all(texts, family, 0.25, SEED) != first  # the strength is part of the key


def test_bad_arguments_are_refused_naming_them():
    with pytest.raises(ValueError, match="unknown perturbation family 'emoji'"):
        perturb(SPAM, "emoji", 0.5)
    with pytest.raises(ValueError, match=r"strength 1.5 for 'leet' is outside \[0, 1\]"):
        perturb(SPAM, "leet", 1.5)
