import pandas as pd
import pytest

from spam_assets.corpus import CorpusStore, SplitRule, clean, data_version, split_of
from spam_assets.model.text import normalise
from tests.synthetic import sms_messages


def rows(records, batch="b1", received="2026-01-01T00:00:00"):
    return pd.DataFrame(
        [{"text": t, "label": l, "batch_id": batch, "received_at": received} for t, l in records]
    )


def test_normalise_keeps_spam_signals_as_markers():
    text = normalise("  WIN £1000 now!!  Call 09061701461 or visit www.prizes.com  ")
    assert text.startswith("win £1000 now!! call")
    for marker in ("_url_", "_phone_", "_money_", "_number_"):
        assert marker in text
    assert "  " not in text
    assert normalise("ｆｕｌｌｗｉｄｔｈ") == "fullwidth"  # NFKC


def test_duplicates_collapse_on_normalised_text():
    corpus, stats = clean(rows([("Hello  there", "ham"), ("hello there", "ham"), ("WIN cash", "spam")]))
    assert len(corpus) == 2
    assert stats.duplicates_collapsed == 1
    assert corpus.set_index("normalised").loc["hello there", "occurrences"] == 2


def test_conflicting_labels_majority_then_most_recent():
    older = rows([("free ticket", "spam"), ("free ticket", "spam"), ("see you", "ham")], "b1", "2026-01-01")
    newer = rows([("free ticket", "ham"), ("see you", "spam")], "b2", "2026-02-01")
    corpus, stats = clean(pd.concat([older, newer]))
    labels = corpus.set_index("normalised")["label"]
    assert labels["free ticket"] == "spam"  # 2 spam vs 1 ham: majority
    assert labels["see you"] == "spam"  # 1 vs 1: the newer batch wins
    assert stats.conflicts_resolved == 2


def test_empty_texts_are_dropped_and_counted():
    corpus, stats = clean(rows([("   ", "ham"), ("real", "ham")]))
    assert corpus["text"].tolist() == ["real"]
    assert stats.empty_dropped == 1


def test_split_is_stable_across_corpus_growth():
    first = sms_messages(400, seed=1).assign(batch_id="b1", received_at="2026-01-01")
    more = sms_messages(400, seed=2).assign(batch_id="b2", received_at="2026-01-02")
    small, _ = clean(first)
    big, _ = clean(pd.concat([first, more]))
    merged = small.merge(big, on="normalised", suffixes=("_small", "_big"))
    assert len(merged) == len(small)
    assert (merged["split_small"] == merged["split_big"]).all()


def test_split_share_and_salt():
    texts = [f"message number {i}" for i in range(5000)]
    share = sum(split_of(t) == "holdout" for t in texts) / len(texts)
    assert 0.18 < share < 0.22
    salted = [split_of(t, SplitRule(salt="x")) for t in texts]
    assert salted != [split_of(t) for t in texts]


def test_data_version_depends_on_batches_and_rule_not_order():
    assert data_version(["a", "b"], SplitRule()) == data_version(["b", "a"], SplitRule())
    assert data_version(["a"], SplitRule()) != data_version(["a", "b"], SplitRule())
    assert data_version(["a"], SplitRule()) != data_version(["a"], SplitRule(holdout_share=0.3))


def test_corpus_store_round_trip(tmp_path):
    store = CorpusStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="materialise cleaned_corpus"):
        store.read()
    corpus, _ = clean(rows([("a b", "ham"), ("c d", "spam")]))
    store.write("v1", corpus, {"batch_ids": ["b1"]})
    assert store.current_version() == "v1"
    assert store.read().equals(corpus)
    assert store.manifest("v1")["batch_ids"] == ["b1"]
