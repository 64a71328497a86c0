"""The evasion folds: what a reader does not see or reads the same folds away, real signals stay."""

from __future__ import annotations

import unicodedata

import pytest

from spam_assets.model.evasion import (
    CONFUSABLES,
    MAX_PHRASE,
    fold_tricks,
    normalise_folded,
    normalise_skeleton,
    normalise_word_pairs,
    skeleton,
)
from spam_assets.model.text import normalise

CLEAN = "FREE entry: win a cash prize, call 09061701461 now or visit www.win-prizes.co.uk for £1000"


@pytest.mark.parametrize(
    "disguised",
    [
        "F\u200bR\u200cE\u200dE entry: win a ca\u2060sh pri\ufeffze, call 09061701461 now or visit www.win-prizes.co.uk for £1000",
        "FREE еntrу: wіn а сash рrize, call 09061701461 now or visit www.win-prizes.co.uk for £1000",  # Cyrillic е у і а с р
        "FREE entry: ẉi̴n a c̶a̶s̶h̶ prize, call 09061701461 now or visit www.win-prizes.co.uk for £1000",  # combining marks
        "ＦＲＥＥ entry: win a cash prize, call 09061701461 now or visit www.win-prizes.co.uk for £1000",  # fullwidth
        "FREE ΕΝΤRΥ: win a cash prize, call 09061701461 now or visit www.win-prizes.co.uk for £1000",  # Greek capitals
    ],
)
def test_what_a_reader_does_not_see_or_reads_the_same_folds_to_the_clean_text(disguised):
    assert disguised != CLEAN
    assert skeleton(disguised).lower() == CLEAN.lower()  # case is normalise's business
    for preprocess in (normalise_skeleton, normalise_folded, normalise_word_pairs):
        assert preprocess(disguised) == preprocess(CLEAN)


def test_the_skeleton_keeps_the_markers_of_real_digits_urls_phones_and_money():
    assert normalise_skeleton(CLEAN) == normalise(CLEAN)  # ASCII text: what normalise gives
    assert normalise_skeleton(CLEAN).endswith("_url_ _phone_ _money_ _number_")


def four_grams(text: str) -> set[str]:
    """The 4-grams within each token, as the pairs channel's analyzer sees them (without its padding)."""
    return {token[i : i + 4] for token in text.split() for i in range(len(token) - 3)}


def test_leet_spacing_and_stretching_fold_in_the_folded_channels_only():
    clean = normalise_folded("free cash prize")
    pairs = normalise_word_pairs("free cash prize")
    assert pairs == "frecash cashprize"
    for disguised in ("fr33 c4sh pr1z3", "freeeee caaash priiize"):
        assert normalise_skeleton(disguised) != normalise_skeleton("free cash prize")
        assert normalise_word_pairs(disguised) == pairs, disguised
    # Spaced out letter by letter, the phrase is one run: every 4-gram across a boundary is still there.
    spaced = normalise_word_pairs("f r e e c a s h p r i z e")
    assert spaced == "frecashprize" and four_grams(pairs) <= four_grams(spaced)
    assert normalise_folded("fr33 c4sh pr1z3") == clean == normalise_folded("freeeee caaash priiize") == "fre cash prize"
    assert normalise_folded("f r e e cash prize") == clean  # a spaced-out word is joined


def test_folding_keeps_numbers_codes_urls_and_e_mail_addresses():
    text = "txt WIN to 87121, 150p/msg, call 0906-170-1461, £1000 at http://b1t.ly/x3 or w1n@pr1ze.com"
    folded = normalise_folded(text)
    for kept in ("87121", "150p/msg", "0906-170-1461", "£1000", "http://b1t.ly/x3", "w1n@pr1ze.com"):
        assert kept in folded, kept
    assert folded.endswith("_url_ _email_ _phone_ _money_ _number_")
    # A digit a word lost to leet is no number: no _number_ marker for "fr33" alone.
    assert normalise_folded("fr33 now") == "fre now"
    assert normalise_skeleton("fr33 now").endswith("_number_")


def test_word_pairs_run_neighbours_together_leave_markers_out_and_cut_long_runs():
    # Real digits stay (the fold keeps numbers); the markers normalise adds are no words.
    assert normalise_folded("free entry now 87121") == "fre entry now 87121 _number_"
    assert normalise_word_pairs("free entry now 87121") == "freentry entrynow now87121"
    assert normalise_word_pairs("hello") == "helo" and normalise_word_pairs("") == ""
    # Spaced out, a long message is one run, cut in pieces of MAX_PHRASE; each token is two pieces.
    spaced = normalise_word_pairs(" ".join("lunch tomorrow " * 100))
    tokens = spaced.split()
    assert len(tokens) > 1 and max(map(len, tokens)) == 2 * MAX_PHRASE
    assert four_grams(normalise_word_pairs("lunch tomorrow " * 100)) <= four_grams(spaced)


def test_confusables_are_cyrillic_or_greek_letters_mapped_to_ascii_letters():
    assert len(CONFUSABLES) > 60
    for look_alike, latin in CONFUSABLES.items():
        name = unicodedata.name(look_alike)
        assert name.startswith(("CYRILLIC", "GREEK")), name
        assert latin.isascii() and latin.isalpha() and len(latin) == 1
    # A capital I look-alike reads "i" once lower-cased, not "l".
    assert normalise_skeleton("FREE ІPHONE") == "free iphone"


def test_legitimate_non_latin_text_stays_readable_and_distinct():
    russian, greek = "Привет, как дела? Встретимся завтра", "Καλημέρα, τι κάνεις;"
    for text in (russian, greek):
        assert normalise_skeleton(text) != ""
    assert normalise_skeleton(russian) != normalise_skeleton("Привет, как погода?")


def test_fold_tricks_on_edge_cases():
    assert fold_tricks("") == ""
    assert fold_tricks("a") == "a"
    assert fold_tricks("u r a star") == "ura star"
    assert fold_tricks("2day 4u") == "zday au"


def test_the_folded_cache_and_the_piece_memo_give_the_same_text():
    from spam_assets.model import evasion

    evasion._PIECE_MEMO.clear()
    assert fold_tricks("fr33 c4sh w1n@pr1ze.com") == "fre cash w1n@pr1ze.com"
    assert evasion._PIECE_MEMO["fr33"] == "fre" and evasion._PIECE_MEMO["w1n@pr1ze.com"] == "w1n@pr1ze.com"
    assert fold_tricks("fr33 c4sh w1n@pr1ze.com") == "fre cash w1n@pr1ze.com"  # from the memo this time
    evasion._PIECE_MEMO.clear()
    text = "WIN a fr33 prize"
    evasion._folded_cache.clear()
    first = normalise_folded(text)
    assert evasion._folded_cache[text] is first and normalise_folded(text) is first  # the second call is a lookup
    evasion._folded_cache.clear()
    assert normalise_folded(text) == first == "win a fre prize"
    huge = "free " * 1000
    normalise_folded(huge)
    assert huge not in evasion._folded_cache  # long texts are not kept


def test_hostile_long_words_fold_as_short_ones_do():
    """One word of 64 KiB (the server's limit): each pattern tries it once, not once per character."""
    limit = 64 * 1024
    assert normalise_folded("a" * limit) == "a"
    assert normalise_folded("ab" * (limit // 2)) == "ab" * (limit // 2)
    assert normalise_folded("x" * (limit - 1) + "@") == "x" * (limit - 1) + "@"  # an "@" at the very end
    assert normalise_word_pairs("fr33 " + "b" * limit) == "freb"
    assert normalise_folded("fr33 w1n " + "c" * limit + " n0w") == "fre win c now"
