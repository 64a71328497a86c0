"""Why a verdict: the n-grams of a text that moved its P(spam), with signed weights.

The linear candidates score (lean_scorer.py)

    logit P(spam) = offset + slope * sum over blocks of sum_j tf_j * idf_j * w_j / |x_block|

so each n-gram column j of the text adds exactly `slope * tf_j * idf_j *
w_j / |x_block|` to the logit: its weight here, in logit units (positive
pushes towards spam). The weights of all a text's features plus the offset
add up to the scorer's own logit (a test holds them to 1e-9), so the
features listed are the ones that move the score, not a post-hoc guess.

Features are named as the reader finds them in the (normalised) text:

- `word`: a word 1-2-gram of the fitted vocabulary ("call now", "_phone_" for a marker);
- `char`: a character n-gram within a word (" winn": a leading or trailing
  space marks the start or end of the word, as scikit-learn's char_wb pads
  words);
- `pair`: a character n-gram of two neighbouring words run together
  ("eent" of "free entry", `spam_assets.model.evasion.normalise_word_pairs`).
  Kept apart from `char`, as the model keeps the two blocks apart: the same
  n-gram in both is two features. The char blocks are hashed, so a column has no name of its own: it
  is named by the n-grams *of this text* that hash to it (the memoised
  columns of each word are its n-grams' columns, in the analyzer's order:
  `char_ngrams.columns_of`). Two n-grams of one text that collide in a
  column share its weight in proportion to their counts. Only the columns
  that can be listed are named (the analyzer runs on the words holding them):
  the weights themselves are computed for every column, with numpy.
"""

from __future__ import annotations

import functools
import math
from collections import Counter, defaultdict
from dataclasses import dataclass

import numpy as np

from spam_assets.model.char_ngrams import _analyzer, columns_of, words
from spam_assets.model.evasion import normalise_word_pairs
from spam_assets.model.lean_scorer import LeanScorer, _HashedBlock, _VocabularyBlock

DEFAULT_TOP = 10


@dataclass(frozen=True)
class Feature:
    ngram: str
    kind: str  # "word", "char" or "pair"
    weight: float  # contribution to logit P(spam); positive towards spam


@dataclass(frozen=True)
class Explanation:
    features: list[Feature]  # the largest |weight| first, at most `top`
    offset: float  # the logit of a text with no known features
    logit: float  # offset + the weights of all the text's features (not only those listed)


def _tf(count: int, sublinear: bool) -> float:
    return 1.0 + math.log(count) if sublinear else float(count)


def _word_weights(block: _VocabularyBlock, text: str, slope: float) -> tuple[dict[tuple[str, str], float], float]:
    """Every word feature's weight, and their sum."""
    counts = Counter(term for term in block.ngrams(text) if term in block.vocabulary)
    columns = {term: block.vocabulary[term] for term in counts}
    tf = {term: _tf(count, block.sublinear_tf) for term, count in counts.items()}
    norm = math.sqrt(sum(tf[t] ** 2 * block.idf_squared[columns[t]] for t in counts))
    if norm == 0:
        return {}, 0.0
    weights = {("word", term): slope * tf[term] * block.idf_weight[columns[term]] / norm for term in counts}
    return weights, sum(weights.values())


# Words up to this long have their n-grams remembered (real words repeat); longer ones, rare in real text and
# a hostile client's way to fill memory, are split each time. At most about 20 MB when full.
MAX_REMEMBERED_WORD = 20


@functools.lru_cache(maxsize=1 << 12)
def _remembered_grams(ngram_range: tuple[int, int], word: str) -> tuple[str, ...]:
    return tuple(_analyzer(ngram_range)(word))


def _grams(ngram_range: tuple[int, int], word: str) -> tuple[str, ...]:
    """A word's char_wb n-grams, in the analyzer's order."""
    if len(word) <= MAX_REMEMBERED_WORD:
        return _remembered_grams(ngram_range, word)
    return tuple(_analyzer(ngram_range)(word))


def _char_weights(
    block: _HashedBlock, text: str, slope: float, top: int | None
) -> tuple[dict[tuple[str, str], float], float]:
    """Weights of the n-grams of the `top` columns (all: None), and the sum over every column.

    Per-column weights with numpy, from the scorer's own memoised columns of each word.
    """
    vectorizer, memo = block.vectorizer, block.memo
    kind = "pair" if block.preprocessor is normalise_word_pairs else "char"
    counts = Counter(words(vectorizer, text))
    if not counts:
        return {}, 0.0
    missing = [word for word in counts if word not in memo]
    extra = columns_of(vectorizer, memo, missing) if missing else {}
    distinct = list(counts)
    per_word = [memo[word] if word in memo else extra[word] for word in distinct]
    flat = np.concatenate(per_word)
    owner = np.repeat(np.arange(len(distinct)), [len(c) for c in per_word])  # the word each entry of `flat` is from
    columns, inverse = np.unique(flat, return_inverse=True)
    occurrences = np.bincount(inverse, weights=np.asarray([counts[w] for w in distinct], dtype=float)[owner])
    tf = 1.0 + np.log(occurrences) if block.sublinear_tf else occurrences
    norm = math.sqrt(float((tf * tf) @ block.idf_squared[columns]))
    if norm == 0:
        return {}, 0.0
    contributions = slope * tf * block.idf_weight[columns] / norm
    # Naming a column means running the analyzer on the words that hold it: only for those that can be listed.
    # A column shared by two n-grams is split between them, so a few more than `top` are named.
    keep = np.argsort(-np.abs(contributions))[: 2 * top + 5] if top is not None else np.arange(len(columns))
    chosen = dict(zip(columns[keep].tolist(), contributions[keep].tolist(), strict=True))
    ngram_range = tuple(vectorizer.ngram_range)
    grams_of: dict[int, dict[str, int]] = {}  # column -> this text's n-grams hashed to it, counted
    flat_list, owners = flat.tolist(), owner.tolist()
    starts = np.concatenate(([0], np.cumsum([len(c) for c in per_word]))).tolist()
    for position, column in enumerate(flat_list):
        if column in chosen:
            index = owners[position]
            word = distinct[index]
            # The memo's columns are the analyzer's n-grams of the word, in order (char_ngrams.columns_of).
            gram = _grams(ngram_range, word)[position - starts[index]]
            found = grams_of.setdefault(column, {})
            found[gram] = found.get(gram, 0) + counts[word]
    weights: dict[tuple[str, str], float] = {}
    for column, grams in grams_of.items():
        if len(grams) == 1:  # no collision within this text: the usual case
            (gram,) = grams
            weights[(kind, gram)] = weights.get((kind, gram), 0.0) + chosen[column]
            continue
        total = sum(grams.values())
        for gram, count in grams.items():
            weights[(kind, gram)] = weights.get((kind, gram), 0.0) + chosen[column] * count / total
    return weights, float(contributions.sum())


def explain(scorer: LeanScorer, text: str, top: int | None = DEFAULT_TOP) -> Explanation:
    """The features of `text` by |weight|, largest first (`top` of them; None: all)."""
    weights: dict[tuple[str, str], float] = defaultdict(float)
    processed: dict[int, str] = {}
    total = 0.0  # of every feature, listed or not
    for block in scorer.blocks:
        key = id(block.preprocessor)
        if key not in processed:
            processed[key] = block.preprocessor(text)
        part, block_total = (
            _word_weights(block, processed[key], scorer.slope)
            if isinstance(block, _VocabularyBlock)
            else _char_weights(block, processed[key], scorer.slope, top)
        )
        total += block_total
        for name, weight in part.items():
            weights[name] += weight
    ranked = sorted(weights.items(), key=lambda item: (-abs(item[1]), item[0]))
    features = [Feature(ngram, kind, float(weight)) for (kind, ngram), weight in ranked if weight != 0.0]
    return Explanation(
        features=features if top is None else features[:top],
        offset=scorer.offset,
        logit=float(scorer.offset + total),
    )


def can_explain(scorer) -> bool:
    """Only the compiled lean scorer knows the weights; a model served through its pipeline gets no explanation."""
    return isinstance(scorer, LeanScorer)
