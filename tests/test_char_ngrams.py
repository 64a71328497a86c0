"""MemoHashingVectorizer builds exactly HashingVectorizer's matrix, from memoised per-word columns."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer

from spam_assets.model import char_ngrams
from spam_assets.model.char_ngrams import MemoHashingVectorizer
from spam_assets.model.text import normalise
from tests.datasets import corpus_texts, needs_sms, needs_spamassassin, sms_path, spamassassin_path
from tests.synthetic import email_messages, sms_messages

CHAR = dict(preprocessor=normalise, analyzer="char_wb", ngram_range=(2, 5), n_features=2**18, alternate_sign=False, norm=None)

EDGE_TEXTS = [
    "",
    " \t\n ",
    "a",
    "the the the the",  # a word repeated inside one text
    "tab\there\n\nnew  lines\u00a0no-break\u2003em space",
    "Café naïve, 日本語のテキスト, 😀😀, Ελληνικά, ＦＵＬＬＷＩＤＴＨ",
    "FREE entry!! call 09061701461 or visit www.win-prizes.co.uk",
    "lunch tomorrow? " * 300,
]


def texts() -> list[str]:
    return sms_messages(300, seed=3)["text"].tolist() + email_messages(40, seed=4)["text"].tolist() + EDGE_TEXTS


def assert_same_matrix(expected, got) -> None:
    assert type(got) is type(expected) and got.shape == expected.shape and got.dtype == expected.dtype
    assert got.has_sorted_indices and (expected != got).nnz == 0
    np.testing.assert_array_equal(got.indptr, expected.indptr)
    np.testing.assert_array_equal(got.indices, expected.indices)


@pytest.mark.parametrize(
    "settings",
    [
        {},  # the candidate pipeline's own setting
        {"norm": "l2"},
        {"binary": True},
        {"preprocessor": None},  # sklearn's lowercasing instead of normalise
        {"ngram_range": (1, 3), "n_features": 2**10},  # small n_features: many collisions
    ],
    ids=["candidate", "l2", "binary", "lowercase", "collisions"],
)
def test_same_matrix_as_hashing_vectorizer(settings, monkeypatch):
    monkeypatch.setattr(char_ngrams, "_MEMOS", {})
    params = {**CHAR, **settings}
    data = texts()
    expected = HashingVectorizer(**params).fit_transform(data)
    memo = MemoHashingVectorizer(**params)
    assert_same_matrix(expected, memo.fit_transform(data))
    assert_same_matrix(expected, memo.transform(data))  # second pass: every word from the memo
    assert len(char_ngrams.word_memo(memo)) > 200  # the memo was used


def test_bytes_input_is_decoded_as_hashing_vectorizer_does():
    data = ["plain text", "caf\u00e9 bytes".encode(), b"more bytes here"]
    assert_same_matrix(HashingVectorizer(**CHAR).transform(data), MemoHashingVectorizer(**CHAR).transform(data))


def test_the_memo_is_bounded_and_results_stay_exact(monkeypatch):
    monkeypatch.setattr(char_ngrams, "_MEMOS", {})
    monkeypatch.setattr(char_ngrams, "MAX_MEMO", 50)
    data = texts()
    memo = MemoHashingVectorizer(**CHAR)
    assert_same_matrix(HashingVectorizer(**CHAR).transform(data), memo.transform(data))
    assert len(char_ngrams.word_memo(memo)) == 50


@pytest.mark.parametrize("settings", [{"analyzer": "char"}, {"analyzer": "word"}, {"alternate_sign": True}])
def test_settings_the_memo_does_not_cover_defer_to_hashing_vectorizer(settings, monkeypatch):
    monkeypatch.setattr(char_ngrams, "_MEMOS", {})
    params = {**CHAR, **settings}
    data = texts()
    assert_same_matrix(HashingVectorizer(**params).transform(data), MemoHashingVectorizer(**params).transform(data))
    assert char_ngrams._MEMOS == {}  # the memo was never used


def test_bad_input_fails_as_hashing_vectorizer_fails():
    memo = MemoHashingVectorizer(**CHAR)
    with pytest.raises(ValueError, match="string object received"):
        memo.transform("one string, not a list of them")
    with pytest.raises(ValueError, match="empty sequence"):
        memo.transform([])
    with pytest.raises(ValueError, match="np.nan is an invalid document"):
        memo.transform(["fine", np.nan])


@pytest.mark.parametrize(
    "corpus",
    [pytest.param(sms_path, marks=needs_sms), pytest.param(spamassassin_path, marks=needs_spamassassin)],
    ids=["sms", "spamassassin"],
)
def test_same_matrix_on_the_real_corpora(corpus):
    data = list(corpus_texts(corpus())[:2000])
    expected = HashingVectorizer(**CHAR).transform(data)
    assert expected.nnz > 100_000
    assert_same_matrix(expected, MemoHashingVectorizer(**CHAR).transform(data))


@pytest.mark.parametrize("hashing", ["compiled", "per-ngram"])
def test_never_seen_words_hashed_in_runs_give_the_same_matrix(hashing, monkeypatch):
    """Random words of every length (shorter and longer than the n-grams), split across many runs."""
    monkeypatch.setattr(char_ngrams, "_MEMOS", {})
    monkeypatch.setattr(char_ngrams, "_RUN_CHARS", 40)  # many runs, words straddling their ends
    if hashing == "per-ngram":
        monkeypatch.setattr(char_ngrams, "_hash_ngrams", None)
    rng = np.random.default_rng(7)
    alphabet = list("abcxyz019éßλ日😀")
    data = [
        " ".join("".join(rng.choice(alphabet, size=rng.integers(1, 14))) for _ in range(rng.integers(1, 60)))
        for _ in range(30)
    ]
    for ngram_range in [(2, 5), (1, 3), (3, 3)]:
        params = {**CHAR, "ngram_range": ngram_range}
        assert_same_matrix(HashingVectorizer(**params).fit_transform(data), MemoHashingVectorizer(**params).fit_transform(data))


def test_ngram_counts_per_word_match_sklearns_analyzer():
    for ngram_range in [(1, 1), (2, 5), (3, 6), (5, 5)]:
        analyzer = char_ngrams._analyzer(ngram_range)
        words = ["x" * n for n in range(1, 12)] + ["日本", "😀"]
        lengths = np.array([len(w) for w in words])
        expected = [len(analyzer(w)) for w in words]
        assert char_ngrams._ngrams_per_word(lengths, ngram_range).tolist() == expected, ngram_range
