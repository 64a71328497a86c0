"""feedback_sensor and feedback_review on a real instance, with reports stored the way the server stores them.

Verdicts go through a real PredictionLog, reports through a real FeedbackStore
(reports by verdict id carry no text: the sensor finds it in the log); the
sensor is evaluated tick by tick with its partition requests applied as the
daemon applies them, and raw_sample really runs on what it stages.
"""

from __future__ import annotations

import json
import re
import socket
import time
from hashlib import sha256

import dagster as dg
import pytest

from serving.feedback import FeedbackStore
from serving.prediction_log import PredictionLog
from spam_assets import feedback_labels as fl
from spam_assets.definitions import defs as load_defs
from spam_assets.defs.assets.feedback import feedback_review
from spam_assets.defs.assets.ingestion import raw_sample
from spam_assets.defs.automation.feedback import FeedbackCursor, feedback_batches, feedback_sensor
from spam_assets.defs.resources import ModelRegistry, PlatformStore
from spam_assets.defs.run_tags import TRIGGER_TAG
from spam_assets.loaders import read_batch
from spam_assets.traffic.feedback_files import FIELDS, feedback_dir
from spam_assets.traffic.verdict_ids import new_verdict_id, new_verdict_ids
from tests.synthetic import sms_messages
from tests.test_prediction_log import CHAMPION

DEFS = load_defs()


class Traffic:
    """A server's prediction log and feedback store under the test's home."""

    def __init__(self, home, log_text: bool = True):
        self.log = PredictionLog(home / "predictions", log_text=log_text).start()
        self.feedback = FeedbackStore(self.log, log_text=log_text).start()

    def score(self, texts: list[str], p: float = 0.5) -> list[str]:
        ids = new_verdict_ids(len(texts))
        labels = ["spam" if p >= 0.5 else "ham"] * len(texts)
        self.log.record("Classify", time.perf_counter(), CHAMPION, ids, texts, [p] * len(texts), labels, ids)
        assert self.log.flush()
        return ids

    def report(self, verdict_id: str, label: str, reporter: str, text: str = "") -> str:
        return self.feedback.report(verdict_id, text, label, reporter).report_id

    def close(self):
        self.feedback.close()
        self.log.close()


@pytest.fixture
def traffic(home, monkeypatch):
    monkeypatch.setenv("SPAM_FEEDBACK_MIN_BATCH", "12")
    monkeypatch.setenv("SPAM_FEEDBACK_CAP_PER_DAY", "100")
    server = Traffic(home)
    yield server
    server.close()


def tick(instance, cursor: str | None = None, apply: bool = True) -> dg.SensorResult:
    """One evaluation; `apply=False` is a crash before the daemon acted on the result (and saved the cursor)."""
    context = dg.build_sensor_context(
        instance=instance, instance_ref=instance.get_ref(), cursor=cursor, definitions=DEFS,
        resources={"store": PlatformStore(), "registry": ModelRegistry()},
    )  # fmt: skip
    result = feedback_sensor.evaluate_tick(context)
    if apply:
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def ingest_requests(result) -> list[dg.RunRequest]:
    return [r for r in result.run_requests if r.job_name == "ingest_batch"]


def ingest(instance, resources, request: dg.RunRequest) -> dg.MaterializeResult:
    result = dg.materialize([raw_sample], partition_key=request.partition_key, instance=instance, resources=resources, tags=request.tags)
    assert result.success
    return result


def messages(n: int, seed: int) -> list[tuple[str, str]]:
    frame = sms_messages(n, seed=seed)
    return list(zip(frame["text"], frame["label"], strict=True))


def report_all(traffic: Traffic, rows: list[tuple[str, str]], reporter: str = "user") -> list[str]:
    ids = traffic.score([text for text, _ in rows])
    return [traffic.report(v, label, f"{reporter}-{i}") for i, (v, (_, label)) in enumerate(zip(ids, rows, strict=True))]


def test_reports_become_one_feedback_batch_once_enough_messages_wait(instance, resources, traffic):
    rows = messages(12, seed=1)
    report_all(traffic, rows[:11])
    first = tick(instance)
    assert not first.run_requests and "11 messages waiting for a batch of 12" in first.skip_message
    report_all(traffic, rows[11:], reporter="late")

    second = tick(instance, first.cursor)
    (request,) = ingest_requests(second)
    batches = PlatformStore().batches()
    assert feedback_batches(batches) == [request.partition_key]
    assert fl.BATCH_NAME.fullmatch(batches.meta(request.partition_key)["original_name"])
    assert request.tags[TRIGGER_TAG] == "feedback"

    ingest(instance, resources, request)
    assert batches.validation(request.partition_key)["accepted"]
    parsed = batches.read_parsed(request.partition_key)
    assert sorted(zip(parsed["text"], parsed["label"], strict=True)) == sorted(rows)  # texts from the log, labels reported
    assert parsed["source"].str.startswith("feedback-labels-").all()
    assert batches.spec(request.partition_key).source == "feedback" and set(parsed["source_name"]) == {"feedback"}

    third = tick(instance, second.cursor)
    assert not third.run_requests and feedback_batches(batches) == [request.partition_key]
    assert FeedbackCursor.load(third.cursor).totals["trained"] == 12


@pytest.mark.parametrize("more_reports_meanwhile", [False, True])
def test_a_crash_between_staging_and_the_cursor_save_trains_nothing_twice(instance, resources, traffic, more_reports_meanwhile):
    report_all(traffic, messages(12, seed=2))
    lost = tick(instance, apply=False)  # staged, then the daemon died: no partition, no run, cursor not saved
    (staged,) = ingest_requests(lost)
    if more_reports_meanwhile:
        report_all(traffic, messages(3, seed=3), reporter="meanwhile")

    again = tick(instance)  # the cursor as it was before the lost tick
    batches = PlatformStore().batches()
    assert feedback_batches(batches) == [staged.partition_key]  # same rows, same hash: one batch, one partition
    (request,) = ingest_requests(again)
    assert (request.partition_key, request.run_key) == (staged.partition_key, staged.run_key)
    cursor = FeedbackCursor.load(again.cursor)
    assert len(cursor.waiting) == (3 if more_reports_meanwhile else 0)  # only the new ones wait

    ingest(instance, resources, request)
    assert not ingest_requests(tick(instance, again.cursor))
    # Lost again after the run was launched and done: the batch is known by the store, nothing is requested.
    assert not ingest_requests(tick(instance))
    assert len(batches.read_parsed(staged.partition_key)) == 12


def test_while_the_registry_is_down_ready_messages_wait_unstaged(instance, traffic, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("SPAM_REGISTRY_TIMEOUT_SECONDS", "0.5")
    report_all(traffic, messages(12, seed=8))
    down = tick(instance)
    assert not ingest_requests(down) and feedback_batches(PlatformStore().batches()) == []
    assert len(fl.resolve(FeedbackCursor.load(down.cursor).waiting).rows) == 12

    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    back = tick(instance, down.cursor)
    (request,) = ingest_requests(back)
    assert feedback_batches(PlatformStore().batches()) == [request.partition_key]


def test_a_feedback_batch_whose_raw_sample_run_failed_is_requested_again_at_most_three_times(instance, resources, traffic):
    report_all(traffic, messages(12, seed=7))
    result = tick(instance)
    (request,) = ingest_requests(result)
    batch = request.partition_key
    received = PlatformStore().batches().received_path(batch)
    received.unlink()  # the run fails: raw_sample cannot read the batch
    keys = []
    for _ in range(3):
        run = dg.materialize([raw_sample], partition_key=batch, instance=instance, resources=resources, raise_on_error=False)
        assert not run.success
        result = tick(instance, result.cursor)
        keys.append([r.run_key for r in ingest_requests(result)])
    assert keys == [[f"feedback:{batch}:1"], [f"feedback:{batch}:2"], []]


def test_held_reports_show_in_feedback_review_with_a_file_to_relabel(instance, resources, traffic, monkeypatch):
    monkeypatch.setenv("SPAM_FEEDBACK_CAP_PER_DAY", "2")
    rows = messages(6, seed=4)
    flood = traffic.score([text for text, _ in rows[:4]])
    for verdict in flood:
        traffic.report(verdict, "spam", "flooder")  # 2 within the cap, 2 over it
    (sure,) = traffic.score([rows[4][0]], p=0.99)
    traffic.report(sure, "ham", "doubter")  # contradicts a confident verdict
    (unsure,) = traffic.score([rows[5][0]], p=0.6)
    traffic.report(unsure, "ham", "fine")

    result = tick(instance)
    (review_request,) = [r for r in result.run_requests if r.job_name == "feedback_review_job"]
    assert FeedbackCursor.load(result.cursor).totals["held"] == 3

    materialized = dg.materialize([feedback_review], instance=instance, resources=resources)
    meta = materialized.asset_materializations_for_node("feedback_review")[0].metadata
    assert (meta["held"].value, meta["reports"].value, meta["share_held"].value) == (3, 6, 0.5)
    assert meta["held_by_rule"].value == {"cap": 2, "confident": 1}
    table = meta["held_table"].value
    assert table.count("over the cap of 2 reports a day for 'flooder'") == 2
    assert "reported ham, the model said spam with P(spam) 0.990 >= 0.95" in table

    review = PlatformStore().paths.home / "review" / "feedback-review.csv"
    assert meta["review_file"].value == str(review)
    held_texts = {rows[2][0], rows[3][0], rows[4][0]}
    # A person fills `label`; the inbox's loader reads the file back.
    lines = review.read_text().splitlines()
    filled = [lines[0]] + [line.replace(",,", ",spam,", 1) for line in lines[1:]]
    review.write_text("\n".join(filled) + "\n")
    table = read_batch(review)
    assert set(table["text"]) == held_texts and set(table["label"]) == {"spam"}


def test_a_hostile_feedback_file_is_skipped_line_by_line_named_and_counted(instance, resources, traffic):
    report_all(traffic, messages(3, seed=5))
    good = {name: None for name in FIELDS} | {
        "report_id": new_verdict_id(), "label": "spam", "reporter": "x", "text": "a text sent with the report",
        "text_sha256": sha256(b"a text sent with the report").hexdigest(), "verdict_found": False,
    }  # fmt: skip
    hostile = feedback_dir(PlatformStore().paths.predictions) / "feedback-evil-1-x.jsonl"
    hostile.write_bytes(
        b"\x00\xff not json at all\n"
        + json.dumps({**good, "label": "maybe", "report_id": new_verdict_id()}).encode() + b"\n"
        + json.dumps(good).encode() + b"\n"
        + b"[]\n"
        + json.dumps({**good, "report_id": new_verdict_id(), "text": "not the text hashed"}).encode() + b"\n"
    )
    result = tick(instance)  # no exception
    cursor = FeedbackCursor.load(result.cursor)
    assert (cursor.totals["read"], cursor.totals["bad"]) == (4, 4)
    assert "a text sent with the report" in {r["text"] for r in cursor.waiting}

    meta = dg.materialize([feedback_review], instance=instance, resources=resources).asset_materializations_for_node(
        "feedback_review"
    )[0].metadata
    assert meta["bad_lines"].value == 4
    bad = meta["bad_lines_table"].value
    assert "| feedback-evil-1-x.jsonl | 1 | not valid JSON" in bad
    assert "| feedback-evil-1-x.jsonl | 2 | label 'maybe' is not one of ham, spam |" in bad
    assert "| feedback-evil-1-x.jsonl | 4 | a JSON list, not a report object |" in bad
    assert "| feedback-evil-1-x.jsonl | 5 | text_sha256 is not the sha256 of its text |" in bad


def test_reports_whose_text_is_nowhere_are_counted_and_skipped(instance, home):
    private = Traffic(home, log_text=False)  # --log-text off: neither the log nor the report keeps texts
    try:
        (verdict,) = private.score(["a private message"])
        private.report(verdict, "ham", "alice")
        private.report("", "spam", "bob", text="another private message")
    finally:
        private.close()
    result = tick(instance)
    cursor = FeedbackCursor.load(result.cursor)
    assert (cursor.totals["read"], cursor.totals["skipped"], cursor.waiting) == (2, 2, [])
    assert "held" not in cursor.totals


def test_a_report_landing_late_in_another_replicas_file_with_an_older_id_is_still_read(instance, traffic):
    early_id = new_verdict_id()  # taken by a second replica, written only after the first replica's reports are read
    report_all(traffic, messages(2, seed=6))
    first = tick(instance)
    assert len(FeedbackCursor.load(first.cursor).waiting) == 2
    late = {name: None for name in FIELDS} | {
        "report_id": early_id, "label": "spam", "reporter": "y", "text": "late but not lost",
        "text_sha256": sha256(b"late but not lost").hexdigest(), "verdict_found": False,
    }  # fmt: skip
    (feedback_dir(PlatformStore().paths.predictions) / "feedback-replica2-7-z.jsonl").write_text(json.dumps(late) + "\n")
    second = tick(instance, first.cursor)
    waiting = FeedbackCursor.load(second.cursor).waiting
    assert early_id < min(r["report_id"] for r in waiting if r["report_id"] != early_id)
    assert "late but not lost" in {r["text"] for r in waiting}


def _full_disk_while_copying(monkeypatch):
    """Every batch copy fails as a full disk makes it fail: a partial file, then ENOSPC."""
    from spam_assets import batches as batches_module
    from tests.test_hostile_files import full_disk_after

    monkeypatch.setattr(batches_module, "_copy_file", full_disk_after(100))


def _floor_above_free_space(monkeypatch):
    """The free-space floor above what the disk has: the sensor's own check refuses before writing."""
    monkeypatch.setenv("SPAM_MIN_FREE_BYTES", str(1 << 60))


@pytest.mark.parametrize("fault", [_full_disk_while_copying, _floor_above_free_space], ids=["enospc", "floor"])
def test_a_full_disk_stages_nothing_loses_no_report_and_the_batch_follows_when_space_returns(
    instance, traffic, monkeypatch, capfd, fault
):
    rows = messages(12, seed=9)
    report_all(traffic, rows)
    with monkeypatch.context() as patched:
        fault(patched)
        full = tick(instance)
    batches = PlatformStore().batches()
    assert not ingest_requests(full) and feedback_batches(batches) == []
    assert not [p for p in batches.root.iterdir() if not p.name.startswith(".")] if batches.root.exists() else True
    waiting = fl.resolve(FeedbackCursor.load(full.cursor).waiting).rows
    assert len(waiting) == 12  # every message waits in the cursor, none dropped
    warned = [line for line in capfd.readouterr().err.splitlines() if "12 messages ready, not staged" in line]
    assert warned and re.search(r"no space left|not enough free disk space", warned[-1], re.I), warned
    assert "they wait, and are staged on a later tick" in warned[-1]

    back = tick(instance, full.cursor)  # space again: the same messages, one batch
    (request,) = ingest_requests(back)
    assert feedback_batches(batches) == [request.partition_key]
    assert FeedbackCursor.load(back.cursor).totals["trained"] == 12
