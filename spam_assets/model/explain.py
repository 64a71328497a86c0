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
- `char`: a character n-gram within a word ("winn"). The char block is hashed,
  so a column has no name of its own: it is named by the n-grams *of this
  text* that hash to it (scikit-learn's char_wb n-grams and hash, as
  `char_ngrams.columns_of`), the padding spaces trimmed. Two n-grams of one
  text that collide share the column's weight in proportion to their counts.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from dataclasses import dataclass

from sklearn.utils import murmurhash3_32

from spam_assets.model.char_ngrams import _analyzer, words
from spam_assets.model.lean_scorer import LeanScorer, _HashedBlock, _VocabularyBlock

DEFAULT_TOP = 10


@dataclass(frozen=True)
class Feature:
    ngram: str
    kind: str  # "word" or "char"
    weight: float  # contribution to logit P(spam); positive towards spam


@dataclass(frozen=True)
class Explanation:
    features: list[Feature]  # the largest |weight| first, at most `top`
    offset: float  # the logit of a text with no known features
    logit: float  # offset + the weights of all the text's features (not only those listed)


def _tf(count: int, sublinear: bool) -> float:
    return 1.0 + math.log(count) if sublinear else float(count)


def _word_weights(block: _VocabularyBlock, text: str, slope: float) -> dict[tuple[str, str], float]:
    counts = Counter(term for term in block.ngrams(text) if term in block.vocabulary)
    columns = {term: block.vocabulary[term] for term in counts}
    tf = {term: _tf(count, block.sublinear_tf) for term, count in counts.items()}
    norm = math.sqrt(sum(tf[t] ** 2 * block.idf_squared[columns[t]] for t in counts))
    if norm == 0:
        return {}
    return {("word", term): slope * tf[term] * block.idf_weight[columns[term]] / norm for term in counts}


def _char_weights(block: _HashedBlock, text: str, slope: float) -> dict[tuple[str, str], float]:
    vectorizer = block.vectorizer
    n_features, ngrams = vectorizer.n_features, _analyzer(tuple(vectorizer.ngram_range))
    per_column: dict[int, Counter] = defaultdict(Counter)  # column -> the text's n-grams hashed to it, counted
    for word in words(vectorizer, text):
        for gram in ngrams(word):
            per_column[abs(murmurhash3_32(gram, 0)) % n_features][gram] += 1
    tf = {column: _tf(sum(grams.values()), block.sublinear_tf) for column, grams in per_column.items()}
    norm = math.sqrt(sum(t * t * block.idf_squared[column] for column, t in tf.items()))
    if norm == 0:
        return {}
    weights: dict[tuple[str, str], float] = defaultdict(float)
    for column, grams in per_column.items():
        contribution = slope * tf[column] * block.idf_weight[column] / norm
        total = sum(grams.values())
        for gram, count in grams.items():
            weights[("char", gram.strip())] += contribution * count / total
    return weights


def explain(scorer: LeanScorer, text: str, top: int | None = DEFAULT_TOP) -> Explanation:
    """The features of `text` by |weight|, largest first (`top` of them; None: all)."""
    weights: dict[tuple[str, str], float] = defaultdict(float)
    processed: dict[int, str] = {}
    for block in scorer.blocks:
        key = id(block.preprocessor)
        if key not in processed:
            processed[key] = block.preprocessor(text)
        part = (
            _word_weights(block, processed[key], scorer.slope)
            if isinstance(block, _VocabularyBlock)
            else _char_weights(block, processed[key], scorer.slope)
        )
        for name, weight in part.items():
            weights[name] += weight
    ranked = sorted(weights.items(), key=lambda item: (-abs(item[1]), item[0]))
    features = [Feature(ngram, kind, float(weight)) for (kind, ngram), weight in ranked if weight != 0.0]
    return Explanation(
        features=features if top is None else features[:top],
        offset=scorer.offset,
        logit=float(scorer.offset + sum(weights.values())),
    )


def can_explain(scorer) -> bool:
    """Only the compiled lean scorer knows the weights; a model served through its pipeline gets no explanation."""
    return isinstance(scorer, LeanScorer)
