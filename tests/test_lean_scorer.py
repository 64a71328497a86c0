"""The lean single-text scorer gives predict_proba's numbers, or is not used at all."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.calibration import CalibratedClassifierCV
from sklearn.feature_extraction.text import CountVectorizer, HashingVectorizer, TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import FeatureUnion, Pipeline
from sklearn.svm import LinearSVC

from spam_assets.model import lean_scorer
from spam_assets.model import char_ngrams
from spam_assets.model.lean_scorer import AGREEMENT_TEXTS, Unsupported, compile_scorer, max_disagreement, verified_scorer
from spam_assets.model.pipelines import TextColumn, candidate_pipelines
from spam_assets.model.scorer import choose_scorer
from spam_assets.model.text import normalise
from spam_assets.model.verify import DEFAULT_PROBES
from tests.datasets import needs_sms, sms_path
from tests.synthetic import email_messages, sms_messages

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def corpus() -> pd.DataFrame:
    data = pd.concat([sms_messages(500, seed=11), email_messages(60, seed=12)], ignore_index=True)
    # Label noise keeps probabilities away from 0 and 1, where differences would hide.
    flip = np.random.default_rng(1).random(len(data)) < 0.05
    data.loc[flip, "label"] = data.loc[flip, "label"].map({"ham": "spam", "spam": "ham"})
    return data


@pytest.fixture(scope="module")
def fitted(corpus) -> dict[str, Pipeline]:
    return {name: p.fit(corpus["text"].tolist(), corpus["label"]) for name, p in candidate_pipelines(0).items()}


def unseen_texts() -> list[str]:
    held_out = sms_messages(200, seed=99)["text"].tolist() + email_messages(10, seed=98)["text"].tolist()
    return held_out + list(AGREEMENT_TEXTS) + [
        "WINNER!!! claim ur £1000 prize now: call 09061701461",
        "the the the the the the",  # one word, count 6: sublinear tf
        "x",  # a word shorter than the smallest n-gram
        "tab\tand\nnewline   runs",
        "Ünïcödé Straße ﬁ ligature and ＦＵＬＬＷＩＤＴＨ",  # NFKC changes these
    ]


@pytest.mark.parametrize("candidate", sorted(candidate_pipelines()))
def test_every_candidate_compiles_to_the_same_probabilities(fitted, candidate):
    model = fitted[candidate]
    scorer = compile_scorer(model)
    texts = unseen_texts()
    spam = list(model.classes_).index("spam")
    assert max_disagreement(scorer, model, spam, texts) <= TOLERANCE
    # Not a degenerate agreement: the scores spread across the unit interval.
    scores = [scorer(t) for t in texts]
    assert min(scores) < 0.1 and max(scores) > 0.9


@pytest.mark.parametrize("candidate", sorted(candidate_pipelines()))
def test_every_candidate_is_served_by_the_lean_scorer(fitted, candidate):
    """A new candidate the compiler does not know would serve through its pipeline, slower: fail here instead."""
    model = fitted[candidate]
    scorer = choose_scorer(model, list(model.classes_).index("spam"), [text for text, _ in DEFAULT_PROBES])
    assert scorer.name == "lean", f"{candidate}: {scorer.reason}"
    assert "matches predict_proba" in scorer.reason


@pytest.mark.parametrize("candidate", sorted(candidate_pipelines()))
def test_a_batch_scores_as_each_text_alone(fitted, candidate):
    scorer = compile_scorer(fitted[candidate])
    texts = unseen_texts()
    alone = np.array([scorer(t) for t in texts])
    np.testing.assert_allclose(scorer.batch(texts), alone, rtol=0, atol=1e-12)
    # Order and company do not matter: reversed, and texts with no n-gram at all on their own.
    np.testing.assert_allclose(scorer.batch(texts[::-1]), alone[::-1], rtol=0, atol=1e-12)
    blank = ["", " ", "\t\n"]
    np.testing.assert_allclose(scorer.batch(blank), [scorer(t) for t in blank], rtol=0, atol=1e-12)
    assert scorer.batch([]).shape == (0,)
    # scores() picks a path by size; both give the same numbers.
    for n in (1, lean_scorer.BATCH_FROM - 1, lean_scorer.BATCH_FROM, 50):
        np.testing.assert_allclose(scorer.scores(texts[:n]), alone[:n], rtol=0, atol=1e-12)


def test_models_saved_with_a_plain_hashing_vectorizer_still_compile(corpus):
    """Champions trained before MemoHashingVectorizer hold sklearn's own HashingVectorizer."""
    model = candidate_pipelines(0)["word_char_svm"]
    char = model.named_steps["features"].transformer_list[1][1]
    char.steps[0] = ("hash", HashingVectorizer(**char.steps[0][1].get_params()))
    model.fit(corpus["text"].tolist(), corpus["label"])
    assert type(char.steps[0][1]) is HashingVectorizer
    assert max_disagreement(compile_scorer(model), model, 1, unseen_texts()) <= TOLERANCE


def test_the_memo_bound_keeps_results_exact(fitted, monkeypatch):
    model = fitted["word_char_svm"]
    monkeypatch.setattr(char_ngrams, "_MEMOS", {})  # a fresh memo, not the one earlier tests filled
    monkeypatch.setattr(char_ngrams, "MAX_MEMO", 5)
    scorer = compile_scorer(model)
    texts = unseen_texts()
    first = scorer.batch(texts)  # most words over the bound: their columns come from the batch's own pass
    second = [scorer(t) for t in texts]  # now partly memoised
    hashed = scorer.blocks[-1]
    assert len(hashed.memo) == 5
    np.testing.assert_allclose(first, second, rtol=0, atol=1e-12)
    assert max_disagreement(scorer, model, 1, texts) <= TOLERANCE


def test_blocks_share_one_preprocessing_pass(fitted, monkeypatch):
    scorer = compile_scorer(fitted["word_char_svm"])
    calls = []
    for block in scorer.blocks:
        block.preprocessor = lambda text, calls=calls: calls.append(text) or normalise(text)
    scorer("Free entry now")
    assert len(scorer.blocks) >= 2 and len(calls) == len(scorer.blocks)  # different function objects now: each runs once
    shared = lambda text: calls.append(text) or normalise(text)  # noqa: E731
    for block in scorer.blocks:
        block.preprocessor = shared
    calls.clear()
    scorer("Free entry now")
    assert calls == ["Free entry now"]


def unsupported_pipelines(corpus) -> dict[str, Pipeline]:
    texts, labels = corpus["text"].tolist(), corpus["label"]
    word = lambda: TfidfVectorizer(preprocessor=normalise)  # noqa: E731
    pipelines = {
        "logistic regression": Pipeline([("text", TextColumn()), ("tfidf", word()), ("clf", LogisticRegression())]),
        "ensemble of calibrators": Pipeline(
            [("text", TextColumn()), ("tfidf", word()), ("clf", CalibratedClassifierCV(LinearSVC(), cv=3))]
        ),
        "isotonic calibration": Pipeline(
            [
                ("text", TextColumn()),
                ("tfidf", word()),
                ("clf", CalibratedClassifierCV(LinearSVC(), cv=3, ensemble=False, method="isotonic")),
            ]
        ),
        "char analyzer on a vocabulary": Pipeline(
            [("text", TextColumn()), ("tfidf", TfidfVectorizer(analyzer="char")), ("clf", candidate_pipelines()["tfidf_nb"][-1])]
        ),
        "a union with a block of another kind": Pipeline(
            [
                ("text", TextColumn()),
                ("features", FeatureUnion([("words", word()), ("counts", CountVectorizer(preprocessor=normalise))])),
                ("clf", candidate_pipelines()["tfidf_nb"][-1]),
            ]
        ),
        "stop words": Pipeline(
            [
                ("text", TextColumn()),
                ("tfidf", TfidfVectorizer(preprocessor=normalise, stop_words=["the"])),
                ("clf", candidate_pipelines()["tfidf_nb"][-1]),
            ]
        ),
    }
    return {name: p.fit(texts, labels) for name, p in pipelines.items()}


def test_unsupported_pipelines_are_refused_with_a_reason(corpus):
    pipelines = unsupported_pipelines(corpus)
    with pytest.raises(Unsupported, match="LogisticRegression"):
        compile_scorer(pipelines["logistic regression"])
    for name, pipeline in pipelines.items():  # the loader's entry point never raises: it falls back, saying why
        scorer, why = verified_scorer(pipeline, list(pipeline.classes_).index("spam"), ["hello"])
        assert scorer is None, name
        assert "not supported" in why
        chosen = choose_scorer(pipeline, list(pipeline.classes_).index("spam"), ["hello"])
        assert (chosen.name, chosen.reason) == ("pipeline", why)


def _offset_one_at_a_time(scorer):
    scorer.offset += 1e-6  # what a changed scikit-learn internal might do


def _offset_batches(scorer):
    batch = scorer.batch
    scorer.batch = lambda texts: batch(texts) + 1e-6


@pytest.mark.parametrize("break_it", [_offset_one_at_a_time, _offset_batches], ids=["one at a time", "batches"])
def test_a_scorer_that_disagrees_is_not_used(fitted, monkeypatch, break_it):
    real = lean_scorer.compile_scorer

    def broken(model):
        scorer = real(model)
        break_it(scorer)
        return scorer

    monkeypatch.setattr(lean_scorer, "compile_scorer", broken)
    scorer, why = verified_scorer(fitted["word_char_svm"], 1, ["hello"])
    assert scorer is None
    assert "differs from predict_proba" in why


@pytest.mark.datasets
@needs_sms
def test_agrees_on_every_real_sms_message():
    from spam_assets.loaders.sms import read_sms

    records = read_sms(sms_path())
    texts, labels = [r.text for r in records], [r.label for r in records]
    model = candidate_pipelines(0)["word_char_svm"].fit(texts[::2], labels[::2])
    scorer = compile_scorer(model)
    assert max_disagreement(scorer, model, 1, texts) <= TOLERANCE
