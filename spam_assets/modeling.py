"""Model selection and the metrics every stage reports.

Plain scikit-learn, no Dagster or MLflow, so training is testable and the
same code scores the champion and the challenger. The pipelines themselves
are the model contract's (`spam_assets.model.pipelines`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.base import clone
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
from sklearn.pipeline import Pipeline

from spam_assets.model.pipelines import candidate_pipelines
from spam_assets.settings import LABELS, POSITIVE_LABEL
from spam_assets.workers import process_pool

METRIC_NAMES = ("accuracy", "spam_precision", "spam_recall", "spam_f1", "mcc", "roc_auc")


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
    results = _map_folds([(candidates[name], texts, labels, train, test, scorer) for name, train, test in tasks], n_jobs)
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


def _map_folds(arguments: list[tuple], n_jobs: int) -> list[float]:
    """_fold_score over `arguments`, in `n_jobs` worker processes that end with this call (or with this process)."""
    workers = min(len(arguments), n_jobs if n_jobs >= 1 else os.cpu_count() or 1)  # n_jobs -1: every core
    if workers <= 1:
        return [_fold_score(*args) for args in arguments]
    with process_pool(workers) as pool:
        return list(pool.map(_fold_score, *zip(*arguments)))


def _fold_score(pipeline: Pipeline, texts: list[str], labels: np.ndarray, train, test, scorer) -> float:
    """One fold of cross_val_score: a fresh clone fitted on `train`, scored on `test`."""
    model = clone(pipeline).fit([texts[i] for i in train], labels[train])
    return float(scorer(model, [texts[i] for i in test], labels[test]))
