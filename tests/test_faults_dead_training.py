"""A training that dies releases its MLflow run, is retried once per corpus version, and says why.

Real instance, real MLflow store, real failed runs: a stand-in trained_model
tags its run with the corpus it trains (as the real one does) and then
fails as a full disk does, or its run is failed the way Dagster's code
server fails a run whose process was killed. Killing a real run worker
under the real daemon is tests/test_faults_loop_e2e.py.
"""

import errno
import json

import dagster as dg
import pytest
from mlflow import MlflowClient

from spam_assets.defs.automation.notifications import notify_run_failure
from spam_assets.defs.automation.recovery import death_reason, release_dead_training, retry_dead_training
from spam_assets.defs.resources import ModelRegistry, PlatformStore, Webhook
from spam_assets.defs.run_tags import CORPUS_VERSION_TAG, RETRY_TRIGGER, TRIGGER_TAG
from spam_assets.model.registry import ensure_experiment
from spam_assets.settings import EXPERIMENT_NAME, tracking_uri
from spam_assets.training_runs import FAILURE_REASON_TAG
from tests.test_automation_retrain import challenger, corpus, in_flight_retrain, verdict
from tests.test_automation_retrain import tick as drift_tick
from tests.test_notifications import recording_server


def dying_training(instance, corpus_version: str, tags=None) -> str:
    """A run whose trained_model starts training `corpus_version` and then finds the disk full; its run id."""

    @dg.asset(name="trained_model")
    def stand_in(context: dg.AssetExecutionContext):
        context.instance.add_run_tags(context.run.run_id, {CORPUS_VERSION_TAG: corpus_version})
        raise OSError(errno.ENOSPC, "No space left on device", "/platform/mlflow/artifacts/model.skops")

    result = dg.materialize([stand_in], instance=instance, raise_on_error=False, tags=tags)
    assert not result.success
    return result.run_id


def killed_training(instance, corpus_version: str) -> dg.DagsterRun:
    """A run failed exactly as the code server fails one whose process got SIGKILL (dagster/_grpc/server.py)."""
    run = instance.add_run(
        dg.DagsterRun(job_name="retrain", status=dg.DagsterRunStatus.STARTED, tags={CORPUS_VERSION_TAG: corpus_version})
    )
    instance.report_engine_event(
        f"[DagsterApiServer] Run execution process for {run.run_id} was terminated by signal 9 (SIGKILL).", run
    )
    instance.report_run_failed(run)
    return instance.get_run_by_id(run.run_id)


def retry_tick(instance, cursor=None):
    return retry_dead_training.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor))


@pytest.fixture
def no_backoff(monkeypatch):
    monkeypatch.setenv("SPAM_RETRY_BACKOFF_SECONDS", "0")


def test_the_reason_is_the_steps_error_or_what_the_process_monitor_saw(instance):
    disk = instance.get_run_by_id(dying_training(instance, "c1"))
    assert "No space left on device" in death_reason(instance, disk)
    assert "trained_model" in death_reason(instance, disk)
    killed = killed_training(instance, "c1")
    assert death_reason(instance, killed).startswith(f"Run execution process for {killed.run_id} was terminated by signal 9")


def test_the_mlflow_run_a_dead_training_left_running_is_ended_failed_with_its_reason(instance, home):
    uri = tracking_uri()
    ensure_experiment(uri, home / "mlflow" / "artifacts")
    failures = release_dead_training.evaluate_tick(
        dg.build_sensor_context(instance=instance, resources={"registry": ModelRegistry()})
    ).cursor

    run_id = dying_training(instance, "c1")
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(EXPERIMENT_NAME).experiment_id
    orphan = client.create_run(experiment, tags={"dagster_run_id": run_id}).info.run_id  # what a killed run leaves
    bystander = client.create_run(experiment, tags={"dagster_run_id": "another-run"}).info.run_id

    release_dead_training.evaluate_tick(
        dg.build_sensor_context(instance=instance, cursor=failures, resources={"registry": ModelRegistry()})
    )
    ended = client.get_run(orphan)
    assert ended.info.status == "FAILED"
    assert "No space left on device" in ended.data.tags[FAILURE_REASON_TAG]
    assert client.get_run(bystander).info.status == "RUNNING"  # only that Dagster run's


def test_a_dead_training_is_retried_once_after_the_backoff(instance, monkeypatch):
    corpus(instance, "c2")
    monkeypatch.setenv("SPAM_RETRY_BACKOFF_SECONDS", "3600")
    assert retry_tick(instance).skip_message == "no training died on a corpus that is still untrained"
    dying_training(instance, "c2")
    waiting = retry_tick(instance)
    assert not waiting.run_requests and "training of corpus c2 died; retrying in" in waiting.skip_message

    monkeypatch.setenv("SPAM_RETRY_BACKOFF_SECONDS", "0")
    (request,) = (result := retry_tick(instance, waiting.cursor)).run_requests
    assert request.run_key == "retry-c2"
    assert request.tags[TRIGGER_TAG] == RETRY_TRIGGER
    assert request.tags["spam/retrain_reason"].startswith("retry: training of corpus c2 died: out of disk space")
    assert json.loads(result.cursor) == ["c2"]

    # The retry dies too: it is not retried again (once per corpus version).
    dying_training(instance, "c2", tags={TRIGGER_TAG: RETRY_TRIGGER})
    assert not retry_tick(instance, result.cursor).run_requests


def test_no_retry_while_a_retrain_is_in_flight_nor_once_the_corpus_has_its_challenger(instance, no_backoff):
    corpus(instance, "c2")
    dying_training(instance, "c2")
    run = in_flight_retrain(instance)
    held = retry_tick(instance)
    assert not held.run_requests and f"retry waits: retrain run {run.run_id[:8]}" in held.skip_message
    assert held.cursor is None  # still owed

    challenger(instance, "c2", "5")  # what the in-flight run produced
    instance.report_run_canceled(run)
    assert retry_tick(instance, held.cursor).skip_message == "no training died on a corpus that is still untrained"


def test_a_newer_corpus_with_its_challenger_covers_an_older_dead_one(instance, no_backoff):
    corpus(instance, "c2")
    dying_training(instance, "c2")
    corpus(instance, "c3")
    challenger(instance, "c3", "6")
    result = retry_tick(instance)
    assert not result.run_requests and "challenger v6 covers the current corpus" in result.skip_message
    assert json.loads(result.cursor) == ["c2"]


def test_the_drift_sensor_leaves_a_verdict_whose_run_died_training_to_the_retry(instance):
    corpus(instance, "c2")

    @dg.asset(name="drift_statistics")
    def verdict_then_death(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        from spam_assets.defs.retrain_policy import VERDICT_KEY, Verdict

        context.instance.add_run_tags(context.run.run_id, {CORPUS_VERSION_TAG: "c2"})
        return dg.MaterializeResult(
            metadata={VERDICT_KEY: dg.MetadataValue.json(Verdict(True, False, ["PSI 3.5 > 0.25"]).to_json())}
        )

    run = dg.materialize([verdict_then_death], instance=instance)
    instance.report_run_failed(instance.get_run_by_id(run.run_id))  # it died afterwards, training
    result = drift_tick(instance)
    assert not result.run_requests and "left to retry_dead_training" in result.skip_message
    assert not drift_tick(instance, result.cursor).run_requests
    # A verdict whose run simply finished still asks the drift sensor as before.
    verdict(instance, drift=True, reasons=["OOV rate 0.3 > 0.2"])
    assert len(drift_tick(instance, result.cursor).run_requests) == 1


def test_the_notification_says_what_died_and_why(instance, home, monkeypatch):
    monkeypatch.setenv("SPAM_RETRY_BACKOFF_SECONDS", "45")
    with recording_server() as (url, received):
        resources = {"webhook": Webhook(url=url, timeout_seconds=2), "store": PlatformStore()}
        context = dg.build_sensor_context(instance=instance, resources=resources)
        cursor = notify_run_failure.evaluate_tick(context).cursor
        dying_training(instance, "c7")
        notify_run_failure.evaluate_tick(dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources))
    (message,) = [m["text"] for m in received]
    first = message.splitlines()[0]
    assert first.startswith("Training of corpus c7 died: out of disk space: free space under the platform home")
    assert "No space left on device" in first
    assert "retrains it once by itself, 45 s after the failure" in message
