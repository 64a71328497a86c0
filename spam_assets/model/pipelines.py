"""The candidate pipelines and the types a stored model may contain.

Part of the model contract: training fits these pipelines, every stored
model is one of them, and serving loads and scores them. No Dagster, no
training loop, no MLflow.
"""

from __future__ import annotations

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from spam_assets.model.char_ngrams import MemoHashingVectorizer
from spam_assets.model.evasion import normalise_folded, normalise_skeleton, normalise_word_pairs

# Models are stored with skops, which refuses to load any type not listed:
# a tampered artifact cannot run code. These are the non-default types our
# pipelines contain.
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.feature_extraction.text.HashingVectorizer",  # champions saved before MemoHashingVectorizer
    "spam_assets.model.char_ngrams.MemoHashingVectorizer",
    "spam_assets.model.pipelines.CompactTfidfVectorizer",
    "spam_assets.model.pipelines.TextColumn",
    "spam_assets.model.text.normalise",  # the preprocessor of models trained before the evasion folds
    "spam_assets.model.evasion.normalise_skeleton",
    "spam_assets.model.evasion.normalise_folded",
    "spam_assets.model.evasion.normalise_word_pairs",
]

# Where the types of models stored by earlier releases live now. skops records
# each type by its import path, so a model saved before a class moved names a
# module that no longer has it; loading maps the old path to the new one
# (spam_assets.model.artifact). Moving or renaming a type above needs a line here.
RENAMED_TYPES = {
    "spam_assets.modeling.TextColumn": "spam_assets.model.pipelines.TextColumn",
    "spam_assets.modeling.CompactTfidfVectorizer": "spam_assets.model.pipelines.CompactTfidfVectorizer",
    "spam_assets.char_ngrams.MemoHashingVectorizer": "spam_assets.model.char_ngrams.MemoHashingVectorizer",
    "spam_assets.text.normalise": "spam_assets.model.text.normalise",
}


class TextColumn(BaseEstimator, TransformerMixin):
    """Accept texts as a list, array, Series or a DataFrame with a `text` column.

    MLflow's pyfunc flavour hands models a DataFrame; the gRPC server hands
    them a list. Both must reach the vectorisers as a list of strings.
    """

    def fit(self, X, y=None):
        return self

    def transform(self, X) -> list[str]:
        if isinstance(X, pd.DataFrame):
            X = X["text"] if "text" in X.columns else X.iloc[:, 0]
        return [str(x) for x in X]


class CompactTfidfVectorizer(TfidfVectorizer):
    """A TfidfVectorizer whose fitted vocabulary is saved as one string, not a dict.

    skops writes a dict entry by entry, as verbose JSON (about 400 bytes a
    term): the word 1-2-gram vocabulary of SMS plus some e-mail (130k terms)
    took 5 s to save, 2 s to load and 100 MB, and grows with every batch.
    The terms in column order, joined by newlines, say the same thing in one
    JSON string. In memory it is a TfidfVectorizer in every respect.
    """

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        vocabulary = state.get("vocabulary_")
        if isinstance(vocabulary, dict):
            terms = sorted(vocabulary, key=vocabulary.__getitem__)
            # Fitted vocabularies map terms to 0..n-1; tokens never hold a newline.
            if all(vocabulary[t] == i for i, t in enumerate(terms)) and not any("\n" in t for t in terms):
                state = {k: v for k, v in state.items() if k != "vocabulary_"}
                state["_vocabulary_terms"] = "\n".join(terms)
        return state

    def __setstate__(self, state: dict) -> None:
        if "_vocabulary_terms" in state:
            state = dict(state)
            joined = state.pop("_vocabulary_terms")
            state["vocabulary_"] = {term: i for i, term in enumerate(joined.split("\n"))} if joined else {}
        super().__setstate__(state)


def _char_ngrams(preprocessor, ngram_range: tuple[int, int] = (2, 5)) -> Pipeline:
    # Hashed, not a vocabulary: hundreds of thousands of char n-grams made the
    # stored model slow to serialise (skops JSON-encodes every vocabulary
    # entry: 15 s) for no accuracy gain. Memoised per word (char_ngrams.py):
    # the same matrix, 3-4x faster on e-mail.
    hashing = MemoHashingVectorizer(
        preprocessor=preprocessor, analyzer="char_wb", ngram_range=ngram_range, n_features=2**18, alternate_sign=False, norm=None
    )
    return Pipeline([("hash", hashing), ("tfidf", TfidfTransformer(sublinear_tf=True))])


def _word_pairs() -> Pipeline:
    # Character 4-grams of neighbouring words run together: the n-grams
    # across a word boundary, which spacing a phrase out letter by letter
    # does not change (spam_assets.model.evasion.normalise_word_pairs).
    # 4-grams only: the shorter ones are the folded channel's already, and a
    # third of the n-grams of 2-5 costs a third as much (spacing held as well on SMS).
    return _char_ngrams(normalise_word_pairs, (4, 4))


def _word_char_features() -> FeatureUnion:
    # Word 1-2-grams of the text as a reader sees it catch phrases ("call
    # now") and keep real digits, URLs and money; character 2-5-grams of the
    # text with leet digits, spacing and stretching folded catch what
    # spammers disguise, within words and across the boundary of two words,
    # which no spacing changes (spam_assets.model.evasion).
    # On the SMS holdout the raw character channel this replaced lost a
    # tenth of the spam to spacing or stretching; these lose under 5%.
    return FeatureUnion(
        [
            ("word", CompactTfidfVectorizer(preprocessor=normalise_skeleton, ngram_range=(1, 2), sublinear_tf=True)),
            ("char", _char_ngrams(normalise_folded)),
            ("pairs", _word_pairs()),
        ]
    )


def candidate_pipelines(seed: int = 0) -> dict[str, Pipeline]:
    """The pipelines model selection chooses between; all give calibrated-ish P(spam)."""
    return {
        # The classic baseline: fast, robust on small data. Word n-grams alone lose
        # every spaced-out word ("f r e e" has none): the character n-grams of
        # word pairs keep it.
        "tfidf_nb": Pipeline(
            [
                ("text", TextColumn()),
                (
                    "features",
                    FeatureUnion(
                        [
                            ("word", CompactTfidfVectorizer(preprocessor=normalise_skeleton, ngram_range=(1, 2), sublinear_tf=True)),
                            ("pairs", _word_pairs()),
                        ]
                    ),
                ),
                ("clf", MultinomialNB(alpha=0.05)),
            ]
        ),
        # A linear SVM is the strongest classical text model here; calibration
        # (Platt, 3-fold) turns its margins into probabilities for serving,
        # ROC AUC and the drift monitor's score distribution.
        "word_char_svm": Pipeline(
            [
                ("text", TextColumn()),
                ("features", _word_char_features()),
                # ensemble=False: one SVM and one calibrator fitted on CV
                # predictions, not three of each; the same CV F1 here, and a
                # third of the per-call cost when serving one message.
                ("clf", CalibratedClassifierCV(LinearSVC(C=1.0, random_state=seed), cv=3, ensemble=False)),
            ]
        ),
    }
