"""The live comparison (spam_assets/live_comparison.py) on prediction-log segments in the rollout contract's format."""

from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from spam_assets.live_comparison import LiveComparison, compare, pair_verdicts
from spam_assets.traffic.prediction_files import read_predictions
from spam_assets.traffic_tables import compact_hour
from tests.rollout_log import Message, record, sha256, uuid7_at, write_rollout_segment, write_segment

# Ten minutes into the hour before last: a test's few messages never straddle an hour.
NOW = dt.datetime.now(dt.UTC).replace(minute=10, second=0, microsecond=0) - dt.timedelta(hours=2)


def spam(i: int) -> str:
    return f"WINNER {i}! claim your prize now, call 0906170{i:04d}"


def ham(i: int) -> str:
    return f"see you at lunch {i}, bring the notes"


def test_exact_mcnemar_matches_the_hand_computed_case(tmp_path):
    """9 discordant labelled pairs, 1 the champion alone got right and 8 the challenger alone:
    two-sided exact p = 2 * (C(9,0) + C(9,1)) / 2^9 = 20/512 = 0.0390625."""
    messages, truth = [], {}
    for i in range(8):  # spams the champion missed and the challenger caught
        messages.append(Message(spam(i), 0.2, 0.9))
        truth[sha256(spam(i))] = "spam"
    messages.append(Message(ham(0), 0.1, 0.8))  # a ham the challenger alone got wrong
    truth[sha256(ham(0))] = "ham"
    for i in range(1, 6):  # both right
        messages.append(Message(ham(i), 0.1, 0.1))
        truth[sha256(ham(i))] = "ham"
    messages.append(Message(ham(99), 0.1, 0.9))  # a disagreement nobody labelled: not in the test
    write_rollout_segment(tmp_path, messages, champion="1", challenger="2", start=NOW)

    result = compare(pair_verdicts(read_predictions(tmp_path), "1", "2"), truth)
    assert (result.pairs, result.labelled) == (15, 14)
    assert (result.champion_only_right, result.challenger_only_right) == (1, 8)
    assert result.mcnemar_p == pytest.approx(20 / 512, abs=1e-12)
    assert result.improvement(0.05) and not result.regression(0.05)
    assert not result.improvement(0.01)  # 0.039 is not below 0.01
    assert result.agreement == pytest.approx(5 / 15)
    # recall: champion caught 0 of 8 spams, challenger 8 of 8; precision: challenger 8 of 9 called spam
    assert (result.recall.champion, result.recall.challenger) == (0.0, 1.0)
    assert math.isnan(result.precision.champion) and result.precision.challenger == pytest.approx(8 / 9)


def test_intervals_are_paired_seeded_and_hold_the_observed_difference(tmp_path):
    messages, truth = [], {}
    for i in range(60):
        is_spam = i % 3 == 0
        text = spam(i) if is_spam else ham(i)
        truth[sha256(text)] = "spam" if is_spam else "ham"
        champion_right = i % 7 != 0  # wrong on every 7th
        challenger_right = i % 11 != 0  # wrong on every 11th
        right, wrong = (0.9, 0.1) if is_spam else (0.1, 0.9)
        messages.append(Message(text, right if champion_right else wrong, right if challenger_right else wrong))
    write_rollout_segment(tmp_path, messages, champion="1", challenger="2", start=NOW)
    paired = pair_verdicts(read_predictions(tmp_path), "1", "2")

    first, again, other_seed = compare(paired, truth), compare(paired, truth), compare(paired, truth, seed=1)
    for name in ("precision", "recall", "accuracy"):
        delta = getattr(first, name)
        assert delta.difference == pytest.approx(delta.challenger - delta.champion)
        assert delta.low <= delta.difference <= delta.high
        assert delta.low < delta.high
        assert getattr(again, name) == delta  # seeded: the same log gives the same interval
    assert other_seed.recall.low != first.recall.low or other_seed.recall.high != first.recall.high
    # accuracy: champion wrong on 9 of 60 (every 7th), challenger on 6 (every 11th)
    assert first.accuracy.champion == pytest.approx(51 / 60) and first.accuracy.challenger == pytest.approx(54 / 60)


def test_a_served_verdict_without_its_twin_is_counted_not_paired(tmp_path):
    messages = [Message(ham(i), 0.1, 0.2, twin=i % 4 != 0) for i in range(12)]  # 3 shadows dropped
    write_rollout_segment(tmp_path, messages, champion="3", challenger="4", start=NOW)
    # a verdict of another version (the champion before this rollout) is neither paired nor counted
    old = record(uuid7_at(NOW), NOW, "2", "champion", True, 0.1, ham(50))
    write_segment(tmp_path, [old], NOW - dt.timedelta(minutes=5), NOW)

    paired = pair_verdicts(read_predictions(tmp_path), "3", "4")
    assert len(paired.pairs) == 9 and paired.unpaired == 3
    result = compare(paired, {})
    assert result.labelled == 0 and math.isnan(result.mcnemar_p)
    assert result.agreement == 1.0 and result.disagreements == []
    assert "no labelled pairs yet" in " ".join(result.headline())


def test_canary_pairs_name_who_answered_and_keep_each_models_probability(tmp_path):
    messages = [
        Message(spam(1), 0.30, 0.95, answered="challenger"),  # canary: the challenger answered, the champion shadowed
        Message(spam(2), 0.40, 0.97, answered="champion"),
    ]
    write_rollout_segment(tmp_path, messages, champion="5", challenger="6", start=NOW)
    paired = pair_verdicts(read_predictions(tmp_path), "5", "6")
    rows = paired.pairs.set_index("text")
    assert rows.loc[spam(1), "answered"] == "challenger" and rows.loc[spam(2), "answered"] == "champion"
    assert rows.loc[spam(1), "champion_p"] == pytest.approx(0.30) and rows.loc[spam(1), "challenger_p"] == pytest.approx(0.95)
    result = compare(paired, {sha256(spam(1)): "spam"})
    assert result.answered == {"champion": 1, "challenger": 1}
    assert [d["answered"] for d in result.disagreements] == ["champion", "challenger"]  # newest first
    table = result.disagreement_markdown()
    assert "| spam (0.950) | challenger | spam |" in table and "champion v5" in table
    assert paired.since(NOW + dt.timedelta(seconds=1)).pairs["text"].tolist() == [spam(2)]


def test_records_written_before_the_rollout_fields_read_as_served_champion_verdicts(tmp_path):
    rec = record(uuid7_at(NOW), NOW, "7", "champion", True, 0.9, spam(1))
    del rec["role"], rec["served"]  # a segment of an older server
    write_segment(tmp_path, [rec], NOW, NOW)
    frame = read_predictions(tmp_path)
    assert frame["role"].tolist() == ["champion"] and frame["served"].tolist() == [True]
    paired = pair_verdicts(frame, "7", "8")
    assert len(paired.pairs) == 0 and paired.unpaired == 1
    assert compare(paired, {}).pairs == 0


def test_the_hand_off_round_trips_through_json(tmp_path):
    messages = [Message(spam(i), 0.9, 0.2 if i == 0 else 0.9) for i in range(5)]
    write_rollout_segment(tmp_path, messages, champion="1", challenger="2", start=NOW)
    result = compare(pair_verdicts(read_predictions(tmp_path), "1", "2"), {sha256(spam(i)): "spam" for i in range(5)})
    back = LiveComparison.from_metadata(json.loads(json.dumps(result.as_metadata())))
    assert back.mcnemar_p == result.mcnemar_p and back.precision.difference == result.precision.difference
    assert back.disagreements == result.disagreements and back.headline() == result.headline()


def test_bad_input_says_what_is_wrong(tmp_path):
    with pytest.raises(ValueError, match="same version"):
        pair_verdicts(read_predictions(tmp_path), "3", "3")
    with pytest.raises(ValueError, match=r"lack \['served'"):
        pair_verdicts(read_predictions(tmp_path).drop(columns=["served"]), "3", "4")


def test_traffic_tables_count_served_verdicts_only(tmp_path):
    """With a challenger in shadow the hour's table is what it would be without: the same verdicts, served ones."""
    with_shadow, without = tmp_path / "with", tmp_path / "without"
    messages = [Message(spam(i) if i % 2 else ham(i), 0.8 if i % 2 else 0.1, 0.3, answered="challenger" if i == 3 else "champion")
                for i in range(10)]  # fmt: skip
    write_rollout_segment(with_shadow, messages, champion="1", challenger="2", start=NOW)
    served_only = [m.__class__(**{**m.__dict__, "twin": False}) for m in messages]
    write_rollout_segment(without, served_only, champion="1", challenger="2", start=NOW)

    a, b = compact_hour(with_shadow, NOW), compact_hour(without, NOW)
    assert a.table.num_rows == b.table.num_rows == 10
    assert (a.unserved, b.unserved, a.duplicates) == (10, 0, 0)
    frame = a.table.to_pandas()
    assert frame["served"].all() and sorted(frame["role"]) == ["challenger"] + ["champion"] * 9
    assert (frame["model_version"] == "2").sum() == 1  # the canary message, answered by the challenger
    same = ["client_id", "time", "model_version", "role", "spam_probability", "label", "text"]
    assert frame[same].equals(b.table.to_pandas()[same])  # verdict ids are random per file


def test_a_served_field_that_is_not_true_or_false_is_a_bad_line_named_with_its_line(tmp_path):
    good = record(uuid7_at(NOW), NOW, "1", "champion", True, 0.1, ham(1))
    bad = {**record(uuid7_at(NOW), NOW, "1", "champion", True, 0.1, ham(2)), "served": "yes"}
    segment = write_segment(tmp_path, [good, bad], NOW, NOW + dt.timedelta(seconds=1))
    result = compact_hour(tmp_path, NOW)
    assert result.table.num_rows == 1
    assert [str(b) for b in result.bad_lines] == [f"{segment.name} line 2: served 'yes' is not true or false"]
