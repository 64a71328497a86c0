import numpy as np
import pandas as pd
import pytest

from spam_assets.model.pipelines import TextColumn, candidate_pipelines
from spam_assets.modeling import evaluate, select_and_fit, spam_probability
from tests.synthetic import sms_messages


@pytest.fixture(scope="module")
def split():
    data = sms_messages(600, seed=5)
    # A little label noise so the candidates differ and the scores are not all 1.0.
    flip = np.random.default_rng(0).random(len(data)) < 0.03
    data.loc[flip, "label"] = data.loc[flip, "label"].map({"ham": "spam", "spam": "ham"})
    return data.iloc[:450], data.iloc[450:]


def test_selection_is_deterministic_for_a_seed(split):
    train, holdout = split
    first = select_and_fit(train, holdout, seed=3, folds=3, n_jobs=1)
    second = select_and_fit(train, holdout, seed=3, folds=3, n_jobs=1)
    assert first.name == second.name
    assert first.cv_scores == second.cv_scores
    np.testing.assert_array_equal(
        spam_probability(first.model, holdout["text"]), spam_probability(second.model, holdout["text"])
    )
    assert set(first.cv_scores) == set(candidate_pipelines())
    assert first.cv_scores[first.name][0] == max(m for m, _ in first.cv_scores.values())


def test_metrics_use_spam_as_positive_class():
    metrics = evaluate(["spam", "spam", "ham", "ham"], np.array([0.9, 0.2, 0.1, 0.7]))
    assert metrics["spam_precision"] == 0.5 and metrics["spam_recall"] == 0.5
    assert metrics["accuracy"] == 0.5 and metrics["roc_auc"] == 0.75
    assert np.isnan(evaluate(["ham", "ham"], np.array([0.1, 0.2]))["roc_auc"])  # one class: undefined


def test_text_column_accepts_lists_series_and_frames():
    column = TextColumn()
    assert column.transform(["a", "b"]) == ["a", "b"]
    assert column.transform(pd.Series(["a"])) == ["a"]
    assert column.transform(pd.DataFrame({"text": ["a"], "other": [1]})) == ["a"]
    assert column.transform(np.array(["a", "b"], dtype=object)) == ["a", "b"]


def test_compact_vocabulary_round_trips_through_skops(split):
    import io
    import zipfile

    import skops.io

    from spam_assets.model.pipelines import SKOPS_TRUSTED_TYPES

    train, holdout = split
    for name, pipeline in candidate_pipelines(0).items():
        model = pipeline.fit(train["text"].tolist(), train["label"])
        data = skops.io.dumps(model)
        schema = zipfile.ZipFile(io.BytesIO(data)).read("schema.json").decode()
        # One string for the whole vocabulary, not a JSON node per term.
        assert '"_vocabulary_terms"' in schema and '"vocabulary_"' not in schema, name
        loaded = skops.io.loads(data, trusted=SKOPS_TRUSTED_TYPES)
        words = lambda m: m[1].transformer_list[0][1]  # noqa: E731
        assert words(loaded).vocabulary_ == words(model).vocabulary_ and len(words(model).vocabulary_) > 100
        np.testing.assert_array_equal(
            spam_probability(loaded, holdout["text"]), spam_probability(model, holdout["text"])
        )
