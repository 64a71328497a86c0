"""The noise guards on feedback, rule by rule, on reports as the server stores them (spam_assets.feedback_labels)."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from spam_assets import feedback_labels as fl
from spam_assets.loaders import SourceSpec, read_batch
from spam_assets.traffic.verdict_ids import new_verdict_id

RULES = fl.FeedbackRules(min_batch=3, cap_per_day=3)


def report(text: str, label: str, reporter: str, p: float | None = 0.5, **extra) -> dict:
    """A report as read_reports returns it (the ids are made in order: later call, later id)."""
    return {
        "report_id": new_verdict_id(), "label": label, "reporter": reporter, "reason": "", "verdict_id": None,
        "text_sha256": hashlib.sha256(text.encode()).hexdigest(), "text": text,
        "predicted_label": None if p is None else ("spam" if p >= 0.5 else "ham"), "spam_probability": p,
        "where": "feedback-test.jsonl:1", **extra,
    }  # fmt: skip


def test_reports_beyond_the_daily_cap_are_held_with_the_reason():
    reports = [report(f"message {i}", "spam", "flooder") for i in range(5)] + [report("other", "ham", "calm")]
    counts: dict = {}
    out = fl.screen(reports, counts, RULES)
    assert [r["text"] for r in out.passed] == ["message 0", "message 1", "message 2", "other"]
    assert [r["text"] for r in out.held] == ["message 3", "message 4"]
    assert {r["held_rule"] for r in out.held} == {"cap"}
    assert "over the cap of 3 reports a day for 'flooder'" in out.held[0]["held_because"]
    # The count carries over to the next read (the same day): one more is held at once.
    again = fl.screen([report("message 5", "spam", "flooder")], counts, RULES)
    assert not again.passed and again.held[0]["held_rule"] == "cap"


def test_cap_counts_are_kept_around_today_whatever_the_reports_claim():
    import datetime

    counts = {"2026-11-26": {"a": 1}, "2026-11-27": {"a": 5}, "2026-11-28": {"b": 1}, "2031-01-01": {"evil": 1}, "2026-11-01": {"a": 9}}
    assert fl.prune_counts(counts, datetime.date(2026, 11, 27)) == {
        "2026-11-26": {"a": 1}, "2026-11-27": {"a": 5}, "2026-11-28": {"b": 1},
    }  # fmt: skip


def test_a_report_contradicting_a_confident_verdict_is_held_not_trained():
    reports = [
        report("sure spam", "ham", "a", p=0.99),
        report("sure ham", "spam", "a", p=0.01),
        report("edge spam", "ham", "a", p=0.95),  # at the threshold: held
        report("unsure", "ham", "a", p=0.70),
        report("agrees", "spam", "a", p=0.99),
        report("by text, never scored", "spam", "a", p=None),
    ]
    out = fl.screen(reports, {}, fl.FeedbackRules(cap_per_day=100))
    assert [r["text"] for r in out.held] == ["sure spam", "sure ham", "edge spam"]
    assert "P(spam) 0.990 >= 0.95" in out.held[0]["held_because"]
    assert "P(spam) 0.010 <= 0.05" in out.held[1]["held_because"]
    assert [r["text"] for r in out.passed] == ["unsure", "agrees", "by text, never scored"]
    # The thresholds are configurable.
    lenient = fl.screen(reports[:1], {}, fl.FeedbackRules(confident_spam=0.999))
    assert lenient.passed and not lenient.held


def test_a_report_whose_text_is_unknown_is_skipped_with_a_reason():
    out = fl.screen([{**report("x", "spam", "a"), "text": None}], {}, RULES)
    assert not out.passed and not out.held
    assert out.skipped[0]["skipped_because"].startswith("text unknown")


def test_a_strict_majority_of_distinct_reporters_labels_a_message():
    reports = [
        report("m", "spam", "a"), report("m", "ham", "b"), report("m", "spam", "c"),
        report("m", "ham", "a"),  # a's second report: a's first counts
    ]  # fmt: skip
    out = fl.resolve(reports)
    assert out.rows == [{"text": "m", "label": "spam", "report_ids": [reports[0]["report_id"], reports[2]["report_id"]]}]
    assert [(r["reporter"], r["skipped_because"]) for r in out.skipped] == [
        ("b", "outvoted, 1 ham to 2 spam"),
        ("a", "a repeat: the reporter's first report on the message counts"),
    ]
    assert not out.held


def test_a_tie_holds_every_report_on_the_message():
    reports = [report("t", "spam", "a"), report("t", "ham", "b"), report("u", "ham", "c")]
    out = fl.resolve(reports)
    assert [r["label"] for r in out.rows] == ["ham"] and out.rows[0]["text"] == "u"
    assert [r["reporter"] for r in out.held] == ["a", "b"]
    assert {r["held_because"] for r in out.held} == {"reporters disagree, 1 ham to 1 spam: a tie"}


def test_the_same_reports_give_the_same_rows_and_the_same_batch_bytes_whatever_their_order():
    reports = [report(f"text {i % 7}", random.Random(i).choice(["ham", "spam"]), f"r{i % 5}") for i in range(40)]
    shuffled = reports[:]
    random.Random(1).shuffle(shuffled)
    first, second = fl.resolve(reports), fl.resolve(shuffled)
    assert first == second
    assert fl.batch_bytes(first.rows) == fl.batch_bytes(second.rows)
    assert fl.batch_name(fl.batch_bytes(first.rows)) == fl.batch_name(fl.batch_bytes(second.rows))


def test_the_batch_and_the_review_file_are_what_the_loaders_read(tmp_path):
    rows = fl.resolve([report("hello there", "ham", "a"), report("WIN cash", "spam", "b")]).rows
    batch = tmp_path / fl.batch_name(fl.batch_bytes(rows))
    batch.write_bytes(fl.batch_bytes(rows))
    assert fl.BATCH_NAME.fullmatch(batch.name)
    table = read_batch(batch, SourceSpec(format="jsonl"))
    assert table[["text", "label"]].values.tolist() == [["hello there", "ham"], ["WIN cash", "spam"]]
    assert fl.report_ids_in(batch) == {i for r in rows for i in r["report_ids"]}

    held = fl.screen([report('says "ham", with, commas\nand a newline', "ham", "a", p=0.99)], {}, RULES).held
    held.append({**report("gone", "spam", "a"), "text": None, "held_rule": "cap", "held_because": "cap"})
    review = tmp_path / "feedback-review.csv"
    review.write_text(fl.review_csv(held))
    # As written, `label` is empty (a person fills it in); once filled, the inbox reads text and label.
    filled = review.read_text().replace(',,ham,', ',spam,ham,', 1)
    review.write_text(filled)
    table = read_batch(review)
    assert table[["text", "label"]].values.tolist() == [['says "ham", with, commas\nand a newline', "spam"]]


@pytest.mark.parametrize(
    "line, problem",
    [
        (b"{not json", "not valid JSON"),
        (b"[1, 2]", "a JSON list"),
        (json.dumps({"report_id": "42", "label": "spam"}).encode(), "is not a UUIDv7"),
        (None, "label 'maybe' is not one of ham, spam"),
        (None, "no reporter"),
        (None, "spam_probability 'high' is not a probability"),
    ],
)
def test_a_line_that_is_not_a_report_says_what_is_wrong(line, problem):
    good = {k: v for k, v in report("x", "spam", "a").items() if k != "where"}
    if line is None:
        bad = {"label 'maybe'": {"label": "maybe"}, "no reporter": {"reporter": " "}, "spam_probability": {"spam_probability": "high"}}
        line = json.dumps({**good, **next(v for k, v in bad.items() if problem.startswith(k))}).encode()
    assert problem in fl.parse_report(line)
    assert fl.parse_report(json.dumps(good).encode()) == good


def test_reading_from_offsets_takes_only_new_complete_lines_and_names_bad_ones(tmp_path):
    folder = tmp_path / "feedback"
    folder.mkdir()
    a, b = folder / "feedback-a.jsonl", folder / "feedback-b.jsonl"
    line = lambda r: (json.dumps({k: v for k, v in r.items() if k != "where"}) + "\n").encode()  # noqa: E731
    early = report("late but older", "spam", "z")  # its id is older than everything below
    a.write_bytes(line(report("one", "ham", "x")) + b"garbage\n" + line(report("two", "ham", "x")) + b'{"half')  # being written
    first = fl.read_reports(tmp_path)
    assert [r["text"] for r in first.reports] == ["one", "two"]
    assert [str(x) for x in first.bad] == ["feedback-a.jsonl:2: not valid JSON (Expecting value: line 1 column 1 (char 0))"]
    assert first.reports[1]["where"] == "feedback-a.jsonl:3"
    # The half line is completed, another replica's file appears with a report whose id is older.
    with a.open("ab") as out:
        out.write(b'"}\n')
    b.write_bytes(line(early))
    second = fl.read_reports(tmp_path, first.offsets)
    assert [r["text"] for r in second.reports] == ["late but older"]
    assert [(x.file, x.line) for x in second.bad] == [("feedback-a.jsonl", 4)]  # the completed half line is no report
    assert fl.read_reports(tmp_path, second.offsets).reports == []
