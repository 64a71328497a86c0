"""Webhook notifications against a real HTTP server on 127.0.0.1: promotion, rejection, failure, unreachable.

The sensors are evaluated through Dagster's own tick machinery
(build_sensor_context + evaluate_tick) over real runs in a real instance;
stand-in assets named like the platform's give those runs the same events
without training a model.
"""

import contextlib
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import dagster as dg
import pytest

from spam_assets.defs.assets.deployment import OUTCOME_KEY
from spam_assets.defs.automation.notifications import Webhook, notify_champion_decision, notify_run_failure
from spam_assets.defs.run_tags import RETRAIN_REASON_TAG
from spam_assets.defs.resources import PlatformStore


@contextlib.contextmanager
def recording_server():
    """A webhook receiver on a free local port; yields (url, list of received JSON bodies)."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers["Content-Length"]))
            received.append({"content_type": self.headers["Content-Type"], **json.loads(body)})
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *args):  # keep test output quiet
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/hooks/secret-token", received
    finally:
        server.shutdown()
        server.server_close()


def _outcome(decision: str, reasons: list[str], challenger="2", before="1") -> dict:
    """What champion_decision records under OUTCOME_KEY."""
    return {
        "action": decision,
        "promoted": decision == "promote",
        "reasons": reasons,
        "challenger_version": challenger,
        "champion_version_before": before,
    }


def _decision_asset(decision: str, reasons: list[str]):
    @dg.asset(name="champion_decision")
    def stand_in() -> dg.MaterializeResult:
        # The Markdown for people says something else: the message must come from the JSON.
        return dg.MaterializeResult(
            metadata={
                OUTCOME_KEY: dg.MetadataValue.json(_outcome(decision, reasons)),
                "reasons": dg.MetadataValue.md("- see the outcome"),
            }
        )

    return stand_in


def _tick(sensor, instance, cursor, resources):
    return sensor.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))


def test_payloads_for_promotion_rejection_and_failure(instance, home):
    with recording_server() as (url, received):
        resources = {"webhook": Webhook(url=url, timeout_seconds=2), "store": PlatformStore()}
        # First ticks only place the cursors at "now": history is not re-announced.
        decisions = _tick(notify_champion_decision, instance, None, resources).cursor
        failures = _tick(notify_run_failure, instance, None, resources).cursor

        promoted = dg.materialize(
            [_decision_asset("promote", ["challenger beats the champion: spam_f1 0.83 → 0.96"])],
            instance=instance,
            tags={RETRAIN_REASON_TAG: "drift: OOV rate 0.24 > 0.2"},
        )
        kept = dg.materialize([_decision_asset("keep", ["not measurably better: spam_f1 0.96 → 0.96"])], instance=instance)

        @dg.asset
        def cleaned_corpus():
            raise RuntimeError("corpus store unreachable")

        failed = dg.materialize([cleaned_corpus], instance=instance, raise_on_error=False)
        assert promoted.success and kept.success and not failed.success

        _tick(notify_champion_decision, instance, decisions, resources)
        _tick(notify_run_failure, instance, failures, resources)

    assert all(m.pop("content_type") == "application/json" for m in received)
    assert all(set(m) == {"text"} for m in received)  # Slack's incoming-webhook shape
    texts = [m["text"] for m in received]
    assert len(texts) == 3, texts
    promotion, rejection, failure = texts
    assert "v2 promoted to champion" in promotion and "previous champion: v1" in promotion
    assert "spam_f1 0.83 → 0.96" in promotion and "drift: OOV rate 0.24 > 0.2" in promotion
    assert promoted.run_id in promotion
    assert "rejected by the gates" in rejection and "champion v1 kept" in rejection and "not measurably better" in rejection
    assert f"run {failed.run_id}" in failure and "corpus store unreachable" in failure


def test_rejected_batch_failure_names_the_reason(instance, home, tmp_path):
    from spam_assets.defs.assets.ingestion import raw_sample
    from spam_assets.intake import register, stage

    bad = tmp_path / "notes.txt"
    bad.write_text("this is not a batch\n")
    batch_id = stage(bad, PlatformStore().batches())
    register(instance, batch_id)
    with recording_server() as (url, received):
        resources = {"webhook": Webhook(url=url), "store": PlatformStore()}
        cursor = _tick(notify_run_failure, instance, None, resources).cursor
        dg.materialize([raw_sample], partition_key=batch_id, instance=instance, resources=resources, raise_on_error=False)
        _tick(notify_run_failure, instance, cursor, resources)
    (message,) = [m["text"] for m in received]
    assert f"(batch {batch_id})" in message
    assert "Batch rejected: batch_schema" in message and "cannot tell the format" in message


def test_no_url_sends_nothing(monkeypatch):
    monkeypatch.delenv("SPAM_WEBHOOK_URL", raising=False)
    assert Webhook().target() is None
    assert Webhook().post("hello") is False


def test_url_from_environment(monkeypatch):
    with recording_server() as (url, received):
        monkeypatch.setenv("SPAM_WEBHOOK_URL", url)
        assert Webhook().post("from the environment") is True
    assert received[0]["text"] == "from the environment"


def test_unreachable_url_only_logs(caplog):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with caplog.at_level(logging.WARNING):
        assert Webhook(url=f"http://127.0.0.1:{port}/hooks/secret-token", timeout_seconds=1).post("x") is False
        assert Webhook(url="not a url").post("x") is False
    assert "not delivered" in caplog.text
    assert "secret-token" not in caplog.text  # the URL's secret part is never logged


def test_server_error_only_logs(caplog):
    class Failing(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            self.send_response(500)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with caplog.at_level(logging.WARNING):
            assert Webhook(url=f"http://127.0.0.1:{server.server_port}/x").post("x") is False
    finally:
        server.shutdown()
        server.server_close()
    assert "HTTPError" in caplog.text


@pytest.mark.parametrize("meta_decision", ["promote", "keep"])
def test_decision_message_without_retrain_tag_says_who_asked(meta_decision):
    from spam_assets.defs.automation.notifications import decision_message

    run = dg.DagsterRun(job_name="retrain", run_id="r1", tags={"spam/trigger": "schedule"})
    text = decision_message(_outcome(meta_decision, ["a", "b"], challenger="3", before="2"), run)
    assert "Decision: a; b" in text and "requested by schedule" in text
