"""Character n-gram hashing with a per-word memo: HashingVectorizer's matrix, faster.

Why: hashing char_wb 2-5-grams was most of the time spent training and
scoring on e-mail. scikit-learn builds every n-gram string of every text in
Python and hashes each one (4.6 s of drift_statistics' 8.7 s, and one such
pass per CV fold and per refit in trained_model). char_wb n-grams never cross
a word boundary, so the columns a word contributes depend on the word alone;
words repeat (Zipf), so each distinct word is hashed once per process and
every later occurrence is a dict lookup.

`columns_of` is the one place that turns words into their hashed columns,
with scikit-learn's own hashing: `MemoHashingVectorizer` builds matrices from
it and the server's lean scorer (`spam_assets.model.lean_scorer`) scores single texts
from it.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import islice, repeat

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize
from sklearn.utils import murmurhash3_32

try:  # FeatureHasher's compiled hashing loop (private; the matrices are compared in tests and at every load)
    from sklearn.feature_extraction._hashing_fast import transform as _hash_ngrams
except ImportError:
    _hash_ngrams = None

try:  # how sklearn itself hands back sparse output (sparray or spmatrix, per its config)
    from sklearn.utils._sparse import _align_api_if_sparse
except ImportError:  # a scikit-learn without it: MemoHashingVectorizer defers to HashingVectorizer
    _align_api_if_sparse = None

# Memo bound, in words per n-gram setting: real text repeats its words, and
# the bound keeps hostile input from growing a memo without limit (at most
# tens of MB when full).
MAX_MEMO = 1 << 17
# Longer words are hashed every time, not memoised: they rarely repeat (a
# message spaced out letter by letter and joined by the fold, base64 in
# e-mail), and each would hold hundreds of columns in the memo.
MAX_MEMO_WORD = 40

_MEMOS: dict[tuple[int, int, int], dict[str, np.ndarray]] = {}


def _as_is(text: str) -> str:
    return text


@functools.cache
def _analyzer(ngram_range: tuple[int, int]) -> Callable[[str], list[str]]:
    """HashingVectorizer's own char_wb n-grams of one already preprocessed word."""
    return HashingVectorizer(analyzer="char_wb", ngram_range=ngram_range, preprocessor=_as_is).build_analyzer()


# New words are hashed in runs of about this many characters: one analyzer
# call and one GIL-holding hashing call (about 1-2 ms) per run.
_RUN_CHARS = 1 << 11


def _ngrams_per_word(lengths: np.ndarray, ngram_range: tuple[int, int]) -> np.ndarray:
    """How many char_wb n-grams scikit-learn's `_char_wb_ngrams` makes of words of these lengths.

    It pads each word with a space on both sides and, for n = min_n, min_n + 1, ...,
    takes every n-gram of the padded word (one, the whole word, if it is
    shorter than n), stopping after the first n that is not shorter than it.
    """
    padded = lengths + 2
    min_n, max_n = ngram_range
    total = np.maximum(1, padded - min_n + 1)
    for n in range(min_n + 1, max_n + 1):
        total += np.where(padded >= n, padded - n + 1, 0)
    return total


def columns_of(vectorizer: HashingVectorizer, memo: dict[str, np.ndarray], new_words: Iterable[str]) -> dict[str, np.ndarray]:
    """The columns of each of `new_words`, repeated as often as its n-grams hash to them; stored in `memo` while it has room.

    Hashed as HashingVectorizer hashes: scikit-learn's own char_wb n-grams,
    hashed by FeatureHasher's own compiled loop (signed 32-bit MurmurHash3 of
    each n-gram's UTF-8 bytes, seed 0, column |h| mod n_features), so a
    word's columns are exactly those it adds to a text's row (tests hold the
    matrices equal). Words are hashed in runs, one analyzer call and one
    hashing call per run, and split back into words by their n-gram counts:
    a text of words never seen before (random words from a hostile client)
    then costs about what HashingVectorizer costs on it (one analyzer call
    per word and one murmurhash3_32 call per n-gram cost about 1.4 times as
    much). Runs are short so that the compiled loop, which holds the GIL,
    never keeps other requests waiting long (16K characters took 9-18 ms).
    """
    ngram_range, n_features = tuple(vectorizer.ngram_range), vectorizer.n_features
    unique = list(dict.fromkeys(new_words))
    found: dict[str, np.ndarray] = {}
    if _hash_ngrams is None:  # a scikit-learn without the private loop: one call per n-gram
        ngrams = _analyzer(ngram_range)
        found = {
            word: np.array([abs(murmurhash3_32(gram, 0)) % n_features for gram in ngrams(word)], dtype=np.int32)
            for word in unique
        }
    start = 0
    while _hash_ngrams is not None and start < len(unique):
        end, size = start, 0
        while end < len(unique) and (size < _RUN_CHARS or end == start):
            size += len(unique[end]) + 1
            end += 1
        run = unique[start:end]
        # The words came from str.split(), so joined by spaces they split back into the same words.
        grams = _analyzer(ngram_range)(" ".join(run))
        indices, _, _ = _hash_ngrams([zip(grams, repeat(1))], n_features, np.float64, False, 0)
        lengths = np.fromiter(map(len, run), dtype=np.int64, count=len(run))
        bounds = np.concatenate(([0], np.cumsum(_ngrams_per_word(lengths, ngram_range)))).tolist()
        if bounds[-1] != len(indices):
            raise AssertionError(f"n-gram count mismatch: {bounds[-1]} expected, {len(indices)} hashed")
        indices = indices.astype(np.int32, copy=False)
        # Copies, not views: a memo entry must not keep a whole run's array alive.
        found.update((word, indices[bounds[i] : bounds[i + 1]].copy()) for i, word in enumerate(run))
        start = end
    room = MAX_MEMO - len(memo)
    if room > 0:
        memo.update(islice(((w, c) for w, c in found.items() if len(w) <= MAX_MEMO_WORD), room))
    return found


def word_memo(vectorizer: HashingVectorizer) -> dict[str, np.ndarray]:
    """This process's memo for the vectoriser's n-gram setting (shared by clones, CV folds and servers)."""
    min_n, max_n = vectorizer.ngram_range
    return _MEMOS.setdefault((min_n, max_n, vectorizer.n_features), {})


def words(vectorizer: HashingVectorizer, text: str) -> list[str]:
    """The words char_wb n-grams are taken from, split exactly as HashingVectorizer splits them.

    scikit-learn first collapses runs of whitespace (its private `_white_spaces`)
    and then calls str.split(); its regex and str.split() agree on what is
    whitespace, so the collapse never changes the words.
    """
    return text.split()


class MemoHashingVectorizer(HashingVectorizer):
    """A HashingVectorizer that builds char_wb matrices from memoised per-word columns.

    The same parameters, the same matrix (a test holds it equal to
    HashingVectorizer's on SMS, e-mail and edge-case texts); nothing is
    fitted or saved beyond the parameters. Settings the memo does not cover
    (other analyzers, alternating signs) go through HashingVectorizer.
    """

    def _memo_applies(self) -> bool:
        return self.analyzer == "char_wb" and not self.alternate_sign and _align_api_if_sparse is not None

    def transform(self, X):
        if isinstance(X, str) or not self._memo_applies():
            return super().transform(X)  # which also rejects a single string
        self._validate_ngram_range()
        preprocess, decode, memo = self.build_preprocessor(), self.decode, word_memo(self)
        # A word repeated in a text adds its columns once, weighted: fewer entries to sort.
        texts = [Counter(words(self, preprocess(decode(doc)))) for doc in X]
        extra = columns_of(self, memo, (word for counts in texts for word in counts if word not in memo))
        chunks: list[np.ndarray] = []  # per distinct word of each text: its columns
        repeats: list[int] = []  # and how often the word occurs in the text
        indptr, filled = [0], 0
        for counts in texts:
            for word, count in counts.items():
                columns = memo.get(word)
                if columns is None:
                    columns = extra[word]  # the memo was full, or the word too long for it
                chunks.append(columns)
                repeats.append(count)
                filled += len(columns)
            indptr.append(filled)
        if len(indptr) == 1:
            raise ValueError("Cannot vectorize empty sequence.")
        index = np.int32 if filled < 2**31 else np.int64
        lengths = np.fromiter(map(len, chunks), dtype=np.int64, count=len(chunks))
        matrix = sp.csr_array(
            (
                np.repeat(np.asarray(repeats, dtype=self.dtype), lengths),
                np.concatenate(chunks).astype(index, copy=False) if chunks else np.zeros(0, dtype=index),
                np.asarray(indptr, dtype=index),
            ),
            shape=(len(indptr) - 1, self.n_features),
            dtype=self.dtype,
        )
        matrix.sum_duplicates()  # counts per column, indices sorted: as FeatureHasher leaves them
        if self.binary:
            matrix.data.fill(1)
        if self.norm is not None:
            matrix = normalize(matrix, norm=self.norm, copy=False)
        return _align_api_if_sparse(matrix)
