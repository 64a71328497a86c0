"""Candidate pipelines, model selection and the metrics every stage reports.

Plain scikit-learn, no Dagster or MLflow, so training is testable and the
same code scores the champion and the challenger.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import TfidfTransformer, TfidfVectorizer
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    make_scorer,
    matthews_corrcoef,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.model_selection import StratifiedKFold
from sklearn.naive_bayes import MultinomialNB
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC
from sklearn.utils.parallel import Parallel, delayed

from spam_assets.char_ngrams import MemoHashingVectorizer
from spam_assets.settings import LABELS, POSITIVE_LABEL
from spam_assets.text import normalise

METRIC_NAMES = ("accuracy", "spam_precision", "spam_recall", "spam_f1", "mcc", "roc_auc")

# Models are stored with skops, which refuses to load any type not listed:
# a tampered artifact cannot run code. These are the non-default types our
# pipelines contain.
SKOPS_TRUSTED_TYPES = [
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
    "sklearn.feature_extraction.text.HashingVectorizer",  # champions saved before MemoHashingVectorizer
    "spam_assets.char_ngrams.MemoHashingVectorizer",
    "spam_assets.modeling.CompactTfidfVectorizer",
    "spam_assets.modeling.TextColumn",
    "spam_assets.text.normalise",
]


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


def _word_char_features() -> FeatureUnion:
    # Word 1-2-grams catch phrases ("call now"); character 2-5-grams catch
    # obfuscation and SMS spelling ("fr33", "txt") that words miss.
    return FeatureUnion(
        [
            ("word", CompactTfidfVectorizer(preprocessor=normalise, ngram_range=(1, 2), sublinear_tf=True)),
            # Hashed, not a vocabulary: hundreds of thousands of char n-grams
            # made the stored model slow to serialise (skops JSON-encodes
            # every vocabulary entry: 15 s) for no accuracy gain. Memoised per
            # word (char_ngrams.py): the same matrix, 3-4x faster on e-mail.
            (
                "char",
                Pipeline(
                    [
                        (
                            "hash",
                            MemoHashingVectorizer(
                                preprocessor=normalise,
                                analyzer="char_wb",
                                ngram_range=(2, 5),
                                n_features=2**18,
                                alternate_sign=False,
                                norm=None,
                            ),
                        ),
                        ("tfidf", TfidfTransformer(sublinear_tf=True)),
                    ]
                ),
            ),
        ]
    )


def candidate_pipelines(seed: int = 0) -> dict[str, Pipeline]:
    """The pipelines model selection chooses between; all give calibrated-ish P(spam)."""
    return {
        # The classic baseline: fast, robust on small data.
        "tfidf_nb": Pipeline(
            [
                ("text", TextColumn()),
                ("tfidf", CompactTfidfVectorizer(preprocessor=normalise, ngram_range=(1, 2), sublinear_tf=True)),
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


def spam_probability(model, texts: Sequence[str]) -> np.ndarray:
    """P(spam) for each text, whatever order the model's classes are in."""
    proba = model.predict_proba(list(texts))
    return proba[:, list(model.classes_).index(POSITIVE_LABEL)]


def evaluate(labels: Sequence[str], spam_scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """The platform's metrics, spam as the positive class."""
    y_true = np.asarray(labels) == POSITIVE_LABEL
    y_pred = np.asarray(spam_scores) >= threshold
    both_classes = 0 < y_true.sum() < len(y_true)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "spam_precision": float(precision_score(y_true, y_pred, zero_division=0)),
        "spam_recall": float(recall_score(y_true, y_pred, zero_division=0)),
        "spam_f1": float(f1_score(y_true, y_pred, zero_division=0)),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "roc_auc": float(roc_auc_score(y_true, spam_scores)) if both_classes else float("nan"),
    }


def confusion(labels: Sequence[str], spam_scores: np.ndarray, threshold: float = 0.5) -> pd.DataFrame:
    """Confusion matrix with named rows (actual) and columns (predicted)."""
    predicted = np.where(np.asarray(spam_scores) >= threshold, POSITIVE_LABEL, "ham")
    matrix = confusion_matrix(labels, predicted, labels=list(LABELS))
    return pd.DataFrame(
        matrix, index=[f"actual_{c}" for c in LABELS], columns=[f"predicted_{c}" for c in LABELS]
    )


@dataclass
class TrainingResult:
    name: str
    model: Pipeline
    cv_scores: dict[str, tuple[float, float]]  # candidate -> (mean, std) of spam F1
    holdout_metrics: dict[str, float]
    holdout_confusion: pd.DataFrame


def select_and_fit(
    train: pd.DataFrame,
    holdout: pd.DataFrame,
    seed: int = 0,
    folds: int = 3,
    candidates: dict[str, Pipeline] | None = None,
    n_jobs: int = 2,
    log: Callable[[str], None] = lambda _: None,
) -> TrainingResult:
    """Cross-validate every candidate on `train`, refit the best, score it on `holdout`.

    Both frames have `text` and `label` columns. Selection uses spam F1 (mean
    over stratified folds), never the holdout, so the holdout stays an honest
    judge between champion and challenger.
    """
    candidates = candidates or candidate_pipelines(seed)
    texts, labels = train["text"].tolist(), train["label"].to_numpy()
    scorer = make_scorer(f1_score, pos_label=POSITIVE_LABEL)
    folds = max(2, min(folds, int(pd.Series(labels).value_counts().min())))
    splits = list(StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(texts, labels))
    # Every candidate's folds in one pool: no idle worker between candidates,
    # and the workers' start-up and memo (char_ngrams) serve all of them.
    tasks = [(name, train, test) for name in candidates for train, test in splits]
    results = Parallel(n_jobs=n_jobs)(
        delayed(_fold_score)(candidates[name], texts, labels, train, test, scorer) for name, train, test in tasks
    )
    cv_scores = {}
    for name in candidates:
        scores = np.array([score for (task, _, _), score in zip(tasks, results, strict=True) if task == name])
        cv_scores[name] = (float(scores.mean()), float(scores.std()))
        log(f"{name}: CV spam F1 {scores.mean():.4f} ± {scores.std():.4f}")
    best = max(cv_scores, key=lambda n: cv_scores[n][0])
    model = candidates[best].fit(texts, labels)
    scores = spam_probability(model, holdout["text"])
    return TrainingResult(
        name=best,
        model=model,
        cv_scores=cv_scores,
        holdout_metrics=evaluate(holdout["label"], scores),
        holdout_confusion=confusion(holdout["label"], scores),
    )


def _fold_score(pipeline: Pipeline, texts: list[str], labels: np.ndarray, train, test, scorer) -> float:
    """One fold of cross_val_score: a fresh clone fitted on `train`, scored on `test`."""
    model = clone(pipeline).fit([texts[i] for i in train], labels[train])
    return float(scorer(model, [texts[i] for i in test], labels[test]))
