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


# --- sources and the stratified split ---------------------------------------------------------------


def sourced(n: int, source: str, label: str, seed: int, batch: str = "b1", received: str = "2026-01-01"):
    texts = [f"{source} {label} message {seed}-{i} about things" for i in range(n)]
    return pd.DataFrame(
        {"text": texts, "label": label, "source_name": source, "batch_id": batch, "received_at": received}
    )


def test_each_text_keeps_the_source_of_its_first_occurrence():
    first = rows([("claim your prize", "spam"), ("lunch at noon?", "ham")], "b1", "2026-01-01").assign(source_name="sms")
    later = rows([("Claim your  PRIZE", "spam"), ("new text", "ham")], "b2", "2026-02-01").assign(source_name="feedback")
    corpus, _ = clean(pd.concat([later, first]))  # order of the rows does not matter, received_at does
    assert corpus.set_index("normalised")["source"].to_dict() == {
        "claim your prize": "sms", "lunch at noon?": "sms", "new text": "feedback",
    }  # fmt: skip
    unnamed, _ = clean(rows([("no source here", "ham")]))
    assert unnamed["source"].tolist() == ["unknown"]


def test_a_small_source_gets_its_minimum_holdout_per_label_and_a_large_one_only_its_hash():
    rule = SplitRule(min_group_rows=10)
    large = pd.concat([sourced(2000, "sms", "ham", 1), sourced(400, "sms", "spam", 1)])
    # A small source over many salts: the hash alone often leaves one of its labels no holdout at all.
    starved = 0
    for salt in map(str, range(40)):
        small = pd.concat([sourced(12, "email", "spam", 2), sourced(12, "email", "ham", 2), sourced(9, "tiny", "spam", 3)])
        corpus, _ = clean(pd.concat([large, small]), SplitRule(salt=salt))
        by_hash = corpus["normalised"].map(lambda t: split_of(t, SplitRule(salt=salt)))
        groups = corpus.assign(holdout=corpus["split"] == "holdout", hashed=by_hash == "holdout").groupby(["source", "label"])
        kept = groups["holdout"].sum()
        starved += int((groups["hashed"].sum()[("email", "spam")] == 0) or (groups["hashed"].sum()[("email", "ham")] == 0))
        assert kept[("email", "spam")] >= rule.minimum_holdout(12) == 1 and kept[("email", "ham")] >= 1
        # The large groups are far above their minimum: the hash decided every one of their messages.
        large_rows = corpus["source"] == "sms"
        assert (corpus.loc[large_rows, "split"] == by_hash[large_rows]).all()
        # Below min_group_rows nothing is guaranteed (nor topped up).
        tiny = corpus["source"] == "tiny"
        assert (corpus.loc[tiny, "split"] == by_hash[tiny]).all()
        # A top-up only moves train messages to holdout, the lowest hashes of their group first.
        assert not ((by_hash == "holdout") & (corpus["split"] == "train")).any()
    assert starved > 0, "the test must include salts where the hash alone leaves a group no holdout"


def test_the_minimum_holdout_is_half_the_expected_share():
    rule = SplitRule(holdout_share=0.2, min_group_rows=10)
    assert [rule.minimum_holdout(n) for n in (5, 9, 10, 24, 100, 1000)] == [0, 0, 1, 2, 10, 100]


def test_stratified_split_is_stable_when_batches_are_added():
    sms = pd.concat([sourced(1500, "sms", "ham", 1), sourced(300, "sms", "spam", 1)])
    email = pd.concat([sourced(150, "email", "ham", 2), sourced(150, "email", "spam", 2)])
    before, _ = clean(pd.concat([sms, email]))
    more = pd.concat([sourced(500, "sms", "ham", 5, "b2", "2026-02-01"), sourced(40, "feedback", "spam", 6, "b2", "2026-02-01")])
    after, _ = clean(pd.concat([sms, email, more]))
    merged = before.merge(after, on="normalised", suffixes=("_before", "_after"))
    assert len(merged) == len(before)
    assert (merged["split_before"] == merged["split_after"]).all()
    assert (after.loc[after["source"] == "feedback", "split"] == "holdout").sum() >= SplitRule().minimum_holdout(40)


def test_a_corpus_snapshot_from_before_sources_reads_as_unknown(tmp_path):
    store = CorpusStore(tmp_path)
    old, _ = clean(rows([("hello there", "ham"), ("win cash", "spam")]))
    store.write("v1", old.drop(columns="source"), {"batch_ids": ["b1"]})
    assert store.read("v1")["source"].tolist() == ["unknown", "unknown"]
