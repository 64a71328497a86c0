"""traffic_drift: an hour of served traffic judged against the champion, with and without feedback labels.

Real instance, MLflow store and a champion trained on generated SMS-like data
(test_graph's `bootstrapped`); the prediction log is written by the server's
own writer (tests/traffic_log.py) and moved back to past hours.
"""

import csv
import datetime as dt
import json
import time

import dagster as dg
import numpy as np

from serving.prediction_log import PredictionLog
from spam_assets.defs.assets.traffic import traffic
from spam_assets.defs.assets.traffic_monitoring import ESTIMATES_KEY, traffic_drift
from spam_assets.defs.partitions import traffic_hours
from spam_assets.defs.resources import build_resources
from spam_assets.defs.retrain_policy import VERDICT_KEY
from spam_assets.model.registry import Registry
from spam_assets.modeling import spam_probability
from spam_assets.settings import paths, tracking_uri
from spam_assets.traffic.feedback_files import FIELDS, feedback_dir
from spam_assets.traffic.prediction_files import segments
from spam_assets.traffic.verdict_ids import new_verdict_ids
from tests.synthetic import email_messages, sms_messages
from tests.test_graph import bootstrapped  # noqa: F401 - a fixture
from tests.traffic_log import champion, records, written_earlier


def _serve(folder, texts: list[str], hours_ago: int) -> list[dict]:
    """Log the champion's verdicts on `texts` as the server would, `hours_ago` hours back; the records."""
    registry = Registry(tracking_uri())
    version = registry.champion().version
    scores = spam_probability(registry.load(version), texts)
    before = set(segments(folder)) if folder.is_dir() else set()
    log = PredictionLog(folder, retention_days=0).start()
    labels = ["spam" if p >= 0.5 else "ham" for p in scores]
    log.record("Classify", time.perf_counter(), champion(str(version)), [f"c{i}" for i in range(len(texts))],
               texts, scores.tolist(), labels, new_verdict_ids(len(texts)))  # fmt: skip
    log.close()
    (segment,) = set(segments(folder)) - before
    return records(written_earlier(segment, hours_ago))


def _judge(instance, hours_ago: int) -> dict:
    start = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=hours_ago)
    key = traffic_hours.get_partition_key_for_timestamp(start.timestamp())
    resources = {k: v for k, v in build_resources().items() if k in ("store", "registry", "decay")}
    result = dg.materialize([traffic, traffic_drift], partition_key=key, instance=instance, resources=resources)
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node("traffic_drift")[0].metadata.items()}


def _report(verdicts: list[dict], labels: list[str], reporter: str = "user-1") -> None:
    """Feedback on `verdicts`, stored the way the server stores it (one JSON line per report)."""
    folder = feedback_dir(paths().predictions)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "feedback-test-1-x.jsonl", "a", encoding="utf-8") as file:
        for (record, label), report_id in zip(zip(verdicts, labels, strict=True), new_verdict_ids(len(labels))):
            row = dict.fromkeys(FIELDS)
            row |= {"report_id": report_id, "time": record["time"], "label": label, "reporter": reporter,
                    "verdict_id": record["verdict_id"], "verdict_found": True, "text_sha256": record["text_sha256"]}  # fmt: skip
            file.write(json.dumps(row) + "\n")


def test_same_traffic_is_not_drift_and_email_is_with_estimates(bootstrapped, instance):  # noqa: F811
    folder = paths().predictions
    sms = sms_messages(400, seed=7)
    served = _serve(folder, sms["text"].tolist(), hours_ago=3)
    _report(served[:150], sms["label"].tolist()[:150])  # feedback on 150 of them, the true labels
    meta = _judge(instance, hours_ago=3)
    verdict, estimates = meta[VERDICT_KEY], meta[ESTIMATES_KEY]
    assert verdict["drift"] is False, verdict["reasons"]
    assert verdict["n_verdicts"] == 400 and verdict["n_labelled"] == 150 == meta["labelled_by_feedback"]
    truth = float((sms["label"] == "spam").mean())
    share = estimates["bbse_share"]
    assert share["low"] <= truth <= share["high"], (truth, share)
    assert estimates["realised"]["f1"]["value"] is not None and "realised_f1" in meta["statistics"]

    mail = email_messages(300, seed=8)
    _serve(folder, mail["text"].tolist(), hours_ago=2)
    meta = _judge(instance, hours_ago=2)
    assert meta[VERDICT_KEY]["drift"] is True and meta[VERDICT_KEY]["n_labelled"] == 0
    assert any("domain classifier" in r or "OOV" in r for r in meta[VERDICT_KEY]["reasons"])
    assert any(w.startswith("label prior and realised F1 not judged") for w in meta[VERDICT_KEY]["warnings"])
    assert "CBPE" in meta["estimates_summary"]


def test_conflicting_feedback_labels_nothing_and_an_empty_hour_is_not_judged(bootstrapped, instance):  # noqa: F811
    sms = sms_messages(60, seed=9)
    served = _serve(paths().predictions, sms["text"].tolist(), hours_ago=4)
    _report(served[:40], ["spam"] * 40, reporter="a")
    _report(served[:40], ["ham"] * 40, reporter="b")  # every report contradicted: no label is trusted
    meta = _judge(instance, hours_ago=4)
    assert meta[VERDICT_KEY]["n_labelled"] == 0

    empty = _judge(instance, hours_ago=6)
    assert empty["drift"] is False and "no verdicts in" in empty["reasons"]
    assert np.isfinite(meta[ESTIMATES_KEY]["predicted_share"]["value"])


# ------------------------------------------------------------ decisions from traffic (retrain_on_traffic)


def _tick(instance, cursor=None):
    from spam_assets.defs.automation.traffic_decisions import retrain_on_traffic

    resources = {k: v for k, v in build_resources().items() if k in ("store", "registry", "decay", "webhook")}
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    return retrain_on_traffic(context)


def test_drifted_traffic_asks_for_labels_then_retrains_once_they_exist(bootstrapped, instance, tmp_path, monkeypatch):  # noqa: F811
    from spam_assets.defs.automation.traffic_decisions import MIN_NEW_LABELS_ENV, TRAFFIC_DRIFT_TRIGGER
    from spam_assets.defs.run_tags import TRIGGER_TAG
    from spam_assets.loaders import read_batch
    from spam_assets.runner import materialize_batches
    from tests.synthetic import write_jsonl
    from tests.test_graph import FAST, ingest

    monkeypatch.setenv(MIN_NEW_LABELS_ENV, "100")
    mail = email_messages(300, seed=11)
    _serve(paths().predictions, mail["text"].tolist(), hours_ago=2)
    assert _judge(instance, hours_ago=2)[VERDICT_KEY]["drift"] is True

    # No label has arrived since the champion's corpus: a label request, the least certain messages first.
    asked = _tick(instance)
    assert not asked.run_requests and asked.skip_reason.skip_message.startswith("Needs labels: traffic of")
    (request,) = (paths().home / "review").glob("needs-labels-*.csv")
    assert str(request) in asked.skip_reason.skip_message and "0 labelled messages arrived" in asked.skip_reason.skip_message
    with open(request, newline="", encoding="utf-8") as file:
        header, *rows = list(csv.reader(file))  # e-mail texts span lines: quoted
    assert header == ["label", "text", "spam_probability", "verdict_id"] and 0 < len(rows) <= 200
    assert all(label == "" for label, *_ in rows)
    certainty = [abs(float(probability) - 0.5) for _, _, probability, _ in rows]
    assert certainty == sorted(certainty)
    again = _tick(instance, asked.cursor)  # once per verdict, not on every tick
    assert isinstance(again, dg.SkipReason) and again.skip_message == "no new traffic verdict"

    # Labelled in place, the request is a batch the inbox reads back.
    with open(request, "w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([header, *(["spam" if i % 2 else "ham", *row[1:]] for i, row in enumerate(rows))])
    assert len(read_batch(request)) == len(rows)

    # Once enough labels have arrived (here an e-mail batch of 300), the same verdict asks for a retrain.
    labelled = ingest(write_jsonl(email_messages(300, seed=12), tmp_path / "labelled.jsonl"), instance)
    resources = build_resources()
    materialize_batches([labelled], instance, resources, FAST, downstream=["cleaned_corpus"])
    retrain = _tick(instance)
    (run,) = retrain.run_requests
    assert run.tags[TRIGGER_TAG] == TRAFFIC_DRIFT_TRIGGER and "300 new labelled messages" in run.tags["spam/retrain_reason"]


def test_a_calm_hour_asks_for_nothing(bootstrapped, instance):  # noqa: F811
    _serve(paths().predictions, sms_messages(200, seed=13)["text"].tolist(), hours_ago=2)
    assert _judge(instance, hours_ago=2)[VERDICT_KEY]["drift"] is False
    calm = _tick(instance)
    assert not calm.run_requests and "no drift or decay" in calm.skip_reason.skip_message
    assert not (paths().home / "review").exists()


def test_an_alarm_whose_hour_table_is_gone_says_so_and_writes_nothing(bootstrapped, instance):  # noqa: F811
    _serve(paths().predictions, email_messages(200, seed=14)["text"].tolist(), hours_ago=2)
    assert _judge(instance, hours_ago=2)[VERDICT_KEY]["drift"] is True
    for table in paths().traffic.glob("*.parquet"):
        table.unlink()  # cleaned up by hand, or never synced to this machine
    gone = _tick(instance)
    assert not gone.run_requests and gone.skip_reason.skip_message.endswith("needs labels, but the hour's table is gone")
    assert not (paths().home / "review").exists()
