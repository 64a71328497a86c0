"""Feedback (spam.v1.Classifier/Report): by verdict id or text, once per reporter, each bad input refused, durable."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import grpc
import pytest
from serving_fixtures import (  # noqa: F401 - fixtures
    PROJECT_ROOT,
    PYTHON,
    free_port,
    model_store,
    run_python,
    running_server,
    wait_until,
)

from serving.feedback import FeedbackStore, InvalidReport
from serving.generated.spam.v1 import classifier_pb2 as pb
from serving.generated.spam.v1 import classifier_pb2_grpc as pb_grpc
from serving.prediction_log import PredictionLog
from spam_assets.traffic.feedback_files import feedback_dir, read_feedback
from spam_assets.traffic.prediction_files import read_predictions
from spam_assets.traffic.verdict_ids import new_verdict_id
from tests.test_prediction_log import HAM, SPAM, _record


@pytest.fixture
def store(tmp_path):
    log = PredictionLog(tmp_path / "predictions").start()
    feedback = FeedbackStore(log).start()
    yield log, feedback
    feedback.close()
    log.close()


def test_a_report_by_verdict_id_is_stored_once_per_reporter(store, tmp_path):
    log, feedback = store
    (verdict,) = _record(log, 1, text=SPAM)
    first = feedback.report(verdict, "", "spam", "alice", "phishing")
    again = feedback.report(verdict, "", "ham", "alice")  # changed their mind: the first report stands
    other = feedback.report(verdict.upper(), "", "spam", "bob")  # any spelling of the id
    assert first.created and not again.created and again.report_id == first.report_id
    assert other.created and other.report_id != first.report_id
    frame = read_feedback(tmp_path / "predictions")
    assert len(frame) == 2
    row = frame.set_index("reporter").loc["alice"]
    assert (row["verdict_id"], row["label"], row["reason"], row["verdict_found"]) == (verdict, "spam", "phishing", True)
    assert (row["model_version"], row["predicted_label"], row["spam_probability"]) == ("7", "ham", 0.25)


def test_a_report_by_text_is_stored_once_per_reporter(store, tmp_path):
    _, feedback = store
    first = feedback.report("", "free entry to win a prize, txt WIN", "spam", "carol")
    again = feedback.report("", "free entry to win a prize, txt WIN", "spam", "carol")
    assert first.created and not again.created and again.report_id == first.report_id
    # An id the log does not know, with the text: stored by its text.
    unknown = feedback.report(new_verdict_id(), "a message never scored", "ham", "carol")
    assert unknown.created
    frame = read_feedback(tmp_path / "predictions")
    assert list(frame["verdict_found"]) == [False, False]
    assert frame["text"].tolist() == ["free entry to win a prize, txt WIN", "a message never scored"]


def test_with_log_text_off_a_report_by_text_keeps_only_its_sha256(tmp_path):
    log = PredictionLog(tmp_path).start()
    feedback = FeedbackStore(log, log_text=False).start()
    feedback.report("", "a private message", "ham", "dave")
    feedback.close()
    log.close()
    assert read_feedback(tmp_path)["text"].isna().all()
    assert b"a private message" not in b"".join(p.read_bytes() for p in feedback_dir(tmp_path).iterdir())


BAD_REPORTS = {
    "label": (dict(label="SPAM"), "label must be one of ['ham', 'spam'], got 'SPAM'"),
    "empty reporter": (dict(reporter=""), "reporter is empty"),
    "blank reporter": (dict(reporter="  "), "reporter is empty"),
    "neither id nor text": (dict(verdict_id=""), "give the verdict_id"),
    "not an id": (dict(verdict_id="12345"), "'12345' is not a verdict id"),
    "unknown id, no text": (dict(verdict_id="UNKNOWN"), "unknown verdict_id"),
    "text of another message": (dict(text=HAM), "text is not the message verdict"),
    "empty text": (dict(verdict_id="", text="   "), "text is empty"),
    "reason too long": (dict(reason="x" * 5000), "reason is over the limit of 4096 bytes"),
}


@pytest.mark.parametrize("case", BAD_REPORTS, ids=list(BAD_REPORTS))
def test_each_bad_report_is_refused_with_its_reason(store, tmp_path, case):
    log, feedback = store
    (verdict,) = _record(log, 1, text=SPAM)
    change, reason = BAD_REPORTS[case]
    report = dict(verdict_id=verdict, text="", label="spam", reporter="erin", reason="")
    report.update(change)
    if report["verdict_id"] == "UNKNOWN":
        report["verdict_id"] = new_verdict_id()
    with pytest.raises(InvalidReport) as error:
        feedback.report(**report)
    assert reason in str(error.value)
    assert len(read_feedback(tmp_path / "predictions")) == 0


def test_a_repeat_sent_to_another_replica_is_recognised_and_a_race_is_deduplicated_on_read(tmp_path):
    log = PredictionLog(tmp_path).start()
    (verdict,) = _record(log, 1)
    replica_a, replica_b = FeedbackStore(log).start(), FeedbackStore(log).start()  # two files in one folder
    first = replica_a.report(verdict, "", "spam", "frank")
    assert replica_b.report(verdict, "", "spam", "frank") == first.__class__(first.report_id, created=False)
    # Two replicas that both stored it (each before seeing the other's): the first report is what reads give.
    race = FeedbackStore(log)
    race._known.clear()
    race.directory.mkdir(exist_ok=True)
    race._append({**json.loads(next(feedback_dir(tmp_path).glob("feedback-*.jsonl")).read_text()),
                  "report_id": new_verdict_id()})  # fmt: skip
    assert len(list(feedback_dir(tmp_path).glob("feedback-*.jsonl"))) == 2
    frame = read_feedback(tmp_path)
    assert frame["report_id"].tolist() == [first.report_id]
    for store_ in (replica_a, replica_b, race):
        store_.close()
    log.close()


def test_a_half_written_report_line_is_ignored(tmp_path):
    log = PredictionLog(tmp_path).start()
    feedback = FeedbackStore(log).start()
    stored = feedback.report("", "some text", "ham", "gina")
    with open(next(feedback_dir(tmp_path).glob("feedback-*.jsonl")), "ab") as file:
        file.write(b'{"report_id": "cut short by a cra')
    assert read_feedback(tmp_path)["report_id"].tolist() == [stored.report_id]
    assert not FeedbackStore(log).start().report("", "some text", "ham", "gina").created
    feedback.close()
    log.close()


# --- the RPC on real servers ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory):  # noqa: F811
    registry = model_store.clone("feedback", [model_store.good[0]])
    registry.promote("1", "feedback test server")
    folder = tmp_path_factory.mktemp("feedback") / "predictions"
    with running_server(model_store, registry.model_name, wait_for="1", prediction_log=str(folder)) as running:
        yield running


def _stub(server) -> pb_grpc.ClassifierStub:
    return pb_grpc.ClassifierStub(grpc.insecure_channel(server.target))


def test_report_rpc_by_verdict_id_then_by_text(server):
    stub = _stub(server)
    verdict = stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=10).verdict
    report = pb.ReportRequest(verdict_id=verdict.verdict_id, label="ham", reporter="henry", reason="my bank")
    first, again = stub.Report(report, timeout=10), stub.Report(report, timeout=10)
    assert first.created and not again.created and again.report_id == first.report_id
    by_text = stub.Report(pb.ReportRequest(text="a message no server scored", label="spam", reporter="henry"), timeout=10)
    assert by_text.created
    frame = read_feedback(server.predictions.directory).set_index("report_id")
    assert frame.loc[first.report_id, "verdict_id"] == verdict.verdict_id
    assert frame.loc[first.report_id, "predicted_label"] == "spam" and frame.loc[first.report_id, "label"] == "ham"
    assert not frame.loc[by_text.report_id, "verdict_found"]


@pytest.mark.parametrize("case", BAD_REPORTS, ids=list(BAD_REPORTS))
def test_report_rpc_answers_each_bad_input_invalid_argument(server, case):
    stub = _stub(server)
    verdict = stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=10).verdict
    change, reason = BAD_REPORTS[case]
    report = dict(verdict_id=verdict.verdict_id, text="", label="spam", reporter="ivy", reason="")
    report.update(change)
    if report["verdict_id"] == "UNKNOWN":
        report["verdict_id"] = new_verdict_id()
    with pytest.raises(grpc.RpcError) as error:
        stub.Report(pb.ReportRequest(**report), timeout=10)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason in error.value.details()


def test_cli_reports_by_verdict_id_and_by_text(server):
    verdict = _stub(server).Classify(pb.ClassifyRequest(text=HAM), timeout=10).verdict
    main = "from serving.client import main; raise SystemExit(main())"
    target = ["--target", server.target]
    result = run_python(main, "report", verdict.verdict_id, "spam", "--reporter", "jack", "--reason", "sold me", *target)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["created"] is True
    again = run_python(main, "report", verdict.verdict_id, "spam", "--reporter", "jack", *target)
    assert json.loads(again.stdout) == {"report_id": json.loads(result.stdout)["report_id"], "created": False}
    by_text = run_python(main, "report", "--text", "hello there", "ham", "--reporter", "jack", *target)
    assert by_text.returncode == 0 and json.loads(by_text.stdout)["created"] is True
    refused = run_python(main, "report", verdict.verdict_id, "maybe", "--reporter", "jack", *target)
    assert refused.returncode == 1 and "INVALID_ARGUMENT: label must be one of" in refused.stderr
    usage = run_python(main, "report", "spam", *target)  # no verdict id and no --text
    assert usage.returncode == 2 and "give VERDICT_ID LABEL, or --text TEXT LABEL" in usage.stderr


def test_a_server_without_a_log_keeps_no_feedback(model_store):  # noqa: F811
    registry = model_store.clone("feedback-off", [model_store.good[0]])
    registry.promote("1", "no log")
    with running_server(model_store, registry.model_name, wait_for="1", prediction_log="off") as off:
        assert off.predictions is None
        with pytest.raises(grpc.RpcError) as error:
            _stub(off).Report(pb.ReportRequest(text=SPAM, label="spam", reporter="kim"), timeout=10)
    assert error.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "--prediction-log off" in error.value.details()


def test_an_answered_report_survives_sigkill_right_after(model_store, tmp_path):  # noqa: F811
    registry = model_store.clone("feedback-kill", [model_store.good[0]])
    registry.promote("1", "sigkill after a report")
    folder, port = tmp_path / "predictions", free_port()
    env = {**os.environ, "SPAM_SERVING_TRACKING_URI": model_store.uri, "MLFLOW_DISABLE_TELEMETRY": "true",
           "SPAM_SERVING_PREDICTION_LOG": str(folder), "SPAM_SERVING_MODEL_NAME": registry.model_name}  # fmt: skip
    process = subprocess.Popen([PYTHON, "-m", "serving.server", "--port", str(port), "--poll-interval", "0.2"],
                               cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = pb_grpc.ClassifierStub(channel)

            def classified():
                try:
                    return stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=5).verdict
                except grpc.RpcError:
                    return None

            verdict = wait_until(classified, timeout=90, interval=0.2, message="the server to classify")
            by_id = stub.Report(pb.ReportRequest(verdict_id=verdict.verdict_id, label="ham", reporter="lee"), timeout=10)
            by_text = stub.Report(pb.ReportRequest(text=HAM, label="ham", reporter="lee"), timeout=10)
            process.send_signal(signal.SIGKILL)  # right after the replies
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
    frame = read_feedback(folder)
    assert sorted(frame["report_id"]) == sorted([by_id.report_id, by_text.report_id])
    # The verdict itself was in the open segment; the next start publishes it.
    assert verdict.verdict_id in set(read_predictions(folder, include_open=True)["verdict_id"])
    log = PredictionLog(folder).start()
    assert not FeedbackStore(log).start().report(verdict.verdict_id, "", "ham", "lee").created
    log.close()
    assert verdict.verdict_id in set(read_predictions(folder)["verdict_id"])


def _full_disk_for(fd_of, monkeypatch) -> dict:
    """os.write on the file `fd_of()` names writes half, then fails with ENOSPC, while `state["full"]`."""
    import errno

    real_write, state = os.write, {"full": True}

    def write(fd, data):
        if state["full"] and fd == fd_of():
            state["full"] = False  # the next attempt gets through: space came back
            real_write(fd, bytes(data)[: len(data) // 2])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", write)
    return state


def test_a_full_disk_stores_no_report_and_no_half_line_and_the_retry_is_stored_once(store, tmp_path, monkeypatch):
    log, feedback = store
    (verdict,) = _record(log, 1, text=SPAM)
    feedback.report("", "warm-up: opens the file", "ham", "ivy")
    _full_disk_for(lambda: feedback._fd, monkeypatch)
    with pytest.raises(OSError) as caught:
        feedback.report(verdict, "", "spam", "ivy")
    assert caught.value.errno == 28
    retry = feedback.report(verdict, "", "spam", "ivy")  # not a repeat: nothing was stored
    assert retry.created
    frame = read_feedback(tmp_path / "predictions")
    assert len(frame) == 2 and list(frame["verdict_id"].dropna()) == [verdict]
    for path in feedback_dir(tmp_path / "predictions").glob("feedback-*.jsonl"):
        for line in path.read_bytes().splitlines():
            json.loads(line)  # no half line left by the failed write


def test_report_rpc_on_a_full_disk_is_unavailable_with_the_reason_and_the_retry_works(server, monkeypatch):
    stub = _stub(server)
    verdict = stub.Classify(pb.ClassifyRequest(text=SPAM), timeout=10).verdict
    stub.Report(pb.ReportRequest(text="opens the feedback file", label="ham", reporter="jo"), timeout=10)
    _full_disk_for(lambda: server.serving.feedback._fd, monkeypatch)
    report = pb.ReportRequest(verdict_id=verdict.verdict_id, label="ham", reporter="jo")
    with pytest.raises(grpc.RpcError) as caught:
        stub.Report(report, timeout=10)
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "could not store the report: No space left on device" in caught.value.details()
    assert stub.Report(report, timeout=10).created
    assert not stub.Report(report, timeout=10).created
